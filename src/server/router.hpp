#pragma once
// Path/method dispatch for every role's HTTP endpoints. Knows nothing of sockets: it takes a
// parsed request and returns the response, so it is unit-testable. This is
// the ONE place where handler errors become HTTP answers:
//   HttpError   -> its status, {"error":code,"message":text}
//   Unavailable -> 503 {"error":"unavailable"}
//   anything else -> 500 {"error":"internal"} (logged)
// Thread-safety: routes are added before serving; dispatch is const and may
// run on every io thread at once.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_error.hpp"

namespace rtmc::server {

// Set by HttpConnection on every request to the peer's IP address,
// replacing any header of that name the client sent (empty if unknown).
inline constexpr char kPeerAddressHeader[] = "X-Rtmc-Peer";

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Handler = std::function<boost::asio::awaitable<Response>(const Request&)>;

// A JSON response (Content-Type: application/json) with the request's
// version; keep-alive is decided by the HTTP connection.
Response json_response(boost::beast::http::status status, std::string body, unsigned version = 11);
// The error body every HTTP error uses.
Response error_response(const HttpError& error, unsigned version = 11);

class Router {
 public:
  // Exact path match (query string ignored). Adding the same method and path
  // twice replaces the handler.
  void add(boost::beast::http::verb method, std::string path, Handler handler);

  // Never throws (except std::bad_alloc): every failure is an error response.
  boost::asio::awaitable<Response> dispatch(const Request& request) const;

 private:
  struct Route {
    boost::beast::http::verb method;
    std::string path;
    Handler handler;
  };
  std::vector<Route> routes_;
};

// The path part of a request target ("/a?b=c" -> "/a").
std::string_view target_path(std::string_view target);

}  // namespace rtmc::server
