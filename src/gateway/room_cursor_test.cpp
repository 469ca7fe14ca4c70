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

TEST(RoomCursors, ForgetDropsTheRoom) {
  RoomCursors cursors;
  cursors.seed("r", 4);
  EXPECT_EQ(cursors.last("r"), 4);
  cursors.forget("r");
  EXPECT_FALSE(cursors.contains("r"));
  EXPECT_EQ(cursors.last("r"), std::nullopt);
  EXPECT_TRUE(cursors.all().empty());
}

LocalRooms::Change find(const std::vector<LocalRooms::Change>& changes, const std::string& room) {
  for (const auto& change : changes)
    if (change.room == room) return change;
  ADD_FAILURE() << "no change for " << room;
  return {};
}

TEST(LocalRooms, TakeReportsTouchedRoomsWithTheirStateNow) {
  LocalRooms rooms;
  rooms.occupied("a");  // io thread 1
  rooms.occupied("a");  // io thread 2
  rooms.joined("a", 7);
  rooms.joined("a", 5);
  rooms.occupied("b");
  auto changes = rooms.take();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(find(changes, "a").has_members);
  EXPECT_EQ(find(changes, "a").joined, 5) << "the lowest start wins";
  EXPECT_TRUE(find(changes, "b").has_members);
  EXPECT_EQ(find(changes, "b").joined, std::nullopt) << "its join has not answered yet";
  EXPECT_TRUE(rooms.take().empty());
  EXPECT_EQ(rooms.size(), 2u);

  rooms.vacated("a");
  changes = rooms.take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].has_members) << "still a member on the other io thread";
  rooms.vacated("a");
  changes = rooms.take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].has_members);
  EXPECT_EQ(rooms.size(), 1u);
}

TEST(LocalRooms, AJoinWhoseRoomWasLeftBeforeTheTakeIsNoMember) {
  LocalRooms rooms;
  rooms.occupied("r");
  rooms.vacated("r");
  rooms.joined("r", 3);  // the join's reply raced with its own leave
  auto changes = rooms.take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].has_members);
  EXPECT_EQ(changes[0].joined, std::nullopt);
  EXPECT_EQ(rooms.size(), 0u);
}

TEST(LocalRooms, AJoinsWaiterTravelsWithItsRoom) {
  LocalRooms rooms;
  int called = 0;
  rooms.occupied("r");
  rooms.joined("r", 2, [&] { ++called; });
  rooms.joined("r", 4, [&] { called += 10; });
  auto changes = rooms.take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].joined, 2);
  ASSERT_EQ(changes[0].waiting.size(), 2u);
  for (auto& bound : changes[0].waiting) bound();
  EXPECT_EQ(called, 11);
  EXPECT_TRUE(rooms.take().empty());
}

TEST(RoomBindings, BindsInOrderInBatchesAndUnbindsOnlyWhatIsBound) {
  RoomBindings bindings;
  for (const char* room : {"a", "b", "c"}) bindings.want(room);
  bindings.want("a");
  EXPECT_EQ(bindings.pending_count(), 3u);
  EXPECT_TRUE(bindings.bind_pending("a"));
  auto first = bindings.next_binds(2);
  EXPECT_EQ(first, (std::vector<std::string>{"a", "b"}));
  bindings.bound(first);
  EXPECT_TRUE(bindings.is_bound("a"));
  bindings.drop("c");  // left before its bind: nothing to unbind
  bindings.drop("b");
  EXPECT_TRUE(bindings.next_binds(10).empty());
  EXPECT_EQ(bindings.next_unbinds(10), std::vector<std::string>{"b"});
  EXPECT_FALSE(bindings.is_bound("b"));
  EXPECT_EQ(bindings.bound_count(), 1u);
  EXPECT_FALSE(bindings.busy());
}

TEST(RoomBindings, WantCancelsAPendingUnbindAndRebinds) {
  RoomBindings bindings;
  bindings.want("r");
  bindings.bound(bindings.next_binds(10));
  bindings.drop("r");
  bindings.want("r");
  EXPECT_TRUE(bindings.next_unbinds(10).empty());
  EXPECT_EQ(bindings.next_binds(10), std::vector<std::string>{"r"}) << "bound again, then caught up";
}

TEST(RoomBindings, ResetRebindsOnlyWantedRooms) {
  RoomBindings bindings;
  for (const char* room : {"a", "b"}) bindings.want(room);
  bindings.bound(bindings.next_binds(10));
  bindings.drop("b");
  bindings.reset(std::vector<std::string>{"a"});
  EXPECT_EQ(bindings.bound_count(), 0u);
  EXPECT_TRUE(bindings.next_unbinds(10).empty()) << "a new queue has no binding to remove";
  EXPECT_EQ(bindings.next_binds(10), std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace rtmc::gateway
