#include "api/api_service.hpp"

#include "api/test_support.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <map>

namespace rtmc::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using testing::make_request;
using testing::run_sync;

constexpr auto kSecret = "unit-test-secret-0123456789abcdef";

class FakeUsers final : public UserStore {
 public:
  boost::asio::awaitable<bool> create(std::string name, std::string password_hash) override {
    if (unavailable) throw Unavailable("postgres down");
    auto [it, inserted] = users.emplace(fold_user_name(name), StoredUser{name, password_hash});
    co_return inserted;
  }
  boost::asio::awaitable<std::optional<StoredUser>> find(std::string name) override {
    if (unavailable) throw Unavailable("postgres down");
    auto it = users.find(fold_user_name(name));
    if (it == users.end()) co_return std::nullopt;
    co_return it->second;
  }
  std::map<std::string, StoredUser> users;  // by folded name, like lower(name)
  bool unavailable = false;
};

class FakeSessions final : public SessionStore {
 public:
  struct Entry {
    std::string user;
    std::chrono::milliseconds ttl;
  };
  boost::asio::awaitable<void> put(std::string jti, std::string user, std::chrono::milliseconds ttl) override {
    sessions[jti] = Entry{user, ttl};
    co_return;
  }
  boost::asio::awaitable<bool> exists(std::string jti) override { co_return sessions.count(jti) > 0; }
  boost::asio::awaitable<bool> remove(std::string jti) override { co_return sessions.erase(jti) > 0; }
  std::map<std::string, Entry> sessions;
};

class FakeHasher final : public PasswordHasher {
 public:
  boost::asio::awaitable<std::string> hash(std::string password) override {
    ++hashes;
    co_return "hashed(" + password + ")";
  }
  boost::asio::awaitable<bool> verify(std::string stored_hash, std::string password) override {
    ++verifies;
    co_return stored_hash == "hashed(" + password + ")";
  }
  boost::asio::awaitable<void> burn(std::string) override {
    ++burns;
    co_return;
  }
  int hashes = 0, verifies = 0, burns = 0;
};

class FakePublisher final : public MessagePublisher {
 public:
  boost::asio::awaitable<amqp::PublishStatus> publish(amqp::Message message) override {
    published.push_back(std::move(message));
    co_return status;
  }
  bool connected() const override { return is_connected; }
  amqp::PublishStatus status = amqp::PublishStatus::confirmed;
  std::vector<amqp::Message> published;
  bool is_connected = true;
};

class ApiServiceTest : public ::testing::Test {
 protected:
  ApiServiceTest() { service.install(router); }

  Response call(http::verb method, std::string target, std::string body = {},
                std::string content_type = "application/json", std::string bearer = {}) {
    return run_sync(
        router.dispatch(make_request(method, std::move(target), std::move(body), std::move(content_type), bearer)));
  }
  Response post(std::string target, const json::value& body, std::string bearer = {}) {
    return call(http::verb::post, std::move(target), json::serialize(body), "application/json", std::move(bearer));
  }
  static json::object body_of(const Response& response) { return json::parse(response.body()).as_object(); }
  static std::string error_of(const Response& response) {
    return std::string(body_of(response).at("error").as_string());
  }

  void register_user(const std::string& user, const std::string& password) {
    ASSERT_EQ(post("/register", {{"user", user}, {"password", password}}).result(), http::status::created);
  }
  std::string login(const std::string& user, const std::string& password) {
    auto response = post("/login", {{"user", user}, {"password", password}});
    EXPECT_EQ(response.result(), http::status::ok) << response.body();
    return std::string(body_of(response).at("token").as_string());
  }
  std::string registered_token(const std::string& user = "alice") {
    register_user(user, "correct horse");
    return login(user, "correct horse");
  }

  FakeUsers users;
  FakeSessions sessions;
  FakeHasher hasher;
  FakePublisher publisher;
  auth::TokenService tokens{kSecret, std::chrono::hours(1)};
  Metrics metrics;
  std::int64_t now = rtmc::now_ms();
  ServiceConfig config{16, 4096};
  ApiService service{config, users, sessions, hasher, publisher, tokens, metrics, [this] { return now; }};
  Router router;
};

// ---- register ----

TEST_F(ApiServiceTest, RegisterCreatesUserWithHashedPassword) {
  auto response = post("/register", {{"user", "Alice"}, {"password", "correct horse"}});
  EXPECT_EQ(response.result(), http::status::created);
  EXPECT_EQ(body_of(response), (json::object{{"user", "Alice"}}));
  ASSERT_EQ(users.users.count("alice"), 1u);
  EXPECT_EQ(users.users["alice"].name, "Alice");
  EXPECT_EQ(users.users["alice"].password_hash, "hashed(correct horse)");
}

TEST_F(ApiServiceTest, RegisterTakenNameIsConflictRegardlessOfCase) {
  register_user("Alice", "correct horse");
  auto response = post("/register", {{"user", "aLICE"}, {"password", "other password"}});
  EXPECT_EQ(response.result(), http::status::conflict);
  EXPECT_EQ(error_of(response), "user_taken");
  EXPECT_EQ(users.users["alice"].password_hash, "hashed(correct horse)");
}

TEST_F(ApiServiceTest, RegisterRejectsBadNames) {
  for (std::string name : std::vector<std::string>{"", "_alice", ".alice", "al ice", "al/ice", "élodie", std::string(33, 'a')}) {
    auto response = post("/register", {{"user", name}, {"password", "correct horse"}});
    EXPECT_EQ(response.result(), http::status::bad_request) << name;
    EXPECT_EQ(error_of(response), "bad_user") << name;
  }
  EXPECT_TRUE(users.users.empty());
  EXPECT_EQ(post("/register", {{"user", std::string(32, 'a')}, {"password", "correct horse"}}).result(),
            http::status::created);
}

TEST_F(ApiServiceTest, RegisterRejectsBadPasswords) {
  for (std::string password : std::vector<std::string>{std::string(7, 'p'), std::string(257, 'p'), std::string()}) {
    auto response = post("/register", {{"user", "bob"}, {"password", password}});
    EXPECT_EQ(response.result(), http::status::bad_request) << password.size();
    EXPECT_EQ(error_of(response), "bad_password");
  }
  EXPECT_EQ(hasher.hashes, 0);
  EXPECT_EQ(post("/register", {{"user", "bob"}, {"password", std::string(8, 'p')}}).result(),
            http::status::created);
  EXPECT_EQ(post("/register", {{"user", "bob2"}, {"password", std::string(256, 'p')}}).result(),
            http::status::created);
}

TEST_F(ApiServiceTest, NonJsonBodyIsBadJson) {
  for (std::string body : std::vector<std::string>{"", "{", "user=alice", "{\"user\":\"a\"} {}", "{\"user\":\"\xff\"}"}) {
    auto response = call(http::verb::post, "/register", body);
    EXPECT_EQ(response.result(), http::status::bad_request) << body;
    EXPECT_EQ(error_of(response), "bad_json") << body;
  }
}

TEST_F(ApiServiceTest, NonJsonContentTypeIs415) {
  std::string body = R"({"user":"alice","password":"correct horse"})";
  for (std::string type : std::vector<std::string>{"text/plain", "application/x-www-form-urlencoded", "application/jsonx"}) {
    auto response = call(http::verb::post, "/register", body, type);
    EXPECT_EQ(response.result(), http::status::unsupported_media_type) << type;
    EXPECT_EQ(error_of(response), "unsupported_media_type");
  }
  EXPECT_TRUE(users.users.empty());
}

TEST_F(ApiServiceTest, JsonContentTypeWithParametersOrAbsentIsAccepted) {
  EXPECT_EQ(call(http::verb::post, "/register", R"({"user":"a1","password":"correct horse"})",
                 "Application/JSON; charset=utf-8")
                .result(),
            http::status::created);
  EXPECT_EQ(call(http::verb::post, "/register", R"({"user":"a2","password":"correct horse"})", "").result(),
            http::status::created);
}

TEST_F(ApiServiceTest, WrongTypesAndMissingFieldsAreBadRequest) {
  std::vector<json::value> bodies{json::array{"alice", "correct horse"},
                                  json::value("alice"),
                                  json::object{{"user", 42}, {"password", "correct horse"}},
                                  json::object{{"user", "alice"}, {"password", nullptr}},
                                  json::object{{"user", "alice"}},
                                  json::object{{"password", "correct horse"}}};
  for (const auto& body : bodies) {
    auto response = post("/register", body);
    EXPECT_EQ(response.result(), http::status::bad_request) << json::serialize(body);
    EXPECT_EQ(error_of(response), "bad_request") << json::serialize(body);
  }
  EXPECT_TRUE(users.users.empty());
}

TEST_F(ApiServiceTest, UnknownFieldsAreIgnored) {
  auto response = post("/register", {{"user", "alice"}, {"password", "correct horse"}, {"admin", true}});
  EXPECT_EQ(response.result(), http::status::created);
}

TEST_F(ApiServiceTest, BackendDownIs503) {
  users.unavailable = true;
  auto response = post("/register", {{"user", "alice"}, {"password", "correct horse"}});
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(response), "unavailable");
}

// ---- login ----

TEST_F(ApiServiceTest, LoginIssuesTokenAndStoresSession) {
  register_user("Alice", "correct horse");
  auto response = post("/login", {{"user", "alice"}, {"password", "correct horse"}});
  ASSERT_EQ(response.result(), http::status::ok) << response.body();
  auto body = body_of(response);
  auto claims = tokens.verify(body.at("token").as_string(), now);
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->user, "Alice");  // the registered spelling, whatever the login's case
  EXPECT_EQ(body.at("expires_at").as_int64(), claims->expires_at_ms);
  EXPECT_NEAR(static_cast<double>(claims->expires_at_ms), static_cast<double>(now + 3600 * 1000), 5000.0);
  ASSERT_EQ(sessions.sessions.count(claims->jti), 1u);
  EXPECT_EQ(sessions.sessions[claims->jti].user, "Alice");
  EXPECT_EQ(sessions.sessions[claims->jti].ttl, std::chrono::hours(1));
}

TEST_F(ApiServiceTest, WrongPasswordAndUnknownUserGetTheSameAnswer) {
  register_user("alice", "correct horse");
  auto wrong = post("/login", {{"user", "alice"}, {"password", "battery staple"}});
  auto unknown = post("/login", {{"user", "mallory"}, {"password", "battery staple"}});
  EXPECT_EQ(wrong.result(), http::status::unauthorized);
  EXPECT_EQ(unknown.result(), http::status::unauthorized);
  EXPECT_EQ(wrong.body(), unknown.body());
  EXPECT_EQ(wrong[http::field::www_authenticate], unknown[http::field::www_authenticate]);
  EXPECT_EQ(error_of(wrong), "unauthorized");
  EXPECT_EQ(hasher.burns, 1);  // the unknown user spent a verification's time too
  EXPECT_TRUE(sessions.sessions.empty());
}

TEST_F(ApiServiceTest, LoginBadInputTypesAre400) {
  EXPECT_EQ(post("/login", {{"user", "alice"}, {"password", 12345678}}).result(), http::status::bad_request);
  EXPECT_EQ(call(http::verb::post, "/login", "nope").result(), http::status::bad_request);
}

// ---- logout and authentication ----

TEST_F(ApiServiceTest, LogoutDeletesSessionAndSecondLogoutIs401) {
  auto token = registered_token();
  ASSERT_EQ(sessions.sessions.size(), 1u);
  auto first = call(http::verb::post, "/logout", "", "", token);
  EXPECT_EQ(first.result(), http::status::no_content);
  EXPECT_TRUE(first.body().empty());
  EXPECT_TRUE(sessions.sessions.empty());
  auto second = call(http::verb::post, "/logout", "", "", token);
  EXPECT_EQ(second.result(), http::status::unauthorized);
  EXPECT_EQ(error_of(second), "unauthorized");
}

TEST_F(ApiServiceTest, LogoutNeedsAValidBearerToken) {
  auto token = registered_token();
  EXPECT_EQ(call(http::verb::post, "/logout", "", "").result(), http::status::unauthorized);
  EXPECT_EQ(call(http::verb::post, "/logout", "", "", "garbage").result(), http::status::unauthorized);
  auto basic = make_request(http::verb::post, "/logout");
  basic.set(http::field::authorization, "Basic " + token);
  EXPECT_EQ(run_sync(router.dispatch(basic)).result(), http::status::unauthorized);
  EXPECT_EQ(sessions.sessions.size(), 1u);
}

TEST_F(ApiServiceTest, TokenAfterLogoutIsRefused) {
  auto token = registered_token();
  ASSERT_EQ(call(http::verb::post, "/logout", "", "", token).result(), http::status::no_content);
  auto response = post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token);
  EXPECT_EQ(response.result(), http::status::unauthorized);
  EXPECT_TRUE(publisher.published.empty());
}

TEST_F(ApiServiceTest, ExpiredTokenIsRefused) {
  auto token = registered_token();
  now += 3600 * 1000 + 1000;
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token).result(), http::status::unauthorized);
  EXPECT_EQ(call(http::verb::post, "/logout", "", "", token).result(), http::status::unauthorized);
  EXPECT_TRUE(publisher.published.empty());
}

TEST_F(ApiServiceTest, TokenWithoutSessionIsRefused) {
  register_user("alice", "correct horse");
  auto issued = tokens.issue("alice");  // signed, unexpired, but never logged in
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, issued.token).result(),
            http::status::unauthorized);
}

TEST_F(ApiServiceTest, TokenFromAnotherSecretIsRefused) {
  registered_token();
  auth::TokenService other{"another-secret-0123456789abcdef!", std::chrono::hours(1)};
  auto forged = other.issue("alice");
  sessions.sessions[forged.claims.jti] = {"alice", std::chrono::hours(1)};
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, forged.token).result(),
            http::status::unauthorized);
}

TEST(BearerToken, ParsesTheAuthorizationHeader) {
  auto request = make_request(http::verb::post, "/x");
  EXPECT_EQ(bearer_token(request), "");
  request.set(http::field::authorization, "Bearer abc.def.ghi");
  EXPECT_EQ(bearer_token(request), "abc.def.ghi");
  request.set(http::field::authorization, "bearer   abc ");
  EXPECT_EQ(bearer_token(request), "abc");
  request.set(http::field::authorization, "Bearerabc");
  EXPECT_EQ(bearer_token(request), "");
  request.set(http::field::authorization, "Bearer ");
  EXPECT_EQ(bearer_token(request), "");
}

// ---- publishMessage ----

TEST_F(ApiServiceTest, PublishGoesToTheRoomsIngestShardAfterConfirm) {
  auto token = registered_token("Alice");
  auto response = post("/publishMessage", {{"room", "lobby"}, {"body", "hello"}, {"id", "m-1"}}, token);
  ASSERT_EQ(response.result(), http::status::accepted) << response.body();
  EXPECT_EQ(body_of(response), (json::object{{"id", "m-1"}, {"room", "lobby"}}));
  ASSERT_EQ(publisher.published.size(), 1u);
  const auto& message = publisher.published.front();
  EXPECT_EQ(message.exchange, "");
  EXPECT_EQ(message.routing_key, ingest_queue(shard_of("lobby", 16)));
  EXPECT_TRUE(message.persistent);
  EXPECT_TRUE(message.mandatory);
  EXPECT_EQ(message.body, protocol::encode_ingest({"lobby", "m-1", "Alice", "hello"}));
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::confirmed), 1u);
}

TEST_F(ApiServiceTest, PublishSenderComesFromTheTokenNeverTheBody) {
  auto token = registered_token("alice");
  ASSERT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}, {"from", "mallory"}, {"user", "mallory"}}, token)
                .result(),
            http::status::accepted);
  ASSERT_EQ(publisher.published.size(), 1u);
  auto decoded = protocol::decode_ingest(publisher.published.front().body, protocol::ParseLimits{});
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->from, "alice");
}

TEST_F(ApiServiceTest, PublishWithoutIdGetsAFreshOne) {
  auto token = registered_token();
  auto first = post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token);
  auto second = post("/publishMessage", {{"room", "r"}, {"body", "hi"}, {"id", nullptr}}, token);
  ASSERT_EQ(first.result(), http::status::accepted);
  ASSERT_EQ(second.result(), http::status::accepted);
  std::string id1(body_of(first).at("id").as_string()), id2(body_of(second).at("id").as_string());
  EXPECT_TRUE(valid_message_id(id1));
  EXPECT_NE(id1, id2);
  EXPECT_EQ(publisher.published[0].body, protocol::encode_ingest({"r", id1, "alice", "hi"}));
}

TEST_F(ApiServiceTest, PublishRejectsBadInput) {
  auto token = registered_token();
  struct Case {
    json::object body;
    http::status status;
    std::string code;
  };
  std::vector<Case> cases{
      {{{"room", "bad room"}, {"body", "hi"}}, http::status::bad_request, "bad_room"},
      {{{"room", ""}, {"body", "hi"}}, http::status::bad_request, "bad_room"},
      {{{"room", std::string(65, 'r')}, {"body", "hi"}}, http::status::bad_request, "bad_room"},
      {{{"room", "r"}, {"body", "hi"}, {"id", "bad id"}}, http::status::bad_request, "bad_id"},
      {{{"room", "r"}, {"body", "hi"}, {"id", ""}}, http::status::bad_request, "bad_id"},
      {{{"room", "r"}, {"body", "hi"}, {"id", std::string(65, 'i')}}, http::status::bad_request, "bad_id"},
      {{{"room", "r"}, {"body", "hi"}, {"id", 7}}, http::status::bad_request, "bad_request"},
      {{{"room", 5}, {"body", "hi"}}, http::status::bad_request, "bad_request"},
      {{{"room", "r"}, {"body", json::object{}}}, http::status::bad_request, "bad_request"},
      {{{"room", "r"}}, http::status::bad_request, "bad_request"},
      {{{"body", "hi"}}, http::status::bad_request, "bad_request"},
      {{{"room", "r"}, {"body", ""}}, http::status::bad_request, "bad_request"},
      {{{"room", "r"}, {"body", std::string(4097, 'b')}}, http::status::payload_too_large, "body_too_large"},
  };
  for (const auto& c : cases) {
    auto response = post("/publishMessage", c.body, token);
    EXPECT_EQ(response.result(), c.status) << json::serialize(c.body);
    EXPECT_EQ(error_of(response), c.code) << json::serialize(c.body);
  }
  EXPECT_TRUE(publisher.published.empty());
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", std::string(4096, 'b')}}, token).result(),
            http::status::accepted);
  EXPECT_EQ(call(http::verb::post, "/publishMessage", "{oops", "application/json", token).result(),
            http::status::bad_request);
  EXPECT_EQ(call(http::verb::post, "/publishMessage", R"({"room":"r","body":"hi"})", "text/plain", token).result(),
            http::status::unsupported_media_type);
}

TEST_F(ApiServiceTest, PublishNeedsAuthenticationBeforeAnythingElse) {
  auto response = call(http::verb::post, "/publishMessage", "{oops");
  EXPECT_EQ(response.result(), http::status::unauthorized);
  EXPECT_EQ(response[http::field::www_authenticate], "Bearer");
}

TEST_F(ApiServiceTest, PublishNotConfirmedIs503) {
  auto token = registered_token();
  for (auto status : {amqp::PublishStatus::unavailable, amqp::PublishStatus::nacked, amqp::PublishStatus::unroutable}) {
    publisher.status = status;
    auto response = post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token);
    EXPECT_EQ(response.result(), http::status::service_unavailable) << amqp::to_string(status);
    EXPECT_EQ(error_of(response), "unavailable");
    EXPECT_EQ(metrics.publishes(status), 1u);
  }
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::confirmed), 0u);
}

// ---- healthz, metrics, routing ----

TEST_F(ApiServiceTest, HealthzReportsPublisherState) {
  auto response = call(http::verb::get, "/healthz");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(body_of(response), (json::object{{"status", "ok"}, {"amqp_connected", true}}));
  publisher.is_connected = false;
  EXPECT_EQ(body_of(call(http::verb::get, "/healthz")).at("amqp_connected"), false);
}

TEST_F(ApiServiceTest, MetricsArePrometheusText) {
  auto token = registered_token();
  ASSERT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token).result(), http::status::accepted);
  metrics.count_response(202);
  metrics.count_response(202);
  metrics.count_response(401);
  auto response = call(http::verb::get, "/metrics");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type].substr(0, 10), "text/plain");
  const auto& text = response.body();
  EXPECT_NE(text.find("rtmc_api_responses_total{status=\"202\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_api_responses_total{status=\"401\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_api_publish_total{result=\"confirmed\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_api_publish_total{result=\"unavailable\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_api_amqp_connected 1\n"), std::string::npos) << text;
}

TEST_F(ApiServiceTest, RoutesAndMethods) {
  EXPECT_EQ(call(http::verb::get, "/nope").result(), http::status::not_found);
  auto response = call(http::verb::get, "/register");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  EXPECT_EQ(response[http::field::allow], "POST");
  EXPECT_EQ(call(http::verb::post, "/healthz").result(), http::status::method_not_allowed);
  EXPECT_EQ(call(http::verb::get, "/publishMessage").result(), http::status::method_not_allowed);
}

}  // namespace
}  // namespace rtmc::api
