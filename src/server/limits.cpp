#include "server/limits.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <limits>

namespace rtmc::server {

OpenFileLimit open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  return {static_cast<std::uint64_t>(limit.rlim_cur), static_cast<std::uint64_t>(limit.rlim_max)};
}

OpenFileLimit raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  return open_file_limit();
}

std::size_t connection_cap_from_open_files(std::size_t reserve) {
  const auto soft = open_file_limit().soft;
  // RLIM_INFINITY (or a failed getrlimit) leaves no usable bound: the kernel's
  // per-process maximum still applies, so EMFILE handling covers it.
  if (soft == 0 || soft == static_cast<std::uint64_t>(RLIM_INFINITY))
    return std::numeric_limits<std::size_t>::max();
  const auto usable = static_cast<std::size_t>(soft);
  return usable > reserve ? usable - reserve : 1;
}

}  // namespace rtmc::server
