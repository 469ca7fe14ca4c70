// Bad input to the gateway and the api: the documented error for each case,
// and the servers keep serving everyone else afterwards.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <random>
#include <thread>

#include "auth/auth.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17003);
constexpr std::size_t kMaxLine = 8192;
constexpr std::size_t kMaxBody = 4096;  // the default --max-body

using boost::json::value;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_ = start_gateway(services_, secret_, kGateway,
                             {"--max-line", std::to_string(kMaxLine), "--auth-timeout-s", "2"});
  }

  void TearDown() override {
    EXPECT_TRUE(!api_ || api_->running()) << "rtmc-api exited during the test";
    EXPECT_TRUE(!gateway_ || gateway_->running()) << "rtmc-gateway exited during the test";
  }

  std::unique_ptr<LineClient> connect(const TestUser& user, const std::string& label) {
    auto client = std::make_unique<LineClient>(kGateway, 0, label);
    client->auth(user.token, user.name);
    return client;
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_;
  HttpClient http_{kApiPort};
};

// Sends `line` and expects exactly one error frame with `code` (and `ref`).
void expect_line_error(LineClient& client, const std::string& line, std::string_view code,
                       std::optional<value> ref = std::nullopt) {
  SCOPED_TRACE("line: " + line.substr(0, 120));
  client.send_line(line);
  auto frame = client.next(5s);
  try {
    expect_error(frame, code, ref);
  } catch (const std::exception& error) {
    ADD_FAILURE() << "for line '" << line.substr(0, 120) << "': " << error.what();
  }
}

std::string send_line(const std::string& room, const std::string& id, const std::string& body) {
  return boost::json::serialize(
      boost::json::object{{"type", "send"}, {"room", room}, {"id", id}, {"body", body}});
}

// A ping padded with an ignored field to exactly `size` bytes.
std::string ping_of_size(std::size_t size, const std::string& ref) {
  std::string head = R"({"type":"ping","ref":")" + ref + R"(","pad":")";
  std::string tail = "\"}";
  return head + std::string(size - head.size() - tail.size(), 'p') + tail;
}

TEST_F(BadInput, GatewayAnswersEachBadFrameWithItsErrorAndKeepsServing) {
  auto user = make_user(http_, "bad");
  auto other = make_user(http_, "by");
  const auto room = unique_name("bad-");
  const auto bystander_room = unique_name("by-");

  // A well-behaved client, connected before the abuse starts.
  auto bystander = connect(other, "bystander");
  ASSERT_EQ(bystander->join(bystander_room), 0);

  auto client = connect(user, "abuser");

  // Syntax: not exactly one JSON value.
  expect_line_error(*client, R"({"type":"join","room":)", "bad_json");
  expect_line_error(*client, "not json at all", "bad_json");
  expect_line_error(*client, R"({"type":"ping"}{"type":"ping"})", "bad_json");
  expect_line_error(*client, R"({"type":"ping"} {"type":"ping"})", "bad_json");
  expect_line_error(*client, "{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}", "bad_json");  // invalid UTF-8

  // Valid JSON, wrong shape.
  expect_line_error(*client, "[1,2,3]", "bad_frame");
  expect_line_error(*client, R"("just a string")", "bad_frame");
  expect_line_error(*client, R"({"type":"join","room":5,"ref":"r5"})", "bad_frame", value("r5"));
  expect_line_error(*client, R"({"type":"join","ref":8})", "bad_frame", value(8));
  expect_line_error(*client, R"({"room":"x","ref":9})", "bad_frame", value(9));
  expect_line_error(*client, R"({"type":7,"ref":10})", "bad_frame", value(10));
  expect_line_error(*client, R"({"type":"send","room":")" + room + R"(","id":"x","body":5})", "bad_frame");
  expect_line_error(*client, R"({"type":"auth","token":5})", "bad_frame");

  // A ref over 1 KiB serialized is refused, and not echoed; 1 KiB is fine.
  expect_line_error(*client, R"({"type":"ping","ref":")" + std::string(1023, 'r') + "\"}", "bad_frame");
  client->ping(value(std::string(1022, 'r')));

  // Unknown type; ref echoed verbatim whatever its JSON type.
  expect_line_error(*client, R"({"type":"teleport","ref":{"k":[1,"two",null,2.5]}})", "unknown_type",
                    boost::json::parse(R"({"k":[1,"two",null,2.5]})"));

  // Room names.
  expect_line_error(*client, R"({"type":"join","room":"has space","ref":"x"})", "bad_room", value("x"));
  expect_line_error(*client, R"({"type":"join","room":""})", "bad_room");
  expect_line_error(*client, R"({"type":"join","room":")" + std::string(65, 'a') + "\"}", "bad_room");
  expect_line_error(*client, "{\"type\":\"join\",\"room\":\"caf\xc3\xa9\"}", "bad_room");
  expect_line_error(*client, R"({"type":"join","room":"a/b"})", "bad_room");

  // Not joined yet.
  expect_line_error(*client, R"({"type":"send","room":")" + room + R"(","id":"i1","body":"hi","ref":[1]})",
                    "not_joined", boost::json::parse("[1]"));
  expect_line_error(*client, R"({"type":"leave","room":")" + room + R"(","ref":"L"})", "not_joined",
                    value("L"));
  expect_line_error(*client, R"({"type":"leave","room":")" + room + R"(","ref":null})", "not_joined",
                    value(nullptr));

  ASSERT_EQ(client->join(room), 0);
  client->send_json({{"type", "join"}, {"room", room}, {"ref", "again"}});
  EXPECT_EQ(client->next(),
            (boost::json::object{{"type", "joined"}, {"room", room}, {"seq", 0}, {"ref", "again"}}))
      << "joining twice is harmless";

  // Message ids and bodies.
  expect_line_error(*client, send_line(room, "bad id!", "x"), "bad_id");
  expect_line_error(*client, send_line(room, std::string(65, 'i'), "x"), "bad_id");
  expect_line_error(*client, send_line(room, "empty", ""), "bad_frame");
  expect_line_error(*client, send_line(room, "big", std::string(kMaxBody + 1, 'b')), "body_too_large");

  // The largest body is fine; `from` is the token's user, never the client's claim.
  const std::string largest(kMaxBody, 'B');
  client->send_json(
      {{"type", "send"}, {"room", room}, {"id", "max"}, {"body", largest}, {"from", "mallory"}});
  auto first = client->next();
  auto second = client->next();
  if (str(first, "type") == "ack") std::swap(first, second);
  expect_message(first, room, 1, "max", user.name, largest);
  EXPECT_EQ(second, (boost::json::object{{"type", "ack"}, {"id", "max"}, {"room", room}}));

  // Line endings, blank lines, extra fields, big integer refs.
  client->send_raw("{\"type\":\"ping\",\"ref\":\"crlf\"}\r\n");
  EXPECT_EQ(client->next(), (boost::json::object{{"type", "pong"}, {"ref", "crlf"}}));
  client->send_raw("\n\n   \n\r\n\t\n");
  client->ping(value("after blank lines"));
  client->send_line(R"({"type":"ping","ref":12345678901,"extra":{"ignored":true}})");
  EXPECT_EQ(client->next(), (boost::json::object{{"type", "pong"}, {"ref", 12345678901LL}}));
  client->send_line(R"({"type":"ping"})");
  EXPECT_EQ(client->next(), (boost::json::object{{"type", "pong"}})) << "no ref in, no ref out";

  // A second auth on an authenticated connection.
  expect_line_error(
      *client,
      boost::json::serialize(boost::json::object{{"type", "auth"}, {"token", user.token}, {"ref", 2}}),
      "bad_frame", value(2));

  // A line of exactly --max-line bytes is accepted; one byte more is fatal.
  client->send_line(ping_of_size(kMaxLine, "edge"));
  EXPECT_EQ(client->next(), (boost::json::object{{"type", "pong"}, {"ref", "edge"}}));
  client->expect_silence(200ms);
  client->send_line(ping_of_size(kMaxLine + 1, "over"));
  {
    auto frames = client->expect_closed(5s);
    ASSERT_EQ(frames.size(), 1u) << "expected only frame_too_large before the close";
    expect_error(frames[0], "frame_too_large");
  }

  // An endless line without a newline is cut at the limit as well.
  {
    auto endless = connect(user, "endless");
    endless->try_send_raw(std::string(kMaxLine + 100, 'x'));
    auto frames = endless->expect_closed(5s);
    ASSERT_EQ(frames.size(), 1u);
    expect_error(frames[0], "frame_too_large");
  }

  // Random binary garbage with newlines: one bad_json per line, still open.
  {
    auto garbage = connect(user, "garbage");
    std::mt19937 rng(20240601);  // fixed: the same bytes every run
    std::uniform_int_distribution<int> byte(0, 255), length(40, 200);
    std::string bytes;
    const int lines = 60;
    for (int i = 0; i < lines; ++i) {
      std::string line;
      for (int n = length(rng); static_cast<int>(line.size()) < n;) {
        auto c = static_cast<char>(byte(rng));
        if (c != '\n') line += c;
      }
      line[0] = '\x01';  // never blank, never valid JSON
      bytes += line + "\n";
    }
    garbage->send_raw(bytes);
    for (int i = 0; i < lines; ++i) {
      auto frame = garbage->next();
      ASSERT_EQ(str(frame, "code"), "bad_json") << "line " << i << ": " << to_text(frame);
    }
    garbage->ping(value("still here"));
  }

  // Half a line, then the connection goes away: nothing is sent anywhere.
  {
    auto half = connect(user, "half");
    ASSERT_EQ(half->join(bystander_room), 0);
    half->send_raw(R"({"type":"send","room":")" + bystander_room + R"(","id":"half","body":"never comp)");
    std::this_thread::sleep_for(200ms);
    half->close();
  }
  {
    LineClient half_before_auth(kGateway, 0, "half-before-auth");
    half_before_auth.send_raw(R"({"type":"auth","tok)");
    std::this_thread::sleep_for(100ms);
  }

  // Everyone else is still served: the bystander hears its room (and seq 1
  // shows the half send never became a message), new connections work.
  bystander->expect_silence(300ms);
  auto published = http_.publish(other.token, bystander_room, "still alive", std::string("alive"));
  ASSERT_EQ(published.status, 202) << published.describe();
  expect_message(bystander->next(), bystander_room, 1, "alive", other.name, "still alive");
  auto fresh = connect(user, "fresh");
  EXPECT_EQ(fresh->join(room), 1);
  fresh->ping(value("fresh"));
  bystander->ping(value("bystander"));
}

TEST_F(BadInput, GatewayClosesConnectionsThatDoNotAuthenticate) {
  auto user = make_user(http_, "pre");
  const auto room = unique_name("pre-");
  auto bystander = connect(user, "bystander");
  ASSERT_EQ(bystander->join(room), 0);

  struct Case {
    std::string name;
    std::string bytes;
    std::optional<value> ref;
  };
  auth::TokenService foreign(random_secret(), std::chrono::seconds(3600));
  const std::vector<Case> cases{
      {"ping first", "{\"type\":\"ping\",\"ref\":\"early\"}\n", value("early")},
      {"join first", "{\"type\":\"join\",\"room\":\"" + room + "\",\"ref\":3}\n", value(3)},
      {"send first", send_line(room, "pre-1", "sneaky") + "\n", std::nullopt},
      {"broken json first", "{{{garbage\n", std::nullopt},
      {"binary first", std::string("\x01\x02\xff\xfe\n", 5), std::nullopt},
      {"token not a jwt", "{\"type\":\"auth\",\"token\":\"not.a.jwt\"}\n", std::nullopt},
      {"token of another secret",
       boost::json::serialize(
           boost::json::object{{"type", "auth"}, {"token", foreign.issue(user.name).token}}) +
           "\n",
       std::nullopt},
      {"auth without token", "{\"type\":\"auth\",\"ref\":\"t\"}\n", value("t")},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LineClient client(kGateway, 0, c.name);
    client.send_raw(c.bytes);
    auto frames = client.expect_closed(5s);
    ASSERT_EQ(frames.size(), 1u) << c.name << ": expected exactly one error frame before the close";
    try {
      expect_error(frames[0], "unauthorized", c.ref);
    } catch (const std::exception& error) {
      ADD_FAILURE() << c.name << ": " << error.what();
    }
  }

  // Silence past --auth-timeout-s 2: unauthorized, then closed; not before.
  {
    LineClient silent(kGateway, 0, "silent");
    auto started = std::chrono::steady_clock::now();
    auto frames = silent.expect_closed(6s);
    auto waited = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - started);
    ASSERT_EQ(frames.size(), 1u);
    expect_error(frames[0], "unauthorized");
    EXPECT_GE(waited.count(), 1800) << "closed before the 2 s auth timeout";
    EXPECT_LE(waited.count(), 4500) << "closed long after the 2 s auth timeout";
  }

  // None of it leaked into the room; the server still serves.
  bystander->expect_silence(300ms);
  bystander->ping(value("ok"));
  auto fresh = connect(user, "fresh");
  EXPECT_EQ(fresh->join(room), 0) << "the pre-auth send must not have been sequenced";
}

TEST_F(BadInput, ApiAnswersBadRequestsWithJsonErrors) {
  auto user = make_user(http_, "api");
  const auto room = unique_name("api-");
  const std::string json_type = "Content-Type: application/json";
  const std::string bearer = "Authorization: Bearer " + user.token;

  // Routing.
  expect_http_error(http_.request("GET", "/no/such/path"), 404, "not_found");
  expect_http_error(http_.request("POST", "/no/such/path", "{}", {json_type}), 404, "not_found");
  {
    auto response = http_.request("GET", "/publishMessage", {}, {bearer});
    expect_http_error(response, 405, "method_not_allowed");
    EXPECT_NE(response.headers["allow"].find("POST"), std::string::npos)
        << "Allow: " << response.headers["allow"];
  }
  expect_http_error(http_.request("GET", "/login"), 405, "method_not_allowed");
  expect_http_error(http_.request("DELETE", "/register"), 405, "method_not_allowed");

  // Bodies and content types.
  expect_http_error(http_.request("POST", "/register", R"({"user":)", {json_type}), 400, "bad_json");
  expect_http_error(http_.request("POST", "/publishMessage", R"({"room":"x",)", {json_type, bearer}), 400,
                    "bad_json");
  expect_http_error(http_.request("POST", "/login", "user=a&password=b",
                                  {"Content-Type: application/x-www-form-urlencoded"}),
                    415, "unsupported_media_type");
  expect_http_error(http_.request("POST", "/register", R"({"user":"x","password":"12345678"})",
                                  {"Content-Type: text/plain"}),
                    415, "unsupported_media_type");
  expect_http_error(http_.request("POST", "/publishMessage", R"({"room":"x","body":"y"})",
                                  {"Content-Type: text/plain", bearer}),
                    415, "unsupported_media_type");

  // Tokens.
  const std::string publish_body =
      boost::json::serialize(boost::json::object{{"room", room}, {"body", "hello"}, {"id", "tok-1"}});
  expect_http_error(http_.request("POST", "/publishMessage", publish_body, {json_type}), 401, "unauthorized");
  expect_http_error(http_.post_json("/publishMessage", publish_body, "garbage"), 401, "unauthorized");
  expect_http_error(
      http_.request("POST", "/publishMessage", publish_body, {json_type, "Authorization: Basic abc"}), 401,
      "unauthorized");
  auth::TokenService foreign(random_secret(), std::chrono::seconds(3600));
  expect_http_error(http_.post_json("/publishMessage", publish_body, foreign.issue(user.name).token), 401,
                    "unauthorized");
  expect_http_error(http_.request("POST", "/logout", {}, {}), 401, "unauthorized");

  // publishMessage fields.
  auto publish = [&](boost::json::object body) {
    return http_.post_json("/publishMessage", boost::json::serialize(body), user.token);
  };
  expect_http_error(publish({{"room", "bad room"}, {"body", "x"}}), 400, "bad_room");
  expect_http_error(publish({{"room", std::string(65, 'r')}, {"body", "x"}}), 400, "bad_room");
  expect_http_error(publish({{"room", ""}, {"body", "x"}}), 400, "bad_room");
  expect_http_error(publish({{"room", room}, {"body", "x"}, {"id", "bad id"}}), 400, "bad_id");
  expect_http_error(publish({{"room", room}, {"body", std::string(kMaxBody + 1, 'b')}}), 413,
                    "body_too_large");
  expect_http_error(publish({{"room", room}, {"body", ""}}), 400, "bad_request");
  expect_http_error(publish({{"room", room}}), 400, "bad_request");
  expect_http_error(publish({{"body", "x"}}), 400, "bad_request");
  expect_http_error(publish({{"room", room}, {"body", 5}}), 400, "bad_request");
  expect_http_error(http_.post_json("/publishMessage", "[1,2]", user.token), 400, "bad_request");
  {
    auto largest = publish({{"room", room}, {"body", std::string(kMaxBody, 'b')}, {"id", "largest"}});
    EXPECT_EQ(largest.status, 202) << "a body of exactly the limit is fine: " << largest.describe();
  }

  // Register input.
  auto register_user = [&](boost::json::object body) {
    return http_.post_json("/register", boost::json::serialize(body));
  };
  const std::string password = "correct horse";
  expect_http_error(register_user({{"user", ""}, {"password", password}}), 400, "bad_user");
  // (std::string(1, c) + ...: GCC 12 warns falsely about "literal" + std::string)
  for (char lead : {'-', '_', '.'})
    expect_http_error(
        register_user({{"user", std::string(1, lead) + unique_name("x")}, {"password", password}}), 400,
        "bad_user");
  expect_http_error(register_user({{"user", std::string(33, 'u')}, {"password", password}}), 400, "bad_user");
  expect_http_error(register_user({{"user", "has space"}, {"password", password}}), 400, "bad_user");
  expect_http_error(register_user({{"user", unique_name("u")}, {"password", "1234567"}}), 400,
                    "bad_password");
  expect_http_error(register_user({{"user", unique_name("u")}, {"password", std::string(257, 'p')}}), 400,
                    "bad_password");
  expect_http_error(register_user({{"user", unique_name("u")}}), 400, "bad_request");
  expect_http_error(register_user({{"user", 5}, {"password", password}}), 400, "bad_request");
  expect_http_error(http_.post_json("/register", "[]"), 400, "bad_request");

  // The edges of the rules are accepted.
  {
    auto longest = unique_name("L") + std::string(23, 'n');  // 32 characters
    ASSERT_EQ(longest.size(), 32u);
    auto response = register_user({{"user", longest}, {"password", std::string(256, 'p')}});
    EXPECT_EQ(response.status, 201) << response.describe();
    response = register_user({{"user", unique_name("e")}, {"password", "12345678"}});
    EXPECT_EQ(response.status, 201) << response.describe();
  }

  // Names are unique regardless of case.
  {
    auto name = unique_name("Dup");
    auto response = register_user({{"user", name}, {"password", password}});
    ASSERT_EQ(response.status, 201) << response.describe();
    std::string folded = name;
    for (auto& c : folded) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    expect_http_error(register_user({{"user", folded}, {"password", password}}), 409, "user_taken");
    std::string upper = name;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    expect_http_error(register_user({{"user", upper}, {"password", "another password"}}), 409, "user_taken");
    expect_http_error(register_user({{"user", name}, {"password", password}}), 409, "user_taken");
  }

  // Still serving.
  auto healthz = http_.request("GET", "/healthz");
  EXPECT_EQ(healthz.status, 200) << healthz.describe();
  auto ok = http_.publish(user.token, room, "after all that", std::string("fine"));
  EXPECT_EQ(ok.status, 202) << ok.describe();
}

}  // namespace
}  // namespace rtmc::e2e
