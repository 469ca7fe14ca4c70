#include "gateway/room_cursor.hpp"

#include <gtest/gtest.h>

namespace rtmc::gateway {
namespace {

using Kind = RoomCursors::Decision::Kind;

TEST(RoomCursors, FirstSightDeliversThenInOrder) {
  RoomCursors cursors;
  EXPECT_EQ(cursors.on_arrival("r", 7).kind, Kind::deliver);
  cursors.delivered("r", 7);
  EXPECT_EQ(cursors.on_arrival("r", 8).kind, Kind::deliver);
}

TEST(RoomCursors, DropsRepeatsAndOlder) {
  RoomCursors cursors;
  cursors.delivered("r", 5);
  EXPECT_EQ(cursors.on_arrival("r", 5).kind, Kind::duplicate);
  EXPECT_EQ(cursors.on_arrival("r", 2).kind, Kind::duplicate);
}

TEST(RoomCursors, AsksForTheMissingRange) {
  RoomCursors cursors;
  cursors.delivered("r", 5);
  auto decision = cursors.on_arrival("r", 9);
  EXPECT_EQ(decision.kind, Kind::fill_gap);
  EXPECT_EQ(decision.gap_from, 6);
  EXPECT_EQ(decision.gap_to, 8);
}

TEST(RoomCursors, RoomsAreIndependentAndNeverGoBack) {
  RoomCursors cursors;
  cursors.delivered("a", 3);
  cursors.delivered("a", 1);
  EXPECT_EQ(cursors.on_arrival("b", 1).kind, Kind::deliver);
  EXPECT_EQ(cursors.on_arrival("a", 4).kind, Kind::deliver);
  EXPECT_EQ(cursors.all().at("a"), 3);
}

}  // namespace
}  // namespace rtmc::gateway

namespace rtmc::gateway {
namespace {

TEST(RoomCursors, SeedFromAJoinMakesTheFirstFrameFillTheGap) {
  RoomCursors cursors;
  cursors.seed("r", 0);
  auto decision = cursors.on_arrival("r", 4);
  EXPECT_EQ(decision.kind, Kind::fill_gap);
  EXPECT_EQ(decision.gap_from, 1);
  EXPECT_EQ(decision.gap_to, 3);
}

TEST(RoomCursors, SeedNeverMovesAKnownRoom) {
  RoomCursors cursors;
  cursors.delivered("r", 2);
  cursors.seed("r", 9);
  EXPECT_EQ(cursors.on_arrival("r", 3).kind, Kind::deliver);
}

TEST(RoomSeeds, TakeEmptiesTheList) {
  RoomSeeds seeds;
  seeds.add("a", 1);
  seeds.add("b", 2);
  auto taken = seeds.take();
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[1].first, "b");
  EXPECT_TRUE(seeds.take().empty());
}

}  // namespace
}  // namespace rtmc::gateway
