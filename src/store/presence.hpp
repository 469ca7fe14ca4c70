#pragma once
// Who is online and who is in which room, across every gateway (seed flow 6),
// in Redis. Each gateway process has an id; what its connections add is
// also written under that id, so when the gateway dies (kill -9) another one
// can take it all back out (sweep) without knowing the connections.
//
// Keys (docs/architecture.md, "Presence"):
//   gateways                       set: ids of gateways that own records
//   gateway:<gw>:alive             string, PX liveness TTL, refreshed every period
//   gateway:<gw>:seen              the time (ms) of that refresh (no TTL)
//   gateway:<gw>:connections       hash: <connection id> -> user
//   gateway:<gw>:rooms             hash: <room>\n<user> -> this gateway's connections of user in room
//   online:<lower(user)>           hash: <gw>/<connection id> -> online since (ms)
//   members:<room>                 hash: user -> connections of user in room (all gateways)
//   status:<lower(user)>           hash {user, status, last_seen}: the status cache (store/user_status.hpp)
// Each change is one Lua script, so counts and the status cache move
// together. (The keys of one call span slots: a Redis Cluster would need
// hash tags per user; one Redis is what runs today.)
//
// Thread-safety: every method may be called concurrently from any thread
// (redis::Client is thread-safe). Throws store::Unavailable when Redis cannot
// answer now; an unexpected reply throws std::runtime_error.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/redis.hpp"

namespace rtmc::store {

// A user's status changed (first connection came, last one went).
struct StatusChange {
  std::string user;  // registered spelling
  bool online = false;
  std::int64_t at_ms = 0;  // online: since; offline: last_seen
};

struct RoomPresenceEvent {
  std::string room;
  std::string user;
  bool joined = false;  // false: left
};

struct SweepResult {
  std::vector<std::string> gateways;          // dead gateways whose records this call removed
  std::vector<StatusChange> went_offline;     // users with no connection left anywhere
  std::vector<RoomPresenceEvent> left_rooms;  // users with no connection left in a room
};

struct PresenceOptions {
  // gateway:<gw>:alive lives this long after each refresh; a gateway is dead
  // (sweepable) once it has not refreshed for this long.
  std::chrono::milliseconds liveness_ttl{15000};
  // TTL of every status cache entry the scripts write.
  std::chrono::milliseconds status_cache_ttl{300000};
};

class Presence {
 public:
  Presence(redis::Client& redis, std::string gateway_id, PresenceOptions options);

  const std::string& gateway_id() const { return gateway_id_; }

  // One pipeline: the liveness key (PX liveness_ttl) and membership of the
  // `gateways` set. Returns true when the gateway was not in the set before:
  // its first refresh, or it had been swept as dead (then every record it
  // had is gone and the caller registers its connections and rooms again).
  // Also records now_ms as the gateway's last sign of life: if it dies, its
  // users' last_seen is that time (their connections ended between it and
  // the liveness key's expiry), not the later time of the sweep.
  boost::asio::awaitable<bool> refresh(std::int64_t now_ms);

  // The connection's online record. Returns the change (online since now_ms)
  // when it is the user's first live connection anywhere (the status cache
  // then says so), nullopt otherwise. A change's time is never at or before
  // the user's previous change (it is moved just after it), so times follow
  // the order in which Redis ran the changes whatever the callers' clocks;
  // the same holds for disconnect and sweep.
  boost::asio::awaitable<std::optional<StatusChange>> connect(std::uint64_t connection_id, std::string user,
                                                              std::int64_t now_ms);
  // Deletes the record. Returns the change (offline, last_seen now_ms) when
  // it was the user's last one (the status cache then says so). A missing
  // record (already swept) changes nothing: nullopt.
  boost::asio::awaitable<std::optional<StatusChange>> disconnect(std::uint64_t connection_id,
                                                                 std::string user, std::int64_t now_ms);
  // One more connection of `user` in `room`; true when it is the user's
  // first there (a `join` event is due).
  boost::asio::awaitable<bool> join(std::string room, std::string user);
  // One fewer; true when it was the user's last there (a `leave` is due).
  // Not recorded by this gateway (swept) -> false, nothing changed.
  boost::asio::awaitable<bool> leave(std::string room, std::string user);
  // Users with a connection in the room, each once, sorted.
  boost::asio::awaitable<std::vector<std::string>> members(std::string room);

  // Removes the records of every gateway in `gateways` whose liveness key
  // has expired (this one's never). Each dead gateway is swept by one script,
  // so two sweepers never both report it. now_ms is the offline users'
  // last_seen.
  boost::asio::awaitable<SweepResult> sweep(std::int64_t now_ms);

  // This gateway stops cleanly: every record it still has is removed as a
  // sweep would remove a dead gateway's (one script, whatever its
  // connections' own clean-ups managed before), with its liveness key and
  // registry entry.
  boost::asio::awaitable<SweepResult> unregister(std::int64_t now_ms);

 private:
  // kConnectScript or kDisconnectScript (same keys and arguments); the
  // change they report, if any, is to `online`.
  boost::asio::awaitable<std::optional<StatusChange>> change_online(const redis::Script& script,
                                                                    std::uint64_t connection_id,
                                                                    std::string user, std::int64_t now_ms,
                                                                    bool online);
  // One gateway's records out, in one script; appends to `result`.
  boost::asio::awaitable<void> sweep_one(const std::string& gateway, std::int64_t now_ms, bool self,
                                         SweepResult& result);
  redis::Client& redis_;
  std::string gateway_id_;
  PresenceOptions options_;
};

}  // namespace rtmc::store
