#pragma once
// The api's endpoints as plain request -> response coroutines over the
// backend interfaces: no sockets, no config parsing, so every rule below is
// unit-tested with fakes (api_service_test.cpp).
//
//   POST /register       {"user","password"}        -> 201 {"user"}
//   POST /login          {"user","password"}        -> 200 {"token","expires_at","user"}
//   POST /logout         Bearer                     -> 204
//   POST /publishMessage Bearer {"room","body","id"?} -> 202 {"id","room"} after the confirm
//   GET  /healthz                                   -> 200 {"status":"ok","amqp_connected":b}
//   GET  /metrics                                   -> Prometheus text
//
// Errors are thrown as HttpError / Unavailable and mapped by the Router.
// Thread-safety: const after construction; handlers run concurrently on every
// io thread (the backends and Metrics are thread-safe).

#include "api/backends.hpp"
#include "api/metrics.hpp"
#include "api/router.hpp"
#include "auth/auth.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace rtmc::api {

struct ServiceConfig {
  std::uint32_t ingest_shards = 16;
  // Largest "body" of a published message (--max-body); larger -> 413.
  std::size_t max_message_body = 4096;
};

class ApiService {
 public:
  using Clock = std::function<std::int64_t()>;  // ms since the Unix epoch

  ApiService(ServiceConfig config, UserStore& users, SessionStore& sessions, PasswordHasher& hasher,
             MessagePublisher& publisher, const auth::TokenService& tokens, Metrics& metrics,
             Clock clock = {});

  // Adds every endpoint above to `router`; `this` must outlive it.
  void install(Router& router);

  boost::asio::awaitable<Response> register_user(const Request& request);
  boost::asio::awaitable<Response> login(const Request& request);
  boost::asio::awaitable<Response> logout(const Request& request);
  boost::asio::awaitable<Response> publish_message(const Request& request);
  boost::asio::awaitable<Response> healthz(const Request& request);
  boost::asio::awaitable<Response> metrics(const Request& request);

 private:
  // Signature, expiry and a live Redis session; else 401 unauthorized.
  boost::asio::awaitable<auth::Claims> authenticate(const Request& request);
  // Verifies the bearer token's signature and expiry only (no Redis).
  auth::Claims verify_bearer(const Request& request) const;

  ServiceConfig config_;
  UserStore& users_;
  SessionStore& sessions_;
  PasswordHasher& hasher_;
  MessagePublisher& publisher_;
  const auth::TokenService& tokens_;
  Metrics& metrics_;
  Clock clock_;
};

// Request-body helpers shared by the handlers (exposed for tests).
// A present Content-Type other than application/json -> 415; not JSON -> 400
// bad_json; JSON but not an object -> 400 bad_request.
boost::json::object parse_json_object(const Request& request);
// The token of "Authorization: Bearer <token>", or empty.
std::string bearer_token(const Request& request);

}  // namespace rtmc::api
