#pragma once
// The syncer (seed flow 4): carries every sequenced message from the shards'
// Redis sync streams (`{k}:sync`, written by the sequencing script) into
// PostgreSQL, in batches, and trims what it synced from the streams.
//
//  - Consumer group `rtmc.syncer` on every shard stream (created at start
//    from id 0 with MKSTREAM, and again when Redis lost it: NOGROUP), so
//    several syncers share the streams without double work. XREADGROUP over
//    all shards at once.
//  - A batch is written when `batch_size` messages are in hand or
//    `batch_wait` after the first of them: one statement (one transaction)
//    inserts the messages (ON CONFLICT DO NOTHING) and upserts `rooms` from
//    the rows really inserted. Only after the COMMIT are the entries XACKed
//    and XDELed (one pipeline). A crash in between re-delivers them, and
//    they insert nothing twice.
//  - Entries pending longer than `claim_idle` on any consumer (a syncer that
//    died) are taken over with XAUTOCLAIM. At start and after every Redis
//    failure it reads its own pending entries again (XREADGROUP from id 0):
//    a reply lost with a connection, or a previous run under the same
//    consumer name, leaves nothing waiting for a claim.
//  - PostgreSQL or Redis unavailable: the batch stays in hand and is retried
//    with backoff (common/backoff); each change of state (down, up again) is
//    logged once. While PostgreSQL is down no more than a batch is read: the
//    backlog waits in Redis.
//  - A malformed entry is logged, acked and deleted; a row PostgreSQL refuses
//    for its data (not for an outage) is found by writing the batch row by
//    row, then logged, counted and dropped, so nothing blocks a stream.
//
// Threading: the work runs on a thread of its own (hiredis' and libpq's
// synchronous APIs; nothing else touches its connections). counters(),
// health() and request_stop() may be called from any thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/config.hpp"

namespace rtmc::syncer {

inline constexpr std::string_view kGroup = "rtmc.syncer";

struct SyncerConfig {
  RedisConfig redis;
  PgConfig pg;
  std::uint32_t ingest_shards = 16;
  // Shards whose streams to read; empty = 0..ingest_shards-1. Tests name
  // their own so they never compete with a running syncer.
  std::vector<std::uint32_t> shards;
  std::size_t batch_size = 1000;
  std::chrono::milliseconds batch_wait{100};
  std::chrono::milliseconds claim_idle{30000};
  // Deadline of every PostgreSQL statement (and its statement_timeout).
  std::chrono::milliseconds pg_timeout{10000};
  // The consumer name in the group; empty = hostname-pid-random.
  std::string consumer;
};

// Monotonic counts; read from any thread.
struct SyncerCounters {
  std::atomic<std::uint64_t> inserted{0};         // rows inserted into messages
  std::atomic<std::uint64_t> duplicates{0};       // entries whose row was already there
  std::atomic<std::uint64_t> malformed{0};        // entries dropped as unreadable
  std::atomic<std::uint64_t> rejected{0};         // rows PostgreSQL refused for their data, dropped
  std::atomic<std::uint64_t> batches{0};          // batches committed
  std::atomic<std::uint64_t> last_batch_size{0};  // entries of the last committed batch
  std::atomic<std::uint64_t> trimmed{0};          // entries XACKed and XDELed
  std::atomic<std::uint64_t> claimed{0};          // entries taken over from another consumer
  std::atomic<std::uint64_t> pg_failures{0};      // failed PostgreSQL attempts
  std::atomic<std::uint64_t> redis_failures{0};   // failed Redis calls
};

struct Health {
  bool redis_up = true;
  bool pg_up = true;
  // (shard, XLEN of its stream: entries not synced yet); -1 = not known yet.
  std::vector<std::pair<std::uint32_t, std::int64_t>> backlog;
  // (shard, age in ms of the oldest entry of its stream, i.e. of the oldest
  // message not in PostgreSQL yet; 0 when the stream is empty); -1 = not
  // known yet. Refreshed with the backlog.
  std::vector<std::pair<std::uint32_t, std::int64_t>> lag_ms;
};

class Syncer {
 public:
  // Starts the thread at once.
  explicit Syncer(SyncerConfig config);
  // Stops: a last try to write and trim what is in hand, then the thread
  // ends. What is left stays pending in Redis for the next syncer.
  ~Syncer();
  Syncer(const Syncer&) = delete;
  Syncer& operator=(const Syncer&) = delete;

  void request_stop() { stopping_ = true; }
  const SyncerCounters& counters() const { return counters_; }
  Health health() const;
  const std::string& consumer() const { return config_.consumer; }
  const std::vector<std::uint32_t>& shards() const { return config_.shards; }

  // Shared with the thread (not part of the API).
  struct State;

 private:
  SyncerConfig config_;
  SyncerCounters counters_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<State> state_;
  std::thread thread_;  // last: starts after everything above exists
};

// hostname-pid-random: unique per process, readable in XINFO CONSUMERS.
std::string default_consumer_name();

}  // namespace rtmc::syncer
