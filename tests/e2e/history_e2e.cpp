// History end to end: the real api and gateway against the test services.
// The gateway keeps a small room log (--room-log-length 100, its minimum), so most of a
// room's 250 messages fall out of the Redis window; the test then writes the
// old ones into PostgreSQL as the syncer would (same columns, created_at
// from ts, ON CONFLICT DO NOTHING, so a syncer running beside it changes
// nothing), from the frames a member received live. History over HTTP
// (GET /rooms/{R}/messages) and over TCP (`history`) must then return the
// right messages, in order, byte for byte the live frames, on either side
// of the boundary and across it.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <map>

#include "common/config.hpp"
#include "common/keys.hpp"
#include "protocol/frames.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17001);
constexpr std::int64_t kMessages = 250;
// The deployment's default; the room log's key depends on it.
constexpr std::uint32_t kIngestShards = 16;

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
  std::vector<std::int64_t> out;
  for (auto seq = from; seq <= to; ++seq) out.push_back(seq);
  return out;
}

class History : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_ = start_gateway(services_, secret_, kGateway, {"--room-log-length", "100"});
    alice_ = make_user(http_, "ha");
    bob_ = make_user(http_, "hb");
    room_ = unique_name("history-");
  }
  void TearDown() override {
    for (auto* process : {api_.get(), gateway_.get()}) {
      if (process == nullptr) continue;
      EXPECT_TRUE(process->running()) << process->name() << " exited during the test";
    }
  }

  // alice sends kMessages messages to the room over TCP; the live frames
  // (as she received them as a member) are kept by seq.
  void fill_room() {
    LineClient sender(kGateway, 0, "alice");
    sender.auth(alice_.token, alice_.name);
    ASSERT_EQ(sender.join(room_), 0);
    Collector frames(sender);
    for (std::int64_t i = 1; i <= kMessages; ++i) {
      // Quotes, a backslash and non-ASCII text: any re-serialization would show.
      std::string body = numbered("say \"hi\" \\ caf\xc3\xa9 #", i);
      sender.send_json({{"type", "send"}, {"room", room_}, {"id", numbered("m", i)}, {"body", body}});
    }
    ASSERT_TRUE(frames.wait_until(
        [](const Collector::Frames& seen) { return count_type(seen, "message") == kMessages; }, 60s))
        << "only " << count_type(frames.frames(), "message") << " messages arrived";
    frames.stop();
    for (const auto& frame : frames.frames()) {
      if (str(frame, "type") != "message") continue;
      live_[num(frame, "seq")] = frame;
    }
    ASSERT_EQ(live_.size(), static_cast<std::size_t>(kMessages));
    ASSERT_EQ(live_.begin()->first, 1);
    ASSERT_EQ(live_.rbegin()->first, kMessages);
  }

  // The seq of the oldest frame still in the room's Redis log.
  std::int64_t window_start() {
    redis::Connection redis(RedisConfig::parse(services_.redis));
    auto reply = redis.command(
        {"XRANGE", keys::room_log(shard_of(room_, kIngestShards), room_), "-", "+", "COUNT", "1"});
    if (reply.elements.empty()) throw std::runtime_error("the room log is empty");
    const auto& id = reply.elements[0].elements[0].str;
    return std::stoll(id.substr(0, id.find('-')));
  }

  // Seqs [1, to] into PostgreSQL, as the syncer writes them; the room's row
  // as the syncer upserts it.
  void sync_up_to(std::int64_t to) {
    pg::Connection pg(PgConfig{services_.pg});
    for (std::int64_t seq = 1; seq <= to; ++seq) {
      const auto& frame = live_.at(seq);
      pg.exec(
          "INSERT INTO messages (room, seq, id, sender, body, created_at) VALUES ($1, $2, $3, $4, $5, "
          "timestamptz 'epoch' + $6::bigint * interval '1 millisecond') ON CONFLICT DO NOTHING",
          {room_, std::to_string(seq), str(frame, "id"), str(frame, "from"), str(frame, "body"),
           std::to_string(num(frame, "ts"))});
    }
    pg.exec(
        "INSERT INTO rooms (room, last_seq, message_count, last_ts) VALUES ($1, $2, $2, timestamptz 'epoch' "
        "+ "
        "$3::bigint * interval '1 millisecond') ON CONFLICT (room) DO NOTHING",
        {room_, std::to_string(to), std::to_string(num(live_.at(to), "ts"))});
  }

  // The live frame of `seq` as its bytes (without '\n').
  std::string live_bytes(std::int64_t seq) const {
    const auto& frame = live_.at(seq);
    auto text = protocol::message_frame(room_, seq, str(frame, "id"), str(frame, "from"), str(frame, "body"),
                                        num(frame, "ts"));
    text.pop_back();
    return text;
  }
  std::vector<std::string> live_list(const std::vector<std::int64_t>& seqs) const {
    std::vector<std::string> frames;
    for (auto seq : seqs) frames.push_back(live_bytes(seq) + "\n");
    return frames;
  }

  // GET /rooms/{room}/messages<query> with alice's token: the seqs, after
  // checking the body byte for byte against the live frames.
  std::vector<std::int64_t> http_history(const std::string& query) {
    auto response = http_.request("GET", "/rooms/" + room_ + "/messages" + query, {},
                                  {"Authorization: Bearer " + alice_.token});
    if (response.status != 200) throw std::runtime_error("GET history" + query + ": " + response.describe());
    std::vector<std::int64_t> seqs;
    const auto body = response.json();
    for (const auto& message : body.at("messages").as_array())
      seqs.push_back(message.as_object().at("seq").as_int64());
    auto frames = live_list(seqs);
    std::vector<std::string_view> views(frames.begin(), frames.end());
    std::string expected = "{\"room\":\"";
    expected.append(room_).append("\",\"messages\":").append(protocol::message_array(views)).append("}");
    EXPECT_EQ(response.body, expected) << query;
    return seqs;
  }

  // A TCP `history` by bob (not a member): the seqs, after checking the
  // reply line byte for byte.
  std::vector<std::int64_t> tcp_history(LineClient& client, boost::json::object request) {
    request["type"] = "history";
    request["room"] = room_;
    request["ref"] = ++ref_;
    client.send_json(request);
    auto reply = client.read(10s);
    if (reply.kind != ReadResult::Kind::frame) throw std::runtime_error("no history reply");
    if (str(reply.frame, "type") != "history") throw std::runtime_error("not a history reply: " + reply.line);
    std::vector<std::int64_t> seqs;
    for (const auto& message : reply.frame.at("messages").as_array())
      seqs.push_back(message.as_object().at("seq").as_int64());
    auto frames = live_list(seqs);
    std::vector<std::string_view> views(frames.begin(), frames.end());
    auto expected = protocol::history_frame(room_, views, std::to_string(ref_));
    expected.pop_back();
    EXPECT_EQ(reply.line, expected) << boost::json::serialize(request);
    return seqs;
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_;
  HttpClient http_{kApiPort};
  TestUser alice_;
  TestUser bob_;
  std::string room_;
  std::map<std::int64_t, boost::json::object> live_;
  int ref_ = 0;
};

TEST_F(History, AcrossTheRedisAndPostgresBoundary) {
  ASSERT_NO_FATAL_FAILURE(fill_room());
  const auto first = window_start();
  // The log is capped approximately (whole stream nodes of 100 entries), so
  // it keeps at least 100 and at most about 200 of the 250.
  ASSERT_GT(first, 50) << "the messages must have fallen out of the Redis window";
  ASSERT_LE(first, kMessages - 99);
  // What the syncer would have written by now: everything below the window
  // and a few of it.
  sync_up_to(first + 4);

  // Over HTTP: the window, PostgreSQL alone, and both stitched.
  EXPECT_EQ(http_history(""), range(kMessages - 49, kMessages));
  EXPECT_EQ(http_history("?after_seq=0&limit=100"), range(1, 100));
  EXPECT_EQ(http_history("?before_seq=" + std::to_string(first + 10) + "&limit=30"),
            range(first - 20, first + 9));
  EXPECT_EQ(http_history("?after_seq=" + std::to_string(first - 10) + "&limit=20"),
            range(first - 9, first + 10));
  EXPECT_EQ(http_history("?before_seq=1"), range(1, 0));
  EXPECT_EQ(http_history("?after_seq=" + std::to_string(kMessages)), range(1, 0));
  // The whole room, paged backwards and forwards: each message once, in order.
  std::vector<std::int64_t> backwards;
  for (std::int64_t before = kMessages + 1; before > 1;) {
    auto page = http_history("?before_seq=" + std::to_string(before) + "&limit=100");
    ASSERT_FALSE(page.empty());
    backwards.insert(backwards.begin(), page.begin(), page.end());
    before = page.front();
  }
  EXPECT_EQ(backwards, range(1, kMessages));
  std::vector<std::int64_t> forwards;
  for (std::int64_t after = 0; after < kMessages;) {
    auto page = http_history("?after_seq=" + std::to_string(after) + "&limit=73");
    ASSERT_FALSE(page.empty());
    forwards.insert(forwards.end(), page.begin(), page.end());
    after = page.back();
  }
  EXPECT_EQ(forwards, range(1, kMessages));

  // Over TCP, by a user who never joined the room.
  LineClient reader(kGateway, 0, "bob");
  reader.auth(bob_.token, bob_.name);
  EXPECT_EQ(tcp_history(reader, {}), range(kMessages - 49, kMessages));
  EXPECT_EQ(tcp_history(reader, {{"after_seq", 0}, {"limit", 100}}), range(1, 100));
  EXPECT_EQ(tcp_history(reader, {{"before_seq", first + 10}, {"limit", 30}}), range(first - 20, first + 9));
  EXPECT_EQ(tcp_history(reader, {{"after_seq", first - 10}, {"limit", 20}}), range(first - 9, first + 10));
  EXPECT_EQ(tcp_history(reader, {{"before_seq", kMessages + 1}, {"limit", 100}}),
            range(kMessages - 99, kMessages));
  // A room never used.
  auto quiet = unique_name("quiet-");
  reader.send_json({{"type", "history"}, {"room", quiet}});
  auto empty = reader.next();
  EXPECT_EQ(to_text(empty), R"({"type":"history","room":")" + quiet + R"(","messages":[]})");

  // GET /rooms lists the room from the rooms table (the syncer's; written
  // above), paging by name until it shows up.
  std::optional<std::string> after;
  bool found = false;
  for (int pages = 0; pages < 1000 && !found; ++pages) {
    std::string target = "/rooms?limit=100";
    if (after) target += "&after=" + *after;
    auto response = http_.request("GET", target, {}, {"Authorization: Bearer " + alice_.token});
    ASSERT_EQ(response.status, 200) << response.describe();
    auto body = response.json();
    for (const auto& item : body.at("rooms").as_array()) {
      const auto& room = item.as_object();
      if (room.at("room").as_string() != room_) continue;
      found = true;
      // A syncer running beside the test may have moved it further.
      const auto last_seq = room.at("last_seq").as_int64();
      EXPECT_GE(last_seq, first + 4);
      EXPECT_LE(last_seq, kMessages);
      EXPECT_EQ(room.at("last_ts").as_int64(), num(live_.at(last_seq), "ts"));
    }
    if (body.at("next").is_null()) break;
    after = std::string(body.at("next").as_string());
  }
  EXPECT_TRUE(found) << "room " << room_ << " is not listed by GET /rooms";
}

TEST_F(History, BadRequestsAndNoToken) {
  const std::string base = "/rooms/" + room_ + "/messages";
  const std::vector<std::string> auth{"Authorization: Bearer " + alice_.token};
  expect_http_error(http_.request("GET", base), 401, "unauthorized");
  expect_http_error(http_.request("GET", "/rooms"), 401, "unauthorized");
  expect_http_error(http_.request("GET", base + "?after_seq=1&before_seq=5", {}, auth), 400, "bad_request");
  expect_http_error(http_.request("GET", base + "?limit=101", {}, auth), 400, "bad_request");
  expect_http_error(http_.request("GET", base + "?limit=0", {}, auth), 400, "bad_request");
  expect_http_error(http_.request("GET", base + "?after_seq=-1", {}, auth), 400, "bad_request");
  expect_http_error(http_.request("GET", base + "?before_seq=x", {}, auth), 400, "bad_request");
  expect_http_error(http_.request("GET", "/rooms/bad%20room/messages", {}, auth), 400, "bad_room");
  expect_http_error(http_.request("GET", "/rooms?limit=500", {}, auth), 400, "bad_request");
  // A room never used: an empty list.
  auto quiet = http_.request("GET", base, {}, auth);
  EXPECT_EQ(quiet.status, 200) << quiet.describe();
  EXPECT_EQ(quiet.body, R"({"room":")" + room_ + R"(","messages":[]})");

  LineClient client(kGateway, 0, "bob");
  // Before auth: refused like any frame (fatal).
  client.send_json({{"type", "history"}, {"room", room_}});
  expect_error(client.next(), "unauthorized");
  LineClient reader(kGateway, 0, "bob");
  reader.auth(bob_.token, bob_.name);
  reader.send_json({{"type", "history"}, {"room", room_}, {"after_seq", 1}, {"before_seq", 3}, {"ref", 1}});
  expect_error(reader.next(), "bad_frame", boost::json::value(1));
  reader.send_json({{"type", "history"}, {"room", room_}, {"limit", 0}, {"ref", 2}});
  expect_error(reader.next(), "bad_frame", boost::json::value(2));
  reader.send_json({{"type", "history"}, {"room", room_}, {"before_seq", -4}, {"ref", 3}});
  expect_error(reader.next(), "bad_frame", boost::json::value(3));
  reader.send_json({{"type", "history"}, {"room", "bad room"}, {"ref", 4}});
  expect_error(reader.next(), "bad_room", boost::json::value(4));
  // None of it was fatal.
  reader.ping(boost::json::value(5));
}

}  // namespace
}  // namespace rtmc::e2e
