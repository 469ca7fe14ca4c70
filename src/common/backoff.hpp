#pragma once
// The one reconnect backoff of every role: exponential, jittered, capped.
// A Backoff is a plain value owned by one thread (no locking); `sleep` is the
// only blocking call and returns early when a stop flag turns true.
//
// Jitter: each delay is drawn uniformly from the upper half of the current
// ceiling, so many processes that lost the same server (a broker restart)
// spread their reconnects out instead of arriving in lockstep, while a single
// process still waits at least half the ceiling.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>

namespace rtmc {

class Backoff {
 public:
  struct Options {
    // Ceiling after the first failure; it doubles with each further one.
    std::chrono::milliseconds initial{100};
    std::chrono::milliseconds max{5000};
  };

  Backoff();
  explicit Backoff(Options options);
  // A fixed seed makes the jitter reproducible (tests).
  Backoff(Options options, std::uint64_t seed);

  // Counts a failure and returns how long to wait before the next attempt.
  std::chrono::milliseconds next();
  // The jittered delay after `failures` earlier failures, without counting
  // one (for callers that keep a count per item, such as a retried message).
  std::chrono::milliseconds delay_after(std::size_t failures);
  // The upper bound of delay_after(failures).
  std::chrono::milliseconds ceiling(std::size_t failures) const;
  // After a success: the next failure waits `initial` again.
  void reset() { failures_ = 0; }
  std::size_t failures() const { return failures_; }

  // Waits next(); false if `stop` turned true first.
  bool sleep(const std::atomic<bool>& stop);

 private:
  Options options_;
  std::size_t failures_ = 0;
  std::minstd_rand random_;
};

// Sleeps `duration` in short slices; false if `stop` turned true first.
bool sleep_unless_stopped(std::chrono::milliseconds duration, const std::atomic<bool>& stop);

}  // namespace rtmc
