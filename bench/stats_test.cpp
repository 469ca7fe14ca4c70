#include "stats.hpp"

#include <gtest/gtest.h>

#include <cstdint>

namespace rtmc::bench {
namespace {

TEST(LatencyHistogram, EmptyReportsZero) {
  LatencyHistogram histogram;
  EXPECT_EQ(histogram.count(), 0u);
  EXPECT_EQ(histogram.percentile(50), 0u);
  EXPECT_EQ(histogram.percentile(100), 0u);
  EXPECT_EQ(histogram.min(), 0u);
  EXPECT_EQ(histogram.mean(), 0.0);
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram histogram;
  for (std::uint64_t v = 1; v <= 1000; ++v) histogram.record(v);
  EXPECT_EQ(histogram.count(), 1000u);
  EXPECT_EQ(histogram.min(), 1u);
  EXPECT_EQ(histogram.max(), 1000u);
  EXPECT_DOUBLE_EQ(histogram.mean(), 500.5);
  EXPECT_EQ(histogram.percentile(50), 500u);
  EXPECT_EQ(histogram.percentile(99), 990u);
  EXPECT_EQ(histogram.percentile(99.9), 999u);
  EXPECT_EQ(histogram.percentile(100), 1000u);
  EXPECT_EQ(histogram.percentile(0), 1u);
}

TEST(LatencyHistogram, LargeValuesWithinOneThousandth) {
  LatencyHistogram histogram;
  // 1 us .. 100 ms in 1 us steps, in shuffled-ish order.
  for (std::uint64_t i = 0; i < 100000; ++i) histogram.record(((i * 7919) % 100000 + 1) * 1000);
  auto near = [](std::uint64_t got, double want) {
    return std::abs(static_cast<double>(got) - want) <= want * 0.001;
  };
  EXPECT_TRUE(near(histogram.percentile(50), 50'000'000)) << histogram.percentile(50);
  EXPECT_TRUE(near(histogram.percentile(99), 99'000'000)) << histogram.percentile(99);
  EXPECT_TRUE(near(histogram.percentile(99.9), 99'900'000)) << histogram.percentile(99.9);
  EXPECT_EQ(histogram.percentile(100), 100'000'000u);
  EXPECT_EQ(histogram.min(), 1000u);
}

TEST(LatencyHistogram, TailPercentilesSeeOutliers) {
  LatencyHistogram histogram;
  for (int i = 0; i < 990; ++i) histogram.record(1'000'000);   // 1 ms
  for (int i = 0; i < 10; ++i) histogram.record(100'000'000);  // 100 ms
  EXPECT_NEAR(static_cast<double>(histogram.percentile(99)), 1e6, 1e3);
  EXPECT_NEAR(static_cast<double>(histogram.percentile(99.9)), 1e8, 1e5);
  EXPECT_EQ(histogram.max(), 100'000'000u);
}

TEST(LatencyHistogram, SingleValueIsReportedExactly) {
  LatencyHistogram histogram;
  histogram.record(123'456'789);
  EXPECT_EQ(histogram.percentile(1), 123'456'789u);
  EXPECT_EQ(histogram.percentile(50), 123'456'789u);
  EXPECT_EQ(histogram.percentile(99.99), 123'456'789u);
}

TEST(LatencyHistogram, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram a;
  LatencyHistogram b;
  LatencyHistogram all;
  for (std::uint64_t v = 1; v <= 5000; ++v) {
    (v % 3 == 0 ? a : b).record(v * 997);
    all.record(v * 997);
  }
  LatencyHistogram empty;
  a.merge(empty);
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {1.0, 25.0, 50.0, 90.0, 99.0, 99.9}) EXPECT_EQ(a.percentile(p), all.percentile(p)) << p;
  empty.merge(all);
  EXPECT_EQ(empty.percentile(50), all.percentile(50));
  EXPECT_EQ(empty.min(), all.min());
}

TEST(LatencyHistogram, HugeValuesAreClamped) {
  LatencyHistogram histogram;
  histogram.record(UINT64_MAX);
  EXPECT_EQ(histogram.max(), LatencyHistogram::kMaxValue);
  EXPECT_EQ(histogram.percentile(50), LatencyHistogram::kMaxValue);
}

TEST(DeliveryTracker, FindsDuplicatesPerPublisher) {
  DeliveryTracker tracker;
  EXPECT_EQ(tracker.record(0, 0), DeliveryTracker::Outcome::first);
  EXPECT_EQ(tracker.record(0, 1), DeliveryTracker::Outcome::first);
  EXPECT_EQ(tracker.record(1, 0), DeliveryTracker::Outcome::first);  // other publisher, same counter
  EXPECT_EQ(tracker.record(0, 0), DeliveryTracker::Outcome::duplicate);
  EXPECT_EQ(tracker.record(1, 0), DeliveryTracker::Outcome::duplicate);
  EXPECT_EQ(tracker.record(7, 100000), DeliveryTracker::Outcome::first);
  EXPECT_EQ(tracker.record(7, 100000), DeliveryTracker::Outcome::duplicate);
  EXPECT_EQ(tracker.reordered(), 0u);
}

TEST(DeliveryTracker, CountsOutOfOrderArrivals) {
  DeliveryTracker tracker;
  tracker.record(0, 0);
  tracker.record(0, 2);
  EXPECT_EQ(tracker.record(0, 1), DeliveryTracker::Outcome::first);  // late, but not a duplicate
  EXPECT_EQ(tracker.reordered(), 1u);
  tracker.record(0, 3);
  EXPECT_EQ(tracker.reordered(), 1u);
}

TEST(SeqChecker, ContinuousSeqsAfterJoinAreClean) {
  SeqChecker checker;
  checker.start(5);
  for (std::int64_t seq = 6; seq <= 100; ++seq) checker.record(seq);
  EXPECT_EQ(checker.gaps(), 0u);
  EXPECT_EQ(checker.regressions(), 0u);
}

TEST(SeqChecker, CountsSkippedAndRepeatedSeqs) {
  SeqChecker checker;
  checker.start(0);
  checker.record(1);
  checker.record(4);  // 2 and 3 missing
  EXPECT_EQ(checker.gaps(), 2u);
  checker.record(4);  // repeat
  checker.record(3);  // late
  EXPECT_EQ(checker.regressions(), 2u);
  checker.record(5);
  EXPECT_EQ(checker.gaps(), 2u);
}

TEST(SeqChecker, FirstMessageMustFollowTheJoinSeq) {
  SeqChecker checker;
  checker.start(10);
  checker.record(13);
  EXPECT_EQ(checker.gaps(), 2u);
}

}  // namespace
}  // namespace rtmc::bench
