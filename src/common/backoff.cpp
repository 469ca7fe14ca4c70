#include "common/backoff.hpp"

#include <algorithm>
#include <thread>

namespace rtmc {

namespace {
// How often a sleeping thread looks at its stop flag: short enough that a
// shutdown is not held up noticeably.
constexpr std::chrono::milliseconds kStopCheck{20};
}  // namespace

Backoff::Backoff() : Backoff(Options{}) {}

Backoff::Backoff(Options options) : Backoff(options, std::random_device{}()) {}

Backoff::Backoff(Options options, std::uint64_t seed)
    : options_(options), random_(static_cast<std::minstd_rand::result_type>(seed)) {
  options_.initial = std::max(options_.initial, std::chrono::milliseconds(1));
  options_.max = std::max(options_.max, options_.initial);
}

std::chrono::milliseconds Backoff::ceiling(std::size_t failures) const {
  // Doubling stops once past the cap, so the shift never overflows.
  auto value = options_.initial;
  for (std::size_t i = 0; i < failures && value < options_.max; ++i) value *= 2;
  return std::min(value, options_.max);
}

std::chrono::milliseconds Backoff::delay_after(std::size_t failures) {
  const auto top = ceiling(failures).count();
  std::uniform_int_distribution<std::chrono::milliseconds::rep> spread(top / 2, top);
  return std::chrono::milliseconds(spread(random_));
}

std::chrono::milliseconds Backoff::next() {
  return delay_after(failures_++);
}

bool Backoff::sleep(const std::atomic<bool>& stop) {
  return sleep_unless_stopped(next(), stop);
}

bool sleep_unless_stopped(std::chrono::milliseconds duration, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + duration;
  while (!stop) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, kStopCheck));
  }
  return false;
}

}  // namespace rtmc
