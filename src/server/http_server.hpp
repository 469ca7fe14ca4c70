#pragma once
// An HTTP/1.1 server for any role: io threads, a capped listener and one
// HttpConnection per socket, serving a Router. The api serves its endpoints
// with it; the gateway (and the syncer to come) serve /healthz and /metrics.
//
//   HttpServer server(config, router, metrics);  // binds at once
//   server.start();                              // io threads run
//   server.stop(); server.wait();                // graceful
//
// Over the connection cap a new connection is answered 503
// {"error":"server_full"} with "Connection: close" at once and closed.
//
// Threading: construct, start() and wait() from the owning thread; stop() is
// idempotent and callable from any thread (a signal watcher included).
// `router` and `metrics` must outlive the server; handlers run on the io
// threads, concurrently.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "server/http_connection.hpp"
#include "server/http_metrics.hpp"
#include "server/router.hpp"

namespace boost::asio {
class io_context;
}

namespace rtmc::server {

struct HttpServerConfig {
  HostPort listen{"127.0.0.1", 0};
  std::size_t threads = 1;  // 0 = hardware threads
  // Connections open at once; 0 = what the open-file limit allows less a
  // reserve (limits.hpp).
  std::size_t max_connections = 0;
  HttpLimits limits;
  // How long stop() lets requests in flight finish before cutting them.
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(10)};
  // For log lines ("rtmc-api listening on ...").
  std::string name = "http";
  // Paths taken over from HTTP (WebSocket upgrades); see UpgradeRoute.
  std::vector<UpgradeRoute> upgrades;
};

class HttpServer {
 public:
  // Binds the listening socket (throws boost::system::system_error when it
  // cannot); serves nothing before start().
  HttpServer(HttpServerConfig config, const Router& router, HttpMetrics& metrics);
  ~HttpServer();  // stop() and wait()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (useful with port 0).
  std::uint16_t port() const;
  // The cap in force (config.max_connections, or the derived default).
  std::size_t max_connections() const;

  // Starts the io threads and returns.
  void start();
  // Graceful and idempotent: stops accepting, closes idle connections, lets
  // requests in flight answer (up to shutdown_grace), then the io threads end.
  void stop();
  // Blocks until the io threads ended (after stop()).
  void wait();

  // The io_context of io thread i; a role may run its own work there
  // (coroutines posting back into it must end before the server is destroyed).
  boost::asio::io_context& context(std::size_t i);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rtmc::server
