#pragma once
// What every load-generator connection (fan-out load and presence storm
// alike) does the same way: the clock its stamps use, reading during the
// handshake, and the gateway heartbeat. A Connection has a `socket`, an
// input `tail`, `heartbeat_s` (0 = none), `closing` and a steady_timer
// `timer`, all touched only on its io thread.

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "wire.hpp"

namespace rtmc::bench {

// Input kept without a newline before the server is treated as broken.
constexpr std::size_t kMaxPendingInput = 1 << 20;

// steady_clock in ns: send stamps and arrival times of this process.
inline std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Appends what the socket has to `tail` (during the handshake, before the
// connection's read loop runs).
template <class Connection>
boost::asio::awaitable<void> read_more(Connection& connection) {
  std::array<char, 4096> chunk;
  std::size_t got =
      co_await connection.socket.async_read_some(boost::asio::buffer(chunk), boost::asio::use_awaitable);
  connection.tail.append(chunk.data(), got);
  if (connection.tail.size() > kMaxPendingInput) throw std::runtime_error("handshake reply over 1 MiB");
}

// The next gateway line of the handshake.
template <class Connection>
boost::asio::awaitable<GatewayLine> read_gateway_line(Connection& connection) {
  for (;;) {
    auto newline = connection.tail.find('\n');
    if (newline != std::string::npos) {
      GatewayLine line = parse_gateway_line(std::string_view(connection.tail).substr(0, newline));
      connection.tail.erase(0, newline + 1);
      co_return line;
    }
    co_await read_more(connection);
  }
}

// A ping at half the server's heartbeat_s, so the gateway's idle cut (2.5 x
// heartbeat) never ends a connection that only listens. The connection's
// only writer once the handshake is done.
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
