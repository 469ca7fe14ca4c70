#pragma once
// A user's status (seed flow 2): cache-aside exactly as the seed draws it.
// Redis first (status:<lower(user)>, a hash {user, status, last_seen}); on a
// miss PostgreSQL (users.status, users.last_seen), then the cache is filled
// with a TTL (only if still absent, so a fill never overwrites a newer change
// written by store::Presence in the meantime).
//
// StatusWriter carries status changes to PostgreSQL in batches on a thread of
// its own (a connect storm is not paced by database commits): at most
// `max_lag` after a change it is committed, unless PostgreSQL is down (then
// it retries with backoff and keeps only each user's latest change). An
// older change never overwrites a newer one (last_seen only moves forward).
//
// Thread-safety: UserStatusReader::get and StatusWriter::record may be called
// from any thread at once.

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/config.hpp"
#include "store/postgres.hpp"
#include "store/presence.hpp"
#include "store/redis.hpp"

namespace rtmc::store {

struct UserStatus {
  std::string user;  // registered spelling
  bool online = false;
  std::optional<std::int64_t> last_seen_ms;  // nullopt: never connected
};

struct StatusCacheCounters {
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
};

class UserStatusReader {
 public:
  UserStatusReader(redis::Client& redis, pg::Pool& pg, std::chrono::milliseconds cache_ttl);
  // nullopt: no such user (not cached). Throws store::Unavailable when Redis
  // or PostgreSQL cannot answer now.
  boost::asio::awaitable<std::optional<UserStatus>> get(std::string user);
  const StatusCacheCounters& counters() const { return counters_; }

 private:
  redis::Client& redis_;
  pg::Pool& pg_;
  std::chrono::milliseconds cache_ttl_;
  StatusCacheCounters counters_;
};

class StatusWriter {
 public:
  StatusWriter(PgConfig config, std::chrono::milliseconds max_lag = std::chrono::milliseconds(1000));
  // Writes what is pending (a last try) and stops.
  ~StatusWriter();
  StatusWriter(const StatusWriter&) = delete;
  StatusWriter& operator=(const StatusWriter&) = delete;

  // Never blocks on the database.
  void record(const StatusChange& change);
  // Changes recorded but not committed yet (tests, metrics).
  std::size_t pending() const;
  // Commits so far (tests).
  std::uint64_t batches_committed() const { return batches_.load(); }

 private:
  void run();
  PgConfig config_;
  std::chrono::milliseconds max_lag_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::map<std::string, StatusChange> pending_;  // by lower(user)
  bool stopping_ = false;
  std::atomic<std::uint64_t> batches_{0};
  std::thread thread_;
};

}  // namespace rtmc::store
