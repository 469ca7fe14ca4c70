// The gateway's HTTP port (--http-listen): /healthz answers, and /metrics
// counts client connections and why they closed.

#include <gtest/gtest.h>

#include <thread>

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
    if (text.find("rtmc_gateway_connections_closed_total{reason=\"unauthorized\"} 1\n") !=
            std::string::npos &&
        text.find("rtmc_gateway_connections_open 0\n") != std::string::npos)
      break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"unauthorized\"} 1\n"),
            std::string::npos)
      << text;
  // start_gateway's readiness probe (closed by the client) and the client above.
  EXPECT_NE(text.find("rtmc_gateway_connections_accepted_total 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"client_closed\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_open 0\n"), std::string::npos) << text;
  EXPECT_TRUE(gateway->running());
}

}  // namespace
}  // namespace rtmc::e2e
