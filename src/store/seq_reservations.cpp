#include "store/seq_reservations.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <stdexcept>

namespace rtmc::seq_reservations {
namespace {

// A PostgreSQL array literal of the strings, every element quoted, so any
// room name (commas, braces, quotes) is one element.
std::string text_array(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::string int_array(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  out += '}';
  return out;
}

std::int64_t parse_int(const std::optional<std::string>& text) {
  std::int64_t value = 0;
  if (!text) throw pg::PgError("room_seq_reservations: NULL reservation", "XX000");
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc() || end != text->data() + text->size())
    throw pg::PgError("room_seq_reservations: not a number: " + *text, "XX000");
  return value;
}

}  // namespace

std::vector<rooms::SeqBlock> reserve(pg::Connection& pg, const std::vector<Request>& requests,
                                     std::int64_t block) {
  if (block <= 0) throw std::invalid_argument("a seq block must be positive");
  // One row per room (ON CONFLICT cannot touch a row twice in one statement),
  // the highest floor, in name order (the lock order).
  std::map<std::string, std::int64_t> floors;
  for (const auto& request : requests) {
    if (request.floor < 0) throw std::invalid_argument("a seq floor cannot be negative");
    auto& floor = floors[request.room];
    floor = std::max(floor, request.floor);
  }
  std::vector<rooms::SeqBlock> blocks;
  if (floors.empty()) return blocks;
  std::vector<std::string> names;
  std::vector<std::int64_t> values;
  for (const auto& [room, floor] : floors) {
    names.push_back(room);
    values.push_back(floor);
  }
  // WITH ORDINALITY + ORDER BY: rows are inserted, and so locked, in name
  // order. `previous` is what the row held (or the floor, if higher).
  const auto result = pg.exec(
      "INSERT INTO room_seq_reservations AS r (room, reserved) "
      "SELECT t.room, t.floor + $3::bigint "
      "FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS t(room, floor, n) ORDER BY t.n "
      "ON CONFLICT (room) DO UPDATE SET reserved = GREATEST(r.reserved, EXCLUDED.reserved - $3::bigint) + "
      "$3::bigint "
      "RETURNING r.room, r.reserved",
      {text_array(names), int_array(values), std::to_string(block)});
  std::map<std::string, std::int64_t> reserved;
  for (const auto& row : result.rows) {
    if (row.size() != 2 || !row[0]) throw pg::PgError("room_seq_reservations: unexpected row", "XX000");
    reserved[*row[0]] = parse_int(row[1]);
  }
  // In the order given, once per room.
  for (const auto& request : requests) {
    auto it = reserved.find(request.room);
    if (it == reserved.end()) {
      if (std::any_of(blocks.begin(), blocks.end(),
                      [&](const rooms::SeqBlock& b) { return b.room == request.room; }))
        continue;
      throw pg::PgError("room_seq_reservations: no row returned for room " + request.room, "XX000");
    }
    blocks.push_back({request.room, it->second - block, it->second});
    reserved.erase(it);
  }
  return blocks;
}

std::int64_t reserved(pg::Connection& pg, const std::string& room) {
  const auto result = pg.exec("SELECT reserved FROM room_seq_reservations WHERE room = $1", {room});
  if (result.rows.empty()) return 0;
  return parse_int(result.rows.front().front());
}

}  // namespace rtmc::seq_reservations
