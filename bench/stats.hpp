#pragma once
// Measurement for the load generator: a fixed-size latency histogram and the
// per-subscriber bookkeeping that finds duplicates, reordering and seq gaps.
// None of these are thread-safe; each io thread keeps its own and they are
// merged after the threads stop.

#include <cstdint>
#include <vector>

namespace rtmc::bench {

// Log-linear histogram of nanosecond values (in the manner of HdrHistogram):
// exact below 2048 ns, then 1024 buckets per power of two, so any reported
// percentile is within 0.1% of a recorded value. Memory is fixed (~260 KiB)
// however many samples are recorded; values above ~18 minutes are clamped.
class LatencyHistogram {
 public:
  LatencyHistogram();

  void record(std::uint64_t nanoseconds);
  void merge(const LatencyHistogram& other);

  std::uint64_t count() const { return count_; }
  std::uint64_t min() const { return count_ == 0 ? 0 : min_; }
  std::uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_); }
  // The smallest recorded value (to bucket precision) that at least
  // `percent`% of samples do not exceed; 0 when empty. percentile(100) = max().
  std::uint64_t percentile(double percent) const;

  static constexpr unsigned kSubBucketBits = 10;
  static constexpr std::uint64_t kMaxValue = (std::uint64_t{1} << 40) - 1;

 private:
  static std::size_t index_of(std::uint64_t value);
  static std::uint64_t highest_in_bucket(std::size_t index);

  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t sum_ = 0;
};

// Which (publisher, counter) pairs one subscriber has seen. A repeat is a
// duplicate; a counter below the highest seen from that publisher (and not a
// repeat) arrived out of order.
class DeliveryTracker {
 public:
  enum class Outcome { first, duplicate };
  Outcome record(std::uint32_t publisher, std::uint64_t counter);
  std::uint64_t reordered() const { return reordered_; }

  // Bound on counters, so a corrupt body cannot make the bitmap huge.
  static constexpr std::uint64_t kMaxCounter = std::uint64_t{1} << 32;

 private:
  struct PerPublisher {
    std::vector<std::uint64_t> seen;
    std::int64_t highest = -1;
  };
  std::vector<PerPublisher> publishers_;
  std::uint64_t reordered_ = 0;
};

// A room's seq as one subscriber sees it: every message must carry the next
// seq after the previous one (starting after the seq reported at join).
class SeqChecker {
 public:
  void start(std::int64_t seq_at_join) { expected_ = seq_at_join + 1; }
  void record(std::int64_t seq);
  // Seqs skipped over (later ones arrived first or instead).
  std::uint64_t gaps() const { return gaps_; }
  // Messages whose seq was not above the last one.
  std::uint64_t regressions() const { return regressions_; }

 private:
  std::int64_t expected_ = 1;
  std::uint64_t gaps_ = 0;
  std::uint64_t regressions_ = 0;
};

}  // namespace rtmc::bench
