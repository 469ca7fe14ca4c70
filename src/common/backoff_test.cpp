#include "common/backoff.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <set>
#include <thread>

namespace rtmc {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, DelaysDoubleFromTheInitialCeilingUpToTheCap) {
  Backoff backoff({milliseconds(100), milliseconds(1000)}, 1);
  const milliseconds ceilings[] = {milliseconds(100), milliseconds(200),  milliseconds(400),
                                   milliseconds(800), milliseconds(1000), milliseconds(1000)};
  for (auto ceiling : ceilings) {
    EXPECT_EQ(backoff.ceiling(backoff.failures()), ceiling);
    const auto delay = backoff.next();
    EXPECT_GE(delay, ceiling / 2);
    EXPECT_LE(delay, ceiling);
  }
  EXPECT_EQ(backoff.failures(), 6u);
}

TEST(Backoff, ResetStartsOverAtTheInitialCeiling) {
  Backoff backoff({milliseconds(100), milliseconds(5000)}, 2);
  for (int i = 0; i < 10; ++i) backoff.next();
  EXPECT_EQ(backoff.ceiling(backoff.failures()), milliseconds(5000));
  backoff.reset();
  EXPECT_EQ(backoff.failures(), 0u);
  EXPECT_LE(backoff.next(), milliseconds(100));
}

TEST(Backoff, ManyFailuresNeitherOverflowNorPassTheCap) {
  Backoff backoff({milliseconds(100), milliseconds(5000)}, 3);
  EXPECT_EQ(backoff.ceiling(1000), milliseconds(5000));
  EXPECT_EQ(backoff.ceiling(std::numeric_limits<std::size_t>::max()), milliseconds(5000));
  EXPECT_LE(backoff.delay_after(1000), milliseconds(5000));
}

// Processes that lost the same server must not come back in lockstep.
TEST(Backoff, DelaysAreJitteredOverTheUpperHalf) {
  Backoff backoff({milliseconds(1000), milliseconds(1000)}, 4);
  std::set<milliseconds::rep> seen;
  for (int i = 0; i < 200; ++i) {
    const auto delay = backoff.delay_after(0);
    ASSERT_GE(delay, milliseconds(500));
    ASSERT_LE(delay, milliseconds(1000));
    seen.insert(delay.count());
  }
  EXPECT_GT(seen.size(), 50u);
  EXPECT_LT(*seen.begin(), 600);
  EXPECT_GT(*seen.rbegin(), 900);
}

TEST(Backoff, DelayAfterDoesNotCountAFailure) {
  Backoff backoff({milliseconds(100), milliseconds(5000)}, 5);
  EXPECT_GE(backoff.delay_after(3), milliseconds(400));
  EXPECT_EQ(backoff.failures(), 0u);
}

TEST(Backoff, ASleepEndsWhenTheStopFlagIsSet) {
  std::atomic<bool> stop{false};
  Backoff backoff({milliseconds(600000), milliseconds(600000)}, 6);
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(50));
    stop = true;
  });
  EXPECT_FALSE(backoff.sleep(stop));  // would be five minutes or more otherwise
  stopper.join();
}

TEST(Backoff, ASleepThatIsNotStoppedReportsCompletion) {
  std::atomic<bool> stop{false};
  EXPECT_TRUE(sleep_unless_stopped(milliseconds(1), stop));
  stop = true;
  EXPECT_FALSE(sleep_unless_stopped(milliseconds(1), stop));
}

}  // namespace
}  // namespace rtmc
