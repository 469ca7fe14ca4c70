#include "chat/terminal.hpp"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace rtmc::chat {

namespace {

// Restores the terminal's echo even when reading throws.
class EchoOff {
 public:
  explicit EchoOff(int fd) : fd_(fd) {
    if (tcgetattr(fd_, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    active_ = tcsetattr(fd_, TCSAFLUSH, &quiet) == 0;
  }
  ~EchoOff() {
    if (active_) tcsetattr(fd_, TCSAFLUSH, &saved_);
  }
  EchoOff(const EchoOff&) = delete;
  EchoOff& operator=(const EchoOff&) = delete;

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

std::optional<std::string> read_line_unbuffered(int fd) {
  std::string line;
  for (;;) {
    char byte = 0;
    ssize_t got = ::read(fd, &byte, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (line.empty()) return std::nullopt;
      break;
    }
    if (byte == '\n') break;
    line += byte;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace

std::optional<std::string> read_password(const std::string& prompt) {
  if (!isatty(STDIN_FILENO)) return read_line_unbuffered(STDIN_FILENO);
  std::fputs(prompt.c_str(), stderr);
  std::fflush(stderr);
  std::optional<std::string> password;
  {
    EchoOff echo_off(STDIN_FILENO);
    password = read_line_unbuffered(STDIN_FILENO);
  }
  std::fputs("\n", stderr);
  return password;
}

StdinLineReader::StdinLineReader(std::function<void(std::string)> on_line, std::function<void()> on_eof)
    : on_line_(std::move(on_line)), on_eof_(std::move(on_eof)), thread_([this] { run(); }) {}

StdinLineReader::~StdinLineReader() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void StdinLineReader::run() {
  std::string pending;
  char chunk[4096];
  while (!stop_) {
    pollfd wanted{STDIN_FILENO, POLLIN, 0};
    int ready = ::poll(&wanted, 1, 200);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    ssize_t got = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) break;
    pending.append(chunk, static_cast<std::size_t>(got));
    std::size_t start = 0;
    for (auto newline = pending.find('\n'); newline != std::string::npos;
         newline = pending.find('\n', start)) {
      on_line_(pending.substr(start, newline - start));
      start = newline + 1;
    }
    pending.erase(0, start);
  }
  if (stop_) return;
  // A last line without '\n' still counts.
  if (!pending.empty()) on_line_(std::move(pending));
  on_eof_();
}

}  // namespace rtmc::chat
