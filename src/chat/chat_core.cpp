#include "chat/chat_core.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <ctime>
#include <optional>
#include <utility>

#include "common/names.hpp"

namespace rtmc::chat {

namespace json = boost::json;

namespace {

std::string frame(const json::object& object) {
  return json::serialize(object) + "\n";
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}

std::string string_field(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr || !value->is_string()) return {};
  return std::string(value->get_string());
}

std::int64_t int_field(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr) return 0;
  if (value->is_int64()) return value->get_int64();
  if (value->is_uint64()) return static_cast<std::int64_t>(value->get_uint64());
  if (value->is_double()) return static_cast<std::int64_t>(value->get_double());
  return 0;
}

// The gateway closes the connection after these (docs/protocol.md).
bool is_fatal_code(std::string_view code) {
  return code == "unauthorized" || code == "frame_too_large" || code == "slow_consumer" ||
         code == "server_full" || code == "server_shutdown";
}

constexpr std::string_view join_ref_prefix = "join:";
constexpr std::string_view who_ref_prefix = "who:";
constexpr std::string_view status_ref_prefix = "status:";

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// "who:<n>" (members) or "who:<n>:<i>" (status of member i): the query and, for
// a status, the member index.
struct WhoRef {
  std::uint64_t query = 0;
  std::optional<std::size_t> member;
};

std::optional<WhoRef> parse_who_ref(std::string_view ref) {
  if (ref.substr(0, who_ref_prefix.size()) != who_ref_prefix) return std::nullopt;
  ref.remove_prefix(who_ref_prefix.size());
  auto colon = ref.find(':');
  auto query = parse_number(ref.substr(0, colon));
  if (!query) return std::nullopt;
  if (colon == std::string_view::npos) return WhoRef{*query, std::nullopt};
  auto member = parse_number(ref.substr(colon + 1));
  if (!member) return std::nullopt;
  return WhoRef{*query, static_cast<std::size_t>(*member)};
}

std::optional<std::uint64_t> parse_status_ref(std::string_view ref) {
  if (ref.substr(0, status_ref_prefix.size()) != status_ref_prefix) return std::nullopt;
  return parse_number(ref.substr(status_ref_prefix.size()));
}

std::tm clock_parts(std::int64_t ts_ms, bool utc_clock) {
  // Floor, not truncation, so times before 1970 do not round towards it.
  std::int64_t seconds_since_epoch = ts_ms / 1000 - (ts_ms % 1000 < 0 ? 1 : 0);
  auto seconds = static_cast<std::time_t>(seconds_since_epoch);
  std::tm parts{};
  if (utc_clock) {
    gmtime_r(&seconds, &parts);
  } else {
    localtime_r(&seconds, &parts);
  }
  return parts;
}

std::string strftime_text(const std::tm& parts, const char* format) {
  char text[32];
  std::size_t length = std::strftime(text, sizeof text, format, &parts);
  return std::string(text, length);
}

// "[HH:MM:SS]", the prefix of every chat line.
std::string clock_prefix(std::int64_t ts_ms, bool utc_clock) {
  // Appended, not "[" + ...: GCC 12 reports a false -Wrestrict for a literal
  // prepended to a temporary string.
  std::string prefix(1, '[');
  prefix += strftime_text(clock_parts(ts_ms, utc_clock), "%H:%M:%S");
  prefix += ']';
  return prefix;
}

// What a status answer says about its user, with the time made readable.
struct StatusView {
  std::string user;
  std::string status;
  std::optional<std::int64_t> last_seen{};
};

StatusView read_status(const json::object& object) {
  StatusView view{.user = string_field(object, "user"), .status = string_field(object, "status")};
  const json::value* last_seen = object.if_contains("last_seen");
  if (last_seen != nullptr && (last_seen->is_int64() || last_seen->is_uint64() || last_seen->is_double()))
    view.last_seen = int_field(object, "last_seen");
  return view;
}

// The words after the name in /who: "online", "offline, last seen 12:03",
// "offline, never connected".
std::string short_state(const StatusView& view, std::int64_t now, bool utc_clock) {
  std::string status = printable(view.status);
  if (view.status == "online") return status;
  if (!view.last_seen) return status + ", never connected";
  return status + ", last seen " + format_when(*view.last_seen, now, utc_clock);
}

// The answer to /status: "alice is online (since 12:03)".
std::string status_sentence(const StatusView& view, std::int64_t now, bool utc_clock) {
  std::string text = "* " + printable(view.user) + " is " + printable(view.status);
  if (!view.last_seen) return text + (view.status == "online" ? "" : " (never connected)");
  text += view.status == "online" ? " (since " : " (last seen ";
  return text + format_when(*view.last_seen, now, utc_clock) + ")";
}

}  // namespace

ChatCore::ChatCore(ChatCoreOptions options) : options_(std::move(options)) {}

std::int64_t ChatCore::now() const {
  return options_.clock ? options_.clock() : now_ms();
}

std::chrono::milliseconds ChatCore::ping_interval() const {
  return std::chrono::milliseconds(heartbeat_s_ > 0 ? std::int64_t{heartbeat_s_} * 500 : 0);
}

std::string ChatCore::auth_frame(std::string_view token) const {
  return frame({{"type", "auth"}, {"token", token}});
}

std::string ChatCore::ping_frame() {
  return frame({{"type", "ping"}});
}

std::string ChatCore::help_text() {
  return "commands:\n"
         "  <text>      send text to the current room (start with // to send a leading /)\n"
         "  /join R     join room R and make it current\n"
         "  /leave [R]  leave room R (default: the current room)\n"
         "  /room R     make the joined room R current\n"
         "  /rooms      list joined rooms\n"
         "  /who [R]    list the members of room R (default: the current room) with their status\n"
         "  /status U   show whether user U is online, or when they were last seen\n"
         "  /quit       leave the chat\n"
         "  /help       this text";
}

// The current room switches when the join is requested, not when it is
// answered, so a script's "/join r" followed by text sends that text to r; the
// gateway handles one connection's frames in order, so the join lands first.
void ChatCore::request_join(std::string_view room, Effects& effects) {
  effects.frames.push_back(
      frame({{"type", "join"}, {"room", room}, {"ref", std::string(join_ref_prefix) + std::string(room)}}));
  joined_.emplace(room);
  current_room_ = std::string(room);
}

void ChatCore::send_body(std::string_view body, Effects& effects) {
  if (current_room_.empty()) {
    effects.notices.push_back("! not in any room; /join a room first");
    return;
  }
  std::string id = options_.id_prefix.empty() ? std::to_string(next_id_++)
                                              : options_.id_prefix + "-" + std::to_string(next_id_++);
  // ref = id, so an error for this send can be matched to its pending entry.
  effects.frames.push_back(
      frame({{"type", "send"}, {"room", current_room_}, {"id", id}, {"body", body}, {"ref", id}}));
  pending_.insert(std::move(id));
}

void ChatCore::handle_command(std::string_view command, std::string_view argument, Effects& effects) {
  if (command == "/quit" || command == "/exit") {
    effects.quit = true;
  } else if (command == "/help") {
    effects.notices.push_back(help_text());
  } else if (command == "/join") {
    if (argument.empty()) {
      effects.notices.push_back("! usage: /join ROOM");
    } else if (!valid_room_name(argument)) {
      effects.notices.push_back("! bad room name '" + printable(argument) +
                                "': 1-64 of letters, digits, '_', '.', '-'");
    } else {
      request_join(argument, effects);
    }
  } else if (command == "/leave") {
    std::string room = argument.empty() ? current_room_ : std::string(argument);
    if (room.empty() || joined_.count(room) == 0) {
      effects.notices.push_back("! not in room #" + printable(room));
      return;
    }
    effects.frames.push_back(frame({{"type", "leave"}, {"room", room}}));
    joined_.erase(room);
    if (current_room_ == room) current_room_ = joined_.empty() ? std::string() : *joined_.begin();
  } else if (command == "/room") {
    std::string room(argument);
    if (joined_.count(room) == 0) {
      effects.notices.push_back("! not in room #" + printable(room) + "; /join " + printable(room) +
                                " first");
      return;
    }
    current_room_ = room;
    effects.notices.push_back("* talking in #" + room);
  } else if (command == "/rooms") {
    std::string list;
    for (const auto& room : joined_) list += (room == current_room_ ? " *#" : " #") + room;
    effects.notices.push_back(joined_.empty() ? "* no rooms" : "* rooms:" + list);
  } else if (command == "/who") {
    request_who(argument, effects);
  } else if (command == "/status") {
    request_status(argument, effects);
  } else {
    effects.notices.push_back("! unknown command " + printable(command) + " (try /help)");
  }
}

// The gateway is asked even for a room this client does not think it joined:
// the gateway's `not_joined` is the truth, and a join may be in flight.
void ChatCore::request_who(std::string_view argument, Effects& effects) {
  // "#lobby" as the output writes it; '#' is never part of a room name.
  if (!argument.empty() && argument.front() == '#') argument.remove_prefix(1);
  std::string room = argument.empty() ? current_room_ : std::string(argument);
  if (room.empty()) {
    effects.notices.push_back("! not in any room; /who ROOM or /join a room first");
    return;
  }
  if (!valid_room_name(room)) {
    effects.notices.push_back("! bad room name '" + printable(room) + "'");
    return;
  }
  std::uint64_t query = next_query_++;
  effects.frames.push_back(frame(
      {{"type", "members"}, {"room", room}, {"ref", std::string(who_ref_prefix) + std::to_string(query)}}));
  who_queries_.emplace(query, WhoQuery{.room = std::move(room)});
}

void ChatCore::request_status(std::string_view argument, Effects& effects) {
  if (argument.empty()) {
    effects.notices.push_back("! usage: /status USER");
    return;
  }
  // The gateway answers not_found for such a name too; no need to ask.
  if (!valid_user_name(argument)) {
    effects.notices.push_back("! no such user: " + printable(argument));
    return;
  }
  std::uint64_t query = next_query_++;
  effects.frames.push_back(frame({{"type", "status"},
                                  {"user", argument},
                                  {"ref", std::string(status_ref_prefix) + std::to_string(query)}}));
  status_queries_.emplace(query, std::string(argument));
}

void ChatCore::on_members(const std::string& ref, const json::object& object, Effects& effects) {
  auto who = parse_who_ref(ref);
  if (!who || who->member) return;
  auto found = who_queries_.find(who->query);
  if (found == who_queries_.end()) return;
  WhoQuery& query = found->second;
  if (const json::value* users = object.if_contains("users"); users != nullptr && users->is_array()) {
    for (const auto& user : users->get_array())
      if (user.is_string()) query.users.emplace_back(user.get_string());
  }
  if (query.users.empty()) {
    effects.notices.push_back("* #" + printable(query.room) + ": no members");
    who_queries_.erase(found);
    return;
  }
  query.states.resize(query.users.size());
  query.awaiting = query.users.size();
  for (std::size_t i = 0; i < query.users.size(); ++i) {
    std::string member_ref =
        std::string(who_ref_prefix) + std::to_string(who->query) + ":" + std::to_string(i);
    effects.frames.push_back(frame({{"type", "status"}, {"user", query.users[i]}, {"ref", member_ref}}));
  }
}

void ChatCore::answer_who_member(std::uint64_t query_number, std::size_t index, std::string state,
                                 Effects& effects) {
  auto found = who_queries_.find(query_number);
  if (found == who_queries_.end()) return;
  WhoQuery& query = found->second;
  // A repeated or foreign answer must not count twice.
  if (index >= query.states.size() || !query.states[index].empty()) return;
  query.states[index] = std::move(state);
  if (--query.awaiting > 0) return;
  std::string line = "* #" + printable(query.room) + " (" + std::to_string(query.users.size()) + "):";
  for (std::size_t i = 0; i < query.users.size(); ++i) {
    line += i == 0 ? " " : ", ";
    line += printable(query.users[i]) + " (" + query.states[i] + ")";
  }
  effects.notices.push_back(std::move(line));
  who_queries_.erase(found);
}

void ChatCore::on_status(const std::string& ref, const json::object& object, Effects& effects) {
  StatusView view = read_status(object);
  if (auto who = parse_who_ref(ref); who && who->member) {
    answer_who_member(who->query, *who->member, short_state(view, now(), options_.utc_clock), effects);
  } else if (auto query = parse_status_ref(ref)) {
    auto found = status_queries_.find(*query);
    if (found == status_queries_.end()) return;
    if (view.user.empty()) view.user = found->second;
    status_queries_.erase(found);
    effects.notices.push_back(status_sentence(view, now(), options_.utc_clock));
  }
}

bool ChatCore::on_query_error(const std::string& ref, std::string_view code, std::string_view message,
                              Effects& effects) {
  if (auto who = parse_who_ref(ref)) {
    if (who->member) {
      std::string state = code == "not_found"     ? "no such user"
                          : code == "unavailable" ? "status unavailable"
                                                  : "status error " + printable(code);
      answer_who_member(who->query, *who->member, std::move(state), effects);
      return true;
    }
    auto found = who_queries_.find(who->query);
    if (found == who_queries_.end()) return false;
    std::string room = printable(found->second.room);
    who_queries_.erase(found);
    if (code == "not_joined") {
      effects.notices.push_back("! /who #" + room + ": you are not in #" + room + "; /join " + room +
                                " first");
    } else {
      effects.notices.push_back("! /who #" + room + ": error " + printable(code) + ": " + printable(message));
    }
    return true;
  }
  if (auto query = parse_status_ref(ref)) {
    auto found = status_queries_.find(*query);
    if (found == status_queries_.end()) return false;
    std::string user = printable(found->second);
    status_queries_.erase(found);
    if (code == "not_found") {
      effects.notices.push_back("! no such user: " + user);
    } else {
      effects.notices.push_back("! /status " + user + ": error " + printable(code) + ": " +
                                printable(message));
    }
    return true;
  }
  return false;
}

Effects ChatCore::on_input(std::string_view line) {
  Effects effects;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (trim(line).empty()) return effects;
  if (line.substr(0, 2) == "//") {
    send_body(line.substr(1), effects);
  } else if (line.front() == '/') {
    std::string_view rest = trim(line);
    auto space = rest.find_first_of(" \t");
    std::string_view command = rest.substr(0, space);
    std::string_view argument =
        space == std::string_view::npos ? std::string_view() : trim(rest.substr(space));
    handle_command(command, argument, effects);
  } else {
    send_body(line, effects);
  }
  return effects;
}

Effects ChatCore::on_server_line(std::string_view line) {
  Effects effects;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return effects;
  boost::system::error_code ec;
  json::value parsed = json::parse(line, ec);
  if (ec || !parsed.is_object()) {
    effects.notices.push_back("! unreadable line from server: " + printable(line.substr(0, 200)));
    return effects;
  }
  const json::object& object = parsed.get_object();
  std::string type = string_field(object, "type");
  if (type == "message") {
    effects.messages.push_back(format_message(string_field(object, "room"), string_field(object, "from"),
                                              string_field(object, "body"), int_field(object, "ts"),
                                              options_.utc_clock));
  } else if (type == "ack") {
    pending_.erase(string_field(object, "id"));
  } else if (type == "presence") {
    std::string event = string_field(object, "event");
    std::string_view verb = event == "join" ? "joined" : event == "leave" ? "left" : "";
    if (!verb.empty()) {
      effects.messages.push_back(clock_prefix(now(), options_.utc_clock) + " * " +
                                 printable(string_field(object, "user")) + " " + std::string(verb) + " #" +
                                 printable(string_field(object, "room")));
    }
  } else if (type == "members") {
    on_members(string_field(object, "ref"), object, effects);
  } else if (type == "status") {
    on_status(string_field(object, "ref"), object, effects);
  } else if (type == "pong") {
  } else if (type == "auth_ok") {
    user_ = string_field(object, "user");
    heartbeat_s_ = static_cast<int>(int_field(object, "heartbeat_s"));
    effects.notices.push_back("* signed in as " + printable(user_));
    if (!options_.initial_room.empty()) request_join(options_.initial_room, effects);
  } else if (type == "joined") {
    std::string room = string_field(object, "room");
    joined_.insert(room);
    effects.notices.push_back("* joined #" + printable(room) + " (last seq " +
                              std::to_string(int_field(object, "seq")) + ")");
  } else if (type == "left") {
    effects.notices.push_back("* left #" + printable(string_field(object, "room")));
  } else if (type == "error") {
    std::string code = string_field(object, "code");
    std::string ref = string_field(object, "ref");
    std::string message = string_field(object, "message");
    if (is_fatal_code(code)) effects.closing = true;
    if (on_query_error(ref, code, message, effects)) return effects;
    if (!ref.empty()) {
      if (ref.rfind(join_ref_prefix, 0) == 0) {
        std::string room = ref.substr(join_ref_prefix.size());
        joined_.erase(room);
        if (current_room_ == room) current_room_ = joined_.empty() ? std::string() : *joined_.begin();
      } else {
        pending_.erase(ref);
      }
    }
    effects.notices.push_back("! error " + printable(code) + ": " + printable(message));
  }
  // Unknown types come from a newer server; ignoring them keeps old clients working.
  return effects;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '\t') {
      out += ' ';
    } else if (byte < 0x20 || byte == 0x7f) {
      out += '?';
    } else if (byte == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      // U+0080..U+009F: C1 controls (CSI among them) that some terminals obey.
      out += '?';
      ++i;
    } else {
      out += static_cast<char>(byte);
    }
  }
  return out;
}

std::string format_message(std::string_view room, std::string_view from, std::string_view body,
                           std::int64_t ts_ms, bool utc_clock) {
  std::string line;
  line.reserve(body.size() + room.size() + from.size() + 16);
  line += clock_prefix(ts_ms, utc_clock);
  line += " #";
  line += printable(room);
  line += " <";
  line += printable(from);
  line += "> ";
  line += printable(body);
  return line;
}

std::string format_when(std::int64_t ts_ms, std::int64_t now_ms, bool utc_clock) {
  std::tm when = clock_parts(ts_ms, utc_clock);
  std::tm today = clock_parts(now_ms, utc_clock);
  bool same_day = when.tm_year == today.tm_year && when.tm_yday == today.tm_yday;
  return strftime_text(when, same_day ? "%H:%M" : "%Y-%m-%d %H:%M");
}

}  // namespace rtmc::chat
