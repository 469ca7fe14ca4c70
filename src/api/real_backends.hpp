#pragma once
// The backends of backends.hpp over the domain stores (store/), RabbitMQ and
// worker pools. Each borrows a thread-safe async facade; none blocks an io
// thread. The store adapters turn store::Unavailable into Unavailable (503).

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "api/backends.hpp"
#include "common/blocking_worker.hpp"
#include "common/config.hpp"
#include "store/amqp.hpp"
#include "store/history.hpp"
#include "store/login_sessions.hpp"
#include "store/postgres.hpp"
#include "store/rate_limits.hpp"
#include "store/redis.hpp"
#include "store/user_status.hpp"
#include "store/users.hpp"

namespace rtmc::api {

class StoreUsers final : public UserStore {
 public:
  explicit StoreUsers(pg::Pool& pool) : users_(pool) {}
  boost::asio::awaitable<bool> create(std::string name, std::string password_hash) override;
  boost::asio::awaitable<std::optional<StoredUser>> find(std::string name) override;

 private:
  store::Users users_;
};

class StoreSessions final : public SessionStore {
 public:
  explicit StoreSessions(redis::Client& client) : sessions_(client) {}
  boost::asio::awaitable<void> put(std::string jti, std::string user, std::chrono::milliseconds ttl) override;
  boost::asio::awaitable<bool> exists(std::string jti) override;
  boost::asio::awaitable<bool> remove(std::string jti) override;

 private:
  store::LoginSessions sessions_;
};

class StoreRateLimits final : public RateLimits {
 public:
  explicit StoreRateLimits(redis::Client& client) : limiter_(client) {}
  boost::asio::awaitable<store::Verdict> take(store::Bucket bucket) override;
  boost::asio::awaitable<std::vector<store::Verdict>> peek(std::vector<store::Bucket> buckets) override;
  boost::asio::awaitable<std::vector<store::Verdict>> charge(std::vector<store::Bucket> buckets) override;
  boost::asio::awaitable<void> refund(std::vector<store::Bucket> buckets) override;

 private:
  store::RateLimiter limiter_;
};

class StoreStatusReader final : public StatusReader {
 public:
  StoreStatusReader(redis::Client& redis, pg::Pool& pool, std::chrono::milliseconds cache_ttl)
      : reader_(redis, pool, cache_ttl) {}
  boost::asio::awaitable<std::optional<store::UserStatus>> get(std::string user) override;
  // Cache hits and misses so far, for /metrics.
  const store::StatusCacheCounters& counters() const { return reader_.counters(); }

 private:
  store::UserStatusReader reader_;
};

class StoreHistory final : public HistoryStore {
 public:
  StoreHistory(redis::Client& redis, pg::Pool& pool, std::uint32_t ingest_shards)
      : history_(redis, pool, ingest_shards) {}
  boost::asio::awaitable<history::Items> messages(protocol::HistoryRequest request) override;
  boost::asio::awaitable<history::RoomPage> rooms(std::optional<std::string> after,
                                                  std::size_t limit) override;

 private:
  history::History history_;
};

// Probes on connections of their own, so a probe never queues behind
// requests: Redis PING and PostgreSQL SELECT 1, each on its own worker with
// `timeout` as deadline, and the publisher's connection state (waiting up to
// `timeout` for a publisher that is still connecting), all at once.
class BackendHealthProbe final : public HealthProbe {
 public:
  BackendHealthProbe(RedisConfig redis, PgConfig pg, amqp::Publisher& publisher,
                     std::chrono::milliseconds timeout);
  boost::asio::awaitable<DependencyHealth> probe() override;

 private:
  boost::asio::awaitable<bool> redis_ok();
  boost::asio::awaitable<bool> postgres_ok();
  boost::asio::awaitable<bool> rabbitmq_ok();

  std::chrono::milliseconds timeout_;
  amqp::Publisher& publisher_;
  // The connections are declared before their workers, so the workers'
  // threads are joined before the connections go.
  redis::Connection redis_;
  pg::Connection pg_;
  BlockingWorker redis_worker_;
  BlockingWorker pg_worker_;
};

// A few worker threads, used round-robin. Argon2id takes ~tens of ms and
// 64 MiB per call, so the pool size bounds both CPU and memory spent on it.
// At most `max_pending` jobs wait or run at once; beyond that a call throws
// Unavailable (503) at once instead of queueing without bound, so a flood of
// /register or /login cannot grow memory or latency forever. The api keeps
// one pool for logins and one for registrations.
class WorkerPasswordHasher final : public PasswordHasher {
 public:
  WorkerPasswordHasher(std::string name, std::size_t workers, std::size_t max_pending);
  boost::asio::awaitable<std::string> hash(std::string password) override;
  boost::asio::awaitable<bool> verify(std::string stored_hash, std::string password) override;
  boost::asio::awaitable<void> burn(std::string password) override;

 private:
  class Slot;  // RAII claim on one of max_pending_
  BlockingWorker& next();
  std::vector<std::unique_ptr<BlockingWorker>> workers_;
  std::atomic<std::size_t> next_{0};
  const std::size_t max_pending_;
  // Shared with every Slot: a coroutine suspended on a hash may be destroyed
  // after this hasher (its io_context goes last, at a hard stop), and its
  // Slot must still have a counter to give back to.
  std::shared_ptr<std::atomic<std::size_t>> pending_ = std::make_shared<std::atomic<std::size_t>>(0);
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
