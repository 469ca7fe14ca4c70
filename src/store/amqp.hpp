#pragma once
// RabbitMQ through rabbitmq-c. rabbitmq-c is blocking and not thread-safe, so
// each Connection belongs to one thread, and the Publisher runs its own.
// rabbitmq-c services heartbeats only inside library calls: owners must call
// into it at least every second or so (next() with a timeout does).

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/config.hpp"

namespace rtmc::amqp {

// Connection lost or a channel/connection exception; the owner reconnects.
class AmqpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Message {
  std::string exchange;  // "" = default exchange (routing key = queue name)
  std::string routing_key;
  std::string body;
  bool persistent = true;  // delivery_mode 2
  bool mandatory = true;   // unroutable -> basic.return
};

struct Delivery {
  std::string exchange;
  std::string routing_key;
  std::string body;
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
};

enum class PublishStatus {
  confirmed,    // broker took responsibility (basic.ack, not returned)
  nacked,       // basic.nack
  unroutable,   // basic.return: no queue bound
  unavailable,  // not confirmed within the give-up time (broker down, ...)
  overloaded,   // refused at once: the publisher's backlog is at its bound (Options::max_backlog)
};
const char* to_string(PublishStatus status);

// A batched body (scale design, Contract A): one or more one-line bodies
// joined by '\n'. A body without '\n' is a batch of one, so unbatched
// publishers and consumers stay compatible.
std::string join_batch(const std::vector<std::string_view>& bodies);
// The bodies of a batched body, in order; empty lines are skipped.
std::vector<std::string_view> split_batch(std::string_view body);

// A connection with one channel (1), owned by one thread.
class Connection {
 public:
  // Connects, logs in and opens channel 1; throws AmqpError.
  explicit Connection(const AmqpConfig& config, std::chrono::seconds heartbeat = std::chrono::seconds(30));
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The K durable quorum ingest queues, each x-single-active-consumer.
  // Idempotent; throws AmqpError if a queue exists with other arguments.
  void declare_ingest_queues(std::uint32_t shards);
  // One queue with the ingest queues' arguments under any name (tests use
  // unique names so they never compete with a running stack's consumers).
  void declare_ingest_queue(const std::string& queue);
  void delete_queue(const std::string& queue);
  // A durable quorum queue without a consumer of ours: where the sequencer
  // puts messages it gave up on. Idempotent.
  void declare_dead_letter_queue(const std::string& queue);
  // The direct exchange kFanoutExchange for sequenced frames and presence
  // events (routing key = room; the messages are transient).
  void declare_fanout_exchange();
  // Server-named, exclusive, auto-delete classic queue; returns its name.
  std::string declare_private_queue();
  void bind(const std::string& queue, const std::string& exchange, const std::string& key);
  void unbind(const std::string& queue, const std::string& exchange, const std::string& key);
  // Many bindings in about one round trip: every queue.bind but the last is
  // sent no-wait, the last waits for its bind-ok. A channel carries out its
  // methods in order, so when this returns every binding is in effect (a
  // message published afterwards is routed to `queue`). A refused binding
  // closes the channel: this or the next call throws AmqpError.
  void bind_keys(const std::string& queue, const std::string& exchange, const std::vector<std::string>& keys);
  // Sends a queue.unbind per key without waiting for the unbind-ok replies
  // (next() skips them): frames of a room still routed here for a moment
  // are dropped by the fan-out, which has forgotten the room. Unbinding a
  // missing binding is no error (RabbitMQ).
  void unbind_keys(const std::string& queue, const std::string& exchange,
                   const std::vector<std::string>& keys);
  void qos(std::uint16_t prefetch);
  void consume(const std::string& queue);
  // Waits up to `timeout` for the next delivery of any consumer on this
  // connection; nullopt on timeout. Throws AmqpError when the connection or
  // channel is lost, or when the broker cancels the consumer (queue deleted).
  // basic.return frames caused by publish() are read and dropped here.
  std::optional<Delivery> next(std::chrono::milliseconds timeout);
  void ack(std::uint64_t delivery_tag, bool multiple = false);
  void reject(std::uint64_t delivery_tag, bool requeue);
  // Fire-and-forget publish on channel 1 (no confirm mode). Publishing to an
  // exchange that does not exist makes the broker close the channel: the next
  // call throws AmqpError.
  void publish(const Message& message);

  // Puts channel 1 in confirm mode, for publish_confirmed(). Only for a
  // connection that consumes nothing: waiting for a confirm reads past
  // deliveries.
  void confirm_select();
  // Publishes one message and waits up to `timeout` for the broker's answer
  // (confirmed, nacked or unroutable). Throws AmqpError when the connection
  // fails or no answer comes in time; the connection is then to be dropped.
  PublishStatus publish_confirmed(const Message& message, std::chrono::milliseconds timeout);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Publishes with publisher confirms from its own thread, keeping up to
// `window` messages unconfirmed. On connection loss it reconnects with backoff
// and jitter and re-sends everything not yet confirmed (consumers dedupe).
// Each message's callback runs exactly once, on the publisher thread (or on
// the caller's thread, inside publish(), for a publish() answered
// `overloaded` or racing with destruction); it must not block and must not
// call back into this Publisher's destructor.
//
// Batching (Options::batch_messages > 1): the messages for one exchange and
// routing key that are pending when the publisher thread gets to them go out
// as one AMQP message, their bodies joined by '\n' (so each body must be one
// line), within the caps; nothing waits for a batch to fill, so a lone
// message goes out at once. Every message of a batch gets the batch's answer.
// The window counts AMQP messages. Only for consumers that split bodies into
// lines (the ingest queues: scale design, Contract A).
// `confirmed` is only ever reported for a real basic.ack; `unavailable` means
// "not known to be stored": the message may still arrive (a retry with the
// same id is deduplicated downstream).
// Messages must go to existing exchanges (the default one, for ingest): a
// publish to a missing exchange closes the channel, which looks like a
// connection loss, so it would be retried until it gives up.
class Publisher {
 public:
  struct Options {
    std::size_t window = 500;  // unconfirmed AMQP messages (batches)
    // A message not confirmed within this time after it was written to the
    // broker is answered `unavailable`; so is one not written while there is
    // no connection, this long after its publish() or the connection loss,
    // whichever is later. A message waiting behind a full window of a live
    // connection (a busy broker) does not give up: the backlog bound answers
    // new ones `overloaded` instead. A connection on which a message waits
    // twice as long for its confirm is treated as lost and replaced.
    std::chrono::milliseconds give_up_after{5000};
    // At most this many messages per AMQP message, and this many body bytes
    // (a single larger message still goes alone). 1 = no batching.
    std::size_t batch_messages = 1;
    std::size_t batch_bytes = 64 * 1024;
    // publish() answers `overloaded` at once while this many messages are
    // accepted and not yet answered (sent or not). 0 = no bound.
    std::size_t max_backlog = 0;
    // Ingest queues declared on every (re)connect, so publishing works before
    // any gateway ran. 0 declares none.
    std::uint32_t ingest_shards = 16;
    // Declare the fan-out exchange on every (re)connect too, for a publisher
    // of presence events, which may start before any fan-out consumer.
    bool declare_fanout_exchange = false;
  };
  Publisher(AmqpConfig config, Options options);
  ~Publisher();  // answers what is still pending with `unavailable`
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Thread-safe; never blocks on the broker.
  void publish(Message message, std::function<void(PublishStatus)> done);
  // Resumes the awaiting coroutine on its own executor.
  boost::asio::awaitable<PublishStatus> async_publish(Message message);
  // True while connected to the broker (for /healthz and metrics).
  bool connected() const;
  // Messages accepted and not answered yet; any thread.
  std::size_t backlog() const;
  // backlog() at Options::max_backlog: publish() would answer `overloaded`.
  bool overloaded() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace rtmc::amqp
