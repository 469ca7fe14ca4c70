#include "common/keys.hpp"

namespace rtmc {

std::uint32_t shard_of(std::string_view room, std::uint32_t shards) {
  std::uint32_t hash = 2166136261u;
  for (unsigned char c : room) {
    hash ^= c;
    hash *= 16777619u;
  }
  return shards == 0 ? 0 : hash % shards;
}

std::string ingest_queue(std::uint32_t shard) { return "rtmc.ingest." + std::to_string(shard); }

namespace keys {
namespace {
std::string tag(std::uint32_t shard) { return "{" + std::to_string(shard) + "}"; }
}  // namespace

std::string session(std::string_view jti) { return "session:" + std::string(jti); }
std::string room_seq(std::uint32_t shard, std::string_view room) {
  return tag(shard) + ":seq:" + std::string(room);
}
std::string room_log(std::uint32_t shard, std::string_view room) {
  return tag(shard) + ":log:" + std::string(room);
}
// Rooms and user names cannot contain ':' but ids can, so the id goes last to
// keep the key unambiguous.
std::string dedupe(std::uint32_t shard, std::string_view room, std::string_view sender,
                   std::string_view id) {
  return tag(shard) + ":dedupe:" + std::string(room) + ":" + std::string(sender) + ":" +
         std::string(id);
}
std::string sync_stream(std::uint32_t shard) { return tag(shard) + ":sync"; }
}  // namespace keys

}  // namespace rtmc
