#include "chat/chat_core.hpp"

#include <algorithm>
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
// The latest messages asked on joining a room, and /history pages.
constexpr std::string_view recent_ref_prefix = "recent:";
constexpr std::string_view page_ref_prefix = "page:";
constexpr std::int64_t kRecentLimit = 20;

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

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
         "  /history    show older messages of the current room (again: older still)\n"
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
  unacked_[id] = PendingSend{current_room_, std::string(body)};
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
    views_.erase(room);
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
  } else if (command == "/history") {
    request_history_page(effects);
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
    on_message(object, effects);
  } else if (type == "history") {
    on_history(object, effects);
  } else if (type == "gap") {
    const std::string room = string_field(object, "room");
    const auto from = int_field(object, "from");
    const auto to = int_field(object, "to");
    auto& view = views_[room];
    view.last_seq = std::max(view.last_seq, to);
    effects.notices.push_back("! #" + printable(room) + ": messages " + std::to_string(from) + ".." +
                              std::to_string(to) + " are lost (gap)");
  } else if (type == "ack") {
    pending_.erase(string_field(object, "id"));
    unacked_.erase(string_field(object, "id"));
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
    if (resuming_) {
      resume(effects);
    } else if (!options_.initial_room.empty()) {
      request_join(options_.initial_room, effects);
    }
  } else if (type == "joined") {
    on_joined(object, effects);
  } else if (type == "left") {
    effects.notices.push_back("* left #" + printable(string_field(object, "room")));
  } else if (type == "error") {
    std::string code = string_field(object, "code");
    std::string ref = string_field(object, "ref");
    std::string message = string_field(object, "message");
    if (is_fatal_code(code)) effects.closing = true;
    if (code == "unauthorized") effects.refused = true;
    if (on_query_error(ref, code, message, effects)) return effects;
    if (!ref.empty()) {
      if (ref.rfind(join_ref_prefix, 0) == 0) {
        std::string room = ref.substr(join_ref_prefix.size());
        auto view = views_.find(room);
        if (code == "bad_frame" && view != views_.end() && view->second.since >= 0) {
          // The room's seq is below the one this client resumes from: its
          // Redis lost data and has not given a seq since. Resuming cannot
          // work, staying out of the room would be worse: join it afresh.
          effects.notices.push_back("! #" + printable(room) + ": cannot resume from seq " +
                                    std::to_string(view->second.since) + " (" + printable(message) +
                                    "); joining at the room's current seq");
          view->second.since = -1;
          view->second.known = false;
          effects.frames.push_back(frame({{"type", "join"}, {"room", room}, {"ref", ref}}));
          return effects;
        }
        joined_.erase(room);
        views_.erase(room);
        if (current_room_ == room) current_room_ = joined_.empty() ? std::string() : *joined_.begin();
      } else if (starts_with(ref, recent_ref_prefix)) {
        // A server without `history`: the live messages go on all the same.
        release_held(ref.substr(recent_ref_prefix.size()), effects);
      } else if (starts_with(ref, page_ref_prefix)) {
      } else {
        pending_.erase(ref);
        unacked_.erase(ref);
      }
    }
    effects.notices.push_back("! error " + printable(code) + ": " + printable(message));
  }
  // Unknown types come from a newer server; ignoring them keeps old clients working.
  return effects;
}

void ChatCore::on_message(const json::object& object, Effects& effects) {
  const std::string room = string_field(object, "room");
  const std::int64_t seq = int_field(object, "seq");
  auto line = format_message(room, string_field(object, "from"), string_field(object, "body"),
                             int_field(object, "ts"), options_.utc_clock);
  auto found = views_.find(room);
  if (found == views_.end()) {
    effects.messages.push_back(std::move(line));
    return;
  }
  RoomView& view = found->second;
  if (view.recent_upto >= 0) {
    view.held.emplace_back(seq, std::move(line));
    return;
  }
  // A resumed stream never repeats a seq; this guards the screen anyway.
  if (view.known && seq <= view.last_seq) return;
  view.last_seq = seq;
  effects.messages.push_back(std::move(line));
}

void ChatCore::on_joined(const json::object& object, Effects& effects) {
  const std::string room = string_field(object, "room");
  const std::int64_t seq = int_field(object, "seq");
  joined_.insert(room);
  RoomView& view = views_[room];
  const json::value* recovered = object.if_contains("recovered");
  if (recovered != nullptr && recovered->is_bool()) {
    const std::int64_t since = view.since >= 0 ? view.since : view.last_seq;
    view.since = -1;
    view.known = true;
    if (recovered->get_bool()) {
      view.last_seq = since;
      effects.notices.push_back("* rejoined #" + printable(room) + "; catching up from seq " +
                                std::to_string(since));
    } else {
      // Nothing old is streamed: the stream goes on after `seq`.
      view.last_seq = seq;
      view.oldest_shown = seq + 1;
      effects.notices.push_back("! #" + printable(room) + ": " + std::to_string(seq - since) +
                                " messages missed while disconnected; /history to page back");
    }
    return;
  }
  effects.notices.push_back("* joined #" + printable(room) + " (last seq " + std::to_string(seq) + ")");
  if (view.known) return;  // a repeated join: the stream goes on
  view.known = true;
  view.last_seq = seq;
  view.oldest_shown = seq + 1;
  if (seq == 0) return;
  // The room's latest messages first; live ones wait until they are shown.
  view.recent_upto = seq;
  effects.frames.push_back(frame({{"type", "history"},
                                  {"room", room},
                                  {"limit", kRecentLimit},
                                  {"ref", std::string(recent_ref_prefix) + room}}));
}

void ChatCore::on_history(const json::object& object, Effects& effects) {
  const std::string ref = string_field(object, "ref");
  const bool recent = starts_with(ref, recent_ref_prefix);
  const bool page = starts_with(ref, page_ref_prefix);
  if (!recent && !page) return;
  const std::string room = ref.substr(recent ? recent_ref_prefix.size() : page_ref_prefix.size());
  auto found = views_.find(room);
  if (found == views_.end()) return;
  RoomView& view = found->second;
  std::vector<std::string> lines;
  std::int64_t oldest = 0;
  if (const json::value* messages = object.if_contains("messages"); messages && messages->is_array()) {
    for (const auto& item : messages->get_array()) {
      if (!item.is_object()) continue;
      const auto& message = item.get_object();
      const std::int64_t seq = int_field(message, "seq");
      // Newer ones come live (held meanwhile).
      if (recent && seq > view.recent_upto) continue;
      if (oldest == 0) oldest = seq;
      lines.push_back(format_message(room, string_field(message, "from"), string_field(message, "body"),
                                     int_field(message, "ts"), options_.utc_clock));
    }
  }
  if (page && lines.empty()) effects.notices.push_back("* #" + printable(room) + ": no older messages");
  if (oldest > 0) view.oldest_shown = oldest;
  for (auto& line : lines) effects.messages.push_back(std::move(line));
  if (recent) release_held(room, effects);
}

void ChatCore::release_held(const std::string& room, Effects& effects) {
  auto found = views_.find(room);
  if (found == views_.end() || found->second.recent_upto < 0) return;
  RoomView& view = found->second;
  view.recent_upto = -1;
  for (auto& [seq, line] : std::exchange(view.held, {})) {
    if (seq <= view.last_seq) continue;
    view.last_seq = seq;
    effects.messages.push_back(std::move(line));
  }
}

void ChatCore::request_history_page(Effects& effects) {
  if (current_room_.empty()) {
    effects.notices.push_back("! not in any room; /join a room first");
    return;
  }
  RoomView& view = views_[current_room_];
  const std::int64_t before = view.oldest_shown > 0 ? view.oldest_shown : view.last_seq + 1;
  if (before <= 1) {
    effects.notices.push_back("* #" + printable(current_room_) + ": no older messages");
    return;
  }
  effects.frames.push_back(frame({{"type", "history"},
                                  {"room", current_room_},
                                  {"before_seq", before},
                                  {"limit", kRecentLimit},
                                  {"ref", std::string(page_ref_prefix) + current_room_}}));
}

Effects ChatCore::on_disconnected() {
  Effects effects;
  user_.clear();
  heartbeat_s_ = 0;
  resuming_ = true;
  // Whatever was held for a recent-history answer that will not come is shown.
  for (auto& [room, view] : views_) {
    release_held(room, effects);
    view.since = -1;
  }
  // Unanswered queries will not be answered on the new connection.
  who_queries_.clear();
  status_queries_.clear();
  return effects;
}

void ChatCore::resume(Effects& effects) {
  for (const auto& room : joined_) {
    auto found = views_.find(room);
    json::object join{{"type", "join"}, {"room", room}, {"ref", std::string(join_ref_prefix) + room}};
    if (found != views_.end() && found->second.known) {
      join["since"] = found->second.last_seq;
      found->second.since = found->second.last_seq;
    }
    effects.frames.push_back(frame(join));
  }
  // The same ids: a send that did reach the server before the drop is
  // answered as a repeat (ack), never delivered twice.
  for (const auto& [id, send] : unacked_)
    effects.frames.push_back(
        frame({{"type", "send"}, {"room", send.room}, {"id", id}, {"body", send.body}, {"ref", id}}));
  if (!joined_.empty() || !unacked_.empty())
    effects.notices.push_back("* reconnected; resuming " + std::to_string(joined_.size()) + " room(s)");
}

std::int64_t ChatCore::last_seq(const std::string& room) const {
  auto found = views_.find(room);
  return found == views_.end() ? 0 : found->second.last_seq;
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
