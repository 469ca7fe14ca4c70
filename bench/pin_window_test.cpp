#include <gtest/gtest.h>

#include "pin.hpp"
#include "window.hpp"

namespace rtmc::bench {
namespace {

TEST(PinTest, ParentOfStatSkipsACommandNameWithSpacesAndParentheses) {
  EXPECT_EQ(parent_of_stat("4242 (postgres) S 4100 4242 4242 0 -1"), 4100);
  EXPECT_EQ(parent_of_stat("77 (a b) c)) R 1 77 77"), 1);
  EXPECT_EQ(parent_of_stat("garbage"), std::nullopt);
  EXPECT_EQ(parent_of_stat("5 (x) S"), std::nullopt);
}

TEST(PinTest, WithDescendantsFindsGrandchildrenOnceAndRootsFirst) {
  // 10 -> 11 -> 12, 10 -> 13, 20 alone, 30 -> 31 unrelated.
  std::vector<std::pair<pid_t, pid_t>> parents{{11, 10}, {12, 11}, {13, 10}, {31, 30}, {10, 1}, {20, 1}};
  EXPECT_EQ(with_descendants({10, 20}, parents), (std::vector<pid_t>{10, 20, 11, 13, 12}));
  EXPECT_EQ(with_descendants({11, 11}, parents), (std::vector<pid_t>{11, 12}));
  EXPECT_EQ(with_descendants({}, parents), (std::vector<pid_t>{}));
}

TEST(PinTest, ParseCpuList) {
  EXPECT_EQ(parse_cpu_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_cpu_list("1,3"), (std::vector<int>{1, 3}));
  EXPECT_THROW(parse_cpu_list(""), std::invalid_argument);
  EXPECT_THROW(parse_cpu_list("x"), std::invalid_argument);
  EXPECT_THROW(parse_cpu_list("-1"), std::invalid_argument);
}

TEST(SendWindowTest, RoomShrinksWithSendsAndGrowsWithAnswers) {
  SendWindow window(32);
  EXPECT_EQ(window.room(), 32u);
  window.sent(32);
  EXPECT_EQ(window.room(), 0u);
  window.settled();
  window.settled();
  EXPECT_EQ(window.room(), 2u);
  EXPECT_EQ(window.in_flight(), 30u);
}

TEST(SendWindowTest, StrayAnswersNeverOpenMoreThanTheLimit) {
  SendWindow window(4);
  window.settled();
  EXPECT_EQ(window.in_flight(), 0u);
  EXPECT_EQ(window.room(), 4u);
  window.sent(3);
  for (int i = 0; i < 10; ++i) window.settled();
  EXPECT_EQ(window.room(), 4u);
}

TEST(SendWindowTest, ZeroLimitHasNoRoom) {
  SendWindow window;
  EXPECT_EQ(window.room(), 0u);
}

}  // namespace
}  // namespace rtmc::bench
