#include "api/api_service.hpp"

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "auth/room_access.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"

namespace rtmc::api {

namespace http = boost::beast::http;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// "application/json" with optional parameters ("; charset=utf-8").
bool is_json_media_type(std::string_view content_type) {
  auto semicolon = content_type.find(';');
  return iequals(trim(content_type.substr(0, semicolon)), "application/json");
}

HttpError bad_request(std::string message) {
  return HttpError(http::status::bad_request, "bad_request", std::move(message));
}

HttpError unauthorized(std::string message = "missing, invalid or expired token") {
  return HttpError(http::status::unauthorized, "unauthorized", std::move(message),
                   HttpError::Headers{{http::field::www_authenticate, "Bearer"}});
}

// Missing or not a string -> 400 bad_request.
std::string required_string(const boost::json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  if (value == nullptr || !value->is_string())
    throw bad_request("field '" + std::string(key) + "' must be a string");
  return std::string(value->get_string());
}

// Absent or null -> nullopt; another type -> 400 bad_request.
std::optional<std::string> optional_string(const boost::json::object& object, std::string_view key) {
  const auto* value = object.if_contains(key);
  if (value == nullptr || value->is_null()) return std::nullopt;
  if (!value->is_string()) throw bad_request("field '" + std::string(key) + "' must be a string");
  return std::string(value->get_string());
}

Response json(http::status status, const boost::json::object& body) {
  return json_response(status, boost::json::serialize(body));
}

// What an `overloaded` answer asks the client to wait: the backlog it met
// drains within about a second at the broker's pace.
constexpr std::chrono::seconds kOverloadedRetryAfter{1};

HttpError rate_limited(std::string what, std::chrono::microseconds retry_after) {
  const auto seconds = std::to_string(store::retry_after_seconds(retry_after));
  return HttpError(http::status::too_many_requests, "rate_limited",
                   std::move(what) + "; retry after " + seconds + " s",
                   HttpError::Headers{{http::field::retry_after, seconds}});
}

boost::asio::awaitable<void> sleep_on_timer(std::chrono::milliseconds duration) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, duration);
  co_await timer.async_wait(boost::asio::use_awaitable);
}

// An IPv4 address as is (also when mapped into IPv6); IPv6 as its /64.
std::string address_key(const boost::asio::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return boost::asio::ip::address_v6(bytes).to_string() + "/64";
}

std::optional<boost::asio::ip::address> parse_address(std::string_view text) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(trim(text)), ec);
  if (ec) return std::nullopt;
  return address;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] != '%') {
      out += text[i];
    } else {
      const int high = i + 2 < text.size() ? hex_digit(text[i + 1]) : -1;
      const int low = i + 2 < text.size() ? hex_digit(text[i + 2]) : -1;
      if (high < 0 || low < 0) throw bad_request("broken percent-encoding in the query string");
      out += static_cast<char>(high * 16 + low);
      i += 2;
    }
  }
  return out;
}

// A parameter that must be a decimal integer in [min, max] when present.
std::optional<std::int64_t> integer_parameter(
    const std::map<std::string, std::string, std::less<>>& parameters, std::string_view name,
    std::int64_t min, std::int64_t max) {
  const auto it = parameters.find(name);
  if (it == parameters.end()) return std::nullopt;
  const auto& text = it->second;
  std::int64_t value = 0;
  const bool digits =
      !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (!digits || error != std::errc() || end != text.data() + text.size() || value < min || value > max)
    throw bad_request(std::string(name) + " must be an integer " + std::to_string(min) + ".." +
                      std::to_string(max));
  return value;
}

}  // namespace

std::chrono::milliseconds login_slowdown(double failures, std::chrono::milliseconds max) {
  constexpr double kFree = 5;  // a few typos cost nothing
  if (max.count() <= 0 || failures < kFree + 1) return std::chrono::milliseconds(0);
  const double doublings = std::min(std::floor(failures - (kFree + 1)), 30.0);
  const double delay_ms = 100.0 * std::pow(2.0, doublings);
  return std::min(max, std::chrono::milliseconds(static_cast<std::int64_t>(delay_ms)));
}

boost::json::object parse_json_object(const Request& request) {
  auto content_type = request[http::field::content_type];
  if (!content_type.empty() && !is_json_media_type(content_type))
    throw HttpError(http::status::unsupported_media_type, "unsupported_media_type",
                    "Content-Type must be application/json");
  boost::system::error_code ec;
  auto value = boost::json::parse(request.body(), ec);
  if (ec) throw HttpError(http::status::bad_request, "bad_json", "request body is not valid JSON");
  if (!value.is_object()) throw bad_request("request body must be a JSON object");
  return std::move(value.as_object());
}

std::map<std::string, std::string, std::less<>> query_parameters(std::string_view target) {
  std::map<std::string, std::string, std::less<>> parameters;
  const auto question = target.find('?');
  if (question == std::string_view::npos) return parameters;
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto equals = pair.find('=');
    auto name = percent_decoded(pair.substr(0, equals));
    auto value = equals == std::string_view::npos ? std::string() : percent_decoded(pair.substr(equals + 1));
    if (parameters.contains(name)) throw bad_request("query parameter " + name + " is given twice");
    parameters.emplace(std::move(name), std::move(value));
  }
  return parameters;
}

std::string bearer_token(const Request& request) {
  auto header = trim(request[http::field::authorization]);
  constexpr std::string_view scheme = "bearer";
  if (header.size() <= scheme.size() || !iequals(header.substr(0, scheme.size()), scheme) ||
      (header[scheme.size()] != ' ' && header[scheme.size()] != '\t'))
    return {};
  return std::string(trim(header.substr(scheme.size())));
}

ApiService::ApiService(ServiceConfig config, ApiBackends backends, const auth::TokenService& tokens,
                       Metrics& metrics, Clock clock, Sleep sleep)
    : config_(std::move(config)),
      backends_(backends),
      tokens_(tokens),
      metrics_(metrics),
      clock_(clock ? std::move(clock) : Clock(&rtmc::now_ms)),
      sleep_(sleep ? std::move(sleep) : Sleep(&sleep_on_timer)) {
  for (const auto& proxy : config_.rate_limits.trusted_proxies) {
    auto address = parse_address(proxy);
    if (!address) throw std::invalid_argument("trusted proxy '" + proxy + "' is not an IP address");
    trusted_proxies_.push_back(*address);
  }
}

std::string ApiService::client_address(const Request& request) const {
  auto peer = parse_address(request[kPeerAddressHeader]);
  if (!peer) return "unknown";
  if (std::find(trusted_proxies_.begin(), trusted_proxies_.end(), *peer) != trusted_proxies_.end()) {
    // The proxy appends the address it saw to the last header: the last
    // entry is the only one not written by the client itself.
    std::string_view last;
    auto [first, end] = request.equal_range("X-Forwarded-For");
    for (auto it = first; it != end; ++it) last = it->value();
    if (auto comma = last.rfind(','); comma != std::string_view::npos) last = last.substr(comma + 1);
    if (auto forwarded = parse_address(last)) return address_key(*forwarded);
  }
  return address_key(*peer);
}

void ApiService::install(Router& router) {
  router.add(http::verb::post, "/register", [this](const Request& r) { return register_user(r); });
  router.add(http::verb::post, "/login", [this](const Request& r) { return login(r); });
  router.add(http::verb::post, "/logout", [this](const Request& r) { return logout(r); });
  router.add(http::verb::post, "/refresh", [this](const Request& r) { return refresh(r); });
  router.add(http::verb::post, "/publishMessage", [this](const Request& r) { return publish_message(r); });
  router.add(http::verb::get, "/users/{user}/status",
             [this](const Request& r, const server::PathParams& p) { return user_status(r, p); });
  router.add(http::verb::get, "/rooms/{room}/messages",
             [this](const Request& r, const server::PathParams& p) { return room_messages(r, p); });
  router.add(http::verb::get, "/rooms", [this](const Request& r) { return list_rooms(r); });
  router.add(http::verb::get, "/healthz", [this](const Request& r) { return healthz(r); });
  router.add(http::verb::get, "/metrics", [this](const Request& r) { return metrics(r); });
}

boost::asio::awaitable<Response> ApiService::register_user(const Request& request) {
  auto body = parse_json_object(request);
  auto user = required_string(body, "user");
  auto password = required_string(body, "password");
  if (!valid_user_name(user))
    throw HttpError(http::status::bad_request, "bad_user",
                    "user: 1-32 of [A-Za-z0-9_.-], starting with a letter or digit");
  if (!valid_password(password))
    throw HttpError(http::status::bad_request, "bad_password", "password: 8-256 bytes");

  store::Bucket bucket{"register:" + client_address(request), config_.rate_limits.registrations_per_address};
  auto verdict = co_await backends_.rate_limits.take(std::move(bucket));
  if (!verdict.allowed) {
    metrics_.count_rate_limited(Metrics::Limit::register_);
    throw rate_limited("too many registrations from this address", verdict.retry_after);
  }

  auto hash = co_await backends_.register_hasher.hash(std::move(password));
  if (!co_await backends_.users.create(user, std::move(hash)))
    throw HttpError(http::status::conflict, "user_taken", "that user name is taken");
  co_return json(http::status::created, {{"user", user}});
}

boost::asio::awaitable<Response> ApiService::login(const Request& request) {
  auto body = parse_json_object(request);
  auto user = required_string(body, "user");
  auto password = required_string(body, "password");
  // One answer for every failure, so a caller cannot learn which names exist.
  const auto refused = [] { return unauthorized("wrong user name or password"); };

  // Buckets of failed logins: [0] per address, [1] per account and address,
  // [2] per account from everywhere (slowdown only). A name that cannot
  // exist has no account buckets.
  const auto& limits = config_.rate_limits;
  const std::string address = client_address(request);
  const bool named = valid_user_name(user);
  const std::string account = named ? fold_user_name(user) : std::string();
  std::vector<store::Bucket> failures;
  failures.push_back({"login-failed:" + address, limits.login_failures_per_address});
  if (named) {
    failures.push_back({"login-failed-account-address:" + account + "|" + address,
                        limits.login_failures_per_account_address});
    failures.push_back({"login-failed-account:" + account, limits.login_failures_per_account});
  }
  // The limiting buckets ([0], [1]) are charged before the password is
  // checked and refunded after a success: charging is atomic, so parallel
  // guesses cannot all pass a check made before any of them failed.
  std::vector<store::Bucket> limiting(failures.begin(), failures.begin() + (named ? 2 : 1));
  auto limiting_copy = limiting;
  auto charged = co_await backends_.rate_limits.charge(std::move(limiting_copy));
  for (const auto& verdict : charged) {
    if (verdict.allowed) continue;
    metrics_.count_rate_limited(Metrics::Limit::login);
    metrics_.count_login(Metrics::Login::rate_limited);
    throw rate_limited("too many failed logins from this address", verdict.retry_after);
  }
  if (named) {
    std::vector<store::Bucket> account{failures[2]};
    auto slowdown = co_await backends_.rate_limits.peek(std::move(account));
    const auto delay = login_slowdown(slowdown.front().used, limits.login_slowdown_max);
    if (delay.count() > 0) co_await sleep_(delay);
  }

  // The rules are public, so rejecting malformed input early leaks nothing.
  std::optional<StoredUser> stored;
  bool verified = false;
  if (named && valid_password(password)) {
    stored = co_await backends_.users.find(user);
    if (!stored)
      co_await backends_.login_hasher.burn(std::move(password));
    else
      verified = co_await backends_.login_hasher.verify(stored->password_hash, std::move(password));
  }
  if (!verified) {
    // The limiting buckets were charged above; the account-wide one now.
    if (named) {
      std::vector<store::Bucket> account{failures[2]};
      co_await backends_.rate_limits.charge(std::move(account));
    }
    metrics_.count_login(Metrics::Login::refused);
    throw refused();
  }
  co_await backends_.rate_limits.refund(std::move(limiting));
  metrics_.count_login(Metrics::Login::ok);
  co_return co_await start_session(stored->name);
}

boost::asio::awaitable<Response> ApiService::start_session(std::string user) {
  auto issued = tokens_.issue(user);
  co_await backends_.sessions.put(issued.claims.jti, user,
                                  std::chrono::duration_cast<std::chrono::milliseconds>(tokens_.lifetime()));
  co_return json(http::status::ok,
                 {{"token", issued.token}, {"expires_at", issued.claims.expires_at_ms}, {"user", user}});
}

auth::Claims ApiService::verify_bearer(const Request& request) const {
  auto token = bearer_token(request);
  if (token.empty()) throw unauthorized("missing bearer token");
  auto claims = tokens_.verify(token, clock_());
  if (!claims) throw unauthorized();
  return std::move(*claims);
}

boost::asio::awaitable<auth::Claims> ApiService::authenticate(const Request& request) {
  auto claims = verify_bearer(request);
  if (!co_await backends_.sessions.exists(claims.jti)) throw unauthorized();
  co_return claims;
}

boost::asio::awaitable<Response> ApiService::logout(const Request& request) {
  auto claims = verify_bearer(request);
  // DEL is the check: of two concurrent logouts exactly one gets 204.
  if (!co_await backends_.sessions.remove(claims.jti)) throw unauthorized();
  Response response{http::status::no_content, request.version()};
  co_return response;
}

// A token in its last minutes buys a fresh one without the password; the
// token's user, never a body field, decides whose session it is.
boost::asio::awaitable<Response> ApiService::refresh(const Request& request) {
  auto claims = co_await authenticate(request);
  // No body, or a JSON object whose fields are ignored (as unknown fields are).
  if (!trim(request.body()).empty()) parse_json_object(request);
  if (config_.rate_limits.refreshes_per_user.limited()) {
    store::Bucket bucket{"refresh:" + fold_user_name(claims.user), config_.rate_limits.refreshes_per_user};
    auto verdict = co_await backends_.rate_limits.take(std::move(bucket));
    if (!verdict.allowed) throw rate_limited("too many token refreshes for this user", verdict.retry_after);
  }
  co_return co_await start_session(std::move(claims.user));
}

boost::asio::awaitable<Response> ApiService::publish_message(const Request& request) {
  auto claims = co_await authenticate(request);
  auto body = parse_json_object(request);
  auto room = required_string(body, "room");
  auto text = required_string(body, "body");
  auto id = optional_string(body, "id");
  if (!valid_room_name(room))
    throw HttpError(http::status::bad_request, "bad_room", "room: 1-64 of [A-Za-z0-9_.-]");
  if (id && !valid_message_id(*id))
    throw HttpError(http::status::bad_request, "bad_id", "id: 1-64 of [A-Za-z0-9_.:-]");
  if (text.empty()) throw bad_request("body must be a non-empty string");
  if (text.size() > config_.max_message_body)
    throw HttpError(http::status::payload_too_large, "body_too_large",
                    "body exceeds " + std::to_string(config_.max_message_body) + " bytes");
  if (!id) id = make_message_id();
  // The same decision the gateway makes for a TCP send (auth/room_access.hpp).
  if (!auth::RoomAccess{}.allowed(claims.user, room, auth::RoomAccess::Action::send))
    throw HttpError(http::status::forbidden, "forbidden", "you may not send to room " + room);
  if (config_.rate_limits.publishes_per_user.limited()) {
    auto bucket = store::messages_bucket(claims.user, config_.rate_limits.publishes_per_user);
    auto verdict = co_await backends_.rate_limits.take(std::move(bucket));
    if (!verdict.allowed) {
      metrics_.count_rate_limited(Metrics::Limit::publish);
      throw rate_limited("too many messages from this user", verdict.retry_after);
    }
  }

  amqp::Message message;
  message.routing_key = ingest_queue(shard_of(room, config_.ingest_shards));
  message.body = protocol::encode_ingest({room, *id, claims.user, std::move(text), clock_()});
  message.persistent = true;
  message.mandatory = true;
  const auto published = std::chrono::steady_clock::now();
  auto status = co_await backends_.publisher.publish(std::move(message));
  metrics_.count_publish(status);
  if (status == amqp::PublishStatus::confirmed)
    metrics_.observe_publish_confirm(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - published).count());
  // The broker is busy, not down: the client learns at once and backs off.
  // Not 429: that is the client's own rate limit.
  if (status == amqp::PublishStatus::overloaded)
    throw HttpError(
        http::status::service_unavailable, "overloaded",
        "the server is overloaded; the message was not accepted, retry after " +
            std::to_string(kOverloadedRetryAfter.count()) + " s",
        HttpError::Headers{{http::field::retry_after, std::to_string(kOverloadedRetryAfter.count())}});
  if (status != amqp::PublishStatus::confirmed)
    throw HttpError(http::status::service_unavailable, "unavailable",
                    std::string("the message broker did not take the message (") + amqp::to_string(status) +
                        "); it was not accepted, retry later");
  co_return json(http::status::accepted, {{"id", *id}, {"room", room}});
}

boost::asio::awaitable<DependencyHealth> ApiService::cached_health() {
  for (;;) {
    std::optional<DependencyHealth> answer;
    bool probe = false;
    {
      std::lock_guard lock(health_mutex_);
      if (health_ && clock_() - health_at_ms_ < config_.health_cache.count())
        answer = health_;
      else if (!health_probing_)
        probe = health_probing_ = true;
      else
        answer = health_;  // a probe is running: the previous answer, if any
    }
    if (answer) co_return *answer;
    if (probe) break;
    co_await sleep_(std::chrono::milliseconds(10));  // the first probe is still running
  }
  DependencyHealth health;
  try {
    health = co_await backends_.health.probe();
  } catch (const std::exception&) {
    health = DependencyHealth{};
  }
  std::lock_guard lock(health_mutex_);
  health_ = health;
  health_at_ms_ = clock_();
  health_probing_ = false;
  co_return health;
}

// The body is the TCP status frame without its "type" (docs/protocol.md).
boost::asio::awaitable<Response> ApiService::user_status(const Request&, const server::PathParams& params) {
  auto status = co_await backends_.status.get(params.at("user"));
  if (!status) throw HttpError(http::status::not_found, "not_found", "no such user");
  boost::json::object body{{"user", status->user}, {"status", status->online ? "online" : "offline"}};
  if (status->last_seen_ms)
    body["last_seen"] = *status->last_seen_ms;
  else
    body["last_seen"] = nullptr;
  co_return json(http::status::ok, body);
}

// The items are the stored frames themselves, spliced in without a parse
// (protocol::message_array): the same bytes the TCP `history` reply carries.
boost::asio::awaitable<Response> ApiService::room_messages(const Request& request,
                                                           const server::PathParams& params) {
  auto claims = co_await authenticate(request);
  protocol::HistoryRequest query;
  query.room = params.at("room");
  if (!valid_room_name(query.room))
    throw HttpError(http::status::bad_request, "bad_room", "room: 1-64 of [A-Za-z0-9_.-]");
  const auto parameters = query_parameters(request.target());
  constexpr auto kSeqMax = std::numeric_limits<std::int64_t>::max();
  query.after_seq = integer_parameter(parameters, "after_seq", 0, kSeqMax);
  query.before_seq = integer_parameter(parameters, "before_seq", 0, kSeqMax);
  if (query.after_seq && query.before_seq) throw bad_request("give after_seq or before_seq, not both");
  if (auto limit = integer_parameter(parameters, "limit", 1, protocol::HistoryRequest::kMaxLimit))
    query.limit = *limit;
  if (!auth::RoomAccess{}.allowed(claims.user, query.room, auth::RoomAccess::Action::read))
    throw HttpError(http::status::forbidden, "forbidden", "you may not read room " + query.room);
  const auto room = query.room;
  auto items = co_await backends_.history.messages(std::move(query));
  std::vector<std::string_view> frames;
  frames.reserve(items.size());
  for (const auto& item : items) frames.emplace_back(*item.second);
  std::string body = boost::json::serialize(boost::json::object{{"room", room}});
  body.pop_back();  // the closing brace
  body += ",\"messages\":";
  body += protocol::message_array(frames);
  body += '}';
  co_return json_response(http::status::ok, std::move(body));
}

boost::asio::awaitable<Response> ApiService::list_rooms(const Request& request) {
  co_await authenticate(request);
  const auto parameters = query_parameters(request.target());
  std::size_t limit = protocol::HistoryRequest::kDefaultLimit;
  if (auto value = integer_parameter(parameters, "limit", 1, protocol::HistoryRequest::kMaxLimit))
    limit = static_cast<std::size_t>(*value);
  std::optional<std::string> after;
  if (auto it = parameters.find("after"); it != parameters.end()) {
    // Only room names are handed out as `next`.
    if (!valid_room_name(it->second)) throw bad_request("after must be a room name (1-64 of [A-Za-z0-9_.-])");
    after = it->second;
  }
  auto page = co_await backends_.history.rooms(std::move(after), limit);
  boost::json::array rooms;
  rooms.reserve(page.rooms.size());
  for (const auto& room : page.rooms)
    rooms.emplace_back(
        boost::json::object{{"room", room.room}, {"last_seq", room.last_seq}, {"last_ts", room.last_ts_ms}});
  boost::json::object body{{"rooms", std::move(rooms)}};
  if (page.next)
    body["next"] = *page.next;
  else
    body["next"] = nullptr;
  co_return json(http::status::ok, body);
}

boost::asio::awaitable<Response> ApiService::healthz(const Request&) {
  const auto health = co_await cached_health();
  const auto state = [](bool ok) { return ok ? "ok" : "unavailable"; };
  co_return json(health.all_ok() ? http::status::ok : http::status::service_unavailable,
                 {{"status", state(health.all_ok())},
                  {"redis", state(health.redis)},
                  {"postgres", state(health.postgres)},
                  {"rabbitmq", state(health.rabbitmq)},
                  {"amqp_connected", backends_.publisher.connected()}});
}

boost::asio::awaitable<Response> ApiService::metrics(const Request&) {
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "text/plain; version=0.0.4");
  response.body() = metrics_.render(backends_.publisher.connected());
  response.prepare_payload();
  co_return response;
}

}  // namespace rtmc::api
