// Integration tests of store::Presence against the real Redis
// (RTMC_TEST_REDIS). A missing variable fails the tests. Every test uses
// fresh user, room and gateway names. Sweeps also take dead gateways other
// tests left behind, so their results are checked for this test's names only.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "common/keys.hpp"
#include "common/names.hpp"
#include "store/itest_env.hpp"
#include "store/presence.hpp"
#include "store/unavailable.hpp"

namespace rtmc::store {
namespace {

using namespace std::chrono_literals;
using itest::env;
using itest::run_on;
using itest::unique;

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

class PresenceTest : public ::testing::Test {
 protected:
  template <class T>
  T run(boost::asio::awaitable<T> task) {
    return run_on(io_, std::move(task));
  }
  void SetUp() override {
    auto address = env("RTMC_TEST_REDIS");
    ASSERT_TRUE(address) << "RTMC_TEST_REDIS is not set (scripts/services.sh start DIR writes DIR/env)";
    config_ = RedisConfig::parse(*address);
    client_.emplace(config_, 2);
  }
  void TearDown() override {
    // Nothing of a test outlives it in the registry (another test's sweep
    // would report it).
    for (auto& presence : made_) run(presence->unregister(0));
  }
  Presence& gateway(PresenceOptions options = {}) {
    made_.push_back(std::make_unique<Presence>(*client_, unique("gw-"), options));
    return *made_.back();
  }
  redis::Reply command(const std::vector<std::string>& args) {
    redis::Connection connection(config_);
    return connection.command(args);
  }
  std::map<std::string, std::string> hash(const std::string& key) {
    auto reply = command({"HGETALL", key});
    std::map<std::string, std::string> fields;
    for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
      fields[reply.elements[i].str] = reply.elements[i + 1].str;
    return fields;
  }
  bool exists(const std::string& key) { return command({"EXISTS", key}).integer == 1; }
  bool registered(const std::string& gateway_id) {
    return command({"SISMEMBER", keys::gateways(), gateway_id}).integer == 1;
  }

  boost::asio::io_context io_;  // first: it outlives the client (see run_on)
  RedisConfig config_;
  std::optional<redis::Client> client_;
  std::vector<std::unique_ptr<Presence>> made_;
};

TEST_F(PresenceTest, AUserWithTwoConnectionsIsOnlineOnceAndOfflineAfterBoth) {
  auto& gw = gateway();
  const auto user = unique("Pu_");  // mixed case: the user keys are folded
  const auto lower = fold_user_name(user);
  ASSERT_NE(user, lower);

  auto first = run(gw.connect(1, user, 1000));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->user, user);
  EXPECT_TRUE(first->online);
  EXPECT_EQ(first->at_ms, 1000);
  EXPECT_EQ(hash("status:" + lower), (std::map<std::string, std::string>{
                                         {"user", user}, {"status", "online"}, {"last_seen", "1000"}}));
  const auto ttl = command({"PTTL", "status:" + lower}).integer;
  EXPECT_GT(ttl, 250'000);
  EXPECT_LE(ttl, 300'000);

  EXPECT_FALSE(run(gw.connect(2, user, 2000)));
  EXPECT_EQ(hash("online:" + lower), (std::map<std::string, std::string>{{gw.gateway_id() + "/1", "1000"},
                                                                         {gw.gateway_id() + "/2", "2000"}}));
  EXPECT_EQ(hash(keys::gateway_connections(gw.gateway_id())),
            (std::map<std::string, std::string>{{"1", user}, {"2", user}}));
  EXPECT_EQ(hash("status:" + lower).at("last_seen"), "1000");  // online since the first

  EXPECT_FALSE(run(gw.disconnect(1, user, 3000)));
  EXPECT_EQ(hash("status:" + lower).at("status"), "online");
  EXPECT_TRUE(exists("online:" + lower));

  auto last = run(gw.disconnect(2, user, 4000));
  ASSERT_TRUE(last);
  EXPECT_EQ(last->user, user);
  EXPECT_FALSE(last->online);
  EXPECT_EQ(last->at_ms, 4000);
  EXPECT_FALSE(exists("online:" + lower));
  EXPECT_FALSE(exists(keys::gateway_connections(gw.gateway_id())));
  EXPECT_EQ(hash("status:" + lower), (std::map<std::string, std::string>{
                                         {"user", user}, {"status", "offline"}, {"last_seen", "4000"}}));
}

TEST_F(PresenceTest, ConnectionsOnTwoGatewaysCountTogether) {
  auto& a = gateway();
  auto& b = gateway();
  const auto user = unique("pu_");
  EXPECT_TRUE(run(a.connect(7, user, 1000)));
  EXPECT_FALSE(run(b.connect(7, user, 1001)));  // same connection id, other gateway
  EXPECT_FALSE(run(a.disconnect(7, user, 1002)));
  EXPECT_TRUE(run(b.disconnect(7, user, 1003)));
}

TEST_F(PresenceTest, DisconnectOfAnUnknownRecordChangesNothing) {
  auto& gw = gateway();
  const auto user = unique("pu_");
  EXPECT_FALSE(run(gw.disconnect(99, user, 1000)));
  EXPECT_FALSE(exists(keys::status(user)));
  EXPECT_FALSE(exists(keys::online(user)));

  ASSERT_TRUE(run(gw.connect(1, user, 2000)));
  EXPECT_FALSE(run(gw.disconnect(2, user, 3000)));              // not this user's connection
  EXPECT_FALSE(run(gw.disconnect(1, unique("other_"), 3000)));  // not that user's
  EXPECT_EQ(hash(keys::status(user)).at("status"), "online");
  EXPECT_EQ(hash(keys::online(user)).size(), 1u);
  EXPECT_TRUE(run(gw.disconnect(1, user, 4000)));
  EXPECT_FALSE(run(gw.disconnect(1, user, 5000)));  // twice: already gone
  EXPECT_EQ(hash(keys::status(user)).at("last_seen"), "4000");
}

TEST_F(PresenceTest, JoinAndLeaveCountPerUserAcrossGateways) {
  auto& a = gateway();
  auto& b = gateway();
  const auto room = unique("pr_");
  const auto user = unique("pu_");
  EXPECT_TRUE(run(a.join(room, user)));   // first anywhere: join event
  EXPECT_FALSE(run(a.join(room, user)));  // a second connection on a
  EXPECT_FALSE(run(b.join(room, user)));  // and one on b
  EXPECT_EQ(hash(keys::members(room)).at(user), "3");
  EXPECT_EQ(hash(keys::gateway_rooms(a.gateway_id())).at(room + "\n" + user), "2");
  EXPECT_EQ(hash(keys::gateway_rooms(b.gateway_id())).at(room + "\n" + user), "1");

  EXPECT_FALSE(run(a.leave(room, user)));
  EXPECT_FALSE(run(a.leave(room, user)));
  EXPECT_FALSE(exists(keys::gateway_rooms(a.gateway_id())));
  // a has nothing recorded any more: nothing changes.
  EXPECT_FALSE(run(a.leave(room, user)));
  EXPECT_EQ(hash(keys::members(room)).at(user), "1");
  EXPECT_EQ(run(a.members(room)), std::vector<std::string>{user});

  EXPECT_TRUE(run(b.leave(room, user)));  // the last one: leave event
  EXPECT_FALSE(exists(keys::members(room)));
  EXPECT_TRUE(run(a.members(room)).empty());
  EXPECT_FALSE(run(b.leave(room, user)));
}

TEST_F(PresenceTest, MembersAreSortedAndEachUserOnce) {
  auto& a = gateway();
  auto& b = gateway();
  const auto room = unique("pr_");
  const auto suffix = unique("");
  const std::string carol = "carol" + suffix, alice = "alice" + suffix, Bob = "Bob" + suffix;
  run(a.join(room, carol));
  run(b.join(room, alice));
  run(a.join(room, alice));
  run(b.join(room, Bob));
  run(b.join(room, carol));
  EXPECT_EQ(run(b.members(room)), (std::vector<std::string>{Bob, alice, carol}));  // byte order
  EXPECT_EQ(run(a.members(room)), run(b.members(room)));
  EXPECT_TRUE(run(a.members(unique("empty_"))).empty());
}

TEST_F(PresenceTest, RefreshIsTrueOnlyWhenTheGatewayWasNotRegistered) {
  auto& gw = gateway(PresenceOptions{5000ms, 300000ms});
  EXPECT_FALSE(registered(gw.gateway_id()));
  EXPECT_TRUE(run(gw.refresh(1000)));
  EXPECT_FALSE(run(gw.refresh(1000)));
  EXPECT_TRUE(registered(gw.gateway_id()));
  const auto ttl = command({"PTTL", keys::gateway_alive(gw.gateway_id())}).integer;
  EXPECT_GT(ttl, 4000);
  EXPECT_LE(ttl, 5000);
  EXPECT_TRUE(run(gw.unregister(0)).gateways.size() == 1);
  EXPECT_FALSE(registered(gw.gateway_id()));
  EXPECT_FALSE(exists(keys::gateway_alive(gw.gateway_id())));
  EXPECT_TRUE(run(gw.refresh(1000)));  // registered again
}

TEST_F(PresenceTest, LivenessKeyExpiresWithoutRefresh) {
  auto& gw = gateway(PresenceOptions{300ms, 300000ms});
  ASSERT_TRUE(run(gw.refresh(1000)));
  EXPECT_TRUE(exists(keys::gateway_alive(gw.gateway_id())));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (exists(keys::gateway_alive(gw.gateway_id())) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(exists(keys::gateway_alive(gw.gateway_id())));
  EXPECT_TRUE(registered(gw.gateway_id()));  // only a sweep removes the entry
}

// The dead gateway's liveness key expires on its own (a short TTL); the
// sweeper is another gateway.
TEST_F(PresenceTest, AnotherGatewaySweepsADeadGatewaysRecords) {
  auto& dead = gateway(PresenceOptions{300ms, 300000ms});
  auto& sweeper = gateway();
  auto& alive = gateway();
  const auto only_dead = unique("pu_a");  // connected via the dead gateway only
  const auto both = unique("pu_b");       // also via the sweeper
  const auto on_alive = unique("pu_c");   // via a third, live gateway only
  const auto room = unique("pr_");
  const auto other_room = unique("pr_");
  ASSERT_TRUE(run(dead.refresh(4500)));
  ASSERT_TRUE(run(sweeper.refresh(1000)));
  ASSERT_TRUE(run(alive.refresh(1000)));

  ASSERT_TRUE(run(dead.connect(1, only_dead, 1000)));
  ASSERT_TRUE(run(dead.connect(2, both, 1000)));
  ASSERT_FALSE(run(sweeper.connect(1, both, 1000)));
  ASSERT_TRUE(run(alive.connect(1, on_alive, 1000)));
  run(dead.join(room, only_dead));
  run(dead.join(other_room, only_dead));
  run(dead.join(room, both));
  run(dead.join(room, both));  // two connections in the room, both on the dead gateway
  run(sweeper.join(room, both));
  run(alive.join(room, on_alive));

  // The sweeper never sweeps itself, nor a live gateway.
  EXPECT_TRUE(contains(run(sweeper.members(room)), only_dead));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (exists(keys::gateway_alive(dead.gateway_id())) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  ASSERT_FALSE(exists(keys::gateway_alive(dead.gateway_id())));
  ASSERT_FALSE(run(alive.refresh(1000)));

  const auto result = run(sweeper.sweep(5000));
  EXPECT_TRUE(contains(result.gateways, dead.gateway_id()));
  EXPECT_FALSE(contains(result.gateways, sweeper.gateway_id()));
  EXPECT_FALSE(contains(result.gateways, alive.gateway_id()));

  std::vector<std::string> offline;
  for (const auto& change : result.went_offline) {
    if (change.user != only_dead && change.user != both && change.user != on_alive) continue;
    EXPECT_FALSE(change.online);
    EXPECT_EQ(change.at_ms, 4500) << "the dead gateway's last refresh, not the sweep's time";
    offline.push_back(change.user);
  }
  EXPECT_EQ(offline, std::vector<std::string>{only_dead});

  std::vector<std::pair<std::string, std::string>> left;
  for (const auto& event : result.left_rooms) {
    if (event.room != room && event.room != other_room) continue;
    EXPECT_FALSE(event.joined);
    left.emplace_back(event.room, event.user);
  }
  std::sort(left.begin(), left.end());
  auto expected =
      std::vector<std::pair<std::string, std::string>>{{room, only_dead}, {other_room, only_dead}};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(left, expected);

  // Its users: offline unless connected elsewhere, with the status cache.
  EXPECT_FALSE(exists(keys::online(only_dead)));
  EXPECT_EQ(hash(keys::status(only_dead)),
            (std::map<std::string, std::string>{
                {"user", only_dead}, {"status", "offline"}, {"last_seen", "4500"}}));
  EXPECT_EQ(hash(keys::online(both)),
            (std::map<std::string, std::string>{{sweeper.gateway_id() + "/1", "1000"}}));
  EXPECT_EQ(hash(keys::status(both)).at("status"), "online");
  // Its room memberships: gone, the others' kept with their counts.
  EXPECT_EQ(run(sweeper.members(room)), (std::vector<std::string>{both, on_alive}));
  EXPECT_EQ(hash(keys::members(room)).at(both), "1");
  EXPECT_TRUE(run(sweeper.members(other_room)).empty());
  // Its own records and registry entry: gone.
  EXPECT_FALSE(exists(keys::gateway_connections(dead.gateway_id())));
  EXPECT_FALSE(exists(keys::gateway_seen(dead.gateway_id())));
  EXPECT_FALSE(exists(keys::gateway_rooms(dead.gateway_id())));
  EXPECT_FALSE(registered(dead.gateway_id()));
  // The live gateway's records are untouched.
  EXPECT_TRUE(registered(alive.gateway_id()));
  EXPECT_EQ(hash(keys::gateway_connections(alive.gateway_id())).size(), 1u);
  EXPECT_EQ(hash(keys::status(on_alive)).at("status"), "online");

  // A second sweep finds nothing of it.
  const auto again = run(alive.sweep(6000));
  EXPECT_FALSE(contains(again.gateways, dead.gateway_id()));
  for (const auto& change : again.went_offline) EXPECT_NE(change.user, only_dead);
  for (const auto& event : again.left_rooms) EXPECT_NE(event.room, room);

  // The dead gateway comes back: its late calls change nothing, and its
  // next refresh tells it to register its connections again.
  EXPECT_FALSE(run(dead.disconnect(2, both, 7000)));
  EXPECT_EQ(hash(keys::online(both)).size(), 1u);
  EXPECT_FALSE(run(dead.leave(room, both)));
  EXPECT_EQ(hash(keys::members(room)).at(both), "1");
  EXPECT_TRUE(run(dead.refresh(1000)));
}

TEST_F(PresenceTest, AGatewayNeverSweepsItself) {
  auto& gw = gateway(PresenceOptions{300ms, 300000ms});
  const auto user = unique("pu_");
  ASSERT_TRUE(run(gw.refresh(1000)));
  ASSERT_TRUE(run(gw.connect(1, user, 1000)));
  command({"DEL", keys::gateway_alive(gw.gateway_id())});
  const auto result = run(gw.sweep(2000));
  EXPECT_FALSE(contains(result.gateways, gw.gateway_id()));
  EXPECT_TRUE(registered(gw.gateway_id()));
  EXPECT_TRUE(exists(keys::online(user)));
  EXPECT_TRUE(run(gw.disconnect(1, user, 3000)));
}

TEST_F(PresenceTest, UnregisterRemovesTheRecordsItStillHas) {
  auto& stopping = gateway();
  auto& sweeper = gateway();
  const auto user = unique("pu_");
  const auto room = unique("pr_");
  ASSERT_TRUE(run(stopping.refresh(1000)));
  ASSERT_TRUE(run(stopping.connect(1, user, 1000)));
  ASSERT_TRUE(run(stopping.join(room, user)));
  // Its connections' own clean-ups have not run (or could not be written):
  // the clean stop takes the records out itself, as a sweep would.
  const auto result = run(stopping.unregister(2000));
  EXPECT_EQ(result.gateways, std::vector{stopping.gateway_id()});
  ASSERT_EQ(result.went_offline.size(), 1u);
  EXPECT_EQ(result.went_offline[0].user, user);
  EXPECT_EQ(result.went_offline[0].at_ms, 2000);
  ASSERT_EQ(result.left_rooms.size(), 1u);
  EXPECT_EQ(result.left_rooms[0].room, room);
  EXPECT_EQ(result.left_rooms[0].user, user);
  EXPECT_FALSE(exists(keys::gateway_alive(stopping.gateway_id())));
  EXPECT_FALSE(registered(stopping.gateway_id()));
  EXPECT_FALSE(exists(keys::online(user)));
  EXPECT_TRUE(run(stopping.members(room)).empty());

  // Nothing is left for a sweeper, and a late clean-up changes nothing.
  EXPECT_FALSE(contains(run(sweeper.sweep(3000)).gateways, stopping.gateway_id()));
  EXPECT_FALSE(run(stopping.disconnect(1, user, 3000)));
  EXPECT_FALSE(run(stopping.leave(room, user)));
}

TEST_F(PresenceTest, UnregisterAfterACleanStopRemovesTheEntry) {
  auto& gw = gateway();
  const auto user = unique("pu_");
  ASSERT_TRUE(run(gw.refresh(1000)));
  ASSERT_TRUE(run(gw.connect(1, user, 1000)));
  ASSERT_TRUE(run(gw.disconnect(1, user, 2000)));
  EXPECT_TRUE(run(gw.unregister(3000)).went_offline.empty());
  EXPECT_FALSE(registered(gw.gateway_id()));
  EXPECT_FALSE(exists(keys::gateway_alive(gw.gateway_id())));
}

TEST(PresenceUnavailableTest, NoRedisIsUnavailable) {
  // A loopback port that was free a moment ago: nothing answers.
  boost::asio::io_context context;  // first: it outlives the client (see run_on)
  boost::asio::ip::tcp::acceptor probe(context, {boost::asio::ip::make_address("127.0.0.1"), 0});
  RedisConfig config;
  config.address.port = probe.local_endpoint().port();
  probe.close();
  config.timeout = 500ms;
  redis::Client client(config, 1);
  Presence presence(client, unique("gw-"), {});
  EXPECT_THROW(run_on(context, presence.connect(1, "someone", 1000)), Unavailable);
  EXPECT_THROW(run_on(context, presence.refresh(1000)), Unavailable);
  EXPECT_THROW(run_on(context, presence.members("room")), Unavailable);
  EXPECT_THROW(run_on(context, presence.sweep(1000)), Unavailable);
}

}  // namespace
}  // namespace rtmc::store
