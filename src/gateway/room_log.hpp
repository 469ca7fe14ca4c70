#pragma once
// Forwards to the rooms store (store/rooms.hpp), the one home of a room's
// Redis data, for code that still includes this header.

#include <cstdint>
#include <string>
#include <vector>

#include "store/rooms.hpp"

namespace rtmc::gateway {

inline std::vector<std::string> room_log_range(std::uint32_t shard, const std::string& room,
                                               std::int64_t from, std::int64_t to) {
  return rooms::read_log_command(shard, room, from, to);
}

// The frames of an XRANGE reply in seq order; throws rooms::BadRoomData for
// an error reply.
inline rooms::LogFrames room_log_frames(const redis::Reply& reply) {
  return rooms::parse_log(reply);
}

}  // namespace rtmc::gateway
