// The C++ side of the rate-limit arithmetic (the bucket itself is a Lua
// script, tested against Redis in stores_itest.cpp).
#include <gtest/gtest.h>

#include "store/rate_limits.hpp"

namespace rtmc::store {
namespace {

using namespace std::chrono_literals;

TEST(Rate, FromPerSecondAndPerMinute) {
  auto register_rate = Rate::per_second(20, 50);
  EXPECT_TRUE(register_rate.limited());
  EXPECT_EQ(register_rate.burst, 50u);
  EXPECT_EQ(register_rate.interval, 50ms);
  auto login_rate = Rate::per_minute(10, 10);
  EXPECT_EQ(login_rate.interval, 6s);
  EXPECT_EQ(Rate::per_second(3, 1).interval, 333333us);
  EXPECT_EQ(Rate::per_second(1e9, 1).interval, 1us);  // never 0
}

TEST(Rate, ZeroRateOrBurstIsNoLimit) {
  EXPECT_FALSE(Rate{}.limited());
  EXPECT_FALSE(Rate::per_second(0, 10).limited());
  EXPECT_FALSE(Rate::per_second(-1, 10).limited());
  EXPECT_FALSE(Rate::per_minute(10, 0).limited());
}

// --publish-rate / --publish-burst, read the same way by api and gateway.
TEST(Rate, MessagesRateDefaultsItsBurstToOneSecondsWorth) {
  EXPECT_EQ(messages_rate(2.5, 0).burst, 3u);
  EXPECT_EQ(messages_rate(0.2, 0).burst, 1u);
  EXPECT_EQ(messages_rate(10, 4).burst, 4u);
  EXPECT_EQ(messages_rate(10, 4).interval, 100ms);
  EXPECT_FALSE(messages_rate(0, 0).limited());
  EXPECT_FALSE(messages_rate(0, 5).limited());
}

TEST(Rate, RetryAfterIsWholeSecondsRoundedUpAtLeastOne) {
  EXPECT_EQ(retry_after_seconds(0us), 1);
  EXPECT_EQ(retry_after_seconds(1us), 1);
  EXPECT_EQ(retry_after_seconds(1s), 1);
  EXPECT_EQ(retry_after_seconds(1s + 1us), 2);
  EXPECT_EQ(retry_after_seconds(59500ms), 60);
}

}  // namespace
}  // namespace rtmc::store
