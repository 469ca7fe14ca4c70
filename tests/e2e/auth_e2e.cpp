// Login and token refusal (flow 5) across the api and the gateway: wrong
// password, unknown user, expired token, token after logout.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <thread>

#include "auth/auth.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17004);
const std::uint16_t kShortLivedApi = e2e_port(18081);
constexpr int kHeartbeatS = 2;

using boost::json::value;
using SteadyClock = std::chrono::steady_clock;

class Auth : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_ = start_gateway(services_, secret_, kGateway,
                             {"--heartbeat-s", std::to_string(kHeartbeatS), "--auth-timeout-s", "2"});
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

  // Expects a gateway auth with `token` to be answered unauthorized and closed.
  void expect_gateway_refuses(const std::string& token, const std::string& label) {
    SCOPED_TRACE(label);
    LineClient client(kGateway, 0, label);
    client.send_json({{"type", "auth"}, {"token", token}, {"ref", label}});
    auto frames = client.expect_closed(5s);
    ASSERT_EQ(frames.size(), 1u) << label << ": expected one error frame, then the close";
    expect_error(frames[0], "unauthorized", value(label));
  }

  // Puts a live session for `jti` into Redis, as the api's login does.
  void plant_session(const std::string& jti, const std::string& user) {
    RedisClient redis(services_.redis);
    ASSERT_EQ(redis.command({"SET", "session:" + jti, user, "PX", "600000"}), "OK");
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_;
  HttpClient http_{kApiPort};
};

std::string credentials(const std::string& user, const std::string& password) {
  return boost::json::serialize(boost::json::object{{"user", user}, {"password", password}});
}

TEST_F(Auth, WrongPasswordAndUnknownUserGetTheSameAnswer) {
  auto user = make_user(http_, "pw");
  auto wrong = http_.post_json("/login", credentials(user.name, user.password + "x"));
  auto unknown = http_.post_json("/login", credentials(unique_name("nobody"), user.password));
  auto malformed = http_.post_json("/login", credentials("no such user!", user.password));
  expect_http_error(wrong, 401, "unauthorized");
  EXPECT_EQ(unknown.status, wrong.status);
  EXPECT_EQ(unknown.body, wrong.body) << "an unknown user must not be told from a wrong password";
  EXPECT_EQ(malformed.status, wrong.status);
  EXPECT_EQ(malformed.body, wrong.body);
  // Names are matched regardless of case, the password is not.
  std::string upper = user.name;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto folded = http_.post_json("/login", credentials(upper, user.password));
  EXPECT_EQ(folded.status, 200) << folded.describe();
  std::string upper_password = user.password;
  for (auto& c : upper_password) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto wrong_case = http_.post_json("/login", credentials(user.name, upper_password));
  EXPECT_EQ(wrong_case.body, wrong.body);
  // The right password still works after the failures.
  EXPECT_FALSE(http_.login(user.name, user.password).empty());
}

TEST_F(Auth, ExpiredTokenIsRefusedByApiAndGatewayEvenWithALiveSession) {
  auto user = make_user(http_, "exp");
  const auto room = unique_name("exp-");

  // Control: a token minted with the test secret plus a planted session is
  // accepted, so the refusal below is about expiry and nothing else.
  auth::TokenService minter(secret_, std::chrono::seconds(3600));
  auto good = minter.issue(user.name);
  plant_session(good.claims.jti, user.name);
  auto accepted = http_.publish(good.token, room, "minted", std::string("minted-1"));
  ASSERT_EQ(accepted.status, 202) << accepted.describe();
  connect(good.token, user.name, "minted-ok")->ping(value("ok"));

  auth::TokenService short_lived(secret_, std::chrono::seconds(1));
  auto expired = short_lived.issue(user.name);
  plant_session(expired.claims.jti, user.name);
  // exp has one-second resolution: wait until it is surely past.
  std::this_thread::sleep_for(std::chrono::milliseconds(
      std::max<std::int64_t>(
          0, expired.claims.expires_at_ms -
                 std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
                     .count()) +
      1200));

  expect_http_error(http_.publish(expired.token, room, "late", std::string("late-1")), 401, "unauthorized");
  expect_gateway_refuses(expired.token, "expired");
}

TEST_F(Auth, TokenExpiringDuringAConnectionEndsIt) {
  // An api issuing 3-second tokens (a real login, a real session).
  auto short_api = start_api(services_, secret_, kShortLivedApi, {"--token-ttl-s", "3"});
  HttpClient short_http(kShortLivedApi);
  auto user = make_user(short_http, "ttl");
  const auto room = unique_name("ttl-");

  auto client = connect(user.token, user.name, "ttl-client");
  ASSERT_EQ(client->join(room), 0);
  auto ok = short_http.publish(user.token, room, "while valid", std::string("v1"));
  ASSERT_EQ(ok.status, 202) << ok.describe();
  expect_message(client->next(), room, 1, "v1", user.name, "while valid");

  // Expiry (3 s) plus at most one heartbeat period (2 s) and some slack.
  auto frames = client->expect_closed(8s);
  ASSERT_EQ(frames.size(), 1u) << "expected only the unauthorized error before the close";
  expect_error(frames[0], "unauthorized");
  expect_http_error(short_http.publish(user.token, room, "too late", std::string("v2")), 401, "unauthorized");
  expect_http_error(http_.publish(user.token, room, "too late", std::string("v3")), 401, "unauthorized");
  expect_gateway_refuses(user.token, "expired-login");
}

TEST_F(Auth, LogoutRevokesTheTokenInTheApiAndTheGateway) {
  auto user = make_user(http_, "out");
  auto second_token = http_.login(user.name, user.password);  // another session of the same user
  const auto room = unique_name("out-");

  auto doomed = connect(user.token, user.name, "logged-out");
  auto survivor = connect(second_token, user.name, "other-session");
  ASSERT_EQ(doomed->join(room), 0);
  ASSERT_EQ(survivor->join(room), 0);
  // Let a heartbeat check pass with the session alive: nobody is cut early.
  std::this_thread::sleep_for(std::chrono::milliseconds(kHeartbeatS * 1000 + 500));
  doomed->ping(value("alive"));
  survivor->ping(value("alive"));

  auto logout = http_.request("POST", "/logout", {}, {"Authorization: Bearer " + user.token});
  const auto logged_out_at = SteadyClock::now();
  ASSERT_EQ(logout.status, 204) << logout.describe();
  EXPECT_TRUE(logout.body.empty()) << logout.describe();

  // The api refuses it at once; a second logout is 401.
  expect_http_error(http_.publish(user.token, room, "after logout", std::string("x1")), 401, "unauthorized");
  expect_http_error(http_.request("POST", "/logout", {}, {"Authorization: Bearer " + user.token}), 401,
                    "unauthorized");
  // A new gateway connection with it is refused.
  expect_gateway_refuses(user.token, "after-logout");

  // The connection authenticated with it is closed within one heartbeat.
  auto frames = doomed->expect_closed(std::chrono::milliseconds(kHeartbeatS * 1000 + 2500));
  auto took = std::chrono::duration_cast<Millis>(SteadyClock::now() - logged_out_at);
  ASSERT_EQ(frames.size(), 1u) << "expected only the unauthorized error before the close";
  expect_error(frames[0], "unauthorized");
  EXPECT_LE(took.count(), kHeartbeatS * 1000 + 1500) << "closed later than one heartbeat period after logout";

  // The user's other session is untouched.
  survivor->ping(value("still"));
  auto published = http_.publish(second_token, room, "other session", std::string("s1"));
  ASSERT_EQ(published.status, 202) << published.describe();
  expect_message(survivor->next(), room, 1, "s1", user.name, "other session");
  survivor->expect_silence(300ms);
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

// The idle cut (issue 6): no complete line for 2.5 heartbeat periods closes
// a connection, no earlier (asserted exactly: the clock starts before the
// connect, so before the gateway's last line, and the close is seen as it
// happens by a blocked read) and no later than 1 s after (asserted with slack
// for sanitizer builds on busy cores). Any complete line
// keeps a connection open, a blank one or one that earns an error too;
// partial bytes do not.
constexpr auto kIdleCut = std::chrono::milliseconds(5 * kHeartbeatS * 1000 / 2);
constexpr auto kIdleSlack = 1s + 3s;

TEST_F(Auth, SilenceIsCutAfterTwoAndAHalfHeartbeatsWhateverCompleteLinesKeepOneOpen) {
  auto user = make_user(http_, "idle");
  const auto silent_since = SteadyClock::now();
  auto silent = connect(user.token, user.name, "silent");
  const auto trickling_since = SteadyClock::now();
  auto trickling = connect(user.token, user.name, "trickling");
  auto chatty = connect(user.token, user.name, "chatty");
  auto blank = connect(user.token, user.name, "blank");
  auto erring = connect(user.token, user.name, "erring");

  // The others talk on a thread of their own while the main thread waits for
  // `silent` to be closed in a blocked read.
  // A jthread: a failed assertion below (an exception) still stops and joins it.
  std::jthread talkers([&](std::stop_token stop) {
    for (int i = 0; !stop.stop_requested(); ++i) {
      // try_: a connection cut by mistake must fail the test, not the thread.
      if (i % 4 == 0)
        chatty->try_send_raw(boost::json::serialize(boost::json::object{{"type", "ping"}}) + "\n");
      // A blank line, and one that earns bad_json: each a sign of life.
      if (i % 4 == 1) blank->try_send_raw("\n");
      if (i % 4 == 2) erring->try_send_raw("{not json\n");
      // Never a newline: bytes but no complete line.
      trickling->try_send_raw("{");
      std::this_thread::sleep_for(250ms);
    }
  });

  const auto frames = silent->expect_closed(kIdleCut + kIdleSlack);
  const auto silent_for = SteadyClock::now() - silent_since;
  for (const auto& frame : frames) EXPECT_EQ(str(frame, "type"), "error") << to_text(frame);
  EXPECT_GE(silent_for, kIdleCut);
  EXPECT_LE(silent_for, kIdleCut + kIdleSlack);

  // Past the cut of the others by two more seconds.
  std::this_thread::sleep_for(2s);
  talkers.request_stop();
  talkers.join();
  trickling->expect_closed(kIdleSlack);
  EXPECT_LE(SteadyClock::now() - trickling_since, kIdleCut + 2s + kIdleSlack);

  chatty->send_json({{"type", "ping"}, {"ref", "still open"}});
  for (;;) {
    auto frame = chatty->next();
    ASSERT_EQ(str(frame, "type"), "pong") << to_text(frame);
    if (frame.contains("ref")) break;
  }
  blank->ping(value("still open"));
  erring->send_json({{"type", "ping"}, {"ref", "still open"}});
  int errors = 0;
  for (;;) {
    auto frame = erring->next();
    if (str(frame, "type") == "pong") break;
    expect_error(frame, "bad_json");
    ++errors;
  }
  EXPECT_GE(errors, 1) << "the erroneous lines were answered";
}

// --idle-timeout-ms overrides 2.5 x heartbeat.
TEST_F(Auth, IdleTimeoutFlagSetsTheCut) {
  gateway_.reset();
  gateway_ = start_gateway(services_, secret_, kGateway,
                           {"--heartbeat-s", std::to_string(kHeartbeatS), "--idle-timeout-ms", "1500"});
  auto user = make_user(http_, "idle");
  const auto since = SteadyClock::now();
  auto silent = connect(user.token, user.name, "silent");
  silent->expect_closed(1500ms + kIdleSlack);
  const auto silent_for = SteadyClock::now() - since;
  EXPECT_GE(silent_for, 1500ms);
  EXPECT_LE(silent_for, 1500ms + kIdleSlack);
}

}  // namespace
}  // namespace rtmc::e2e
