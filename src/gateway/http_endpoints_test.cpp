// The gateway's HTTP port on loopback: /healthz and /metrics with the
// connection counts. No services.
#include "gateway/http_endpoints.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>

#include "gateway/close_reason.hpp"

namespace rtmc::gateway {
namespace {

namespace http = boost::beast::http;
namespace net = boost::asio;

http::response<http::string_body> get(std::uint16_t port, const std::string& target) {
  net::io_context context;
  net::ip::tcp::socket socket(context);
  socket.connect({net::ip::make_address("127.0.0.1"), port});
  http::request<http::string_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "127.0.0.1");
  http::write(socket, request);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  return response;
}

TEST(GatewayHttpEndpoints, HealthzAnswersOk) {
  HttpEndpoints endpoints(HostPort{"127.0.0.1", 0}, [] { return ConnectionCounts{}; });
  endpoints.start();
  auto response = get(endpoints.port(), "/healthz");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(boost::json::parse(response.body()).as_object().at("status"), "ok");
}

TEST(GatewayHttpEndpoints, MetricsShowConnectionsByTransportAndCloseReason) {
  GatewayCounters counters;
  constexpr int tcp = static_cast<int>(TransportKind::tcp);
  constexpr int ws = static_cast<int>(TransportKind::ws);
  counters.accepted[tcp] = 7;
  counters.closed[tcp][static_cast<int>(CloseReason::slow_consumer)] = 2;
  counters.closed[tcp][static_cast<int>(CloseReason::client_closed)] = 3;
  counters.accepted[ws] = 4;
  counters.closed[ws][static_cast<int>(CloseReason::unauthorized)] = 1;
  HttpEndpoints endpoints(HostPort{"127.0.0.1", 0}, counts_of(counters));
  endpoints.start();
  auto response = get(endpoints.port(), "/metrics");
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type].substr(0, 10), "text/plain");
  const auto& text = response.body();
  EXPECT_NE(text.find("rtmc_gateway_connections_accepted_total{transport=\"tcp\"} 7\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_open{transport=\"tcp\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(
      text.find("rtmc_gateway_connections_closed_total{reason=\"slow_consumer\",transport=\"tcp\"} 2\n"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find("rtmc_gateway_connections_closed_total{reason=\"client_closed\",transport=\"tcp\"} 3\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_accepted_total{transport=\"ws\"} 4\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_open{transport=\"ws\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"unauthorized\",transport=\"ws\"} 1\n"),
            std::string::npos)
      << text;
  // Every reason of every transport is listed, zeros included.
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"lost_sync\",transport=\"tcp\"} 0\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_connections_closed_total{reason=\"slow_consumer\",transport=\"ws\"} 0\n"),
            std::string::npos)
      << text;

  // Read at every scrape.
  counters.accepted[tcp] = 8;
  EXPECT_NE(
      get(endpoints.port(), "/metrics").body().find("rtmc_gateway_connections_open{transport=\"tcp\"} 3\n"),
      std::string::npos);
  // The HTTP port counts itself too.
  EXPECT_NE(
      get(endpoints.port(), "/metrics").body().find("rtmc_gateway_http_responses_total{status=\"200\"}"),
      std::string::npos);
}

TEST(GatewayHttpEndpoints, ATakenPortFailsAtConstruction) {
  HttpEndpoints first(HostPort{"127.0.0.1", 0}, [] { return ConnectionCounts{}; });
  EXPECT_ANY_THROW(HttpEndpoints(HostPort{"127.0.0.1", first.port()}, [] { return ConnectionCounts{}; }));
}

}  // namespace
}  // namespace rtmc::gateway
