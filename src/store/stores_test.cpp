// The C++ side of the rate-limit arithmetic (the bucket itself is a Lua
// script, tested against Redis in stores_itest.cpp), and the store clients'
// link counters (common/store_events.hpp) with no server to reach.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/rate_limits.hpp"
#include "store/redis.hpp"

namespace rtmc::store {
namespace {

using namespace std::chrono_literals;

TEST(Rate, FromPerSecondAndPerMinute) {
  auto register_rate = Rate::per_second(20, 50);
  EXPECT_TRUE(register_rate.limited());
  EXPECT_EQ(register_rate.burst, 50u);
  EXPECT_EQ(register_rate.interval, 50ms);
  auto login_rate = Rate::per_minute(10, 10);
  EXPECT_EQ(login_rate.interval, 6s);
  EXPECT_EQ(Rate::per_second(3, 1).interval, 333333us);
  EXPECT_EQ(Rate::per_second(1e9, 1).interval, 1us);  // never 0
}

TEST(Rate, ZeroRateOrBurstIsNoLimit) {
  EXPECT_FALSE(Rate{}.limited());
  EXPECT_FALSE(Rate::per_second(0, 10).limited());
  EXPECT_FALSE(Rate::per_second(-1, 10).limited());
  EXPECT_FALSE(Rate::per_minute(10, 0).limited());
}

// --publish-rate / --publish-burst, read the same way by api and gateway.
TEST(Rate, MessagesRateDefaultsItsBurstToOneSecondsWorth) {
  EXPECT_EQ(messages_rate(2.5, 0).burst, 3u);
  EXPECT_EQ(messages_rate(0.2, 0).burst, 1u);
  EXPECT_EQ(messages_rate(10, 4).burst, 4u);
  EXPECT_EQ(messages_rate(10, 4).interval, 100ms);
  EXPECT_FALSE(messages_rate(0, 0).limited());
  EXPECT_FALSE(messages_rate(0, 5).limited());
}

TEST(Rate, RetryAfterIsWholeSecondsRoundedUpAtLeastOne) {
  EXPECT_EQ(retry_after_seconds(0us), 1);
  EXPECT_EQ(retry_after_seconds(1us), 1);
  EXPECT_EQ(retry_after_seconds(1s), 1);
  EXPECT_EQ(retry_after_seconds(1s + 1us), 2);
  EXPECT_EQ(retry_after_seconds(59500ms), 60);
}

// A loopback port nobody listens on (bound, then released).
std::uint16_t closed_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

TEST(StoreEvents, EveryClientCountsAFailedConnectAsAnErrorAndNoConnect) {
  const auto port = closed_port();
  RedisConfig redis_config;
  redis_config.address = {"127.0.0.1", port};
  redis_config.timeout = std::chrono::milliseconds(500);
  redis_config.events = std::make_shared<StoreEvents>();
  redis::Connection redis(redis_config);
  EXPECT_THROW(redis.command({"PING"}), redis::RedisError);
  EXPECT_THROW(redis.command({"PING"}), redis::RedisError);
  EXPECT_EQ(redis_config.events->errors.load(), 2u);
  EXPECT_EQ(redis_config.events->connects.load(), 0u);

  PgConfig pg_config;
  pg_config.conninfo = "host=127.0.0.1 port=" + std::to_string(port) + " dbname=rtmc user=rtmc";
  pg_config.events = std::make_shared<StoreEvents>();
  pg::Connection pg(pg_config, pg::Options{std::chrono::milliseconds(1000)});
  EXPECT_THROW(pg.exec("SELECT 1"), pg::PgError);
  EXPECT_EQ(pg_config.events->errors.load(), 1u);
  EXPECT_EQ(pg_config.events->connects.load(), 0u);

  AmqpConfig amqp_config;
  amqp_config.url = "amqp://guest:guest@127.0.0.1:" + std::to_string(port) + "/";
  amqp_config.events = std::make_shared<StoreEvents>();
  EXPECT_THROW(amqp::Connection connection(amqp_config), amqp::AmqpError);
  EXPECT_EQ(amqp_config.events->errors.load(), 1u);
  EXPECT_EQ(amqp_config.events->connects.load(), 0u);
}

}  // namespace
}  // namespace rtmc::store
