#include "server/http_connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cctype>

namespace rtmc::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

namespace {

// After an error answer to a request whose body we did not read, how long and
// how much we keep reading (and discarding) before closing. Closing with
// unread input makes the kernel send RST, which can destroy our answer before
// the client reads it.
constexpr auto kLingerTime = std::chrono::milliseconds(500);
constexpr std::size_t kLingerBytes = 1 << 20;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Errors that just mean "the peer went away" or "we cancelled": no answer,
// no log line above debug.
bool is_quiet_close(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::operation_aborted ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe;
}

}  // namespace

void ConnectionSet::add(HttpConnection* connection) {
  connections_.insert(connection);
}

void ConnectionSet::remove(HttpConnection* connection) {
  connections_.erase(connection);
  if (stopping_ && connections_.empty() && on_empty_) std::exchange(on_empty_, nullptr)();
}

void ConnectionSet::stop_all(std::function<void()> on_empty) {
  stopping_ = true;
  on_empty_ = std::move(on_empty);
  // stop() only cancels I/O; connections leave the set later, from their own
  // coroutines, so iterating the set directly is safe.
  for (auto* connection : connections_) connection->stop();
  if (connections_.empty() && on_empty_) std::exchange(on_empty_, nullptr)();
}

HttpConnection::HttpConnection(net::ip::tcp::socket socket, const Router& router, HttpMetrics& metrics,
                               const HttpLimits& limits, ConnectionSet& connections, ConnectionSlot slot,
                               const std::vector<UpgradeRoute>* upgrades)
    : socket_(std::move(socket)),
      deadline_(socket_.get_executor()),
      router_(router),
      metrics_(metrics),
      limits_(limits),
      connections_(connections),
      upgrades_(upgrades),
      slot_(std::move(slot)) {}

HttpConnection::~HttpConnection() {
  if (registered_) {
    metrics_.connection_closed();
    connections_.remove(this);
  }
}

net::awaitable<void> HttpConnection::run(std::shared_ptr<HttpConnection> connection) {
  co_await connection->start();
}

net::awaitable<void> HttpConnection::refuse(std::shared_ptr<HttpConnection> connection) {
  try {
    co_await connection->answer_and_close(
        HttpError(http::status::service_unavailable, "server_full",
                  "this server is at its connection limit; try another or retry"));
  } catch (const std::exception& error) {
    spdlog::error("http refusal ended by an exception: {}", error.what());
  }
  connection->close_socket();
}

void HttpConnection::close_socket() {
  disarm_deadline();
  beast::error_code ignored;
  socket_.shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

net::awaitable<void> HttpConnection::start() {
  connections_.add(this);
  registered_ = true;
  metrics_.connection_opened();
  if (connections_.stopping()) co_return;
  try {
    co_await serve();
  } catch (const std::exception& error) {
    // The Router answers handler errors; what reaches here is a bug or
    // bad_alloc. Ending this connection keeps the others alive.
    spdlog::error("http connection ended by an exception: {}", error.what());
  }
  close_socket();
}

void HttpConnection::stop() {
  stopping_ = true;
  // Only an idle connection is cut now; a busy one finishes its answer first
  // (serve() checks stopping_ after every write).
  if (idle_) {
    beast::error_code ignored;
    socket_.cancel(ignored);
  }
}

void HttpConnection::arm_deadline(std::chrono::milliseconds after) {
  timed_out_ = false;
  const auto generation = ++deadline_generation_;
  deadline_.expires_after(after);
  deadline_.async_wait([weak = weak_from_this(), generation](const boost::system::error_code& ec) {
    if (ec) return;
    auto self = weak.lock();
    if (!self || self->deadline_generation_ != generation) return;
    self->timed_out_ = true;
    beast::error_code ignored;
    self->socket_.cancel(ignored);
  });
}

void HttpConnection::disarm_deadline() {
  ++deadline_generation_;
  deadline_.cancel();
}

net::awaitable<bool> HttpConnection::write(Response response) {
  metrics_.count_response(response.result_int());
  arm_deadline(limits_.write_timeout);
  auto [ec, written] = co_await http::async_write(socket_, response, use_tuple);
  disarm_deadline();
  if (ec && !is_quiet_close(ec)) spdlog::debug("http write failed: {}", ec.message());
  co_return !ec;
}

net::awaitable<void> HttpConnection::answer_and_close(HttpError error) {
  auto response = error_response(error);
  response.keep_alive(false);
  if (!co_await write(std::move(response))) co_return;
  beast::error_code ignored;
  socket_.shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  // Drain what the client is still sending so our answer is not lost to RST.
  std::array<char, 16 * 1024> sink;
  std::size_t drained = 0;
  arm_deadline(kLingerTime);
  while (drained < kLingerBytes) {
    auto [ec, n] = co_await socket_.async_read_some(net::buffer(sink), use_tuple);
    if (ec) break;
    drained += n;
  }
  disarm_deadline();
}

net::awaitable<void> HttpConnection::answer_read_error(const beast::error_code& ec, bool got_some) {
  if (timed_out_) {
    // Silence on an idle connection is normal; a request cut short is not.
    if (got_some)
      co_await answer_and_close(
          HttpError(http::status::request_timeout, "request_timeout", "request not received in time"));
    else
      spdlog::debug("http connection idle too long; closed");
  } else if (ec == http::error::header_limit) {
    co_await answer_and_close(
        HttpError(http::status::request_header_fields_too_large, "header_too_large",
                  "request header exceeds " + std::to_string(limits_.header_bytes) + " bytes"));
  } else if (ec == http::error::body_limit) {
    co_await answer_and_close(
        HttpError(http::status::payload_too_large, "request_too_large",
                  "request body exceeds " + std::to_string(limits_.body_bytes) + " bytes"));
  } else if (is_quiet_close(ec)) {
    spdlog::debug("http connection closed: {}", ec.message());
  } else if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
    // Any other HTTP parse error: the request is malformed.
    co_await answer_and_close(HttpError(http::status::bad_request, "bad_request", "malformed HTTP request"));
  } else {
    spdlog::debug("http read failed: {}", ec.message());
  }
}

net::awaitable<void> HttpConnection::serve() {
  // Outlives each request: bytes of a pipelined next request stay in it.
  beast::flat_buffer buffer;
  bool first_request = true;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits_.header_bytes));
    parser.body_limit(limits_.body_bytes);

    idle_ = true;
    if (stopping_) co_return;
    arm_deadline(first_request ? limits_.first_request_timeout : limits_.keepalive_timeout);
    first_request = false;
    auto [header_ec, header_bytes] = co_await http::async_read_header(socket_, buffer, parser, use_tuple);
    idle_ = false;
    if (header_ec) {
      co_await answer_read_error(header_ec, parser.got_some());
      co_return;
    }

    if (iequals(parser.get()[http::field::expect], "100-continue") && !parser.is_done()) {
      http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
      arm_deadline(limits_.write_timeout);
      auto [ec, n] = co_await http::async_write(socket_, go_on, use_tuple);
      if (ec) co_return;
    }
    if (!parser.is_done()) {
      arm_deadline(limits_.read_timeout);
      auto [body_ec, body_bytes] = co_await http::async_read(socket_, buffer, parser, use_tuple);
      if (body_ec) {
        co_await answer_read_error(body_ec, true);
        co_return;
      }
    }
    disarm_deadline();

    Request request = parser.release();
    boost::system::error_code peer_ec;
    const auto peer = socket_.remote_endpoint(peer_ec);
    request.set(kPeerAddressHeader, peer_ec ? std::string() : peer.address().to_string());
    const UpgradeRoute* upgrade = nullptr;
    if (upgrades_ != nullptr)
      for (const auto& route : *upgrades_)
        if (target_path(request.target()) == route.path) upgrade = &route;
    std::optional<Response> answer;
    if (upgrade != nullptr) {
      answer = upgrade->take(request, socket_, buffer);
      if (!answer) {
        // The socket is someone else's now; so is the place under the cap.
        slot_.release();
        co_return;
      }
    }
    Response response;
    if (answer)
      response = std::move(*answer);
    else
      response = co_await router_.dispatch(request);
    const bool keep_alive = request.keep_alive() && !stopping_;
    response.keep_alive(keep_alive);
    if (!co_await write(std::move(response)) || !keep_alive) co_return;
  }
}

}  // namespace rtmc::server
