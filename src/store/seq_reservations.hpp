#pragma once
// The durable guard of every room's seq: room_seq_reservations(room,
// reserved) in PostgreSQL (migrations/002_persistence.sql), written only by
// sequencers. A row only grows; every seq a sequencer ever gave in the room
// is <= its value. See the seq guard in store/rooms.hpp for how Redis uses the
// blocks.
//
// Threading: free functions without state, run on the thread that owns the
// pg::Connection (the sequencer's thread). They throw pg::PgError.

#include <cstdint>
#include <string>
#include <vector>

#include "store/postgres.hpp"
#include "store/rooms.hpp"

namespace rtmc::seq_reservations {

struct Request {
  std::string room;
  // The reservation must end at least `floor` + block: for a room whose
  // Redis seq is already above its reservation (a room sequenced before the
  // guard existed), so one reservation covers it.
  std::int64_t floor = 0;
};

// Advances each room's reservation by `block` (> 0) in one statement and one
// transaction; a room without a row starts at 0. Returns one block per
// distinct room, in the order given: `reserved` the new value and `previous`
// = reserved - block, the highest seq any sequencer may have given in the room
// before (for a floor above the stored value, the floor). Rooms are locked in
// name order, so two sequencers reserving overlapping rooms cannot deadlock.
std::vector<rooms::SeqBlock> reserve(pg::Connection& pg, const std::vector<Request>& requests,
                                     std::int64_t block);

// The room's reservation, 0 for a room without one (tools and tests).
std::int64_t reserved(pg::Connection& pg, const std::string& room);

}  // namespace rtmc::seq_reservations
