#include "store/amqp.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/backoff.hpp"
#include "common/keys.hpp"

namespace rtmc::amqp {

const char* to_string(PublishStatus status) {
  switch (status) {
    case PublishStatus::confirmed: return "confirmed";
    case PublishStatus::nacked: return "nacked";
    case PublishStatus::unroutable: return "unroutable";
    case PublishStatus::unavailable: return "unavailable";
    case PublishStatus::overloaded: return "overloaded";
  }
  return "unknown";
}

std::string join_batch(const std::vector<std::string_view>& bodies) {
  std::size_t size = bodies.empty() ? 0 : bodies.size() - 1;
  for (const auto body : bodies) size += body.size();
  std::string joined;
  joined.reserve(size);
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    if (i > 0) joined.push_back('\n');
    joined.append(bodies[i]);
  }
  return joined;
}

std::vector<std::string_view> split_batch(std::string_view body) {
  std::vector<std::string_view> bodies;
  while (!body.empty()) {
    const auto end = body.find('\n');
    const auto line = body.substr(0, end);
    body.remove_prefix(end == std::string_view::npos ? body.size() : end + 1);
    if (!line.empty()) bodies.push_back(line);
  }
  return bodies;
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr amqp_channel_t kChannel = 1;
constexpr int kFrameMax = 131072;
constexpr std::chrono::milliseconds kCloseTimeout{1000};

// A broker that accepted the socket but stopped answering must not hang the
// owner forever: the TCP connect, the login handshake and every later RPC
// (declare, bind, confirm.select) have their own bound.
struct Timeouts {
  std::chrono::milliseconds connect;
  std::chrono::milliseconds handshake;
  std::chrono::milliseconds rpc;
};
constexpr Timeouts kConsumerTimeouts{std::chrono::milliseconds(3000), std::chrono::milliseconds(10000),
                                     std::chrono::milliseconds(10000)};

amqp_bytes_t bytes_of(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}
amqp_bytes_t bytes_of(std::string_view text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}
std::string string_of(amqp_bytes_t bytes) {
  return bytes.len == 0 ? std::string() : std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

timeval to_timeval(std::chrono::microseconds duration) {
  if (duration.count() < 0) duration = std::chrono::microseconds(0);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(duration.count() / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(duration.count() % 1000000);
  return tv;
}

std::string library_error(int status) {
  return amqp_error_string2(status);
}

std::string describe_method(const amqp_method_t& method) {
  if (method.id == AMQP_CONNECTION_CLOSE_METHOD && method.decoded != nullptr) {
    const auto* close = static_cast<const amqp_connection_close_t*>(method.decoded);
    return "connection closed by broker: " + std::to_string(close->reply_code) + " " +
           string_of(close->reply_text);
  }
  if (method.id == AMQP_CHANNEL_CLOSE_METHOD && method.decoded != nullptr) {
    const auto* close = static_cast<const amqp_channel_close_t*>(method.decoded);
    return "channel closed by broker: " + std::to_string(close->reply_code) + " " +
           string_of(close->reply_text);
  }
  return std::string("unexpected method ") + amqp_method_name(method.id);
}

std::string describe(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL: return "ok";
    case AMQP_RESPONSE_NONE: return "no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: return library_error(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION: return describe_method(reply.reply);
  }
  return "unknown reply";
}

struct ParsedUrl {
  std::string host;
  int port = 5672;
  std::string user;
  std::string password;
  std::string vhost;
  std::string display;  // host:port/vhost, never the password
};

ParsedUrl parse_url(const std::string& url) {
  // amqp_parse_url writes into its argument and points into it.
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  const int status = amqp_parse_url(buffer.data(), &info);
  if (status != AMQP_STATUS_OK) throw AmqpError("invalid AMQP URL: " + library_error(status));
  if (info.ssl != 0) throw AmqpError("amqps:// URLs are not supported");
  ParsedUrl parsed;
  parsed.host = info.host;
  parsed.port = info.port;
  parsed.user = info.user;
  parsed.password = info.password;
  // "amqp://host/" (the form our configuration uses) means the default vhost.
  parsed.vhost = (info.vhost == nullptr || *info.vhost == '\0') ? "/" : info.vhost;
  parsed.display = parsed.host + ":" + std::to_string(parsed.port) + parsed.vhost;
  return parsed;
}

// Lets another thread abort a connection attempt that is blocked inside
// rabbitmq-c, by shutting its socket down. The fd is touched only under the
// mutex and is detached before rabbitmq-c closes it, so a reused fd number is
// never hit.
class AbortHandle {
 public:
  void attach(int fd) {
    std::lock_guard lock(mutex_);
    fd_ = fd;
    if (aborted_ && fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }
  void detach() {
    std::lock_guard lock(mutex_);
    fd_ = -1;
  }
  void abort() {
    std::lock_guard lock(mutex_);
    aborted_ = true;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }

 private:
  std::mutex mutex_;
  int fd_ = -1;
  bool aborted_ = false;
};

// One open AMQP connection with channel 1. Not thread-safe: owned by one
// thread at a time. Any failure throws AmqpError; after a connection-level
// failure the destructor skips the close handshake.
class Session {
 public:
  // `abort`, if given, can cut the socket from another thread until
  // release_abort_handle().
  // `events` (may be null) counts the connect and every failure for /metrics.
  Session(const std::string& url, std::chrono::seconds heartbeat, const std::string& name,
          const Timeouts& timeouts, AbortHandle* abort = nullptr, StoreEvents* events = nullptr)
      : abort_(abort), events_(events) {
    const ParsedUrl parsed = parse_url(url);
    where_ = parsed.display;
    conn_ = amqp_new_connection();
    if (conn_ == nullptr) throw AmqpError("amqp_new_connection failed");
    try {
      amqp_socket_t* socket = amqp_tcp_socket_new(conn_);  // owned by conn_
      if (socket == nullptr) throw AmqpError("amqp_tcp_socket_new failed");
      timeval connect_timeout = to_timeval(timeouts.connect);
      const int status = amqp_socket_open_noblock(socket, parsed.host.c_str(), parsed.port, &connect_timeout);
      if (status != AMQP_STATUS_OK) {
        note_error(events_);
        throw AmqpError("cannot connect to " + where_ + ": " + library_error(status));
      }
      if (abort_ != nullptr) abort_->attach(amqp_get_sockfd(conn_));
      timeval handshake_timeout = to_timeval(timeouts.handshake);
      timeval rpc_timeout = to_timeval(timeouts.rpc);
      amqp_set_handshake_timeout(conn_, &handshake_timeout);
      amqp_set_rpc_timeout(conn_, &rpc_timeout);
      // consumer_cancel_notify: without it the broker silently drops a
      // consumer whose queue is deleted, and next() would wait forever.
      std::array<amqp_table_entry_t, 1> capabilities{};
      capabilities[0].key = amqp_cstring_bytes("consumer_cancel_notify");
      capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
      capabilities[0].value.value.boolean = 1;
      std::array<amqp_table_entry_t, 2> properties{};
      properties[0].key = amqp_cstring_bytes("capabilities");
      properties[0].value.kind = AMQP_FIELD_KIND_TABLE;
      properties[0].value.value.table =
          amqp_table_t{static_cast<int>(capabilities.size()), capabilities.data()};
      properties[1].key = amqp_cstring_bytes("connection_name");  // shown by rabbitmqctl list_connections
      properties[1].value.kind = AMQP_FIELD_KIND_UTF8;
      properties[1].value.value.bytes = bytes_of(name);
      const amqp_table_t client_properties{static_cast<int>(properties.size()), properties.data()};
      check(amqp_login_with_properties(conn_, parsed.vhost.c_str(), 0, kFrameMax,
                                       static_cast<int>(heartbeat.count()), &client_properties,
                                       AMQP_SASL_METHOD_PLAIN, parsed.user.c_str(), parsed.password.c_str()),
            "login");
      amqp_channel_open(conn_, kChannel);
      check(amqp_get_rpc_reply(conn_), "channel.open");
    } catch (...) {
      release_abort_handle();
      dead_ = true;
      amqp_destroy_connection(conn_);
      throw;
    }
    note_connect(events_);
  }

  ~Session() {
    release_abort_handle();
    if (!dead_) {
      // Quiet and bounded: a close that fails changes nothing for the owner.
      timeval close_timeout = to_timeval(kCloseTimeout);
      amqp_set_rpc_timeout(conn_, &close_timeout);
      amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn_);
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  amqp_connection_state_t get() const { return conn_; }
  int fd() const { return amqp_get_sockfd(conn_); }

  // Skips the close handshake: for a link already known to be useless,
  // where waiting for close-ok would only stall the owner.
  void abandon() { dead_ = true; }

  void release_abort_handle() {
    if (abort_ != nullptr) abort_->detach();
    abort_ = nullptr;
  }

  // Throws unless `reply` is normal; a broker-sent close is answered first.
  void check(const amqp_rpc_reply_t& reply, const char* what) {
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
      answer_close(reply.reply);
    } else {
      dead_ = true;
    }
    fail(what, describe(reply));
  }

  void check_status(int status, const char* what) {
    if (status == AMQP_STATUS_OK) return;
    dead_ = true;
    fail(what, library_error(status));
  }

  // Replies to a broker's channel.close / connection.close so the broker can
  // log a clean close; afterwards this Session is unusable.
  void answer_close(const amqp_method_t& method) {
    if (method.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_ok_t ok{};
      amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      // The connection stays open; the destructor closes it normally.
    } else if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      amqp_connection_close_ok_t ok{};
      amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
      dead_ = true;
    }
  }

  [[noreturn]] void fail(const char* what, const std::string& why) const {
    note_error(events_);
    throw AmqpError(std::string("AMQP ") + what + " (" + where_ + "): " + why);
  }

 private:
  amqp_connection_state_t conn_ = nullptr;
  AbortHandle* abort_;
  StoreEvents* events_;
  std::string where_;
  bool dead_ = false;
};

// Arguments shared by every ingest queue: a quorum queue (replicated,
// durable) with a single active consumer, so one gateway sequences a shard.
void declare_ingest(Session& session, const std::string& queue) {
  std::array<amqp_table_entry_t, 2> entries{};
  entries[0].key = amqp_cstring_bytes("x-queue-type");
  entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[0].value.value.bytes = amqp_cstring_bytes("quorum");
  entries[1].key = amqp_cstring_bytes("x-single-active-consumer");
  entries[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  entries[1].value.value.boolean = 1;
  amqp_table_t arguments{static_cast<int>(entries.size()), entries.data()};
  amqp_queue_declare(session.get(), kChannel, bytes_of(queue), /*passive=*/0, /*durable=*/1, /*exclusive=*/0,
                     /*auto_delete=*/0, arguments);
  session.check(amqp_get_rpc_reply(session.get()), "queue.declare");
}

// Durable so bindings of a restarted broker need no special case; the
// frames themselves are published transient. Direct: a gateway's queue gets
// only the rooms it is bound to (routing key = room).
void declare_fanout(Session& session) {
  amqp_exchange_declare(session.get(), kChannel, bytes_of(kFanoutExchange), amqp_cstring_bytes("direct"),
                        /*passive=*/0, /*durable=*/1, /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
  session.check(amqp_get_rpc_reply(session.get()), "exchange.declare");
}

amqp_basic_properties_t properties_for(const Message& message) {
  amqp_basic_properties_t properties{};
  properties._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  properties.content_type = amqp_cstring_bytes("application/json");
  properties.delivery_mode = message.persistent ? 2 : 1;
  return properties;
}

}  // namespace

// ---------------------------------------------------------------- Connection

struct Connection::State {
  Session session;
  std::uint64_t published_confirmed = 0;  // delivery tags of confirm mode
  State(const AmqpConfig& config, std::chrono::seconds heartbeat)
      : session(config.url, heartbeat, "rtmc", kConsumerTimeouts, nullptr, config.events.get()),
        events(config.events) {}
  std::shared_ptr<StoreEvents> events;  // keeps the session's counters alive

  // A frame that is not a basic.deliver arrived where a delivery was
  // expected: returns of our own mandatory publishes, closes, cancels.
  void handle_other_frame() {
    amqp_frame_t frame;
    session.check_status(amqp_simple_wait_frame(session.get(), &frame), "receive");
    if (frame.frame_type != AMQP_FRAME_METHOD) return;  // stray content of an ignored method
    switch (frame.payload.method.id) {
      case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t returned;
        const amqp_rpc_reply_t reply = amqp_read_message(session.get(), frame.channel, &returned, 0);
        session.check(reply, "basic.return");
        amqp_destroy_message(&returned);
        spdlog::debug("amqp: a message published on a consuming connection was unroutable");
        return;
      }
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
        session.answer_close(frame.payload.method);
        session.fail("receive", describe_method(frame.payload.method));
      case AMQP_BASIC_CANCEL_METHOD:
        session.fail("receive", "the broker cancelled the consumer (queue deleted or moved)");
      default: return;  // basic.ack and friends have no meaning here
    }
  }
};

Connection::Connection(const AmqpConfig& config, std::chrono::seconds heartbeat)
    : state_(std::make_unique<State>(config, heartbeat)) {}

Connection::~Connection() = default;

void Connection::declare_ingest_queues(std::uint32_t shards) {
  for (std::uint32_t shard = 0; shard < shards; ++shard) declare_ingest(state_->session, ingest_queue(shard));
}

void Connection::declare_ingest_queue(const std::string& queue) {
  declare_ingest(state_->session, queue);
}

void Connection::delete_queue(const std::string& queue) {
  amqp_queue_delete(state_->session.get(), kChannel, bytes_of(queue), 0, 0);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "queue.delete");
}

void Connection::declare_dead_letter_queue(const std::string& queue) {
  std::array<amqp_table_entry_t, 1> entries{};
  entries[0].key = amqp_cstring_bytes("x-queue-type");
  entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[0].value.value.bytes = amqp_cstring_bytes("quorum");
  amqp_table_t arguments{static_cast<int>(entries.size()), entries.data()};
  amqp_queue_declare(state_->session.get(), kChannel, bytes_of(queue), /*passive=*/0, /*durable=*/1,
                     /*exclusive=*/0, /*auto_delete=*/0, arguments);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "queue.declare");
}

void Connection::declare_fanout_exchange() {
  declare_fanout(state_->session);
}

std::string Connection::declare_private_queue() {
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(state_->session.get(), kChannel, amqp_empty_bytes, /*passive=*/0,
                         /*durable=*/0, /*exclusive=*/1, /*auto_delete=*/1, amqp_empty_table);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "queue.declare");
  return string_of(ok->queue);
}

void Connection::bind(const std::string& queue, const std::string& exchange, const std::string& key) {
  amqp_queue_bind(state_->session.get(), kChannel, bytes_of(queue), bytes_of(exchange), bytes_of(key),
                  amqp_empty_table);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "queue.bind");
}

void Connection::unbind(const std::string& queue, const std::string& exchange, const std::string& key) {
  amqp_queue_unbind(state_->session.get(), kChannel, bytes_of(queue), bytes_of(exchange), bytes_of(key),
                    amqp_empty_table);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "queue.unbind");
}

void Connection::bind_keys(const std::string& queue, const std::string& exchange,
                           const std::vector<std::string>& keys) {
  if (keys.empty()) return;
  for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
    amqp_queue_bind_t method{};
    method.queue = bytes_of(queue);
    method.exchange = bytes_of(exchange);
    method.routing_key = bytes_of(keys[i]);
    method.nowait = 1;
    method.arguments = amqp_empty_table;
    state_->session.check_status(
        amqp_send_method(state_->session.get(), kChannel, AMQP_QUEUE_BIND_METHOD, &method), "queue.bind");
  }
  bind(queue, exchange, keys.back());
}

void Connection::unbind_keys(const std::string& queue, const std::string& exchange,
                             const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    amqp_queue_unbind_t method{};
    method.queue = bytes_of(queue);
    method.exchange = bytes_of(exchange);
    method.routing_key = bytes_of(key);
    method.arguments = amqp_empty_table;
    state_->session.check_status(
        amqp_send_method(state_->session.get(), kChannel, AMQP_QUEUE_UNBIND_METHOD, &method), "queue.unbind");
  }
}

void Connection::qos(std::uint16_t prefetch) {
  amqp_basic_qos(state_->session.get(), kChannel, 0, prefetch, 0);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "basic.qos");
}

void Connection::consume(const std::string& queue) {
  amqp_basic_consume(state_->session.get(), kChannel, bytes_of(queue), amqp_empty_bytes, /*no_local=*/0,
                     /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "basic.consume");
}

std::optional<Delivery> Connection::next(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  amqp_connection_state_t conn = state_->session.get();
  for (;;) {
    // Frees the frames of earlier deliveries; a no-op while frames are queued.
    amqp_maybe_release_buffers(conn);
    timeval tv = to_timeval(std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()));
    // A zero timeval would make rabbitmq-c skip its missed-heartbeat check.
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
    amqp_envelope_t envelope;
    const amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, &tv, 0);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
      Delivery delivery;
      delivery.exchange = string_of(envelope.exchange);
      delivery.routing_key = string_of(envelope.routing_key);
      delivery.body = string_of(envelope.message.body);
      delivery.delivery_tag = envelope.delivery_tag;
      delivery.redelivered = envelope.redelivered != 0;
      amqp_destroy_envelope(&envelope);
      return delivery;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT) {
      return std::nullopt;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      state_->handle_other_frame();
      if (Clock::now() >= deadline) return std::nullopt;
      continue;
    }
    state_->session.check(reply, "consume");
  }
}

void Connection::ack(std::uint64_t delivery_tag, bool multiple) {
  state_->session.check_status(
      amqp_basic_ack(state_->session.get(), kChannel, delivery_tag, multiple ? 1 : 0), "basic.ack");
}

void Connection::reject(std::uint64_t delivery_tag, bool requeue) {
  state_->session.check_status(
      amqp_basic_reject(state_->session.get(), kChannel, delivery_tag, requeue ? 1 : 0), "basic.reject");
}

void Connection::publish(const Message& message) {
  const amqp_basic_properties_t properties = properties_for(message);
  state_->session.check_status(amqp_basic_publish(state_->session.get(), kChannel, bytes_of(message.exchange),
                                                  bytes_of(message.routing_key), message.mandatory ? 1 : 0,
                                                  /*immediate=*/0, &properties, bytes_of(message.body)),
                               "basic.publish");
}

void Connection::confirm_select() {
  amqp_confirm_select(state_->session.get(), kChannel);
  state_->session.check(amqp_get_rpc_reply(state_->session.get()), "confirm.select");
  state_->published_confirmed = 0;
}

PublishStatus Connection::publish_confirmed(const Message& message, std::chrono::milliseconds timeout) {
  Session& session = state_->session;
  publish(message);
  const std::uint64_t tag = ++state_->published_confirmed;
  const auto deadline = Clock::now() + timeout;
  amqp_connection_state_t conn = session.get();
  bool returned = false;
  for (;;) {
    amqp_maybe_release_buffers(conn);
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      session.fail("publish", "no confirm within " + std::to_string(timeout.count()) + " ms");
    timeval tv = to_timeval(left);
    amqp_frame_t frame;
    const int status = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
    if (status == AMQP_STATUS_TIMEOUT) continue;
    session.check_status(status, "receive");
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    const amqp_method_t& method = frame.payload.method;
    switch (method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        const auto* ack = static_cast<const amqp_basic_ack_t*>(method.decoded);
        if (ack->delivery_tag == tag || (ack->multiple != 0 && ack->delivery_tag >= tag))
          return returned ? PublishStatus::unroutable : PublishStatus::confirmed;
        continue;  // an earlier message's late answer
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto* nack = static_cast<const amqp_basic_nack_t*>(method.decoded);
        if (nack->delivery_tag == tag || (nack->multiple != 0 && nack->delivery_tag >= tag))
          return PublishStatus::nacked;
        continue;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        // Precedes the ack of the same message; its content follows.
        amqp_message_t bounced;
        session.check(amqp_read_message(conn, frame.channel, &bounced, 0), "basic.return");
        amqp_destroy_message(&bounced);
        returned = true;
        continue;
      }
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
        session.answer_close(method);
        session.fail("publish", describe_method(method));
      default: continue;
    }
  }
}

// ----------------------------------------------------------------- Publisher

namespace {

// Heartbeats let a silent broker be noticed; rabbitmq-c only services them
// inside library calls, which the publisher loop makes at least every
// kMaxWait.
constexpr std::chrono::seconds kPublisherHeartbeat{10};
constexpr std::chrono::milliseconds kMaxWait{200};
// Retries come after 100..200 ms at first, at most 5 s apart.
constexpr Backoff::Options kReconnectBackoff{std::chrono::milliseconds(200), std::chrono::milliseconds(5000)};
constexpr Timeouts kPublisherTimeouts{std::chrono::milliseconds(2000), std::chrono::milliseconds(5000),
                                      std::chrono::milliseconds(5000)};

struct Pending {
  std::uint64_t id = 0;  // publisher-local
  Message message;
  std::function<void(PublishStatus)> done;  // empty once answered
  Clock::time_point accepted;               // publish()
  std::atomic<std::size_t>* backlog = nullptr;

  void answer(PublishStatus status) {
    if (!done) return;
    auto callback = std::move(done);
    done = nullptr;
    backlog->fetch_sub(1, std::memory_order_relaxed);
    try {
      callback(status);
    } catch (const std::exception& error) {
      spdlog::error("amqp publisher: a publish callback threw: {}", error.what());
    } catch (...) {
      spdlog::error("amqp publisher: a publish callback threw");
    }
  }
};

// One AMQP message on the wire: one or more publishes for the same exchange
// and routing key, bodies joined by '\n' (Contract A of the scale design).
// Every item gets the batch's answer.
struct Batch {
  std::uint64_t id = 0;  // sent as message_id, to match basic.return
  std::vector<Pending> items;
  std::string body;
  Clock::time_point first_sent{};  // on any connection: the give-up counts from here
  Clock::time_point sent_at{};     // on the current connection
  bool returned = false;           // basic.return seen: the coming ack means `unroutable`

  const Message& head() const { return items.front().message; }
  bool answered() const {
    return std::all_of(items.begin(), items.end(), [](const Pending& item) { return !item.done; });
  }
  void answer(PublishStatus status) {
    for (auto& item : items) item.answer(status);
  }
  void build_body() {
    if (items.size() == 1) {
      body = items.front().message.body;
      return;
    }
    std::vector<std::string_view> bodies;
    bodies.reserve(items.size());
    for (const auto& item : items) bodies.emplace_back(item.message.body);
    body = join_batch(bodies);
  }
  // Drops the items answered already (given up on); false if none is left.
  bool prune() {
    const auto before = items.size();
    std::erase_if(items, [](const Pending& item) { return !item.done; });
    if (items.empty()) return false;
    if (items.size() != before) build_body();
    return true;
  }
};

// Owns the eventfd that wakes the publisher thread.
class EventFd {
 public:
  EventFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  ~EventFd() { ::close(fd_); }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  int fd() const { return fd_; }
  void signal() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(fd_, &one, sizeof one);
  }
  void clear() const {
    std::uint64_t value = 0;
    [[maybe_unused]] const auto read = ::read(fd_, &value, sizeof value);
  }

 private:
  int fd_;
};

// One connection attempt (connect, login, declare the ingest queues,
// confirm.select) on a thread of its own, so the publisher thread keeps
// answering deadlines while a slow or silent broker makes it wait.
class Connector {
 public:
  // `events` (may be null) must outlive the Connector.
  Connector(std::string url, std::uint32_t ingest_shards, bool fanout_exchange, const EventFd& wake,
            StoreEvents* events)
      : events_(events), thread_([this, url = std::move(url), ingest_shards, fanout_exchange, &wake] {
          attempt(url, ingest_shards, fanout_exchange);
          wake.signal();
        }) {}
  ~Connector() {
    abort_.abort();  // no-op once the attempt is over
    thread_.join();
  }
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  bool done() {
    std::lock_guard lock(mutex_);
    return done_;
  }
  // After done(): the session, or nullptr and error() says why.
  std::unique_ptr<Session> take_session() {
    std::lock_guard lock(mutex_);
    return std::move(session_);
  }
  std::string error() {
    std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  void attempt(const std::string& url, std::uint32_t ingest_shards, bool fanout_exchange) {
    std::unique_ptr<Session> session;
    std::string error;
    try {
      session = std::make_unique<Session>(url, kPublisherHeartbeat, "rtmc publisher", kPublisherTimeouts,
                                          &abort_, events_);
      for (std::uint32_t shard = 0; shard < ingest_shards; ++shard)
        declare_ingest(*session, ingest_queue(shard));
      if (fanout_exchange) declare_fanout(*session);
      amqp_confirm_select(session->get(), kChannel);
      session->check(amqp_get_rpc_reply(session->get()), "confirm.select");
      session->release_abort_handle();
    } catch (const AmqpError& failure) {
      session.reset();
      error = failure.what();
    }
    std::lock_guard lock(mutex_);
    session_ = std::move(session);
    error_ = std::move(error);
    done_ = true;
  }

  StoreEvents* events_;
  AbortHandle abort_;
  std::mutex mutex_;
  bool done_ = false;
  std::unique_ptr<Session> session_;
  std::string error_;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace

struct Publisher::State {
  AmqpConfig config;
  Options options;
  EventFd wake;
  std::atomic<bool> is_connected{false};
  // Accepted by publish() and not answered yet (unsent ones included).
  std::atomic<std::size_t> backlog{0};

  // Shared with publish() callers.
  std::mutex mutex;
  std::deque<Pending> incoming;
  std::uint64_t next_id = 1;
  bool stopping = false;

  // Publisher thread only.
  std::unique_ptr<Session> session;
  std::unique_ptr<Connector> connector;  // a connection attempt in progress
  // Not sent yet, one lane per batch key (exchange, routing key, flags) in
  // publish order; `ready` names the lanes with messages, round robin, so
  // one busy queue does not starve the others. Without batching there is
  // one lane: strict publish order.
  std::unordered_map<std::string, std::deque<Pending>> lanes;
  std::deque<std::string> ready;
  // Batches sent on a lost connection, to go first on the next one, in
  // their original order.
  std::deque<Batch> resend;
  std::map<std::uint64_t, Batch> sent;  // by delivery tag; answered batches stay until the
                                        // broker confirms them, so they still count
                                        // against the window
  std::uint64_t next_tag = 1;
  Backoff backoff{kReconnectBackoff};
  Clock::time_point next_attempt{};
  Clock::time_point disconnected_since = Clock::now();

  std::thread thread;  // last: starts after everything above exists

  State(AmqpConfig config_in, Options options_in) : config(std::move(config_in)), options(options_in) {
    if (options.window == 0) options.window = 1;
    if (options.batch_messages == 0) options.batch_messages = 1;
    thread = std::thread([this] { run(); });
  }

  void run() {
    while (take_incoming()) {
      expire(Clock::now());
      if (session && stalled(Clock::now())) {
        session->abandon();
        drop_connection("no confirm from the broker for " +
                        std::to_string(2 * options.give_up_after.count()) + " ms");
      }
      if (!session) connect();
      if (session) {
        try {
          read_frames();
          send_window();
          read_frames();
        } catch (const AmqpError& error) {
          drop_connection(error.what());
        }
      }
      wait();
    }
    shut_down();
  }

  std::string lane_of(const Message& message) const {
    if (options.batch_messages <= 1) return {};
    std::string key;
    key.reserve(message.exchange.size() + message.routing_key.size() + 3);
    key.append(message.exchange).push_back('\n');
    key.append(message.routing_key).push_back(message.persistent ? 'p' : '-');
    key.push_back(message.mandatory ? 'm' : '-');
    return key;
  }

  // Moves new requests into their lanes; false once the destructor asked to stop.
  bool take_incoming() {
    wake.clear();  // before taking: a publish after this wakes the next wait
    std::deque<Pending> taken;
    {
      std::lock_guard lock(mutex);
      if (stopping) return false;
      taken.swap(incoming);
    }
    for (auto& pending : taken) {
      auto key = lane_of(pending.message);
      auto& lane = lanes[key];
      if (lane.empty()) ready.push_back(std::move(key));
      lane.push_back(std::move(pending));
    }
    return true;
  }

  // When a message not yet written gives up: only while there is no
  // connection (a busy broker is not an unavailable one), give_up_after
  // from its publish() or from the loss of the connection, whichever is later.
  Clock::time_point unsent_deadline(const Pending& pending) const {
    return std::max(pending.accepted, disconnected_since) + options.give_up_after;
  }
  Clock::time_point sent_deadline(const Batch& batch) const {
    return batch.first_sent + options.give_up_after;
  }

  // Answers `unavailable` for everything past its deadline. Deadlines grow
  // with publish order within a lane and with send order in `sent`, so each
  // scan stops at the first live entry.
  void expire(Clock::time_point now) {
    if (!session) {
      for (auto it = lanes.begin(); it != lanes.end();) {
        auto& lane = it->second;
        while (!lane.empty() && unsent_deadline(lane.front()) <= now) {
          lane.front().answer(PublishStatus::unavailable);
          lane.pop_front();
        }
        if (lane.empty()) {
          // Its name leaves the round robin too, or a lane made again later
          // would be listed twice and get a double share of the sends.
          std::erase(ready, it->first);
          it = lanes.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& batch : resend)
      if (sent_deadline(batch) <= now) batch.answer(PublishStatus::unavailable);
    std::erase_if(resend, [](const Batch& batch) { return batch.answered(); });
    for (auto& [tag, batch] : sent) {
      if (sent_deadline(batch) > now) break;
      batch.answer(PublishStatus::unavailable);
    }
  }

  // A connection on which the oldest message has waited twice the give-up
  // time for its confirm is treated as lost. Without this, messages already
  // answered `unavailable` would fill the window for as long as the broker
  // keeps the connection open without confirming (a stuck queue, a half-open
  // link that still carries our heartbeats out), and every new message would
  // wait in its lane.
  bool stalled(Clock::time_point now) const {
    return !sent.empty() && now - sent.begin()->second.sent_at >= 2 * options.give_up_after;
  }

  // Starts an attempt when the backoff allows, adopts its result when done.
  void connect() {
    if (!connector) {
      if (Clock::now() >= next_attempt) {
        connector = std::make_unique<Connector>(config.url, options.ingest_shards,
                                                options.declare_fanout_exchange, wake, config.events.get());
      }
      return;
    }
    if (!connector->done()) return;
    session = connector->take_session();
    const std::string error = connector->error();
    connector.reset();
    if (!session) {
      schedule_retry(error);
      return;
    }
    next_tag = 1;
    backoff.reset();
    is_connected = true;
    spdlog::info("amqp publisher: connected ({} message(s) to send)", backlog.load());
  }

  void schedule_retry(const std::string& why) {
    const auto delay = backoff.next();
    next_attempt = Clock::now() + delay;
    spdlog::warn("amqp publisher: {}; retrying in {} ms", why, delay.count());
  }

  // Every batch sent but not confirmed goes back to the front of `resend`,
  // in its original order, to be sent again on the next connection.
  void drop_connection(const std::string& why) {
    if (session) disconnected_since = Clock::now();
    session.reset();
    is_connected = false;
    for (auto it = sent.rbegin(); it != sent.rend(); ++it)
      if (!it->second.answered()) resend.push_front(std::move(it->second));
    sent.clear();
    schedule_retry(why);
  }

  // The next batch to send from the lanes: the first lane's oldest messages,
  // as many as the caps allow (formed from what is pending now: no timer).
  bool form_batch(Batch& batch) {
    while (!ready.empty()) {
      auto key = std::move(ready.front());
      ready.pop_front();
      const auto found = lanes.find(key);
      if (found == lanes.end() || found->second.empty()) continue;
      auto& lane = found->second;
      std::size_t bytes = lane.front().message.body.size();
      batch.items.push_back(std::move(lane.front()));
      lane.pop_front();
      while (!lane.empty() && batch.items.size() < options.batch_messages &&
             bytes + 1 + lane.front().message.body.size() <= options.batch_bytes) {
        bytes += 1 + lane.front().message.body.size();
        batch.items.push_back(std::move(lane.front()));
        lane.pop_front();
      }
      if (lane.empty()) {
        lanes.erase(found);
      } else {
        ready.push_back(std::move(key));
      }
      batch.id = batch.items.front().id;
      batch.build_body();
      return true;
    }
    return false;
  }

  void send_window() {
    while (sent.size() < options.window) {
      Batch next;
      if (!resend.empty()) {
        next = std::move(resend.front());
        resend.pop_front();
        if (!next.prune()) continue;
      } else if (!form_batch(next)) {
        return;
      }
      // Moved to `sent` first: if the send fails half-way the batch is
      // sent again after the reconnect.
      const std::uint64_t tag = next_tag++;
      Batch& batch = sent.emplace(tag, std::move(next)).first->second;
      batch.sent_at = Clock::now();
      if (batch.first_sent == Clock::time_point{}) batch.first_sent = batch.sent_at;
      batch.returned = false;  // a return seen on an earlier connection does not count
      const std::string message_id = std::to_string(batch.id);
      const Message& head = batch.head();
      amqp_basic_properties_t properties = properties_for(head);
      properties._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
      properties.message_id = bytes_of(message_id);
      session->check_status(
          amqp_basic_publish(session->get(), kChannel, bytes_of(head.exchange), bytes_of(head.routing_key),
                             head.mandatory ? 1 : 0, 0, &properties, bytes_of(batch.body)),
          "basic.publish");
    }
  }

  // Handles every frame rabbitmq-c has buffered or the socket has ready,
  // without blocking. A 1 µs timeout rather than zero: with zero rabbitmq-c
  // never notices missed heartbeats.
  void read_frames() {
    amqp_connection_state_t conn = session->get();
    for (;;) {
      amqp_frame_t frame;
      timeval tv{0, 1};
      const int status = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
      if (status == AMQP_STATUS_TIMEOUT) break;
      session->check_status(status, "receive");
      if (frame.frame_type == AMQP_FRAME_METHOD) handle_method(frame);
    }
    amqp_maybe_release_buffers(conn);
  }

  void handle_method(const amqp_frame_t& frame) {
    const amqp_method_t& method = frame.payload.method;
    switch (method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        const auto* ack = static_cast<const amqp_basic_ack_t*>(method.decoded);
        settle(ack->delivery_tag, ack->multiple != 0, false);
        return;
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto* nack = static_cast<const amqp_basic_nack_t*>(method.decoded);
        settle(nack->delivery_tag, nack->multiple != 0, true);
        return;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        // The return precedes the ack of the same message; its content
        // (header and body frames) follows right away.
        amqp_message_t returned;
        session->check(amqp_read_message(session->get(), frame.channel, &returned, 0), "basic.return");
        std::uint64_t id = 0;
        if ((returned.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) {
          const std::string text = string_of(returned.properties.message_id);
          std::from_chars(text.data(), text.data() + text.size(), id);
        }
        amqp_destroy_message(&returned);
        for (auto& [tag, batch] : sent) {
          if (batch.id == id) {
            batch.returned = true;
            break;
          }
        }
        return;
      }
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
        session->answer_close(method);
        session->fail("receive", describe_method(method));
      default: return;
    }
  }

  void settle(std::uint64_t delivery_tag, bool multiple, bool nacked) {
    auto answer = [nacked](Batch& batch) {
      if (nacked) {
        batch.answer(PublishStatus::nacked);
      } else {
        batch.answer(batch.returned ? PublishStatus::unroutable : PublishStatus::confirmed);
      }
    };
    if (multiple) {
      // delivery_tag 0 with multiple means "everything outstanding".
      auto end = delivery_tag == 0 ? sent.end() : sent.upper_bound(delivery_tag);
      for (auto it = sent.begin(); it != end; ++it) answer(it->second);
      sent.erase(sent.begin(), end);
    } else if (auto it = sent.find(delivery_tag); it != sent.end()) {
      answer(it->second);
      sent.erase(it);
    }
  }

  // Sleeps until the broker sends something, a publish arrives, a deadline
  // passes, or kMaxWait elapses (heartbeats).
  void wait() {
    const auto now = Clock::now();
    auto until = now + kMaxWait;
    if (!session) {
      for (const auto& [key, lane] : lanes)
        if (!lane.empty()) until = std::min(until, unsent_deadline(lane.front()));
    }
    for (const auto& batch : resend) until = std::min(until, sent_deadline(batch));
    for (const auto& [tag, batch] : sent) {
      if (!batch.answered()) {
        until = std::min(until, sent_deadline(batch));
        break;
      }
    }
    if (!session && !connector) until = std::min(until, next_attempt);
    if (session && (amqp_frames_enqueued(session->get()) || amqp_data_in_buffer(session->get()))) until = now;
    // Sending is possible but was not done only if the window is full, so
    // only readability of the socket matters.
    std::array<pollfd, 2> fds{};
    fds[0] = pollfd{wake.fd(), POLLIN, 0};
    nfds_t count = 1;
    if (session && session->fd() >= 0) {
      fds[1] = pollfd{session->fd(), POLLIN, 0};
      count = 2;
    }
    const auto timeout = std::chrono::ceil<std::chrono::milliseconds>(until - now);
    ::poll(fds.data(), count, static_cast<int>(std::max<long>(0, timeout.count())));
  }

  void shut_down() {
    std::deque<Pending> late;
    {
      std::lock_guard lock(mutex);
      late.swap(incoming);
    }
    for (auto& [tag, batch] : sent) batch.answer(PublishStatus::unavailable);
    sent.clear();
    for (auto& batch : resend) batch.answer(PublishStatus::unavailable);
    resend.clear();
    for (auto& [key, lane] : lanes)
      for (auto& pending : lane) pending.answer(PublishStatus::unavailable);
    lanes.clear();
    ready.clear();
    for (auto& pending : late) pending.answer(PublishStatus::unavailable);
    connector.reset();  // aborts an attempt in progress
    session.reset();
    is_connected = false;
  }
};

Publisher::Publisher(AmqpConfig config, Options options)
    : state_(std::make_unique<State>(std::move(config), options)) {}

Publisher::~Publisher() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.signal();
  state_->thread.join();
}

void Publisher::publish(Message message, std::function<void(PublishStatus)> done) {
  Pending pending;
  pending.message = std::move(message);
  pending.done = std::move(done);
  pending.accepted = Clock::now();
  pending.backlog = &state_->backlog;
  std::unique_lock lock(state_->mutex);
  const auto bound = state_->options.max_backlog;
  if (state_->stopping || (bound > 0 && state_->backlog.load(std::memory_order_relaxed) >= bound)) {
    // Being destroyed, or full: answered here, never counted.
    const auto status = state_->stopping ? PublishStatus::unavailable : PublishStatus::overloaded;
    lock.unlock();
    auto callback = std::move(pending.done);
    callback(status);
    return;
  }
  state_->backlog.fetch_add(1, std::memory_order_relaxed);
  pending.id = state_->next_id++;
  // The thread takes the whole queue at once, so only the first publish
  // into an empty queue needs to wake it.
  const bool was_empty = state_->incoming.empty();
  state_->incoming.push_back(std::move(pending));
  lock.unlock();
  if (was_empty) state_->wake.signal();
}

boost::asio::awaitable<PublishStatus> Publisher::async_publish(Message message) {
  auto initiate = [this, to_send = std::move(message)](auto handler) mutable {
    using Handler = decltype(handler);
    using Executor = boost::asio::associated_executor_t<Handler>;
    // std::function needs a copyable callable; the handler is move-only. The
    // work guard keeps the awaiting coroutine's executor alive until the
    // result is posted to it.
    struct Waiter {
      Handler handler;
      boost::asio::executor_work_guard<Executor> work;
    };
    auto executor = boost::asio::get_associated_executor(handler);
    auto waiter =
        std::make_shared<Waiter>(Waiter{std::move(handler), boost::asio::make_work_guard(executor)});
    publish(std::move(to_send), [waiter](PublishStatus status) {
      boost::asio::post(waiter->work.get_executor(),
                        [waiter, status]() { std::move(waiter->handler)(status); });
      // Released here, after post() returned: released inside the posted
      // handler, it could let the io_context run out of work and be
      // destroyed while post() is still signalling it.
      waiter->work.reset();
    });
  };
  co_return co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void(PublishStatus)>(
      std::move(initiate), boost::asio::use_awaitable);
}

bool Publisher::connected() const {
  return state_->is_connected.load();
}

std::size_t Publisher::backlog() const {
  return state_->backlog.load(std::memory_order_relaxed);
}

bool Publisher::overloaded() const {
  const auto bound = state_->options.max_backlog;
  return bound > 0 && backlog() >= bound;
}

}  // namespace rtmc::amqp
