#pragma once
// The syncer's logic without I/O: what a `{k}:sync` entry holds, how the
// replies of XREADGROUP / XAUTOCLAIM become entries, when a batch is due, and
// the one statement that writes a batch to PostgreSQL.
//
// Threading: free functions and plain values; no shared state.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/postgres.hpp"
#include "store/redis.hpp"

namespace rtmc::syncer {

// One message as the `messages` table stores it.
struct Row {
  std::string room;
  std::int64_t seq = 0;
  std::string id;
  std::string sender;
  std::string body;
  std::int64_t ts_ms = 0;  // becomes created_at
  bool operator==(const Row&) const = default;
};

// An entry of a sync stream. `row` is empty for a malformed entry (`problem`
// says why): it is logged, acked and deleted, never written.
struct Entry {
  std::uint32_t shard = 0;
  std::string id;  // the stream entry id
  std::optional<Row> row;
  std::string problem;
};

// The row of an entry whose fields (flat: name, value, ...) are `room`,
// `seq` and `f`, the message frame exactly as clients receive it
// (protocol::message_frame). The frame must be a `message` of the same room
// and seq with valid names, a non-empty body without NUL and an integer ts.
// Otherwise nullopt with the reason in `problem`.
std::optional<Row> parse_fields(const std::vector<std::string>& fields, std::string& problem);

// The entries of a stream reply: `entries` is an array of [id, [field,
// value, ...]] (one stream of XREADGROUP's reply, or XAUTOCLAIM's second
// element). An entry without fields (deleted while pending) is skipped.
std::vector<Entry> parse_entries(const redis::Reply& entries, std::uint32_t shard);

// Rows in (room, seq) order with repeats of a (room, seq) dropped: the
// statement then locks rows in one order in every syncer (no deadlock
// between syncers writing overlapping batches), and counts stay exact.
std::vector<Row> ordered_rows(std::vector<Row> rows);

// Inserts the rows (ON CONFLICT DO NOTHING: a re-delivered message, by
// (room, seq) or (room, sender, id), inserts nothing) and upserts `rooms`
// from the rows really inserted (last_seq and last_ts only grow,
// message_count adds), all in one statement, so one transaction. Returns one
// row: (rows inserted, rooms touched).
extern const char* const kInsertSql;
// The parameters of kInsertSql for `rows` (ordered_rows' output).
std::vector<pg::Param> insert_params(const std::vector<Row>& rows);

// Syncer lag: the age of the oldest entry of a sync stream, that is of the
// oldest message not in PostgreSQL yet (synced entries are deleted). `id` is
// that entry's id ("<ms>-<n>", its XADD time on the Redis clock), nullopt
// for an empty stream (lag 0); `now_ms` is Redis' TIME. nullopt when the id
// is not a stream id. Never negative.
std::optional<std::int64_t> oldest_entry_age_ms(std::optional<std::string_view> id, std::int64_t now_ms);
// Redis' TIME reply (seconds, microseconds) in ms; nullopt if malformed.
std::optional<std::int64_t> redis_time_ms(std::string_view seconds, std::string_view micros);

// What a failed batch statement means for the batch.
enum class Failure {
  transient,  // keep the batch, retry with backoff: anything not about the values
  rejected,   // the values themselves are refused (SQLSTATE 22, 23, 54): find the row, drop it
};
Failure classify(const pg::PgError& error);

// When a batch is written: `size` messages are in hand, or `wait` after the
// first of them arrived.
struct BatchPolicy {
  std::size_t size = 1000;
  std::chrono::milliseconds wait{100};
  using Clock = std::chrono::steady_clock;
  bool due(std::size_t in_hand, Clock::time_point first_at, Clock::time_point now) const {
    return in_hand > 0 && (in_hand >= size || now - first_at >= wait);
  }
  // How long a read may block before the batch in hand is due (0 = due now);
  // `idle` when nothing is in hand.
  std::chrono::milliseconds time_left(std::size_t in_hand, Clock::time_point first_at, Clock::time_point now,
                                      std::chrono::milliseconds idle) const;
};

}  // namespace rtmc::syncer
