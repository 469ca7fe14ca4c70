// rtmc-api: parses configuration, applies migrations, wires the server, and
// turns SIGINT/SIGTERM into a graceful stop. Options: see api/server.hpp.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>
#include <thread>

#include "api/server.hpp"
#include "common/config.hpp"
#include "common/logging.hpp"
#include "server/limits.hpp"
#include "server/signals.hpp"

int main(int argc, char** argv) {
  // Before any thread exists, so only the wait below receives the signals.
  rtmc::server::StopSignals signals;
  CLI::App app{
      "rtmc-api: HTTP api of RealTimeMessageChat (register, login, logout, publishMessage, user status)"};
  rtmc::api::ApiConfig config;
  config.common.add_to(app);
  std::string listen = config.listen.str();
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::int64_t token_ttl_s = 86400;
  std::int64_t first_request_timeout_s = 10;
  std::int64_t keepalive_timeout_s = 60;
  bool migrate_only = false;
  bool list_routes = false;
  const rtmc::api::ApiConfig defaults;
  std::int64_t pg_timeout_ms = defaults.pg_timeout.count();
  std::size_t backend_queue_limit = defaults.backend_queue_limit;
  std::size_t login_hash_workers = defaults.login_password_workers;
  std::size_t register_hash_workers = defaults.register_password_workers;
  double login_failures_per_account_address = 10;  // a minute
  double login_failures_per_address = 100;         // a minute
  std::int64_t login_slowdown_max_ms = defaults.rate_limits.login_slowdown_max.count();
  double register_rate = 20;  // a second
  std::uint32_t register_burst = 50;
  double publish_rate = 0;  // a second; 0 = off
  double refreshes_per_minute = 10;
  std::uint32_t publish_burst = 0;
  std::vector<std::string> trusted_proxies;
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
  app.add_option(
         "--pg-timeout-ms", pg_timeout_ms,
         "deadline of every PostgreSQL statement (connect and queue included) and its statement_timeout; "
         "past it: 503")
      ->envname("RTMC_PG_TIMEOUT_MS")
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{600'000}))
      ->capture_default_str();
  app.add_option("--backend-queue-limit", backend_queue_limit,
                 "calls waiting per Redis or PostgreSQL connection; more are answered 503 at once")
      ->envname("RTMC_BACKEND_QUEUE_LIMIT")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--login-hash-workers", login_hash_workers, "Argon2id threads for logins")
      ->envname("RTMC_LOGIN_HASH_WORKERS")
      ->check(CLI::Range(std::size_t{1}, std::size_t{256}))
      ->capture_default_str();
  app.add_option("--register-hash-workers", register_hash_workers,
                 "Argon2id threads for registrations (apart from logins)")
      ->envname("RTMC_REGISTER_HASH_WORKERS")
      ->check(CLI::Range(std::size_t{1}, std::size_t{256}))
      ->capture_default_str();
  app.add_option("--login-failures-per-account-address", login_failures_per_account_address,
                 "failed logins a minute per account name and client address, then 429 (0 = no limit)")
      ->envname("RTMC_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--login-failures-per-address", login_failures_per_address,
                 "failed logins a minute per client address, then 429 (0 = no limit)")
      ->envname("RTMC_LOGIN_FAILURES_PER_ADDRESS")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option(
         "--login-slowdown-max-ms", login_slowdown_max_ms,
         "longest delay of a login answer after failed logins of its account from any address (0 = none)")
      ->envname("RTMC_LOGIN_SLOWDOWN_MAX_MS")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{30'000}))
      ->capture_default_str();
  app.add_option("--register-rate", register_rate, "registrations a second per client address (0 = no limit)")
      ->envname("RTMC_REGISTER_RATE")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--register-burst", register_burst, "registrations per client address at once")
      ->envname("RTMC_REGISTER_BURST")
      ->check(CLI::Range(1u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--publish-rate", publish_rate, "REST publishes a second per user (0 = no limit)")
      ->envname("RTMC_PUBLISH_RATE")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_option("--publish-burst", publish_burst, "REST publishes per user at once (0 = one second's worth)")
      ->envname("RTMC_PUBLISH_BURST")
      ->check(CLI::Range(0u, 1'000'000'000u))
      ->capture_default_str();
  app.add_option(
         "--publish-backlog", config.publish_backlog,
         "publishes awaiting RabbitMQ's confirm before a publish is answered 503 overloaded (0 = no bound)")
      ->envname("RTMC_PUBLISH_BACKLOG")
      ->check(CLI::Range(std::size_t{0}, std::size_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--publish-batch", config.publish_batch,
                 "publishes to one ingest queue sent as one RabbitMQ message at most (1 = no batching)")
      ->envname("RTMC_PUBLISH_BATCH")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}))
      ->capture_default_str();
  app.add_option("--publish-window", config.publish_window,
                 "RabbitMQ messages (batches) awaiting their confirm at once")
      ->envname("RTMC_PUBLISH_WINDOW")
      ->check(CLI::Range(std::size_t{1}, std::size_t{65'535}))
      ->capture_default_str();
  app.add_option("--refreshes-per-minute", refreshes_per_minute,
                 "POST /refresh a minute per user, as many at once (0 = no limit); over it: 429")
      ->envname("RTMC_REFRESHES_PER_MINUTE")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_flag("--list-routes", list_routes,
               "print the routes served, one \"METHOD /path/{param}\" a line, and exit (needs no services)");
  app.add_option("--trusted-proxy", trusted_proxies,
                 "IP address of a reverse proxy whose X-Forwarded-For names the client (repeatable)")
      ->envname("RTMC_TRUSTED_PROXY")
      ->delimiter(',');
  app.add_option("--ws-url", config.ws_urls,
                 "a gateway WebSocket URL the web page may use (repeatable; GET /config.json)")
      ->envname("RTMC_API_WS_URL")
      ->delimiter(',')
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (list_routes) {
    for (const auto& route : rtmc::api::ApiServer::routes(config)) std::cout << route << '\n';
    return std::cout.flush() ? 0 : 1;
  }

  try {
    // First, so that finish()'s warnings already have the chosen format.
    rtmc::setup_logging(config.common.log_level, "api", rtmc::parse_log_format(config.common.log_format));
    config.common.finish(/*needs_secret=*/!migrate_only);

    config.listen = rtmc::HostPort::parse(listen);
    config.threads = threads;
    config.common.auth.token_ttl = std::chrono::seconds(token_ttl_s);
    config.http.first_request_timeout = std::chrono::seconds(first_request_timeout_s);
    config.http.keepalive_timeout = std::chrono::seconds(keepalive_timeout_s);
    config.pg_timeout = std::chrono::milliseconds(pg_timeout_ms);
    config.backend_queue_limit = backend_queue_limit;
    config.login_password_workers = login_hash_workers;
    config.register_password_workers = register_hash_workers;
    using rtmc::store::Rate;
    auto& limits = config.rate_limits;
    limits.login_failures_per_account_address =
        Rate::per_minute(login_failures_per_account_address,
                         static_cast<std::uint32_t>(std::ceil(login_failures_per_account_address)));
    limits.login_failures_per_address = Rate::per_minute(
        login_failures_per_address, static_cast<std::uint32_t>(std::ceil(login_failures_per_address)));
    limits.login_slowdown_max = std::chrono::milliseconds(login_slowdown_max_ms);
    limits.registrations_per_address = Rate::per_second(register_rate, register_burst);
    limits.publishes_per_user = rtmc::store::messages_rate(publish_rate, publish_burst);
    limits.refreshes_per_user =
        Rate::per_minute(refreshes_per_minute, static_cast<std::uint32_t>(std::ceil(refreshes_per_minute)));
    limits.trusted_proxies = trusted_proxies;

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
