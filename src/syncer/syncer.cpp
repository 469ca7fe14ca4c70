#include "syncer/syncer.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "common/backoff.hpp"
#include "common/keys.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "syncer/entries.hpp"

namespace rtmc::syncer {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// What the thread publishes for health(): the store states and the backlog.
struct Syncer::State {
  std::atomic<bool> redis_up{true};
  std::atomic<bool> pg_up{true};
  std::vector<std::atomic<std::int64_t>> backlog;
  std::vector<std::atomic<std::int64_t>> lag_ms;
  explicit State(std::size_t shards) : backlog(shards), lag_ms(shards) {
    for (auto& value : backlog) value = -1;
    for (auto& value : lag_ms) value = -1;
  }
};

namespace {

// Longest XREADGROUP BLOCK with nothing in hand: bounds how late a stop, a
// claim pass or a backlog refresh comes. Well below the Redis timeout.
constexpr std::chrono::milliseconds kIdleBlock{500};
constexpr std::chrono::milliseconds kBacklogEvery{1000};
// With nothing to write for this long, a cheap statement tells whether
// PostgreSQL is up (for /healthz and the state-change log).
constexpr std::chrono::milliseconds kPgProbeEvery{5000};
// Ids per XACK / XDEL command.
constexpr std::size_t kIdsPerCommand = 1000;
// Every restart joins the group under a new name; names idle this long with
// nothing pending are removed, so the group does not collect them forever.
constexpr std::chrono::milliseconds kForgetConsumersAfter = std::chrono::hours(1);
constexpr std::chrono::milliseconds kForgetConsumersEvery = std::chrono::minutes(1);

class Loop {
 public:
  Loop(const SyncerConfig& config, SyncerCounters& counters, Syncer::State& state,
       const std::atomic<bool>& stopping)
      : config_(config),
        counters_(counters),
        state_(state),
        stopping_(stopping),
        policy_{std::max<std::size_t>(1, config.batch_size), config.batch_wait},
        redis_(config.redis),
        pg_(config.pg, pg::Options{config.pg_timeout, 0}),
        claim_every_(std::clamp<std::chrono::milliseconds>(config.claim_idle / 2, 50ms, 5000ms)) {
    for (auto shard : config.shards) {
      keys_.push_back(keys::sync_stream(shard));
      claim_cursor_.push_back("0-0");
    }
  }

  void run() {
    while (!stopping_) {
      const auto now = Clock::now();
      if (!groups_ready_ && now >= redis_retry_at_) ensure_groups();
      if (groups_ready_ && !own_pending_read_ && now >= redis_retry_at_) read_own_pending();
      if (!settled_.empty() && now >= redis_retry_at_) settle();
      if (policy_.due(hand_.size(), first_at_, now) && now >= pg_retry_at_) write();
      housekeeping();
      read_or_wait();
    }
    // A last try, so a graceful restart does not leave a batch pending until
    // another syncer's claim.
    if (!hand_.empty() && state_.pg_up) {
      while (!hand_.empty() && write()) {
      }
    }
    if (!settled_.empty()) settle();
    if (!hand_.empty())
      spdlog::info("syncer: stopping with {} message(s) unwritten; they stay pending in Redis", hand_.size());
  }

 private:
  // ------------------------------------------------------------- redis

  // Creates the group on every stream; BUSYGROUP (it exists) is fine.
  void ensure_groups() {
    std::vector<std::vector<std::string>> commands;
    for (const auto& key : keys_)
      commands.push_back({"XGROUP", "CREATE", key, std::string(kGroup), "0", "MKSTREAM"});
    std::vector<redis::Reply> replies;
    if (!redis_call([&] { replies = redis_.pipeline(commands); })) return;
    for (const auto& reply : replies) {
      if (reply.is_error() && reply.str.rfind("BUSYGROUP", 0) != 0) {
        redis_failed("XGROUP CREATE: " + reply.str);
        return;
      }
    }
    groups_ready_ = true;
    spdlog::info("syncer: consumer {} in group {} on {} sync stream(s)", config_.consumer, kGroup,
                 keys_.size());
  }

  // Runs `call`; on a Redis I/O failure counts it, logs a state change and
  // backs off. False when it failed.
  template <class Call>
  bool redis_call(Call&& call) {
    try {
      call();
    } catch (const redis::RedisError& error) {
      redis_failed(error.what());
      return false;
    }
    redis_ok();
    return true;
  }

  void redis_failed(const std::string& why) {
    counters_.redis_failures.fetch_add(1, std::memory_order_relaxed);
    // A reply lost with the connection may have given us entries we never
    // saw: they are pending on our name, and no `>` read returns them.
    own_pending_read_ = false;
    const auto delay = redis_backoff_.next();
    redis_retry_at_ = Clock::now() + delay;
    if (state_.redis_up.exchange(false))
      spdlog::warn("syncer: Redis unavailable ({}); retrying with backoff, {} message(s) in hand", why,
                   hand_.size());
  }

  void redis_ok() {
    redis_backoff_.reset();
    if (!state_.redis_up.exchange(true)) spdlog::info("syncer: Redis available again");
  }

  // An error reply to a group command: the group vanished (a Redis restart
  // without persistence, a flush), or Redis refuses for now.
  void group_error(const std::string& error) {
    if (error.rfind("NOGROUP", 0) == 0) {
      spdlog::warn("syncer: consumer group {} is gone ({}); creating it again", kGroup, error);
      groups_ready_ = false;
      own_pending_read_ = false;
      return;
    }
    redis_failed(error);
  }

  // Our own pending entries (XREADGROUP from id 0): those a lost reply gave
  // us, or a previous run under the same --consumer name left. Entries
  // already in hand are skipped by take().
  void read_own_pending() {
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      std::string after = "0";
      for (;;) {
        const std::vector<std::string> command{"XREADGROUP",     "GROUP",  std::string(kGroup),
                                               config_.consumer, "COUNT",  "1000",
                                               "STREAMS",        keys_[i], after};
        redis::Reply reply;
        if (!redis_call([&] { reply = redis_.command(command); })) return;
        if (reply.is_error()) return group_error(reply.str);
        if (reply.type != redis::Reply::Type::array || reply.elements.empty() ||
            reply.elements[0].elements.size() < 2 || reply.elements[0].elements[1].elements.empty())
          break;
        const auto& entries = reply.elements[0].elements[1];
        after = entries.elements.back().elements.at(0).str;
        take(parse_entries(entries, config_.shards[i]), false);
      }
    }
    own_pending_read_ = true;
  }

  void read_or_wait() {
    const auto now = Clock::now();
    auto wait = policy_.time_left(hand_.size(), first_at_, now, kIdleBlock);
    // With a batch in hand that cannot be written yet, wait for the retry.
    if (!hand_.empty() && pg_retry_at_ > now)
      wait = std::max(wait, std::chrono::ceil<std::chrono::milliseconds>(pg_retry_at_ - now));
    wait = std::min(wait, kIdleBlock);
    const bool can_read = groups_ready_ && now >= redis_retry_at_ && hand_.size() < policy_.size;
    if (!can_read || wait <= 0ms) {
      if (wait > 0ms) {
        auto until = now + wait;
        if (redis_retry_at_ > now) until = std::min(until, std::max(redis_retry_at_, now + 1ms));
        sleep_unless_stopped(std::chrono::ceil<std::chrono::milliseconds>(until - now), stopping_);
      }
      return;
    }
    std::vector<std::string> command{"XREADGROUP",
                                     "GROUP",
                                     std::string(kGroup),
                                     config_.consumer,
                                     "COUNT",
                                     std::to_string(policy_.size - hand_.size()),
                                     "BLOCK",
                                     std::to_string(wait.count()),
                                     "STREAMS"};
    for (const auto& key : keys_) command.push_back(key);
    for (std::size_t i = 0; i < keys_.size(); ++i) command.push_back(">");
    redis::Reply reply;
    if (!redis_call([&] { reply = redis_.command(command); })) return;
    if (reply.is_error()) return group_error(reply.str);
    if (reply.type != redis::Reply::Type::array) return;  // nil: nothing within BLOCK
    for (const auto& stream : reply.elements) {
      if (stream.elements.size() < 2) continue;
      take(parse_entries(stream.elements[1], shard_of_key(stream.elements[0].str)), false);
    }
  }

  std::uint32_t shard_of_key(const std::string& key) const {
    for (std::size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] == key) return config_.shards[i];
    return 0;
  }

  static std::string entry_key(std::uint32_t shard, const std::string& id) {
    return std::to_string(shard) + '/' + id;
  }

  // Adds read or claimed entries to the hand; malformed ones go straight to
  // trimming. An entry already held (claimed back from ourselves while a
  // batch waited for PostgreSQL) is not taken twice.
  void take(std::vector<Entry> entries, bool claimed) {
    for (auto& entry : entries) {
      if (!known_.insert(entry_key(entry.shard, entry.id)).second) continue;
      if (claimed) counters_.claimed.fetch_add(1, std::memory_order_relaxed);
      if (!entry.row) {
        spdlog::error("syncer: dropping malformed entry {} of {}: {}", entry.id,
                      keys::sync_stream(entry.shard), entry.problem);
        counters_.malformed.fetch_add(1, std::memory_order_relaxed);
        settled_[entry.shard].push_back(entry.id);
        continue;
      }
      if (hand_.empty()) first_at_ = Clock::now();
      hand_.push_back(std::move(entry));
    }
  }

  // XACK + XDEL of everything written (or dropped), one pipeline.
  void settle() {
    std::vector<std::vector<std::string>> commands;
    std::size_t count = 0;
    for (const auto& [shard, ids] : settled_) {
      const auto key = keys::sync_stream(shard);
      for (std::size_t from = 0; from < ids.size(); from += kIdsPerCommand) {
        const auto to = std::min(ids.size(), from + kIdsPerCommand);
        std::vector<std::string> ack{"XACK", key, std::string(kGroup)};
        std::vector<std::string> del{"XDEL", key};
        for (std::size_t i = from; i < to; ++i) {
          ack.push_back(ids[i]);
          del.push_back(ids[i]);
        }
        commands.push_back(std::move(ack));
        commands.push_back(std::move(del));
      }
      count += ids.size();
    }
    std::vector<redis::Reply> replies;
    if (!redis_call([&] { replies = redis_.pipeline(commands); })) return;
    for (const auto& reply : replies) {
      // Nothing to retry: XACK and XDEL of a missing entry or group are no
      // errors; anything else would only repeat.
      if (reply.is_error()) spdlog::warn("syncer: trimming synced entries: {}", reply.str);
    }
    for (const auto& [shard, ids] : settled_)
      for (const auto& id : ids) known_.erase(entry_key(shard, id));
    settled_.clear();
    counters_.trimmed.fetch_add(count, std::memory_order_relaxed);
  }

  void housekeeping() {
    const auto now = Clock::now();
    if (groups_ready_ && now >= redis_retry_at_ && now >= next_claim_ && hand_.size() < policy_.size) {
      next_claim_ = now + claim_every_;
      claim();
    }
    if (groups_ready_ && now >= redis_retry_at_ && now >= next_forget_) {
      next_forget_ = now + kForgetConsumersEvery;
      forget_idle_consumers();
    }
    if (now >= redis_retry_at_ && now >= next_backlog_) {
      next_backlog_ = now + kBacklogEvery;
      refresh_backlog();
    }
    if (hand_.empty() && now >= pg_retry_at_ && now - last_pg_contact_ >= kPgProbeEvery) probe_pg();
  }

  // Takes over entries pending longer than claim_idle, whoever holds them;
  // each shard's cursor carries on where the last pass stopped.
  void claim() {
    for (std::size_t i = 0; i < keys_.size() && hand_.size() < policy_.size; ++i) {
      const std::vector<std::string> command{"XAUTOCLAIM",
                                             keys_[i],
                                             std::string(kGroup),
                                             config_.consumer,
                                             std::to_string(config_.claim_idle.count()),
                                             claim_cursor_[i],
                                             "COUNT",
                                             std::to_string(policy_.size - hand_.size())};
      redis::Reply reply;
      if (!redis_call([&] { reply = redis_.command(command); })) return;
      if (reply.is_error()) return group_error(reply.str);
      if (reply.type != redis::Reply::Type::array || reply.elements.size() < 2) continue;
      claim_cursor_[i] = reply.elements[0].str.empty() ? "0-0" : reply.elements[0].str;
      auto entries = parse_entries(reply.elements[1], config_.shards[i]);
      if (!entries.empty())
        spdlog::info("syncer: claimed {} entr{} of {} pending over {} ms", entries.size(),
                     entries.size() == 1 ? "y" : "ies", keys_[i], config_.claim_idle.count());
      take(std::move(entries), true);
    }
  }

  // XINFO CONSUMERS: [[name, N, pending, N, idle, N, ...], ...] (field order
  // differs between versions, hence by name).
  void forget_idle_consumers() {
    for (const auto& key : keys_) {
      redis::Reply reply;
      if (!redis_call([&] { reply = redis_.command({"XINFO", "CONSUMERS", key, std::string(kGroup)}); }))
        return;
      if (reply.type != redis::Reply::Type::array) continue;
      std::vector<std::vector<std::string>> forget;
      for (const auto& consumer : reply.elements) {
        std::string name;
        long long pending = -1, idle = -1;
        for (std::size_t i = 0; i + 1 < consumer.elements.size(); i += 2) {
          const auto& field = consumer.elements[i].str;
          const auto& value = consumer.elements[i + 1];
          if (field == "name") name = value.str;
          if (field == "pending") pending = value.integer;
          if (field == "idle") idle = value.integer;
        }
        if (!name.empty() && name != config_.consumer && pending == 0 &&
            idle >= kForgetConsumersAfter.count())
          forget.push_back({"XGROUP", "DELCONSUMER", key, std::string(kGroup), name});
      }
      if (!forget.empty() && !redis_call([&] { redis_.pipeline(forget); })) return;
    }
  }

  // Each shard's XLEN and the age of its oldest entry (synced entries are
  // deleted, so the first one is the oldest not in PostgreSQL yet), against
  // Redis' own clock: the entry ids are its XADD times.
  void refresh_backlog() {
    std::vector<std::vector<std::string>> commands;
    for (const auto& key : keys_) {
      commands.push_back({"XLEN", key});
      commands.push_back({"XRANGE", key, "-", "+", "COUNT", "1"});
    }
    commands.push_back({"TIME"});
    std::vector<redis::Reply> replies;
    if (!redis_call([&] { replies = redis_.pipeline(commands); })) return;
    const auto& time = replies.back();
    std::optional<std::int64_t> now_ms;
    if (time.type == redis::Reply::Type::array && time.elements.size() == 2)
      now_ms = redis_time_ms(time.elements[0].str, time.elements[1].str);
    for (std::size_t i = 0; i < keys_.size() && i < state_.backlog.size(); ++i) {
      const auto& length = replies[2 * i];
      if (length.type == redis::Reply::Type::integer) state_.backlog[i] = length.integer;
      const auto& first = replies[2 * i + 1];
      if (first.type != redis::Reply::Type::array || !now_ms) continue;
      std::optional<std::string_view> oldest;
      if (!first.elements.empty() && first.elements[0].type == redis::Reply::Type::array &&
          !first.elements[0].elements.empty())
        oldest = first.elements[0].elements[0].str;
      if (const auto lag = oldest_entry_age_ms(oldest, *now_ms)) state_.lag_ms[i] = *lag;
    }
  }

  // ---------------------------------------------------------- postgres

  void probe_pg() {
    try {
      pg_.exec("SELECT 1");
      pg_ok();
    } catch (const pg::PgError& error) {
      pg_failed(error.what());
    }
  }

  void pg_failed(const std::string& why) {
    counters_.pg_failures.fetch_add(1, std::memory_order_relaxed);
    last_pg_contact_ = Clock::now();
    const auto delay = pg_backoff_.next();
    pg_retry_at_ = Clock::now() + delay;
    if (state_.pg_up.exchange(false))
      spdlog::warn("syncer: PostgreSQL unavailable ({}); {} message(s) in hand wait, retrying with backoff",
                   why, hand_.size());
  }

  void pg_ok() {
    last_pg_contact_ = Clock::now();
    pg_backoff_.reset();
    if (!state_.pg_up.exchange(true)) spdlog::info("syncer: PostgreSQL available again");
  }

  // Writes the first batch of the hand (at most batch_size entries; one at
  // a time while a refused row is being looked for). True when it went
  // through (or its one row was dropped).
  bool write() {
    const std::size_t take = isolating_ > 0 ? 1 : std::min(hand_.size(), policy_.size);
    std::vector<Row> rows;
    rows.reserve(take);
    for (std::size_t i = 0; i < take; ++i) rows.push_back(*hand_[i].row);
    rows = ordered_rows(std::move(rows));
    std::uint64_t inserted = 0;
    try {
      const auto result = pg_.exec(kInsertSql, insert_params(rows));
      if (!result.rows.empty() && !result.rows[0].empty() && result.rows[0][0])
        inserted = std::stoull(*result.rows[0][0]);
      pg_ok();
    } catch (const pg::PgError& error) {
      if (classify(error) == Failure::transient) {
        pg_failed(error.what());
        return false;
      }
      pg_ok();  // it answered
      if (take > 1) {
        spdlog::warn("syncer: PostgreSQL refused a batch of {} ({}); writing it row by row", take,
                     error.what());
        isolating_ = take;
        return false;
      }
      const auto& row = *hand_.front().row;
      spdlog::error("syncer: PostgreSQL refused room {} seq {} (entry {} of {}): {}; dropped", row.room,
                    row.seq, hand_.front().id, keys::sync_stream(hand_.front().shard), error.what());
      counters_.rejected.fetch_add(1, std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < take; ++i) settled_[hand_[i].shard].push_back(hand_[i].id);
    hand_.erase(hand_.begin(), hand_.begin() + static_cast<std::ptrdiff_t>(take));
    if (isolating_ > 0) isolating_ -= take;
    counters_.inserted.fetch_add(inserted, std::memory_order_relaxed);
    counters_.duplicates.fetch_add(take - std::min<std::uint64_t>(take, inserted), std::memory_order_relaxed);
    counters_.batches.fetch_add(1, std::memory_order_relaxed);
    counters_.last_batch_size.store(take, std::memory_order_relaxed);
    // Trimmed right away: the entries need not wait for the next read.
    if (Clock::now() >= redis_retry_at_) settle();
    return true;
  }

  const SyncerConfig& config_;
  SyncerCounters& counters_;
  Syncer::State& state_;
  const std::atomic<bool>& stopping_;
  const BatchPolicy policy_;
  redis::Connection redis_;
  pg::Connection pg_;
  const std::chrono::milliseconds claim_every_;
  std::vector<std::string> keys_;          // by index of config_.shards
  std::vector<std::string> claim_cursor_;  // XAUTOCLAIM start per stream
  bool groups_ready_ = false;
  bool own_pending_read_ = false;

  std::vector<Entry> hand_;  // read or claimed, valid, not written yet (arrival order)
  Clock::time_point first_at_{};
  std::size_t isolating_ = 0;                                  // entries still to write one by one
  std::map<std::uint32_t, std::vector<std::string>> settled_;  // written or dropped: to XACK + XDEL
  std::unordered_set<std::string> known_;                      // shard/id of hand_ and settled_

  Backoff redis_backoff_{Backoff::Options{100ms, 5s}};
  Backoff pg_backoff_{Backoff::Options{100ms, 5s}};
  Clock::time_point redis_retry_at_{};
  Clock::time_point pg_retry_at_{};
  Clock::time_point next_claim_{};
  Clock::time_point next_backlog_{};
  Clock::time_point next_forget_{};
  Clock::time_point last_pg_contact_{};
};

}  // namespace

std::string default_consumer_name() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host = {};
  std::random_device device;
  std::uniform_int_distribution<std::uint32_t> random(0, 0xffffff);
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%06x", random(device));
  std::string name = host[0] != '\0' ? std::string(host.data()) : std::string("syncer");
  return name + "-" + std::to_string(getpid()) + "-" + suffix;
}

Syncer::Syncer(SyncerConfig config) : config_(std::move(config)) {
  if (config_.shards.empty())
    for (std::uint32_t shard = 0; shard < config_.ingest_shards; ++shard) config_.shards.push_back(shard);
  if (config_.consumer.empty()) config_.consumer = default_consumer_name();
  state_ = std::make_unique<State>(config_.shards.size());
  thread_ = std::thread([this] {
    try {
      Loop loop(config_, counters_, *state_, stopping_);
      loop.run();
    } catch (const std::exception& error) {
      // Only a bug gets here (the stores' failures are handled in the loop);
      // pending entries are claimed by the next syncer.
      spdlog::critical("syncer: {}", error.what());
      std::abort();
    }
  });
  pthread_setname_np(thread_.native_handle(), "syncer");
}

Syncer::~Syncer() {
  stopping_ = true;
  thread_.join();
}

Health Syncer::health() const {
  Health health;
  health.redis_up = state_->redis_up.load();
  health.pg_up = state_->pg_up.load();
  for (std::size_t i = 0; i < config_.shards.size(); ++i)
    health.backlog.emplace_back(config_.shards[i], state_->backlog[i].load());
  for (std::size_t i = 0; i < config_.shards.size() && i < state_->lag_ms.size(); ++i)
    health.lag_ms.emplace_back(config_.shards[i], state_->lag_ms[i].load());
  return health;
}

}  // namespace rtmc::syncer
