#include "gateway/room_stream.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>

#include "protocol/frames.hpp"

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

std::string gap(const std::string& room, std::int64_t from, std::int64_t to) {
  return protocol::gap_frame(room, from, to);
}

// A log with seqs [from, to] less `missing`.
std::vector<RoomStreams::LogFrame> log_without(std::int64_t from, std::int64_t to,
                                               std::vector<std::int64_t> missing) {
  std::vector<RoomStreams::LogFrame> frames;
  for (auto seq = from; seq <= to; ++seq)
    if (std::find(missing.begin(), missing.end(), seq) == missing.end()) frames.emplace_back(seq, frame(seq));
  return frames;
}

Strings range_texts(std::int64_t from, std::int64_t to) {
  Strings result;
  for (auto seq = from; seq <= to; ++seq) result.push_back(*frame(seq));
  return result;
}

Strings concat(Strings a, const Strings& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

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

// The delivery fast path: only a live room's next seq is sent from it; all
// else goes to deliver(), which still holds, repairs or drops.
TEST(RoomStreams, DeliverNextSendsOnlyTheNextSeqOfALiveRoom) {
  RoomStreams streams;
  RoomStreams::Output out;
  const std::string r = "r";
  const std::string other = "other";
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 1), RoomStreams::Next::not_in_room);
  auto join = streams.join(r, 10);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 6), RoomStreams::Next::other) << "still joining: held";
  streams.joined(r, join.membership, 5, out);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 6), RoomStreams::Next::send);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 6), RoomStreams::Next::other) << "an old seq";
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 9), RoomStreams::Next::other) << "a hole";
  EXPECT_EQ(streams.deliver_next(RoomKey(other), 1), RoomStreams::Next::not_in_room);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 7), RoomStreams::Next::send);
  // deliver() agrees on where the room stands.
  out.clear();
  streams.deliver(r, 8, frame(8), out);
  EXPECT_EQ(texts(out), Strings{"f8"});
}

// The fast path remembers the room it found last; leaving the room (its
// entry freed) must not leave it pointing there (the sanitizer build sees a
// use after free otherwise), and a rejoin starts from its own joined seq.
TEST(RoomStreams, DeliverNextAfterLeavingAndRejoiningUsesTheNewMembership) {
  RoomStreams streams;
  RoomStreams::Output out;
  const std::string r = "r";
  auto first = streams.join(r, 10);
  streams.joined(r, first.membership, 0, out);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 1), RoomStreams::Next::send);
  ASSERT_TRUE(streams.leave(r));
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 2), RoomStreams::Next::not_in_room);
  auto second = streams.join(r, 10);
  streams.joined(r, second.membership, 40, out);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 2), RoomStreams::Next::other);
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 41), RoomStreams::Next::send);
  streams.clear();
  EXPECT_EQ(streams.deliver_next(RoomKey(r), 42), RoomStreams::Next::not_in_room);
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

// The rule changed with issue 7: trimmed seqs were skipped silently; they
// are now a `gap` frame in their place.
TEST(RoomStreams, TrimmedFramesBecomeAGap) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver("r", 6, frame(6), out);
  auto repair = *out.repair;  // 1..5, but 1..3 were trimmed
  out.clear();
  EXPECT_EQ(streams.repaired(repair, log(4, 5), out), RoomStreams::RepairResult::applied);
  EXPECT_EQ(texts(out), (Strings{gap("r", 1, 3), "f4", "f5", "f6"}));
  EXPECT_EQ(out.gaps, 1u);
  EXPECT_EQ(out.gap_seqs, 3u);
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
  EXPECT_EQ(texts(out), (Strings{gap("r", 1, 3), "f4"}));
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

// ---- join with since (replay), chunking, gaps

// Drives a resume as ClientConnection does: the first chunk, then every
// further read answered from `log` (which lacks `missing`), pumping with
// `budget` bytes each time. Live frames come from `live` before each step.
struct Replayer {
  RoomStreams& streams;
  std::vector<std::int64_t> missing;
  std::size_t budget = std::numeric_limits<std::size_t>::max();
  int reads = 0;
  int pumps = 0;

  void run(const RoomStreams::Repair& first, std::int64_t seq, RoomStreams::Output& all,
           const std::function<void(RoomStreams::Output&)>& between = {}) {
    RoomStreams::Output out;
    ++reads;
    ASSERT_EQ(streams.resume(first, log_without(first.from, first.to, missing), seq, budget, out),
              RoomStreams::RepairResult::applied);
    for (;;) {
      take(out, all);
      auto next = std::exchange(out.repair, std::nullopt);
      if (!next && !streams.buffered(first.room, first.membership)) return;
      out.clear();
      if (between) between(out);
      take(out, all);
      out.clear();
      if (next) {
        ++reads;
        EXPECT_LE(next->to - next->from + 1, 100) << "a read covers at most one chunk";
        ASSERT_EQ(streams.repaired(*next, log_without(next->from, next->to, missing), out, budget),
                  RoomStreams::RepairResult::applied);
      } else {
        ++pumps;
        ASSERT_EQ(streams.pump(first.room, first.membership, budget, out),
                  RoomStreams::RepairResult::applied);
      }
    }
  }
  static void take(RoomStreams::Output& out, RoomStreams::Output& all) {
    for (auto& f : out.frames) all.frames.push_back(f);
    all.gaps += out.gaps;
    all.gap_seqs += out.gap_seqs;
    out.frames.clear();
  }
};

TEST(RoomStreams, SinceReplaysTheRangeInChunksThenGoesLive) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.deliver("r", 251, frame(251), out);  // live while joining: held
  auto first = streams.replay_start("r", join.membership, 0, 250);
  EXPECT_EQ(first.from, 1);
  EXPECT_EQ(first.to, 100);
  Replayer replayer{streams, {}};
  RoomStreams::Output all;
  replayer.run(first, 250, all);
  EXPECT_EQ(replayer.reads, 3) << "250 seqs in chunks of 100";
  EXPECT_EQ(texts(all), range_texts(1, 251));
  EXPECT_EQ(streams.held_bytes(), 0u);
  out.clear();
  streams.deliver("r", 252, frame(252), out);
  EXPECT_EQ(texts(out), Strings{"f252"});
}

TEST(RoomStreams, ReplaySeamWithLiveFramesHasNoGapAndNoDuplicate) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  // The room is at 300 when the join reads its seq; frames go on arriving
  // during the whole replay, some of them again (the fan-out may repeat).
  for (std::int64_t seq = 299; seq <= 302; ++seq) streams.deliver("r", seq, frame(seq), out);
  std::int64_t live = 302;
  Replayer replayer{streams, {}};
  RoomStreams::Output all;
  replayer.run(streams.replay_start("r", join.membership, 120, 300), 300, all, [&](RoomStreams::Output& o) {
    ++live;
    streams.deliver("r", live, frame(live), o);
    streams.deliver("r", live - 1, frame(live - 1), o);
  });
  EXPECT_EQ(texts(all), range_texts(121, live));
  out.clear();
  streams.deliver("r", live + 1, frame(live + 1), out);
  EXPECT_EQ(texts(out), Strings{*frame(live + 1)});
}

TEST(RoomStreams, ReplayHandsOutNoMoreThanTheBudgetPerCall) {
  RoomStreams streams;
  auto join = streams.join("r", 10);
  Replayer replayer{streams, {}, 10};  // frames are 2-4 bytes: about 3 per call
  RoomStreams::Output all;
  int calls = 0;
  std::size_t most = 0;
  replayer.run(streams.replay_start("r", join.membership, 0, 30), 30, all, [&](RoomStreams::Output&) {
    ++calls;
    most = std::max(most, all.frames.size());
  });
  EXPECT_EQ(texts(all), range_texts(1, 30));
  EXPECT_EQ(replayer.reads, 1) << "30 seqs: one read";
  EXPECT_GE(replayer.pumps, 8) << "at most 10 bytes per call";
}

TEST(RoomStreams, ASingleFrameOverTheBudgetStillGoesOut) {
  RoomStreams streams;
  auto join = streams.join("r", 10);
  Replayer replayer{streams, {}, 0};
  RoomStreams::Output all;
  replayer.run(streams.replay_start("r", join.membership, 0, 5), 5, all);
  EXPECT_EQ(texts(all), range_texts(1, 5));
  EXPECT_EQ(replayer.pumps, 4);
}

TEST(RoomStreams, MissingSeqsInAReplayBecomeGapFrames) {
  RoomStreams streams;
  auto join = streams.join("r", 10);
  // 150..160 never written (a skipped range), 250 at a chunk's end, 300 the last.
  std::vector<std::int64_t> missing;
  for (std::int64_t seq = 150; seq <= 160; ++seq) missing.push_back(seq);
  missing.push_back(200);
  missing.push_back(300);
  Replayer replayer{streams, missing};
  RoomStreams::Output all;
  replayer.run(streams.replay_start("r", join.membership, 0, 300), 300, all);
  Strings expected = concat(range_texts(1, 149), Strings{gap("r", 150, 160)});
  expected = concat(expected, range_texts(161, 199));
  expected.push_back(gap("r", 200, 200));
  expected = concat(expected, range_texts(201, 299));
  expected.push_back(gap("r", 300, 300));
  EXPECT_EQ(texts(all), expected);
  EXPECT_EQ(all.gaps, 3u);
  EXPECT_EQ(all.gap_seqs, 13u);
}

TEST(RoomStreams, ARangeMissingAcrossChunksIsOneGap) {
  RoomStreams streams;
  auto join = streams.join("r", 10);
  // 101..1000 skipped (a Redis data loss), the room goes on at 1001.
  std::vector<std::int64_t> missing;
  for (std::int64_t seq = 101; seq <= 1000; ++seq) missing.push_back(seq);
  Replayer replayer{streams, missing};
  RoomStreams::Output all;
  replayer.run(streams.replay_start("r", join.membership, 50, 1003), 1003, all);
  Strings expected = concat(range_texts(51, 100), Strings{gap("r", 101, 1000)});
  EXPECT_EQ(texts(all), concat(expected, range_texts(1001, 1003)));
  EXPECT_EQ(all.gaps, 1u);
  EXPECT_EQ(all.gap_seqs, 900u);
}

TEST(RoomStreams, ReplayOverTheHoldBoundDropsLiveFramesAndReadsThemFromTheLog) {
  RoomStreams streams({.hold_bytes = 8, .chunk = 10});
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  std::int64_t live = 50;
  std::size_t most_held = 0;
  Replayer replayer{streams, {}};
  RoomStreams::Output all;
  int steps = 0;
  replayer.run(streams.replay_start("r", join.membership, 0, 50), 50, all, [&](RoomStreams::Output& o) {
    // More than the hold bound takes per step (3-byte frames), for a while.
    for (int i = 0; i < 3 && live < 120; ++i) {
      ++live;
      streams.deliver("r", live, frame(live), o);
    }
    most_held = std::max(most_held, streams.held_bytes());
    ++steps;
  });
  EXPECT_LT(steps, 40);
  EXPECT_LE(most_held, 8u);
  EXPECT_EQ(texts(all), range_texts(1, live)) << "dropped frames came back from the log, in order";
  EXPECT_EQ(all.gaps, 0u);
}

TEST(RoomStreams, AJoinWhoseHeldFramesOverflowReadsThemBack) {
  RoomStreams streams({.hold_bytes = 4, .chunk = 100});
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  for (std::int64_t seq = 11; seq <= 15; ++seq) streams.deliver("r", seq, frame(seq), out);
  EXPECT_LE(streams.held_bytes(), 4u);
  streams.joined("r", join.membership, 10, out);
  ASSERT_TRUE(out.repair);
  auto repair = *out.repair;
  out.clear();
  streams.repaired(repair, log(repair.from, repair.to), out);
  EXPECT_EQ(texts(out), range_texts(11, 15));
}

TEST(RoomStreams, AGapFromTheFanoutIsCutToWhatTheClientIsOwed) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 5, out);
  const auto whole = std::make_shared<const std::string>(gap("r", 3, 8));
  streams.deliver_gap("r", 3, 8, whole, out);
  streams.deliver_gap("r", 3, 8, whole, out);  // again: nothing
  streams.deliver("r", 9, frame(9), out);
  EXPECT_EQ(texts(out), (Strings{gap("r", 6, 8), "f9"}));
  EXPECT_EQ(out.gaps, 1u);
  EXPECT_EQ(out.gap_seqs, 3u);
  out.clear();
  streams.deliver_gap("r", 10, 12, std::make_shared<const std::string>(gap("r", 10, 12)), out);
  EXPECT_EQ(texts(out), (Strings{gap("r", 10, 12)})) << "the fan-out's own frame when it fits";
}

TEST(RoomStreams, AGapAfterAHoleWaitsForTheRepair) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  streams.joined("r", join.membership, 0, out);
  streams.deliver_gap("r", 3, 4, std::make_shared<const std::string>(gap("r", 3, 4)), out);
  ASSERT_TRUE(out.repair);
  EXPECT_EQ(out.repair->from, 1);
  EXPECT_EQ(out.repair->to, 2);
  auto repair = *out.repair;
  out.clear();
  streams.deliver("r", 5, frame(5), out);
  streams.repaired(repair, log(1, 2), out);
  EXPECT_EQ(texts(out), (Strings{"f1", "f2", gap("r", 3, 4), "f5"}));
}

TEST(RoomStreams, LeavingDuringAReplayMakesItsAnswersStale) {
  RoomStreams streams;
  RoomStreams::Output out;
  auto join = streams.join("r", 10);
  auto first = streams.replay_start("r", join.membership, 0, 500);
  ASSERT_EQ(streams.resume(first, log(1, 100), 500, 50, out), RoomStreams::RepairResult::applied);
  EXPECT_TRUE(streams.buffered("r", join.membership));
  streams.leave("r");
  out.clear();
  EXPECT_EQ(streams.pump("r", join.membership, 1000, out), RoomStreams::RepairResult::stale);
  EXPECT_FALSE(streams.buffered("r", join.membership));
  EXPECT_TRUE(out.frames.empty());
}

}  // namespace
}  // namespace rtmc::gateway
