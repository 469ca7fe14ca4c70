#pragma once
// What the api handlers need from the outside world, as small interfaces so
// the handlers can be unit-tested with fakes. The real implementations over
// the domain stores (store/users, store/login_sessions, store/rate_limits,
// store/user_status, store/history),
// RabbitMQ and the password worker pools are in real_backends.hpp. Every
// method may be called concurrently from any io thread; a backend that
// cannot answer (in time) throws Unavailable.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "protocol/frames.hpp"
#include "store/amqp.hpp"
#include "store/history.hpp"
#include "store/rate_limits.hpp"
#include "store/user_status.hpp"
#include "store/users.hpp"

namespace rtmc::api {

using StoredUser = store::User;

class UserStore {
 public:
  virtual ~UserStore() = default;
  // false when the name is taken regardless of case.
  virtual boost::asio::awaitable<bool> create(std::string name, std::string password_hash) = 0;
  // Case-insensitive lookup.
  virtual boost::asio::awaitable<std::optional<StoredUser>> find(std::string name) = 0;
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  virtual boost::asio::awaitable<void> put(std::string jti, std::string user,
                                           std::chrono::milliseconds ttl) = 0;
  virtual boost::asio::awaitable<bool> exists(std::string jti) = 0;
  // true if a live session was removed.
  virtual boost::asio::awaitable<bool> remove(std::string jti) = 0;
};

// Argon2id work; implementations keep it off the io threads.
class PasswordHasher {
 public:
  virtual ~PasswordHasher() = default;
  virtual boost::asio::awaitable<std::string> hash(std::string password) = 0;
  virtual boost::asio::awaitable<bool> verify(std::string stored_hash, std::string password) = 0;
  // Spends one verification's time (unknown users must not be faster).
  virtual boost::asio::awaitable<void> burn(std::string password) = 0;
};

class MessagePublisher {
 public:
  virtual ~MessagePublisher() = default;
  // Completes when the broker confirmed, refused, or the give-up time passed.
  virtual boost::asio::awaitable<amqp::PublishStatus> publish(amqp::Message message) = 0;
  virtual bool connected() const = 0;
};

// Token buckets shared by every api process (store::RateLimiter); which
// buckets a request touches is the service's decision.
class RateLimits {
 public:
  virtual ~RateLimits() = default;
  virtual boost::asio::awaitable<store::Verdict> take(store::Bucket bucket) = 0;
  virtual boost::asio::awaitable<std::vector<store::Verdict>> peek(std::vector<store::Bucket> buckets) = 0;
  // Spends a token of each bucket, never refusing; `allowed` says whether it
  // was there. Atomic per bucket, so concurrent callers cannot all see the
  // same last token.
  virtual boost::asio::awaitable<std::vector<store::Verdict>> charge(std::vector<store::Bucket> buckets) = 0;
  virtual boost::asio::awaitable<void> refund(std::vector<store::Bucket> buckets) = 0;
};

// A user's status, cache-aside (Redis, then PostgreSQL).
class StatusReader {
 public:
  virtual ~StatusReader() = default;
  // Case-insensitive; the answer carries the registered spelling. nullopt:
  // no such user (also for a name that breaks the name rules).
  virtual boost::asio::awaitable<std::optional<store::UserStatus>> get(std::string user) = 0;
};

// A room's stored messages and the list of rooms (store/history.hpp).
class HistoryStore {
 public:
  virtual ~HistoryStore() = default;
  // The page a validated request asks for, ascending by seq, each frame as
  // clients receive it ('\n' included).
  virtual boost::asio::awaitable<history::Items> messages(protocol::HistoryRequest request) = 0;
  // Names above `after` (all when nullopt), at most `limit` (1..100).
  virtual boost::asio::awaitable<history::RoomPage> rooms(std::optional<std::string> after,
                                                          std::size_t limit) = 0;
};

struct DependencyHealth {
  bool redis = false;
  bool postgres = false;
  bool rabbitmq = false;
  bool all_ok() const { return redis && postgres && rabbitmq; }
};

// One cheap probe of each dependency under a short deadline. Never throws.
class HealthProbe {
 public:
  virtual ~HealthProbe() = default;
  virtual boost::asio::awaitable<DependencyHealth> probe() = 0;
};

}  // namespace rtmc::api
