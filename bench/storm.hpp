#pragma once
// The presence storm: N clients, each its own user, connect, authenticate and
// join one room spread evenly over about a second; every member receives a
// `presence` join frame for each user who joins after it (about N*(N-1)/2 in
// all). Measures the time until all are joined, the presence frames received
// and their rate.
//
// Above `per_process` clients the run is split over forked processes (each
// keeps under ~20,000 descriptors); their tallies come back over pipes and are
// merged. Times are steady_clock (CLOCK_MONOTONIC) nanoseconds, which the
// processes of one machine share.
//
// Threading: run_storm is called from main with no other thread running (it
// may fork). Inside a process, `threads` io_contexts with one thread each;
// every connection is touched only on its own; the counters the calling
// thread reads while they run are relaxed atomics.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.hpp"

namespace rtmc::bench {

struct StormConfig {
  std::vector<HostPort> servers;  // clients spread round-robin
  std::string room;
  std::vector<std::string> tokens;  // one per client (one user each)
  double spread_s = 1.0;            // client i starts at start + i * spread_s / N
  int per_process = 15000;
  int threads = 2;                // io threads per process
  double connect_timeout_s = 15;  // one client's connect+auth+join
  double quiet_s = 3;             // after all joined: stop once no presence frame came this long
  double max_wait_s = 120;        // after all joined: stop at the latest then
  // Called once the storm settled, while every connection is still open.
  std::function<void()> before_close;
  std::function<void(const std::string&)> progress;
};

// What one process (or, merged, the whole run) measured.
struct StormTally {
  std::uint64_t clients = 0;
  std::uint64_t joined = 0;
  std::uint64_t failed = 0;   // no `joined` (connect, auth or join failed or timed out)
  std::uint64_t dropped = 0;  // closed by the server after joining
  std::uint64_t presence_joins = 0;
  std::uint64_t presence_leaves = 0;
  std::uint64_t server_errors = 0;
  std::int64_t start_ns = 0;  // when client 0 was due
  std::int64_t last_joined_ns = 0;
  std::int64_t last_presence_ns = 0;
  std::int64_t join_latency_max_ns = 0;  // a client's connect -> joined
  std::int64_t join_latency_sum_ns = 0;
  std::string first_error;

  void merge(const StormTally& other);
  // One line for the pipe from a child process; the error text comes last.
  std::string to_line() const;
  static std::optional<StormTally> from_line(std::string_view line);
};

// [begin, end) of client indices per process, none above `per_process`, sizes
// differing by at most one.
std::vector<std::pair<int, int>> split_clients(int clients, int per_process);
// When client i of n is due, after the start.
std::int64_t start_offset_ns(int index, int clients, double spread_s);
// Join frames if each pair of users is seen by exactly one of them (the
// earlier joiner learns of the later one): n*(n-1)/2. With concurrent joins a
// pair may be seen twice or not at all, so this is a reference, not a bound.
std::uint64_t reference_presence_joins(std::uint64_t clients);

struct StormSummary {
  double all_joined_s = 0;     // start -> last joined
  double last_presence_s = 0;  // start -> last presence frame received
  double presence_per_s = 0;   // presence frames / last_presence_s
  double mean_join_latency_ms = 0;
  double max_join_latency_ms = 0;
};
StormSummary summarize(const StormTally& tally);

// Registers each user (a taken name is fine, the api's 429 is waited out) and
// logs it in, `concurrency` at a time; the tokens in the order of `users`.
// Throws chat::ApiError or boost::system::system_error when the api refuses or fails.
std::vector<std::string> sign_in_users(const std::string& api, const std::vector<std::string>& users,
                                       const std::string& password, int concurrency,
                                       const std::function<void(const std::string&)>& progress);

// Runs the storm to completion (every wait is bounded). Throws
// std::runtime_error for setup failures (unresolvable server, fork failure).
StormTally run_storm(const StormConfig& config);

}  // namespace rtmc::bench
