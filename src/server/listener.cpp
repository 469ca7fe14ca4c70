#include "server/listener.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <limits>
#include <stdexcept>

#include "server/limits.hpp"

namespace rtmc::server {

namespace net = boost::asio;
using net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

Listener::Listener(net::io_context& context, const tcp::endpoint& endpoint, ListenerOptions options)
    : acceptor_(context),
      options_(options),
      max_connections_(options.max_connections != 0 ? options.max_connections
                                                    : connection_cap_from_open_files()) {
  listen_on(acceptor_, endpoint, options.reuse_port);
}

void listen_on(tcp::acceptor& acceptor, const tcp::endpoint& endpoint, bool reuse_port) {
  acceptor.open(endpoint.protocol());
  acceptor.set_option(net::socket_base::reuse_address(true));
  const int on = 1;
  if (reuse_port && ::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    throw boost::system::system_error(errno, boost::system::system_category(), "SO_REUSEPORT");
  acceptor.bind(endpoint);
  // listen(2) silently caps the backlog at net.core.somaxconn.
  acceptor.listen(std::numeric_limits<int>::max());
}

net::awaitable<void> Listener::run(std::vector<net::any_io_executor> targets, OnAccept on_accept,
                                   OnRefuse on_refuse) {
  std::size_t next = 0;
  net::steady_timer pause(acceptor_.get_executor());
  while (acceptor_.is_open()) {
    const std::size_t target = next++ % targets.size();
    // Accepted straight into a socket of the target io_context, so the
    // connection is registered with that context's reactor from the start.
    tcp::socket socket(targets[target]);
    auto [ec] = co_await acceptor_.async_accept(socket, use_tuple);
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) break;
    if (ec) {
      accept_failures_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("accept failed: {}; pausing {} ms", ec.message(), options_.accept_error_pause.count());
      pause.expires_after(options_.accept_error_pause);
      co_await pause.async_wait(use_tuple);
      continue;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    // Only this loop adds to open_, so the check and the add cannot race
    // with another accept; a concurrent release only makes room.
    if (open_->load(std::memory_order_relaxed) >= max_connections_) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      on_refuse(target, std::move(socket));
      continue;
    }
    open_->fetch_add(1, std::memory_order_relaxed);
    accepted_.fetch_add(1, std::memory_order_relaxed);
    on_accept(target, std::move(socket), ConnectionSlot(open_));
  }
}

void Listener::close() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

tcp::endpoint resolve_listen_address(const HostPort& address) {
  net::io_context context;
  tcp::resolver resolver(context);
  auto results = resolver.resolve(address.host, std::to_string(address.port),
                                  tcp::resolver::numeric_service | tcp::resolver::passive);
  if (results.empty()) throw std::runtime_error("cannot resolve listen address " + address.str());
  return results.begin()->endpoint();
}

}  // namespace rtmc::server
