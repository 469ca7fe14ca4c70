#pragma once
// The api's metrics, in the role's metrics registry (common/metrics.hpp):
//   rtmc_api_responses_total{status}         responses sent, by status
//   rtmc_api_connections_total               HTTP connections accepted
//   rtmc_api_connections_open                HTTP connections open now
//   rtmc_api_connections_refused_total       refused over the connection cap
//   rtmc_api_publish_total{result}           publishes to RabbitMQ, by outcome
//   rtmc_api_amqp_connected                  1 while the publisher is connected
//   rtmc_status_cache_hits_total             GET /users/{U}/status answered from Redis
//   rtmc_status_cache_misses_total           ... that had to ask PostgreSQL
//   rtmc_api_publish_confirm_seconds         histogram: POST /messages' publish
//                                            to RabbitMQ's confirm (confirmed only)
//   rtmc_api_logins_total{result}            POST /login: ok, refused (wrong
//                                            name or password), rate_limited
//   rtmc_api_rate_limited_total{limit}       429s: register, login, publish
//   rtmc_api_store_connects_total{store}, rtmc_api_store_errors_total{store}
//                                            (common/store_events.hpp, added by
//                                            the server)
//
// Threading: every member may be called from any thread at once.

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "common/metrics.hpp"
#include "server/http_metrics.hpp"
#include "store/amqp.hpp"
#include "store/user_status.hpp"

namespace rtmc::api {

class Metrics {
 public:
  // Registers the api's metrics in `registry`, which must outlive this.
  explicit Metrics(metrics::Registry& registry);
  // With a registry of its own (tests that need no other metrics).
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Every response written, by status (including those the HTTP layer makes
  // itself: 413 over the body limit, 431, 400 for unparsable requests).
  void count_response(unsigned status) { http_.count_response(status); }
  void count_publish(amqp::PublishStatus result);
  void observe_publish_confirm(double seconds) { publish_confirm_.observe(seconds); }
  enum class Login { ok, refused, rate_limited };
  void count_login(Login result) { logins_[static_cast<std::size_t>(result)]->Increment(); }
  enum class Limit { register_, login, publish };
  void count_rate_limited(Limit limit) { rate_limited_[static_cast<std::size_t>(limit)]->Increment(); }
  std::uint64_t logins(Login result) const;
  std::uint64_t rate_limited(Limit limit) const;
  const metrics::Histogram& publish_confirm() const { return publish_confirm_; }
  // Renders the status cache's counters on every scrape; `counters` must
  // outlive every render() (the api's io threads have stopped before the
  // reader owning them goes).
  void watch_status_cache(const store::StatusCacheCounters& counters);

  std::uint64_t responses(unsigned status) const { return http_.responses(status); }
  std::uint64_t publishes(amqp::PublishStatus result) const;

  // The counters the HTTP server updates.
  server::HttpMetrics& http() { return http_; }

  // The whole registry as Prometheus text; `amqp_connected` is sampled by the
  // caller at render time.
  std::string render(bool amqp_connected) const;

 private:
  static constexpr std::size_t kPublishResults = 5;
  explicit Metrics(std::unique_ptr<metrics::Registry> own);

  std::unique_ptr<metrics::Registry> own_registry_;  // only with Metrics()
  metrics::Registry& registry_;
  server::HttpMetrics http_;
  std::array<prometheus::Counter*, kPublishResults> publishes_{};
  prometheus::Gauge& amqp_connected_;
  std::array<prometheus::Counter*, 3> logins_{};
  std::array<prometheus::Counter*, 3> rate_limited_{};
  metrics::Histogram publish_confirm_{metrics::latency_buckets()};
};

}  // namespace rtmc::api
