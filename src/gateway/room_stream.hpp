#pragma once
// Per-room ordering of what one client connection receives: every seq of a
// room after the one its `joined` reported, once and in order.
//  - Frames that arrive while the join is still reading the room's seq are
//    held until that seq is known.
//  - A hole (seqs the fan-out thread could not know this client is owed)
//    holds later frames and asks for a repair from the room log.
//  - A repair that fails means the client must be cut (lost_sync); one that
//    finishes after a leave (and maybe a new join) of its room is stale and
//    leaves the new membership alone.
//  - Frames already trimmed from the log are skipped (and logged).
// Plain logic, no I/O: the caller performs repairs and writes the frames
// each call hands back in `Output`, so nothing calls back into the caller
// while this object is being changed. Owned by one ClientConnection, used on
// its executor only.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/sequenced.hpp"

namespace rtmc::gateway {

class RoomStreams {
 public:
  using LogFrame = std::pair<std::int64_t, SharedFrame>;

  struct Repair {
    std::string room;
    std::uint64_t membership = 0;
    std::int64_t from = 0;  // fetch [from, to] from the room log
    std::int64_t to = 0;
  };
  // What one call produced: frames for the client in order, and at most one
  // repair to start (a call touches one room, and a room has at most one
  // repair in flight).
  struct Output {
    std::vector<SharedFrame> frames;
    std::optional<Repair> repair;
    void clear() {
      frames.clear();
      repair.reset();
    }
  };

  enum class JoinResult { added, already_in, too_many_rooms };
  struct Join {
    JoinResult result;
    std::uint64_t membership = 0;  // for `added`
  };
  // Starts a membership (frames are held until joined()); a room already in
  // is left as it is; over `max_rooms` nothing changes.
  Join join(const std::string& room, std::size_t max_rooms);
  // The join read the room's seq: hand on what was held above it. Ignored
  // when `membership` is no longer the room's (left meanwhile).
  void joined(const std::string& room, std::uint64_t membership, std::int64_t seq, Output& out);
  // The join could not read the seq: forget the membership if it is still
  // the one that join started.
  void abandon(const std::string& room, std::uint64_t membership);
  // False when not in the room.
  bool leave(const std::string& room);
  bool contains(const std::string& room) const { return rooms_.contains(room); }

  // A sequenced frame of a room (ignored when not in it).
  void deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame, Output& out);

  enum class RepairResult { applied, stale, failed };
  // The answer to a Repair: the frames read, or nullopt when the log could
  // not be read (the caller cuts the client: `failed`).
  RepairResult repaired(const Repair& repair, std::optional<std::vector<LogFrame>> frames, Output& out);

  // Bytes of held frames: they count against the connection's byte bound.
  std::size_t held_bytes() const { return held_bytes_; }
  std::size_t size() const { return rooms_.size(); }
  // Forgets every room (the connection closes); returns their names.
  std::vector<std::string> clear();

 private:
  struct Stream {
    // The seq `joined` reported, then the last seq handed on.
    std::int64_t last_seq = 0;
    // A join or a repair is in flight; frames wait in `held`.
    bool pending = true;
    std::vector<LogFrame> held;
    std::uint64_t membership = 0;
  };

  void hold(Stream& stream, std::int64_t seq, const SharedFrame& frame);
  void accept(const std::string& room, Stream& stream, std::int64_t seq, const SharedFrame& frame,
              Output& out);
  void release_held(const std::string& room, Stream& stream, Output& out);
  void drop_held(Stream& stream);

  std::unordered_map<std::string, Stream> rooms_;
  std::uint64_t memberships_ = 0;
  std::size_t held_bytes_ = 0;
};

}  // namespace rtmc::gateway
