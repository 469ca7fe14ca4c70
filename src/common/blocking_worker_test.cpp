#include "common/blocking_worker.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

// Staged jobs queued back to back share one round: every first stage runs
// before any second stage, in queue order; a plain job in between splits
// the queue into two rounds and runs alone, in its FIFO place.
TEST(BlockingWorker, StagedJobsQueuedTogetherRunAsOneRoundAroundPlainJobs) {
  asio::io_context io;
  BlockingWorker worker("test");
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<bool> started{false};
  std::vector<std::string> trace;  // written by the worker thread only
  asio::co_spawn(io, worker.run([released, &started] {
    started = true;
    released.wait();
  }),
                 asio::detached);
  while (!started) io.poll();

  std::vector<int> results(5, -1);
  const auto staged = [&](int i) {
    return [&, i] {
      trace.push_back("start" + std::to_string(i));
      return [&, i] {
        trace.push_back("finish" + std::to_string(i));
        if (i == 1) throw std::runtime_error("second stage failed");
        return i * 10;
      };
    };
  };
  std::vector<std::string> errors;
  for (int i = 0; i < 3; ++i)
    asio::co_spawn(io, worker.run_staged(staged(i)), [&, i](std::exception_ptr error, int value) {
      if (error) {
        errors.push_back("job" + std::to_string(i));
        return;
      }
      results[static_cast<std::size_t>(i)] = value;
    });
  asio::co_spawn(io, worker.run([&] { trace.push_back("plain"); }), asio::detached);
  for (int i = 3; i < 5; ++i)
    asio::co_spawn(io, worker.run_staged(staged(i)), [&, i](std::exception_ptr error, int value) {
      if (error) errors.push_back("job" + std::to_string(i));
      results[static_cast<std::size_t>(i)] = value;
    });
  io.poll();  // every job above is queued behind the stuck one
  const auto rounds_before = worker.staged_rounds();
  release.set_value();
  io.run();

  const std::vector<std::string> expected{"start0", "start1", "start2", "finish0", "finish1", "finish2",
                                          "plain",  "start3", "start4", "finish3", "finish4"};
  EXPECT_EQ(trace, expected);
  EXPECT_EQ(worker.staged_rounds() - rounds_before, 2u);
  EXPECT_EQ(errors, std::vector<std::string>{"job1"});
  EXPECT_EQ(results, (std::vector<int>{0, -1, 20, 30, 40}));
}

// A first stage that throws answers its caller with that error and the
// rest of the round is unaffected.
TEST(BlockingWorker, AFirstStageErrorIsThatCallersAlone) {
  asio::io_context io;
  BlockingWorker worker("test");
  int ok = 0;
  std::string failed;
  asio::co_spawn(io, worker.run_staged([]() -> std::function<int()> { throw std::runtime_error("append"); }),
                 [&](std::exception_ptr error, int) {
                   try {
                     if (error) std::rethrow_exception(error);
                   } catch (const std::runtime_error& e) {
                     failed = e.what();
                   }
                 });
  asio::co_spawn(io, worker.run_staged([] { return [] { return 7; }; }),
                 [&](std::exception_ptr error, int value) {
                   if (!error) ok = value;
                 });
  io.run();
  EXPECT_EQ(failed, "append");
  EXPECT_EQ(ok, 7);
}

}  // namespace
}  // namespace rtmc
