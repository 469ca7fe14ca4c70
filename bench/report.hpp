#pragma once
// The side-by-side result table (and its JSON form) of a bench invocation.

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "load.hpp"
#include "processes.hpp"

namespace rtmc::bench {

struct RunReport {
  std::string name;  // "gateway", "redis"
  bool ran = false;
  std::string not_run_reason;
  bool has_seq = false;  // the gateway numbers messages; Redis does not
  LoadResult load;
  // Server process(es), summed when there are several gateways.
  std::optional<ProcessSample> server_before;  // before connecting
  std::optional<ProcessSample> server_after;   // after the drain, connections still open
};

struct BenchParameters {
  int subscribers = 0;
  int publishers = 0;
  double rate = 0;
  double duration_s = 0;
  std::size_t body_bytes = 0;
  int threads = 0;
  std::string room;
  int window = 0;  // full speed with this window per publisher; 0 = open loop at `rate`
};

void print_report(std::FILE* out, const BenchParameters& parameters, const std::vector<RunReport>& runs);
std::string report_json(const BenchParameters& parameters, const std::vector<RunReport>& runs);

}  // namespace rtmc::bench
