// The page's routes (GET /, /assets/{file}, /config.json) through the Router,
// and the embedded table against the files in web/.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "api/web_assets.hpp"
#include "server/test_support.hpp"

namespace rtmc::api {
namespace {

namespace http = boost::beast::http;
using server::testing::make_request;
using server::testing::run_sync;

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class WebRoutes : public ::testing::Test {
 protected:
  WebRoutes() { install_web_routes(router_, {"ws://127.0.0.1:7080/ws", "ws://127.0.0.1:7081/ws"}); }

  Response get(const std::string& target) {
    auto request = make_request(http::verb::get, target, {}, {});
    return run_sync(router_.dispatch(request));
  }

  Router router_;
};

TEST(WebAssets, EmbedsEveryFileOfTheWebFolderByteForByte) {
  std::set<std::string> on_disk;
  for (const auto& entry : std::filesystem::directory_iterator(RTMC_WEB_DIR)) {
    if (!entry.is_regular_file()) continue;
    const auto name = entry.path().filename().string();
    on_disk.insert(name);
    const auto* asset = find_web_asset(name);
    ASSERT_NE(asset, nullptr) << name << " is in web/ but not embedded";
    EXPECT_EQ(asset->body, read_file(entry.path())) << name;
  }
  std::set<std::string> embedded;
  for (const auto& asset : web_assets()) embedded.emplace(asset.name);
  EXPECT_EQ(embedded, on_disk);
  EXPECT_TRUE(on_disk.contains("index.html"));
}

TEST_F(WebRoutes, RootIsTheIndexPage) {
  auto response = get("/");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type], "text/html; charset=utf-8");
  EXPECT_EQ(response.body(), find_web_asset("index.html")->body);
  EXPECT_EQ(response[http::field::cache_control], "no-cache");
  EXPECT_EQ(response["X-Content-Type-Options"], "nosniff");
  EXPECT_NE(response["Content-Security-Policy"].find("connect-src 'self' ws: wss:"), std::string::npos);
  // A query string does not change the route.
  EXPECT_EQ(get("/?x=1").result(), http::status::ok);
}

TEST_F(WebRoutes, AssetsCarryTheirContentType) {
  const std::map<std::string, std::string> expected{{".js", "text/javascript; charset=utf-8"},
                                                    {".css", "text/css; charset=utf-8"},
                                                    {".svg", "image/svg+xml"},
                                                    {".html", "text/html; charset=utf-8"}};
  std::set<std::string> seen;
  for (const auto& asset : web_assets()) {
    auto response = get("/assets/" + std::string(asset.name));
    ASSERT_EQ(response.result(), http::status::ok) << asset.name;
    EXPECT_EQ(response.body(), asset.body) << asset.name;
    const auto extension = std::filesystem::path(std::string(asset.name)).extension().string();
    ASSERT_TRUE(expected.contains(extension)) << asset.name;
    EXPECT_EQ(response[http::field::content_type], expected.at(extension)) << asset.name;
    seen.insert(extension);
  }
  EXPECT_TRUE(seen.contains(".js"));
  EXPECT_TRUE(seen.contains(".css"));
}

TEST_F(WebRoutes, UnknownAssetIsA404JsonError) {
  for (const std::string target : {"/assets/nope.js", "/assets/..%2Findex.html", "/assets/%2e%2e", "/assets/",
                                   "/assets/a/b", "/index.html"}) {
    auto response = get(target);
    EXPECT_EQ(response.result(), http::status::not_found) << target;
    EXPECT_EQ(response[http::field::content_type], "application/json") << target;
    auto body = boost::json::parse(response.body()).as_object();
    EXPECT_EQ(body.at("error"), "not_found") << target;
    EXPECT_TRUE(body.at("message").is_string()) << target;
  }
}

TEST_F(WebRoutes, ConfigListsTheWebSocketUrls) {
  auto response = get("/config.json");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type], "application/json");
  EXPECT_EQ(boost::json::parse(response.body()),
            boost::json::parse(R"({"ws_urls":["ws://127.0.0.1:7080/ws","ws://127.0.0.1:7081/ws"]})"));
}

TEST_F(WebRoutes, OnlyGet) {
  auto request = make_request(http::verb::post, "/", "{}");
  auto response = run_sync(router_.dispatch(request));
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
}

}  // namespace
}  // namespace rtmc::api
