#pragma once
// PostgreSQL access through libpq. `Connection` is owned by one thread;
// `Pool` is the async facade for io threads (one BlockingWorker per
// connection). Every query is parameterized.
//
// Deadlines: a stalled server (stopped, partitioned, overloaded) must not hold
// a caller without limit. Every statement runs with a deadline (Options::
// timeout, or one the caller gives): libpq's asynchronous API with poll() on
// its socket, connect included. Past the deadline the statement is cancelled
// (best effort, see cancel_in_background in postgres.cpp), the connection is
// dropped, and PgError with an empty SQLSTATE is thrown. The server enforces
// the same limit with statement_timeout, set on every new connection.

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/blocking_worker.hpp"
#include "common/config.hpp"

struct pg_conn;
struct pg_result;

namespace rtmc::pg {

class PgError : public std::runtime_error {
 public:
  PgError(const std::string& what, std::string sqlstate)
      : std::runtime_error(what), sqlstate_(std::move(sqlstate)) {}
  // Five-character SQLSTATE ("23505" = unique violation); empty for
  // connection failures.
  const std::string& sqlstate() const { return sqlstate_; }
  // The server could not serve the statement now, and a retry later may
  // work: connection failure or timeout (no SQLSTATE), connection exception
  // (08), insufficient resources (53), operator intervention such as a
  // statement_timeout or a shutdown (57), system error (58).
  bool unavailable() const;

 private:
  std::string sqlstate_;
};

using Param = std::optional<std::string>;  // nullopt = SQL NULL

struct Result {
  std::vector<std::vector<std::optional<std::string>>> rows;  // text format
  long affected = 0;
};

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

struct Options {
  // Per statement (connecting included) and statement_timeout on the server;
  // 0 = none (migrations, tools).
  std::chrono::milliseconds timeout{0};
  // Pool: statements waiting per connection; more -> PgError at once. 0 = unbounded.
  std::size_t max_queue = 0;
};

class Connection {
 public:
  explicit Connection(PgConfig config, Options options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Reconnects once if the connection was lost; throws PgError. A statement
  // that failed because the connection broke is sent again on the new
  // connection only outside a transaction block (inside one, the
  // transaction is gone and the caller must start over).
  // The deadline defaults to Options::timeout from now; a deadline already
  // past throws at once without touching the connection.
  Result exec(const std::string& sql, const std::vector<Param>& params = {}, Deadline deadline = {});
  // Runs several ';'-separated statements without parameters (the simple
  // query protocol), e.g. a migration file. Never pass it user input.
  void exec_script(const std::string& sql, Deadline deadline = {});

 private:
  Deadline effective(Deadline deadline) const;
  pg_conn* connection(Deadline deadline);
  void drop();
  // Sends with `send` (libpq's PQsend* call, true on success) and collects
  // the result, reconnecting and resending once as exec() describes.
  pg_result* send_with_retry(const std::function<bool(pg_conn*)>& send, Deadline deadline);
  // Waits for the result of the statement just sent; on the deadline cancels
  // it, drops the connection and throws.
  pg_result* await_result(Deadline deadline);
  PgConfig config_;
  Options options_;
  pg_conn* conn_ = nullptr;
  // Cancel requests still running in the background (at most one).
  std::shared_ptr<std::atomic<int>> cancels_in_flight_;
};

class Pool {
 public:
  Pool(PgConfig config, std::size_t connections, Options options = {});
  ~Pool();
  // The deadline (Options::timeout, or `timeout` when given) counts from
  // this call, time in the queue included; a full queue or a passed
  // deadline throws PgError with an empty SQLSTATE.
  boost::asio::awaitable<Result> exec(std::string sql, std::vector<Param> params = {},
                                      std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Runs `job` with one Connection, on its worker thread, for work that
  // needs several statements on one connection (a transaction). The job must
  // not keep the reference. Each statement gets Options::timeout.
  boost::asio::awaitable<void> run(std::function<void(Connection&)> job);

 private:
  struct Lane;
  Lane& pick();
  Options options_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
};

// An array literal of `items` for a $n::text[] (or $n::bigint[] ...)
// parameter, so one statement can take a whole batch through unnest().
// Every element is quoted and escaped: any text is safe (PostgreSQL text
// cannot hold a NUL byte, whatever the encoding).
std::string text_array(const std::vector<std::string>& items);

// Applies the schema migrations compiled in from migrations/*.sql that are not
// yet recorded in schema_migrations, in order, each in its own transaction,
// under an advisory lock so concurrent starters do not race. Returns how many
// were applied.
int migrate(Connection& connection);

}  // namespace rtmc::pg
