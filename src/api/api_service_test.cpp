#include "api/api_service.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <map>
#include <optional>

#include "api/test_support.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"

namespace rtmc::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using testing::make_request;
using testing::run_sync;

constexpr auto kSecret = "unit-test-secret-0123456789abcdef";

// prefix + i; appended rather than `"literal" + std::string`, on which GCC 12
// reports a false -Wrestrict.
std::string numbered(std::string prefix, int i) {
  return prefix.append(std::to_string(i));
}

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
  boost::asio::awaitable<void> put(std::string jti, std::string user,
                                   std::chrono::milliseconds ttl) override {
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
    if (saturated) throw Unavailable("password hashing queue is full");
    ++hashes;
    co_return "hashed(" + password + ")";
  }
  boost::asio::awaitable<bool> verify(std::string stored_hash, std::string password) override {
    if (saturated) throw Unavailable("password hashing queue is full");
    ++verifies;
    // A real verification runs on a worker for tens of milliseconds, and
    // other requests go on meanwhile.
    if (suspends)
      co_await boost::asio::post(co_await boost::asio::this_coro::executor, boost::asio::use_awaitable);
    co_return stored_hash == "hashed(" + password + ")";
  }
  boost::asio::awaitable<void> burn(std::string) override {
    if (saturated) throw Unavailable("password hashing queue is full");
    ++burns;
    co_return;
  }
  int hashes = 0, verifies = 0, burns = 0;
  bool saturated = false;  // its workers are all busy and its queue is full
  bool suspends = false;   // verify() lets other coroutines run before answering
};

// Token buckets without refill: `burst` tokens per bucket name, spent by
// take and charge; enough for the service's decisions.
class FakeRateLimits final : public RateLimits {
 public:
  boost::asio::awaitable<store::Verdict> take(store::Bucket bucket) override {
    auto verdict = state(bucket);
    if (verdict.allowed) ++spent[bucket.name];
    verdict.used = spent[bucket.name];
    co_return verdict;
  }
  boost::asio::awaitable<std::vector<store::Verdict>> peek(std::vector<store::Bucket> buckets) override {
    std::vector<store::Verdict> verdicts;
    for (const auto& bucket : buckets) verdicts.push_back(state(bucket));
    co_return verdicts;
  }
  boost::asio::awaitable<std::vector<store::Verdict>> charge(std::vector<store::Bucket> buckets) override {
    std::vector<store::Verdict> verdicts;
    for (const auto& bucket : buckets) {
      verdicts.push_back(state(bucket));
      if (bucket.rate.limited())
        spent[bucket.name] = std::min<double>(spent[bucket.name] + 1, bucket.rate.burst);
    }
    co_return verdicts;
  }
  boost::asio::awaitable<void> refund(std::vector<store::Bucket> buckets) override {
    for (const auto& bucket : buckets)
      if (bucket.rate.limited()) spent[bucket.name] = std::max<double>(spent[bucket.name] - 1, 0);
    co_return;
  }
  store::Verdict state(const store::Bucket& bucket) {
    store::Verdict verdict;
    if (!bucket.rate.limited()) return verdict;
    verdict.used = spent[bucket.name];
    verdict.allowed = verdict.used + 1 <= bucket.rate.burst;
    if (!verdict.allowed) verdict.retry_after = bucket.rate.interval;
    return verdict;
  }
  std::map<std::string, double> spent;
};

class FakeHealth final : public HealthProbe {
 public:
  boost::asio::awaitable<DependencyHealth> probe() override {
    ++probes;
    co_return health;
  }
  DependencyHealth health{true, true, true};
  int probes = 0;
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

// Statuses by folded name, like the case-insensitive store.
class FakeStatus final : public StatusReader {
 public:
  boost::asio::awaitable<std::optional<store::UserStatus>> get(std::string user) override {
    asked.push_back(user);
    if (unavailable) throw Unavailable("redis down");
    auto it = statuses.find(fold_user_name(user));
    if (it == statuses.end()) co_return std::nullopt;
    co_return it->second;
  }
  std::map<std::string, store::UserStatus> statuses;
  std::vector<std::string> asked;
  bool unavailable = false;
};

// Serves message frames 1..stored of any room by the same paging rules as
// the real store (whose stitching is tested in store/history_*test); keeps
// every request.
class FakeHistory final : public HistoryStore {
 public:
  boost::asio::awaitable<history::Items> messages(protocol::HistoryRequest request) override {
    requests.push_back(request);
    if (unavailable) throw Unavailable("postgres down");
    std::int64_t from = std::max<std::int64_t>(1, stored - request.limit + 1);
    std::int64_t to = stored;
    if (request.after_seq) {
      // Clamped first: after_seq may be the largest int64.
      const auto after = std::min(*request.after_seq, stored);
      from = after + 1;
      to = std::min(stored, after + request.limit);
    } else if (request.before_seq) {
      to = std::min(stored, *request.before_seq - 1);
      from = std::max<std::int64_t>(1, to - request.limit + 1);
    }
    history::Items items;
    for (auto seq = from; seq <= to; ++seq)
      items.emplace_back(seq, std::make_shared<const std::string>(frame_of(request.room, seq)));
    co_return items;
  }
  boost::asio::awaitable<history::RoomPage> rooms(std::optional<std::string> after,
                                                  std::size_t limit) override {
    room_requests.emplace_back(after, limit);
    if (unavailable) throw Unavailable("postgres down");
    co_return page;
  }
  static std::string frame_of(const std::string& room, std::int64_t seq) {
    return protocol::message_frame(room, seq, numbered("m", static_cast<int>(seq)), "bob", "say \"hi\"",
                                   1700000000000 + seq);
  }
  std::int64_t stored = 0;
  bool unavailable = false;
  history::RoomPage page;
  std::vector<protocol::HistoryRequest> requests;
  std::vector<std::pair<std::optional<std::string>, std::size_t>> room_requests;
};

class ApiServiceTest : public ::testing::Test {
 protected:
  ApiServiceTest() { rebuild(config); }

  // A fresh service (and router) with `with` as its configuration.
  void rebuild(const ServiceConfig& with) {
    service.reset();
    service.emplace(
        with,
        ApiBackends{users, sessions, hasher, register_hasher, publisher, limits, health, status, history},
        tokens, metrics, [this] { return now; },
        [this](std::chrono::milliseconds duration) -> boost::asio::awaitable<void> {
          sleeps.push_back(duration);
          co_return;
        });
    router = Router{};
    service->install(router);
  }
  // A request from `address` (as the HTTP session marks it).
  Response post_from(const std::string& address, std::string target, const json::value& body,
                     std::string bearer = {}, std::string forwarded_for = {}) {
    auto request = make_request(http::verb::post, std::move(target), json::serialize(body),
                                "application/json", std::move(bearer));
    request.set(kPeerAddressHeader, address);
    if (!forwarded_for.empty()) request.set("X-Forwarded-For", forwarded_for);
    return run_sync(router.dispatch(request));
  }

  Response call(http::verb method, std::string target, std::string body = {},
                std::string content_type = "application/json", std::string bearer = {}) {
    return run_sync(router.dispatch(
        make_request(method, std::move(target), std::move(body), std::move(content_type), bearer)));
  }
  Response post(std::string target, const json::value& body, std::string bearer = {}) {
    return call(http::verb::post, std::move(target), json::serialize(body), "application/json",
                std::move(bearer));
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
  FakeHasher hasher;           // the login pool
  FakeHasher register_hasher;  // the registration pool
  FakePublisher publisher;
  FakeRateLimits limits;
  FakeHealth health;
  FakeStatus status;
  FakeHistory history;
  auth::TokenService tokens{kSecret, std::chrono::hours(1)};
  Metrics metrics;
  std::int64_t now = rtmc::now_ms();
  std::vector<std::chrono::milliseconds> sleeps;  // login slowdowns asked for
  ServiceConfig config = [] {
    ServiceConfig defaults;
    defaults.ingest_shards = 16;
    defaults.max_message_body = 4096;
    return defaults;
  }();
  std::optional<ApiService> service;
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
  EXPECT_EQ(register_hasher.hashes, 1);
  EXPECT_EQ(hasher.hashes, 0);
}

TEST_F(ApiServiceTest, RegisterTakenNameIsConflictRegardlessOfCase) {
  register_user("Alice", "correct horse");
  auto response = post("/register", {{"user", "aLICE"}, {"password", "other password"}});
  EXPECT_EQ(response.result(), http::status::conflict);
  EXPECT_EQ(error_of(response), "user_taken");
  EXPECT_EQ(users.users["alice"].password_hash, "hashed(correct horse)");
}

TEST_F(ApiServiceTest, RegisterRejectsBadNames) {
  for (std::string name :
       std::vector<std::string>{"", "_alice", ".alice", "al ice", "al/ice", "élodie", std::string(33, 'a')}) {
    auto response = post("/register", {{"user", name}, {"password", "correct horse"}});
    EXPECT_EQ(response.result(), http::status::bad_request) << name;
    EXPECT_EQ(error_of(response), "bad_user") << name;
  }
  EXPECT_TRUE(users.users.empty());
  EXPECT_EQ(post("/register", {{"user", std::string(32, 'a')}, {"password", "correct horse"}}).result(),
            http::status::created);
}

TEST_F(ApiServiceTest, RegisterRejectsBadPasswords) {
  for (std::string password :
       std::vector<std::string>{std::string(7, 'p'), std::string(257, 'p'), std::string()}) {
    auto response = post("/register", {{"user", "bob"}, {"password", password}});
    EXPECT_EQ(response.result(), http::status::bad_request) << password.size();
    EXPECT_EQ(error_of(response), "bad_password");
  }
  EXPECT_EQ(hasher.hashes, 0);
  EXPECT_EQ(register_hasher.hashes, 0);
  EXPECT_EQ(post("/register", {{"user", "bob"}, {"password", std::string(8, 'p')}}).result(),
            http::status::created);
  EXPECT_EQ(post("/register", {{"user", "bob2"}, {"password", std::string(256, 'p')}}).result(),
            http::status::created);
}

TEST_F(ApiServiceTest, NonJsonBodyIsBadJson) {
  for (std::string body :
       std::vector<std::string>{"", "{", "user=alice", "{\"user\":\"a\"} {}", "{\"user\":\"\xff\"}"}) {
    auto response = call(http::verb::post, "/register", body);
    EXPECT_EQ(response.result(), http::status::bad_request) << body;
    EXPECT_EQ(error_of(response), "bad_json") << body;
  }
}

TEST_F(ApiServiceTest, NonJsonContentTypeIs415) {
  std::string body = R"({"user":"alice","password":"correct horse"})";
  for (std::string type :
       std::vector<std::string>{"text/plain", "application/x-www-form-urlencoded", "application/jsonx"}) {
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
  EXPECT_EQ(metrics.logins(Metrics::Login::refused), 2u);
  EXPECT_EQ(metrics.logins(Metrics::Login::ok), 0u);
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
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token).result(),
            http::status::unauthorized);
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

// ---- refresh ----

TEST_F(ApiServiceTest, RefreshIssuesANewSessionLikeLoginAndTheOldTokenStaysValid) {
  register_user("Alice", "correct horse");
  auto old_token = login("alice", "correct horse");
  auto old_claims = tokens.verify(old_token, now);
  ASSERT_TRUE(old_claims);
  for (const std::string body : {"", "{}"}) {
    auto response =
        call(http::verb::post, "/refresh", body, body.empty() ? "" : "application/json", old_token);
    ASSERT_EQ(response.result(), http::status::ok) << response.body();
    EXPECT_EQ(response[http::field::content_type], "application/json");
    auto answer = body_of(response);
    EXPECT_EQ(answer.size(), 3u) << response.body();
    auto claims = tokens.verify(answer.at("token").as_string(), now);
    ASSERT_TRUE(claims);
    EXPECT_EQ(claims->user, "Alice");
    EXPECT_EQ(answer.at("user").as_string(), "Alice");
    EXPECT_EQ(answer.at("expires_at").as_int64(), claims->expires_at_ms);
    EXPECT_NE(claims->jti, old_claims->jti);
    ASSERT_EQ(sessions.sessions.count(claims->jti), 1u);
    EXPECT_EQ(sessions.sessions[claims->jti].user, "Alice");
    EXPECT_EQ(sessions.sessions[claims->jti].ttl, std::chrono::hours(1));
  }
  EXPECT_EQ(sessions.sessions.size(), 3u);
  EXPECT_EQ(sessions.sessions.count(old_claims->jti), 1u);
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, old_token).result(),
            http::status::accepted);
  EXPECT_EQ(hasher.verifies, 1) << "a refresh checks no password";
}

TEST_F(ApiServiceTest, RefreshOfABadExpiredOrRevokedTokenIs401) {
  auto token = registered_token();
  auth::TokenService other{"another-secret-0123456789abcdef!", std::chrono::hours(1)};
  auto forged = other.issue("alice");
  sessions.sessions[forged.claims.jti] = {"alice", std::chrono::hours(1)};
  auto never_logged_in = tokens.issue("alice");
  const auto before = sessions.sessions.size();
  for (const auto& bearer : {std::string(), std::string("garbage"), forged.token, never_logged_in.token}) {
    auto response = call(http::verb::post, "/refresh", "", "", bearer);
    EXPECT_EQ(response.result(), http::status::unauthorized) << bearer;
    EXPECT_EQ(error_of(response), "unauthorized");
    EXPECT_EQ(response[http::field::www_authenticate], "Bearer");
  }
  auto logged_out = registered_token("bob");
  ASSERT_EQ(call(http::verb::post, "/logout", "", "", logged_out).result(), http::status::no_content);
  EXPECT_EQ(call(http::verb::post, "/refresh", "", "", logged_out).result(), http::status::unauthorized);
  now += 3600 * 1000 + 1000;
  EXPECT_EQ(call(http::verb::post, "/refresh", "", "", token).result(), http::status::unauthorized);
  EXPECT_EQ(sessions.sessions.size(), before) << "no session was made";
}

TEST_F(ApiServiceTest, RefreshBodyIsNothingOrAJsonObject) {
  auto token = registered_token();
  EXPECT_EQ(call(http::verb::post, "/refresh", "[]", "application/json", token).result(),
            http::status::bad_request);
  EXPECT_EQ(error_of(call(http::verb::post, "/refresh", "{", "application/json", token)), "bad_json");
  EXPECT_EQ(call(http::verb::post, "/refresh", "{}", "text/plain", token).result(),
            http::status::unsupported_media_type);
  EXPECT_EQ(call(http::verb::post, "/refresh", R"({"user":"mallory"})", "application/json", token).result(),
            http::status::ok);
  EXPECT_EQ(call(http::verb::get, "/refresh", "", "", token).result(), http::status::method_not_allowed);
}

TEST_F(ApiServiceTest, RefreshesPerUserAreLimited) {
  auto limited = config;
  limited.rate_limits.refreshes_per_user = store::Rate::per_minute(2, 2);
  rebuild(limited);
  auto token = registered_token("Frank");
  EXPECT_EQ(call(http::verb::post, "/refresh", "", "", token).result(), http::status::ok);
  EXPECT_EQ(call(http::verb::post, "/refresh", "", "", token).result(), http::status::ok);
  const auto before = sessions.sessions.size();
  auto response = call(http::verb::post, "/refresh", "", "", token);
  EXPECT_EQ(response.result(), http::status::too_many_requests);
  EXPECT_EQ(error_of(response), "rate_limited");
  EXPECT_EQ(response[http::field::retry_after], "30");
  EXPECT_EQ(sessions.sessions.size(), before);
  EXPECT_EQ(limits.spent["refresh:frank"], 2);
  // Another user has a budget of its own.
  EXPECT_EQ(call(http::verb::post, "/refresh", "", "", registered_token("gina")).result(), http::status::ok);
}

TEST_F(ApiServiceTest, RefreshesAreLimitedByDefault) {
  EXPECT_TRUE(ServiceConfig{}.rate_limits.refreshes_per_user.limited());
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
  // The accept time travels with the message (end-to-end latency).
  EXPECT_EQ(message.body, protocol::encode_ingest({"lobby", "m-1", "Alice", "hello", now}));
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::confirmed), 1u);
  EXPECT_EQ(metrics.publish_confirm().count(), 1u);
}

TEST_F(ApiServiceTest, PublishSenderComesFromTheTokenNeverTheBody) {
  auto token = registered_token("alice");
  ASSERT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}, {"from", "mallory"}, {"user", "mallory"}},
                 token)
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
  EXPECT_EQ(publisher.published[0].body, protocol::encode_ingest({"r", id1, "alice", "hi", now}));
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
  EXPECT_EQ(
      call(http::verb::post, "/publishMessage", R"({"room":"r","body":"hi"})", "text/plain", token).result(),
      http::status::unsupported_media_type);
}

TEST_F(ApiServiceTest, PublishNeedsAuthenticationBeforeAnythingElse) {
  auto response = call(http::verb::post, "/publishMessage", "{oops");
  EXPECT_EQ(response.result(), http::status::unauthorized);
  EXPECT_EQ(response[http::field::www_authenticate], "Bearer");
}

TEST_F(ApiServiceTest, PublishNotConfirmedIs503) {
  auto token = registered_token();
  for (auto status :
       {amqp::PublishStatus::unavailable, amqp::PublishStatus::nacked, amqp::PublishStatus::unroutable}) {
    publisher.status = status;
    auto response = post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token);
    EXPECT_EQ(response.result(), http::status::service_unavailable) << amqp::to_string(status);
    EXPECT_EQ(error_of(response), "unavailable");
    EXPECT_EQ(metrics.publishes(status), 1u);
  }
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::confirmed), 0u);
}

// Contract C of the scale design: a full publisher backlog is answered at
// once with 503 overloaded and a Retry-After, not 429 (the client's own
// limit) and not `unavailable`.
TEST_F(ApiServiceTest, PublishOverloadedIs503OverloadedWithRetryAfter) {
  auto token = registered_token();
  publisher.status = amqp::PublishStatus::overloaded;
  auto response = post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token);
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(response), "overloaded");
  EXPECT_EQ(response[http::field::retry_after], "1");
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::overloaded), 1u);
  EXPECT_EQ(metrics.publishes(amqp::PublishStatus::unavailable), 0u);
}

// ---- user status ----

TEST_F(ApiServiceTest, StatusOfAnOnlineUserWithoutAToken) {
  status.statuses["alice"] = store::UserStatus{"Alice", true, 1700000000123};
  auto response = call(http::verb::get, "/users/ALICE/status");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type], "application/json");
  // The registered spelling, and the fields in the order of the TCP frame.
  EXPECT_EQ(response.body(), R"({"user":"Alice","status":"online","last_seen":1700000000123})");
  EXPECT_EQ(status.asked, std::vector<std::string>{"ALICE"});
}

TEST_F(ApiServiceTest, StatusOfAUserWhoNeverConnectedHasANullLastSeen) {
  status.statuses["bob"] = store::UserStatus{"bob", false, std::nullopt};
  auto response = call(http::verb::get, "/users/bob/status");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(body_of(response),
            (json::object{{"user", "bob"}, {"status", "offline"}, {"last_seen", nullptr}}));
}

TEST_F(ApiServiceTest, StatusOfAnUnknownUserIs404NotFound) {
  auto response = call(http::verb::get, "/users/nobody/status");
  EXPECT_EQ(response.result(), http::status::not_found);
  EXPECT_EQ(error_of(response), "not_found");
  // A name that breaks the rules is simply unknown (the reader says so).
  EXPECT_EQ(call(http::verb::get, "/users/bad%20name/status").result(), http::status::not_found);
  EXPECT_EQ(status.asked, (std::vector<std::string>{"nobody", "bad name"}));
}

TEST_F(ApiServiceTest, StatusWithItsStoreDownIs503) {
  status.unavailable = true;
  auto response = call(http::verb::get, "/users/alice/status");
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(response), "unavailable");
}

TEST_F(ApiServiceTest, StatusIsGetOnly) {
  auto response = call(http::verb::post, "/users/alice/status");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  EXPECT_EQ(response[http::field::allow], "GET");
  EXPECT_EQ(call(http::verb::get, "/users/alice").result(), http::status::not_found);
  EXPECT_EQ(call(http::verb::get, "/users//status").result(), http::status::not_found);
  EXPECT_TRUE(status.asked.empty());
}

TEST(ApiMetrics, StatusCacheCountersAreRenderedAtEachScrape) {
  Metrics metrics;
  store::StatusCacheCounters counters;
  metrics.watch_status_cache(counters);
  auto text = metrics.render(true);
  EXPECT_NE(text.find("rtmc_status_cache_hits_total 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_status_cache_misses_total 0\n"), std::string::npos) << text;
  counters.hits += 3;
  counters.misses += 1;
  text = metrics.render(true);
  EXPECT_NE(text.find("# TYPE rtmc_status_cache_hits_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_status_cache_hits_total 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_status_cache_misses_total 1\n"), std::string::npos) << text;
}

// ---- healthz, metrics, routing ----

TEST_F(ApiServiceTest, HealthzReportsPublisherState) {
  auto response = call(http::verb::get, "/healthz");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(body_of(response), (json::object{{"status", "ok"},
                                             {"redis", "ok"},
                                             {"postgres", "ok"},
                                             {"rabbitmq", "ok"},
                                             {"amqp_connected", true}}));
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

// ---- rate limits ----

TEST_F(ApiServiceTest, TenFailedLoginsForOneAccountFromOneAddressThenEven429ForTheRightPassword) {
  register_user("alice", "correct horse");
  for (int i = 0; i < 10; ++i) {
    auto response = post_from("192.0.2.7", "/login", {{"user", "alice"}, {"password", "wrong password"}});
    ASSERT_EQ(response.result(), http::status::unauthorized) << i;
  }
  auto response = post_from("192.0.2.7", "/login", {{"user", "ALICE"}, {"password", "correct horse"}});
  EXPECT_EQ(response.result(), http::status::too_many_requests);
  EXPECT_EQ(error_of(response), "rate_limited");
  EXPECT_EQ(response[http::field::retry_after], "6");  // one failure back every 6 s
  EXPECT_TRUE(sessions.sessions.empty());
  EXPECT_EQ(metrics.logins(Metrics::Login::refused), 10u);
  EXPECT_EQ(metrics.logins(Metrics::Login::rate_limited), 1u);
  EXPECT_EQ(metrics.rate_limited(Metrics::Limit::login), 1u);
  // Another address is not affected, nor is another account from this one.
  EXPECT_EQ(post_from("192.0.2.8", "/login", {{"user", "alice"}, {"password", "correct horse"}}).result(),
            http::status::ok);
  register_user("bob", "correct horse");
  EXPECT_EQ(post_from("192.0.2.7", "/login", {{"user", "bob"}, {"password", "correct horse"}}).result(),
            http::status::ok);
}

// Wrong guesses sent all at once (each waiting on its password check while
// the others arrive) are limited like guesses sent one after another.
TEST_F(ApiServiceTest, ParallelFailedLoginsCannotOutrunTheLimit) {
  register_user("erin", "correct horse");
  hasher.suspends = true;
  boost::asio::io_context context;
  std::vector<Response> responses;
  // dispatch() takes the request by reference: they must outlive the run.
  std::deque<Request> requests;
  for (int i = 0; i < 30; ++i) {
    requests.push_back(
        make_request(http::verb::post, "/login",
                     json::serialize(json::value{{"user", "erin"}, {"password", "wrong password"}}),
                     "application/json", {}));
    requests.back().set(kPeerAddressHeader, "192.0.2.30");
    boost::asio::co_spawn(context, router.dispatch(requests.back()),
                          [&](std::exception_ptr error, Response response) {
                            ASSERT_FALSE(error);
                            responses.push_back(std::move(response));
                          });
  }
  context.run();
  ASSERT_EQ(responses.size(), 30u);
  const auto count = [&](http::status status) {
    return std::count_if(responses.begin(), responses.end(),
                         [&](const auto& r) { return r.result() == status; });
  };
  EXPECT_EQ(count(http::status::unauthorized), 10);
  EXPECT_EQ(count(http::status::too_many_requests), 20);
  EXPECT_EQ(hasher.verifies, 10);
}

// A successful login gives back what its attempt was charged.
TEST_F(ApiServiceTest, SuccessfulLoginsDoNotCountAsFailures) {
  register_user("finn", "correct horse");
  for (int i = 0; i < 30; ++i)
    ASSERT_EQ(post_from("192.0.2.31", "/login", {{"user", "finn"}, {"password", "correct horse"}}).result(),
              http::status::ok)
        << i;
}

TEST_F(ApiServiceTest, FailedLoginsPerAddressAcrossAccountsAreLimited) {
  for (int i = 0; i < 100; ++i) {
    auto response =
        post_from("198.51.100.1", "/login", {{"user", numbered("u", i)}, {"password", "wrong password"}});
    ASSERT_EQ(response.result(), http::status::unauthorized) << i;
  }
  register_user("carol", "correct horse");
  auto response = post_from("198.51.100.1", "/login", {{"user", "carol"}, {"password", "correct horse"}});
  EXPECT_EQ(response.result(), http::status::too_many_requests);
  EXPECT_EQ(error_of(response), "rate_limited");
  EXPECT_FALSE(response[http::field::retry_after].empty());
}

TEST_F(ApiServiceTest, FailedLoginsPerAccountFromManyAddressesOnlySlowTheAnswers) {
  register_user("dave", "correct horse");
  for (int i = 0; i < 40; ++i) {
    auto address = numbered("203.0.113.", i);
    ASSERT_EQ(post_from(address, "/login", {{"user", "dave"}, {"password", "wrong password"}}).result(),
              http::status::unauthorized)
        << i;
  }
  ASSERT_FALSE(sleeps.empty());
  EXPECT_TRUE(std::is_sorted(sleeps.begin(), sleeps.end()));
  EXPECT_EQ(sleeps.back(), std::chrono::milliseconds(3000));
  // The owner, from an address of their own, gets in (slowly), never locked out.
  sleeps.clear();
  EXPECT_EQ(post_from("192.0.2.200", "/login", {{"user", "dave"}, {"password", "correct horse"}}).result(),
            http::status::ok);
  EXPECT_EQ(sleeps, std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(3000)});
}

TEST(LoginSlowdown, GrowsWithFailuresUpToItsCap) {
  using std::chrono::milliseconds;
  EXPECT_EQ(login_slowdown(0, milliseconds(3000)), milliseconds(0));
  EXPECT_EQ(login_slowdown(5.9, milliseconds(3000)), milliseconds(0));
  EXPECT_EQ(login_slowdown(6, milliseconds(3000)), milliseconds(100));
  EXPECT_EQ(login_slowdown(7, milliseconds(3000)), milliseconds(200));
  EXPECT_EQ(login_slowdown(10, milliseconds(3000)), milliseconds(1600));
  EXPECT_EQ(login_slowdown(11, milliseconds(3000)), milliseconds(3000));
  EXPECT_EQ(login_slowdown(1e9, milliseconds(3000)), milliseconds(3000));
  EXPECT_EQ(login_slowdown(50, milliseconds(0)), milliseconds(0));
}

TEST_F(ApiServiceTest, RegistrationsPerAddressAreLimited) {
  for (int i = 0; i < 50; ++i)
    ASSERT_EQ(post_from("192.0.2.9", "/register", {{"user", numbered("r", i)}, {"password", "correct horse"}})
                  .result(),
              http::status::created)
        << i;
  auto response = post_from("192.0.2.9", "/register", {{"user", "r50"}, {"password", "correct horse"}});
  EXPECT_EQ(response.result(), http::status::too_many_requests);
  EXPECT_EQ(error_of(response), "rate_limited");
  EXPECT_EQ(response[http::field::retry_after], "1");
  EXPECT_EQ(users.users.count("r50"), 0u);
  EXPECT_EQ(post_from("192.0.2.10", "/register", {{"user", "r50"}, {"password", "correct horse"}}).result(),
            http::status::created);
}

TEST_F(ApiServiceTest, LoginWorksWhileRegistrationsSaturateTheirOwnHashers) {
  register_user("erin", "correct horse");
  register_hasher.saturated = true;  // a registration flood holds every registration worker
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(post_from(numbered("192.0.2.", i), "/register",
                        {{"user", numbered("flood", i)}, {"password", "correct horse"}})
                  .result(),
              http::status::service_unavailable);
  EXPECT_EQ(post("/login", {{"user", "erin"}, {"password", "correct horse"}}).result(), http::status::ok);
  EXPECT_EQ(hasher.verifies, 1);
  EXPECT_EQ(register_hasher.verifies, 0);
}

TEST_F(ApiServiceTest, PublishesAreNotLimitedByDefault) {
  auto token = registered_token();
  for (int i = 0; i < 200; ++i)
    ASSERT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, token).result(),
              http::status::accepted)
        << i;
  EXPECT_EQ(limits.spent.count(store::messages_bucket("alice", {}).name), 0u);
}

TEST_F(ApiServiceTest, PublishesPerUserWhenLimitedAre429AndNotPublished) {
  auto limited = config;
  limited.rate_limits.publishes_per_user = store::Rate::per_second(1, 2);
  rebuild(limited);
  auto token = registered_token("Frank");
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "1"}}, token).result(), http::status::accepted);
  EXPECT_EQ(post("/publishMessage", {{"room", "r"}, {"body", "2"}}, token).result(), http::status::accepted);
  auto response = post("/publishMessage", {{"room", "r"}, {"body", "3"}}, token);
  EXPECT_EQ(response.result(), http::status::too_many_requests);
  EXPECT_EQ(error_of(response), "rate_limited");
  EXPECT_EQ(response[http::field::retry_after], "1");
  EXPECT_EQ(publisher.published.size(), 2u);
  EXPECT_EQ(limits.spent.count(store::messages_bucket("frank", {}).name), 1u);
}

TEST_F(ApiServiceTest, ForwardedForIsBelievedOnlyFromATrustedProxy) {
  auto trusting = config;
  trusting.rate_limits.trusted_proxies = {"10.0.0.1", "::1"};
  rebuild(trusting);
  const auto address_of = [this](const std::string& peer, const std::string& forwarded) {
    auto request = make_request(http::verb::post, "/login");
    request.set(kPeerAddressHeader, peer);
    if (!forwarded.empty()) request.set("X-Forwarded-For", forwarded);
    return service->client_address(request);
  };
  EXPECT_EQ(address_of("10.0.0.1", "192.0.2.1"), "192.0.2.1");
  // Only the last entry: the earlier ones are whatever the client sent.
  EXPECT_EQ(address_of("10.0.0.1", "6.6.6.6, 192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(address_of("::1", "192.0.2.3"), "192.0.2.3");
  EXPECT_EQ(address_of("10.0.0.1", "garbage"), "10.0.0.1");
  EXPECT_EQ(address_of("10.0.0.2", "192.0.2.1"), "10.0.0.2");
  EXPECT_EQ(address_of("10.0.0.2", ""), "10.0.0.2");
  EXPECT_EQ(address_of("::ffff:192.0.2.4", ""), "192.0.2.4");
  EXPECT_EQ(address_of("2001:db8:1:2:3:4:5:6", ""), "2001:db8:1:2::/64");
  // An untrusted peer cannot escape its bucket by naming another address.
  register_user("gina", "correct horse");
  for (int i = 0; i < 10; ++i)
    post_from("10.0.0.2", "/login", {{"user", "gina"}, {"password", "wrong password"}}, {},
              numbered("192.0.2.", i));
  EXPECT_EQ(
      post_from("10.0.0.2", "/login", {{"user", "gina"}, {"password", "correct horse"}}, {}, "192.0.2.99")
          .result(),
      http::status::too_many_requests);
  EXPECT_THROW(rebuild([&] {
                 auto bad = config;
                 bad.rate_limits.trusted_proxies = {"proxy.example"};
                 return bad;
               }()),
               std::invalid_argument);
}

// ---- healthz ----

TEST_F(ApiServiceTest, HealthzIs503NamingTheDependencyThatIsDown) {
  health.health.postgres = false;
  auto response = call(http::verb::get, "/healthz");
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  auto body = body_of(response);
  EXPECT_EQ(body.at("status"), "unavailable");
  EXPECT_EQ(body.at("postgres"), "unavailable");
  EXPECT_EQ(body.at("redis"), "ok");
  EXPECT_EQ(body.at("rabbitmq"), "ok");
}

TEST_F(ApiServiceTest, HealthzProbesAtMostOncePerSecond) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(call(http::verb::get, "/healthz").result(), http::status::ok);
  EXPECT_EQ(health.probes, 1);
  health.health.redis = false;
  now += 999;
  EXPECT_EQ(call(http::verb::get, "/healthz").result(), http::status::ok);  // still the cached answer
  now += 2;
  auto response = call(http::verb::get, "/healthz");
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_EQ(body_of(response).at("redis"), "unavailable");
  EXPECT_EQ(health.probes, 2);
}

// ---- history ----

std::vector<std::int64_t> seqs_of(const json::object& body) {
  std::vector<std::int64_t> seqs;
  for (const auto& message : body.at("messages").as_array()) seqs.push_back(message.at("seq").as_int64());
  return seqs;
}

TEST_F(ApiServiceTest, HistoryPagesAreTheStoredFramesAsObjects) {
  history.stored = 30;
  auto token = registered_token();
  auto response = call(http::verb::get, "/rooms/lobby/messages?before_seq=11&limit=2", "", "", token);
  ASSERT_EQ(response.result(), http::status::ok) << response.body();
  EXPECT_EQ(response[http::field::content_type], "application/json");
  // The frames verbatim ('\n' dropped), type included, oldest first.
  auto first = FakeHistory::frame_of("lobby", 9);
  auto second = FakeHistory::frame_of("lobby", 10);
  first.pop_back();
  second.pop_back();
  std::string expected(R"({"room":"lobby","messages":[)");
  expected.append(first).append(",").append(second).append("]}");
  EXPECT_EQ(response.body(), expected);
  EXPECT_EQ(body_of(response).at("messages").as_array()[0].as_object(),
            *protocol::parse_server_frame(FakeHistory::frame_of("lobby", 9)));
  ASSERT_EQ(history.requests.size(), 1u);
  EXPECT_EQ(history.requests[0].room, "lobby");
  EXPECT_EQ(history.requests[0].before_seq, 11);
  EXPECT_FALSE(history.requests[0].after_seq);
  EXPECT_EQ(history.requests[0].limit, 2);

  auto after = call(http::verb::get, "/rooms/lobby/messages?after_seq=25", "", "", token);
  EXPECT_EQ(seqs_of(body_of(after)), (std::vector<std::int64_t>{26, 27, 28, 29, 30}));
  EXPECT_EQ(history.requests.back().limit, 50);
  auto latest = call(http::verb::get, "/rooms/lobby/messages?limit=3&unknown=ignored", "", "", token);
  EXPECT_EQ(latest.result(), http::status::ok) << latest.body();
  EXPECT_EQ(seqs_of(body_of(latest)), (std::vector<std::int64_t>{28, 29, 30}));
  EXPECT_FALSE(history.requests.back().after_seq || history.requests.back().before_seq);
  // Percent-encoded parameters.
  EXPECT_EQ(
      seqs_of(body_of(call(http::verb::get, "/rooms/lobby/messages?after%5Fseq=%32%38", "", "", token))),
      (std::vector<std::int64_t>{29, 30}));
}

TEST_F(ApiServiceTest, HistoryOfARoomNeverUsedIsAnEmptyList) {
  auto token = registered_token();
  auto response = call(http::verb::get, "/rooms/quiet/messages", "", "", token);
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response.body(), R"({"room":"quiet","messages":[]})");
}

TEST_F(ApiServiceTest, HistoryNeedsAToken) {
  history.stored = 5;
  EXPECT_EQ(call(http::verb::get, "/rooms/lobby/messages").result(), http::status::unauthorized);
  EXPECT_EQ(call(http::verb::get, "/rooms/lobby/messages", "", "", "not-a-token").result(),
            http::status::unauthorized);
  EXPECT_EQ(call(http::verb::get, "/rooms").result(), http::status::unauthorized);
  // Logged out: the session is gone.
  auto token = registered_token();
  ASSERT_EQ(call(http::verb::post, "/logout", "", "", token).result(), http::status::no_content);
  EXPECT_EQ(call(http::verb::get, "/rooms/lobby/messages", "", "", token).result(),
            http::status::unauthorized);
  EXPECT_TRUE(history.requests.empty());
  EXPECT_TRUE(history.room_requests.empty());
}

TEST_F(ApiServiceTest, BadHistoryParametersAre400) {
  auto token = registered_token();
  for (const auto* target : {
           "/rooms/lobby/messages?after_seq=1&before_seq=5",
           "/rooms/lobby/messages?limit=0",
           "/rooms/lobby/messages?limit=101",
           "/rooms/lobby/messages?limit=-1",
           "/rooms/lobby/messages?limit=ten",
           "/rooms/lobby/messages?limit=",
           "/rooms/lobby/messages?limit",
           "/rooms/lobby/messages?after_seq=-1",
           "/rooms/lobby/messages?before_seq=-3",
           "/rooms/lobby/messages?after_seq=1.5",
           "/rooms/lobby/messages?after_seq=%2B1",
           "/rooms/lobby/messages?after_seq=99999999999999999999",
           "/rooms/lobby/messages?after_seq=1&after_seq=2",
           "/rooms/lobby/messages?after_seq=%zz",
           "/rooms?limit=0",
           "/rooms?limit=101",
           "/rooms?limit=x",
           "/rooms?after=bad%20name",
           "/rooms?after=",
       }) {
    auto response = call(http::verb::get, target, "", "", token);
    EXPECT_EQ(response.result(), http::status::bad_request) << target << ": " << response.body();
    EXPECT_EQ(error_of(response), "bad_request") << target;
    EXPECT_FALSE(body_of(response).at("message").as_string().empty());
  }
  auto bad_room = call(http::verb::get, "/rooms/bad%20room/messages", "", "", token);
  EXPECT_EQ(bad_room.result(), http::status::bad_request);
  EXPECT_EQ(error_of(bad_room), "bad_room");
  EXPECT_TRUE(history.requests.empty());
  EXPECT_TRUE(history.room_requests.empty());
  // The edges are fine.
  EXPECT_EQ(call(http::verb::get, "/rooms/lobby/messages?before_seq=0&limit=100", "", "", token).result(),
            http::status::ok);
  EXPECT_EQ(
      call(http::verb::get, "/rooms/lobby/messages?after_seq=9223372036854775807&limit=1", "", "", token)
          .result(),
      http::status::ok);
}

TEST_F(ApiServiceTest, HistoryWithItsStoreDownIs503) {
  auto token = registered_token();
  history.unavailable = true;
  auto messages = call(http::verb::get, "/rooms/lobby/messages", "", "", token);
  EXPECT_EQ(messages.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(messages), "unavailable");
  auto rooms = call(http::verb::get, "/rooms", "", "", token);
  EXPECT_EQ(rooms.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(rooms), "unavailable");
}

TEST_F(ApiServiceTest, RoomsArePagedByName) {
  auto token = registered_token();
  history.page.rooms = {{"alpha", 12, 1700000000001}, {"bravo", 3, 1700000000002}};
  history.page.next = "bravo";
  auto first = call(http::verb::get, "/rooms?limit=2", "", "", token);
  ASSERT_EQ(first.result(), http::status::ok) << first.body();
  EXPECT_EQ(first.body(), R"({"rooms":[{"room":"alpha","last_seq":12,"last_ts":1700000000001},)"
                          R"({"room":"bravo","last_seq":3,"last_ts":1700000000002}],"next":"bravo"})");
  history.page.rooms = {{"charlie", 1, 1700000000003}};
  history.page.next.reset();
  auto last = call(http::verb::get, "/rooms?limit=2&after=bravo", "", "", token);
  EXPECT_EQ(body_of(last).at("next"), nullptr);
  EXPECT_EQ(body_of(last).at("rooms").as_array().size(), 1u);
  call(http::verb::get, "/rooms", "", "", token);
  ASSERT_EQ(history.room_requests.size(), 3u);
  EXPECT_EQ(history.room_requests[0], (std::pair<std::optional<std::string>, std::size_t>{std::nullopt, 2}));
  EXPECT_EQ(history.room_requests[1], (std::pair<std::optional<std::string>, std::size_t>{"bravo", 2}));
  EXPECT_EQ(history.room_requests[2], (std::pair<std::optional<std::string>, std::size_t>{std::nullopt, 50}));
}

TEST(QueryParameters, DecodesAndRefusesDuplicates) {
  auto parameters = query_parameters("/x?a=1&b=two+words&c=%41%42&d&&e=");
  EXPECT_EQ(parameters.size(), 5u);
  EXPECT_EQ(parameters.at("a"), "1");
  EXPECT_EQ(parameters.at("b"), "two words");
  EXPECT_EQ(parameters.at("c"), "AB");
  EXPECT_EQ(parameters.at("d"), "");
  EXPECT_EQ(parameters.at("e"), "");
  EXPECT_TRUE(query_parameters("/x").empty());
  EXPECT_TRUE(query_parameters("/x?").empty());
  EXPECT_THROW(query_parameters("/x?a=1&a=2"), HttpError);
  EXPECT_THROW(query_parameters("/x?a=%4"), HttpError);
}

}  // namespace
}  // namespace rtmc::api
