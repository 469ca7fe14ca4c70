#pragma once
// One client connection's protocol core, whatever carries its bytes (see
// transport.hpp): auth state, request dispatch (auth, join, leave, send,
// refresh, ping, status, members), acks in send order, per-room ordering
// (RoomStreams), presence reports (PresencePort), the login session
// re-check, the idle cut, the per-connection bounds, and every close
// decision; history pages (HistoryReader) for any authenticated connection.
// It reaches the stores only through ports.hpp, so its unit tests run with
// fakes and no sockets.
//
// Threading: a ClientConnection lives on one executor (the io thread it was
// accepted on) for its whole life; every member is touched only there.
// Other threads reach it by posting there (IoThread::deliver, publisher
// confirms).
//
// Closing is one state: open -> closing (the reason is counted and logged,
// the transport writes a last error frame if any and closes, presence hears
// disconnected(), the cleanup hook runs) -> closed (the hook has finished).
// Each step happens once.
//
// Presence: connected() is reported before auth_ok, joined() after the
// room's seq was read and before `joined`, left() after `left`, and
// disconnected() once in the close step with the rooms whose joined() was
// recorded and not left. A close while connected() or joined() is in flight
// cannot count on the close step (it ran before the record existed), so the
// coroutine that awaited the call undoes what it recorded itself.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "auth/room_access.hpp"
#include "gateway/close_reason.hpp"
#include "gateway/connection_index.hpp"
#include "gateway/fifo.hpp"
#include "gateway/gateway.hpp"
#include "gateway/ports.hpp"
#include "gateway/room_cursor.hpp"
#include "gateway/room_stream.hpp"
#include "gateway/transport.hpp"
#include "protocol/frames.hpp"

namespace rtmc::auth {
class TokenService;
}

namespace rtmc::gateway {

class ClientConnection;

// What every connection of a gateway shares; all of it is safe to use from
// any io thread.
struct ConnectionServices {
  const GatewayConfig& config;
  const auth::TokenService& tokens;
  const auth::RoomAccess& access;
  LoginSessions& login_sessions;
  RoomReader& rooms;
  IngestPublisher& ingest;
  SendLimiter& send_limiter;
  PresencePort& presence;
  LocalRooms& local_rooms;
  GatewayCounters& counters;
  // Runs once per connection when it starts closing, on its executor, after
  // it left its rooms and after presence.disconnected() (if it had
  // connected); the connection is `closed` when it returns. May be empty.
  std::function<boost::asio::awaitable<void>(const ClientConnection&)> cleanup;
  // Serves `history`; null: every history request is answered `unavailable`.
  HistoryReader* history = nullptr;
};

class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  enum class State { open, closing, closed };

  ClientConnection(boost::asio::any_io_executor executor, ConnectionServices& services,
                   ConnectionIndex& index, std::shared_ptr<Transport> transport);
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  // Registers with the io thread's index and starts the auth deadline.
  void start();

  // ---- from the transport
  // One protocol line (without '\n', not blank). The transport reads no
  // further line until this returns (it may wait: Redis, back-pressure).
  boost::asio::awaitable<void> on_line(std::string_view line);
  // A complete line arrived (even a blank one, even one that will earn an
  // error): the client is alive. Partial bytes are not a sign of life: a
  // peer trickling a line forever must still be cut.
  void touch() { last_line_ = std::chrono::steady_clock::now(); }
  // False once closing: the transport stops reading.
  bool reading() const { return state_ == State::open; }
  // A framing error the transport found: frame_too_large (fatal), or
  // bad_frame for a WebSocket binary message (not fatal; unauthorized,
  // fatal, before auth).
  void fail_framing(protocol::ErrorCode code, std::string_view message);
  // A write the transport had to wait for has completed (its queue shrank):
  // a queue back under the soft limit stops the soft clock. Writes that
  // complete at once need no call: the queue only stays over the soft limit
  // while a write waits for the socket.
  void on_drained();

  // ---- from the io thread
  // A sequenced frame of a room this connection may be in; queued but not
  // written: the transport writes after the io thread's batch.
  void deliver(const RoomKey& room, std::int64_t seq, const SharedFrame& frame);
  void deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame) {
    deliver(RoomKey(room), seq, frame);
  }
  // Starts loading what deliver() reads (the caller walks a room's members
  // and calls this some members ahead of the one it serves).
  void prefetch_delivery() const {
    __builtin_prefetch(this);
    __builtin_prefetch(reinterpret_cast<const char*>(&streams_) + 64);
  }
  // The second step, a few members later: this object's lines are loaded
  // by now, so the addresses of the transport and of the room entry can be
  // read.
  void prefetch_transport() const {
    __builtin_prefetch(transport_.get());
    __builtin_prefetch(streams_.prefetch_hint());
  }
  // Seqs [from, to] of a room that the fan-out thread could not read from
  // the log; `frame` is their `gap` frame. Queued in the room's order.
  void deliver_gap(const std::string& room, std::int64_t from, std::int64_t to, const SharedFrame& frame);
  // A presence event about `user` in `room` (not sequenced): queued like a
  // delivery if this connection's join of the room was recorded and it is
  // not `user`'s own connection; else ignored.
  void deliver_presence(const std::string& room, const std::string& user, const SharedFrame& frame);

  // Ends the connection (no error frame unless the reason has one).
  void close(CloseReason reason);
  // The gateway stops (or must drop its clients): a fatal `server_shutdown`
  // error frame saying `message`, then close.
  void shutdown(std::string_view message = "the server is shutting down; reconnect");

  State state() const { return state_; }
  const std::string& user() const { return user_; }
  // Unique per gateway process (GatewayCounters::next_connection_id).
  std::uint64_t id() const { return id_; }
  bool authenticated() const { return authenticated_; }

 private:
  boost::asio::awaitable<void> on_auth(protocol::AuthRequest request, protocol::Ref ref);
  // Moves the connection to another live token of its user: the session
  // re-check and the expiry cut follow the new token from then on.
  boost::asio::awaitable<void> on_refresh(protocol::RefreshRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_join(protocol::JoinRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_leave(protocol::LeaveRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_send(protocol::SendRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_status(protocol::StatusRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_members(protocol::MembersRequest request, protocol::Ref ref);
  boost::asio::awaitable<void> on_history(protocol::HistoryRequest request, protocol::Ref ref);
  // One timer serves every deadline of the connection: the auth deadline
  // (before auth), the idle cut, and the login session re-check every
  // heartbeat (after auth). A plain completion handler rather than a
  // coroutine per deadline: an idle connection holds one pending wait and
  // no coroutine frame (docs/operations.md, memory per connection).
  void arm_watch();
  void on_watch();
  boost::asio::awaitable<void> check_login_session();
  // Presence calls that must not fail the connection: errors are logged.
  boost::asio::awaitable<void> report_left(std::string room);
  boost::asio::awaitable<void> report_disconnected(std::string user, std::vector<std::string> rooms);
  // Reads the room log and hands it out, chunk by chunk, each started only
  // once the send queue has drained below a quarter of its bound: a
  // replay or a repair of any length never cuts the client as a slow
  // consumer. Starts with `next` or, without it, with what was read already.
  boost::asio::awaitable<void> repair(std::string room, std::uint64_t membership,
                                      std::optional<RoomStreams::Repair> next);
  boost::asio::awaitable<void> wait_for_send_queue();
  std::size_t replay_budget() const;
  boost::asio::awaitable<void> run_cleanup(bool connected, std::vector<std::string> rooms);
  void on_confirmed(std::uint64_t number, std::string reply);

  void reply(std::string frame);
  // An error for the client. Fatal codes close the connection after the
  // frame; so does any code given a `reason` (a non-fatal code such as
  // `unavailable` that still ends the connection, e.g. lost_sync).
  void fail(protocol::ErrorCode code, std::string_view message, const protocol::Ref& ref,
            std::optional<CloseReason> reason = std::nullopt);
  void close_with(CloseReason reason, SharedFrame last, bool drop_queued);
  // Hands what RoomStreams produced to the transport; starts its repair.
  void emit(RoomStreams::Output& out);
  void count_gaps(const RoomStreams::Output& out);
  // Queues a frame if the send-queue limits allow, else cuts a slow
  // consumer.
  bool enqueue(SharedFrame frame, Transport::Flush when);
  // Bytes owed to the client: queued in the transport, and held for a join
  // or a repair (owed as much as queued ones).
  std::size_t owed_bytes() const;
  // The limits applied to the queue with `extra` more bytes: over the hard
  // limit the client is cut (false); over the soft limit the soft clock
  // starts, if it is not running, and a watch cuts the client when it is
  // still over the soft limit once the soft time has passed; under it the
  // clock stops.
  bool within_send_limits(std::size_t extra);
  boost::asio::awaitable<void> soft_limit_watch();
  enum class SlowCut { hard, soft };
  void cut_slow_consumer(SlowCut why = SlowCut::hard);
  std::function<void(std::exception_ptr)> on_coroutine_end();

  boost::asio::any_io_executor executor_;
  ConnectionServices& services_;
  ConnectionIndex& index_;
  std::shared_ptr<Transport> transport_;
  // What every delivery reads, next to the transport pointer: with
  // thousands of members a delivery is bound by cache misses (profile in
  // bench/README.md), so these share the object's first lines.
  State state_ = State::open;
  RoomStreams streams_;
  boost::asio::steady_timer watch_timer_;
  boost::asio::steady_timer send_slot_;
  // Made the first time the queue goes over the soft limit: a connection
  // that never does pays one pointer for it.
  std::unique_ptr<boost::asio::steady_timer> soft_timer_;
  // When the queue went over the soft limit; time_point{} when it is not.
  std::chrono::steady_clock::time_point over_soft_since_{};
  bool soft_watch_running_ = false;

  const std::uint64_t id_;
  bool authenticated_ = false;
  // connected() returned while open: the close step reports disconnected().
  bool presence_connected_ = false;
  // Rooms whose joined() returned while open and that were not left since;
  // handed to disconnected() by the close step (and emptied then).
  std::set<std::string> presence_rooms_;
  std::string user_;
  std::string jti_;
  std::int64_t token_expires_at_ms_ = 0;
  std::chrono::steady_clock::time_point last_line_;
  // Before auth: the auth deadline; after: the next login session re-check.
  std::chrono::steady_clock::time_point next_check_;
  bool session_check_running_ = false;
  RoomStreams::Output out_;  // reused: the delivery path allocates nothing

  // Acks go out in the order of the sends even when confirms do not.
  struct PendingSend {
    std::string reply;  // empty until RabbitMQ answered
    std::size_t bytes = 0;
  };
  Fifo<PendingSend> unconfirmed_;  // empty on most connections: no memory then
  std::uint64_t first_unconfirmed_ = 0;
  std::size_t unconfirmed_bytes_ = 0;
};

}  // namespace rtmc::gateway
