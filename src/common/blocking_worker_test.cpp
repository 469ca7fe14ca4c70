#include "common/blocking_worker.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
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

// A worker stuck in a job (a stalled backend) still answers every caller in
// bounded time: over max_queue at once, else at the deadline; and jobs whose
// caller gave up while they waited are skipped, not run late.
TEST(BlockingWorker, FullQueueAndDeadlineAnswerWhileTheWorkerIsStuck) {
  asio::io_context io;
  BlockingWorker worker("test", WorkerLimits{1, std::chrono::milliseconds(100)});
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> ran{0};
  std::string stuck_error, queued_error, full_error;
  const auto catch_into = [](std::string& into) {
    return [&into](std::exception_ptr error) {
      try {
        if (error) std::rethrow_exception(error);
      } catch (const WorkerUnavailable& e) {
        into = e.what();
      } catch (...) {
        into = "other";
      }
    };
  };
  // Occupies the worker until released.
  std::atomic<bool> started{false};
  asio::co_spawn(io, worker.run([released, &ran, &started] {
    started = true;
    released.wait();
    ++ran;
  }),
                 catch_into(stuck_error));
  while (!started) io.poll();
  // Waits in the queue (its one place) until its deadline passes.
  asio::co_spawn(io, worker.run([&ran] { ++ran; }), catch_into(queued_error));
  // The queue is full: refused at once.
  asio::co_spawn(io, worker.run([&ran] { ++ran; }), catch_into(full_error));
  // The stuck job's work guard keeps the context busy: run until all three answered.
  while (stuck_error.empty() || queued_error.empty() || full_error.empty()) io.run_one();
  EXPECT_NE(stuck_error.find("deadline passed"), std::string::npos) << stuck_error;
  EXPECT_NE(queued_error.find("deadline passed"), std::string::npos) << queued_error;
  EXPECT_NE(full_error.find("queue full"), std::string::npos) << full_error;
  EXPECT_EQ(ran.load(), 0);

  release.set_value();
  // Only the stuck job ran; the one whose caller gave up is skipped. It may
  // hold the queue's one place for a moment after the stuck job ended.
  int result = 0;
  for (int attempt = 0; attempt < 10000 && result == 0; ++attempt) {
    io.restart();
    asio::co_spawn(io, worker.run([] { return 7; }), [&](std::exception_ptr error, int value) {
      if (!error) result = value;
    });
    io.run();
  }
  EXPECT_EQ(result, 7);
  EXPECT_EQ(ran.load(), 1);
}

TEST(BlockingWorker, AJobFinishingBeforeItsDeadlineAnswersNormally) {
  asio::io_context io;
  BlockingWorker worker("test", WorkerLimits{4, std::chrono::seconds(30)});
  int result = 0;
  auto started = std::chrono::steady_clock::now();
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { result = co_await worker.run([] { return 5; }); }, asio::detached);
  io.run();  // must not wait for the 30 s timer
  EXPECT_EQ(result, 5);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

// A process stopping with a stalled backend: the callers' io thread has
// stopped, so their deadline timers never fire, yet the jobs they queued
// must not run late, one backend timeout after another, while the worker is
// being torn down.
TEST(BlockingWorker, AJobPastItsDeadlineIsSkippedEvenWhenItsCallerNoLongerRuns) {
  asio::io_context io;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<bool> late_job_ran{false};
  {
    BlockingWorker worker("test", WorkerLimits{8, std::chrono::milliseconds(50)});
    worker.post([released] { released.wait(); });  // the stalled call
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { co_await worker.run([&] { late_job_ran = true; }); },
        asio::detached);
    io.run_one();  // queues the job; the caller's io thread then stops
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    release.set_value();
  }  // the worker drains its queue and joins
  EXPECT_FALSE(late_job_ran);
}

}  // namespace
}  // namespace rtmc
