#include "wire.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace rtmc::bench {

namespace json = boost::json;

namespace {

template <typename Int>
void append_number(std::string& out, Int value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, end);
}

template <typename Int>
bool read_number(std::string_view text, Int& value) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && end == text.data() + text.size();
}

// Reads an unsigned decimal at the start of `text`, after optional spaces.
bool leading_number(std::string_view text, std::int64_t& value) {
  std::size_t start = text.find_first_not_of(' ');
  if (start == std::string_view::npos) return false;
  auto [end, ec] = std::from_chars(text.data() + start, text.data() + text.size(), value);
  return ec == std::errc();
}

}  // namespace

void append_body(std::string& out, const BodyStamp& stamp, std::size_t body_bytes) {
  std::size_t start = out.size();
  append_number(out, stamp.publisher);
  out += ':';
  append_number(out, stamp.counter);
  out += ':';
  append_number(out, stamp.send_ns);
  out += ':';
  std::size_t used = out.size() - start;
  if (used < body_bytes) out.append(body_bytes - used, 'x');
}

std::optional<BodyStamp> parse_body(std::string_view body) {
  BodyStamp stamp;
  std::size_t first = body.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  std::size_t second = body.find(':', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  std::size_t third = body.find(':', second + 1);
  if (third == std::string_view::npos) return std::nullopt;
  if (!read_number(body.substr(0, first), stamp.publisher) ||
      !read_number(body.substr(first + 1, second - first - 1), stamp.counter) ||
      !read_number(body.substr(second + 1, third - second - 1), stamp.send_ns))
    return std::nullopt;
  return stamp;
}

void append_send_frame(std::string& out, std::string_view room, std::string_view run_tag,
                       const BodyStamp& stamp, std::size_t body_bytes) {
  // Every piece is from [A-Za-z0-9_.:-], so no JSON escaping is needed.
  out += R"({"type":"send","room":")";
  out += room;
  out += R"(","id":")";
  out += run_tag;
  out += '-';
  append_number(out, stamp.publisher);
  out += '-';
  append_number(out, stamp.counter);
  out += R"(","body":")";
  append_body(out, stamp, body_bytes);
  out += "\"}\n";
}

std::string auth_frame(std::string_view token) {
  return json::serialize(json::object{{"type", "auth"}, {"token", token}}) + "\n";
}

std::string join_frame(std::string_view room) {
  return json::serialize(json::object{{"type", "join"}, {"room", room}}) + "\n";
}

std::string ping_frame() {
  return "{\"type\":\"ping\"}\n";
}

namespace {

std::string string_field(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->get_string()) : std::string();
}

std::int64_t int_field(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr) return 0;
  if (value->is_int64()) return value->get_int64();
  if (value->is_uint64()) return static_cast<std::int64_t>(value->get_uint64());
  return 0;
}

GatewayLine parse_gateway_line_slowly(std::string_view line) {
  GatewayLine parsed;
  boost::system::error_code ec;
  json::value value = json::parse(line, ec);
  if (ec || !value.is_object()) return parsed;
  const json::object& object = value.get_object();
  std::string type = string_field(object, "type");
  using Kind = GatewayLine::Kind;
  if (type == "message") {
    parsed.kind = Kind::message;
    parsed.seq = int_field(object, "seq");
    parsed.stamp = parse_body(string_field(object, "body"));
  } else if (type == "ack") {
    parsed.kind = Kind::ack;
  } else if (type == "auth_ok") {
    parsed.kind = Kind::auth_ok;
    parsed.heartbeat_s = static_cast<int>(int_field(object, "heartbeat_s"));
  } else if (type == "joined") {
    parsed.kind = Kind::joined;
    parsed.seq = int_field(object, "seq");
  } else if (type == "pong") {
    parsed.kind = Kind::pong;
  } else if (type == "error") {
    parsed.kind = Kind::error;
    parsed.code = string_field(object, "code");
    parsed.message = string_field(object, "message");
  } else if (type == "presence") {
    parsed.kind = Kind::presence;
    parsed.event = string_field(object, "event");
  } else {
    parsed.kind = Kind::other;
  }
  return parsed;
}

}  // namespace

// glibc's memmem (two-way search) is several times faster than
// string_view::find on JSON, where the needle's first byte '"' is everywhere.
std::size_t find_in(std::string_view haystack, std::string_view needle, std::size_t from = 0) {
  if (from > haystack.size()) return std::string_view::npos;
  const void* hit = memmem(haystack.data() + from, haystack.size() - from, needle.data(), needle.size());
  return hit == nullptr ? std::string_view::npos
                        : static_cast<std::size_t>(static_cast<const char*>(hit) - haystack.data());
}

namespace {

// The message frame exactly as the gateway writes it (protocol/frames.cpp:
// type, room, seq, id, from, body, ts, compact), walked field by field with
// memchr only. A profile of the bench at ~0.8M deliveries/s had a third of
// its CPU in parse_gateway_line, half of it in memmem; anything else (other
// order, spacing, an escaped quote) returns nullopt and takes the searches below.
std::optional<GatewayLine> parse_server_message(std::string_view line) {
  constexpr std::string_view head = R"({"type":"message","room":")";
  if (!line.starts_with(head)) return std::nullopt;
  std::size_t at = head.size();
  // Moves past the string that starts at `at` (its opening quote already
  // consumed); false when it has a backslash or does not end.
  auto skip_string = [&](std::string_view* value) {
    const void* quote = std::memchr(line.data() + at, '"', line.size() - at);
    if (quote == nullptr) return false;
    const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(quote) - line.data());
    if (std::memchr(line.data() + at, '\\', end - at) != nullptr) return false;
    if (value != nullptr) *value = line.substr(at, end - at);
    at = end + 1;
    return true;
  };
  auto expect = [&](std::string_view text) {
    if (line.substr(at, text.size()) != text) return false;
    at += text.size();
    return true;
  };
  GatewayLine parsed;
  if (!skip_string(nullptr) || !expect(R"(,"seq":)")) return std::nullopt;
  auto [seq_end, ec] = std::from_chars(line.data() + at, line.data() + line.size(), parsed.seq);
  if (ec != std::errc()) return std::nullopt;
  at = static_cast<std::size_t>(seq_end - line.data());
  std::string_view body;
  if (!expect(R"(,"id":")") || !skip_string(nullptr) || !expect(R"(,"from":")") || !skip_string(nullptr) ||
      !expect(R"(,"body":")") || !skip_string(&body))
    return std::nullopt;
  parsed.kind = GatewayLine::Kind::message;
  parsed.stamp = parse_body(body);
  return parsed;
}

}  // namespace

// In valid JSON, the first unescaped occurrence of `"key":` outside nested
// objects is the key itself (a quote inside a string is always escaped), and
// server frames are flat, so plain searches are exact here.
//
// Each search starts where the previous key ended (the server's order); a
// frame in another order misses this path and gets the full parse.
GatewayLine parse_gateway_line(std::string_view line) {
  if (auto message = parse_server_message(line)) return std::move(*message);
  constexpr std::string_view type_key = R"("type":")";
  const std::size_t type_at =
      line.starts_with('{') && line.substr(1).starts_with(type_key) ? 1 : find_in(line, type_key);
  if (type_at != std::string_view::npos) {
    std::string_view type = line.substr(type_at + type_key.size());
    type = type.substr(0, type.find('"'));
    const std::size_t type_end = type_at + type_key.size() + type.size();
    if (type == "ack") {
      GatewayLine parsed;
      parsed.kind = GatewayLine::Kind::ack;
      return parsed;
    }
    if (type == "presence") {
      // A join storm delivers ~N^2/2 of these.
      constexpr std::string_view event_key = R"("event":")";
      std::size_t event_at = find_in(line, event_key, type_end);
      if (event_at != std::string_view::npos) {
        std::string_view event = line.substr(event_at + event_key.size());
        std::size_t quote = event.find('"');
        if (quote != std::string_view::npos && event.substr(0, quote).find('\\') == std::string_view::npos) {
          GatewayLine parsed;
          parsed.kind = GatewayLine::Kind::presence;
          parsed.event = std::string(event.substr(0, quote));
          return parsed;
        }
      }
    }
    if (type == "message") {
      constexpr std::string_view seq_key = R"("seq":)";
      constexpr std::string_view body_key = R"("body":")";
      const std::size_t seq_at = find_in(line, seq_key, type_end);
      const std::size_t body_at = seq_at == std::string_view::npos
                                      ? std::string_view::npos
                                      : find_in(line, body_key, seq_at + seq_key.size());
      GatewayLine parsed;
      if (seq_at != std::string_view::npos && body_at != std::string_view::npos &&
          leading_number(line.substr(seq_at + seq_key.size()), parsed.seq)) {
        std::string_view body = line.substr(body_at + body_key.size());
        std::size_t quote = body.find('"');
        if (quote != std::string_view::npos && body.substr(0, quote).find('\\') == std::string_view::npos) {
          parsed.kind = GatewayLine::Kind::message;
          parsed.stamp = parse_body(body.substr(0, quote));
          return parsed;
        }
      }
    }
  }
  return parse_gateway_line_slowly(line);
}

void append_publish_command(std::string& out, std::string_view channel, const BodyStamp& stamp,
                            std::size_t body_bytes) {
  out += "*3\r\n$7\r\nPUBLISH\r\n$";
  append_number(out, channel.size());
  out += "\r\n";
  out += channel;
  std::string body;
  append_body(body, stamp, body_bytes);
  out += "\r\n$";
  append_number(out, body.size());
  out += "\r\n";
  out += body;
  out += "\r\n";
}

std::string subscribe_command(std::string_view channel) {
  std::string out = "*2\r\n$9\r\nSUBSCRIBE\r\n$";
  append_number(out, channel.size());
  out += "\r\n";
  out += channel;
  out += "\r\n";
  return out;
}

namespace {

constexpr std::size_t kIncomplete = std::string_view::npos;

[[noreturn]] void malformed(const char* what) {
  throw std::runtime_error(std::string("malformed RESP: ") + what);
}

// Parses a scalar at `at`; returns the position after it or kIncomplete.
std::size_t parse_scalar(std::string_view input, std::size_t at, RespReply::Scalar& scalar) {
  if (at >= input.size()) return kIncomplete;
  std::size_t line_end = input.find("\r\n", at);
  if (line_end == std::string_view::npos) return kIncomplete;
  scalar.kind = input[at];
  std::string_view header = input.substr(at + 1, line_end - at - 1);
  switch (scalar.kind) {
    case '+':
    case '-': scalar.text = header; return line_end + 2;
    case ':':
      if (!read_number(header, scalar.integer)) malformed("bad integer");
      return line_end + 2;
    case '$': {
      if (!read_number(header, scalar.integer)) malformed("bad bulk length");
      if (scalar.integer == -1) {
        scalar.is_null = true;
        return line_end + 2;
      }
      if (scalar.integer < 0) malformed("negative bulk length");
      auto length = static_cast<std::size_t>(scalar.integer);
      std::size_t data_at = line_end + 2;
      if (input.size() < data_at + length + 2) return kIncomplete;
      if (input.substr(data_at + length, 2) != "\r\n") malformed("bulk string not terminated");
      scalar.text = input.substr(data_at, length);
      return data_at + length + 2;
    }
    case '*': malformed("nested array");
    default: malformed("unknown type byte");
  }
}

}  // namespace

std::size_t parse_resp(std::string_view input, RespReply& reply) {
  if (input.empty()) return 0;
  if (input[0] != '*') {
    std::size_t end = parse_scalar(input, 0, reply.head);
    return end == kIncomplete ? 0 : end;
  }
  std::size_t line_end = input.find("\r\n");
  if (line_end == std::string_view::npos) return 0;
  reply.head.kind = '*';
  reply.head.is_null = false;
  if (!read_number(input.substr(1, line_end - 1), reply.head.integer)) malformed("bad array length");
  if (reply.head.integer < 0) {
    reply.head.is_null = true;
    return line_end + 2;
  }
  if (reply.head.integer > static_cast<std::int64_t>(RespReply::kMaxItems)) malformed("array too long");
  std::size_t at = line_end + 2;
  for (std::int64_t i = 0; i < reply.head.integer; ++i) {
    at = parse_scalar(input, at, reply.items[static_cast<std::size_t>(i)]);
    if (at == kIncomplete) return 0;
  }
  return at;
}

}  // namespace rtmc::bench
