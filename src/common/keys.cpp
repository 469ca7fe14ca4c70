#include "common/keys.hpp"

#include <initializer_list>

#include "common/names.hpp"

namespace rtmc {

std::uint32_t shard_of(std::string_view room, std::uint32_t shards) {
  std::uint32_t hash = 2166136261u;
  for (unsigned char c : room) {
    hash ^= c;
    hash *= 16777619u;
  }
  return shards == 0 ? 0 : hash % shards;
}

namespace {
// Appending instead of operator+ chains: GCC 12 reports a false -Wrestrict on
// `"literal" + std::string`.
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto part : parts) out.append(part);
  return out;
}
}  // namespace

std::string ingest_queue(std::uint32_t shard) {
  return concat({"rtmc.ingest.", std::to_string(shard)});
}

namespace keys {
namespace {
std::string tag(std::uint32_t shard) {
  return concat({"{", std::to_string(shard), "}"});
}
}  // namespace

std::string session(std::string_view jti) {
  return concat({"session:", jti});
}
std::string room_seq(std::uint32_t shard, std::string_view room) {
  return concat({tag(shard), ":seq:", room});
}
std::string room_log(std::uint32_t shard, std::string_view room) {
  return concat({tag(shard), ":log:", room});
}
std::string room_seq_mark(std::uint32_t shard, std::string_view room) {
  return concat({tag(shard), ":seqmark:", room});
}
// Rooms and user names cannot contain ':' but ids can, so the id goes last to
// keep the key unambiguous.
std::string dedupe(std::uint32_t shard, std::string_view room, std::string_view sender, std::string_view id) {
  return concat({tag(shard), ":dedupe:", room, ":", sender, ":", id});
}
std::string sync_stream(std::uint32_t shard) {
  return concat({tag(shard), ":sync"});
}
std::string rate_limit(std::string_view bucket) {
  return concat({"ratelimit:", bucket});
}
std::string gateways() {
  return "gateways";
}
std::string gateway_alive(std::string_view gateway) {
  return concat({"gateway:", gateway, ":alive"});
}
std::string gateway_connections(std::string_view gateway) {
  return concat({"gateway:", gateway, ":connections"});
}
std::string gateway_rooms(std::string_view gateway) {
  return concat({"gateway:", gateway, ":rooms"});
}
std::string gateway_seen(std::string_view gateway) {
  return concat({"gateway:", gateway, ":seen"});
}
std::string online(std::string_view user) {
  return concat({kOnlinePrefix, fold_user_name(user)});
}
std::string status(std::string_view user) {
  return concat({kStatusPrefix, fold_user_name(user)});
}
std::string members(std::string_view room) {
  return concat({kMembersPrefix, room});
}
}  // namespace keys

}  // namespace rtmc
