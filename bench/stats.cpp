#include "stats.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace rtmc::bench {

namespace {
constexpr std::uint64_t kSubBuckets = std::uint64_t{1} << LatencyHistogram::kSubBucketBits;  // 1024
constexpr std::uint64_t kExactLimit = 2 * kSubBuckets;                                       // 2048
constexpr unsigned kMaxShift = 40 - LatencyHistogram::kSubBucketBits;
constexpr std::size_t kBucketCount = (kMaxShift + 2) * kSubBuckets;
}  // namespace

LatencyHistogram::LatencyHistogram() : buckets_(kBucketCount, 0) {}

// Values below 2048 map to themselves. Above, a value with its top bit at
// position e keeps its 11 leading bits: bucket = shift*1024 + (value >> shift)
// with shift = e - 10, which continues the exact range without holes.
std::size_t LatencyHistogram::index_of(std::uint64_t value) {
  if (value < kExactLimit) return static_cast<std::size_t>(value);
  unsigned top_bit = 63u - static_cast<unsigned>(std::countl_zero(value));
  unsigned shift = top_bit - kSubBucketBits;
  return static_cast<std::size_t>(shift * kSubBuckets + (value >> shift));
}

std::uint64_t LatencyHistogram::highest_in_bucket(std::size_t index) {
  if (index < kExactLimit) return index;
  std::uint64_t shift = index / kSubBuckets - 1;
  std::uint64_t top = index - shift * kSubBuckets;
  return ((top + 1) << shift) - 1;
}

void LatencyHistogram::record(std::uint64_t nanoseconds) {
  std::uint64_t value = std::min(nanoseconds, kMaxValue);
  ++buckets_[index_of(value)];
  if (count_ == 0 || value < min_) min_ = value;
  max_ = std::max(max_, value);
  sum_ += value;
  ++count_;
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
  count_ += other.count_;
}

std::uint64_t LatencyHistogram::percentile(double percent) const {
  if (count_ == 0) return 0;
  if (percent >= 100.0) return max_;
  // The small subtraction keeps binary rounding (0.999 * 1000 = 999.0000000000001)
  // from moving the rank up by one.
  double wanted = std::ceil(std::max(percent, 0.0) / 100.0 * static_cast<double>(count_) - 1e-7);
  auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(wanted));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(highest_in_bucket(i), min_, max_);
  }
  return max_;
}

DeliveryTracker::Outcome DeliveryTracker::record(std::uint32_t publisher, std::uint64_t counter) {
  if (publisher >= publishers_.size()) publishers_.resize(publisher + 1);
  PerPublisher& from = publishers_[publisher];
  counter = std::min(counter, kMaxCounter);
  std::size_t word = static_cast<std::size_t>(counter / 64);
  std::uint64_t bit = std::uint64_t{1} << (counter % 64);
  if (word >= from.seen.size()) from.seen.resize(std::max<std::size_t>(word + 1, from.seen.size() * 2), 0);
  if ((from.seen[word] & bit) != 0) return Outcome::duplicate;
  from.seen[word] |= bit;
  auto signed_counter = static_cast<std::int64_t>(counter);
  if (signed_counter < from.highest) {
    ++reordered_;
  } else {
    from.highest = signed_counter;
  }
  return Outcome::first;
}

void SeqChecker::record(std::int64_t seq) {
  if (seq < expected_) {
    ++regressions_;
    return;
  }
  gaps_ += static_cast<std::uint64_t>(seq - expected_);
  expected_ = seq + 1;
}

}  // namespace rtmc::bench
