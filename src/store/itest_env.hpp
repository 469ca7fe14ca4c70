#pragma once
// For integration tests only: what every *_itest reads from its environment
// (the RTMC_TEST_* addresses scripts/test.sh exports), names no other test
// or run on the same services can have picked, and a way to run a coroutine
// to its end.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

namespace rtmc::itest {

// The variable's value; nullopt when it is unset or empty.
inline std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// `prefix` followed by up to twelve random digits.
inline std::string unique(const std::string& prefix) {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return prefix + std::to_string(digits(device) % 1000000000000ULL);
}

// Runs a coroutine to completion on `io`. The io_context must outlive the
// clients the coroutine used: their worker threads release a finished call
// (and its timer on `io`) only after the caller has resumed.
template <class T>
T run_on(boost::asio::io_context& io, boost::asio::awaitable<T> task) {
  io.restart();
  auto future = boost::asio::co_spawn(io, std::move(task), boost::asio::use_future);
  io.run();
  return future.get();
}

}  // namespace rtmc::itest
