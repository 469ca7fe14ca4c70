#include "common/backoff.hpp"
#include "common/keys.hpp"
#include "gateway/gateway.hpp"
#include "gateway/sequencer.hpp"
#include "common/names.hpp"
#include "protocol/frames.hpp"
#include "store/amqp.hpp"
#include "store/redis.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <random>

namespace rtmc::gateway {
namespace {

// Steps 2-4 of the message path in one atomic script: a crash between them
// cannot leave a seq without its log entry or a dedupe key without a seq.
// KEYS: dedupe, room seq, room log, shard sync stream.
// ARGV: dedupe ttl (s), frame prefix, frame suffix, log length, room.
// Returns {seq, frame, 1 if it was a repeat}.
const redis::Script kSequenceScript{R"lua(
local known = redis.call('GET', KEYS[1])
if known then
  local entries = redis.call('XRANGE', KEYS[3], known .. '-0', known .. '-0')
  if #entries > 0 then return {tonumber(known), entries[1][2][2], 1} end
  return {tonumber(known), ARGV[2] .. known .. ARGV[3], 1}
end
local seq = redis.call('INCR', KEYS[2])
local frame = ARGV[2] .. seq .. ARGV[3]
redis.call('SET', KEYS[1], seq, 'EX', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'f', frame)
redis.call('XADD', KEYS[4], '*', 'room', ARGV[5], 'seq', seq, 'f', frame)
return {seq, frame, 0}
)lua"};

constexpr std::size_t kBatch = 256;
constexpr std::uint16_t kPrefetch = 512;

}  // namespace

Sequencer::Sequencer(const GatewayConfig& config) : Sequencer(config.common, Options{}) {}

Sequencer::Sequencer(const CommonOptions& common, Options options)
    : common_(common), options_(std::move(options)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "sequencer");
}

Sequencer::~Sequencer() {
  stopping_ = true;
  thread_.join();
}

void Sequencer::run() {
  const auto& common = common_;
  Backoff backoff;
  const protocol::ParseLimits limits{common.limits.max_body_bytes};
  std::unique_ptr<redis::Connection> redis;
  while (!stopping_) {
    try {
      if (!redis) redis = std::make_unique<redis::Connection>(common.redis);
      amqp::Connection mq(common.amqp);
      counters_.amqp_connections.fetch_add(1);
      std::vector<std::string> queues = options_.queues;
      if (queues.empty())
        for (std::uint32_t shard = 0; shard < common.amqp.ingest_shards; ++shard)
          queues.push_back(ingest_queue(shard));
      for (const auto& queue : queues) mq.declare_ingest_queue(queue);
      mq.declare_fanout_exchange();
      mq.qos(kPrefetch);
      for (const auto& queue : queues) mq.consume(queue);
      spdlog::info("sequencer: consuming {} ingest shards", queues.size());
      backoff.reset();

      std::vector<amqp::Delivery> batch;
      std::vector<redis::Connection::EvalCall> calls;
      std::vector<std::string> rooms;
      while (!stopping_) {
        batch.clear();
        if (auto first = mq.next(std::chrono::milliseconds(200))) batch.push_back(std::move(*first));
        else continue;
        while (batch.size() < kBatch) {
          auto more = mq.next(std::chrono::milliseconds(0));
          if (!more) break;
          batch.push_back(std::move(*more));
        }

        calls.clear();
        rooms.clear();
        const auto ts = now_ms();
        for (const auto& delivery : batch) {
          auto message = protocol::decode_ingest(delivery.body, limits);
          if (!message) {
            // Publishers validate before publishing, so this is a foreign or
            // corrupt message; requeueing it would loop forever.
            spdlog::error("sequencer: dropping malformed ingest message ({} bytes)", delivery.body.size());
            continue;
          }
          const auto shard = shard_of(message->room, common.amqp.ingest_shards);
          auto parts = protocol::message_frame_template(message->room, message->id, message->from,
                                                        message->body, ts);
          calls.push_back(
              {{keys::dedupe(shard, message->room, message->from, message->id),
                keys::room_seq(shard, message->room), keys::room_log(shard, message->room),
                keys::sync_stream(shard)},
               {std::to_string(common.limits.dedupe_window.count()), std::move(parts.prefix),
                std::move(parts.suffix), std::to_string(common.limits.room_log_length), message->room}});
          rooms.push_back(std::move(message->room));
        }

        auto replies = redis->eval_pipeline(kSequenceScript, calls);
        for (std::size_t i = 0; i < replies.size(); ++i) {
          const auto& reply = replies[i];
          if (reply.type != redis::Reply::Type::array || reply.elements.size() != 3)
            throw redis::RedisError("sequencing script failed: " + reply.str);
          mq.publish({std::string(kFanoutExchange), rooms[i], reply.elements[1].str, false, false});
        }
        // Acks after the fan-out publishes on the same channel: the broker
        // handles them in order, so an acked message was routed.
        mq.ack(batch.back().delivery_tag, true);
        counters_.sequenced.fetch_add(replies.size());
      }
    } catch (const std::exception& error) {
      if (stopping_) break;
      spdlog::warn("sequencer: {}; reconnecting (unacked messages are redelivered)", error.what());
      if (dynamic_cast<const redis::RedisError*>(&error)) counters_.redis_failures.fetch_add(1);
      backoff.sleep(stopping_);
    }
  }
}

}  // namespace rtmc::gateway
