#include "common/logging.hpp"

#include <gtest/gtest.h>
#include <spdlog/details/log_msg.h>

#include <boost/json/parse.hpp>
#include <chrono>
#include <string>

namespace rtmc {
namespace {

std::string format(const std::string& message, spdlog::level::level_enum level,
                   std::chrono::system_clock::time_point time) {
  spdlog::details::log_msg msg(spdlog::source_loc{}, "", level, message);
  msg.time = time;
  spdlog::memory_buf_t out;
  JsonFormatter("gateway").format(msg, out);
  return std::string(out.data(), out.size());
}

std::chrono::system_clock::time_point at(std::int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

TEST(JsonLog, OneObjectPerLineWithTheFourFields) {
  // 2026-12-02T03:04:05.678Z
  const auto line = format("hello", spdlog::level::info, at(1796180645678));
  EXPECT_EQ(line, R"({"ts":"2026-12-02T03:04:05.678Z","level":"info","logger":"gateway","msg":"hello"})"
                  "\n");
}

TEST(JsonLog, MillisecondsArePaddedAndLevelsNamed) {
  EXPECT_NE(format("x", spdlog::level::err, at(1796180645007)).find(R"("ts":"2026-12-02T03:04:05.007Z")"),
            std::string::npos);
  EXPECT_NE(format("x", spdlog::level::err, at(0)).find(R"("level":"error")"), std::string::npos);
  EXPECT_NE(format("x", spdlog::level::warn, at(0)).find(R"("level":"warning")"), std::string::npos);
}

TEST(JsonLog, QuotesNewlinesAndControlCharactersAreEscaped) {
  const std::string nasty = std::string("a \"quoted\" \\ path\nsecond line\r\t\b\f") + '\x01' + '\x1f' +
                            '\x7f' + std::string(1, '\0') + "end";
  const auto line = format(nasty, spdlog::level::info, at(0));
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line only";
  for (char c : line.substr(0, line.size() - 1))
    EXPECT_GE(static_cast<unsigned char>(c), 0x20) << "raw control character in " << line;
  const auto parsed = boost::json::parse(line);
  EXPECT_EQ(parsed.at("msg").as_string(), nasty);
  EXPECT_NE(line.find(R"(\u0001\u001f\u007f\u0000end)"), std::string::npos) << line;
}

TEST(JsonLog, InvalidUtf8BecomesReplacementCharactersAndValidUtf8Stays) {
  const std::string text = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 bad:\xC3 \xFF \xED\xA0\x80 \xC0\xAF";
  const auto line = format(text, spdlog::level::info, at(0));
  boost::system::error_code ec;
  const auto parsed = boost::json::parse(line, ec);  // Boost.JSON rejects invalid UTF-8
  ASSERT_FALSE(ec) << line;
  EXPECT_EQ(std::string(parsed.at("msg").as_string()),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 bad:\xEF\xBF\xBD \xEF\xBF\xBD "
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(JsonLog, FormatNamesAreCheckedStrictly) {
  EXPECT_EQ(parse_log_format("text"), LogFormat::text);
  EXPECT_EQ(parse_log_format("json"), LogFormat::json);
  EXPECT_THROW(parse_log_format("JSON"), std::invalid_argument);
  EXPECT_THROW(parse_log_format(""), std::invalid_argument);
}

}  // namespace
}  // namespace rtmc
