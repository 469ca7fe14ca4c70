#pragma once
// One load run: S subscriber connections and P publisher connections against
// either the gateways or a redis-server, all in one room/channel; publishers
// send at a fixed total rate for a fixed time, then the run drains and stops.
//
// Threading: `threads` io_contexts, one thread each; every connection lives on
// one of them and is touched only there. Counters are per thread and merged
// once the threads have stopped; the few values the orchestrating (calling)
// thread polls while running are relaxed atomics.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "stats.hpp"

namespace rtmc::bench {

enum class Target { gateway, redis };

struct LoadConfig {
  Target target = Target::gateway;
  std::vector<HostPort> servers;              // gateways (connections spread round-robin), or the one redis
  std::string room;                           // room, or Redis channel
  std::string subscriber_token;               // gateway only: shared by every subscriber connection
  std::vector<std::string> publisher_tokens;  // gateway only: one per publisher
  std::string run_tag;                        // prefix of message ids, unique per run
  int subscribers = 1000;
  int publishers = 1;
  double rate = 1000;  // messages per second, all publishers together (open loop; unused with window)
  // 0: open loop at `rate`. >0: full speed, each publisher keeps this many
  // messages unanswered (window.hpp) for duration_s.
  int window = 0;
  double duration_s = 10;
  std::size_t body_bytes = 128;
  double drain_s = 3;
  int threads = 2;
  int ramp_in_flight = 256;  // connection handshakes in progress at once
  double connect_timeout_s = 15;
  // Called once everything is delivered (or the drain ran out), while every
  // connection is still open: the moment to sample the server's memory.
  std::function<void()> before_close;
  // Phase changes, for a person watching (called on the calling thread).
  std::function<void(const std::string&)> progress;
};

struct LoadResult {
  int subscribers_connected = 0;
  int publishers_connected = 0;
  std::uint64_t connect_failures = 0;
  std::string first_connect_error;
  double ramp_s = 0;

  std::uint64_t target_messages = 0;
  std::uint64_t published = 0;
  std::uint64_t acked = 0;
  std::uint64_t expected = 0;   // published * subscribers_connected
  std::uint64_t delivered = 0;  // unique (subscriber, message) pairs received
  std::uint64_t duplicates = 0;
  std::uint64_t reordered = 0;        // per subscriber and publisher, a counter below one already seen
  std::uint64_t seq_gaps = 0;         // gateway only
  std::uint64_t seq_regressions = 0;  // gateway only
  std::uint64_t foreign = 0;          // messages whose body is not a bench body
  // Closed by the server during the run (slow_consumer, for example).
  std::uint64_t dropped_subscribers = 0;
  std::uint64_t dropped_publishers = 0;
  std::map<std::string, std::uint64_t> server_errors;  // error code -> count
  std::string first_server_error;

  double publish_span_s = 0;   // first send to last send
  double delivery_span_s = 0;  // first send to last delivery
  bool drained = false;        // every expected delivery and ack arrived before the drain ended
  LatencyHistogram latency;    // send -> receipt, nanoseconds
  double bench_cpu_s = 0;      // this process, from the first send to the stop
};

// Runs to completion; every wait inside is bounded. Throws std::runtime_error
// only for setup failures (for example an unresolvable server name).
LoadResult run_load(const LoadConfig& config);

}  // namespace rtmc::bench
