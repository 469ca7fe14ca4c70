#include "gateway/client_connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

#include "auth/auth.hpp"
#include "common/names.hpp"

namespace rtmc::gateway {

namespace asio = boost::asio;
using protocol::ErrorCode;
using protocol::Ref;

namespace {
constexpr auto nothrow_awaitable = asio::as_tuple(asio::use_awaitable);
// Seqs per room-log read of a replay or a repair.
constexpr std::int64_t kReplayChunk = 100;
// How often a connection stopped only by the shared ingest backlog looks
// again (nothing of its own wakes it then).
constexpr std::chrono::milliseconds kBacklogPoll{10};

// Names are unique regardless of case (common/names.hpp) and ASCII.
bool same_user(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}
}  // namespace

const char* to_string(CloseReason reason) {
  switch (reason) {
    case CloseReason::client_closed: return "client_closed";
    case CloseReason::read_error: return "read_error";
    case CloseReason::write_error: return "write_error";
    case CloseReason::unauthorized: return "unauthorized";
    case CloseReason::auth_timeout: return "auth_timeout";
    case CloseReason::frame_too_large: return "frame_too_large";
    case CloseReason::slow_consumer: return "slow_consumer";
    case CloseReason::idle_timeout: return "idle_timeout";
    case CloseReason::server_shutdown: return "server_shutdown";
    case CloseReason::lost_sync: return "lost_sync";
    case CloseReason::server_full: return "server_full";
    case CloseReason::internal: return "internal";
    case CloseReason::count_: break;
  }
  return "unknown";
}

const char* to_string(TransportKind kind) {
  switch (kind) {
    case TransportKind::tcp: return "tcp";
    case TransportKind::ws: return "ws";
    case TransportKind::count_: break;
  }
  return "unknown";
}

ClientConnection::ClientConnection(asio::any_io_executor executor, ConnectionServices& services,
                                   ConnectionIndex& index, std::shared_ptr<Transport> transport)
    : executor_(std::move(executor)),
      services_(services),
      index_(index),
      transport_(std::move(transport)),
      streams_(RoomStreams::Limits{services_.config.send_queue_bytes / 4, kReplayChunk}),
      watch_timer_(executor_),
      send_slot_(executor_),
      id_(services_.counters.next_connection_id.fetch_add(1, std::memory_order_relaxed)),
      last_line_(std::chrono::steady_clock::now()) {}

void ClientConnection::start() {
  index_.add(shared_from_this());
  next_check_ = std::chrono::steady_clock::now() + services_.config.auth_timeout;
  arm_watch();
}

// The timer waits for the earliest deadline: the idle one (the last line's,
// re-checked on waking, since a line may have come meanwhile: a silent
// connection is cut no earlier than the timeout and no later than the
// timer's own latency after it), and the auth deadline or the next session
// re-check. The handler holds the connection; the close step cancels it.
void ClientConnection::arm_watch() {
  const auto idle_deadline = last_line_ + services_.config.effective_idle_timeout();
  watch_timer_.expires_at(std::min(idle_deadline, next_check_));
  watch_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->on_watch();
  });
}

void ClientConnection::on_watch() {
  if (state_ != State::open) return;
  const auto now = std::chrono::steady_clock::now();
  if (now >= last_line_ + services_.config.effective_idle_timeout()) {
    close(CloseReason::idle_timeout);
    return;
  }
  if (now >= next_check_) {
    if (!authenticated_) {
      fail(ErrorCode::unauthorized, "no auth frame within the auth timeout", std::nullopt,
           CloseReason::auth_timeout);
      return;
    }
    next_check_ = now + services_.config.heartbeat;
    // A check still waiting for Redis (it has a deadline) is not doubled.
    if (!session_check_running_) {
      session_check_running_ = true;
      asio::co_spawn(executor_, check_login_session(), on_coroutine_end());
    }
  }
  arm_watch();
}

// A bug must cost one connection, not the process or a silently stuck
// connection: any exception escaping a connection coroutine closes it.
std::function<void(std::exception_ptr)> ClientConnection::on_coroutine_end() {
  return [self = shared_from_this()](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("connection of '{}' failed: {}", self->user_, e.what());
    }
    self->fail(ErrorCode::internal, "internal error", std::nullopt, CloseReason::internal);
  };
}

asio::awaitable<void> ClientConnection::on_line(std::string_view line) {
  if (state_ != State::open) co_return;
  protocol::ParseLimits limits{services_.config.common.limits.max_body_bytes, services_.config.max_ref_bytes};
  auto parsed = protocol::parse_client_frame(line, limits);
  auto& traffic = services_.counters.traffic;
  if (auto* error = std::get_if<protocol::FrameError>(&parsed)) {
    traffic.count_in(FrameIn::invalid);
    if (!authenticated_)
      fail(ErrorCode::unauthorized, "the first frame must be a valid auth frame (" + error->message + ")",
           error->ref);
    else
      fail(error->code, error->message, error->ref);
    co_return;
  }
  auto& frame = std::get<protocol::Frame>(parsed);
  traffic.count_in(frame_in_type(frame.request));
  if (auto* auth = std::get_if<protocol::AuthRequest>(&frame.request)) {
    co_await on_auth(std::move(*auth), std::move(frame.ref));
    co_return;
  }
  if (!authenticated_) {
    fail(ErrorCode::unauthorized, "the first frame must be auth", frame.ref);
    co_return;
  }
  if (auto* join = std::get_if<protocol::JoinRequest>(&frame.request)) {
    co_await on_join(std::move(*join), std::move(frame.ref));
  } else if (auto* leave = std::get_if<protocol::LeaveRequest>(&frame.request)) {
    co_await on_leave(std::move(*leave), std::move(frame.ref));
  } else if (auto* send = std::get_if<protocol::SendRequest>(&frame.request)) {
    co_await on_send(std::move(*send), std::move(frame.ref));
  } else if (auto* status = std::get_if<protocol::StatusRequest>(&frame.request)) {
    co_await on_status(std::move(*status), std::move(frame.ref));
  } else if (auto* members = std::get_if<protocol::MembersRequest>(&frame.request)) {
    co_await on_members(std::move(*members), std::move(frame.ref));
  } else if (auto* history = std::get_if<protocol::HistoryRequest>(&frame.request)) {
    co_await on_history(std::move(*history), std::move(frame.ref));
  } else if (auto* refresh = std::get_if<protocol::RefreshRequest>(&frame.request)) {
    co_await on_refresh(std::move(*refresh), std::move(frame.ref));
  } else if (std::holds_alternative<protocol::PingRequest>(frame.request)) {
    reply(protocol::pong_frame(frame.ref));
  }
}

asio::awaitable<void> ClientConnection::on_auth(protocol::AuthRequest request, Ref ref) {
  if (authenticated_) {
    fail(ErrorCode::bad_frame, "already authenticated", ref);
    co_return;
  }
  auto claims = services_.tokens.verify(request.token, now_ms());
  if (!claims) {
    fail(ErrorCode::unauthorized, "invalid or expired token", ref);
    co_return;
  }
  bool exists = false;
  try {
    exists = co_await services_.login_sessions.exists(claims->jti);
  } catch (const std::exception& error) {
    spdlog::warn("auth: login sessions unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot check the session now; retry", ref);
    co_return;
  }
  if (state_ != State::open) co_return;
  if (!exists) {
    fail(ErrorCode::unauthorized, "session ended (logged out or expired)", ref);
    co_return;
  }
  // Not fatal: the token is fine, only the online record could not be made;
  // the client may send its auth again.
  try {
    auto step = services_.presence.connected(id_, claims->user);
    co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::warn("auth: presence unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot record the connection now; retry", ref);
    co_return;
  }
  if (state_ != State::open) {
    // The close step ran while connected() was in flight and knew nothing of
    // the record: undo it here.
    std::vector<std::string> no_rooms;
    co_await report_disconnected(claims->user, std::move(no_rooms));
    co_return;
  }
  presence_connected_ = true;
  authenticated_ = true;
  user_ = claims->user;
  jti_ = claims->jti;
  token_expires_at_ms_ = claims->expires_at_ms;
  // The watch timer was armed for the auth deadline, which may lie beyond the
  // first session re-check (a heartbeat shorter than the auth timeout):
  // re-armed, so a logout is noticed within one period from here.
  next_check_ = std::chrono::steady_clock::now() + services_.config.heartbeat;
  arm_watch();
  reply(protocol::auth_ok_frame(user_, static_cast<int>(services_.config.heartbeat.count()), ref));
}

// Every refusal is a non-fatal bad_frame: the connection's own token is
// still good, only the offered one is not. The transport reads no further
// line meanwhile, so two refreshes never overlap.
asio::awaitable<void> ClientConnection::on_refresh(protocol::RefreshRequest request, Ref ref) {
  auto claims = services_.tokens.verify(request.token, now_ms());
  if (!claims) {
    fail(ErrorCode::bad_frame, "refresh: invalid or expired token", ref);
    co_return;
  }
  if (!same_user(claims->user, user_)) {
    fail(ErrorCode::bad_frame, "refresh: the token is another user's", ref);
    co_return;
  }
  bool exists = false;
  try {
    exists = co_await services_.login_sessions.exists(claims->jti);
  } catch (const std::exception& error) {
    spdlog::warn("refresh: login sessions unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot check the session now; retry", ref);
    co_return;
  }
  if (state_ != State::open) co_return;
  if (!exists) {
    fail(ErrorCode::bad_frame, "refresh: session ended (logged out or expired)", ref);
    co_return;
  }
  jti_ = claims->jti;
  token_expires_at_ms_ = claims->expires_at_ms;
  reply(protocol::refreshed_frame(user_, token_expires_at_ms_, ref));
}

asio::awaitable<void> ClientConnection::check_login_session() {
  auto self = shared_from_this();
  struct Done {
    bool& running;
    ~Done() { running = false; }
  } done{session_check_running_};
  if (state_ != State::open) co_return;
  if (now_ms() >= token_expires_at_ms_) {
    fail(ErrorCode::unauthorized, "token expired", std::nullopt);
    co_return;
  }
  // A refresh while the check waits moves the connection to another
  // session: the answer about the old one no longer decides anything.
  const std::string jti = jti_;
  try {
    const bool exists = co_await services_.login_sessions.exists(jti);
    if (state_ != State::open || jti != jti_) co_return;
    if (!exists) fail(ErrorCode::unauthorized, "session ended (logged out)", std::nullopt);
  } catch (const std::exception& error) {
    // The store being away is no reason to drop everyone; check next period.
    spdlog::debug("login session check skipped: {}", error.what());
  }
}

// A join with `since` answers `joined` (with `recovered`), then replays
// (since, seq] from the room log, then goes live; RoomStreams holds the live
// frames meanwhile, so the seam has neither gap nor duplicate. `since` above
// the room's seq is a bad_frame and the join does not happen (a membership it
// started is undone). A join of a room the connection is already in changes
// nothing and answers `joined` with the current seq; with `since` it also
// replays nothing and says `recovered: false` (the client pages history for
// anything it thinks it missed): that connection's stream already has no hole.
asio::awaitable<void> ClientConnection::on_join(protocol::JoinRequest request, Ref ref) {
  if (!services_.access.allowed(user_, request.room, auth::RoomAccess::Action::join)) {
    fail(ErrorCode::forbidden, "room " + request.room + " is not open to you", ref);
    co_return;
  }
  auto join = streams_.join(request.room, services_.config.max_rooms_per_connection);
  if (join.result == RoomStreams::JoinResult::too_many_rooms) {
    fail(ErrorCode::too_many_rooms,
         "a connection may be in at most " + std::to_string(services_.config.max_rooms_per_connection) +
             " rooms",
         ref);
    co_return;
  }
  const bool added = join.result == RoomStreams::JoinResult::added;
  if (added) index_.join(request.room, shared_from_this());
  auto undo_membership = [&] {
    if (!added) return;
    streams_.abandon(request.room, join.membership);
    if (!streams_.contains(request.room)) index_.leave(request.room, this);
  };
  std::int64_t seq = 0;
  try {
    seq = co_await services_.rooms.current_seq(request.room);
  } catch (const std::exception& error) {
    spdlog::warn("join: room store unavailable: {}", error.what());
    if (state_ != State::open) co_return;
    undo_membership();
    fail(ErrorCode::unavailable, "cannot join now; retry", ref);
    co_return;
  }
  if (state_ != State::open) co_return;
  if (request.since && *request.since > seq) {
    undo_membership();
    fail(ErrorCode::bad_frame,
         "\"since\" " + std::to_string(*request.since) + " is above room " + request.room + "'s seq " +
             std::to_string(seq),
         ref);
    co_return;
  }
  // The first chunk of the replay is read before `joined`, which must say
  // whether the log still starts at since + 1.
  std::optional<RoomStreams::Repair> first;
  std::vector<RoomReader::LogFrame> first_frames;
  bool recovered = false;
  if (request.since && added) {
    recovered = *request.since == seq;
    if (!recovered) {
      first = streams_.replay_start(request.room, join.membership, *request.since, seq);
      try {
        first_frames = co_await services_.rooms.range(first->room, first->from, first->to);
      } catch (const std::exception& error) {
        spdlog::warn("join: room log unavailable: {}", error.what());
        if (state_ != State::open) co_return;
        undo_membership();
        fail(ErrorCode::unavailable, "cannot join now; retry", ref);
        co_return;
      }
      if (state_ != State::open) co_return;
      recovered = !first_frames.empty() && first_frames.front().first == *request.since + 1;
    }
    auto& counter = recovered ? services_.counters.resumed : services_.counters.not_recovered;
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  if (added) {
    try {
      auto step = services_.presence.joined(request.room, user_);
      co_await std::move(step);
    } catch (const std::exception& error) {
      spdlog::warn("join: presence unavailable: {}", error.what());
      if (state_ != State::open) co_return;
      undo_membership();
      fail(ErrorCode::unavailable, "cannot join now; retry", ref);
      co_return;
    }
    if (state_ != State::open) {
      // The close step ran while joined() was in flight and did not list
      // this room: undo the record here.
      co_await report_left(request.room);
      co_return;
    }
    presence_rooms_.insert(request.room);
  }
  // The fan-out thread learns where this gateway's clients start: it binds
  // the room if it is new here and catches up from seq, repairs gaps and
  // catches up after reconnects (LocalRooms, fanout.cpp). `joined` waits for
  // the binding (bounded: the fan-out may have no broker now).
  if (added && services_.config.join_bind_wait.count() > 0) {
    auto bound = std::make_shared<asio::steady_timer>(executor_, services_.config.join_bind_wait);
    // Holds the timer weakly: LocalRooms keeps the callback until the
    // fan-out's next take (none while RabbitMQ is away) and is destroyed
    // after the io threads, so owning the timer there would destroy it
    // after its io_context.
    services_.local_rooms.joined(request.room, seq, [executor = executor_, weak = std::weak_ptr(bound)] {
      asio::post(executor, [weak] {
        if (auto timer = weak.lock()) timer->cancel();
      });
    });
    co_await bound->async_wait(nothrow_awaitable);
    if (state_ != State::open) co_return;
  } else if (added) {
    services_.local_rooms.joined(request.room, seq);
  }
  reply(request.since ? protocol::joined_frame(request.room, seq, recovered, ref)
                      : protocol::joined_frame(request.room, seq, ref));
  // The reply may have closed the connection (its queue over the bound) and
  // so cleared every stream: look the room up again, by name and membership.
  if (!added || state_ != State::open) co_return;
  out_.clear();
  if (!first || !recovered) {
    streams_.joined(request.room, join.membership, seq, out_);
    emit(out_);
    co_return;
  }
  if (streams_.resume(*first, std::move(first_frames), seq, replay_budget(), out_) !=
      RoomStreams::RepairResult::applied)
    co_return;
  const bool reading = out_.repair.has_value();
  emit(out_);
  if (!reading && state_ == State::open && streams_.buffered(request.room, join.membership))
    asio::co_spawn(executor_, repair(request.room, join.membership, std::nullopt), on_coroutine_end());
}

asio::awaitable<void> ClientConnection::on_leave(protocol::LeaveRequest request, Ref ref) {
  if (!streams_.leave(request.room)) {
    fail(ErrorCode::not_joined, "not in room " + request.room, ref);
    co_return;
  }
  index_.leave(request.room, this);
  // Forgotten before the reply, which may close the connection: the close
  // step must not report the room as well.
  const bool recorded = presence_rooms_.erase(request.room) > 0;
  reply(protocol::left_frame(request.room, ref));
  if (recorded) co_await report_left(request.room);
}

asio::awaitable<void> ClientConnection::on_status(protocol::StatusRequest request, Ref ref) {
  // A name no one can register needs no store round trip.
  if (!valid_user_name(request.user)) {
    fail(ErrorCode::not_found, "no such user", ref);
    co_return;
  }
  std::optional<UserStatusView> view;
  try {
    auto step = services_.presence.status(request.user);
    view = co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::warn("status: store unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot look the user up now; retry", ref);
    co_return;
  }
  if (!view) {
    fail(ErrorCode::not_found, "no user " + request.user, ref);
    co_return;
  }
  reply(protocol::status_frame(view->user, view->online, view->last_seen_ms, ref));
}

asio::awaitable<void> ClientConnection::on_members(protocol::MembersRequest request, Ref ref) {
  if (!presence_rooms_.contains(request.room)) {
    fail(ErrorCode::not_joined, "join room " + request.room + " before listing its members", ref);
    co_return;
  }
  std::vector<std::string> users;
  try {
    auto step = services_.presence.members(request.room);
    users = co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::warn("members: store unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot list the members of room " + request.room + " now; retry", ref);
    co_return;
  }
  reply(protocol::members_frame(request.room, users, ref));
}

// No membership needed: a client pages a room's history before joining it
// (the chat client shows recent messages on join). The reply is one frame,
// so it is kept within half the send queue's byte bound, dropping the
// messages farthest from the bound; the client pages on from what it got.
asio::awaitable<void> ClientConnection::on_history(protocol::HistoryRequest request, Ref ref) {
  if (!services_.access.allowed(user_, request.room, auth::RoomAccess::Action::read)) {
    fail(ErrorCode::forbidden, "room " + request.room + " is not open to you", ref);
    co_return;
  }
  std::vector<SharedFrame> frames;
  try {
    if (services_.history == nullptr) throw std::runtime_error("no history reader");
    auto step = services_.history->messages(request);
    frames = co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::warn("history: store unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot read the history of room " + request.room + " now; retry", ref);
    co_return;
  }
  if (state_ != State::open) co_return;
  const bool keep_oldest = request.after_seq.has_value();
  const std::size_t budget = services_.config.send_queue_bytes / 2;
  std::size_t bytes = 0;
  for (const auto& frame : frames) bytes += frame->size();
  std::size_t first = 0;
  std::size_t end = frames.size();
  while (first < end && bytes > budget) {
    bytes -= frames[keep_oldest ? end - 1 : first]->size();
    keep_oldest ? --end : ++first;
  }
  std::vector<std::string_view> views;
  views.reserve(end - first);
  for (auto i = first; i < end; ++i) views.emplace_back(*frames[i]);
  reply(protocol::history_frame(request.room, views, ref));
}

asio::awaitable<void> ClientConnection::report_left(std::string room) {
  try {
    auto step = services_.presence.left(room, user_);
    co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::error("presence: leave of room {} by '{}' not recorded: {}", room, user_, error.what());
  }
}

asio::awaitable<void> ClientConnection::report_disconnected(std::string user,
                                                            std::vector<std::string> rooms) {
  try {
    auto step = services_.presence.disconnected(id_, std::move(user), std::move(rooms));
    co_await std::move(step);
  } catch (const std::exception& error) {
    spdlog::error("presence: disconnect of connection {} not recorded: {}", id_, error.what());
  }
}

asio::awaitable<void> ClientConnection::on_send(protocol::SendRequest request, Ref ref) {
  if (!streams_.contains(request.room)) {
    fail(ErrorCode::not_joined, "join room " + request.room + " before sending to it", ref);
    co_return;
  }
  if (!services_.access.allowed(user_, request.room, auth::RoomAccess::Action::send)) {
    fail(ErrorCode::forbidden, "you may not send to room " + request.room, ref);
    co_return;
  }
  bool allowed = false;
  try {
    allowed = co_await services_.send_limiter.allow(user_, request.room);
  } catch (const std::exception& error) {
    // Never dropped in silence: the client is told to retry.
    spdlog::warn("send: rate limits unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "message " + request.id + " was not accepted; retry it", ref);
    co_return;
  }
  if (state_ != State::open) co_return;
  if (!allowed) {
    services_.counters.traffic.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail(ErrorCode::rate_limited, "message " + request.id + " was not accepted: too many sends; retry later",
         ref);
    co_return;
  }
  const std::size_t bytes = request.room.size() + request.id.size() + user_.size() + request.body.size();
  // Back-pressure: stop reading this client until RabbitMQ catches up, by
  // count and by bytes (one send always fits, however large), and while the
  // publisher's backlog of all connections is full (overload: the sender is
  // slowed, never refused). Its own confirms wake it (on_confirmed); a
  // backlog of other connections' sends does not, so that is polled.
  const auto& config = services_.config;
  for (;;) {
    if (state_ != State::open) co_return;
    const bool own_bound =
        unconfirmed_.size() >= config.max_unconfirmed_sends ||
        (unconfirmed_bytes_ > 0 && unconfirmed_bytes_ + bytes > config.max_unconfirmed_bytes);
    if (!own_bound && services_.ingest.has_room()) break;
    if (own_bound || !unconfirmed_.empty()) {
      send_slot_.expires_at(std::chrono::steady_clock::time_point::max());
    } else {
      send_slot_.expires_after(kBacklogPoll);
    }
    co_await send_slot_.async_wait(nothrow_awaitable);
    // Not read because of the gateway's own back-pressure: the silence is
    // ours, so it must not earn the client an idle cut.
    touch();
  }
  if (state_ != State::open) co_return;
  const auto number = first_unconfirmed_ + unconfirmed_.size();
  unconfirmed_.push_back({{}, bytes});
  unconfirmed_bytes_ += bytes;
  auto answer_ack = protocol::ack_frame(request.room, request.id, ref);
  auto answer_error = protocol::error_frame(ErrorCode::unavailable,
                                            "message " + request.id + " was not accepted; retry it", ref);
  // The publisher's callback may run after this connection is gone, never
  // after the gateway's counters (they outlive the publisher).
  auto& confirm_latency = services_.counters.traffic.publish_confirm;
  const auto published = std::chrono::steady_clock::now();
  services_.ingest.publish(
      protocol::IngestMessage{request.room, request.id, user_, std::move(request.body), now_ms()},
      [self = weak_from_this(), executor = executor_, number, answer_ack = std::move(answer_ack),
       answer_error = std::move(answer_error), &confirm_latency,
       published](amqp::PublishStatus status) mutable {
        if (status == amqp::PublishStatus::confirmed)
          confirm_latency.observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - published).count());
        auto answer =
            status == amqp::PublishStatus::confirmed ? std::move(answer_ack) : std::move(answer_error);
        asio::post(executor, [self, number, answer = std::move(answer)]() mutable {
          if (auto connection = self.lock()) connection->on_confirmed(number, std::move(answer));
        });
      });
}

void ClientConnection::on_confirmed(std::uint64_t number, std::string answer) {
  if (number < first_unconfirmed_ || number - first_unconfirmed_ >= unconfirmed_.size()) return;
  auto& pending = unconfirmed_[number - first_unconfirmed_];
  if (!pending.reply.empty()) return;
  pending.reply = std::move(answer);
  unconfirmed_bytes_ -= pending.bytes;
  while (!unconfirmed_.empty() && !unconfirmed_.front().reply.empty()) {
    reply(std::move(unconfirmed_.front().reply));
    unconfirmed_.pop_front();
    ++first_unconfirmed_;
  }
  send_slot_.cancel();
}

void ClientConnection::deliver(const RoomKey& room, std::int64_t seq, const SharedFrame& frame) {
  if (state_ != State::open) return;
  // The common case: a live room and its next seq. enqueue() applies the
  // send-queue limits to the frame, as the general path does.
  switch (streams_.deliver_next(room, seq)) {
    case RoomStreams::Next::send:
      // The second check as on the general path: a send that wrote the
      // queue out at once stops a soft clock its first check started.
      if (enqueue(frame, Transport::Flush::after_batch) && state_ == State::open) within_send_limits(0);
      return;
    case RoomStreams::Next::not_in_room: return;
    case RoomStreams::Next::other: break;
  }
  out_.clear();
  streams_.deliver(room.name, seq, frame, out_);
  emit(out_);
  if (state_ == State::open) within_send_limits(0);
}

void ClientConnection::deliver_presence(const std::string& room, const std::string& user,
                                        const SharedFrame& frame) {
  if (state_ != State::open || same_user(user, user_) || !presence_rooms_.contains(room)) return;
  enqueue(frame, Transport::Flush::after_batch);
}

void ClientConnection::deliver_gap(const std::string& room, std::int64_t from, std::int64_t to,
                                   const SharedFrame& frame) {
  if (state_ != State::open) return;
  out_.clear();
  streams_.deliver_gap(room, from, to, frame, out_);
  emit(out_);
  if (state_ == State::open) within_send_limits(0);
}

void ClientConnection::emit(RoomStreams::Output& out) {
  count_gaps(out);
  for (auto& frame : out.frames)
    if (!enqueue(std::move(frame), Transport::Flush::after_batch)) return;
  if (out.repair) {
    auto room = out.repair->room;
    const auto membership = out.repair->membership;
    asio::co_spawn(executor_, repair(std::move(room), membership, std::move(out.repair)), on_coroutine_end());
  }
}

void ClientConnection::count_gaps(const RoomStreams::Output& out) {
  if (out.gaps == 0) return;
  services_.counters.gaps.fetch_add(out.gaps, std::memory_order_relaxed);
  services_.counters.gap_seqs.fetch_add(out.gap_seqs, std::memory_order_relaxed);
}

// What a replay chunk may add to the send queue: up to half the bound, less
// what is queued. Held frames (at most a quarter, RoomStreams::Limits) fill
// no more than the rest, so the replay alone never reaches the bound.
std::size_t ClientConnection::replay_budget() const {
  const std::size_t half = services_.config.send_queue_bytes / 2;
  const std::size_t queued = transport_->queued_bytes();
  return queued >= half ? 0 : half - queued;
}

// The transport has no "drained" event: a poll, only while a replay waits
// on a full queue. It starts short (a reading client drains fast) and backs
// off to 50 ms, so a client that stopped reading costs next to nothing
// until the idle or slow-consumer cut ends it.
asio::awaitable<void> ClientConnection::wait_for_send_queue() {
  const std::size_t low = services_.config.send_queue_bytes / 4;
  if (transport_->queued_bytes() <= low) co_return;
  asio::steady_timer timer(executor_);
  auto pause = std::chrono::milliseconds(1);
  while (state_ == State::open && transport_->queued_bytes() > low) {
    timer.expires_after(pause);
    co_await timer.async_wait(nothrow_awaitable);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

asio::awaitable<void> ClientConnection::repair(std::string room, std::uint64_t membership,
                                               std::optional<RoomStreams::Repair> next) {
  auto self = shared_from_this();
  RoomStreams::Output out;
  for (;;) {
    co_await wait_for_send_queue();
    if (state_ != State::open) co_return;
    out.clear();
    RoomStreams::RepairResult result;
    if (next) {
      std::optional<std::vector<RoomReader::LogFrame>> frames;
      try {
        frames = co_await services_.rooms.range(next->room, next->from, next->to);
      } catch (const std::exception& error) {
        spdlog::warn("repair of room {}: {}", room, error.what());
      }
      if (state_ != State::open) co_return;
      result = streams_.repaired(*next, std::move(frames), out, replay_budget());
    } else {
      result = streams_.pump(room, membership, replay_budget(), out);
    }
    if (result == RoomStreams::RepairResult::stale) co_return;
    if (result == RoomStreams::RepairResult::failed) {
      // Better a clear cut than a silent hole: the client rejoins and knows
      // from `joined` where it stands.
      fail(ErrorCode::unavailable, "messages of room " + room + " could not be recovered; reconnect",
           std::nullopt, CloseReason::lost_sync);
      co_return;
    }
    next = std::exchange(out.repair, std::nullopt);
    emit(out);
    if (state_ != State::open) co_return;
    if (!next && !streams_.buffered(room, membership)) co_return;
  }
}

void ClientConnection::reply(std::string frame) {
  if (state_ != State::open) return;
  services_.counters.traffic.count_out(frame);
  enqueue(std::make_shared<const std::string>(std::move(frame)), Transport::Flush::now);
}

std::size_t ClientConnection::owed_bytes() const {
  return transport_->queued_bytes() + streams_.held_bytes();
}

// Redis' client-output-buffer-limit: a burst may take the queue over the
// soft limit for a while, a client that does not drain stays over it. The
// clock costs nothing until the soft limit is crossed, and a timer exists
// only for connections that once crossed it.
bool ClientConnection::within_send_limits(std::size_t extra) {
  const auto& config = services_.config;
  const std::size_t bytes = owed_bytes() + extra;
  if (bytes > config.effective_send_queue_hard_bytes()) {
    cut_slow_consumer(SlowCut::hard);
    return false;
  }
  if (bytes <= config.send_queue_bytes) {
    over_soft_since_ = {};
    return true;
  }
  if (config.send_queue_soft_time.count() <= 0) {
    cut_slow_consumer(SlowCut::soft);
    return false;
  }
  if (over_soft_since_ == std::chrono::steady_clock::time_point{}) {
    over_soft_since_ = std::chrono::steady_clock::now();
    if (!soft_watch_running_) {
      soft_watch_running_ = true;
      if (!soft_timer_) soft_timer_ = std::make_unique<asio::steady_timer>(executor_);
      asio::co_spawn(executor_, soft_limit_watch(), on_coroutine_end());
    }
  }
  return true;
}

void ClientConnection::on_drained() {
  if (over_soft_since_ != std::chrono::steady_clock::time_point{} &&
      owed_bytes() <= services_.config.send_queue_bytes)
    over_soft_since_ = {};
}

// Wakes at the soft deadline of the current crossing; a clock stopped and
// restarted meanwhile moves the deadline. Ends when the queue is back under
// the soft limit, so an idle connection has no watch and no pending timer.
asio::awaitable<void> ClientConnection::soft_limit_watch() {
  auto self = shared_from_this();
  const auto soft_time = services_.config.send_queue_soft_time;
  while (state_ == State::open && over_soft_since_ != std::chrono::steady_clock::time_point{}) {
    if (owed_bytes() <= services_.config.send_queue_bytes) {
      over_soft_since_ = {};
      break;
    }
    const auto deadline = over_soft_since_ + soft_time;
    if (std::chrono::steady_clock::now() >= deadline) {
      cut_slow_consumer(SlowCut::soft);
      break;
    }
    soft_timer_->expires_at(deadline);
    co_await soft_timer_->async_wait(nothrow_awaitable);
  }
  soft_watch_running_ = false;
}

bool ClientConnection::enqueue(SharedFrame frame, Transport::Flush when) {
  if (state_ != State::open) return false;
  if (!within_send_limits(frame->size())) return false;
  transport_->send(std::move(frame), when);
  return true;
}

void ClientConnection::cut_slow_consumer(SlowCut why) {
  const auto& config = services_.config;
  std::string message =
      why == SlowCut::hard
          ? "send queue exceeded " + std::to_string(config.effective_send_queue_hard_bytes()) + " bytes"
          : "send queue stayed over " + std::to_string(config.send_queue_bytes) + " bytes for " +
                std::to_string(config.send_queue_soft_time.count()) + " ms";
  spdlog::info("connection of '{}' is a slow consumer: {} ({} bytes owed)", user_, message, owed_bytes());
  if (state_ == State::open) services_.counters.traffic.count_error(ErrorCode::slow_consumer);
  message += "; reconnect and catch up";
  // Whatever waits is dropped; the error frame jumps the limits.
  close_with(CloseReason::slow_consumer,
             std::make_shared<const std::string>(
                 protocol::error_frame(ErrorCode::slow_consumer, message, std::nullopt)),
             true);
}

void ClientConnection::fail(ErrorCode code, std::string_view message, const Ref& ref,
                            std::optional<CloseReason> reason) {
  if (state_ != State::open) return;
  if (code != ErrorCode::slow_consumer) services_.counters.traffic.count_error(code);
  if (!protocol::is_fatal(code) && !reason) {
    reply(protocol::error_frame(code, message, ref));
    return;
  }
  if (code == ErrorCode::slow_consumer) {
    cut_slow_consumer();
    return;
  }
  auto frame = std::make_shared<const std::string>(protocol::error_frame(code, message, ref));
  close_with(reason                               ? *reason
             : code == ErrorCode::frame_too_large ? CloseReason::frame_too_large
             : code == ErrorCode::server_shutdown ? CloseReason::server_shutdown
             : code == ErrorCode::server_full     ? CloseReason::server_full
                                                  : CloseReason::unauthorized,
             std::move(frame), false);
}

void ClientConnection::fail_framing(ErrorCode code, std::string_view message) {
  fail(code, message, std::nullopt);
}

void ClientConnection::shutdown(std::string_view message) {
  fail(ErrorCode::server_shutdown, message, std::nullopt);
}

void ClientConnection::close(CloseReason reason) {
  close_with(reason, nullptr, false);
}

void ClientConnection::close_with(CloseReason reason, SharedFrame last, bool drop_queued) {
  if (state_ != State::open) return;
  state_ = State::closing;
  auto& counters = services_.counters;
  counters.closed[static_cast<int>(transport_->kind())][static_cast<int>(reason)].fetch_add(
      1, std::memory_order_relaxed);
  counters.open.fetch_sub(1, std::memory_order_relaxed);
  counters.closing.fetch_add(1, std::memory_order_relaxed);
  if (last) counters.traffic.count_out(*last);
  if (reason == CloseReason::client_closed || reason == CloseReason::server_shutdown)
    spdlog::debug("connection of '{}' closed: {}", user_, to_string(reason));
  else
    spdlog::info("connection of '{}' closed: {}", user_.empty() ? "(unauthenticated)" : user_,
                 to_string(reason));
  watch_timer_.cancel();
  send_slot_.cancel();
  if (soft_timer_) soft_timer_->cancel();
  // Removal is posted: IoThread::deliver may be iterating a room right now.
  asio::post(executor_, [self = shared_from_this(), rooms = streams_.clear()] {
    self->index_.remove(self.get(), rooms);
  });
  transport_->close(reason, std::move(last), drop_queued);
  // What is recorded now is the close step's to undo; a connected() or
  // joined() still in flight is undone by the coroutine awaiting it.
  std::vector<std::string> rooms(presence_rooms_.begin(), presence_rooms_.end());
  presence_rooms_.clear();
  const bool connected = std::exchange(presence_connected_, false);
  asio::co_spawn(executor_, run_cleanup(connected, std::move(rooms)), on_coroutine_end());
}

asio::awaitable<void> ClientConnection::run_cleanup(bool connected, std::vector<std::string> rooms) {
  auto self = shared_from_this();
  if (connected) co_await report_disconnected(user_, std::move(rooms));
  if (services_.cleanup) {
    try {
      // A named local: GCC 12 mishandles temporaries inside co_await (STYLE.md).
      auto step = services_.cleanup(*this);
      co_await std::move(step);
    } catch (const std::exception& error) {
      spdlog::error("clean-up of the connection of '{}' failed: {}", user_, error.what());
    }
  }
  state_ = State::closed;
  services_.counters.closing.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace rtmc::gateway
