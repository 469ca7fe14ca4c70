#pragma once
// rtmc-api as an embeddable object: main() and the integration test both
// build an ApiConfig, construct an ApiServer, start(), and stop().
//
// Options (rtmc-api --help; flags win over environment variables):
//
// clang-format off
// | flag                      | env                              | default          | meaning                                    |
// |---------------------------|----------------------------------|------------------|--------------------------------------------|
// | --listen                  | RTMC_API_LISTEN                  | 127.0.0.1:8080   | address to serve HTTP on                   |
// | --threads                 | RTMC_API_THREADS                 | hardware threads | io threads (one io_context each)           |
// | --max-connections         | RTMC_API_MAX_CONNECTIONS         | 0 = open files-64| connections at once; over it 503 server_full|
// | --first-request-timeout-s | RTMC_API_FIRST_REQUEST_TIMEOUT_S | 10               | a new connection's first request header    |
// | --keepalive-timeout-s     | RTMC_API_KEEPALIVE_TIMEOUT_S     | 60               | idle keep-alive connection, next request   |
// | --token-ttl-s             | RTMC_TOKEN_TTL_S                 | 86400            | token and session lifetime                 |
// | --migrate-only            |                                  |                  | apply DB migrations and exit               |
// | --ws-url (repeatable)     | RTMC_API_WS_URL (comma-separated)| ws://127.0.0.1:7080/ws | the page's WebSockets (/config.json) |
// | --list-routes             |                                  |                  | print "METHOD /path" per route and exit    |
// | --pg-timeout-ms, --backend-queue-limit, rate limits, --trusted-proxy, hash workers: main.cpp --help, README |
// | --redis --amqp --pg --ingest-shards --max-body --jwt-secret[-file] --status-cache-ttl-s --log-level:    |
// | common/config.hpp                                                                                          |
// clang-format on

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "api/api_service.hpp"
#include "common/config.hpp"
#include "server/http_connection.hpp"

namespace rtmc::api {

struct ApiConfig {
  // Redis, PostgreSQL, RabbitMQ, limits and auth (auth.jwt_secret must be set).
  CommonOptions common;
  HostPort listen{"127.0.0.1", 8080};
  // The gateways' WebSocket URLs the web page may use (GET /config.json).
  std::vector<std::string> ws_urls{"ws://127.0.0.1:7080/ws"};
  unsigned threads = 0;  // 0 = std::thread::hardware_concurrency()
  // Connections open at once; 0 = what the open-file limit allows, less
  // server::kOwnFilesReserve. Over it: 503 {"error":"server_full"}, closed.
  std::size_t max_connections = 0;
  // body_bytes is raised when needed so a publish of --max-body bytes, JSON
  // escaped, always fits.
  server::HttpLimits http;
  // A publish not confirmed within this time is answered 503.
  std::chrono::milliseconds publish_give_up{5000};
  // AMQP messages (batches) awaiting their confirm at once; small so that
  // under load publishes go out batched (see gateway ingest_window).
  std::size_t publish_window = 64;
  // Publishes accepted and not yet confirmed; beyond it a publish is
  // answered 503 overloaded with Retry-After at once (0 = no bound).
  std::size_t publish_backlog = 10000;
  // Publishes to one ingest queue sent as one AMQP message at most (1 = no
  // batching; amqp::Publisher::Options::batch_messages).
  std::size_t publish_batch = 256;
  // Argon2id threads for logins and, apart, for registrations, so a flood
  // of one cannot starve the other.
  std::size_t login_password_workers = 2;
  std::size_t register_password_workers = 1;
  // Password hashes waiting or running at once, per pool; more -> 503.
  std::size_t password_queue_limit = 64;
  std::size_t redis_connections = 4;
  std::size_t pg_connections = 4;
  // Deadline of every PostgreSQL statement (connecting and queueing
  // included) and its statement_timeout; Redis calls get redis.timeout.
  // Past it: 503 unavailable.
  std::chrono::milliseconds pg_timeout{3000};
  // Calls waiting per Redis or PostgreSQL connection; more -> 503 at once.
  std::size_t backend_queue_limit = 256;
  // /healthz: deadline of each probe; answers are cached for health_cache.
  std::chrono::milliseconds health_timeout{1000};
  std::chrono::milliseconds health_cache{1000};
  RateLimitConfig rate_limits;
  // How long stop() lets in-flight requests finish before cutting them.
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(10)};
};

// Applies the compiled-in schema migrations (pg::migrate); returns how many
// were new. Throws pg::PgError.
int apply_migrations(const PgConfig& config);

class ApiServer {
 public:
  // Builds the backends and binds the listening socket (throws if it cannot),
  // but serves nothing before start().
  explicit ApiServer(ApiConfig config);
  ~ApiServer();  // stop() and wait()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // The bound port (useful with port 0).
  std::uint16_t port() const;
  // The connection cap in force.
  std::size_t max_connections() const;

  // "METHOD /pattern" of every route a server with `config` serves, from
  // a Router filled as the server fills its own (install_routes); connects
  // to nothing and binds nothing (rtmc-api --list-routes, the OpenAPI test).
  static std::vector<std::string> routes(const ApiConfig& config);

  // Starts the io threads and returns.
  void start();
  // Graceful and idempotent, callable from any thread (a signal handler's
  // io_context included): stops accepting, closes idle connections, lets
  // requests in flight answer (up to shutdown_grace), then the io threads end.
  void stop();
  // Blocks until the io threads ended (after stop()).
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rtmc::api
