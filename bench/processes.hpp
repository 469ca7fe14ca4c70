#pragma once
// The processes around a bench run: the redis-server it starts for the
// comparison, the memory/CPU figures of a server process read from /proc, and
// the pipes between a load run and the worker processes it forks.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace rtmc::bench {

// A private redis-server on a free loopback port, without persistence. Stopped
// (SIGTERM, then SIGKILL after 5 s) by the destructor, by its PID only; it
// also gets SIGTERM if this process dies first.
class RedisServer {
 public:
  // Throws std::runtime_error when it cannot start or does not answer PING
  // within 10 s.
  RedisServer(const std::string& executable, int max_clients);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Idempotent; the log file is removed after a clean stop.
  void stop();

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string log_path_;
};

struct ProcessSample {
  std::uint64_t rss_kib = 0;       // VmRSS
  std::uint64_t peak_rss_kib = 0;  // VmHWM
  double cpu_s = 0;                // user + system since the process started
};
// nullopt when the process does not exist or /proc cannot be read.
std::optional<ProcessSample> sample_process(pid_t pid);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
std::uint64_t raise_fd_limit();

// A forked load worker as its parent sees it: it writes one tally line, then
// waits for one byte (or EOF) on its pipe before closing its connections.
struct Child {
  pid_t pid = -1;
  int from_child = -1;  // its tally line
  int to_child = -1;    // one byte (or EOF): close the connections now
  std::pair<int, int> range;
};

// One line from a pipe, without its '\n' (what was read before EOF or an
// error otherwise); retries on EINTR.
std::string read_line_from(int fd);
// Writes all of `data`, retrying on EINTR; stops silently when the reader is
// gone (the parent sees a missing tally).
void write_all(int fd, std::string_view data);

}  // namespace rtmc::bench
