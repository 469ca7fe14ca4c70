// Unit tests of the batched ingest body (scale design, Contract A).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/frames.hpp"
#include "store/amqp.hpp"

namespace rtmc::amqp {
namespace {

using Lines = std::vector<std::string_view>;

TEST(AmqpBatch, IngestMessagesRoundTripThroughOneBody) {
  // Bodies with a newline and a backslash: JSON escapes them, so every
  // ingest message stays one line.
  const std::vector<protocol::IngestMessage> messages{
      {"r", "1", "alice", "first\nline"}, {"r", "2", "bob", "back\\slash"}, {"r", "3", "alice", "x"}};
  std::vector<std::string> encoded;
  for (const auto& message : messages) encoded.push_back(protocol::encode_ingest(message));
  const auto body = join_batch(Lines(encoded.begin(), encoded.end()));
  EXPECT_EQ(std::count(body.begin(), body.end(), '\n'), 2);

  const auto lines = split_batch(body);
  ASSERT_EQ(lines.size(), messages.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i], encoded[i]);
    const auto decoded = protocol::decode_ingest(lines[i], protocol::ParseLimits{});
    ASSERT_TRUE(decoded.has_value()) << i;
    EXPECT_EQ(decoded->id, messages[i].id);
    EXPECT_EQ(decoded->body, messages[i].body);
  }
}

TEST(AmqpBatch, ASingleBodyIsABatchOfOne) {
  EXPECT_EQ(join_batch({"{\"a\":1}"}), "{\"a\":1}");
  EXPECT_EQ(split_batch("{\"a\":1}"), Lines{"{\"a\":1}"});
}

TEST(AmqpBatch, EmptyLinesAndATrailingNewlineAreSkipped) {
  EXPECT_EQ(split_batch("a\n\nb\n"), (Lines{"a", "b"}));
  EXPECT_TRUE(split_batch("").empty());
  EXPECT_TRUE(split_batch("\n").empty());
  EXPECT_EQ(join_batch({}), "");
}

}  // namespace
}  // namespace rtmc::amqp
