#include "store/presence.hpp"

#include <algorithm>
#include <stdexcept>

#include "common/blocking_worker.hpp"
#include "common/keys.hpp"
#include "store/unavailable.hpp"

namespace rtmc::store {

namespace {

// The status cache entry (store/user_status.hpp) is written by the same
// script that changes the status, so a reader never sees the old one after
// the change returned. Every field is set, so the hash never mixes two
// changes.

// A status change's time is never before the previous one's, whatever the
// clocks of the gateways that ran them (now_ms is read before the script is
// queued): PostgreSQL keeps the latest last_seen, so it must follow the order
// in which Redis ran the changes.
//
// KEYS: gateway connections, online:<user>, status:<user>
// ARGV: connection id, user, "<gw>/<connection id>", now_ms, status cache TTL ms
// Returns the change's time when this is the user's first live connection
// anywhere, else 0.
const redis::Script kConnectScript(R"lua(
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 1 and redis.call('HLEN', KEYS[2]) == 1 then
  local at = tonumber(ARGV[4])
  local previous = tonumber(redis.call('HGET', KEYS[3], 'last_seen') or '')
  if previous and at <= previous then at = previous + 1 end
  redis.call('HSET', KEYS[2], ARGV[3], string.format('%.0f', at))
  redis.call('HSET', KEYS[3], 'user', ARGV[2], 'status', 'online', 'last_seen', string.format('%.0f', at))
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return at
end
return 0
)lua");

// KEYS and ARGV as kConnectScript. Returns the change's time when it was the
// user's last live connection; 0 also when the record was missing (swept),
// and then nothing changes.
const redis::Script kDisconnectScript(R"lua(
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
local at = tonumber(ARGV[4])
local previous = tonumber(redis.call('HGET', KEYS[3], 'last_seen') or '')
if previous and at <= previous then at = previous + 1 end
redis.call('HSET', KEYS[3], 'user', ARGV[2], 'status', 'offline', 'last_seen', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return at
)lua");

// KEYS: gateway rooms, members:<room>; ARGV: "<room>\n<user>", user
// Returns 1 when it is the user's first connection in the room (all gateways).
const redis::Script kJoinScript(R"lua(
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
return 0
)lua");

// KEYS and ARGV as kJoinScript. Returns 1 when it was the user's last
// connection in the room. A membership this gateway has not recorded (it was
// swept meanwhile) changes nothing: the sweep already took it out of members.
const redis::Script kLeaveScript(R"lua(
local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if mine <= 0 then return 0 end
if mine == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
)lua");

// One dead gateway, atomically. The liveness check and the SREM make sure
// that exactly one sweeper takes it (and reports its users), and that a
// gateway which refreshed in the meantime is left alone.
// A dead gateway's users went offline when it died, some time after its last
// refresh (gateway seen): that is their last_seen, not the sweep's time.
// KEYS: gateways, gateway alive, gateway connections, gateway rooms, gateway seen
// ARGV: gateway id, now_ms, status cache TTL ms, online prefix, status
//       prefix, members prefix, "self" for a gateway removing its own
//       records at a clean stop (whatever its liveness key says; its users'
//       last_seen is now_ms) or "dead"
// Returns nil when there was nothing to sweep, else
// {{offline user, its change's time, ...}, {room, user, room, user...}}.
// User keys are built with string.lower: user names are ASCII
// (common/names.hpp), where it equals fold_user_name.
const redis::Script kSweepScript(R"lua(
local ended = tonumber(ARGV[2])
if ARGV[7] == 'self' then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[1])
else
  if redis.call('EXISTS', KEYS[2]) == 1 then return nil end
  if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return nil end
  ended = tonumber(redis.call('GET', KEYS[5]) or '') or ended
end
local offline = {}
local connections = redis.call('HGETALL', KEYS[3])
for i = 1, #connections, 2 do
  local user = connections[i + 1]
  local lower = string.lower(user)
  local online = ARGV[4] .. lower
  if redis.call('HDEL', online, ARGV[1] .. '/' .. connections[i]) == 1 and
     redis.call('HLEN', online) == 0 then
    local status = ARGV[5] .. lower
    local at = ended
    local previous = tonumber(redis.call('HGET', status, 'last_seen') or '')
    if previous and at <= previous then at = previous + 1 end
    redis.call('HSET', status, 'user', user, 'status', 'offline', 'last_seen', string.format('%.0f', at))
    redis.call('PEXPIRE', status, ARGV[3])
    offline[#offline + 1] = user
    offline[#offline + 1] = at
  end
end
local left = {}
local rooms = redis.call('HGETALL', KEYS[4])
for i = 1, #rooms, 2 do
  local field = rooms[i]
  local count = tonumber(rooms[i + 1]) or 0
  local newline = string.find(field, '\n', 1, true)
  if newline and count > 0 then
    local room = string.sub(field, 1, newline - 1)
    local user = string.sub(field, newline + 1)
    local members = ARGV[6] .. room
    if redis.call('HINCRBY', members, user, -count) <= 0 then
      redis.call('HDEL', members, user)
      left[#left + 1] = room
      left[#left + 1] = user
    end
  end
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
return {offline, left}
)lua");

void check(const redis::Reply& reply, const char* what) {
  if (!reply.is_error()) return;
  if (redis::is_refusal(reply.str)) throw Unavailable("redis refused: " + reply.str);
  throw std::runtime_error(std::string(what) + ": redis error reply: " + reply.str);
}

// Runs one script; I/O failures and refusals become Unavailable.
boost::asio::awaitable<redis::Reply> run_script(redis::Client& redis, const redis::Script& script,
                                                std::vector<std::string> keys, std::vector<std::string> args,
                                                const char* what) {
  redis::Reply reply;
  try {
    reply = co_await redis.eval(script, std::move(keys), std::move(args));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  check(reply, what);
  co_return reply;
}

boost::asio::awaitable<std::vector<redis::Reply>> run_pipeline(redis::Client& redis,
                                                               std::vector<std::vector<std::string>> commands,
                                                               const char* what) {
  std::vector<redis::Reply> replies;
  try {
    replies = co_await redis.pipeline(std::move(commands));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  for (const auto& reply : replies) check(reply, what);
  co_return replies;
}

boost::asio::awaitable<redis::Reply> run_command(redis::Client& redis, std::vector<std::string> command,
                                                 const char* what) {
  redis::Reply reply;
  try {
    reply = co_await redis.command(std::move(command));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  check(reply, what);
  co_return reply;
}

std::string ms(std::chrono::milliseconds duration) {
  return std::to_string(std::max<std::chrono::milliseconds::rep>(duration.count(), 1));
}

std::string room_field(const std::string& room, const std::string& user) {
  std::string field = room;
  field += '\n';
  field += user;
  return field;
}

const std::vector<redis::Reply>& array_of(const redis::Reply& reply, const char* what) {
  if (reply.type != redis::Reply::Type::array)
    throw std::runtime_error(std::string(what) + ": unexpected reply");
  return reply.elements;
}

}  // namespace

Presence::Presence(redis::Client& redis, std::string gateway_id, PresenceOptions options)
    : redis_(redis), gateway_id_(std::move(gateway_id)), options_(options) {}

boost::asio::awaitable<bool> Presence::refresh(std::int64_t now_ms) {
  std::vector<std::vector<std::string>> commands;
  commands.push_back({"SET", keys::gateway_alive(gateway_id_), "1", "PX", ms(options_.liveness_ttl)});
  commands.push_back({"SADD", keys::gateways(), gateway_id_});
  commands.push_back({"SET", keys::gateway_seen(gateway_id_), std::to_string(now_ms)});
  auto replies = co_await run_pipeline(redis_, std::move(commands), "presence refresh");
  if (replies.size() != 3) throw std::runtime_error("presence refresh: reply count mismatch");
  co_return replies[1].integer == 1;
}

boost::asio::awaitable<std::optional<StatusChange>> Presence::connect(std::uint64_t connection_id,
                                                                      std::string user, std::int64_t now_ms) {
  co_return co_await change_online(kConnectScript, connection_id, std::move(user), now_ms, true);
}

boost::asio::awaitable<std::optional<StatusChange>> Presence::disconnect(std::uint64_t connection_id,
                                                                         std::string user,
                                                                         std::int64_t now_ms) {
  co_return co_await change_online(kDisconnectScript, connection_id, std::move(user), now_ms, false);
}

boost::asio::awaitable<std::optional<StatusChange>> Presence::change_online(const redis::Script& script,
                                                                            std::uint64_t connection_id,
                                                                            std::string user,
                                                                            std::int64_t now_ms,
                                                                            bool online) {
  const auto id = std::to_string(connection_id);
  std::vector<std::string> keys{keys::gateway_connections(gateway_id_), keys::online(user),
                                keys::status(user)};
  std::vector<std::string> args{id, user, gateway_id_ + "/" + id, std::to_string(now_ms),
                                ms(options_.status_cache_ttl)};
  auto reply = co_await run_script(redis_, script, std::move(keys), std::move(args),
                                   online ? "presence connect" : "presence disconnect");
  if (reply.integer <= 0) co_return std::nullopt;
  co_return StatusChange{std::move(user), online, reply.integer};
}

boost::asio::awaitable<bool> Presence::join(std::string room, std::string user) {
  std::vector<std::string> keys{keys::gateway_rooms(gateway_id_), keys::members(room)};
  std::vector<std::string> args{room_field(room, user), user};
  auto reply = co_await run_script(redis_, kJoinScript, std::move(keys), std::move(args), "presence join");
  co_return reply.integer == 1;
}

boost::asio::awaitable<bool> Presence::leave(std::string room, std::string user) {
  std::vector<std::string> keys{keys::gateway_rooms(gateway_id_), keys::members(room)};
  std::vector<std::string> args{room_field(room, user), user};
  auto reply = co_await run_script(redis_, kLeaveScript, std::move(keys), std::move(args), "presence leave");
  co_return reply.integer == 1;
}

boost::asio::awaitable<std::vector<std::string>> Presence::members(std::string room) {
  std::vector<std::string> command{"HKEYS", keys::members(room)};
  auto reply = co_await run_command(redis_, std::move(command), "presence members");
  std::vector<std::string> users;
  for (const auto& element : array_of(reply, "presence members")) users.push_back(element.str);
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  co_return users;
}

boost::asio::awaitable<SweepResult> Presence::sweep(std::int64_t now_ms) {
  SweepResult result;
  std::vector<std::string> list{"SMEMBERS", keys::gateways()};
  auto registered = co_await run_command(redis_, std::move(list), "presence sweep");
  std::vector<std::string> others;
  for (const auto& element : array_of(registered, "presence sweep"))
    if (element.str != gateway_id_) others.push_back(element.str);
  if (others.empty()) co_return result;

  // A cheap look at every liveness key first; only the dead get a script.
  std::vector<std::vector<std::string>> probes;
  for (const auto& gateway : others) probes.push_back({"EXISTS", keys::gateway_alive(gateway)});
  auto alive = co_await run_pipeline(redis_, std::move(probes), "presence sweep");
  if (alive.size() != others.size()) throw std::runtime_error("presence sweep: reply count mismatch");

  for (std::size_t i = 0; i < others.size(); ++i) {
    if (alive[i].integer != 0) continue;
    const auto& gateway = others[i];
    co_await sweep_one(gateway, now_ms, false, result);
  }
  co_return result;
}

boost::asio::awaitable<void> Presence::sweep_one(const std::string& gateway, std::int64_t now_ms, bool self,
                                                 SweepResult& result) {
  std::vector<std::string> keys{keys::gateways(), keys::gateway_alive(gateway),
                                keys::gateway_connections(gateway), keys::gateway_rooms(gateway),
                                keys::gateway_seen(gateway)};
  std::vector<std::string> args{gateway,
                                std::to_string(now_ms),
                                ms(options_.status_cache_ttl),
                                std::string(keys::kOnlinePrefix),
                                std::string(keys::kStatusPrefix),
                                std::string(keys::kMembersPrefix),
                                self ? "self" : "dead"};
  auto reply = co_await run_script(redis_, kSweepScript, std::move(keys), std::move(args), "presence sweep");
  if (reply.is_nil()) co_return;  // refreshed meanwhile, or another sweeper took it
  const auto& parts = array_of(reply, "presence sweep");
  if (parts.size() != 2) throw std::runtime_error("presence sweep: unexpected reply");
  result.gateways.push_back(gateway);
  const auto& offline = array_of(parts[0], "presence sweep");
  for (std::size_t j = 0; j + 1 < offline.size(); j += 2)
    result.went_offline.push_back(StatusChange{offline[j].str, false, offline[j + 1].integer});
  const auto& left = array_of(parts[1], "presence sweep");
  for (std::size_t j = 0; j + 1 < left.size(); j += 2)
    result.left_rooms.push_back(RoomPresenceEvent{left[j].str, left[j + 1].str, false});
}

boost::asio::awaitable<SweepResult> Presence::unregister(std::int64_t now_ms) {
  SweepResult result;
  co_await sweep_one(gateway_id_, now_ms, true, result);
  co_return result;
}

}  // namespace rtmc::store
