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
// ...and at most about this many bytes of fan-out messages per hand-over
// (a quarter of the default soft send-queue limit), so a backlog of large
// batched messages reaches each member in steps its socket can take, not
// as one burst over the hard limit.
constexpr std::size_t kMaxBatchBytes = 256 * 1024;
// Bindings made (and removed) per pass between reads of the queue: a pass
// costs about one broker and one Redis round trip plus the fills, so
// deliveries of bound rooms wait at most that long behind a storm of joins
// or a reconnect with thousands of local rooms.
constexpr std::size_t kMaxBindingsPerPass = 256;
// How long an idle fan-out thread waits for a delivery before it looks for
// rooms to bind again (it cannot be woken from rabbitmq-c's wait).
constexpr auto kIdlePoll = std::chrono::milliseconds(5);

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

std::size_t split_fanout_body(std::string body, SequencedBatch& items) {
  std::size_t malformed = 0;
  auto add = [&](std::string_view line, auto make_frame) {
    if (line.empty()) return;
    // Presence events are not sequenced: no cursor, no ordering, no repair.
    if (auto presence = protocol::peek_presence(line)) {
      items.push_back({std::move(presence->room), 0, make_frame(), std::move(presence->user)});
    } else if (auto message = protocol::peek_message(line); message && message->seq > 0) {
      items.push_back({std::move(message->room), message->seq, make_frame(), {}});
    } else {
      spdlog::error("fanout: dropping a malformed frame");
      ++malformed;
    }
  };
  const auto first_end = body.find('\n');
  if (first_end == std::string::npos || first_end + 1 == body.size()) {
    // One frame, the common case at low load: its buffer is the body's.
    if (first_end == std::string::npos) body.push_back('\n');
    const std::string_view line(body.data(), body.size() - 1);
    add(line, [&] { return std::make_shared<const std::string>(std::move(body)); });
    return malformed;
  }
  std::string_view rest(body);
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const auto line = rest.substr(0, end);
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    add(line, [&] {
      auto frame = std::make_shared<std::string>();
      frame->reserve(line.size() + 1);
      frame->append(line).push_back('\n');
      return frame;
    });
  }
  return malformed;
}

Fanout::Fanout(const GatewayConfig& config, LocalRooms& rooms, Deliver deliver)
    : config_(config), rooms_(rooms), deliver_(std::move(deliver)) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "fanout");
}

Fanout::~Fanout() {
  stopping_ = true;
  thread_.join();
}

void Fanout::add_metrics(metrics::Registry& registry) const {
  registry.add_collector([this] {
    auto read = [](const auto& value) { return static_cast<double>(value.load(std::memory_order_relaxed)); };
    const auto& c = counters_;
    return std::vector{
        metrics::counter_family("rtmc_gateway_fanout_messages_total",
                                "AMQP messages this gateway's fan-out queue received.",
                                {{{}, read(c.messages)}}),
        metrics::counter_family("rtmc_gateway_fanout_frames_total",
                                "Frames in those messages, by kind (message frames, presence events).",
                                {{{{"kind", "message"}}, read(c.message_frames)},
                                 {{{"kind", "presence"}}, read(c.presence_frames)}}),
        metrics::counter_family("rtmc_gateway_fanout_stale_frames_total",
                                "Frames of rooms without local members (published before a binding or "
                                "arriving after an unbind), dropped.",
                                {{{}, read(c.stale_frames)}}),
        metrics::counter_family("rtmc_gateway_fanout_room_binds_total",
                                "Rooms bound to the fan-out queue (again after each reconnect).",
                                {{{}, read(c.binds)}}),
        metrics::counter_family("rtmc_gateway_fanout_room_unbinds_total",
                                "Rooms unbound from the fan-out queue after their last local member left.",
                                {{{}, read(c.unbinds)}}),
        metrics::gauge_family("rtmc_gateway_fanout_rooms_bound",
                              "Rooms the fan-out queue is bound to (rooms with local members).",
                              {{{}, read(c.rooms_bound)}}),
        metrics::gauge_family("rtmc_gateway_fanout_rooms_pending",
                              "Room bindings still to be made or removed.", {{{}, read(c.rooms_pending)}})};
  });
}

void Fanout::run() {
  const auto& common = config_.common;
  const auto shards = common.amqp.ingest_shards;
  const std::string exchange(kFanoutExchange);
  // Rooms with local members whose join reported where it started: exactly
  // the rooms this gateway owes frames of.
  RoomCursors cursors;
  RoomBindings bindings;
  std::unique_ptr<redis::Connection> redis;
  Backoff backoff;

  SequencedBatch batch;
  SequencedBatch items;  // of one AMQP message
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
  auto publish_gauges = [&] {
    counters_.rooms_bound.store(static_cast<std::int64_t>(bindings.bound_count()), std::memory_order_relaxed);
    counters_.rooms_pending.store(static_cast<std::int64_t>(bindings.pending_count()),
                                  std::memory_order_relaxed);
  };
  // What the io threads reported since the last pass. A room without
  // members loses its cursor at once (its frames are dropped from here on)
  // and its binding soon; a room whose join reported a start and that has
  // no cursor gets one there and is (re)bound and caught up.
  // Joins waiting until their room's binding is in effect.
  std::unordered_map<std::string, std::vector<LocalRooms::Bound>> waiting;
  auto release = [&](const std::string& room) {
    auto it = waiting.find(room);
    if (it == waiting.end()) return;
    for (auto& bound : it->second) bound();
    waiting.erase(it);
  };
  auto apply_room_changes = [&] {
    for (auto& change : rooms_.take()) {
      if (!change.has_members) {
        cursors.forget(change.room);
        bindings.drop(change.room);
        for (auto& bound : change.waiting) bound();
        release(change.room);
        continue;
      }
      if (change.joined && !cursors.contains(change.room)) {
        cursors.seed(change.room, *change.joined);
        bindings.want(change.room);
      }
      if (change.waiting.empty()) continue;
      if (bindings.is_bound(change.room) && !bindings.bind_pending(change.room)) {
        for (auto& bound : change.waiting) bound();
      } else {
        auto& list = waiting[change.room];
        for (auto& bound : change.waiting) list.push_back(std::move(bound));
      }
    }
  };
  // Up to kMaxBindingsPerPass rooms each way. Binds: one broker round trip
  // for all (amqp::Connection::bind_keys), then one Redis round trip for
  // their seqs, read after the bindings are in effect (see pipeline.hpp for
  // why that leaves no gap), and the fill of what each cursor lacks.
  auto work_bindings = [&](amqp::Connection& mq, const std::string& queue) {
    auto unbinds = bindings.next_unbinds(kMaxBindingsPerPass);
    if (!unbinds.empty()) {
      mq.unbind_keys(queue, exchange, unbinds);
      counters_.unbinds.fetch_add(unbinds.size(), std::memory_order_relaxed);
    }
    auto binds = bindings.next_binds(kMaxBindingsPerPass);
    if (!binds.empty()) {
      mq.bind_keys(queue, exchange, binds);
      bindings.bound(binds);
      for (const auto& room : binds) release(room);
      counters_.binds.fetch_add(binds.size(), std::memory_order_relaxed);
      std::vector<std::vector<std::string>> commands;
      commands.reserve(binds.size());
      for (const auto& room : binds)
        commands.push_back(rooms::current_seq_command(shard_of(room, shards), room));
      const auto replies = redis->pipeline(commands);
      for (std::size_t i = 0; i < binds.size(); ++i) {
        const auto& room = binds[i];
        const auto last = cursors.last(room);
        if (!last) continue;
        std::int64_t head = 0;
        try {
          head = rooms::parse_current_seq(replies[i]);
        } catch (const rooms::BadRoomData& error) {
          spdlog::error("fanout: room {}: {}", room, error.what());
          continue;
        }
        if (head > *last) fill(room, *last + 1, head);
      }
      hand_over();
    }
    publish_gauges();
  };

  while (!stopping_) {
    try {
      if (!redis) redis = std::make_unique<redis::Connection>(common.redis);
      amqp::Connection mq(common.amqp);
      mq.declare_fanout_exchange();
      auto queue = mq.declare_private_queue();
      mq.qos(2048);
      mq.consume(queue);
      // A new queue has no bindings. What was published while this gateway
      // had none is in the room logs: every room with local members is bound
      // again and caught up from its cursor, a batch a pass, while the
      // frames of rooms bound already flow.
      apply_room_changes();
      std::vector<std::string> wanted;
      wanted.reserve(cursors.all().size());
      for (const auto& [room, _] : cursors.all()) wanted.push_back(room);
      bindings.reset(wanted);
      spdlog::info("fanout: consuming {}; binding {} rooms", queue, wanted.size());
      backoff.reset();
      while (!stopping_) {
        apply_room_changes();
        work_bindings(mq, queue);
        // While bindings wait, only look at what has already arrived; when
        // idle, wait briefly, so a join's binding is not long in coming.
        const auto wait = bindings.busy() ? std::chrono::milliseconds(0) : kIdlePoll;
        auto delivery = mq.next(wait);
        std::uint64_t last_tag = 0;
        // Whatever has already arrived goes out as one batch.
        std::size_t taken_bytes = 0;
        for (std::size_t taken = 0; delivery && taken < kMaxBatch; ++taken) {
          last_tag = delivery->delivery_tag;
          taken_bytes += delivery->body.size();
          counters_.messages.fetch_add(1, std::memory_order_relaxed);
          items.clear();
          split_fanout_body(std::move(delivery->body), items);
          for (auto& item : items) {
            (item.seq == 0 ? counters_.presence_frames : counters_.message_frames)
                .fetch_add(1, std::memory_order_relaxed);
            if (item.seq == 0) {
              batch.push_back(std::move(item));
            } else if (cursors.contains(item.room)) {
              deliver_in_order(item.room, item.seq, std::move(item.frame));
            } else {
              counters_.stale_frames.fetch_add(1, std::memory_order_relaxed);
            }
          }
          delivery = taken + 1 < kMaxBatch && taken_bytes < kMaxBatchBytes
                         ? mq.next(std::chrono::milliseconds(0))
                         : std::nullopt;
        }
        hand_over();
        if (last_tag != 0) mq.ack(last_tag, true);
      }
    } catch (const std::exception& error) {
      // Frames already queued are in order and counted as delivered by the
      // cursors, so they must go out.
      hand_over();
      if (stopping_) break;
      spdlog::warn("fanout: {}; reconnecting, binding the local rooms again and catching up from Redis",
                   error.what());
      if (dynamic_cast<const redis::RedisError*>(&error)) redis.reset();
      bindings.reset(std::vector<std::string>{});
      publish_gauges();
      backoff.sleep(stopping_);
    }
  }
}

}  // namespace rtmc::gateway
