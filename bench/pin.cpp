#include "pin.hpp"

#include <dirent.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace rtmc::bench {
namespace {

std::optional<long> to_number(std::string_view text) {
  long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::vector<pid_t> numeric_entries(const std::string& directory) {
  std::vector<pid_t> entries;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return entries;
  while (const dirent* entry = ::readdir(dir))
    if (auto number = to_number(entry->d_name)) entries.push_back(static_cast<pid_t>(*number));
  ::closedir(dir);
  return entries;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

cpu_set_t cpu_set(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  return set;
}

}  // namespace

std::optional<pid_t> parent_of_stat(std::string_view stat) {
  // "pid (comm) state ppid ...": comm may hold anything, so the last ')' ends it.
  auto close = stat.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = stat.substr(close + 1);
  std::istringstream fields{std::string(rest)};
  std::string state, ppid;
  if (!(fields >> state >> ppid)) return std::nullopt;
  auto value = to_number(ppid);
  if (!value) return std::nullopt;
  return static_cast<pid_t>(*value);
}

std::vector<pid_t> with_descendants(const std::vector<pid_t>& roots,
                                    const std::vector<std::pair<pid_t, pid_t>>& parents) {
  std::vector<pid_t> out;
  std::set<pid_t> seen;
  for (pid_t root : roots)
    if (seen.insert(root).second) out.push_back(root);
  // Breadth first over the growing list: children of everything found so far.
  for (std::size_t i = 0; i < out.size(); ++i)
    for (const auto& [pid, ppid] : parents)
      if (ppid == out[i] && seen.insert(pid).second) out.push_back(pid);
  return out;
}

std::vector<int> parse_cpu_list(std::string_view text) {
  std::vector<int> cpus;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    auto cpu = to_number(item);
    if (!cpu || *cpu < 0 || *cpu >= CPU_SETSIZE)
      throw std::invalid_argument("bad CPU number '" + std::string(item) + "'");
    cpus.push_back(static_cast<int>(*cpu));
    text.remove_prefix(comma == std::string_view::npos ? text.size() : comma + 1);
  }
  if (cpus.empty()) throw std::invalid_argument("empty CPU list");
  return cpus;
}

std::vector<pid_t> stack_server_pids(const std::string& stack_dir) {
  std::vector<pid_t> pids;
  for (const char* name :
       {"gateway", "api", "syncer", "redis", "rabbitmq", "rabbitmq-beam", "postgres", "epmd"}) {
    std::string text = read_all(stack_dir + "/pids/" + name);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    auto pid = to_number(text);
    if (pid && ::kill(static_cast<pid_t>(*pid), 0) == 0) pids.push_back(static_cast<pid_t>(*pid));
  }
  return pids;
}

PinOutcome pin_process_trees(const std::vector<pid_t>& roots, const std::vector<int>& cpus) {
  std::vector<std::pair<pid_t, pid_t>> parents;
  for (pid_t pid : numeric_entries("/proc"))
    if (auto ppid = parent_of_stat(read_all("/proc/" + std::to_string(pid) + "/stat")))
      parents.emplace_back(pid, *ppid);
  const cpu_set_t set = cpu_set(cpus);
  PinOutcome outcome;
  for (pid_t pid : with_descendants(roots, parents)) {
    auto tasks = numeric_entries("/proc/" + std::to_string(pid) + "/task");
    if (tasks.empty()) continue;
    ++outcome.processes;
    for (pid_t task : tasks) {
      if (::sched_setaffinity(task, sizeof set, &set) == 0) {
        ++outcome.tasks;
      } else {
        outcome.failures.push_back("pid " + std::to_string(pid) + " task " + std::to_string(task) + ": " +
                                   std::strerror(errno));
      }
    }
  }
  return outcome;
}

void pin_self(const std::vector<int>& cpus) {
  const cpu_set_t set = cpu_set(cpus);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    throw std::runtime_error(std::string("sched_setaffinity: ") + std::strerror(errno));
}

std::string affinity_of(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(pid, sizeof set, &set) != 0) return "?";
  std::string out;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    if (!out.empty()) out += ',';
    out += std::to_string(cpu);
  }
  return out;
}

}  // namespace rtmc::bench
