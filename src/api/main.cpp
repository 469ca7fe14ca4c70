// rtmc-api: parses configuration, applies migrations, wires the server, and
// turns SIGINT/SIGTERM into a graceful stop. Options: see api/server.hpp.

#include "api/server.hpp"
#include "common/config.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
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
