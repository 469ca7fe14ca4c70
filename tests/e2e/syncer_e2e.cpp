// Flow 4 end to end: messages sent over TCP go through RabbitMQ, the
// sequencer and the sync streams into PostgreSQL, written by a real
// rtmc-syncer (the test stack's syncer may share the work: same group).

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <map>
#include <thread>

#include "common/keys.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17001);
const std::uint16_t kSyncerHttp = e2e_port(17090);
constexpr std::uint32_t kIngestShards = 16;  // the servers' default, and what every syncer reads

std::int64_t integer(const pg::Result& result, std::size_t row = 0, std::size_t column = 0) {
  return std::stoll(result.rows.at(row).at(column).value());
}

// 100,000 messages from 4 connections into 8 rooms, many in flight: every
// one ends in PostgreSQL exactly once, each room's seqs run 1..n, the rooms
// rows match, and the sync streams end empty.
TEST(SyncerE2e, HundredThousandMessagesEndInPostgresOnceWithoutGaps) {
  constexpr int kClients = 4;
  constexpr int kRoomsPerClient = 2;
  constexpr int kPerClient = 25000;
  constexpr int kTotal = kClients * kPerClient;

  const auto services = service_env();
  const auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway);
  Process syncer("syncer", RTMC_SYNCER_BIN, {"--http-listen", "127.0.0.1:" + std::to_string(kSyncerHttp)},
                 server_env(services, secret));
  ASSERT_TRUE(wait_for_port(kSyncerHttp, 30s)) << syncer.log_tail();

  HttpClient http(kApiPort);
  const auto prefix = unique_name("e2e-sync-");
  std::vector<std::string> rooms;
  std::vector<std::unique_ptr<LineClient>> clients;
  for (int c = 0; c < kClients; ++c) {
    const auto user = make_user(http, "sync");
    clients.push_back(std::make_unique<LineClient>(kGateway, 0, user.name));
    clients.back()->auth(user.token, user.name);
    for (int r = 0; r < kRoomsPerClient; ++r) {
      rooms.push_back(numbered(prefix + "-", c * kRoomsPerClient + r));
      clients.back()->join(rooms.back());
    }
  }

  // Each client writes its sends in bulk on a thread of its own (the
  // gateway stops reading while too many await RabbitMQ's confirm:
  // backpressure) while a reader counts what comes back: its acks and its
  // own messages (it is the only sender in its rooms).
  struct Tally {
    int acks = 0;
    int messages = 0;
    std::string problem;
  };
  std::vector<Tally> tallies(kClients);
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    auto& client = *clients[static_cast<std::size_t>(c)];
    auto& tally = tallies[static_cast<std::size_t>(c)];
    threads.emplace_back([&client, &tally] {
      while (tally.acks < kPerClient || tally.messages < kPerClient) {
        auto result = client.read(60s);
        if (result.kind != ReadResult::Kind::frame) {
          tally.problem = result.kind == ReadResult::Kind::closed ? "closed" : "no frame for 60 s";
          return;
        }
        const auto type = str(result.frame, "type");
        if (type == "ack") {
          ++tally.acks;
        } else if (type == "message") {
          ++tally.messages;
        } else {
          tally.problem = result.line;
          return;
        }
      }
    });
    threads.emplace_back([&, c] {
      std::string chunk;
      for (int i = 0; i < kPerClient; ++i) {
        const auto& room = rooms[static_cast<std::size_t>(c * kRoomsPerClient + i % kRoomsPerClient)];
        chunk += boost::json::serialize(boost::json::object{
            {"type", "send"}, {"room", room}, {"id", numbered("m", i)}, {"body", numbered("body ", i)}});
        chunk += '\n';
        if (chunk.size() > 64 * 1024 || i + 1 == kPerClient) {
          clients[static_cast<std::size_t>(c)]->send_raw(chunk);
          chunk.clear();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int c = 0; c < kClients; ++c) {
    const auto& tally = tallies[static_cast<std::size_t>(c)];
    ASSERT_TRUE(tally.problem.empty() && tally.acks == kPerClient && tally.messages == kPerClient)
        << "client " << c << ": " << tally.acks << " acks, " << tally.messages << " messages; "
        << tally.problem;
  }
  const auto delivered = std::chrono::steady_clock::now();

  pg::Connection db(PgConfig{services.pg}, pg::Options{std::chrono::milliseconds(30000), 0});
  const auto room_array = pg::text_array(rooms);
  std::int64_t rows = 0;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    rows = integer(db.exec("SELECT count(*) FROM messages WHERE room = ANY($1::text[])", {room_array}));
    if (rows >= kTotal) break;
    std::this_thread::sleep_for(100ms);
  }
  const auto synced = std::chrono::steady_clock::now();
  ASSERT_EQ(rows, kTotal) << "syncer log:\n" << syncer.log_tail();

  // Each room: seqs 1..n without gap or repeat, and its rooms row says so.
  const auto per_room = db.exec(
      "SELECT m.room, count(*), count(DISTINCT m.seq), min(m.seq), max(m.seq), count(DISTINCT m.id), "
      "r.last_seq, r.message_count FROM messages m JOIN rooms r USING (room) "
      "WHERE m.room = ANY($1::text[]) GROUP BY m.room, r.last_seq, r.message_count ORDER BY m.room",
      {room_array});
  ASSERT_EQ(per_room.rows.size(), rooms.size());
  for (std::size_t i = 0; i < per_room.rows.size(); ++i) {
    const auto room = *per_room.rows[i][0];
    const auto n = integer(per_room, i, 1);
    EXPECT_EQ(n, kPerClient / kRoomsPerClient) << room;
    EXPECT_EQ(integer(per_room, i, 2), n) << room;
    EXPECT_EQ(integer(per_room, i, 3), 1) << room;
    EXPECT_EQ(integer(per_room, i, 4), n) << room;
    EXPECT_EQ(integer(per_room, i, 5), n) << room;
    EXPECT_EQ(integer(per_room, i, 6), n) << room;
    EXPECT_EQ(integer(per_room, i, 7), n) << room;
  }

  // The sync streams end empty: everything synced was trimmed.
  redis::Connection redis(RedisConfig::parse(services.redis));
  std::int64_t left = -1;
  const auto trim_deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < trim_deadline) {
    left = 0;
    for (std::uint32_t shard = 0; shard < kIngestShards; ++shard)
      left += redis.command({"XLEN", keys::sync_stream(shard)}).integer;
    if (left == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(left, 0) << "entries left in the sync streams";
  // /healthz reads the backlog once a second: it says so within a few.
  HttpResponse health;
  const auto health_deadline = std::chrono::steady_clock::now() + 10s;
  do {
    health = HttpClient(kSyncerHttp).request("GET", "/healthz");
    if (health.status == 200 && health.json().at("backlog_total").as_int64() == 0) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < health_deadline);
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(health.json().at("backlog_total").as_int64(), 0) << health.body;
  EXPECT_TRUE(syncer.running()) << syncer.log_tail();

  auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  std::printf("%d messages: delivered in %.1f s, in PostgreSQL %.1f s after the first send\n", kTotal,
              seconds(started, delivered), seconds(started, synced));
  db.exec("DELETE FROM messages WHERE room = ANY($1::text[])", {room_array});
  db.exec("DELETE FROM rooms WHERE room = ANY($1::text[])", {room_array});
}

}  // namespace
}  // namespace rtmc::e2e
