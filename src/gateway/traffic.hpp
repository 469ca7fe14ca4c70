#pragma once
// The gateway's traffic counters: frames in and out by type, deliveries by
// kind, rate-limit refusals and the publish->confirm latency of client
// sends. Plain atomics indexed by enums (no label lookup on any path); the
// fan-out's deliveries are added once per io-thread batch, never per frame.
// Rendered at scrape time (add_traffic_metrics) as
//   rtmc_gateway_frames_in_total{type}       client frames read, by type
//       (auth join leave send ping status members history refresh, `invalid` for
//       frames that did not parse)
//   rtmc_gateway_frames_out_total{type}      frames queued to clients as
//       replies, by type (auth_ok joined left ack pong error status members
//       history refreshed, `other`); live deliveries are the next family
//   rtmc_gateway_deliveries_total{kind}      frames the fan-out handed to
//       local connections (one per member): message, gap, presence
//   rtmc_gateway_rate_limited_total          sends refused `rate_limited`
//   rtmc_gateway_errors_sent_total{code}     error frames sent, by code
//   rtmc_gateway_publish_confirm_seconds     histogram: publish of a client
//       send to RabbitMQ's confirm (confirmed ones only)
//
// Threading: every member from any thread (relaxed atomics).

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

#include "common/metrics.hpp"
#include "protocol/frames.hpp"

namespace rtmc::gateway {

enum class FrameIn { auth, join, leave, send, ping, status, members, history, refresh, invalid, count_ };
enum class FrameOut {
  auth_ok,
  joined,
  left,
  ack,
  pong,
  error,
  status,
  members,
  history,
  refreshed,
  other,
  count_
};
enum class DeliveryKind { message, gap, presence, count_ };

const char* to_string(FrameIn type);
const char* to_string(FrameOut type);
const char* to_string(DeliveryKind kind);

FrameIn frame_in_type(const protocol::Request& request);
// The type of a server frame from its first bytes ({"type":"..."), without
// parsing it.
FrameOut frame_out_type(std::string_view frame);

// Frames handed out by one io-thread batch, by kind.
using DeliveryCounts = std::array<std::uint64_t, static_cast<std::size_t>(DeliveryKind::count_)>;

// Error codes as an index (protocol::ErrorCode is a dense enum from 0).
inline constexpr std::size_t kErrorCodes = static_cast<std::size_t>(protocol::ErrorCode::not_found) + 1;

struct TrafficCounters {
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(FrameIn::count_)> frames_in{};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(FrameOut::count_)> frames_out{};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(DeliveryKind::count_)> deliveries{};
  std::array<std::atomic<std::uint64_t>, kErrorCodes> errors_sent{};
  std::atomic<std::uint64_t> rate_limited{0};
  metrics::Histogram publish_confirm{metrics::latency_buckets()};

  void count_in(FrameIn type) {
    frames_in[static_cast<std::size_t>(type)].fetch_add(1, std::memory_order_relaxed);
  }
  void count_out(std::string_view frame) {
    frames_out[static_cast<std::size_t>(frame_out_type(frame))].fetch_add(1, std::memory_order_relaxed);
  }
  void count_error(protocol::ErrorCode code) {
    errors_sent[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  void count_deliveries(const DeliveryCounts& counts) {
    for (std::size_t i = 0; i < counts.size(); ++i)
      if (counts[i] != 0) deliveries[i].fetch_add(counts[i], std::memory_order_relaxed);
  }
};

// Adds the families above to `registry`, read from `counters` (which must
// outlive the registry's scrapes).
void add_traffic_metrics(metrics::Registry& registry, const TrafficCounters& counters);

}  // namespace rtmc::gateway
