#include "protocol/frames.hpp"

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <limits>

#include "common/names.hpp"

namespace rtmc::protocol {
namespace json = boost::json;

const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::bad_json: return "bad_json";
    case ErrorCode::bad_frame: return "bad_frame";
    case ErrorCode::unknown_type: return "unknown_type";
    case ErrorCode::frame_too_large: return "frame_too_large";
    case ErrorCode::unauthorized: return "unauthorized";
    case ErrorCode::not_joined: return "not_joined";
    case ErrorCode::bad_room: return "bad_room";
    case ErrorCode::bad_id: return "bad_id";
    case ErrorCode::body_too_large: return "body_too_large";
    case ErrorCode::slow_consumer: return "slow_consumer";
    case ErrorCode::unavailable: return "unavailable";
    case ErrorCode::internal: return "internal";
    case ErrorCode::too_many_rooms: return "too_many_rooms";
    case ErrorCode::forbidden: return "forbidden";
    case ErrorCode::rate_limited: return "rate_limited";
    case ErrorCode::server_full: return "server_full";
    case ErrorCode::server_shutdown: return "server_shutdown";
    case ErrorCode::not_found: return "not_found";
  }
  return "internal";
}

bool is_fatal(ErrorCode code) {
  return code == ErrorCode::unauthorized || code == ErrorCode::frame_too_large ||
         code == ErrorCode::slow_consumer || code == ErrorCode::server_full ||
         code == ErrorCode::server_shutdown;
}

namespace {

FrameError fail(ErrorCode code, std::string message, Ref ref) {
  return FrameError{code, std::move(message), std::move(ref)};
}

// Returns the string field, or nullptr when absent; `wrong_type` is set when
// present but not a string.
const json::string* string_field(const json::object& object, std::string_view key, bool& wrong_type) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr) return nullptr;
  if (!value->is_string()) {
    wrong_type = true;
    return nullptr;
  }
  return &value->get_string();
}

std::string finish(json::object object, const Ref& ref) {
  std::string text = json::serialize(object);
  if (ref) {
    text.pop_back();  // the closing brace; ref is spliced verbatim
    text += ",\"ref\":";
    text += *ref;
    text += '}';
  }
  text += '\n';
  return text;
}

}  // namespace

std::variant<Frame, FrameError> parse_client_frame(std::string_view line, const ParseLimits& limits) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  json::error_code ec;
  json::value parsed = json::parse(line, ec);
  if (ec) return fail(ErrorCode::bad_json, "not a single valid JSON value: " + ec.message(), std::nullopt);
  if (!parsed.is_object()) return fail(ErrorCode::bad_frame, "a frame must be a JSON object", std::nullopt);
  const json::object& object = parsed.get_object();

  Ref ref;
  if (const json::value* ref_value = object.if_contains("ref")) {
    ref = json::serialize(*ref_value);
    if (ref->size() > limits.max_ref_bytes)
      return fail(ErrorCode::bad_frame,
                  "\"ref\" is longer than " + std::to_string(limits.max_ref_bytes) + " bytes serialized",
                  std::nullopt);
  }

  bool wrong_type = false;
  const json::string* type = string_field(object, "type", wrong_type);
  if (type == nullptr) return fail(ErrorCode::bad_frame, "\"type\" must be a string", ref);

  auto required = [&](std::string_view key) -> const json::string* {
    bool wrong = false;
    return string_field(object, key, wrong);
  };
  auto room_of = [&](std::string& room) -> std::optional<FrameError> {
    const json::string* value = required("room");
    if (value == nullptr) return fail(ErrorCode::bad_frame, "\"room\" must be a string", ref);
    if (!valid_room_name(*value))
      return fail(ErrorCode::bad_room, "room names are 1-64 of [A-Za-z0-9_.-]", ref);
    room.assign(value->data(), value->size());
    return std::nullopt;
  };

  if (*type == "auth") {
    const json::string* token = required("token");
    if (token == nullptr) return fail(ErrorCode::bad_frame, "\"token\" must be a string", ref);
    return Frame{AuthRequest{std::string(*token)}, ref};
  }
  if (*type == "refresh") {
    const json::string* token = required("token");
    if (token == nullptr) return fail(ErrorCode::bad_frame, "\"token\" must be a string", ref);
    return Frame{RefreshRequest{std::string(*token)}, ref};
  }
  if (*type == "join" || *type == "leave") {
    std::string room;
    if (auto error = room_of(room)) return *error;
    if (*type == "join") {
      JoinRequest join{std::move(room), std::nullopt};
      if (const json::value* since = object.if_contains("since")) {
        // An integer JSON number (Boost.JSON keeps those that fit as int64);
        // 10.0, "10" or one beyond int64 is refused.
        if (!since->is_int64()) return fail(ErrorCode::bad_frame, "\"since\" must be an integer", ref);
        const std::int64_t value = since->get_int64();
        if (value < 0) return fail(ErrorCode::bad_frame, "\"since\" must not be negative", ref);
        join.since = value;
      }
      return Frame{std::move(join), ref};
    }
    return Frame{LeaveRequest{std::move(room)}, ref};
  }
  if (*type == "send") {
    SendRequest send;
    if (auto error = room_of(send.room)) return *error;
    bool id_wrong_type = false;
    const json::string* id = string_field(object, "id", id_wrong_type);
    if (id_wrong_type) return fail(ErrorCode::bad_frame, "\"id\" must be a string", ref);
    if (id != nullptr && !valid_message_id(*id))
      return fail(ErrorCode::bad_id, "message ids are 1-64 of [A-Za-z0-9_.:-]", ref);
    const json::string* body = required("body");
    if (body == nullptr) return fail(ErrorCode::bad_frame, "\"body\" must be a string", ref);
    if (body->empty()) return fail(ErrorCode::bad_frame, "\"body\" must not be empty", ref);
    if (body->size() > limits.max_body_bytes)
      return fail(ErrorCode::body_too_large,
                  "body is larger than " + std::to_string(limits.max_body_bytes) + " bytes", ref);
    send.id = id != nullptr ? std::string(*id) : make_message_id();
    send.body.assign(body->data(), body->size());
    return Frame{std::move(send), ref};
  }
  if (*type == "ping") return Frame{PingRequest{}, ref};
  if (*type == "status") {
    const json::string* user = required("user");
    if (user == nullptr) return fail(ErrorCode::bad_frame, "\"user\" must be a string", ref);
    return Frame{StatusRequest{std::string(*user)}, ref};
  }
  if (*type == "history") {
    HistoryRequest history;
    if (auto error = room_of(history.room)) return *error;
    // Absent or null = not given; otherwise an integer in range.
    auto integer = [&](std::string_view key, std::int64_t min, std::int64_t max,
                       std::optional<std::int64_t>& out) -> std::optional<FrameError> {
      const json::value* value = object.if_contains(key);
      if (value == nullptr || value->is_null()) return std::nullopt;
      const auto bad = [&] {
        // Appended, not "literal" + string: GCC 12 warns falsely (-Wrestrict).
        std::string message(1, '"');
        message.append(key).append("\" must be an integer ");
        message.append(std::to_string(min)).append("..").append(std::to_string(max));
        return fail(ErrorCode::bad_frame, std::move(message), ref);
      };
      std::int64_t number = 0;
      if (value->is_int64())
        number = value->get_int64();
      else if (value->is_uint64() && value->get_uint64() <= static_cast<std::uint64_t>(max))
        number = static_cast<std::int64_t>(value->get_uint64());
      else
        return bad();
      if (number < min || number > max) return bad();
      out = number;
      return std::nullopt;
    };
    constexpr auto kSeqMax = std::numeric_limits<std::int64_t>::max();
    std::optional<std::int64_t> limit;
    if (auto error = integer("after_seq", 0, kSeqMax, history.after_seq)) return *error;
    if (auto error = integer("before_seq", 0, kSeqMax, history.before_seq)) return *error;
    if (auto error = integer("limit", 1, HistoryRequest::kMaxLimit, limit)) return *error;
    if (history.after_seq && history.before_seq)
      return fail(ErrorCode::bad_frame, "give \"after_seq\" or \"before_seq\", not both", ref);
    if (limit) history.limit = *limit;
    return Frame{std::move(history), ref};
  }
  if (*type == "members") {
    std::string room;
    if (auto error = room_of(room)) return *error;
    return Frame{MembersRequest{std::move(room)}, ref};
  }
  return fail(ErrorCode::unknown_type, "unknown frame type \"" + std::string(*type) + "\"", ref);
}

std::string auth_ok_frame(std::string_view user, int heartbeat_s, const Ref& ref) {
  return finish({{"type", "auth_ok"}, {"user", user}, {"heartbeat_s", heartbeat_s}}, ref);
}

std::string refreshed_frame(std::string_view user, std::int64_t expires_at_ms, const Ref& ref) {
  return finish({{"type", "refreshed"}, {"user", user}, {"expires_at", expires_at_ms}}, ref);
}

std::string joined_frame(std::string_view room, std::int64_t seq, const Ref& ref) {
  return finish({{"type", "joined"}, {"room", room}, {"seq", seq}}, ref);
}

std::string joined_frame(std::string_view room, std::int64_t seq, bool recovered, const Ref& ref) {
  return finish({{"type", "joined"}, {"room", room}, {"seq", seq}, {"recovered", recovered}}, ref);
}

std::string gap_frame(std::string_view room, std::int64_t from, std::int64_t to) {
  return finish({{"type", "gap"}, {"room", room}, {"from", from}, {"to", to}}, std::nullopt);
}

std::string left_frame(std::string_view room, const Ref& ref) {
  return finish({{"type", "left"}, {"room", room}}, ref);
}

std::string ack_frame(std::string_view room, std::string_view id, const Ref& ref) {
  return finish({{"type", "ack"}, {"id", id}, {"room", room}}, ref);
}

std::string pong_frame(const Ref& ref) {
  return finish({{"type", "pong"}}, ref);
}

std::string error_frame(ErrorCode code, std::string_view message, const Ref& ref) {
  return finish({{"type", "error"}, {"code", to_string(code)}, {"message", message}}, ref);
}

std::string message_frame(std::string_view room, std::int64_t seq, std::string_view id, std::string_view from,
                          std::string_view body, std::int64_t ts_ms) {
  return finish({{"type", "message"},
                 {"room", room},
                 {"seq", seq},
                 {"id", id},
                 {"from", from},
                 {"body", body},
                 {"ts", ts_ms}},
                std::nullopt);
}

std::string status_frame(std::string_view user, bool online, std::optional<std::int64_t> last_seen_ms,
                         const Ref& ref) {
  json::value last_seen = nullptr;
  if (last_seen_ms) last_seen = *last_seen_ms;
  return finish({{"type", "status"},
                 {"user", user},
                 {"status", online ? "online" : "offline"},
                 {"last_seen", std::move(last_seen)}},
                ref);
}

std::string members_frame(std::string_view room, const std::vector<std::string>& users, const Ref& ref) {
  json::array list;
  list.reserve(users.size());
  for (const auto& user : users) list.emplace_back(user);
  return finish({{"type", "members"}, {"room", room}, {"users", std::move(list)}}, ref);
}

std::string message_array(const std::vector<std::string_view>& frames) {
  std::size_t size = 2;
  for (auto frame : frames) size += frame.size() + 1;
  std::string text;
  text.reserve(size);
  text += '[';
  for (auto frame : frames) {
    if (!frame.empty() && frame.back() == '\n') frame.remove_suffix(1);
    if (text.size() > 1) text += ',';
    text += frame;
  }
  text += ']';
  return text;
}

std::string history_frame(std::string_view room, const std::vector<std::string_view>& frames,
                          const Ref& ref) {
  std::string text = json::serialize(json::object{{"type", "history"}, {"room", room}});
  text.pop_back();  // the closing brace; the stored frames are spliced verbatim
  text += ",\"messages\":";
  text += message_array(frames);
  if (ref) {
    text += ",\"ref\":";
    text += *ref;
  }
  text += "}\n";
  return text;
}

std::string presence_frame(std::string_view room, std::string_view user, bool joined) {
  return finish({{"type", "presence"}, {"room", room}, {"user", user}, {"event", joined ? "join" : "leave"}},
                std::nullopt);
}

FrameTemplate message_frame_template(std::string_view room, std::string_view id, std::string_view from,
                                     std::string_view body, std::int64_t ts_ms) {
  // Room names cannot contain quotes, so the marker occurs exactly once.
  std::string frame = message_frame(room, -1, id, from, body, ts_ms);
  static constexpr std::string_view marker = "\"seq\":-1,";
  auto at = frame.find(marker);
  at += marker.size() - 3;  // keep "seq":
  return FrameTemplate{frame.substr(0, at), frame.substr(at + 2)};
}

std::string encode_ingest(const IngestMessage& message) {
  json::object object{
      {"room", message.room}, {"id", message.id}, {"from", message.from}, {"body", message.body}};
  if (message.accepted_ms > 0) object["accepted_at"] = message.accepted_ms;
  return json::serialize(object);
}

std::optional<IngestMessage> decode_ingest(std::string_view text, const ParseLimits& limits) {
  json::error_code ec;
  json::value parsed = json::parse(text, ec);
  if (ec || !parsed.is_object()) return std::nullopt;
  const json::object& object = parsed.get_object();
  bool wrong_type = false;
  const json::string* room = string_field(object, "room", wrong_type);
  const json::string* id = string_field(object, "id", wrong_type);
  const json::string* from = string_field(object, "from", wrong_type);
  const json::string* body = string_field(object, "body", wrong_type);
  if (!room || !id || !from || !body) return std::nullopt;
  if (!valid_room_name(*room) || !valid_message_id(*id) || !valid_user_name(*from) || body->empty() ||
      body->size() > limits.max_body_bytes)
    return std::nullopt;
  // Only a metric depends on it: a bad value is ignored, not the message.
  std::int64_t accepted_ms = 0;
  if (const auto* accepted = object.if_contains("accepted_at"); accepted && accepted->is_int64())
    accepted_ms = std::max<std::int64_t>(0, accepted->get_int64());
  return IngestMessage{std::string(*room), std::string(*id), std::string(*from), std::string(*body),
                       accepted_ms};
}

std::optional<MessageHeader> peek_message(std::string_view frame) {
  json::error_code ec;
  json::value parsed = json::parse(frame, ec);
  if (ec || !parsed.is_object()) return std::nullopt;
  const json::object& object = parsed.get_object();
  const json::value* room = object.if_contains("room");
  const json::value* seq = object.if_contains("seq");
  if (!room || !seq || !room->is_string() || !seq->is_int64()) return std::nullopt;
  return MessageHeader{std::string(room->get_string()), seq->get_int64()};
}

std::optional<PresenceHeader> peek_presence(std::string_view line) {
  // Every frame the fan-out thread sees is serialized by us, type first: the
  // prefix tells a presence frame from a message without a parse.
  static constexpr std::string_view prefix = R"({"type":"presence",)";
  if (!line.starts_with(prefix)) return std::nullopt;
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  json::error_code ec;
  json::value parsed = json::parse(line, ec);
  if (ec || !parsed.is_object()) return std::nullopt;
  const json::object& object = parsed.get_object();
  bool wrong_type = false;
  const json::string* room = string_field(object, "room", wrong_type);
  const json::string* user = string_field(object, "user", wrong_type);
  const json::string* event = string_field(object, "event", wrong_type);
  if (!room || !user || !event || !valid_room_name(*room) || !valid_user_name(*user) ||
      (*event != "join" && *event != "leave"))
    return std::nullopt;
  return PresenceHeader{std::string(*room), std::string(*user)};
}

std::optional<boost::json::object> parse_server_frame(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  json::error_code ec;
  json::value parsed = json::parse(line, ec);
  if (ec || !parsed.is_object()) return std::nullopt;
  return std::move(parsed.get_object());
}

}  // namespace rtmc::protocol
