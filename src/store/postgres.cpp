#include "store/postgres.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
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
    case PGRES_EMPTY_QUERY:
      return;
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
        row.emplace_back(std::string(PQgetvalue(result, r, c), static_cast<std::size_t>(PQgetlength(result, r, c))));
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

}  // namespace

Connection::Connection(PgConfig config) : config_(std::move(config)) {}

Connection::~Connection() { drop(); }

void Connection::drop() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

pg_conn* Connection::connection() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return conn_;
  drop();
  // Values from the conninfo (expanded from "dbname") override the defaults
  // listed before it, so a caller's connect_timeout wins.
  const char* keywords[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
  const char* values[] = {"10", "rtmc", config_.conninfo.c_str(), nullptr};
  pg_conn* conn = PQconnectdbParams(keywords, values, 1);
  if (conn == nullptr) throw PgError("postgres: cannot allocate connection", "");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string message = "postgres: connect: " + trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    throw PgError(message, "");
  }
  PQsetNoticeProcessor(conn, &log_notice, nullptr);
  conn_ = conn;
  return conn_;
}

pg_result* Connection::send_with_retry(const std::function<pg_result*(pg_conn*)>& send) {
  for (int attempt = 0;; ++attempt) {
    pg_conn* conn = connection();
    const bool in_transaction_block = PQtransactionStatus(conn) != PQTRANS_IDLE;
    pg_result* result = send(conn);
    const bool failed = result == nullptr || PQresultStatus(result) == PGRES_FATAL_ERROR;
    if (!failed || PQstatus(conn) == CONNECTION_OK) return result;

    // The connection broke (server restart, idle connection killed). A
    // statement inside a transaction block cannot be resent: its
    // transaction died with the connection.
    std::string message = trimmed(PQerrorMessage(conn));
    PQclear(result);
    drop();
    if (attempt > 0 || in_transaction_block) throw PgError("postgres: connection lost: " + message, "");
    spdlog::warn("postgres: connection lost ({}); reconnecting", message);
  }
}

Result Connection::exec(const std::string& sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) {
    // Text-format parameters are C strings: a NUL would silently cut the
    // value. PostgreSQL text cannot hold NUL anyway; say so the same way.
    if (param && param->find('\0') != std::string::npos)
      throw PgError("postgres: parameter contains a NUL byte", "22021");
    values.push_back(param ? param->c_str() : nullptr);
  }
  ResultPtr result(send_with_retry([&](pg_conn* conn) {
    return PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                        nullptr, 0);
  }));
  check(result.get(), conn_);
  return to_result(result.get());
}

void Connection::exec_script(const std::string& sql) {
  ResultPtr result(send_with_retry([&](pg_conn* conn) { return PQexec(conn, sql.c_str()); }));
  check(result.get(), conn_);
}

struct Pool::Lane {
  Lane(PgConfig config, std::string name) : connection(std::move(config)), worker(std::move(name)) {}
  // Declared before the worker so the worker thread is joined first.
  Connection connection;
  BlockingWorker worker;
};

Pool::Pool(PgConfig config, std::size_t connections) {
  connections = std::max<std::size_t>(connections, 1);
  for (std::size_t i = 0; i < connections; ++i)
    lanes_.push_back(std::make_unique<Lane>(config, "pg-" + std::to_string(i)));
}

Pool::~Pool() = default;

Pool::Lane& Pool::pick() { return *lanes_[next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()]; }

// Jobs are named locals, not temporaries inside the co_await expression:
// GCC 12 destroys such temporaries' captures twice.
boost::asio::awaitable<Result> Pool::exec(std::string sql, std::vector<Param> params) {
  Lane& lane = pick();
  auto job = [&lane, sql = std::move(sql), params = std::move(params)] { return lane.connection.exec(sql, params); };
  Result result = co_await lane.worker.run(std::move(job));
  co_return result;
}

boost::asio::awaitable<void> Pool::run(std::function<void(Connection&)> job) {
  Lane& lane = pick();
  auto wrapped = [&lane, job = std::move(job)] { job(lane.connection); };
  co_await lane.worker.run(std::move(wrapped));
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
      connection.exec("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, now())", {migration_name});
      spdlog::info("postgres: applied migration {}", migration_name);
      return 1;
    });
  }
  return applied;
}

}  // namespace rtmc::pg
