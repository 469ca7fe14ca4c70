#pragma once
// The two RabbitMQ loops of a gateway, each on its own thread because
// rabbitmq-c and hiredis' sync API block:
//  - Sequencer (gateway/sequencer.hpp): consumes the ingest shards (single
//    active consumer per shard across all gateways), dedupes and sequences
//    with the rooms store's script, publishes the frame to the fan-out
//    exchange, then acks.
//  - Fanout: consumes this gateway's private fan-out queue and hands each
//    room's frames to the io threads exactly once and in seq order, repairing
//    gaps from the room log in Redis (store/rooms.hpp). Presence events
//    (bodies of presence frames, one a line) ride the same queue and pass
//    straight through as seq-0 items (add_presence_items).

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "gateway/gateway.hpp"
#include "gateway/room_cursor.hpp"
#include "gateway/sequenced.hpp"
#include "gateway/sequencer.hpp"

namespace rtmc::gateway {

// If `body` is a fan-out message of presence frames ('\n'-separated, as the
// presence service batches them), appends one seq-0 item per valid frame
// (room, user, the frame with its '\n') to `batch` and returns true; a line
// that is not a presence frame is dropped with a log line. Returns false,
// appending nothing, for anything else (a sequenced message frame).
bool add_presence_items(std::string_view body, SequencedBatch& batch);

// Appends what the room log returned for seqs [from, to] of `room` (`found`,
// in seq order) to `batch`, with one gap item (Sequenced::gap_from, a `gap`
// frame) for each run of seqs it lacks: every local member owed them learns
// it, once, in its place in the room's order.
void add_log_range(const std::string& room, std::int64_t from, std::int64_t to,
                   std::vector<std::pair<std::int64_t, SharedFrame>> found, SequencedBatch& batch);

class Fanout {
 public:
  // Sequenced frames are handed on in seq order per room, each seq once;
  // presence items (seq 0) in arrival order, with no such guarantee.
  // Called on the fan-out thread.
  using Deliver = std::function<void(std::shared_ptr<const SequencedBatch> batch)>;
  Fanout(const GatewayConfig& config, RoomSeeds& seeds, Deliver deliver);
  ~Fanout();
  Fanout(const Fanout&) = delete;
  Fanout& operator=(const Fanout&) = delete;
  // As Sequencer::request_stop.
  void request_stop() { stopping_ = true; }

 private:
  void run();
  const GatewayConfig& config_;
  RoomSeeds& seeds_;
  Deliver deliver_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace rtmc::gateway
