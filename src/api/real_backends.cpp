#include "api/real_backends.hpp"

#include "api/http_error.hpp"
#include "auth/auth.hpp"
#include "common/keys.hpp"

#include <algorithm>

namespace rtmc::api {

namespace {
constexpr const char* kUniqueViolation = "23505";
}

boost::asio::awaitable<bool> PgUserStore::create(std::string name, std::string password_hash) {
  // co_await is not allowed in a catch block, hence the flag.
  bool taken = false;
  // Built outside the co_await: GCC 12 miscompiles braced lists in co_await
  // expressions ("array used as initializer").
  std::vector<pg::Param> params{std::move(name), std::move(password_hash)};
  try {
    co_await pool_.exec("INSERT INTO users (name, password_hash) VALUES ($1, $2)", std::move(params));
  } catch (const pg::PgError& error) {
    if (error.sqlstate() == kUniqueViolation)
      taken = true;
    else if (error.sqlstate().empty())
      throw Unavailable(std::string("postgres: ") + error.what());
    else
      throw;
  }
  co_return !taken;
}

boost::asio::awaitable<std::optional<StoredUser>> PgUserStore::find(std::string name) {
  pg::Result result;
  std::vector<pg::Param> params{std::move(name)};
  try {
    // lower(name) matches the unique index, so this is an index lookup.
    result = co_await pool_.exec("SELECT name, password_hash FROM users WHERE lower(name) = lower($1)",
                                 std::move(params));
  } catch (const pg::PgError& error) {
    if (error.sqlstate().empty()) throw Unavailable(std::string("postgres: ") + error.what());
    throw;
  }
  if (result.rows.empty() || result.rows.front().size() < 2 || !result.rows.front()[0] ||
      !result.rows.front()[1])
    co_return std::nullopt;
  co_return StoredUser{*result.rows.front()[0], *result.rows.front()[1]};
}

boost::asio::awaitable<redis::Reply> RedisSessionStore::run(std::vector<std::string> command) {
  redis::Reply reply;
  try {
    reply = co_await client_.command(std::move(command));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  if (reply.is_error()) throw std::runtime_error("redis error reply: " + reply.str);
  co_return reply;
}

boost::asio::awaitable<void> RedisSessionStore::put(std::string jti, std::string user,
                                                    std::chrono::milliseconds ttl) {
  auto px = std::max<std::chrono::milliseconds::rep>(ttl.count(), 1);
  std::vector<std::string> command{"SET", keys::session(jti), std::move(user), "PX", std::to_string(px)};
  co_await run(std::move(command));
}

boost::asio::awaitable<bool> RedisSessionStore::exists(std::string jti) {
  std::vector<std::string> command{"EXISTS", keys::session(jti)};
  auto reply = co_await run(std::move(command));
  co_return reply.integer > 0;
}

boost::asio::awaitable<bool> RedisSessionStore::remove(std::string jti) {
  std::vector<std::string> command{"DEL", keys::session(jti)};
  auto reply = co_await run(std::move(command));
  co_return reply.integer > 0;
}

class WorkerPasswordHasher::Slot {
 public:
  explicit Slot(WorkerPasswordHasher& owner) : owner_(owner) {
    if (owner_.pending_.fetch_add(1, std::memory_order_relaxed) >= owner_.max_pending_) {
      owner_.pending_.fetch_sub(1, std::memory_order_relaxed);
      throw Unavailable("password hashing queue is full");
    }
  }
  ~Slot() { owner_.pending_.fetch_sub(1, std::memory_order_relaxed); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  WorkerPasswordHasher& owner_;
};

WorkerPasswordHasher::WorkerPasswordHasher(std::size_t workers, std::size_t max_pending)
    : max_pending_(std::max<std::size_t>(max_pending, 1)) {
  workers = std::max<std::size_t>(workers, 1);
  for (std::size_t i = 0; i < workers; ++i)
    workers_.push_back(std::make_unique<BlockingWorker>("argon2-" + std::to_string(i)));
}

BlockingWorker& WorkerPasswordHasher::next() {
  return *workers_[next_.fetch_add(1, std::memory_order_relaxed) % workers_.size()];
}

// The jobs are named locals, not lambdas written inside the co_await
// expression: GCC 12 destroys the captures of such temporaries twice.
boost::asio::awaitable<std::string> WorkerPasswordHasher::hash(std::string password) {
  Slot slot(*this);
  auto job = [password = std::move(password)] { return auth::hash_password(password); };
  co_return co_await next().run(std::move(job));
}

boost::asio::awaitable<bool> WorkerPasswordHasher::verify(std::string stored_hash, std::string password) {
  Slot slot(*this);
  auto job = [stored_hash = std::move(stored_hash), password = std::move(password)] {
    return auth::verify_password(stored_hash, password);
  };
  co_return co_await next().run(std::move(job));
}

boost::asio::awaitable<void> WorkerPasswordHasher::burn(std::string password) {
  Slot slot(*this);
  auto job = [password = std::move(password)] { auth::burn_verify_time(password); };
  co_await next().run(std::move(job));
}

boost::asio::awaitable<amqp::PublishStatus> AmqpMessagePublisher::publish(amqp::Message message) {
  co_return co_await publisher_.async_publish(std::move(message));
}

}  // namespace rtmc::api
