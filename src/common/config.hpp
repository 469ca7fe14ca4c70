#pragma once
// Typed configuration shared by every role, and the command-line/environment
// plumbing that fills it. Defaults point at the local stack started by
// scripts/stack.sh (its own ports, so it never collides with a distribution's
// services on the standard ones).

#include <chrono>
#include <cstdint>
#include <string>

namespace CLI {
class App;
class Option;
}

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
};

struct PgConfig {
  // libpq connection string.
  std::string conninfo = "host=127.0.0.1 port=5433 dbname=rtmc user=rtmc";
};

struct AmqpConfig {
  // amqp://user:password@host:port/vhost
  std::string url = "amqp://guest:guest@127.0.0.1:5673/";
  std::uint32_t ingest_shards = 16;
};

struct LimitsConfig {
  std::size_t max_body_bytes = 4096;
  std::chrono::seconds dedupe_window{24 * 3600};
  // Messages kept per room in Redis for gap repair and history.
  std::size_t room_log_length = 10000;
};

struct AuthConfig {
  std::string jwt_secret;  // never a constant in code: flag, env or file
  std::chrono::seconds token_ttl{24 * 3600};
};

// Adds the options every server role shares (--redis, --amqp, --pg,
// --jwt-secret[-file], --ingest-shards, --max-body, --log-level) with their
// RTMC_* environment variables.
struct CommonOptions {
  RedisConfig redis;
  PgConfig pg;
  AmqpConfig amqp;
  LimitsConfig limits;
  AuthConfig auth;
  std::string jwt_secret_file;
  std::string log_level = "info";
  std::string redis_text = "127.0.0.1:6380";

  void add_to(CLI::App& app);
  // Call after parsing: resolves addresses and the secret (at least 32
  // bytes); throws std::runtime_error with a readable message. Warns when the
  // secret was given on the command line.
  void finish(bool needs_secret = true);

 private:
  const CLI::Option* jwt_secret_option_ = nullptr;
};

void setup_logging(const std::string& level, const std::string& role);

}  // namespace rtmc
