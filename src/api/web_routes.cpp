#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <memory>

#include "api/http_error.hpp"
#include "api/web_assets.hpp"

namespace rtmc::api {

namespace http = boost::beast::http;

namespace {

// The page talks only to its own origin (the api) and to the gateways'
// WebSockets, which may sit on other ports or hosts: hence ws:/wss: in
// connect-src. Nothing inline, nothing from elsewhere.
constexpr char kPolicy[] =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

Response file_response(const WebAsset& asset, unsigned version) {
  Response response{http::status::ok, version};
  response.set(http::field::content_type, asset.content_type);
  // Revalidated on every load, so a new binary's page is seen at once.
  response.set(http::field::cache_control, "no-cache");
  response.set("X-Content-Type-Options", "nosniff");
  response.set("Content-Security-Policy", kPolicy);
  response.set("Referrer-Policy", "no-referrer");
  response.body() = std::string(asset.body);
  response.prepare_payload();
  return response;
}

const WebAsset& required_asset(std::string_view name) {
  const auto* asset = find_web_asset(name);
  if (asset == nullptr) throw HttpError(http::status::not_found, "not_found", "no such file");
  return *asset;
}

}  // namespace

const WebAsset* find_web_asset(std::string_view name) {
  const auto assets = web_assets();
  const auto found = std::find_if(assets.begin(), assets.end(),
                                  [name](const WebAsset& asset) { return asset.name == name; });
  return found == assets.end() ? nullptr : &*found;
}

std::string web_config_json(const std::vector<std::string>& ws_urls) {
  boost::json::array urls;
  for (const auto& url : ws_urls) urls.emplace_back(url);
  return boost::json::serialize(boost::json::object{{"ws_urls", std::move(urls)}});
}

void install_web_routes(Router& router, std::vector<std::string> ws_urls) {
  router.add(http::verb::get, "/", [](const Request& request) -> boost::asio::awaitable<Response> {
    co_return file_response(required_asset("index.html"), request.version());
  });
  router.add(
      http::verb::get, "/assets/{file}",
      [](const Request& request, const server::PathParams& params) -> boost::asio::awaitable<Response> {
        co_return file_response(required_asset(params.at("file")), request.version());
      });
  auto config = std::make_shared<const std::string>(web_config_json(ws_urls));
  router.add(http::verb::get, "/config.json",
             [config](const Request& request) -> boost::asio::awaitable<Response> {
               auto response = json_response(http::status::ok, *config, request.version());
               response.set(http::field::cache_control, "no-cache");
               co_return response;
             });
}

}  // namespace rtmc::api
