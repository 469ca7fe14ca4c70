#include "gateway/http_endpoints.hpp"

#include <boost/beast/http/verb.hpp>

#include "gateway/close_reason.hpp"
#include "gateway/sequencer.hpp"
#include "server/http_server.hpp"

namespace rtmc::gateway {

namespace http = boost::beast::http;

namespace {

// The HTTP port serves operators and probes, and every WebSocket client
// passes through it for its upgrade request (the socket then counts against
// --max-connections, not here). A reconnect storm of browsers must not meet
// 503 here, nor may a few idle TCP connections block upgrades and /healthz:
// a large cap, and a short wait for the first request so idle connections
// leave soon.
constexpr std::size_t kHttpMaxConnections = 1024;
constexpr auto kHttpFirstRequestTimeout = std::chrono::seconds(2);

}  // namespace

ConnectionCountsSource counts_of(const GatewayCounters& counters) {
  return [&counters] {
    ConnectionCounts counts;
    for (int t = 0; t < kTransportKinds; ++t) {
      auto& by = counts.transports.emplace_back();
      by.transport = to_string(static_cast<TransportKind>(t));
      by.accepted = counters.accepted[t].load(std::memory_order_relaxed);
      for (int i = 0; i < kCloseReasons; ++i)
        by.closed_by_reason.emplace_back(to_string(static_cast<CloseReason>(i)),
                                         counters.closed[t][i].load(std::memory_order_relaxed));
    }
    counts.gaps = counters.gaps.load(std::memory_order_relaxed);
    counts.gap_seqs = counters.gap_seqs.load(std::memory_order_relaxed);
    counts.resumed = counters.resumed.load(std::memory_order_relaxed);
    counts.not_recovered = counters.not_recovered.load(std::memory_order_relaxed);
    return counts;
  };
}

void add_connection_metrics(metrics::Registry& registry, ConnectionCountsSource counts) {
  registry.add_collector([counts = std::move(counts)] {
    const auto now = counts();
    std::vector<metrics::Sample> accepted;
    std::vector<metrics::Sample> open;
    std::vector<metrics::Sample> by_reason;
    for (const auto& by : now.transports) {
      std::uint64_t closed = 0;
      for (const auto& [reason, count] : by.closed_by_reason) {
        closed += count;
        by_reason.push_back({{{"transport", by.transport}, {"reason", reason}}, static_cast<double>(count)});
      }
      // Counters are read one by one, so a close may be seen before its accept.
      const auto open_now = by.accepted > closed ? by.accepted - closed : 0;
      accepted.push_back({{{"transport", by.transport}}, static_cast<double>(by.accepted)});
      open.push_back({{{"transport", by.transport}}, static_cast<double>(open_now)});
    }
    return std::vector{
        metrics::counter_family("rtmc_gateway_connections_accepted_total",
                                "Client connections accepted, by transport.", accepted),
        metrics::gauge_family("rtmc_gateway_connections_open", "Client connections open now, by transport.",
                              open),
        metrics::counter_family("rtmc_gateway_connections_closed_total",
                                "Client connections closed, by transport and reason.", by_reason),
        metrics::counter_family("rtmc_gateway_gaps_total",
                                "gap frames sent to clients: seqs they were owed that the room log lacked.",
                                {{{}, static_cast<double>(now.gaps)}}),
        metrics::counter_family("rtmc_gateway_gap_seqs_total",
                                "Seqs covered by the gap frames sent to clients.",
                                {{{}, static_cast<double>(now.gap_seqs)}}),
        metrics::counter_family("rtmc_gateway_resumes_total",
                                "Joins with since, by whether the room log still covered the range.",
                                {{{{"recovered", "true"}}, static_cast<double>(now.resumed)},
                                 {{{"recovered", "false"}}, static_cast<double>(now.not_recovered)}})};
  });
}

void add_sequencer_metrics(metrics::Registry& registry, const SequencerCounters& counters) {
  registry.add_collector([&counters] {
    auto read = [](const std::atomic<std::uint64_t>& value) {
      return static_cast<double>(value.load(std::memory_order_relaxed));
    };
    std::vector<metrics::Sample> by_result{{{{"result", "sequenced"}}, read(counters.sequenced)},
                                           {{{"result", "dead_lettered"}}, read(counters.dead_lettered)},
                                           {{{"result", "script_failure"}}, read(counters.script_failures)},
                                           {{{"result", "redis_refused"}}, read(counters.redis_refusals)},
                                           {{{"result", "redis_failure"}}, read(counters.redis_failures)}};
    return std::vector{
        metrics::counter_family("rtmc_gateway_sequencer_messages_total",
                                "Ingest messages and attempts of the sequencer, by result.", by_result),
        metrics::counter_family("rtmc_gateway_sequencer_amqp_connections_total",
                                "RabbitMQ connections the sequencer opened for consuming.",
                                {{{}, read(counters.amqp_connections)}}),
        metrics::counter_family("rtmc_gateway_sequencer_seq_blocks_total",
                                "Seq blocks reserved in PostgreSQL and installed in Redis.",
                                {{{}, read(counters.seq_blocks)}}),
        metrics::counter_family("rtmc_gateway_sequencer_seq_reservation_failures_total",
                                "Seq reservation statements PostgreSQL did not complete.",
                                {{{}, read(counters.pg_failures)}}),
        metrics::counter_family("rtmc_gateway_sequencer_seq_skips_total",
                                "Rooms whose seq continued above their reservation after a Redis run change.",
                                {{{}, read(counters.seq_skips)}}),
        metrics::counter_family("rtmc_gateway_sequencer_seqs_skipped_total",
                                "Seqs jumped over by those skips (reported to clients as gaps).",
                                {{{}, read(counters.seqs_skipped)}}),
        metrics::histogram_family("rtmc_gateway_sequencer_batch_size",
                                  "Messages per sequencing round (one pipelined batch of scripts).",
                                  {{{}, &counters.batch_sizes}}),
        metrics::histogram_family("rtmc_gateway_message_latency_seconds",
                                  "Seconds from a message's accept (api or gateway) to its frame's publish "
                                  "to the fan-out exchange.",
                                  {{{}, &counters.end_to_end}})};
  });
}

void add_http_endpoints(server::Router& router, const metrics::Registry& registry) {
  router.add(http::verb::get, "/healthz",
             [](const server::Request&) -> boost::asio::awaitable<server::Response> {
               co_return server::json_response(http::status::ok, R"({"status":"ok"})");
             });
  router.add(http::verb::get, "/metrics",
             [&registry](const server::Request&) -> boost::asio::awaitable<server::Response> {
               server::Response response{http::status::ok, 11};
               response.set(http::field::content_type, metrics::kContentType);
               response.body() = registry.render();
               response.prepare_payload();
               co_return response;
             });
}

HttpEndpoints::HttpEndpoints(const HostPort& listen, ConnectionCountsSource counts,
                             std::vector<server::UpgradeRoute> upgrades)
    : http_metrics_(registry_, "rtmc_gateway_http") {
  add_connection_metrics(registry_, std::move(counts));
  add_http_endpoints(router_, registry_);
  server::HttpServerConfig config;
  config.listen = listen;
  config.threads = 1;
  config.max_connections = kHttpMaxConnections;
  config.limits.first_request_timeout = kHttpFirstRequestTimeout;
  config.shutdown_grace = std::chrono::seconds(1);
  config.name = "rtmc-gateway http";
  config.upgrades = std::move(upgrades);
  server_ = std::make_unique<server::HttpServer>(config, router_, http_metrics_);
}

HttpEndpoints::~HttpEndpoints() = default;

void HttpEndpoints::start() {
  server_->start();
}

std::uint16_t HttpEndpoints::port() const {
  return server_->port();
}

}  // namespace rtmc::gateway
