#pragma once
// Counters of the api, shared by every io thread (relaxed atomics: they are
// monotonic totals read only for /metrics) and rendered as Prometheus text.

#include "store/amqp.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace rtmc::api {

class Metrics {
 public:
  // Every response written, by status (including those the HTTP layer makes
  // itself: 413 over the body limit, 431, 400 for unparsable requests).
  void count_response(unsigned status);
  void count_publish(amqp::PublishStatus result);
  void connection_opened();
  void connection_closed();

  std::uint64_t responses(unsigned status) const;
  std::uint64_t publishes(amqp::PublishStatus result) const;

  // `amqp_connected` is sampled by the caller at render time.
  std::string render(bool amqp_connected) const;

 private:
  static constexpr unsigned kMinStatus = 100;
  static constexpr unsigned kMaxStatus = 599;
  static constexpr std::size_t kPublishResults = 4;

  std::array<std::atomic<std::uint64_t>, kMaxStatus - kMinStatus + 1> responses_{};
  std::array<std::atomic<std::uint64_t>, kPublishResults> publishes_{};
  std::atomic<std::uint64_t> connections_opened_{0};
  std::atomic<std::int64_t> connections_open_{0};
};

}  // namespace rtmc::api
