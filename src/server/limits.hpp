#pragma once
// The open-file limit, which bounds how many connections a process can hold.
// Every role raises its soft RLIMIT_NOFILE to the hard limit at start (each
// connection costs a descriptor) and derives its default connection cap from
// the result, keeping a reserve for its own files (backend connections,
// eventfds, epoll, logs).
//
// Threading: call raise_open_file_limit() from main before threads start.

#include <cstddef>
#include <cstdint>

namespace rtmc::server {

// Descriptors kept back from the connection cap for the process's own use.
inline constexpr std::size_t kOwnFilesReserve = 64;

struct OpenFileLimit {
  std::uint64_t soft = 0;
  std::uint64_t hard = 0;
};

// Raises the soft limit to the hard one (when allowed) and returns the limit
// in force afterwards. Never throws; a failed raise leaves the old limit.
OpenFileLimit raise_open_file_limit();
// The limit in force now.
OpenFileLimit open_file_limit();

// Connections the current soft limit allows, less `reserve` (at least 1).
std::size_t connection_cap_from_open_files(std::size_t reserve = kOwnFilesReserve);

}  // namespace rtmc::server
