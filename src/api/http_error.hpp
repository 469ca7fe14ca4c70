#pragma once
// The api's handlers throw the shared HTTP error types (server/http_error.hpp).

#include "server/http_error.hpp"

namespace rtmc::api {
using server::HttpError;
using server::Unavailable;
}  // namespace rtmc::api
