#include "server/http_metrics.hpp"

namespace rtmc::server {

HttpMetrics::HttpMetrics(metrics::Registry& registry, const std::string& prefix)
    : responses_(
          registry.counter_family(prefix + "_responses_total", "HTTP responses sent, by status code.")),
      accepted_(registry.counter(prefix + "_connections_total", "HTTP connections accepted.")),
      open_(registry.gauge(prefix + "_connections_open", "HTTP connections currently open.")),
      refused_(registry.counter(prefix + "_connections_refused_total",
                                "HTTP connections refused because the connection cap was reached.")) {}

void HttpMetrics::count_response(unsigned status) {
  if (status < kMinStatus || status > kMaxStatus) return;
  auto& slot = by_status_[status - kMinStatus];
  auto* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Two threads may both get here: Add returns the same series for the
    // same labels, so both store the same pointer.
    counter = &responses_.Add({{"status", std::to_string(status)}});
    slot.store(counter, std::memory_order_release);
  }
  counter->Increment();
}

void HttpMetrics::connection_opened() {
  accepted_.Increment();
  open_.Increment();
}

void HttpMetrics::connection_closed() {
  open_.Decrement();
}

void HttpMetrics::connection_refused() {
  refused_.Increment();
}

std::uint64_t HttpMetrics::responses(unsigned status) const {
  if (status < kMinStatus || status > kMaxStatus) return 0;
  const auto* counter = by_status_[status - kMinStatus].load(std::memory_order_acquire);
  return counter == nullptr ? 0 : static_cast<std::uint64_t>(counter->Value());
}

std::uint64_t HttpMetrics::connections_open() const {
  return static_cast<std::uint64_t>(open_.Value());
}

std::uint64_t HttpMetrics::connections_refused() const {
  return static_cast<std::uint64_t>(refused_.Value());
}

}  // namespace rtmc::server
