#include "server/listener.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <thread>

#include "server/limits.hpp"

namespace rtmc::server {
namespace {

namespace net = boost::asio;
using net::ip::tcp;
using namespace std::chrono_literals;

// Polls `done` for up to 10 s.
bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A listener on loopback, run on its own thread; accepted sockets and their
// slots are kept (on that thread) until release_one().
class ListenerFixture {
 public:
  explicit ListenerFixture(ListenerOptions options, std::uint16_t port = 0)
      : listener(context, tcp::endpoint(net::ip::make_address("127.0.0.1"), port), options) {
    std::vector<net::any_io_executor> targets{context.get_executor()};
    net::co_spawn(context,
                  listener.run(
                      targets,
                      [this](std::size_t, tcp::socket socket, ConnectionSlot slot) {
                        kept_.push_back({std::move(socket), std::move(slot)});
                      },
                      [this](std::size_t, tcp::socket) { ++refused_seen_; }),
                  net::detached);
    thread_ = std::thread([this] { context.run(); });
  }
  ~ListenerFixture() {
    net::post(context, [this] {
      listener.close();
      kept_.clear();
    });
    thread_.join();
  }

  tcp::socket connect() {
    tcp::socket socket(client_context_);
    socket.connect(listener.local_endpoint());
    return socket;
  }

  // Closes the oldest accepted connection, giving its slot back.
  void release_one() {
    net::post(context, [this] {
      if (!kept_.empty()) kept_.pop_front();
    });
  }

  net::io_context context;
  Listener listener;
  std::atomic<int> refused_seen_{0};

 private:
  struct Kept {
    tcp::socket socket;
    ConnectionSlot slot;
  };
  std::deque<Kept> kept_;
  net::io_context client_context_;
  std::thread thread_;
};

TEST(Listener, OverTheCapConnectionsGoToTheRefuseHookAndAreCounted) {
  ListenerFixture fixture(ListenerOptions{.max_connections = 2});
  auto a = fixture.connect();
  auto b = fixture.connect();
  ASSERT_TRUE(eventually([&] { return fixture.listener.accepted() == 2; }));
  auto c = fixture.connect();
  ASSERT_TRUE(eventually([&] { return fixture.listener.refused() == 1; }));
  EXPECT_EQ(fixture.refused_seen_, 1);
  EXPECT_EQ(fixture.listener.accepted(), 2u);
  EXPECT_EQ(fixture.listener.open(), 2u);

  // A closed connection gives its place back.
  fixture.release_one();
  ASSERT_TRUE(eventually([&] { return fixture.listener.open() == 1; }));
  auto d = fixture.connect();
  ASSERT_TRUE(eventually([&] { return fixture.listener.accepted() == 3; }));
  EXPECT_EQ(fixture.listener.refused(), 1u);
}

TEST(Listener, DefaultCapIsTheOpenFileLimitLessTheReserve) {
  net::io_context context;
  Listener listener(context, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const auto soft = open_file_limit().soft;
  ASSERT_GT(soft, kOwnFilesReserve);
  EXPECT_EQ(listener.max_connections(), soft - kOwnFilesReserve);
}

TEST(OpenFileLimit, RaiseReachesTheHardLimit) {
  const auto before = open_file_limit();
  ASSERT_GT(before.hard, 128u);
  rlimit lowered{128, static_cast<rlim_t>(before.hard)};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  ASSERT_EQ(open_file_limit().soft, 128u);
  EXPECT_EQ(connection_cap_from_open_files(), 128u - kOwnFilesReserve);
  const auto raised = raise_open_file_limit();
  EXPECT_EQ(raised.soft, before.hard);
  EXPECT_EQ(raised.hard, before.hard);
  EXPECT_EQ(open_file_limit().soft, before.hard);
}

// With no descriptor left, accept fails with EMFILE while the connection
// waits in the kernel's queue: the loop must pause between attempts (not
// spin a core) and accept the connection once descriptors are free again.
TEST(Listener, OutOfDescriptorsPausesAndRecovers) {
  ListenerFixture fixture(ListenerOptions{.max_connections = 100, .accept_error_pause = 100ms});
  const auto before = open_file_limit();
  net::io_context client_context;
  tcp::socket client(client_context);
  client.open(tcp::v4());

  // Use up every descriptor under a low limit.
  rlimit low{static_cast<rlim_t>(::dup(0) + 1), static_cast<rlim_t>(before.hard)};
  std::vector<int> fillers;
  fillers.push_back(static_cast<int>(low.rlim_cur - 1));
  low.rlim_cur += 16;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  for (int fd = ::dup(0); fd >= 0; fd = ::dup(0)) fillers.push_back(fd);

  client.connect(fixture.listener.local_endpoint());  // completed by the kernel's backlog
  ASSERT_TRUE(eventually([&] { return fixture.listener.accept_failures() >= 1; }));
  std::this_thread::sleep_for(500ms);
  const auto failures = fixture.listener.accept_failures();
  EXPECT_EQ(fixture.listener.accepted(), 0u);

  for (int fd : fillers) ::close(fd);
  rlimit restored{static_cast<rlim_t>(before.soft), static_cast<rlim_t>(before.hard)};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &restored), 0);
  // A spinning loop fails many thousand times in half a second; a paused
  // one about five times (one per 100 ms).
  EXPECT_LE(failures, 20u);
  EXPECT_TRUE(eventually([&] { return fixture.listener.accepted() == 1; }));
}

// SO_REUSEPORT: two listeners (as two gateway processes would) bind one
// port and the kernel hands each of them connections; without it the second
// bind fails.
TEST(Listener, ReusePortLetsTwoListenersShareAPortAndBothAccept) {
  ListenerFixture first(ListenerOptions{.max_connections = 1000, .reuse_port = true});
  const auto port = first.listener.local_endpoint().port();
  {
    net::io_context context;
    EXPECT_THROW(Listener(context, tcp::endpoint(net::ip::make_address("127.0.0.1"), port)),
                 boost::system::system_error);
  }
  ListenerFixture second(ListenerOptions{.max_connections = 1000, .reuse_port = true}, port);
  ASSERT_EQ(second.listener.local_endpoint().port(), port);
  // The kernel picks a listener by a hash of the connection's addresses:
  // with 64 connections, one listener getting none has odds of 2^-63.
  std::vector<tcp::socket> clients;
  for (int i = 0; i < 64; ++i) clients.push_back(first.connect());
  ASSERT_TRUE(
      eventually([&] { return first.listener.accepted() + second.listener.accepted() == clients.size(); }));
  EXPECT_GT(first.listener.accepted(), 0u);
  EXPECT_GT(second.listener.accepted(), 0u);
}

}  // namespace
}  // namespace rtmc::server
