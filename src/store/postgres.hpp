#pragma once
// PostgreSQL access through libpq. `Connection` is owned by one thread;
// `Pool` is the async facade for io threads (one BlockingWorker per
// connection). Every query is parameterized.

#include "common/blocking_worker.hpp"
#include "common/config.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

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

 private:
  std::string sqlstate_;
};

using Param = std::optional<std::string>;  // nullopt = SQL NULL

struct Result {
  std::vector<std::vector<std::optional<std::string>>> rows;  // text format
  long affected = 0;
};

class Connection {
 public:
  explicit Connection(PgConfig config);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Reconnects once if the connection was lost; throws PgError. A statement
  // that failed because the connection broke is sent again on the new
  // connection only outside a transaction block (inside one, the
  // transaction is gone and the caller must start over).
  Result exec(const std::string& sql, const std::vector<Param>& params = {});
  // Runs several ';'-separated statements without parameters (the simple
  // query protocol), e.g. a migration file. Never pass it user input.
  void exec_script(const std::string& sql);

 private:
  pg_conn* connection();
  void drop();
  // Sends with `send`, reconnecting and resending once as exec() describes.
  pg_result* send_with_retry(const std::function<pg_result*(pg_conn*)>& send);
  PgConfig config_;
  pg_conn* conn_ = nullptr;
};

class Pool {
 public:
  Pool(PgConfig config, std::size_t connections);
  ~Pool();
  boost::asio::awaitable<Result> exec(std::string sql, std::vector<Param> params = {});
  // Runs `job` with one Connection, on its worker thread, for work that
  // needs several statements on one connection (a transaction). The job must
  // not keep the reference.
  boost::asio::awaitable<void> run(std::function<void(Connection&)> job);

 private:
  struct Lane;
  Lane& pick();
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
};

// Applies the schema migrations compiled in from migrations/*.sql that are not
// yet recorded in schema_migrations, in order, each in its own transaction,
// under an advisory lock so concurrent starters do not race. Returns how many
// were applied.
int migrate(Connection& connection);

}  // namespace rtmc::pg
