#pragma once
// The narrow interfaces through which a ClientConnection reaches the stores
// (Redis, RabbitMQ, PostgreSQL). The gateway wires real adapters
// (store_ports.hpp); unit tests wire fakes, so the core runs without
// services.
//
// Threading: every port is shared by all io threads and must be safe to call
// from any of them. Awaitable calls resume on the caller's executor.
// IngestPublisher's callback may run on any thread: the caller posts back.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/sequenced.hpp"
#include "protocol/frames.hpp"
#include "store/amqp.hpp"

namespace rtmc::gateway {

// `session:<jti>` of a login: does it still exist (not logged out)?
class LoginSessions {
 public:
  virtual ~LoginSessions() = default;
  // Throws when the store cannot answer now.
  virtual boost::asio::awaitable<bool> exists(std::string jti) = 0;
};

// A room's sequence number and its recent log.
class RoomReader {
 public:
  using LogFrame = std::pair<std::int64_t, SharedFrame>;
  virtual ~RoomReader() = default;
  // The room's last seq (0 for a fresh room). Throws when unavailable.
  virtual boost::asio::awaitable<std::int64_t> current_seq(std::string room) = 0;
  // Frames [from, to] still in the log, in seq order (trimmed ones are
  // missing). Throws when unavailable.
  virtual boost::asio::awaitable<std::vector<LogFrame>> range(std::string room, std::int64_t from,
                                                              std::int64_t to) = 0;
};

// Hands a client's message to its room's ingest queue.
class IngestPublisher {
 public:
  virtual ~IngestPublisher() = default;
  // Never blocks; `done` runs exactly once, on any thread, with `confirmed`
  // only after the broker's publisher confirm.
  virtual void publish(protocol::IngestMessage message, std::function<void(amqp::PublishStatus)> done) = 0;
  // False while the publisher's backlog is at its bound: the connection
  // stops reading (a TCP sender is slowed, never refused) until it is true.
  // Any thread.
  virtual bool has_room() const { return true; }
};

// Per-user send limits (rate_limited). Off by default.
class SendLimiter {
 public:
  virtual ~SendLimiter() = default;
  // Whether `user` may send one more message now (spends it if so). Throws
  // when the store cannot answer now.
  virtual boost::asio::awaitable<bool> allow(std::string user, std::string room) = 0;
};

// Presence (flows 2 and 6): online records, room membership across
// gateways, user status. The real one (gateway/presence_service.hpp) also
// emits the room's presence events and writes status changes to
// PostgreSQL; the connection only reports what happened to it.
struct UserStatusView {
  std::string user;  // registered spelling
  bool online = false;
  std::optional<std::int64_t> last_seen_ms;  // nullopt: never connected
};

class PresencePort {
 public:
  virtual ~PresencePort() = default;
  // The connection authenticated. Throws when the store cannot record it
  // now (the auth is then refused with `unavailable`).
  virtual boost::asio::awaitable<void> connected(std::uint64_t connection_id, std::string user) = 0;
  // The connection ended; `rooms` are those whose join() was recorded and
  // not left. Never throws: what cannot be removed now is retried later.
  virtual boost::asio::awaitable<void> disconnected(std::uint64_t connection_id, std::string user,
                                                    std::vector<std::string> rooms) = 0;
  // Throws when the store cannot record it now (join -> `unavailable`).
  virtual boost::asio::awaitable<void> joined(std::string room, std::string user) = 0;
  // Never throws (retried later).
  virtual boost::asio::awaitable<void> left(std::string room, std::string user) = 0;
  // Sorted, each user once. Throws when unavailable.
  virtual boost::asio::awaitable<std::vector<std::string>> members(std::string room) = 0;
  // nullopt: no such user. Throws when unavailable.
  virtual boost::asio::awaitable<std::optional<UserStatusView>> status(std::string user) = 0;
};

// A room's stored messages (store/history.hpp: the Redis window, then
// PostgreSQL), for the `history` request.
class HistoryReader {
 public:
  virtual ~HistoryReader() = default;
  // The page `request` asks for, oldest first, each frame exactly as clients
  // receive it ('\n' included). Throws when a store it needs cannot answer.
  virtual boost::asio::awaitable<std::vector<SharedFrame>> messages(protocol::HistoryRequest request) = 0;
};

class UnlimitedSends final : public SendLimiter {
 public:
  boost::asio::awaitable<bool> allow(std::string, std::string) override { co_return true; }
};

}  // namespace rtmc::gateway
