// HttpServer on loopback with a small Router: the connection cap, the
// first-request and keep-alive timeouts, and the HTTP metrics. No services.
#include "server/http_server.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <cerrno>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

namespace rtmc::server {
namespace {

namespace http = boost::beast::http;
namespace net = boost::asio;
using net::ip::tcp;
using namespace std::chrono_literals;
using HttpResponse = http::response<http::string_body>;

// A blocking HTTP/1.1 client over one keep-alive connection; a receive
// timeout makes a server that never answers fail the test instead of hanging.
class Client {
 public:
  explicit Client(std::uint16_t port) : socket_(context_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    timeval timeout{10, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  HttpResponse get(const std::string& target) {
    http::request<http::string_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    return send(request);
  }
  HttpResponse send(http::request<http::string_body>& request) {
    http::write(socket_, request);
    return receive();
  }
  // Raw bytes, up to `size` (a protocol after an upgrade).
  std::string read_raw(std::size_t size) {
    std::string bytes(size, '\0');
    auto n = ::recv(socket_.native_handle(), bytes.data(), bytes.size(), 0);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return bytes;
  }
  HttpResponse receive() {
    HttpResponse response;
    http::read(socket_, buffer_, response);
    return response;
  }
  // True when the server closed the connection (EOF or reset), false when
  // the receive timeout passed with the connection still open.
  // (A plain recv: asio's blocking read would poll past SO_RCVTIMEO.)
  bool closed_by_server() {
    char byte;
    auto n = ::recv(socket_.native_handle(), &byte, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
  void close() { socket_.close(); }
  tcp::socket& socket() { return socket_; }

 private:
  net::io_context context_;
  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() {
    router.add(http::verb::get, "/healthz", [](const Request&) -> net::awaitable<Response> {
      co_return json_response(http::status::ok, R"({"status":"ok"})");
    });
  }
  // config.listen stays at its default, 127.0.0.1:0.
  void start(const HttpServerConfig& config) {
    server = std::make_unique<HttpServer>(config, router, metrics);
    server->start();
  }
  std::uint16_t port() const { return server->port(); }

  metrics::Registry registry;
  HttpMetrics metrics{registry, "rtmc_test"};
  Router router;
  std::unique_ptr<HttpServer> server;
};

TEST_F(HttpServerTest, OverTheCapANewConnectionGets503ServerFullAndIsClosed) {
  HttpServerConfig config;
  config.threads = 2;
  config.max_connections = 2;
  start(config);
  EXPECT_EQ(server->max_connections(), 2u);
  Client first(port());
  Client second(port());
  ASSERT_EQ(first.get("/healthz").result(), http::status::ok);
  ASSERT_EQ(second.get("/healthz").result(), http::status::ok);

  // Answered at once, before it sends anything.
  Client third(port());
  auto refused = third.receive();
  EXPECT_EQ(refused.result(), http::status::service_unavailable);
  EXPECT_FALSE(refused.keep_alive());
  EXPECT_EQ(refused[http::field::content_type], "application/json");
  auto body = boost::json::parse(refused.body()).as_object();
  EXPECT_EQ(body.at("error"), "server_full");
  EXPECT_TRUE(third.closed_by_server());
  EXPECT_EQ(metrics.connections_refused(), 1u);
  EXPECT_EQ(metrics.responses(503), 1u);
  EXPECT_NE(registry.render().find("rtmc_test_connections_refused_total 1\n"), std::string::npos);

  // The connections within the cap are unaffected, and a closed one makes room.
  EXPECT_EQ(first.get("/healthz").result(), http::status::ok);
  second.close();
  bool served = false;
  for (int attempt = 0; attempt < 200 && !served; ++attempt) {
    Client next(port());
    served = next.get("/healthz").result() == http::status::ok;
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
}

TEST_F(HttpServerTest, ASilentNewConnectionIsClosedAfterTheFirstRequestTimeout) {
  HttpServerConfig config;
  config.limits.first_request_timeout = 300ms;
  config.limits.keepalive_timeout = 30s;
  start(config);
  Client silent(port());
  const auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.closed_by_server());  // false after the client's 10 s receive timeout
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 5s);  // the keep-alive timeout (30 s) must not apply
  // The client sees the close before the server's connection object is
  // gone and uncounted; that follows on the io thread a moment later.
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (metrics.connections_open() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(metrics.connections_open(), 0u);
}

TEST_F(HttpServerTest, AKeptAliveConnectionWaitsForTheKeepaliveTimeoutNotTheFirstRequestOne) {
  HttpServerConfig config;
  config.limits.first_request_timeout = 200ms;
  config.limits.keepalive_timeout = 30s;
  start(config);
  Client client(port());
  ASSERT_EQ(client.get("/healthz").result(), http::status::ok);
  std::this_thread::sleep_for(600ms);  // three first-request timeouts
  EXPECT_EQ(client.get("/healthz").result(), http::status::ok);
}

TEST_F(HttpServerTest, AnIdleKeptAliveConnectionIsClosedAfterTheKeepaliveTimeout) {
  HttpServerConfig config;
  config.limits.first_request_timeout = 30s;
  config.limits.keepalive_timeout = 300ms;
  start(config);
  Client client(port());
  ASSERT_EQ(client.get("/healthz").result(), http::status::ok);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.closed_by_server());
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 5s);  // the first-request timeout (30 s) must not apply
}

TEST_F(HttpServerTest, CountsResponsesAndConnections) {
  HttpServerConfig config;
  start(config);
  Client client(port());
  ASSERT_EQ(client.get("/healthz").result(), http::status::ok);
  ASSERT_EQ(client.get("/nope").result(), http::status::not_found);
  EXPECT_EQ(metrics.responses(200), 1u);
  EXPECT_EQ(metrics.responses(404), 1u);
  EXPECT_EQ(metrics.connections_open(), 1u);
  const auto text = registry.render();
  EXPECT_NE(text.find("rtmc_test_responses_total{status=\"404\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_connections_total 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_connections_open 1\n"), std::string::npos) << text;
}

TEST_F(HttpServerTest, StopClosesIdleConnectionsAndEnds) {
  HttpServerConfig config;
  start(config);
  Client client(port());
  ASSERT_EQ(client.get("/healthz").result(), http::status::ok);
  server->stop();
  server->wait();
  EXPECT_TRUE(client.closed_by_server());
}

// An UpgradeRoute sees every request to its path: it answers (the
// connection stays HTTP) or takes the socket (the HTTP connection ends and
// leaves the socket open to its new owner).
TEST_F(HttpServerTest, AnUpgradeRouteAnswersOrTakesTheSocket) {
  HttpServerConfig config;
  auto taken = std::make_shared<std::promise<tcp::socket>>();
  config.upgrades.push_back(
      {"/up",
       [taken](Request& request, tcp::socket& socket, boost::beast::flat_buffer&) -> std::optional<Response> {
         if (request["X-Take"] != "yes") return json_response(http::status::forbidden, R"({"error":"no"})");
         boost::system::error_code ignored;
         net::write(socket, net::buffer(std::string_view("taken\n")), ignored);
         taken->set_value(std::move(socket));
         return std::nullopt;
       }});
  start(config);
  Client client(port());
  http::request<http::string_body> request{http::verb::get, "/up?x=1", 11};
  request.set(http::field::host, "127.0.0.1");
  EXPECT_EQ(client.send(request).result(), http::status::forbidden);
  // Still HTTP after a refusal; the Router serves the other paths.
  EXPECT_EQ(client.get("/healthz").result(), http::status::ok);

  request.set("X-Take", "yes");
  http::write(client.socket(), request);
  EXPECT_EQ(client.read_raw(64), "taken\n");
  auto future = taken->get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  auto socket = future.get();
  EXPECT_TRUE(socket.is_open());
  for (int i = 0; i < 100 && metrics.connections_open() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metrics.connections_open(), 0u);
  // The socket lives on with its new owner.
  boost::system::error_code ec;
  net::write(socket, net::buffer(std::string_view("still here")), ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(client.read_raw(64), "still here");
}

}  // namespace
}  // namespace rtmc::server
