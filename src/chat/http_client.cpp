#include "chat/http_client.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

namespace rtmc::chat {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

HttpUrl HttpUrl::parse(std::string_view text) {
  constexpr std::string_view scheme = "http://";
  if (text.substr(0, scheme.size()) != scheme)
    throw std::invalid_argument("api URL must start with http:// (got '" + std::string(text) + "')");
  text.remove_prefix(scheme.size());
  HttpUrl url;
  auto slash = text.find('/');
  std::string_view authority = text.substr(0, slash);
  if (slash != std::string_view::npos) url.base_path = std::string(text.substr(slash));
  while (!url.base_path.empty() && url.base_path.back() == '/') url.base_path.pop_back();
  auto colon = authority.rfind(':');
  url.host = std::string(authority.substr(0, colon));
  if (colon != std::string_view::npos) {
    std::string port_text(authority.substr(colon + 1));
    std::size_t used = 0;
    int port = -1;
    try {
      port = std::stoi(port_text, &used);
    } catch (const std::exception&) {
    }
    if (used != port_text.size() || port <= 0 || port > 65535)
      throw std::invalid_argument("bad port in api URL '" + std::string(authority) + "'");
    url.port = static_cast<std::uint16_t>(port);
  }
  if (url.host.empty()) throw std::invalid_argument("api URL has no host");
  return url;
}

ApiError::ApiError(unsigned status, std::string code, const std::string& message)
    : std::runtime_error(message), status_(status), code_(std::move(code)) {}

asio::awaitable<HttpReply> post_json(const HttpUrl& url, std::string_view path, std::string body,
                                     std::string_view bearer_token, std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(executor);
  beast::tcp_stream stream(executor);
  auto endpoints = co_await resolver.async_resolve(url.host, std::to_string(url.port), asio::use_awaitable);
  // The expiry covers connect, write and read together.
  stream.expires_after(timeout);
  co_await stream.async_connect(endpoints, asio::use_awaitable);

  http::request<http::string_body> request{http::verb::post, url.base_path + std::string(path), 11};
  request.set(http::field::host, url.host + ":" + std::to_string(url.port));
  request.set(http::field::user_agent, "rtmc-client");
  request.set(http::field::content_type, "application/json");
  if (!bearer_token.empty()) request.set(http::field::authorization, "Bearer " + std::string(bearer_token));
  request.body() = std::move(body);
  request.prepare_payload();
  co_await http::async_write(stream, request, asio::use_awaitable);

  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  co_await http::async_read(stream, buffer, response, asio::use_awaitable);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  co_return HttpReply{response.result_int(), std::move(response.body())};
}

namespace {

[[noreturn]] void throw_api_error(const HttpReply& reply, std::string_view what) {
  std::string code;
  std::string message;
  boost::system::error_code ec;
  json::value parsed = json::parse(reply.body, ec);
  if (!ec && parsed.is_object()) {
    const auto& object = parsed.get_object();
    if (auto* value = object.if_contains("error"); value && value->is_string()) code = value->get_string();
    if (auto* value = object.if_contains("message"); value && value->is_string())
      message = value->get_string();
  }
  std::string text = std::string(what) + " failed: HTTP " + std::to_string(reply.status);
  if (!code.empty()) text += " " + code;
  if (!message.empty()) text += ": " + message;
  throw ApiError(reply.status, code, text);
}

std::string credentials(std::string_view user, std::string_view password) {
  return json::serialize(json::object{{"user", user}, {"password", password}});
}

// register and login are safe to repeat (a repeated register answers 409), so
// a connection that fails before any answer is retried: a restarting or
// briefly overloaded api should not fail a client or a whole bench run.
asio::awaitable<HttpReply> post_with_retry(const HttpUrl& url, std::string_view path, const std::string& body,
                                           std::chrono::milliseconds timeout) {
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    try {
      co_return co_await post_json(url, path, body, {}, timeout);
    } catch (const boost::system::system_error&) {
      if (attempt == kAttempts) throw;
    }
    asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(200 * attempt));
    co_await pause.async_wait(asio::use_awaitable);
  }
}

}  // namespace

asio::awaitable<bool> register_user(const HttpUrl& url, std::string_view user, std::string_view password,
                                    std::chrono::milliseconds timeout) {
  HttpReply reply = co_await post_with_retry(url, "/register", credentials(user, password), timeout);
  if (reply.status == 201) co_return true;
  if (reply.status == 409) co_return false;
  throw_api_error(reply, "register");
}

asio::awaitable<LoginResult> login(const HttpUrl& url, std::string_view user, std::string_view password,
                                   std::chrono::milliseconds timeout) {
  HttpReply reply = co_await post_with_retry(url, "/login", credentials(user, password), timeout);
  if (reply.status != 200) throw_api_error(reply, "login");
  boost::system::error_code ec;
  json::value parsed = json::parse(reply.body, ec);
  LoginResult result;
  if (!ec && parsed.is_object()) {
    const auto& object = parsed.get_object();
    if (auto* value = object.if_contains("token"); value && value->is_string())
      result.token = value->get_string();
    if (auto* value = object.if_contains("expires_at"); value && value->is_int64())
      result.expires_at_ms = value->get_int64();
  }
  if (result.token.empty()) throw ApiError(reply.status, "bad_reply", "login failed: reply carries no token");
  co_return result;
}

}  // namespace rtmc::chat
