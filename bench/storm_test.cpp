#include "storm.hpp"

#include <gtest/gtest.h>

namespace rtmc::bench {
namespace {

TEST(StormPlan, SplitKeepsEveryProcessUnderItsShareAndCoversAllClients) {
  EXPECT_TRUE(split_clients(0, 15000).empty());
  EXPECT_EQ(split_clients(1000, 15000), (std::vector<std::pair<int, int>>{{0, 1000}}));
  EXPECT_EQ(split_clients(15000, 15000).size(), 1u);
  auto ranges = split_clients(40001, 15000);
  ASSERT_EQ(ranges.size(), 3u);
  int expected_begin = 0;
  for (const auto& [begin, end] : ranges) {
    EXPECT_EQ(begin, expected_begin);
    EXPECT_LE(end - begin, 15000);
    EXPECT_GE(end - begin, 13333);
    expected_begin = end;
  }
  EXPECT_EQ(expected_begin, 40001);
}

TEST(StormPlan, ClientsAreDueEvenlyOverTheSpread) {
  EXPECT_EQ(start_offset_ns(0, 1000, 1.0), 0);
  EXPECT_EQ(start_offset_ns(500, 1000, 1.0), 500'000'000);
  EXPECT_EQ(start_offset_ns(999, 1000, 1.0), 999'000'000);
  EXPECT_EQ(start_offset_ns(7, 10, 0.0), 0);
}

TEST(StormPlan, ReferenceIsOneFramePerPairOfUsers) {
  EXPECT_EQ(reference_presence_joins(0), 0u);
  EXPECT_EQ(reference_presence_joins(1), 0u);
  EXPECT_EQ(reference_presence_joins(2), 1u);
  EXPECT_EQ(reference_presence_joins(1000), 499'500u);
}

StormTally sample(std::uint64_t clients, std::int64_t start, std::int64_t last_joined, std::string error) {
  StormTally tally;
  tally.clients = clients;
  tally.joined = clients - 1;
  tally.failed = 1;
  tally.dropped = 2;
  tally.presence_joins = 100 * clients;
  tally.presence_leaves = 3;
  tally.server_errors = 4;
  tally.start_ns = start;
  tally.last_joined_ns = last_joined;
  tally.last_presence_ns = last_joined + 5;
  tally.join_latency_max_ns = static_cast<std::int64_t>(clients) * 1000;
  tally.join_latency_sum_ns = 77;
  tally.first_error = std::move(error);
  return tally;
}

TEST(StormTally, SurvivesThePipeFormat) {
  StormTally tally = sample(10, 123456789, 2'000'000'000, "join: unavailable: try\nagain");
  auto back = StormTally::from_line(tally.to_line());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->clients, 10u);
  EXPECT_EQ(back->joined, 9u);
  EXPECT_EQ(back->failed, 1u);
  EXPECT_EQ(back->dropped, 2u);
  EXPECT_EQ(back->presence_joins, 1000u);
  EXPECT_EQ(back->presence_leaves, 3u);
  EXPECT_EQ(back->server_errors, 4u);
  EXPECT_EQ(back->start_ns, 123456789);
  EXPECT_EQ(back->last_joined_ns, 2'000'000'000);
  EXPECT_EQ(back->last_presence_ns, 2'000'000'005);
  EXPECT_EQ(back->join_latency_max_ns, 10'000);
  EXPECT_EQ(back->join_latency_sum_ns, 77);
  EXPECT_EQ(back->first_error, "join: unavailable: try again");
  EXPECT_EQ(StormTally::from_line(sample(1, 0, 0, "").to_line())->first_error, "");
  EXPECT_FALSE(StormTally::from_line("1 2 3"));
  EXPECT_FALSE(StormTally::from_line(""));
}

TEST(StormTally, MergeAddsCountsAndKeepsTheLatestTimes) {
  StormTally total;
  total.merge(sample(10, 500, 3000, ""));
  total.merge(sample(20, 500, 2000, "second"));
  total.merge(StormTally{});  // a process with no clients changes nothing
  EXPECT_EQ(total.clients, 30u);
  EXPECT_EQ(total.joined, 28u);
  EXPECT_EQ(total.presence_joins, 3000u);
  EXPECT_EQ(total.start_ns, 500);
  EXPECT_EQ(total.last_joined_ns, 3000);
  EXPECT_EQ(total.last_presence_ns, 3005);
  EXPECT_EQ(total.join_latency_max_ns, 20'000);
  EXPECT_EQ(total.join_latency_sum_ns, 154);
  EXPECT_EQ(total.first_error, "second");
}

TEST(StormSummary, TimesAreFromTheStartAndTheRateOverThem) {
  StormTally tally;
  tally.clients = tally.joined = 4;
  tally.start_ns = 1'000'000'000;
  tally.last_joined_ns = 2'500'000'000;
  tally.last_presence_ns = 3'000'000'000;
  tally.presence_joins = 6;
  tally.presence_leaves = 2;
  tally.join_latency_sum_ns = 8'000'000;
  tally.join_latency_max_ns = 5'000'000;
  StormSummary summary = summarize(tally);
  EXPECT_DOUBLE_EQ(summary.all_joined_s, 1.5);
  EXPECT_DOUBLE_EQ(summary.last_presence_s, 2.0);
  EXPECT_DOUBLE_EQ(summary.presence_per_s, 4.0);
  EXPECT_DOUBLE_EQ(summary.mean_join_latency_ms, 2.0);
  EXPECT_DOUBLE_EQ(summary.max_join_latency_ms, 5.0);
  EXPECT_DOUBLE_EQ(summarize(StormTally{}).presence_per_s, 0.0);
}

}  // namespace
}  // namespace rtmc::bench
