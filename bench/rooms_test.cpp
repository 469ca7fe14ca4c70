// The many-rooms scenario's room assignment: every room gets its members,
// on `spread` gateways, and no connection joins a room twice.

#include "rooms.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace rtmc::bench {
namespace {

// Members on each of a room's gateways differ by at most one.
void check(int gateways, int connections, int per_connection, int rooms, int spread) {
  SCOPED_TRACE(testing::Message() << gateways << " gateways, spread " << spread);
  std::map<int, int> members;
  std::map<int, std::set<int>> gateways_of;
  std::map<std::pair<int, int>, int> on_gateway;  // (room, gateway) -> members
  for (int g = 0; g < gateways; ++g)
    for (int c = 0; c < connections; ++c) {
      auto mine = rooms_of_connection(g, c, gateways, connections, per_connection, rooms, spread);
      ASSERT_EQ(mine.size(), static_cast<std::size_t>(per_connection));
      ASSERT_EQ(std::set<int>(mine.begin(), mine.end()).size(), mine.size()) << "a room twice";
      for (int room : mine) {
        ++members[room];
        gateways_of[room].insert(g);
        ++on_gateway[{room, g}];
      }
    }
  ASSERT_EQ(members.size(), static_cast<std::size_t>(rooms));
  const int expected = gateways * connections * per_connection / rooms;
  for (const auto& [room, count] : members) {
    ASSERT_EQ(count, expected) << "room " << room;
    ASSERT_EQ(gateways_of[room].size(), static_cast<std::size_t>(spread)) << "room " << room;
  }
  for (const auto& [key, count] : on_gateway) {
    ASSERT_GE(count, expected / spread) << "room " << key.first;
    ASSERT_LE(count, (expected + spread - 1) / spread) << "room " << key.first;
  }
}

TEST(RoomsOfConnection, TheIssuesShapeOnTwoAndOnAllGateways) {
  check(4, 2500, 10, 10000, 2);
  check(4, 2500, 10, 10000, 4);
  check(4, 2500, 10, 10000, 1);
  check(4, 2500, 10, 10000, 3);
}

TEST(RoomsOfConnection, SmallerShapesAndBadNumbers) {
  check(2, 100, 5, 100, 2);
  check(3, 30, 3, 30, 3);
  EXPECT_THROW(rooms_of_connection(0, 0, 4, 2500, 10, 9999, 2), std::invalid_argument);
  EXPECT_THROW(rooms_of_connection(0, 0, 4, 2500, 10, 10000, 5), std::invalid_argument);
}

}  // namespace
}  // namespace rtmc::bench
