#pragma once
// The chat client's logic, apart from sockets and terminals: it turns typed
// lines into gateway frames and server lines into text for a person.
// Recovery (issue 7): on joining a room that has messages it asks for the
// latest ones (`history`, limit 20) and holds live messages until they are
// shown, so the screen stays in seq order; after a dropped connection
// (on_disconnected, then auth_ok again) it rejoins every room with `since` =
// the last seq it showed, resends the sends not yet acknowledged (same id:
// the server's dedupe delivers each once) and says what could not be
// recovered (`recovered: false`, `gap`).
// Not thread-safe; the owner calls it from one thread (the client's io_context).

#include <boost/json/fwd.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace rtmc::chat {

struct ChatCoreOptions {
  std::string initial_room = "lobby";
  // Prefix of the message ids this session makes ("<prefix>-<n>"); random per
  // session so a restarted client never repeats an id the server dedupes.
  std::string id_prefix;
  // Tests use UTC so the formatted clock does not depend on the machine's zone.
  bool utc_clock = false;
  // Milliseconds since the Unix epoch, for the clock on presence lines and for
  // "today or not" in status times; tests pin it. Empty means the system clock.
  std::function<std::int64_t()> clock{};
};

// What the caller must do after feeding the core one event.
struct Effects {
  std::vector<std::string> frames;    // to the gateway, each ending in '\n'
  std::vector<std::string> messages;  // chat lines for stdout
  std::vector<std::string> notices;   // status and errors for stderr
  bool quit = false;                  // the user asked to leave
  bool closing = false;               // the server sent a fatal error; it will close
  bool refused = false;               // ... `unauthorized`: the token is no good, do not reconnect
};

class ChatCore {
 public:
  explicit ChatCore(ChatCoreOptions options);

  std::string auth_frame(std::string_view token) const;
  static std::string ping_frame();

  // One line typed by the user (without '\n').
  Effects on_input(std::string_view line);
  // One line from the gateway (without '\n').
  Effects on_server_line(std::string_view line);
  // The connection to the gateway is gone; a new one authenticates with
  // auth_frame() again, and its auth_ok resumes every room.
  Effects on_disconnected();
  // The last seq shown (or skipped past) in `room`; 0 when none.
  std::int64_t last_seq(const std::string& room) const;

  bool authenticated() const { return !user_.empty(); }
  const std::string& user() const { return user_; }
  int heartbeat_s() const { return heartbeat_s_; }
  // How often to send a ping: half the heartbeat of auth_ok, so a ping that is
  // late by a whole period still arrives long before the gateway's idle cut
  // (2.5 x heartbeat). Zero (no heartbeat announced): do not ping.
  std::chrono::milliseconds ping_interval() const;
  const std::string& current_room() const { return current_room_; }
  const std::set<std::string>& joined_rooms() const { return joined_; }
  // Sends that have been written but got neither an ack nor an error yet.
  std::size_t pending_acks() const { return pending_.size(); }
  // /who and /status requests still waiting for (some of) their answers.
  std::size_t pending_queries() const { return who_queries_.size() + status_queries_.size(); }

  static std::string help_text();

 private:
  void request_join(std::string_view room, Effects& effects);
  void handle_command(std::string_view command, std::string_view argument, Effects& effects);
  void send_body(std::string_view body, Effects& effects);
  void on_message(const boost::json::object& object, Effects& effects);
  void on_joined(const boost::json::object& object, Effects& effects);
  void on_history(const boost::json::object& object, Effects& effects);
  void request_history_page(Effects& effects);
  // After a reconnect's auth_ok: every room again, with `since`, then the
  // unacknowledged sends.
  void resume(Effects& effects);
  // Shows the live messages held while a room's recent history was asked.
  void release_held(const std::string& room, Effects& effects);
  void request_who(std::string_view argument, Effects& effects);
  void request_status(std::string_view argument, Effects& effects);
  void on_members(const std::string& ref, const boost::json::object& object, Effects& effects);
  void on_status(const std::string& ref, const boost::json::object& object, Effects& effects);
  // True if `ref` belonged to a /who or /status request (the error is then shown here).
  bool on_query_error(const std::string& ref, std::string_view code, std::string_view message,
                      Effects& effects);
  void answer_who_member(std::uint64_t query, std::size_t index, std::string state, Effects& effects);
  std::int64_t now() const;

  // One /who: the members answer, then one status request per member, whose
  // answers may come in any order; printed once the last one is in.
  struct WhoQuery {
    std::string room;
    std::vector<std::string> users{};
    std::vector<std::string> states{};  // per user; empty until answered
    std::size_t awaiting = 0;
  };

  // What the client knows of a room's stream.
  struct RoomView {
    std::int64_t last_seq = 0;      // the last seq shown or accounted for
    bool known = false;             // a `joined` arrived: last_seq is a resume point
    std::int64_t since = -1;        // the `since` of a resuming join in flight
    std::int64_t recent_upto = -1;  // >= 0: recent history asked, shown up to it
    std::vector<std::pair<std::int64_t, std::string>> held{};  // live lines meanwhile
    std::int64_t oldest_shown = 0;  // /history pages back from here (0: last_seq + 1)
  };
  // A send not acknowledged yet: resent after a reconnect.
  struct PendingSend {
    std::string room;
    std::string body;
  };

  ChatCoreOptions options_;
  std::map<std::string, RoomView> views_;
  bool resuming_ = false;                       // on_disconnected() ran: auth_ok resumes the rooms
  std::map<std::string, PendingSend> unacked_;  // by id
  std::string user_;
  int heartbeat_s_ = 0;
  std::string current_room_;
  std::set<std::string> joined_;
  std::set<std::string> pending_;
  std::uint64_t next_id_ = 1;
  // Keyed by the query number carried in `ref` ("who:<n>", "who:<n>:<i>", "status:<n>").
  std::map<std::uint64_t, WhoQuery> who_queries_;
  std::map<std::uint64_t, std::string> status_queries_;  // -> the name as typed
  std::uint64_t next_query_ = 1;
};

// "[HH:MM:SS] #room <from> body", with control characters in `from` and
// `body` replaced so a peer cannot drive the reader's terminal.
std::string format_message(std::string_view room, std::string_view from, std::string_view body,
                           std::int64_t ts_ms, bool utc_clock);

// "HH:MM" when `ts_ms` falls on the same calendar day as `now_ms`, else
// "YYYY-MM-DD HH:MM" (local time, or UTC with `utc_clock`).
std::string format_when(std::int64_t ts_ms, std::int64_t now_ms, bool utc_clock);

// Replaces C0/C1 control characters (and DEL) with '?', keeping other UTF-8.
std::string printable(std::string_view text);

}  // namespace rtmc::chat
