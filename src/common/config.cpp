#include "common/config.hpp"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rtmc {

HostPort HostPort::parse(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("expected host:port, got '" + text + "'");
  HostPort hp;
  if (colon > 0) hp.host = text.substr(0, colon);
  try {
    std::size_t used = 0;
    int port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || port < 0 || port > 65535) throw std::out_of_range("port");
    hp.port = static_cast<std::uint16_t>(port);
  } catch (const std::exception&) {
    throw std::invalid_argument("bad port in '" + text + "'");
  }
  return hp;
}

std::string HostPort::str() const { return host + ":" + std::to_string(port); }

void CommonOptions::add_to(CLI::App& app) {
  app.add_option("--redis", redis_text, "Redis address host:port")->envname("RTMC_REDIS")->capture_default_str();
  app.add_option("--amqp", amqp.url, "RabbitMQ URL")->envname("RTMC_AMQP")->capture_default_str();
  app.add_option("--pg", pg.conninfo, "PostgreSQL connection string")->envname("RTMC_PG")->capture_default_str();
  app.add_option("--ingest-shards", amqp.ingest_shards, "Ingest queues (fixed per deployment)")
      ->envname("RTMC_INGEST_SHARDS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--max-body", limits.max_body_bytes, "Largest message body in bytes")
      ->envname("RTMC_MAX_BODY")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  jwt_secret_option_ =
      app.add_option("--jwt-secret", auth.jwt_secret,
                     "JWT signing secret, at least 32 bytes (visible to other local users in ps: prefer "
                     "--jwt-secret-file or RTMC_JWT_SECRET)")
          ->envname("RTMC_JWT_SECRET");
  app.add_option("--jwt-secret-file", jwt_secret_file, "File holding the JWT signing secret")
      ->envname("RTMC_JWT_SECRET_FILE");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->envname("RTMC_LOG_LEVEL")
      ->capture_default_str();
}

void CommonOptions::finish(bool needs_secret) {
  redis.address = HostPort::parse(redis_text);
  if (jwt_secret_option_ != nullptr && jwt_secret_option_->count() > 0) {
    // CLI11 counts a value from the environment too; only a command-line
    // value differs from it (or has none to differ from).
    const char* from_env = std::getenv("RTMC_JWT_SECRET");
    if (from_env == nullptr || auth.jwt_secret != from_env)
      spdlog::warn(
          "--jwt-secret on the command line is visible to every local user (ps, /proc); "
          "use --jwt-secret-file or RTMC_JWT_SECRET instead");
  }
  if (auth.jwt_secret.empty() && !jwt_secret_file.empty()) {
    std::ifstream in(jwt_secret_file);
    if (!in) throw std::runtime_error("cannot read JWT secret file " + jwt_secret_file);
    std::stringstream text;
    text << in.rdbuf();
    auth.jwt_secret = text.str();
    while (!auth.jwt_secret.empty() && (auth.jwt_secret.back() == '\n' || auth.jwt_secret.back() == '\r'))
      auth.jwt_secret.pop_back();
  }
  // RFC 7518 section 3.2 (auth::TokenService enforces the same).
  if (needs_secret && auth.jwt_secret.size() < 32)
    throw std::runtime_error(
        "a JWT secret of at least 32 bytes is required (--jwt-secret-file or RTMC_JWT_SECRET); got " +
        std::to_string(auth.jwt_secret.size()));
}

void setup_logging(const std::string& level, const std::string& role) {
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e [" + role + "] %^%l%$ %v");
}

}  // namespace rtmc
