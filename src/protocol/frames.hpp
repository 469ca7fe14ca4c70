#pragma once
// The gateway's wire protocol (docs/protocol.md): one JSON object per line.
// Parsing and serialization only, no I/O, so every rule is unit-testable.

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rtmc::protocol {

enum class ErrorCode {
  bad_json,
  bad_frame,
  unknown_type,
  frame_too_large,
  unauthorized,
  not_joined,
  bad_room,
  bad_id,
  body_too_large,
  slow_consumer,
  unavailable,  // RabbitMQ could not take a send; the client may retry it
  internal,
  too_many_rooms,   // the connection is in as many rooms as it may be
  forbidden,        // RoomAccess refused the room to this user
  rate_limited,     // the user sends faster than allowed; retry later
  server_full,      // the gateway holds as many connections as it may (fatal)
  server_shutdown,  // the gateway is stopping; reconnect elsewhere (fatal)
  not_found,        // no such user (status); not fatal
};
const char* to_string(ErrorCode code);
// Fatal errors close the connection after the error frame.
bool is_fatal(ErrorCode code);

struct AuthRequest {
  std::string token;
};
// After auth: move the connection to another token of the same user (one
// from POST /refresh), so it outlives the token it authenticated with.
struct RefreshRequest {
  std::string token;
};
struct JoinRequest {
  std::string room;
  // Resume after this seq (`since`): the messages above it are replayed
  // after `joined`. Parsed as a non-negative integer; whether it is above the
  // room's seq is the connection's to check.
  std::optional<std::int64_t> since;
};
struct LeaveRequest {
  std::string room;
};
struct SendRequest {
  std::string room;
  std::string id;  // the client's, or a fresh one when absent
  std::string body;
};
struct PingRequest {};
// Any string: a name that breaks the name rules is an unknown user
// (`not_found`), answered by the connection, not refused here.
struct StatusRequest {
  std::string user;
};
struct MembersRequest {
  std::string room;
};
// A page of a room's stored messages (store/history.hpp). At most one of
// after_seq / before_seq (each >= 0); neither = the latest `limit`.
struct HistoryRequest {
  static constexpr std::int64_t kDefaultLimit = 50;
  static constexpr std::int64_t kMaxLimit = 100;
  std::string room;
  std::optional<std::int64_t> after_seq;
  std::optional<std::int64_t> before_seq;
  std::int64_t limit = kDefaultLimit;  // 1..kMaxLimit
};
using Request = std::variant<AuthRequest, JoinRequest, LeaveRequest, SendRequest, PingRequest, StatusRequest,
                             MembersRequest, HistoryRequest, RefreshRequest>;

// `ref` is kept as serialized JSON so it is echoed verbatim.
using Ref = std::optional<std::string>;

struct Frame {
  Request request;
  Ref ref;
};
struct FrameError {
  ErrorCode code;
  std::string message;
  Ref ref;
};

struct ParseLimits {
  std::size_t max_body_bytes = 4096;
  // A `ref` is echoed in every reply, so its serialized size is bounded too.
  std::size_t max_ref_bytes = 1024;
};

// `line` excludes the '\n'; a trailing '\r' is ignored. Blank lines must be
// skipped by the caller.
std::variant<Frame, FrameError> parse_client_frame(std::string_view line, const ParseLimits& limits);

// Server frames, each ending in '\n'.
std::string auth_ok_frame(std::string_view user, int heartbeat_s, const Ref& ref);
// The answer to `refresh`: the connection now runs on a token expiring at
// `expires_at_ms` (ms since the Unix epoch).
std::string refreshed_frame(std::string_view user, std::int64_t expires_at_ms, const Ref& ref);
std::string joined_frame(std::string_view room, std::int64_t seq, const Ref& ref);
// The answer to a join with `since`: `recovered` says whether the replay
// covers every seq in (since, seq].
std::string joined_frame(std::string_view room, std::int64_t seq, bool recovered, const Ref& ref);
// Seqs [from, to] of a room that this client is owed but that cannot be
// read any more (trimmed from the room log, or never written): non-fatal,
// delivery goes on after it.
std::string gap_frame(std::string_view room, std::int64_t from, std::int64_t to);
std::string left_frame(std::string_view room, const Ref& ref);
std::string ack_frame(std::string_view room, std::string_view id, const Ref& ref);
std::string pong_frame(const Ref& ref);
std::string error_frame(ErrorCode code, std::string_view message, const Ref& ref);
std::string message_frame(std::string_view room, std::int64_t seq, std::string_view id, std::string_view from,
                          std::string_view body, std::int64_t ts_ms);
// `user` is the registered spelling; `last_seen_ms` nullopt = never
// connected (JSON null).
std::string status_frame(std::string_view user, bool online, std::optional<std::int64_t> last_seen_ms,
                         const Ref& ref);
// `users` as given (the store sorts them).
std::string members_frame(std::string_view room, const std::vector<std::string>& users, const Ref& ref);
// The JSON array of stored message frames, each embedded as it is (its
// trailing '\n' dropped), never parsed or serialized again: "[f1,f2]".
std::string message_array(const std::vector<std::string_view>& frames);
// {"type":"history","room":R,"messages":[...]} with the frames as
// message_array embeds them, oldest first.
std::string history_frame(std::string_view room, const std::vector<std::string_view>& frames, const Ref& ref);
// A room presence event: `joined` true -> "join", false -> "leave". No seq:
// it is neither stored nor replayed.
std::string presence_frame(std::string_view room, std::string_view user, bool joined);

// A message frame split around its seq: prefix + to_string(seq) + suffix ==
// message_frame(...). The sequencing script, which alone knows the seq,
// joins the parts, so the frame is serialized once for everyone.
struct FrameTemplate {
  std::string prefix;
  std::string suffix;
};
FrameTemplate message_frame_template(std::string_view room, std::string_view id, std::string_view from,
                                     std::string_view body, std::int64_t ts_ms);

// What a publisher (api or gateway) puts on an ingest queue. `from` is the
// authenticated user, never a client's claim.
// `accepted_ms`: when the publisher accepted the message (Unix ms), for the
// end-to-end latency metric; 0 = unknown. Encoded as "accepted_at" only when
// set; a line without it (an older publisher) decodes with 0, and a decoder
// that does not know it ignores it.
struct IngestMessage {
  std::string room;
  std::string id;
  std::string from;
  std::string body;
  std::int64_t accepted_ms = 0;
};
std::string encode_ingest(const IngestMessage& message);
// nullopt for anything malformed (the sequencer drops it with a log line).
std::optional<IngestMessage> decode_ingest(std::string_view text, const ParseLimits& limits);

// The routing facts of a sequenced frame (as made by message_frame).
struct MessageHeader {
  std::string room;
  std::int64_t seq = 0;
};
std::optional<MessageHeader> peek_message(std::string_view frame);

// The routing facts of a presence frame (as made by presence_frame), for the
// fan-out thread: anything that does not start like a presence frame is
// rejected without parsing. A trailing '\n' is allowed.
struct PresenceHeader {
  std::string room;
  std::string user;
};
std::optional<PresenceHeader> peek_presence(std::string_view line);

// For clients (chat, bench, tests): a server line as a JSON object.
std::optional<boost::json::object> parse_server_frame(std::string_view line);

}  // namespace rtmc::protocol
