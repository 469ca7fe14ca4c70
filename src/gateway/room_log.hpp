#pragma once
// Reading a room's recent log ({k}:log:<room>, stream ids <seq>-0) for gap
// repair; shared by the fan-out thread and sessions.

#include "common/keys.hpp"
#include "gateway/session.hpp"
#include "store/redis.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rtmc::gateway {

inline std::vector<std::string> room_log_range(std::uint32_t shard, const std::string& room, std::int64_t from,
                                               std::int64_t to) {
  return {"XRANGE", keys::room_log(shard, room), std::to_string(from) + "-0", std::to_string(to) + "-0"};
}

// The frames of an XRANGE reply in seq order; throws RedisError for an error
// reply.
inline std::vector<std::pair<std::int64_t, SharedFrame>> room_log_frames(const redis::Reply& reply) {
  if (reply.type != redis::Reply::Type::array) throw redis::RedisError("XRANGE failed: " + reply.str);
  std::vector<std::pair<std::int64_t, SharedFrame>> frames;
  frames.reserve(reply.elements.size());
  for (const auto& entry : reply.elements) {
    if (entry.elements.size() != 2 || entry.elements[1].elements.size() < 2) continue;
    frames.emplace_back(std::stoll(entry.elements[0].str),
                        std::make_shared<const std::string>(entry.elements[1].elements[1].str));
  }
  return frames;
}

}  // namespace rtmc::gateway
