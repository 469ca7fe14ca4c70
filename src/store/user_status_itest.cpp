// Integration tests of store::UserStatusReader and store::StatusWriter
// against the real Redis (RTMC_TEST_REDIS) and PostgreSQL (RTMC_TEST_PG). A
// missing variable fails the tests. Every test registers users of its own.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

#include "common/keys.hpp"
#include "common/names.hpp"
#include "store/itest_env.hpp"
#include "store/presence.hpp"
#include "store/stalling_proxy_for_tests.hpp"
#include "store/unavailable.hpp"
#include "store/user_status.hpp"

namespace rtmc::store {
namespace {

using namespace std::chrono_literals;
using itest::env;
using itest::run_on;
using itest::unique;

// A loopback port that was free a moment ago: nothing answers there.
std::uint16_t dead_port() {
  boost::asio::io_context context;
  boost::asio::ip::tcp::acceptor probe(context, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return probe.local_endpoint().port();
}

// What PostgreSQL says of a user: status and last_seen in ms (nullopt: NULL).
struct Row {
  std::string status;
  std::optional<std::int64_t> last_seen;
  bool operator==(const Row&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Row& row) {
  return out << row.status << "@" << (row.last_seen ? std::to_string(*row.last_seen) : "null");
}

class UserStatusTest : public ::testing::Test {
 protected:
  template <class T>
  T run(boost::asio::awaitable<T> task) {
    return run_on(io_, std::move(task));
  }
  // For a second thread, while the test's own runs something else.
  template <class T>
  T run_elsewhere(boost::asio::awaitable<T> task) {
    return run_on(other_io_, std::move(task));
  }
  void SetUp() override {
    auto redis = env("RTMC_TEST_REDIS");
    auto pg = env("RTMC_TEST_PG");
    ASSERT_TRUE(redis && pg) << "RTMC_TEST_REDIS and RTMC_TEST_PG must be set (scripts/services.sh start DIR "
                                "writes DIR/env)";
    redis_config_ = RedisConfig::parse(*redis);
    pg_config_.conninfo = *pg;
    client_.emplace(redis_config_, 2);
    pool_.emplace(pg_config_, 2, pg::Options{5000ms, 0});
    pg_.emplace(pg_config_);
    pg::migrate(*pg_);
  }

  // Registers `name` (status offline, last_seen NULL, as the api does).
  void create_user(const std::string& name) {
    pg_->exec("INSERT INTO users (name, password_hash) VALUES ($1, 'x')", {name});
  }
  Row row(const std::string& name) {
    auto result = pg_->exec(
        "SELECT status, (extract(epoch FROM last_seen) * 1000)::bigint FROM users WHERE lower(name) = "
        "lower($1)",
        {name});
    if (result.rows.empty()) return Row{"missing", std::nullopt};
    const auto& r = result.rows.front();
    return Row{*r[0], r[1] ? std::optional<std::int64_t>(std::stoll(*r[1])) : std::nullopt};
  }
  // Polls until the row is `expected` or `within` passed; the row last seen.
  Row wait_for_row(const std::string& name, const Row& expected, std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    Row seen = row(name);
    while (!(seen == expected) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
      seen = row(name);
    }
    return seen;
  }
  // The row is visible a moment before the writer counts its commit (and
  // forgets the change): both happen under its lock, which pending() takes.
  static void wait_until_written(const StatusWriter& writer) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (writer.pending() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
  }
  redis::Reply redis_command(const std::vector<std::string>& args) {
    redis::Connection connection(redis_config_);
    return connection.command(args);
  }
  std::map<std::string, std::string> cached(const std::string& user) {
    auto reply = redis_command({"HGETALL", keys::status(user)});
    std::map<std::string, std::string> fields;
    for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
      fields[reply.elements[i].str] = reply.elements[i + 1].str;
    return fields;
  }

  // First: they outlive the clients (see run_on).
  boost::asio::io_context io_;
  boost::asio::io_context other_io_;
  RedisConfig redis_config_;
  PgConfig pg_config_;
  std::optional<redis::Client> client_;
  std::optional<pg::Pool> pool_;
  std::optional<pg::Connection> pg_;
};

// ---- UserStatusReader ----

TEST_F(UserStatusTest, AMissIsFilledFromPostgresAndTheNextReadIsAHit) {
  UserStatusReader reader(*client_, *pool_, 60s);
  const auto user = unique("Us_");
  create_user(user);
  pg_->exec(
      "UPDATE users SET last_seen = timestamptz 'epoch' + interval '1234567 milliseconds' WHERE name = $1",
      {user});

  auto first = reader.get(user);
  auto status = run(std::move(first));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->user, user);
  EXPECT_FALSE(status->online);
  EXPECT_EQ(status->last_seen_ms, 1234567);
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  EXPECT_EQ(reader.counters().hits.load(), 0u);
  EXPECT_EQ(cached(user), (std::map<std::string, std::string>{
                              {"user", user}, {"status", "offline"}, {"last_seen", "1234567"}}));
  const auto ttl = redis_command({"PTTL", keys::status(user)}).integer;
  EXPECT_GT(ttl, 50'000);
  EXPECT_LE(ttl, 60'000);

  // PostgreSQL changes behind the cache's back: the next read does not ask it.
  pg_->exec("UPDATE users SET status = 'online' WHERE name = $1", {user});
  status = run(reader.get(user));
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->online);
  EXPECT_EQ(status->last_seen_ms, 1234567);
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  EXPECT_EQ(reader.counters().hits.load(), 1u);
}

TEST_F(UserStatusTest, NeverConnectedHasNoLastSeenAndIsCachedSo) {
  UserStatusReader reader(*client_, *pool_, 60s);
  const auto user = unique("us_");
  create_user(user);
  auto status = run(reader.get(user));
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->online);
  EXPECT_FALSE(status->last_seen_ms);
  EXPECT_EQ(cached(user).at("last_seen"), "");
  status = run(reader.get(user));
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->last_seen_ms);
  EXPECT_EQ(reader.counters().hits.load(), 1u);
}

TEST_F(UserStatusTest, AStatusChangeIsVisibleToTheNextRead) {
  UserStatusReader reader(*client_, *pool_, 60s);
  Presence presence(*client_, unique("gw-"), PresenceOptions{});
  const auto user = unique("us_");
  create_user(user);
  ASSERT_TRUE(run(reader.get(user)));  // cached: offline, never seen

  ASSERT_TRUE(run(presence.connect(1, user, 5000)));
  auto status = run(reader.get(user));
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->online);
  EXPECT_EQ(status->last_seen_ms, 5000);

  ASSERT_TRUE(run(presence.disconnect(1, user, 6000)));
  status = run(reader.get(user));
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->online);
  EXPECT_EQ(status->last_seen_ms, 6000);
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  EXPECT_EQ(reader.counters().hits.load(), 2u);
}

TEST_F(UserStatusTest, UnknownUsersAreNulloptAndNotCached) {
  UserStatusReader reader(*client_, *pool_, 60s);
  const auto nobody = unique("nobody_");
  EXPECT_FALSE(run(reader.get(nobody)));
  EXPECT_EQ(redis_command({"EXISTS", keys::status(nobody)}).integer, 0);
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  // Names that break the rules are unknown without asking anyone.
  EXPECT_FALSE(run(reader.get("bad name")));
  EXPECT_FALSE(run(reader.get("")));
  EXPECT_FALSE(run(reader.get("_leading")));
  EXPECT_FALSE(run(reader.get(std::string(33, 'a'))));
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  EXPECT_EQ(reader.counters().hits.load(), 0u);
}

TEST_F(UserStatusTest, LookupIgnoresCaseAndAnswersTheRegisteredSpelling) {
  UserStatusReader reader(*client_, *pool_, 60s);
  const auto user = unique("MiXed_");
  create_user(user);
  std::string upper = user;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto status = run(reader.get(fold_user_name(user)));  // a miss
  ASSERT_TRUE(status);
  EXPECT_EQ(status->user, user);
  status = run(reader.get(upper));  // a hit on the same key
  ASSERT_TRUE(status);
  EXPECT_EQ(status->user, user);
  EXPECT_EQ(reader.counters().misses.load(), 1u);
  EXPECT_EQ(reader.counters().hits.load(), 1u);
}

// The user comes online while the reader waits for PostgreSQL (held by a
// stalled proxy): the stale row it then reads must not replace the newer
// cache entry, and the reader answers with the newer one.
TEST_F(UserStatusTest, AFillNeverOverwritesANewerCachedStatus) {
  testing::StallingProxy proxy(testing::pg_port_of(pg_config_.conninfo));
  pg::Pool held(PgConfig{testing::pg_conninfo_via(pg_config_.conninfo, proxy.port())}, 1,
                pg::Options{20000ms, 8});
  UserStatusReader reader(*client_, held, 60s);
  Presence presence(*client_, unique("gw-"), PresenceOptions{});
  const auto user = unique("us_");
  create_user(user);

  proxy.stall();
  auto reading = std::async(std::launch::async, [&] { return run_elsewhere(reader.get(user)); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (reader.counters().misses.load() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(reader.counters().misses.load(), 1u);
  ASSERT_TRUE(run(presence.connect(1, user, 7000)));
  proxy.resume();

  auto status = reading.get();
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->online);
  EXPECT_EQ(status->last_seen_ms, 7000);
  EXPECT_EQ(cached(user), (std::map<std::string, std::string>{
                              {"user", user}, {"status", "online"}, {"last_seen", "7000"}}));
  EXPECT_EQ(row(user), (Row{"offline", std::nullopt}));  // what the reader got from PostgreSQL
  run(presence.disconnect(1, user, 8000));
}

TEST_F(UserStatusTest, BackendsDownAreUnavailable) {
  const auto user = unique("us_");
  create_user(user);
  {
    RedisConfig down = redis_config_;
    down.address.port = dead_port();
    down.timeout = 500ms;
    redis::Client no_redis(down, 1);
    UserStatusReader reader(no_redis, *pool_, 60s);
    EXPECT_THROW(run(reader.get(user)), Unavailable);
  }
  {
    pg::Pool no_pg(PgConfig{"host=127.0.0.1 port=" + std::to_string(dead_port()) + " dbname=x user=x"}, 1,
                   pg::Options{1000ms, 8});
    UserStatusReader reader(*client_, no_pg, 60s);
    EXPECT_THROW(run(reader.get(user)), Unavailable);  // a miss needs PostgreSQL
  }
}

// ---- StatusWriter ----

TEST_F(UserStatusTest, WriterCommitsWithinItsLag) {
  const auto user = unique("Us_");
  create_user(user);
  StatusWriter writer(pg_config_, 1000ms);
  const auto at = now_ms();
  const auto started = std::chrono::steady_clock::now();
  writer.record(StatusChange{fold_user_name(user), true, at});  // any case finds the row
  EXPECT_EQ(writer.pending(), 1u);
  // The bound is 1 s; the slack is for a busy test machine.
  EXPECT_EQ(wait_for_row(user, Row{"online", at}, 5000ms), (Row{"online", at}));
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  std::cout << "committed after " << elapsed.count() << " ms\n";
  wait_until_written(writer);
  EXPECT_EQ(writer.pending(), 0u);
  EXPECT_EQ(writer.batches_committed(), 1u);
}

TEST_F(UserStatusTest, WriterWritesManyUsersInOneStatement) {
  std::vector<std::string> users;
  for (int i = 0; i < 5; ++i) {
    users.push_back(unique("us_"));
    create_user(users.back());
  }
  StatusWriter writer(pg_config_, 1000ms);
  const auto at = now_ms();
  for (const auto& user : users) writer.record(StatusChange{user, true, at});
  for (const auto& user : users)
    EXPECT_EQ(wait_for_row(user, Row{"online", at}, 5000ms), (Row{"online", at}));
  wait_until_written(writer);
  EXPECT_EQ(writer.batches_committed(), 1u);
}

TEST_F(UserStatusTest, WriterKeepsTheNewestChangePerUser) {
  const auto user = unique("us_");
  create_user(user);
  {
    // A lag longer than the test: only the destructor writes.
    StatusWriter writer(pg_config_, 60000ms);
    writer.record(StatusChange{user, true, 1000});
    writer.record(StatusChange{user, false, 3000});
    writer.record(StatusChange{fold_user_name(user), true, 2000});  // older, recorded late
    EXPECT_EQ(writer.pending(), 1u);
    EXPECT_EQ(row(user), (Row{"offline", std::nullopt}));  // nothing written yet
  }
  EXPECT_EQ(row(user), (Row{"offline", 3000}));  // the destructor flushed
}

TEST_F(UserStatusTest, WriterNeverMovesLastSeenBackwards) {
  const auto user = unique("us_");
  create_user(user);
  { StatusWriter(pg_config_, 60000ms).record(StatusChange{user, false, 5000}); }
  ASSERT_EQ(row(user), (Row{"offline", 5000}));

  // An older change, e.g. retried late by another gateway's writer.
  StatusWriter writer(pg_config_, 200ms);
  writer.record(StatusChange{user, true, 4000});
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (writer.batches_committed() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(writer.batches_committed(), 1u);
  EXPECT_EQ(row(user), (Row{"offline", 5000}));

  // The same moment still counts (a user offline and online in one ms).
  writer.record(StatusChange{user, true, 5000});
  EXPECT_EQ(wait_for_row(user, Row{"online", 5000}, 5000ms), (Row{"online", 5000}));
}

TEST_F(UserStatusTest, WriterRetriesWhilePostgresIsStalledAndCommitsAfter) {
  const auto user = unique("us_");
  create_user(user);
  testing::StallingProxy proxy(testing::pg_port_of(pg_config_.conninfo));
  StatusWriter writer(PgConfig{testing::pg_conninfo_via(pg_config_.conninfo, proxy.port())}, 200ms);
  proxy.stall();
  writer.record(StatusChange{user, true, 9000});
  std::this_thread::sleep_for(1500ms);  // several lags: nothing can have been written
  EXPECT_EQ(row(user), (Row{"offline", std::nullopt}));
  EXPECT_EQ(writer.pending(), 1u);
  EXPECT_EQ(writer.batches_committed(), 0u);
  // A newer change recorded while it fails replaces the one waiting.
  writer.record(StatusChange{user, false, 9500});
  EXPECT_EQ(writer.pending(), 1u);
  proxy.resume();
  // The stalled statement times out (3 s), then a retry goes through.
  EXPECT_EQ(wait_for_row(user, Row{"offline", 9500}, 15000ms), (Row{"offline", 9500}));
}

}  // namespace
}  // namespace rtmc::store
