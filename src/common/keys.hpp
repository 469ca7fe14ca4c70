#pragma once
// Where rooms live: the ingest shard of a room, and every Redis key of the
// system. All keys of one shard share the hash tag {k}, so each sequencing
// script touches a single Redis Cluster slot.

#include <cstdint>
#include <string>
#include <string_view>

namespace rtmc {

// FNV-1a 32; stable across processes and versions, so every publisher picks
// the same shard for a room.
std::uint32_t shard_of(std::string_view room, std::uint32_t shards);

// Durable quorum queue carrying shard k's ingest messages.
std::string ingest_queue(std::uint32_t shard);
// Direct exchange the sequencer publishes sequenced frames and the presence
// service its events to, routing key = room: each gateway binds its queue to
// the rooms it has members in. (Not "rtmc.fanout", the plain fanout exchange
// of earlier versions: a broker refuses to re-declare a name with a new type.)
inline constexpr std::string_view kFanoutExchange = "rtmc.rooms";

namespace keys {
std::string session(std::string_view jti);
std::string room_seq(std::uint32_t shard, std::string_view room);
std::string room_log(std::uint32_t shard, std::string_view room);
// The room's seq mark (store/rooms.hpp): the seqs reserved in PostgreSQL and
// the Redis run they were installed under.
std::string room_seq_mark(std::uint32_t shard, std::string_view room);
std::string dedupe(std::uint32_t shard, std::string_view room, std::string_view sender, std::string_view id);
std::string sync_stream(std::uint32_t shard);
// A rate-limit token bucket (store/rate_limits.hpp); `bucket` names the kind
// and the subject, e.g. "register:203.0.113.7".
std::string rate_limit(std::string_view bucket);

// Presence and status (store/presence.hpp, store/user_status.hpp). The user
// keys are folded (fold_user_name) here, so `Alice` and `alice` share them.
// The prefixes are exposed for the sweep script, which builds the keys of
// the users and rooms it finds in a dead gateway's hashes.
inline constexpr std::string_view kOnlinePrefix = "online:";
inline constexpr std::string_view kStatusPrefix = "status:";
inline constexpr std::string_view kMembersPrefix = "members:";
std::string gateways();
std::string gateway_alive(std::string_view gateway);
std::string gateway_connections(std::string_view gateway);
std::string gateway_rooms(std::string_view gateway);
// The time (ms) of the gateway's last refresh: a sweep's last_seen for its users.
std::string gateway_seen(std::string_view gateway);
std::string online(std::string_view user);
std::string status(std::string_view user);
std::string members(std::string_view room);
}  // namespace keys

}  // namespace rtmc
