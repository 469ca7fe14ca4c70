#pragma once
// Standard input for the chat client: the password prompt and a line reader
// that works for terminals, pipes and regular files alike (epoll refuses
// regular files, so this is a thread with poll() rather than an Asio
// descriptor).

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace rtmc::chat {

// On a terminal: prompts on stderr and reads without echo. Otherwise reads
// one line from stdin byte by byte, so nothing after it is consumed and the
// line reader sees the rest. nullopt at end of input.
std::optional<std::string> read_password(const std::string& prompt);

// Reads stdin lines on its own thread. `on_line` and `on_eof` run on that
// thread; the owner posts them to its executor. The destructor stops and
// joins the thread within one poll interval.
class StdinLineReader {
 public:
  StdinLineReader(std::function<void(std::string)> on_line, std::function<void()> on_eof);
  ~StdinLineReader();
  StdinLineReader(const StdinLineReader&) = delete;
  StdinLineReader& operator=(const StdinLineReader&) = delete;

 private:
  void run();

  std::function<void(std::string)> on_line_;
  std::function<void()> on_eof_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace rtmc::chat
