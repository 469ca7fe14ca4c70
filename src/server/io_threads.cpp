#include "server/io_threads.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

namespace rtmc::server {

namespace net = boost::asio;

IoThreads::IoThreads(std::size_t count) {
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < count; ++i) threads_.push_back(std::make_unique<Thread>());
}

IoThreads::~IoThreads() {
  stop();
  join();
}

std::vector<net::any_io_executor> IoThreads::executors() {
  std::vector<net::any_io_executor> result;
  for (auto& thread : threads_) result.push_back(thread->context.get_executor());
  return result;
}

void IoThreads::start(const std::string& name) {
  for (auto& thread : threads_) {
    if (thread->thread.joinable()) continue;
    thread->work.emplace(thread->context.get_executor());
    thread->thread = std::thread([context = &thread->context, name] {
      for (;;) {
        try {
          context->run();
          return;
        } catch (const std::exception& error) {
          spdlog::error("{} io thread: uncaught exception: {}", name, error.what());
        }
      }
    });
  }
}

void IoThreads::release() {
  // The guard belongs to its own thread's context: reset it there, so this
  // is safe to call from any io thread.
  for (auto& thread : threads_) net::post(thread->context, [t = thread.get()] { t->work.reset(); });
}

void IoThreads::stop() {
  for (auto& thread : threads_) thread->context.stop();
}

void IoThreads::join() {
  for (auto& thread : threads_)
    if (thread->thread.joinable() && thread->thread.get_id() != std::this_thread::get_id())
      thread->thread.join();
}

}  // namespace rtmc::server
