#pragma once
// What travels from the fan-out thread to the io threads: a room's sequenced
// frame, serialized once and shared by every connection that gets it.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rtmc::gateway {

using SharedFrame = std::shared_ptr<const std::string>;

// A presence event (protocol::presence_frame) travels the same way with seq
// 0 and `user` set: it has no place in the room's order, so it bypasses the
// per-room streams (ClientConnection::deliver_presence).
struct Sequenced {
  std::string room;
  std::int64_t seq = 0;
  SharedFrame frame;
  std::string user;  // presence items only: whom the event is about
  // Gap items only: seqs [gap_from, seq] could not be read from the room log
  // (trimmed, or never written) and `frame` is their `gap` frame.
  std::int64_t gap_from = 0;
};
// Frames that arrived together travel together: one post per io thread and
// one gathered write per connection for the whole batch.
using SequencedBatch = std::vector<Sequenced>;

}  // namespace rtmc::gateway
