#pragma once
// The many-rooms scenario (issue 8, goal 6): N gateways, C connections on
// each, every connection in K rooms of R, each room's M = N*C*K/R members on
// G of the gateways (G = --rooms-spread). Each connection is also a
// publisher: P msg/s in total go to random rooms, each sent by a random
// member of the room. Reports deliveries, deliveries/s and latency, and per
// gateway what its fan-out queue received (rtmc_gateway_fanout_frames_total
// from its /metrics) against the total published, with the rooms it had
// bound.
//
// Threading: `threads` io_contexts, one thread each; a connection is touched
// only on its own. Per-thread tallies are merged after the threads stop.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/config.hpp"

namespace CLI {
class App;
}

namespace rtmc::bench {

// The scenario's command line (rtmc-bench --rooms ...); the common flags
// (--api, --gateway, -r, -d, --body-bytes, --drain-s, --threads,
// --ramp-in-flight, --gateway-pid) come from main.
struct RoomsOptions {
  bool enabled = false;
  int connections_per_gateway = 2500;
  int rooms_per_connection = 10;
  int rooms = 10000;
  int spread = 2;
  std::string gateway_http;  // host:port list, one per --gateway
  std::string spawn_binary;  // start the gateways: rtmc-gateway path
  int spawn_count = 4;
  int spawn_base_port = 7100;
};
void add_rooms_options(CLI::App& app, RoomsOptions& options);

struct CommonLoad {
  std::string api;
  std::string gateways;
  std::vector<int> gateway_pids;
  double rate = 2000;
  double duration_s = 10;
  std::size_t body_bytes = 128;
  double drain_s = 3;
  int threads = 2;
  int ramp_in_flight = 256;
  std::function<void(const std::string&)> progress;
};
// Signs in one user, starts the gateways if asked, runs, prints; the exit code.
int rooms_main(const RoomsOptions& options, const CommonLoad& load);

struct RoomsConfig {
  std::vector<HostPort> gateways;      // client ports
  std::vector<HostPort> gateway_http;  // their /metrics, same order
  std::vector<pid_t> gateway_pids;     // optional: CPU and RSS per gateway
  std::string token;                   // one user for every connection
  std::string run_tag;                 // room names and message ids
  int connections_per_gateway = 2500;
  int rooms_per_connection = 10;
  int rooms = 10000;
  int spread = 2;  // gateways a room's members are on
  double rate = 2000;
  double duration_s = 10;
  std::size_t body_bytes = 128;
  double drain_s = 3;
  int threads = 2;
  int ramp_in_flight = 256;
  std::function<void(const std::string&)> progress;
};

// Which rooms connection `local` of gateway `gateway` joins (indices into
// 0..rooms-1): `rooms_per_connection` distinct rooms, so that every room gets
// members = gateways*connections*K/rooms, split over `spread`
// consecutive gateways (room r on gateways r, r+1, ... mod gateways; the
// shares differ by at most one).
// Throws std::invalid_argument when the numbers do not divide.
std::vector<int> rooms_of_connection(int gateway, int local, int gateways, int connections_per_gateway,
                                     int rooms_per_connection, int rooms, int spread);

// Runs the scenario and prints its report to stdout; returns the process
// exit code (0 when every acked message reached every member).
int run_rooms(const RoomsConfig& config);

// Starts `count` rtmc-gateway processes (`binary`, the environment of this
// process for their configuration) on 127.0.0.1:base_port+i with HTTP on
// base_port+1000+i, and waits until each answers /healthz. Stopped (SIGTERM,
// by PID) by the destructor.
class GatewayProcesses {
 public:
  GatewayProcesses(const std::string& binary, int count, std::uint16_t base_port,
                   const std::vector<std::string>& extra_args);
  ~GatewayProcesses();
  GatewayProcesses(const GatewayProcesses&) = delete;
  GatewayProcesses& operator=(const GatewayProcesses&) = delete;
  std::vector<HostPort> clients() const;
  std::vector<HostPort> http() const;
  const std::vector<pid_t>& pids() const { return pids_; }

 private:
  std::uint16_t base_port_;
  std::vector<pid_t> pids_;
};

}  // namespace rtmc::bench
