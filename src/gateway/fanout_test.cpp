// The fan-out thread's handling of fan-out bodies and log fills (no RabbitMQ needed).

#include <gtest/gtest.h>

#include "gateway/pipeline.hpp"
#include "protocol/frames.hpp"

namespace rtmc::gateway {
namespace {

TEST(SplitFanoutBody, PresenceFramesBecomeSeqZeroItems) {
  const auto join = protocol::presence_frame("lobby", "alice", true);
  const auto leave = protocol::presence_frame("lobby", "Bob", false);
  SequencedBatch batch;
  batch.push_back({"r", 7, std::make_shared<const std::string>("m\n"), {}});
  EXPECT_EQ(split_fanout_body(join + leave, batch), 0u);
  ASSERT_EQ(batch.size(), 3u) << "appended after what was there";
  EXPECT_EQ(batch[1].room, "lobby");
  EXPECT_EQ(batch[1].user, "alice");
  EXPECT_EQ(batch[1].seq, 0);
  EXPECT_EQ(*batch[1].frame, join);
  EXPECT_EQ(batch[2].user, "Bob");
  EXPECT_EQ(*batch[2].frame, leave);
}

// Contract B: one message carries several frames of one room, message
// frames in seq order and presence frames mixed in.
TEST(SplitFanoutBody, AMultiFrameBodyKeepsItsOrder) {
  const auto m3 = protocol::message_frame("lobby", 3, "m3", "alice", "hi", 1);
  const auto m4 = protocol::message_frame("lobby", 4, "m4", "alice", "there", 2);
  const auto join = protocol::presence_frame("lobby", "carol", true);
  SequencedBatch batch;
  EXPECT_EQ(split_fanout_body(m3 + join + m4, batch), 0u);
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].seq, 3);
  EXPECT_EQ(batch[0].room, "lobby");
  EXPECT_EQ(*batch[0].frame, m3);
  EXPECT_EQ(batch[1].seq, 0);
  EXPECT_EQ(batch[1].user, "carol");
  EXPECT_EQ(batch[2].seq, 4);
  EXPECT_EQ(*batch[2].frame, m4);
}

TEST(SplitFanoutBody, OneFrameBodiesAndAMissingLastNewline) {
  const auto m1 = protocol::message_frame("den", 1, "m1", "alice", "hi", 1);
  SequencedBatch batch;
  EXPECT_EQ(split_fanout_body(m1, batch), 0u);
  auto last = protocol::presence_frame("den", "carol", false);
  last.pop_back();
  EXPECT_EQ(split_fanout_body(last, batch), 0u);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(*batch[0].frame, m1);
  EXPECT_EQ(batch[0].seq, 1);
  EXPECT_EQ(batch[1].user, "carol");
  EXPECT_EQ(*batch[1].frame, last + "\n") << "every frame ends its line";
}

TEST(SplitFanoutBody, DropsBadLinesAndKeepsTheRest) {
  const auto join = protocol::presence_frame("lobby", "alice", true);
  SequencedBatch batch;
  EXPECT_EQ(split_fanout_body(join + "{\"type\":\"presence\",\"room\":\"bad room\"}\ngarbage\n\n", batch),
            2u);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(*batch[0].frame, join);
  EXPECT_EQ(split_fanout_body("", batch), 0u);
  EXPECT_EQ(split_fanout_body("garbage", batch), 1u);
  EXPECT_EQ(batch.size(), 1u);
}

// ---- the fan-out's fill from the room log (issue 7: gaps are reported)

TEST(AddLogRange, MissingRunsBecomeGapItemsInTheirPlace) {
  std::vector<std::pair<std::int64_t, SharedFrame>> found;
  for (std::int64_t seq : {5, 6, 9}) found.emplace_back(seq, std::make_shared<const std::string>("m\n"));
  SequencedBatch batch;
  add_log_range("r", 3, 11, std::move(found), batch);
  ASSERT_EQ(batch.size(), 6u);
  auto gap = [&](std::size_t i, std::int64_t from, std::int64_t to) {
    EXPECT_EQ(batch[i].gap_from, from) << i;
    EXPECT_EQ(batch[i].seq, to) << i;
    EXPECT_EQ(*batch[i].frame, protocol::gap_frame("r", from, to)) << i;
  };
  gap(0, 3, 4);
  EXPECT_EQ(batch[1].seq, 5);
  EXPECT_EQ(batch[1].gap_from, 0);
  EXPECT_EQ(batch[2].seq, 6);
  gap(3, 7, 8);
  EXPECT_EQ(batch[4].seq, 9);
  gap(5, 10, 11);
}

TEST(AddLogRange, AFullRangeHasNoGap) {
  std::vector<std::pair<std::int64_t, SharedFrame>> found;
  for (std::int64_t seq = 1; seq <= 3; ++seq)
    found.emplace_back(seq, std::make_shared<const std::string>("m\n"));
  SequencedBatch batch;
  add_log_range("r", 1, 3, std::move(found), batch);
  ASSERT_EQ(batch.size(), 3u);
  for (const auto& item : batch) EXPECT_EQ(item.gap_from, 0);
}

TEST(AddLogRange, NothingFoundIsOneGap) {
  SequencedBatch batch;
  add_log_range("r", 4, 7, {}, batch);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].gap_from, 4);
  EXPECT_EQ(batch[0].seq, 7);
}

}  // namespace
}  // namespace rtmc::gateway
