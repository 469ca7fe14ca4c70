#include "gateway/room_stream.hpp"

#include <gtest/gtest.h>

namespace rtmc::gateway {
namespace {

// Appending: GCC 12 reports a false -Wrestrict on "literal" + std::string.
SharedFrame frame(std::int64_t seq) {
  std::string text = "f";
  text += std::to_string(seq);
  return std::make_shared<const std::string>(std::move(text));
}

std::vector<std::string> texts(const RoomStreams::Output& out) {
  std::vector<std::string> result;
  for (const auto& f : out.frames) result.push_back(*f);
  return result;
}

std::vector<RoomStreams::LogFrame> log(std::int64_t from, std::int64_t to) {
  std::vector<RoomStreams::LogFrame> frames;
  for (auto seq = from; seq <= to; ++seq) frames.emplace_back(seq, frame(seq));
  return frames;
}

using Strings = std::vector<std::string>;

TEST(RoomStreams, FramesBeforeJoinedAreHeldThenReleasedAboveTheJoinedSeq) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  ASSERT_EQ(join.result, RoomStreams::JoinResult::added);
  streams.deliver("r", 6, frame(6), out);
  streams.deliver("r", 5, frame(5), out);
  EXPECT_TRUE(out.frames.empty());
  EXPECT_EQ(streams.held_bytes(), 4u);
  streams.joined("r", join.membership, 5, out);
  EXPECT_EQ(texts(out), Strings{"f6"});
  EXPECT_EQ(streams.held_bytes(), 0u);
  out.clear();
  streams.deliver("r", 7, frame(7), out);
  streams.deliver("r", 7, frame(7), out);
  EXPECT_EQ(texts(out), Strings{"f7"});
}

TEST(RoomStreams, AHoleIsRepairedFromTheLog) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 2, out);
  streams.deliver("r", 5, frame(5), out);
  ASSERT_TRUE(out.repair);
  EXPECT_EQ(out.repair->from, 3);
  EXPECT_EQ(out.repair->to, 4);
  auto repair = *out.repair;
  out.clear();
  streams.deliver("r", 6, frame(6), out);  // held while repairing
  EXPECT_TRUE(out.frames.empty());
  EXPECT_EQ(streams.repaired(repair, log(3, 4), out), RoomStreams::RepairResult::applied);
  EXPECT_EQ(texts(out), (Strings{"f3", "f4", "f5", "f6"}));
  EXPECT_FALSE(out.repair);
  EXPECT_EQ(streams.held_bytes(), 0u);
}

TEST(RoomStreams, ARepairThatFailsSaysSo) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver("r", 3, frame(3), out);
  auto repair = *out.repair;
  out.clear();
  EXPECT_EQ(streams.repaired(repair, std::nullopt, out), RoomStreams::RepairResult::failed);
  EXPECT_TRUE(out.frames.empty());
}

TEST(RoomStreams, LeaveAndRejoinDuringARepairMakeItStale) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto first = streams.join("r", 10);
  streams.joined("r", first.membership, 0, out);
  streams.deliver("r", 3, frame(3), out);
  auto repair = *out.repair;
  out.clear();
  EXPECT_TRUE(streams.leave("r"));
  EXPECT_EQ(streams.held_bytes(), 0u) << "leaving drops what the room held";
  auto second = streams.join("r", 10);
  EXPECT_NE(second.membership, first.membership);
  streams.joined("r", second.membership, 10, out);
  EXPECT_EQ(streams.repaired(repair, log(1, 2), out), RoomStreams::RepairResult::stale);
  EXPECT_TRUE(out.frames.empty());
  streams.deliver("r", 11, frame(11), out);
  EXPECT_EQ(texts(out), Strings{"f11"});
}

TEST(RoomStreams, AStaleJoinAnswerLeavesTheNewMembershipAlone) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto first = streams.join("r", 10);
  streams.leave("r");
  auto second = streams.join("r", 10);
  streams.joined("r", first.membership, 100, out);  // the first join's late answer
  streams.abandon("r", first.membership);
  EXPECT_TRUE(streams.contains("r"));
  streams.joined("r", second.membership, 1, out);
  streams.deliver("r", 2, frame(2), out);
  EXPECT_EQ(texts(out), Strings{"f2"});
}

TEST(RoomStreams, TrimmedFramesAreSkipped) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver("r", 6, frame(6), out);
  auto repair = *out.repair;  // 1..5, but 1..3 were trimmed
  out.clear();
  EXPECT_EQ(streams.repaired(repair, log(4, 5), out), RoomStreams::RepairResult::applied);
  EXPECT_EQ(texts(out), (Strings{"f4", "f5", "f6"}));
  out.clear();
  EXPECT_EQ(streams.repaired(repair, log(4, 5), out), RoomStreams::RepairResult::applied);
  EXPECT_TRUE(out.frames.empty()) << "a repeated answer delivers nothing twice";
}

TEST(RoomStreams, AllTrimmedStillMovesOn) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver("r", 4, frame(4), out);
  auto repair = *out.repair;
  out.clear();
  streams.repaired(repair, std::vector<RoomStreams::LogFrame>{}, out);
  EXPECT_EQ(texts(out), Strings{"f4"});
}

TEST(RoomStreams, ASecondHoleInHeldFramesStartsAnotherRepair) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver("r", 2, frame(2), out);
  auto repair = *out.repair;
  out.clear();
  streams.deliver("r", 5, frame(5), out);
  streams.repaired(repair, log(1, 1), out);
  EXPECT_EQ(texts(out), (Strings{"f1", "f2"}));
  ASSERT_TRUE(out.repair);
  EXPECT_EQ(out.repair->from, 3);
  EXPECT_EQ(out.repair->to, 4);
  EXPECT_EQ(streams.held_bytes(), 2u);
}

TEST(RoomStreams, RoomLimit) {
  RoomStreams streams;
  EXPECT_EQ(streams.join("a", 2).result, RoomStreams::JoinResult::added);
  EXPECT_EQ(streams.join("b", 2).result, RoomStreams::JoinResult::added);
  EXPECT_EQ(streams.join("a", 2).result, RoomStreams::JoinResult::already_in);
  EXPECT_EQ(streams.join("c", 2).result, RoomStreams::JoinResult::too_many_rooms);
  EXPECT_FALSE(streams.contains("c"));
  auto names = streams.clear();
  EXPECT_EQ(names.size(), 2u);
  EXPECT_EQ(streams.size(), 0u);
}

TEST(RoomStreams, FramesOfOtherRoomsAreIgnored) {
  RoomStreams streams;
  RoomStreams::Output out;
  streams.deliver("nope", 1, frame(1), out);
  EXPECT_TRUE(out.frames.empty());
  EXPECT_FALSE(streams.leave("nope"));
}

}  // namespace
}  // namespace rtmc::gateway
