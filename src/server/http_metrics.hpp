#pragma once
// The counters every HTTP server keeps, in the role's metrics registry under
// a prefix (the api's names are rtmc_api_*):
//   <prefix>_responses_total{status}      responses written, by status (also
//                                          those the HTTP layer makes itself)
//   <prefix>_connections_total            connections accepted and served
//   <prefix>_connections_open             connections open now
//   <prefix>_connections_refused_total    connections refused over the cap
//
// Threading: every member may be called from any thread at once.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "common/metrics.hpp"

namespace rtmc::server {

class HttpMetrics {
 public:
  HttpMetrics(metrics::Registry& registry, const std::string& prefix);
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  void count_response(unsigned status);
  void connection_opened();
  void connection_closed();
  void connection_refused();

  std::uint64_t responses(unsigned status) const;
  std::uint64_t connections_open() const;
  std::uint64_t connections_refused() const;

 private:
  static constexpr unsigned kMinStatus = 100;
  static constexpr unsigned kMaxStatus = 599;

  prometheus::Family<prometheus::Counter>& responses_;
  // A status's series is created on its first response, so /metrics lists
  // only the statuses that occurred; the pointer caches it off the family's
  // lock.
  std::array<std::atomic<prometheus::Counter*>, kMaxStatus - kMinStatus + 1> by_status_{};
  prometheus::Counter& accepted_;
  prometheus::Gauge& open_;
  prometheus::Counter& refused_;
};

}  // namespace rtmc::server
