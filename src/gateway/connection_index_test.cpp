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

}  // namespace
}  // namespace rtmc::gateway
