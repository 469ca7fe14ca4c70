// Integration tests of the syncer against the real Redis (RTMC_TEST_REDIS)
// and PostgreSQL (RTMC_TEST_PG). Each test writes to sync streams of shards
// of its own (far above the ingest shards the test stack's syncer reads) and
// to rooms of its own, and deletes both at the end.
//
// APostgresOutageLosesNothingAndTheBacklogDrains stops the shared test
// PostgreSQL (RTMC_TEST_PG_STOP / RTMC_TEST_PG_START from scripts/services.sh)
// and runs alone (RUN_SERIAL).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include "common/keys.hpp"
#include "protocol/frames.hpp"
#include "store/itest_env.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/stalling_proxy_for_tests.hpp"
#include "syncer/syncer.hpp"

namespace rtmc::syncer {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 30s) {
  const auto until = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

struct Message {
  std::string room;
  std::int64_t seq = 0;
  std::string id;
  std::string sender;
  std::string body;
  std::int64_t ts = 0;
  auto operator<=>(const Message&) const = default;
};

// rtmc-syncer as a child process that dies with the test.
class ChildSyncer {
 public:
  ChildSyncer(std::vector<std::string> args, std::map<std::string, std::string> env) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
      std::vector<char*> argv;
      std::string binary = RTMC_SYNCER_BIN;
      argv.push_back(binary.data());
      for (auto& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ChildSyncer() { kill9(); }
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

class SyncerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto redis = itest::env("RTMC_TEST_REDIS");
    const auto pg = itest::env("RTMC_TEST_PG");
    ASSERT_TRUE(redis && pg) << "RTMC_TEST_REDIS and RTMC_TEST_PG must name the test services";
    redis_config_ = RedisConfig::parse(*redis);
    redis_config_.timeout = 5000ms;
    pg_config_.conninfo = *pg;
    redis_ = std::make_unique<redis::Connection>(redis_config_);
    db_ = std::make_unique<pg::Connection>(pg_config_, pg::Options{30000ms, 0});
    pg::migrate(*db_);
    // Shards of this test only: the stack's syncer reads 0-15.
    const auto base = 1000 + static_cast<std::uint32_t>(std::stoull(itest::unique("")) % 1000000000ULL);
    for (std::uint32_t i = 0; i < 4; ++i) shards_.push_back(base + i * 7);
    prefix_ = itest::unique("sync-itest-") + "-";
  }

  void TearDown() override {
    syncers_.clear();
    if (redis_)
      for (auto shard : shards_) redis_->command({"DEL", keys::sync_stream(shard)});
    if (db_ && !rooms_.empty()) {
      std::vector<std::string> rooms(rooms_.begin(), rooms_.end());
      try {
        db_->exec("DELETE FROM messages WHERE room = ANY($1::text[])", {pg::text_array(rooms)});
        db_->exec("DELETE FROM rooms WHERE room = ANY($1::text[])", {pg::text_array(rooms)});
      } catch (const std::exception& error) {
        ADD_FAILURE() << "cleanup: " << error.what();
      }
    }
  }

  std::string room(int i) {
    auto name = prefix_;
    name += std::to_string(i);
    rooms_.insert(name);
    return name;
  }
  std::uint32_t shard_of_room(const std::string& name) const {
    return shards_[shard_of(name, static_cast<std::uint32_t>(shards_.size()))];
  }

  SyncerConfig config() const {
    SyncerConfig config;
    config.redis = redis_config_;
    config.pg = pg_config_;
    config.shards = shards_;
    config.batch_size = 100;
    config.batch_wait = 20ms;
    return config;
  }
  Syncer& start(SyncerConfig config) {
    syncers_.push_back(std::make_unique<Syncer>(std::move(config)));
    return *syncers_.back();
  }

  // XADDs the messages to their rooms' sync streams, as the sequencing
  // script writes them, in one pipeline.
  void add(const std::vector<Message>& messages) {
    std::vector<std::vector<std::string>> commands;
    for (const auto& m : messages)
      commands.push_back({"XADD", keys::sync_stream(shard_of_room(m.room)), "*", "room", m.room, "seq",
                          std::to_string(m.seq), "f",
                          protocol::message_frame(m.room, m.seq, m.id, m.sender, m.body, m.ts)});
    for (const auto& reply : redis_->pipeline(commands)) ASSERT_FALSE(reply.is_error()) << reply.str;
  }

  // Messages first_index .. first_index+n-1 of a run over `rooms` rooms,
  // interleaved: message i is seq i / rooms + 1 of room i % rooms.
  std::vector<Message> messages(int rooms, int n, int first_index = 0) {
    std::vector<Message> out;
    for (int i = first_index; i < first_index + n; ++i) {
      const auto name = room(i % rooms);
      const std::int64_t s = i / rooms + 1;
      // Appending, not "literal" + string: GCC 12 reports a false -Wrestrict on that.
      std::string id("m");
      id += std::to_string(i);
      std::string body("body ");
      body += std::to_string(i);
      body += " \"quoted\" \\ {a,b} ünï €";
      out.push_back({name, s, id, i % 2 ? "alice" : "Bob_2", body, 1700000000000 + i * 3});
    }
    return out;
  }

  std::int64_t stream_lengths() {
    std::int64_t total = 0;
    for (auto shard : shards_) total += redis_->command({"XLEN", keys::sync_stream(shard)}).integer;
    return total;
  }
  std::int64_t pending() {
    std::int64_t total = 0;
    for (auto shard : shards_) {
      auto reply = redis_->command({"XPENDING", keys::sync_stream(shard), std::string(kGroup)});
      if (reply.type == redis::Reply::Type::array && !reply.elements.empty())
        total += reply.elements[0].integer;
    }
    return total;
  }
  std::int64_t pending_of(const std::string& consumer) {
    std::int64_t total = 0;
    for (auto shard : shards_) {
      auto reply = redis_->command({"XPENDING", keys::sync_stream(shard), std::string(kGroup)});
      if (reply.type != redis::Reply::Type::array || reply.elements.size() < 4) continue;
      for (const auto& owner : reply.elements[3].elements)
        if (owner.elements.size() == 2 && owner.elements[0].str == consumer)
          total += std::stoll(owner.elements[1].str);
    }
    return total;
  }

  std::vector<std::string> room_list() const { return {rooms_.begin(), rooms_.end()}; }

  std::int64_t rows() {
    auto result = db_->exec("SELECT count(*) FROM messages WHERE room = ANY($1::text[])",
                            {pg::text_array(room_list())});
    return std::stoll(*result.rows.at(0).at(0));
  }

  std::vector<Message> stored() {
    auto result = db_->exec(
        "SELECT room, seq, id, sender, body, (extract(epoch FROM created_at) * 1000)::bigint FROM messages "
        "WHERE room = ANY($1::text[]) ORDER BY room, seq",
        {pg::text_array(room_list())});
    std::vector<Message> out;
    for (const auto& row : result.rows)
      out.push_back({*row[0], std::stoll(*row[1]), *row[2], *row[3], *row[4], std::stoll(*row[5])});
    return out;
  }

  // Each room's row of `rooms` must match the messages stored for it.
  void expect_rooms_match(const std::vector<Message>& expected) {
    std::map<std::string, std::tuple<std::int64_t, std::int64_t, std::int64_t>>
        want;  // last_seq, count, last_ts
    for (const auto& m : expected) {
      auto& [last_seq, count, last_ts] = want[m.room];
      last_seq = std::max(last_seq, m.seq);
      count += 1;
      last_ts = std::max(last_ts, m.ts);
    }
    auto result = db_->exec(
        "SELECT room, last_seq, message_count, (extract(epoch FROM last_ts) * 1000)::bigint FROM rooms "
        "WHERE room = ANY($1::text[]) ORDER BY room",
        {pg::text_array(room_list())});
    std::map<std::string, std::tuple<std::int64_t, std::int64_t, std::int64_t>> got;
    for (const auto& row : result.rows)
      got[*row[0]] = {std::stoll(*row[1]), std::stoll(*row[2]), std::stoll(*row[3])};
    EXPECT_EQ(got, want);
  }

  static std::vector<Message> sorted(std::vector<Message> messages) {
    std::sort(messages.begin(), messages.end());
    return messages;
  }

  RedisConfig redis_config_;
  PgConfig pg_config_;
  std::unique_ptr<redis::Connection> redis_;
  std::unique_ptr<pg::Connection> db_;
  std::vector<std::uint32_t> shards_;
  std::string prefix_;
  std::set<std::string> rooms_;
  std::vector<std::unique_ptr<Syncer>> syncers_;
};

TEST_F(SyncerTest, EntriesEndInPostgresOnceWithTheirColumnsAndTheRoomsRow) {
  auto all = messages(5, 2500);
  // Already in PostgreSQL (an earlier syncer committed it, then died before
  // its XACK): re-delivered, it inserts nothing and is not counted again.
  const auto& early = all[7];
  db_->exec(
      "INSERT INTO messages (room, seq, id, sender, body, created_at) VALUES "
      "($1, $2, $3, $4, $5, timestamptz 'epoch' + $6 * interval '1 millisecond')",
      {early.room, std::to_string(early.seq), early.id, early.sender, early.body, std::to_string(early.ts)});
  db_->exec("INSERT INTO rooms VALUES ($1, $2, 1, timestamptz 'epoch' + $3 * interval '1 millisecond')",
            {early.room, std::to_string(early.seq), std::to_string(early.ts)});
  add(all);
  add({all[3], all[4]});  // delivered twice
  // A foreign entry in the stream must not block it.
  redis_->command({"XADD", keys::sync_stream(shards_[0]), "*", "room", room(0), "seq", "x", "f", "{}"});

  auto& syncer = start(config());
  ASSERT_TRUE(eventually([&] { return stream_lengths() == 0; })) << stream_lengths() << " entries left";
  EXPECT_EQ(pending(), 0);
  EXPECT_EQ(stored(), sorted(all));
  expect_rooms_match(all);
  EXPECT_EQ(syncer.counters().inserted, all.size() - 1);
  EXPECT_EQ(syncer.counters().duplicates, 3u);
  EXPECT_EQ(syncer.counters().malformed, 1u);
  EXPECT_EQ(syncer.counters().trimmed, all.size() + 3);
  EXPECT_GE(syncer.counters().batches, all.size() / 100);
  const auto health = syncer.health();
  EXPECT_TRUE(health.pg_up);
  EXPECT_TRUE(health.redis_up);
  ASSERT_TRUE(eventually([&] {
    const auto now = syncer.health();
    return std::all_of(now.backlog.begin(), now.backlog.end(), [](const auto& b) { return b.second == 0; });
  }));

  // More later: the rooms row moves on from where it was.
  const auto more = messages(5, 500, 2500);
  add(more);
  ASSERT_TRUE(eventually([&] { return stream_lengths() == 0 && rows() == 3000; })) << rows();
  auto everything = all;
  everything.insert(everything.end(), more.begin(), more.end());
  EXPECT_EQ(stored(), sorted(everything));
  expect_rooms_match(everything);
}

TEST_F(SyncerTest, ABatchWaitsForItsSizeOrItsTime) {
  auto cfg = config();
  cfg.batch_size = 1000;
  cfg.batch_wait = 300ms;
  auto& syncer = start(cfg);
  ASSERT_TRUE(eventually([&] { return syncer.health().backlog.front().second == 0; }));
  add(messages(2, 10));
  // Fewer than the batch size: written one batch_wait after they arrive.
  ASSERT_TRUE(eventually([&] { return rows() == 10; }, 10s));
  EXPECT_EQ(syncer.counters().batches, 1u);
  EXPECT_EQ(syncer.counters().last_batch_size, 10u);
}

// The streams (and with them the group) vanish, as after a Redis restart
// without persistence or a flush: the syncer creates the group again and
// syncs what comes next.
TEST_F(SyncerTest, AVanishedGroupIsCreatedAgain) {
  auto& syncer = start(config());
  const auto first = messages(4, 400);
  add(first);
  ASSERT_TRUE(eventually([&] { return rows() == 400 && stream_lengths() == 0; })) << rows();
  for (auto shard : shards_) redis_->command({"DEL", keys::sync_stream(shard)});
  const auto second = messages(4, 400, 400);
  add(second);  // new streams, without the group
  ASSERT_TRUE(eventually([&] { return rows() == 800 && stream_lengths() == 0; })) << rows();
  auto all = first;
  all.insert(all.end(), second.begin(), second.end());
  EXPECT_EQ(stored(), sorted(all));
  expect_rooms_match(all);
  EXPECT_TRUE(syncer.health().redis_up);
}

// Redis stalls (as a stopped server does) while entries wait: the syncer
// reports Redis down, writes nothing twice and nothing is lost; once Redis
// answers again everything is synced and trimmed.
TEST_F(SyncerTest, ARedisOutageIsWaitedOut) {
  testing::StallingProxy proxy(redis_config_.address.port);
  auto cfg = config();
  cfg.redis.address = HostPort{"127.0.0.1", proxy.port()};
  cfg.redis.timeout = 1000ms;
  auto& syncer = start(cfg);
  const auto first = messages(4, 400);
  add(first);
  ASSERT_TRUE(eventually([&] { return rows() == 400 && stream_lengths() == 0; })) << rows();

  proxy.stall();
  const auto second = messages(4, 400, 400);
  add(second);
  ASSERT_TRUE(eventually([&] { return !syncer.health().redis_up; }, 15s)) << "the syncer did not notice";
  EXPECT_EQ(rows(), 400);
  EXPECT_FALSE(syncer.health().redis_up);
  proxy.resume();
  ASSERT_TRUE(eventually([&] { return rows() == 800 && stream_lengths() == 0 && pending() == 0; }))
      << rows() << " rows, " << stream_lengths() << " entries left";
  EXPECT_TRUE(eventually([&] { return syncer.health().redis_up; }));
  auto all = first;
  all.insert(all.end(), second.begin(), second.end());
  EXPECT_EQ(stored(), sorted(all));
  expect_rooms_match(all);
  EXPECT_GT(syncer.counters().redis_failures, 0u);
}

TEST_F(SyncerTest, TwoSyncersAtOnceWriteNoRowTwice) {
  auto& one = start(config());
  auto& two = start(config());
  ASSERT_TRUE(eventually([&] { return one.health().backlog.front().second == 0; }));
  ASSERT_TRUE(eventually([&] { return two.health().backlog.front().second == 0; }));
  const auto all = messages(8, 20000);
  std::size_t repeats = 0;
  for (std::size_t from = 0; from < all.size(); from += 500) {
    std::vector<Message> chunk(all.begin() + from, all.begin() + std::min(all.size(), from + 500));
    const auto originals = chunk.size();
    for (std::size_t i = 0; i < originals; i += 10) chunk.push_back(chunk[i]);  // re-deliveries
    repeats += chunk.size() - originals;
    add(chunk);
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(eventually([&] { return stream_lengths() == 0; }, 60s)) << stream_lengths() << " entries left";
  EXPECT_EQ(pending(), 0);
  EXPECT_EQ(rows(), static_cast<std::int64_t>(all.size()));
  EXPECT_EQ(stored(), sorted(all));
  expect_rooms_match(all);
  EXPECT_EQ(one.counters().inserted + two.counters().inserted, all.size());
  EXPECT_EQ(one.counters().duplicates + two.counters().duplicates, repeats);
  // The group shared the work.
  EXPECT_GT(one.counters().inserted, 0u);
  EXPECT_GT(two.counters().inserted, 0u);
}

// A syncer process is killed with kill -9 while its batch hangs in
// PostgreSQL (read from the streams, pending in the group, not committed);
// another syncer claims its entries after the idle time and writes them.
TEST_F(SyncerTest, ASyncerKilledInTheMiddleOfABatchIsTakenOverWithNoRowMissing) {
  testing::StallingProxy proxy(testing::pg_port_of(pg_config_.conninfo));
  const auto victim = itest::unique("victim-");
  std::string shards;
  for (auto shard : shards_) {
    if (!shards.empty()) shards += ',';
    shards += std::to_string(shard);
  }
  ChildSyncer child(
      {"--shards", shards, "--consumer", victim, "--batch-size", "300", "--batch-ms", "20", "--http-listen",
       "127.0.0.1:0", "--pg-timeout-ms", "120000", "--claim-idle-ms", "600000"},
      {{"RTMC_REDIS", *itest::env("RTMC_TEST_REDIS")},
       {"RTMC_PG", testing::pg_conninfo_via(pg_config_.conninfo, proxy.port())},
       {"RTMC_LOG_LEVEL", "info"}});
  const auto first = messages(4, 1000);
  add(first);
  ASSERT_TRUE(eventually([&] { return rows() == 1000 && stream_lengths() == 0; }))
      << "the child syncer did not sync; rows " << rows();

  proxy.stall();
  const auto second = messages(4, 2000, 1000);
  add(second);
  // Read and held: its batch is in PostgreSQL's hands (stalled), not committed.
  ASSERT_TRUE(eventually([&] { return pending_of(victim) > 0; })) << "the child read nothing";
  std::this_thread::sleep_for(300ms);
  const auto held = pending_of(victim);
  ASSERT_TRUE(child.running());
  child.kill9();
  EXPECT_EQ(rows(), 1000) << "the stalled batch was committed";
  EXPECT_GT(held, 0);

  auto cfg = config();
  cfg.claim_idle = 500ms;
  auto& rescuer = start(cfg);
  ASSERT_TRUE(eventually([&] { return stream_lengths() == 0 && pending() == 0; }, 60s))
      << stream_lengths() << " entries left, " << pending() << " pending";
  auto all = first;
  all.insert(all.end(), second.begin(), second.end());
  EXPECT_EQ(rows(), static_cast<std::int64_t>(all.size()));
  EXPECT_EQ(stored(), sorted(all));
  expect_rooms_match(all);
  EXPECT_GE(rescuer.counters().claimed, static_cast<std::uint64_t>(held));
  EXPECT_EQ(pending_of(victim), 0);
}

// PostgreSQL stopped for 20 s while messages keep arriving: the syncer says
// it is down, keeps the batch in hand, the backlog waits in Redis and drains
// once PostgreSQL is back; every message is written once.
TEST_F(SyncerTest, APostgresOutageLosesNothingAndTheBacklogDrains) {
  const auto stop_command = itest::env("RTMC_TEST_PG_STOP");
  const auto start_command = itest::env("RTMC_TEST_PG_START");
  ASSERT_TRUE(stop_command && start_command)
      << "RTMC_TEST_PG_STOP / RTMC_TEST_PG_START (scripts/services.sh env)";
  auto cfg = config();
  cfg.batch_size = 1000;
  cfg.batch_wait = 100ms;
  cfg.pg_timeout = 3000ms;
  auto& syncer = start(cfg);

  // A producer at about 1,000 messages/s in 4 rooms.
  std::atomic<bool> producing{true};
  std::atomic<int> produced{0};
  std::vector<Message> sent;
  std::thread producer([&] {
    redis::Connection connection(redis_config_);
    int i = 0;
    while (producing) {
      auto chunk = messages(4, 50, i);
      std::vector<std::vector<std::string>> commands;
      for (const auto& m : chunk)
        commands.push_back({"XADD", keys::sync_stream(shard_of_room(m.room)), "*", "room", m.room, "seq",
                            std::to_string(m.seq), "f",
                            protocol::message_frame(m.room, m.seq, m.id, m.sender, m.body, m.ts)});
      connection.pipeline(commands);
      sent.insert(sent.end(), chunk.begin(), chunk.end());
      i += 50;
      produced = i;
      std::this_thread::sleep_for(50ms);
    }
  });
  struct Stop {
    std::atomic<bool>& flag;
    std::thread& thread;
    ~Stop() {
      flag = false;
      if (thread.joinable()) thread.join();
    }
  } stop_producer{producing, producer};

  ASSERT_TRUE(eventually([&] { return rows() > 0; })) << "nothing synced before the outage";
  ASSERT_EQ(std::system(stop_command->c_str()), 0) << "stopping PostgreSQL failed";
  const auto stopped_at = Clock::now();
  bool restarted = false;
  struct Restart {
    const std::string& command;
    bool& done;
    ~Restart() {
      if (!done) (void)std::system(command.c_str());
    }
  } restart_on_exit{*start_command, restarted};

  EXPECT_TRUE(eventually([&] { return !syncer.health().pg_up; }, 15s)) << "the syncer did not notice";
  std::int64_t peak_backlog = 0;
  while (Clock::now() - stopped_at < 20s) {
    std::int64_t backlog = 0;
    for (const auto& [shard, length] : syncer.health().backlog) backlog += std::max<std::int64_t>(length, 0);
    peak_backlog = std::max(peak_backlog, backlog);
    std::this_thread::sleep_for(100ms);
  }
  const int produced_during_outage = produced;
  ASSERT_EQ(std::system(start_command->c_str()), 0) << "starting PostgreSQL failed";
  restarted = true;
  const auto started_at = Clock::now();
  EXPECT_GT(peak_backlog, 0) << "no backlog built up in Redis";

  // Messages keep coming for a while after the restart, then stop.
  std::this_thread::sleep_for(2s);
  producing = false;
  producer.join();
  ASSERT_TRUE(eventually([&] { return stream_lengths() == 0 && pending() == 0; }, 90s))
      << stream_lengths() << " entries left";
  const auto drained_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_at);
  EXPECT_TRUE(syncer.health().pg_up);
  EXPECT_EQ(rows(), static_cast<std::int64_t>(sent.size()));
  EXPECT_EQ(stored(), sorted(sent));
  expect_rooms_match(sent);
  EXPECT_GT(syncer.counters().pg_failures, 0u);
  std::printf("outage: %d messages produced by the restart, peak backlog %lld, drained %lld ms after it\n",
              produced_during_outage, static_cast<long long>(peak_backlog),
              static_cast<long long>(drained_ms.count()));
}

}  // namespace
}  // namespace rtmc::syncer
