#include "store/history.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <stdexcept>

#include "common/keys.hpp"
#include "protocol/frames.hpp"
#include "store/unavailable.hpp"

namespace rtmc::history {

namespace {

bool descending(const Query& query) {
  return query.mode != Query::Mode::after;
}

// Each item one seq away from the previous, in the query's direction.
bool contiguous(const Items& items, bool down) {
  for (std::size_t i = 1; i < items.size(); ++i)
    if (items[i].first != items[i - 1].first + (down ? -1 : 1)) return false;
  return true;
}

bool in_range(const Query& query, std::int64_t seq) {
  switch (query.mode) {
    case Query::Mode::after: return seq > query.seq;
    case Query::Mode::before: return seq < query.seq;
    case Query::Mode::latest: return true;
  }
  return false;
}

std::int64_t to_int(const std::optional<std::string>& text) {
  std::int64_t value = 0;
  if (!text) throw std::runtime_error("history: unexpected NULL");
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc() || end != text->data() + text->size())
    throw std::runtime_error("history: not an integer: " + text->substr(0, 32));
  return value;
}

const std::string& text_of(const std::optional<std::string>& text) {
  if (!text) throw std::runtime_error("history: unexpected NULL");
  return *text;
}

// created_at back to the ts it was written from (design note: numeric in
// PostgreSQL 14+, so exact for whole milliseconds).
constexpr const char* kMessageColumns =
    "SELECT seq, id, sender, body, (extract(epoch FROM created_at) * 1000)::bigint FROM messages "
    "WHERE room = $1 ";

void check(const Query& query) {
  if (query.limit < 1 || query.limit > kMaxLimit)
    throw std::invalid_argument("history: limit must be 1.." + std::to_string(kMaxLimit));
  if (query.seq < 0) throw std::invalid_argument("history: a negative seq");
}

// Redis replies that mean "not now" rather than "broken".
void check_reply(const redis::Reply& reply) {
  if (reply.is_error() && redis::is_refusal(reply.str))
    throw store::Unavailable("redis refused: " + reply.str);
}

// A statement whose server cannot be reached (down, timed out, overloaded)
// is the store being unavailable (503 / `unavailable`), not a bug.
boost::asio::awaitable<pg::Result> exec_or_unavailable(pg::Pool& pool, std::string sql,
                                                       std::vector<pg::Param> params) {
  pg::Result result;
  try {
    result = co_await pool.exec(std::move(sql), std::move(params));
  } catch (const pg::PgError& error) {
    if (error.unavailable()) throw store::Unavailable(std::string("postgres: ") + error.what());
    throw;
  }
  co_return result;
}

}  // namespace

Query query_of(const protocol::HistoryRequest& request) {
  Query query;
  query.limit = static_cast<std::size_t>(std::max<std::int64_t>(request.limit, 0));
  if (request.after_seq) {
    query.mode = Query::Mode::after;
    query.seq = *request.after_seq;
  } else if (request.before_seq) {
    query.mode = Query::Mode::before;
    query.seq = *request.before_seq;
  }
  return query;
}

bool log_covers(const Query& query, const Items& log, std::int64_t current_seq) {
  if (current_seq <= 0) return false;
  if (query.mode == Query::Mode::after) {
    if (query.seq == std::numeric_limits<std::int64_t>::max()) return true;
    if (log.empty()) return query.seq >= current_seq;
    return log.front().first == query.seq + 1 && contiguous(log, false) &&
           (log.size() >= query.limit || log.back().first >= current_seq);
  }
  const std::int64_t newest =
      query.mode == Query::Mode::before ? std::min(query.seq - 1, current_seq) : current_seq;
  if (newest < 1) return true;
  if (log.empty()) return false;
  return log.front().first >= newest && contiguous(log, true) &&
         (log.size() >= query.limit || log.back().first == 1);
}

Items merge(const Query& query, const Items& log, const Items& database) {
  std::map<std::int64_t, rooms::Frame> by_seq;
  for (const auto& [seq, frame] : log)
    if (in_range(query, seq)) by_seq.emplace(seq, frame);
  for (const auto& [seq, frame] : database)
    if (in_range(query, seq)) by_seq.emplace(seq, frame);  // a seq the log has keeps the log's frame
  Items out;
  out.reserve(std::min(by_seq.size(), query.limit));
  if (descending(query)) {
    for (auto it = by_seq.rbegin(); it != by_seq.rend() && out.size() < query.limit; ++it)
      out.emplace_back(it->first, it->second);
    std::reverse(out.begin(), out.end());
  } else {
    for (auto it = by_seq.begin(); it != by_seq.end() && out.size() < query.limit; ++it)
      out.emplace_back(it->first, it->second);
  }
  return out;
}

boost::asio::awaitable<Items> History::messages(std::string room, Query query) {
  check(query);
  // Seqs start at 1: nothing lies before 1, nor after the largest seq.
  if (query.mode == Query::Mode::before && query.seq <= 1) co_return Items{};
  if (query.mode == Query::Mode::after && query.seq == std::numeric_limits<std::int64_t>::max())
    co_return Items{};

  const auto shard = shard_of(room, shards_);
  std::vector<std::vector<std::string>> commands;
  // The seq first: a message sequenced between the two reads only adds to
  // the log's answer, never leaves it short of the seq.
  commands.push_back(rooms::current_seq_command(shard, room));
  switch (query.mode) {
    case Query::Mode::after:
      commands.push_back(rooms::log_upward_command(shard, room, query.seq + 1, query.limit));
      break;
    case Query::Mode::before:
      commands.push_back(rooms::log_downward_command(shard, room, query.seq - 1, query.limit));
      break;
    case Query::Mode::latest:
      commands.push_back(rooms::log_downward_command(shard, room, std::nullopt, query.limit));
      break;
  }
  std::vector<redis::Reply> replies;
  try {
    replies = co_await redis_.pipeline(std::move(commands));
  } catch (const redis::RedisError& error) {
    throw store::Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw store::Unavailable(std::string("redis: ") + error.what());
  }
  if (replies.size() != 2) throw std::runtime_error("history: unexpected pipeline reply");
  check_reply(replies[0]);
  check_reply(replies[1]);
  const std::int64_t current = rooms::parse_current_seq(replies[0]);
  Items log = rooms::parse_log(replies[1]);
  // The log may hold more than asked for only if Redis ignored COUNT.
  if (log.size() > query.limit) log.resize(query.limit);

  if (log_covers(query, log, current)) {
    if (descending(query)) std::reverse(log.begin(), log.end());
    co_return log;
  }
  auto database = co_await from_database(room, query);
  co_return merge(query, log, database);
}

// In the query's direction, at most `limit` rows.
boost::asio::awaitable<Items> History::from_database(const std::string& room, const Query& query) {
  std::string sql = kMessageColumns;
  std::vector<pg::Param> params{room};
  switch (query.mode) {
    case Query::Mode::after:
      sql += "AND seq > $2 ORDER BY seq LIMIT $3";
      params.emplace_back(std::to_string(query.seq));
      break;
    case Query::Mode::before:
      sql += "AND seq < $2 ORDER BY seq DESC LIMIT $3";
      params.emplace_back(std::to_string(query.seq));
      break;
    case Query::Mode::latest: sql += "ORDER BY seq DESC LIMIT $2"; break;
  }
  params.emplace_back(std::to_string(query.limit));
  const pg::Result result = co_await exec_or_unavailable(pool_, std::move(sql), std::move(params));
  Items items;
  items.reserve(result.rows.size());
  for (const auto& row : result.rows) {
    if (row.size() != 5) throw std::runtime_error("history: unexpected row");
    const auto seq = to_int(row[0]);
    items.emplace_back(seq,
                       std::make_shared<const std::string>(protocol::message_frame(
                           room, seq, text_of(row[1]), text_of(row[2]), text_of(row[3]), to_int(row[4]))));
  }
  co_return items;
}

boost::asio::awaitable<RoomPage> History::list_rooms(std::optional<std::string> after, std::size_t limit) {
  if (limit < 1 || limit > kMaxLimit)
    throw std::invalid_argument("history: limit must be 1.." + std::to_string(kMaxLimit));
  // One row more than the page: its presence is what says a next page exists.
  std::string sql = "SELECT room, last_seq, (extract(epoch FROM last_ts) * 1000)::bigint FROM rooms ";
  std::vector<pg::Param> params;
  if (after) {
    sql += "WHERE room > $1 ORDER BY room LIMIT $2";
    params.emplace_back(std::move(*after));
  } else {
    sql += "ORDER BY room LIMIT $1";
  }
  params.emplace_back(std::to_string(limit + 1));
  const pg::Result result = co_await exec_or_unavailable(pool_, std::move(sql), std::move(params));
  RoomPage page;
  for (const auto& row : result.rows) {
    if (row.size() != 3) throw std::runtime_error("history: unexpected row");
    if (page.rooms.size() == limit) {
      page.next = page.rooms.back().room;
      break;
    }
    page.rooms.push_back(RoomSummary{text_of(row[0]), to_int(row[1]), to_int(row[2])});
  }
  co_return page;
}

}  // namespace rtmc::history
