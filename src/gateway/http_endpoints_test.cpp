// The gateway's HTTP port on loopback: /healthz and /metrics with the
// connection counts. No services.
#include "gateway/http_endpoints.hpp"

#include <gtest/gtest.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <chrono>
#include <vector>

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

// Every WebSocket client passes through this port for its upgrade: a
// reconnect storm of browsers, all connected at once, is served (the old cap
// of 32 answered the rest with 503).
TEST(GatewayHttpEndpoints, SixtyFourConnectionsAtOnceAreAllServed) {
  constexpr int kClients = 64;
  HttpEndpoints endpoints(HostPort{"127.0.0.1", 0}, [] { return ConnectionCounts{}; });
  endpoints.start();
  net::io_context context;
  std::vector<net::ip::tcp::socket> sockets;
  for (int i = 0; i < kClients; ++i) {
    sockets.emplace_back(context);
    sockets.back().connect({net::ip::make_address("127.0.0.1"), endpoints.port()});
  }
  // All are open before the first request, so all count at once.
  for (auto& socket : sockets) {
    http::request<http::string_body> request{http::verb::get, "/healthz", 11};
    request.set(http::field::host, "127.0.0.1");
    http::write(socket, request);
  }
  int ok = 0;
  for (auto& socket : sockets) {
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> response;
    boost::system::error_code ec;
    http::read(socket, buffer, response, ec);
    if (!ec && response.result() == http::status::ok) ++ok;
  }
  EXPECT_EQ(ok, kClients);
}

// A connection that sends nothing leaves within a few seconds, so idle TCP
// connections cannot pile up in front of upgrades and /healthz.
TEST(GatewayHttpEndpoints, AnIdleConnectionIsClosedSoon) {
  HttpEndpoints endpoints(HostPort{"127.0.0.1", 0}, [] { return ConnectionCounts{}; });
  endpoints.start();
  net::io_context context;
  net::ip::tcp::socket socket(context);
  socket.connect({net::ip::make_address("127.0.0.1"), endpoints.port()});
  std::array<char, 64> bytes{};
  bool ended = false;
  socket.async_read_some(net::buffer(bytes), [&](boost::system::error_code ec, std::size_t) {
    ended = ec == net::error::eof || ec == net::error::connection_reset;
  });
  // The server waits 2 s for the first request; the former 10 s would fail here.
  context.run_for(std::chrono::seconds(6));
  EXPECT_TRUE(ended);
}

TEST(GatewayHttpEndpoints, ATakenPortFailsAtConstruction) {
  HttpEndpoints first(HostPort{"127.0.0.1", 0}, [] { return ConnectionCounts{}; });
  EXPECT_ANY_THROW(HttpEndpoints(HostPort{"127.0.0.1", first.port()}, [] { return ConnectionCounts{}; }));
}

}  // namespace
}  // namespace rtmc::gateway
