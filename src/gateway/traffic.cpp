#include "gateway/traffic.hpp"

#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace rtmc::gateway {

const char* to_string(FrameIn type) {
  switch (type) {
    case FrameIn::auth: return "auth";
    case FrameIn::join: return "join";
    case FrameIn::leave: return "leave";
    case FrameIn::send: return "send";
    case FrameIn::ping: return "ping";
    case FrameIn::status: return "status";
    case FrameIn::members: return "members";
    case FrameIn::history: return "history";
    case FrameIn::refresh: return "refresh";
    case FrameIn::invalid: return "invalid";
    case FrameIn::count_: break;
  }
  return "invalid";
}

const char* to_string(FrameOut type) {
  switch (type) {
    case FrameOut::auth_ok: return "auth_ok";
    case FrameOut::joined: return "joined";
    case FrameOut::left: return "left";
    case FrameOut::ack: return "ack";
    case FrameOut::pong: return "pong";
    case FrameOut::error: return "error";
    case FrameOut::status: return "status";
    case FrameOut::members: return "members";
    case FrameOut::history: return "history";
    case FrameOut::refreshed: return "refreshed";
    case FrameOut::other: return "other";
    case FrameOut::count_: break;
  }
  return "other";
}

const char* to_string(DeliveryKind kind) {
  switch (kind) {
    case DeliveryKind::message: return "message";
    case DeliveryKind::gap: return "gap";
    case DeliveryKind::presence: return "presence";
    case DeliveryKind::count_: break;
  }
  return "message";
}

FrameIn frame_in_type(const protocol::Request& request) {
  // A new request type must get its own label here, not fall into another.
  static_assert(std::variant_size_v<protocol::Request> == 9,
                "a new client frame type: add it to FrameIn (gateway/traffic.hpp)");
  return std::visit(
      [](const auto& r) {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, protocol::AuthRequest>) return FrameIn::auth;
        if constexpr (std::is_same_v<T, protocol::JoinRequest>) return FrameIn::join;
        if constexpr (std::is_same_v<T, protocol::LeaveRequest>) return FrameIn::leave;
        if constexpr (std::is_same_v<T, protocol::SendRequest>) return FrameIn::send;
        if constexpr (std::is_same_v<T, protocol::PingRequest>) return FrameIn::ping;
        if constexpr (std::is_same_v<T, protocol::StatusRequest>) return FrameIn::status;
        if constexpr (std::is_same_v<T, protocol::MembersRequest>) return FrameIn::members;
        if constexpr (std::is_same_v<T, protocol::HistoryRequest>) return FrameIn::history;
        if constexpr (std::is_same_v<T, protocol::RefreshRequest>) return FrameIn::refresh;
        return FrameIn::invalid;
      },
      request);
}

FrameOut frame_out_type(std::string_view frame) {
  constexpr std::string_view kPrefix = R"({"type":")";
  if (frame.substr(0, kPrefix.size()) != kPrefix) return FrameOut::other;
  frame.remove_prefix(kPrefix.size());
  const auto type = frame.substr(0, frame.find('"'));
  for (int i = 0; i < static_cast<int>(FrameOut::other); ++i)
    if (type == to_string(static_cast<FrameOut>(i))) return static_cast<FrameOut>(i);
  return FrameOut::other;
}

void add_traffic_metrics(metrics::Registry& registry, const TrafficCounters& counters) {
  registry.add_collector([&counters] {
    auto read = [](const std::atomic<std::uint64_t>& value) {
      return static_cast<double>(value.load(std::memory_order_relaxed));
    };
    std::vector<metrics::Sample> in;
    for (std::size_t i = 0; i < counters.frames_in.size(); ++i)
      in.push_back({{{"type", to_string(static_cast<FrameIn>(i))}}, read(counters.frames_in[i])});
    std::vector<metrics::Sample> out;
    for (std::size_t i = 0; i < counters.frames_out.size(); ++i)
      out.push_back({{{"type", to_string(static_cast<FrameOut>(i))}}, read(counters.frames_out[i])});
    std::vector<metrics::Sample> deliveries;
    for (std::size_t i = 0; i < counters.deliveries.size(); ++i)
      deliveries.push_back(
          {{{"kind", to_string(static_cast<DeliveryKind>(i))}}, read(counters.deliveries[i])});
    std::vector<metrics::Sample> errors;
    for (std::size_t i = 0; i < counters.errors_sent.size(); ++i)
      errors.push_back({{{"code", protocol::to_string(static_cast<protocol::ErrorCode>(i))}},
                        read(counters.errors_sent[i])});
    return std::vector{
        metrics::counter_family("rtmc_gateway_frames_in_total", "Client frames read, by type.", in),
        metrics::counter_family("rtmc_gateway_frames_out_total",
                                "Frames queued to clients as replies, by type (deliveries apart).", out),
        metrics::counter_family("rtmc_gateway_deliveries_total",
                                "Frames the fan-out handed to local connections, one per member, by kind.",
                                deliveries),
        metrics::counter_family("rtmc_gateway_rate_limited_total", "Client sends refused rate_limited.",
                                {{{}, read(counters.rate_limited)}}),
        metrics::counter_family("rtmc_gateway_errors_sent_total", "Error frames sent to clients, by code.",
                                errors),
        metrics::histogram_family("rtmc_gateway_publish_confirm_seconds",
                                  "Seconds from the publish of a client send to RabbitMQ's confirm.",
                                  {{{}, &counters.publish_confirm}})};
  });
}

}  // namespace rtmc::gateway
