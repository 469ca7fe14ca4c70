// rtmc-api: parses configuration, applies migrations, wires the server, and
// turns SIGINT/SIGTERM into a graceful stop. Options: see api/server.hpp.

#include "api/server.hpp"
#include "common/config.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <csignal>
#include <thread>

int main(int argc, char** argv) {
  CLI::App app{"rtmc-api: HTTP api of RealTimeMessageChat (register, login, logout, publishMessage)"};
  rtmc::CommonOptions common;
  common.add_to(app);
  std::string listen = "127.0.0.1:8080";
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::int64_t token_ttl_s = 86400;
  bool migrate_only = false;
  rtmc::api::ApiConfig defaults;
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
  std::uint32_t publish_burst = 0;
  std::vector<std::string> trusted_proxies;
  app.add_option("--listen", listen, "HTTP listen address host:port")->envname("RTMC_API_LISTEN")->capture_default_str();
  app.add_option("--threads", threads, "io threads")
      ->envname("RTMC_API_THREADS")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--token-ttl-s", token_ttl_s, "token and session lifetime in seconds")
      ->envname("RTMC_TOKEN_TTL_S")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{366} * 24 * 3600))
      ->capture_default_str();
  app.add_flag("--migrate-only", migrate_only, "apply the database migrations and exit");
  app.add_option("--pg-timeout-ms", pg_timeout_ms,
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
  app.add_option("--login-slowdown-max-ms", login_slowdown_max_ms,
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
  app.add_option("--trusted-proxy", trusted_proxies,
                 "IP address of a reverse proxy whose X-Forwarded-For names the client (repeatable)")
      ->envname("RTMC_TRUSTED_PROXY")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  try {
    common.finish(/*needs_secret=*/!migrate_only);
    rtmc::setup_logging(common.log_level, "api");

    rtmc::api::ApiConfig config;
    config.listen = rtmc::HostPort::parse(listen);
    config.threads = threads;
    config.redis = common.redis;
    config.pg = common.pg;
    config.amqp = common.amqp;
    config.limits = common.limits;
    config.auth = common.auth;
    config.auth.token_ttl = std::chrono::seconds(token_ttl_s);
    config.pg_timeout = std::chrono::milliseconds(pg_timeout_ms);
    config.backend_queue_limit = backend_queue_limit;
    config.login_password_workers = login_hash_workers;
    config.register_password_workers = register_hash_workers;
    using rtmc::store::Rate;
    auto& limits = config.rate_limits;
    limits.login_failures_per_account_address =
        Rate::per_minute(login_failures_per_account_address,
                         static_cast<std::uint32_t>(std::ceil(login_failures_per_account_address)));
    limits.login_failures_per_address =
        Rate::per_minute(login_failures_per_address, static_cast<std::uint32_t>(std::ceil(login_failures_per_address)));
    limits.login_slowdown_max = std::chrono::milliseconds(login_slowdown_max_ms);
    limits.registrations_per_address = Rate::per_second(register_rate, register_burst);
    const auto burst = publish_burst > 0 ? publish_burst : static_cast<std::uint32_t>(std::ceil(publish_rate));
    limits.publishes_per_user = Rate::per_second(publish_rate, burst);
    limits.trusted_proxies = trusted_proxies;

    int applied = rtmc::api::apply_migrations(config.pg);
    spdlog::info("database migrations: {} applied", applied);
    if (migrate_only) return 0;

    rtmc::api::ApiServer server(std::move(config));
    boost::asio::io_context signals_context;
    boost::asio::signal_set signals(signals_context, SIGINT, SIGTERM);
    signals.async_wait([&server](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      spdlog::info("signal {}: stopping", signal);
      server.stop();
    });
    server.start();
    std::thread waiter([&] {
      server.wait();
      signals_context.stop();
    });
    signals_context.run();
    waiter.join();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& error) {
    spdlog::critical("rtmc-api: {}", error.what());
    return 1;
  }
}
