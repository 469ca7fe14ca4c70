#pragma once
// `--pin`: the servers on one CPU, the load generator on another, so a
// comparison on a two-core machine does not let either side borrow the
// other's core. Affinity is set per thread (Linux keeps it per task), so a
// process is pinned by pinning every task in /proc/PID/task, and its
// children too (PostgreSQL backends, RabbitMQ's helpers); tasks created later
// inherit the affinity of their creator. Nothing is restored afterwards.
//
// Threading: call pin_self before any thread of this process starts (new
// threads inherit it); the rest may be called from any thread.

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rtmc::bench {

// The parent PID in the text of /proc/PID/stat (the command name in
// parentheses may itself contain spaces and parentheses).
std::optional<pid_t> parent_of_stat(std::string_view stat);
// `roots` and every descendant of them in `parents` ((pid, ppid) pairs),
// each once, roots first.
std::vector<pid_t> with_descendants(const std::vector<pid_t>& roots,
                                    const std::vector<std::pair<pid_t, pid_t>>& parents);
// "0", "1", "0,2" -> CPU numbers; throws std::invalid_argument.
std::vector<int> parse_cpu_list(std::string_view text);

// The PIDs recorded by scripts/stack.sh and scripts/services.sh under
// STACK_DIR/pids (gateway, api, syncer, redis, rabbitmq, rabbitmq-beam,
// postgres, epmd) that are alive; missing files are skipped.
std::vector<pid_t> stack_server_pids(const std::string& stack_dir);

struct PinOutcome {
  int processes = 0;
  int tasks = 0;
  std::vector<std::string> failures;  // "pid 123: Operation not permitted"
};
// Pins every task of `roots` and of all their descendants to `cpus`.
PinOutcome pin_process_trees(const std::vector<pid_t>& roots, const std::vector<int>& cpus);
// Pins the calling thread (and so every thread it starts later); throws
// std::runtime_error when the kernel refuses.
void pin_self(const std::vector<int>& cpus);
// "0-1" style list of the CPUs `pid` may run on, for the report.
std::string affinity_of(pid_t pid);

}  // namespace rtmc::bench
