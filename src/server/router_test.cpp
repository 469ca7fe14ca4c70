#include "server/router.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "server/test_support.hpp"

namespace rtmc::server {
namespace {

namespace http = boost::beast::http;
using testing::make_request;
using testing::run_sync;

Handler answer(std::string text) {
  return [text](const Request&) -> boost::asio::awaitable<Response> {
    co_return json_response(http::status::ok, "\"" + text + "\"");
  };
}

// Answers with the captured parameters, as "name=value;..." in name order.
ParamHandler echo_params(std::string tag) {
  return [tag](const Request&, const PathParams& params) -> boost::asio::awaitable<Response> {
    std::string text = tag;
    for (const auto& [name, value] : params) text += ";" + name + "=" + value;
    co_return json_response(http::status::ok, text);
  };
}

template <class Error>
Handler thrower(Error error) {
  return [error](const Request&) -> boost::asio::awaitable<Response> {
    throw error;
    co_return Response{};
  };
}

boost::json::object error_body(const Response& response) {
  EXPECT_EQ(response[http::field::content_type], "application/json");
  return boost::json::parse(response.body()).as_object();
}

class RouterTest : public ::testing::Test {
 protected:
  Response dispatch(http::verb method, std::string target) {
    return run_sync(router.dispatch(make_request(method, std::move(target))));
  }
  Router router;
};

TEST_F(RouterTest, DispatchesByPathAndMethod) {
  router.add(http::verb::get, "/a", answer("get a"));
  router.add(http::verb::post, "/a", answer("post a"));
  router.add(http::verb::post, "/b", answer("post b"));
  EXPECT_EQ(dispatch(http::verb::get, "/a").body(), "\"get a\"");
  EXPECT_EQ(dispatch(http::verb::post, "/a").body(), "\"post a\"");
  EXPECT_EQ(dispatch(http::verb::post, "/b").body(), "\"post b\"");
}

TEST_F(RouterTest, IgnoresTheQueryString) {
  router.add(http::verb::get, "/a", answer("get a"));
  EXPECT_EQ(dispatch(http::verb::get, "/a?x=1&y").body(), "\"get a\"");
}

TEST_F(RouterTest, PathsAreExact) {
  router.add(http::verb::get, "/a", answer("get a"));
  EXPECT_EQ(dispatch(http::verb::get, "/a/").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/A").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/ab").result(), http::status::not_found);
}

TEST_F(RouterTest, LaterAddReplacesTheHandler) {
  router.add(http::verb::get, "/a", answer("one"));
  router.add(http::verb::get, "/a", answer("two"));
  EXPECT_EQ(dispatch(http::verb::get, "/a").body(), "\"two\"");
}

TEST_F(RouterTest, DescribesEveryRouteOnceInTheOrderAdded) {
  router.add(http::verb::post, "/b", answer("post b"));
  router.add(http::verb::get, "/users/{user}/status", echo_params("s"));
  router.add(http::verb::get, "/b", answer("get b"));
  router.add(http::verb::post, "/b", answer("post b again"));
  EXPECT_EQ(router.describe(), (std::vector<std::string>{"POST /b", "GET /users/{user}/status", "GET /b"}));
}

TEST_F(RouterTest, UnknownPathIs404Json) {
  router.add(http::verb::get, "/a", answer("get a"));
  auto response = dispatch(http::verb::get, "/nope");
  EXPECT_EQ(response.result(), http::status::not_found);
  EXPECT_EQ(error_body(response).at("error"), "not_found");
}

TEST_F(RouterTest, WrongMethodIs405WithAllow) {
  router.add(http::verb::get, "/a", answer("get a"));
  router.add(http::verb::put, "/a", answer("put a"));
  auto response = dispatch(http::verb::delete_, "/a");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  EXPECT_EQ(response[http::field::allow], "GET, PUT");
  EXPECT_EQ(error_body(response).at("error"), "method_not_allowed");
}

TEST_F(RouterTest, HttpErrorBecomesItsStatusAndJsonBody) {
  router.add(http::verb::post, "/x",
             thrower(HttpError(http::status::conflict, "user_taken", "that user name is taken",
                               HttpError::Headers{{http::field::www_authenticate, "Bearer"}})));
  auto response = dispatch(http::verb::post, "/x");
  EXPECT_EQ(response.result(), http::status::conflict);
  EXPECT_EQ(response[http::field::www_authenticate], "Bearer");
  auto body = error_body(response);
  EXPECT_EQ(body.at("error"), "user_taken");
  EXPECT_EQ(body.at("message"), "that user name is taken");
  EXPECT_EQ(body.size(), 2u);
  EXPECT_EQ(response[http::field::content_length], std::to_string(response.body().size()));
}

TEST_F(RouterTest, UnavailableIs503WithoutInternalDetail) {
  router.add(http::verb::post, "/x", thrower(Unavailable("redis: connection refused at 10.1.2.3:6379")));
  auto response = dispatch(http::verb::post, "/x");
  EXPECT_EQ(response.result(), http::status::service_unavailable);
  EXPECT_EQ(error_body(response).at("error"), "unavailable");
  EXPECT_EQ(response.body().find("10.1.2.3"), std::string::npos);
}

TEST_F(RouterTest, OtherExceptionsAre500WithoutDetail) {
  router.add(http::verb::post, "/x", thrower(std::runtime_error("secret internal state")));
  auto response = dispatch(http::verb::post, "/x");
  EXPECT_EQ(response.result(), http::status::internal_server_error);
  EXPECT_EQ(error_body(response).at("error"), "internal");
  EXPECT_EQ(response.body().find("secret"), std::string::npos);
}

TEST_F(RouterTest, ResponseUsesTheRequestVersion) {
  router.add(http::verb::get, "/a", answer("get a"));
  auto request = make_request(http::verb::get, "/a");
  request.version(10);
  EXPECT_EQ(run_sync(router.dispatch(request)).version(), 10u);
  request.target("/missing");
  EXPECT_EQ(run_sync(router.dispatch(request)).version(), 10u);
}

TEST_F(RouterTest, ParametersCaptureOneWholeSegment) {
  router.add(http::verb::get, "/users/{user}/status", echo_params("status"));
  EXPECT_EQ(dispatch(http::verb::get, "/users/Alice/status").body(), "status;user=Alice");
  EXPECT_EQ(dispatch(http::verb::get, "/users/alice/status?x=1").body(), "status;user=alice");
  EXPECT_EQ(dispatch(http::verb::get, "/users//status").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/users/alice").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/users/alice/status/").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/users/a/b/status").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/Users/alice/status").result(), http::status::not_found);
}

TEST_F(RouterTest, SeveralParametersAndPercentDecoding) {
  router.add(http::verb::get, "/rooms/{room}/messages/{seq}", echo_params("m"));
  EXPECT_EQ(dispatch(http::verb::get, "/rooms/lobby/messages/42").body(), "m;room=lobby;seq=42");
  EXPECT_EQ(dispatch(http::verb::get, "/rooms/a%2Fb%20c/messages/1").body(), "m;room=a/b c;seq=1");
  EXPECT_EQ(dispatch(http::verb::get, "/rooms/%zz/messages/1").result(), http::status::not_found);
  EXPECT_EQ(dispatch(http::verb::get, "/rooms/ab%4/messages/1").result(), http::status::not_found);
}

TEST_F(RouterTest, ALiteralSegmentBeatsAParameterWhateverTheOrder) {
  router.add(http::verb::get, "/users/{user}", echo_params("any"));
  router.add(http::verb::get, "/users/me", answer("me"));
  router.add(http::verb::get, "/{kind}/list", echo_params("kind"));
  router.add(http::verb::get, "/users/{user}/list", echo_params("user list"));
  EXPECT_EQ(dispatch(http::verb::get, "/users/me").body(), "\"me\"");
  EXPECT_EQ(dispatch(http::verb::get, "/users/bob").body(), "any;user=bob");
  // The leftmost difference decides: "users" is literal in the second.
  EXPECT_EQ(dispatch(http::verb::get, "/users/list").body(), "any;user=list");
  EXPECT_EQ(dispatch(http::verb::get, "/rooms/list").body(), "kind;kind=rooms");
  EXPECT_EQ(dispatch(http::verb::get, "/users/bob/list").body(), "user list;user=bob");
}

TEST_F(RouterTest, WrongMethodOnAPatternIs405ListingEachMethodOnce) {
  router.add(http::verb::get, "/users/{user}/status", echo_params("a"));
  router.add(http::verb::put, "/users/{name}/status", echo_params("b"));
  router.add(http::verb::put, "/users/me/status", answer("c"));
  auto response = dispatch(http::verb::delete_, "/users/me/status");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  EXPECT_EQ(response[http::field::allow], "GET, PUT");
  EXPECT_EQ(dispatch(http::verb::put, "/users/bob/status").body(), "b;name=bob");
}

TEST_F(RouterTest, AddingAPatternAgainReplacesItsHandler) {
  router.add(http::verb::get, "/users/{user}", echo_params("one"));
  router.add(http::verb::get, "/users/{user}", echo_params("two"));
  EXPECT_EQ(dispatch(http::verb::get, "/users/x").body(), "two;user=x");
}

TEST_F(RouterTest, MalformedPatternsAreRefused) {
  EXPECT_THROW(router.add(http::verb::get, "users/{user}", answer("x")), std::invalid_argument);
  EXPECT_THROW(router.add(http::verb::get, "/users/{}", answer("x")), std::invalid_argument);
  EXPECT_THROW(router.add(http::verb::get, "/users/{user", answer("x")), std::invalid_argument);
  EXPECT_THROW(router.add(http::verb::get, "/users/a{user}", answer("x")), std::invalid_argument);
  EXPECT_THROW(router.add(http::verb::get, "/a/{x}/b/{x}", answer("x")), std::invalid_argument);
}

TEST_F(RouterTest, HandlerErrorsOnAPatternAreMappedToo) {
  router.add(http::verb::get, "/users/{user}/status",
             [](const Request&, const PathParams& params) -> boost::asio::awaitable<Response> {
               throw HttpError(http::status::not_found, "not_found", "no user " + params.at("user"));
               co_return Response{};
             });
  auto response = dispatch(http::verb::get, "/users/ghost/status");
  EXPECT_EQ(response.result(), http::status::not_found);
  EXPECT_EQ(error_body(response).at("message"), "no user ghost");
}

TEST(TargetPath, StripsQuery) {
  EXPECT_EQ(target_path("/a?b"), "/a");
  EXPECT_EQ(target_path("/a"), "/a");
  EXPECT_EQ(target_path("?"), "");
}

}  // namespace
}  // namespace rtmc::server
