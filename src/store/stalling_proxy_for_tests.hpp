#pragma once
// For integration tests only: a TCP proxy on 127.0.0.1 in front of a real
// service that can be told to stall, so a test sees what clients see when the
// service is stopped (SIGSTOP) without stopping the service other tests share.
// Stalled, it forwards nothing in either direction and keeps every connection
// open; new connections are accepted (as the kernel of a stopped server
// would) and held the same way. Destruction closes everything.
//
// Threading: one accept thread plus one thread per connection; the public
// methods may be called from any thread.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rtmc::testing {

class StallingProxy {
 public:
  explicit StallingProxy(std::uint16_t upstream_port) : upstream_port_(upstream_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listener_ < 0) throw std::runtime_error("StallingProxy: socket");
    sockaddr_in address = loopback(0);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener_, 64) != 0)
      throw std::runtime_error("StallingProxy: bind/listen");
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~StallingProxy() {
    stopping_ = true;
    acceptor_.join();
    std::vector<std::thread> pumps;
    {
      std::lock_guard lock(mutex_);
      pumps.swap(pumps_);
    }
    for (auto& pump : pumps) pump.join();
    ::close(listener_);
  }

  StallingProxy(const StallingProxy&) = delete;
  StallingProxy& operator=(const StallingProxy&) = delete;

  std::uint16_t port() const { return port_; }
  void stall() { stalled_ = true; }
  // Forwards again what waited meanwhile; connections held stay open.
  void resume() { stalled_ = false; }

 private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
  }

  void accept_loop() {
    while (!stopping_) {
      pollfd ready{listener_, POLLIN, 0};
      if (::poll(&ready, 1, 50) <= 0) continue;
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) continue;
      const int upstream = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address = loopback(upstream_port_);
      if (upstream < 0 || ::connect(upstream, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        if (upstream >= 0) ::close(upstream);
        ::close(client);
        continue;
      }
      std::lock_guard lock(mutex_);
      pumps_.emplace_back([this, client, upstream] { pump(client, upstream); });
    }
  }

  void pump(int client, int upstream) {
    char buffer[16384];
    bool open = true;
    while (open && !stopping_) {
      if (stalled_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      pollfd ready[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
      if (::poll(ready, 2, 50) <= 0) continue;
      // Checked again: bytes that arrived while stalling began stay unread.
      if (stalled_) continue;
      for (int i = 0; i < 2 && open; ++i) {
        if ((ready[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(ready[i].fd, buffer, sizeof buffer);
        if (n <= 0) {
          open = false;
          break;
        }
        const int to = i == 0 ? upstream : client;
        for (ssize_t sent = 0; sent < n && open;) {
          const ssize_t w = ::send(to, buffer + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
          if (w <= 0)
            open = false;
          else
            sent += w;
        }
      }
    }
    ::close(client);
    ::close(upstream);
  }

  std::uint16_t upstream_port_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stalled_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

// The port a libpq conninfo (key=value or URI) names; 5432 when none.
inline std::uint16_t pg_port_of(const std::string& conninfo) {
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), nullptr);
  std::uint16_t port = 5432;
  for (PQconninfoOption* option = options; option != nullptr && option->keyword != nullptr; ++option)
    if (std::string(option->keyword) == "port" && option->val != nullptr && *option->val != '\0')
      port = static_cast<std::uint16_t>(std::stoi(option->val));
  PQconninfoFree(options);
  return port;
}

// `conninfo` (key=value or URI) pointing at 127.0.0.1:`port` instead.
inline std::string pg_conninfo_via(const std::string& conninfo, std::uint16_t port) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    std::string message = error ? error : "parse error";
    PQfreemem(error);
    throw std::runtime_error("bad conninfo: " + message);
  }
  std::string out;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    std::string keyword = option->keyword;
    if (keyword == "host" || keyword == "hostaddr" || keyword == "port" || option->val == nullptr) continue;
    std::string value;
    for (const char* c = option->val; *c != '\0'; ++c) {
      if (*c == '\'' || *c == '\\') value += '\\';
      value += *c;
    }
    out += keyword + "='" + value + "' ";
  }
  PQconninfoFree(options);
  return out + "host=127.0.0.1 port=" + std::to_string(port);
}

}  // namespace rtmc::testing
