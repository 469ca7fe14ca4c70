#pragma once
// Typed configuration shared by every role, and the command-line/environment
// plumbing that fills it. Defaults point at the local stack started by
// scripts/stack.sh (its own ports, so it never collides with a distribution's
// services on the standard ones).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/store_events.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace rtmc {

struct HostPort {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  // "host:port" or ":port"; throws std::invalid_argument.
  static HostPort parse(const std::string& text);
  std::string str() const;
};

struct RedisConfig {
  HostPort address{"127.0.0.1", 6380};
  std::chrono::milliseconds timeout{3000};
  // Sent as AUTH [user] password after every connect when the password is
  // not empty; an empty user authenticates as Redis' `default` user.
  std::string user;
  std::string password;
  // Counts connects and errors for /metrics (common/store_events.hpp); null:
  // not counted.
  std::shared_ptr<StoreEvents> events = nullptr;

  // "host:port", ":port", or redis://[[user]:password@]host[:port][/0] with
  // percent-encoded user and password (as redis-cli -u reads it: userinfo
  // without a colon is a password). The port defaults to 6379, the timeout
  // keeps its default. Throws std::invalid_argument; its message never
  // contains the password.
  static RedisConfig parse(const std::string& text);
  // The address and, when set, the user, never the password: for logs.
  std::string describe() const;
};

struct PgConfig {
  // libpq connection string.
  std::string conninfo = "host=127.0.0.1 port=5433 dbname=rtmc user=rtmc";
  std::shared_ptr<StoreEvents> events = nullptr;  // as RedisConfig::events
};

struct AmqpConfig {
  // amqp://user:password@host:port/vhost
  std::string url = "amqp://guest:guest@127.0.0.1:5673/";
  std::uint32_t ingest_shards = 16;
  std::shared_ptr<StoreEvents> events = nullptr;  // as RedisConfig::events
};

struct LimitsConfig {
  std::size_t max_body_bytes = 4096;
  // Long enough for a client's resend after a reconnect; NATS JetStream's
  // duplicate window is 2 minutes too. Each message costs ~160 B of Redis
  // for the window: 24 h filled the stack's 1 GiB Redis after ~6 million
  // messages (5 minutes at 20,000 msg/s), and sequencing then stops.
  std::chrono::seconds dedupe_window{120};
  // Messages kept per room in Redis for gap repair, resuming joins (`since`)
  // and recent history; older ones are in PostgreSQL.
  std::size_t room_log_length = 1000;
  // Times the sequencing script may fail for one ingest message before the
  // sequencer moves it to the dead-letter queue. Only the script's own
  // errors count: connection failures, timeouts and a Redis that refuses
  // writes (out of memory) are retried without limit.
  std::uint32_t max_sequence_attempts = 5;
};

struct AuthConfig {
  std::string jwt_secret;  // never a constant in code: flag, env or file
  std::chrono::seconds token_ttl{24 * 3600};
};

struct PresenceConfig {
  // TTL of every user status cache entry (status:<user> in Redis): the api
  // fills it on a miss, the gateways write it on each status change. Both
  // roles must use the same value, hence a common option.
  std::chrono::milliseconds status_cache_ttl{std::chrono::seconds(300)};
};

// The contents of a file holding one secret or URL, without the trailing
// newline(s); throws std::runtime_error naming the file (not its contents).
std::string read_secret_file(const std::string& path);

// Adds the options every server role shares (--redis, --amqp, --pg,
// --jwt-secret, each also as --X-file, --ingest-shards, --max-body, --max-sequence-attempts,
// --status-cache-ttl-s, --log-level, --log-format) with their RTMC_* environment variables (RTMC_REDIS_FILE,
// RTMC_AMQP_FILE, RTMC_PG_FILE, RTMC_JWT_SECRET_FILE for the files, so no
// credential need appear on a command line or in the environment).
struct CommonOptions {
  RedisConfig redis;
  PgConfig pg;
  AmqpConfig amqp;
  LimitsConfig limits;
  AuthConfig auth;
  PresenceConfig presence;
  std::string jwt_secret_file;
  std::string redis_file;
  std::string amqp_file;
  std::string pg_file;
  std::string log_level = "info";
  std::string log_format = "text";  // common/logging.hpp
  std::string redis_text = "127.0.0.1:6380";

  void add_to(CLI::App& app);
  // Call after parsing: resolves addresses and the secret (at least 32
  // bytes; a secret given on the command line is warned about); throws
  // std::runtime_error with a readable message. A value given both directly
  // (flag or variable) and as a file is refused: neither would be obviously
  // the one in use.
  void finish(bool needs_secret = true);

 private:
  // Set by add_to; tell a value given on the command line or in the
  // environment from a default.
  CLI::Option* redis_option_ = nullptr;
  CLI::Option* amqp_option_ = nullptr;
  CLI::Option* pg_option_ = nullptr;
  CLI::Option* jwt_secret_option_ = nullptr;
  std::int64_t status_cache_ttl_s_ = 300;  // becomes presence.status_cache_ttl
};

}  // namespace rtmc
