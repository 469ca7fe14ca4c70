#pragma once
// Why client connections end, which transport carried them, and the
// gateway's connection counters. Counters are atomics: any io thread (and
// the HTTP thread that admits WebSocket upgrades) updates them, the stats
// reader reads.

#include <atomic>
#include <cstdint>

#include "gateway/traffic.hpp"

namespace rtmc::gateway {

// Logged once and counted once per connection (ClientConnection's close
// state makes the second close a no-op).
enum class CloseReason {
  client_closed,
  read_error,
  write_error,
  unauthorized,
  auth_timeout,
  frame_too_large,
  slow_consumer,
  idle_timeout,
  server_shutdown,
  lost_sync,    // frames owed to the client could not be fetched from Redis
  server_full,  // refused at accept: the gateway holds --max-connections
  internal,     // a bug ended the connection (an escaped exception)
  count_
};
const char* to_string(CloseReason reason);

// What carries a connection's frames (gateway/transport.hpp): newline-
// delimited JSON over TCP, or one text message per frame over WebSocket.
enum class TransportKind { tcp, ws, count_ };
const char* to_string(TransportKind kind);
inline constexpr int kTransportKinds = static_cast<int>(TransportKind::count_);
inline constexpr int kCloseReasons = static_cast<int>(CloseReason::count_);

struct GatewayCounters {
  // Indexed by TransportKind.
  std::atomic<std::uint64_t> accepted[kTransportKinds]{};
  // Every transport together. Incremented by whoever admits a connection
  // (the accept loop, the WebSocket upgrade), decremented by the
  // connection's close; compared with --max-connections.
  std::atomic<std::int64_t> open{0};
  // Connections between their close and the end of their close step (the
  // presence clean-up): a stopping gateway waits for these.
  std::atomic<std::int64_t> closing{0};
  // Indexed by TransportKind, then CloseReason.
  std::atomic<std::uint64_t> closed[kTransportKinds][kCloseReasons]{};
  // Source of ClientConnection::id(): unique per gateway process (presence
  // records are keyed by gateway and connection id). fetch_add(1) is the id.
  std::atomic<std::uint64_t> next_connection_id{1};
  // `gap` frames sent to clients, and the seqs they covered (a range lost
  // to one client counts once per client that was owed it).
  std::atomic<std::uint64_t> gaps{0};
  std::atomic<std::uint64_t> gap_seqs{0};
  // Joins with `since`, by whether the log still covered the range.
  std::atomic<std::uint64_t> resumed{0};
  std::atomic<std::uint64_t> not_recovered{0};
  // Frames in and out, deliveries, refusals, publish->confirm latency.
  TrafficCounters traffic;
};

}  // namespace rtmc::gateway
