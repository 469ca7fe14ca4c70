// rtmc-syncer: parses configuration, runs a Syncer and its HTTP port until
// SIGINT/SIGTERM. Behaviour: syncer/syncer.hpp; HTTP: syncer/endpoints.hpp.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdint>

#include "common/logging.hpp"
#include "server/signals.hpp"
#include "syncer/endpoints.hpp"
#include "syncer/syncer.hpp"

int main(int argc, char** argv) {
  // Before any thread exists, so only the wait below receives the signals.
  rtmc::server::StopSignals signals;
  CLI::App app{
      "rtmc-syncer: writes the sequenced messages of the Redis sync streams to PostgreSQL in batches"};
  rtmc::CommonOptions common;
  common.add_to(app);
  rtmc::syncer::SyncerConfig config;
  std::string http_listen = "127.0.0.1:7090";
  std::int64_t batch_ms = config.batch_wait.count();
  std::int64_t claim_idle_ms = config.claim_idle.count();
  std::int64_t pg_timeout_ms = config.pg_timeout.count();
  app.add_option("--http-listen", http_listen, "HTTP address for /healthz and /metrics host:port")
      ->envname("RTMC_SYNCER_HTTP_LISTEN")
      ->capture_default_str();
  app.add_option("--batch-size", config.batch_size, "A batch is written when this many messages are in hand")
      ->envname("RTMC_SYNCER_BATCH_SIZE")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
      ->capture_default_str();
  app.add_option("--batch-ms", batch_ms, "... or this many milliseconds after the first of them arrived")
      ->envname("RTMC_SYNCER_BATCH_MS")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{60000}))
      ->capture_default_str();
  app.add_option("--claim-idle-ms", claim_idle_ms,
                 "Entries pending this long on another consumer (a dead syncer) are taken over")
      ->envname("RTMC_SYNCER_CLAIM_IDLE_MS")
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{24} * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--consumer", config.consumer,
                 "Consumer name in group rtmc.syncer (default hostname-pid-random)")
      ->envname("RTMC_SYNCER_CONSUMER");
  app.add_option("--pg-timeout-ms", pg_timeout_ms,
                 "Deadline of every PostgreSQL statement (connect included) and its statement_timeout")
      ->envname("RTMC_SYNCER_PG_TIMEOUT_MS")
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{600'000}))
      ->capture_default_str();
  app.add_option("--shards", config.shards,
                 "Shards whose sync streams to read, e.g. 0,1,2 (default: every ingest shard)")
      ->envname("RTMC_SYNCER_SHARDS")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  try {
    // First, so that finish()'s warnings already have the chosen format.
    rtmc::setup_logging(common.log_level, "syncer", rtmc::parse_log_format(common.log_format));
    common.finish(/*needs_secret=*/false);
    config.redis = common.redis;
    config.pg = common.pg;
    config.ingest_shards = common.amqp.ingest_shards;
    config.batch_wait = std::chrono::milliseconds(batch_ms);
    config.claim_idle = std::chrono::milliseconds(claim_idle_ms);
    config.pg_timeout = std::chrono::milliseconds(pg_timeout_ms);
    const auto listen = rtmc::HostPort::parse(http_listen);

    rtmc::syncer::Syncer syncer(config);
    rtmc::syncer::SyncerEndpoints endpoints(listen, syncer);
    rtmc::add_store_metrics(endpoints.registry(), "syncer", common);
    endpoints.start();
    spdlog::info(
        "syncer {} on {} shard stream(s), batches of {} or {} ms, claim after {} ms idle; http on {}:{}",
        syncer.consumer(), syncer.shards().size(), config.batch_size, batch_ms, claim_idle_ms, listen.host,
        endpoints.port());
    const int received = signals.wait();
    spdlog::info("syncer stopping (signal {})", received);
    syncer.request_stop();
  } catch (const std::exception& error) {
    spdlog::critical("syncer: {}", error.what());
    return 1;
  }
  return 0;
}
