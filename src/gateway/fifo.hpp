#pragma once
// A FIFO queue that holds no memory while it is empty. std::deque (the
// obvious choice) allocates a 512-byte block and its map as soon as it is
// constructed: per client connection that is over a kilobyte for two queues
// that stay empty on an idle connection (goal: ~4 KiB per idle connection).
// A vector with a moving head: the consumed prefix is dropped when the queue
// empties, or compacted once it is most of the vector; a large buffer is
// given back when the queue empties. Plain logic, one owner.

#include <cstddef>
#include <utility>
#include <vector>

namespace rtmc::gateway {

template <class T>
class Fifo {
 public:
  bool empty() const { return head_ == items_.size(); }
  std::size_t size() const { return items_.size() - head_; }
  T& operator[](std::size_t i) { return items_[head_ + i]; }
  const T& operator[](std::size_t i) const { return items_[head_ + i]; }
  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }

  void push_back(T item) {
    // The consumed prefix goes once it is most of the vector, so a queue
    // that never empties does not grow without bound.
    if (head_ >= kCompactFrom && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
    items_.push_back(std::move(item));
  }
  void pop_front() {
    items_[head_++] = T{};  // releases what the item holds now
    if (head_ == items_.size()) clear();
  }
  void clear() {
    head_ = 0;
    // A small buffer is kept for the next burst; a large one is given back.
    if (items_.capacity() > kKeepCapacity)
      std::vector<T>().swap(items_);
    else
      items_.clear();
  }

 private:
  static constexpr std::size_t kCompactFrom = 64;
  static constexpr std::size_t kKeepCapacity = 16;
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace rtmc::gateway
