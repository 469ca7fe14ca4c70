#pragma once
// What the store clients (store/redis, store/postgres, store/amqp) report
// about their links, for each role's /metrics:
//   rtmc_<role>_store_connects_total{store}  connections opened: the first ones
//                                            and every reconnect after a loss
//   rtmc_<role>_store_errors_total{store}    failed calls: connect failures,
//                                            I/O errors, timeouts, lost links
// store = "redis" | "postgres" | "rabbitmq". A server's error reply that is an
// answer (a Redis error reply, a PostgreSQL constraint violation) is not an
// error of the link and is not counted here.
//
// The counters are reached through the store's config (RedisConfig::events,
// PgConfig::events, AmqpConfig::events): CommonOptions::finish() makes them,
// so every connection a role opens from its options counts, and a config
// without them (tests) counts nothing.
//
// Threading: any thread; the counters are relaxed atomics.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace rtmc {

namespace metrics {
class Registry;
}

struct StoreEvents {
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> errors{0};
};

inline void note_connect(const std::shared_ptr<StoreEvents>& events) {
  if (events) events->connects.fetch_add(1, std::memory_order_relaxed);
}
inline void note_error(const std::shared_ptr<StoreEvents>& events) {
  if (events) events->errors.fetch_add(1, std::memory_order_relaxed);
}
inline void note_connect(StoreEvents* events) {
  if (events) events->connects.fetch_add(1, std::memory_order_relaxed);
}
inline void note_error(StoreEvents* events) {
  if (events) events->errors.fetch_add(1, std::memory_order_relaxed);
}

struct CommonOptions;

// Adds rtmc_<role>_store_connects_total and rtmc_<role>_store_errors_total,
// read from `options`' events (every store listed, zeros included; a store
// without events reads 0). The events are shared, so `options` may be a copy
// that goes away: the collector keeps them alive.
void add_store_metrics(metrics::Registry& registry, const std::string& role, const CommonOptions& options);

}  // namespace rtmc
