#pragma once
// Path/method dispatch for every role's HTTP endpoints. Knows nothing of sockets: it takes a
// parsed request and returns the response, so it is unit-testable.
//
// Paths are patterns of '/'-separated segments: a literal segment matches
// itself exactly (case-sensitive), a segment written `{name}` matches any one
// non-empty segment and hands it to the handler, percent-decoded, as
// params.at("name"): add(get, "/users/{user}/status", handler). A path
// matches a pattern only with the same number of segments ("/a/" is not
// "/a"). When several patterns match, the one with a literal segment where
// the others have a parameter (leftmost difference) wins, so "/users/me"
// beats "/users/{user}".
//
// This is the ONE place where handler errors become HTTP answers:
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
#include <map>
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
// The segments a pattern's {name} parameters captured, by name.
using PathParams = std::map<std::string, std::string, std::less<>>;
using ParamHandler = std::function<boost::asio::awaitable<Response>(const Request&, const PathParams&)>;

// A JSON response (Content-Type: application/json) with the request's
// version; keep-alive is decided by the HTTP connection.
Response json_response(boost::beast::http::status status, std::string body, unsigned version = 11);
// The error body every HTTP error uses.
Response error_response(const HttpError& error, unsigned version = 11);

class Router {
 public:
  // `path` is a pattern (see above; the query string is never part of the
  // match). Adding the same method and pattern twice replaces the handler.
  // Throws std::invalid_argument for a malformed pattern: not starting with
  // '/', a brace that is not a whole `{name}` segment, a name used twice.
  void add(boost::beast::http::verb method, std::string path, Handler handler);
  void add(boost::beast::http::verb method, std::string path, ParamHandler handler);

  // Never throws (except std::bad_alloc): every failure is an error response.
  boost::asio::awaitable<Response> dispatch(const Request& request) const;

  // "METHOD /pattern" of every route, in the order added: what a role
  // serves, for tools that check a description against it.
  std::vector<std::string> describe() const;

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter's name
    bool parameter = false;
  };
  struct Route {
    boost::beast::http::verb method;
    std::string path;
    std::vector<Segment> segments;
    ParamHandler handler;
  };
  // Fills `params` when `path` matches the route's pattern.
  static bool matches(const Route& route, const std::vector<std::string_view>& path, PathParams& params);
  // True when `a` is to be preferred over `b` (both matching one path).
  static bool more_specific(const Route& a, const Route& b);
  std::vector<Route> routes_;
};

// The path part of a request target ("/a?b=c" -> "/a").
std::string_view target_path(std::string_view target);

}  // namespace rtmc::server
