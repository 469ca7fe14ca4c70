#pragma once
// The sequencer of a gateway: consumes the ingest shards (one active consumer
// per shard across all gateways), dedupes and sequences each message with the
// rooms store's script, publishes the frame to the fan-out exchange, then
// acks. It runs on a thread of its own because rabbitmq-c and hiredis' sync
// API block; nothing else touches its connections.
//
// Failures are handled per message:
//  - Redis unreachable, timing out, or refusing writes (out of memory,
//    loading, ...): the deliveries stay un-acked and are retried without
//    limit, with backoff, on the same RabbitMQ connection.
//  - The script fails for a message (an error reply for it): that is a failed
//    attempt, retried with backoff; after `max_sequence_attempts` the message
//    is published to the dead-letter queue with a publisher confirm and only
//    then acked. Attempts are counted in memory by (room, sender, id).
//  - Messages of other rooms keep flowing meanwhile. A room's later messages
//    wait behind its failing one (they stay un-acked in memory), so the seqs
//    of one sender's messages to a room still follow the order sent.
//  - RabbitMQ lost: reconnect with backoff; un-acked messages are redelivered.
//    The backoff is reset only once a batch has been sequenced again.
//  - A room without seqs reserved under the current Redis run (the seq guard
//    of store/rooms.hpp; after every Redis restart, and every `seq_block`
//    messages): the sequencer reserves a block for every such room of the
//    batch in one PostgreSQL statement (store/seq_reservations.hpp), installs
//    them, and runs those rooms' messages again. PostgreSQL unreachable: the
//    rooms that need a block wait (un-acked, retried with backoff, never
//    dead-lettered) while rooms with seqs left flow; a statement waits at most
//    Options::pg_timeout, on this thread.
//
// Rounds: up to Options::rounds_in_flight sequencing calls are at Redis at
// once on the one connection (Redis runs them in the order sent), each over
// rooms no other unfinished round holds, so a room's messages are sequenced
// and fanned out strictly in order and a failure of a room in one round
// never lets a later round pass it. When a round's replies are read, the
// next round is sent before that round's fan-out is published and its
// deliveries acked: Redis sequences while this thread publishes, acks and
// reads deliveries. A delivery is still acked only after the fan-out of
// every line in it was published.
//
// The Redis run_id the script checks is read (INFO server) on every new Redis
// connection before anything is sequenced on it, so a script never runs with
// the run_id of another server process.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/config.hpp"
#include "common/metrics.hpp"

namespace rtmc::gateway {

struct GatewayConfig;

// Where messages the script keeps failing for end up (durable quorum queue).
inline constexpr std::string_view kDeadLetterQueue = "rtmc.ingest.dead";
inline constexpr std::int64_t kDefaultSeqBlock = 1000;
inline constexpr std::size_t kDefaultSequenceRoundsInFlight = 2;

// Monotonic counts for logs and metrics; read from any thread.
struct SequencerCounters {
  std::atomic<std::uint64_t> sequenced{0};         // messages acked after sequencing (repeats included)
  std::atomic<std::uint64_t> dead_lettered{0};     // messages moved to the dead-letter queue
  std::atomic<std::uint64_t> script_failures{0};   // failed attempts (script error replies)
  std::atomic<std::uint64_t> redis_refusals{0};    // batches Redis refused (OOM, loading, busy, ...)
  std::atomic<std::uint64_t> redis_failures{0};    // Redis I/O errors and timeouts
  std::atomic<std::uint64_t> amqp_connections{0};  // RabbitMQ connections opened for consuming
  std::atomic<std::uint64_t> seq_blocks{0};        // seq blocks reserved in PostgreSQL and installed
  std::atomic<std::uint64_t> seq_skips{0};         // installs that moved a room's seq up (Redis run change)
  std::atomic<std::uint64_t> seqs_skipped{0};      // seqs jumped over by those installs
  std::atomic<std::uint64_t> pg_failures{0};       // failed reservation statements
  // Messages per sequencing round (one pipelined batch of scripts).
  metrics::Histogram batch_sizes{metrics::batch_size_buckets()};
  // Seconds from a message's accept by its publisher (IngestMessage::
  // accepted_ms, another process's clock) to its frame's publish to the
  // fan-out exchange; messages without an accept time are not observed.
  metrics::Histogram end_to_end{metrics::latency_buckets()};
  std::atomic<std::uint64_t> rounds{0};  // sequencing rounds sent to Redis
  // Rounds sent while an earlier one was still at Redis or its fan-out not
  // yet published: the overlap of Options::rounds_in_flight.
  std::atomic<std::uint64_t> rounds_overlapped{0};
};

class Sequencer {
 public:
  struct Options {
    // Ingest queues to consume. Empty: the deployment's ingest_queue(0..K-1).
    // Tests name their own queues (declared like ingest queues) so they never
    // compete with a running stack; every message's shard still comes from
    // the room and `ingest_shards`.
    std::vector<std::string> queues;
    std::string dead_letter_queue{kDeadLetterQueue};
    // Seqs reserved per room at a time (> 0): one PostgreSQL round trip per
    // block; after a Redis restart each room skips what is left of its block.
    std::int64_t seq_block = kDefaultSeqBlock;
    std::chrono::milliseconds pg_timeout{1000};
    // Sequencing rounds at Redis at once (>= 1), over disjoint rooms: a room
    // in a round waits for its replies before its next messages go out.
    // Whatever the count, the next round is sent before the previous one's
    // fan-out publish and acks, so Redis and this thread overlap.
    std::size_t rounds_in_flight = kDefaultSequenceRoundsInFlight;
  };

  explicit Sequencer(const GatewayConfig& config);
  Sequencer(const CommonOptions& common, Options options);
  ~Sequencer();
  Sequencer(const Sequencer&) = delete;
  Sequencer& operator=(const Sequencer&) = delete;

  const SequencerCounters& counters() const { return counters_; }
  // Asks the thread to end without waiting for it (the destructor waits), so
  // a gateway can stop the sequencer and the fan-out at once.
  void request_stop() { stopping_ = true; }

 private:
  const CommonOptions common_;
  const Options options_;
  SequencerCounters counters_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace rtmc::gateway
