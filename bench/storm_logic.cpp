// The parts of the presence storm that need no sockets: splitting, pacing,
// merging tallies and their pipe format.

#include <algorithm>
#include <cmath>
#include <sstream>

#include "storm.hpp"

namespace rtmc::bench {

void StormTally::merge(const StormTally& other) {
  // Every process is given the same start; a tally without clients has none.
  if (other.clients > 0) start_ns = clients > 0 ? std::min(start_ns, other.start_ns) : other.start_ns;
  clients += other.clients;
  joined += other.joined;
  failed += other.failed;
  dropped += other.dropped;
  presence_joins += other.presence_joins;
  presence_leaves += other.presence_leaves;
  server_errors += other.server_errors;
  last_joined_ns = std::max(last_joined_ns, other.last_joined_ns);
  last_presence_ns = std::max(last_presence_ns, other.last_presence_ns);
  join_latency_max_ns = std::max(join_latency_max_ns, other.join_latency_max_ns);
  join_latency_sum_ns += other.join_latency_sum_ns;
  if (first_error.empty()) first_error = other.first_error;
}

std::string StormTally::to_line() const {
  std::ostringstream out;
  out << clients << ' ' << joined << ' ' << failed << ' ' << dropped << ' ' << presence_joins << ' '
      << presence_leaves << ' ' << server_errors << ' ' << start_ns << ' ' << last_joined_ns << ' '
      << last_presence_ns << ' ' << join_latency_max_ns << ' ' << join_latency_sum_ns << ' ';
  for (char c : first_error) out << (c == '\n' || c == '\r' ? ' ' : c);
  out << '\n';
  return out.str();
}

std::optional<StormTally> StormTally::from_line(std::string_view line) {
  std::istringstream in{std::string(line)};
  StormTally tally;
  in >> tally.clients >> tally.joined >> tally.failed >> tally.dropped >> tally.presence_joins >>
      tally.presence_leaves >> tally.server_errors >> tally.start_ns >> tally.last_joined_ns >>
      tally.last_presence_ns >> tally.join_latency_max_ns >> tally.join_latency_sum_ns;
  if (!in) return std::nullopt;
  if (in.get() != ' ') return std::nullopt;
  std::getline(in, tally.first_error);
  return tally;
}

std::vector<std::pair<int, int>> split_clients(int clients, int per_process) {
  std::vector<std::pair<int, int>> ranges;
  if (clients <= 0) return ranges;
  per_process = std::max(1, per_process);
  int processes = (clients + per_process - 1) / per_process;
  int begin = 0;
  for (int p = 0; p < processes; ++p) {
    int size = clients / processes + (p < clients % processes ? 1 : 0);
    ranges.emplace_back(begin, begin + size);
    begin += size;
  }
  return ranges;
}

std::int64_t start_offset_ns(int index, int clients, double spread_s) {
  if (clients <= 0) return 0;
  return std::llround(spread_s * 1e9 * static_cast<double>(index) / static_cast<double>(clients));
}

std::uint64_t reference_presence_joins(std::uint64_t clients) {
  return clients < 2 ? 0 : clients * (clients - 1) / 2;
}

StormSummary summarize(const StormTally& tally) {
  StormSummary summary;
  auto since_start_s = [&](std::int64_t ns) {
    return ns > tally.start_ns ? static_cast<double>(ns - tally.start_ns) / 1e9 : 0.0;
  };
  summary.all_joined_s = since_start_s(tally.last_joined_ns);
  summary.last_presence_s = since_start_s(tally.last_presence_ns);
  std::uint64_t presence = tally.presence_joins + tally.presence_leaves;
  if (summary.last_presence_s > 0)
    summary.presence_per_s = static_cast<double>(presence) / summary.last_presence_s;
  if (tally.joined > 0)
    summary.mean_join_latency_ms =
        static_cast<double>(tally.join_latency_sum_ns) / 1e6 / static_cast<double>(tally.joined);
  summary.max_join_latency_ms = static_cast<double>(tally.join_latency_max_ns) / 1e6;
  return summary;
}

}  // namespace rtmc::bench
