#pragma once
// Splits inbound bytes into '\n'-terminated lines. The newline search resumes
// where the previous one stopped, so a line arriving a byte at a time costs
// O(length), not O(length^2) (a 64 KiB line before auth would otherwise cost
// two billion byte comparisons). Plain logic, one owner.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace rtmc::gateway {

class LineFramer {
 public:
  void append(const char* data, std::size_t size) { buffer_.append(data, size); }

  // The next complete line without its '\n'; valid until the next append()
  // or compact().
  std::optional<std::string_view> next_line() {
    const std::size_t from = scan_ > start_ ? scan_ : start_;
    const auto newline = buffer_.find('\n', from);
    scanned_bytes_ += (newline == std::string::npos ? buffer_.size() : newline + 1) - from;
    if (newline == std::string::npos) {
      scan_ = buffer_.size();
      return std::nullopt;
    }
    std::string_view line(buffer_.data() + start_, newline - start_);
    start_ = newline + 1;
    scan_ = start_;
    return line;
  }

  // Drops the lines handed out; an idle connection then holds no buffer.
  void compact() {
    if (start_ == buffer_.size()) {
      std::string().swap(buffer_);
    } else {
      buffer_.erase(0, start_);
    }
    scan_ -= start_;
    start_ = 0;
  }

  // Bytes of the unfinished line (after compact()).
  std::size_t buffered() const { return buffer_.size() - start_; }
  // Bytes examined by newline searches so far.
  std::size_t scanned_bytes() const { return scanned_bytes_; }

 private:
  std::string buffer_;
  std::size_t start_ = 0;  // first byte not handed out
  std::size_t scan_ = 0;   // bytes before this hold no '\n'
  std::size_t scanned_bytes_ = 0;
};

}  // namespace rtmc::gateway
