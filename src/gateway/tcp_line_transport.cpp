#include "gateway/tcp_line_transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <span>

#include "gateway/client_connection.hpp"
#include "gateway/io_thread.hpp"

namespace rtmc::gateway {

namespace asio = boost::asio;

namespace {
constexpr auto nothrow_awaitable = asio::as_tuple(asio::use_awaitable);
// How long a fatal error frame may take to reach a client before the socket
// is closed anyway (a slow consumer may never read it).
constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr std::size_t kMaxFramesPerWrite = 256;

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}
}  // namespace

TcpLineTransport::TcpLineTransport(asio::ip::tcp::socket socket, IoThread& io_thread,
                                   std::size_t max_line_bytes, std::chrono::seconds heartbeat)
    : socket_(std::move(socket)),
      io_thread_(io_thread),
      max_line_bytes_(max_line_bytes),
      heartbeat_(heartbeat) {}

void TcpLineTransport::start(const std::shared_ptr<ClientConnection>& connection) {
  connection_ = connection;
  boost::system::error_code ignored;
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  set_client_keepalive(socket_, heartbeat_);
  // flush() writes directly and must never block the io thread.
  socket_.non_blocking(true, ignored);
  wait_readable(connection);
}

// The wait holds the connection, as reading did: an idle connection is one
// pending wait on its socket, with no coroutine frame (a frame per idle
// connection was a third of its memory; docs/operations.md).
void TcpLineTransport::wait_readable(const std::shared_ptr<ClientConnection>& connection) {
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [self = shared_from_this(),
                                                        connection](boost::system::error_code ec) {
    if (!connection->reading()) return;
    if (ec) {
      connection->close(ec == asio::error::eof ? CloseReason::client_closed : CloseReason::read_error);
      return;
    }
    self->start_reading(connection);
  });
}

void TcpLineTransport::start_reading(const std::shared_ptr<ClientConnection>& connection) {
  asio::co_spawn(socket_.get_executor(), read_lines(connection), [connection](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("read loop of '{}' failed: {}", connection->user(), e.what());
    }
    connection->close(CloseReason::internal);
  });
}

// Best effort: a socket that refuses an option still serves its client, and
// the idle cut remains.
bool set_client_keepalive(asio::ip::tcp::socket& socket, std::chrono::seconds heartbeat) {
  boost::system::error_code ec;
  socket.set_option(asio::socket_base::keep_alive(true), ec);
  const int fd = socket.native_handle();
  const int idle = static_cast<int>(std::max<std::int64_t>(1, heartbeat.count()));
  const int interval = std::max(1, idle / 3);
  const int count = 3;
  if (ec || ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) != 0) {
    spdlog::warn("TCP keepalive not set on a client socket: {}", ec ? ec.message() : std::strerror(errno));
    return false;
  }
  return true;
}

// One read per readiness, then back to waiting (so a flooding client takes
// its turn with the others of its io thread). Reads into the io thread's
// scratch buffer and keeps only unprocessed bytes here, so an idle
// connection holds no read buffer at all (10k idle clients would otherwise
// pin 10k buffers). Waiting for readability before reading also spares
// idle sockets a speculative read.
asio::awaitable<void> TcpLineTransport::read_lines(std::shared_ptr<ClientConnection> connection) {
  auto self = shared_from_this();
  auto too_large = [&] {
    connection->fail_framing(protocol::ErrorCode::frame_too_large,
                             "line longer than " + std::to_string(max_line_bytes_) + " bytes");
  };
  boost::system::error_code ec;
  const std::size_t n = socket_.read_some(asio::buffer(io_thread_.scratch()), ec);
  if (ec && ec != asio::error::would_block) {
    connection->close(ec == asio::error::eof ? CloseReason::client_closed : CloseReason::read_error);
    co_return;
  }
  if (n == 0) {
    wait_readable(connection);
    co_return;
  }
  // A '\n' completes a line: that, not any byte, is a sign of life (a
  // blank line too; a peer trickling one endless line is not alive). It
  // counts on arrival, even while earlier lines are still being handled.
  if (std::memchr(io_thread_.scratch().data(), '\n', n) != nullptr) connection->touch();
  // Handlers may suspend (Redis, back-pressure) and the scratch buffer is
  // shared by every connection of this thread, so the bytes move out first.
  framer_.append(io_thread_.scratch().data(), n);
  while (auto line = framer_.next_line()) {
    if (line->size() > max_line_bytes_) {
      too_large();
      co_return;
    }
    if (!blank(*line)) co_await connection->on_line(*line);
    if (!connection->reading()) co_return;
  }
  framer_.compact();
  if (framer_.buffered() > max_line_bytes_) {
    too_large();
    co_return;
  }
  if (connection->reading()) wait_readable(connection);
}

void TcpLineTransport::send(SharedFrame frame, Flush when) {
  if (closing_ || closed_) return;
  queued_bytes_ += frame->size();
  queue_.push_back(std::move(frame));
  // A queue that already fills a whole write goes out now: waiting for the
  // batch's end would save no syscall, and an io thread that is behind
  // would otherwise pile every pending batch into the queue of a client
  // that reads fine (the send-queue limits count it).
  if (when == Flush::now || (!writing_ && queue_.size() >= kMaxFramesPerWrite)) {
    flush();
  } else if (!flush_deferred_) {
    flush_deferred_ = true;
    io_thread_.defer_flush(shared_from_this());
  }
}

void TcpLineTransport::flush_deferred() {
  flush_deferred_ = false;
  flush();
}

// The socket is closed first, so the connection's close (which closes its
// transport) finds nothing left to write.
void TcpLineTransport::write_failed() {
  finish_close();
  if (auto connection = connection_.lock()) connection->close(CloseReason::write_error);
}

// Writes what is queued. The socket is non-blocking, so the common case (the
// kernel takes everything) finishes here without an asynchronous operation;
// only the rest of a partial write waits for the socket to become writable.
void TcpLineTransport::flush() {
  while (!writing_ && !closed_ && !queue_.empty()) {
    const std::size_t count = std::min(queue_.size(), kMaxFramesPerWrite);
    std::array<asio::const_buffer, kMaxFramesPerWrite> buffers;
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
      buffers[i] = asio::buffer(*queue_[i]);
      total += queue_[i]->size();
    }
    boost::system::error_code ec;
    const std::size_t written = socket_.write_some(std::span(buffers.data(), count), ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      write_failed();
      return;
    }
    if (written == total) {
      for (std::size_t i = 0; i < count; ++i) queue_.pop_front();
      queued_bytes_ -= total;
      continue;
    }
    // Partial: the unwritten tail goes out asynchronously.
    writing_ = true;
    std::vector<asio::const_buffer> rest;
    std::size_t skip = written;
    for (std::size_t i = 0; i < count; ++i) {
      in_flight_.push_back(std::move(queue_.front()));
      queue_.pop_front();
      const auto& frame = *in_flight_.back();
      if (skip >= frame.size()) {
        skip -= frame.size();
        continue;
      }
      rest.push_back(asio::buffer(frame.data() + skip, frame.size() - skip));
      skip = 0;
    }
    asio::async_write(socket_, rest,
                      [self = shared_from_this()](boost::system::error_code write_ec, std::size_t) {
                        for (auto& frame : self->in_flight_) self->queued_bytes_ -= frame->size();
                        self->in_flight_.clear();
                        self->writing_ = false;
                        if (write_ec) {
                          self->write_failed();
                          return;
                        }
                        self->flush();
                        if (auto connection = self->connection_.lock()) connection->on_drained();
                      });
    return;
  }
  if (!writing_ && queue_.empty() && closing_) finish_close();
}

// A line has no room for a status code: the reason only travels in `last`.
void TcpLineTransport::close(CloseReason, SharedFrame last, bool drop_queued) {
  if (closing_ || closed_) return;
  closing_ = true;
  if (drop_queued) {
    for (std::size_t i = 0; i < queue_.size(); ++i) queued_bytes_ -= queue_[i]->size();
    queue_.clear();
  }
  if (last) {
    queued_bytes_ += last->size();
    queue_.push_back(std::move(last));
  }
  if (writing_ || !queue_.empty()) {
    flush();
    if (closed_) return;
    close_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
    close_timer_->expires_after(kCloseGrace);
    close_timer_->async_wait(
        [self = shared_from_this()](boost::system::error_code) { self->finish_close(); });
    return;
  }
  finish_close();
}

void TcpLineTransport::finish_close() {
  if (closed_) return;
  closed_ = true;
  if (close_timer_) close_timer_->cancel();
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  queue_.clear();
  queued_bytes_ = 0;
}

}  // namespace rtmc::gateway
