#include "store/rooms.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <exception>
#include <unordered_map>

#include "common/keys.hpp"

namespace rtmc::rooms {
namespace {

// Sequences the messages of one room, in order (contract in rooms.hpp).
// KEYS: room seq, room log, shard sync stream, room seq mark, then one dedupe
// key per message.
// ARGV: dedupe ttl (s), log length, room, the Redis run_id the caller read on
// this connection, then frame prefix and suffix per message.
// Returns one entry per message run: {seq} for a new message (the caller
// renders its frame from the same prefix and suffix, so the reply does not
// carry every frame back), {seq, frame, 1} for a repeat (the frame it was
// first given), or an error reply. It stops at the first message that
// fails, so no later message of the room can take a seq before it.
//
// Redis does not roll back a script that fails half-way, so every check that
// can fail comes before the first write, and that first write (the log entry:
// an id not above the log's top, or out of memory) is the only one that can
// still fail: a failed message leaves nothing behind. Seq and log can
// disagree only if someone edits them by hand; then the XADD refuses the id
// instead of silently bumping the seq past a missing log entry. The room's
// seq is read once per call and written once at its end (two commands per
// message fewer), so it is the seq of the last message that got one.
//
// The seq guard is one of those checks: a new seq must be covered by the
// room's mark, installed by kInstallScript under this very Redis run (a
// restarted Redis, one restored from an older AOF or a promoted replica has
// another run_id). Otherwise the message gets NEEDSEQ: nothing is written
// and the caller reserves seqs in PostgreSQL first. Repeats need no new seq
// and pass.
const redis::Script kSequenceScript{R"lua(
local seq_key, log_key, sync_key, mark_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, log_length, room, run_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function fail(text) error({err = text}) end

-- At most 15 digits: exact as a Lua number.
local function is_count(text) return #text <= 15 and string.match(text, '^%d+$') ~= nil end

local sync_checked = false
local function check_sync()
  if sync_checked then return end
  local kind = redis.call('TYPE', sync_key)['ok']
  if kind ~= 'none' and kind ~= 'stream' then fail('WRONGTYPE ' .. sync_key .. ' is a ' .. kind) end
  sync_checked = true
end

local reserved = nil
local function check_reserved(seq)
  if reserved == nil then
    local mark = redis.call('HMGET', mark_key, 'reserved', 'run')
    if not mark[1] or mark[2] ~= run_id then fail('NEEDSEQ ' .. room) end
    if not is_count(mark[1]) then fail('ERR ' .. mark_key .. ' does not hold a reservation') end
    reserved = tonumber(mark[1])
  end
  if seq > reserved then fail('NEEDSEQ ' .. room) end
end

-- The room's seq is read once and written once, at the end: every message
-- of the call that got a seq has its log entry, and a message that fails
-- leaves the seq at the last one given before it.
local last = nil
local given = false
local function last_seq()
  if last == nil then
    local current = redis.call('GET', seq_key) or '0'
    if not is_count(current) then fail('ERR ' .. seq_key .. ' does not hold a seq') end
    last = tonumber(current)
  end
  return last
end

local function sequence_one(i)
  local dedupe, prefix, suffix = KEYS[4 + i], ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local known = redis.call('GET', dedupe)
  if known then
    if not is_count(known) then fail('ERR ' .. dedupe .. ' does not hold a seq') end
    local entries = redis.call('XRANGE', log_key, known .. '-0', known .. '-0')
    if #entries > 0 then return {tonumber(known), entries[1][2][2], 1} end
    return {tonumber(known), prefix .. known .. suffix, 1}
  end
  local seq = last_seq() + 1
  check_reserved(seq)
  check_sync()
  local text = string.format('%d', seq)
  local frame = prefix .. text .. suffix
  redis.call('XADD', log_key, 'MAXLEN', '~', log_length, text .. '-0', 'f', frame)
  last, given = seq, true
  redis.call('SET', dedupe, text, 'EX', ttl)
  redis.call('XADD', sync_key, '*', 'room', room, 'seq', text, 'f', frame)
  return {seq}
end

-- Once the script has written, Redis refuses none of its later writes for
-- memory, and SET takes a key of any type: this write cannot fail.
local function finish(results)
  if given then redis.call('SET', seq_key, string.format('%d', last)) end
  return results
end

local results = {}
for i = 1, #KEYS - 4 do
  local ok, result = pcall(sequence_one, i)
  if not ok then
    -- redis.call raises the error reply's text (code first, e.g. OOM);
    -- fail() raises a table.
    if type(result) == 'table' and result.err then
      results[i] = {err = result.err}
    else
      results[i] = {err = tostring(result)}
    end
    return finish(results)
  end
  results[i] = result
end
return finish(results)
)lua"};

// Installs a block reserved in PostgreSQL as the room's mark (contract at
// install_seqs in rooms.hpp).
// KEYS: room seq, room seq mark. ARGV: run_id, previous reservation (every
// seq ever given in the room is <= it), new reservation.
// Returns {seq before, seq after, reserved after}.
//
// A mark of this run: this Redis has lost nothing since it installed the
// mark, so the seq stays and only the mark grows. No mark or a mark of
// another run may be a Redis that lost writes: the seq continues at least at
// the previous reservation, above every seq any client can have seen. Checks
// come before the writes; the SET (a write that can fail, out of memory)
// comes first, and a seq raised without its mark only leads to another
// reservation.
const redis::Script kInstallScript{R"lua(
local seq_key, mark_key = KEYS[1], KEYS[2]
local run_id, previous, reserved = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function is_count(text) return #text <= 15 and string.match(text, '^%d+$') ~= nil end

local current = redis.call('GET', seq_key)
if current and not is_count(current) then
  return redis.error_reply('ERR ' .. seq_key .. ' does not hold a seq')
end
local mark = redis.call('HMGET', mark_key, 'reserved', 'run')
if mark[1] and not is_count(mark[1]) then
  return redis.error_reply('ERR ' .. mark_key .. ' does not hold a reservation')
end
local before = tonumber(current or '0')
if mark[1] and mark[2] == run_id then
  local kept = math.max(tonumber(mark[1]), reserved)
  redis.call('HSET', mark_key, 'reserved', string.format('%d', kept))
  return {before, before, kept}
end
local seq = math.max(before, previous)
if seq > before then redis.call('SET', seq_key, string.format('%d', seq)) end
redis.call('HSET', mark_key, 'reserved', string.format('%d', reserved), 'run', run_id)
return {before, seq, reserved}
)lua"};

std::int64_t parse_count(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 0)
    throw BadRoomData("not a seq: '" + std::string(text.substr(0, 32)) + "'");
  return value;
}

// A stream id <seq>-0.
std::int64_t seq_of_entry_id(std::string_view id) {
  const auto dash = id.find('-');
  return parse_count(id.substr(0, dash));
}

std::string entry_id(std::int64_t seq) {
  return std::to_string(seq) + "-0";
}

// A script result entry: {seq} for a new message, {seq, frame, 1} for a
// repeat.
bool fill_sequenced(const redis::Reply& reply, const SequenceRequest& request, SequenceResult& result) {
  if (reply.type != redis::Reply::Type::array) return false;
  if (reply.elements.size() == 1) {
    const auto& seq = reply.elements[0];
    if (seq.type != redis::Reply::Type::integer || seq.integer <= 0) return false;
    result.status = SequenceResult::Status::sequenced;
    result.seq = seq.integer;
    const auto text = std::to_string(seq.integer);
    result.frame.reserve(request.frame_prefix.size() + text.size() + request.frame_suffix.size());
    result.frame.append(request.frame_prefix).append(text).append(request.frame_suffix);
    result.repeat = false;
    return true;
  }
  if (reply.elements.size() != 3) return false;
  const auto& seq = reply.elements[0];
  const auto& frame = reply.elements[1];
  const auto& repeat = reply.elements[2];
  if (seq.type != redis::Reply::Type::integer || frame.type != redis::Reply::Type::string ||
      repeat.type != redis::Reply::Type::integer || seq.integer <= 0)
    return false;
  result.status = SequenceResult::Status::sequenced;
  result.seq = seq.integer;
  result.frame = frame.str;
  result.repeat = repeat.integer != 0;
  return true;
}

constexpr std::string_view kNeedSeqs = "NEEDSEQ ";

void mark_error(SequenceResult& result, const std::string& error) {
  if (std::string_view(error).substr(0, kNeedSeqs.size()) == kNeedSeqs)
    result.status = SequenceResult::Status::needs_seqs;
  else if (redis::is_refusal(error))
    result.status = SequenceResult::Status::refused;
  else
    result.status = SequenceResult::Status::failed;
  result.error = error;
}

// The results of one room's script call; `members` are the request indexes.
void apply(const redis::Reply& reply, const std::vector<std::size_t>& members,
           const std::vector<SequenceRequest>& requests, std::vector<SequenceResult>& results) {
  if (reply.type == redis::Reply::Type::error) {
    // The script as a whole did not run to its per-message handling. A
    // refusal holds for every message; anything else is charged to the
    // first, whose turn it was, and the rest wait.
    if (redis::is_refusal(reply.str)) {
      for (auto index : members) mark_error(results[index], reply.str);
    } else {
      mark_error(results[members.front()], reply.str);
    }
    return;
  }
  if (reply.type != redis::Reply::Type::array || reply.elements.size() > members.size()) {
    mark_error(results[members.front()], "ERR unexpected reply of the sequencing script");
    return;
  }
  for (std::size_t i = 0; i < reply.elements.size(); ++i) {
    auto& result = results[members[i]];
    const auto& entry = reply.elements[i];
    if (entry.type == redis::Reply::Type::error) {
      mark_error(result, entry.str);
      return;
    }
    if (!fill_sequenced(entry, requests[members[i]], result)) {
      mark_error(result, "ERR unexpected reply of the sequencing script");
      return;
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ seq

std::vector<std::string> current_seq_command(std::uint32_t shard, std::string_view room) {
  return {"GET", keys::room_seq(shard, room)};
}

std::int64_t parse_current_seq(const redis::Reply& reply) {
  switch (reply.type) {
    case redis::Reply::Type::nil: return 0;
    case redis::Reply::Type::string: return parse_count(reply.str);
    case redis::Reply::Type::error: throw BadRoomData("reading a room seq: " + reply.str);
    default: throw BadRoomData("reading a room seq: unexpected reply");
  }
}

std::int64_t current_seq(redis::Connection& redis, std::uint32_t shards, std::string_view room) {
  return parse_current_seq(redis.command(current_seq_command(shard_of(room, shards), room)));
}

// The command is a named local rather than a temporary inside the co_await
// expression: GCC 12 destroys such temporaries twice (STYLE.md).
boost::asio::awaitable<std::int64_t> async_current_seq(redis::Client& redis, std::uint32_t shards,
                                                       std::string room) {
  auto command = current_seq_command(shard_of(room, shards), room);
  const redis::Reply reply = co_await redis.command(std::move(command));
  co_return parse_current_seq(reply);
}

// ------------------------------------------------------------------ log

std::vector<std::string> read_log_command(std::uint32_t shard, std::string_view room, std::int64_t from,
                                          std::int64_t to) {
  return {"XRANGE", keys::room_log(shard, room), entry_id(from), entry_id(to)};
}

LogFrames parse_log(const redis::Reply& reply) {
  if (reply.type != redis::Reply::Type::array)
    throw BadRoomData("reading a room log: " +
                      (reply.is_error() ? reply.str : std::string("unexpected reply")));
  LogFrames frames;
  frames.reserve(reply.elements.size());
  for (const auto& entry : reply.elements) {
    // Entry: [id, [field, value, ...]]; the frame is field f.
    if (entry.elements.size() != 2 || entry.elements[1].elements.size() < 2) continue;
    frames.emplace_back(seq_of_entry_id(entry.elements[0].str),
                        std::make_shared<const std::string>(entry.elements[1].elements[1].str));
  }
  return frames;
}

std::vector<std::string> log_upward_command(std::uint32_t shard, std::string_view room, std::int64_t from,
                                            std::size_t count) {
  return {"XRANGE", keys::room_log(shard, room), entry_id(from), "+", "COUNT", std::to_string(count)};
}

std::vector<std::string> log_downward_command(std::uint32_t shard, std::string_view room,
                                              std::optional<std::int64_t> from, std::size_t count) {
  return {"XREVRANGE", keys::room_log(shard, room), from ? entry_id(*from) : std::string("+"), "-",
          "COUNT",     std::to_string(count)};
}

LogFrames read_log(redis::Connection& redis, std::uint32_t shards, std::string_view room, std::int64_t from,
                   std::int64_t to) {
  return parse_log(redis.command(read_log_command(shard_of(room, shards), room, from, to)));
}

boost::asio::awaitable<LogFrames> async_read_log(redis::Client& redis, std::uint32_t shards, std::string room,
                                                 std::int64_t from, std::int64_t to) {
  auto command = read_log_command(shard_of(room, shards), room, from, to);
  const redis::Reply reply = co_await redis.command(std::move(command));
  co_return parse_log(reply);
}

// ------------------------------------------------------------ sequencing

const char* to_string(SequenceResult::Status status) {
  switch (status) {
    case SequenceResult::Status::sequenced: return "sequenced";
    case SequenceResult::Status::failed: return "failed";
    case SequenceResult::Status::refused: return "refused";
    case SequenceResult::Status::not_run: return "not_run";
    case SequenceResult::Status::needs_seqs: return "needs_seqs";
  }
  return "unknown";
}

PendingSequence begin_sequence(redis::Connection& redis, const SequenceSettings& settings,
                               std::string_view run_id, std::vector<SequenceRequest> requests) {
  if (settings.dedupe_window.count() <= 0 || settings.log_length == 0)
    throw std::invalid_argument("sequencing needs a positive dedupe window and log length");
  if (run_id.empty()) throw std::invalid_argument("sequencing needs the Redis run_id");
  PendingSequence pending;
  pending.requests = std::move(requests);
  const auto& all = pending.requests;
  // One script call per room, its messages in request order; rooms in the
  // order they first appear.
  std::unordered_map<std::string_view, std::size_t> group_of;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto [it, inserted] = group_of.try_emplace(all[i].room, pending.groups.size());
    if (inserted) pending.groups.emplace_back();
    pending.groups[it->second].push_back(i);
  }
  const auto ttl = std::to_string(settings.dedupe_window.count());
  const auto log_length = std::to_string(settings.log_length);
  pending.calls.reserve(pending.groups.size());
  for (const auto& members : pending.groups) {
    const auto& room = all[members.front()].room;
    const auto shard = shard_of(room, settings.shards);
    redis::Connection::EvalCall call;
    call.keys = {keys::room_seq(shard, room), keys::room_log(shard, room), keys::sync_stream(shard),
                 keys::room_seq_mark(shard, room)};
    call.args = {ttl, log_length, room, std::string(run_id)};
    for (auto index : members) {
      const auto& request = all[index];
      call.keys.push_back(keys::dedupe(shard, room, request.sender, request.id));
      call.args.push_back(request.frame_prefix);
      call.args.push_back(request.frame_suffix);
    }
    pending.calls.push_back(std::move(call));
  }
  // Tickets appended so far must be taken even when a later append fails:
  // finish_sequence() does that for a call that throws here too.
  pending.tickets.reserve(pending.calls.size());
  try {
    for (const auto& call : pending.calls)
      pending.tickets.push_back(redis.append_eval(kSequenceScript, call.keys, call.args));
    redis.flush();
  } catch (...) {
    // The append's own failure is the one reported.
    for (const auto& ticket : pending.tickets) {
      try {
        redis.take(ticket);
      } catch (const redis::RedisError&) {
      }
    }
    throw;
  }
  return pending;
}

std::vector<SequenceResult> finish_sequence(redis::Connection& redis, PendingSequence& pending) {
  std::vector<SequenceResult> results(pending.requests.size());
  std::exception_ptr failure;
  std::vector<redis::Reply> replies;
  replies.reserve(pending.tickets.size());
  for (std::size_t g = 0; g < pending.tickets.size(); ++g) {
    try {
      // NOSCRIPT (the server lost its script cache) is run again per call:
      // such a call did not run.
      replies.push_back(
          redis.take_eval(pending.tickets[g], kSequenceScript, pending.calls[g].keys, pending.calls[g].args));
    } catch (...) {
      if (!failure) failure = std::current_exception();
      replies.emplace_back();
    }
  }
  const bool complete = pending.tickets.size() == pending.groups.size();
  pending.tickets.clear();
  if (failure) std::rethrow_exception(failure);
  if (!complete) throw std::logic_error("finishing a sequencing call that was not begun in full");
  for (std::size_t g = 0; g < pending.groups.size(); ++g)
    apply(replies[g], pending.groups[g], pending.requests, results);
  return results;
}

std::vector<SequenceResult> sequence(redis::Connection& redis, const SequenceSettings& settings,
                                     std::string_view run_id, const std::vector<SequenceRequest>& requests) {
  if (requests.empty()) {
    if (settings.dedupe_window.count() <= 0 || settings.log_length == 0)
      throw std::invalid_argument("sequencing needs a positive dedupe window and log length");
    if (run_id.empty()) throw std::invalid_argument("sequencing needs the Redis run_id");
    return {};
  }
  auto pending = begin_sequence(redis, settings, run_id, requests);
  return finish_sequence(redis, pending);
}

// ------------------------------------------------------------- seq guard

std::string server_run_id(redis::Connection& redis) {
  const auto reply = redis.command({"INFO", "server"});
  if (reply.type == redis::Reply::Type::string) {
    constexpr std::string_view kField = "run_id:";
    std::string_view text = reply.str;
    for (std::size_t at = 0; at < text.size();) {
      auto end = text.find('\n', at);
      if (end == std::string_view::npos) end = text.size();
      auto line = text.substr(at, end - at);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, kField.size()) == kField && line.size() > kField.size())
        return std::string(line.substr(kField.size()));
      at = end + 1;
    }
  }
  throw redis::RedisError("INFO server gave no run_id" +
                          (reply.is_error() ? ": " + reply.str : std::string()));
}

std::vector<InstallResult> install_seqs(redis::Connection& redis, std::uint32_t shards,
                                        std::string_view run_id, const std::vector<SeqBlock>& blocks) {
  if (run_id.empty()) throw std::invalid_argument("installing seqs needs the Redis run_id");
  std::vector<InstallResult> results(blocks.size());
  if (blocks.empty()) return results;
  std::vector<redis::Connection::EvalCall> calls;
  calls.reserve(blocks.size());
  for (const auto& block : blocks) {
    if (block.previous < 0 || block.reserved <= block.previous)
      throw std::invalid_argument("a seq block must reserve above its previous mark");
    const auto shard = shard_of(block.room, shards);
    redis::Connection::EvalCall call;
    call.keys = {keys::room_seq(shard, block.room), keys::room_seq_mark(shard, block.room)};
    call.args = {std::string(run_id), std::to_string(block.previous), std::to_string(block.reserved)};
    calls.push_back(std::move(call));
  }
  const auto replies = redis.eval_pipeline(kInstallScript, calls);
  for (std::size_t i = 0; i < replies.size(); ++i) {
    const auto& reply = replies[i];
    auto& result = results[i];
    if (reply.is_error()) {
      result.error = reply.str;
      continue;
    }
    if (reply.type != redis::Reply::Type::array || reply.elements.size() != 3 ||
        std::any_of(reply.elements.begin(), reply.elements.end(),
                    [](const redis::Reply& e) { return e.type != redis::Reply::Type::integer; })) {
      result.error = "ERR unexpected reply of the seq install script";
      continue;
    }
    result.seq_before = reply.elements[0].integer;
    result.seq = reply.elements[1].integer;
    result.reserved = reply.elements[2].integer;
  }
  return results;
}

}  // namespace rtmc::rooms
