#pragma once
// The api's endpoints as plain request -> response coroutines over the
// backend interfaces: no sockets, no config parsing, so every rule below is
// unit-tested with fakes (api_service_test.cpp).
//
//   POST /register       {"user","password"}        -> 201 {"user"}
//   POST /login          {"user","password"}        -> 200 {"token","expires_at","user"}
//   POST /logout         Bearer                     -> 204
//   POST /refresh        Bearer, no body or {}      -> 200 {"token","expires_at","user"} as /login:
//        a new session of the token's user; the presented token stays valid
//        until it expires or is logged out
//   POST /publishMessage Bearer {"room","body","id"?} -> 202 {"id","room"} after the confirm
//   GET  /users/{U}/status                          -> 200 {"user","status":"online"|"offline",
//                                                      "last_seen":ms|null}, 404 not_found
//        (no token: registration already tells anyone which names exist; the
//        user is looked up regardless of case, the answer has its registered
//        spelling; last_seen null = never connected)
//   GET  /rooms/{R}/messages?after_seq=N|before_seq=N&limit=L  Bearer
//                       -> 200 {"room","messages":[<message frame as a JSON object>...]}
//        (store/history.hpp: oldest first; neither seq = the latest L; limit
//        1-100, default 50; both seqs, a negative or non-numeric value, a
//        limit out of range, a parameter given twice -> 400 bad_request; a
//        bad room name -> 400 bad_room; a room never used -> an empty list;
//        unknown parameters are ignored)
//   GET  /rooms?limit=L&after=NAME  Bearer
//                       -> 200 {"rooms":[{"room","last_seq","last_ts"}...],"next":NAME|null}
//        (names above NAME ascending; next is set exactly when a further
//        page exists, and is that page's `after`)
//   GET  /healthz        -> 200|503
//   {"status":"ok"|"unavailable","redis","postgres","rabbitmq":"ok"|"unavailable",
//                                    "amqp_connected":b}
//   GET  /metrics                                   -> Prometheus text
//
// Rate limits (RateLimitConfig; token buckets in Redis shared by every api
// process, keyed by the client address of client_address()):
//   - failed logins per account and address, and per address: once a bucket
//     is empty, 429 rate_limited with Retry-After, even for the right
//     password, until it refills;
//   - failed logins per account from all addresses only delay the answer
//     (login_slowdown()), so nobody can lock anybody out;
//   - registrations per address, publishes per user (off by default),
//     refreshes per user (each one is a session kept in Redis for the
//     token's lifetime): 429.
// Logins and registrations hash with separate PasswordHashers, so a flood of
// one cannot starve the other.
//
// Errors are thrown as HttpError / Unavailable and mapped by the Router.
// Thread-safety: handlers run concurrently on every io thread (the backends
// and Metrics are thread-safe; the health cache has its own lock).

#include <boost/asio/ip/address.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/backends.hpp"
#include "api/metrics.hpp"
#include "api/router.hpp"
#include "auth/auth.hpp"

namespace rtmc::api {

struct RateLimitConfig {
  store::Rate login_failures_per_account_address = store::Rate::per_minute(10, 10);
  store::Rate login_failures_per_address = store::Rate::per_minute(100, 100);
  // Counts failures per account from every address; only feeds the slowdown.
  store::Rate login_failures_per_account = store::Rate::per_minute(10, 20);
  std::chrono::milliseconds login_slowdown_max{3000};  // 0 = no slowdown
  store::Rate registrations_per_address = store::Rate::per_second(20, 50);
  store::Rate publishes_per_user{};  // off: services publish thousands a second as one user
  store::Rate refreshes_per_user = store::Rate::per_minute(10, 10);
  // Peers whose X-Forwarded-For names the client (IP addresses).
  std::vector<std::string> trusted_proxies;
};

struct ServiceConfig {
  std::uint32_t ingest_shards = 16;
  // Largest "body" of a published message (--max-body); larger -> 413.
  std::size_t max_message_body = 4096;
  RateLimitConfig rate_limits;
  // /healthz probes the backends at most once per this period.
  std::chrono::milliseconds health_cache{1000};
};

// The backends a service uses; all must outlive it.
struct ApiBackends {
  UserStore& users;
  SessionStore& sessions;
  PasswordHasher& login_hasher;
  PasswordHasher& register_hasher;
  MessagePublisher& publisher;
  RateLimits& rate_limits;
  HealthProbe& health;
  StatusReader& status;
  HistoryStore& history;
};

class ApiService {
 public:
  using Clock = std::function<std::int64_t()>;  // ms since the Unix epoch
  using Sleep = std::function<boost::asio::awaitable<void>(std::chrono::milliseconds)>;

  // Throws std::invalid_argument for a trusted proxy that is no IP address.
  ApiService(ServiceConfig config, ApiBackends backends, const auth::TokenService& tokens, Metrics& metrics,
             Clock clock = {}, Sleep sleep = {});

  // Adds every endpoint above to `router`; `this` must outlive it.
  void install(Router& router);

  boost::asio::awaitable<Response> register_user(const Request& request);
  boost::asio::awaitable<Response> login(const Request& request);
  boost::asio::awaitable<Response> logout(const Request& request);
  boost::asio::awaitable<Response> refresh(const Request& request);
  boost::asio::awaitable<Response> publish_message(const Request& request);
  boost::asio::awaitable<Response> user_status(const Request& request, const server::PathParams& params);
  boost::asio::awaitable<Response> room_messages(const Request& request, const server::PathParams& params);
  boost::asio::awaitable<Response> list_rooms(const Request& request);
  boost::asio::awaitable<Response> healthz(const Request& request);
  boost::asio::awaitable<Response> metrics(const Request& request);

  // The address rate limits count against: the peer (kPeerAddressHeader),
  // or the last X-Forwarded-For entry when the peer is a trusted proxy.
  // IPv6 addresses count per /64 (one host usually holds a whole /64).
  std::string client_address(const Request& request) const;

 private:
  // Signature, expiry and a live Redis session; else 401 unauthorized.
  boost::asio::awaitable<auth::Claims> authenticate(const Request& request);
  // Verifies the bearer token's signature and expiry only (no Redis).
  auth::Claims verify_bearer(const Request& request) const;
  boost::asio::awaitable<DependencyHealth> cached_health();
  // A new token of `user` and its login session: the answer of /login and
  // /refresh.
  boost::asio::awaitable<Response> start_session(std::string user);

  ServiceConfig config_;
  ApiBackends backends_;
  const auth::TokenService& tokens_;
  Metrics& metrics_;
  Clock clock_;
  Sleep sleep_;
  std::vector<boost::asio::ip::address> trusted_proxies_;

  std::mutex health_mutex_;
  std::optional<DependencyHealth> health_;  // the last probe's answer
  std::int64_t health_at_ms_ = 0;
  bool health_probing_ = false;
};

// How long to hold a login answer after `failures` recent failed logins of
// the account from any address: nothing for the first 5, then 100 ms
// doubling with each failure, at most `max`.
std::chrono::milliseconds login_slowdown(double failures, std::chrono::milliseconds max);

// Request-body helpers shared by the handlers (exposed for tests).
// A present Content-Type other than application/json -> 415; not JSON -> 400
// bad_json; JSON but not an object -> 400 bad_request.
boost::json::object parse_json_object(const Request& request);
// The token of "Authorization: Bearer <token>", or empty.
std::string bearer_token(const Request& request);
// The parameters of the request target's query string, percent-decoded
// ('+' is a space). A broken escape or a name given twice -> 400 bad_request.
std::map<std::string, std::string, std::less<>> query_parameters(std::string_view target);

}  // namespace rtmc::api
