#pragma once
// A thread that owns one blocking client (hiredis sync, libpq, argon2 hashing)
// so io threads never block on it. Jobs run in FIFO order on the worker
// thread; `run` resumes the awaiting coroutine on its own executor.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

namespace rtmc {

class BlockingWorker {
 public:
  explicit BlockingWorker(std::string name);
  ~BlockingWorker();
  BlockingWorker(const BlockingWorker&) = delete;
  BlockingWorker& operator=(const BlockingWorker&) = delete;

  // Thread-safe. Jobs posted after destruction began are dropped.
  void post(std::function<void()> job);

  // Runs `fn` on the worker thread; an exception thrown there is rethrown in
  // the awaiting coroutine.
  template <class F>
  auto run(F fn) -> boost::asio::awaitable<std::invoke_result_t<F&>> {
    using R = std::invoke_result_t<F&>;
    using Slot = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;
    auto caller = co_await boost::asio::this_coro::executor;
    auto init = [this, caller, fn = std::move(fn)](auto handler) mutable {
      auto shared = std::make_shared<decltype(handler)>(std::move(handler));
      auto guard = boost::asio::make_work_guard(caller);
      post([shared, guard, caller, fn = std::move(fn)]() mutable {
        std::exception_ptr error;
        Slot slot{};
        try {
          if constexpr (std::is_void_v<R>) {
            fn();
            slot = true;
          } else {
            slot.emplace(fn());
          }
        } catch (...) {
          error = std::current_exception();
        }
        boost::asio::post(caller, [shared, error, slot = std::move(slot)]() mutable {
          (*shared)(error, std::move(slot));
        });
      });
    };
    Slot result = co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable),
                                                       void(std::exception_ptr, Slot)>(
        std::move(init), boost::asio::use_awaitable);
    if constexpr (!std::is_void_v<R>) co_return std::move(*result);
  }

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::string name_;
  std::thread thread_;
};

}  // namespace rtmc
