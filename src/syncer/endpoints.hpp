#pragma once
// The syncer's HTTP port (--http-listen, default 127.0.0.1:7090): GET
// /healthz and GET /metrics, served by server::HttpServer on one io thread.
//
// /healthz: 200 when Redis and PostgreSQL both answered last time, 503 when
// one did not, always with the body
//   {"status":"ok"|"degraded","redis":"up"|"down","postgres":"up"|"down",
//    "consumer":NAME,"backlog":{"0":N,...},"backlog_total":N}
// where backlog is each shard's XLEN of `{k}:sync` (synced entries are
// deleted, so it counts what is not in PostgreSQL yet; refreshed every
// second; -1 = not read yet).
//
// /metrics (besides the HTTP port's own rtmc_syncer_http_*):
//   rtmc_syncer_messages_total{result}  inserted, duplicate (already in
//       PostgreSQL), malformed (unreadable entry), rejected (refused row)
//   rtmc_syncer_batches_total           batches committed
//   rtmc_syncer_last_batch_size         entries of the last committed batch
//       (mean batch size: rate(messages_total) / rate(batches_total))
//   rtmc_syncer_trimmed_total           entries XACKed and XDELed
//   rtmc_syncer_claimed_total           entries taken over from other consumers
//   rtmc_syncer_errors_total{store}     failed calls to postgres / redis
//   rtmc_syncer_backlog{shard}          XLEN of the shard's sync stream
//   rtmc_syncer_lag_seconds{shard}      age of the shard's oldest entry, i.e.
//       of the oldest message not in PostgreSQL yet (0 = none; -1 = not read
//       yet); refreshed every second with the backlog
//   rtmc_syncer_store_up{store}         1 when the store answered last time
//   rtmc_syncer_store_connects_total{store}, rtmc_syncer_store_errors_total{store}
//       (common/store_events.hpp)
//
// Threading: construct, start() and destroy on the owning thread; the
// handlers run on the HTTP io thread and only read the syncer's atomics.

#include <memory>
#include <string>

#include "common/config.hpp"
#include "common/metrics.hpp"
#include "server/http_metrics.hpp"
#include "server/router.hpp"
#include "syncer/syncer.hpp"

namespace rtmc::server {
class HttpServer;
}

namespace rtmc::syncer {

struct HealthAnswer {
  unsigned status = 200;
  std::string body;
};
HealthAnswer health_answer(const Health& health, const std::string& consumer);

// Adds the families above to `registry`, read from `syncer` (which must
// outlive the registry's scrapes).
void add_syncer_metrics(metrics::Registry& registry, const Syncer& syncer);

class SyncerEndpoints {
 public:
  // Binds `listen` at once (throws when it cannot); serves after start().
  SyncerEndpoints(const HostPort& listen, const Syncer& syncer);
  ~SyncerEndpoints();
  SyncerEndpoints(const SyncerEndpoints&) = delete;
  SyncerEndpoints& operator=(const SyncerEndpoints&) = delete;

  void start();
  std::uint16_t port() const;
  // Where main adds the store links' metrics (common/store_events.hpp).
  metrics::Registry& registry() { return registry_; }

 private:
  metrics::Registry registry_;
  server::HttpMetrics http_metrics_;
  server::Router router_;
  std::unique_ptr<server::HttpServer> server_;
};

}  // namespace rtmc::syncer
