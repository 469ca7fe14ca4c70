#include "server/router.hpp"

#include <spdlog/spdlog.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <exception>
#include <optional>

namespace rtmc::server {

namespace http = boost::beast::http;

std::string_view target_path(std::string_view target) {
  auto query = target.find('?');
  return query == std::string_view::npos ? target : target.substr(0, query);
}

Response json_response(http::status status, std::string body, unsigned version) {
  Response response{status, version};
  response.set(http::field::content_type, "application/json");
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

Response error_response(const HttpError& error, unsigned version) {
  boost::json::object body{{"error", error.code()}, {"message", error.what()}};
  auto response = json_response(error.status(), boost::json::serialize(body), version);
  for (const auto& [field, value] : error.headers()) response.set(field, value);
  return response;
}

void Router::add(http::verb method, std::string path, Handler handler) {
  for (auto& route : routes_) {
    if (route.method == method && route.path == path) {
      route.handler = std::move(handler);
      return;
    }
  }
  routes_.push_back(Route{method, std::move(path), std::move(handler)});
}

boost::asio::awaitable<Response> Router::dispatch(const Request& request) const {
  auto path = target_path(request.target());
  const Route* match = nullptr;
  std::string allow;
  for (const auto& route : routes_) {
    if (route.path != path) continue;
    if (route.method == request.method()) {
      match = &route;
      break;
    }
    if (!allow.empty()) allow += ", ";
    allow += std::string(http::to_string(route.method));
  }

  // co_await is not allowed inside a catch block: remember the error, answer after.
  std::optional<HttpError> failure;
  if (match == nullptr) {
    if (allow.empty())
      failure.emplace(http::status::not_found, "not_found", "no such endpoint");
    else
      failure.emplace(http::status::method_not_allowed, "method_not_allowed",
                      "method not allowed here; allowed: " + allow,
                      HttpError::Headers{{http::field::allow, allow}});
  } else {
    try {
      auto response = co_await match->handler(request);
      response.version(request.version());
      co_return response;
    } catch (const HttpError& error) {
      failure.emplace(error);
    } catch (const Unavailable& error) {
      spdlog::warn("{} {}: backend unavailable: {}", std::string(http::to_string(request.method())),
                   std::string(path), error.what());
      failure.emplace(http::status::service_unavailable, "unavailable",
                      "a backend service is unavailable, try again later");
    } catch (const std::exception& error) {
      spdlog::error("{} {}: internal error: {}", std::string(http::to_string(request.method())),
                    std::string(path), error.what());
      failure.emplace(http::status::internal_server_error, "internal", "internal error");
    }
  }
  co_return error_response(*failure, request.version());
}

}  // namespace rtmc::server
