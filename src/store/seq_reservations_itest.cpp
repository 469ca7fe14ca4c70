// Integration tests of the seq reservations against a real PostgreSQL at
// RTMC_TEST_PG (the schema migrated by the test, rooms of its own).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <thread>

#include "store/seq_reservations.hpp"

namespace rtmc::seq_reservations {
namespace {

std::string random_digits() {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return std::to_string(digits(device) % 1000000000000ULL);
}

class SeqReservationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* conninfo = std::getenv("RTMC_TEST_PG");
    ASSERT_NE(conninfo, nullptr) << "RTMC_TEST_PG is not set: it must be a libpq connection string of a "
                                    "PostgreSQL database for integration tests";
    config_.conninfo = conninfo;
    pg_ = std::make_unique<pg::Connection>(config_);
    pg::migrate(*pg_);
  }
  void TearDown() override {
    if (!pg_) return;
    for (const auto& room : rooms_) pg_->exec("DELETE FROM room_seq_reservations WHERE room = $1", {room});
  }
  std::string room(const std::string& name) {
    rooms_.push_back("seq-itest-" + name + "-" + random_digits());
    return rooms_.back();
  }

  PgConfig config_;
  std::unique_ptr<pg::Connection> pg_;
  std::vector<std::string> rooms_;
};

TEST_F(SeqReservationsTest, ARoomStartsAtZeroAndEachReservationAddsABlock) {
  const auto name = room("blocks");
  EXPECT_EQ(reserved(*pg_, name), 0);
  auto blocks = reserve(*pg_, {{name}}, 1000);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].room, name);
  EXPECT_EQ(blocks[0].previous, 0);
  EXPECT_EQ(blocks[0].reserved, 1000);
  blocks = reserve(*pg_, {{name}}, 1000);
  EXPECT_EQ(blocks[0].previous, 1000);
  EXPECT_EQ(blocks[0].reserved, 2000);
  EXPECT_EQ(reserved(*pg_, name), 2000);
}

// One statement for many rooms, any names, each room once, in the order
// given; a floor above the stored value lifts the block above it.
TEST_F(SeqReservationsTest, ManyRoomsInOneCallWithFloors) {
  const auto b = room("b");
  const auto a = room("a,\"{odd}\\");
  const auto c = room("c");
  reserve(*pg_, {{c}}, 10);  // c: 10
  const auto blocks = reserve(*pg_, {{b, 0}, {a, 0}, {b, 0}, {c, 500}}, 10);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(blocks[0].room, b);
  EXPECT_EQ(blocks[1].room, a);
  EXPECT_EQ(blocks[2].room, c);
  EXPECT_EQ(blocks[0].previous, 0);
  EXPECT_EQ(blocks[0].reserved, 10);
  EXPECT_EQ(blocks[1].reserved, 10);
  EXPECT_EQ(blocks[2].previous, 500);
  EXPECT_EQ(blocks[2].reserved, 510);
  EXPECT_EQ(reserved(*pg_, a), 10);
  // A floor below the stored value changes nothing.
  EXPECT_EQ(reserve(*pg_, {{c, 3}}, 10)[0].reserved, 520);
  EXPECT_THROW(reserve(*pg_, {{c}}, 0), std::invalid_argument);
  EXPECT_TRUE(reserve(*pg_, {}, 10).empty());
}

// Sequencers of several gateways reserving the same rooms at once (a shard
// handover) get disjoint blocks: no seq is reserved twice.
TEST_F(SeqReservationsTest, ConcurrentReservationsNeverOverlap) {
  const auto one = room("one");
  const auto two = room("two");
  constexpr int kRounds = 50;
  std::vector<std::vector<rooms::SeqBlock>> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      pg::Connection own(config_);
      for (int i = 0; i < kRounds; ++i) {
        // Opposite orders: the statement locks rows in name order.
        std::vector<Request> requests =
            t == 0 ? std::vector<Request>{{one}, {two}} : std::vector<Request>{{two}, {one}};
        for (auto& block : reserve(own, requests, 7)) got[t].push_back(block);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& name : {one, two}) {
    std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
    for (const auto& blocks : got)
      for (const auto& block : blocks)
        if (block.room == name) ranges.emplace_back(block.previous, block.reserved);
    ASSERT_EQ(ranges.size(), 2u * kRounds);
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_EQ(ranges[i].first, static_cast<std::int64_t>(i) * 7);
      EXPECT_EQ(ranges[i].second, ranges[i].first + 7);
    }
    EXPECT_EQ(reserved(*pg_, name), 2 * kRounds * 7);
  }
}

TEST_F(SeqReservationsTest, AnUnreachableDatabaseIsUnavailable) {
  PgConfig nowhere;
  nowhere.conninfo = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2";
  pg::Connection down(nowhere, pg::Options{std::chrono::milliseconds(2000)});
  try {
    reserve(down, {{room("down")}}, 10);
    FAIL() << "no error";
  } catch (const pg::PgError& error) {
    EXPECT_TRUE(error.unavailable()) << error.what();
  }
}

}  // namespace
}  // namespace rtmc::seq_reservations
