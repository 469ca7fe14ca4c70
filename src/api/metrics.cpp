#include "api/metrics.hpp"

#include <sstream>

namespace rtmc::api {
namespace {

constexpr std::array kPublishStatuses{amqp::PublishStatus::confirmed, amqp::PublishStatus::nacked,
                                      amqp::PublishStatus::unroutable, amqp::PublishStatus::unavailable};

std::size_t publish_index(amqp::PublishStatus result) {
  for (std::size_t i = 0; i < kPublishStatuses.size(); ++i)
    if (kPublishStatuses[i] == result) return i;
  return kPublishStatuses.size() - 1;
}

// Not amqp::to_string: the label values are part of the metrics contract and
// must not change when log wording does.
const char* publish_label(amqp::PublishStatus result) {
  switch (result) {
    case amqp::PublishStatus::confirmed:
      return "confirmed";
    case amqp::PublishStatus::nacked:
      return "nacked";
    case amqp::PublishStatus::unroutable:
      return "unroutable";
    case amqp::PublishStatus::unavailable:
      return "unavailable";
  }
  return "unavailable";
}

}  // namespace

void Metrics::count_response(unsigned status) {
  if (status < kMinStatus || status > kMaxStatus) return;
  responses_[status - kMinStatus].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::count_publish(amqp::PublishStatus result) {
  static_assert(kPublishStatuses.size() == kPublishResults);
  publishes_[publish_index(result)].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::connection_opened() {
  connections_opened_.fetch_add(1, std::memory_order_relaxed);
  connections_open_.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::connection_closed() { connections_open_.fetch_sub(1, std::memory_order_relaxed); }

std::uint64_t Metrics::responses(unsigned status) const {
  if (status < kMinStatus || status > kMaxStatus) return 0;
  return responses_[status - kMinStatus].load(std::memory_order_relaxed);
}

std::uint64_t Metrics::publishes(amqp::PublishStatus result) const {
  return publishes_[publish_index(result)].load(std::memory_order_relaxed);
}

std::string Metrics::render(bool amqp_connected) const {
  std::ostringstream out;
  out << "# HELP rtmc_api_responses_total HTTP responses sent, by status code.\n"
      << "# TYPE rtmc_api_responses_total counter\n";
  for (unsigned status = kMinStatus; status <= kMaxStatus; ++status) {
    auto count = responses(status);
    if (count != 0) out << "rtmc_api_responses_total{status=\"" << status << "\"} " << count << '\n';
  }
  out << "# HELP rtmc_api_publish_total Publishes to RabbitMQ, by outcome.\n"
      << "# TYPE rtmc_api_publish_total counter\n";
  for (auto result : kPublishStatuses)
    out << "rtmc_api_publish_total{result=\"" << publish_label(result) << "\"} " << publishes(result) << '\n';
  out << "# HELP rtmc_api_connections_total HTTP connections accepted.\n"
      << "# TYPE rtmc_api_connections_total counter\n"
      << "rtmc_api_connections_total " << connections_opened_.load(std::memory_order_relaxed) << '\n'
      << "# HELP rtmc_api_connections_open HTTP connections currently open.\n"
      << "# TYPE rtmc_api_connections_open gauge\n"
      << "rtmc_api_connections_open " << connections_open_.load(std::memory_order_relaxed) << '\n'
      << "# HELP rtmc_api_amqp_connected 1 while the RabbitMQ publisher is connected.\n"
      << "# TYPE rtmc_api_amqp_connected gauge\n"
      << "rtmc_api_amqp_connected " << (amqp_connected ? 1 : 0) << '\n';
  return out.str();
}

}  // namespace rtmc::api
