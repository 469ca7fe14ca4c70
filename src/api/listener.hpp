#pragma once
// Accepts connections on one io_context and spreads the sockets round-robin
// over the io_contexts of all io threads, where each connection then lives.
//
// Threading: constructed on any thread before serving; run() and close() on
// the accepting io_context's thread.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <vector>

namespace rtmc::api {

class Listener {
 public:
  // Binds and listens at once (throws boost::system::system_error), so the
  // port is known, and a taken port fails, before any thread starts.
  Listener(boost::asio::io_context& context, const boost::asio::ip::tcp::endpoint& endpoint);

  boost::asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  // Accepts until close(). Socket i is created on targets[i % n];
  // `on_accept(i % n, socket)` runs on the accepting thread and must hand the
  // socket over to its own executor.
  boost::asio::awaitable<void> run(std::vector<boost::asio::any_io_executor> targets,
                                   std::function<void(std::size_t target, boost::asio::ip::tcp::socket)> on_accept);
  void close();

 private:
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace rtmc::api
