#include "gateway/sequencer.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <iterator>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "common/backoff.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "gateway/gateway.hpp"
#include "protocol/frames.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"
#include "store/seq_reservations.hpp"

namespace rtmc::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Chat messages sequenced per round (one pipelined batch of scripts, one
// script per room): large enough that Redis' fsync per event-loop turn
// (appendfsync always) and the round trip are shared by many messages.
constexpr std::size_t kBatch = 2048;
// Deliveries (each may hold many chat messages, Contract A), per consumer:
// RabbitMQ applies a non-global basic.qos to each consumer, so a shard whose
// messages wait does not hold back the other shards.
constexpr std::uint16_t kPrefetch = 512;
constexpr std::chrono::milliseconds kIdleWait{200};
constexpr std::chrono::milliseconds kDeadLetterConfirmTimeout{5000};
// Attempt counts of messages not seen for this long are forgotten: their shard
// went to another gateway, or they were settled by an earlier connection.
constexpr std::chrono::minutes kForgetAttemptsAfter{10};

// One chat message: a line of an ingest delivery (Contract A of the scale
// design). Outcomes, attempts and dead letters are per chat message; the
// delivery is acked once all of its messages are settled.
struct Pending {
  enum class Outcome { open, sequenced, dead_lettered, dropped };
  std::uint64_t serial = 0;  // rises with every message added: pending_ is sorted by it
  std::uint64_t delivery_tag = 0;
  std::string line;                                // as published: what a dead letter holds
  std::optional<protocol::IngestMessage> message;  // nullopt: malformed
  std::string key;                                 // room, sender and id: attempts are counted under it
  Clock::time_point not_before{};                  // after a failed attempt
  Outcome outcome = Outcome::open;
};

// Sequencing calls at Redis (rooms::begin_sequence), oldest first. A room is
// in at most one of them: its next messages wait until this one's replies are
// read, so a failure of the room in one round can never let a later round
// give its later messages seqs first.
struct Round {
  std::vector<std::uint64_t> serials;  // its messages, in request order
  std::vector<std::string> rooms;
  rooms::PendingSequence call;
};

// Lets a set of strings be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};

struct Attempts {
  std::uint32_t failed = 0;
  Clock::time_point last_seen{};
};

// The sequencer thread's state; see sequencer.hpp for the behaviour.
class Loop {
 public:
  Loop(const CommonOptions& common, const Sequencer::Options& options, SequencerCounters& counters,
       const std::atomic<bool>& stopping)
      : common_(common),
        options_(options),
        counters_(counters),
        stopping_(stopping),
        limits_{common.limits.max_body_bytes},
        settings_{common.amqp.ingest_shards, common.limits.dedupe_window, common.limits.room_log_length},
        max_attempts_(std::max<std::uint32_t>(1, common.limits.max_sequence_attempts)),
        redis_(common.redis),
        pg_(common.pg, pg::Options{options.pg_timeout}) {}

  void run() {
    while (!stopping_) {
      try {
        amqp::Connection mq(common_.amqp);
        counters_.amqp_connections.fetch_add(1, std::memory_order_relaxed);
        std::vector<std::string> queues = options_.queues;
        if (queues.empty())
          for (std::uint32_t shard = 0; shard < common_.amqp.ingest_shards; ++shard)
            queues.push_back(ingest_queue(shard));
        for (const auto& queue : queues) mq.declare_ingest_queue(queue);
        mq.declare_fanout_exchange();
        mq.declare_dead_letter_queue(options_.dead_letter_queue);
        mq.qos(kPrefetch);
        for (const auto& queue : queues) mq.consume(queue);
        spdlog::info("sequencer: consuming {} ingest queue(s)", queues.size());
        forget_old_attempts();
        serve(mq);
      } catch (const std::exception& error) {
        // What was not acked is redelivered to whichever gateway consumes
        // the shard next; attempt counts stay, keyed by message.
        drop_rounds();
        pending_.clear();
        open_lines_.clear();
        ready_.clear();
        if (stopping_) break;
        const auto delay = amqp_backoff_.next();
        spdlog::warn("sequencer: {}; reconnecting to RabbitMQ in {} ms (un-acked messages are redelivered)",
                     error.what(), delay.count());
        sleep_unless_stopped(delay, stopping_);
      }
    }
  }

 private:
  // Up to rounds_in_flight rounds are at Redis at once (disjoint rooms), and
  // the next round goes out before the fan-out and acks of the one whose
  // replies just came back, so Redis works while this thread publishes,
  // acks and reads deliveries.
  void serve(amqp::Connection& mq) {
    while (!stopping_) {
      take(mq, rounds_.empty() ? wait_time(Clock::now()) : 0ms);
      launch();
      if (rounds_.empty()) {
        ack_settled(mq);  // dropped and dead-lettered ones
        continue;
      }
      finish_round(mq);
    }
  }

  // Waits up to `wait` for deliveries, then takes what else has arrived;
  // the prefetch bounds how many can be pending.
  void take(amqp::Connection& mq, std::chrono::milliseconds wait) {
    auto delivery = mq.next(wait);
    while (delivery) {
      add(std::move(*delivery));
      delivery = mq.next(0ms);
    }
  }

  // One Pending per line of the body; an empty body is one malformed
  // message, so the delivery is still settled and acked.
  void add(amqp::Delivery delivery) {
    const auto lines = amqp::split_batch(delivery.body);
    for (const auto line : lines) add_message(delivery.delivery_tag, line);
    if (lines.empty()) add_message(delivery.delivery_tag, {});
  }

  void add_message(std::uint64_t delivery_tag, std::string_view line) {
    Pending pending;
    pending.serial = next_serial_++;
    pending.delivery_tag = delivery_tag;
    open_lines_[delivery_tag] += 1;
    pending.line = line;
    pending.message = protocol::decode_ingest(line, limits_);
    if (pending.message) {
      // Room and user names cannot contain a newline.
      pending.key = pending.message->room + '\n' + pending.message->from + '\n' + pending.message->id;
      if (auto it = attempts_.find(pending.key); it != attempts_.end()) it->second.last_seen = Clock::now();
    }
    pending_.push_back(std::move(pending));
  }

  // How long take() may wait: until Redis may be tried again, or the first
  // retry of a room's waiting head is due, at most kIdleWait (rabbitmq-c
  // serves heartbeats only inside calls).
  std::chrono::milliseconds wait_time(Clock::time_point now) const {
    if (pending_.empty()) return kIdleWait;
    auto until = now + kIdleWait;
    if (redis_retry_at_ > now) {
      until = std::min(until, redis_retry_at_);
    } else {
      std::unordered_set<std::string_view> seen;
      for (const auto& pending : pending_) {
        if (pending.outcome != Pending::Outcome::open) continue;
        if (!pending.message) return 0ms;
        if (!seen.insert(pending.message->room).second) continue;  // not its room's head
        if (pending.not_before <= now) return 0ms;                 // due: no need to look further
        until = std::min(until, pending.not_before);
      }
    }
    return std::chrono::ceil<std::chrono::milliseconds>(std::max(until - now, Clock::duration::zero()));
  }

  // The next round's messages (indexes into pending_). Each room's messages
  // in delivery order: a room whose head waits (a retry not yet due, a
  // dead-letter publish that failed) or that is in a round at Redis holds
  // back its later messages, so their seqs keep the order sent.
  //
  // A scan is remembered (the rooms it held, those of the batch it returned,
  // which go into a round now, and where it ended): while no room left a
  // round and no held head became due, the next scan starts where it ended.
  // Otherwise, with a busy room in a round, every pass of the loop would walk
  // the whole backlog.
  std::vector<std::size_t> next_batch(Clock::time_point now) {
    std::vector<std::size_t> batch;
    std::size_t first = 0;
    if (scan_.valid && now < scan_.until) {
      first = static_cast<std::size_t>(std::distance(
          pending_.begin(),
          std::lower_bound(pending_.begin(), pending_.end(), scan_.next_serial,
                           [](const Pending& pending, std::uint64_t s) { return pending.serial < s; })));
    } else {
      scan_.held.clear();
      scan_.until = Clock::time_point::max();
    }
    scan_.valid = false;
    auto& held = scan_.held;
    std::size_t i = first;
    for (; i < pending_.size() && batch.size() < kBatch; ++i) {
      auto& pending = pending_[i];
      if (pending.outcome != Pending::Outcome::open) continue;
      if (!pending.message) {
        // Publishers validate before publishing, so this is a foreign or
        // corrupt message; requeueing it would loop forever.
        spdlog::error("sequencer: dropping a malformed ingest message ({} bytes)", pending.line.size());
        settle(pending, Pending::Outcome::dropped);
        continue;
      }
      const std::string_view room = pending.message->room;
      if (held.contains(room)) continue;
      if (in_flight_.contains(pending.message->room)) {
        held.emplace(room);
        continue;
      }
      if (pending.not_before > now) {
        held.emplace(room);
        scan_.until = std::min(scan_.until, pending.not_before);
        continue;
      }
      if (auto it = attempts_.find(pending.key);
          it != attempts_.end() && it->second.failed >= max_attempts_) {
        // Its last attempt failed but the dead-letter publish did not go
        // through then (or the ack was lost and it came back).
        if (!give_up(pending, "earlier attempts failed")) {
          pending.not_before = now + message_backoff_.delay_after(it->second.failed);
          held.emplace(room);
          scan_.until = std::min(scan_.until, pending.not_before);
        }
        continue;
      }
      batch.push_back(i);
    }
    // Added after the loop: a room's later messages may join the batch.
    for (const auto index : batch) held.emplace(pending_[index].message->room);
    scan_.valid = true;
    scan_.next_serial = i < pending_.size() ? pending_[i].serial : next_serial_;
    return batch;
  }

  // Sends rounds to Redis until rounds_in_flight are there or no message
  // is ready.
  void launch() {
    while (rounds_.size() < options_.rounds_in_flight) {
      const auto now = Clock::now();
      if (now < redis_retry_at_ || pending_.empty()) return;
      const auto batch = next_batch(now);
      if (batch.empty()) return;
      const auto ts = now_ms();
      counters_.batch_sizes.observe(static_cast<double>(batch.size()));
      std::vector<rooms::SequenceRequest> requests;
      requests.reserve(batch.size());
      Round round;
      round.serials.reserve(batch.size());
      for (auto index : batch) {
        const auto& message = *pending_[index].message;
        auto parts =
            protocol::message_frame_template(message.room, message.id, message.from, message.body, ts);
        requests.push_back(
            {message.room, message.id, message.from, std::move(parts.prefix), std::move(parts.suffix)});
        round.serials.push_back(pending_[index].serial);
        if (in_flight_.insert(message.room).second) round.rooms.push_back(message.room);
      }
      try {
        read_run_id();
        round.call = rooms::begin_sequence(redis_, settings_, run_id_, std::move(requests));
      } catch (const redis::RedisError& error) {
        release(round);
        on_redis_failure(error);
        return;
      }
      counters_.rounds.fetch_add(1, std::memory_order_relaxed);
      if (!rounds_.empty() || unpublished_)
        counters_.rounds_overlapped.fetch_add(1, std::memory_order_relaxed);
      rounds_.push_back(std::move(round));
    }
  }

  // The round's rooms may be in the next round again.
  void release(const Round& round) {
    for (const auto& room : round.rooms) in_flight_.erase(room);
    scan_.valid = false;
  }

  // Nothing is known about which scripts ran; the dedupe keys make the
  // retry safe. No message is charged for the outage.
  void on_redis_failure(const redis::RedisError& error) {
    counters_.redis_failures.fetch_add(1, std::memory_order_relaxed);
    const auto delay = redis_backoff_.next();
    redis_retry_at_ = Clock::now() + delay;
    spdlog::warn("sequencer: {}; {} message(s) wait, retrying in {} ms", error.what(), pending_.size(),
                 delay.count());
  }

  Pending& pending_of(std::uint64_t serial) {
    const auto it =
        std::lower_bound(pending_.begin(), pending_.end(), serial,
                         [](const Pending& pending, std::uint64_t s) { return pending.serial < s; });
    return *it;  // a message in a round is open, so not acked, so still here
  }

  // Waits for the oldest round's replies, settles its messages, sends the
  // next round, then publishes this one's fan-out and acks what is settled.
  void finish_round(amqp::Connection& mq) {
    Round round = std::move(rounds_.front());
    rounds_.pop_front();
    std::vector<rooms::SequenceResult> results;
    try {
      results = rooms::finish_sequence(redis_, round.call);
    } catch (const redis::RedisError& error) {
      // Later rounds on the same connection fail the same way when their
      // turn comes; one on a newer connection (made after an install
      // failed) may still have gone through.
      release(round);
      on_redis_failure(error);
      return;
    }
    release(round);
    const auto now = Clock::now();

    const std::string* refusal = nullptr;
    bool sequenced_any = false;
    std::vector<std::string> need_seqs;
    // Contract B: one fan-out message per room of the batch, its frames in
    // seq order, published before any of them is acked. The room names are
    // the round's requests' (pending_ may grow meanwhile).
    std::vector<std::pair<std::string_view, std::vector<const rooms::SequenceResult*>>> fanout;
    std::unordered_map<std::string_view, std::size_t> fanout_of;
    for (std::size_t k = 0; k < round.serials.size(); ++k) {
      auto& pending = pending_of(round.serials[k]);
      const auto& result = results[k];
      switch (result.status) {
        case rooms::SequenceResult::Status::sequenced: {
          const std::string_view room = round.call.requests[k].room;
          const auto [it, added] = fanout_of.try_emplace(room, fanout.size());
          if (added) fanout.emplace_back(room, std::vector<const rooms::SequenceResult*>{});
          fanout[it->second].second.push_back(&result);
          settle(pending, Pending::Outcome::sequenced);
          sequenced_any = true;
          break;
        }
        case rooms::SequenceResult::Status::failed: on_failed_attempt(pending, result.error, now); break;
        case rooms::SequenceResult::Status::refused: refusal = &result.error; break;
        case rooms::SequenceResult::Status::not_run: break;
        case rooms::SequenceResult::Status::needs_seqs: need_seqs.push_back(pending.message->room); break;
      }
    }
    // Seqs are reserved before the rooms that need them can be in a round
    // again, so each gets one block.
    if (!need_seqs.empty() && refusal == nullptr) reserve_seqs(need_seqs, now);
    if (refusal != nullptr) {
      counters_.redis_refusals.fetch_add(1, std::memory_order_relaxed);
      const auto delay = redis_backoff_.next();
      redis_retry_at_ = Clock::now() + delay;
      spdlog::warn("sequencer: redis refused: {}; retrying in {} ms (never dead-lettered)", *refusal,
                   delay.count());
    } else {
      redis_backoff_.reset();
    }
    unpublished_ = !fanout.empty();
    launch();
    unpublished_ = false;
    for (auto& [room, frames] : fanout) publish_frames(mq, room, frames);
    if (sequenced_any) observe_end_to_end(round.serials);
    // Only a batch that went through shows the whole path works again.
    if (sequenced_any) amqp_backoff_.reset();
    ack_settled(mq);
  }

  // After a RabbitMQ failure: the rounds' messages are redelivered, so their
  // results do not matter, but every reply is read so the Redis connection
  // stays in step.
  void drop_rounds() {
    for (auto& round : rounds_) {
      try {
        rooms::finish_sequence(redis_, round.call);
      } catch (const redis::RedisError&) {
        // The connection is dropped; the next call reconnects.
      }
    }
    rounds_.clear();
    in_flight_.clear();
    scan_.valid = false;
  }

  void settle(Pending& pending, Pending::Outcome outcome) {
    if (pending.outcome != Pending::Outcome::open) return;
    pending.outcome = outcome;
    const auto open = open_lines_.find(pending.delivery_tag);
    if (open != open_lines_.end() && --open->second == 0) ready_.push_back(pending.delivery_tag);
  }

  // Accept -> fan-out of the messages this round sequenced (repeats of a
  // redelivery included: they were held up as long).
  void observe_end_to_end(const std::vector<std::uint64_t>& serials) {
    const auto published_ms = now_ms();
    for (auto serial : serials) {
      const auto& pending = pending_of(serial);
      if (pending.outcome != Pending::Outcome::sequenced || pending.message->accepted_ms <= 0) continue;
      const auto ms = std::max<std::int64_t>(0, published_ms - pending.message->accepted_ms);
      counters_.end_to_end.observe(static_cast<double>(ms) / 1000.0);
    }
  }

  // A room's new frames as one fan-out message. A repeat (redelivered,
  // deduplicated) carries its first seq, which may be below the others.
  static void publish_frames(amqp::Connection& mq, std::string_view room,
                             std::vector<const rooms::SequenceResult*>& frames) {
    std::stable_sort(frames.begin(), frames.end(),
                     [](const auto* a, const auto* b) { return a->seq < b->seq; });
    std::string body;
    std::size_t size = 0;
    for (const auto* frame : frames) size += frame->frame.size();
    body.reserve(size);
    std::int64_t last = 0;
    for (const auto* frame : frames) {
      if (frame->seq == last) continue;
      last = frame->seq;
      body.append(frame->frame);
    }
    mq.publish({std::string(kFanoutExchange), std::string(room), std::move(body), false, false});
  }

  // The run_id of the Redis process this connection reaches, read on the
  // connection the next script runs on (redis.hpp: a call reconnects only
  // when not connected()).
  void read_run_id() {
    if (redis_.connected() && redis_.connects() == run_id_connects_ && !run_id_.empty()) return;
    auto run_id = rooms::server_run_id(redis_);
    run_id_connects_ = redis_.connects();
    if (run_id != run_id_) {
      spdlog::info("sequencer: Redis run_id {}", run_id);
      unused_blocks_.clear();  // reserved for another run: never installed now
    }
    run_id_ = std::move(run_id);
  }

  // Reserves a block for each room in PostgreSQL and installs the blocks in
  // Redis; the rooms' messages stay open and run again in the next round,
  // or wait with backoff when that failed.
  void reserve_seqs(const std::vector<std::string>& rooms, Clock::time_point now) {
    // A block reserved under this run whose install Redis refused or did not
    // answer is installed again rather than reserving another (the room
    // would skip the first). Under another run it is dropped: another
    // sequencer may have given seqs above it since.
    std::vector<rooms::SeqBlock> blocks;
    std::vector<seq_reservations::Request> requests;
    for (const auto& room : rooms) {
      if (const auto unused = unused_blocks_.find(room); unused != unused_blocks_.end()) {
        if (unused->second.first == run_id_) {
          blocks.push_back(unused->second.second);
          continue;
        }
        unused_blocks_.erase(unused);
      }
      const auto floor = floors_.find(room);
      requests.push_back({room, floor == floors_.end() ? 0 : floor->second});
    }
    // While PostgreSQL is failing, a room new to the wait does not try again
    // before the backoff ends: each try may block this thread for the whole
    // statement timeout, and rooms with seqs left must keep flowing.
    if (!requests.empty() && now < pg_retry_at_) {
      for (const auto& request : requests) hold(request.room, pg_retry_at_);
      requests.clear();
    }
    try {
      if (!requests.empty()) {
        auto reserved = seq_reservations::reserve(pg_, requests, options_.seq_block);
        for (auto& block : reserved) unused_blocks_[block.room] = {run_id_, block};
        blocks.insert(blocks.end(), std::make_move_iterator(reserved.begin()),
                      std::make_move_iterator(reserved.end()));
      }
    } catch (const pg::PgError& error) {
      counters_.pg_failures.fetch_add(1, std::memory_order_relaxed);
      const auto delay = pg_backoff_.next();
      pg_retry_at_ = now + delay;
      for (const auto& request : requests) hold(request.room, pg_retry_at_);
      if (!pg_failing_)
        spdlog::warn("sequencer: reserving seqs in PostgreSQL: {}; {} room(s) wait, retrying with backoff",
                     error.what(), rooms.size());
      pg_failing_ = true;
      return;
    }
    if (!requests.empty()) {
      if (pg_failing_) spdlog::info("sequencer: seq reservations in PostgreSQL work again");
      pg_failing_ = false;
      pg_backoff_.reset();
    }

    if (blocks.empty()) return;
    std::vector<rooms::InstallResult> installed;
    try {
      installed = rooms::install_seqs(redis_, settings_.shards, run_id_, blocks);
    } catch (const redis::RedisError& error) {
      // The blocks stay in unused_blocks_: installed on the next attempt if
      // it reaches the same Redis run, dropped otherwise.
      counters_.redis_failures.fetch_add(1, std::memory_order_relaxed);
      const auto delay = redis_backoff_.next();
      redis_retry_at_ = Clock::now() + delay;
      spdlog::warn("sequencer: installing seq blocks: {}; retrying in {} ms", error.what(), delay.count());
      return;
    }
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const auto& block = blocks[i];
      const auto& result = installed[i];
      if (!result.error.empty()) {
        if (redis::is_refusal(result.error)) {
          counters_.redis_refusals.fetch_add(1, std::memory_order_relaxed);
          redis_retry_at_ = Clock::now() + redis_backoff_.next();
        } else {
          unused_blocks_.erase(block.room);
          spdlog::error("sequencer: room {}: installing seqs up to {}: {}", block.room, block.reserved,
                        result.error);
          hold(block.room, now + message_backoff_.delay_after(3));
        }
        continue;
      }
      unused_blocks_.erase(block.room);
      counters_.seq_blocks.fetch_add(1, std::memory_order_relaxed);
      if (result.skipped()) {
        counters_.seq_skips.fetch_add(1, std::memory_order_relaxed);
        counters_.seqs_skipped.fetch_add(static_cast<std::uint64_t>(result.seq - result.seq_before),
                                         std::memory_order_relaxed);
        spdlog::warn(
            "sequencer: room {}: Redis (run {}) held no reservation of its own; seq {} continues at {} "
            "(seqs up to {} may have been given before: {}..{} are skipped, a gap for clients)",
            block.room, run_id_, result.seq_before, result.seq + 1, block.previous, result.seq_before + 1,
            result.seq);
      }
      // A seq at or above its new mark (a room from before the guard): the
      // next block starts above it.
      if (result.seq >= result.reserved)
        floors_[block.room] = result.seq;
      else
        floors_.erase(block.room);
    }
  }

  // Makes the room's first open message (and so the room) wait until `until`.
  void hold(const std::string& room, Clock::time_point until) {
    for (auto& pending : pending_) {
      if (pending.outcome != Pending::Outcome::open || !pending.message || pending.message->room != room)
        continue;
      pending.not_before = std::max(pending.not_before, until);
      return;
    }
  }

  void on_failed_attempt(Pending& pending, const std::string& error, Clock::time_point now) {
    counters_.script_failures.fetch_add(1, std::memory_order_relaxed);
    auto& attempts = attempts_[pending.key];
    attempts.failed += 1;
    attempts.last_seen = now;
    const auto& message = *pending.message;
    if (attempts.failed < max_attempts_) {
      const auto delay = message_backoff_.delay_after(attempts.failed - 1);
      pending.not_before = now + delay;
      spdlog::warn("sequencer: room {} message {} from {}: attempt {} of {} failed: {}; retrying in {} ms",
                   message.room, message.id, message.from, attempts.failed, max_attempts_, error,
                   delay.count());
      return;
    }
    spdlog::error("sequencer: room {} message {} from {}: attempt {} of {} failed: {}", message.room,
                  message.id, message.from, attempts.failed, max_attempts_, error);
    if (!give_up(pending, error)) pending.not_before = now + message_backoff_.delay_after(attempts.failed);
  }

  // Publishes the message to the dead-letter queue and waits for the
  // broker's confirm; only then may it be acked. On a connection of its own,
  // so confirms never mix with the consumer's deliveries. False: not stored,
  // keep the message and try again later.
  bool give_up(Pending& pending, const std::string& why) {
    const auto& message = *pending.message;
    // A connection idle for long may have been closed by the broker: one
    // retry on a fresh one.
    for (int round = 0; round < 2; ++round) {
      try {
        if (!dead_letters_) {
          // No heartbeats: it is idle between dead letters, and a dead link
          // shows up as a missing confirm.
          dead_letters_ = std::make_unique<amqp::Connection>(common_.amqp, std::chrono::seconds(0));
          dead_letters_->declare_dead_letter_queue(options_.dead_letter_queue);
          dead_letters_->confirm_select();
        }
        const amqp::Message letter{"", options_.dead_letter_queue, pending.line, true, true};
        const auto status = dead_letters_->publish_confirmed(letter, kDeadLetterConfirmTimeout);
        if (status != amqp::PublishStatus::confirmed) {
          spdlog::error("sequencer: dead-lettering room {} message {} from {}: {}", message.room, message.id,
                        message.from, amqp::to_string(status));
          return false;
        }
        spdlog::error("sequencer: room {} message {} from {} moved to {} ({})", message.room, message.id,
                      message.from, options_.dead_letter_queue, why);
        settle(pending, Pending::Outcome::dead_lettered);
        return true;
      } catch (const amqp::AmqpError& error) {
        dead_letters_.reset();
        spdlog::warn("sequencer: dead-letter publish: {}", error.what());
      }
    }
    return false;
  }

  // Acks every delivery whose messages are all settled, and forgets them.
  // Deliveries are in tag order and their messages adjacent: the settled
  // ones before the first with an open message go with one multiple ack (the
  // usual case: the whole batch), later ones one by one. Only the deliveries
  // settled since the last call are looked at, not every pending message.
  void ack_settled(amqp::Connection& mq) {
    if (ready_.empty()) return;
    std::sort(ready_.begin(), ready_.end());
    std::uint64_t prefix_tag = 0;
    std::size_t prefix = 0;
    while (prefix < pending_.size()) {
      const auto tag = pending_[prefix].delivery_tag;
      if (!std::binary_search(ready_.begin(), ready_.end(), tag)) break;
      while (prefix < pending_.size() && pending_[prefix].delivery_tag == tag) ++prefix;
      prefix_tag = tag;
    }
    const auto first_single = std::upper_bound(ready_.begin(), ready_.end(), prefix_tag);
    if (prefix_tag != 0) mq.ack(prefix_tag, true);
    for (auto it = first_single; it != ready_.end(); ++it) mq.ack(*it);

    std::uint64_t sequenced = 0;
    std::uint64_t dead = 0;
    auto forget = [&](const Pending& pending) {
      if (pending.outcome == Pending::Outcome::sequenced) ++sequenced;
      if (pending.outcome == Pending::Outcome::dead_lettered) ++dead;
      // Forgotten only once acked: a message dead-lettered but redelivered
      // (the ack was lost) goes straight back to the dead-letter queue.
      if (!pending.key.empty()) attempts_.erase(pending.key);
    };
    // The prefix leaves from the front of the deque, which moves nothing.
    for (std::size_t i = 0; i < prefix; ++i) forget(pending_[i]);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(prefix));
    if (first_single != ready_.end()) {
      std::erase_if(pending_, [&](const Pending& pending) {
        if (!std::binary_search(first_single, ready_.end(), pending.delivery_tag)) return false;
        forget(pending);
        return true;
      });
    }
    for (const auto tag : ready_) open_lines_.erase(tag);
    ready_.clear();
    counters_.sequenced.fetch_add(sequenced, std::memory_order_relaxed);
    counters_.dead_lettered.fetch_add(dead, std::memory_order_relaxed);
  }

  void forget_old_attempts() {
    const auto now = Clock::now();
    std::erase_if(attempts_,
                  [&](const auto& entry) { return now - entry.second.last_seen > kForgetAttemptsAfter; });
  }

  const CommonOptions& common_;
  const Sequencer::Options& options_;
  SequencerCounters& counters_;
  const std::atomic<bool>& stopping_;
  const protocol::ParseLimits limits_;
  const rooms::SequenceSettings settings_;
  const std::uint32_t max_attempts_;

  redis::Connection redis_;
  std::string run_id_;                 // of the server redis_ reached ...
  std::uint64_t run_id_connects_ = 0;  // ... on its connection number this
  pg::Connection pg_;
  bool pg_failing_ = false;
  // Rooms whose seq was at or above a block just installed: the next
  // reservation must end above it.
  std::unordered_map<std::string, std::int64_t> floors_;
  // Blocks reserved but not installed yet, with the run_id they were
  // reserved under.
  std::unordered_map<std::string, std::pair<std::string, rooms::SeqBlock>> unused_blocks_;
  std::unique_ptr<amqp::Connection> dead_letters_;
  std::deque<Pending> pending_;  // delivered, not yet acked, in delivery order
  std::uint64_t next_serial_ = 1;
  // Open messages per delivery not yet acked, and the deliveries whose count
  // reached 0 since the last ack_settled().
  std::unordered_map<std::uint64_t, std::uint32_t> open_lines_;
  std::vector<std::uint64_t> ready_;
  std::deque<Round> rounds_;
  std::unordered_set<std::string> in_flight_;  // rooms of rounds_
  bool unpublished_ = false;
  // What the last next_batch() that found nothing saw (see there).
  struct Scan {
    bool valid = false;
    std::uint64_t next_serial = 0;  // the first message it did not see
    Clock::time_point until{};      // the first held head that becomes due
    std::unordered_set<std::string, StringHash, std::equal_to<>> held;
  } scan_;  // a finished round's fan-out is not published yet
  std::unordered_map<std::string, Attempts> attempts_;
  Backoff amqp_backoff_;
  Backoff redis_backoff_;
  Backoff message_backoff_;
  Backoff pg_backoff_;
  Clock::time_point redis_retry_at_{};
  Clock::time_point pg_retry_at_{};  // no seq reservation before it
};

}  // namespace

namespace {
Sequencer::Options options_of(const GatewayConfig& config) {
  Sequencer::Options options;
  options.seq_block = config.seq_block;
  options.rounds_in_flight = config.sequence_rounds_in_flight;
  return options;
}
}  // namespace

Sequencer::Sequencer(const GatewayConfig& config) : Sequencer(config.common, options_of(config)) {}

Sequencer::Sequencer(const CommonOptions& common, Options options)
    : common_(common), options_(std::move(options)) {
  if (options_.seq_block <= 0) throw std::invalid_argument("the seq block must be positive");
  if (options_.rounds_in_flight == 0)
    throw std::invalid_argument("at least one sequencing round must be in flight");
  thread_ = std::thread([this] {
    Loop loop(common_, options_, counters_, stopping_);
    loop.run();
  });
  pthread_setname_np(thread_.native_handle(), "sequencer");
}

Sequencer::~Sequencer() {
  stopping_ = true;
  thread_.join();
}

}  // namespace rtmc::gateway
