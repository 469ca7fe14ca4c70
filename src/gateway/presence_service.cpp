#include "gateway/presence_service.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"

namespace rtmc::gateway {

namespace asio = boost::asio;

namespace {
// Redis calls waiting per worker of the presence client; beyond, a call
// fails at once (auth and join answer `unavailable`) instead of queueing.
constexpr std::size_t kRedisQueueLimit = 4096;
// The maintenance connection has one step at a time, and stop()'s last one.
constexpr std::size_t kMaintenanceQueueLimit = 4;
// Presence frames per AMQP message, so one message stays small.
constexpr std::size_t kMaxEventBytes = 64 * 1024;
}  // namespace

PresenceService::PresenceService(const CommonOptions& common, std::string gateway_id, Options options)
    : PresenceService(common, std::move(gateway_id), options, common.redis) {}

PresenceService::PresenceService(const CommonOptions& common, std::string gateway_id, Options options,
                                 const RedisConfig& maintenance_redis)
    : options_(options),
      redis_(std::make_unique<redis::Client>(common.redis, 2,
                                             WorkerLimits{kRedisQueueLimit, common.redis.timeout})),
      pg_(std::make_unique<pg::Pool>(common.pg, 2, pg::Options{options.pg_timeout, 256})),
      presence_(*redis_, gateway_id, store::PresenceOptions{options.liveness_ttl, options.status_cache_ttl}),
      maintenance_redis_(std::make_unique<redis::Client>(
          maintenance_redis, 1, WorkerLimits{kMaintenanceQueueLimit, maintenance_redis.timeout})),
      maintenance_(*maintenance_redis_, std::move(gateway_id),
                   store::PresenceOptions{options.liveness_ttl, options.status_cache_ttl}),
      reader_(*redis_, *pg_, options.status_cache_ttl),
      writer_(std::make_unique<store::StatusWriter>(common.pg, options.status_write_lag)),
      events_(std::make_unique<amqp::Publisher>(
          common.amqp, amqp::Publisher::Options{.window = 64,
                                                .give_up_after = std::chrono::seconds(5),
                                                .ingest_shards = 0,
                                                .declare_fanout_exchange = true})) {}

PresenceService::~PresenceService() {
  stop();
}

void PresenceService::start(asio::any_io_executor executor, LeaseLost lease_lost) {
  executor_ = executor;
  lease_lost_ = std::move(lease_lost);
  timer_ = std::make_unique<asio::steady_timer>(executor_);
  // Registered before the first connection is recorded, so a kill -9 right
  // after start still leaves its records to a sweeper.
  try {
    asio::co_spawn(executor_, maintenance_.refresh(now_ms()), asio::use_future).get();
    registered_ = true;
  } catch (const std::exception& error) {
    counters_.store_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("presence: first refresh failed (retried every {} ms): {}", period().count(), error.what());
  }
  loop_done_ = asio::co_spawn(executor_, maintain(), asio::use_future);
}

void PresenceService::stop() {
  if (stopping_.exchange(true) || !timer_) return;
  asio::post(executor_, [this] { timer_->cancel(); });
  try {
    loop_done_.get();
  } catch (const std::exception& error) {
    spdlog::error("presence: maintenance loop ended with: {}", error.what());
  }
  // Whatever the connections' own clean-ups did not remove goes in one
  // script; a clean-up that runs later finds nothing and changes nothing.
  try {
    auto swept = asio::co_spawn(
                     executor_,
                     [this]() -> asio::awaitable<store::SweepResult> {
                       co_return co_await maintenance_.unregister(now_ms());
                     },
                     asio::use_future)
                     .get();
    apply(swept);
    spdlog::info("presence: unregistered gateway {} ({} users offline, {} room leaves)", gateway_id(),
                 swept.went_offline.size(), swept.left_rooms.size());
  } catch (const std::exception& error) {
    spdlog::warn("presence: could not unregister (another gateway sweeps it after {} ms): {}",
                 options_.liveness_ttl.count(), error.what());
  }
  // The last leave events should reach the other gateways' clients.
  auto confirmed = std::make_shared<std::promise<void>>();
  auto done = confirmed->get_future();
  flush_events([confirmed](amqp::PublishStatus) { confirmed->set_value(); });
  if (done.wait_for(std::chrono::seconds(2)) != std::future_status::ready)
    spdlog::warn("presence: the last presence events were not confirmed in time");
}

std::chrono::milliseconds PresenceService::period() const {
  return std::max(std::chrono::milliseconds(100), options_.liveness_ttl / 3);
}

asio::awaitable<void> PresenceService::maintain() {
  constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
  while (!stopping_) {
    try {
      co_await maintenance_step();
    } catch (const std::exception& error) {
      counters_.store_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("presence: maintenance step failed: {}", error.what());
    }
    // No handler runs between this check and the wait (one thread), so
    // stop()'s posted cancel cannot fall in between.
    if (stopping_) break;
    timer_->expires_after(period());
    co_await timer_->async_wait(nothrow);
  }
}

asio::awaitable<void> PresenceService::maintenance_step() {
  // First, so nothing else in the step can delay it past the TTL.
  // Named locals, never co_await inside a condition: GCC 12 miscompiles it
  // (an illegal instruction at run time).
  const bool added = co_await maintenance_.refresh(now_ms());
  if (added && registered_) {
    spdlog::error(
        "presence: gateway {} was swept as dead while alive (stalled past {} ms); dropping its "
        "connections so they are recorded anew",
        gateway_id(), options_.liveness_ttl.count());
    if (lease_lost_) lease_lost_();
  }
  registered_ = true;

  std::vector<Retry> retries;
  {
    std::lock_guard lock(mutex_);
    retries.swap(retries_);
  }
  // Retries go through the connections' client and may wait behind a storm:
  // what does not fit in half a period (plus one call's deadline) waits for
  // the next step, so the next refresh stays within the TTL.
  const auto retry_until = std::chrono::steady_clock::now() + period() / 2;
  for (std::size_t i = 0; i < retries.size(); ++i) {
    const auto& retry = retries[i];
    if (std::chrono::steady_clock::now() >= retry_until) {
      std::lock_guard lock(mutex_);
      retries_.insert(retries_.end(), retries.begin() + static_cast<std::ptrdiff_t>(i), retries.end());
      break;
    }
    bool done = false;
    if (retry.connection_id != 0)
      done = co_await remove_connection(retry.connection_id, retry.user);
    else
      done = co_await remove_membership(retry.room, retry.user);
    if (!done) {
      // Redis is still away (the failed one is queued again): keep the rest
      // for the next step instead of waiting for each one's deadline.
      std::lock_guard lock(mutex_);
      retries_.insert(retries_.end(), retries.begin() + static_cast<std::ptrdiff_t>(i) + 1, retries.end());
      break;
    }
  }

  auto swept = co_await maintenance_.sweep(now_ms());
  if (!swept.gateways.empty()) {
    counters_.gateways_swept.fetch_add(swept.gateways.size(), std::memory_order_relaxed);
    spdlog::warn("presence: swept dead gateway(s) {}: {} users offline, {} room leaves",
                 fmt::join(swept.gateways, ","), swept.went_offline.size(), swept.left_rooms.size());
  }
  apply(swept);
}

void PresenceService::apply(const store::SweepResult& swept) {
  for (const auto& change : swept.went_offline) writer_->record(change);
  for (const auto& event : swept.left_rooms) publish_event(event.room, event.user, event.joined);
}

asio::awaitable<void> PresenceService::connected(std::uint64_t connection_id, std::string user) {
  auto change = co_await presence_.connect(connection_id, user, now_ms());
  if (change) writer_->record(*change);
}

asio::awaitable<bool> PresenceService::remove_connection(std::uint64_t connection_id,
                                                         const std::string& user) {
  try {
    auto change = co_await presence_.disconnect(connection_id, user, now_ms());
    if (change) writer_->record(*change);
    co_return true;
  } catch (const std::exception& error) {
    counters_.store_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("presence: removing the online record of '{}' failed (retried): {}", user, error.what());
  }
  std::lock_guard lock(mutex_);
  retries_.push_back({connection_id, user, {}});
  co_return false;
}

asio::awaitable<bool> PresenceService::remove_membership(const std::string& room, const std::string& user) {
  try {
    const bool last = co_await presence_.leave(room, user);
    if (last) publish_event(room, user, false);
    co_return true;
  } catch (const std::exception& error) {
    counters_.store_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("presence: removing '{}' from room {} failed (retried): {}", user, room, error.what());
  }
  std::lock_guard lock(mutex_);
  retries_.push_back({0, user, room});
  co_return false;
}

asio::awaitable<void> PresenceService::disconnected(std::uint64_t connection_id, std::string user,
                                                    std::vector<std::string> rooms) {
  for (auto& room : rooms) co_await left(std::move(room), user);
  co_await remove_connection(connection_id, user);
}

asio::awaitable<void> PresenceService::joined(std::string room, std::string user) {
  const bool first = co_await presence_.join(room, user);
  if (first) publish_event(room, user, true);
}

asio::awaitable<void> PresenceService::left(std::string room, std::string user) {
  co_await remove_membership(room, user);
}

asio::awaitable<std::vector<std::string>> PresenceService::members(std::string room) {
  co_return co_await presence_.members(std::move(room));
}

asio::awaitable<std::optional<UserStatusView>> PresenceService::status(std::string user) {
  auto found = co_await reader_.get(std::move(user));
  if (!found) co_return std::nullopt;
  co_return UserStatusView{std::move(found->user), found->online, found->last_seen_ms};
}

void PresenceService::publish_event(const std::string& room, const std::string& user, bool joined) {
  bool post = false;
  bool flush_now = false;
  {
    std::lock_guard lock(mutex_);
    auto frame = protocol::presence_frame(room, user, joined);
    pending_bytes_ += frame.size();
    pending_events_[room] += frame;
    counters_.events_published.fetch_add(1, std::memory_order_relaxed);
    if (pending_bytes_ >= kMaxEventBytes || !executor_) {
      flush_now = true;
    } else if (!flush_posted_) {
      flush_posted_ = true;
      post = true;
    }
  }
  // Posted behind whatever the io thread already has queued: under a storm
  // the events of many joins leave in one message; when idle, at once.
  if (flush_now)
    flush_events();
  else if (post)
    asio::post(executor_, [this] { flush_events(); });
}

void PresenceService::flush_events(std::function<void(amqp::PublishStatus)> done) {
  std::unordered_map<std::string, std::string> by_room;
  {
    std::lock_guard lock(mutex_);
    flush_posted_ = false;
    pending_bytes_ = 0;
    by_room.swap(pending_events_);
  }
  if (by_room.empty()) {
    if (done) done(amqp::PublishStatus::confirmed);
    return;
  }
  // `done` once for all messages of this flush, with a failure if any
  // (callbacks normally run on the publisher thread; atomics for the one
  // that races with the publisher's destruction).
  struct Waiting {
    std::atomic<std::size_t> left;
    std::atomic<amqp::PublishStatus> status{amqp::PublishStatus::confirmed};
    std::function<void(amqp::PublishStatus)> done;
  };
  auto waiting = std::make_shared<Waiting>();
  waiting->left = by_room.size();
  waiting->done = std::move(done);
  for (auto& [room, body] : by_room) {
    counters_.event_messages.fetch_add(1, std::memory_order_relaxed);
    amqp::Message message{std::string(kFanoutExchange), room, std::move(body), /*persistent=*/false,
                          /*mandatory=*/false};
    // Best effort by design: after a reconnect `members` is the truth.
    events_->publish(std::move(message), [waiting](amqp::PublishStatus status) {
      if (status != amqp::PublishStatus::confirmed) {
        spdlog::debug("presence: events not confirmed: {}", amqp::to_string(status));
        waiting->status = status;
      }
      if (waiting->left.fetch_sub(1) == 1 && waiting->done) waiting->done(waiting->status.load());
    });
  }
}

void PresenceService::add_metrics(metrics::Registry& registry) const {
  registry.add_collector([this] {
    auto read = [](const std::atomic<std::uint64_t>& value) {
      return static_cast<double>(value.load(std::memory_order_relaxed));
    };
    const auto& cache = reader_.counters();
    return std::vector{
        metrics::counter_family("rtmc_status_cache_hits_total",
                                "User status reads answered from the Redis cache.", {{{}, read(cache.hits)}}),
        metrics::counter_family("rtmc_status_cache_misses_total",
                                "User status reads that missed the cache and asked PostgreSQL.",
                                {{{}, read(cache.misses)}}),
        metrics::counter_family("rtmc_gateway_presence_events_total",
                                "Presence events (join/leave) this gateway published.",
                                {{{}, read(counters_.events_published)}}),
        metrics::counter_family("rtmc_gateway_presence_event_messages_total",
                                "AMQP messages carrying those events (one per room, several events of "
                                "a room per message under load).",
                                {{{}, read(counters_.event_messages)}}),
        metrics::counter_family("rtmc_gateway_presence_gateways_swept_total",
                                "Dead gateways whose records this gateway removed.",
                                {{{}, read(counters_.gateways_swept)}}),
        metrics::counter_family("rtmc_gateway_presence_store_failures_total",
                                "Presence calls to Redis that failed.",
                                {{{}, read(counters_.store_failures)}})};
  });
}

}  // namespace rtmc::gateway
