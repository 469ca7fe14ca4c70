#include "gateway/session.hpp"

#include "auth/auth.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "gateway/io_shard.hpp"
#include "gateway/room_log.hpp"
#include "store/amqp.hpp"
#include "store/redis.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <span>

namespace rtmc::gateway {

namespace asio = boost::asio;
using protocol::ErrorCode;
using protocol::Ref;

namespace {
constexpr auto nothrow_awaitable = asio::as_tuple(asio::use_awaitable);
// How long a fatal error frame may take to reach a client before the socket
// is closed anyway (a slow consumer may never read it).
constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr std::size_t kMaxFramesPerWrite = 256;

// GCC 12 miscompiles braced string lists inside a co_await expression
// ("array used as initializer"), so commands are built by a plain function.
std::vector<std::string> redis_args(std::string command, std::string key) {
  std::vector<std::string> args;
  args.push_back(std::move(command));
  args.push_back(std::move(key));
  return args;
}

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
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
    case CloseReason::count_: break;
  }
  return "unknown";
}

Session::Session(asio::ip::tcp::socket socket, SessionContext& context, IoShard& shard)
    : socket_(std::move(socket)),
      context_(context),
      shard_(shard),
      auth_timer_(socket_.get_executor()),
      watch_timer_(socket_.get_executor()),
      send_slot_(socket_.get_executor()),
      close_timer_(socket_.get_executor()),
      last_inbound_(std::chrono::steady_clock::now()) {}

void Session::start() {
  boost::system::error_code ignored;
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  // flush() writes directly and must never block the io thread.
  socket_.non_blocking(true, ignored);
  shard_.add(shared_from_this());
  asio::co_spawn(socket_.get_executor(), read_loop(), on_coroutine_end());
  asio::co_spawn(socket_.get_executor(), auth_deadline(), on_coroutine_end());
}

// A bug must cost one connection, not the process or a silently stuck
// session: any exception escaping a session coroutine closes it.
std::function<void(std::exception_ptr)> Session::on_coroutine_end() {
  return [self = shared_from_this()](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("session of '{}' failed: {}", self->user_, e.what());
    }
    self->fail(ErrorCode::internal, "internal error", std::nullopt);
    self->close(CloseReason::read_error);
  };
}

asio::awaitable<void> Session::auth_deadline() {
  auto self = shared_from_this();
  auth_timer_.expires_after(context_.config.auth_timeout);
  auto [ec] = co_await auth_timer_.async_wait(nothrow_awaitable);
  if (ec || authenticated_ || closing_) co_return;
  fail(ErrorCode::unauthorized, "no auth frame within the auth timeout", std::nullopt, CloseReason::auth_timeout);
}

// Reads into the io thread's scratch buffer and keeps only unprocessed bytes
// in the session, so an idle connection holds no read buffer at all (10k
// idle clients would otherwise pin 10k buffers). Waiting for readability
// before reading also spares idle sockets a speculative read.
asio::awaitable<void> Session::read_loop() {
  auto self = shared_from_this();
  const std::size_t max_line = context_.config.max_line_bytes;
  std::string pending;
  boost::system::error_code ec;
  auto fail_too_large = [&] {
    fail(ErrorCode::frame_too_large, "line longer than " + std::to_string(max_line) + " bytes", std::nullopt);
  };
  while (!closing_) {
    auto [wait_ec] = co_await socket_.async_wait(asio::ip::tcp::socket::wait_read, nothrow_awaitable);
    if (closing_) co_return;
    std::size_t n = 0;
    if (!wait_ec) n = socket_.read_some(asio::buffer(shard_.scratch()), ec);
    if (wait_ec || (ec && ec != asio::error::would_block)) {
      auto error = wait_ec ? wait_ec : ec;
      close(error == asio::error::eof ? CloseReason::client_closed : CloseReason::read_error);
      co_return;
    }
    if (n == 0) continue;
    last_inbound_ = std::chrono::steady_clock::now();
    // Handlers may suspend (Redis, back-pressure) and the scratch buffer is
    // shared by every session of this thread, so the bytes move out first.
    pending.append(shard_.scratch().data(), n);
    std::size_t start = 0;
    for (;;) {
      auto newline = pending.find('\n', start);
      if (newline == std::string::npos) break;
      std::string_view line(pending.data() + start, newline - start);
      if (line.size() > max_line) {
        fail_too_large();
        co_return;
      }
      start = newline + 1;
      if (!blank(line)) co_await handle_line(line);
      if (closing_) co_return;
    }
    if (start == pending.size()) {
      std::string().swap(pending);
    } else {
      pending.erase(0, start);
    }
    if (pending.size() > max_line) {
      fail_too_large();
      co_return;
    }
  }
}

asio::awaitable<void> Session::handle_line(std::string_view line) {
  auto parsed = protocol::parse_client_frame(line, {context_.config.common.limits.max_body_bytes});
  if (auto* error = std::get_if<protocol::FrameError>(&parsed)) {
    if (!authenticated_)
      fail(ErrorCode::unauthorized, "the first frame must be a valid auth frame (" + error->message + ")", error->ref);
    else
      fail(error->code, error->message, error->ref);
    co_return;
  }
  auto& frame = std::get<protocol::Frame>(parsed);
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
    on_leave(*leave, frame.ref);
  } else if (auto* send = std::get_if<protocol::SendRequest>(&frame.request)) {
    co_await on_send(std::move(*send), std::move(frame.ref));
  } else {
    reply(protocol::pong_frame(frame.ref));
  }
}

asio::awaitable<void> Session::on_auth(protocol::AuthRequest request, Ref ref) {
  if (authenticated_) {
    fail(ErrorCode::bad_frame, "already authenticated", ref);
    co_return;
  }
  auto claims = context_.tokens.verify(request.token, now_ms());
  if (!claims) {
    fail(ErrorCode::unauthorized, "invalid or expired token", ref);
    co_return;
  }
  redis::Reply exists;
  try {
    exists = co_await context_.redis.command(redis_args("EXISTS", keys::session(claims->jti)));
  } catch (const std::exception& error) {
    spdlog::warn("auth: redis unavailable: {}", error.what());
    fail(ErrorCode::unavailable, "cannot check the session now; retry", ref);
    co_return;
  }
  if (closing_) co_return;
  if (exists.type != redis::Reply::Type::integer || exists.integer != 1) {
    fail(ErrorCode::unauthorized, "session ended (logged out or expired)", ref);
    co_return;
  }
  authenticated_ = true;
  user_ = claims->user;
  jti_ = claims->jti;
  token_expires_at_ms_ = claims->expires_at_ms;
  auth_timer_.cancel();
  reply(protocol::auth_ok_frame(user_, static_cast<int>(context_.config.heartbeat.count()), ref));
  asio::co_spawn(socket_.get_executor(), session_watch(), on_coroutine_end());
}

asio::awaitable<void> Session::session_watch() {
  auto self = shared_from_this();
  const auto period = context_.config.heartbeat;
  while (!closing_) {
    watch_timer_.expires_after(period);
    auto [ec] = co_await watch_timer_.async_wait(nothrow_awaitable);
    if (ec || closing_) co_return;
    if (std::chrono::steady_clock::now() - last_inbound_ > 3 * period) {
      close(CloseReason::idle_timeout);
      co_return;
    }
    if (now_ms() >= token_expires_at_ms_) {
      fail(ErrorCode::unauthorized, "token expired", std::nullopt);
      co_return;
    }
    try {
      auto exists = co_await context_.redis.command(redis_args("EXISTS", keys::session(jti_)));
      if (closing_) co_return;
      if (exists.type == redis::Reply::Type::integer && exists.integer == 0) {
        fail(ErrorCode::unauthorized, "session ended (logged out)", std::nullopt);
        co_return;
      }
    } catch (const std::exception& error) {
      // Redis being away is no reason to drop everyone; check next period.
      spdlog::debug("session check skipped: {}", error.what());
    }
  }
}

asio::awaitable<void> Session::on_join(protocol::JoinRequest request, Ref ref) {
  auto emplaced = rooms_.try_emplace(request.room);
  const bool inserted = emplaced.second;
  if (inserted) {
    emplaced.first->second.membership = ++memberships_;
    shard_.join(request.room, shared_from_this());
  }
  const auto shard = shard_of(request.room, context_.config.common.amqp.ingest_shards);
  redis::Reply last;
  try {
    last = co_await context_.redis.command(redis_args("GET", keys::room_seq(shard, request.room)));
  } catch (const std::exception& error) {
    spdlog::warn("join: redis unavailable: {}", error.what());
    if (inserted) {
      rooms_.erase(request.room);
      shard_.leave(request.room, this);
    }
    fail(ErrorCode::unavailable, "cannot join now; retry", ref);
    co_return;
  }
  if (closing_) co_return;
  std::int64_t seq = last.type == redis::Reply::Type::string ? std::stoll(last.str) : 0;
  auto it = rooms_.find(request.room);
  reply(protocol::joined_frame(request.room, seq, ref));
  if (inserted && it != rooms_.end()) {
    it->second.last_seq = seq;
    // The fan-out thread learns where this gateway's clients start, so it
    // repairs gaps and catches up after reconnects for this room too.
    context_.room_seeds.add(request.room, seq);
    release_held(request.room, it->second);
  }
}

void Session::on_leave(const protocol::LeaveRequest& request, const Ref& ref) {
  if (rooms_.erase(request.room) == 0) {
    fail(ErrorCode::not_joined, "not in room " + request.room, ref);
    return;
  }
  shard_.leave(request.room, this);
  reply(protocol::left_frame(request.room, ref));
}

asio::awaitable<void> Session::on_send(protocol::SendRequest request, Ref ref) {
  if (!rooms_.contains(request.room)) {
    fail(ErrorCode::not_joined, "join room " + request.room + " before sending to it", ref);
    co_return;
  }
  // Back-pressure: stop reading this client until RabbitMQ catches up.
  while (unconfirmed_.size() >= context_.config.max_unconfirmed_sends && !closing_) {
    send_slot_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await send_slot_.async_wait(nothrow_awaitable);
  }
  if (closing_) co_return;
  const auto number = first_unconfirmed_ + unconfirmed_.size();
  unconfirmed_.push_back({});
  const auto shard = shard_of(request.room, context_.config.common.amqp.ingest_shards);
  amqp::Message message{"", ingest_queue(shard),
                        protocol::encode_ingest({request.room, request.id, user_, std::move(request.body)}),
                        true, true};
  auto answer_ack = protocol::ack_frame(request.room, request.id, ref);
  auto answer_error = protocol::error_frame(ErrorCode::unavailable,
                                            "message " + request.id + " was not accepted; retry it", ref);
  context_.publisher.publish(
      std::move(message),
      [self = weak_from_this(), executor = socket_.get_executor(), number, answer_ack = std::move(answer_ack),
       answer_error = std::move(answer_error)](amqp::PublishStatus status) mutable {
        auto reply = status == amqp::PublishStatus::confirmed ? std::move(answer_ack) : std::move(answer_error);
        asio::post(executor, [self, number, reply = std::move(reply)]() mutable {
          if (auto session = self.lock()) session->on_confirmed(number, std::move(reply));
        });
      });
}

void Session::on_confirmed(std::uint64_t number, std::string reply_frame) {
  if (number < first_unconfirmed_) return;
  unconfirmed_[number - first_unconfirmed_].reply = std::move(reply_frame);
  while (!unconfirmed_.empty() && !unconfirmed_.front().reply.empty()) {
    reply(std::move(unconfirmed_.front().reply));
    unconfirmed_.pop_front();
    ++first_unconfirmed_;
  }
  send_slot_.cancel();
}

void Session::deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  RoomState& state = it->second;
  if (state.pending) {
    state.held.emplace_back(seq, frame);
    return;
  }
  accept(room, state, seq, frame);
}

void Session::accept(const std::string& room, RoomState& state, std::int64_t seq, const SharedFrame& frame) {
  if (seq <= state.last_seq) return;
  if (seq == state.last_seq + 1) {
    state.last_seq = seq;
    enqueue(frame, false);
    return;
  }
  // A hole the fan-out thread could not know about (it saw this room for
  // the first time after frames this client is owed): fetch it from the
  // room log and hold what comes meanwhile.
  state.pending = true;
  state.held.emplace_back(seq, frame);
  asio::co_spawn(socket_.get_executor(), repair(room, state.membership, state.last_seq + 1, seq - 1),
                 on_coroutine_end());
}

void Session::release_held(const std::string& room, RoomState& state) {
  state.pending = false;
  auto held = std::move(state.held);
  state.held = {};
  std::stable_sort(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, frame] : held) {
    if (closing_) return;  // a slow-consumer cut clears rooms_
    if (state.pending)
      state.held.emplace_back(seq, std::move(frame));
    else
      accept(room, state, seq, frame);
  }
}

asio::awaitable<void> Session::repair(std::string room, std::uint64_t membership, std::int64_t from,
                                      std::int64_t to) {
  auto self = shared_from_this();
  const auto shard = shard_of(room, context_.config.common.amqp.ingest_shards);
  auto command = room_log_range(shard, room, from, to);
  std::optional<std::vector<std::pair<std::int64_t, SharedFrame>>> frames;
  try {
    auto reply = co_await context_.redis.command(std::move(command));
    frames = room_log_frames(reply);
  } catch (const std::exception& error) {
    spdlog::warn("repair of room {}: {}", room, error.what());
  }
  auto it = rooms_.find(room);
  if (closing_ || it == rooms_.end() || it->second.membership != membership) co_return;  // closed or left meanwhile
  RoomState& state = it->second;
  if (!frames) {
    // Better a clear cut than a silent hole: the client rejoins and knows
    // from `joined` where it stands.
    fail(ErrorCode::unavailable, "messages of room " + room + " could not be recovered; reconnect", std::nullopt,
         CloseReason::lost_sync);
    co_return;
  }
  for (auto& [seq, frame] : *frames) {
    if (seq != state.last_seq + 1) continue;
    state.last_seq = seq;
    enqueue(std::move(frame), false);
    if (closing_) co_return;
  }
  if (state.last_seq < to) {
    spdlog::error("room {}: seqs {}..{} were trimmed from the log before this client got them", room,
                  state.last_seq + 1, to);
    state.last_seq = to;
  }
  release_held(room, state);
}

void Session::flush_deferred() {
  flush_deferred_ = false;
  flush();
}

void Session::reply(std::string frame) {
  if (closing_) return;
  enqueue(std::make_shared<const std::string>(std::move(frame)));
}

void Session::fail(ErrorCode code, std::string_view message, const Ref& ref, std::optional<CloseReason> reason) {
  if (closing_) return;
  if (!protocol::is_fatal(code)) {
    reply(protocol::error_frame(code, message, ref));
    return;
  }
  if (code == ErrorCode::slow_consumer) {
    // Whatever waits is dropped; the error frame jumps the byte bound.
    for (auto& frame : queue_) queued_bytes_ -= frame->size();
    queue_.clear();
  }
  queue_.push_back(std::make_shared<const std::string>(protocol::error_frame(code, message, ref)));
  queued_bytes_ += queue_.back()->size();
  close(reason ? *reason
        : code == ErrorCode::slow_consumer   ? CloseReason::slow_consumer
        : code == ErrorCode::frame_too_large ? CloseReason::frame_too_large
                                             : CloseReason::unauthorized);
}

void Session::enqueue(SharedFrame frame, bool flush_now) {
  if (closed_ || close_after_flush_) return;
  if (queued_bytes_ + frame->size() > context_.config.send_queue_bytes) {
    fail(ErrorCode::slow_consumer, "send queue exceeded " + std::to_string(context_.config.send_queue_bytes) +
                                       " bytes; reconnect and catch up",
         std::nullopt);
    return;
  }
  queued_bytes_ += frame->size();
  queue_.push_back(std::move(frame));
  if (flush_now) {
    flush();
  } else if (!flush_deferred_) {
    flush_deferred_ = true;
    shard_.defer_flush(shared_from_this());
  }
}

// Writes what is queued. The socket is non-blocking, so the common case (the
// kernel takes everything) finishes here without an asynchronous operation,
// as Redis tries the write before returning to its event loop; only the rest
// of a partial write waits for the socket to become writable.
void Session::flush() {
  while (!writing_ && !closed_ && !queue_.empty()) {
    const std::size_t count = std::min(queue_.size(), kMaxFramesPerWrite);
    std::array<asio::const_buffer, kMaxFramesPerWrite> buffers;
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
      buffers[i] = asio::buffer(*queue_[i]);
      total += queue_[i]->size();
    }
    boost::system::error_code ec;
    const std::size_t written = socket_.write_some(std::span(buffers.data(), count), ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      if (!closing_) close(CloseReason::write_error);
      finish_close();
      return;
    }
    if (written == total) {
      for (std::size_t i = 0; i < count; ++i) queue_.pop_front();
      queued_bytes_ -= total;
      continue;
    }
    // Partial: the unwritten tail goes out asynchronously.
    writing_ = true;
    std::vector<asio::const_buffer> rest;
    std::size_t skip = written;
    for (std::size_t i = 0; i < count; ++i) {
      in_flight_.push_back(std::move(queue_.front()));
      queue_.pop_front();
      const auto& frame = *in_flight_.back();
      if (skip >= frame.size()) {
        skip -= frame.size();
        continue;
      }
      rest.push_back(asio::buffer(frame.data() + skip, frame.size() - skip));
      skip = 0;
    }
    asio::async_write(socket_, rest, [self = shared_from_this()](boost::system::error_code write_ec, std::size_t) {
      for (auto& frame : self->in_flight_) self->queued_bytes_ -= frame->size();
      self->in_flight_.clear();
      self->writing_ = false;
      if (write_ec) {
        if (!self->closing_) self->close(CloseReason::write_error);
        self->finish_close();
        return;
      }
      self->flush();
    });
    return;
  }
  if (!writing_ && queue_.empty() && close_after_flush_) finish_close();
}

void Session::close(CloseReason reason) {
  if (closing_) return;
  closing_ = true;
  context_.counters.closed[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
  if (reason == CloseReason::client_closed || reason == CloseReason::server_shutdown)
    spdlog::debug("connection of '{}' closed: {}", user_, to_string(reason));
  else
    spdlog::info("connection of '{}' closed: {}", user_.empty() ? "(unauthenticated)" : user_, to_string(reason));
  auth_timer_.cancel();
  watch_timer_.cancel();
  send_slot_.cancel();
  rooms_.clear();
  // Removal is posted: IoShard::deliver may be iterating the room right now.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->shard_.remove(self.get()); });
  if (writing_ || !queue_.empty()) {
    close_after_flush_ = true;
    flush();
    close_timer_.expires_after(kCloseGrace);
    close_timer_.async_wait([self = shared_from_this()](boost::system::error_code) { self->finish_close(); });
    return;
  }
  finish_close();
}

void Session::finish_close() {
  if (closed_) return;
  closed_ = true;
  close_timer_.cancel();
  boost::system::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  queue_.clear();
  queued_bytes_ = 0;
}

}  // namespace rtmc::gateway
