#pragma once
// One io thread's world: its io_context, its client connections and which of
// them are in which room. Only that thread touches the maps, so joins,
// leaves and deliveries need no lock; other threads post to `io`.
// (An io thread is not an ingest shard: those are RabbitMQ queues.)

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <vector>

#include "gateway/client_connection.hpp"
#include "gateway/connection_index.hpp"
#include "gateway/sequenced.hpp"
#include "gateway/traffic.hpp"
#include "gateway/transport.hpp"

namespace rtmc::gateway {

class IoThread {
 public:
  IoThread() = default;
  // `rooms` hears when a room gets its first or loses its last member here.
  explicit IoThread(ConnectionIndex::RoomObserver rooms) : connections(std::move(rooms)) {}

  // First member: destroyed last, after everything whose handlers it holds.
  boost::asio::io_context io{1};
  ConnectionIndex connections;

  // One shared frame for every local member of the room; each member's
  // frames of the batch leave in one write. Seq 0 marks a presence event.
  // Returns the frames handed out, by kind, for the caller to count once
  // per batch.
  DeliveryCounts deliver(const SequencedBatch& batch) {
    DeliveryCounts handed{};
    for (const auto& item : batch) {
      const auto* members = connections.members(item.room);
      if (members == nullptr) continue;
      // Safe to iterate: a member closed by this delivery (slow consumer)
      // leaves the index later, in a posted handler (ClientConnection::close).
      if (item.seq == 0) {
        for (const auto& connection : members->list())
          connection->deliver_presence(item.room, item.user, item.frame);
        handed[static_cast<std::size_t>(DeliveryKind::presence)] += members->size();
      } else if (item.gap_from > 0) {
        for (const auto& connection : members->list())
          connection->deliver_gap(item.room, item.gap_from, item.seq, item.frame);
        handed[static_cast<std::size_t>(DeliveryKind::gap)] += members->size();
      } else {
        deliver_message(members->list(), item);
        handed[static_cast<std::size_t>(DeliveryKind::message)] += members->size();
      }
    }
    return handed;
  }

  // The flush is posted behind whatever is already queued on this thread:
  // when the thread is behind, the batches waiting there join this one in the
  // same writes (one syscall per connection for all of them); when it is
  // idle, the flush runs right away.
  void defer_flush(std::shared_ptr<Transport> transport) {
    deferred_flushes_.push_back(std::move(transport));
    if (!flush_posted_) {
      flush_posted_ = true;
      boost::asio::post(io, [this] { flush_deferred(); });
    }
  }

  // Read buffer shared by the connections of this thread (see
  // TcpLineTransport::read_loop).
  std::array<char, 64 * 1024>& scratch() { return scratch_; }

  // Every connection gets `server_shutdown` and closes.
  void shutdown_all(std::string_view message = "the server is shutting down; reconnect") {
    auto all = connections.connections();
    for (auto& [_, connection] : all) connection->shutdown(message);
  }

 private:
  // Each member's connection object is asked for a few members ahead, and
  // its transport a few members after that (once the object is loaded): a
  // room of 10,000 members otherwise waits on memory at every member.
  void deliver_message(const std::vector<ConnectionIndex::Member>& members, const Sequenced& item) {
    constexpr std::size_t kObjectAhead = 8;
    constexpr std::size_t kTransportAhead = 4;
    const RoomKey room(item.room);
    const std::size_t count = members.size();
    for (std::size_t i = 0; i < count; ++i) {
      if (i + kObjectAhead < count) members[i + kObjectAhead]->prefetch_delivery();
      if (i + kTransportAhead < count) members[i + kTransportAhead]->prefetch_transport();
      members[i]->deliver(room, item.seq, item.frame);
    }
  }

  void flush_deferred() {
    flush_posted_ = false;
    auto transports = std::move(deferred_flushes_);
    deferred_flushes_.clear();
    for (auto& transport : transports) transport->flush_deferred();
    // Keep the vector's capacity for the next batch.
    transports.clear();
    if (deferred_flushes_.empty()) deferred_flushes_.swap(transports);
  }

  std::array<char, 64 * 1024> scratch_;
  std::vector<std::shared_ptr<Transport>> deferred_flushes_;
  bool flush_posted_ = false;
};

}  // namespace rtmc::gateway
