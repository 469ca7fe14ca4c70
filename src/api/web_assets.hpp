#pragma once
// The web chat page (the repository's web/ folder), compiled into rtmc-api
// by CMake (cmake/embed_web.cmake generates web_assets.cpp at build time), and
// the routes that serve it: nothing is read from the disk or fetched at run
// time, and a changed file in web/ rebuilds the binary.
//
//   GET /               index.html
//   GET /assets/{file}  any file of web/ by its name; unknown -> 404 not_found
//   GET /config.json    {"ws_urls":[...]}: where the page opens its WebSocket
//
// No token is needed for any of them. Thread-safety: the table is immutable
// static data; the handlers share nothing mutable and may run on every io
// thread at once.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/router.hpp"

namespace rtmc::api {

struct WebAsset {
  std::string_view name;  // the file name in web/, e.g. "app.js"
  std::string_view content_type;
  std::string_view body;
};

// Every file of web/, sorted by name (generated).
std::span<const WebAsset> web_assets();
// nullptr when there is no such file.
const WebAsset* find_web_asset(std::string_view name);

// The body of GET /config.json for these WebSocket URLs.
std::string web_config_json(const std::vector<std::string>& ws_urls);

// Adds the three routes above.
void install_web_routes(Router& router, std::vector<std::string> ws_urls);

}  // namespace rtmc::api
