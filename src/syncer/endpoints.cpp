#include "syncer/endpoints.hpp"

#include <boost/beast/http/verb.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "server/http_server.hpp"

namespace rtmc::syncer {

namespace http = boost::beast::http;

namespace {

// Operators and probes only.
constexpr std::size_t kHttpMaxConnections = 32;

double read(const std::atomic<std::uint64_t>& value) {
  return static_cast<double>(value.load(std::memory_order_relaxed));
}

}  // namespace

HealthAnswer health_answer(const Health& health, const std::string& consumer) {
  boost::json::object backlog;
  std::int64_t total = 0;
  for (const auto& [shard, length] : health.backlog) {
    backlog[std::to_string(shard)] = length;
    if (length > 0) total += length;
  }
  const bool ok = health.redis_up && health.pg_up;
  boost::json::object body{{"status", ok ? "ok" : "degraded"},
                           {"redis", health.redis_up ? "up" : "down"},
                           {"postgres", health.pg_up ? "up" : "down"},
                           {"consumer", consumer},
                           {"backlog", std::move(backlog)},
                           {"backlog_total", total}};
  return {ok ? 200u : 503u, boost::json::serialize(body)};
}

void add_syncer_metrics(metrics::Registry& registry, const Syncer& syncer) {
  registry.add_collector([&syncer] {
    const auto& counters = syncer.counters();
    const auto health = syncer.health();
    std::vector<metrics::Sample> backlog;
    for (const auto& [shard, length] : health.backlog)
      backlog.push_back({{{"shard", std::to_string(shard)}}, static_cast<double>(length)});
    std::vector<metrics::Sample> lag;
    for (const auto& [shard, ms] : health.lag_ms)
      lag.push_back({{{"shard", std::to_string(shard)}}, ms < 0 ? -1.0 : static_cast<double>(ms) / 1000.0});
    return std::vector{
        metrics::counter_family("rtmc_syncer_messages_total", "Sync stream entries handled, by result.",
                                {{{{"result", "inserted"}}, read(counters.inserted)},
                                 {{{"result", "duplicate"}}, read(counters.duplicates)},
                                 {{{"result", "malformed"}}, read(counters.malformed)},
                                 {{{"result", "rejected"}}, read(counters.rejected)}}),
        metrics::counter_family("rtmc_syncer_batches_total", "Batches committed to PostgreSQL.",
                                {{{}, read(counters.batches)}}),
        metrics::gauge_family("rtmc_syncer_last_batch_size", "Entries of the last committed batch.",
                              {{{}, read(counters.last_batch_size)}}),
        metrics::counter_family("rtmc_syncer_trimmed_total", "Sync stream entries acked and deleted.",
                                {{{}, read(counters.trimmed)}}),
        metrics::counter_family("rtmc_syncer_claimed_total",
                                "Pending entries taken over from another consumer (XAUTOCLAIM).",
                                {{{}, read(counters.claimed)}}),
        metrics::counter_family("rtmc_syncer_errors_total", "Failed calls to a store, by store.",
                                {{{{"store", "postgres"}}, read(counters.pg_failures)},
                                 {{{"store", "redis"}}, read(counters.redis_failures)}}),
        metrics::gauge_family("rtmc_syncer_backlog", "Entries in the shard's sync stream (not synced yet).",
                              backlog),
        metrics::gauge_family("rtmc_syncer_lag_seconds",
                              "Age of the oldest message of the shard not in PostgreSQL yet (0: none; "
                              "-1: not read yet).",
                              lag),
        metrics::gauge_family("rtmc_syncer_store_up", "1 when the store answered the last call.",
                              {{{{"store", "postgres"}}, health.pg_up ? 1.0 : 0.0},
                               {{{"store", "redis"}}, health.redis_up ? 1.0 : 0.0}})};
  });
}

SyncerEndpoints::SyncerEndpoints(const HostPort& listen, const Syncer& syncer)
    : http_metrics_(registry_, "rtmc_syncer_http") {
  add_syncer_metrics(registry_, syncer);
  router_.add(http::verb::get, "/healthz",
              [&syncer](const server::Request&) -> boost::asio::awaitable<server::Response> {
                auto answer = health_answer(syncer.health(), syncer.consumer());
                co_return server::json_response(static_cast<http::status>(answer.status),
                                                std::move(answer.body));
              });
  router_.add(http::verb::get, "/metrics",
              [this](const server::Request&) -> boost::asio::awaitable<server::Response> {
                server::Response response{http::status::ok, 11};
                response.set(http::field::content_type, metrics::kContentType);
                response.body() = registry_.render();
                response.prepare_payload();
                co_return response;
              });
  server::HttpServerConfig config;
  config.listen = listen;
  config.threads = 1;
  config.max_connections = kHttpMaxConnections;
  config.shutdown_grace = std::chrono::seconds(1);
  config.name = "rtmc-syncer http";
  server_ = std::make_unique<server::HttpServer>(config, router_, http_metrics_);
}

SyncerEndpoints::~SyncerEndpoints() = default;

void SyncerEndpoints::start() {
  server_->start();
}

std::uint16_t SyncerEndpoints::port() const {
  return server_->port();
}

}  // namespace rtmc::syncer
