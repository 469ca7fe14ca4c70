#pragma once
// Helpers for the api's unit tests: run a coroutine to completion on a
// private io_context, build requests.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <exception>
#include <optional>
#include <string>

#include "api/router.hpp"

namespace rtmc::api::testing {

template <class T>
T run_sync(boost::asio::awaitable<T> task) {
  boost::asio::io_context context;
  std::optional<T> result;
  std::exception_ptr failure;
  boost::asio::co_spawn(context, std::move(task), [&](std::exception_ptr error, T value) {
    failure = error;
    if (!error) result.emplace(std::move(value));
  });
  context.run();
  if (failure) std::rethrow_exception(failure);
  return std::move(*result);
}

inline Request make_request(boost::beast::http::verb method, std::string target, std::string body = {},
                            std::string content_type = "application/json", std::string bearer = {}) {
  Request request{method, target, 11};
  if (!content_type.empty()) request.set(boost::beast::http::field::content_type, content_type);
  if (!bearer.empty()) request.set(boost::beast::http::field::authorization, "Bearer " + bearer);
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

}  // namespace rtmc::api::testing
