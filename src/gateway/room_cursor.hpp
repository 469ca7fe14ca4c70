#pragma once
// Per-room bookkeeping that lets a gateway hand its clients every seq of a
// room exactly once and in order, although the fan-out queue can duplicate
// (re-published after a redelivery) or lose (during a reconnect) frames.
// Plain logic, no I/O; owned by the fan-out thread.

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rtmc::gateway {

class RoomCursors {
 public:
  struct Decision {
    enum class Kind { deliver, duplicate, fill_gap } kind;
    // For fill_gap: seqs [gap_from, gap_to] must be fetched and delivered
    // before this one.
    std::int64_t gap_from = 0;
    std::int64_t gap_to = 0;
  };

  // What to do with `seq` arriving for `room`. The first seq seen for a room
  // is delivered as is: there is nothing earlier this gateway owes anyone.
  Decision on_arrival(const std::string& room, std::int64_t seq) const {
    auto it = last_.find(room);
    if (it == last_.end()) return {Decision::Kind::deliver};
    if (seq <= it->second) return {Decision::Kind::duplicate};
    if (seq == it->second + 1) return {Decision::Kind::deliver};
    return {Decision::Kind::fill_gap, it->second + 1, seq - 1};
  }

  // A room joined at `seq` that this gateway has not seen yet starts there,
  // so the first frame above seq + 1 fills the gap from the log.
  void seed(const std::string& room, std::int64_t seq) { last_.try_emplace(room, seq); }

  void delivered(const std::string& room, std::int64_t seq) {
    auto [it, inserted] = last_.try_emplace(room, seq);
    if (!inserted && seq > it->second) it->second = seq;
  }

  const std::unordered_map<std::string, std::int64_t>& all() const { return last_; }

 private:
  std::unordered_map<std::string, std::int64_t> last_;
};

// Rooms joined on this gateway and the seq each join started from, passed
// from io threads to the fan-out thread (the only cross-thread hand-off that
// is not a post: the fan-out thread blocks in rabbitmq-c, not in an
// io_context). Taken in bulk, so the lock is held for a swap.
class RoomSeeds {
 public:
  void add(const std::string& room, std::int64_t seq) {
    std::lock_guard lock(mutex_);
    seeds_.emplace_back(room, seq);
  }
  std::vector<std::pair<std::string, std::int64_t>> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(seeds_, {});
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::int64_t>> seeds_;
};

}  // namespace rtmc::gateway
