// Integration tests of rtmc-api: the real ApiServer, in-process on a free
// port, against the real Redis (RTMC_TEST_REDIS), RabbitMQ (RTMC_TEST_AMQP)
// and PostgreSQL (RTMC_TEST_PG). A missing variable fails the tests. Every
// test uses fresh user and room names, so the suite can share services.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdlib>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "api/server.hpp"
#include "api/web_assets.hpp"
#include "auth/auth.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"
#include "server/limits.hpp"
#include "store/amqp.hpp"
#include "store/itest_env.hpp"
#include "store/presence.hpp"
#include "store/redis.hpp"
#include "store/stalling_proxy_for_tests.hpp"

namespace rtmc::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
namespace net = boost::asio;
using net::ip::tcp;
using namespace std::chrono_literals;
using HttpResponse = http::response<http::string_body>;

constexpr auto kSecret = "api-itest-secret-0123456789abcdef";
constexpr std::uint32_t kShards = 16;

using itest::env;
using itest::unique;

constexpr auto kMissingServices =
    "api_itest needs RTMC_TEST_REDIS, RTMC_TEST_AMQP and RTMC_TEST_PG "
    "(scripts/services.sh start DIR writes them to DIR/env)";

// Services from the environment; nullopt when unset (callers fail the test
// with kMissingServices: a failure in SetUpTestSuite would only skip tests).
std::optional<ApiConfig> config_from_env() {
  auto redis = env("RTMC_TEST_REDIS");
  auto amqp_url = env("RTMC_TEST_AMQP");
  auto pg = env("RTMC_TEST_PG");
  if (!redis || !amqp_url || !pg) return std::nullopt;
  ApiConfig config;
  config.listen = HostPort{"127.0.0.1", 0};
  config.threads = 2;
  config.common.redis = RedisConfig::parse(*redis);  // host:port or redis:// with credentials
  config.common.amqp.url = *amqp_url;
  config.common.amqp.ingest_shards = kShards;
  config.common.pg.conninfo = *pg;
  config.common.auth.jwt_secret = kSecret;
  config.common.auth.token_ttl = std::chrono::seconds(3600);
  config.login_password_workers = 2;
  config.publish_give_up = 5s;
  config.shutdown_grace = 5s;
  return config;
}

// A blocking HTTP/1.1 client over one keep-alive connection, with a receive
// timeout so a server that never answers fails the test instead of hanging it.
class Client {
 public:
  explicit Client(std::uint16_t port) : socket_(context_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    timeval timeout{10, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }

  HttpResponse send(http::verb method, const std::string& target, const std::string& body = {},
                    const std::string& bearer = {}, const std::string& content_type = "application/json") {
    http::request<http::string_body> request{method, target, 11};
    request.set(http::field::host, "127.0.0.1");
    if (!content_type.empty() && !body.empty()) request.set(http::field::content_type, content_type);
    if (!bearer.empty()) request.set(http::field::authorization, "Bearer " + bearer);
    if (!forwarded_for_.empty()) request.set("X-Forwarded-For", forwarded_for_);
    request.body() = body;
    request.prepare_payload();
    http::write(socket_, request);
    return receive();
  }

  HttpResponse post(const std::string& target, const json::object& body, const std::string& bearer = {}) {
    return send(http::verb::post, target, json::serialize(body), bearer);
  }

  void write_raw(const std::string& bytes) { net::write(socket_, net::buffer(bytes)); }

  // Every later request carries X-Forwarded-For: `address` (believed by a
  // server that trusts 127.0.0.1 as its proxy).
  void forward_for(std::string address) { forwarded_for_ = std::move(address); }

  HttpResponse receive() {
    HttpResponse response;
    http::read(socket_, buffer_, response);
    return response;
  }

  // True when the server closed the connection (EOF) rather than keeping it.
  bool closed_by_server() {
    char byte;
    boost::system::error_code ec;
    socket_.read_some(net::buffer(&byte, 1), ec);
    return ec == net::error::eof || ec == net::error::connection_reset;
  }

 private:
  net::io_context context_;
  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
  std::string forwarded_for_;
};

json::object body_of(const HttpResponse& response) {
  return json::parse(response.body()).as_object();
}
// Registers a fresh user named after `prefix` and returns its token.
std::string register_and_login(Client& client, const std::string& prefix) {
  auto user = unique(prefix);
  auto registered = client.post("/register", {{"user", user}, {"password", "correct horse"}});
  EXPECT_EQ(registered.result(), http::status::created) << registered.body();
  auto login = client.post("/login", {{"user", user}, {"password", "correct horse"}});
  EXPECT_EQ(login.result(), http::status::ok) << login.body();
  return std::string(body_of(login).at("token").as_string());
}

// An AMQP URL on a loopback port that was free a moment ago: nothing answers.
std::string unreachable_amqp_url() {
  net::io_context context;
  tcp::acceptor probe(context, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return "amqp://guest:guest@127.0.0.1:" + std::to_string(probe.local_endpoint().port()) + "/";
}

// Runs a coroutine to completion on `io`, which must outlive the clients the
// coroutine used: their worker threads release a finished call (and its
// timer on `io`) only after the caller has resumed.
template <class T>
T run_on(net::io_context& io, net::awaitable<T> task) {
  io.restart();
  auto future = net::co_spawn(io, std::move(task), net::use_future);
  io.run();
  return future.get();
}

std::string error_of(const HttpResponse& response) {
  return std::string(body_of(response).at("error").as_string());
}

class ApiItest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = config_from_env();
    if (!config) return;
    config_ = new ApiConfig(*config);
    apply_migrations(config_->common.pg);
    server_ = new ApiServer(*config_);
    server_->start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete config_;
    config_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_FAIL() << kMissingServices;
  }

  std::uint16_t port() const { return server_->port(); }

  // Registers a fresh user; returns its name.
  std::string new_user(Client& client, const std::string& password = "correct horse") {
    auto name = unique("it_");
    auto response = client.post("/register", {{"user", name}, {"password", password}});
    EXPECT_EQ(response.result(), http::status::created) << response.body();
    return name;
  }

  json::object login(Client& client, const std::string& user, const std::string& password = "correct horse") {
    auto response = client.post("/login", {{"user", user}, {"password", password}});
    EXPECT_EQ(response.result(), http::status::ok) << response.body();
    return body_of(response);
  }

  std::string token_of_new_user(Client& client) { return register_and_login(client, "it_"); }

  redis::Reply redis_command(const std::vector<std::string>& args) {
    redis::Connection connection(config_->common.redis);
    return connection.command(args);
  }

  static ApiConfig* config_;
  static ApiServer* server_;
};

ApiConfig* ApiItest::config_ = nullptr;
ApiServer* ApiItest::server_ = nullptr;

// Waits for the message with `id` on `queue`; other messages found there are
// left unacked and go back to the queue when the connection closes.
std::optional<protocol::IngestMessage> consume_ingest(const AmqpConfig& config, const std::string& queue,
                                                      const std::string& id) {
  amqp::Connection connection(config);
  connection.qos(1000);
  connection.consume(queue);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto delivery = connection.next(200ms);
    if (!delivery) continue;
    auto message = protocol::decode_ingest(delivery->body, protocol::ParseLimits{});
    if (message && message->id == id) {
      connection.ack(delivery->delivery_tag);
      return message;
    }
  }
  return std::nullopt;
}

TEST_F(ApiItest, RegisterLoginPublishLandsOnTheIngestQueue) {
  Client client(port());
  auto user = new_user(client);
  auto session = login(client, user);
  std::string token(session.at("token").as_string());
  auto expires_at = session.at("expires_at").as_int64();
  EXPECT_NEAR(static_cast<double>(expires_at), static_cast<double>(now_ms() + 3600 * 1000), 10000.0);

  // The session is in Redis under session:<jti> with the token's lifetime.
  auto claims = auth::TokenService(kSecret, 3600s).verify(token, now_ms());
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->user, user);
  auto stored = redis_command({"GET", keys::session(claims->jti)});
  EXPECT_EQ(stored.str, user);
  auto pttl = redis_command({"PTTL", keys::session(claims->jti)});
  EXPECT_GT(pttl.integer, 3590 * 1000);
  EXPECT_LE(pttl.integer, 3600 * 1000);

  auto room = unique("room-");
  auto id = unique("id-");
  auto response = client.post("/publishMessage",
                              {{"room", room}, {"body", "hello über"}, {"id", id}, {"from", "x"}}, token);
  ASSERT_EQ(response.result(), http::status::accepted) << response.body();
  EXPECT_EQ(body_of(response), (json::object{{"id", id}, {"room", room}}));

  auto message = consume_ingest(config_->common.amqp, ingest_queue(shard_of(room, kShards)), id);
  ASSERT_TRUE(message) << "message not found on " << ingest_queue(shard_of(room, kShards));
  EXPECT_EQ(message->room, room);
  EXPECT_EQ(message->from, user);
  EXPECT_EQ(message->body, "hello über");
}

TEST_F(ApiItest, PublishWithoutIdGetsOneAndItIsTheQueuedOne) {
  Client client(port());
  auto token = token_of_new_user(client);
  auto room = unique("room-");
  auto response = client.post("/publishMessage", {{"room", room}, {"body", "no id"}}, token);
  ASSERT_EQ(response.result(), http::status::accepted) << response.body();
  std::string id(body_of(response).at("id").as_string());
  EXPECT_TRUE(valid_message_id(id));
  auto message = consume_ingest(config_->common.amqp, ingest_queue(shard_of(room, kShards)), id);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->body, "no id");
}

TEST_F(ApiItest, NamesAreUniqueRegardlessOfCase) {
  Client client(port());
  auto name = unique("Case_");
  ASSERT_EQ(client.post("/register", {{"user", name}, {"password", "correct horse"}}).result(),
            http::status::created);
  std::string other_case = name;
  for (auto& c : other_case) c = static_cast<char>(std::islower(c) ? std::toupper(c) : std::tolower(c));
  auto response = client.post("/register", {{"user", other_case}, {"password", "other password"}});
  EXPECT_EQ(response.result(), http::status::conflict);
  EXPECT_EQ(error_of(response), "user_taken");
  // Login is case-insensitive too and names the user as registered.
  auto session = login(client, other_case);
  EXPECT_EQ(session.at("user").as_string(), name);
}

TEST_F(ApiItest, RegisterRejectsInvalidInput) {
  Client client(port());
  auto bad_name = client.post("/register", {{"user", "-leading"}, {"password", "correct horse"}});
  EXPECT_EQ(bad_name.result(), http::status::bad_request);
  EXPECT_EQ(error_of(bad_name), "bad_user");
  auto bad_password = client.post("/register", {{"user", unique("u")}, {"password", "short"}});
  EXPECT_EQ(bad_password.result(), http::status::bad_request);
  EXPECT_EQ(error_of(bad_password), "bad_password");
  auto wrong_type = client.post("/register", {{"user", unique("u")}, {"password", 12345678}});
  EXPECT_EQ(wrong_type.result(), http::status::bad_request);
  EXPECT_EQ(error_of(wrong_type), "bad_request");
  auto not_json = client.send(http::verb::post, "/register", "user=a&password=b");
  EXPECT_EQ(not_json.result(), http::status::bad_request);
  EXPECT_EQ(error_of(not_json), "bad_json");
  auto form = client.send(http::verb::post, "/register", "user=a&password=b", {},
                          "application/x-www-form-urlencoded");
  EXPECT_EQ(form.result(), http::status::unsupported_media_type);
  EXPECT_EQ(error_of(form), "unsupported_media_type");
}

TEST_F(ApiItest, WrongPasswordAndUnknownUserGetTheSame401) {
  Client client(port());
  auto user = new_user(client);
  auto wrong = client.post("/login", {{"user", user}, {"password", "not the password"}});
  auto unknown = client.post("/login", {{"user", unique("nobody_")}, {"password", "not the password"}});
  EXPECT_EQ(wrong.result(), http::status::unauthorized);
  EXPECT_EQ(unknown.result(), http::status::unauthorized);
  EXPECT_EQ(wrong.body(), unknown.body());
  EXPECT_EQ(error_of(wrong), "unauthorized");
}

TEST_F(ApiItest, ExpiredTokenIsRefusedEvenWithALiveSession) {
  Client client(port());
  auto user = new_user(client);
  // TokenService refuses a non-positive lifetime: issue a 1 s token and let
  // it expire (exp has one-second resolution).
  auto expired = auth::TokenService(kSecret, 1s).issue(user);
  // A live session, so only the expiry can refuse it.
  redis_command({"SET", keys::session(expired.claims.jti), user, "PX", "60000"});
  while (now_ms() <= expired.claims.expires_at_ms + 50) std::this_thread::sleep_for(50ms);
  auto response = client.post("/publishMessage", {{"room", "r"}, {"body", "hi"}}, expired.token);
  EXPECT_EQ(response.result(), http::status::unauthorized);
  EXPECT_EQ(error_of(response), "unauthorized");
  // The same token shape, unexpired, is accepted: the test can tell the two apart.
  auto fresh = auth::TokenService(kSecret, 60s).issue(user);
  redis_command({"SET", keys::session(fresh.claims.jti), user, "PX", "60000"});
  EXPECT_EQ(client.post("/publishMessage", {{"room", unique("r")}, {"body", "hi"}}, fresh.token).result(),
            http::status::accepted);
}

TEST_F(ApiItest, LogoutEndsTheSession) {
  Client client(port());
  auto token = token_of_new_user(client);
  auto claims = auth::TokenService(kSecret, 3600s).verify(token, now_ms());
  ASSERT_TRUE(claims);
  EXPECT_EQ(client.post("/publishMessage", {{"room", unique("r")}, {"body", "before"}}, token).result(),
            http::status::accepted);

  auto logout = client.send(http::verb::post, "/logout", {}, token);
  EXPECT_EQ(logout.result(), http::status::no_content);
  EXPECT_TRUE(redis_command({"EXISTS", keys::session(claims->jti)}).integer == 0);

  auto after = client.post("/publishMessage", {{"room", unique("r")}, {"body", "after"}}, token);
  EXPECT_EQ(after.result(), http::status::unauthorized);
  auto again = client.send(http::verb::post, "/logout", {}, token);
  EXPECT_EQ(again.result(), http::status::unauthorized);
  EXPECT_EQ(error_of(again), "unauthorized");
}

TEST_F(ApiItest, RefreshMakesANewSessionOfTheSameUserAndKeepsTheOldOne) {
  Client client(port());
  auto user = new_user(client);
  const auto old_token = std::string(login(client, user).at("token").as_string());
  const auth::TokenService verifier(kSecret, 3600s);
  auto old_claims = verifier.verify(old_token, now_ms());
  ASSERT_TRUE(old_claims);

  auto response = client.send(http::verb::post, "/refresh", {}, old_token);
  ASSERT_EQ(response.result(), http::status::ok) << response.body();
  auto answer = body_of(response);
  EXPECT_EQ(answer.size(), 3u) << response.body();
  EXPECT_EQ(answer.at("user").as_string(), user);
  const auto token = std::string(answer.at("token").as_string());
  auto claims = verifier.verify(token, now_ms());
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->user, user);
  EXPECT_NE(claims->jti, old_claims->jti);
  EXPECT_EQ(answer.at("expires_at").as_int64(), claims->expires_at_ms);
  // Written to Redis as a login writes it: the user under session:<jti>,
  // expiring with the token.
  EXPECT_EQ(redis_command({"GET", keys::session(claims->jti)}).str, user);
  auto pttl = redis_command({"PTTL", keys::session(claims->jti)});
  EXPECT_GT(pttl.integer, 3590 * 1000);
  EXPECT_LE(pttl.integer, 3600 * 1000);
  EXPECT_EQ(redis_command({"GET", keys::session(old_claims->jti)}).str, user);

  // "{}" is as good as no body; both tokens work.
  auto with_body = client.send(http::verb::post, "/refresh", "{}", token);
  EXPECT_EQ(with_body.result(), http::status::ok) << with_body.body();
  EXPECT_EQ(client.post("/publishMessage", {{"room", unique("r")}, {"body", "old"}}, old_token).result(),
            http::status::accepted);
  EXPECT_EQ(client.post("/publishMessage", {{"room", unique("r")}, {"body", "new"}}, token).result(),
            http::status::accepted);

  // Logging out one leaves the other; a logged-out or bad token is refused.
  ASSERT_EQ(client.send(http::verb::post, "/logout", {}, old_token).result(), http::status::no_content);
  auto refused = client.send(http::verb::post, "/refresh", {}, old_token);
  EXPECT_EQ(refused.result(), http::status::unauthorized);
  EXPECT_EQ(error_of(refused), "unauthorized");
  EXPECT_EQ(client.send(http::verb::post, "/refresh", {}, "garbage").result(), http::status::unauthorized);
  EXPECT_EQ(client.send(http::verb::post, "/refresh", {}, token).result(), http::status::ok);
}

TEST_F(ApiItest, PublishRejectsBadInput) {
  Client client(port());
  auto token = token_of_new_user(client);
  auto no_token = client.post("/publishMessage", {{"room", "r"}, {"body", "hi"}});
  EXPECT_EQ(no_token.result(), http::status::unauthorized);
  auto bad_room = client.post("/publishMessage", {{"room", "no spaces"}, {"body", "hi"}}, token);
  EXPECT_EQ(bad_room.result(), http::status::bad_request);
  EXPECT_EQ(error_of(bad_room), "bad_room");
  auto bad_id = client.post("/publishMessage", {{"room", "r"}, {"body", "hi"}, {"id", "a/b"}}, token);
  EXPECT_EQ(bad_id.result(), http::status::bad_request);
  EXPECT_EQ(error_of(bad_id), "bad_id");
  auto empty = client.post("/publishMessage", {{"room", "r"}, {"body", ""}}, token);
  EXPECT_EQ(empty.result(), http::status::bad_request);
  auto wrong_type = client.post("/publishMessage", {{"room", "r"}, {"body", 5}}, token);
  EXPECT_EQ(wrong_type.result(), http::status::bad_request);
  EXPECT_EQ(error_of(wrong_type), "bad_request");
  auto too_large = client.post("/publishMessage", {{"room", "r"}, {"body", std::string(4097, 'x')}}, token);
  EXPECT_EQ(too_large.result(), http::status::payload_too_large);
  EXPECT_EQ(error_of(too_large), "body_too_large");
  auto media =
      client.send(http::verb::post, "/publishMessage", R"({"room":"r","body":"hi"})", token, "text/plain");
  EXPECT_EQ(media.result(), http::status::unsupported_media_type);
  auto not_json = client.send(http::verb::post, "/publishMessage", "{\"room\":", token);
  EXPECT_EQ(not_json.result(), http::status::bad_request);
  EXPECT_EQ(error_of(not_json), "bad_json");
  // All of that on one keep-alive connection, which still works.
  EXPECT_EQ(client.send(http::verb::get, "/healthz").result(), http::status::ok);
}

TEST_F(ApiItest, UnknownPathAndWrongMethod) {
  Client client(port());
  auto missing = client.send(http::verb::get, "/nope");
  EXPECT_EQ(missing.result(), http::status::not_found);
  EXPECT_EQ(error_of(missing), "not_found");
  auto wrong = client.send(http::verb::get, "/publishMessage");
  EXPECT_EQ(wrong.result(), http::status::method_not_allowed);
  EXPECT_EQ(wrong[http::field::allow], "POST");
  EXPECT_EQ(error_of(wrong), "method_not_allowed");
}

// What --list-routes prints (ApiServer::routes) is what the running server
// serves: each listed method and path (parameters filled in) reaches a
// handler, never the router's own 404 or 405.
TEST_F(ApiItest, ListedRoutesAreServed) {
  const auto routes = ApiServer::routes(*config_);
  ASSERT_FALSE(routes.empty());
  EXPECT_NE(std::find(routes.begin(), routes.end(), "POST /refresh"), routes.end());
  const auto unrouted =
      json::serialize(json::object{{"error", "not_found"}, {"message", "no such endpoint"}});
  for (const auto& route : routes) {
    const auto space = route.find(' ');
    ASSERT_NE(space, std::string::npos) << route;
    std::string target;
    for (std::size_t i = space + 1; i < route.size(); ++i) {
      if (route[i] != '{') {
        target += route[i];
        continue;
      }
      target += "x1";
      i = route.find('}', i);
    }
    const auto method = http::string_to_verb(route.substr(0, space));
    ASSERT_NE(method, http::verb::unknown) << route;
    Client client(port());
    auto response = client.send(method, target);
    EXPECT_NE(response.result(), http::status::method_not_allowed) << route;
    EXPECT_NE(response.body(), unrouted) << route;
  }
}

TEST_F(ApiItest, HealthzAndMetrics) {
  Client client(port());
  auto health = client.send(http::verb::get, "/healthz");
  ASSERT_EQ(health.result(), http::status::ok);
  EXPECT_EQ(body_of(health).at("status"), "ok");
  // The publisher connects in the background; it must get there.
  bool connected = false;
  for (int i = 0; i < 100 && !connected; ++i) {
    connected = body_of(client.send(http::verb::get, "/healthz")).at("amqp_connected").as_bool();
    if (!connected) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(connected);
  client.send(http::verb::get, "/nope");
  auto metrics = client.send(http::verb::get, "/metrics");
  ASSERT_EQ(metrics.result(), http::status::ok);
  EXPECT_NE(metrics.body().find("rtmc_api_responses_total{status=\"404\"}"), std::string::npos)
      << metrics.body();
  EXPECT_NE(metrics.body().find("rtmc_api_publish_total{result=\"confirmed\"}"), std::string::npos);
  EXPECT_NE(metrics.body().find("rtmc_api_amqp_connected 1"), std::string::npos);
}

// The web page's routes on the real server, keep-alive, without a token.
TEST_F(ApiItest, ServesTheWebPageItsAssetsAndConfig) {
  Client client(port());
  auto index = client.send(http::verb::get, "/");
  ASSERT_EQ(index.result(), http::status::ok);
  EXPECT_EQ(index[http::field::content_type], "text/html; charset=utf-8");
  EXPECT_EQ(index.body(), find_web_asset("index.html")->body);
  auto script = client.send(http::verb::get, "/assets/app.js");
  ASSERT_EQ(script.result(), http::status::ok);
  EXPECT_EQ(script[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_EQ(script.body(), find_web_asset("app.js")->body);
  auto missing = client.send(http::verb::get, "/assets/nope.js");
  EXPECT_EQ(missing.result(), http::status::not_found);
  EXPECT_EQ(error_of(missing), "not_found");
  auto config = client.send(http::verb::get, "/config.json");
  ASSERT_EQ(config.result(), http::status::ok);
  EXPECT_EQ(json::parse(config.body()), json::parse(R"({"ws_urls":["ws://127.0.0.1:7080/ws"]})"));
}

// The value of an unlabelled sample in /metrics; -1 when it is absent.
double metric_value(Client& client, const std::string& name) {
  const auto text = client.send(http::verb::get, "/metrics").body();
  const auto line = "\n" + name + " ";
  const auto at = text.find(line);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + line.size(), text.find('\n', at + 1) - at - line.size()));
}

TEST_F(ApiItest, UserStatusIsCacheAsideAndFollowsStatusChanges) {
  Client client(port());
  const auto user = unique("St_");  // registered with capitals
  ASSERT_EQ(client.post("/register", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::created);
  const auto lower = fold_user_name(user);
  std::string upper = user;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const auto key = keys::status(user);
  ASSERT_EQ(redis_command({"EXISTS", key}).integer, 0);
  const double hits = metric_value(client, "rtmc_status_cache_hits_total");
  const double misses = metric_value(client, "rtmc_status_cache_misses_total");
  ASSERT_GE(hits, 0);
  ASSERT_GE(misses, 0);

  // The first read misses and fills the cache from PostgreSQL (no token needed).
  auto first = client.send(http::verb::get, "/users/" + upper + "/status");
  ASSERT_EQ(first.result(), http::status::ok) << first.body();
  EXPECT_EQ(first[http::field::content_type], "application/json");
  EXPECT_EQ(body_of(first), (json::object{{"user", user}, {"status", "offline"}, {"last_seen", nullptr}}));
  EXPECT_EQ(metric_value(client, "rtmc_status_cache_misses_total"), misses + 1);
  EXPECT_EQ(metric_value(client, "rtmc_status_cache_hits_total"), hits);
  EXPECT_EQ(redis_command({"HGET", key, "user"}).str, user);
  const auto ttl = redis_command({"PTTL", key}).integer;
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 300'000);  // the default --status-cache-ttl-s

  // The second is served from Redis.
  auto second = client.send(http::verb::get, "/users/" + lower + "/status");
  ASSERT_EQ(second.result(), http::status::ok);
  EXPECT_EQ(body_of(second), body_of(first));
  EXPECT_EQ(metric_value(client, "rtmc_status_cache_hits_total"), hits + 1);
  EXPECT_EQ(metric_value(client, "rtmc_status_cache_misses_total"), misses + 1);

  // A status change (what a gateway's presence does) shows in the next read.
  net::io_context io;  // before the client: it outlives it
  redis::Client redis(config_->common.redis, 1);
  store::Presence presence(redis, unique("gw-"), store::PresenceOptions{});
  const auto since = now_ms();
  ASSERT_TRUE(run_on(io, presence.connect(1, user, since)));
  auto online = client.send(http::verb::get, "/users/" + user + "/status");
  ASSERT_EQ(online.result(), http::status::ok);
  EXPECT_EQ(body_of(online), (json::object{{"user", user}, {"status", "online"}, {"last_seen", since}}));
  ASSERT_TRUE(run_on(io, presence.disconnect(1, user, since + 5)));
  auto offline = client.send(http::verb::get, "/users/" + user + "/status");
  EXPECT_EQ(body_of(offline),
            (json::object{{"user", user}, {"status", "offline"}, {"last_seen", since + 5}}));

  auto unknown = client.send(http::verb::get, "/users/" + unique("nobody_") + "/status");
  EXPECT_EQ(unknown.result(), http::status::not_found);
  EXPECT_EQ(error_of(unknown), "not_found");
  auto invalid = client.send(http::verb::get, "/users/-bad-/status");
  EXPECT_EQ(invalid.result(), http::status::not_found);
}

TEST_F(ApiItest, OversizedRequestBodyIs413AndCloses) {
  Client client(port());
  std::string huge(100 * 1024, 'x');
  auto response = client.send(http::verb::post, "/register", "{\"user\":\"" + huge + "\"}");
  EXPECT_EQ(response.result(), http::status::payload_too_large);
  EXPECT_EQ(error_of(response), "request_too_large");
  EXPECT_FALSE(response.keep_alive());
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(ApiItest, OversizedHeaderIs431) {
  Client client(port());
  client.write_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(10 * 1024, 'h') + "\r\n\r\n");
  auto response = client.receive();
  EXPECT_EQ(response.result(), http::status::request_header_fields_too_large);
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(ApiItest, MalformedRequestIs400AndOthersAreStillServed) {
  Client bad(port());
  bad.write_raw("THIS IS NOT HTTP\r\n\r\n");
  auto response = bad.receive();
  EXPECT_EQ(response.result(), http::status::bad_request);
  Client good(port());
  EXPECT_EQ(good.send(http::verb::get, "/healthz").result(), http::status::ok);
}

TEST_F(ApiItest, ExpectContinueIsHonoured) {
  Client client(port());
  std::string body = json::serialize(json::object{{"user", unique("ec_")}, {"password", "correct horse"}});
  client.write_raw(
      "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n");
  auto interim = client.receive();
  EXPECT_EQ(interim.result(), http::status::continue_);
  client.write_raw(body);
  EXPECT_EQ(client.receive().result(), http::status::created);
}

TEST_F(ApiItest, ConcurrentPublishesOnManyConnections) {
  Client setup(port());
  auto token = token_of_new_user(setup);
  auto room = unique("room-");
  std::vector<std::future<int>> results;
  for (int c = 0; c < 8; ++c) {
    results.push_back(std::async(std::launch::async, [this, token, room, c] {
      Client client(port());
      int accepted = 0;
      for (int i = 0; i < 25; ++i) {
        std::string id = "c";
        id += std::to_string(c);
        id += '-';
        id += std::to_string(i);
        auto response = client.post("/publishMessage", {{"room", room}, {"body", "m"}, {"id", id}}, token);
        if (response.result() == http::status::accepted) ++accepted;
      }
      return accepted;
    }));
  }
  int accepted = 0;
  for (auto& result : results) accepted += result.get();
  EXPECT_EQ(accepted, 200);
}

// A server whose RabbitMQ is unreachable: publishes are refused with 503
// (never a 202 without a confirm) while login and the rest keep working.
TEST(ApiUnavailableItest, PublishIs503WhenRabbitMqIsUnreachable) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  apply_migrations(config->common.pg);
  config->common.amqp.url = unreachable_amqp_url();
  config->publish_give_up = 500ms;
  ApiServer server(*config);
  server.start();

  Client client(server.port());
  const std::string token = register_and_login(client, "un_");

  auto started = std::chrono::steady_clock::now();
  auto response = client.post("/publishMessage", {{"room", unique("r")}, {"body", "lost?"}}, token);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(response.result(), http::status::service_unavailable) << response.body();
  EXPECT_EQ(error_of(response), "unavailable");
  EXPECT_LT(took, 5s);
  EXPECT_EQ(body_of(client.send(http::verb::get, "/healthz")).at("amqp_connected"), false);
  auto metrics = client.send(http::verb::get, "/metrics");
  EXPECT_NE(metrics.body().find("rtmc_api_publish_total{result=\"unavailable\"} 1"), std::string::npos)
      << metrics.body();
}

// stop() closes idle keep-alive connections and returns well within the grace.
TEST(ApiStopItest, StopClosesIdleConnectionsPromptly) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  ASSERT_EQ(client.send(http::verb::get, "/healthz").result(), http::status::ok);
  auto started = std::chrono::steady_clock::now();
  server.stop();
  server.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_TRUE(client.closed_by_server());
}

}  // namespace
}  // namespace rtmc::api

namespace rtmc::api {
namespace {

// A request in flight when stop() is called still gets its answer (here the
// 503 of an unconfirmed publish), with "Connection: close".
TEST(ApiStopItest, StopLetsARequestInFlightAnswer) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  config->common.amqp.url = unreachable_amqp_url();
  config->publish_give_up = 1500ms;
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  const std::string token = register_and_login(client, "st_");

  auto stopper = std::async(std::launch::async, [&server] {
    std::this_thread::sleep_for(300ms);
    server.stop();
    server.wait();
  });
  auto response = client.post("/publishMessage", {{"room", unique("r")}, {"body", "in flight"}}, token);
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_FALSE(response.keep_alive());
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_EQ(stopper.wait_for(5s), std::future_status::ready);
}

}  // namespace
}  // namespace rtmc::api

namespace rtmc::api {
namespace {

// Idle keep-alive connections and stalled request bodies are cut.
TEST(ApiTimeoutItest, IdleConnectionsAndStalledBodiesAreCut) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  config->http.keepalive_timeout = 300ms;
  config->http.read_timeout = 300ms;
  ApiServer server(*config);
  server.start();

  Client idle(server.port());
  ASSERT_EQ(idle.send(http::verb::get, "/healthz").result(), http::status::ok);
  auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(idle.closed_by_server());
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 3s);

  Client stalled(server.port());
  stalled.write_raw(
      "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 100\r\n\r\n{\"user\":");
  auto response = stalled.receive();
  EXPECT_EQ(response.result(), http::status::request_timeout);
  EXPECT_TRUE(stalled.closed_by_server());
}

}  // namespace
}  // namespace rtmc::api

namespace rtmc::api {
namespace {

// A connection that never sends a request is closed after the first-request
// timeout, long before the keep-alive timeout.
TEST(ApiTimeoutItest, ASilentConnectionIsClosedAfterTheFirstRequestTimeout) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  config->http.first_request_timeout = 300ms;
  config->http.keepalive_timeout = 60s;
  ApiServer server(*config);
  server.start();

  Client silent(server.port());
  auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.closed_by_server());  // else only at the keep-alive timeout (60 s)
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
}

// Over the connection cap a new connection is answered 503 server_full with
// "Connection: close" at once, closed, and counted; the others keep working.
TEST(ApiConnectionCapItest, OverTheCapAConnectionGets503ServerFullAndIsClosed) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  config->max_connections = 2;
  ApiServer server(*config);
  server.start();
  EXPECT_EQ(server.max_connections(), 2u);

  Client first(server.port());
  Client second(server.port());
  ASSERT_EQ(first.send(http::verb::get, "/healthz").result(), http::status::ok);
  ASSERT_EQ(second.send(http::verb::get, "/healthz").result(), http::status::ok);
  Client third(server.port());
  auto refused = third.receive();
  EXPECT_EQ(refused.result(), http::status::service_unavailable);
  EXPECT_EQ(error_of(refused), "server_full");
  EXPECT_FALSE(refused.keep_alive());
  EXPECT_TRUE(third.closed_by_server());

  auto metrics = first.send(http::verb::get, "/metrics");
  EXPECT_NE(metrics.body().find("rtmc_api_connections_refused_total 1"), std::string::npos) << metrics.body();
  EXPECT_NE(metrics.body().find("rtmc_api_connections_open 2"), std::string::npos) << metrics.body();
}

// Without a configured cap the api takes what the open-file limit allows,
// less a reserve for its own files.
TEST(ApiConnectionCapItest, DefaultCapFollowsTheOpenFileLimit) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  ApiServer server(*config);
  EXPECT_EQ(server.max_connections(), server::connection_cap_from_open_files());
  EXPECT_GT(server.max_connections(), 2u);
}

// A client address of its own for each test, so buckets keyed by address
// never carry over from another test or another run on the same Redis.
std::string unique_address() {
  std::random_device device;
  std::uniform_int_distribution<int> octet(1, 254);
  return "10." + std::to_string(octet(device)) + "." + std::to_string(octet(device)) + "." +
         std::to_string(octet(device));
}

std::optional<ApiConfig> behind_proxy_config() {
  auto config = config_from_env();
  if (config) config->rate_limits.trusted_proxies = {"127.0.0.1"};
  return config;
}

TEST(ApiRateLimitItest, EleventhFailedLoginFromOneAddressIs429EvenWithTheRightPassword) {
  auto config = behind_proxy_config();
  ASSERT_TRUE(config) << kMissingServices;
  apply_migrations(config->common.pg);
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  client.forward_for(unique_address());
  const auto user = unique("rl_");
  ASSERT_EQ(client.post("/register", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::created);
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(client.post("/login", {{"user", user}, {"password", "wrong horse"}}).result(),
              http::status::unauthorized)
        << i;
  auto refused = client.post("/login", {{"user", user}, {"password", "correct horse"}});
  EXPECT_EQ(refused.result(), http::status::too_many_requests) << refused.body();
  EXPECT_EQ(error_of(refused), "rate_limited");
  const std::string retry_after(refused[http::field::retry_after]);
  ASSERT_FALSE(retry_after.empty());
  EXPECT_GE(std::stoi(retry_after), 1);
  EXPECT_LE(std::stoi(retry_after), 6);
  // The account is not locked: from another address the password works.
  client.forward_for(unique_address());
  EXPECT_EQ(client.post("/login", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::ok);
}

TEST(ApiRateLimitItest, RegistrationBurstFromOneAddressIs429) {
  auto config = behind_proxy_config();
  ASSERT_TRUE(config) << kMissingServices;
  // One token per 100 s: however slow the three registrations (Argon2id on a
  // loaded machine), the bucket cannot refill a fourth during the test.
  config->rate_limits.registrations_per_address = store::Rate::per_second(0.01, 3);
  apply_migrations(config->common.pg);
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  client.forward_for(unique_address());
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(client.post("/register", {{"user", unique("rb_")}, {"password", "correct horse"}}).result(),
              http::status::created)
        << i;
  auto refused = client.post("/register", {{"user", unique("rb_")}, {"password", "correct horse"}});
  EXPECT_EQ(refused.result(), http::status::too_many_requests) << refused.body();
  EXPECT_EQ(error_of(refused), "rate_limited");
  // Whole seconds until a token is back: 100 less what refilled meanwhile.
  const auto retry_after = std::stoi(std::string(refused[http::field::retry_after]));
  EXPECT_GE(retry_after, 80);
  EXPECT_LE(retry_after, 100);
  // Another address has its own bucket.
  client.forward_for(unique_address());
  EXPECT_EQ(client.post("/register", {{"user", unique("rb_")}, {"password", "correct horse"}}).result(),
            http::status::created);
}

// The defect: with PostgreSQL stopped, POST /login got no answer in 20 s and
// /healthz said ok. Here the api reaches PostgreSQL through a proxy that
// stalls (as a stopped server does), while the shared test server runs on.
TEST(ApiStallItest, StalledPostgresIs503WithinFiveSecondsAndHealthzNamesIt) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  apply_migrations(config->common.pg);
  testing::StallingProxy proxy(testing::pg_port_of(config->common.pg.conninfo));
  config->common.pg.conninfo = testing::pg_conninfo_via(config->common.pg.conninfo, proxy.port());
  config->pg_connections = 2;
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  const auto user = unique("pgs_");
  ASSERT_EQ(client.post("/register", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::created);
  ASSERT_EQ(client.send(http::verb::get, "/healthz").result(), http::status::ok);

  proxy.stall();
  for (int i = 0; i < 3; ++i) {  // open connections, then new ones
    const auto started = std::chrono::steady_clock::now();
    auto response = client.post("/login", {{"user", user}, {"password", "correct horse"}});
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << i;
    EXPECT_EQ(response.result(), http::status::service_unavailable) << i << " " << response.body();
    EXPECT_EQ(error_of(response), "unavailable");
  }
  std::this_thread::sleep_for(1100ms);  // past the cached health answer
  const auto started = std::chrono::steady_clock::now();
  auto health = client.send(http::verb::get, "/healthz");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(health.result(), http::status::service_unavailable) << health.body();
  EXPECT_EQ(body_of(health).at("status"), "unavailable");
  EXPECT_EQ(body_of(health).at("postgres"), "unavailable");
  EXPECT_EQ(body_of(health).at("redis"), "ok");
}

TEST(ApiStallItest, StalledRedisIs503WithinFiveSecondsAndHealthzNamesIt) {
  auto config = config_from_env();
  ASSERT_TRUE(config) << kMissingServices;
  apply_migrations(config->common.pg);
  testing::StallingProxy proxy(config->common.redis.address.port);
  config->common.redis.address.port = proxy.port();
  config->redis_connections = 2;
  ApiServer server(*config);
  server.start();
  Client client(server.port());
  const auto user = unique("rds_");
  ASSERT_EQ(client.post("/register", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::created);
  ASSERT_EQ(client.post("/login", {{"user", user}, {"password", "correct horse"}}).result(),
            http::status::ok);

  proxy.stall();
  for (int i = 0; i < 3; ++i) {
    const auto started = std::chrono::steady_clock::now();
    auto response = client.post("/login", {{"user", user}, {"password", "correct horse"}});
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << i;
    EXPECT_EQ(response.result(), http::status::service_unavailable) << i << " " << response.body();
  }
  std::this_thread::sleep_for(1100ms);
  auto health = client.send(http::verb::get, "/healthz");
  EXPECT_EQ(health.result(), http::status::service_unavailable) << health.body();
  EXPECT_EQ(body_of(health).at("redis"), "unavailable");
  EXPECT_EQ(body_of(health).at("postgres"), "ok");
}

}  // namespace
}  // namespace rtmc::api
