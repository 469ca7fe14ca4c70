#pragma once
// The gateway's own HTTP port (--http-listen, default 127.0.0.1:7080, one per
// process): GET /healthz and GET /metrics, served by server::HttpServer on one
// io thread of its own, apart from the client connections, and the
// WebSocket upgrade at GET /ws (an UpgradeRoute the gateway gives: the
// request is checked here, the upgraded socket then lives on one of the
// gateway's io threads like a TCP client's).
//
// /metrics renders the gateway's metrics registry; the connection counts are
// read at scrape time from a function (the sessions keep them as atomics):
//   rtmc_gateway_connections_accepted_total{transport}        client connections accepted
//   rtmc_gateway_connections_open{transport}                  accepted less closed
//   rtmc_gateway_connections_closed_total{transport,reason}   closed, by close reason
// (transport "tcp" or "ws"; every series exists from the start, zeros included)
// and, once the sequencer runs, its counters (gateway/sequencer.hpp):
//   rtmc_gateway_sequencer_messages_total{result}   sequenced, dead_lettered,
//       script_failure, redis_refused, redis_failure
//   rtmc_gateway_sequencer_amqp_connections_total   consumer connections opened
//   rtmc_gateway_sequencer_seq_blocks_total, _seq_reservation_failures_total,
//       _seq_skips_total, _seqs_skipped_total         seq reservations
//   rtmc_gateway_sequencer_batch_size              histogram: messages per round
//   rtmc_gateway_message_latency_seconds           histogram: accept -> fan-out
// and the traffic counters (gateway/traffic.hpp: frames in/out, deliveries,
// rate-limit refusals, publish->confirm latency), the store links'
// rtmc_gateway_store_connects_total{store} and _store_errors_total{store}
// (common/store_events.hpp), and the fan-out's rtmc_gateway_fanout_* (fanout.hpp)
// and presence's (gateway/presence_service.hpp):
//   rtmc_status_cache_hits_total, rtmc_status_cache_misses_total   status reads
//   rtmc_gateway_presence_events_total            join/leave events published
//   rtmc_gateway_presence_event_messages_total    AMQP messages carrying them
//   rtmc_gateway_presence_gateways_swept_total    dead gateways swept by this one
//   rtmc_gateway_presence_store_failures_total    presence calls to Redis that failed
// plus the HTTP port's own rtmc_gateway_http_* counters (server/http_metrics.hpp).
//
// Threading: construct, start() and destroy from the gateway's owning thread;
// `counts` is called on the HTTP io thread and must be thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/config.hpp"
#include "common/metrics.hpp"
#include "server/http_connection.hpp"
#include "server/http_metrics.hpp"
#include "server/router.hpp"

namespace rtmc::server {
class HttpServer;
}

namespace rtmc::gateway {

struct GatewayCounters;
struct SequencerCounters;

// Client connection counts at one moment.
struct ConnectionCounts {
  struct ByTransport {
    std::string transport;  // "tcp", "ws"
    std::uint64_t accepted = 0;
    // Every close reason, zeros included, so each series exists from the start.
    std::vector<std::pair<std::string, std::uint64_t>> closed_by_reason;
  };
  std::vector<ByTransport> transports;  // every TransportKind, in its order
  // `gap` frames sent and the seqs they covered; joins with `since` by
  // whether the room log still covered the range.
  std::uint64_t gaps = 0;
  std::uint64_t gap_seqs = 0;
  std::uint64_t resumed = 0;
  std::uint64_t not_recovered = 0;
};
using ConnectionCountsSource = std::function<ConnectionCounts()>;

// Reads the sessions' counters (which must outlive the returned function).
ConnectionCountsSource counts_of(const GatewayCounters& counters);

// Adds the connection families above to `registry`, read from `counts`.
void add_connection_metrics(metrics::Registry& registry, ConnectionCountsSource counts);
// Adds the sequencer families above, read from `counters` (which must
// outlive `registry`'s scrapes).
void add_sequencer_metrics(metrics::Registry& registry, const SequencerCounters& counters);
// GET /healthz -> 200 {"status":"ok"}; GET /metrics -> `registry` as text.
void add_http_endpoints(server::Router& router, const metrics::Registry& registry);

class HttpEndpoints {
 public:
  // Binds `listen` at once (throws when it cannot); serves after start().
  // `upgrades` take their paths over from HTTP (the gateway's /ws).
  HttpEndpoints(const HostPort& listen, ConnectionCountsSource counts,
                std::vector<server::UpgradeRoute> upgrades = {});
  ~HttpEndpoints();  // stops and joins its thread
  HttpEndpoints(const HttpEndpoints&) = delete;
  HttpEndpoints& operator=(const HttpEndpoints&) = delete;

  void start();
  std::uint16_t port() const;
  // The gateway's registry: later components add their metrics here.
  metrics::Registry& registry() { return registry_; }

 private:
  metrics::Registry registry_;
  server::HttpMetrics http_metrics_;
  server::Router router_;
  std::unique_ptr<server::HttpServer> server_;
};

}  // namespace rtmc::gateway
