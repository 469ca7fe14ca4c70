#pragma once
// The gateway's presence (seed flows 2 and 6): the real PresencePort.
//  - Online records and room memberships in Redis (store::Presence), under
//    this gateway's id; the status cache moves in the same scripts.
//  - Status changes go to PostgreSQL in batches (store::StatusWriter), so a
//    connect storm is not paced by database commits.
//  - A user's first connection in a room and their last one leaving it emit
//    `presence` events on the fan-out exchange, batched from what is pending
//    when the publisher gets to them.
//  - Every period (liveness TTL / 3) one maintenance step, on its own Redis
//    connection (so client traffic never delays it): refresh this
//    gateway's liveness key, sweep gateways whose key expired (kill -9: their
//    users go offline, their rooms get `leave`), retry removals that failed.
//    A gateway that finds it was swept (it stalled longer than the TTL)
//    drops its connections: their records are gone and their users were
//    announced offline, and they come back recorded anew.
//  - Status reads: cache-aside (store::UserStatusReader).
//
// Bound from a killed gateway to its users offline: liveness TTL + one
// period + the PostgreSQL write lag (default 10 s + 3.3 s + 1 s).
//
// Threading: every PresencePort method may be called from any io thread at
// once; the queues are under one mutex. start() and
// stop() from the gateway's owning thread.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/metrics.hpp"
#include "gateway/ports.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/presence.hpp"
#include "store/redis.hpp"
#include "store/user_status.hpp"

namespace rtmc::gateway {

struct PresenceCounters {
  std::atomic<std::uint64_t> events_published{0};  // presence frames handed to RabbitMQ
  std::atomic<std::uint64_t> event_messages{0};    // AMQP messages carrying them
  std::atomic<std::uint64_t> gateways_swept{0};
  std::atomic<std::uint64_t> store_failures{0};  // a Redis call failed (retried where it must be)
};

class PresenceService final : public PresencePort {
 public:
  struct Options {
    std::chrono::milliseconds liveness_ttl{10000};
    std::chrono::milliseconds status_cache_ttl{300000};
    std::chrono::milliseconds status_write_lag{1000};
    // Deadline of a status read's PostgreSQL query (cache misses).
    std::chrono::milliseconds pg_timeout{3000};
  };

  // `gateway_id` names this process in Redis (unique per process).
  PresenceService(const CommonOptions& common, std::string gateway_id, Options options);
  // As above, with the maintenance step's own connection going to
  // `maintenance_redis` (the other constructor: common.redis, the same
  // server over another connection). For tests that stall only the
  // connections' path (a proxy) to show the refresh does not wait for it.
  PresenceService(const CommonOptions& common, std::string gateway_id, Options options,
                  const RedisConfig& maintenance_redis);
  ~PresenceService() override;
  PresenceService(const PresenceService&) = delete;
  PresenceService& operator=(const PresenceService&) = delete;

  // Runs on the executor's thread when this gateway finds it was swept as
  // dead while alive (it stalled past the liveness TTL): its records are
  // gone and its users were announced offline, so its connections must be
  // dropped (they reconnect and are recorded anew).
  using LeaseLost = std::function<void()>;
  // Registers the gateway (its first refresh, waited for: call it with the
  // executor's thread running, before accepting connections) and starts the
  // maintenance loop on `executor`.
  void start(boost::asio::any_io_executor executor, LeaseLost lease_lost);
  // After the connections' close steps ran (or their deadline passed), while
  // the executor still runs: stops the loop and removes every record of this
  // gateway left in Redis at once (its users' last connections here go
  // offline, its rooms get `leave`), and waits (briefly) for those events to
  // reach RabbitMQ. The status writer commits what is pending when the
  // service is destroyed.
  void stop();

  boost::asio::awaitable<void> connected(std::uint64_t connection_id, std::string user) override;
  boost::asio::awaitable<void> disconnected(std::uint64_t connection_id, std::string user,
                                            std::vector<std::string> rooms) override;
  boost::asio::awaitable<void> joined(std::string room, std::string user) override;
  boost::asio::awaitable<void> left(std::string room, std::string user) override;
  boost::asio::awaitable<std::vector<std::string>> members(std::string room) override;
  boost::asio::awaitable<std::optional<UserStatusView>> status(std::string user) override;

  const std::string& gateway_id() const { return presence_.gateway_id(); }
  const PresenceCounters& counters() const { return counters_; }
  const store::StatusCacheCounters& cache_counters() const { return reader_.counters(); }
  void add_metrics(metrics::Registry& registry) const;

 private:
  // A removal that could not reach Redis, retried every period.
  struct Retry {
    std::uint64_t connection_id = 0;  // 0: a room leave
    std::string user;
    std::string room;
  };

  boost::asio::awaitable<void> maintain();
  boost::asio::awaitable<void> maintenance_step();
  boost::asio::awaitable<bool> remove_connection(std::uint64_t connection_id, const std::string& user);
  boost::asio::awaitable<bool> remove_membership(const std::string& room, const std::string& user);
  void apply(const store::SweepResult& swept);
  void publish_event(const std::string& room, const std::string& user, bool joined);
  // Hands what is pending to RabbitMQ, one message per room (routing key =
  // room: only gateways with members of the room get it); `done` (if any)
  // runs once every message was answered, with the worst status.
  void flush_events(std::function<void(amqp::PublishStatus)> done = {});

  Options options_;
  PresenceCounters counters_;
  // Own connections: presence storms must not queue behind (or starve) the
  // connections' auth, join and session checks.
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<pg::Pool> pg_;
  store::Presence presence_;
  // The maintenance step's own connection, used by nothing else: the
  // liveness refresh must never queue behind a storm of connects and joins
  // on redis_, or a busy gateway would be swept as dead while alive.
  std::unique_ptr<redis::Client> maintenance_redis_;
  store::Presence maintenance_;
  store::UserStatusReader reader_;
  std::unique_ptr<store::StatusWriter> writer_;
  std::unique_ptr<amqp::Publisher> events_;

  std::mutex mutex_;
  std::vector<Retry> retries_;
  // Room -> its presence frames, each ending in '\n'; pending_bytes_ in all.
  std::unordered_map<std::string, std::string> pending_events_;
  std::size_t pending_bytes_ = 0;
  bool flush_posted_ = false;

  LeaseLost lease_lost_;
  boost::asio::any_io_executor executor_;
  std::chrono::milliseconds period() const;
  std::unique_ptr<boost::asio::steady_timer> timer_;
  bool registered_ = false;  // on the executor's thread only
  std::future<void> loop_done_;
  std::atomic<bool> stopping_{false};
};

}  // namespace rtmc::gateway
