#include "common/blocking_worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

namespace rtmc {
namespace {

namespace asio = boost::asio;

TEST(BlockingWorker, RunsOffTheCallerThreadAndResumesOnIt) {
  asio::io_context io;
  BlockingWorker worker("test");
  std::thread::id caller = std::this_thread::get_id(), ran_on, resumed_on;
  int result = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        result = co_await worker.run([&] {
          ran_on = std::this_thread::get_id();
          return 41 + 1;
        });
        resumed_on = std::this_thread::get_id();
      },
      asio::detached);
  io.run();
  EXPECT_EQ(result, 42);
  EXPECT_NE(ran_on, caller);
  EXPECT_EQ(resumed_on, caller);
}

TEST(BlockingWorker, PropagatesExceptionsAndVoid) {
  asio::io_context io;
  BlockingWorker worker("test");
  std::string caught;
  bool void_done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await worker.run([&] { void_done = true; });
        try {
          co_await worker.run([]() -> int { throw std::runtime_error("boom"); });
        } catch (const std::runtime_error& error) {
          caught = error.what();
        }
      },
      asio::detached);
  io.run();
  EXPECT_TRUE(void_done);
  EXPECT_EQ(caught, "boom");
}

}  // namespace
}  // namespace rtmc
