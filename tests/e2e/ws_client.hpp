#pragma once
// A blocking WebSocket client for the gateway's /ws (docs/protocol.md,
// "WebSocket"), the counterpart of LineClient: one protocol frame per text
// message. Beast underneath, on an io thread of its own that reads all the
// time (so pings, close frames and the server's messages are taken in
// order, and a test can wait with a deadline); writes are handed to that
// thread and waited for. pause_reading() stops taking bytes from the
// socket, to make a slow consumer.
//
// Failures throw std::runtime_error naming the client (GoogleTest reports
// them); every wait has a deadline.
//
// Threading: one test thread calls the client; its io thread is internal.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support.hpp"

namespace rtmc::e2e {

class WsClient {
 public:
  struct Options {
    std::optional<std::string> origin;  // the Origin header; none when empty
    int receive_buffer = 0;             // SO_RCVBUF before connecting (a slow reader)
    std::string label = "ws";
  };

  // Connects to ws://127.0.0.1:http_port/ws; throws when the upgrade fails.
  explicit WsClient(std::uint16_t http_port, Options options);
  explicit WsClient(std::uint16_t http_port) : WsClient(http_port, Options{}) {}
  ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // An upgrade attempt alone: the HTTP answer (101 when it was upgraded; the
  // connection is then dropped).
  static HttpResponse try_upgrade(std::uint16_t http_port, const std::optional<std::string>& origin);

  const std::string& label() const { return label_; }

  // Each waits until the message left (10 s). Throws if the connection is gone.
  void send_text(std::string text);
  void send_binary(std::string bytes);
  void send_json(const boost::json::object& frame);
  // A ping control frame; the pongs that came back are in pongs().
  void send_ping(std::string payload);
  std::vector<std::string> pongs() const;
  // Sends a close frame (1000) and waits for the server's answer.
  void close();

  void pause_reading();
  void resume_reading();

  // The next text message as a frame (a binary message or one that is not
  // a JSON object is a failure); `line` holds its exact text.
  ReadResult read(Millis timeout);
  boost::json::object next(Millis timeout = 10s);
  void expect_silence(Millis quiet);
  struct Closed {
    std::vector<boost::json::object> frames;  // read before the close
    int code = 0;                             // the close frame's status code
    std::string reason;                       // and its reason text
    // When the client's reader took the close frame (it reads all the time,
    // so this is when it arrived, not when the test looked).
    std::chrono::steady_clock::time_point at;
  };
  // Reads until the server's close frame; throws if there is none within
  // `timeout` (an open connection, or one cut without a close frame).
  Closed expect_closed(Millis timeout);

  // As LineClient's.
  void auth(const std::string& token, const std::string& expected_user);
  std::int64_t join(const std::string& room);
  void ping(const boost::json::value& ref);
  void keep_presence(bool keep) { keep_presence_ = keep; }

 private:
  struct Impl;
  struct Message {
    bool text = true;
    std::string data;
  };
  enum class Out { text, binary, ping, close };
  void write(Out kind, std::string data);

  std::string label_;
  bool keep_presence_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rtmc::e2e
