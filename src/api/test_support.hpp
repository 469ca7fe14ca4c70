#pragma once
// The api's unit tests use the shared HTTP test helpers (server/test_support.hpp).

#include "api/router.hpp"
#include "server/test_support.hpp"

namespace rtmc::api::testing {
using namespace rtmc::server::testing;  // NOLINT(google-build-using-namespace): a re-export
}  // namespace rtmc::api::testing
