#pragma once
// What the load generator puts on and reads from the wire, without I/O:
// stamped message bodies, gateway frames (with a fast path for the message
// frames that dominate the traffic) and the RESP subset used for Redis
// pub/sub.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rtmc::bench {

// A body identifies its message and carries its send time, so receivers can
// count duplicates and latency for Redis (which has no ids) the same way as
// for the gateway: "<publisher>:<counter>:<steady_ns>:" padded with 'x'.
struct BodyStamp {
  std::uint32_t publisher = 0;
  std::uint64_t counter = 0;
  std::int64_t send_ns = 0;  // steady_clock, this process
};
// The smallest body that fits any stamp.
constexpr std::size_t kMinBodyBytes = 48;
// Appends a body of exactly `body_bytes` (>= kMinBodyBytes) bytes.
void append_body(std::string& out, const BodyStamp& stamp, std::size_t body_bytes);
std::optional<BodyStamp> parse_body(std::string_view body);

// Gateway frames the bench sends (each ends in '\n'). Ids are
// "<run_tag>-<publisher>-<counter>".
void append_send_frame(std::string& out, std::string_view room, std::string_view run_tag,
                       const BodyStamp& stamp, std::size_t body_bytes);
std::string auth_frame(std::string_view token);
std::string join_frame(std::string_view room);
std::string ping_frame();

struct GatewayLine {
  enum class Kind { message, ack, auth_ok, joined, pong, error, presence, other, unreadable };
  Kind kind = Kind::unreadable;
  std::int64_t seq = 0;            // message, joined
  std::optional<BodyStamp> stamp;  // message, when its body is a bench body
  int heartbeat_s = 0;             // auth_ok
  std::string code;                // error
  std::string message;             // error
  std::string event;               // presence: "join" or "leave"
};
// Message, ack and presence frames are recognised without a JSON parser (they are most
// of the traffic); anything that does not match the fast path is parsed in full.
GatewayLine parse_gateway_line(std::string_view line);

// Redis commands (RESP arrays of bulk strings).
void append_publish_command(std::string& out, std::string_view channel, const BodyStamp& stamp,
                            std::size_t body_bytes);
std::string subscribe_command(std::string_view channel);

// One RESP reply: a simple string '+', error '-', integer ':', bulk string '$'
// (null when is_null), or an array '*' of up to kMaxItems such scalars (nested
// arrays are not needed for pub/sub and are refused). Views point into the input.
struct RespReply {
  static constexpr std::size_t kMaxItems = 4;
  struct Scalar {
    char kind = 0;
    std::int64_t integer = 0;
    std::string_view text;
    bool is_null = false;
  };
  Scalar head;  // for arrays: kind '*' and integer = item count
  std::array<Scalar, kMaxItems> items{};
};
// Parses one reply at the start of `input`: the bytes it used, or 0 when the
// input ends before the reply does. Throws std::runtime_error on malformed input.
std::size_t parse_resp(std::string_view input, RespReply& reply);

}  // namespace rtmc::bench
