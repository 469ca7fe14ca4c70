#include "common/config.hpp"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

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

std::string HostPort::str() const {
  return host + ":" + std::to_string(port);
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `what` names the part for the error message; the text itself is never
// quoted, as it may be a password.
std::string percent_decode(std::string_view text, const char* what) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    int high = i + 2 < text.size() ? hex_digit(text[i + 1]) : -1;
    int low = i + 2 < text.size() ? hex_digit(text[i + 2]) : -1;
    if (high < 0 || low < 0)
      throw std::invalid_argument(std::string("bad percent-encoding in the redis URL's ") + what);
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

}  // namespace

RedisConfig RedisConfig::parse(const std::string& text) {
  RedisConfig config;
  constexpr std::string_view scheme = "redis://";
  if (text.rfind(scheme, 0) != 0) {
    if (text.find("://") != std::string::npos)
      throw std::invalid_argument("unsupported Redis URL scheme (only redis:// and host:port)");
    if (text.find('@') != std::string::npos)
      throw std::invalid_argument("credentials need the redis:// form: redis://[user:]password@host:port");
    config.address = HostPort::parse(text);
    return config;
  }
  std::string_view rest(text);
  rest.remove_prefix(scheme.size());
  // The path (a database number) ends the authority; userinfo ends at the
  // last '@' so that a raw '@' in a password still parses.
  std::string_view path;
  auto slash = rest.find('/', rest.rfind('@') == std::string_view::npos ? 0 : rest.rfind('@'));
  if (slash != std::string_view::npos) {
    path = rest.substr(slash);
    rest = rest.substr(0, slash);
  }
  if (!path.empty() && path != "/" && path != "/0")
    throw std::invalid_argument("redis URL: only database 0 is supported, got path '" + std::string(path) +
                                "'");
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      config.user = percent_decode(userinfo.substr(0, colon), "user");
      config.password = percent_decode(userinfo.substr(colon + 1), "password");
    } else {
      config.password = percent_decode(userinfo, "password");
    }
    if (config.password.empty()) throw std::invalid_argument("redis URL: empty password after the user");
  }
  if (rest.find('?') != std::string_view::npos)
    throw std::invalid_argument("redis URL: query parameters are not supported");
  if (rest.empty() || rest.front() == ':') throw std::invalid_argument("redis URL without a host");
  if (rest.find(':') == std::string_view::npos) {
    config.address.host = std::string(rest);
    config.address.port = 6379;
  } else {
    config.address = HostPort::parse(std::string(rest));
  }
  return config;
}

std::string RedisConfig::describe() const {
  return (user.empty() ? "" : user + "@") + address.str();
}

std::string read_secret_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read file " + path);
  std::stringstream text;
  text << in.rdbuf();
  std::string value = text.str();
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  if (value.empty()) throw std::runtime_error("file " + path + " is empty");
  return value;
}

void CommonOptions::add_to(CLI::App& app) {
  redis_option_ =
      app.add_option("--redis", redis_text, "Redis: host:port or redis://[user:password@]host:port")
          ->envname("RTMC_REDIS")
          ->capture_default_str();
  app.add_option("--redis-file", redis_file, "File holding the --redis value")->envname("RTMC_REDIS_FILE");
  amqp_option_ = app.add_option("--amqp", amqp.url, "RabbitMQ URL amqp://user:password@host:port/vhost")
                     ->envname("RTMC_AMQP")
                     ->capture_default_str();
  app.add_option("--amqp-file", amqp_file, "File holding the --amqp value")->envname("RTMC_AMQP_FILE");
  pg_option_ = app.add_option("--pg", pg.conninfo, "PostgreSQL connection string")
                   ->envname("RTMC_PG")
                   ->capture_default_str();
  app.add_option("--pg-file", pg_file, "File holding the --pg value")->envname("RTMC_PG_FILE");
  app.add_option("--ingest-shards", amqp.ingest_shards, "Ingest queues (fixed per deployment)")
      ->envname("RTMC_INGEST_SHARDS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--max-body", limits.max_body_bytes, "Largest message body in bytes")
      ->envname("RTMC_MAX_BODY")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-sequence-attempts", limits.max_sequence_attempts,
                 "Failed runs of the sequencing script before a message is dead-lettered")
      ->envname("RTMC_MAX_SEQUENCE_ATTEMPTS")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  jwt_secret_option_ =
      app.add_option("--jwt-secret", auth.jwt_secret,
                     "JWT signing secret, at least 32 bytes (visible to other local users in ps: prefer "
                     "--jwt-secret-file or RTMC_JWT_SECRET)")
          ->envname("RTMC_JWT_SECRET");
  app.add_option("--jwt-secret-file", jwt_secret_file, "File holding the JWT signing secret")
      ->envname("RTMC_JWT_SECRET_FILE");
  app.add_option("--status-cache-ttl-s", status_cache_ttl_s_,
                 "seconds a user status stays in the Redis cache (api and gateways must agree)")
      ->envname("RTMC_STATUS_CACHE_TTL_S")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86400}))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->envname("RTMC_LOG_LEVEL")
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text (for people) or json (one object per line)")
      ->envname("RTMC_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

namespace {

// Replaces `value` with the file's contents when a file is named; a value
// also given directly is refused rather than silently overridden.
void resolve_file(std::string& value, const std::string& file, const CLI::Option* direct, const char* name) {
  if (file.empty()) return;
  if (direct != nullptr && direct->count() > 0)
    throw std::runtime_error(std::string("both --") + name + " and --" + name +
                             "-file are given (or their RTMC_ variables); use one");
  value = read_secret_file(file);
}

}  // namespace

void CommonOptions::finish(bool needs_secret) {
  if (jwt_secret_option_ != nullptr && jwt_secret_option_->count() > 0) {
    // CLI11 counts a value from the environment too; only a command-line
    // value differs from it (or has none to differ from).
    const char* from_env = std::getenv("RTMC_JWT_SECRET");
    if (from_env == nullptr || auth.jwt_secret != from_env)
      spdlog::warn(
          "--jwt-secret on the command line is visible to every local user (ps, /proc); "
          "use --jwt-secret-file or RTMC_JWT_SECRET instead");
  }
  presence.status_cache_ttl = std::chrono::seconds(status_cache_ttl_s_);
  resolve_file(redis_text, redis_file, redis_option_, "redis");
  resolve_file(amqp.url, amqp_file, amqp_option_, "amqp");
  resolve_file(pg.conninfo, pg_file, pg_option_, "pg");
  resolve_file(auth.jwt_secret, jwt_secret_file, jwt_secret_option_, "jwt-secret");
  try {
    const auto timeout = redis.timeout;
    redis = RedisConfig::parse(redis_text);
    redis.timeout = timeout;
  } catch (const std::invalid_argument& error) {
    throw std::runtime_error(std::string("--redis: ") + error.what());
  }
  redis.events = std::make_shared<StoreEvents>();
  pg.events = std::make_shared<StoreEvents>();
  amqp.events = std::make_shared<StoreEvents>();
  // RFC 7518 section 3.2 (auth::TokenService enforces the same).
  if (needs_secret && auth.jwt_secret.size() < 32)
    throw std::runtime_error(
        "a JWT secret of at least 32 bytes is required (--jwt-secret-file or RTMC_JWT_SECRET); got " +
        std::to_string(auth.jwt_secret.size()));
}

}  // namespace rtmc
