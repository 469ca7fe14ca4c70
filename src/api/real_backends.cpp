#include "api/real_backends.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "api/http_error.hpp"
#include "auth/auth.hpp"
#include "store/unavailable.hpp"

namespace rtmc::api {

// co_await is not allowed in a catch block; rethrowing in one is.
boost::asio::awaitable<bool> StoreUsers::create(std::string name, std::string password_hash) {
  try {
    co_return co_await users_.create(std::move(name), std::move(password_hash));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<std::optional<StoredUser>> StoreUsers::find(std::string name) {
  try {
    co_return co_await users_.find(std::move(name));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<void> StoreSessions::put(std::string jti, std::string user,
                                                std::chrono::milliseconds ttl) {
  try {
    co_await sessions_.put(std::move(jti), std::move(user), ttl);
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<bool> StoreSessions::exists(std::string jti) {
  try {
    co_return co_await sessions_.exists(std::move(jti));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<bool> StoreSessions::remove(std::string jti) {
  try {
    co_return co_await sessions_.remove(std::move(jti));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<store::Verdict> StoreRateLimits::take(store::Bucket bucket) {
  try {
    co_return co_await limiter_.take(std::move(bucket));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<std::vector<store::Verdict>> StoreRateLimits::peek(
    std::vector<store::Bucket> buckets) {
  try {
    co_return co_await limiter_.peek(std::move(buckets));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<std::vector<store::Verdict>> StoreRateLimits::charge(
    std::vector<store::Bucket> buckets) {
  try {
    co_return co_await limiter_.charge(std::move(buckets));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<void> StoreRateLimits::refund(std::vector<store::Bucket> buckets) {
  try {
    co_await limiter_.refund(std::move(buckets));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<std::optional<store::UserStatus>> StoreStatusReader::get(std::string user) {
  try {
    co_return co_await reader_.get(std::move(user));
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<history::Items> StoreHistory::messages(protocol::HistoryRequest request) {
  try {
    // Named locals, not temporaries in the co_await expression (GCC 12, STYLE.md).
    auto query = history::query_of(request);
    auto step = history_.messages(std::move(request.room), query);
    co_return co_await std::move(step);
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

boost::asio::awaitable<history::RoomPage> StoreHistory::rooms(std::optional<std::string> after,
                                                              std::size_t limit) {
  try {
    co_return co_await history_.list_rooms(std::move(after), limit);
  } catch (const store::Unavailable& error) {
    throw Unavailable(error.what());
  }
}

namespace {
RedisConfig with_timeout(RedisConfig config, std::chrono::milliseconds timeout) {
  config.timeout = timeout;
  return config;
}
}  // namespace

BackendHealthProbe::BackendHealthProbe(RedisConfig redis, PgConfig pg, amqp::Publisher& publisher,
                                       std::chrono::milliseconds timeout)
    : timeout_(timeout),
      publisher_(publisher),
      redis_(with_timeout(std::move(redis), timeout)),
      pg_(std::move(pg), pg::Options{timeout, 0}),
      redis_worker_("health-redis", WorkerLimits{1, timeout}),
      pg_worker_("health-pg", WorkerLimits{1, timeout}) {}

// Each probe owns nothing of its caller: a job still running after its
// deadline touches only members, which outlive it (see the member order).
boost::asio::awaitable<bool> BackendHealthProbe::redis_ok() {
  auto job = [this] {
    auto reply = redis_.command({"PING"});
    return reply.type == redis::Reply::Type::status && reply.str == "PONG";
  };
  try {
    co_return co_await redis_worker_.run(std::move(job));
  } catch (const std::exception& error) {
    spdlog::warn("healthz: redis: {}", error.what());
    co_return false;
  }
}

boost::asio::awaitable<bool> BackendHealthProbe::postgres_ok() {
  auto job = [this] { return pg_.exec("SELECT 1").rows.size() == 1; };
  try {
    co_return co_await pg_worker_.run(std::move(job));
  } catch (const std::exception& error) {
    spdlog::warn("healthz: postgres: {}", error.what());
    co_return false;
  }
}

boost::asio::awaitable<bool> BackendHealthProbe::rabbitmq_ok() {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  while (!publisher_.connected()) {
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
  co_return true;
}

boost::asio::awaitable<DependencyHealth> BackendHealthProbe::probe() {
  using namespace boost::asio::experimental::awaitable_operators;
  // A named local, not a temporary inside co_await (GCC 12, see STYLE.md).
  auto all = redis_ok() && postgres_ok() && rabbitmq_ok();
  auto [redis, postgres, rabbitmq] = co_await std::move(all);
  co_return DependencyHealth{redis, postgres, rabbitmq};
}

class WorkerPasswordHasher::Slot {
 public:
  explicit Slot(const WorkerPasswordHasher& owner) : pending_(owner.pending_) {
    if (pending_->fetch_add(1, std::memory_order_relaxed) >= owner.max_pending_) {
      pending_->fetch_sub(1, std::memory_order_relaxed);
      throw Unavailable("password hashing queue is full");
    }
  }
  ~Slot() { pending_->fetch_sub(1, std::memory_order_relaxed); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  std::shared_ptr<std::atomic<std::size_t>> pending_;
};

WorkerPasswordHasher::WorkerPasswordHasher(std::string name, std::size_t workers, std::size_t max_pending)
    : max_pending_(std::max<std::size_t>(max_pending, 1)) {
  workers = std::max<std::size_t>(workers, 1);
  for (std::size_t i = 0; i < workers; ++i)
    workers_.push_back(std::make_unique<BlockingWorker>(name + "-" + std::to_string(i)));
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
