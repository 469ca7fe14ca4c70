#include "gateway/ws_upgrade.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "server/http_error.hpp"

namespace rtmc::gateway {

namespace http = boost::beast::http;

namespace {
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

server::Response refusal(http::status status, std::string code, std::string message, unsigned version,
                         server::HttpError::Headers headers = {}) {
  auto response = server::error_response(
      server::HttpError(status, std::move(code), std::move(message), std::move(headers)), version);
  return response;
}
}  // namespace

std::vector<std::string> parse_origins(std::string_view list) {
  std::vector<std::string> origins;
  while (!list.empty()) {
    const auto comma = list.find(',');
    auto item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    const auto first = item.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;
    item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
    origins.emplace_back(item);
  }
  return origins;
}

bool origin_allowed(const std::vector<std::string>& allowed, std::string_view origin) {
  for (const auto& entry : allowed)
    if (entry == "*" || iequals(entry, origin)) return true;
  return false;
}

std::optional<server::Response> check_ws_upgrade(const server::Request& request,
                                                 const std::vector<std::string>& allowed_origins) {
  const unsigned version = request.version();
  if (!boost::beast::websocket::is_upgrade(request))
    return refusal(http::status::upgrade_required, "upgrade_required",
                   "this is the WebSocket endpoint: GET with Upgrade: websocket", version,
                   {{http::field::upgrade, "websocket"}});
  if (request[http::field::sec_websocket_version] != "13")
    return refusal(http::status::upgrade_required, "upgrade_required", "Sec-WebSocket-Version must be 13",
                   version, {{http::field::sec_websocket_version, "13"}});
  if (request[http::field::sec_websocket_key].empty())
    return refusal(http::status::bad_request, "bad_request", "Sec-WebSocket-Key is missing", version);
  const auto origin = request.find(http::field::origin);
  if (origin != request.end() && !origin_allowed(allowed_origins, origin->value()))
    return refusal(http::status::forbidden, "forbidden_origin",
                   "origin " + std::string(origin->value()) + " may not open a WebSocket here (--ws-origins)",
                   version);
  return std::nullopt;
}

}  // namespace rtmc::gateway
