#include "store/user_status.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <vector>

#include "common/backoff.hpp"
#include "common/blocking_worker.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "store/unavailable.hpp"

namespace rtmc::store {

namespace {

using namespace std::chrono_literals;

// Fills the cache only while it is absent: a status change written by
// store::Presence between our PostgreSQL read and this fill is newer than
// what we read, so it wins, and is handed back for the reader to answer with.
// KEYS: status:<user>; ARGV: user, status, last_seen ("" = never), TTL ms
// Returns the entry already there (HGETALL), or an empty array after filling.
const redis::Script kFillScript(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'status', ARGV[2], 'last_seen', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {}
)lua");

// Deadline of each statement of the writer (connecting included), so a
// stalled server costs a retry, not a thread stuck for good, and the
// destructor's last try ends.
constexpr std::chrono::milliseconds kWriterStatementTimeout = 3s;

std::optional<std::int64_t> parse_ms(std::string_view text) {
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// A status cache hash as HGETALL returns it; nullopt when it is empty or
// not one this code wrote.
std::optional<UserStatus> parse_cached(const redis::Reply& reply) {
  if (reply.type != redis::Reply::Type::array || reply.elements.empty()) return std::nullopt;
  std::optional<std::string> user, status, last_seen;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    const auto& field = reply.elements[i].str;
    const auto& value = reply.elements[i + 1].str;
    if (field == "user") user = value;
    if (field == "status") status = value;
    if (field == "last_seen") last_seen = value;
  }
  if (!user || !status || !last_seen || (*status != "online" && *status != "offline")) return std::nullopt;
  UserStatus result{*user, *status == "online", std::nullopt};
  if (!last_seen->empty()) {
    result.last_seen_ms = parse_ms(*last_seen);
    if (!result.last_seen_ms) return std::nullopt;
  }
  return result;
}

void check(const redis::Reply& reply) {
  if (!reply.is_error()) return;
  if (redis::is_refusal(reply.str)) throw Unavailable("redis refused: " + reply.str);
  throw std::runtime_error("status cache: redis error reply: " + reply.str);
}

// One statement for the whole batch; each user appears once in it (the
// batch is keyed by folded name). The last_seen condition keeps an older
// change, retried late, from overwriting a newer one another gateway wrote.
// Milliseconds become a timestamp by interval arithmetic, exactly (no
// floating point on the way).
constexpr const char* kUpdateSql =
    "UPDATE users u SET status = v.status, last_seen = timestamptz 'epoch' + v.ms * interval '1 millisecond' "
    "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(name, status, ms) "
    "WHERE lower(u.name) = lower(v.name) "
    "AND (u.last_seen IS NULL OR u.last_seen <= timestamptz 'epoch' + v.ms * interval '1 millisecond')";

void write_batch(pg::Connection& connection, const std::map<std::string, StatusChange>& batch) {
  std::vector<std::string> names, statuses, times;
  for (const auto& [key, change] : batch) {
    names.push_back(change.user);
    statuses.push_back(change.online ? "online" : "offline");
    times.push_back(std::to_string(change.at_ms));
  }
  std::vector<pg::Param> params{pg::text_array(names), pg::text_array(statuses), pg::text_array(times)};
  connection.exec(kUpdateSql, params);
}

bool same(const StatusChange& a, const StatusChange& b) {
  return a.user == b.user && a.online == b.online && a.at_ms == b.at_ms;
}

}  // namespace

UserStatusReader::UserStatusReader(redis::Client& redis, pg::Pool& pg, std::chrono::milliseconds cache_ttl)
    : redis_(redis), pg_(pg), cache_ttl_(cache_ttl) {}

boost::asio::awaitable<std::optional<UserStatus>> UserStatusReader::get(std::string user) {
  if (!valid_user_name(user)) co_return std::nullopt;
  const auto key = keys::status(user);

  redis::Reply cached;
  try {
    std::vector<std::string> command{"HGETALL", key};
    cached = co_await redis_.command(std::move(command));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  check(cached);
  if (auto hit = parse_cached(cached)) {
    counters_.hits.fetch_add(1, std::memory_order_relaxed);
    co_return hit;
  }
  counters_.misses.fetch_add(1, std::memory_order_relaxed);

  pg::Result result;
  try {
    std::vector<pg::Param> params{user};
    // lower(name) matches the unique index: an index lookup.
    result = co_await pg_.exec(
        "SELECT name, status, (extract(epoch FROM last_seen) * 1000)::bigint FROM users "
        "WHERE lower(name) = lower($1)",
        std::move(params));
  } catch (const pg::PgError& error) {
    if (error.unavailable()) throw Unavailable(error.what());
    throw;
  }
  if (result.rows.empty()) co_return std::nullopt;
  const auto& row = result.rows.front();
  if (row.size() < 3 || !row[0] || !row[1]) throw std::runtime_error("user status: unexpected row");
  UserStatus status{*row[0], *row[1] == "online", std::nullopt};
  if (row[2]) {
    status.last_seen_ms = parse_ms(*row[2]);
    if (!status.last_seen_ms) throw std::runtime_error("user status: bad last_seen " + *row[2]);
  }

  redis::Reply filled;
  try {
    std::vector<std::string> keys{key};
    std::vector<std::string> args{
        status.user, status.online ? "online" : "offline",
        status.last_seen_ms ? std::to_string(*status.last_seen_ms) : std::string(),
        std::to_string(std::max<std::chrono::milliseconds::rep>(cache_ttl_.count(), 1))};
    filled = co_await redis_.eval(kFillScript, std::move(keys), std::move(args));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  check(filled);
  if (auto newer = parse_cached(filled)) co_return newer;
  co_return status;
}

StatusWriter::StatusWriter(PgConfig config, std::chrono::milliseconds max_lag)
    : config_(std::move(config)), max_lag_(max_lag), thread_([this] { run(); }) {}

StatusWriter::~StatusWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void StatusWriter::record(const StatusChange& change) {
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    was_empty = pending_.empty();
    auto [it, inserted] = pending_.try_emplace(fold_user_name(change.user), change);
    // Changes of one user may be recorded out of order by different threads;
    // the later one in time is the truth (ties: the later recorded).
    if (!inserted && change.at_ms >= it->second.at_ms) it->second = change;
  }
  if (was_empty) wake_.notify_all();
}

std::size_t StatusWriter::pending() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

// The batch stays in pending_ while it is written (so pending() counts it,
// and a failure needs no merge); after a commit only the entries unchanged
// since are removed, so a change recorded meanwhile waits for the next one.
void StatusWriter::run() {
  pg::Connection connection(config_, pg::Options{kWriterStatementTimeout, 0});
  Backoff backoff(Backoff::Options{100ms, 5s});
  bool failing = false;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping with nothing left
    // Gather for half the lag; the other half is the commit's.
    if (!stopping_ && !failing) wake_.wait_for(lock, max_lag_ / 2, [this] { return stopping_; });
    const auto batch = pending_;
    lock.unlock();
    std::string error;
    try {
      write_batch(connection, batch);
    } catch (const std::exception& failure) {
      error = failure.what();
      if (error.empty()) error = "unknown error";
    }
    lock.lock();
    if (error.empty()) {
      for (const auto& [key, change] : batch) {
        auto it = pending_.find(key);
        if (it != pending_.end() && same(it->second, change)) pending_.erase(it);
      }
      batches_.fetch_add(1);
      backoff.reset();
      if (failing) spdlog::info("status writer: PostgreSQL writes work again");
      failing = false;
      continue;
    }
    if (!failing)
      spdlog::warn(
          "status writer: cannot write {} status change(s) to PostgreSQL ({}); retrying with backoff",
          batch.size(), error);
    failing = true;
    if (stopping_) {
      spdlog::error("status writer: stopping with {} status change(s) not written to PostgreSQL",
                    pending_.size());
      return;
    }
    wake_.wait_for(lock, backoff.next(), [this] { return stopping_; });
  }
}

}  // namespace rtmc::store
