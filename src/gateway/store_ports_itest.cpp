// RedisLoginSessions against a live Redis (RTMC_TEST_REDIS): checks asked
// for at once, from several io threads, are batched and each caller gets
// its own answer on its own executor.

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <thread>

#include "gateway/store_ports.hpp"
#include "store/itest_env.hpp"
#include "store/login_sessions.hpp"
#include "store/redis.hpp"

namespace rtmc::gateway {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

TEST(RedisLoginSessionsTest, ConcurrentChecksFromTwoThreadsEachGetTheirOwnAnswer) {
  auto address = itest::env("RTMC_TEST_REDIS");
  ASSERT_TRUE(address) << "RTMC_TEST_REDIS is not set (scripts/services.sh start DIR writes DIR/env)";
  redis::Client client(RedisConfig::parse(*address), 2);
  store::LoginSessions store(client);
  RedisLoginSessions sessions(client);

  constexpr int kChecks = 3000;  // several batches of at most 1,024
  std::vector<std::string> jtis;
  for (int i = 0; i < kChecks; ++i) jtis.push_back(itest::unique("jti"));
  {
    asio::io_context io;
    auto put = asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < kChecks; i += 2) co_await store.put(jtis[i], "alice", 60s);
        },
        asio::use_future);
    io.run();
    put.get();
  }

  std::atomic<int> right{0};
  std::atomic<int> wrong{0};
  auto check_half = [&](int parity) {
    asio::io_context io;
    for (int i = parity; i < kChecks; i += 2)
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            const bool found = co_await sessions.exists(jtis[i]);
            (found == (i % 2 == 0) ? right : wrong).fetch_add(1);
          },
          asio::detached);
    io.run();
  };
  std::thread even(check_half, 0);
  std::thread odd(check_half, 1);
  even.join();
  odd.join();
  EXPECT_EQ(right.load(), kChecks);
  EXPECT_EQ(wrong.load(), 0);
}

// Redis away: every waiting check fails (the auth answers `unavailable`)
// instead of waiting forever.
TEST(RedisLoginSessionsTest, AnUnreachableRedisFailsEveryWaitingCheck) {
  redis::Client client(RedisConfig::parse("127.0.0.1:1"), 1);
  RedisLoginSessions sessions(client);
  asio::io_context io;
  std::atomic<int> failed{0};
  for (int i = 0; i < 20; ++i)
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          try {
            co_await sessions.exists("nobody");
          } catch (const std::exception&) {
            failed.fetch_add(1);
          }
        },
        asio::detached);
  io.run();
  EXPECT_EQ(failed.load(), 20);
}

}  // namespace
}  // namespace rtmc::gateway
