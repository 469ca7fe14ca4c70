#pragma once
// One client connection. A Session lives on the io_context it was accepted
// on (one thread) for its whole life: every member is touched only from that
// thread, and other threads reach it by posting there (IoShard::deliver,
// publisher confirms).

#include "gateway/gateway.hpp"
#include "gateway/room_cursor.hpp"
#include "protocol/frames.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace rtmc::auth {
class TokenService;
}
namespace rtmc::redis {
class Client;
}
namespace rtmc::amqp {
class Publisher;
}

namespace rtmc::gateway {

class IoShard;
using SharedFrame = std::shared_ptr<const std::string>;

// A sequenced frame on its way from the fan-out thread to the io threads.
struct Sequenced {
  std::string room;
  std::int64_t seq = 0;
  SharedFrame frame;
};
// Frames that arrived together travel together: one post per io thread and
// one gathered write per session for the whole batch.
using SequencedBatch = std::vector<Sequenced>;

// Why a connection ended; logged once and counted.
enum class CloseReason {
  client_closed,
  read_error,
  write_error,
  unauthorized,
  auth_timeout,
  frame_too_large,
  slow_consumer,
  idle_timeout,
  server_shutdown,
  lost_sync,  // frames owed to the client could not be fetched from Redis
  count_
};
const char* to_string(CloseReason reason);

struct GatewayCounters {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> closed[static_cast<int>(CloseReason::count_)]{};
};

// What every session shares; all of it is safe to use from any io thread.
struct SessionContext {
  const GatewayConfig& config;
  const auth::TokenService& tokens;
  redis::Client& redis;
  amqp::Publisher& publisher;
  GatewayCounters& counters;
  RoomSeeds& room_seeds;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, SessionContext& context, IoShard& shard);
  void start();
  // A sequenced frame of a room this session is in; frames at or below the
  // seq reported by `joined` are dropped, frames arriving while the join is
  // still reading that seq are held until it is known.
  // The frame is queued but not written: IoShard calls flush_deferred()
  // once the whole batch is queued.
  void deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame);
  void flush_deferred();
  // Ends the connection; fatal errors go out first (bounded by a deadline).
  void close(CloseReason reason);

 private:
  boost::asio::awaitable<void> read_loop();
  boost::asio::awaitable<void> handle_line(std::string_view line);
  boost::asio::awaitable<void> on_auth(protocol::AuthRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_join(protocol::JoinRequest request, protocol::Ref ref);
  void on_leave(const protocol::LeaveRequest& request, const protocol::Ref& ref);
  boost::asio::awaitable<void> on_send(protocol::SendRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> auth_deadline();
  boost::asio::awaitable<void> session_watch();
  void on_confirmed(std::uint64_t number, std::string reply);

  void reply(std::string frame);
  // Fatal codes close the connection after the frame, for `reason` (derived
  // from the code when not given).
  void fail(protocol::ErrorCode code, std::string_view message, const protocol::Ref& ref,
            std::optional<CloseReason> reason = std::nullopt);
  std::function<void(std::exception_ptr)> on_coroutine_end();
  void enqueue(SharedFrame frame, bool flush_now = true);
  void flush();
  void finish_close();

  struct RoomState {
    // The seq `joined` reported, then the last seq handed to the client.
    std::int64_t last_seq = 0;
    // A join or a repair is in flight; frames wait in `held`.
    bool pending = true;
    std::vector<std::pair<std::int64_t, SharedFrame>> held;
    // Tells a repair that finishes after a leave and a new join of the same
    // room that the state it was started for is gone.
    std::uint64_t membership = 0;
  };
  // Hands frames on in seq order; a hole starts a repair from the room log.
  void accept(const std::string& room, RoomState& state, std::int64_t seq, const SharedFrame& frame);
  void release_held(const std::string& room, RoomState& state);
  boost::asio::awaitable<void> repair(std::string room, std::uint64_t membership, std::int64_t from,
                                      std::int64_t to);
  struct PendingSend {
    std::string reply;  // empty until RabbitMQ answered
  };

  boost::asio::ip::tcp::socket socket_;
  SessionContext& context_;
  IoShard& shard_;
  boost::asio::steady_timer auth_timer_;
  boost::asio::steady_timer watch_timer_;
  boost::asio::steady_timer send_slot_;
  boost::asio::steady_timer close_timer_;

  bool authenticated_ = false;
  std::string user_;
  std::string jti_;
  std::int64_t token_expires_at_ms_ = 0;
  std::chrono::steady_clock::time_point last_inbound_;
  std::unordered_map<std::string, RoomState> rooms_;
  std::uint64_t memberships_ = 0;

  // Acks go out in the order of the sends even when confirms do not.
  std::deque<PendingSend> unconfirmed_;
  std::uint64_t first_unconfirmed_ = 0;

  std::deque<SharedFrame> queue_;
  std::vector<SharedFrame> in_flight_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool flush_deferred_ = false;
  bool closing_ = false;       // no more reads or replies
  bool close_after_flush_ = false;
  bool closed_ = false;
};

}  // namespace rtmc::gateway
