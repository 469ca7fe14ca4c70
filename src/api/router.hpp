#pragma once
// The api serves its endpoints through the shared Router (server/router.hpp).

#include "api/http_error.hpp"
#include "server/router.hpp"

namespace rtmc::api {
using server::error_response;
using server::Handler;
using server::json_response;
using server::kPeerAddressHeader;
using server::Request;
using server::Response;
using server::Router;
using server::target_path;
}  // namespace rtmc::api
