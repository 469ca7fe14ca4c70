// TCP keepalive of client sockets, read back from the kernel.

#include "gateway/tcp_line_transport.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>

namespace rtmc::gateway {
namespace {

int option(int fd, int level, int name) {
  int value = -1;
  socklen_t size = sizeof value;
  EXPECT_EQ(::getsockopt(fd, level, name, &value, &size), 0);
  return value;
}

TEST(ClientKeepalive, FollowsTheHeartbeat) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.open(boost::asio::ip::tcp::v4());
  ASSERT_TRUE(set_client_keepalive(socket, std::chrono::seconds(15)));
  const int fd = socket.native_handle();
  EXPECT_EQ(option(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPIDLE), 15);
  EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
  EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
}

TEST(ClientKeepalive, ProbesAtLeastEverySecond) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.open(boost::asio::ip::tcp::v4());
  ASSERT_TRUE(set_client_keepalive(socket, std::chrono::seconds(2)));
  EXPECT_EQ(option(socket.native_handle(), IPPROTO_TCP, TCP_KEEPIDLE), 2);
  EXPECT_EQ(option(socket.native_handle(), IPPROTO_TCP, TCP_KEEPINTVL), 1);
}

}  // namespace
}  // namespace rtmc::gateway
