#pragma once
// The heartbeat of a load-generator connection (fan-out load and presence
// storm alike): a ping at half the server's heartbeat_s, so the gateway's
// idle cut (2.5 x heartbeat) never ends a connection that only listens.
// Runs on the connection's io thread; it is the connection's only writer
// once the handshake is done.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "wire.hpp"

namespace rtmc::bench {

// Connection: `heartbeat_s` (0 = none), `closing`, a steady_timer `timer`
// and a `socket`, all touched only on its io thread.
template <class Connection>
boost::asio::awaitable<void> keep_alive(std::shared_ptr<Connection> connection) {
  constexpr auto nothrow = boost::asio::as_tuple(boost::asio::use_awaitable);
  if (connection->heartbeat_s <= 0) co_return;
  const auto interval = std::chrono::milliseconds(connection->heartbeat_s * 500);
  const std::string ping = ping_frame();
  while (!connection->closing) {
    connection->timer.expires_after(interval);
    auto [ec] = co_await connection->timer.async_wait(nothrow);
    if (ec || connection->closing) co_return;
    auto [write_error, written] =
        co_await boost::asio::async_write(connection->socket, boost::asio::buffer(ping), nothrow);
    if (write_error) co_return;
  }
}

}  // namespace rtmc::bench
