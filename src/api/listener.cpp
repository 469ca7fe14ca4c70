#include "api/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace rtmc::api {

namespace net = boost::asio;
using net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

Listener::Listener(net::io_context& context, const tcp::endpoint& endpoint) : acceptor_(context) {
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(net::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(net::socket_base::max_listen_connections);
}

net::awaitable<void> Listener::run(std::vector<net::any_io_executor> targets,
                                   std::function<void(std::size_t target, tcp::socket)> on_accept) {
  std::size_t next = 0;
  net::steady_timer backoff(acceptor_.get_executor());
  while (acceptor_.is_open()) {
    const std::size_t target = next++ % targets.size();
    // Accepted straight into a socket of the target io_context, so the
    // connection is registered with that context's reactor from the start.
    tcp::socket socket(targets[target]);
    auto [ec] = co_await acceptor_.async_accept(socket, use_tuple);
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) break;
    if (ec) {
      // EMFILE/ENFILE and friends: the pending connection stays queued, so
      // retrying at once would spin. Pause, then go on.
      spdlog::warn("accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    on_accept(target, std::move(socket));
  }
}

void Listener::close() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

}  // namespace rtmc::api
