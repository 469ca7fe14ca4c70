#include "syncer/entries.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <string_view>

#include "common/names.hpp"

namespace rtmc::syncer {

namespace json = boost::json;

namespace {

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

const json::string* string_at(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  return value != nullptr && value->is_string() ? &value->get_string() : nullptr;
}

std::optional<std::int64_t> int_at(const json::object& object, std::string_view key) {
  const json::value* value = object.if_contains(key);
  if (value == nullptr) return std::nullopt;
  if (value->is_int64()) return value->get_int64();
  if (value->is_uint64() && value->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<std::int64_t>(value->get_uint64());
  return std::nullopt;
}

}  // namespace

std::optional<Row> parse_fields(const std::vector<std::string>& fields, std::string& problem) {
  const std::string* room = nullptr;
  const std::string* seq_text = nullptr;
  const std::string* frame = nullptr;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
    if (fields[i] == "room") room = &fields[i + 1];
    if (fields[i] == "seq") seq_text = &fields[i + 1];
    if (fields[i] == "f") frame = &fields[i + 1];
  }
  if (room == nullptr || seq_text == nullptr || frame == nullptr) {
    problem = "fields room, seq and f expected";
    return std::nullopt;
  }
  const auto seq = parse_int(*seq_text);
  if (!seq || *seq <= 0) {
    problem = "seq is not a positive integer";
    return std::nullopt;
  }
  json::error_code ec;
  const json::value parsed = json::parse(*frame, ec);
  if (ec || !parsed.is_object()) {
    problem = "f is not a JSON object";
    return std::nullopt;
  }
  const json::object& object = parsed.get_object();
  const json::string* type = string_at(object, "type");
  const json::string* frame_room = string_at(object, "room");
  const json::string* id = string_at(object, "id");
  const json::string* from = string_at(object, "from");
  const json::string* body = string_at(object, "body");
  const auto frame_seq = int_at(object, "seq");
  const auto ts = int_at(object, "ts");
  if (type == nullptr || *type != "message" || frame_room == nullptr || id == nullptr || from == nullptr ||
      body == nullptr || !frame_seq || !ts) {
    problem = "f is not a message frame";
    return std::nullopt;
  }
  if (*frame_room != *room || *frame_seq != *seq) {
    problem = "f is for another room or seq than the entry";
    return std::nullopt;
  }
  if (!valid_room_name(*room) || !valid_message_id(*id) || !valid_user_name(*from)) {
    problem = "bad room, id or sender name";
    return std::nullopt;
  }
  if (body->empty() || std::string_view(*body).find('\0') != std::string_view::npos) {
    problem = "empty body or a NUL in it";
    return std::nullopt;
  }
  return Row{*room, *seq, std::string(*id), std::string(*from), std::string(*body), *ts};
}

std::vector<Entry> parse_entries(const redis::Reply& entries, std::uint32_t shard) {
  std::vector<Entry> out;
  if (entries.type != redis::Reply::Type::array) return out;
  out.reserve(entries.elements.size());
  std::vector<std::string> fields;
  for (const auto& item : entries.elements) {
    if (item.type != redis::Reply::Type::array || item.elements.size() < 2) continue;
    const auto& field_list = item.elements[1];
    if (field_list.type != redis::Reply::Type::array) continue;  // deleted while pending
    Entry entry;
    entry.shard = shard;
    entry.id = item.elements[0].str;
    fields.clear();
    for (const auto& field : field_list.elements) fields.push_back(field.str);
    entry.row = parse_fields(fields, entry.problem);
    out.push_back(std::move(entry));
  }
  return out;
}

std::vector<Row> ordered_rows(std::vector<Row> rows) {
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.room != b.room ? a.room < b.room : a.seq < b.seq; });
  rows.erase(std::unique(rows.begin(), rows.end(),
                         [](const Row& a, const Row& b) { return a.room == b.room && a.seq == b.seq; }),
             rows.end());
  return rows;
}

// The rooms upsert reads what the messages insert returned, so a row already
// in PostgreSQL (re-delivery, a second syncer) is counted nowhere. ORDER BY
// room locks the rooms rows in one order in every syncer. Milliseconds
// become a timestamp by interval arithmetic, exactly.
const char* const kInsertSql =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], "
    "$6::bigint[]) AS v(room, seq, id, sender, body, ts)), "
    "ins AS (INSERT INTO messages (room, seq, id, sender, body, created_at) "
    "SELECT room, seq, id, sender, body, timestamptz 'epoch' + ts * interval '1 millisecond' FROM v "
    "ON CONFLICT DO NOTHING RETURNING room, seq, created_at), "
    "up AS (INSERT INTO rooms AS r (room, last_seq, message_count, last_ts) "
    "SELECT room, max(seq), count(*), max(created_at) FROM ins GROUP BY room ORDER BY room "
    "ON CONFLICT (room) DO UPDATE SET last_seq = greatest(r.last_seq, excluded.last_seq), "
    "message_count = r.message_count + excluded.message_count, "
    "last_ts = greatest(r.last_ts, excluded.last_ts) RETURNING 1) "
    "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM up)";

std::vector<pg::Param> insert_params(const std::vector<Row>& rows) {
  std::vector<std::string> rooms, seqs, ids, senders, bodies, times;
  for (auto* column : {&rooms, &seqs, &ids, &senders, &bodies, &times}) column->reserve(rows.size());
  for (const auto& row : rows) {
    rooms.push_back(row.room);
    seqs.push_back(std::to_string(row.seq));
    ids.push_back(row.id);
    senders.push_back(row.sender);
    bodies.push_back(row.body);
    times.push_back(std::to_string(row.ts_ms));
  }
  return {pg::text_array(rooms),   pg::text_array(seqs),   pg::text_array(ids),
          pg::text_array(senders), pg::text_array(bodies), pg::text_array(times)};
}

// Only an error about the values themselves may drop a message: data
// exceptions (class 22: bad encoding, out of range), integrity violations
// (23: a check the row breaks) and program limits (54: a value too large).
// Everything else is about the server, not the row — down, a read-only
// standby after a failover (25006), a missing grant (42501), a schema not
// migrated yet (42P01, 42703), a deadlock (40P01) — and dropping on it would
// delete acknowledged messages from the streams: the batch waits instead.
Failure classify(const pg::PgError& error) {
  if (error.unavailable()) return Failure::transient;
  const auto state = std::string_view(error.sqlstate()).substr(0, 2);
  if (state == "22" || state == "23" || state == "54") return Failure::rejected;
  return Failure::transient;
}

std::chrono::milliseconds BatchPolicy::time_left(std::size_t in_hand, Clock::time_point first_at,
                                                 Clock::time_point now,
                                                 std::chrono::milliseconds idle) const {
  if (in_hand == 0) return idle;
  if (due(in_hand, first_at, now)) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(first_at + wait - now);
}

std::optional<std::int64_t> oldest_entry_age_ms(std::optional<std::string_view> id, std::int64_t now_ms) {
  if (!id) return 0;
  const auto dash = id->find('-');
  const auto ms = parse_int(id->substr(0, dash));
  if (!ms || dash == std::string_view::npos) return std::nullopt;
  return std::max<std::int64_t>(0, now_ms - *ms);
}

std::optional<std::int64_t> redis_time_ms(std::string_view seconds, std::string_view micros) {
  const auto s = parse_int(seconds);
  const auto us = parse_int(micros);
  if (!s || !us) return std::nullopt;
  return *s * 1000 + *us / 1000;
}

}  // namespace rtmc::syncer
