#pragma once
// The two RabbitMQ loops of a gateway, each on its own thread because
// rabbitmq-c and hiredis' sync API block:
//  - Sequencer (gateway/sequencer.hpp): consumes the ingest shards (single
//    active consumer per shard across all gateways), dedupes and sequences
//    with the rooms store's script, publishes the frame to the fan-out
//    exchange, then acks.
//  - Fanout: consumes this gateway's private fan-out queue and hands each
//    room's frames to the io threads exactly once and in seq order, repairing
//    gaps from the room log in Redis (store/rooms.hpp).

#include <atomic>
#include <functional>
#include <thread>

#include "gateway/gateway.hpp"
#include "gateway/room_cursor.hpp"
#include "gateway/sequenced.hpp"
#include "gateway/sequencer.hpp"

namespace rtmc::gateway {

class Fanout {
 public:
  // Called on the fan-out thread with frames in seq order per room, each seq
  // once.
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
