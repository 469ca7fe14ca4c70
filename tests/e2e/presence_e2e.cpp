// Presence, heartbeats and user status (seed flows 2 and 6) on the real
// binaries and services: a vanished peer is cut and goes offline, a user
// with two connections stays online until both are gone, a killed gateway's
// users go offline, status is cache-aside over Redis and PostgreSQL, room
// presence and members across two gateways, reconnect with the same token.
// The measured times are printed for the closing note.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <mutex>
#include <thread>

#include "common/names.hpp"
#include "store/postgres.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGatewayA = e2e_port(17001);
const std::uint16_t kGatewayB = e2e_port(17002);
constexpr int kHeartbeatS = 2;  // idle cut at 2.5 x = 5 s
constexpr int kPresenceTtlS = 2;
using SteadyClock = std::chrono::steady_clock;
using boost::json::value;

// A client that keeps its heartbeat on a thread of its own and collects every
// frame, so the test can wait for presence events while the connection lives.
class Peer {
 public:
  Peer(std::uint16_t port, const TestUser& user, std::string label, bool heartbeat = true)
      : client_(port, 0, std::move(label)) {
    client_.keep_presence(true);
    client_.auth(user.token, user.name);
    collector_ = std::make_unique<Collector>(client_);
    if (heartbeat)
      pinger_ = std::thread([this] {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
          if (wake_.wait_for(lock, 500ms, [this] { return stopping_; })) break;
          client_.try_send_raw("{\"type\":\"ping\"}\n");
        }
      });
  }
  ~Peer() { stop_heartbeat(); }

  void stop_heartbeat() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (pinger_.joinable()) pinger_.join();
  }

  void send(const boost::json::object& frame) {
    std::lock_guard lock(mutex_);
    client_.send_json(frame);
  }

  // The first frame so far or to come that `match` accepts; throws on timeout.
  boost::json::object wait_for(const std::function<bool(const boost::json::object&)>& match,
                               Millis timeout = 10s, std::string_view what = "a frame") {
    std::optional<boost::json::object> found;
    collector_->wait_until(
        [&](const Collector::Frames& frames) {
          for (const auto& frame : frames)
            if (match(frame)) {
              found = frame;
              return true;
            }
          return false;
        },
        timeout);
    if (!found) throw std::runtime_error(client_.label() + ": no " + std::string(what) + "; got " + dump());
    return *found;
  }

  boost::json::object request(boost::json::object frame, Millis timeout = 10s) {
    const auto ref = unique_name("ref-");
    frame["ref"] = ref;
    send(frame);
    return wait_for(
        [&](const boost::json::object& f) { return f.contains("ref") && f.at("ref") == value(ref); }, timeout,
        "reply to " + boost::json::serialize(frame));
  }

  void join(const std::string& room) {
    auto reply = request({{"type", "join"}, {"room", room}});
    ASSERT_EQ(str(reply, "type"), "joined") << to_text(reply);
  }
  void leave(const std::string& room) {
    auto reply = request({{"type", "leave"}, {"room", room}});
    ASSERT_EQ(str(reply, "type"), "left") << to_text(reply);
  }

  std::vector<boost::json::object> presence(const std::string& room) const {
    std::vector<boost::json::object> events;
    for (const auto& frame : collector_->frames())
      if (str(frame, "type") == "presence" && str(frame, "room") == room) events.push_back(frame);
    return events;
  }
  boost::json::object wait_presence(const std::string& room, const std::string& user,
                                    const std::string& event, Millis timeout = 10s) {
    return wait_for(
        [&](const boost::json::object& f) {
          return str(f, "type") == "presence" && str(f, "room") == room && str(f, "user") == user &&
                 str(f, "event") == event;
        },
        timeout, "presence " + event + " of " + user + " in " + room);
  }
  bool closed() const { return collector_->closed(); }
  void close() {
    stop_heartbeat();
    collector_->stop();
    client_.close();
  }
  std::string dump() const {
    std::string text;
    for (const auto& frame : collector_->frames()) text += to_text(frame) + "\n";
    return text;
  }

 private:
  LineClient client_;
  std::unique_ptr<Collector> collector_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread pinger_;
};

std::vector<std::string> users_of(const boost::json::object& members) {
  std::vector<std::string> users;
  for (const auto& user : members.at("users").as_array()) users.emplace_back(user.as_string());
  return users;
}

class Presence : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_a_ = start_gateway(services_, secret_, kGatewayA, gateway_flags());
  }
  void TearDown() override {
    EXPECT_TRUE(!api_ || api_->running()) << "rtmc-api exited during the test";
    EXPECT_TRUE(!gateway_a_ || gateway_a_->running()) << "gateway A exited during the test";
  }
  static std::vector<std::string> gateway_flags() {
    return {"--heartbeat-s", std::to_string(kHeartbeatS), "--presence-ttl-s", std::to_string(kPresenceTtlS)};
  }

  struct PgStatus {
    std::string status;
    std::optional<std::int64_t> last_seen_ms;
  };
  PgStatus pg_status(const std::string& user) {
    pg::Connection pg(PgConfig{services_.pg});
    std::vector<pg::Param> params{user};
    auto result = pg.exec(
        "SELECT status, (extract(epoch from last_seen) * 1000)::bigint FROM users WHERE lower(name) "
        "= lower($1)",
        params);
    if (result.rows.empty()) throw std::runtime_error("no user " + user + " in PostgreSQL");
    PgStatus status{result.rows[0][0].value_or(""), std::nullopt};
    if (result.rows[0][1]) status.last_seen_ms = std::stoll(*result.rows[0][1]);
    return status;
  }
  // Polls PostgreSQL until the user has `status`; returns when it did (or nullopt).
  std::optional<SteadyClock::time_point> wait_pg_status(const std::string& user, const std::string& status,
                                                        Millis timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      if (pg_status(user).status == status) return SteadyClock::now();
      std::this_thread::sleep_for(50ms);
    }
    return std::nullopt;
  }
  boost::json::object http_status(const std::string& user, int expected_status = 200) {
    auto response = http_.request("GET", "/users/" + user + "/status");
    EXPECT_EQ(response.status, expected_status) << response.describe();
    return response.status == 200 ? response.json() : boost::json::object{};
  }
  std::string redis(const std::vector<std::string>& command) {
    RedisClient client(services_.redis);
    return client.command(command);
  }
  std::uint64_t api_metric(const std::string& series) {
    auto body = http_.request("GET", "/metrics").body;
    auto at = body.find("\n" + series + " ");
    if (at == std::string::npos) throw std::runtime_error("no metric " + series);
    return std::stoull(body.substr(at + series.size() + 2));
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_a_;
  HttpClient http_{kApiPort};
};

TEST_F(Presence, AVanishedPeerIsCutGoesOfflineAndLeavesItsRooms) {
  auto watcher_user = make_user(http_, "watch");
  auto gone_user = make_user(http_, "gone");
  const auto room = unique_name("presence-");
  Peer watcher(kGatewayA, watcher_user, "watcher");
  watcher.join(room);

  // Authenticates, joins, then neither sends nor reads, and never closes:
  // what a frozen process or a pulled cable looks like from the server.
  LineClient gone(kGatewayA, 0, "gone");
  gone.auth(gone_user.token, gone_user.name);
  gone.send_json({{"type", "join"}, {"room", room}});
  const auto last_frame = SteadyClock::now();
  watcher.wait_presence(room, gone_user.name, "join");
  EXPECT_EQ(str(http_status(gone_user.name), "status"), "online");
  EXPECT_EQ(pg_status(gone_user.name).status == "online" ||
                wait_pg_status(gone_user.name, "online", 2s).has_value(),
            true)
      << "the first connection writes online to PostgreSQL within a second";

  watcher.wait_presence(room, gone_user.name, "leave", std::chrono::seconds(4 * kHeartbeatS + 5));
  const auto left_after = SteadyClock::now() - last_frame;
  auto offline_at = wait_pg_status(gone_user.name, "offline", 5s);
  ASSERT_TRUE(offline_at.has_value()) << "PostgreSQL still says online";
  const auto offline_after = *offline_at - last_frame;
  // The idle cut at 2.5 x heartbeat (the rule: no earlier than 2 x, no later
  // than 2.5 x + 1 s), exact below, with slack above for a sanitizer build on
  // two busy cores.
  EXPECT_GE(left_after, std::chrono::milliseconds(2500 * kHeartbeatS));
  EXPECT_LE(left_after, std::chrono::milliseconds(2500 * kHeartbeatS + 1000 + 3000));

  EXPECT_EQ(redis({"EXISTS", "online:" + fold_user_name(gone_user.name)}), "0")
      << "the online record is gone";
  auto pg = pg_status(gone_user.name);
  ASSERT_TRUE(pg.last_seen_ms.has_value());
  EXPECT_NEAR(static_cast<double>(*pg.last_seen_ms), static_cast<double>(now_ms()), 15000.0);
  auto status = http_status(gone_user.name);
  EXPECT_EQ(str(status, "status"), "offline");
  EXPECT_EQ(status["last_seen"], value(*pg.last_seen_ms)) << to_text(status);
  std::printf(
      "[measure] vanished peer (heartbeat %d s): leave after %lld ms, offline in PostgreSQL after %lld ms\n",
      kHeartbeatS, static_cast<long long>(std::chrono::duration_cast<Millis>(left_after).count()),
      static_cast<long long>(std::chrono::duration_cast<Millis>(offline_after).count()));
}

TEST_F(Presence, AUserWithTwoConnectionsStaysOnlineUntilBothAreGone) {
  auto user = make_user(http_, "twice");
  auto first = std::make_unique<Peer>(kGatewayA, user, "first");
  auto second = std::make_unique<Peer>(kGatewayA, user, "second");
  const auto online = http_status(user.name);
  EXPECT_EQ(str(online, "status"), "online");
  const auto online_since = online.at("last_seen");

  first->close();
  const auto deadline = SteadyClock::now() + 5s;
  while (redis({"HLEN", "online:" + fold_user_name(user.name)}) != "1" && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  ASSERT_EQ(redis({"HLEN", "online:" + fold_user_name(user.name)}), "1") << "one record left";
  auto still = http_status(user.name);
  EXPECT_EQ(str(still, "status"), "online");
  EXPECT_EQ(still.at("last_seen"), online_since) << "online since the first connection";
  std::this_thread::sleep_for(1500ms);  // past the PostgreSQL write lag
  EXPECT_EQ(pg_status(user.name).status, "online");

  second->close();
  ASSERT_TRUE(wait_pg_status(user.name, "offline", 5s).has_value());
  EXPECT_EQ(str(http_status(user.name), "status"), "offline");
}

TEST_F(Presence, StatusIsCacheAsideOverRedisAndPostgres) {
  auto user = make_user(http_, "Status");
  const auto key = "status:" + fold_user_name(user.name);
  ASSERT_EQ(redis({"EXISTS", key}), "0");
  const auto misses = api_metric("rtmc_status_cache_misses_total");
  const auto hits = api_metric("rtmc_status_cache_hits_total");

  // Never connected: offline, last_seen null; read from PostgreSQL and cached.
  auto first = http_status(user.name);
  EXPECT_EQ(boost::json::serialize(first),
            boost::json::serialize(
                boost::json::object{{"user", user.name}, {"status", "offline"}, {"last_seen", nullptr}}));
  EXPECT_EQ(api_metric("rtmc_status_cache_misses_total"), misses + 1);
  EXPECT_EQ(redis({"EXISTS", key}), "1") << "the miss filled the cache";
  EXPECT_NE(redis({"PTTL", key}), "-1") << "with a TTL";

  // Any case finds it, and the answer carries the registered spelling.
  auto upper = user.name;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(str(http_status(upper), "user"), user.name);
  EXPECT_EQ(api_metric("rtmc_status_cache_hits_total"), hits + 1) << "the second read came from Redis";

  // A status change is visible to the next read.
  Peer peer(kGatewayA, user, "status");
  auto online = http_status(user.name);
  EXPECT_EQ(str(online, "status"), "online");
  EXPECT_NEAR(static_cast<double>(online.at("last_seen").as_int64()), static_cast<double>(now_ms()), 10000.0);

  // The same over TCP.
  auto reply = peer.request({{"type", "status"}, {"user", upper}});
  EXPECT_EQ(str(reply, "type"), "status") << to_text(reply);
  EXPECT_EQ(str(reply, "user"), user.name);
  EXPECT_EQ(str(reply, "status"), "online");
  EXPECT_EQ(reply.at("last_seen"), online.at("last_seen"));
  auto unknown = peer.request({{"type", "status"}, {"user", unique_name("nobody")}});
  EXPECT_EQ(str(unknown, "type"), "error");
  EXPECT_EQ(str(unknown, "code"), "not_found") << to_text(unknown);

  auto missing = http_.request("GET", "/users/" + unique_name("nobody") + "/status");
  expect_http_error(missing, 404, "not_found");
}

TEST_F(Presence, PresenceAndMembersAcrossTwoGateways) {
  auto gateway_b = start_gateway(services_, secret_, kGatewayB, gateway_flags());
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  const auto room = unique_name("members-");

  Peer a(kGatewayA, alice, "alice@A");
  a.join(room);
  auto not_joined = a.request({{"type", "members"}, {"room", unique_name("other-")}});
  EXPECT_EQ(str(not_joined, "code"), "not_joined") << to_text(not_joined);

  Peer b1(kGatewayB, bob, "bob@B");
  b1.join(room);
  a.wait_presence(room, bob.name, "join");
  // Sorted, each once, the same on both gateways.
  auto expected = std::vector{alice.name, bob.name};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(users_of(a.request({{"type", "members"}, {"room", room}})), expected);
  EXPECT_EQ(users_of(b1.request({{"type", "members"}, {"room", room}})), expected);

  // Bob's second connection (on A) is no news; nor is the first one leaving.
  Peer b2(kGatewayA, bob, "bob@A");
  b2.join(room);
  b1.leave(room);
  EXPECT_EQ(users_of(a.request({{"type", "members"}, {"room", room}})), expected);
  // A connection that drops counts as a leave: bob's last one goes now.
  b2.close();
  a.wait_presence(room, bob.name, "leave");

  EXPECT_EQ(a.presence(room).size(), 2u) << a.dump();
  for (const auto* peer : {&b1, &b2})
    for (const auto& event : peer->presence(room))
      EXPECT_NE(str(event, "user"), bob.name) << "no event about oneself: " << peer->dump();
  EXPECT_EQ(users_of(a.request({{"type", "members"}, {"room", room}})), std::vector{alice.name});
}

TEST_F(Presence, KillNineOfAGatewayTakesItsUsersOffline) {
  auto gateway_b = start_gateway(services_, secret_, kGatewayB, gateway_flags());
  auto watcher_user = make_user(http_, "watch");
  auto doomed_user = make_user(http_, "doomed");
  const auto room = unique_name("kill-");
  Peer watcher(kGatewayA, watcher_user, "watcher@A");
  watcher.join(room);
  {
    Peer doomed(kGatewayB, doomed_user, "doomed@B");
    doomed.join(room);
    watcher.wait_presence(room, doomed_user.name, "join");
    ASSERT_TRUE(wait_pg_status(doomed_user.name, "online", 3s).has_value());
    doomed.stop_heartbeat();
    gateway_b->kill9();
    const auto killed = SteadyClock::now();
    // Liveness TTL + one sweep period + the PostgreSQL write lag, with slack.
    const auto bound = std::chrono::milliseconds(kPresenceTtlS * 1000 + kPresenceTtlS * 1000 / 3 + 1000);
    watcher.wait_presence(room, doomed_user.name, "leave", bound + 5s);
    const auto leave_after = SteadyClock::now() - killed;
    auto offline_at = wait_pg_status(doomed_user.name, "offline", bound + 5s);
    ASSERT_TRUE(offline_at.has_value());
    EXPECT_EQ(str(http_status(doomed_user.name), "status"), "offline");
    EXPECT_LE(*offline_at - killed, bound + 3s);
    std::printf(
        "[measure] kill -9 of a gateway (liveness TTL %d s): leave after %lld ms, offline in PostgreSQL "
        "after %lld ms\n",
        kPresenceTtlS, static_cast<long long>(std::chrono::duration_cast<Millis>(leave_after).count()),
        static_cast<long long>(std::chrono::duration_cast<Millis>(*offline_at - killed).count()));
  }
  EXPECT_EQ(users_of(watcher.request({{"type", "members"}, {"room", room}})), std::vector{watcher_user.name});
}

TEST_F(Presence, AGatewayStoppedWithClientsTakesThemOfflineAndOutOfTheirRooms) {
  auto gateway_b = start_gateway(services_, secret_, kGatewayB, gateway_flags());
  auto watcher_user = make_user(http_, "watch");
  auto users = std::vector{make_user(http_, "stop1-"), make_user(http_, "stop2-")};
  const auto room = unique_name("stop-");
  Peer watcher(kGatewayA, watcher_user, "watcher@A");
  watcher.join(room);
  std::vector<std::unique_ptr<Peer>> peers;
  for (const auto& user : users) {
    peers.push_back(std::make_unique<Peer>(kGatewayB, user, user.name + "@B"));
    peers.back()->join(room);
    watcher.wait_presence(room, user.name, "join");
  }
  for (const auto& user : users) ASSERT_TRUE(wait_pg_status(user.name, "online", 3s).has_value());

  EXPECT_EQ(gateway_b->terminate(10s), 0) << "SIGTERM with clients connected: a clean exit";
  for (const auto& user : users) {
    watcher.wait_presence(room, user.name, "leave", 5s);
    EXPECT_TRUE(wait_pg_status(user.name, "offline", 3s).has_value()) << user.name;
    EXPECT_EQ(str(http_status(user.name), "status"), "offline");
  }
  EXPECT_EQ(users_of(watcher.request({{"type", "members"}, {"room", room}})), std::vector{watcher_user.name});
  for (auto& peer : peers) peer->close();
}

TEST_F(Presence, ReconnectWithTheSameTokenAfterADroppedConnection) {
  auto user = make_user(http_, "again");
  const auto room = unique_name("again-");
  {
    LineClient first(kGatewayA, 0, "first");
    first.auth(user.token, user.name);
    first.join(room);
    first.close();  // dropped without a goodbye
  }
  Peer second(kGatewayA, user, "second");
  second.join(room);
  // The first connection's record is gone, the second one's is there.
  const auto deadline = SteadyClock::now() + 5s;
  while (redis({"HLEN", "online:" + fold_user_name(user.name)}) != "1" && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(redis({"HLEN", "online:" + fold_user_name(user.name)}), "1");
  EXPECT_EQ(users_of(second.request({{"type", "members"}, {"room", room}})), std::vector{user.name});
  EXPECT_EQ(str(http_status(user.name), "status"), "online");
}

}  // namespace
}  // namespace rtmc::e2e
