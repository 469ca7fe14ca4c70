// Integration tests against a real PostgreSQL at RTMC_TEST_PG (libpq
// conninfo). Each test works in its own schema so tests can share a database.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdlib>
#include <random>
#include <thread>

#include "store/postgres.hpp"

namespace {

using rtmc::pg::Connection;
using rtmc::pg::Param;
using rtmc::pg::PgError;

std::string random_suffix() {
  std::random_device rd;
  std::uniform_int_distribution<unsigned long long> dist;
  return std::to_string(dist(rd));
}

// Runs `body` and returns the SQLSTATE of the PgError it throws ("none" if
// it does not throw).
template <class F>
std::string sqlstate_of(F body) {
  try {
    body();
  } catch (const PgError& e) {
    return e.sqlstate();
  }
  return "none";
}

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* conninfo = std::getenv("RTMC_TEST_PG");
    ASSERT_NE(conninfo, nullptr) << "RTMC_TEST_PG is not set: it must be a libpq connection string of a "
                                    "PostgreSQL database for integration tests";
    base_.conninfo = conninfo;
    schema_ = "rtmc_itest_" + random_suffix();
    Connection admin(base_);
    admin.exec("CREATE SCHEMA " + schema_);
    config_.conninfo = base_.conninfo + " options='-csearch_path=" + schema_ + "'";
  }
  void TearDown() override {
    if (schema_.empty() || base_.conninfo.empty()) return;
    Connection admin(base_);
    admin.exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
  }

  rtmc::PgConfig base_;
  rtmc::PgConfig config_;  // search_path = this test's schema
  std::string schema_;
};

TEST_F(PostgresTest, ExecWithParametersAndNulls) {
  Connection db(config_);
  auto sum = db.exec("SELECT $1::int + $2::int, $3::text IS NULL, $3::text", {"40", "2", std::nullopt});
  ASSERT_EQ(sum.rows.size(), 1u);
  ASSERT_EQ(sum.rows[0].size(), 3u);
  EXPECT_EQ(sum.rows[0][0], "42");
  EXPECT_EQ(sum.rows[0][1], "t");
  EXPECT_FALSE(sum.rows[0][2].has_value());

  db.exec("CREATE TABLE notes (id int PRIMARY KEY, body text)");
  // Parameters are values, never SQL: a quote-laden value is stored verbatim.
  const std::string tricky = "it's'); DROP TABLE notes; --";
  EXPECT_EQ(db.exec("INSERT INTO notes VALUES ($1, $2), ($3, $4)", {"1", tricky, "2", "plain"}).affected, 2);
  EXPECT_EQ(db.exec("UPDATE notes SET body = body || '!' WHERE id >= $1", {"1"}).affected, 2);
  auto rows = db.exec("SELECT id, body FROM notes ORDER BY id");
  ASSERT_EQ(rows.rows.size(), 2u);
  EXPECT_EQ(rows.rows[0][1], tricky + "!");
  EXPECT_EQ(rows.rows[1][1], "plain!");
  EXPECT_EQ(rows.affected, 2);
}

TEST_F(PostgresTest, ErrorsCarrySqlstate) {
  Connection db(config_);
  db.exec("CREATE TABLE uniq (name text UNIQUE)");
  db.exec("INSERT INTO uniq VALUES ($1)", {"a"});
  EXPECT_EQ(sqlstate_of([&] { db.exec("INSERT INTO uniq VALUES ($1)", {"a"}); }), "23505");
  EXPECT_EQ(sqlstate_of([&] { db.exec("SELEC 1"); }), "42601");
  EXPECT_EQ(sqlstate_of([&] { db.exec("SELECT $1::int", {"not a number"}); }), "22P02");
  EXPECT_EQ(sqlstate_of([&] { db.exec("SELECT $1::text", {std::string("a\0b", 3)}); }), "22021");
  // Still usable after errors.
  EXPECT_EQ(db.exec("SELECT count(*) FROM uniq").rows.at(0).at(0), "1");
}

TEST_F(PostgresTest, ExecScriptRunsSeveralStatements) {
  Connection db(config_);
  db.exec_script("CREATE TABLE a (x int); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);");
  EXPECT_EQ(db.exec("SELECT sum(x) FROM a").rows.at(0).at(0), "3");
  // A failing script runs as one implicit transaction: nothing of it stays.
  EXPECT_EQ(sqlstate_of([&] { db.exec_script("INSERT INTO a VALUES (10); SELEC 1;"); }), "42601");
  EXPECT_EQ(db.exec("SELECT sum(x) FROM a").rows.at(0).at(0), "3");
}

TEST_F(PostgresTest, MigrateIsIdempotent) {
  Connection db(config_);
  const int first = rtmc::pg::migrate(db);
  EXPECT_GE(first, 1);
  EXPECT_EQ(rtmc::pg::migrate(db), 0);
  auto recorded = db.exec("SELECT name FROM schema_migrations ORDER BY name");
  ASSERT_EQ(recorded.rows.size(), static_cast<std::size_t>(first));
  EXPECT_EQ(recorded.rows[0][0], "001_init.sql");
  // The tables landed in this test's schema.
  auto tables =
      db.exec("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
              {schema_});
  std::vector<std::string> names;
  for (const auto& row : tables.rows) names.push_back(*row[0]);
  EXPECT_EQ(names, (std::vector<std::string>{"messages", "room_seq_reservations", "rooms",
                                             "schema_migrations", "users"}));
}

TEST_F(PostgresTest, ConcurrentMigratorsApplyEachMigrationOnce) {
  std::atomic<int> applied{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> starters;
  for (int i = 0; i < 4; ++i)
    starters.emplace_back([&] {
      try {
        Connection db(config_);
        applied += rtmc::pg::migrate(db);
      } catch (const std::exception&) {
        ++failures;
      }
    });
  for (auto& t : starters) t.join();
  EXPECT_EQ(failures.load(), 0);
  Connection db(config_);
  EXPECT_EQ(static_cast<std::size_t>(applied.load()),
            db.exec("SELECT name FROM schema_migrations").rows.size());
  EXPECT_GE(applied.load(), 1);
}

TEST_F(PostgresTest, UserNamesAreUniqueRegardlessOfCase) {
  Connection db(config_);
  rtmc::pg::migrate(db);
  const std::string insert = "INSERT INTO users (name, password_hash) VALUES ($1, $2) RETURNING id, status";
  auto alice = db.exec(insert, {"Alice", "hash"});
  ASSERT_EQ(alice.rows.size(), 1u);
  EXPECT_EQ(alice.rows[0][1], "offline");
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"alice", "hash"}); }), "23505");
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"ALICE", "hash"}); }), "23505");
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"alice2", "hash"}); }), "none");
  EXPECT_EQ(db.exec("SELECT name FROM users WHERE lower(name) = lower($1)", {"aLiCe"}).rows.at(0).at(0),
            "Alice");

  EXPECT_EQ(sqlstate_of([&] { db.exec("UPDATE users SET status = 'away' WHERE name = 'Alice'"); }), "23514");
  EXPECT_EQ(
      db.exec("UPDATE users SET status = 'online', last_seen = now() WHERE name = $1", {"Alice"}).affected,
      1);
}

TEST_F(PostgresTest, MessagesAreUniquePerRoomSeqAndPerRoomSenderId) {
  Connection db(config_);
  rtmc::pg::migrate(db);
  const std::string insert =
      "INSERT INTO messages (room, seq, id, sender, body, created_at) "
      "VALUES ($1, $2, $3, $4, $5, to_timestamp($6::double precision / 1000))";
  db.exec(insert, {"r", "1", "m1", "alice", "hi", "1700000000000"});
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"r", "1", "m2", "bob", "x", "1700000000000"}); }), "23505");
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"r", "2", "m1", "alice", "x", "1700000000000"}); }), "23505");
  EXPECT_EQ(sqlstate_of([&] { db.exec(insert, {"r", "2", "m1", "bob", "x", "1700000000000"}); }), "none");
}

TEST_F(PostgresTest, ReconnectsAfterTheServerEndsTheSession) {
  Connection db(config_);
  Connection admin(base_);
  const std::string pid = *db.exec("SELECT pg_backend_pid()").rows.at(0).at(0);
  ASSERT_EQ(admin.exec("SELECT pg_terminate_backend($1::int)", {pid}).rows.at(0).at(0), "t");

  // Outside a transaction the statement is resent on a new session.
  auto again = db.exec("SELECT pg_backend_pid()");
  EXPECT_NE(again.rows.at(0).at(0), pid);

  // Inside one it is not: the transaction died with the session.
  db.exec("CREATE TABLE t (x int)");
  db.exec("BEGIN");
  db.exec("INSERT INTO t VALUES (1)");
  const std::string pid2 = *db.exec("SELECT pg_backend_pid()").rows.at(0).at(0);
  admin.exec("SELECT pg_terminate_backend($1::int)", {pid2});
  EXPECT_THROW(db.exec("INSERT INTO t VALUES (2)"), PgError);
  EXPECT_EQ(db.exec("SELECT count(*) FROM t").rows.at(0).at(0), "0");
}

TEST_F(PostgresTest, ConnectFailureHasNoSqlstate) {
  rtmc::PgConfig nowhere{"host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"};
  Connection db(nowhere);
  try {
    db.exec("SELECT 1");
    FAIL() << "expected PgError";
  } catch (const PgError& e) {
    EXPECT_EQ(e.sqlstate(), "");
    EXPECT_NE(std::string(e.what()).find("connect"), std::string::npos) << e.what();
  }
}

TEST_F(PostgresTest, PoolFromCoroutines) {
  boost::asio::io_context io;
  rtmc::pg::Pool pool(config_, 2);
  {
    Connection db(config_);
    db.exec("CREATE TABLE counter (n int NOT NULL)");
    db.exec("INSERT INTO counter VALUES (0)");
    db.exec("CREATE TABLE uniq (name text PRIMARY KEY)");
  }
  const auto io_thread = std::this_thread::get_id();
  int finished = 0;
  std::vector<std::string> failures;
  for (int t = 0; t < 10; ++t) {
    boost::asio::co_spawn(
        io,
        [&]() -> boost::asio::awaitable<void> {
          for (int i = 0; i < 5; ++i) {
            // Arguments built outside co_await: GCC 12 rejects braced string
            // lists inside co_await expressions ("array used as initializer").
            std::vector<Param> one{"1"};
            auto r = co_await pool.exec("UPDATE counter SET n = n + $1::int", std::move(one));
            if (r.affected != 1) failures.push_back("affected " + std::to_string(r.affected));
            if (std::this_thread::get_id() != io_thread) failures.push_back("resumed off the io thread");
          }
          ++finished;
        },
        [&](std::exception_ptr e) {
          if (e) failures.push_back("coroutine threw");
        });
  }
  io.run();
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_EQ(finished, 10);

  io.restart();
  auto outcome = boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<std::string> {
        auto total = co_await pool.exec("SELECT n FROM counter");
        std::vector<Param> x{"x"};
        co_await pool.exec("INSERT INTO uniq VALUES ($1)", x);
        std::string state;
        try {
          co_await pool.exec("INSERT INTO uniq VALUES ($1)", x);
        } catch (const PgError& e) {
          state = e.sqlstate();
        }
        // A transaction needs one connection: run() gives one.
        co_await pool.run([](Connection& c) {
          c.exec("BEGIN");
          c.exec("UPDATE counter SET n = 0");
          c.exec("ROLLBACK");
        });
        auto after = co_await pool.exec("SELECT n FROM counter");
        co_return *total.rows.at(0).at(0) + "/" + state + "/" + *after.rows.at(0).at(0);
      },
      boost::asio::use_future);
  io.run();
  EXPECT_EQ(outcome.get(), "50/23505/50");
}

}  // namespace
