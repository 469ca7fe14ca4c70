#pragma once
// The two RabbitMQ loops of a gateway, each on its own thread because
// rabbitmq-c and hiredis' sync API block:
//  - Sequencer (gateway/sequencer.hpp): consumes the ingest shards (single
//    active consumer per shard across all gateways), dedupes and sequences
//    with the rooms store's script, publishes the frame to the fan-out
//    exchange, then acks.
//  - Fanout: consumes this gateway's private fan-out queue, bound to the
//    direct exchange kFanoutExchange under the rooms this gateway has members
//    in (LocalRooms: bound on the first local member, unbound after the
//    last), and hands each room's frames to the io threads exactly once and
//    in seq order, repairing gaps from the room log in Redis
//    (store/rooms.hpp). Presence events ride the same queue, routed by room
//    too, and pass straight through as seq-0 items.
//
// Why a room's binding loses nothing (the bind race): a join reads the
// room's seq S after the room is in its io thread's index, and reports S
// (LocalRooms::joined) before it answers `joined` (waiting, bounded, for the
// binding, so presence events flow at once too); the fan-out thread gives the
// room a cursor at S, binds it, waits for the binding to be in effect
// (bind-ok), and only then reads the room's seq H from Redis and fills
// (S, H] from the room log. A frame with seq > H was given its seq (INCR)
// after that read, hence after bind-ok, and is published after it: the
// broker routes it to this queue. The cursor drops what arrives twice (a
// frame <= H can come both ways) and fills holes. Frames of a room without a
// cursor (published before the binding, or arriving after the unbind) are
// dropped: the catch-up covers the first kind, nobody is owed the second.
// A room that already has a cursor (other local members) keeps it: every
// frame above S it hands on got its seq after S was read, so after the new
// member was in the index, and reaches it.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/metrics.hpp"
#include "gateway/gateway.hpp"
#include "gateway/room_cursor.hpp"
#include "gateway/sequenced.hpp"
#include "gateway/sequencer.hpp"

namespace rtmc::gateway {

// Splits a fan-out message (one or more '\n'-terminated frames of one room,
// scale design contract B; a missing last '\n' is tolerated) into items
// appended to `items`, in order: a presence frame becomes a seq-0 item with
// `user` set, a message frame an item with its room and seq; each item's
// frame ends in '\n'. Lines that are neither are dropped with a log line;
// returns how many.
std::size_t split_fanout_body(std::string body, SequencedBatch& items);

// Appends what the room log returned for seqs [from, to] of `room` (`found`,
// in seq order) to `batch`, with one gap item (Sequenced::gap_from, a `gap`
// frame) for each run of seqs it lacks: every local member owed them learns
// it, once, in its place in the room's order.
void add_log_range(const std::string& room, std::int64_t from, std::int64_t to,
                   std::vector<std::pair<std::int64_t, SharedFrame>> found, SequencedBatch& batch);

// Counted by the fan-out thread, read by /metrics.
struct FanoutCounters {
  std::atomic<std::uint64_t> messages{0};        // AMQP messages received
  std::atomic<std::uint64_t> message_frames{0};  // frames in them, by kind
  std::atomic<std::uint64_t> presence_frames{0};
  std::atomic<std::uint64_t> stale_frames{0};  // of rooms without local members: dropped
  std::atomic<std::uint64_t> binds{0};
  std::atomic<std::uint64_t> unbinds{0};
  std::atomic<std::int64_t> rooms_bound{0};
  std::atomic<std::int64_t> rooms_pending{0};  // bindings still to make or remove
};

class Fanout {
 public:
  // Sequenced frames are handed on in seq order per room, each seq once;
  // presence items (seq 0) in arrival order, with no such guarantee.
  // Called on the fan-out thread.
  using Deliver = std::function<void(std::shared_ptr<const SequencedBatch> batch)>;
  Fanout(const GatewayConfig& config, LocalRooms& rooms, Deliver deliver);
  ~Fanout();
  Fanout(const Fanout&) = delete;
  Fanout& operator=(const Fanout&) = delete;
  // As Sequencer::request_stop.
  void request_stop() { stopping_ = true; }
  // Adds the fan-out families to `registry` (which must not outlive this).
  void add_metrics(metrics::Registry& registry) const;

 private:
  void run();
  const GatewayConfig& config_;
  LocalRooms& rooms_;
  FanoutCounters counters_;
  Deliver deliver_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace rtmc::gateway
