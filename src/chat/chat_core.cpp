#include "chat/chat_core.hpp"

#include <boost/json.hpp>
#include <ctime>
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
  return code == "unauthorized" || code == "frame_too_large" || code == "slow_consumer";
}

constexpr std::string_view join_ref_prefix = "join:";

}  // namespace

ChatCore::ChatCore(ChatCoreOptions options) : options_(std::move(options)) {}

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
  } else {
    effects.notices.push_back("! unknown command " + printable(command) + " (try /help)");
  }
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
    if (!ref.empty()) {
      if (ref.rfind(join_ref_prefix, 0) == 0) {
        std::string room = ref.substr(join_ref_prefix.size());
        joined_.erase(room);
        if (current_room_ == room) current_room_ = joined_.empty() ? std::string() : *joined_.begin();
      } else {
        pending_.erase(ref);
      }
    }
    effects.notices.push_back("! error " + printable(code) + ": " +
                              printable(string_field(object, "message")));
    if (is_fatal_code(code)) effects.closing = true;
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
  std::time_t seconds = static_cast<std::time_t>(ts_ms / 1000);
  std::tm parts{};
  if (utc_clock) {
    gmtime_r(&seconds, &parts);
  } else {
    localtime_r(&seconds, &parts);
  }
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &parts);
  std::string line;
  line.reserve(body.size() + room.size() + from.size() + 16);
  line += '[';
  line += clock;
  line += "] #";
  line += printable(room);
  line += " <";
  line += printable(from);
  line += "> ";
  line += printable(body);
  return line;
}

}  // namespace rtmc::chat
