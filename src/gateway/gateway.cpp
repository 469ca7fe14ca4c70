#include "gateway/gateway.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "auth/auth.hpp"
#include "auth/room_access.hpp"
#include "common/names.hpp"
#include "gateway/client_connection.hpp"
#include "gateway/http_endpoints.hpp"
#include "gateway/io_thread.hpp"
#include "gateway/pipeline.hpp"
#include "gateway/presence_service.hpp"
#include "gateway/store_ports.hpp"
#include "gateway/tcp_line_transport.hpp"
#include "gateway/ws_transport.hpp"
#include "gateway/ws_upgrade.hpp"
#include "server/http_error.hpp"
#include "server/limits.hpp"
#include "server/listener.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"

namespace rtmc::gateway {

namespace asio = boost::asio;

namespace {
// Redis calls waiting per worker of the connections' Redis client. A
// worker writes its whole queue in one round trip (auto-pipelining), so a
// connect storm needs a deep queue, not a slow one.
constexpr std::size_t kRedisQueueLimit = 4096;
// History's PostgreSQL pool: connections, statements waiting per
// connection, and each statement's deadline (queue time included).
constexpr std::size_t kHistoryPgConnections = 2;
constexpr std::size_t kHistoryPgQueueLimit = 64;
constexpr auto kHistoryPgTimeout = std::chrono::milliseconds(3000);
// How long a stopping gateway waits for its connections' close steps.
constexpr auto kCloseStepGrace = std::chrono::seconds(3);

// This process's name in Redis' presence records: unique per process, and
// readable in logs (the client port first).
std::string make_gateway_id(std::uint16_t port) {
  std::random_device random;
  const std::uint64_t bits = (std::uint64_t{random()} << 32) | random();
  return fmt::format("{}-{:016x}", port, bits);
}
}  // namespace

struct Gateway::Impl {
  explicit Impl(GatewayConfig c)
      : config(std::move(c)),
        tokens(config.common.auth.jwt_secret, config.common.auth.token_ttl),
        // Bounded and with a deadline, so a stalled Redis answers `unavailable`
        // at once instead of queueing every auth, join and session check.
        redis(std::make_unique<redis::Client>(config.common.redis, 2,
                                              WorkerLimits{kRedisQueueLimit, config.common.redis.timeout})),
        publisher(std::make_unique<amqp::Publisher>(
            config.common.amqp, amqp::Publisher::Options{.window = config.ingest_window,
                                                         .give_up_after = std::chrono::milliseconds(5000),
                                                         .batch_messages = config.ingest_batch,
                                                         .ingest_shards = config.common.amqp.ingest_shards})),
        login_sessions(*redis),
        room_reader(*redis, config.common.amqp.ingest_shards),
        ingest(*publisher, config.common.amqp.ingest_shards, config.ingest_backlog),
        limited_sends(config.sends_per_user.limited()
                          ? std::make_unique<RedisSendLimiter>(*redis, config.sends_per_user)
                          : nullptr),
        history_pg(std::make_unique<pg::Pool>(config.common.pg, kHistoryPgConnections,
                                              pg::Options{kHistoryPgTimeout, kHistoryPgQueueLimit})),
        history(*redis, *history_pg, config.common.amqp.ingest_shards),
        presence(std::make_unique<PresenceService>(
            config.common, make_gateway_id(config.listen.port),
            PresenceService::Options{.liveness_ttl = config.presence_ttl,
                                     .status_cache_ttl = config.common.presence.status_cache_ttl})),
        services{config,
                 tokens,
                 access,
                 login_sessions,
                 room_reader,
                 ingest,
                 limited_sends ? static_cast<SendLimiter&>(*limited_sends) : unlimited_sends,
                 *presence,
                 local_rooms,
                 counters,
                 {}} {
    std::size_t count =
        config.io_threads ? config.io_threads : std::max(1u, std::thread::hardware_concurrency());
    for (std::size_t i = 0; i < count; ++i)
      io_threads.push_back(std::make_unique<IoThread>([this](const std::string& room, bool occupied) {
        occupied ? local_rooms.occupied(room) : local_rooms.vacated(room);
      }));
    services.history = &history;
  }

  // Over the connection cap the client is told why (so it tries another
  // gateway at once) and closed; the frame is written without waiting, as a
  // refused client gets no more of this process than that.
  template <class Socket>
  void refuse(Socket& socket) {
    static const std::string frame =
        protocol::error_frame(protocol::ErrorCode::server_full,
                              "this gateway holds as many connections as it may; try another", std::nullopt);
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(asio::buffer(frame), ignored);
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    counters.closed[static_cast<int>(TransportKind::tcp)][static_cast<int>(CloseReason::server_full)]
        .fetch_add(1, std::memory_order_relaxed);
  }

  asio::awaitable<void> accept_loop() {
    constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
    std::size_t next = 0;
    for (;;) {
      IoThread& thread = *io_threads[next++ % io_threads.size()];
      auto [ec, accepted] = co_await acceptor->async_accept(thread.io.get_executor(), nothrow);
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE and friends: back off instead of spinning.
        spdlog::warn("accept failed: {}", ec.message());
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(nothrow);
        continue;
      }
      counters.accepted[static_cast<int>(TransportKind::tcp)].fetch_add(1, std::memory_order_relaxed);
      if (counters.open.load(std::memory_order_relaxed) >=
          static_cast<std::int64_t>(config.max_connections)) {
        refuse(accepted);
        continue;
      }
      counters.open.fetch_add(1, std::memory_order_relaxed);
      // The connection's whole life is on its io thread.
      asio::post(thread.io, [this, &thread, socket = std::move(accepted)]() mutable {
        auto transport = std::make_shared<TcpLineTransport>(std::move(socket), thread, config.max_line_bytes,
                                                            config.heartbeat);
        auto connection = std::make_shared<ClientConnection>(thread.io.get_executor(), services,
                                                             thread.connections, transport);
        connection->start();
        transport->start(connection);
      });
    }
  }

  // GET /ws on the HTTP thread: the request is checked there (ws_upgrade.hpp),
  // admitted under --max-connections like a TCP client, and the socket
  // moves to an io thread, where the handshake is answered and the
  // connection lives. A refusal is an HTTP answer.
  std::optional<server::Response> upgrade_ws(server::Request& request, asio::ip::tcp::socket& socket,
                                             const boost::beast::flat_buffer& read_ahead) {
    namespace http = boost::beast::http;
    constexpr int ws = static_cast<int>(TransportKind::ws);
    if (auto refusal = check_ws_upgrade(request, config.ws_origins)) return refusal;
    // RFC 6455: no frame before the 101; Beast could not be handed these bytes.
    if (read_ahead.size() != 0)
      return server::error_response(server::HttpError(http::status::bad_request, "bad_request",
                                                      "data sent before the upgrade was answered"),
                                    request.version());
    if (!accepting_ws.load())
      return server::error_response(server::HttpError(http::status::service_unavailable, "server_shutdown",
                                                      "the gateway is starting or stopping; retry"),
                                    request.version());
    counters.accepted[ws].fetch_add(1, std::memory_order_relaxed);
    if (counters.open.load(std::memory_order_relaxed) >= static_cast<std::int64_t>(config.max_connections)) {
      counters.closed[ws][static_cast<int>(CloseReason::server_full)].fetch_add(1, std::memory_order_relaxed);
      return server::error_response(
          server::HttpError(http::status::service_unavailable, "server_full",
                            "this gateway holds as many connections as it may; try another"),
          request.version());
    }
    IoThread& thread =
        *io_threads[next_ws_thread.fetch_add(1, std::memory_order_relaxed) % io_threads.size()];
    boost::system::error_code ec;
    const auto protocol = socket.local_endpoint(ec).protocol();
    asio::ip::tcp::socket moved(thread.io);
    if (!ec) {
      const auto fd = socket.release(ec);
      if (!ec) moved.assign(protocol, fd, ec);
      if (ec && fd >= 0) ::close(fd);
    }
    if (ec) {
      spdlog::warn("websocket upgrade: the socket could not move to an io thread: {}", ec.message());
      counters.closed[ws][static_cast<int>(CloseReason::internal)].fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    counters.open.fetch_add(1, std::memory_order_relaxed);
    // The connection's whole life is on its io thread.
    asio::post(thread.io, [this, &thread, socket = std::move(moved), request = std::move(request)]() mutable {
      if (!accepting_ws.load()) {
        // Admitted while the gateway began to stop, after its connections
        // were told: this one goes without a word, as if never accepted.
        counters.closed[ws][static_cast<int>(CloseReason::server_shutdown)].fetch_add(
            1, std::memory_order_relaxed);
        counters.open.fetch_sub(1, std::memory_order_relaxed);
        return;
      }
      auto transport = std::make_shared<WsTransport>(std::move(socket), thread, config.max_line_bytes,
                                                     config.heartbeat, config.ws_close_grace);
      auto connection = std::make_shared<ClientConnection>(thread.io.get_executor(), services,
                                                           thread.connections, transport);
      connection->start();
      transport->start(connection, std::move(request));
    });
    return std::nullopt;
  }

  // Close reasons are counted so operators can see why clients leave (slow
  // consumers, auth failures...) without reading every connection's line.
  asio::awaitable<void> report_stats() {
    constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
    asio::steady_timer timer(io_threads.front()->io);
    std::string last;
    for (;;) {
      timer.expires_after(std::chrono::seconds(60));
      auto [ec] = co_await timer.async_wait(nothrow);
      if (ec) co_return;
      // The same snapshot /metrics renders (http_endpoints.hpp).
      const auto counts = counts_of(counters)();
      std::string line;
      for (const auto& by : counts.transports) {
        std::uint64_t closed_total = 0;
        std::string reasons;
        for (const auto& [reason, count] : by.closed_by_reason) {
          closed_total += count;
          if (count) reasons += fmt::format(" {}={}", reason, count);
        }
        if (by.accepted == 0 && closed_total == 0) continue;
        if (!line.empty()) line += "; ";
        line += fmt::format("{}: connections={} accepted={} closed={}{}", by.transport,
                            by.accepted - closed_total, by.accepted, closed_total, reasons);
      }
      if (line != last) spdlog::info("gateway stats: {}", line);
      last = std::move(line);
    }
  }

  // Fan-out thread -> every io thread: one shared batch, posted once each.
  void deliver(std::shared_ptr<const SequencedBatch> batch) {
    for (auto& thread : io_threads)
      asio::post(thread->io, [&thread = *thread, &traffic = counters.traffic, batch] {
        traffic.count_deliveries(thread.deliver(*batch));
      });
  }

  // Runs `job` on every io thread and waits until each has run it.
  void on_every_io_thread(const std::function<void(IoThread&)>& job) {
    std::vector<std::promise<void>> done(io_threads.size());
    for (std::size_t i = 0; i < io_threads.size(); ++i)
      asio::post(io_threads[i]->io, [&, i] {
        job(*io_threads[i]);
        done[i].set_value();
      });
    for (auto& promise : done) promise.get_future().wait();
  }

  GatewayConfig config;
  // Written by the io threads' indexes, read by the fan-out thread: outlives
  // both.
  LocalRooms local_rooms;
  // Declared before the rest so it is destroyed after it: the io_contexts must outlive
  // every thread and object that posts into them (see Gateway::stop).
  std::vector<std::unique_ptr<IoThread>> io_threads;
  auth::TokenService tokens;
  auth::RoomAccess access;
  GatewayCounters counters;
  std::unique_ptr<redis::Client> redis;
  std::unique_ptr<amqp::Publisher> publisher;
  RedisLoginSessions login_sessions;
  RedisRoomReader room_reader;
  AmqpIngestPublisher ingest;
  // Without a rate, sends cost no Redis round trip.
  UnlimitedSends unlimited_sends;
  std::unique_ptr<RedisSendLimiter> limited_sends;
  // History's own PostgreSQL connections: a burst of history pages must not
  // queue behind (or delay) presence's status writes.
  std::unique_ptr<pg::Pool> history_pg;
  StoreHistoryReader history;
  std::unique_ptr<PresenceService> presence;
  ConnectionServices services;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  std::unique_ptr<Fanout> fanout;
  std::unique_ptr<Sequencer> sequencer;
  std::unique_ptr<HttpEndpoints> http;
  // Set once this gateway is registered in Redis (start(), as the TCP
  // accept loop starts); cleared when it starts to stop. Otherwise /ws
  // upgrades are refused with 503.
  std::atomic<bool> accepting_ws{false};
  std::atomic<std::size_t> next_ws_thread{0};
  bool stopped = false;
};

Gateway::Gateway(GatewayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Gateway::~Gateway() {
  stop();
}

void Gateway::start() {
  auto& impl = *impl_;
  if (impl.config.max_connections == 0)
    impl.config.max_connections = server::connection_cap_from_open_files();
  auto& io0 = impl.io_threads.front()->io;
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address(impl.config.listen.host), impl.config.listen.port);
  impl.acceptor = std::make_unique<asio::ip::tcp::acceptor>(io0);
  server::listen_on(*impl.acceptor, endpoint, impl.config.reuse_port);
  // Bound right after the client port, so a taken port fails before the
  // pipeline threads start.
  std::vector<server::UpgradeRoute> upgrades;
  upgrades.push_back({"/ws", [&impl](server::Request& request, asio::ip::tcp::socket& socket,
                                     boost::beast::flat_buffer& read_ahead) {
                        return impl.upgrade_ws(request, socket, read_ahead);
                      }});
  impl.http =
      std::make_unique<HttpEndpoints>(impl.config.http_listen, counts_of(impl.counters), std::move(upgrades));
  impl.http->start();

  impl.fanout = std::make_unique<Fanout>(
      impl.config, impl.local_rooms,
      [&impl](std::shared_ptr<const SequencedBatch> batch) { impl.deliver(std::move(batch)); });
  impl.sequencer = std::make_unique<Sequencer>(impl.config);
  // The registry is thread-safe; http is reset before the sequencer in
  // stop() (and declared after it), so no scrape reads freed counters.
  add_sequencer_metrics(impl.http->registry(), impl.sequencer->counters());
  impl.presence->add_metrics(impl.http->registry());
  impl.fanout->add_metrics(impl.http->registry());
  add_traffic_metrics(impl.http->registry(), impl.counters.traffic);
  add_store_metrics(impl.http->registry(), "gateway", impl.config.common);

  for (auto& thread : impl.io_threads) {
    impl.guards.push_back(asio::make_work_guard(thread->io));
    impl.threads.emplace_back([&io = thread->io] { io.run(); });
  }
  // Registered in Redis before the first client is accepted.
  impl.presence->start(io0.get_executor(), [&impl] {
    for (auto& thread : impl.io_threads)
      asio::post(thread->io, [&thread = *thread] {
        thread.shutdown_all("this gateway lost its presence records (it stalled); reconnect");
      });
  });
  asio::co_spawn(io0, impl.accept_loop(), asio::detached);
  impl.accepting_ws.store(true);
  asio::co_spawn(io0, impl.report_stats(), asio::detached);
  spdlog::info("gateway listening on {}:{} with {} io threads, at most {} connections",
               impl.config.listen.host, port(), impl.io_threads.size(), impl.config.max_connections);
}

// The order matters: intake stops; clients are told `server_shutdown` (the
// frame is written at once when the socket takes it); the pipeline threads
// end; the io threads end; only then go the publisher and the Redis (and
// history's PostgreSQL) workers, which may still post answers into the
// io_contexts (stopped, not destroyed: their handlers are dropped when the
// IoThreads go, last of all).
void Gateway::stop() {
  auto& impl = *impl_;
  if (impl.stopped) return;
  impl.stopped = true;
  const bool running = !impl.threads.empty();
  impl.accepting_ws.store(false);
  if (running) {
    impl.on_every_io_thread([&impl](IoThread& thread) {
      if (&thread == impl.io_threads.front().get() && impl.acceptor) {
        boost::system::error_code ignored;
        impl.acceptor->close(ignored);
      }
    });
    impl.on_every_io_thread([](IoThread& thread) { thread.shutdown_all(); });
    // The close steps (each connection's presence clean-up) run on the io
    // threads; give them a moment, so their users' offline changes reach the
    // status writer. Whatever is left then goes in one step, with its events.
    const auto deadline = std::chrono::steady_clock::now() + kCloseStepGrace;
    while ((impl.counters.open.load() > 0 || impl.counters.closing.load() > 0) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    impl.presence->stop();
  }
  impl.http.reset();
  // Both threads may be blocked in a Redis or RabbitMQ call for seconds:
  // they are asked to stop together, then waited for.
  if (impl.sequencer) impl.sequencer->request_stop();
  if (impl.fanout) impl.fanout->request_stop();
  impl.sequencer.reset();
  impl.fanout.reset();
  impl.guards.clear();
  for (auto& thread : impl.io_threads) thread->io.stop();
  for (auto& thread : impl.threads) thread.join();
  impl.threads.clear();
  impl.publisher.reset();
  impl.redis.reset();
  impl.history_pg.reset();
}

std::uint16_t Gateway::port() const {
  return impl_->acceptor->local_endpoint().port();
}

}  // namespace rtmc::gateway
