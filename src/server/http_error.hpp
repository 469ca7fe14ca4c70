#pragma once
// The error layer of request handlers, for every role that serves HTTP: a
// handler throws HttpError (or a backend throws Unavailable) and the Router
// turns it into a status and a JSON body {"error":CODE,"message":TEXT} in one
// place (router.cpp). The HTTP connection uses the same body for the answers
// it makes itself (limits, timeouts, server_full).

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rtmc::server {

class HttpError : public std::runtime_error {
 public:
  using Headers = std::vector<std::pair<boost::beast::http::field, std::string>>;

  HttpError(boost::beast::http::status status, std::string code, std::string message, Headers headers = {})
      : std::runtime_error(message), status_(status), code_(std::move(code)), headers_(std::move(headers)) {}

  boost::beast::http::status status() const { return status_; }
  // Machine-readable, stable: clients switch on it.
  const std::string& code() const { return code_; }
  // Extra response headers (Allow for 405, WWW-Authenticate for 401).
  const Headers& headers() const { return headers_; }

 private:
  boost::beast::http::status status_;
  std::string code_;
  Headers headers_;
};

// A backend (Redis, PostgreSQL, RabbitMQ) cannot serve the request right now;
// answered 503 {"error":"unavailable"} so the client may retry. The message is
// logged, never sent (it may name internal hosts).
class Unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace rtmc::server
