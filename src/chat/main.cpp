// rtmc-chat: a terminal chat client. Wiring only; the logic is in ChatCore.
//
// Threading: everything runs on one io_context thread, except the stdin
// reader thread, which only posts lines to it.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>

#include "chat/chat_core.hpp"
#include "chat/http_client.hpp"
#include "chat/terminal.hpp"
#include "common/config.hpp"
#include "common/names.hpp"

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
constexpr auto as_tuple_awaitable = asio::as_tuple(use_awaitable);

namespace rtmc::chat {
namespace {

struct ChatOptions {
  std::string api = "http://127.0.0.1:8080";
  std::string gateway = "127.0.0.1:7000";
  std::string user;
  std::string room = "lobby";
  bool register_first = false;
  double timeout_s = 10;
  double ack_grace_s = 5;
  double linger_s = 0;
};

void print_lines(std::FILE* stream, const std::vector<std::string>& lines) {
  for (const auto& line : lines) {
    std::fwrite(line.data(), 1, line.size(), stream);
    std::fputc('\n', stream);
  }
  if (!lines.empty()) std::fflush(stream);
}

void notice(const std::string& text) {
  print_lines(stderr, {text});
}

// One chat session: login, gateway connection, stdin. Owned by main; all
// members are touched only on the io_context thread.
class ChatApp {
 public:
  ChatApp(asio::io_context& io, ChatOptions options, std::string password)
      : io_(io),
        options_(std::move(options)),
        password_(std::move(password)),
        core_({.initial_room = options_.room, .id_prefix = make_message_id().substr(0, 12)}),
        socket_(io),
        write_wake_(io),
        done_(io),
        ping_timer_(io),
        deadline_(io),
        signals_(io, SIGINT, SIGTERM) {}

  ChatApp(const ChatApp&) = delete;
  ChatApp& operator=(const ChatApp&) = delete;

  // Returns the process exit code.
  awaitable<int> run() {
    auto timeout = std::chrono::milliseconds(static_cast<long>(options_.timeout_s * 1000));
    HttpUrl api = HttpUrl::parse(options_.api);
    HostPort gateway = HostPort::parse(options_.gateway);

    if (options_.register_first) {
      bool created = co_await register_user(api, options_.user, password_, timeout);
      notice(created ? "* registered " + options_.user
                     : "* " + options_.user + " already exists; logging in");
    }
    LoginResult session = co_await login(api, options_.user, password_, timeout);
    password_.assign(password_.size(), '\0');

    tcp::resolver resolver(io_);
    auto endpoints =
        co_await resolver.async_resolve(gateway.host, std::to_string(gateway.port), use_awaitable);
    arm_deadline("connecting to the gateway timed out");
    co_await asio::async_connect(socket_, endpoints, use_awaitable);
    socket_.set_option(tcp::no_delay(true));
    arm_deadline("the gateway did not answer auth in time");

    signals_.async_wait([this](boost::system::error_code ec, int) {
      if (!ec) finish(130);
    });
    token_ = std::move(session.token);
    connected_ = true;
    asio::co_spawn(io_, writer(), asio::detached);
    asio::co_spawn(io_, connection_loop(std::move(endpoints)), asio::detached);
    queue(core_.auth_frame(token_));

    done_.expires_at(asio::steady_timer::time_point::max());
    co_await done_.async_wait(as_tuple_awaitable);
    co_return exit_code_.value_or(0);
  }

 private:
  void arm_deadline(std::string what) {
    deadline_.expires_after(std::chrono::milliseconds(static_cast<long>(options_.timeout_s * 1000)));
    deadline_.async_wait([this, what = std::move(what)](boost::system::error_code ec) {
      if (ec) return;
      notice("! " + what);
      finish(1);
    });
  }

  // Reads the gateway until the connection drops, then, once the client
  // had signed in and unless the server refused the token, connects again
  // (backing off 0.5 s, doubling up to 10 s) and signs in with the same
  // token: ChatCore's auth_ok then resumes every room with `since`.
  awaitable<void> connection_loop(tcp::resolver::results_type endpoints) {
    auto delay = std::chrono::milliseconds(500);
    asio::steady_timer pause(io_);
    for (;;) {
      const bool resumable = co_await reader();
      if (exit_code_) co_return;
      connected_ = false;
      outbox_.clear();  // the core resends what matters (joins, unacknowledged sends)
      boost::system::error_code ignored;
      socket_.close(ignored);
      if (!resumable || !ever_authenticated_) {
        finish(1);
        co_return;
      }
      // A connection that got as far as signing in starts the backoff anew.
      if (core_.authenticated()) delay = std::chrono::milliseconds(500);
      apply(core_.on_disconnected());
      for (;;) {
        notice("! reconnecting in " + std::to_string(delay.count()) + " ms");
        pause.expires_after(delay);
        co_await pause.async_wait(as_tuple_awaitable);
        if (exit_code_) co_return;
        delay = std::min(delay * 2, std::chrono::milliseconds(10000));
        socket_ = tcp::socket(io_);
        auto [ec, endpoint] = co_await asio::async_connect(socket_, endpoints, as_tuple_awaitable);
        if (exit_code_) co_return;
        if (!ec) break;
        notice("! cannot reach the gateway: " + ec.message());
      }
      socket_.set_option(tcp::no_delay(true), ignored);
      connected_ = true;
      queue(core_.auth_frame(token_));
    }
  }

  void finish(int code) {
    if (exit_code_) return;
    exit_code_ = code;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    write_wake_.cancel();
    ping_timer_.cancel();
    deadline_.cancel();
    signals_.cancel();
    done_.cancel();
  }

  // While reconnecting, frames are dropped: after the new auth_ok the core
  // rejoins its rooms and resends every unacknowledged send itself.
  void queue(std::string frame) {
    if (!connected_) return;
    outbox_.push_back(std::move(frame));
    write_wake_.cancel();
  }

  // The only writer on the socket: sends everything queued in one write.
  // While reconnecting it waits; a failed write closes the socket, and the
  // reader's error starts the reconnect.
  awaitable<void> writer() {
    std::string batch;
    while (!exit_code_) {
      if (outbox_.empty() || !connected_) {
        write_wake_.expires_at(asio::steady_timer::time_point::max());
        co_await write_wake_.async_wait(as_tuple_awaitable);
        continue;
      }
      batch.clear();
      for (auto& frame : outbox_) batch += frame;
      outbox_.clear();
      auto [ec, written] = co_await asio::async_write(socket_, asio::buffer(batch), as_tuple_awaitable);
      if (ec && !exit_code_ && connected_) {
        notice("! write to the gateway failed: " + ec.message());
        boost::system::error_code ignored;
        socket_.close(ignored);
      }
    }
  }

  // Reads one connection until it ends; true when a new connection may
  // resume (not after `unauthorized`: the token is no good any more).
  awaitable<bool> reader() {
    asio::streambuf buffer(1 << 20);
    bool fatal_error_seen = false;
    while (!exit_code_) {
      auto [ec, length] = co_await asio::async_read_until(socket_, buffer, '\n', as_tuple_awaitable);
      if (ec) {
        if (!exit_code_ && !fatal_error_seen)
          notice("! connection closed by the gateway (" + ec.message() + ")");
        co_return !unauthorized_;
      }
      std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + length - 1);
      buffer.consume(length);
      bool was_authenticated = core_.authenticated();
      Effects effects = core_.on_server_line(line);
      fatal_error_seen = fatal_error_seen || effects.closing;
      unauthorized_ = unauthorized_ || effects.refused;
      apply(std::move(effects));
      if (!was_authenticated && core_.authenticated()) on_authenticated();
      if (eof_) maybe_finish_after_eof();
    }
    co_return false;
  }

  void on_authenticated() {
    if (std::exchange(ever_authenticated_, true)) return;  // a reconnect: all runs already
    deadline_.cancel();
    if (core_.ping_interval().count() > 0) asio::co_spawn(io_, pinger(), asio::detached);
    // Starts only now, so typed lines queue behind the initial join.
    stdin_.emplace(
        [this](std::string line) { asio::post(io_, [this, line = std::move(line)] { on_input(line); }); },
        [this] { asio::post(io_, [this] { on_eof(); }); });
  }

  // The gateway closes a connection silent for 2.5 x heartbeat_s; an idle
  // reader must therefore ping on its own (ChatCore::ping_interval says how often).
  awaitable<void> pinger() {
    auto interval = core_.ping_interval();
    while (!exit_code_) {
      ping_timer_.expires_after(interval);
      auto [ec] = co_await ping_timer_.async_wait(as_tuple_awaitable);
      if (ec || exit_code_) co_return;
      if (connected_ && core_.authenticated()) queue(ChatCore::ping_frame());
    }
  }

  void on_input(const std::string& line) {
    if (exit_code_) return;
    apply(core_.on_input(line));
  }

  void on_eof() {
    if (exit_code_) return;
    eof_ = true;
    deadline_.expires_after(std::chrono::milliseconds(static_cast<long>(options_.ack_grace_s * 1000)));
    deadline_.async_wait([this](boost::system::error_code ec) {
      if (ec || exit_code_ || lingering_) return;
      if (core_.pending_acks() > 0)
        notice("! " + std::to_string(core_.pending_acks()) + " sent message(s) not acknowledged");
      if (core_.pending_queries() > 0)
        notice("! " + std::to_string(core_.pending_queries()) + " /who or /status request(s) not answered");
      finish(1);
    });
    maybe_finish_after_eof();
  }

  // After stdin ends: exit once every send is acknowledged and every /who and
  // /status answered (so a piped "/who" prints its answer), then linger if asked.
  void maybe_finish_after_eof() {
    if (lingering_ || core_.pending_acks() > 0 || core_.pending_queries() > 0) return;
    lingering_ = true;
    deadline_.cancel();
    if (options_.linger_s <= 0) {
      finish(0);
      return;
    }
    ping_deadline_linger();
  }

  void ping_deadline_linger() {
    deadline_.expires_after(std::chrono::milliseconds(static_cast<long>(options_.linger_s * 1000)));
    deadline_.async_wait([this](boost::system::error_code ec) {
      if (!ec) finish(0);
    });
  }

  void apply(Effects effects) {
    print_lines(stdout, effects.messages);
    print_lines(stderr, effects.notices);
    for (auto& frame : effects.frames) queue(std::move(frame));
    if (effects.quit) finish(0);
  }

  asio::io_context& io_;
  ChatOptions options_;
  std::string password_;
  ChatCore core_;
  tcp::socket socket_;
  std::deque<std::string> outbox_;
  asio::steady_timer write_wake_;
  asio::steady_timer done_;
  asio::steady_timer ping_timer_;
  asio::steady_timer deadline_;  // connect/auth timeout, then ack grace, then linger
  asio::signal_set signals_;
  std::optional<int> exit_code_;
  std::string token_;
  bool connected_ = false;           // a socket is up (maybe not signed in yet)
  bool ever_authenticated_ = false;  // only a client that signed in reconnects
  bool unauthorized_ = false;        // the server refused the token: no reconnect
  bool eof_ = false;
  bool lingering_ = false;
  // Last member: destroyed (joined) first, before anything its posts touch.
  std::optional<StdinLineReader> stdin_;
};

}  // namespace
}  // namespace rtmc::chat

int main(int argc, char** argv) {
  using namespace rtmc::chat;
  ChatOptions options;
  CLI::App app{
      "rtmc-chat: terminal chat client.\n"
      "Logs in over the api, connects to a gateway, joins a room, then sends each stdin line to the\n"
      "current room and prints incoming messages as '[HH:MM:SS] #room <from> body' on stdout\n"
      "and presence as '[HH:MM:SS] * bob joined #room' (status, /who, /status and errors go to\n"
      "stderr). Type /help inside for commands.\n"
      "Password: RTMC_CHAT_PASSWORD, else prompted (no echo) on a terminal, else the first stdin line.\n"
      "With stdin piped, exits once stdin ends, every sent line is acknowledged and every /who and\n"
      "/status is answered."};
  app.add_option("--api", options.api, "api base URL")->envname("RTMC_CHAT_API")->capture_default_str();
  app.add_option("--gateway", options.gateway, "gateway host:port")
      ->envname("RTMC_CHAT_GATEWAY")
      ->capture_default_str();
  app.add_option("--user", options.user, "user name")->envname("RTMC_CHAT_USER")->required();
  app.add_option("--room", options.room, "room joined at start")
      ->envname("RTMC_CHAT_ROOM")
      ->capture_default_str();
  app.add_flag("--register", options.register_first,
               "register the user first (an existing user just logs in)");
  app.add_option("--timeout-s", options.timeout_s, "limit for api calls, connect and auth")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--ack-grace-s", options.ack_grace_s,
                 "after stdin ends, how long to wait for acks and /who, /status answers")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--linger-s", options.linger_s,
                 "after stdin ends and all sends are acked, keep printing messages this long")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (!rtmc::valid_user_name(options.user)) {
    std::fprintf(stderr,
                 "rtmc-chat: bad user name '%s': 1-32 of [A-Za-z0-9_.-], starting with a letter or digit\n",
                 printable(options.user).c_str());
    return 2;
  }
  if (!rtmc::valid_room_name(options.room)) {
    std::fprintf(stderr, "rtmc-chat: bad room name '%s'\n", printable(options.room).c_str());
    return 2;
  }

  std::string password;
  if (const char* from_env = std::getenv("RTMC_CHAT_PASSWORD")) {
    password = from_env;
  } else {
    auto typed = read_password("password for " + options.user + ": ");
    if (!typed) {
      std::fputs("rtmc-chat: no password given\n", stderr);
      return 2;
    }
    password = std::move(*typed);
  }

  asio::io_context io;
  int exit_code = 1;
  ChatApp chat(io, std::move(options), std::move(password));
  asio::co_spawn(io, chat.run(), [&](std::exception_ptr error, int code) {
    if (!error) {
      exit_code = code;
      return;
    }
    try {
      std::rethrow_exception(error);
    } catch (const boost::system::system_error& e) {
      // what() carries Boost's source location; the code's message is what a person needs.
      std::fprintf(stderr, "rtmc-chat: network error: %s\n", e.code().message().c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rtmc-chat: %s\n", e.what());
    }
    exit_code = 1;
    io.stop();
  });
  io.run();
  return exit_code;
}
