#include "common/logging.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <stdexcept>

namespace rtmc {

LogFormat parse_log_format(std::string_view text) {
  if (text == "text") return LogFormat::text;
  if (text == "json") return LogFormat::json;
  throw std::invalid_argument("--log-format must be text or json, not '" + std::string(text) + "'");
}

namespace {

// Length of the valid UTF-8 sequence starting at text[i], or 0 when invalid
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char first = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (first >= 0xC2 && first <= 0xDF) {
    length = 2;
  } else if (first >= 0xE0 && first <= 0xEF) {
    length = 3;
    if (first == 0xE0) low = 0xA0;
    if (first == 0xED) high = 0x9F;
  } else if (first >= 0xF0 && first <= 0xF4) {
    length = 4;
    if (first == 0xF0) low = 0x90;
    if (first == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return length;
}

}  // namespace

void append_json_escaped(std::string_view text, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (const auto length = utf8_sequence(text, i); length > 0) {
        out.append(text.substr(i, length));
        i += length;
      } else {
        out.append("\xEF\xBF\xBD");  // U+FFFD
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

void JsonFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  using namespace std::chrono;
  const auto since_epoch = msg.time.time_since_epoch();
  const auto seconds = duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis = duration_cast<milliseconds>(since_epoch - seconds).count();
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  std::tm utc{};
  gmtime_r(&t, &utc);
  char ts[32];
  const auto n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &utc);

  std::string line;
  line.reserve(msg.payload.size() + 96);
  line.append(R"({"ts":")");
  line.append(ts, n);
  line.push_back('.');
  line.push_back(static_cast<char>('0' + millis / 100));
  line.push_back(static_cast<char>('0' + millis / 10 % 10));
  line.push_back(static_cast<char>('0' + millis % 10));
  line.append(R"(Z","level":")");
  const auto level = spdlog::level::to_string_view(msg.level);
  line.append(level.data(), level.size());
  line.append(R"(","logger":")");
  append_json_escaped(logger_, line);
  line.append(R"(","msg":")");
  append_json_escaped(std::string_view(msg.payload.data(), msg.payload.size()), line);
  line.append("\"}\n");
  dest.append(line.data(), line.data() + line.size());
}

std::unique_ptr<spdlog::formatter> JsonFormatter::clone() const {
  return std::make_unique<JsonFormatter>(logger_);
}

void setup_logging(const std::string& level, const std::string& role, LogFormat format) {
  spdlog::set_level(spdlog::level::from_str(level));
  if (format == LogFormat::json)
    spdlog::set_formatter(std::make_unique<JsonFormatter>(role));
  else
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e [" + role + "] %^%l%$ %v");
}

}  // namespace rtmc
