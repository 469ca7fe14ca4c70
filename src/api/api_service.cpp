#include "api/api_service.hpp"

#include "auth/room_access.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cctype>
#include <optional>

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

}  // namespace

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

std::string bearer_token(const Request& request) {
  auto header = trim(request[http::field::authorization]);
  constexpr std::string_view scheme = "bearer";
  if (header.size() <= scheme.size() || !iequals(header.substr(0, scheme.size()), scheme) ||
      (header[scheme.size()] != ' ' && header[scheme.size()] != '\t'))
    return {};
  return std::string(trim(header.substr(scheme.size())));
}

ApiService::ApiService(ServiceConfig config, UserStore& users, SessionStore& sessions, PasswordHasher& hasher,
                       MessagePublisher& publisher, const auth::TokenService& tokens, Metrics& metrics,
                       Clock clock)
    : config_(config),
      users_(users),
      sessions_(sessions),
      hasher_(hasher),
      publisher_(publisher),
      tokens_(tokens),
      metrics_(metrics),
      clock_(clock ? std::move(clock) : Clock(&rtmc::now_ms)) {}

void ApiService::install(Router& router) {
  router.add(http::verb::post, "/register", [this](const Request& r) { return register_user(r); });
  router.add(http::verb::post, "/login", [this](const Request& r) { return login(r); });
  router.add(http::verb::post, "/logout", [this](const Request& r) { return logout(r); });
  router.add(http::verb::post, "/publishMessage", [this](const Request& r) { return publish_message(r); });
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

  auto hash = co_await hasher_.hash(std::move(password));
  if (!co_await users_.create(user, std::move(hash)))
    throw HttpError(http::status::conflict, "user_taken", "that user name is taken");
  co_return json(http::status::created, {{"user", user}});
}

boost::asio::awaitable<Response> ApiService::login(const Request& request) {
  auto body = parse_json_object(request);
  auto user = required_string(body, "user");
  auto password = required_string(body, "password");
  // One answer for every failure, so a caller cannot learn which names exist.
  const auto refused = [] { return unauthorized("wrong user name or password"); };
  // The rules are public, so rejecting malformed input early leaks nothing.
  if (!valid_user_name(user) || !valid_password(password)) throw refused();

  auto stored = co_await users_.find(user);
  if (!stored) {
    co_await hasher_.burn(std::move(password));
    throw refused();
  }
  if (!co_await hasher_.verify(stored->password_hash, std::move(password))) throw refused();

  auto issued = tokens_.issue(stored->name);
  co_await sessions_.put(issued.claims.jti, stored->name,
                         std::chrono::duration_cast<std::chrono::milliseconds>(tokens_.lifetime()));
  co_return json(http::status::ok, {{"token", issued.token},
                                    {"expires_at", issued.claims.expires_at_ms},
                                    {"user", stored->name}});
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
  if (!co_await sessions_.exists(claims.jti)) throw unauthorized();
  co_return claims;
}

boost::asio::awaitable<Response> ApiService::logout(const Request& request) {
  auto claims = verify_bearer(request);
  // DEL is the check: of two concurrent logouts exactly one gets 204.
  if (!co_await sessions_.remove(claims.jti)) throw unauthorized();
  Response response{http::status::no_content, request.version()};
  co_return response;
}

boost::asio::awaitable<Response> ApiService::publish_message(const Request& request) {
  auto claims = co_await authenticate(request);
  auto body = parse_json_object(request);
  auto room = required_string(body, "room");
  auto text = required_string(body, "body");
  auto id = optional_string(body, "id");
  if (!valid_room_name(room)) throw HttpError(http::status::bad_request, "bad_room", "room: 1-64 of [A-Za-z0-9_.-]");
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

  amqp::Message message;
  message.routing_key = ingest_queue(shard_of(room, config_.ingest_shards));
  message.body = protocol::encode_ingest({room, *id, claims.user, std::move(text)});
  message.persistent = true;
  message.mandatory = true;
  auto status = co_await publisher_.publish(std::move(message));
  metrics_.count_publish(status);
  if (status != amqp::PublishStatus::confirmed)
    throw HttpError(http::status::service_unavailable, "unavailable",
                    std::string("the message broker did not take the message (") + amqp::to_string(status) +
                        "); it was not accepted, retry later");
  co_return json(http::status::accepted, {{"id", *id}, {"room", room}});
}

boost::asio::awaitable<Response> ApiService::healthz(const Request&) {
  co_return json(http::status::ok, {{"status", "ok"}, {"amqp_connected", publisher_.connected()}});
}

boost::asio::awaitable<Response> ApiService::metrics(const Request&) {
  Response response{http::status::ok, 11};
  response.set(http::field::content_type, "text/plain; version=0.0.4");
  response.body() = metrics_.render(publisher_.connected());
  response.prepare_payload();
  co_return response;
}

}  // namespace rtmc::api
