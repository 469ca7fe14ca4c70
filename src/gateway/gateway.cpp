#include "gateway/gateway.hpp"

#include "auth/auth.hpp"
#include "gateway/http_endpoints.hpp"
#include "gateway/io_shard.hpp"
#include "gateway/pipeline.hpp"
#include "gateway/session.hpp"
#include "store/amqp.hpp"
#include "store/redis.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <future>
#include <thread>

namespace rtmc::gateway {

namespace asio = boost::asio;

struct Gateway::Impl {
  explicit Impl(GatewayConfig c)
      : config(std::move(c)),
        tokens(config.common.auth.jwt_secret, config.common.auth.token_ttl),
        redis(config.common.redis, 2),
        publisher(config.common.amqp, {.window = 500,
                                       .give_up_after = std::chrono::milliseconds(5000),
                                       .ingest_shards = config.common.amqp.ingest_shards}),
        context{config, tokens, redis, publisher, counters, room_seeds} {
    std::size_t threads = config.io_threads ? config.io_threads : std::max(1u, std::thread::hardware_concurrency());
    for (std::size_t i = 0; i < threads; ++i) shards.push_back(std::make_unique<IoShard>());
  }

  asio::awaitable<void> accept_loop() {
    constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
    std::size_t next = 0;
    for (;;) {
      IoShard& shard = *shards[next++ % shards.size()];
      auto [ec, accepted] = co_await acceptor->async_accept(shard.io.get_executor(), nothrow);
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE and friends: back off instead of spinning.
        spdlog::warn("accept failed: {}", ec.message());
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(nothrow);
        continue;
      }
      counters.accepted.fetch_add(1, std::memory_order_relaxed);
      // The session's whole life is on the shard's thread.
      asio::post(shard.io, [this, &shard, socket = std::move(accepted)]() mutable {
        std::make_shared<Session>(std::move(socket), context, shard)->start();
      });
    }
  }

  // Close reasons are counted so operators can see why clients leave (slow
  // consumers, auth failures...) without reading every connection's line.
  asio::awaitable<void> report_stats() {
    constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
    asio::steady_timer timer(shards.front()->io);
    std::string last;
    for (;;) {
      timer.expires_after(std::chrono::seconds(60));
      auto [ec] = co_await timer.async_wait(nothrow);
      if (ec) co_return;
      std::uint64_t closed_total = 0;
      std::string reasons;
      for (int i = 0; i < static_cast<int>(CloseReason::count_); ++i) {
        auto count = counters.closed[i].load(std::memory_order_relaxed);
        closed_total += count;
        if (count) reasons += fmt::format(" {}={}", to_string(static_cast<CloseReason>(i)), count);
      }
      const auto accepted = counters.accepted.load(std::memory_order_relaxed);
      auto line = fmt::format("connections={} accepted={} closed={}{}", accepted - closed_total, accepted,
                              closed_total, reasons);
      if (line != last) spdlog::info("gateway stats: {}", line);
      last = std::move(line);
    }
  }

  // Fan-out thread -> every io thread: one shared batch, posted once each.
  void deliver(std::shared_ptr<const SequencedBatch> batch) {
    for (auto& shard : shards)
      asio::post(shard->io, [&shard = *shard, batch] { shard.deliver(*batch); });
  }

  GatewayConfig config;
  auth::TokenService tokens;
  GatewayCounters counters;
  RoomSeeds room_seeds;
  redis::Client redis;
  amqp::Publisher publisher;
  SessionContext context;
  std::vector<std::unique_ptr<IoShard>> shards;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  std::unique_ptr<Fanout> fanout;
  std::unique_ptr<Sequencer> sequencer;
  std::unique_ptr<HttpEndpoints> http;
  bool stopped = false;
};

Gateway::Gateway(GatewayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Gateway::~Gateway() { stop(); }

void Gateway::start() {
  auto& impl = *impl_;
  auto& io0 = impl.shards.front()->io;
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address(impl.config.listen.host), impl.config.listen.port);
  impl.acceptor = std::make_unique<asio::ip::tcp::acceptor>(io0);
  impl.acceptor->open(endpoint.protocol());
  impl.acceptor->set_option(asio::socket_base::reuse_address(true));
  impl.acceptor->bind(endpoint);
  impl.acceptor->listen(asio::socket_base::max_listen_connections);
  impl.http = std::make_unique<HttpEndpoints>(impl.config.http_listen, counts_of(impl.counters));
  impl.http->start();

  impl.fanout = std::make_unique<Fanout>(
      impl.config, impl.room_seeds,
      [&impl](std::shared_ptr<const SequencedBatch> batch) { impl.deliver(std::move(batch)); });
  impl.sequencer = std::make_unique<Sequencer>(impl.config);

  asio::co_spawn(io0, impl.accept_loop(), asio::detached);
  asio::co_spawn(io0, impl.report_stats(), asio::detached);
  for (auto& shard : impl.shards) {
    impl.guards.push_back(asio::make_work_guard(shard->io));
    impl.threads.emplace_back([&io = shard->io] { io.run(); });
  }
  spdlog::info("gateway listening on {}:{} with {} io threads", impl.config.listen.host, port(),
               impl.shards.size());
}

void Gateway::stop() {
  auto& impl = *impl_;
  if (impl.stopped) return;
  impl.stopped = true;
  // Stop intake first, then the pipeline threads, then the connections.
  if (impl.acceptor) {
    std::promise<void> closed;
    asio::post(impl.shards.front()->io, [&] {
      boost::system::error_code ignored;
      impl.acceptor->close(ignored);
      closed.set_value();
    });
    if (!impl.threads.empty()) closed.get_future().wait();
  }
  impl.http.reset();
  impl.sequencer.reset();
  impl.fanout.reset();
  for (auto& shard : impl.shards) asio::post(shard->io, [&shard = *shard] { shard.close_all(); });
  // A moment for the close to reach the clients before the loops end.
  if (!impl.threads.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  impl.guards.clear();
  for (auto& shard : impl.shards) shard->io.stop();
  for (auto& thread : impl.threads) thread.join();
  impl.threads.clear();
}

std::uint16_t Gateway::port() const { return impl_->acceptor->local_endpoint().port(); }

}  // namespace rtmc::gateway
