#pragma once
// A small HTTP/1.1 client for the api (register, login), shared by the chat
// client and the bench. One request per connection; every call is bounded by
// `timeout`. Coroutines run on the caller's executor.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace rtmc::chat {

struct HttpUrl {
  std::string host;
  std::uint16_t port = 80;
  std::string base_path;  // without a trailing '/', may be empty
  // "http://host[:port][/base]"; throws std::invalid_argument (https is not supported).
  static HttpUrl parse(std::string_view text);
};

struct HttpReply {
  unsigned status = 0;
  std::string body;
};

// A refused or failed api call, with the api's {"error","message"} when it sent one.
class ApiError : public std::runtime_error {
 public:
  ApiError(unsigned status, std::string code, const std::string& message);
  unsigned status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  unsigned status_;
  std::string code_;
};

// Throws boost::system::system_error on network failure or timeout.
boost::asio::awaitable<HttpReply> post_json(const HttpUrl& url, std::string_view path, std::string body,
                                            std::string_view bearer_token, std::chrono::milliseconds timeout);

struct LoginResult {
  std::string token;
  std::int64_t expires_at_ms = 0;
};

// true when created (201), false when the name is taken (409); ApiError otherwise.
boost::asio::awaitable<bool> register_user(const HttpUrl& url, std::string_view user,
                                           std::string_view password, std::chrono::milliseconds timeout);
// ApiError for anything but 200 with a token.
boost::asio::awaitable<LoginResult> login(const HttpUrl& url, std::string_view user,
                                          std::string_view password, std::chrono::milliseconds timeout);

}  // namespace rtmc::chat
