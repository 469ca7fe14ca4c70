#pragma once
// A room's message history, for the api (GET /rooms/{R}/messages, GET /rooms)
// and the gateway (TCP `history`): the one module that knows where old
// messages live.
//
//   Redis    {k}:log:<room>  the recent window (--room-log-length), entry id
//                            <seq>-0, field f = the live frame (store/rooms.hpp)
//   Postgres messages        every message the syncer has written;
//                            created_at is the message's ts
//            rooms           one row per room with a message in PostgreSQL
//
// A query asks Redis first, with the room's seq, in one round trip. When the
// window alone answers it (see log_covers) PostgreSQL is not touched;
// otherwise PostgreSQL is asked for the same query and the two answers are
// stitched (merge): by seq, each seq once, the L items next to the bound.
// Seqs in neither store (not synced yet and already trimmed, or skipped by
// the sequencer) are simply absent: history returns what exists.
// An item rendered from a PostgreSQL row (protocol::message_frame) is
// byte-identical to the live frame, so callers cannot tell the sources apart.
//
// Threading: History holds no state of its own; every method may be awaited
// concurrently from any io thread. The blocking calls run on the workers of
// redis::Client and pg::Pool, never on the caller's thread. Both stores down,
// or either one when it is needed: store::Unavailable.

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/frames.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"

namespace rtmc::history {

// The protocol's numbers: api and gateway validate with the same ones.
inline constexpr std::size_t kDefaultLimit = protocol::HistoryRequest::kDefaultLimit;
inline constexpr std::size_t kMaxLimit = protocol::HistoryRequest::kMaxLimit;

struct Query {
  enum class Mode {
    latest,  // the last `limit` messages of the room
    after,   // the first `limit` messages with seq > `seq`
    before,  // the last `limit` messages with seq < `seq`
  };
  Mode mode = Mode::latest;
  std::int64_t seq = 0;               // the bound of after / before; >= 0
  std::size_t limit = kDefaultLimit;  // 1..kMaxLimit
};

// The query a validated protocol request (TCP frame or HTTP parameters) asks.
Query query_of(const protocol::HistoryRequest& request);

// (seq, frame as clients receive it, '\n' included), in ascending seq order.
using Items = rooms::LogFrames;

// Whether the log's answer alone is the full answer. `log` is what the log
// returned for the query (at most `limit` items, in the query's direction:
// ascending for after, descending for before and latest) and
// `current_seq` the room's seq read just before it. True when those items
// are contiguous, start right at the bound (N + 1 for after; the newest
// existing seq below the bound for before/latest) and either fill the limit
// or reach the room's first or last message. A room whose seq is 0 is never
// covered: after a Redis loss PostgreSQL may still know it.
bool log_covers(const Query& query, const Items& log, std::int64_t current_seq);

// Stitches the two stores' answers to one query: each in the query's
// direction (as log_covers describes), each at most `limit` items. Returns
// the first `limit` items of their union in that direction, each seq once
// (the log's frame wins), in ascending seq order.
Items merge(const Query& query, const Items& log, const Items& database);

struct RoomSummary {
  std::string room;
  std::int64_t last_seq = 0;
  std::int64_t last_ts_ms = 0;
};
struct RoomPage {
  std::vector<RoomSummary> rooms;  // ascending by name
  // The `after` of the next page; set exactly when a further page exists.
  std::optional<std::string> next;
};

class History {
 public:
  // `shards` = the deployment's ingest shards (the room log's key).
  History(redis::Client& redis, pg::Pool& pool, std::uint32_t shards)
      : redis_(redis), pool_(pool), shards_(shards) {}

  // Ascending seq order. Throws std::invalid_argument for a limit outside
  // 1..kMaxLimit or a negative seq (callers validate first).
  boost::asio::awaitable<Items> messages(std::string room, Query query);

  // Rooms with a name above `after` (all when nullopt), ascending in the
  // database's collation, at most `limit` (1..kMaxLimit). What the syncer
  // has not written yet is missing.
  boost::asio::awaitable<RoomPage> list_rooms(std::optional<std::string> after, std::size_t limit);

 private:
  boost::asio::awaitable<Items> from_database(const std::string& room, const Query& query);

  redis::Client& redis_;
  pg::Pool& pool_;
  std::uint32_t shards_;
};

}  // namespace rtmc::history
