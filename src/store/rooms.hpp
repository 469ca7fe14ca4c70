#pragma once
// A room's data in Redis: the one module that reads and writes it (gateway
// sequencer, fan-out and client connections; later the syncer and the api's
// history). Keys (common/keys.hpp; {k} is the room's ingest shard):
//   {k}:seq:<room>                     last seq given in the room (absent = 0)
//   {k}:log:<room>                     stream of the room's frames, entry id
//                                      <seq>-0, field f; capped (approximately)
//   {k}:dedupe:<room>:<sender>:<id>    seq given to a sender's message id
//                                      (expires after the dedupe window)
//   {k}:sync                           the shard's sequenced messages, for the
//                                      syncer: fields room, seq, f
//   {k}:seqmark:<room>                 hash: reserved (seqs up to it are
//                                      reserved in PostgreSQL) and run (the
//                                      Redis run_id it was installed under)
//
// Seq guard: Redis may lose writes (an AOF older than what was acked, a
// replica promoted before it had everything), and the room's seq would then
// go back and give seqs clients already saw to other messages. So a room only
// sequences up to its mark: a block of seqs reserved first in PostgreSQL
// (store/seq_reservations.hpp, durable, never goes back), installed under the
// run_id of the Redis process. A Redis that restarted has another run_id and
// no valid mark: the next reservation makes the room continue above the
// previous one, i.e. above every seq ever given (the skipped range is a gap
// the gateways report).
//
// Threading: free functions without state. The synchronous ones run on the
// thread that owns the redis::Connection; the async ones may be awaited from
// any executor (the work runs on one of the redis::Client's workers) and
// resume there.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/redis.hpp"

namespace rtmc::rooms {

// The room's keys do not hold what this module writes (a seq that is not a
// number, a key of another type). Redis I/O failures are redis::RedisError.
class BadRoomData : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------ seq

// The room's current seq: that of its last message, 0 for a room without one.
std::int64_t current_seq(redis::Connection& redis, std::uint32_t shards, std::string_view room);
boost::asio::awaitable<std::int64_t> async_current_seq(redis::Client& redis, std::uint32_t shards,
                                                       std::string room);

// The pieces of current_seq, for callers that send the command themselves.
std::vector<std::string> current_seq_command(std::uint32_t shard, std::string_view room);
std::int64_t parse_current_seq(const redis::Reply& reply);

// ------------------------------------------------------------------ log

// Frames are shared, immutable buffers: the gateway hands the same one to
// every connection.
using Frame = std::shared_ptr<const std::string>;
// (seq, frame) in seq order.
using LogFrames = std::vector<std::pair<std::int64_t, Frame>>;

// The frames of seqs [from, to] still in the room's log, in seq order. Seqs
// trimmed from the log are missing: the caller compares with to - from + 1.
LogFrames read_log(redis::Connection& redis, std::uint32_t shards, std::string_view room, std::int64_t from,
                   std::int64_t to);
boost::asio::awaitable<LogFrames> async_read_log(redis::Client& redis, std::uint32_t shards, std::string room,
                                                 std::int64_t from, std::int64_t to);

// The pieces of read_log, for callers that send the command themselves.
std::vector<std::string> read_log_command(std::uint32_t shard, std::string_view room, std::int64_t from,
                                          std::int64_t to);
LogFrames parse_log(const redis::Reply& reply);

// Pages of the log for history (store/history.hpp), parsed by parse_log:
// up to `count` entries with seq >= `from`, ascending (XRANGE ... COUNT);
std::vector<std::string> log_upward_command(std::uint32_t shard, std::string_view room, std::int64_t from,
                                            std::size_t count);
// up to `count` entries with seq <= `from` (nullopt: from the newest),
// descending (XREVRANGE ... COUNT).
std::vector<std::string> log_downward_command(std::uint32_t shard, std::string_view room,
                                              std::optional<std::int64_t> from, std::size_t count);

// ------------------------------------------------------------ sequencing

// One ingest message to sequence. The frame is frame_prefix + seq +
// frame_suffix (protocol::message_frame_template), so it is rendered once,
// inside Redis, when its seq is known.
struct SequenceRequest {
  std::string room;
  std::string id;
  std::string sender;
  std::string frame_prefix;
  std::string frame_suffix;
};

struct SequenceSettings {
  std::uint32_t shards = 16;                      // ingest shards of the deployment
  std::chrono::seconds dedupe_window{24 * 3600};  // > 0
  std::size_t log_length = 1000;                  // > 0; entries kept per room log
};

struct SequenceResult {
  enum class Status {
    // seq, frame and repeat are set. A repeat is a message id already
    // sequenced within the dedupe window: its first seq and frame again,
    // nothing written.
    sequenced,
    // The script failed for this message (an error reply for it, e.g. a seq
    // that is not a number); `error` says why. Nothing of it was written.
    failed,
    // Redis refused to run it now (out of memory, loading, busy, read-only
    // replica, ...): a passing condition, not the message's fault. Nothing of
    // it was written.
    refused,
    // Not run: an earlier message of the same room in this call was not
    // sequenced (failed, refused or needs_seqs), and a room's messages are
    // sequenced in the order given. Nothing of it was written.
    not_run,
    // The room has no seq reserved for it under this Redis run (no mark, a
    // mark of another run, or the mark is used up): reserve a block and
    // install it (install_seqs), then run it again. Nothing of it was
    // written; not the message's fault.
    needs_seqs,
  };
  Status status = Status::not_run;
  std::int64_t seq = 0;
  std::string frame;
  bool repeat = false;
  std::string error;
};
const char* to_string(SequenceResult::Status status);

// Sequences the messages in one round trip; one result per request, in the
// request order. Each message is atomic: deduped, given the room's next seq,
// appended to the room log (id <seq>-0) and to the shard's sync stream, or
// nothing at all. A room's messages get their seqs in request order, and a
// message is only run after every earlier one of its room in this call was
// sequenced. A new seq must be covered by the room's mark installed under
// `run_id`, which must be server_run_id() read on this connection (same
// redis.connects()); otherwise needs_seqs.
// Throws redis::RedisError when the connection fails or times out: some
// messages may then have been sequenced, and calling again with the same
// requests is safe (the dedupe keys answer those as repeats).
std::vector<SequenceResult> sequence(redis::Connection& redis, const SequenceSettings& settings,
                                     std::string_view run_id, const std::vector<SequenceRequest>& requests);

// sequence() in two halves, so a caller can have several calls at Redis at
// once on one connection and work while Redis runs them. begin_sequence()
// appends the script calls and writes them out (redis::Connection::flush);
// finish_sequence() reads their replies (every one, also after a failure,
// then throws the first failure like sequence()). Calls begun on one
// connection run in the order begun, but each room's messages are only
// ordered within one call: the caller must not begin a call holding a room
// while an earlier call holding that room is unfinished, unless it accepts
// that the later one runs even when the earlier one failed for that room.
struct PendingSequence {
  std::vector<SequenceRequest> requests;
  std::vector<std::vector<std::size_t>> groups;  // request indexes per script call (one per room)
  std::vector<redis::Connection::EvalCall> calls;
  std::vector<redis::Connection::Ticket> tickets;
};
PendingSequence begin_sequence(redis::Connection& redis, const SequenceSettings& settings,
                               std::string_view run_id, std::vector<SequenceRequest> requests);
std::vector<SequenceResult> finish_sequence(redis::Connection& redis, PendingSequence& pending);

// ------------------------------------------------------------- seq guard

// The run_id of the Redis process behind the connection (INFO server): new
// for every start of a server, different on every replica. Connects if
// needed; throws redis::RedisError (also for a reply without a run_id).
std::string server_run_id(redis::Connection& redis);

// A block of a room's seqs reserved in PostgreSQL: every seq ever given in the
// room is <= previous, and the seqs up to `reserved` may now be given.
struct SeqBlock {
  std::string room;
  std::int64_t previous = 0;
  std::int64_t reserved = 0;
};

struct InstallResult {
  // Empty: installed. Otherwise the error reply (a refusal such as OOM, or a
  // key not of this module's shape); nothing of it was written.
  std::string error;
  std::int64_t seq_before = 0;  // the room's seq before
  std::int64_t seq = 0;         // and after: above seq_before when the seq skipped to `previous`
  std::int64_t reserved = 0;    // the room's mark now
  bool skipped() const { return seq > seq_before; }
};

// Installs each block as its room's mark, one round trip; results in order.
// Under the same run (the mark is of `run_id`) the seq stays and the mark
// becomes max(mark, reserved). Otherwise (no mark, a mark of another run)
// this Redis may have lost seqs it gave: the seq becomes
// max(seq, previous) and the mark `reserved` under `run_id`. `run_id` must be
// server_run_id() of this connection. Throws redis::RedisError.
std::vector<InstallResult> install_seqs(redis::Connection& redis, std::uint32_t shards,
                                        std::string_view run_id, const std::vector<SeqBlock>& blocks);

}  // namespace rtmc::rooms
