// Token refresh (issue 9) across the api and the gateway: POST /refresh
// gives a new token of the same user, and an open gateway connection moves
// to it with the `refresh` frame instead of being cut when its first token
// expires; a token that is not the connection's user's, or no token at all,
// is a bad_frame and the connection keeps the one it had.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17004);
constexpr int kHeartbeatS = 1;
// Long enough that a refresh half way gives a token expiring whole seconds
// later (exp has one-second resolution).
constexpr int kTokenTtlS = 12;

using boost::json::value;

std::int64_t wall_ms() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class Refresh : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort, {"--token-ttl-s", std::to_string(kTokenTtlS)});
    // No idle cut in the way: only the session checks (every heartbeat from
    // auth) may close a connection.
    gateway_ = start_gateway(services_, secret_, kGateway,
                             {"--heartbeat-s", std::to_string(kHeartbeatS), "--idle-timeout-ms", "60000",
                              "--auth-timeout-s", "1"});
  }

  void TearDown() override {
    EXPECT_TRUE(!api_ || api_->running()) << "rtmc-api exited during the test";
    EXPECT_TRUE(!gateway_ || gateway_->running()) << "rtmc-gateway exited during the test";
  }

  std::unique_ptr<LineClient> connect(const std::string& token, const std::string& user,
                                      const std::string& label) {
    auto client = std::make_unique<LineClient>(kGateway, 0, label);
    client->auth(token, user, kHeartbeatS);
    return client;
  }

  HttpResponse refresh(const std::string& token) const {
    return http_.request("POST", "/refresh", {}, {"Authorization: Bearer " + token});
  }

  HttpResponse logout(const std::string& token) const {
    return http_.request("POST", "/logout", {}, {"Authorization: Bearer " + token});
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_;
  HttpClient http_{kApiPort};
};

TEST_F(Refresh, ARefreshedConnectionIsNotCutWhenItsFirstTokenExpiresAndALogoutOfTheNewOneCutsIt) {
  auto user = make_user(http_, "rf");
  const auto room = unique_name("rf-");
  auto client = connect(user.token, user.name, "refreshing");
  ASSERT_EQ(client->join(room), 0);
  auto first = http_.publish(user.token, room, "first token", std::string("m1"));
  ASSERT_EQ(first.status, 202) << first.describe();
  expect_message(client->next(), room, 1, "m1", user.name, "first token");

  // Half way through the first token's life, a new one from the api.
  std::this_thread::sleep_for(std::chrono::seconds(kTokenTtlS / 2));
  auto refreshed = refresh(user.token);
  ASSERT_EQ(refreshed.status, 200) << refreshed.describe();
  const auto answer = refreshed.json();
  ASSERT_EQ(answer.size(), 3u) << refreshed.describe();
  EXPECT_EQ(str(answer, "user"), user.name);
  const auto token = str(answer, "token");
  ASSERT_FALSE(token.empty());
  EXPECT_NE(token, user.token);
  const auto expires_at = num(answer, "expires_at");
  EXPECT_GE(expires_at, wall_ms() + (kTokenTtlS - 2) * 1000);

  client->send_json({{"type", "refresh"}, {"token", token}, {"ref", "r1"}});
  const auto frame = client->next();
  EXPECT_EQ(str(frame, "type"), "refreshed") << to_text(frame);
  EXPECT_EQ(str(frame, "user"), user.name);
  EXPECT_EQ(num(frame, "expires_at"), expires_at);
  EXPECT_EQ(frame.at("ref"), value("r1"));

  // Past the first token's expiry by more than a heartbeat (its session is
  // gone from Redis then too): the connection stays.
  const auto first_expiry_ms = expires_at - (kTokenTtlS / 2) * 1000;
  const auto wait_ms = first_expiry_ms + 2500 - wall_ms();
  ASSERT_LT(wait_ms + wall_ms(), expires_at - 3000) << "the new token must outlive the wait by far";
  client->expect_silence(Millis(std::max<std::int64_t>(wait_ms, 0)));
  client->ping(value("after the first expiry"));
  expect_http_error(http_.publish(user.token, room, "old", std::string("m2")), 401, "unauthorized");
  auto second = http_.publish(token, room, "new token", std::string("m3"));
  ASSERT_EQ(second.status, 202) << second.describe();
  expect_message(client->next(), room, 2, "m3", user.name, "new token");

  // The new session ends: the connection is cut as any revoked one is.
  auto out = logout(token);
  ASSERT_EQ(out.status, 204) << out.describe();
  auto frames = client->expect_closed(std::chrono::milliseconds(kHeartbeatS * 1000 + 2500));
  ASSERT_EQ(frames.size(), 1u) << "expected only the unauthorized error before the close";
  expect_error(frames[0], "unauthorized");
}

TEST_F(Refresh, AnotherUsersOrAGarbageTokenIsABadFrameAndTheConnectionKeepsItsToken) {
  auto alice = make_user(http_, "rfa");
  auto bob = make_user(http_, "rfb");
  auto client = connect(alice.token, alice.name, "alice");

  client->send_json({{"type", "refresh"}, {"token", bob.token}, {"ref", 1}});
  expect_error(client->next(), "bad_frame", value(1));
  client->send_json({{"type", "refresh"}, {"token", "garbage"}, {"ref", 2}});
  expect_error(client->next(), "bad_frame", value(2));
  client->send_json({{"type", "refresh"}, {"ref", 3}});
  expect_error(client->next(), "bad_frame", value(3));
  client->ping(value("still open"));

  // Bob's session ending does not touch alice's connection...
  ASSERT_EQ(logout(bob.token).status, 204);
  client->expect_silence(std::chrono::milliseconds(kHeartbeatS * 1000 + 1000));
  client->ping(value("after bob's logout"));
  // ... her own does: the connection still runs on her first token.
  ASSERT_EQ(logout(alice.token).status, 204);
  auto frames = client->expect_closed(std::chrono::milliseconds(kHeartbeatS * 1000 + 2500));
  ASSERT_EQ(frames.size(), 1u);
  expect_error(frames[0], "unauthorized");
}

TEST_F(Refresh, TheApiRefusesABadExpiredOrLoggedOutTokenAndTheOldOneStaysValid) {
  auto user = make_user(http_, "rfh");
  expect_http_error(refresh("garbage"), 401, "unauthorized");
  expect_http_error(http_.request("POST", "/refresh"), 401, "unauthorized");

  auto refreshed = refresh(user.token);
  ASSERT_EQ(refreshed.status, 200) << refreshed.describe();
  const auto token = str(refreshed.json(), "token");
  // Both tokens work: the old one until it expires or is logged out.
  const auto room = unique_name("rfh-");
  ASSERT_EQ(http_.publish(user.token, room, "old", std::string("o1")).status, 202);
  ASSERT_EQ(http_.publish(token, room, "new", std::string("n1")).status, 202);
  connect(token, user.name, "new-token")->ping(value("ok"));

  ASSERT_EQ(logout(user.token).status, 204);
  expect_http_error(refresh(user.token), 401, "unauthorized");
  ASSERT_EQ(http_.publish(token, room, "new", std::string("n2")).status, 202);
}

}  // namespace
}  // namespace rtmc::e2e
