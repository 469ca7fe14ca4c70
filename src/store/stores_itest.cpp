// Integration tests of the domain stores (login sessions, users, rate limits)
// and of the deadlines under them, against the real Redis (RTMC_TEST_REDIS)
// and PostgreSQL (RTMC_TEST_PG). A missing variable fails the tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <random>
#include <thread>

#include "common/keys.hpp"
#include "store/itest_env.hpp"
#include "store/login_sessions.hpp"
#include "store/postgres.hpp"
#include "store/rate_limits.hpp"
#include "store/stalling_proxy_for_tests.hpp"
#include "store/unavailable.hpp"
#include "store/users.hpp"

namespace rtmc::store {
namespace {

using namespace std::chrono_literals;

using itest::env;
using itest::unique;

// Runs a coroutine to completion on a private io_context.
template <class T>
T run(boost::asio::awaitable<T> task) {
  boost::asio::io_context io;
  auto future = boost::asio::co_spawn(io, std::move(task), boost::asio::use_future);
  io.run();
  return future.get();
}

class RedisStoresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto address = env("RTMC_TEST_REDIS");
    ASSERT_TRUE(address) << "RTMC_TEST_REDIS is not set (scripts/services.sh start DIR writes DIR/env)";
    config_ = RedisConfig::parse(*address);  // host:port or redis:// with credentials
    client_.emplace(config_, 2);
  }
  redis::Reply command(const std::vector<std::string>& args) {
    redis::Connection connection(config_);
    return connection.command(args);
  }
  RedisConfig config_;
  std::optional<redis::Client> client_;
};

TEST_F(RedisStoresTest, LoginSessionsPutExistsRemove) {
  LoginSessions sessions(*client_);
  const auto jti = unique("jti");
  EXPECT_FALSE(run(sessions.exists(jti)));
  run(sessions.put(jti, "alice", 60s));
  EXPECT_TRUE(run(sessions.exists(jti)));
  EXPECT_EQ(command({"GET", keys::session(jti)}).str, "alice");
  auto ttl = command({"PTTL", keys::session(jti)}).integer;
  EXPECT_GT(ttl, 50'000);
  EXPECT_LE(ttl, 60'000);
  EXPECT_TRUE(run(sessions.remove(jti)));
  EXPECT_FALSE(run(sessions.remove(jti)));
  EXPECT_FALSE(run(sessions.exists(jti)));
}

// One pipeline answers many sessions, in the order asked.
TEST_F(RedisStoresTest, LoginSessionsExistsAllAnswersInOrder) {
  LoginSessions sessions(*client_);
  std::vector<std::string> jtis;
  for (int i = 0; i < 50; ++i) {
    jtis.push_back(unique("jti"));
    if (i % 3 == 0) run(sessions.put(jtis.back(), "alice", 60s));
  }
  auto found = run(sessions.exists_all(jtis));
  ASSERT_EQ(found.size(), jtis.size());
  for (std::size_t i = 0; i < jtis.size(); ++i) EXPECT_EQ(found[i], i % 3 == 0) << i;
  EXPECT_TRUE(run(sessions.exists_all({})).empty());
}

TEST_F(RedisStoresTest, BucketTakesUpToItsBurstThenRefusesWithRetryAfter) {
  RateLimiter limiter(*client_);
  const Bucket bucket{unique("test:burst:"), Rate::per_minute(6, 3)};  // one token back every 10 s
  for (int i = 0; i < 3; ++i) {
    auto verdict = run(limiter.take(bucket));
    EXPECT_TRUE(verdict.allowed) << i;
    EXPECT_NEAR(verdict.used, i + 1, 0.01);
  }
  auto refused = run(limiter.take(bucket));
  EXPECT_FALSE(refused.allowed);
  EXPECT_GT(refused.retry_after, 9s);
  EXPECT_LE(refused.retry_after, 10s);
  EXPECT_EQ(retry_after_seconds(refused.retry_after), 10);
  // A refusal spends nothing, and the key expires once the bucket is full again.
  EXPECT_NEAR(refused.used, 3, 0.01);
  auto pttl = command({"PTTL", keys::rate_limit(bucket.name)}).integer;
  EXPECT_GT(pttl, 29'000);
  EXPECT_LE(pttl, 30'001);
  // Another subject has its own bucket.
  EXPECT_TRUE(run(limiter.take(Bucket{unique("test:burst:"), bucket.rate})).allowed);
}

TEST_F(RedisStoresTest, BucketRefillsAtItsRate) {
  RateLimiter limiter(*client_);
  const Bucket bucket{unique("test:refill:"), Rate::per_second(20, 2)};  // one token every 50 ms
  EXPECT_TRUE(run(limiter.take(bucket, 2)).allowed);
  auto refused = run(limiter.take(bucket));
  ASSERT_FALSE(refused.allowed);
  EXPECT_LE(refused.retry_after, 50ms);
  std::this_thread::sleep_for(refused.retry_after + 5ms);
  EXPECT_TRUE(run(limiter.take(bucket)).allowed);
  EXPECT_FALSE(run(limiter.take(bucket)).allowed);
}

TEST_F(RedisStoresTest, PeekSpendsNothingAndChargeFloorsAtEmpty) {
  RateLimiter limiter(*client_);
  const Rate rate = Rate::per_minute(10, 10);
  const Bucket a{unique("test:peek:"), rate};
  const Bucket b{unique("test:peek:"), rate};
  std::vector<Bucket> both{a, b};
  for (int i = 0; i < 3; ++i) {
    auto verdicts = run(limiter.peek(both));
    ASSERT_EQ(verdicts.size(), 2u);
    EXPECT_TRUE(verdicts[0].allowed);
    EXPECT_EQ(verdicts[0].used, 0);
  }
  EXPECT_EQ(command({"EXISTS", keys::rate_limit(a.name)}).integer, 0);  // a full bucket is no key

  // Charging past empty never refuses and never goes below empty.
  for (int i = 0; i < 12; ++i) run(limiter.charge(std::vector<Bucket>{a}));
  auto verdicts = run(limiter.peek(both));
  EXPECT_FALSE(verdicts[0].allowed);
  EXPECT_GT(verdicts[0].retry_after, 5s);
  EXPECT_LE(verdicts[0].retry_after, 6s);
  EXPECT_NEAR(verdicts[0].used, 10, 0.01);
  EXPECT_TRUE(verdicts[1].allowed);
  EXPECT_EQ(verdicts[1].used, 0);
}

TEST_F(RedisStoresTest, RefundGivesTokensBackNeverAboveFull) {
  RateLimiter limiter(*client_);
  const Bucket bucket{unique("test:refund:"), Rate::per_minute(6, 3)};
  std::vector<Bucket> one{bucket};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run(limiter.take(bucket)).allowed) << i;
  ASSERT_FALSE(run(limiter.take(bucket)).allowed);
  run(limiter.refund(one));
  EXPECT_TRUE(run(limiter.take(bucket)).allowed);
  EXPECT_FALSE(run(limiter.take(bucket)).allowed);
  // Refunding more than was spent leaves a full bucket, which is no key.
  for (int i = 0; i < 5; ++i) run(limiter.refund(one));
  EXPECT_EQ(command({"EXISTS", keys::rate_limit(bucket.name)}).integer, 0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(run(limiter.take(bucket)).allowed) << i;
  EXPECT_FALSE(run(limiter.take(bucket)).allowed);
}

TEST_F(RedisStoresTest, BucketsAreSharedByEveryClient) {
  // Two clients stand for two api processes.
  redis::Client other(config_, 1);
  RateLimiter first(*client_), second(other);
  const Bucket bucket{unique("test:shared:"), Rate::per_minute(1, 2)};
  EXPECT_TRUE(run(first.take(bucket)).allowed);
  EXPECT_TRUE(run(second.take(bucket)).allowed);
  EXPECT_FALSE(run(first.take(bucket)).allowed);
  EXPECT_FALSE(run(second.take(bucket)).allowed);
}

TEST_F(RedisStoresTest, UnlimitedBucketsNeverReachRedis) {
  RedisConfig nowhere;
  nowhere.address = HostPort{"127.0.0.1", 1};  // nothing listens there
  redis::Client unreachable(nowhere, 1);
  RateLimiter limiter(unreachable);
  EXPECT_TRUE(run(limiter.take(Bucket{"test:off", Rate{}})).allowed);
  EXPECT_THROW(run(limiter.take(Bucket{"test:on", Rate::per_second(1, 1)})), Unavailable);
}

TEST_F(RedisStoresTest, AStalledRedisAnswersUnavailableWithinTheDeadline) {
  testing::StallingProxy proxy(config_.address.port);
  RedisConfig via = config_;
  via.address.port = proxy.port();
  via.timeout = 5s;  // the socket timeout alone would take this long
  // The callers' io_context runs until the client is gone: a job that
  // outlived its caller's deadline still posts its (dropped) result there.
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  {
    redis::Client client(via, 1, WorkerLimits{4, 500ms});
    LoginSessions sessions(client);
    RateLimiter limiter(client);
    const auto jti = unique("jti");
    boost::asio::co_spawn(io, sessions.put(jti, "bob", 60s), boost::asio::use_future)
        .get();  // still forwarding
    proxy.stall();
    const auto started = std::chrono::steady_clock::now();
    auto exists = boost::asio::co_spawn(io, sessions.exists(jti), boost::asio::use_future);
    EXPECT_THROW(exists.get(), Unavailable);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
    auto take = boost::asio::co_spawn(io, limiter.take(Bucket{unique("test:stall:"), Rate::per_second(1, 1)}),
                                      boost::asio::use_future);
    EXPECT_THROW(take.get(), Unavailable);
  }
  work.reset();
  runner.join();
}

class PgStoresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto conninfo = env("RTMC_TEST_PG");
    ASSERT_TRUE(conninfo) << "RTMC_TEST_PG is not set (scripts/services.sh start DIR writes DIR/env)";
    config_.conninfo = *conninfo;
    pg::Connection connection(config_);
    pg::migrate(connection);
  }
  PgConfig config_;
};

TEST_F(PgStoresTest, UsersAreUniqueRegardlessOfCase) {
  pg::Pool pool(config_, 1);
  Users users(pool);
  const auto name = unique("Us_");
  EXPECT_TRUE(run(users.create(name, "hash-1")));
  std::string upper = name;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(run(users.create(upper, "hash-2")));
  auto found = run(users.find(upper));
  ASSERT_TRUE(found);
  EXPECT_EQ(found->name, name);
  EXPECT_EQ(found->password_hash, "hash-1");
  EXPECT_FALSE(run(users.find(unique("nobody_"))));
}

// The defect: with PostgreSQL stopped, a lookup waited without limit.
TEST_F(PgStoresTest, AStalledPostgresAnswersUnavailableWithinTheTimeout) {
  testing::StallingProxy proxy(testing::pg_port_of(config_.conninfo));
  PgConfig via{testing::pg_conninfo_via(config_.conninfo, proxy.port())};
  pg::Pool pool(via, 1, pg::Options{600ms, 8});
  Users users(pool);
  const auto name = unique("st_");
  EXPECT_TRUE(run(users.create(name, "hash")));  // connected through the proxy
  proxy.stall();
  for (int i = 0; i < 2; ++i) {  // an open connection, then a new one
    const auto started = std::chrono::steady_clock::now();
    EXPECT_THROW(run(users.find(name)), Unavailable) << i;
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << i;
  }
}

TEST_F(PgStoresTest, StatementTimeoutIsSetOnEveryConnection) {
  pg::Connection connection(config_, pg::Options{1500ms, 0});
  auto result = connection.exec("SHOW statement_timeout");
  ASSERT_EQ(result.rows.size(), 1u);
  EXPECT_EQ(result.rows[0][0].value_or(""), "1500ms");
  // A statement longer than the timeout is ended; the connection is usable after.
  try {
    connection.exec("SELECT pg_sleep(5)");
    ADD_FAILURE() << "pg_sleep(5) returned";
  } catch (const pg::PgError& error) {
    EXPECT_TRUE(error.unavailable()) << error.what() << " " << error.sqlstate();
  }
  EXPECT_EQ(connection.exec("SELECT 1").rows.at(0).at(0).value_or(""), "1");
}

TEST_F(PgStoresTest, AFullPoolQueueIsRefusedAtOnce) {
  pg::Pool pool(config_, 1, pg::Options{10s, 1});
  boost::asio::io_context io;
  std::vector<std::string> outcomes;
  auto record = [&outcomes](std::exception_ptr error, pg::Result) {
    try {
      if (error) std::rethrow_exception(error);
      outcomes.push_back("ok");
    } catch (const pg::PgError& e) {
      outcomes.push_back(e.unavailable() ? "unavailable" : "error");
    }
  };
  // The first runs (0.3 s); the second waits or, if the first is still
  // queued, is refused; the third always finds the queue's one place taken.
  for (int i = 0; i < 3; ++i) boost::asio::co_spawn(io, pool.exec("SELECT pg_sleep(0.3)"), record);
  io.run();
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_EQ(outcomes[0], "unavailable");  // answered first, at once
  EXPECT_GE(std::count(outcomes.begin(), outcomes.end(), "ok"), 1);
  EXPECT_EQ(std::count(outcomes.begin(), outcomes.end(), "error"), 0);
}

}  // namespace
}  // namespace rtmc::store
