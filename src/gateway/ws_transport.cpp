#include "gateway/ws_transport.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/error.hpp>
#include <string>

#include "gateway/client_connection.hpp"
#include "gateway/io_thread.hpp"
#include "gateway/tcp_line_transport.hpp"

namespace rtmc::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {
// Beast's limit on the opening handshake (the 101 answer) and on the close
// handshake; the close grace ends the latter sooner.
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
// A message buffer that grew beyond this for a large message is given back
// afterwards, so an idle connection does not keep it.
constexpr std::size_t kKeptMessageBuffer = 4096;

bool blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}
}  // namespace

websocket::close_code close_code_for(CloseReason reason) {
  switch (reason) {
    case CloseReason::client_closed: return websocket::close_code::normal;
    case CloseReason::frame_too_large: return websocket::close_code::too_big;
    case CloseReason::server_shutdown: return websocket::close_code::going_away;
    case CloseReason::server_full: return websocket::close_code::try_again_later;
    case CloseReason::internal:
    case CloseReason::read_error:
    case CloseReason::write_error: return websocket::close_code::internal_error;
    case CloseReason::unauthorized:
    case CloseReason::auth_timeout:
    case CloseReason::slow_consumer:
    case CloseReason::idle_timeout:
    case CloseReason::lost_sync:
    case CloseReason::count_: break;
  }
  return websocket::close_code::policy_error;
}

WsTransport::WsTransport(asio::ip::tcp::socket socket, IoThread& io_thread, std::size_t max_message_bytes,
                         std::chrono::seconds heartbeat, std::chrono::milliseconds close_grace)
    : ws_(std::move(socket)),
      io_thread_(io_thread),
      max_message_bytes_(max_message_bytes),
      heartbeat_(heartbeat),
      close_grace_(close_grace) {}

void WsTransport::start(const std::shared_ptr<ClientConnection>& connection, server::Request upgrade) {
  connection_ = connection;
  auto& socket = ws_.next_layer();
  boost::system::error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  set_client_keepalive(socket, heartbeat_);
  // Our own limit (on_read) answers frame_too_large before closing.
  ws_.read_message_max(0);
  ws_.auto_fragment(false);
  ws_.text(true);
  // The core's heartbeat and idle cut apply, as on TCP; our own ping every
  // heartbeat (schedule_ping) keeps a browser alive whose page cannot ping
  // (timers of a background tab are throttled), as its pong is life too.
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = kHandshakeTimeout;
  timeouts.idle_timeout = websocket::stream_base::none();
  timeouts.keep_alive_pings = false;
  ws_.set_option(timeouts);
  ws_.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& response) { response.set(beast::http::field::server, "rtmc-gateway"); }));
  // A ping or a pong is a complete frame from a live peer: the same sign of
  // life as a message (a browser cannot send a ping, but it answers ours
  // even in a background tab; other clients may ping this way).
  ws_.control_callback([weak = connection_](websocket::frame_type kind, beast::string_view) {
    if (kind == websocket::frame_type::close) return;
    if (auto live = weak.lock()) live->touch();
  });
  // Beast reads the request while the 101 is built; kept until then.
  upgrade_ = std::make_unique<server::Request>(std::move(upgrade));
  ws_.async_accept(*upgrade_, [self = shared_from_this(), connection](boost::system::error_code ec) {
    self->upgrade_.reset();
    if (ec) {
      spdlog::debug("websocket handshake failed: {}", ec.message());
      self->finish_close();
      connection->close(CloseReason::read_error);
      return;
    }
    self->handshake_done_ = true;
    self->schedule_ping();
    self->flush();
    if (connection->reading()) self->read_message(connection);
  });
}

// At most one byte over the limit is read, so a message too large is found
// without buffering it. The pending read holds the connection.
void WsTransport::read_message(const std::shared_ptr<ClientConnection>& connection) {
  const std::size_t room = max_message_bytes_ + 1 - message_.size();
  ws_.async_read_some(message_, room,
                      [self = shared_from_this(), connection](boost::system::error_code ec, std::size_t) {
                        self->on_read(connection, ec);
                      });
}

void WsTransport::on_read(const std::shared_ptr<ClientConnection>& connection,
                          const boost::system::error_code& ec) {
  if (!connection->reading()) return;
  if (ec) {
    // Beast answered a close frame, or failed the connection itself with
    // the fitting code (1007 for invalid UTF-8, 1002 for a protocol error);
    // a peer gone without a close frame is a close too, as on TCP.
    const bool closed_by_peer =
        ec == websocket::error::closed || ec == asio::error::eof || ec == asio::error::connection_reset;
    connection->close(closed_by_peer ? CloseReason::client_closed : CloseReason::read_error);
    return;
  }
  if (message_.size() > max_message_bytes_) {
    connection->fail_framing(protocol::ErrorCode::frame_too_large,
                             "message longer than " + std::to_string(max_message_bytes_) + " bytes");
    return;
  }
  if (!ws_.is_message_done()) {
    read_message(connection);
    return;
  }
  connection->touch();
  if (ws_.got_binary()) {
    message_.clear();
    // Before auth, as any other first frame that is not auth: fatal.
    if (!connection->authenticated()) {
      connection->fail_framing(protocol::ErrorCode::unauthorized,
                               "the first frame must be auth, as a text message");
      return;
    }
    connection->fail_framing(protocol::ErrorCode::bad_frame,
                             "binary messages are not part of the protocol; send JSON as text");
    if (connection->reading()) read_message(connection);
    return;
  }
  asio::co_spawn(ws_.get_executor(), handle_message(connection), [connection](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("websocket read loop of '{}' failed: {}", connection->user(), e.what());
    }
    connection->close(CloseReason::internal);
  });
}

// The core may suspend (Redis, back-pressure); no read is pending
// meanwhile, so message_ stays as it is until on_line() returns.
asio::awaitable<void> WsTransport::handle_message(std::shared_ptr<ClientConnection> connection) {
  auto self = shared_from_this();
  const std::string_view text(static_cast<const char*>(message_.data().data()), message_.size());
  if (!blank(text)) co_await connection->on_line(text);
  message_.clear();
  if (message_.capacity() > kKeptMessageBuffer) message_.shrink_to_fit();
  if (connection->reading()) read_message(connection);
}

void WsTransport::send(SharedFrame frame, Flush when) {
  if (closing_ || closed_) return;
  queued_bytes_ += frame->size();
  queue_.push_back(std::move(frame));
  if (when == Flush::now) {
    flush();
  } else if (!flush_deferred_) {
    flush_deferred_ = true;
    io_thread_.defer_flush(shared_from_this());
  }
}

void WsTransport::flush_deferred() {
  flush_deferred_ = false;
  flush();
}

// One message per write: a WebSocket message cannot share a write with the
// next one through Beast, which owns the framing (and interleaves its
// pongs and close frames between our writes).
void WsTransport::flush() {
  if (writing_ || closed_ || !handshake_done_) return;
  if (queue_.empty()) {
    if (closing_ && !pinging_) send_close();
    return;
  }
  writing_ = true;
  in_flight_ = std::move(queue_.front());
  queue_.pop_front();
  // Frames are rendered once for every transport, as lines; a message
  // carries the JSON alone.
  std::string_view text(*in_flight_);
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  ws_.async_write(asio::buffer(text.data(), text.size()),
                  [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                    self->queued_bytes_ -= self->in_flight_->size();
                    self->in_flight_.reset();
                    self->writing_ = false;
                    if (ec) {
                      // The peer's close frame (answered by the read side)
                      // ends writing too.
                      self->write_failed(ec == websocket::error::closed ? CloseReason::client_closed
                                                                        : CloseReason::write_error);
                      return;
                    }
                    self->flush();
                    if (auto connection = self->connection_.lock()) connection->on_drained();
                  });
}

// A pong is read (and counted as life) only while a read is pending: a
// connection busy in on_line() answers after it. Beast allows no close
// frame while our ping is being written: flush() waits for it.
void WsTransport::schedule_ping() {
  if (!ping_timer_) ping_timer_ = std::make_unique<asio::steady_timer>(ws_.get_executor());
  ping_timer_->expires_after(heartbeat_);
  ping_timer_->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->closing_ || self->closed_) return;
    if (!self->pinging_) {
      self->pinging_ = true;
      self->ws_.async_ping({}, [self](boost::system::error_code) {
        self->pinging_ = false;
        // A failed write shows on the read side too; a close waits here.
        if (self->closing_) self->flush();
      });
    }
    self->schedule_ping();
  });
}

// After the last queued frame. Beast waits for the peer's close frame
// (reading and discarding what comes before it), then closes the socket.
void WsTransport::send_close() {
  if (close_sent_) return;
  close_sent_ = true;
  if (!ws_.is_open()) {
    finish_close();
    return;
  }
  ws_.async_close(close_reason_,
                  [self = shared_from_this()](boost::system::error_code) { self->finish_close(); });
}

// The socket is closed first, so the connection's close (which closes its
// transport) finds nothing left to write.
void WsTransport::write_failed(CloseReason reason) {
  finish_close();
  if (auto connection = connection_.lock()) connection->close(reason);
}

void WsTransport::close(CloseReason reason, SharedFrame last, bool drop_queued) {
  if (closing_ || closed_) return;
  closing_ = true;
  close_reason_ = websocket::close_reason(close_code_for(reason), to_string(reason));
  // The peer closed, or Beast failed the stream: nothing can be written.
  if (handshake_done_ && !ws_.is_open()) {
    finish_close();
    return;
  }
  if (drop_queued) {
    for (std::size_t i = 0; i < queue_.size(); ++i) queued_bytes_ -= queue_[i]->size();
    queue_.clear();
  }
  if (last) {
    queued_bytes_ += last->size();
    queue_.push_back(std::move(last));
  }
  if (ping_timer_) ping_timer_->cancel();
  close_timer_ = std::make_unique<asio::steady_timer>(ws_.get_executor());
  close_timer_->expires_after(close_grace_);
  close_timer_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->finish_close();
  });
  flush();
}

// Closing the socket ends whatever Beast still has pending (their handlers
// see operation_aborted).
void WsTransport::finish_close() {
  if (closed_) return;
  closed_ = true;
  if (close_timer_) close_timer_->cancel();
  if (ping_timer_) ping_timer_->cancel();
  auto& socket = ws_.next_layer();
  boost::system::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  queue_.clear();
  queued_bytes_ = in_flight_ ? in_flight_->size() : 0;
}

}  // namespace rtmc::gateway
