#pragma once
// One HTTP/1.1 connection ("connection", not "session": a session is a
// login): reads requests with size limits and timeouts, hands each to the
// Router, writes the answer, keeps the connection alive when both sides want
// it. Requests on one connection are served one at a time, in order.
//
// Threading: a connection lives on the io_context its socket was accepted
// onto (one thread per io_context) for its whole life, so neither it nor its
// ConnectionSet needs a lock. stop() must be called on that thread.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "server/http_error.hpp"
#include "server/http_metrics.hpp"
#include "server/listener.hpp"
#include "server/router.hpp"

namespace rtmc::server {

struct HttpLimits {
  std::size_t header_bytes = 8 * 1024;  // larger -> 431 and close
  std::size_t body_bytes = 64 * 1024;   // larger -> 413 and close
  // Waiting for (and reading) the first request's header of a new
  // connection; on expiry the connection is closed (408 when part of a
  // request arrived, silently otherwise). Short, so idle connections cannot
  // pile up under the connection cap.
  std::chrono::milliseconds first_request_timeout{std::chrono::seconds(10)};
  // The same for every later request on a kept-alive connection.
  std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(60)};
  // Reading a request body once its header arrived; on expiry -> 408, close.
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds write_timeout{std::chrono::seconds(30)};
};

class HttpConnection;

// A path whose requests a role takes over from HTTP (a WebSocket upgrade,
// as Beast's advanced_server hands the socket from its http_session to a
// websocket_session). `take` runs on the connection's io thread with the
// whole request (its body read), the socket and the bytes already read past
// the request. It either answers (a refusal, e.g. 403; written like any
// response, the connection stays HTTP) or takes the socket and returns
// nullopt: the HTTP connection then ends without touching it again. Any
// method on the path comes here, not to the Router.
struct UpgradeRoute {
  std::string path;
  std::function<std::optional<Response>(Request& request, boost::asio::ip::tcp::socket& socket,
                                        boost::beast::flat_buffer& read_ahead)>
      take;
};

// The open connections of one io thread, so a graceful stop can reach them.
// Owned by that thread's state; touched only on that thread.
class ConnectionSet {
 public:
  // Stops every connection (idle ones close now, busy ones after their answer)
  // and calls `on_empty` once none is left (at once if none is open).
  void stop_all(std::function<void()> on_empty);
  bool stopping() const { return stopping_; }
  // Drops a pending on_empty callback (its target is being destroyed).
  void forget_on_empty() { on_empty_ = nullptr; }

 private:
  friend class HttpConnection;
  void add(HttpConnection* connection);
  void remove(HttpConnection* connection);

  std::unordered_set<HttpConnection*> connections_;
  bool stopping_ = false;
  std::function<void()> on_empty_;
};

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  // `slot` is the connection's place under the listener's cap, given back
  // when the connection is destroyed (or its socket taken by an upgrade).
  // `upgrades` (may be null) must outlive the connection.
  HttpConnection(boost::asio::ip::tcp::socket socket, const Router& router, HttpMetrics& metrics,
                 const HttpLimits& limits, ConnectionSet& connections, ConnectionSlot slot = {},
                 const std::vector<UpgradeRoute>* upgrades = nullptr);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Serves the connection until it closes; spawn it on the socket's
  // executor. The coroutine owns `connection` from its creation (a coroutine
  // frame does not own `this`, and the spawner's pointer is gone before the
  // coroutine starts on another thread). Never throws: I/O errors end the
  // connection, handler errors were already answered by the Router.
  static boost::asio::awaitable<void> run(std::shared_ptr<HttpConnection> connection);

  // For a connection over the cap: answers 503 {"error":"server_full"} with
  // "Connection: close" at once, without reading a request, and closes. Not
  // registered in `connections` nor counted as opened.
  static boost::asio::awaitable<void> refuse(std::shared_ptr<HttpConnection> connection);

  // Graceful: an idle connection is closed now; a busy one answers its
  // current request with "Connection: close" and then closes.
  void stop();

 private:
  boost::asio::awaitable<void> start();
  void close_socket();
  boost::asio::awaitable<void> serve();
  // false when the connection failed (the connection then ends).
  boost::asio::awaitable<bool> write(Response response);
  // For requests the HTTP layer refuses itself (limits, parse errors,
  // timeouts): answer, then close without reading on.
  boost::asio::awaitable<void> answer_and_close(HttpError error);
  boost::asio::awaitable<void> answer_read_error(const boost::beast::error_code& ec, bool got_some);

  // One deadline for the operation about to start: on expiry the socket's
  // pending operations are cancelled and timed_out_ is set. The socket is
  // cancelled, not closed, so a 408 can still be written. Stale expiries of
  // earlier deadlines are ignored by generation.
  void arm_deadline(std::chrono::milliseconds after);
  void disarm_deadline();

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer deadline_;
  std::uint64_t deadline_generation_ = 0;
  bool timed_out_ = false;
  const Router& router_;
  HttpMetrics& metrics_;
  const HttpLimits& limits_;
  ConnectionSet& connections_;
  const std::vector<UpgradeRoute>* upgrades_;
  bool idle_ = true;  // waiting for the next request's header
  bool stopping_ = false;
  bool registered_ = false;  // in connections_ (done on the connection's own thread)
  ConnectionSlot slot_;
};

}  // namespace rtmc::server
