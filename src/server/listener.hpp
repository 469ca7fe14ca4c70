#pragma once
// Accepts TCP connections and spreads the sockets round-robin over the
// io_contexts of a role's io threads, where each connection then lives.
// Bounds what it accepts:
//   - a connection cap: at the cap, a new connection is handed to `on_refuse`
//     (which answers "server full" and closes) instead of `on_accept`, and
//     counted; the default cap is what the open-file limit allows, less a
//     reserve for the process's own files (limits.hpp);
//   - EMFILE/ENFILE (or any accept error): the pending connection stays in the
//     kernel's queue, so the loop pauses instead of retrying at once (a retry
//     would fail again and spin a core) and counts the failure.
//
// Threading: constructed on any thread before serving; run() and close() on
// the accepting io_context's thread. The counters and ConnectionSlot may be
// used from any thread.

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/config.hpp"

namespace rtmc::server {

// One accepted connection's place under the cap; the place is given back when
// the slot is destroyed, so the connection object holds it for its life.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  explicit ConnectionSlot(std::shared_ptr<std::atomic<std::size_t>> open) : open_(std::move(open)) {}
  ConnectionSlot(ConnectionSlot&&) noexcept = default;
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept {
    if (this != &other) {
      release();
      open_ = std::move(other.open_);
    }
    return *this;
  }
  ~ConnectionSlot() { release(); }
  void release() {
    if (open_) std::exchange(open_, nullptr)->fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  std::shared_ptr<std::atomic<std::size_t>> open_;
};

struct ListenerOptions {
  // Connections open at once; 0 = connection_cap_from_open_files() (limits.hpp).
  std::size_t max_connections = 0;
  // SO_REUSEPORT: several processes bind the same address and the kernel
  // spreads new connections over their listeners.
  bool reuse_port = false;
  // Pause after a failed accept (EMFILE, ENFILE, ENOBUFS, ...).
  std::chrono::milliseconds accept_error_pause{100};
};

class Listener {
 public:
  // `on_accept(target, socket, slot)` and `on_refuse(target, socket)` run on
  // the accepting thread; socket i was opened on targets[i % n] and the
  // callback must hand it over to that executor.
  using OnAccept = std::function<void(std::size_t target, boost::asio::ip::tcp::socket, ConnectionSlot)>;
  using OnRefuse = std::function<void(std::size_t target, boost::asio::ip::tcp::socket)>;

  // Binds and listens at once (throws boost::system::system_error), so the
  // port is known, and a taken port fails, before any thread starts.
  Listener(boost::asio::io_context& context, const boost::asio::ip::tcp::endpoint& endpoint,
           ListenerOptions options = {});

  boost::asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  std::size_t max_connections() const { return max_connections_; }

  // Accepts until close().
  boost::asio::awaitable<void> run(std::vector<boost::asio::any_io_executor> targets, OnAccept on_accept,
                                   OnRefuse on_refuse);
  void close();

  std::size_t open() const { return open_->load(std::memory_order_relaxed); }
  std::uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  std::uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  std::uint64_t accept_failures() const { return accept_failures_.load(std::memory_order_relaxed); }

 private:
  boost::asio::ip::tcp::acceptor acceptor_;
  ListenerOptions options_;
  std::size_t max_connections_;
  std::shared_ptr<std::atomic<std::size_t>> open_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> accept_failures_{0};
};

// Opens, binds and listens on `acceptor` (throws boost::system::system_error).
// The backlog asked for is the largest there is; the kernel caps it at
// net.core.somaxconn, so a connect storm waits in the kernel's queue up to
// what the host allows instead of a compiled-in SOMAXCONN. With `reuse_port`
// the socket gets SO_REUSEPORT before bind.
void listen_on(boost::asio::ip::tcp::acceptor& acceptor, const boost::asio::ip::tcp::endpoint& endpoint,
               bool reuse_port);

// The address to bind for `address` (numeric host or a name; throws
// std::runtime_error when it does not resolve).
boost::asio::ip::tcp::endpoint resolve_listen_address(const HostPort& address);

}  // namespace rtmc::server
