// rtmc-api: parses configuration, applies migrations, wires the server, and
// turns SIGINT/SIGTERM into a graceful stop. Options: see api/server.hpp.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <thread>

#include "api/server.hpp"
#include "common/config.hpp"
#include "server/limits.hpp"
#include "server/signals.hpp"

int main(int argc, char** argv) {
  // Before any thread exists, so only the wait below receives the signals.
  rtmc::server::StopSignals signals;
  CLI::App app{"rtmc-api: HTTP api of RealTimeMessageChat (register, login, logout, publishMessage)"};
  rtmc::api::ApiConfig config;
  config.common.add_to(app);
  std::string listen = config.listen.str();
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::int64_t token_ttl_s = 86400;
  std::int64_t first_request_timeout_s = 10;
  std::int64_t keepalive_timeout_s = 60;
  bool migrate_only = false;
  app.add_option("--listen", listen, "HTTP listen address host:port")
      ->envname("RTMC_API_LISTEN")
      ->capture_default_str();
  app.add_option("--threads", threads, "io threads")
      ->envname("RTMC_API_THREADS")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections,
                 "HTTP connections open at once (0 = the open-file limit less 64); over it: 503 server_full")
      ->envname("RTMC_API_MAX_CONNECTIONS")
      ->capture_default_str();
  app.add_option("--first-request-timeout-s", first_request_timeout_s,
                 "seconds a new connection has to send its first request header")
      ->envname("RTMC_API_FIRST_REQUEST_TIMEOUT_S")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600}))
      ->capture_default_str();
  app.add_option("--keepalive-timeout-s", keepalive_timeout_s,
                 "seconds an idle keep-alive connection waits for its next request")
      ->envname("RTMC_API_KEEPALIVE_TIMEOUT_S")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600}))
      ->capture_default_str();
  app.add_option("--token-ttl-s", token_ttl_s, "token and session lifetime in seconds")
      ->envname("RTMC_TOKEN_TTL_S")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{366} * 24 * 3600))
      ->capture_default_str();
  app.add_flag("--migrate-only", migrate_only, "apply the database migrations and exit");
  CLI11_PARSE(app, argc, argv);

  try {
    config.common.finish(/*needs_secret=*/!migrate_only);
    rtmc::setup_logging(config.common.log_level, "api");

    config.listen = rtmc::HostPort::parse(listen);
    config.threads = threads;
    config.common.auth.token_ttl = std::chrono::seconds(token_ttl_s);
    config.http.first_request_timeout = std::chrono::seconds(first_request_timeout_s);
    config.http.keepalive_timeout = std::chrono::seconds(keepalive_timeout_s);

    int applied = rtmc::api::apply_migrations(config.common.pg);
    spdlog::info("database migrations: {} applied", applied);
    if (migrate_only) return 0;

    // Each connection costs a descriptor: take all the hard limit allows.
    auto files = rtmc::server::raise_open_file_limit();
    spdlog::info("open-file limit {} (hard {})", files.soft, files.hard);

    rtmc::api::ApiServer server(std::move(config));
    server.start();
    int signal = signals.wait();
    spdlog::info("signal {}: stopping", signal);
    server.stop();
    server.wait();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& error) {
    spdlog::critical("rtmc-api: {}", error.what());
    return 1;
  }
}
