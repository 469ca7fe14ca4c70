#pragma once
// The narrow interfaces through which a ClientConnection reaches the stores
// (Redis, RabbitMQ; PostgreSQL later). The gateway wires real adapters
// (store_ports.hpp); unit tests wire fakes, so the core runs without
// services.
//
// Threading: every port is shared by all io threads and must be safe to call
// from any of them. Awaitable calls resume on the caller's executor.
// IngestPublisher's callback may run on any thread: the caller posts back.

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
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
};

// Per-user send limits (rate_limited). Off by default.
class SendLimiter {
 public:
  virtual ~SendLimiter() = default;
  // Whether `user` may send one more message now (spends it if so). Throws
  // when the store cannot answer now.
  virtual boost::asio::awaitable<bool> allow(std::string user, std::string room) = 0;
};

class UnlimitedSends final : public SendLimiter {
 public:
  boost::asio::awaitable<bool> allow(std::string, std::string) override { co_return true; }
};

}  // namespace rtmc::gateway
