#include "conns.hpp"

#include <gtest/gtest.h>

namespace rtmc::bench {
namespace {

TEST(ConnsTest, SourceAddressRangesAndLists) {
  EXPECT_TRUE(parse_source_addresses("").empty());
  EXPECT_EQ(parse_source_addresses("127.0.0.2-127.0.0.4"),
            (std::vector<std::string>{"127.0.0.2", "127.0.0.3", "127.0.0.4"}));
  EXPECT_EQ(parse_source_addresses("127.0.0.9,127.0.0.2-127.0.0.3"),
            (std::vector<std::string>{"127.0.0.9", "127.0.0.2", "127.0.0.3"}));
  EXPECT_THROW(parse_source_addresses("127.0.0.5-127.0.0.2"), std::invalid_argument);
  EXPECT_THROW(parse_source_addresses("127.0.0.5-127.0.1.2"), std::invalid_argument);
  EXPECT_THROW(parse_source_addresses("localhost"), std::invalid_argument);
}

TEST(ConnsTest, TallyRoundTripsThroughItsPipeLine) {
  ConnsTally tally;
  tally.clients = 19000;
  tally.authenticated = 18990;
  tally.failed = 10;
  tally.dropped = 2;
  tally.retries = 7;
  tally.start_ns = 1'000'000'000;
  tally.last_auth_ns = 4'500'000'000;
  tally.handshake_max_ns = 70'000'000;
  tally.handshake_sum_ns = 123456789;
  tally.first_error = "auth refused: unauthorized: session\nended";
  auto back = ConnsTally::from_line(tally.to_line());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->clients, 19000u);
  EXPECT_EQ(back->authenticated, 18990u);
  EXPECT_EQ(back->failed, 10u);
  EXPECT_EQ(back->dropped, 2u);
  EXPECT_EQ(back->retries, 7u);
  EXPECT_EQ(back->last_auth_ns, 4'500'000'000);
  EXPECT_EQ(back->handshake_sum_ns, 123456789);
  EXPECT_EQ(back->first_error, "auth refused: unauthorized: session ended");
  EXPECT_DOUBLE_EQ(back->storm_s(), 3.5);
  EXPECT_FALSE(ConnsTally::from_line("12 x"));
}

TEST(ConnsTest, MergeSumsCountsAndKeepsTheExtremes) {
  ConnsTally a;
  a.clients = 10;
  a.authenticated = 10;
  a.start_ns = 100;
  a.last_auth_ns = 900;
  a.handshake_max_ns = 50;
  a.handshake_sum_ns = 200;
  ConnsTally b = a;
  b.authenticated = 8;
  b.failed = 2;
  b.last_auth_ns = 1500;
  b.handshake_max_ns = 70;
  b.retries = 3;
  b.first_error = "connection refused";
  ConnsTally total;
  total.merge(a);
  total.merge(b);
  EXPECT_EQ(total.clients, 20u);
  EXPECT_EQ(total.authenticated, 18u);
  EXPECT_EQ(total.failed, 2u);
  EXPECT_EQ(total.retries, 3u);
  EXPECT_EQ(total.start_ns, 100);
  EXPECT_EQ(total.last_auth_ns, 1500);
  EXPECT_EQ(total.handshake_max_ns, 70);
  EXPECT_EQ(total.handshake_sum_ns, 400);
  EXPECT_EQ(total.first_error, "connection refused");
}

TEST(ConnsTest, StormWithoutAuthenticationHasNoDuration) {
  ConnsTally tally;
  tally.start_ns = 100;
  tally.last_auth_ns = 0;
  EXPECT_EQ(tally.storm_s(), 0.0);
}

TEST(ConnsTest, KibPerConnection) {
  EXPECT_DOUBLE_EQ(kib_per_connection(10'000, 86'000, 19'000), 4.0);
  EXPECT_DOUBLE_EQ(kib_per_connection(10'000, 9'000, 1'000), -1.0);
  EXPECT_EQ(kib_per_connection(1, 2, 0), 0.0);
}

}  // namespace
}  // namespace rtmc::bench
