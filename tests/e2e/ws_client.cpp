#include "ws_client.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <future>
#include <stdexcept>

namespace rtmc::e2e {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::runtime_error failure(const std::string& what) {
  return std::runtime_error(what);
}

Millis remaining(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  return left.count() > 0 ? left : Millis(0);
}

// Connects and upgrades `ws` on `io` (not yet running elsewhere), with a
// deadline; `response` is the server's answer either way.
boost::system::error_code upgrade(asio::io_context& io, websocket::stream<tcp::socket>& ws,
                                  std::uint16_t port, int receive_buffer,
                                  const std::optional<std::string>& origin,
                                  websocket::response_type& response) {
  auto& socket = ws.next_layer();
  socket.open(tcp::v4());
  if (receive_buffer > 0) socket.set_option(asio::socket_base::receive_buffer_size(receive_buffer));
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return ec;
  if (origin)
    ws.set_option(websocket::stream_base::decorator([origin = *origin](websocket::request_type& request) {
      request.set(beast::http::field::origin, origin);
    }));
  bool done = false;
  ws.async_handshake(response, "127.0.0.1:" + std::to_string(port), "/ws",
                     [&](boost::system::error_code handshake_ec) {
                       ec = handshake_ec;
                       done = true;
                     });
  // One handler at a time: the client's work guard keeps run_for() busy
  // for its whole duration otherwise.
  const auto deadline = Clock::now() + 10s;
  while (!done && Clock::now() < deadline) io.run_one_for(remaining(deadline));
  io.restart();
  if (!done) {
    boost::system::error_code ignored;
    socket.close(ignored);
    io.poll();
    io.restart();
    return asio::error::timed_out;
  }
  return ec;
}

}  // namespace

// Everything below `io` runs on the client's own thread, except what the
// mutex guards.
struct WsClient::Impl {
  asio::io_context io{1};
  websocket::stream<tcp::socket> ws{io};
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread thread;

  // io thread only.
  beast::flat_buffer buffer;
  bool paused = false;
  bool reading = false;
  struct Pending {
    Out kind;
    std::string data;
    std::shared_ptr<std::promise<boost::system::error_code>> done;
  };
  std::deque<Pending> writes;
  bool writing = false;

  mutable std::mutex mutex;
  std::condition_variable changed;
  std::deque<Message> inbox;
  std::vector<std::string> pongs;
  bool closed = false;
  int close_code = 0;
  std::string close_reason;
  Clock::time_point closed_at;
  std::string error;  // why reading stopped without a close frame

  void read() {
    if (paused || reading) return;
    {
      std::lock_guard lock(mutex);
      if (closed) return;
    }
    reading = true;
    ws.async_read(buffer, [this](boost::system::error_code ec, std::size_t) {
      reading = false;
      std::lock_guard lock(mutex);
      if (ec) {
        closed = true;
        closed_at = Clock::now();
        if (ec == websocket::error::closed) {
          close_code = ws.reason().code;
          close_reason = std::string(ws.reason().reason.data(), ws.reason().reason.size());
        } else {
          error = ec.message();
        }
        changed.notify_all();
        return;
      }
      inbox.push_back({ws.got_text(), beast::buffers_to_string(buffer.data())});
      buffer.consume(buffer.size());
      changed.notify_all();
      asio::post(io, [this] { read(); });
    });
  }

  void write_next() {
    if (writing || writes.empty()) return;
    writing = true;
    auto& next = writes.front();
    auto on_done = [this](boost::system::error_code ec, std::size_t = 0) {
      writes.front().done->set_value(ec);
      writes.pop_front();
      writing = false;
      write_next();
    };
    switch (next.kind) {
      case Out::text:
      case Out::binary:
        ws.text(next.kind == Out::text);
        ws.async_write(asio::buffer(next.data), on_done);
        break;
      case Out::ping:
        ws.async_ping(websocket::ping_data(next.data), [on_done](auto ec) { on_done(ec); });
        break;
      case Out::close:
        ws.async_close(websocket::close_code::normal, [on_done](auto ec) { on_done(ec); });
        break;
    }
  }
};

WsClient::WsClient(std::uint16_t http_port, Options options)
    : label_(std::move(options.label)), impl_(std::make_unique<Impl>()) {
  websocket::response_type response;
  auto ec = upgrade(impl_->io, impl_->ws, http_port, options.receive_buffer, options.origin, response);
  if (ec)
    throw failure(label_ + ": WebSocket upgrade on port " + std::to_string(http_port) +
                  " failed: " + ec.message() + " (HTTP " + std::to_string(response.result_int()) + " " +
                  response.body() + ")");
  impl_->ws.control_callback([impl = impl_.get()](websocket::frame_type kind, beast::string_view payload) {
    if (kind != websocket::frame_type::pong) return;
    std::lock_guard lock(impl->mutex);
    impl->pongs.emplace_back(payload);
  });
  asio::post(impl_->io, [impl = impl_.get()] { impl->read(); });
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

WsClient::~WsClient() {
  asio::post(impl_->io, [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->ws.next_layer().close(ignored);
  });
  impl_->guard.reset();
  // Handlers still pending end with the socket; a stuck one is dropped.
  std::this_thread::sleep_for(10ms);
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

HttpResponse WsClient::try_upgrade(std::uint16_t http_port, const std::optional<std::string>& origin) {
  asio::io_context io;
  websocket::stream<tcp::socket> ws(io);
  websocket::response_type response;
  auto ec = upgrade(io, ws, http_port, 0, origin, response);
  if (ec && response.result_int() == 0)
    throw failure("WebSocket upgrade attempt on port " + std::to_string(http_port) + ": " + ec.message());
  HttpResponse result;
  result.status = static_cast<int>(response.result_int());
  for (const auto& field : response) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    result.headers[name] = std::string(field.value());
  }
  result.body = response.body();
  return result;
}

void WsClient::write(Out kind, std::string data) {
  auto done = std::make_shared<std::promise<boost::system::error_code>>();
  auto result = done->get_future();
  asio::post(impl_->io, [impl = impl_.get(), kind, data = std::move(data), done]() mutable {
    impl->writes.push_back({kind, std::move(data), done});
    impl->write_next();
  });
  if (result.wait_for(10s) != std::future_status::ready)
    throw failure(label_ + ": a write did not complete within 10 s");
  if (auto ec = result.get()) throw failure(label_ + ": write failed: " + ec.message());
}

void WsClient::send_text(std::string text) {
  write(Out::text, std::move(text));
}

void WsClient::send_binary(std::string bytes) {
  write(Out::binary, std::move(bytes));
}

void WsClient::send_json(const boost::json::object& frame) {
  send_text(boost::json::serialize(frame));
}

void WsClient::send_ping(std::string payload) {
  write(Out::ping, std::move(payload));
}

std::vector<std::string> WsClient::pongs() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->pongs;
}

void WsClient::close() {
  write(Out::close, {});
}

void WsClient::pause_reading() {
  std::promise<void> done;
  asio::post(impl_->io, [&] {
    impl_->paused = true;
    done.set_value();
  });
  done.get_future().wait();
}

void WsClient::resume_reading() {
  asio::post(impl_->io, [impl = impl_.get()] {
    impl->paused = false;
    impl->read();
  });
}

ReadResult WsClient::read(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(impl_->mutex);
  for (;;) {
    impl_->changed.wait_until(lock, deadline, [&] { return !impl_->inbox.empty() || impl_->closed; });
    if (impl_->inbox.empty()) {
      if (impl_->closed) return {ReadResult::Kind::closed, {}, {}};
      return {ReadResult::Kind::timeout, {}, {}};
    }
    auto message = std::move(impl_->inbox.front());
    impl_->inbox.pop_front();
    if (!message.text) throw failure(label_ + ": the server sent a binary message");
    boost::system::error_code ec;
    auto value = boost::json::parse(message.data, ec);
    if (ec || !value.is_object())
      throw failure(label_ + ": the server sent a message that is not a JSON object: '" +
                    message.data.substr(0, 300) + "'");
    if (!keep_presence_) {
      const auto* type = value.as_object().if_contains("type");
      if (type != nullptr && type->is_string() && type->as_string() == "presence") continue;
    }
    return {ReadResult::Kind::frame, std::move(value.as_object()), std::move(message.data)};
  }
}

boost::json::object WsClient::next(Millis timeout) {
  auto result = read(timeout);
  if (result.kind == ReadResult::Kind::frame) return std::move(result.frame);
  std::lock_guard lock(impl_->mutex);
  throw failure(label_ + (result.kind == ReadResult::Kind::timeout
                              ? ": no message within " + std::to_string(timeout.count()) + " ms"
                              : ": closed (code " + std::to_string(impl_->close_code) + " " +
                                    impl_->close_reason + impl_->error + ") while a message was expected"));
}

void WsClient::expect_silence(Millis quiet) {
  auto result = read(quiet);
  if (result.kind == ReadResult::Kind::frame)
    throw failure(label_ + ": expected no message for " + std::to_string(quiet.count()) + " ms, got " +
                  result.line);
  if (result.kind == ReadResult::Kind::closed)
    throw failure(label_ + ": expected an open, quiet connection, but it was closed");
}

WsClient::Closed WsClient::expect_closed(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  Closed closed;
  for (;;) {
    auto result = read(remaining(deadline));
    if (result.kind == ReadResult::Kind::frame) {
      closed.frames.push_back(std::move(result.frame));
      continue;
    }
    if (result.kind == ReadResult::Kind::timeout)
      throw failure(label_ + ": connection still open after " + std::to_string(timeout.count()) + " ms");
    std::lock_guard lock(impl_->mutex);
    if (!impl_->error.empty())
      throw failure(label_ + ": the connection ended without a close frame: " + impl_->error);
    closed.code = impl_->close_code;
    closed.reason = impl_->close_reason;
    closed.at = impl_->closed_at;
    return closed;
  }
}

void WsClient::auth(const std::string& token, const std::string& expected_user) {
  send_json({{"type", "auth"}, {"token", token}});
  auto frame = next();
  if (str(frame, "type") != "auth_ok" || str(frame, "user") != expected_user ||
      !frame.contains("heartbeat_s"))
    throw failure(label_ + ": expected auth_ok for " + expected_user + ", got " + to_text(frame));
}

std::int64_t WsClient::join(const std::string& room) {
  send_json({{"type", "join"}, {"room", room}});
  auto frame = next();
  if (str(frame, "type") != "joined" || str(frame, "room") != room || !frame.contains("seq"))
    throw failure(label_ + ": expected joined for room " + room + ", got " + to_text(frame));
  return num(frame, "seq");
}

void WsClient::ping(const boost::json::value& ref) {
  send_json({{"type", "ping"}, {"ref", ref}});
  auto frame = next();
  if (frame != boost::json::object{{"type", "pong"}, {"ref", ref}})
    throw failure(label_ + ": expected {\"type\":\"pong\",\"ref\":" + boost::json::serialize(ref) +
                  "}, got " + to_text(frame));
}

}  // namespace rtmc::e2e
