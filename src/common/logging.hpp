#pragma once
// How a role's log lines look (--log-format): `text` (the default, for people)
// or `json`, one object per line for log collectors:
//   {"ts":"2026-12-02T03:04:05.678Z","level":"info","logger":"gateway","msg":"..."}
// `ts` is UTC with milliseconds; `msg` is escaped as JSON requires (quotes,
// backslashes, control characters as \uXXXX, the usual short escapes), so a
// message with a newline still takes one line. Bytes that are not valid UTF-8
// are replaced by U+FFFD: the line stays valid JSON whatever a peer sent us.
//
// Threading: setup_logging() once at start-up, before other threads log;
// JsonFormatter is used by spdlog under its sink's lock.

#include <spdlog/formatter.h>

#include <memory>
#include <string>
#include <string_view>

namespace rtmc {

enum class LogFormat { text, json };
// "text" or "json"; throws std::invalid_argument.
LogFormat parse_log_format(std::string_view text);

class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string logger) : logger_(std::move(logger)) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override;

 private:
  std::string logger_;
};

// Appends `text` to `out` as the contents of a JSON string (no quotes).
void append_json_escaped(std::string_view text, std::string& out);

// Level and format of every logger of the process; `role` names the logger
// (text: "[role]", json: "logger").
void setup_logging(const std::string& level, const std::string& role, LogFormat format = LogFormat::text);

}  // namespace rtmc
