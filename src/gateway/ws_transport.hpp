#pragma once
// The WebSocket transport of a ClientConnection (docs/protocol.md,
// "WebSocket"): one protocol frame per text message, both ways, over a
// stream upgraded from the gateway's HTTP port (ws_upgrade.hpp decides on
// the upgrade request; the gateway hands the socket and the request over,
// as Beast's advanced_server hands them from its http_session to its
// websocket_session).
//
// Reads: one message at a time, at most --max-line bytes (Beast's own
// message limit is off: it would close with 1009 before we could send the
// `frame_too_large` error frame). A complete message, text or binary, is a
// sign of life, and so is a ping control frame (answered by Beast). A text
// message goes to on_line(); a binary one earns `bad_frame` (not fatal).
// Invalid UTF-8 in a text message is failed by Beast itself with close 1007.
//
// Writes: each queued frame is one text message; one write in flight, the
// rest queued and counted in queued_bytes() (the send-queue limits of the
// core apply unchanged); deliveries are flushed once per io-thread batch
// (IoThread::defer_flush), replies at once. close() writes what is still
// owed (nothing of it when a slow consumer is cut), the last error frame,
// then a close frame whose code says why (close_code_for), and cuts the
// socket if that has not completed within a short grace period.
//
// Threading: lives on its io thread, like its connection; every call is
// made there. Ownership: the connection owns its transport; the transport
// refers back weakly (its pending read holds the connection), so neither
// keeps the other alive in a cycle.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <memory>

#include "gateway/fifo.hpp"
#include "gateway/transport.hpp"
#include "server/router.hpp"

namespace rtmc::gateway {

class ClientConnection;
class IoThread;

// The status code of the close frame that ends a connection for `reason`:
// 1000 the client closed, 1009 frame_too_large, 1001 server_shutdown, 1013
// server_full, 1011 internal/read_error/write_error, 1008 every other cut
// (unauthorized, auth_timeout, slow_consumer, idle_timeout, lost_sync).
boost::beast::websocket::close_code close_code_for(CloseReason reason);

class WsTransport final : public Transport, public std::enable_shared_from_this<WsTransport> {
 public:
  using Stream = boost::beast::websocket::stream<boost::asio::ip::tcp::socket>;

  // `socket` is on its io thread's io_context; `heartbeat` sets its TCP
  // keepalive as for TCP clients (set_client_keepalive). `close_grace` is
  // how long the last frames and the close handshake may take before the
  // socket is closed anyway (a slow consumer may never read them).
  WsTransport(boost::asio::ip::tcp::socket socket, IoThread& io_thread, std::size_t max_message_bytes,
              std::chrono::seconds heartbeat,
              std::chrono::milliseconds close_grace = std::chrono::seconds(2));

  // Answers `upgrade` (101), then reads messages into `connection`. Frames
  // queued before the handshake completed are written after it.
  void start(const std::shared_ptr<ClientConnection>& connection, server::Request upgrade);

  void send(SharedFrame frame, Flush when) override;
  std::size_t queued_bytes() const override { return queued_bytes_; }
  void close(CloseReason reason, SharedFrame last, bool drop_queued) override;
  void flush_deferred() override;
  TransportKind kind() const override { return TransportKind::ws; }

 private:
  void read_message(const std::shared_ptr<ClientConnection>& connection);
  void on_read(const std::shared_ptr<ClientConnection>& connection, const boost::system::error_code& ec);
  boost::asio::awaitable<void> handle_message(std::shared_ptr<ClientConnection> connection);
  void flush();
  void send_close();
  void schedule_ping();
  void write_failed(CloseReason reason);
  void finish_close();

  Stream ws_;
  IoThread& io_thread_;
  const std::size_t max_message_bytes_;
  const std::chrono::seconds heartbeat_;
  const std::chrono::milliseconds close_grace_;
  std::weak_ptr<ClientConnection> connection_;
  // Kept until the handshake completes.
  std::unique_ptr<server::Request> upgrade_;
  // The message being read; handed to on_line() from here, so it is not
  // read into again before on_line() returns.
  boost::beast::flat_buffer message_;
  // Our ping every heartbeat (made when the handshake completes).
  std::unique_ptr<boost::asio::steady_timer> ping_timer_;
  // Made by close(): only a closing connection needs it.
  std::unique_ptr<boost::asio::steady_timer> close_timer_;
  boost::beast::websocket::close_reason close_reason_;

  Fifo<SharedFrame> queue_;
  SharedFrame in_flight_;
  std::size_t queued_bytes_ = 0;
  bool handshake_done_ = false;
  bool writing_ = false;
  bool pinging_ = false;  // our ping is being written: no close frame meanwhile (Beast)
  bool flush_deferred_ = false;
  bool closing_ = false;     // close() was called: the last frame is queued
  bool close_sent_ = false;  // the close handshake was started
  bool closed_ = false;      // the socket is closed
};

}  // namespace rtmc::gateway
