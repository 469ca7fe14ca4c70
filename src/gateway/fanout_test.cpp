// The fan-out thread's handling of presence bodies (no RabbitMQ needed).

#include <gtest/gtest.h>

#include "gateway/pipeline.hpp"
#include "protocol/frames.hpp"

namespace rtmc::gateway {
namespace {

TEST(AddPresenceItems, SplitsABodyIntoSeqZeroItems) {
  const auto join = protocol::presence_frame("lobby", "alice", true);
  const auto leave = protocol::presence_frame("den", "Bob", false);
  SequencedBatch batch;
  batch.push_back({"r", 7, std::make_shared<const std::string>("m\n"), {}});
  ASSERT_TRUE(add_presence_items(join + leave, batch));
  ASSERT_EQ(batch.size(), 3u) << "appended after what was there";
  EXPECT_EQ(batch[1].room, "lobby");
  EXPECT_EQ(batch[1].user, "alice");
  EXPECT_EQ(batch[1].seq, 0);
  EXPECT_EQ(*batch[1].frame, join);
  EXPECT_EQ(batch[2].room, "den");
  EXPECT_EQ(batch[2].user, "Bob");
  EXPECT_EQ(*batch[2].frame, leave);
}

TEST(AddPresenceItems, AcceptsAMissingLastNewlineAndDropsBadLines) {
  auto join = protocol::presence_frame("lobby", "alice", true);
  auto last = protocol::presence_frame("lobby", "carol", false);
  last.pop_back();
  SequencedBatch batch;
  ASSERT_TRUE(
      add_presence_items(join + "\n{\"type\":\"presence\",\"room\":\"bad room\"}\ngarbage\n" + last, batch));
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(*batch[0].frame, join);
  EXPECT_EQ(batch[1].user, "carol");
  EXPECT_EQ(*batch[1].frame, last + "\n") << "every frame ends its line";
}

TEST(AddPresenceItems, LeavesMessagesAlone) {
  SequencedBatch batch;
  EXPECT_FALSE(add_presence_items(protocol::message_frame("lobby", 3, "m1", "alice", "hi", 1), batch));
  EXPECT_FALSE(add_presence_items("", batch));
  EXPECT_FALSE(add_presence_items("garbage", batch));
  EXPECT_TRUE(batch.empty());
}

}  // namespace
}  // namespace rtmc::gateway
