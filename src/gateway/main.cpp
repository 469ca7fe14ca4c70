// rtmc-gateway: parses configuration and runs a Gateway until SIGINT/SIGTERM.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdint>

#include "common/logging.hpp"
#include "gateway/gateway.hpp"
#include "gateway/ws_upgrade.hpp"
#include "server/limits.hpp"
#include "server/signals.hpp"

int main(int argc, char** argv) {
  rtmc::gateway::GatewayConfig config;
  CLI::App app{"rtmc-gateway: holds client TCP connections, sequences and fans out messages"};
  config.common.add_to(app);
  std::string listen = config.listen.str();
  std::string http_listen = config.http_listen.str();
  std::string ws_origins;
  for (const auto& origin : config.ws_origins) {
    if (!ws_origins.empty()) ws_origins += ',';
    ws_origins += origin;
  }
  std::size_t auth_timeout_s = config.auth_timeout.count();
  std::size_t heartbeat_s = config.heartbeat.count();
  std::size_t idle_timeout_ms = config.idle_timeout.count();
  std::size_t ws_close_grace_ms = config.ws_close_grace.count();
  std::size_t join_bind_wait_ms = config.join_bind_wait.count();
  std::size_t presence_ttl_s = 10;
  std::size_t dedupe_window_s = config.common.limits.dedupe_window.count();
  double publish_rate = 0;  // a second; 0 = off
  double send_queue_soft_s = std::chrono::duration<double>(config.send_queue_soft_time).count();
  std::uint32_t publish_burst = 0;
  app.add_option("--listen", listen, "Client TCP address host:port")
      ->envname("RTMC_GATEWAY_LISTEN")
      ->capture_default_str();
  app.add_flag("--reuse-port", config.reuse_port,
               "SO_REUSEPORT on the client listener, so several gateways share --listen (each with its own "
               "--http-listen)")
      ->envname("RTMC_GATEWAY_REUSE_PORT");
  app.add_option("--http-listen", http_listen,
                 "HTTP address for /healthz, /metrics and the WebSocket transport (/ws) host:port")
      ->envname("RTMC_GATEWAY_HTTP_LISTEN")
      ->capture_default_str();
  app.add_option("--ws-origins", ws_origins,
                 "Origins a browser may open /ws from, comma-separated, exact (scheme://host:port) or * for "
                 "any; requests without Origin are admitted")
      ->envname("RTMC_WS_ORIGINS")
      ->capture_default_str();
  app.add_option("--threads", config.io_threads, "io threads (0 = one per core)")
      ->envname("RTMC_GATEWAY_THREADS")
      ->capture_default_str();
  app.add_option("--max-line", config.max_line_bytes,
                 "Longest accepted line (TCP) or text message (WebSocket) in bytes")
      ->envname("RTMC_MAX_LINE")
      ->check(CLI::Range(64, 16 << 20))
      ->capture_default_str();
  app.add_option("--send-queue-bytes", config.send_queue_bytes,
                 "Soft limit of a connection's send queue: a client over it for --send-queue-soft-s is "
                 "cut (slow_consumer); also paces replays")
      ->envname("RTMC_SEND_QUEUE_BYTES")
      ->check(CLI::Range(1024, 1 << 30))
      ->capture_default_str();
  app.add_option("--send-queue-hard-bytes", config.send_queue_hard_bytes,
                 "Hard limit of a connection's send queue: a client over it is cut at once (slow_consumer); "
                 "at least --send-queue-bytes")
      ->envname("RTMC_SEND_QUEUE_HARD_BYTES")
      ->check(CLI::Range(1024, 1 << 30))
      ->capture_default_str();
  app.add_option("--send-queue-soft-s", send_queue_soft_s,
                 "Seconds a send queue may stay over --send-queue-bytes before the client is cut "
                 "(0 = at once)")
      ->envname("RTMC_SEND_QUEUE_SOFT_S")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--auth-timeout-s", auth_timeout_s, "Seconds a new connection has to authenticate")
      ->envname("RTMC_AUTH_TIMEOUT_S")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--heartbeat-s", heartbeat_s,
                 "Heartbeat period in seconds (auth_ok heartbeat_s, session re-check, TCP keepalive)")
      ->envname("RTMC_HEARTBEAT_S")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--idle-timeout-ms", idle_timeout_ms,
                 "A connection with no complete line for this long is closed (0 = 2.5 x heartbeat)")
      ->envname("RTMC_IDLE_TIMEOUT_MS")
      ->check(CLI::Range(std::size_t{0}, std::size_t{24} * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--ws-close-grace-ms", ws_close_grace_ms,
                 "How long a closing WebSocket connection's last frames and close handshake may take")
      ->envname("RTMC_WS_CLOSE_GRACE_MS")
      ->check(CLI::Range(std::size_t{1}, std::size_t{3600} * 1000))
      ->capture_default_str();
  app.add_option("--presence-ttl-s", presence_ttl_s,
                 "Liveness TTL of this gateway's presence records: after a kill -9 its users go offline "
                 "within this plus a third")
      ->envname("RTMC_PRESENCE_TTL_S")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--dedupe-window-s", dedupe_window_s,
                 "How long a message id is remembered per sender and room")
      ->envname("RTMC_DEDUPE_WINDOW_S")
      ->check(CLI::Range(1, 30 * 86400))
      ->capture_default_str();
  app.add_option("--seq-block", config.seq_block,
                 "Seqs reserved per room at a time in PostgreSQL (the durable seq guard)")
      ->envname("RTMC_SEQ_BLOCK")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--sequence-rounds-in-flight", config.sequence_rounds_in_flight,
                 "Sequencing rounds the sequencer keeps at Redis at once (over disjoint rooms)")
      ->envname("RTMC_SEQUENCE_ROUNDS_IN_FLIGHT")
      ->check(CLI::Range(std::size_t{1}, std::size_t{64}))
      ->capture_default_str();
  app.add_option("--room-log-length", config.common.limits.room_log_length, "Messages kept per room in Redis")
      ->envname("RTMC_ROOM_LOG_LENGTH")
      ->check(CLI::Range(100, 10000000))
      ->capture_default_str();
  app.add_option("--join-bind-wait-ms", join_bind_wait_ms,
                 "Longest wait of a join for the fan-out binding of a room new on this gateway "
                 "(0 = answer at once; frames are caught up from the room log either way)")
      ->envname("RTMC_JOIN_BIND_WAIT_MS")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  app.add_option("--max-rooms-per-connection", config.max_rooms_per_connection,
                 "Rooms one connection may be in (too_many_rooms beyond)")
      ->envname("RTMC_MAX_ROOMS_PER_CONNECTION")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--max-ref", config.max_ref_bytes,
                 "Longest accepted serialized \"ref\" in bytes (bad_frame beyond)")
      ->envname("RTMC_MAX_REF_BYTES")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-unconfirmed-sends", config.max_unconfirmed_sends,
                 "Sends a connection may have awaiting RabbitMQ's confirm before it is no longer read")
      ->envname("RTMC_MAX_UNCONFIRMED_SENDS")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-unconfirmed-bytes", config.max_unconfirmed_bytes,
                 "Bytes those sends may hold before the connection is no longer read")
      ->envname("RTMC_MAX_UNCONFIRMED_BYTES")
      ->check(CLI::Range(1024, 1 << 30))
      ->capture_default_str();
  app.add_option(
         "--ingest-backlog", config.ingest_backlog,
         "Sends awaiting RabbitMQ's confirm, all connections together, before sending connections are no "
         "longer read (0 = no bound)")
      ->envname("RTMC_INGEST_BACKLOG")
      ->check(CLI::Range(std::size_t{0}, std::size_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--ingest-batch", config.ingest_batch,
                 "Sends to one ingest queue sent as one RabbitMQ message at most (1 = no batching)")
      ->envname("RTMC_INGEST_BATCH")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}))
      ->capture_default_str();
  app.add_option("--ingest-window", config.ingest_window,
                 "RabbitMQ messages (batches) awaiting their confirm at once")
      ->envname("RTMC_INGEST_WINDOW")
      ->check(CLI::Range(std::size_t{1}, std::size_t{65'535}))
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections,
                 "Client connections per gateway (server_full beyond); 0 = the open-file limit less 64")
      ->envname("RTMC_MAX_CONNECTIONS")
      ->capture_default_str();
  // The api's flags: one budget per user over REST and TCP.
  app.add_option("--publish-rate", publish_rate, "TCP sends a second per user (0 = no limit)")
      ->envname("RTMC_PUBLISH_RATE")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_option("--publish-burst", publish_burst, "TCP sends per user at once (0 = one second's worth)")
      ->envname("RTMC_PUBLISH_BURST")
      ->check(CLI::Range(0u, 1'000'000'000u))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    // First, so that finish()'s warnings already have the chosen format.
    rtmc::setup_logging(config.common.log_level, "gateway", rtmc::parse_log_format(config.common.log_format));
    config.common.finish();
    config.listen = rtmc::HostPort::parse(listen);
    config.http_listen = rtmc::HostPort::parse(http_listen);
    config.ws_origins = rtmc::gateway::parse_origins(ws_origins);
    config.auth_timeout = std::chrono::seconds(auth_timeout_s);
    config.heartbeat = std::chrono::seconds(heartbeat_s);
    config.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
    config.ws_close_grace = std::chrono::milliseconds(ws_close_grace_ms);
    config.send_queue_soft_time =
        std::chrono::milliseconds(static_cast<std::int64_t>(send_queue_soft_s * 1000.0 + 0.5));
    config.join_bind_wait = std::chrono::milliseconds(join_bind_wait_ms);
    config.common.limits.dedupe_window = std::chrono::seconds(dedupe_window_s);
    config.presence_ttl = std::chrono::seconds(presence_ttl_s);
    config.sends_per_user = rtmc::store::messages_rate(publish_rate, publish_burst);

    // Each connection costs a descriptor: take all the hard limit allows.
    auto files = rtmc::server::raise_open_file_limit();
    spdlog::info("open-file limit {} (hard {})", files.soft, files.hard);

    // Before any thread starts, so only the wait below sees SIGINT/SIGTERM.
    rtmc::server::StopSignals signals;

    rtmc::gateway::Gateway gateway(config);
    gateway.start();
    int received = signals.wait();
    spdlog::info("gateway stopping (signal {})", received);
    gateway.stop();
  } catch (const std::exception& error) {
    spdlog::critical("gateway: {}", error.what());
    return 1;
  }
  return 0;
}
