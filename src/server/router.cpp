#include "server/router.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <exception>
#include <optional>
#include <stdexcept>

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

namespace {

// "/a/b" -> {"a", "b"}; "/" -> {""}; "/a/" -> {"a", ""}. A path that does
// not start with '/' has no segments and matches no pattern.
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> segments;
  if (path.empty() || path.front() != '/') return segments;
  path.remove_prefix(1);
  for (;;) {
    const auto slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// nullopt for a broken escape ("%4", "%zz"): such a segment matches no parameter.
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int high = hex_value(text[i + 1]);
    const int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

}  // namespace

void Router::add(http::verb method, std::string path, Handler handler) {
  add(method, std::move(path),
      ParamHandler([handler = std::move(handler)](const Request& request, const PathParams&) {
        return handler(request);
      }));
}

void Router::add(http::verb method, std::string path, ParamHandler handler) {
  if (path.empty() || path.front() != '/')
    throw std::invalid_argument("route '" + path + "': a path pattern starts with '/'");
  std::vector<Segment> segments;
  for (auto text : split_path(path)) {
    const bool braced = text.size() >= 2 && text.front() == '{' && text.back() == '}';
    const auto inner = braced ? text.substr(1, text.size() - 2) : text;
    if (inner.find_first_of("{}") != std::string_view::npos || (braced && inner.empty()))
      throw std::invalid_argument("route '" + path + "': a parameter is a whole segment {name}");
    if (braced)
      for (const auto& seen : segments)
        if (seen.parameter && seen.text == inner)
          throw std::invalid_argument("route '" + path + "': parameter {" + std::string(inner) + "} twice");
    segments.push_back(Segment{std::string(inner), braced});
  }
  for (auto& route : routes_) {
    if (route.method == method && route.path == path) {
      route.handler = std::move(handler);
      return;
    }
  }
  routes_.push_back(Route{method, std::move(path), std::move(segments), std::move(handler)});
}

std::vector<std::string> Router::describe() const {
  std::vector<std::string> lines;
  lines.reserve(routes_.size());
  for (const auto& route : routes_)
    lines.push_back(std::string(http::to_string(route.method)) + " " + route.path);
  return lines;
}

bool Router::matches(const Route& route, const std::vector<std::string_view>& path, PathParams& params) {
  if (route.segments.size() != path.size()) return false;
  for (std::size_t i = 0; i < path.size(); ++i) {
    const auto& segment = route.segments[i];
    if (!segment.parameter) {
      if (segment.text != path[i]) return false;
      continue;
    }
    if (path[i].empty()) return false;
    auto value = percent_decode(path[i]);
    if (!value) return false;
    params.insert_or_assign(segment.text, std::move(*value));
  }
  return true;
}

bool Router::more_specific(const Route& a, const Route& b) {
  for (std::size_t i = 0; i < a.segments.size() && i < b.segments.size(); ++i)
    if (a.segments[i].parameter != b.segments[i].parameter) return !a.segments[i].parameter;
  return false;
}

boost::asio::awaitable<Response> Router::dispatch(const Request& request) const {
  auto path = target_path(request.target());
  const auto segments = split_path(path);
  const Route* match = nullptr;
  PathParams params;
  std::vector<http::verb> allowed;  // other methods this path has, in the order added
  for (const auto& route : routes_) {
    PathParams captured;
    if (!matches(route, segments, captured)) continue;
    if (route.method == request.method()) {
      if (match == nullptr || more_specific(route, *match)) {
        match = &route;
        params = std::move(captured);
      }
    } else if (std::find(allowed.begin(), allowed.end(), route.method) == allowed.end()) {
      allowed.push_back(route.method);
    }
  }
  std::string allow;
  for (auto method : allowed) {
    if (!allow.empty()) allow += ", ";
    allow += std::string(http::to_string(method));
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
      auto response = co_await match->handler(request, params);
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
