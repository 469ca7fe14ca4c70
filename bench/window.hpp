#pragma once
// Full-speed mode's bounded window, as redis-benchmark's pipeline (-P): a
// publisher keeps at most `limit` messages unanswered and sends the next as
// soon as an answer (gateway `ack` or error, Redis PUBLISH reply) frees a
// slot. Not thread-safe: one per publisher connection, on its io thread.

#include <cstdint>

namespace rtmc::bench {

class SendWindow {
 public:
  explicit SendWindow(std::uint64_t limit = 0) : limit_(limit) {}

  // Messages that may be sent now.
  std::uint64_t room() const { return in_flight_ >= limit_ ? 0 : limit_ - in_flight_; }
  // Counted before the write, so an answer that arrives during it finds its slot.
  void sent(std::uint64_t count) { in_flight_ += count; }
  // One answer; an answer for nothing in flight (a stray error frame) is ignored.
  void settled() {
    if (in_flight_ > 0) --in_flight_;
  }
  std::uint64_t in_flight() const { return in_flight_; }
  std::uint64_t limit() const { return limit_; }

 private:
  std::uint64_t limit_;
  std::uint64_t in_flight_ = 0;
};

}  // namespace rtmc::bench
