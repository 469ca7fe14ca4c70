#include "gateway/connection_index.hpp"

#include <gtest/gtest.h>

namespace rtmc::gateway {
namespace {

struct Dummy {};

// Defect: a close walked every room of the io thread.
TEST(ConnectionIndex, RemovalCostsTheConnectionsRoomsOnly) {
  BasicConnectionIndex<Dummy> index;
  auto busy = std::make_shared<Dummy>();
  index.add(busy);
  for (int i = 0; i < 1000; ++i) index.join("room" + std::to_string(i), busy);
  auto leaving = std::make_shared<Dummy>();
  index.add(leaving);
  index.join("room1", leaving);
  index.join("own", leaving);
  const auto before = index.room_lookups();
  index.remove(leaving.get(), {"room1", "own"});
  EXPECT_EQ(index.room_lookups() - before, 2u);
  EXPECT_EQ(index.members("own"), nullptr);
  ASSERT_NE(index.members("room1"), nullptr);
  EXPECT_EQ(index.members("room1")->size(), 1u);
  EXPECT_EQ(index.room_count(), 1000u);
  EXPECT_EQ(index.connections().size(), 1u);
}

TEST(ConnectionIndex, JoinLeave) {
  BasicConnectionIndex<Dummy> index;
  auto a = std::make_shared<Dummy>();
  index.join("r", a);
  index.join("r", a);
  EXPECT_EQ(index.members("r")->size(), 1u);
  index.leave("r", a.get());
  EXPECT_EQ(index.members("r"), nullptr);
  index.leave("r", a.get());
}

// The fan-out binds a room when its first local member joins and unbinds it
// when the last one goes: the observer hears exactly those edges.
TEST(ConnectionIndex, ObserverHearsFirstAndLastMemberOfARoom) {
  std::vector<std::pair<std::string, bool>> heard;
  BasicConnectionIndex<Dummy> index(
      [&](const std::string& room, bool occupied) { heard.emplace_back(room, occupied); });
  auto a = std::make_shared<Dummy>();
  auto b = std::make_shared<Dummy>();
  index.add(a);
  index.add(b);
  index.join("r", a);
  index.join("r", b);
  index.join("r", a);
  index.join("s", b);
  index.leave("r", a.get());
  index.leave("x", a.get());
  EXPECT_EQ(heard, (std::vector<std::pair<std::string, bool>>{{"r", true}, {"s", true}}));
  index.remove(b.get(), {"r", "s"});
  EXPECT_EQ(heard, (std::vector<std::pair<std::string, bool>>{
                       {"r", true}, {"s", true}, {"r", false}, {"s", false}}));
}

}  // namespace
}  // namespace rtmc::gateway
