#pragma once
// The one error the domain stores (login_sessions, users, rate_limits) throw
// when their backend cannot answer now: connection failure, deadline passed,
// worker queue full. Callers answer "unavailable, retry later" (the api: 503;
// the gateway: error `unavailable`). The message names the backend and the
// cause, for logs only.

#include <stdexcept>

namespace rtmc::store {

class Unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace rtmc::store
