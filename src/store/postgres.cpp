#include "store/postgres.hpp"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <utility>

namespace rtmc::pg {

// Generated from migrations/*.sql at build time (embed_migrations.cmake),
// sorted by file name.
const std::vector<std::pair<std::string_view, std::string_view>>& migrations();

namespace {

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// Server notices ("relation already exists, skipping", ...) would otherwise
// go to stderr.
void log_notice(void*, const char* message) {
  std::string_view text(message);
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  spdlog::debug("postgres: {}", text);
}

std::string trimmed(const char* message) {
  std::string text = message ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Success statuses, or throws PgError carrying the server's SQLSTATE.
void check(const PGresult* result, pg_conn* conn) {
  if (result == nullptr) throw PgError("postgres: " + trimmed(PQerrorMessage(conn)), "");
  switch (PQresultStatus(result)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY: return;
    default: {
      const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
      throw PgError("postgres: " + trimmed(PQresultErrorMessage(result)), state ? state : "");
    }
  }
}

Result to_result(const PGresult* result) {
  Result out;
  const int rows = PQntuples(result);
  const int columns = PQnfields(result);
  out.rows.reserve(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    auto& row = out.rows.emplace_back();
    row.reserve(static_cast<std::size_t>(columns));
    for (int c = 0; c < columns; ++c) {
      if (PQgetisnull(result, r, c))
        row.emplace_back(std::nullopt);
      else
        row.emplace_back(
            std::string(PQgetvalue(result, r, c), static_cast<std::size_t>(PQgetlength(result, r, c))));
    }
  }
  const char* affected = PQcmdTuples(const_cast<PGresult*>(result));
  out.affected = (affected && *affected) ? std::strtol(affected, nullptr, 10) : 0;
  return out;
}

// Runs `body` inside BEGIN/COMMIT, rolling back on any exception.
template <class F>
auto in_transaction(Connection& connection, F body) {
  connection.exec("BEGIN");
  try {
    auto result = body();
    connection.exec("COMMIT");
    return result;
  } catch (...) {
    try {
      connection.exec("ROLLBACK");
    } catch (const std::exception& e) {
      // The original error is what matters; a failed rollback means the
      // connection is gone, which ends the transaction anyway.
      spdlog::debug("postgres: rollback failed: {}", e.what());
    }
    throw;
  }
}

// Runs `body`; a PgError that says the server or the link failed (not an
// answer such as a constraint violation) is counted for /metrics.
template <class F>
auto counting_errors(const PgConfig& config, F body) {
  try {
    return body();
  } catch (const PgError& error) {
    if (error.unavailable()) note_error(config.events);
    throw;
  }
}

}  // namespace

bool PgError::unavailable() const {
  if (sqlstate_.empty()) return true;
  const std::string_view state_class = std::string_view(sqlstate_).substr(0, 2);
  return state_class == "08" || state_class == "53" || state_class == "57" || state_class == "58";
}

namespace {

PgError timed_out(std::string_view what) {
  return PgError("postgres: " + std::string(what) + " timed out", "");
}

// Waits until the connection's socket is ready for `events`; false when the
// deadline passed first.
bool wait_socket(pg_conn* conn, short events, Deadline deadline) {
  const int fd = PQsocket(conn);
  if (fd < 0) throw PgError("postgres: connection has no socket", "");
  for (;;) {
    int wait_ms = -1;
    if (deadline != kNoDeadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      wait_ms = static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), 60'000));
    }
    pollfd ready{fd, events, 0};
    const int n = ::poll(&ready, 1, wait_ms);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) throw PgError(std::string("postgres: poll: ") + std::strerror(errno), "");
  }
}

// Before libpq 17, PQcancel has no timeout: it connects to the server, sends
// the request and waits for the server to close, so against a stopped server
// it blocks until the server wakes. It runs on a thread of its own that
// nothing waits for, at most one per connection, so neither a caller nor a
// shutdown ever waits for it; a stalled server gets no more cancel requests
// from this connection until the one in flight returns.
void cancel_in_background(pg_conn* conn, const std::shared_ptr<std::atomic<int>>& in_flight) {
  if (in_flight->fetch_add(1) > 0) {
    in_flight->fetch_sub(1);
    return;
  }
  PGcancel* cancel = PQgetCancel(conn);
  if (cancel == nullptr) {
    in_flight->fetch_sub(1);
    return;
  }
  try {
    std::thread([cancel, in_flight] {
      char error[256];
      if (PQcancel(cancel, error, sizeof error) == 0)
        spdlog::debug("postgres: cancel request failed: {}", error);
      PQfreeCancel(cancel);
      in_flight->fetch_sub(1);
    }).detach();
  } catch (const std::system_error& error) {
    PQfreeCancel(cancel);
    in_flight->fetch_sub(1);
    spdlog::warn("postgres: cannot start a cancel request: {}", error.what());
  }
}

}  // namespace

Connection::Connection(PgConfig config, Options options)
    : config_(std::move(config)),
      options_(options),
      cancels_in_flight_(std::make_shared<std::atomic<int>>(0)) {}

Connection::~Connection() {
  drop();
}

void Connection::drop() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

Deadline Connection::effective(Deadline deadline) const {
  if (deadline != Deadline{}) return deadline;
  return options_.timeout.count() > 0 ? Clock::now() + options_.timeout : kNoDeadline;
}

pg_conn* Connection::connection(Deadline deadline) {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return conn_;
  drop();
  // Values from the conninfo (expanded from "dbname") override the defaults
  // listed before it, so a caller's connect_timeout or keepalive settings
  // win. connect_timeout backs up our own deadline (it has whole seconds
  // only); keepalives find a peer that vanished while a connection idles.
  const char* keywords[] = {"connect_timeout",  "keepalives",
                            "keepalives_idle",  "keepalives_interval",
                            "keepalives_count", "fallback_application_name",
                            "dbname",           nullptr};
  const char* values[] = {"10", "1", "30", "10", "3", "rtmc", config_.conninfo.c_str(), nullptr};
  pg_conn* conn = PQconnectStartParams(keywords, values, 1);
  if (conn == nullptr) throw PgError("postgres: cannot allocate connection", "");
  const auto fail = [&conn](const std::string& message) {
    PQfinish(conn);
    return PgError(message, "");
  };
  if (PQstatus(conn) == CONNECTION_BAD) throw fail("postgres: connect: " + trimmed(PQerrorMessage(conn)));
  // As libpq documents: start as if PQconnectPoll had asked for writing; the
  // socket may change between calls (several hosts), so it is read each time.
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK) {
    if (state == PGRES_POLLING_FAILED) throw fail("postgres: connect: " + trimmed(PQerrorMessage(conn)));
    const short events = state == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (!wait_socket(conn, events, deadline)) throw fail("postgres: connect timed out");
    state = PQconnectPoll(conn);
  }
  PQsetNoticeProcessor(conn, &log_notice, nullptr);
  if (PQsetnonblocking(conn, 1) != 0) throw fail("postgres: cannot make the connection non-blocking");
  conn_ = conn;
  note_connect(config_.events);
  if (options_.timeout.count() > 0) {
    // The server ends a statement running longer than the client waits for
    // it, so a statement the client gave up on does not run on.
    const std::string set = "SET statement_timeout = " + std::to_string(options_.timeout.count());
    if (PQsendQuery(conn_, set.c_str()) == 0) {
      std::string message = "postgres: " + trimmed(PQerrorMessage(conn_));
      drop();
      throw PgError(message, "");
    }
    ResultPtr result(await_result(deadline));
    try {
      check(result.get(), conn_);
    } catch (const PgError&) {
      // Never keep a connection whose statements would run without a limit.
      drop();
      throw;
    }
  }
  return conn_;
}

pg_result* Connection::await_result(Deadline deadline) {
  const auto expire = [this](std::string_view what) {
    cancel_in_background(conn_, cancels_in_flight_);
    drop();
    return timed_out(what);
  };
  // Flush what PQsend* could not write at once; the server may need us to
  // read before it reads on, hence POLLIN too.
  for (;;) {
    const int flushed = PQflush(conn_);
    if (flushed == 0) break;
    if (flushed < 0) return nullptr;
    if (!wait_socket(conn_, POLLIN | POLLOUT, deadline)) throw expire("sending a statement");
    if (PQconsumeInput(conn_) == 0) return nullptr;
  }
  // Like PQexec: the last result, but the first error wins.
  ResultPtr kept;
  for (;;) {
    while (PQisBusy(conn_) != 0) {
      if (!wait_socket(conn_, POLLIN, deadline)) throw expire("statement");
      if (PQconsumeInput(conn_) == 0) return kept ? kept.release() : nullptr;
    }
    PGresult* next = PQgetResult(conn_);
    if (next == nullptr) break;
    const bool keep = !kept || PQresultStatus(kept.get()) != PGRES_FATAL_ERROR;
    if (keep)
      kept.reset(next);
    else
      PQclear(next);
  }
  return kept.release();
}

pg_result* Connection::send_with_retry(const std::function<bool(pg_conn*)>& send, Deadline deadline) {
  for (int attempt = 0;; ++attempt) {
    if (deadline != kNoDeadline && Clock::now() >= deadline) throw timed_out("waiting for a connection");
    pg_conn* conn = connection(deadline);
    const bool in_transaction_block = PQtransactionStatus(conn) != PQTRANS_IDLE;
    pg_result* result = send(conn) ? await_result(deadline) : nullptr;
    const bool failed = result == nullptr || PQresultStatus(result) == PGRES_FATAL_ERROR;
    if (!failed || PQstatus(conn) == CONNECTION_OK) return result;

    // The connection broke (server restart, idle connection killed). A
    // statement inside a transaction block cannot be resent: its
    // transaction died with the connection.
    std::string message = trimmed(PQerrorMessage(conn));
    PQclear(result);
    drop();
    if (attempt > 0 || in_transaction_block) throw PgError("postgres: connection lost: " + message, "");
    note_error(config_.events);  // recovered by the retry, so not counted on the way out
    spdlog::warn("postgres: connection lost ({}); reconnecting", message);
  }
}

Result Connection::exec(const std::string& sql, const std::vector<Param>& params, Deadline deadline) {
  return counting_errors(config_, [&] {
    deadline = effective(deadline);
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& param : params) {
      // Text-format parameters are C strings: a NUL would silently cut the
      // value. PostgreSQL text cannot hold NUL anyway; say so the same way.
      if (param && param->find('\0') != std::string::npos)
        throw PgError("postgres: parameter contains a NUL byte", "22021");
      values.push_back(param ? param->c_str() : nullptr);
    }
    ResultPtr result(send_with_retry(
        [&](pg_conn* conn) {
          return PQsendQueryParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                   nullptr, nullptr, 0) != 0;
        },
        deadline));
    check(result.get(), conn_);
    return to_result(result.get());
  });
}

void Connection::exec_script(const std::string& sql, Deadline deadline) {
  counting_errors(config_, [&] {
    deadline = effective(deadline);
    ResultPtr result(
        send_with_retry([&](pg_conn* conn) { return PQsendQuery(conn, sql.c_str()) != 0; }, deadline));
    check(result.get(), conn_);
  });
}

struct Pool::Lane {
  Lane(PgConfig config, Options options, std::string name)
      : connection(std::move(config), options),
        worker(std::move(name), WorkerLimits{options.max_queue, {}}) {}
  // Declared before the worker so the worker thread is joined first.
  Connection connection;
  BlockingWorker worker;
};

Pool::Pool(PgConfig config, std::size_t connections, Options options) : options_(options) {
  connections = std::max<std::size_t>(connections, 1);
  for (std::size_t i = 0; i < connections; ++i)
    lanes_.push_back(std::make_unique<Lane>(config, options, "pg-" + std::to_string(i)));
}

Pool::~Pool() = default;

Pool::Lane& Pool::pick() {
  return *lanes_[next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()];
}

namespace {
// The worker's own deadline is a backstop a little after the statement's, so
// the statement's error (which says what timed out) normally arrives first.
constexpr auto kBackstop = std::chrono::milliseconds(250);
}  // namespace

// Jobs are named locals, not temporaries inside the co_await expression:
// GCC 12 destroys such temporaries' captures twice.
boost::asio::awaitable<Result> Pool::exec(std::string sql, std::vector<Param> params,
                                          std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) timeout = options_.timeout;
  const Deadline deadline = timeout.count() > 0 ? Clock::now() + timeout : kNoDeadline;
  Lane& lane = pick();
  auto job = [&lane, sql = std::move(sql), params = std::move(params), deadline] {
    return lane.connection.exec(sql, params, deadline);
  };
  Result result;
  try {
    result = co_await lane.worker.run_until(std::move(job),
                                            deadline == kNoDeadline ? kNoDeadline : deadline + kBackstop);
  } catch (const WorkerUnavailable& error) {
    throw PgError(std::string("postgres: ") + error.what(), "");
  }
  co_return result;
}

boost::asio::awaitable<void> Pool::run(std::function<void(Connection&)> job) {
  Lane& lane = pick();
  auto wrapped = [&lane, job = std::move(job)] { job(lane.connection); };
  try {
    co_await lane.worker.run(std::move(wrapped));
  } catch (const WorkerUnavailable& error) {
    throw PgError(std::string("postgres: ") + error.what(), "");
  }
}

std::string text_array(const std::vector<std::string>& items) {
  std::size_t size = 2;
  for (const auto& item : items) size += item.size() + 3;
  std::string out;
  out.reserve(size);
  out += '{';
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

int migrate(Connection& connection) {
  // Transaction-scoped advisory locks rather than one session lock held
  // across all migrations: exec() may silently reconnect between
  // statements outside a transaction, which would drop a session lock
  // unnoticed. Inside a transaction a lost connection is an error instead.
  const Param lock_key = std::string("1920232803");  // "rtmc" as a 32-bit integer; any fixed key works
  const auto lock = [&] { connection.exec("SELECT pg_advisory_xact_lock($1::bigint)", {lock_key}); };

  in_transaction(connection, [&] {
    lock();
    connection.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    return 0;
  });

  int applied = 0;
  for (const auto& [name, sql] : migrations()) {
    const std::string migration_name(name);
    applied += in_transaction(connection, [&] {
      lock();
      // Re-read under the lock: another starter may have applied it.
      if (!connection.exec("SELECT 1 FROM schema_migrations WHERE name = $1", {migration_name}).rows.empty())
        return 0;
      connection.exec_script(std::string(sql));
      connection.exec("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, now())",
                      {migration_name});
      spdlog::info("postgres: applied migration {}", migration_name);
      return 1;
    });
  }
  return applied;
}

}  // namespace rtmc::pg
