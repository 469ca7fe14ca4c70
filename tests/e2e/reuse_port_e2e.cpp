// Several gateway processes on one client port (--reuse-port, SO_REUSEPORT):
// the kernel spreads connections over them, each serves its share, and a
// message sent through one reaches a member connected to the other.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17010);

// rtmc_gateway_connections_accepted_total{transport="tcp"} from a gateway's /metrics.
std::uint64_t accepted_of(std::uint16_t http_port) {
  HttpClient http(http_port);
  auto metrics = http.request("GET", "/metrics");
  if (metrics.status != 200) throw std::runtime_error("/metrics: " + metrics.describe());
  // No std::regex: GCC 12 warns (falsely) inside <regex> under -O1 with the
  // sanitizers, and warnings are errors. The sample line is
  // `rtmc_gateway_connections_accepted_total{transport="tcp"} <value>`.
  const std::string_view name = "\nrtmc_gateway_connections_accepted_total{transport=\"tcp\"}";
  std::string body(1, '\n');
  body += metrics.body;
  const auto at = body.find(name);
  if (at == std::string::npos) throw std::runtime_error("no accepted count in /metrics");
  const auto space = body.find(' ', at + name.size());
  if (space == std::string::npos) throw std::runtime_error("no accepted count in /metrics");
  return std::stoull(body.substr(space + 1));
}

TEST(ReusePort, TwoGatewaysShareAPortAndBothServe) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto first = start_gateway(services, secret, kGateway, {"--reuse-port"});
  // The second one on the same port: start_gateway would find the port taken.
  const auto second_http = free_port();
  Process second("gateway-reuse-2", RTMC_GATEWAY_BIN,
                 {"--listen", "127.0.0.1:" + std::to_string(kGateway), "--http-listen",
                  "127.0.0.1:" + std::to_string(second_http), "--threads", "2", "--reuse-port"},
                 server_env(services, secret));
  ASSERT_TRUE(second.wait_for_log("fanout: consuming", 60s)) << second.log_tail();
  ASSERT_TRUE(second.wait_for_log("sequencer: consuming", 60s)) << second.log_tail();

  // Without --reuse-port a third process cannot bind the port.
  Process refused("gateway-reuse-3", RTMC_GATEWAY_BIN,
                  {"--listen", "127.0.0.1:" + std::to_string(kGateway), "--http-listen",
                   "127.0.0.1:" + std::to_string(free_port()), "--threads", "1"},
                  server_env(services, secret));
  for (int i = 0; i < 600 && refused.running(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(refused.running()) << "a gateway without --reuse-port bound a shared port";
  EXPECT_GE(refused.count_in_log("already in use"), 1u) << refused.log_tail();

  HttpClient http(kApiPort);
  const auto room = unique_name("shared-port-");
  // The kernel picks a listener by a hash of the connection's addresses:
  // with 32 clients, one gateway getting none has odds of 2^-31.
  constexpr int kClients = 32;
  // start_gateway's readiness probe was a connection too.
  const auto first_before = accepted_of(gateway_http_port(kGateway));
  const auto second_before = accepted_of(second_http);
  std::vector<std::unique_ptr<LineClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto user = make_user(http, "rp");
    clients.push_back(std::make_unique<LineClient>(kGateway, 0, user.name));
    clients.back()->auth(user.token, user.name);
    ASSERT_EQ(clients.back()->join(room), 0);
  }
  const auto on_first = accepted_of(gateway_http_port(kGateway)) - first_before;
  const auto on_second = accepted_of(second_http) - second_before;
  EXPECT_EQ(on_first + on_second, static_cast<std::uint64_t>(kClients));
  EXPECT_GT(on_first, 0u);
  EXPECT_GT(on_second, 0u);

  // Every member, on whichever gateway, gets a message sent through either.
  clients.front()->send(room, "m1", "hello across gateways");
  for (auto& client : clients) {
    for (;;) {
      auto frame = client->next(30s);
      if (str(frame, "type") == "ack") continue;
      expect_message(frame, room, 1, "m1", clients.front()->user(), "hello across gateways");
      break;
    }
  }
  EXPECT_TRUE(first->running());
  EXPECT_TRUE(second.running());
}

}  // namespace
}  // namespace rtmc::e2e
