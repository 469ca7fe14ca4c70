#pragma once
// The TCP transport of a ClientConnection: one JSON object per line over a
// plain socket (docs/protocol.md). Owns the socket, the line framing of
// reads (LineFramer, at most --max-line bytes a line) and the bounded
// outbound queue written by gathered writes: the write is tried at once on
// the non-blocking socket and only a partial tail waits asynchronously
// (Redis' networking.c does the same to save a syscall); deliveries are
// flushed once per io-thread batch (IoThread::defer_flush).
//
// Threading: lives on its io thread, like its connection. Ownership: the
// connection owns its transport; the transport refers back weakly (and its
// read loop holds the connection while reading), so neither keeps the other
// alive in a cycle.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "gateway/fifo.hpp"
#include "gateway/line_framer.hpp"
#include "gateway/transport.hpp"

namespace rtmc::gateway {

class ClientConnection;
class IoThread;

// TCP keepalive on a client socket: probes after `heartbeat` of silence,
// every max(1, heartbeat/3) s, 3 of them. Returns false (and logs) when an
// option could not be set; the socket still serves.
bool set_client_keepalive(boost::asio::ip::tcp::socket& socket, std::chrono::seconds heartbeat);

class TcpLineTransport final : public Transport, public std::enable_shared_from_this<TcpLineTransport> {
 public:
  // `heartbeat` sets the socket's TCP keepalive: probes after that much
  // silence, every max(1, heartbeat/3) s, three of them, so a peer that
  // vanished without a FIN is found by the kernel as well as by the idle cut.
  TcpLineTransport(boost::asio::ip::tcp::socket socket, IoThread& io_thread, std::size_t max_line_bytes,
                   std::chrono::seconds heartbeat);

  // Starts reading lines into `connection`.
  void start(const std::shared_ptr<ClientConnection>& connection);

  void send(SharedFrame frame, Flush when) override;
  std::size_t queued_bytes() const override { return queued_bytes_; }
  void close(CloseReason reason, SharedFrame last, bool drop_queued) override;
  TransportKind kind() const override { return TransportKind::tcp; }
  void flush_deferred() override;

 private:
  void wait_readable(const std::shared_ptr<ClientConnection>& connection);
  void start_reading(const std::shared_ptr<ClientConnection>& connection);
  boost::asio::awaitable<void> read_lines(std::shared_ptr<ClientConnection> connection);
  void flush();
  void write_failed();
  void finish_close();

  // First: what send() reads on every delivery (ClientConnection prefetches
  // the start of this object).
  Fifo<SharedFrame> queue_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool flush_deferred_ = false;
  bool closing_ = false;  // close() was called: the last frame is queued
  bool closed_ = false;   // the socket is closed
  boost::asio::ip::tcp::socket socket_;
  IoThread& io_thread_;
  const std::size_t max_line_bytes_;
  const std::chrono::seconds heartbeat_;
  std::weak_ptr<ClientConnection> connection_;
  LineFramer framer_;
  // Made by close(): only a closing connection needs it.
  std::unique_ptr<boost::asio::steady_timer> close_timer_;
  std::vector<SharedFrame> in_flight_;
};

}  // namespace rtmc::gateway
