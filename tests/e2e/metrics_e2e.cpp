// /metrics of a real api, gateway and syncer after real traffic: the series
// move as the traffic says (frames in and out by type, deliveries,
// rate-limit refusals, publish->confirm and end-to-end latency, sequencer
// batch sizes, login results, status cache misses then hits, store links,
// syncer backlog and lag); every metric name the Grafana dashboard
// (docs/grafana-dashboard.json) and the alerting docs (docs/operations.md)
// use is one the servers expose; and processes started with
// --log-format json write nothing but JSON lines.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17001);
const std::uint16_t kSyncerHttp = e2e_port(17090);

// The value of the sample `series` (name and labels exactly as rendered) in
// `text`; fails the test when it is missing.
double sample(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) {
    ADD_FAILURE() << "no sample " << series << " in:\n" << text;
    return -1;
  }
  return std::stod(text.substr(at + series.size() + 2));
}

std::string scrape(std::uint16_t port) {
  auto response = HttpClient(port).request("GET", "/metrics");
  if (response.status != 200) throw std::runtime_error("GET /metrics: " + response.describe());
  return "\n" + response.body;
}

// Scrapes until `done` holds (counters settle a moment after the replies the
// client saw: confirms, closes), at most 10 s; returns the last scrape.
std::string scrape_until(std::uint16_t port, const std::function<bool(const std::string&)>& done) {
  std::string text;
  for (int attempt = 0; attempt < 100; ++attempt) {
    text = scrape(port);
    if (done(text)) break;
    std::this_thread::sleep_for(100ms);
  }
  return text;
}

double value_or(const std::string& text, const std::string& series, double otherwise) {
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? otherwise : std::stod(text.substr(at + series.size() + 2));
}

// Family names from the "# TYPE name kind" lines; histograms also under the
// names of their series (_bucket, _count, _sum), as expressions use them.
std::set<std::string> exposed_names(const std::string& text) {
  std::set<std::string> names;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    std::string name;
    std::string kind;
    words >> name >> kind;
    names.insert(name);
    if (kind == "histogram")
      for (const char* suffix : {"_bucket", "_count", "_sum"}) names.insert(name + suffix);
  }
  return names;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every PromQL expression of the dashboard: each panel's targets[].expr,
// and the templating queries.
void collect_exprs(const boost::json::value& value, std::vector<std::string>& exprs) {
  if (value.is_object()) {
    for (const auto& [key, member] : value.as_object()) {
      if ((key == "expr" || key == "query") && member.is_string())
        exprs.emplace_back(member.as_string());
      else if (key == "query" && member.is_object() && member.as_object().contains("query") &&
               member.as_object().at("query").is_string())
        exprs.emplace_back(member.as_object().at("query").as_string());
      else
        collect_exprs(member, exprs);
    }
  } else if (value.is_array()) {
    for (const auto& item : value.as_array()) collect_exprs(item, exprs);
  }
}

// Hand-written rather than std::regex: GCC 12 warns falsely inside <regex>
// in the sanitizer build (-Werror).
bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// Every rtmc_... metric name in `text`: "rtmc_" at a word start, then
// [a-z0-9_], without trailing underscores.
std::set<std::string> rtmc_names_in(const std::string& text) {
  std::set<std::string> names;
  const std::string prefix = "rtmc_";
  for (auto at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + 1)) {
    if (at > 0 && is_word_char(text[at - 1])) continue;
    auto end = at + prefix.size();
    while (end < text.size() &&
           (std::islower(static_cast<unsigned char>(text[end])) != 0 ||
            std::isdigit(static_cast<unsigned char>(text[end])) != 0 || text[end] == '_'))
      ++end;
    while (end > at + prefix.size() && text[end - 1] == '_') --end;
    if (end > at + prefix.size()) names.insert(text.substr(at, end - at));
  }
  return names;
}

// 2026-12-02T03:04:05.678Z: digits where the pattern has 9, the rest literal.
bool is_rfc3339_ms_utc(std::string_view ts) {
  constexpr std::string_view kPattern = "9999-99-99T99:99:99.999Z";
  if (ts.size() != kPattern.size()) return false;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const bool ok =
        kPattern[i] == '9' ? std::isdigit(static_cast<unsigned char>(ts[i])) != 0 : ts[i] == kPattern[i];
    if (!ok) return false;
  }
  return true;
}

// Every line of a --log-format json process's output is one JSON object
// with exactly ts, level, logger, msg.
void expect_only_json_lines(const Process& process, const std::string& logger) {
  const auto log = process.log();
  ASSERT_FALSE(log.empty()) << process.name() << " wrote nothing";
  std::istringstream lines(log);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    boost::system::error_code ec;
    auto parsed = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << process.name() << " line " << count << " is not JSON: " << line;
    ASSERT_TRUE(parsed.is_object()) << line;
    const auto& object = parsed.as_object();
    EXPECT_EQ(object.size(), 4u) << line;
    ASSERT_TRUE(object.contains("ts") && object.at("ts").is_string()) << line;
    const auto& ts = object.at("ts").as_string();
    EXPECT_TRUE(is_rfc3339_ms_utc(std::string_view(ts.data(), ts.size()))) << line;
    ASSERT_TRUE(object.contains("level") && object.at("level").is_string()) << line;
    EXPECT_EQ(object.at("logger").as_string(), logger) << line;
    ASSERT_TRUE(object.contains("msg") && object.at("msg").is_string()) << line;
  }
  EXPECT_GT(count, 1) << process.name();
}

TEST(MetricsE2e, EveryRoleCountsRealTrafficAndTheDashboardUsesOnlyExposedNames) {
  const auto services = service_env();
  const auto secret = random_secret();
  const std::vector<std::string> json_logs{"--log-format", "json"};
  auto api = start_api(services, secret, kApiPort, json_logs);
  // Five sends per user at once, then refused: the rate-limit refusals.
  auto gateway = start_gateway(services, secret, kGateway,
                               {"--log-format", "json", "--publish-rate", "0.001", "--publish-burst", "5"});
  auto syncer_env = server_env(services, secret);
  syncer_env["RTMC_LOG_FORMAT"] = "json";  // the environment variable, this time
  Process syncer("syncer", RTMC_SYNCER_BIN, {"--http-listen", "127.0.0.1:" + std::to_string(kSyncerHttp)},
                 syncer_env);
  ASSERT_TRUE(wait_for_port(kSyncerHttp, 30s)) << syncer.log_tail();
  const auto gateway_http = gateway_http_port(kGateway);

  HttpClient http(kApiPort);
  const auto alice = make_user(http, "met");
  const auto bob = make_user(http, "met");
  const auto room = unique_name("e2e-metrics-");

  const auto api_before = scrape(kApiPort);
  const auto gw_before = scrape(gateway_http);

  LineClient a(kGateway, 0, "alice");
  a.auth(alice.token, alice.name);
  a.join(room);
  LineClient b(kGateway, 0, "bob");
  b.auth(bob.token, bob.name);
  b.join(room);

  // 5 sends accepted, 2 refused by the rate limit.
  constexpr int kAccepted = 5;
  constexpr int kRefused = 2;
  for (int i = 0; i < kAccepted + kRefused; ++i)
    a.send(room, "m" + std::to_string(i), "hello \"" + std::to_string(i));
  int acks = 0;
  int limited = 0;
  int messages_a = 0;
  while (acks + limited < kAccepted + kRefused || messages_a < kAccepted) {
    auto frame = a.next();
    const auto type = str(frame, "type");
    if (type == "ack") ++acks;
    if (type == "message") ++messages_a;
    if (type == "error") {
      EXPECT_EQ(str(frame, "code"), "rate_limited") << to_text(frame);
      ++limited;
    }
  }
  EXPECT_EQ(acks, kAccepted);
  EXPECT_EQ(limited, kRefused);
  // 3 more through the api (not limited there).
  constexpr int kViaApi = 3;
  for (int i = 0; i < kViaApi; ++i) http.publish(alice.token, room, "via api " + std::to_string(i));
  for (int got = 0; got < kAccepted + kViaApi;) {
    if (str(b.next(), "type") == "message") ++got;
  }
  for (int got = messages_a; got < kAccepted + kViaApi;) {
    if (str(a.next(), "type") == "message") ++got;
  }
  a.ping(boost::json::value("p1"));

  // ---- gateway
  const double sent = kAccepted + kViaApi;
  const auto gw = scrape_until(gateway_http, [&](const std::string& text) {
    return value_or(text, R"(rtmc_gateway_deliveries_total{kind="message"})", 0) -
                   value_or(gw_before, R"(rtmc_gateway_deliveries_total{kind="message"})", 0) >=
               2 * sent &&
           value_or(text, "rtmc_gateway_message_latency_seconds_count", 0) -
                   value_or(gw_before, "rtmc_gateway_message_latency_seconds_count", 0) >=
               sent;
  });
  auto gw_delta = [&](const std::string& series) { return sample(gw, series) - sample(gw_before, series); };
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_in_total{type="send"})"), kAccepted + kRefused);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_in_total{type="auth"})"), 2);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_in_total{type="join"})"), 2);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_in_total{type="ping"})"), 1);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_out_total{type="ack"})"), kAccepted);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_out_total{type="auth_ok"})"), 2);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_out_total{type="joined"})"), 2);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_out_total{type="pong"})"), 1);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_frames_out_total{type="error"})"), kRefused);
  EXPECT_EQ(gw_delta("rtmc_gateway_rate_limited_total"), kRefused);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_errors_sent_total{code="rate_limited"})"), kRefused);
  // Both members got every message: one delivery each (a frame the fan-out
  // also read back from the room log while binding the room may be handed
  // out twice; the connection drops the repeat).
  EXPECT_GE(gw_delta(R"(rtmc_gateway_deliveries_total{kind="message"})"), 2 * sent);
  EXPECT_LE(gw_delta(R"(rtmc_gateway_deliveries_total{kind="message"})"), 4 * sent);
  EXPECT_EQ(gw_delta("rtmc_gateway_publish_confirm_seconds_count"), kAccepted);
  EXPECT_GT(gw_delta("rtmc_gateway_publish_confirm_seconds_sum"), 0);
  // The only gateway, so it sequenced everything, each with an accept time.
  EXPECT_EQ(gw_delta("rtmc_gateway_message_latency_seconds_count"), sent);
  EXPECT_EQ(gw_delta(R"(rtmc_gateway_message_latency_seconds_bucket{le="+Inf"})"), sent);
  EXPECT_GE(gw_delta("rtmc_gateway_sequencer_batch_size_sum"), sent);
  EXPECT_GE(gw_delta("rtmc_gateway_sequencer_batch_size_count"), 1);
  // A room's first message runs twice (once more after its seq block).
  EXPECT_LE(gw_delta("rtmc_gateway_sequencer_batch_size_count"), 2 * sent);
  EXPECT_GE(sample(gw, R"(rtmc_gateway_store_connects_total{store="redis"})"), 1);
  EXPECT_GE(sample(gw, R"(rtmc_gateway_store_connects_total{store="rabbitmq"})"), 1);
  EXPECT_GE(sample(gw, R"(rtmc_gateway_store_connects_total{store="postgres"})"), 1);
  EXPECT_EQ(sample(gw, R"(rtmc_gateway_store_errors_total{store="redis"})"), 0);

  // ---- api: a wrong password, two status reads (a miss, then a hit).
  auto wrong = http.post_json("/login", R"({"user":")" + alice.name + R"(","password":"not-the-password"})");
  EXPECT_EQ(wrong.status, 401) << wrong.describe();
  const auto carol = make_user(http, "met");  // never connected: not cached yet
  const std::vector<std::string> auth{"Authorization: Bearer " + alice.token};
  for (int i = 0; i < 2; ++i) {
    auto status = http.request("GET", "/users/" + carol.name + "/status", {}, auth);
    EXPECT_EQ(status.status, 200) << status.describe();
  }
  const auto api_after = scrape(kApiPort);
  auto api_delta = [&](const std::string& series) {
    return sample(api_after, series) - sample(api_before, series);
  };
  EXPECT_EQ(api_delta(R"(rtmc_api_logins_total{result="refused"})"), 1);
  EXPECT_EQ(api_delta(R"(rtmc_api_logins_total{result="ok"})"), 1);  // carol's make_user
  EXPECT_EQ(api_delta("rtmc_status_cache_misses_total"), 1);
  EXPECT_EQ(api_delta("rtmc_status_cache_hits_total"), 1);
  EXPECT_EQ(api_delta("rtmc_api_publish_confirm_seconds_count"), kViaApi);
  EXPECT_EQ(api_delta(R"(rtmc_api_publish_total{result="confirmed"})"), kViaApi);
  EXPECT_EQ(api_delta(R"(rtmc_api_rate_limited_total{limit="publish"})"), 0);
  EXPECT_GE(sample(api_after, R"(rtmc_api_store_connects_total{store="postgres"})"), 1);
  EXPECT_GE(sample(api_after, R"(rtmc_api_store_connects_total{store="redis"})"), 1);
  EXPECT_GE(sample(api_after, R"(rtmc_api_store_connects_total{store="rabbitmq"})"), 1);

  // ---- syncer: every shard's backlog and lag, back to 0 once synced (the
  // test stack's syncer shares the work, so only the end state is certain).
  const auto sy = scrape_until(kSyncerHttp, [](const std::string& text) {
    for (int shard = 0; shard < 16; ++shard) {
      const auto label = "{shard=\"" + std::to_string(shard) + "\"}";
      if (value_or(text, "rtmc_syncer_lag_seconds" + label, -1) != 0) return false;
      if (value_or(text, "rtmc_syncer_backlog" + label, -1) != 0) return false;
    }
    return true;
  });
  for (int shard = 0; shard < 16; ++shard) {
    const auto label = "{shard=\"" + std::to_string(shard) + "\"}";
    EXPECT_EQ(sample(sy, "rtmc_syncer_lag_seconds" + label), 0) << shard;
    EXPECT_EQ(sample(sy, "rtmc_syncer_backlog" + label), 0) << shard;
  }
  EXPECT_GE(sample(sy, R"(rtmc_syncer_store_connects_total{store="redis"})"), 1);
  EXPECT_GE(sample(sy, R"(rtmc_syncer_store_connects_total{store="postgres"})"), 1);

  // ---- the dashboard and the docs name only what is exposed
  std::set<std::string> exposed;
  // Fresh scrapes: a family whose series appear on first use (HTTP statuses)
  // has them by now.
  for (const auto port : {kApiPort, gateway_http, kSyncerHttp}) exposed.merge(exposed_names(scrape(port)));
  const auto dashboard = boost::json::parse(read_file(RTMC_SOURCE_DIR "/docs/grafana-dashboard.json"));
  std::vector<std::string> exprs;
  collect_exprs(dashboard, exprs);
  ASSERT_GE(exprs.size(), 15u) << "the dashboard's panels have no expressions?";
  std::set<std::string> used;
  for (const auto& expr : exprs) used.merge(rtmc_names_in(expr));
  for (const auto& name : used) EXPECT_TRUE(exposed.contains(name)) << "dashboard uses " << name;
  for (const char* needed :
       {"rtmc_gateway_frames_in_total", "rtmc_gateway_deliveries_total",
        "rtmc_gateway_publish_confirm_seconds_bucket", "rtmc_gateway_message_latency_seconds_bucket",
        "rtmc_gateway_sequencer_batch_size_bucket", "rtmc_syncer_lag_seconds", "rtmc_syncer_backlog",
        "rtmc_status_cache_hits_total", "rtmc_gateway_connections_closed_total",
        "rtmc_gateway_rate_limited_total"})
    EXPECT_TRUE(used.contains(needed)) << "the dashboard has no panel on " << needed;
  const auto operations = read_file(RTMC_SOURCE_DIR "/docs/operations.md");
  const auto start = operations.find("## Metrics and alerting");
  ASSERT_NE(start, std::string::npos) << "docs/operations.md has no Metrics and alerting section";
  const auto section = operations.substr(start, operations.find("\n## ", start) - start);
  for (const auto& name : rtmc_names_in(section)) {
    // Histogram series are documented by their family name.
    EXPECT_TRUE(exposed.contains(name)) << "docs/operations.md names " << name;
  }
  for (const auto& name : exposed) {
    if (name.ends_with("_bucket") || name.ends_with("_count") || name.ends_with("_sum")) continue;
    EXPECT_NE(section.find(name), std::string::npos) << name << " is not documented in docs/operations.md";
  }

  // ---- JSON logs, the servers still running (their start-up lines and the
  // traffic's), then after a clean stop.
  a.close();
  b.close();
  EXPECT_EQ(syncer.terminate(), 0);
  EXPECT_EQ(gateway->terminate(), 0);
  EXPECT_EQ(api->terminate(), 0);
  expect_only_json_lines(syncer, "syncer");
  expect_only_json_lines(*gateway, "gateway");
  expect_only_json_lines(*api, "api");
}

}  // namespace
}  // namespace rtmc::e2e
