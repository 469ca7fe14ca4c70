// The WebSocket transport over a real loopback socket, with the real
// connection core on fake ports (no services), driven by a synchronous Beast
// client; and the upgrade checks of ws_upgrade.hpp.

#include "gateway/ws_transport.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <future>
#include <thread>

#include "auth/auth.hpp"
#include "auth/room_access.hpp"
#include "gateway/client_connection.hpp"
#include "gateway/io_thread.hpp"
#include "gateway/room_cursor.hpp"
#include "gateway/ws_upgrade.hpp"
#include "protocol/frames.hpp"

namespace rtmc::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

class AlwaysLoggedIn final : public LoginSessions {
 public:
  asio::awaitable<bool> exists(std::string) override { co_return true; }
};

class EmptyRooms final : public RoomReader {
 public:
  asio::awaitable<std::int64_t> current_seq(std::string) override { co_return 0; }
  asio::awaitable<std::vector<LogFrame>> range(std::string, std::int64_t, std::int64_t) override {
    co_return std::vector<LogFrame>{};
  }
};

class ConfirmingIngest final : public IngestPublisher {
 public:
  void publish(protocol::IngestMessage, std::function<void(amqp::PublishStatus)> done) override {
    done(amqp::PublishStatus::confirmed);
  }
};

class NoLimits final : public SendLimiter {
 public:
  asio::awaitable<bool> allow(std::string, std::string) override { co_return true; }
};

class NoPresence final : public PresencePort {
 public:
  asio::awaitable<void> connected(std::uint64_t, std::string) override { co_return; }
  asio::awaitable<void> disconnected(std::uint64_t, std::string, std::vector<std::string>) override {
    co_return;
  }
  asio::awaitable<void> joined(std::string, std::string) override { co_return; }
  asio::awaitable<void> left(std::string, std::string) override { co_return; }
  asio::awaitable<std::vector<std::string>> members(std::string) override {
    co_return std::vector<std::string>{};
  }
  asio::awaitable<std::optional<UserStatusView>> status(std::string) override { co_return std::nullopt; }
};

constexpr std::size_t kMaxMessage = 512;

// One io thread serving WebSocket connections accepted on a loopback port
// (the upgrade request read as the HTTP port would), and a blocking client.
class WsTransportTest : public ::testing::Test {
 protected:
  WsTransportTest() {
    config_.join_bind_wait = 0ms;
    config_.auth_timeout = 5s;
    config_.heartbeat = 30s;
    config_.send_queue_bytes = 4096;
    config_.send_queue_hard_bytes = 16 * 1024;
    config_.send_queue_soft_time = 10s;
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
  }

  ~WsTransportTest() override {
    asio::post(thread_.io, [this] {
      thread_.shutdown_all();
      boost::system::error_code ignored;
      acceptor_.close(ignored);
    });
    guard_.reset();
    // Lets the close steps finish, then stops whatever still waits.
    std::this_thread::sleep_for(50ms);
    thread_.io.stop();
    if (runner_.joinable()) runner_.join();
  }

  void run() {
    asio::co_spawn(thread_.io, serve(), asio::detached);
    runner_ = std::thread([this] { thread_.io.run(); });
  }

  // Accepts one connection at a time and hands it to a WsTransport.
  asio::awaitable<void> serve() {
    for (;;) {
      tcp::socket socket(thread_.io);
      co_await acceptor_.async_accept(socket, asio::use_awaitable);
      beast::flat_buffer buffer;
      server::Request request;
      co_await beast::http::async_read(socket, buffer, request, asio::use_awaitable);
      // A small kernel buffer, so a client that stops reading fills the
      // transport's queue soon.
      if (small_send_buffer_) socket.set_option(asio::socket_base::send_buffer_size(4096));
      auto transport =
          std::make_shared<WsTransport>(std::move(socket), thread_, kMaxMessage, config_.heartbeat);
      auto connection = std::make_shared<ClientConnection>(thread_.io.get_executor(), services_,
                                                           thread_.connections, transport);
      connection->start();
      transport->start(connection, std::move(request));
      last_connection_ = connection;
    }
  }

  std::unique_ptr<websocket::stream<tcp::socket>> connect(int receive_buffer = 0) {
    auto ws = std::make_unique<websocket::stream<tcp::socket>>(client_io_);
    auto& socket = ws->next_layer();
    socket.open(tcp::v4());
    if (receive_buffer > 0) socket.set_option(asio::socket_base::receive_buffer_size(receive_buffer));
    socket.connect(acceptor_.local_endpoint());
    ws->handshake("127.0.0.1", "/ws");
    ws->text(true);
    return ws;
  }

  // Runs `job` with the server's newest connection on its io thread.
  void on_server(std::function<void(ClientConnection&)> job) {
    std::promise<void> done;
    asio::post(thread_.io, [&] {
      if (auto connection = last_connection_.lock()) job(*connection);
      done.set_value();
    });
    done.get_future().wait();
  }

  void authenticate(websocket::stream<tcp::socket>& ws, const std::string& user = "alice") {
    // Appended: GCC 12 reports a false -Wrestrict on "literal" + std::string.
    std::string auth = R"({"type":"auth","token":")";
    auth += tokens_.issue(user).token;
    auth += "\"}";
    write(ws, auth);
    auto reply = read(ws);
    ASSERT_EQ(reply.at("type"), "auth_ok") << boost::json::serialize(reply);
  }

  static void write(websocket::stream<tcp::socket>& ws, std::string_view text) {
    ws.text(true);
    ws.write(asio::buffer(text.data(), text.size()));
  }

  // The next message: a text message holding one JSON object, no newline.
  static boost::json::object read(websocket::stream<tcp::socket>& ws) {
    beast::flat_buffer buffer;
    ws.read(buffer);
    EXPECT_TRUE(ws.got_text());
    auto text = beast::buffers_to_string(buffer.data());
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    return boost::json::parse(text).as_object();
  }

  // Reads until the server's close frame; returns its code. Text messages
  // read on the way are appended to `frames`.
  static websocket::close_code read_until_closed(websocket::stream<tcp::socket>& ws,
                                                 std::vector<boost::json::object>* frames = nullptr) {
    for (;;) {
      beast::flat_buffer buffer;
      boost::system::error_code ec;
      ws.read(buffer, ec);
      if (ec == websocket::error::closed) return static_cast<websocket::close_code>(ws.reason().code);
      if (ec) throw boost::system::system_error(ec, "reading until the close frame");
      if (frames) frames->push_back(boost::json::parse(beast::buffers_to_string(buffer.data())).as_object());
    }
  }

  std::uint64_t closed(CloseReason reason) const {
    return counters_.closed[static_cast<int>(TransportKind::ws)][static_cast<int>(reason)].load();
  }

  GatewayConfig config_;
  auth::TokenService tokens_{std::string(32, 's'), std::chrono::seconds(3600)};
  auth::RoomAccess access_;
  AlwaysLoggedIn login_sessions_;
  EmptyRooms rooms_;
  ConfirmingIngest ingest_;
  NoLimits limiter_;
  NoPresence presence_;
  LocalRooms local_rooms_;
  GatewayCounters counters_;
  ConnectionServices services_{config_,  tokens_,   access_,      login_sessions_, rooms_, ingest_,
                               limiter_, presence_, local_rooms_, counters_,       {}};
  IoThread thread_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(thread_.io);
  tcp::acceptor acceptor_{thread_.io};
  std::weak_ptr<ClientConnection> last_connection_;
  bool small_send_buffer_ = false;
  std::thread runner_;
  asio::io_context client_io_;
};

TEST_F(WsTransportTest, EachTextMessageIsOneRequestAndEachFrameOneTextMessage) {
  run();
  auto ws = connect();
  authenticate(*ws);
  write(*ws, R"({"type":"ping","ref":1})");
  write(*ws, R"({"type":"ping","ref":2})");
  EXPECT_EQ(read(*ws), (boost::json::object{{"type", "pong"}, {"ref", 1}}));
  EXPECT_EQ(read(*ws), (boost::json::object{{"type", "pong"}, {"ref", 2}}));
  write(*ws, R"({"type":"join","room":"r"})");
  EXPECT_EQ(read(*ws).at("type"), "joined");

  // A batch of deliveries leaves as one text message per frame, in order.
  SequencedBatch batch;
  for (int seq = 1; seq <= 50; ++seq) {
    std::string id = "m";
    id += std::to_string(seq);
    batch.push_back(
        {"r",
         seq,
         std::make_shared<const std::string>(protocol::message_frame("r", seq, id, "bob", "hi", 1)),
         {},
         0});
  }
  asio::post(thread_.io, [this, &batch] { thread_.deliver(batch); });
  for (int seq = 1; seq <= 50; ++seq) {
    auto frame = read(*ws);
    EXPECT_EQ(frame.at("type"), "message");
    EXPECT_EQ(frame.at("seq").as_int64(), seq);
  }
  // Blank messages are ignored, as blank lines are on TCP.
  write(*ws, "  ");
  write(*ws, R"({"type":"ping","ref":3})");
  EXPECT_EQ(read(*ws), (boost::json::object{{"type", "pong"}, {"ref", 3}}));
  ws->close(websocket::close_code::normal);
  for (int i = 0; i < 100 && closed(CloseReason::client_closed) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(closed(CloseReason::client_closed), 1u);
}

TEST_F(WsTransportTest, ABinaryMessageEarnsBadFrameAndTheConnectionLives) {
  run();
  auto ws = connect();
  authenticate(*ws);
  ws->binary(true);
  const std::string bytes = R"({"type":"ping","ref":1})";
  ws->write(asio::buffer(bytes));
  auto error = read(*ws);
  EXPECT_EQ(error.at("type"), "error");
  EXPECT_EQ(error.at("code"), "bad_frame");
  write(*ws, R"({"type":"ping","ref":2})");
  EXPECT_EQ(read(*ws), (boost::json::object{{"type", "pong"}, {"ref", 2}}));
}

// Before auth a binary message is a first frame that is not auth: fatal,
// as on TCP.
TEST_F(WsTransportTest, ABinaryMessageBeforeAuthGetsUnauthorizedThenClose1008) {
  run();
  auto ws = connect();
  ws->binary(true);
  const std::string bytes = R"({"type":"ping","ref":1})";
  ws->write(asio::buffer(bytes));
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::policy_error);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].at("code"), "unauthorized");
  EXPECT_EQ(ws->reason().reason, "unauthorized");
  EXPECT_EQ(closed(CloseReason::unauthorized), 1u);
}

TEST_F(WsTransportTest, AMessageOverTheLimitGetsFrameTooLargeThenClose1009) {
  run();
  auto ws = connect();
  authenticate(*ws);
  // At the limit: an ordinary (unparseable) request.
  write(*ws, std::string(kMaxMessage, 'x'));
  EXPECT_EQ(read(*ws).at("code"), "bad_json");
  // One byte more, in several frames of one message.
  const std::string big(kMaxMessage + 1, 'x');
  ws->auto_fragment(true);
  ws->write_buffer_bytes(256);
  write(*ws, big);
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::too_big);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].at("code"), "frame_too_large");
  EXPECT_EQ(closed(CloseReason::frame_too_large), 1u);
}

TEST_F(WsTransportTest, OneHugeFrameIsRefusedWithoutBeingBuffered) {
  run();
  auto ws = connect();
  authenticate(*ws);
  write(*ws, std::string(256 * 1024, 'x'));
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::too_big);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].at("code"), "frame_too_large");
}

TEST_F(WsTransportTest, InvalidUtf8Closes1007) {
  run();
  auto ws = connect();
  authenticate(*ws);
  write(*ws, "{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}");
  EXPECT_EQ(read_until_closed(*ws), websocket::close_code::bad_payload);
}

TEST_F(WsTransportTest, ABadTokenGetsUnauthorizedThenClose1008) {
  run();
  auto ws = connect();
  write(*ws, R"({"type":"auth","token":"nope","ref":"a"})");
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::policy_error);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].at("code"), "unauthorized");
  EXPECT_EQ(frames[0].at("ref"), "a");
  EXPECT_EQ(ws->reason().reason, "unauthorized");
}

TEST_F(WsTransportTest, ShutdownSendsServerShutdownThenClose1001) {
  run();
  auto ws = connect();
  authenticate(*ws);
  on_server([](ClientConnection& connection) { connection.shutdown(); });
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::going_away);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].at("code"), "server_shutdown");
  EXPECT_EQ(closed(CloseReason::server_shutdown), 1u);
}

// Control pings are answered by Beast and keep the connection alive; once
// they stop, the idle cut closes with 1008.
TEST_F(WsTransportTest, PingsAreAnsweredAndCountAsLifeUntilTheIdleCut) {
  config_.idle_timeout = 400ms;
  run();
  auto ws = connect();
  authenticate(*ws);
  std::vector<std::string> pongs;
  ws->control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::pong) pongs.emplace_back(payload);
  });
  for (int i = 0; i < 8; ++i) {
    std::string payload = "p";
    payload += std::to_string(i);
    ws->ping(websocket::ping_data(payload));
    std::this_thread::sleep_for(100ms);
  }
  write(*ws, R"({"type":"ping","ref":1})");
  EXPECT_EQ(read(*ws), (boost::json::object{{"type", "pong"}, {"ref", 1}}));
  ASSERT_EQ(pongs.size(), 8u);
  EXPECT_EQ(pongs.front(), "p0");
  EXPECT_EQ(closed(CloseReason::idle_timeout), 0u);
  // Silence now.
  EXPECT_EQ(read_until_closed(*ws), websocket::close_code::policy_error);
  EXPECT_EQ(ws->reason().reason, "idle_timeout");
  EXPECT_EQ(closed(CloseReason::idle_timeout), 1u);
}

// A client that stops reading: its send queue grows past the hard limit
// while a write waits, and it is cut; reading again, it finds a prefix of
// its stream, the slow_consumer error and close 1008.
TEST_F(WsTransportTest, AClientThatStopsReadingIsCutAsASlowConsumerWith1008) {
  small_send_buffer_ = true;
  run();
  auto ws = connect(4096);
  authenticate(*ws);
  write(*ws, R"({"type":"join","room":"r"})");
  EXPECT_EQ(read(*ws).at("type"), "joined");
  const std::string body(1000, 'b');
  int seq = 0;
  for (int round = 0; round < 1000 && closed(CloseReason::slow_consumer) == 0; ++round) {
    SequencedBatch batch;
    for (int i = 0; i < 10; ++i) {
      ++seq;
      batch.push_back(
          {"r",
           seq,
           std::make_shared<const std::string>(protocol::message_frame("r", seq, "m", "bob", body, 1)),
           {},
           0});
    }
    std::promise<void> delivered;
    asio::post(thread_.io, [&] {
      thread_.deliver(batch);
      delivered.set_value();
    });
    delivered.get_future().wait();
  }
  ASSERT_EQ(closed(CloseReason::slow_consumer), 1u) << seq << " frames delivered";
  std::vector<boost::json::object> frames;
  EXPECT_EQ(read_until_closed(*ws, &frames), websocket::close_code::policy_error);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().at("code"), "slow_consumer");
  EXPECT_LT(static_cast<int>(frames.size()) - 1, seq);
  for (std::size_t i = 0; i + 1 < frames.size(); ++i)
    EXPECT_EQ(frames[i].at("seq").as_int64(), static_cast<std::int64_t>(i + 1));
}

TEST(WsCloseCode, FollowsTheCloseReason) {
  using websocket::close_code;
  EXPECT_EQ(close_code_for(CloseReason::client_closed), close_code::normal);
  EXPECT_EQ(close_code_for(CloseReason::frame_too_large), close_code::too_big);
  EXPECT_EQ(close_code_for(CloseReason::server_shutdown), close_code::going_away);
  EXPECT_EQ(close_code_for(CloseReason::server_full), close_code::try_again_later);
  EXPECT_EQ(close_code_for(CloseReason::internal), close_code::internal_error);
  for (auto reason : {CloseReason::unauthorized, CloseReason::auth_timeout, CloseReason::slow_consumer,
                      CloseReason::idle_timeout, CloseReason::lost_sync})
    EXPECT_EQ(close_code_for(reason), close_code::policy_error) << to_string(reason);
}

server::Request upgrade_request(std::optional<std::string> origin) {
  server::Request request{beast::http::verb::get, "/ws", 11};
  request.set(beast::http::field::host, "127.0.0.1:7080");
  request.set(beast::http::field::connection, "Upgrade");
  request.set(beast::http::field::upgrade, "websocket");
  request.set(beast::http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  request.set(beast::http::field::sec_websocket_version, "13");
  if (origin) request.set(beast::http::field::origin, *origin);
  return request;
}

TEST(WsUpgrade, OriginsAreCheckedAgainstTheAllowList) {
  const auto allowed = parse_origins(" http://127.0.0.1:8080 ,http://localhost:8080,, ");
  ASSERT_EQ(allowed, (std::vector<std::string>{"http://127.0.0.1:8080", "http://localhost:8080"}));
  EXPECT_FALSE(check_ws_upgrade(upgrade_request("http://localhost:8080"), allowed));
  EXPECT_FALSE(check_ws_upgrade(upgrade_request("HTTP://LOCALHOST:8080"), allowed));
  EXPECT_FALSE(check_ws_upgrade(upgrade_request(std::nullopt), allowed));
  for (const char* origin :
       {"http://localhost:8081", "https://localhost:8080", "http://evil.example", "null"}) {
    auto refused = check_ws_upgrade(upgrade_request(origin), allowed);
    ASSERT_TRUE(refused) << origin;
    EXPECT_EQ(refused->result(), beast::http::status::forbidden);
    EXPECT_EQ(boost::json::parse(refused->body()).at("error"), "forbidden_origin");
  }
  EXPECT_FALSE(check_ws_upgrade(upgrade_request("http://evil.example"), parse_origins("*")));
}

TEST(WsUpgrade, OnlyAValidUpgradeIsAdmitted) {
  const std::vector<std::string> any{"*"};
  auto plain = upgrade_request(std::nullopt);
  plain.erase(beast::http::field::upgrade);
  auto refused = check_ws_upgrade(plain, any);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result(), beast::http::status::upgrade_required);
  EXPECT_EQ(boost::json::parse(refused->body()).at("error"), "upgrade_required");

  auto old_version = upgrade_request(std::nullopt);
  old_version.set(beast::http::field::sec_websocket_version, "8");
  refused = check_ws_upgrade(old_version, any);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result(), beast::http::status::upgrade_required);
  EXPECT_EQ((*refused)[beast::http::field::sec_websocket_version], "13");

  auto no_key = upgrade_request(std::nullopt);
  no_key.erase(beast::http::field::sec_websocket_key);
  refused = check_ws_upgrade(no_key, any);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->result(), beast::http::status::bad_request);
}

}  // namespace
}  // namespace rtmc::gateway
