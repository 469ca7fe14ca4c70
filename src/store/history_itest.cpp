// Integration tests of history::History against the real Redis
// (RTMC_TEST_REDIS) and PostgreSQL (RTMC_TEST_PG). A missing variable fails
// the tests. Messages are sequenced by the real sequencing script
// (rooms::sequence), the log is cut with an exact XTRIM to place the window,
// and PostgreSQL rows are written as the syncer writes them (created_at from
// ts). Each test has a schema of its own (the `rooms` table must hold only
// its rows for paging) and rooms of its own.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <limits>
#include <optional>

#include "common/keys.hpp"
#include "protocol/frames.hpp"
#include "store/history.hpp"
#include "store/itest_env.hpp"
#include "store/rooms.hpp"
#include "store/unavailable.hpp"

namespace rtmc::history {
namespace {

using namespace std::chrono_literals;
using itest::env;
using itest::run_on;
using itest::unique;

constexpr std::uint32_t kShards = 4;

// A loopback port that was free a moment ago: nothing answers there.
std::uint16_t dead_port() {
  boost::asio::io_context context;
  boost::asio::ip::tcp::acceptor probe(context, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return probe.local_endpoint().port();
}

// What message `seq` of every test room carries: bodies with quotes,
// backslashes, control characters and non-ASCII text, so a frame rendered
// from a row differs from the live one at the first escaping difference.
std::string body_of(std::int64_t seq) {
  return "msg " + std::to_string(seq) + " \"quoted\" back\\slash\ttab \x01 caf\xc3\xa9 \xf0\x9f\x92\xac";
}
std::string id_of(std::int64_t seq) {
  return "id-" + std::to_string(seq);
}
std::string sender_of(std::int64_t seq) {
  return seq % 2 ? "Alice" : "bob.b";
}
// Whole milliseconds, not a round number of seconds.
std::int64_t ts_of(std::int64_t seq) {
  return 1700000000123 + seq * 1001;
}
std::string frame_of(const std::string& room, std::int64_t seq) {
  return protocol::message_frame(room, seq, id_of(seq), sender_of(seq), body_of(seq), ts_of(seq));
}

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
  std::vector<std::int64_t> out;
  for (auto seq = from; seq <= to; ++seq) out.push_back(seq);
  return out;
}
std::vector<std::int64_t> operator+(std::vector<std::int64_t> a, const std::vector<std::int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class HistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = env("RTMC_TEST_REDIS");
    auto pg = env("RTMC_TEST_PG");
    ASSERT_TRUE(redis && pg) << "RTMC_TEST_REDIS and RTMC_TEST_PG must be set (scripts/services.sh start DIR "
                                "writes DIR/env)";
    redis_config_ = RedisConfig::parse(*redis);
    base_.conninfo = *pg;
    schema_ = unique("rtmc_history_itest_");
    pg::Connection admin(base_);
    admin.exec("CREATE SCHEMA " + schema_);
    pg_config_.conninfo = base_.conninfo + " options='-csearch_path=" + schema_ + "'";
    pg_.emplace(pg_config_);
    pg::migrate(*pg_);
    redis_.emplace(redis_config_);
    client_.emplace(redis_config_, 2);
    pool_.emplace(pg_config_, 2, pg::Options{5000ms, 0});
    history_.emplace(*client_, *pool_, kShards);
  }
  void TearDown() override {
    if (redis_) {
      for (const auto& room : rooms_) {
        const auto shard = shard_of(room, kShards);
        redis_->command({"DEL", keys::room_seq(shard, room), keys::room_log(shard, room)});
        auto found = redis_->command({"KEYS", keys::dedupe(shard, room, "*", "*")});
        for (const auto& key : found.elements) redis_->command({"DEL", key.str});
      }
    }
    if (!schema_.empty() && !base_.conninfo.empty()) {
      pg::Connection admin(base_);
      admin.exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    }
  }

  std::string room(const std::string& name) {
    rooms_.push_back(unique("history-itest-" + name + "-"));
    return rooms_.back();
  }

  // Sequences messages 1..count into the room with the real script; each
  // frame must be exactly frame_of (what a PostgreSQL row renders to).
  void sequence(const std::string& room, std::int64_t count) {
    rooms::SequenceSettings settings;
    settings.shards = kShards;
    settings.dedupe_window = 600s;
    settings.log_length = 100000;
    std::vector<rooms::SequenceRequest> requests;
    for (std::int64_t seq = 1; seq <= count; ++seq) {
      auto parts =
          protocol::message_frame_template(room, id_of(seq), sender_of(seq), body_of(seq), ts_of(seq));
      requests.push_back(
          {room, id_of(seq), sender_of(seq), std::move(parts.prefix), std::move(parts.suffix)});
    }
    // The seq guard needs a block installed under this Redis' run, as the
    // sequencer installs after reserving it in PostgreSQL.
    const auto run_id = rooms::server_run_id(*redis_);
    const auto installed = rooms::install_seqs(*redis_, kShards, run_id, {{room, 0, 1'000'000'000}});
    ASSERT_TRUE(installed.at(0).error.empty()) << installed.at(0).error;
    auto results = rooms::sequence(*redis_, settings, run_id, requests);
    for (std::int64_t seq = 1; seq <= count; ++seq) {
      const auto& result = results[seq - 1];
      ASSERT_EQ(result.status, rooms::SequenceResult::Status::sequenced) << result.error;
      ASSERT_EQ(result.seq, seq);
      ASSERT_EQ(result.frame, frame_of(room, seq));
    }
  }
  // Keeps seqs >= first in the log (exactly: no '~').
  void trim_log(const std::string& room, std::int64_t first) {
    redis_->command(
        {"XTRIM", keys::room_log(shard_of(room, kShards), room), "MINID", std::to_string(first) + "-0"});
    auto left =
        redis_->command({"XRANGE", keys::room_log(shard_of(room, kShards), room), "-", "+", "COUNT", "1"});
    ASSERT_FALSE(left.elements.empty());
    ASSERT_EQ(left.elements[0].elements[0].str, std::to_string(first) + "-0");
  }
  // Messages [from, to] as the syncer writes them.
  void store(const std::string& room, std::int64_t from, std::int64_t to) {
    for (auto seq = from; seq <= to; ++seq)
      pg_->exec(
          "INSERT INTO messages (room, seq, id, sender, body, created_at) VALUES ($1, $2, $3, $4, $5, "
          "timestamptz 'epoch' + $6::bigint * interval '1 millisecond')",
          {room, std::to_string(seq), id_of(seq), sender_of(seq), body_of(seq), std::to_string(ts_of(seq))});
  }

  Items query(const std::string& room, Query::Mode mode, std::int64_t seq, std::size_t limit) {
    return run_on(io_, history_->messages(room, Query{mode, seq, limit}));
  }
  // Checks the seqs and every frame's bytes; returns the seqs.
  std::vector<std::int64_t> seqs(const std::string& room, const Items& items) {
    std::vector<std::int64_t> out;
    for (const auto& [seq, frame] : items) {
      out.push_back(seq);
      EXPECT_EQ(*frame, frame_of(room, seq)) << "seq " << seq;
    }
    return out;
  }
  std::vector<std::int64_t> after(const std::string& room, std::int64_t seq, std::size_t limit) {
    return seqs(room, query(room, Query::Mode::after, seq, limit));
  }
  std::vector<std::int64_t> before(const std::string& room, std::int64_t seq, std::size_t limit) {
    return seqs(room, query(room, Query::Mode::before, seq, limit));
  }
  std::vector<std::int64_t> latest(const std::string& room, std::size_t limit) {
    return seqs(room, query(room, Query::Mode::latest, 0, limit));
  }

  // First: it outlives the clients (see run_on).
  boost::asio::io_context io_;
  RedisConfig redis_config_;
  PgConfig base_;
  PgConfig pg_config_;
  std::string schema_;
  std::optional<pg::Connection> pg_;
  std::optional<redis::Connection> redis_;
  std::optional<redis::Client> client_;
  std::optional<pg::Pool> pool_;
  std::optional<History> history_;
  std::vector<std::string> rooms_;
};

// PostgreSQL holds 1..250, the Redis window 201..300.
TEST_F(HistoryTest, StraddlingBothStores) {
  const auto r = room("split");
  sequence(r, 300);
  trim_log(r, 201);
  store(r, 1, 250);

  EXPECT_EQ(latest(r, 50), range(251, 300));
  EXPECT_EQ(latest(r, 100), range(201, 300));
  EXPECT_EQ(after(r, 0, 100), range(1, 100));
  EXPECT_EQ(after(r, 180, 50), range(181, 230));
  EXPECT_EQ(after(r, 195, 100), range(196, 295));
  EXPECT_EQ(after(r, 240, 100), range(241, 300));
  EXPECT_EQ(after(r, 250, 100), range(251, 300));
  EXPECT_EQ(after(r, 299, 10), range(300, 300));
  EXPECT_EQ(after(r, 300, 10), range(1, 0));
  EXPECT_EQ(after(r, 5000, 10), range(1, 0));
  EXPECT_EQ(after(r, std::numeric_limits<std::int64_t>::max(), 10), range(1, 0));
  EXPECT_EQ(before(r, std::numeric_limits<std::int64_t>::max(), 3), range(298, 300));
  EXPECT_EQ(before(r, 230, 60), range(170, 229));
  EXPECT_EQ(before(r, 201, 100), range(101, 200));
  EXPECT_EQ(before(r, 205, 100), range(105, 204));
  EXPECT_EQ(before(r, 1000, 10), range(291, 300));
  EXPECT_EQ(before(r, 3, 10), range(1, 2));
  EXPECT_EQ(before(r, 1, 10), range(1, 0));
  EXPECT_EQ(before(r, 0, 10), range(1, 0));
}

TEST_F(HistoryTest, OnlyTheRedisWindow) {
  const auto r = room("redis");
  sequence(r, 30);
  EXPECT_EQ(latest(r, 50), range(1, 30));
  EXPECT_EQ(latest(r, 7), range(24, 30));
  EXPECT_EQ(after(r, 10, 5), range(11, 15));
  EXPECT_EQ(after(r, 0, 100), range(1, 30));
  EXPECT_EQ(before(r, 5, 50), range(1, 4));
  EXPECT_EQ(before(r, 31, 3), range(28, 30));
}

// Redis knows nothing of the room (its keys expired or were lost).
TEST_F(HistoryTest, OnlyPostgres) {
  const auto r = room("pg");
  store(r, 1, 50);
  EXPECT_EQ(latest(r, 20), range(31, 50));
  EXPECT_EQ(latest(r, 100), range(1, 50));
  EXPECT_EQ(after(r, 45, 10), range(46, 50));
  EXPECT_EQ(before(r, 3, 10), range(1, 2));
  EXPECT_EQ(before(r, 40, 5), range(35, 39));
}

// 101..120 are in neither store (trimmed before the syncer wrote them).
TEST_F(HistoryTest, AHoleReturnsWhatExists) {
  const auto r = room("hole");
  sequence(r, 200);
  trim_log(r, 121);
  store(r, 1, 100);
  EXPECT_EQ(after(r, 90, 40), range(91, 100) + range(121, 150));
  EXPECT_EQ(before(r, 125, 10), range(95, 100) + range(121, 124));
  EXPECT_EQ(latest(r, 100), range(81, 100) + range(121, 200));
  EXPECT_EQ(after(r, 100, 5), range(121, 125));
  EXPECT_EQ(before(r, 121, 5), range(96, 100));
}

TEST_F(HistoryTest, ARoomNeverUsedIsEmpty) {
  const auto r = room("never");
  EXPECT_TRUE(latest(r, 50).empty());
  EXPECT_TRUE(after(r, 0, 50).empty());
  EXPECT_TRUE(before(r, 10, 50).empty());
}

// The window answers without PostgreSQL; a query below it needs it.
TEST_F(HistoryTest, TheWindowAloneNeedsNoPostgres) {
  const auto r = room("nopg");
  sequence(r, 300);
  trim_log(r, 201);
  PgConfig nowhere{"host=127.0.0.1 port=" + std::to_string(dead_port()) +
                   " dbname=x user=x connect_timeout=2"};
  pg::Pool dead(nowhere, 1, pg::Options{2000ms, 0});
  History history(*client_, dead, kShards);
  auto ask = [&](Query::Mode mode, std::int64_t seq, std::size_t limit) {
    return seqs(r, run_on(io_, history.messages(r, Query{mode, seq, limit})));
  };
  EXPECT_EQ(ask(Query::Mode::latest, 0, 100), range(201, 300));
  EXPECT_EQ(ask(Query::Mode::after, 200, 50), range(201, 250));
  EXPECT_EQ(ask(Query::Mode::before, 260, 59), range(201, 259));
  EXPECT_THROW(ask(Query::Mode::before, 260, 60), store::Unavailable);
  EXPECT_THROW(ask(Query::Mode::after, 199, 10), store::Unavailable);
}

TEST_F(HistoryTest, RedisDownIsUnavailable) {
  auto config = RedisConfig::parse("127.0.0.1:" + std::to_string(dead_port()));
  config.timeout = 1000ms;
  redis::Client down(config, 1);
  History history(down, *pool_, kShards);
  const auto r = room("noredis");
  EXPECT_THROW(run_on(io_, history.messages(r, Query{Query::Mode::latest, 0, 10})), store::Unavailable);
}

TEST_F(HistoryTest, BadQueriesAreRefused) {
  const auto r = room("bad");
  EXPECT_THROW(query(r, Query::Mode::latest, 0, 0), std::invalid_argument);
  EXPECT_THROW(query(r, Query::Mode::latest, 0, 101), std::invalid_argument);
  EXPECT_THROW(query(r, Query::Mode::after, -1, 10), std::invalid_argument);
}

class RoomList : public HistoryTest {
 protected:
  void add_room(const std::string& name, std::int64_t last_seq, std::int64_t last_ts) {
    pg_->exec(
        "INSERT INTO rooms (room, last_seq, message_count, last_ts) VALUES ($1, $2, $2, timestamptz 'epoch' "
        "+ "
        "$3::bigint * interval '1 millisecond')",
        {name, std::to_string(last_seq), std::to_string(last_ts)});
  }
  RoomPage page(std::optional<std::string> after, std::size_t limit) {
    return run_on(io_, history_->list_rooms(std::move(after), limit));
  }
  static std::vector<std::string> names(const RoomPage& page) {
    std::vector<std::string> out;
    for (const auto& room : page.rooms) out.push_back(room.room);
    return out;
  }
};

TEST_F(RoomList, PagesByName) {
  // Inserted out of order; lower case only, so any collation sorts them alike.
  for (const auto* name : {"delta", "alpha", "echo", "charlie", "bravo"}) add_room(name, 7, ts_of(7));

  auto first = page(std::nullopt, 2);
  EXPECT_EQ(names(first), (std::vector<std::string>{"alpha", "bravo"}));
  ASSERT_EQ(first.next, "bravo");
  auto second = page(first.next, 2);
  EXPECT_EQ(names(second), (std::vector<std::string>{"charlie", "delta"}));
  ASSERT_EQ(second.next, "delta");
  auto third = page(second.next, 2);
  EXPECT_EQ(names(third), (std::vector<std::string>{"echo"}));
  EXPECT_EQ(third.next, std::nullopt);

  // A page that ends exactly at the last room has no next.
  auto exact = page(std::nullopt, 5);
  EXPECT_EQ(exact.rooms.size(), 5u);
  EXPECT_EQ(exact.next, std::nullopt);
  auto four = page(std::nullopt, 4);
  EXPECT_EQ(four.next, "delta");
  EXPECT_TRUE(page(std::string("echo"), 10).rooms.empty());
  EXPECT_EQ(page(std::string("echo"), 10).next, std::nullopt);
  EXPECT_EQ(names(page(std::string("b"), 1)), (std::vector<std::string>{"bravo"}));
}

TEST_F(RoomList, CarriesLastSeqAndTime) {
  add_room("zulu", 1234, ts_of(99));
  auto listed = page(std::nullopt, 50);
  ASSERT_EQ(listed.rooms.size(), 1u);
  EXPECT_EQ(listed.rooms[0].room, "zulu");
  EXPECT_EQ(listed.rooms[0].last_seq, 1234);
  EXPECT_EQ(listed.rooms[0].last_ts_ms, ts_of(99));
  EXPECT_TRUE(page(std::nullopt, 1).rooms.size() == 1 && !page(std::nullopt, 1).next);
}

TEST_F(RoomList, AnEmptyTableIsAnEmptyPage) {
  auto empty = page(std::nullopt, 50);
  EXPECT_TRUE(empty.rooms.empty());
  EXPECT_EQ(empty.next, std::nullopt);
}

}  // namespace
}  // namespace rtmc::history
