#include "server/http_server.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <optional>
#include <vector>

#include "server/io_threads.hpp"
#include "server/listener.hpp"

namespace rtmc::server {

namespace net = boost::asio;
using net::ip::tcp;

namespace {

// Refused connections each hold a descriptor while their 503 is written and
// the client's bytes are drained (up to half a second); beyond this many at
// once a refused connection is closed without an answer, so a flood cannot
// eat the descriptors the cap keeps in reserve.
constexpr std::size_t kMaxAnsweredRefusals = 16;

}  // namespace

// Member order is destruction order reversed: the ConnectionSets outlive the
// io_contexts (destroying a context destroys suspended connections, which
// unregister themselves), and the stop timers die before the contexts.
struct HttpServer::Impl {
  Impl(HttpServerConfig cfg, const Router& r, HttpMetrics& m)
      : config(std::move(cfg)),
        router(r),
        metrics(m),
        connections(threads_count(config.threads)),
        threads(connections.size()),
        hard_stops(connections.size()),
        listener(threads.context(0), resolve_listen_address(config.listen),
                 ListenerOptions{.max_connections = config.max_connections}) {}

  ~Impl() {
    // on_empty callbacks reference the timers, which are destroyed first.
    for (auto& set : connections) set.forget_on_empty();
  }

  static std::size_t threads_count(std::size_t wanted) {
    return wanted != 0 ? wanted : std::max(1u, std::thread::hardware_concurrency());
  }

  void accept(std::size_t target, tcp::socket socket, ConnectionSlot slot) {
    auto connection =
        std::make_shared<HttpConnection>(std::move(socket), router, metrics, config.limits,
                                         connections[target], std::move(slot), &config.upgrades);
    net::co_spawn(threads.context(target), HttpConnection::run(std::move(connection)), net::detached);
  }

  void refuse(std::size_t target, tcp::socket socket) {
    metrics.connection_refused();
    if (refusing->load(std::memory_order_relaxed) >= kMaxAnsweredRefusals) {
      spdlog::warn("{}: over the connection cap ({}); closed without an answer", config.name,
                   listener.max_connections());
      return;  // the socket closes here
    }
    spdlog::debug("{}: over the connection cap ({}); answering server_full", config.name,
                  listener.max_connections());
    refusing->fetch_add(1, std::memory_order_relaxed);
    auto connection = std::make_shared<HttpConnection>(std::move(socket), router, metrics, config.limits,
                                                       connections[target]);
    net::co_spawn(
        threads.context(target), HttpConnection::refuse(std::move(connection)),
        [counter = refusing](std::exception_ptr) { counter->fetch_sub(1, std::memory_order_relaxed); });
  }

  // On io thread `i`.
  void stop_thread(std::size_t i) {
    auto& timer = hard_stops[i];
    timer.emplace(threads.context(i));
    timer->expires_after(config.shutdown_grace);
    timer->async_wait([this, i](boost::system::error_code ec) {
      if (ec) return;
      spdlog::warn("{}: requests still in flight after the shutdown grace period; cutting them", config.name);
      threads.context(i).stop();
    });
    connections[i].stop_all([this, i] { hard_stops[i]->cancel(); });
  }

  HttpServerConfig config;
  const Router& router;
  HttpMetrics& metrics;
  std::vector<ConnectionSet> connections;
  IoThreads threads;
  std::vector<std::optional<net::steady_timer>> hard_stops;
  Listener listener;
  std::shared_ptr<std::atomic<std::size_t>> refusing = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<bool> started{false};
  std::atomic<bool> stopped{false};
};

HttpServer::HttpServer(HttpServerConfig config, const Router& router, HttpMetrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(config), router, metrics)) {}

HttpServer::~HttpServer() {
  stop();
  wait();
}

std::uint16_t HttpServer::port() const {
  return impl_->listener.local_endpoint().port();
}

std::size_t HttpServer::max_connections() const {
  return impl_->listener.max_connections();
}

net::io_context& HttpServer::context(std::size_t i) {
  return impl_->threads.context(i);
}

void HttpServer::start() {
  if (impl_->stopped || impl_->started.exchange(true)) return;
  auto* impl = impl_.get();
  net::co_spawn(
      impl->threads.context(0),
      impl->listener.run(
          impl->threads.executors(),
          [impl](std::size_t target, tcp::socket socket, ConnectionSlot slot) {
            impl->accept(target, std::move(socket), std::move(slot));
          },
          [impl](std::size_t target, tcp::socket socket) { impl->refuse(target, std::move(socket)); }),
      net::detached);
  impl->threads.start(impl->config.name);
  spdlog::info("{} listening on {}:{} with {} io threads (at most {} connections)", impl->config.name,
               impl->listener.local_endpoint().address().to_string(), port(), impl->threads.size(),
               impl->listener.max_connections());
}

void HttpServer::stop() {
  if (impl_->stopped.exchange(true) || !impl_->started) return;
  auto* impl = impl_.get();
  net::post(impl->threads.context(0), [impl] { impl->listener.close(); });
  for (std::size_t i = 0; i < impl->threads.size(); ++i)
    net::post(impl->threads.context(i), [impl, i] { impl->stop_thread(i); });
  impl->threads.release();
}

void HttpServer::wait() {
  impl_->threads.join();
}

}  // namespace rtmc::server
