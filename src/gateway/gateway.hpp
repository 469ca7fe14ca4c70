#pragma once
// The gateway: the seed's "main server". Holds client connections (TCP on
// `listen`, WebSocket on `http_listen`'s /ws; both live on the same io
// threads and share one session core),
// publishes their sends to the ingest queues, sequences the ingest shards it
// is the single active consumer of, and fans sequenced frames out to its
// local room members. Any number of gateways may run side by side.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "store/rate_limits.hpp"

namespace rtmc::gateway {

struct GatewayConfig {
  CommonOptions common;
  HostPort listen{"127.0.0.1", 7000};
  // SO_REUSEPORT on the client listener: several gateway processes share
  // `listen` (each with its own http_listen); the kernel spreads connections.
  bool reuse_port = false;
  // GET /healthz and /metrics (gateway/http_endpoints.hpp) and the
  // WebSocket transport at GET /ws (gateway/ws_transport.hpp); one per
  // process.
  HostPort http_listen{"127.0.0.1", 7080};
  // Origins a browser may open /ws from (exact, or "*" for any); a request
  // without Origin is admitted (gateway/ws_upgrade.hpp). The default is the
  // api's own default origin under both names.
  std::vector<std::string> ws_origins{"http://127.0.0.1:8080", "http://localhost:8080"};
  std::size_t io_threads = 0;  // 0 = one per core
  // The longest line (TCP) or text message (WebSocket) a client may send.
  std::size_t max_line_bytes = 64 * 1024;
  // The send-queue limits of a connection (Redis' client-output-buffer-limit
  // model; frames held for a join or a repair count too). Over the hard
  // limit a client is cut at once; over the soft limit it is cut only when
  // it stays over for send_queue_soft_time, so a client that keeps reading
  // drains a burst instead of being cut for it (0 = the soft limit cuts at
  // once). The soft limit also paces replays and caps held frames and
  // history pages.
  std::size_t send_queue_bytes = 1024 * 1024;
  // The hard limit is Redis' for pub/sub clients (32 MiB): it counts
  // frames shared by the room's members, so a client at it holds ~16 bytes
  // of its own per frame, and a reader on a busy two-core machine that falls
  // a few seconds behind a 20,000 msg/s room is not cut (8 MiB cut some).
  std::size_t send_queue_hard_bytes = 32 * 1024 * 1024;
  std::chrono::milliseconds send_queue_soft_time{10000};
  std::chrono::seconds auth_timeout{10};
  // Clients should ping at least this often (auth_ok.heartbeat_s); the
  // session is re-checked against Redis (logout) on the same period. Also
  // the TCP keepalive idle time of client sockets.
  std::chrono::seconds heartbeat{15};
  // A connection with no complete line for this long is closed
  // (idle_timeout). 0 = 2.5 x heartbeat (see effective_idle_timeout).
  std::chrono::milliseconds idle_timeout{0};
  // A WebSocket connection being closed may take this long for its last
  // frames and the close handshake; then its socket is closed anyway (a
  // slow consumer may never read them).
  std::chrono::milliseconds ws_close_grace{2000};
  // Presence (gateway/presence_service.hpp): this gateway's liveness key
  // lives this long after each refresh (every third of it); when it expires
  // (kill -9) another gateway sweeps its users offline.
  std::chrono::milliseconds presence_ttl{10000};
  // Sends a connection may have waiting for RabbitMQ's confirm before the
  // gateway stops reading from it.
  std::size_t max_unconfirmed_sends = 1024;
  // ... and the bytes those sends may hold, so a stalled broker cannot grow
  // a connection to megabytes (one send is always allowed).
  std::size_t max_unconfirmed_bytes = 1024 * 1024;
  // Sends of all connections accepted and not yet confirmed by RabbitMQ;
  // at it, every connection that sends stops being read until there is
  // room (0 = no bound).
  std::size_t ingest_backlog = 20000;
  // Sends to one ingest queue sent as one RabbitMQ message at most (1 = no
  // batching; amqp::Publisher::Options::batch_messages).
  std::size_t ingest_batch = 256;
  // AMQP messages awaiting RabbitMQ's confirm at once. Small on purpose:
  // what waits behind a full window goes out batched, so under load the
  // broker sees few large messages instead of many small ones.
  std::size_t ingest_window = 64;
  // A join of a room that has no other member on this gateway waits up to
  // this long for the fan-out queue's binding of the room before it answers
  // `joined`, so live frames and presence events reach the client from the
  // queue at once (messages are caught up from the room log either way;
  // presence events of the gap would be lost). 0 = no wait.
  std::chrono::milliseconds join_bind_wait{1000};
  // Rooms one connection may be in (too_many_rooms beyond).
  std::size_t max_rooms_per_connection = 1000;
  // Serialized size of a request's `ref` (bad_frame beyond).
  std::size_t max_ref_bytes = 1024;
  // Client connections per gateway; over it a new one gets `server_full` and
  // is closed. 0 = the open-file limit less a reserve for the process's own
  // files (64). Raise RLIMIT_NOFILE before start() to get more (main does).
  std::size_t max_connections = 0;
  // Seqs the sequencer reserves per room at a time in PostgreSQL (the seq
  // guard, gateway/sequencer.hpp).
  std::int64_t seq_block = 1000;
  // Sequencing rounds at Redis at once per sequencer (gateway/sequencer.hpp).
  std::size_t sequence_rounds_in_flight = 2;
  // TCP sends per user, one budget with the api's REST publishes
  // (store::messages_bucket; rate_limited beyond). No limit by default.
  store::Rate sends_per_user;

  // Kept at least the soft limit, whatever was configured.
  std::size_t effective_send_queue_hard_bytes() const {
    return send_queue_hard_bytes > send_queue_bytes ? send_queue_hard_bytes : send_queue_bytes;
  }

  std::chrono::milliseconds effective_idle_timeout() const {
    if (idle_timeout.count() > 0) return idle_timeout;
    return std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat) * 5 / 2;
  }
};

class Gateway {
 public:
  explicit Gateway(GatewayConfig config);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds and starts every thread; returns once the listener accepts.
  void start();
  // Thread-safe; closes client connections and joins every thread.
  void stop();
  // The bound port (useful with port 0).
  std::uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rtmc::gateway
