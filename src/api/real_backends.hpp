#pragma once
// The backends of backends.hpp over the project's store and auth libraries.
// Each owns (or borrows) a thread-safe async facade; none blocks an io thread.

#include "api/backends.hpp"
#include "common/blocking_worker.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"

#include <atomic>
#include <memory>
#include <vector>

namespace rtmc::api {

// users(name, password_hash) with a unique index on lower(name)
// (migrations/). A unique violation (SQLSTATE 23505) means "taken".
class PgUserStore final : public UserStore {
 public:
  explicit PgUserStore(pg::Pool& pool) : pool_(pool) {}
  boost::asio::awaitable<bool> create(std::string name, std::string password_hash) override;
  boost::asio::awaitable<std::optional<StoredUser>> find(std::string name) override;

 private:
  pg::Pool& pool_;
};

// session:<jti> -> user, expiring with the token.
class RedisSessionStore final : public SessionStore {
 public:
  explicit RedisSessionStore(redis::Client& client) : client_(client) {}
  boost::asio::awaitable<void> put(std::string jti, std::string user, std::chrono::milliseconds ttl) override;
  boost::asio::awaitable<bool> exists(std::string jti) override;
  boost::asio::awaitable<bool> remove(std::string jti) override;

 private:
  boost::asio::awaitable<redis::Reply> run(std::vector<std::string> command);
  redis::Client& client_;
};

// A few worker threads, used round-robin. Argon2id takes ~tens of ms and
// 64 MiB per call, so the pool size bounds both CPU and memory spent on it.
// At most `max_pending` jobs wait or run at once; beyond that a call throws
// Unavailable (503) at once instead of queueing without bound, so a flood of
// /register or /login cannot grow memory or latency forever.
class WorkerPasswordHasher final : public PasswordHasher {
 public:
  WorkerPasswordHasher(std::size_t workers, std::size_t max_pending);
  boost::asio::awaitable<std::string> hash(std::string password) override;
  boost::asio::awaitable<bool> verify(std::string stored_hash, std::string password) override;
  boost::asio::awaitable<void> burn(std::string password) override;

 private:
  class Slot;  // RAII claim on one of max_pending_
  BlockingWorker& next();
  std::vector<std::unique_ptr<BlockingWorker>> workers_;
  std::atomic<std::size_t> next_{0};
  const std::size_t max_pending_;
  std::atomic<std::size_t> pending_{0};
};

class AmqpMessagePublisher final : public MessagePublisher {
 public:
  explicit AmqpMessagePublisher(amqp::Publisher& publisher) : publisher_(publisher) {}
  boost::asio::awaitable<amqp::PublishStatus> publish(amqp::Message message) override;
  bool connected() const override { return publisher_.connected(); }

 private:
  amqp::Publisher& publisher_;
};

}  // namespace rtmc::api
