// The history's pure parts: when the Redis window alone answers a query
// (log_covers) and how two stores' answers are stitched (merge).

#include "store/history.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <memory>

namespace rtmc::history {
namespace {

// Items [from, to] in the given direction, each frame tagged with `source`.
Items run(std::int64_t from, std::int64_t to, const std::string& source = "log") {
  Items items;
  const int step = from <= to ? 1 : -1;
  for (auto seq = from;; seq += step) {
    items.emplace_back(seq, std::make_shared<const std::string>(source + std::to_string(seq)));
    if (seq == to) break;
  }
  return items;
}

std::vector<std::int64_t> seqs(const Items& items) {
  std::vector<std::int64_t> out;
  for (const auto& item : items) out.push_back(item.first);
  return out;
}

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
  std::vector<std::int64_t> out;
  for (auto seq = from; seq <= to; ++seq) out.push_back(seq);
  return out;
}

Query after(std::int64_t seq, std::size_t limit) {
  return Query{Query::Mode::after, seq, limit};
}
Query before(std::int64_t seq, std::size_t limit) {
  return Query{Query::Mode::before, seq, limit};
}
Query latest(std::size_t limit) {
  return Query{Query::Mode::latest, 0, limit};
}

TEST(HistoryCovers, AfterInsideTheWindow) {
  // Log 201..300; after 250, limit 20 -> 251..270.
  EXPECT_TRUE(log_covers(after(250, 20), run(251, 270), 300));
  // Short of the limit but reaching the room's last message.
  EXPECT_TRUE(log_covers(after(290, 20), run(291, 300), 300));
  // Nothing after the room's last message.
  EXPECT_TRUE(log_covers(after(300, 20), {}, 300));
  EXPECT_TRUE(log_covers(after(400, 20), {}, 300));
  EXPECT_TRUE(log_covers(after(std::numeric_limits<std::int64_t>::max(), 20), {}, 300));
}

TEST(HistoryCovers, AfterReachingBelowTheWindow) {
  // Log starts at 201; after 150 needs 151..200 from PostgreSQL.
  EXPECT_FALSE(log_covers(after(150, 20), run(201, 220), 300));
  EXPECT_FALSE(log_covers(after(0, 20), run(201, 220), 300));
  // The log is empty but the room has messages.
  EXPECT_FALSE(log_covers(after(10, 20), {}, 300));
}

TEST(HistoryCovers, AHoleInTheLogIsNotCovered) {
  Items holed = run(251, 255);
  auto tail = run(258, 272);
  holed.insert(holed.end(), tail.begin(), tail.end());
  EXPECT_FALSE(log_covers(after(250, 20), holed, 300));
  Items down = run(300, 296);
  auto rest = run(293, 279);
  down.insert(down.end(), rest.begin(), rest.end());
  EXPECT_FALSE(log_covers(latest(20), down, 300));
}

TEST(HistoryCovers, ShortOfTheRoomsLastSeqIsNotCovered) {
  // Fewer than asked and the newest is below the room's seq: a lost tail.
  EXPECT_FALSE(log_covers(after(250, 100), run(251, 280), 300));
}

TEST(HistoryCovers, BeforeAndLatest) {
  EXPECT_TRUE(log_covers(before(280, 20), run(279, 260), 300));
  EXPECT_TRUE(log_covers(latest(20), run(300, 281), 300));
  // Reaching seq 1 with fewer than asked: the whole room.
  EXPECT_TRUE(log_covers(latest(50), run(30, 1), 30));
  EXPECT_TRUE(log_covers(before(10, 50), run(9, 1), 30));
  // A bound above the room's seq starts at the room's last message.
  EXPECT_TRUE(log_covers(before(1000, 5), run(300, 296), 300));
  // The window ends before the limit is filled: older ones are in PostgreSQL.
  EXPECT_FALSE(log_covers(before(220, 50), run(219, 201), 300));
  EXPECT_FALSE(log_covers(latest(150), run(300, 201), 300));
  // The newest is missing (lost from Redis).
  EXPECT_FALSE(log_covers(latest(5), run(298, 294), 300));
  EXPECT_FALSE(log_covers(latest(5), {}, 300));
}

TEST(HistoryCovers, ARoomWithoutASeqAsksPostgres) {
  // Seq 0: never used, or Redis lost it; only PostgreSQL can tell.
  EXPECT_FALSE(log_covers(latest(5), {}, 0));
  EXPECT_FALSE(log_covers(after(0, 5), {}, 0));
  EXPECT_FALSE(log_covers(before(10, 5), {}, 0));
}

TEST(HistoryMerge, StraddlingAfter) {
  // PostgreSQL 1..250, log 201..300: after 180, limit 50 -> 181..230.
  auto log = run(201, 250);
  auto database = run(181, 230, "pg");
  auto merged = merge(after(180, 50), log, database);
  EXPECT_EQ(seqs(merged), range(181, 230));
  // The overlap keeps the log's frames.
  EXPECT_EQ(*merged.front().second, "pg181");
  EXPECT_EQ(*merged.back().second, "log230");
}

TEST(HistoryMerge, StraddlingBefore) {
  // before 230, limit 60: log 229..201 (29), PostgreSQL 229..170 (60).
  auto merged = merge(before(230, 60), run(229, 201), run(229, 170, "pg"));
  EXPECT_EQ(seqs(merged), range(170, 229));
  EXPECT_EQ(*merged.front().second, "pg170");
  EXPECT_EQ(*merged[40].second, "log210");
}

TEST(HistoryMerge, LatestTakesTheNewest) {
  auto merged = merge(latest(100), run(300, 201), run(250, 151, "pg"));
  EXPECT_EQ(seqs(merged), range(201, 300));
  for (const auto& item : merged) EXPECT_EQ(item.second->substr(0, 3), "log");
}

TEST(HistoryMerge, HolesReturnWhatExists) {
  // PostgreSQL ends at 100, the log starts at 120: 101..119 exist nowhere.
  auto merged = merge(after(90, 40), run(120, 159), run(91, 100, "pg"));
  std::vector<std::int64_t> expected = range(91, 100);
  auto rest = range(120, 149);
  expected.insert(expected.end(), rest.begin(), rest.end());
  EXPECT_EQ(seqs(merged), expected);
}

TEST(HistoryMerge, OnlyOneSource) {
  EXPECT_EQ(seqs(merge(after(0, 10), {}, run(1, 10, "pg"))), range(1, 10));
  EXPECT_EQ(seqs(merge(before(11, 10), run(10, 1), {})), range(1, 10));
  EXPECT_TRUE(merge(latest(10), {}, {}).empty());
}

TEST(HistoryMerge, ItemsOutsideTheBoundAreDropped) {
  EXPECT_EQ(seqs(merge(after(5, 10), run(3, 8), run(4, 9, "pg"))), range(6, 9));
  EXPECT_EQ(seqs(merge(before(5, 10), run(7, 3), run(6, 1, "pg"))), range(1, 4));
}

}  // namespace
}  // namespace rtmc::history
