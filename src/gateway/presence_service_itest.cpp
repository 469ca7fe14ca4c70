// Integration test of the gateway's presence service against a real Redis,
// RabbitMQ and PostgreSQL (RTMC_TEST_REDIS, RTMC_TEST_AMQP, RTMC_TEST_PG).
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "common/keys.hpp"
#include "gateway/presence_service.hpp"
#include "store/itest_env.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/stalling_proxy_for_tests.hpp"

namespace rtmc::gateway {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

// The connections' Redis path stalls for several liveness TTLs while a storm
// of connects waits on it: the maintenance step, on its own connection,
// keeps refreshing, so the gateway is neither swept nor told it lost its
// lease. (Before, the refresh queued behind the connects.)
TEST(PresenceServiceTest, TheLivenessRefreshDoesNotWaitBehindAStalledClientPath) {
  const auto redis_env = itest::env("RTMC_TEST_REDIS");
  const auto amqp_env = itest::env("RTMC_TEST_AMQP");
  const auto pg_env = itest::env("RTMC_TEST_PG");
  ASSERT_TRUE(redis_env && amqp_env && pg_env)
      << "RTMC_TEST_REDIS, RTMC_TEST_AMQP and RTMC_TEST_PG must be set";
  const auto real = RedisConfig::parse(*redis_env);
  testing::StallingProxy proxy(real.address.port);
  CommonOptions common;
  common.redis = real;
  common.redis.address.host = "127.0.0.1";
  common.redis.address.port = proxy.port();
  common.redis.timeout = 20s;  // the stalled connects stay queued for the whole test
  common.amqp.url = *amqp_env;
  common.pg.conninfo = *pg_env;
  {
    pg::Connection database(common.pg);
    pg::migrate(database);  // the status writer's table
  }

  PresenceService::Options options;
  options.liveness_ttl = 600ms;  // a 200 ms period
  const auto gateway = itest::unique("itest-gw-");
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  std::atomic<bool> lease_lost{false};
  {
    PresenceService service(common, gateway, options, real);
    service.start(io.get_executor(), [&lease_lost] { lease_lost = true; });

    redis::Connection admin(real);
    ASSERT_EQ(admin.command({"EXISTS", keys::gateway_alive(gateway)}).integer, 1);
    proxy.stall();
    constexpr int kConnects = 200;
    std::atomic<int> answered{0};
    for (std::uint64_t id = 1; id <= kConnects; ++id)
      asio::co_spawn(io, service.connected(id, itest::unique("stormer")),
                     [&answered](std::exception_ptr) { ++answered; });
    // Five TTLs: without its own connection the refresh would have waited
    // behind the connects, the alive key expired and the next refresh found
    // the gateway swept.
    std::this_thread::sleep_for(5 * options.liveness_ttl);
    EXPECT_EQ(admin.command({"EXISTS", keys::gateway_alive(gateway)}).integer, 1);
    EXPECT_EQ(admin.command({"SISMEMBER", keys::gateways(), gateway}).integer, 1);
    EXPECT_FALSE(lease_lost.load());
    proxy.resume();
    // The connects finish before the service goes (they use it when they resume).
    while (answered.load() < kConnects) std::this_thread::sleep_for(10ms);
    service.stop();
  }
  EXPECT_FALSE(lease_lost.load());
  work.reset();
  io.stop();
  io_thread.join();
}

}  // namespace
}  // namespace rtmc::gateway
