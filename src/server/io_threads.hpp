#pragma once
// A role's io threads: one io_context per thread, so everything a connection
// owns stays on one thread without locks (a connection lives on the context
// it was accepted onto).
//
// Threading: construct, start(), release()/stop() and join() from one owning
// thread; release() and stop() may also be called from any io thread.
// context(i) may be used from any thread (post, co_spawn).
// The destructor stops and joins; io_contexts are destroyed with the pool,
// which destroys the handlers and coroutines still queued on them, so
// whatever those reference must outlive the pool.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace rtmc::server {

class IoThreads {
 public:
  // count 0 = std::thread::hardware_concurrency() (at least 1).
  explicit IoThreads(std::size_t count);
  ~IoThreads();
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  std::size_t size() const { return threads_.size(); }
  boost::asio::io_context& context(std::size_t i) { return threads_[i]->context; }
  std::vector<boost::asio::any_io_executor> executors();

  // Starts the threads; each runs its context until released and out of
  // work, or stopped. An exception escaping a handler is logged and the
  // context runs on: connections catch their own errors, so this is the last
  // line of defence that keeps one bug from ending the process.
  void start(const std::string& name);
  // Graceful: each thread ends once its context has no more work.
  void release();
  // Hard: every context stops at once (pending handlers are not run).
  void stop();
  // Blocks until every thread ended. Not from an io thread.
  void join();

 private:
  struct Thread {
    boost::asio::io_context context{1};
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Thread>> threads_;
};

}  // namespace rtmc::server
