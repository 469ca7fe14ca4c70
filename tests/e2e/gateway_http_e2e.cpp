// The gateway's HTTP port (--http-listen): /healthz answers, and /metrics
// counts client connections and why they closed, and what the sequencer did.

#include <gtest/gtest.h>

#include <thread>

#include "auth/auth.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17001);

TEST(GatewayHttp, HealthzAndMetricsCountConnectionsByCloseReason) {
  auto services = service_env();
  auto gateway = start_gateway(services, random_secret(), kGateway, {}, /*wait_for_pipeline=*/false);
  HttpClient http(gateway_http_port(kGateway));

  auto health = http.request("GET", "/healthz");
  ASSERT_EQ(health.status, 200) << health.describe();
  EXPECT_EQ(health.json().at("status"), "ok");

  {
    LineClient client(kGateway, 0, "bad-token");
    client.send_json({{"type", "auth"}, {"token", "not-a-token"}, {"ref", "r1"}});
    auto frames = client.expect_closed(5s);
    ASSERT_EQ(frames.size(), 1u);
    expect_error(frames[0], "unauthorized", boost::json::value("r1"));
  }

  // Closes are counted once the gateway has finished them; poll briefly.
  std::string text;
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto metrics = http.request("GET", "/metrics");
    ASSERT_EQ(metrics.status, 200) << metrics.describe();
    text = metrics.body;
    if (text.find("rtmc_gateway_connections_closed_total{reason=\"unauthorized\",transport=\"tcp\"} 1\n") !=
            std::string::npos &&
        text.find("rtmc_gateway_connections_open{transport=\"tcp\"} 0\n") != std::string::npos)
      break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"unauthorized\",transport=\"tcp\"} 1\n"),
            std::string::npos)
      << text;
  // start_gateway's readiness probe (closed by the client) and the client above.
  EXPECT_NE(text.find("rtmc_gateway_connections_accepted_total{transport=\"tcp\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(
      text.find("rtmc_gateway_connections_closed_total{reason=\"client_closed\",transport=\"tcp\"} 1\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_open{transport=\"tcp\"} 0\n"), std::string::npos) << text;
  EXPECT_TRUE(gateway->running());
}

// The value of the sample `series` (name and labels) in `text`, or -1.
double sample(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(GatewayHttp, MetricsCountWhatTheSequencerDid) {
  auto services = service_env();
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway);
  HttpClient http(gateway_http_port(kGateway));

  // Every series exists from the start.
  auto first = http.request("GET", "/metrics");
  ASSERT_EQ(first.status, 200) << first.describe();
  for (const char* series : {"rtmc_gateway_sequencer_messages_total{result=\"sequenced\"}",
                             "rtmc_gateway_sequencer_messages_total{result=\"dead_lettered\"}",
                             "rtmc_gateway_sequencer_messages_total{result=\"script_failure\"}",
                             "rtmc_gateway_sequencer_messages_total{result=\"redis_refused\"}",
                             "rtmc_gateway_sequencer_messages_total{result=\"redis_failure\"}"})
    EXPECT_GE(sample(first.body, series), 0) << series << "\n" << first.body;
  EXPECT_NE(first.body.find("# TYPE rtmc_gateway_sequencer_messages_total counter"), std::string::npos)
      << first.body;
  EXPECT_GE(sample(first.body, "rtmc_gateway_sequencer_amqp_connections_total"), 1)
      << "the sequencer is consuming (start_gateway waited for it)\n"
      << first.body;

  // A session planted in Redis directly (no api needed).
  auth::TokenService tokens(secret, std::chrono::seconds(3600));
  const auto name = unique_name("seq");
  auto issued = tokens.issue(name);
  RedisClient(services.redis).command({"SET", "session:" + issued.claims.jti, name, "EX", "3600"});
  LineClient client(kGateway, 0, "sender");
  client.auth(issued.token, name);
  const auto room = unique_name("seq-");
  client.join(room);
  client.send(room, "m1", "hello");
  EXPECT_EQ(str(client.next(), "type"), "ack") << client.history();

  // Sequencing runs after the ack, on the sequencer's thread: poll.
  const std::string sequenced = "rtmc_gateway_sequencer_messages_total{result=\"sequenced\"}";
  std::string text;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto metrics = http.request("GET", "/metrics");
    ASSERT_EQ(metrics.status, 200) << metrics.describe();
    text = metrics.body;
    if (sample(text, sequenced) > 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GT(sample(text, sequenced), 0) << text;
}

}  // namespace
}  // namespace rtmc::e2e
