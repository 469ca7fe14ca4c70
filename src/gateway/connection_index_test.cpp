#include "gateway/connection_index.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

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

// Members live in a dense array (delivery walks it); removal moves the last
// member into the hole, so every member stays removable and none is listed
// twice.
TEST(ConnectionIndex, MembersStayExactAcrossRemovalsFromTheMiddle) {
  BasicConnectionIndex<Dummy> index;
  std::vector<std::shared_ptr<Dummy>> all;
  for (int i = 0; i < 6; ++i) {
    all.push_back(std::make_shared<Dummy>());
    index.join("r", all.back());
  }
  index.join("r", all[2]);
  index.leave("r", all[1].get());
  index.leave("r", all[3].get());
  index.leave("r", all[3].get());
  std::vector<Dummy*> listed;
  for (const auto& member : index.members("r")->list()) listed.push_back(member.get());
  std::sort(listed.begin(), listed.end());
  std::vector<Dummy*> expected{all[0].get(), all[2].get(), all[4].get(), all[5].get()};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(listed, expected);
  for (auto* member : expected) index.leave("r", member);
  EXPECT_EQ(index.members("r"), nullptr);
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
