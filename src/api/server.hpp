#pragma once
// rtmc-api as an embeddable object: main() and the integration test both
// build an ApiConfig, construct an ApiServer, start(), and stop().
//
// Options (rtmc-api --help; flags win over environment variables):
//
// | flag                 | env                  | default          | meaning                          |
// |----------------------|----------------------|------------------|----------------------------------|
// | --listen             | RTMC_API_LISTEN      | 127.0.0.1:8080   | address to serve HTTP on         |
// | --threads            | RTMC_API_THREADS     | hardware threads | io threads (one io_context each) |
// | --token-ttl-s        | RTMC_TOKEN_TTL_S     | 86400            | token and session lifetime       |
// | --migrate-only       |                      |                  | apply DB migrations and exit     |
// | --redis --amqp --pg --ingest-shards --max-body --jwt-secret[-file] --log-level: common/config.hpp |

#include "api/http_session.hpp"
#include "common/config.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace rtmc::api {

struct ApiConfig {
  HostPort listen{"127.0.0.1", 8080};
  unsigned threads = 0;  // 0 = std::thread::hardware_concurrency()
  RedisConfig redis;
  PgConfig pg;
  AmqpConfig amqp;
  LimitsConfig limits;
  AuthConfig auth;  // jwt_secret must be set
  // body_bytes is raised when needed so a publish of --max-body bytes, JSON
  // escaped, always fits.
  HttpLimits http;
  // A publish not confirmed within this time is answered 503.
  std::chrono::milliseconds publish_give_up{5000};
  std::size_t publish_window = 500;
  std::size_t password_workers = 2;
  // Password hashes waiting or running at once; more -> 503 unavailable.
  std::size_t password_queue_limit = 64;
  std::size_t redis_connections = 4;
  std::size_t pg_connections = 4;
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
