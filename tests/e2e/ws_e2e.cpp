// The WebSocket transport of the real gateway (GET /ws on its HTTP port):
// the same protocol and stream as TCP, one frame per text message, and the
// documented errors, close codes, origin checks, heartbeat, idle cut,
// slow-consumer cut and shutdown.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <thread>

#include "support.hpp"
#include "ws_client.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17011);

std::string metrics_of(std::uint16_t http_port) {
  HttpClient http(http_port);
  auto metrics = http.request("GET", "/metrics");
  if (metrics.status != 200) throw std::runtime_error("/metrics: " + metrics.describe());
  return metrics.body;
}

// Polls /metrics until it holds `line` (closes are counted once the gateway
// has finished them).
bool metrics_show(std::uint16_t http_port, const std::string& line, Millis timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // Appended: GCC 12 warns falsely about "literal" + std::string.
    std::string text(1, '\n');
    text += metrics_of(http_port);
    std::string wanted(1, '\n');
    wanted += line;
    wanted += '\n';
    if (text.find(wanted) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::string id_of(int n) {
  std::string id = "m";  // appended: GCC 12 warns falsely about "literal" + std::string
  id += std::to_string(n);
  return id;
}

TEST(WebSocket, ABrowserAndATcpClientInOneRoomSeeTheSameStream) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway);
  const auto http_port = gateway_http_port(kGateway);
  HttpClient http(kApiPort);
  auto ws_user = make_user(http, "wsu");
  auto tcp_user = make_user(http, "tcpu");
  const auto room = unique_name("ws-");

  // The api's default origin is admitted by default.
  WsClient ws(http_port, {.origin = "http://localhost:8080", .receive_buffer = 0, .label = "ws"});
  ws.auth(ws_user.token, ws_user.name);
  ASSERT_EQ(ws.join(room), 0);
  LineClient tcp(kGateway, 0, "tcp");
  tcp.auth(tcp_user.token, tcp_user.name);
  ASSERT_EQ(tcp.join(room), 0);

  // Both send, interleaved; bodies with characters a browser sends as UTF-8.
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) {
    std::string body = "body ";
    body += std::to_string(i);
    body += " \xc3\xa9\xe2\x82\xac\xf0\x9f\x92\xac";
    boost::json::object send{{"type", "send"}, {"room", room}, {"id", id_of(i)}, {"body", body}, {"ref", i}};
    if (i % 2 == 0)
      ws.send_json(send);
    else
      tcp.send_json(send);
  }
  // Each reads its acks (its own sends, with their refs) and every message
  // exactly once, in seq order; the raw text of each message is the same.
  auto collect = [&](auto& client, int parity, std::vector<std::string>& lines) {
    int acks = 0;
    while (lines.size() < static_cast<std::size_t>(kMessages) || acks < kMessages / 2) {
      auto result = client.read(20s);
      ASSERT_EQ(result.kind, ReadResult::Kind::frame) << client.label() << " after " << lines.size();
      const auto& frame = result.frame;
      if (str(frame, "type") == "ack") {
        const auto ref = num(frame, "ref");
        EXPECT_EQ(ref % 2, parity) << to_text(frame);
        EXPECT_EQ(frame,
                  (boost::json::object{
                      {"type", "ack"}, {"room", room}, {"id", id_of(static_cast<int>(ref))}, {"ref", ref}}));
        ++acks;
        continue;
      }
      ASSERT_EQ(str(frame, "type"), "message") << to_text(frame);
      EXPECT_EQ(num(frame, "seq"), static_cast<std::int64_t>(lines.size()) + 1) << to_text(frame);
      lines.push_back(result.line);
    }
  };
  std::vector<std::string> ws_lines;
  std::vector<std::string> tcp_lines;
  collect(ws, 0, ws_lines);
  collect(tcp, 1, tcp_lines);
  EXPECT_EQ(ws_lines, tcp_lines);
  ws.expect_silence(200ms);
  tcp.expect_silence(200ms);

  // History over WebSocket: the same message objects.
  ws.send_json({{"type", "history"}, {"room", room}, {"after_seq", 0}, {"limit", 100}, {"ref", "h"}});
  auto history = ws.next();
  ASSERT_EQ(str(history, "type"), "history") << to_text(history);
  EXPECT_EQ(history.at("ref"), "h");
  const auto& messages = history.at("messages").as_array();
  ASSERT_EQ(messages.size(), static_cast<std::size_t>(kMessages));
  for (std::size_t i = 0; i < messages.size(); ++i)
    EXPECT_EQ(messages[i], boost::json::parse(tcp_lines[i])) << i;

  // A ping control frame is answered; a protocol ping too.
  ws.send_ping("are you there");
  ws.ping("p1");
  EXPECT_EQ(ws.pongs(), std::vector<std::string>{"are you there"});

  // The HTTP port still serves /healthz and /metrics, with the connections
  // by transport.
  HttpClient gateway_http(http_port);
  auto health = gateway_http.request("GET", "/healthz");
  ASSERT_EQ(health.status, 200) << health.describe();
  EXPECT_EQ(health.json().at("status"), "ok");
  const auto metrics = metrics_of(http_port);
  EXPECT_NE(metrics.find("rtmc_gateway_connections_open{transport=\"ws\"} 1\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("rtmc_gateway_connections_accepted_total{transport=\"ws\"} 1\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("rtmc_gateway_connections_open{transport=\"tcp\"} 1\n"), std::string::npos)
      << metrics;

  // Origins: the default list admits the api's origin under both names and
  // requests without Origin; anything else is refused before the upgrade.
  EXPECT_EQ(WsClient::try_upgrade(http_port, "http://127.0.0.1:8080").status, 101);
  EXPECT_EQ(WsClient::try_upgrade(http_port, std::nullopt).status, 101);
  for (const char* origin : {"http://127.0.0.1:9999", "https://localhost:8080", "http://evil.example"}) {
    auto refused = WsClient::try_upgrade(http_port, std::string(origin));
    SCOPED_TRACE(origin);
    expect_http_error(refused, 403, "forbidden_origin");
  }
  // /ws without an upgrade is not a page.
  expect_http_error(gateway_http.request("GET", "/ws"), 426, "upgrade_required");

  // SIGTERM: both get server_shutdown; the WebSocket closes with 1001.
  gateway->terminate();
  auto ws_end = ws.expect_closed(10s);
  ASSERT_EQ(ws_end.frames.size(), 1u);
  expect_error(ws_end.frames[0], "server_shutdown");
  EXPECT_EQ(ws_end.code, 1001);
  auto tcp_end = tcp.expect_closed(10s);
  ASSERT_EQ(tcp_end.size(), 1u);
  expect_error(tcp_end[0], "server_shutdown");
}

TEST(WebSocket, BadInputGetsTheDocumentedErrorsAndCloseCodes) {
  constexpr std::size_t kMaxLine = 1024;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(
      services, secret, kGateway,
      {"--max-line", std::to_string(kMaxLine), "--ws-origins", "http://app.example:9000, http://b.example"});
  const auto http_port = gateway_http_port(kGateway);
  HttpClient http(kApiPort);
  auto user = make_user(http, "wsbad");

  // --ws-origins replaces the default list.
  EXPECT_EQ(WsClient::try_upgrade(http_port, "http://app.example:9000").status, 101);
  EXPECT_EQ(WsClient::try_upgrade(http_port, "http://b.example").status, 101);
  EXPECT_EQ(WsClient::try_upgrade(http_port, std::nullopt).status, 101);
  expect_http_error(WsClient::try_upgrade(http_port, "http://localhost:8080"), 403, "forbidden_origin");

  {
    // A binary message: bad_frame, and the connection lives on.
    WsClient ws(http_port, {.origin = "http://b.example", .receive_buffer = 0, .label = "binary"});
    ws.auth(user.token, user.name);
    ws.send_binary(R"({"type":"ping","ref":1})");
    expect_error(ws.next(), "bad_frame");
    ws.ping("still here");
    // A text message over --max-line: frame_too_large, then close 1009.
    boost::json::object big{{"type", "ping"}, {"ref", std::string(kMaxLine, 'x')}};
    ws.send_json(big);
    auto end = ws.expect_closed(10s);
    ASSERT_EQ(end.frames.size(), 1u);
    expect_error(end.frames[0], "frame_too_large");
    EXPECT_EQ(end.code, 1009);
  }
  {
    // Invalid UTF-8: close 1007.
    WsClient ws(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "utf8"});
    ws.auth(user.token, user.name);
    ws.send_text("{\"type\":\"ping\",\"ref\":\"\xc3\x28\"}");
    auto end = ws.expect_closed(10s);
    EXPECT_TRUE(end.frames.empty());
    EXPECT_EQ(end.code, 1007);
  }
  {
    // A bad token: unauthorized, then close 1008.
    WsClient ws(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "bad-token"});
    ws.send_json({{"type", "auth"}, {"token", "not-a-token"}, {"ref", "r1"}});
    auto end = ws.expect_closed(10s);
    ASSERT_EQ(end.frames.size(), 1u);
    expect_error(end.frames[0], "unauthorized", boost::json::value("r1"));
    EXPECT_EQ(end.code, 1008);
    EXPECT_EQ(end.reason, "unauthorized");
  }
  EXPECT_TRUE(metrics_show(
      http_port, "rtmc_gateway_connections_closed_total{reason=\"frame_too_large\",transport=\"ws\"} 1"));
  EXPECT_TRUE(metrics_show(
      http_port, "rtmc_gateway_connections_closed_total{reason=\"unauthorized\",transport=\"ws\"} 1"));
  EXPECT_TRUE(metrics_show(
      http_port, "rtmc_gateway_connections_closed_total{reason=\"read_error\",transport=\"ws\"} 1"));
  EXPECT_TRUE(metrics_show(
      http_port, "rtmc_gateway_connections_closed_total{reason=\"unauthorized\",transport=\"tcp\"} 0"));
  EXPECT_TRUE(gateway->running());
}

// Pings (protocol pings, or ping control frames) keep a connection, and so
// do the answers to the server's own pings (a browser tab whose timers are
// throttled sends nothing, but its WebSocket answers pings); a client that
// neither talks nor answers is cut after 2.5 heartbeats with close 1008.
TEST(WebSocket, HeartbeatsKeepAConnectionAndSilenceIsCut) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  // A long close grace: the silent client reads the close frame only at the end.
  auto gateway =
      start_gateway(services, secret, kGateway, {"--heartbeat-s", "1", "--ws-close-grace-ms", "30000"});
  const auto http_port = gateway_http_port(kGateway);
  HttpClient http(kApiPort);
  auto user = make_user(http, "wsidle");

  WsClient pinging(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "pinging"});
  WsClient control(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "control-pings"});
  // Sends nothing after auth; its Beast stream (a read always pending)
  // answers the server's pings.
  WsClient quiet(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "quiet"});
  WsClient silent(http_port, {.origin = std::nullopt, .receive_buffer = 0, .label = "silent"});
  for (auto* client : {&pinging, &control, &quiet}) {
    client->send_json({{"type", "auth"}, {"token", user.token}});
    auto ok = client->next();
    ASSERT_EQ(str(ok, "type"), "auth_ok") << to_text(ok);
    EXPECT_EQ(num(ok, "heartbeat_s"), 1);
  }
  // The read pending when reading pauses takes auth_ok; after it none is,
  // so the server's pings go unanswered.
  silent.pause_reading();
  const auto silent_authed = std::chrono::steady_clock::now();
  silent.send_json({{"type", "auth"}, {"token", user.token}});
  auto ok = silent.next();
  ASSERT_EQ(str(ok, "type"), "auth_ok") << to_text(ok);

  // When the cut shows in the log: never before it happened.
  std::optional<std::chrono::steady_clock::time_point> cut_seen;
  for (int i = 0; i < 8; ++i) {
    pinging.ping(i);
    control.send_ping("beat");
    for (int j = 0; j < 10; ++j) {
      if (!cut_seen && gateway->count_in_log("closed: idle_timeout") > 0)
        cut_seen = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(50ms);
    }
  }
  ASSERT_TRUE(cut_seen.has_value()) << "the silent client was not cut within 4 s";
  // The idle cut comes 2.5 heartbeats after the last sign of life, not sooner.
  EXPECT_GE(*cut_seen - silent_authed, 2500ms);
  silent.resume_reading();
  auto end = silent.expect_closed(5s);
  EXPECT_TRUE(end.frames.empty());
  EXPECT_EQ(end.code, 1008);
  EXPECT_EQ(end.reason, "idle_timeout");
  pinging.ping("alive");
  control.ping("alive");
  quiet.ping("alive");
  EXPECT_GE(control.pongs().size(), 8u);
  EXPECT_EQ(gateway->count_in_log("closed: idle_timeout"), 1u);
}

// A WebSocket client that stops reading is cut as a slow consumer (close
// 1008) while a TCP member of the room receives everything.
TEST(WebSocket, AClientThatStopsReadingIsCutAsASlowConsumer) {
  constexpr std::size_t kHardBytes = 256 * 1024;
  constexpr int kBatch = 20;
  constexpr int kMaxBatches = 400;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway,
                               {"--send-queue-bytes", "65536", "--send-queue-hard-bytes",
                                std::to_string(kHardBytes), "--send-queue-soft-s", "3600",
                                // The test resumes reading after it saw the cut in the log; on a
                                // loaded machine (or under ASan) that may take more than the 2 s
                                // default, after which the socket is gone without the close frame.
                                "--ws-close-grace-ms", "30000"});
  const auto http_port = gateway_http_port(kGateway);
  HttpClient http(kApiPort);
  auto slow_user = make_user(http, "wsslow");
  auto publisher_user = make_user(http, "pub");
  const auto room = unique_name("wsflood-");

  WsClient slow(http_port, {.origin = std::nullopt, .receive_buffer = 4096, .label = "slow"});
  slow.auth(slow_user.token, slow_user.name);
  ASSERT_EQ(slow.join(room), 0);
  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  slow.pause_reading();
  auto frames = std::make_unique<Collector>(publisher);

  const std::string body(4000, 's');
  int sent = 0;
  bool cut = false;
  for (int batch = 0; batch < kMaxBatches && !cut; ++batch) {
    std::string lines;
    for (int i = 0; i < kBatch; ++i, ++sent)
      lines += boost::json::serialize(boost::json::object{
                   {"type", "send"}, {"room", room}, {"id", id_of(sent)}, {"body", body}}) +
               "\n";
    publisher.send_raw(lines);
    const auto want = static_cast<std::size_t>(sent);
    ASSERT_TRUE(frames->wait_until(
        [&](const auto& f) { return count_type(f, "message") >= want && count_type(f, "ack") >= want; }, 60s))
        << "publisher has " << count_type(frames->frames(), "message") << " of " << sent;
    cut = gateway->count_in_log("closed: slow_consumer") > 0;
  }
  ASSERT_TRUE(cut) << "no slow_consumer cut after " << sent << " messages";
  slow.resume_reading();
  auto end = slow.expect_closed(15s);
  EXPECT_EQ(end.code, 1008);
  EXPECT_EQ(end.reason, "slow_consumer");
  ASSERT_FALSE(end.frames.empty());
  expect_error(end.frames.back(), "slow_consumer");
  // What arrived before the error is a gap-free prefix of the room.
  for (std::size_t i = 0; i + 1 < end.frames.size(); ++i)
    expect_message(end.frames[i], room, static_cast<std::int64_t>(i) + 1, id_of(static_cast<int>(i)),
                   publisher_user.name, body);
  EXPECT_LT(end.frames.size(), static_cast<std::size_t>(sent));
  EXPECT_EQ(gateway->count_in_log("send queue exceeded " + std::to_string(kHardBytes) + " bytes"), 1u);
  frames->stop();
  publisher.ping("publisher still connected");
  EXPECT_TRUE(gateway->running());
}

}  // namespace
}  // namespace rtmc::e2e
