// Integration tests of the Sequencer against the real Redis (RTMC_TEST_REDIS)
// and RabbitMQ (RTMC_TEST_AMQP). Each test consumes its own uniquely named
// ingest and dead-letter queues and uses rooms of its own, so it never
// competes with a running stack. The rooms of a test share one shard, as the
// poison-message cases need: one of 64, above the shards 0-15 the test
// stack's syncer reads (scripts/test.sh), which would trim the sync entries
// these tests look at.
//
// The tests that make Redis refuse writes (maxmemory) or pause it (CLIENT
// PAUSE) change the server for every client: they run alone (RUN_SERIAL) and
// restore it on every exit path.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/keys.hpp"
#include "gateway/sequencer.hpp"
#include "protocol/frames.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"
#include "store/seq_reservations.hpp"

namespace rtmc::gateway {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kShards = 64;
constexpr std::uint32_t kFirstUnsyncedShard = 16;

std::string random_digits() {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return std::to_string(digits(device) % 1000000000000ULL);
}

// Polls `done` until it holds or `timeout` passes; the caller asserts on the
// result, so a slow machine only makes the test slower, never wrong.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 20s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

class SequencerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* redis = std::getenv("RTMC_TEST_REDIS");
    const char* amqp = std::getenv("RTMC_TEST_AMQP");
    ASSERT_NE(redis, nullptr)
        << "RTMC_TEST_REDIS is not set: it must name a Redis (host:port or redis:// URL)";
    ASSERT_NE(amqp, nullptr) << "RTMC_TEST_AMQP is not set: it must name a RabbitMQ (AMQP URL)";
    const char* pg = std::getenv("RTMC_TEST_PG");
    ASSERT_NE(pg, nullptr)
        << "RTMC_TEST_PG is not set: it must be a libpq connection string (seq reservations)";
    common_.pg.conninfo = pg;
    database_ = std::make_unique<pg::Connection>(common_.pg);
    pg::migrate(*database_);
    common_.redis = RedisConfig::parse(redis);  // host:port or redis:// with credentials
    common_.redis.timeout = 2000ms;
    common_.amqp.url = amqp;
    common_.amqp.ingest_shards = kShards;
    shard_ = kFirstUnsyncedShard +
             static_cast<std::uint32_t>(std::stoull(random_digits()) % (kShards - kFirstUnsyncedShard));
    common_.limits.dedupe_window = 600s;
    common_.limits.room_log_length = 100;
    const auto suffix = random_digits();
    options_.queues = {std::string("rtmc.itest.ingest.") + suffix};
    options_.dead_letter_queue = std::string("rtmc.itest.dead.") + suffix;
    admin_ = std::make_unique<redis::Connection>(common_.redis);
    broker_ = std::make_unique<amqp::Connection>(common_.amqp);
    broker_->declare_ingest_queue(options_.queues.front());
  }

  void TearDown() override {
    sequencer_.reset();
    if (broker_) {
      amqp::Connection cleanup(common_.amqp);
      cleanup.delete_queue(options_.queues.front());
      cleanup.delete_queue(options_.dead_letter_queue);  // deleting a missing queue is no error
    }
    if (admin_) {
      for (const auto& room : rooms_) {
        auto keys = admin_->command({"KEYS", std::string("*:") + room + "*"});
        for (const auto& key : keys.elements) admin_->command({"DEL", key.str});
      }
    }
    if (database_)
      for (const auto& room : rooms_)
        database_->exec("DELETE FROM room_seq_reservations WHERE room = $1", {room});
  }

  std::string room(const std::string& name) {
    std::string candidate;
    do {
      candidate = std::string("seq-itest-") + name + "-" + random_digits();
    } while (shard_of(candidate, kShards) != shard_);
    rooms_.push_back(candidate);
    return rooms_.back();
  }

  std::string publish(const std::string& room, const std::string& id, const std::string& body = "hello") {
    auto text = protocol::encode_ingest({room, id, "alice", body});
    broker_->publish({"", options_.queues.front(), text, true, true});
    return text;
  }

  // Several ingest messages as one AMQP message (scale design, Contract A).
  std::vector<std::string> publish_batch(
      const std::vector<std::pair<std::string, std::string>>& rooms_and_ids) {
    std::vector<std::string> lines;
    for (const auto& [room, id] : rooms_and_ids)
      lines.push_back(protocol::encode_ingest({room, id, "alice", "hi"}));
    broker_->publish({"", options_.queues.front(),
                      amqp::join_batch(std::vector<std::string_view>(lines.begin(), lines.end())), true,
                      true});
    return lines;
  }

  // n messages of `room` with ids <prefix>0..<prefix>n-1, `per_body` lines per AMQP message.
  void publish_many(const std::string& room, const std::string& prefix, int from, int to,
                    int per_body = 100) {
    std::vector<std::pair<std::string, std::string>> lines;
    for (int n = from; n < to; ++n) {
      lines.emplace_back(room, prefix + std::to_string(n));
      if (static_cast<int>(lines.size()) == per_body) {
        publish_batch(lines);
        lines.clear();
      }
    }
    if (!lines.empty()) publish_batch(lines);
  }

  // The room's log holds exactly seqs 1..n, the message with id <prefix>k at
  // seq k+1, and the shard's sync stream n entries of it.
  void expect_log_in_order(const std::string& room, const std::string& prefix, int n) {
    const auto log = log_of(room);
    ASSERT_EQ(log.size(), static_cast<std::size_t>(n)) << room;
    for (int k = 0; k < n; ++k) {
      ASSERT_EQ(log[k].first, std::to_string(k + 1) + "-0") << room;
      ASSERT_NE(log[k].second.find("\"id\":\"" + prefix + std::to_string(k) + "\""), std::string::npos)
          << room << " seq " << k + 1 << ": " << log[k].second;
    }
    EXPECT_EQ(sync_entries_of(room), static_cast<std::size_t>(n)) << room;
  }

  void start() { sequencer_ = std::make_unique<Sequencer>(common_, options_); }
  const SequencerCounters& counters() const { return sequencer_->counters(); }

  std::string seq_of(const std::string& room) {
    auto reply = admin_->command({"GET", keys::room_seq(shard_, room)});
    return reply.is_nil() ? "" : reply.str;
  }
  std::vector<std::pair<std::string, std::string>> log_of(const std::string& room) {
    std::vector<std::pair<std::string, std::string>> entries;
    auto reply = admin_->command({"XRANGE", keys::room_log(shard_, room), "-", "+"});
    for (const auto& entry : reply.elements)
      entries.emplace_back(entry.elements[0].str, entry.elements[1].elements[1].str);
    return entries;
  }
  std::size_t sync_entries_of(const std::string& room) {
    std::size_t count = 0;
    auto reply = admin_->command({"XRANGE", keys::sync_stream(shard_), "-", "+"});
    for (const auto& entry : reply.elements)
      if (entry.elements[1].elements.size() >= 2 && entry.elements[1].elements[1].str == room) ++count;
    return count;
  }
  bool dedupe_exists(const std::string& room, const std::string& id) {
    return admin_->command({"EXISTS", keys::dedupe(shard_, room, "alice", id)}).integer == 1;
  }

  std::string mark_of(const std::string& room) {
    auto reply = admin_->command({"HMGET", keys::room_seq_mark(shard_, room), "reserved", "run"});
    return (reply.elements.at(0).is_nil() ? "" : reply.elements[0].str) + "/" +
           (reply.elements.at(1).is_nil() ? "" : reply.elements[1].str);
  }

  CommonOptions common_;
  Sequencer::Options options_;
  std::unique_ptr<pg::Connection> database_;
  std::unique_ptr<redis::Connection> admin_;
  std::unique_ptr<amqp::Connection> broker_;
  std::unique_ptr<Sequencer> sequencer_;
  std::vector<std::string> rooms_;
  std::uint32_t shard_ = kFirstUnsyncedShard;
};

// A message whose script always fails (its room's seq is not a number) goes
// to the dead-letter queue after max_sequence_attempts failed attempts and is
// acked; a message of another room in the same shard, published after it, is
// sequenced all the same.
TEST_F(SequencerTest, APoisonMessageIsDeadLetteredAfterMaxAttemptsAndOtherRoomsFlow) {
  common_.limits.max_sequence_attempts = 3;
  const auto poisoned = room("poisoned");
  const auto healthy = room("healthy");
  admin_->command({"SET", keys::room_seq(shard_, poisoned), "not-a-number"});
  const auto poison = publish(poisoned, "p1");
  publish(healthy, "h1");
  start();

  // Acked and fanned out, not only run in Redis.
  EXPECT_TRUE(eventually([&] { return seq_of(healthy) == "1" && counters().sequenced == 1; }))
      << "the healthy room was not sequenced";
  ASSERT_TRUE(eventually([&] { return counters().dead_lettered == 1; })) << "nothing was dead-lettered";
  EXPECT_EQ(counters().script_failures, 3u);
  EXPECT_EQ(counters().sequenced, 1u);

  amqp::Connection reader(common_.amqp);
  reader.consume(options_.dead_letter_queue);
  auto dead = reader.next(5000ms);
  ASSERT_TRUE(dead.has_value()) << "the dead-letter queue is empty";
  EXPECT_EQ(dead->body, poison);
  reader.ack(dead->delivery_tag);

  // Nothing of the poison message was written.
  EXPECT_EQ(seq_of(poisoned), "not-a-number");
  EXPECT_TRUE(log_of(poisoned).empty());
  EXPECT_FALSE(dedupe_exists(poisoned, "p1"));
  EXPECT_EQ(sync_entries_of(poisoned), 0u);

  // Both were acked: with the sequencer gone, nothing comes back.
  sequencer_.reset();
  amqp::Connection leftovers(common_.amqp);
  leftovers.consume(options_.queues.front());
  EXPECT_FALSE(leftovers.next(500ms).has_value()) << "a message was left un-acked";
}

// While a room's message is being retried, other rooms flow, the room's later
// messages wait behind it, and once the cause is repaired both are sequenced
// in the order sent. Nothing is dead-lettered before the limit.
TEST_F(SequencerTest, LaterMessagesOfAFailingRoomWaitBehindItAndKeepTheirOrder) {
  common_.limits.max_sequence_attempts = 1000;
  const auto stuck = room("stuck");
  const auto other = room("other");
  admin_->command({"SET", keys::room_seq(shard_, stuck), "broken"});
  publish(stuck, "first");
  publish(other, "o1");
  publish(stuck, "second");
  start();

  EXPECT_TRUE(eventually([&] { return seq_of(other) == "1" && counters().sequenced == 1; }))
      << "the other room was not sequenced";
  ASSERT_TRUE(eventually([&] { return counters().script_failures >= 2; }));
  EXPECT_EQ(counters().dead_lettered, 0u);
  EXPECT_TRUE(log_of(stuck).empty());

  admin_->command({"SET", keys::room_seq(shard_, stuck), "10"});
  ASSERT_TRUE(eventually([&] { return seq_of(stuck) == "12"; }))
      << "seq of the repaired room: " << seq_of(stuck);
  const auto log = log_of(stuck);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].first, "11-0");
  EXPECT_NE(log[0].second.find("\"id\":\"first\""), std::string::npos) << log[0].second;
  EXPECT_EQ(log[1].first, "12-0");
  EXPECT_NE(log[1].second.find("\"id\":\"second\""), std::string::npos) << log[1].second;
  EXPECT_EQ(counters().dead_lettered, 0u);
}

// A delivery holding several messages (Contract A) where one of them keeps
// failing: the others are sequenced meanwhile, the delivery stays un-acked
// (stopping the sequencer brings the whole body back), and once the failing
// one is dead-lettered -- its own line alone -- the delivery is acked.
TEST_F(SequencerTest, AFailingMessageOfABatchedDeliveryIsRetriedAloneAndTheDeliveryAckedAtTheEnd) {
  common_.limits.max_sequence_attempts = 1000;
  const auto poisoned = room("poisoned");
  const auto healthy = room("healthy");
  admin_->command({"SET", keys::room_seq(shard_, poisoned), "not-a-number"});
  const auto lines = publish_batch({{healthy, "h1"}, {poisoned, "p1"}, {healthy, "h2"}});
  start();
  ASSERT_TRUE(eventually([&] { return seq_of(healthy) == "2" && counters().script_failures >= 2; }))
      << "seq of the healthy room: " << seq_of(healthy);
  EXPECT_EQ(counters().sequenced, 0u) << "nothing is acked while a message of the delivery is open";
  sequencer_.reset();
  {
    amqp::Connection reader(common_.amqp);
    reader.consume(options_.queues.front());
    auto back = reader.next(5000ms);
    ASSERT_TRUE(back.has_value()) << "the delivery was acked with a message still open";
    EXPECT_EQ(amqp::split_batch(back->body).size(), 3u);
    // Closing the reader without an ack requeues it.
  }

  // Now the poisoned one fails for good: dead-lettered alone, the healthy
  // ones (redelivered) are repeats, and the delivery is acked.
  common_.limits.max_sequence_attempts = 2;
  start();
  ASSERT_TRUE(eventually([&] { return counters().dead_lettered == 1; })) << "nothing was dead-lettered";
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 2; }));
  EXPECT_EQ(seq_of(healthy), "2");
  EXPECT_EQ(log_of(healthy).size(), 2u);
  amqp::Connection reader(common_.amqp);
  reader.consume(options_.dead_letter_queue);
  auto dead = reader.next(5000ms);
  ASSERT_TRUE(dead.has_value()) << "the dead-letter queue is empty";
  EXPECT_EQ(dead->body, lines[1]);
  reader.ack(dead->delivery_tag);
  sequencer_.reset();
  amqp::Connection leftovers(common_.amqp);
  leftovers.consume(options_.queues.front());
  EXPECT_FALSE(leftovers.next(500ms).has_value()) << "the delivery was left un-acked";
}

// A batched delivery is sequenced per message, its room's new frames go out
// as one fan-out message in seq order (Contract B), and the same batch
// delivered again (a publisher's resend) is deduplicated message by message.
TEST_F(SequencerTest, ABatchIsFannedOutPerRoomInSeqOrderAndARedeliveredBatchIsDeduplicated) {
  const auto room_a = room("a");
  const auto room_b = room("b");
  amqp::Connection fanout(common_.amqp);
  fanout.declare_fanout_exchange();
  const auto queue = fanout.declare_private_queue();
  fanout.bind(queue, std::string(kFanoutExchange), room_a);
  fanout.consume(queue);

  const std::vector<std::pair<std::string, std::string>> batch{
      {room_a, "1"}, {room_b, "1"}, {room_a, "2"}, {room_a, "3"}};
  publish_batch(batch);
  start();
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 4; }));
  EXPECT_EQ(seq_of(room_a), "3");
  EXPECT_EQ(seq_of(room_b), "1");

  // Every frame of room a, once, in seq order; the body holds only room a.
  std::vector<std::int64_t> seqs;
  std::size_t bodies = 0;
  while (seqs.size() < 3) {
    auto delivery = fanout.next(5000ms);
    ASSERT_TRUE(delivery.has_value()) << seqs.size() << " frames of room a arrived";
    fanout.ack(delivery->delivery_tag);
    if (delivery->routing_key != room_a) continue;  // an exchange of type fanout delivers every room
    ++bodies;
    ASSERT_EQ(delivery->body.back(), '\n');
    for (const auto line : amqp::split_batch(delivery->body)) {
      auto header = protocol::peek_message(line);
      ASSERT_TRUE(header.has_value()) << line;
      EXPECT_EQ(header->room, room_a);
      seqs.push_back(header->seq);
    }
  }
  EXPECT_EQ(seqs, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(bodies, 1u) << "one fan-out message per room per sequenced batch";

  publish_batch(batch);
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 8; })) << "the repeat was not acked";
  EXPECT_EQ(seq_of(room_a), "3");
  EXPECT_EQ(seq_of(room_b), "1");
  EXPECT_EQ(log_of(room_a).size(), 3u);
  EXPECT_EQ(sync_entries_of(room_a), 3u);
}

// Reads the fan-out frames of the rooms it is bound to and checks, per room,
// that every seq first appears in order 1, 2, 3, ... (a repeat may come again
// later, with a seq already seen, never a new one out of turn).
class FanoutReader {
 public:
  FanoutReader(const CommonOptions& common, const std::vector<std::string>& rooms) : mq_(common.amqp) {
    mq_.declare_fanout_exchange();
    const auto queue = mq_.declare_private_queue();
    for (const auto& room : rooms) mq_.bind(queue, std::string(kFanoutExchange), room);
    mq_.consume(queue);
  }
  // Reads until every room has seen seqs 1..n, or nothing came for 10 s.
  ::testing::AssertionResult read_until(const std::map<std::string, std::int64_t>& wanted) {
    auto done = [&] {
      for (const auto& [room, n] : wanted)
        if (top_[room] < n) return false;
      return true;
    };
    while (!done()) {
      auto delivery = mq_.next(10000ms);
      if (!delivery) return ::testing::AssertionFailure() << "fan-out stopped before every seq arrived";
      mq_.ack(delivery->delivery_tag);
      for (const auto line : amqp::split_batch(delivery->body)) {
        auto header = protocol::peek_message(line);
        if (!header) return ::testing::AssertionFailure() << "not a message frame: " << line;
        auto& top = top_[header->room];
        if (header->seq == top + 1) {
          top = header->seq;
        } else if (header->seq > top) {
          return ::testing::AssertionFailure()
                 << header->room << ": seq " << header->seq << " fanned out after " << top;
        } else {
          ++repeats_;
        }
      }
    }
    return ::testing::AssertionSuccess();
  }
  std::size_t repeats() const { return repeats_; }

 private:
  amqp::Connection mq_;
  std::map<std::string, std::int64_t> top_;
  std::size_t repeats_ = 0;
};

// With two rounds in flight: a room of more than a round's worth of messages
// and two more rooms that go to Redis in a round of their own while the big
// room's is there. Every room's messages get seqs 1..n in the order sent, no
// seq skipped or given twice, fanned out strictly in seq order, all acked.
TEST_F(SequencerTest, RoundsInFlightKeepEachRoomsSeqsAndFanOutInOrder) {
  common_.limits.room_log_length = 10000;  // the whole log is checked
  options_.rounds_in_flight = 2;
  const auto big = room("big");
  const auto small_a = room("small-a");
  const auto small_b = room("small-b");
  FanoutReader fanout(common_, {big, small_a, small_b});
  publish_many(big, "b", 0, 3000);
  publish_many(small_a, "a", 0, 700, 50);
  publish_many(small_b, "s", 0, 700, 70);
  start();
  ASSERT_TRUE(fanout.read_until({{big, 3000}, {small_a, 700}, {small_b, 700}}));
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 4400; })) << counters().sequenced;
  EXPECT_EQ(seq_of(big), "3000");
  EXPECT_EQ(seq_of(small_a), "700");
  EXPECT_EQ(seq_of(small_b), "700");
  expect_log_in_order(big, "b", 3000);
  expect_log_in_order(small_a, "a", 700);
  expect_log_in_order(small_b, "s", 700);
  EXPECT_EQ(fanout.repeats(), 0u);
  EXPECT_EQ(counters().dead_lettered, 0u);
  EXPECT_GE(counters().rounds, 2u);
  // More than one round's worth was pending: the next round went out before
  // the previous one's fan-out.
  EXPECT_GE(counters().rounds_overlapped, 1u);
  sequencer_.reset();
  amqp::Connection leftovers(common_.amqp);
  leftovers.consume(options_.queues.front());
  EXPECT_FALSE(leftovers.next(500ms).has_value()) << "a delivery was left un-acked";
}

// The same messages published again (a publisher's resend) while the first
// copies are in rounds at Redis: each (sender, room, id) gets one seq, the
// resends are answered as repeats and acked, nothing is skipped.
TEST_F(SequencerTest, AResendWhileTheFirstCopyIsInFlightIsDeduplicated) {
  common_.limits.room_log_length = 10000;  // the whole log is checked
  options_.rounds_in_flight = 2;
  const auto name = room("resend");
  const auto other = room("resend-other");
  FanoutReader fanout(common_, {name, other});
  publish_many(name, "m", 0, 2500);
  publish_many(other, "o", 0, 500);
  publish_many(name, "m", 0, 1000);  // resends of the first 1000
  publish_many(other, "o", 0, 500);
  publish_many(name, "m", 2500, 3000);
  start();
  ASSERT_TRUE(fanout.read_until({{name, 3000}, {other, 500}}));
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 5000; })) << counters().sequenced;
  EXPECT_EQ(seq_of(name), "3000");
  EXPECT_EQ(seq_of(other), "500");
  expect_log_in_order(name, "m", 3000);
  expect_log_in_order(other, "o", 500);
  EXPECT_EQ(counters().dead_lettered, 0u);
  sequencer_.reset();
  amqp::Connection leftovers(common_.amqp);
  leftovers.consume(options_.queues.front());
  EXPECT_FALSE(leftovers.next(500ms).has_value()) << "a delivery was left un-acked";
}

// Restores a Redis setting on every exit path.
class RedisSetting {
 public:
  RedisSetting(redis::Connection& redis, std::string name) : redis_(redis), name_(std::move(name)) {
    auto reply = redis_.command({"CONFIG", "GET", name_});
    if (reply.elements.size() == 2) previous_ = reply.elements[1].str;
  }
  ~RedisSetting() { redis_.command({"CONFIG", "SET", name_, previous_}); }
  void set(const std::string& value) { redis_.command({"CONFIG", "SET", name_, value}); }
  RedisSetting(const RedisSetting&) = delete;
  RedisSetting& operator=(const RedisSetting&) = delete;

 private:
  redis::Connection& redis_;
  std::string name_;
  std::string previous_;
};

// Redis refusing writes (out of memory) is an outage, not a poison message:
// nothing is dead-lettered however often it refuses, the RabbitMQ connection
// is kept, and once Redis takes writes again every message is sequenced
// exactly once.
TEST_F(SequencerTest, RedisOutOfMemoryDeadLettersNothingAndLosesNothing) {
  common_.limits.max_sequence_attempts = 2;
  std::vector<std::string> names;
  for (int i = 0; i < 4; ++i) names.push_back(room(std::string("oom") + std::to_string(i)));
  {
    RedisSetting policy(*admin_, "maxmemory-policy");
    RedisSetting maxmemory(*admin_, "maxmemory");
    policy.set("noeviction");
    maxmemory.set("1");
    for (int n = 0; n < 5; ++n)
      for (const auto& name : names) publish(name, std::string("m") + std::to_string(n));
    start();
    ASSERT_TRUE(eventually([&] { return counters().redis_refusals + counters().redis_failures >= 4; }));
    EXPECT_EQ(counters().dead_lettered, 0u);
    EXPECT_EQ(counters().sequenced, 0u);
    EXPECT_EQ(counters().amqp_connections, 1u) << "the sequencer reconnected to RabbitMQ during the outage";
  }  // Redis takes writes again
  for (const auto& name : names) {
    ASSERT_TRUE(eventually([&] { return seq_of(name) == "5"; }))
        << name << " is at seq '" << seq_of(name) << "'";
    const auto log = log_of(name);
    ASSERT_EQ(log.size(), 5u);
    for (std::size_t i = 0; i < log.size(); ++i) EXPECT_EQ(log[i].first, std::to_string(i + 1) + "-0");
    EXPECT_EQ(sync_entries_of(name), 5u);
  }
  EXPECT_EQ(counters().dead_lettered, 0u);
  EXPECT_EQ(counters().sequenced, 20u);
}

// Pauses every client's writes on the test Redis for as long as it lives.
class RedisWritePause {
 public:
  explicit RedisWritePause(redis::Connection& redis) : redis_(redis) {
    redis_.command({"CLIENT", "PAUSE", "60000", "WRITE"});
  }
  ~RedisWritePause() { redis_.command({"CLIENT", "UNPAUSE"}); }
  RedisWritePause(const RedisWritePause&) = delete;
  RedisWritePause& operator=(const RedisWritePause&) = delete;

 private:
  redis::Connection& redis_;
};

// During a Redis outage (every script times out) the sequencer backs off and
// keeps its RabbitMQ connection instead of reconnecting and redeclaring its
// topology on every retry; afterwards each message is sequenced once.
TEST_F(SequencerTest, ARedisOutageIsRetriedWithBackoffOnTheSameRabbitConnection) {
  common_.redis.timeout = 300ms;
  const auto name = room("outage");
  {
    RedisWritePause pause(*admin_);
    for (int n = 0; n < 5; ++n) publish(name, std::string("m") + std::to_string(n));
    start();
    ASSERT_TRUE(eventually([&] { return counters().redis_failures >= 4; }));
    EXPECT_LE(counters().amqp_connections, 2u) << "reconnected to RabbitMQ on Redis failures";
    EXPECT_EQ(counters().dead_lettered, 0u);
  }
  ASSERT_TRUE(eventually([&] { return seq_of(name) == "5"; })) << "seq '" << seq_of(name) << "'";
  EXPECT_EQ(log_of(name).size(), 5u);
  EXPECT_EQ(sync_entries_of(name), 5u);
  EXPECT_EQ(counters().dead_lettered, 0u);
}

// Redis stops answering while two rounds are at Redis (writes paused, every
// call times out): both fail, nothing is acked for them, and once Redis is
// back every room holds exactly its messages at seqs 1..n in the order sent
// -- none lost, no seq given twice or skipped -- all fanned out in order.
TEST_F(SequencerTest, ARedisFailureWithRoundsInFlightLosesNothingAndReusesNoSeq) {
  common_.limits.room_log_length = 10000;  // the whole log is checked
  common_.redis.timeout = 300ms;
  options_.rounds_in_flight = 2;
  const auto big = room("fail-big");
  const auto small = room("fail-small");
  FanoutReader fanout(common_, {big, small});
  {
    RedisWritePause pause(*admin_);
    publish_many(big, "b", 0, 2500);
    publish_many(small, "s", 0, 600, 60);
    start();
    ASSERT_TRUE(eventually([&] { return counters().redis_failures >= 3; }));
    EXPECT_EQ(counters().sequenced, 0u);
  }
  ASSERT_TRUE(fanout.read_until({{big, 2500}, {small, 600}}));
  ASSERT_TRUE(eventually([&] { return counters().sequenced == 3100; })) << counters().sequenced;
  expect_log_in_order(big, "b", 2500);
  expect_log_in_order(small, "s", 600);
  EXPECT_EQ(counters().dead_lettered, 0u);
}

// Seqs come in blocks reserved in PostgreSQL before they are used. When the
// Redis run changes under a room (simulated: the mark's run rewritten, the
// seq set back as an older AOF would have it), the room continues above its
// last reservation: no seq is given twice.
TEST_F(SequencerTest, SeqsAreReservedInBlocksAndARunChangeContinuesAboveThem) {
  options_.seq_block = 3;
  const auto name = room("blocks");
  for (int n = 1; n <= 7; ++n) publish(name, std::string("m") + std::to_string(n));
  start();
  ASSERT_TRUE(eventually([&] { return seq_of(name) == "7" && counters().sequenced == 7; }))
      << "seq '" << seq_of(name) << "'";
  EXPECT_EQ(seq_reservations::reserved(*database_, name), 9);
  EXPECT_EQ(counters().seq_blocks, 3u);
  EXPECT_EQ(counters().seq_skips, 0u);
  const auto run_id = rooms::server_run_id(*admin_);
  EXPECT_EQ(mark_of(name), "9/" + run_id);

  admin_->command({"HSET", keys::room_seq_mark(shard_, name), "run", std::string(40, '0')});
  admin_->command({"SET", keys::room_seq(shard_, name), "4"});
  publish(name, "after");
  ASSERT_TRUE(eventually([&] { return seq_of(name) == "10"; })) << "seq '" << seq_of(name) << "'";
  const auto log = log_of(name);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().first, "10-0");
  EXPECT_NE(log.back().second.find("\"id\":\"after\""), std::string::npos) << log.back().second;
  EXPECT_EQ(counters().seq_skips, 1u);
  EXPECT_EQ(counters().seqs_skipped, 5u);  // 5..9
  EXPECT_EQ(seq_reservations::reserved(*database_, name), 12);
  EXPECT_EQ(mark_of(name), "12/" + run_id);
}

// PostgreSQL unreachable: a room that needs a block waits, un-acked and never
// dead-lettered, while a room with seqs left flows; the waiting message is
// sequenced once a sequencer can reserve again.
TEST_F(SequencerTest, WithoutPostgresRoomsThatNeedSeqsWaitAndOthersFlow) {
  const auto reserved = room("reserved");
  const auto waiting = room("waiting");
  const auto run_id = rooms::server_run_id(*admin_);
  ASSERT_TRUE(rooms::install_seqs(*admin_, kShards, run_id, {{reserved, 0, 100}}).at(0).error.empty());
  const auto real_pg = common_.pg;
  common_.pg.conninfo = "host=127.0.0.1 port=1 dbname=rtmc user=rtmc connect_timeout=1";
  publish(waiting, "w1");
  publish(reserved, "r1");
  publish(reserved, "r2");
  start();
  ASSERT_TRUE(eventually([&] { return seq_of(reserved) == "2"; })) << "the reserved room did not flow";
  ASSERT_TRUE(eventually([&] { return counters().pg_failures >= 2; }));
  EXPECT_EQ(seq_of(waiting), "");
  EXPECT_EQ(counters().dead_lettered, 0u);
  EXPECT_EQ(counters().script_failures, 0u);
  EXPECT_EQ(counters().sequenced, 2u);

  sequencer_.reset();  // its un-acked message goes back to the queue
  common_.pg = real_pg;
  start();
  ASSERT_TRUE(eventually([&] { return seq_of(waiting) == "1"; })) << "seq '" << seq_of(waiting) << "'";
  EXPECT_EQ(log_of(waiting).size(), 1u);
  EXPECT_EQ(seq_reservations::reserved(*database_, waiting), kDefaultSeqBlock);
}

}  // namespace
}  // namespace rtmc::gateway
