#pragma once
// PostgreSQL access through libpq. `Connection` is owned by one thread;
// `Pool` is the async facade for io threads (one BlockingWorker per
// connection). Every query is parameterized.

#include "common/blocking_worker.hpp"
#include "common/config.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

struct pg_conn;

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

  // Reconnects once if the connection was lost; throws PgError.
  Result exec(const std::string& sql, const std::vector<Param>& params = {});

 private:
  pg_conn* connection();
  PgConfig config_;
  pg_conn* conn_ = nullptr;
};

class Pool {
 public:
  Pool(PgConfig config, std::size_t connections);
  ~Pool();
  boost::asio::awaitable<Result> exec(std::string sql, std::vector<Param> params = {});

 private:
  struct Lane;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
};

// Applies the schema migrations compiled in from migrations/*.sql that are not
// yet recorded in schema_migrations, in order, each in its own transaction,
// under an advisory lock so concurrent starters do not race. Returns how many
// were applied.
int migrate(Connection& connection);

}  // namespace rtmc::pg
