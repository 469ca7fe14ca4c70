// Integration tests of the rooms store against a real Redis at RTMC_TEST_REDIS
// (host:port). Every test uses rooms of its own (random names) and deletes
// their keys; the shard sync stream is shared, so sync entries are counted
// per room. The test stack runs a syncer over shards 0-15 (scripts/test.sh),
// which would trim the sync entries these tests look at: their rooms live on
// shards above it, which no syncer reads. room() installs a large block of seqs for the room under the
// server's run_id, as the sequencer does after a reservation, except for the
// seq guard tests (unguarded_room()). OutOfMemoryIsARefusal changes maxmemory for every client of that
// Redis and runs alone (RUN_SERIAL).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdlib>
#include <random>

#include "common/keys.hpp"
#include "store/rooms.hpp"

namespace rtmc::rooms {
namespace {

using Status = SequenceResult::Status;
constexpr std::uint32_t kShards = 64;
constexpr std::uint32_t kFirstUnsyncedShard = 16;

std::string random_digits() {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return std::to_string(digits(device) % 1000000000000ULL);
}

class RoomsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* address = std::getenv("RTMC_TEST_REDIS");
    ASSERT_NE(address, nullptr)
        << "RTMC_TEST_REDIS is not set: it must name a Redis (host:port or redis:// URL)";
    config_ = RedisConfig::parse(address);  // host:port or redis:// with credentials
    config_.timeout = std::chrono::milliseconds(2000);
    redis_ = std::make_unique<redis::Connection>(config_);
    settings_.shards = kShards;
    settings_.dedupe_window = std::chrono::seconds(600);
    settings_.log_length = 1000;
    run_id_ = server_run_id(*redis_);
  }
  void TearDown() override {
    if (!redis_) return;
    for (const auto& room : rooms_) {
      auto found = redis_->command({"KEYS", std::string("*:") + room + "*"});
      for (const auto& key : found.elements) redis_->command({"DEL", key.str});
    }
  }

  std::string unguarded_room(const std::string& name) {
    std::string candidate;
    do {
      candidate = std::string("rooms-itest-") + name + "-" + random_digits();
    } while (shard_of(candidate, kShards) < kFirstUnsyncedShard);
    rooms_.push_back(candidate);
    return rooms_.back();
  }
  std::string room(const std::string& name) {
    auto created = unguarded_room(name);
    const auto installed = install_seqs(*redis_, kShards, run_id_, {{created, 0, 1'000'000'000}});
    EXPECT_TRUE(installed.at(0).error.empty()) << installed.at(0).error;
    return created;
  }
  std::string mark_key(const std::string& room) { return keys::room_seq_mark(shard_of(room, kShards), room); }
  // The mark as "reserved/run".
  std::string mark(const std::string& room) {
    auto reply = redis_->command({"HMGET", mark_key(room), "reserved", "run"});
    return (reply.elements.at(0).is_nil() ? "(nil)" : reply.elements[0].str) + "/" +
           (reply.elements.at(1).is_nil() ? "(nil)" : reply.elements[1].str);
  }
  static SequenceRequest request(const std::string& room, const std::string& id,
                                 const std::string& sender = "alice") {
    return {room, id, sender, std::string("<") + id + "|", ">"};
  }

  std::string get(const std::string& key) {
    auto reply = redis_->command({"GET", key});
    return reply.is_nil() ? "(nil)" : reply.str;
  }
  std::string seq_key(const std::string& room) { return keys::room_seq(shard_of(room, kShards), room); }
  std::string log_key(const std::string& room) { return keys::room_log(shard_of(room, kShards), room); }
  std::string dedupe_key(const std::string& room, const std::string& id,
                         const std::string& sender = "alice") {
    return keys::dedupe(shard_of(room, kShards), room, sender, id);
  }
  // (id, frame) of the room's log.
  std::vector<std::pair<std::string, std::string>> log(const std::string& room) {
    std::vector<std::pair<std::string, std::string>> entries;
    auto reply = redis_->command({"XRANGE", log_key(room), "-", "+"});
    for (const auto& entry : reply.elements)
      entries.emplace_back(entry.elements[0].str, entry.elements[1].elements[1].str);
    return entries;
  }
  // (seq, frame) of the shard sync stream's entries for the room.
  std::vector<std::pair<std::string, std::string>> sync_entries(const std::string& room) {
    std::vector<std::pair<std::string, std::string>> entries;
    auto reply = redis_->command({"XRANGE", keys::sync_stream(shard_of(room, kShards)), "-", "+"});
    for (const auto& entry : reply.elements) {
      const auto& fields = entry.elements[1].elements;
      if (fields.size() == 6 && fields[0].str == "room" && fields[1].str == room)
        entries.emplace_back(fields[3].str, fields[5].str);
    }
    return entries;
  }

  RedisConfig config_;
  std::unique_ptr<redis::Connection> redis_;
  std::string run_id_;
  SequenceSettings settings_;
  std::vector<std::string> rooms_;
};

TEST_F(RoomsTest, SequencesARoomInOrderIntoItsLogAndTheSyncStream) {
  const auto name = room("order");
  std::vector<SequenceRequest> requests{request(name, "a"), request(name, "b"), request(name, "c")};
  const auto results = sequence(*redis_, settings_, run_id_, requests);
  ASSERT_EQ(results.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(results[i].status, Status::sequenced) << results[i].error;
    EXPECT_EQ(results[i].seq, static_cast<std::int64_t>(i + 1));
    EXPECT_EQ(results[i].frame, requests[i].frame_prefix + std::to_string(i + 1) + ">");
    EXPECT_FALSE(results[i].repeat);
  }
  EXPECT_EQ(get(seq_key(name)), "3");
  const auto entries = log(name);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0], std::make_pair(std::string("1-0"), std::string("<a|1>")));
  EXPECT_EQ(entries[2], std::make_pair(std::string("3-0"), std::string("<c|3>")));
  const auto synced = sync_entries(name);
  ASSERT_EQ(synced.size(), 3u);
  EXPECT_EQ(synced[1], std::make_pair(std::string("2"), std::string("<b|2>")));
  EXPECT_EQ(get(dedupe_key(name, "b")), "2");
  const auto ttl = redis_->command({"TTL", dedupe_key(name, "b")}).integer;
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 600);

  // A later call continues the count.
  const auto more = sequence(*redis_, settings_, run_id_, {request(name, "d")});
  EXPECT_EQ(more[0].seq, 4);
  EXPECT_EQ(get(seq_key(name)), "4");
}

// Calls begun together on one connection (begin_sequence) run in the order
// begun, each finished with its own results, while a plain command goes in
// between; a NOSCRIPT of a call begun earlier (script cache flushed before
// it ran) is run again for that call alone.
TEST_F(RoomsTest, CallsBegunTogetherOnOneConnectionRunInOrderAndFinishWithTheirOwnResults) {
  const auto one = room("begun-one");
  const auto two = room("begun-two");
  auto first = begin_sequence(*redis_, settings_, run_id_, {request(one, "a"), request(one, "b")});
  auto second = begin_sequence(*redis_, settings_, run_id_, {request(two, "x"), request(one, "a")});
  EXPECT_EQ(redis_->command({"PING"}).str, "PONG");
  const auto first_results = finish_sequence(*redis_, first);
  const auto second_results = finish_sequence(*redis_, second);
  ASSERT_EQ(first_results.size(), 2u);
  ASSERT_EQ(second_results.size(), 2u);
  EXPECT_EQ(first_results[0].seq, 1);
  EXPECT_EQ(first_results[1].seq, 2);
  EXPECT_EQ(first_results[1].frame, "<b|2>");
  EXPECT_EQ(second_results[0].seq, 1);
  EXPECT_EQ(second_results[0].frame, "<x|1>");
  EXPECT_EQ(second_results[1].seq, 1) << "the second call ran after the first: a repeat";
  EXPECT_TRUE(second_results[1].repeat);
  EXPECT_EQ(get(seq_key(one)), "2");
  EXPECT_EQ(get(seq_key(two)), "1");

  redis_->command({"SCRIPT", "FLUSH"});
  auto third = begin_sequence(*redis_, settings_, run_id_, {request(one, "c")});
  const auto third_results = finish_sequence(*redis_, third);
  ASSERT_EQ(third_results.size(), 1u);
  EXPECT_EQ(third_results[0].status, Status::sequenced) << third_results[0].error;
  EXPECT_EQ(third_results[0].seq, 3);
}

TEST_F(RoomsTest, ARepeatedIdGetsItsFirstSeqAndFrameAndIsWrittenOnce) {
  const auto name = room("dedupe");
  const auto first = sequence(*redis_, settings_, run_id_, {request(name, "x")});
  ASSERT_EQ(first[0].status, Status::sequenced);
  // The retry renders differently (a later ts): the logged frame wins.
  auto retry = request(name, "x");
  retry.frame_suffix = " later>";
  const auto again = sequence(*redis_, settings_, run_id_, {retry, retry, request(name, "y")});
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again[i].status, Status::sequenced);
    EXPECT_TRUE(again[i].repeat);
    EXPECT_EQ(again[i].seq, first[0].seq);
    EXPECT_EQ(again[i].frame, first[0].frame);
  }
  EXPECT_EQ(again[2].seq, 2);
  EXPECT_FALSE(again[2].repeat);
  EXPECT_EQ(log(name).size(), 2u);
  EXPECT_EQ(sync_entries(name).size(), 2u);
  EXPECT_EQ(get(seq_key(name)), "2");
}

TEST_F(RoomsTest, DedupeIsPerSenderAndRoomsAreIndependent) {
  const auto one = room("one");
  const auto two = room("two");
  const auto results = sequence(*redis_, settings_, run_id_,
                                {request(one, "same", "alice"), request(two, "same", "alice"),
                                 request(one, "same", "bob"), request(two, "other", "alice")});
  EXPECT_EQ(results[0].seq, 1);
  EXPECT_EQ(results[1].seq, 1);
  EXPECT_EQ(results[2].seq, 2);
  EXPECT_FALSE(results[2].repeat);
  EXPECT_EQ(results[3].seq, 2);
  EXPECT_EQ(get(seq_key(one)), "2");
  EXPECT_EQ(get(seq_key(two)), "2");
}

TEST_F(RoomsTest, TheLogIsCappedAndKeepsItsNewestEntries) {
  const auto name = room("cap");
  settings_.log_length = 10;
  std::vector<SequenceRequest> requests;
  for (int i = 0; i < 400; ++i) requests.push_back(request(name, std::to_string(i)));
  const auto results = sequence(*redis_, settings_, run_id_, requests);
  EXPECT_EQ(results.back().seq, 400);
  // MAXLEN ~ trims whole stream nodes (100 entries by default), so the log
  // keeps at least the cap and less than a node more.
  const auto length = redis_->command({"XLEN", log_key(name)}).integer;
  EXPECT_GE(length, 10);
  EXPECT_LT(length, 10 + 100 + 1);
  const auto entries = log(name);
  EXPECT_EQ(entries.back().first, "400-0");
  EXPECT_EQ(current_seq(*redis_, kShards, name), 400);
}

// A failing script writes nothing for its message: no dedupe key (a retry is
// not taken for a repeat), no seq, no log or sync entry. The room's later
// messages in the call are not run; other rooms are not affected.
TEST_F(RoomsTest, AFailedMessageLeavesNothingBehindAndHoldsBackItsRoomOnly) {
  const auto broken = room("broken");
  const auto fine = room("fine");
  redis_->command({"SET", seq_key(broken), "not-a-number"});
  const auto results =
      sequence(*redis_, settings_, run_id_, {request(broken, "1"), request(fine, "1"), request(broken, "2")});
  EXPECT_EQ(results[0].status, Status::failed);
  EXPECT_NE(results[0].error.find("does not hold a seq"), std::string::npos) << results[0].error;
  EXPECT_EQ(results[1].status, Status::sequenced);
  EXPECT_EQ(results[2].status, Status::not_run);
  EXPECT_EQ(get(seq_key(broken)), "not-a-number");
  EXPECT_EQ(get(dedupe_key(broken, "1")), "(nil)");
  EXPECT_EQ(get(dedupe_key(broken, "2")), "(nil)");
  EXPECT_TRUE(log(broken).empty());
  EXPECT_TRUE(sync_entries(broken).empty());
  EXPECT_THROW(current_seq(*redis_, kShards, broken), BadRoomData);
}

// The seq was lost while the log kept its entries (a hand edit, a restore of
// part of the data): the script must refuse, not bump the seq and leave a
// dedupe key that would make every retry look like an already logged repeat.
TEST_F(RoomsTest, ALogAheadOfTheSeqFailsWithoutWritingAnything) {
  const auto name = room("ahead");
  redis_->command({"XADD", log_key(name), "5-0", "f", "old"});
  const auto results = sequence(*redis_, settings_, run_id_, {request(name, "1")});
  EXPECT_EQ(results[0].status, Status::failed);
  EXPECT_EQ(get(seq_key(name)), "(nil)");
  EXPECT_EQ(get(dedupe_key(name, "1")), "(nil)");
  EXPECT_EQ(log(name).size(), 1u);
  EXPECT_TRUE(sync_entries(name).empty());
}

// The script reads the room's seq once and writes it once at the end: a
// message that fails half-way through a call (here its dedupe key is of
// another type) leaves the seq at the message before it, the earlier ones keep
// consecutive seqs with their log and sync entries, and a retry continues
// right after them.
TEST_F(RoomsTest, AMessageFailingMidCallKeepsTheSeqOfTheOnesBeforeIt) {
  const auto name = room("midcall");
  ASSERT_EQ(sequence(*redis_, settings_, run_id_, {request(name, "0")}).at(0).seq, 1);
  redis_->command({"HSET", dedupe_key(name, "3"), "f", "v"});
  std::vector<SequenceRequest> requests{request(name, "1"), request(name, "0"), request(name, "2"),
                                        request(name, "3"), request(name, "4")};
  auto results = sequence(*redis_, settings_, run_id_, requests);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0].status, Status::sequenced) << results[0].error;
  EXPECT_EQ(results[0].seq, 2);
  EXPECT_TRUE(results[1].repeat);  // a repeat in between takes no seq
  EXPECT_EQ(results[1].seq, 1);
  EXPECT_EQ(results[2].seq, 3);
  EXPECT_EQ(results[3].status, Status::failed);
  EXPECT_EQ(results[3].error.rfind("WRONGTYPE", 0), 0u) << results[3].error;
  EXPECT_EQ(results[4].status, Status::not_run);
  EXPECT_EQ(get(seq_key(name)), "3");
  EXPECT_EQ(get(dedupe_key(name, "2")), "3");
  EXPECT_EQ(get(dedupe_key(name, "4")), "(nil)");
  EXPECT_EQ(log(name).size(), 3u);
  EXPECT_EQ(sync_entries(name).size(), 3u);

  redis_->command({"DEL", dedupe_key(name, "3")});
  results = sequence(*redis_, settings_, run_id_, {requests[3], requests[4]});
  EXPECT_EQ(results[0].seq, 4) << results[0].error;
  EXPECT_EQ(results[1].seq, 5) << results[1].error;
  EXPECT_EQ(get(seq_key(name)), "5");
  const auto entries = log(name);
  ASSERT_EQ(entries.size(), 5u);
  for (std::size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i].first, std::to_string(i + 1) + "-0");
  const auto synced = sync_entries(name);
  ASSERT_EQ(synced.size(), 5u);
  for (std::size_t i = 0; i < synced.size(); ++i) EXPECT_EQ(synced[i].first, std::to_string(i + 1));
}

TEST_F(RoomsTest, AKeyOfAnotherTypeIsAFailureOfThatRoom) {
  const auto name = room("wrongtype");
  redis_->command({"HSET", log_key(name), "f", "v"});
  const auto results = sequence(*redis_, settings_, run_id_, {request(name, "1")});
  EXPECT_EQ(results[0].status, Status::failed);
  EXPECT_EQ(results[0].error.rfind("WRONGTYPE", 0), 0u) << results[0].error;
  EXPECT_EQ(get(seq_key(name)), "(nil)");
  EXPECT_EQ(get(dedupe_key(name, "1")), "(nil)");
  EXPECT_THROW(read_log(*redis_, kShards, name, 1, 1), BadRoomData);
}

// Out of memory (maxmemory with noeviction) is Redis saying "not now": a
// refusal, never a failure of the message, and nothing is written.
TEST_F(RoomsTest, OutOfMemoryIsARefusal) {
  const auto name = room("oom");
  const auto policy = redis_->command({"CONFIG", "GET", "maxmemory-policy"}).elements.at(1).str;
  const auto maxmemory = redis_->command({"CONFIG", "GET", "maxmemory"}).elements.at(1).str;
  redis_->command({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
  redis_->command({"CONFIG", "SET", "maxmemory", "1"});
  std::vector<SequenceResult> results;
  try {
    results = sequence(*redis_, settings_, run_id_, {request(name, "1"), request(name, "2")});
  } catch (...) {
    redis_->command({"CONFIG", "SET", "maxmemory", maxmemory});
    redis_->command({"CONFIG", "SET", "maxmemory-policy", policy});
    throw;
  }
  redis_->command({"CONFIG", "SET", "maxmemory", maxmemory});
  redis_->command({"CONFIG", "SET", "maxmemory-policy", policy});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].status, Status::refused);
  EXPECT_EQ(results[0].error.rfind("OOM", 0), 0u) << results[0].error;
  EXPECT_EQ(results[1].status, Status::not_run);
  EXPECT_EQ(get(seq_key(name)), "(nil)");
  EXPECT_EQ(get(dedupe_key(name, "1")), "(nil)");
  EXPECT_TRUE(log(name).empty());
  // Once Redis takes writes again, the same messages go through.
  const auto later = sequence(*redis_, settings_, run_id_, {request(name, "1"), request(name, "2")});
  EXPECT_EQ(later[1].seq, 2);
}

TEST_F(RoomsTest, ReadsTheSeqAndTheLogSynchronouslyAndAsynchronously) {
  const auto name = room("read");
  EXPECT_EQ(current_seq(*redis_, kShards, name), 0);
  EXPECT_TRUE(read_log(*redis_, kShards, name, 1, 10).empty());
  sequence(*redis_, settings_, run_id_, {request(name, "a"), request(name, "b"), request(name, "c")});
  EXPECT_EQ(current_seq(*redis_, kShards, name), 3);
  const auto frames = read_log(*redis_, kShards, name, 2, 3);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].first, 2);
  EXPECT_EQ(*frames[0].second, "<b|2>");
  EXPECT_EQ(frames[1].first, 3);

  redis::Client client(config_, 1);
  boost::asio::io_context io;
  auto seq = boost::asio::co_spawn(io, async_current_seq(client, kShards, name), boost::asio::use_future);
  auto log_frames =
      boost::asio::co_spawn(io, async_read_log(client, kShards, name, 1, 3), boost::asio::use_future);
  io.run();
  EXPECT_EQ(seq.get(), 3);
  const auto all = log_frames.get();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(*all[0].second, "<a|1>");
}

TEST_F(RoomsTest, AnUnreachableRedisThrowsRedisError) {
  RedisConfig nowhere;
  nowhere.address = HostPort::parse("127.0.0.1:1");
  nowhere.timeout = std::chrono::milliseconds(500);
  redis::Connection down(nowhere);
  EXPECT_THROW(sequence(down, settings_, "run", {request(room("down"), "1")}), redis::RedisError);
  EXPECT_THROW(current_seq(down, kShards, "x"), redis::RedisError);
}

// ------------------------------------------------------------- seq guard

TEST_F(RoomsTest, TheRunIdIsTheServersAndStableOnAConnection) {
  EXPECT_EQ(run_id_.size(), 40u) << run_id_;
  EXPECT_EQ(run_id_.find_first_not_of("0123456789abcdef"), std::string::npos) << run_id_;
  redis::Connection other(config_);
  EXPECT_EQ(server_run_id(other), run_id_);
  EXPECT_EQ(server_run_id(*redis_), run_id_);
}

// Without a mark (a room never reserved, or data from before the guard) no
// seq is given and nothing is written; the room's later messages wait, other
// rooms go on.
TEST_F(RoomsTest, ARoomWithoutAMarkNeedsSeqsAndWritesNothing) {
  const auto bare = unguarded_room("bare");
  const auto fine = room("fine");
  const auto results =
      sequence(*redis_, settings_, run_id_, {request(bare, "1"), request(fine, "1"), request(bare, "2")});
  EXPECT_EQ(results[0].status, Status::needs_seqs);
  EXPECT_EQ(results[0].error, "NEEDSEQ " + bare);
  EXPECT_EQ(results[1].status, Status::sequenced);
  EXPECT_EQ(results[2].status, Status::not_run);
  EXPECT_EQ(get(seq_key(bare)), "(nil)");
  EXPECT_EQ(get(dedupe_key(bare, "1")), "(nil)");
  EXPECT_TRUE(log(bare).empty());
  EXPECT_TRUE(sync_entries(bare).empty());
}

// A mark of another run is what a restarted Redis, one restored from an
// older AOF or a promoted replica holds: it must not be used.
TEST_F(RoomsTest, AMarkOfAnotherRunIsNotUsed) {
  const auto name = unguarded_room("otherrun");
  const std::string other(40, 'f');
  ASSERT_TRUE(install_seqs(*redis_, kShards, other, {{name, 0, 1000}}).at(0).error.empty());
  EXPECT_EQ(mark(name), "1000/" + other);
  const auto results = sequence(*redis_, settings_, run_id_, {request(name, "1")});
  EXPECT_EQ(results[0].status, Status::needs_seqs);
  EXPECT_EQ(get(seq_key(name)), "(nil)");
}

// Seqs are given up to the mark and not one more; the next block of the same
// run extends the mark and keeps the seq (this Redis lost nothing).
TEST_F(RoomsTest, TheMarkBoundsTheSeqsAndTheSameRunExtendsIt) {
  const auto name = unguarded_room("bound");
  auto installed = install_seqs(*redis_, kShards, run_id_, {{name, 0, 3}});
  ASSERT_TRUE(installed[0].error.empty()) << installed[0].error;
  EXPECT_EQ(installed[0].seq_before, 0);
  EXPECT_EQ(installed[0].seq, 0);
  EXPECT_FALSE(installed[0].skipped());
  std::vector<SequenceRequest> requests;
  for (int i = 1; i <= 5; ++i) requests.push_back(request(name, std::to_string(i)));
  auto results = sequence(*redis_, settings_, run_id_, requests);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(results[i].seq, i + 1);
  EXPECT_EQ(results[3].status, Status::needs_seqs);
  EXPECT_EQ(results[4].status, Status::not_run);
  EXPECT_EQ(get(seq_key(name)), "3");
  EXPECT_EQ(get(dedupe_key(name, "4")), "(nil)");
  EXPECT_EQ(log(name).size(), 3u);

  installed = install_seqs(*redis_, kShards, run_id_, {{name, 3, 6}});
  ASSERT_TRUE(installed[0].error.empty()) << installed[0].error;
  EXPECT_EQ(installed[0].seq, 3);
  EXPECT_EQ(installed[0].reserved, 6);
  EXPECT_FALSE(installed[0].skipped());
  // A stale, lower block of the same run never lowers the mark.
  installed = install_seqs(*redis_, kShards, run_id_, {{name, 0, 4}});
  EXPECT_EQ(installed[0].reserved, 6);
  EXPECT_EQ(mark(name), "6/" + run_id_);

  results = sequence(*redis_, settings_, run_id_, {requests[3], requests[4], requests[0]});
  EXPECT_EQ(results[0].seq, 4);
  EXPECT_EQ(results[1].seq, 5);
  EXPECT_EQ(results[2].seq, 1);  // a repeat needs no new seq
  EXPECT_TRUE(results[2].repeat);
}

// A Redis that lost writes (simulated: the seq set back and the mark of an
// earlier run) continues above the previous reservation, so no seq any client
// may have seen is given again.
TEST_F(RoomsTest, AnotherRunContinuesAboveThePreviousReservation) {
  const auto name = unguarded_room("rollback");
  const std::string earlier(40, 'e');
  ASSERT_TRUE(install_seqs(*redis_, kShards, earlier, {{name, 0, 10}}).at(0).error.empty());
  // The lost state: the seq was 7 when Redis crashed, its AOF had 2.
  redis_->command({"SET", seq_key(name), "2"});
  const auto installed = install_seqs(*redis_, kShards, run_id_, {{name, 10, 20}});
  ASSERT_TRUE(installed[0].error.empty()) << installed[0].error;
  EXPECT_EQ(installed[0].seq_before, 2);
  EXPECT_EQ(installed[0].seq, 10);
  EXPECT_EQ(installed[0].reserved, 20);
  EXPECT_TRUE(installed[0].skipped());
  EXPECT_EQ(mark(name), "20/" + run_id_);
  const auto results = sequence(*redis_, settings_, run_id_, {request(name, "next")});
  ASSERT_EQ(results[0].status, Status::sequenced) << results[0].error;
  EXPECT_EQ(results[0].seq, 11);
  EXPECT_EQ(log(name).back().first, "11-0");
}

// A room sequenced before the guard existed has a seq and no mark: its seq is
// kept (previous 0), and a block ending above it makes it go on.
TEST_F(RoomsTest, ARoomFromBeforeTheGuardKeepsItsSeq) {
  const auto name = unguarded_room("legacy");
  redis_->command({"SET", seq_key(name), "5000"});
  redis_->command({"XADD", log_key(name), "5000-0", "f", "old"});
  auto installed = install_seqs(*redis_, kShards, run_id_, {{name, 0, 1000}});
  EXPECT_EQ(installed[0].seq_before, 5000);
  EXPECT_EQ(installed[0].seq, 5000);
  EXPECT_FALSE(installed[0].skipped());
  EXPECT_EQ(sequence(*redis_, settings_, run_id_, {request(name, "a")})[0].status, Status::needs_seqs);
  installed = install_seqs(*redis_, kShards, run_id_, {{name, 5000, 6000}});
  EXPECT_EQ(installed[0].seq, 5000);
  const auto results = sequence(*redis_, settings_, run_id_, {request(name, "a")});
  EXPECT_EQ(results[0].seq, 5001);
}

TEST_F(RoomsTest, InstallingOverKeysOfAnotherShapeFailsThatRoomOnly) {
  const auto broken = unguarded_room("badmark");
  const auto fine = unguarded_room("goodmark");
  redis_->command({"HSET", mark_key(broken), "reserved", "lots"});
  const auto installed = install_seqs(*redis_, kShards, run_id_, {{broken, 0, 10}, {fine, 0, 10}});
  EXPECT_NE(installed[0].error.find("does not hold a reservation"), std::string::npos) << installed[0].error;
  EXPECT_TRUE(installed[1].error.empty()) << installed[1].error;
  EXPECT_EQ(mark(broken), "lots/(nil)");
  EXPECT_THROW(install_seqs(*redis_, kShards, run_id_, {{fine, 10, 10}}), std::invalid_argument);
  EXPECT_THROW(install_seqs(*redis_, kShards, "", {{fine, 10, 20}}), std::invalid_argument);
  EXPECT_THROW(sequence(*redis_, settings_, "", {request(fine, "1")}), std::invalid_argument);
}

TEST(RoomsRefusal, ErrorCodesThatMeanNotNow) {
  EXPECT_TRUE(redis::is_refusal("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_TRUE(redis::is_refusal("LOADING Redis is loading the dataset in memory"));
  EXPECT_TRUE(redis::is_refusal("BUSY Redis is busy running a script."));
  EXPECT_TRUE(redis::is_refusal("READONLY You can't write against a read only replica."));
  EXPECT_FALSE(redis::is_refusal("ERR value is not an integer or out of range"));
  EXPECT_FALSE(redis::is_refusal("WRONGTYPE Operation against a key holding the wrong kind of value"));
  EXPECT_FALSE(redis::is_refusal("BUSYKEY Target key name already exists."));
}

}  // namespace
}  // namespace rtmc::rooms
