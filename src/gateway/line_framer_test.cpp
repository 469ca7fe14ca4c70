#include "gateway/line_framer.hpp"

#include <gtest/gtest.h>

namespace rtmc::gateway {
namespace {

TEST(LineFramer, SplitsLinesAcrossReads) {
  LineFramer framer;
  std::vector<std::string> lines;
  for (std::string_view chunk : {"ab", "c\nde", "f\n\ng", "h\n"}) {
    framer.append(chunk.data(), chunk.size());
    while (auto line = framer.next_line()) lines.emplace_back(*line);
    framer.compact();
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"abc", "def", "", "gh"}));
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(LineFramer, KeepsTheUnfinishedLine) {
  LineFramer framer;
  framer.append("x\nyz", 4);
  EXPECT_EQ(*framer.next_line(), "x");
  EXPECT_FALSE(framer.next_line());
  framer.compact();
  EXPECT_EQ(framer.buffered(), 2u);
}

// Defect: the newline search restarted at the start of the buffer on every
// read, so a 64 KiB line sent a byte at a time cost O(n^2) before auth.
TEST(LineFramer, ALineSentAByteAtATimeIsScannedOnce) {
  LineFramer framer;
  constexpr std::size_t kLength = 64 * 1024;
  for (std::size_t i = 0; i < kLength; ++i) {
    framer.append("x", 1);
    EXPECT_FALSE(framer.next_line());
    framer.compact();
  }
  framer.append("\n", 1);
  ASSERT_TRUE(framer.next_line());
  EXPECT_LE(framer.scanned_bytes(), kLength + 1) << "every byte is examined once";
}

}  // namespace
}  // namespace rtmc::gateway
