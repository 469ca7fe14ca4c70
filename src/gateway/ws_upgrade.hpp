#pragma once
// What the gateway's HTTP port asks of a WebSocket upgrade request on /ws
// before it hands the socket to an io thread (docs/protocol.md,
// "WebSocket"): a valid RFC 6455 upgrade (426 or 400 otherwise) from an
// allowed Origin (403 {"error":"forbidden_origin"} otherwise; a request
// without Origin, i.e. not from a browser, is admitted). The allow-list
// (--ws-origins) holds exact origins ("scheme://host[:port]", compared
// without regard to ASCII case) or "*" for any.
//
// Plain functions, no I/O: called on the HTTP thread.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/router.hpp"

namespace rtmc::gateway {

// The origins of a comma-separated list (blanks around each trimmed, empty
// entries dropped).
std::vector<std::string> parse_origins(std::string_view list);

// True when `origin` is on `allowed` (or `allowed` holds "*").
bool origin_allowed(const std::vector<std::string>& allowed, std::string_view origin);

// The refusal of a request to /ws, or nullopt when it may be upgraded.
std::optional<server::Response> check_ws_upgrade(const server::Request& request,
                                                 const std::vector<std::string>& allowed_origins);

}  // namespace rtmc::gateway
