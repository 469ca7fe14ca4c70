#pragma once
// Goal 5's load side: many idle authenticated connections, and the bench
// users they need without the HTTP path.
//
//  - `--connections N`: N clients connect and authenticate as fast as
//    --ramp-in-flight allows (the connect+auth storm), then stay idle
//    (a ping every heartbeat/2). Reports the storm time and the gateways'
//    RSS before and after, per connection. Above --conn-per-process the
//    clients are split over forked processes (each under the 20,000
//    open-file limit), each bound to its own loopback source address
//    (--source-addrs 127.0.0.2-127.0.0.7) so the source ports of one
//    address are not exhausted; several gateways may share one port
//    (SO_REUSEPORT) or be listed with --gateway.
//  - Tokens are minted here: users <prefix>0..N-1, an HS256 token each
//    signed with the stack's JWT secret and a session:<jti> key written to
//    Redis, exactly what the api's login leaves behind, so a storm needs no
//    HTTP and no Argon2 verify per user.
//  - `--seed-users N`: the same users in PostgreSQL, all with one Argon2id
//    hash of one password, so the HTTP login (and the presence storm's
//    sign-in) finds them without N registrations.
//
// Threading: the run functions are called from main with no other thread
// running (they may fork). Inside a process, `threads` io_contexts with one
// thread each; every connection is touched only on its own; the counters the
// calling thread reads while they run are relaxed atomics.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.hpp"

namespace CLI {
class App;
}

namespace rtmc::bench {

// What one process (or, merged, the whole run) measured.
struct ConnsTally {
  std::uint64_t clients = 0;
  std::uint64_t authenticated = 0;  // auth_ok received
  std::uint64_t failed = 0;         // no auth_ok (connect, auth refused, timeout)
  std::uint64_t dropped = 0;        // closed by the server after auth_ok
  std::uint64_t retries = 0;        // auths sent again after `unavailable` (the server asks for a retry)
  std::int64_t start_ns = 0;        // steady_clock (CLOCK_MONOTONIC): the storm's start
  std::int64_t last_auth_ns = 0;
  std::int64_t handshake_max_ns = 0;  // one client's connect -> auth_ok
  std::int64_t handshake_sum_ns = 0;
  std::string first_error;

  void merge(const ConnsTally& other);
  // One line for the pipe from a child process; the error text comes last.
  std::string to_line() const;
  static std::optional<ConnsTally> from_line(std::string_view line);
  // start -> last auth_ok, seconds (0 when nobody authenticated).
  double storm_s() const;
};

// "127.0.0.2-127.0.0.7" (IPv4, last octet varies) or "a,b,c"; "" -> none.
// Throws std::invalid_argument.
std::vector<std::string> parse_source_addresses(std::string_view text);

// (after - before) / connections in KiB; 0 without connections.
double kib_per_connection(std::uint64_t before_kib, std::uint64_t after_kib, std::uint64_t connections);

struct ConnsOptions {
  int connections = 0;  // 0: scenario off
  int seed_users = 0;   // 0: off
  std::string user_prefix = "conn";
  int per_process = 19000;
  std::string source_addresses;
  double settle_s = 2;  // after the storm, before sampling the gateways
  double hold_s = 0;    // after sampling, before closing
  double token_ttl_s = 3600;
  std::string jwt_secret_file;  // default STACK_DIR/jwt-secret
  std::string redis_url_file;   // default STACK_DIR/secrets/redis.url
  std::string pg_file;          // default STACK_DIR/secrets/pg.conninfo
};
void add_conns_options(CLI::App& app, ConnsOptions& options);

// What the scenario takes from the common options of rtmc-bench.
struct ConnsContext {
  std::vector<HostPort> gateways;
  std::vector<int> gateway_pids;
  std::string stack_dir;
  int threads = 2;
  int ramp_in_flight = 256;
  double connect_timeout_s = 15;
  std::string json_path;
  std::function<void(const std::string&)> progress;
};
// The exit status of the command.
int run_connections_command(const ConnsOptions& options, const ConnsContext& context);
int run_seed_command(const ConnsOptions& options, const ConnsContext& context);

}  // namespace rtmc::bench
