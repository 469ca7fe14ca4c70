#pragma once
// Per-room ordering of what one client connection receives: every seq of a
// room after the one its `joined` reported (or after the `since` it resumed
// from), once and in order, or a `gap` frame for the seqs that cannot be had.
//  - Frames that arrive while the join is still reading the room's seq are
//    held until that seq is known.
//  - A hole (seqs the fan-out thread could not know this client is owed)
//    holds later frames and reads the missing seqs from the room log; so does
//    a join with `since`, which reads (since, seq] from the log.
//  - The log is read in chunks (Limits::chunk seqs). What a read returns is
//    handed out as the caller's send queue has room for it (a `budget` in
//    bytes per call), so a long replay never overflows the queue; the caller
//    asks for more (pump) once its queue has drained, and only then reads
//    the next chunk.
//  - Held frames are bounded (Limits::hold_bytes for the whole connection):
//    beyond it a live frame is dropped, and the log read goes on up to its
//    seq instead. Every live frame is in the log before it is fanned out, so
//    nothing is lost; only a read that finds a seq gone (trimmed from the
//    log, or never written after a Redis data loss) turns it into a gap.
//  - Seqs the log no longer has become one `gap` frame per missing range
//    (however many chunks it spans), in order among the messages; so does a gap the fan-out thread found
//    (deliver_gap), cut to what this client is still owed.
//  - A read that fails means the client must be cut (lost_sync); one that
//    finishes after a leave (and maybe a new join) of its room is stale and
//    leaves the new membership alone.
// Plain logic, no I/O: the caller performs reads and writes the frames each
// call hands back in `Output`, so nothing calls back into the caller while
// this object is being changed. Owned by one ClientConnection, used on its
// executor only.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/sequenced.hpp"

namespace rtmc::gateway {

// A room name with its hash, computed once for a frame that goes to many
// members: each member's stream map finds it without hashing the name again.
struct RoomKey {
  explicit RoomKey(const std::string& room) : name(room), hash(std::hash<std::string_view>{}(room)) {}
  const std::string& name;
  std::size_t hash;
};

struct RoomNameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view room) const noexcept { return std::hash<std::string_view>{}(room); }
  std::size_t operator()(const RoomKey& room) const noexcept { return room.hash; }
};

}  // namespace rtmc::gateway
#ifdef __GLIBCXX__
// libstdc++ takes any hasher it does not know for a cheap one and then keeps
// no hash in the map's nodes: a rehash or a walk along a bucket would hash
// room names again. Hashing a name is not cheap; keep the hashes.
template <>
struct std::__is_fast_hash<rtmc::gateway::RoomNameHash> : std::false_type {};
#endif

namespace rtmc::gateway {

struct RoomNameEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
  bool operator()(const RoomKey& a, std::string_view b) const noexcept { return a.name == b; }
  bool operator()(std::string_view a, const RoomKey& b) const noexcept { return a == b.name; }
};

class RoomStreams {
 public:
  // Not copyable: the remembered room entry points into this object's map.
  RoomStreams(const RoomStreams&) = delete;
  RoomStreams& operator=(const RoomStreams&) = delete;
  using LogFrame = std::pair<std::int64_t, SharedFrame>;

  struct Limits {
    // Bytes of live frames held across the connection's rooms while their
    // joins or log reads are in flight (they count against the send queue's
    // bound): beyond it, frames are dropped and read back from the log.
    std::size_t hold_bytes = std::numeric_limits<std::size_t>::max();
    // Seqs per log read.
    std::int64_t chunk = 100;
  };

  RoomStreams() = default;
  explicit RoomStreams(Limits limits) : limits_(limits) {}

  struct Repair {
    std::string room;
    std::uint64_t membership = 0;
    std::int64_t from = 0;  // read [from, to] from the room log
    std::int64_t to = 0;
  };
  // What one call produced: frames for the client in order, and at most one
  // log read to start (a call touches one room, and a room has at most one
  // read in flight).
  struct Output {
    std::vector<SharedFrame> frames;
    std::optional<Repair> repair;
    // Gap frames among `frames`, and the seqs they cover (for the metrics).
    std::uint64_t gaps = 0;
    std::uint64_t gap_seqs = 0;
    void clear() {
      frames.clear();
      repair.reset();
      gaps = 0;
      gap_seqs = 0;
    }
  };

  enum class JoinResult { added, already_in, too_many_rooms };
  struct Join {
    JoinResult result;
    std::uint64_t membership = 0;  // for `added`
  };
  // Starts a membership (frames are held until joined() or resume()); a
  // room already in is left as it is; over `max_rooms` nothing changes.
  Join join(const std::string& room, std::size_t max_rooms);
  // The join read the room's seq: hand on what was held above it. Ignored
  // when `membership` is no longer the room's (left meanwhile).
  void joined(const std::string& room, std::uint64_t membership, std::int64_t seq, Output& out);
  // A join with `since` (< seq): the first log read of its replay,
  // [since + 1, at most a chunk further, not beyond seq].
  Repair replay_start(const std::string& room, std::uint64_t membership, std::int64_t since,
                      std::int64_t seq) const;
  // The join with `since` read the room's seq and the first chunk (`first`,
  // read for replay_start()): every seq in (since, seq] is handed on, then
  // what was held above seq. `stale` when the membership is gone.
  enum class RepairResult { applied, stale, failed };
  RepairResult resume(const Repair& first, std::vector<LogFrame> frames, std::int64_t seq, std::size_t budget,
                      Output& out);
  // The join could not read the seq: forget the membership if it is still
  // the one that join started.
  void abandon(const std::string& room, std::uint64_t membership);
  // False when not in the room.
  bool leave(const std::string& room);
  bool contains(const std::string& room) const { return rooms_.contains(room); }

  // deliver()'s common case, without an Output: in a live room, `seq` is the
  // next one. `send`: the client is owed the frame now (counted as handed
  // on); `other`: deliver() decides (held, a hole, an old seq).
  enum class Next { send, not_in_room, other };
  Next deliver_next(const RoomKey& room, std::int64_t seq);
  // A sequenced frame of a room (ignored when not in it).
  void deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame, Output& out);
  // Seqs [from, to] of a room that the fan-out thread found missing from the
  // log; `frame` is their gap frame (a narrower one is made when this client
  // is owed only part of the range).
  void deliver_gap(const std::string& room, std::int64_t from, std::int64_t to, const SharedFrame& frame,
                   Output& out);

  // The answer to a Repair: the frames read, or nullopt when the log could
  // not be read (the caller cuts the client: `failed`). At most `budget`
  // bytes are handed out (always at least one frame); the rest waits for
  // pump().
  RepairResult repaired(const Repair& repair, std::optional<std::vector<LogFrame>> frames, Output& out,
                        std::size_t budget = std::numeric_limits<std::size_t>::max());
  // Hands out up to `budget` more bytes of what the last read returned (at
  // least one frame); then the next read or the held frames follow.
  RepairResult pump(const std::string& room, std::uint64_t membership, std::size_t budget, Output& out);
  // Frames read from the log still wait for pump().
  bool buffered(const std::string& room, std::uint64_t membership) const;

  // The room entry the next deliver_next() is likely to read, for a prefetch.
  const void* prefetch_hint() const { return last_found_; }
  // Bytes of held frames: they count against the connection's byte bound.
  std::size_t held_bytes() const { return held_bytes_; }
  std::size_t size() const { return rooms_.size(); }
  // Forgets every room (the connection closes); returns their names.
  std::vector<std::string> clear();

 private:
  // A message (from == seq), or a gap covering [from, seq].
  struct Item {
    std::int64_t from = 0;
    std::int64_t seq = 0;
    SharedFrame frame;
    bool gap = false;
  };
  struct Stream {
    enum class Phase { joining, reading, live };
    Phase phase = Phase::joining;
    // The seq `joined` reported (or `since`), then the last seq handed on.
    std::int64_t last_seq = 0;
    // Reading: the log was read through here (>= last_seq).
    std::int64_t read_seq = 0;
    // Joining or reading: the highest seq dropped instead of held; the log
    // read goes on up to it.
    std::int64_t target = 0;
    std::deque<Item> buffer;  // read from the log, not handed out yet
    std::vector<Item> held;   // live frames waiting for the join or the read
    std::uint64_t membership = 0;
  };

  Stream* find(const std::string& room, std::uint64_t membership);
  void deliver_item(const std::string& room, Item item, Output& out);
  void hold(Stream& stream, Item item);
  void accept(const std::string& room, Stream& stream, Item item, Output& out);
  void hand_on(const std::string& room, Stream& stream, Item item, Output& out);
  void start_reading(const std::string& room, Stream& stream, Output& out);
  void apply(const std::string& room, Stream& stream, const Repair& read, std::vector<LogFrame> frames,
             std::size_t budget, Output& out);
  void pump_stream(const std::string& room, Stream& stream, std::size_t budget, Output& out);
  void release_held(const std::string& room, Stream& stream, Output& out);
  void drop_held(Stream& stream);

  Limits limits_;
  using Rooms = std::unordered_map<std::string, Stream, RoomNameHash, RoomNameEqual>;
  void erase(Rooms::iterator it);

  Rooms rooms_;
  // The room deliver_next() found last (nodes keep their address until
  // erased): a connection in one busy room skips the lookup, and the
  // delivery loop can prefetch the entry (prefetch_hint()).
  Rooms::value_type* last_found_ = nullptr;
  std::uint64_t memberships_ = 0;
  std::size_t held_bytes_ = 0;
};

}  // namespace rtmc::gateway
