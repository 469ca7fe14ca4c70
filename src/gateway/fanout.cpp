#include <pthread.h>
#include <spdlog/spdlog.h>

#include "common/backoff.hpp"
#include "common/keys.hpp"
#include "gateway/pipeline.hpp"
#include "gateway/room_cursor.hpp"
#include "protocol/frames.hpp"
#include "store/amqp.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"

namespace rtmc::gateway {
namespace {

constexpr std::size_t kMaxBatch = 128;

// Frames [from, to] of a room from its log in Redis, in seq order. Frames
// trimmed from the log (or never written), or in a log that is not a stream,
// are gone for this gateway's clients: the caller reports them as a gap.
// Redis I/O failures throw RedisError.
rooms::LogFrames fetch_range(redis::Connection& redis, std::uint32_t shards, const std::string& room,
                             std::int64_t from, std::int64_t to) {
  try {
    return rooms::read_log(redis, shards, room, from, to);
  } catch (const rooms::BadRoomData& error) {
    spdlog::error("fanout: room {}: {}", room, error.what());
  }
  return {};
}

}  // namespace

void add_log_range(const std::string& room, std::int64_t from, std::int64_t to,
                   std::vector<std::pair<std::int64_t, SharedFrame>> found, SequencedBatch& batch) {
  auto add_gap = [&](std::int64_t first, std::int64_t last) {
    spdlog::warn("fanout: room {} seqs {}..{} are not in the Redis log; reported as a gap", room, first,
                 last);
    batch.push_back(
        {room, last, std::make_shared<const std::string>(protocol::gap_frame(room, first, last)), {}, first});
  };
  std::int64_t next = from;
  for (auto& [seq, frame] : found) {
    if (seq < next || seq > to) continue;
    if (seq > next) add_gap(next, seq - 1);
    batch.push_back({room, seq, std::move(frame), {}});
    next = seq + 1;
  }
  if (next <= to) add_gap(next, to);
}

// Presence events are not sequenced: no cursor, no ordering, no repair.
bool add_presence_items(std::string_view body, SequencedBatch& batch) {
  if (!protocol::peek_presence(body.substr(0, body.find('\n')))) return false;
  while (!body.empty()) {
    const auto end = body.find('\n');
    const auto line = body.substr(0, end);
    body.remove_prefix(end == std::string_view::npos ? body.size() : end + 1);
    if (line.empty()) continue;
    auto header = protocol::peek_presence(line);
    if (!header) {
      spdlog::error("fanout: dropping a malformed presence frame");
      continue;
    }
    auto frame = std::make_shared<std::string>();
    frame->reserve(line.size() + 1);
    frame->append(line).push_back('\n');
    batch.push_back({std::move(header->room), 0, std::move(frame), std::move(header->user)});
  }
  return true;
}

Fanout::Fanout(const GatewayConfig& config, RoomSeeds& seeds, Deliver deliver)
    : config_(config), seeds_(seeds), deliver_(std::move(deliver)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "fanout");
}

Fanout::~Fanout() {
  stopping_ = true;
  thread_.join();
}

void Fanout::run() {
  const auto& common = config_.common;
  const auto shards = common.amqp.ingest_shards;
  RoomCursors cursors;
  std::unique_ptr<redis::Connection> redis;
  Backoff backoff;

  SequencedBatch batch;
  // Frames [from, to] from the log, with a gap item for each run of seqs
  // it no longer has; the cursor ends at `to` either way.
  auto fill = [&](const std::string& room, std::int64_t from, std::int64_t to) {
    add_log_range(room, from, to, fetch_range(*redis, shards, room, from, to), batch);
    cursors.delivered(room, to);
  };
  auto deliver_in_order = [&](const std::string& room, std::int64_t seq, SharedFrame frame) {
    auto decision = cursors.on_arrival(room, seq);
    if (decision.kind == RoomCursors::Decision::Kind::duplicate) return;
    if (decision.kind == RoomCursors::Decision::Kind::fill_gap)
      fill(room, decision.gap_from, decision.gap_to);
    batch.push_back({room, seq, std::move(frame), {}});
    cursors.delivered(room, seq);
  };
  auto hand_over = [&] {
    if (batch.empty()) return;
    deliver_(std::make_shared<const SequencedBatch>(std::move(batch)));
    batch.clear();
  };

  while (!stopping_) {
    try {
      if (!redis) redis = std::make_unique<redis::Connection>(common.redis);
      amqp::Connection mq(common.amqp);
      mq.declare_fanout_exchange();
      auto queue = mq.declare_private_queue();
      mq.bind(queue, std::string(kFanoutExchange), "");
      mq.qos(2048);
      // What was published while this gateway had no queue is in the room
      // logs: catch up on every room seen or joined before consuming anew.
      for (auto& [room, seq] : seeds_.take()) cursors.seed(room, seq);
      for (const auto& [room, last] : std::vector(cursors.all().begin(), cursors.all().end())) {
        std::int64_t head = 0;
        try {
          head = rooms::current_seq(*redis, shards, room);
        } catch (const rooms::BadRoomData& error) {
          spdlog::error("fanout: room {}: {}", room, error.what());
          continue;
        }
        if (head <= last) continue;
        fill(room, last + 1, head);
      }
      hand_over();
      mq.consume(queue);
      spdlog::info("fanout: consuming {}", queue);
      backoff.reset();
      while (!stopping_) {
        auto delivery = mq.next(std::chrono::milliseconds(200));
        for (auto& [room, seq] : seeds_.take()) cursors.seed(room, seq);
        std::uint64_t last_tag = 0;
        // Whatever has already arrived goes out as one batch.
        for (std::size_t taken = 0; delivery && taken < kMaxBatch; ++taken) {
          last_tag = delivery->delivery_tag;
          if (add_presence_items(delivery->body, batch)) {
            // Presence events bypass the cursors.
          } else {
            // A sequencer's body: one room's frames in seq order, each
            // ending in '\n' (scale design, Contract B).
            std::string_view body = delivery->body;
            while (!body.empty()) {
              const auto end = body.find('\n');
              const auto line = body.substr(0, end == std::string_view::npos ? body.size() : end + 1);
              body.remove_prefix(line.size());
              if (auto header = protocol::peek_message(line)) {
                deliver_in_order(header->room, header->seq, std::make_shared<const std::string>(line));
              } else if (line != "\n") {
                spdlog::error("fanout: dropping a malformed frame");
              }
            }
          }
          delivery = taken + 1 < kMaxBatch ? mq.next(std::chrono::milliseconds(0)) : std::nullopt;
        }
        hand_over();
        if (last_tag != 0) mq.ack(last_tag, true);
      }
    } catch (const std::exception& error) {
      // Frames already queued are in order and counted as delivered by the
      // cursors, so they must go out.
      hand_over();
      if (stopping_) break;
      spdlog::warn("fanout: {}; reconnecting and catching up from Redis", error.what());
      if (dynamic_cast<const redis::RedisError*>(&error)) redis.reset();
      backoff.sleep(stopping_);
    }
  }
}

}  // namespace rtmc::gateway
