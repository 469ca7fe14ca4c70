#pragma once
// Per-room bookkeeping that lets a gateway hand its clients every seq of a
// room exactly once and in order, although the fan-out queue can duplicate
// (re-published after a redelivery) or lose (during a reconnect, or before
// the room's binding took effect) frames, and the bookkeeping of which rooms
// the gateway has members in and its queue is bound to.
// RoomCursors and RoomBindings: plain logic, no I/O, owned by the fan-out
// thread. LocalRooms: thread-safe, written by io threads, read by the
// fan-out thread.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
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

  // The last seq handed on for `room`; nullopt when it has no cursor.
  std::optional<std::int64_t> last(const std::string& room) const {
    auto it = last_.find(room);
    if (it == last_.end()) return std::nullopt;
    return it->second;
  }
  bool contains(const std::string& room) const { return last_.contains(room); }
  // The room has no local members any more: nothing is owed for it.
  void forget(const std::string& room) { last_.erase(room); }

  const std::unordered_map<std::string, std::int64_t>& all() const { return last_; }

 private:
  std::unordered_map<std::string, std::int64_t> last_;
};

// Which rooms have members on this gateway, and the seq each join started
// from, passed from the io threads to the fan-out thread (which blocks in
// rabbitmq-c, not in an io_context, so it cannot be posted to). Each io
// thread's ConnectionIndex reports when a room gets its first or loses its
// last member there; the count is of io threads, so the lock is taken only
// on those edges and on joins, never per delivery. The fan-out thread takes
// the rooms touched since its last take in bulk (the lock is held for a
// swap and a lookup per room).
//
// Per room, in the order one io thread reports them: occupied (its index
// join, before the join reads the room's seq), joined (after `joined` went
// out), vacated. So a take that reports a joined seq reports it with the
// room's state at the take: a join whose room was left before the take is
// not reported as having members.
class LocalRooms {
 public:
  // Run by the fan-out thread (it must only post) once the room's binding is
  // in effect, or once nothing is to be waited for (the room has no members
  // any more); never, while the fan-out has no broker: the caller bounds its
  // wait.
  using Bound = std::function<void()>;

  void occupied(const std::string& room) {
    std::lock_guard lock(mutex_);
    ++threads_[room];
    touched_.try_emplace(room);
  }
  void vacated(const std::string& room) {
    std::lock_guard lock(mutex_);
    auto it = threads_.find(room);
    if (it != threads_.end() && --it->second <= 0) threads_.erase(it);
    touched_.try_emplace(room);
  }
  // A join of `room` answers (or answered) `joined` with `seq`.
  void joined(const std::string& room, std::int64_t seq, Bound on_bound = {}) {
    std::lock_guard lock(mutex_);
    auto& touched = touched_[room];
    if (!touched.joined || seq < *touched.joined) touched.joined = seq;
    if (on_bound) touched.waiting.push_back(std::move(on_bound));
  }

  struct Change {
    std::string room;
    bool has_members = false;
    // The lowest seq a join of the room started from since the last take
    // (only while the room has members).
    std::optional<std::int64_t> joined;
    std::vector<Bound> waiting;
  };
  // Every room touched since the last take, with whether it has members now.
  std::vector<Change> take() {
    std::unordered_map<std::string, Touched> touched;
    std::vector<Change> changes;
    std::lock_guard lock(mutex_);
    touched.swap(touched_);
    changes.reserve(touched.size());
    for (auto& [room, what] : touched) {
      const bool has_members = threads_.contains(room);
      changes.push_back(
          {room, has_members, has_members ? what.joined : std::nullopt, std::move(what.waiting)});
    }
    return changes;
  }

  // Rooms with members now (for tests and metrics).
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return threads_.size();
  }

 private:
  struct Touched {
    std::optional<std::int64_t> joined;
    std::vector<Bound> waiting;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, int> threads_;  // room -> io threads with members of it
  std::unordered_map<std::string, Touched> touched_;
};

// Which rooms the fan-out queue is bound to and which bindings are still to
// be made or removed; the fan-out thread works the queues off a few hundred
// at a time between reads of its queue. Plain logic, no I/O; owned by the
// fan-out thread.
class RoomBindings {
 public:
  // The room needs a binding and, once it is in effect, a catch-up from the
  // room log (also when it is bound already: its frames were dropped while
  // it had no cursor).
  void want(const std::string& room) {
    pending_unbind_.erase(room);
    if (pending_bind_set_.insert(room).second) pending_bind_.push_back(room);
  }
  // The room has no local members any more.
  void drop(const std::string& room) {
    if (pending_bind_set_.erase(room)) std::erase(pending_bind_, room);
    if (bound_.contains(room)) pending_unbind_.insert(room);
  }
  // Up to `limit` rooms to bind now, oldest wish first; the caller binds
  // them and calls bound().
  std::vector<std::string> next_binds(std::size_t limit) {
    const auto count = std::min(limit, pending_bind_.size());
    std::vector<std::string> rooms(pending_bind_.begin(), pending_bind_.begin() + count);
    pending_bind_.erase(pending_bind_.begin(), pending_bind_.begin() + count);
    for (const auto& room : rooms) pending_bind_set_.erase(room);
    return rooms;
  }
  void bound(const std::vector<std::string>& rooms) { bound_.insert(rooms.begin(), rooms.end()); }
  // Up to `limit` rooms to unbind now; they count as unbound from here on.
  std::vector<std::string> next_unbinds(std::size_t limit) {
    std::vector<std::string> rooms;
    for (auto it = pending_unbind_.begin(); it != pending_unbind_.end() && rooms.size() < limit;) {
      bound_.erase(*it);
      rooms.push_back(*it);
      it = pending_unbind_.erase(it);
    }
    return rooms;
  }
  // A new queue has no bindings: every room in `wanted` is to be bound.
  template <class Rooms>
  void reset(const Rooms& wanted) {
    bound_.clear();
    pending_unbind_.clear();
    pending_bind_.clear();
    pending_bind_set_.clear();
    for (const auto& room : wanted) want(room);
  }

  bool busy() const { return !pending_bind_.empty() || !pending_unbind_.empty(); }
  bool is_bound(const std::string& room) const { return bound_.contains(room); }
  bool bind_pending(const std::string& room) const { return pending_bind_set_.contains(room); }
  std::size_t bound_count() const { return bound_.size(); }
  std::size_t pending_count() const { return pending_bind_.size() + pending_unbind_.size(); }

 private:
  std::unordered_set<std::string> bound_;
  // A deque would do; binds are taken from the front in bulk, and drop()
  // of a pending room (a join left at once) is rare.
  std::vector<std::string> pending_bind_;
  std::unordered_set<std::string> pending_bind_set_;
  std::unordered_set<std::string> pending_unbind_;
};

}  // namespace rtmc::gateway
