#pragma once
// Why client connections end, and the gateway's connection counters.
// Counters are atomics: any io thread updates them, the stats reader reads.

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

struct GatewayCounters {
  std::atomic<std::uint64_t> accepted{0};
  // Incremented by whoever admits a connection (the accept loop), decremented
  // by the connection's close; compared with --max-connections.
  std::atomic<std::int64_t> open{0};
  // Connections between their close and the end of their close step (the
  // presence clean-up): a stopping gateway waits for these.
  std::atomic<std::int64_t> closing{0};
  std::atomic<std::uint64_t> closed[static_cast<int>(CloseReason::count_)]{};
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
