#pragma once
// A thread that owns one blocking client (hiredis sync, libpq, argon2 hashing)
// so io threads never block on it. Jobs run in FIFO order on the worker
// thread; `run` resumes the awaiting coroutine on its own executor.
//
// Staged jobs (run_staged) are for clients that pipeline: a staged job is a
// first stage (e.g. write a command) returning its second (read the reply).
// When the worker wakes it takes every staged job queued back to back, runs
// all their first stages, then all their second stages in the same order, so
// they share one round trip. A plain job (run) is never batched: it runs
// alone, after everything queued before it and before everything after it.
//
// Bounds (WorkerLimits): at most `max_queue` jobs wait; a run() over it throws
// WorkerUnavailable at once instead of queueing. A run() with a deadline
// throws WorkerUnavailable when the deadline passes first, whatever the job
// is doing: a job still queued then is skipped, a running one finishes on the
// worker and its result is dropped (a staged job whose first stage ran always
// gets its second stage run). So a stalled backend answers every caller in
// bounded time and its queue drains at once when it comes back.
//
// Thread-safety: post/run may be called from any thread. The awaiting
// coroutine's executor must outlive the worker's pending jobs.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

namespace rtmc {

struct WorkerLimits {
  std::size_t max_queue = 0;              // jobs waiting (not counting the running one); 0 = unbounded
  std::chrono::milliseconds max_wait{0};  // run()'s deadline, queueing included; 0 = none
};

// The worker could not answer in time: its queue was full or the caller's
// deadline passed. The backend behind it may be stalled or overloaded.
class WorkerUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class BlockingWorker {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

  explicit BlockingWorker(std::string name, WorkerLimits limits = {});
  ~BlockingWorker();
  BlockingWorker(const BlockingWorker&) = delete;
  BlockingWorker& operator=(const BlockingWorker&) = delete;

  // Thread-safe. Jobs posted after destruction began are dropped (true is
  // returned: the job is gone either way). false when the queue is full.
  bool post(std::function<void()> job);

  // Runs `fn` on the worker thread; an exception thrown there is rethrown in
  // the awaiting coroutine. The deadline is limits().max_wait from now.
  template <class F>
  auto run(F fn) -> boost::asio::awaitable<std::invoke_result_t<F&>> {
    const auto deadline = limits_.max_wait.count() > 0 ? Clock::now() + limits_.max_wait : kNoDeadline;
    return run_until(std::move(fn), deadline);
  }

  // As run(), with an explicit deadline (kNoDeadline: none).
  template <class F>
  auto run_until(F fn, Clock::time_point deadline) -> boost::asio::awaitable<std::invoke_result_t<F&>> {
    return submit<std::invoke_result_t<F&>>([fn = std::move(fn)]() mutable { return std::move(fn); },
                                            deadline, false);
  }

  // A staged job: `start()` runs on the worker and returns the second stage,
  // whose result (or exception) is the caller's. An exception thrown by
  // `start` is the caller's too (its second stage then does not run).
  template <class Start>
  using StagedResult = std::invoke_result_t<std::invoke_result_t<Start&>&>;
  template <class Start>
  auto run_staged(Start start) -> boost::asio::awaitable<StagedResult<Start>> {
    const auto deadline = limits_.max_wait.count() > 0 ? Clock::now() + limits_.max_wait : kNoDeadline;
    return submit<StagedResult<Start>>(std::move(start), deadline, true);
  }

  const WorkerLimits& limits() const { return limits_; }
  const std::string& name() const { return name_; }
  // Rounds of staged jobs run so far (each one or more jobs). Any thread.
  std::uint64_t staged_rounds() const { return staged_rounds_.load(std::memory_order_relaxed); }

 private:
  struct Job {
    // Returns the second stage; empty when the job was skipped.
    std::function<std::function<void()>()> start;
    bool staged = false;
  };
  template <class Handler>
  struct PendingCall {
    PendingCall(Handler h, boost::asio::any_io_executor executor)
        : handler(std::move(h)), timer(std::move(executor)) {}
    std::atomic<bool> answered{false};
    Handler handler;
    boost::asio::steady_timer timer;
  };

  template <class R, class Start>
  boost::asio::awaitable<R> submit(Start start, Clock::time_point deadline, bool staged);
  bool push(Job job);
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> staged_rounds_{0};
  std::string name_;
  WorkerLimits limits_;
  std::thread thread_;
};

template <class R, class Start>
boost::asio::awaitable<R> BlockingWorker::submit(Start start, Clock::time_point deadline, bool staged) {
  using Slot = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;
  using Finish = std::invoke_result_t<Start&>;
  auto caller = co_await boost::asio::this_coro::executor;
  auto init = [this, caller, deadline, staged, start = std::move(start)](auto handler) mutable {
    // Whoever flips `answered` first (the job's completion, the deadline, or
    // a full queue) resumes the caller; the others do nothing.
    using Call = PendingCall<decltype(handler)>;
    auto call = std::make_shared<Call>(std::move(handler), caller);
    const auto refuse = [call, name = name_](const char* why) {
      if (call->answered.exchange(true)) return;
      call->handler(std::make_exception_ptr(WorkerUnavailable(name + ": " + why)), Slot{});
    };
    auto guard = boost::asio::make_work_guard(caller);
    Job job;
    job.staged = staged;
    job.start = [call, guard, caller, deadline, start = std::move(start)]() mutable -> std::function<void()> {
      // What belongs to the caller's io_context (the call's timer, the work
      // guard) must not be let go on this thread after the caller may have
      // resumed: its io_context may be gone by then. So the completion takes
      // them along, and a skipped job lets the call go before the guard,
      // which keeps that io_context's run() from returning until then.
      const auto skip = [&] {
        call.reset();
        guard.reset();
        return std::function<void()>{};
      };
      // The caller gave up while it was queued, or will as soon as its io
      // thread runs (its deadline passed): the work would be wasted. The
      // clock check also covers a stopped io_context, whose deadline timer
      // never fires, so a worker being destroyed drains its queue at once.
      if (call->answered.load()) return skip();
      if (deadline != kNoDeadline && Clock::now() >= deadline) return skip();
      std::exception_ptr error;
      std::optional<Finish> finish;
      try {
        finish.emplace(start());
      } catch (...) {
        error = std::current_exception();
      }
      return [call = std::move(call), guard = std::move(guard), caller, error,
              finish = std::move(finish)]() mutable {
        Slot slot{};
        if (!error) {
          try {
            if constexpr (std::is_void_v<R>) {
              (*finish)();
              slot = true;
            } else {
              slot.emplace((*finish)());
            }
          } catch (...) {
            error = std::current_exception();
          }
        }
        boost::asio::post(caller, [call = std::move(call), guard = std::move(guard), error,
                                   slot = std::move(slot)]() mutable {
          if (call->answered.exchange(true)) return;
          call->timer.cancel();
          call->handler(error, std::move(slot));
        });
      };
    };
    if (!push(std::move(job))) {
      boost::asio::post(caller, [refuse] { refuse("queue full"); });
      return;
    }
    if (deadline != kNoDeadline) {
      call->timer.expires_at(deadline);
      call->timer.async_wait([refuse](const boost::system::error_code& ec) {
        if (!ec) refuse("deadline passed");
      });
    }
  };
  Slot result = co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable),
                                                     void(std::exception_ptr, Slot)>(
      std::move(init), boost::asio::use_awaitable);
  if constexpr (!std::is_void_v<R>) co_return std::move(*result);
}

}  // namespace rtmc
