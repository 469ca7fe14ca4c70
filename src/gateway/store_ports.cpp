#include "gateway/store_ports.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

#include "common/keys.hpp"
#include "store/amqp.hpp"
#include "store/login_sessions.hpp"
#include "store/rate_limits.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"

namespace rtmc::gateway {

namespace {
// Sessions per pipeline: one Redis call stays short.
constexpr std::size_t kMaxSessionsPerBatch = 1024;
}  // namespace

// The caller waits on a timer of its own executor that the batch sets to
// the past once the answer is there (a timer set to the past lets a wait
// started later pass too, so the order of the two does not matter).
struct RedisLoginSessions::Check {
  explicit Check(boost::asio::any_io_executor executor, std::string session)
      : ready(executor, std::chrono::steady_clock::time_point::max()), jti(std::move(session)) {}
  boost::asio::steady_timer ready;
  std::string jti;
  bool found = false;
  std::exception_ptr error;
};

boost::asio::awaitable<bool> RedisLoginSessions::exists(std::string jti) {
  auto executor = co_await boost::asio::this_coro::executor;
  auto check = std::make_shared<Check>(executor, std::move(jti));
  bool start = false;
  {
    std::lock_guard lock(mutex_);
    waiting_.push_back(check);
    start = !std::exchange(sending_, true);
  }
  if (start) boost::asio::co_spawn(executor, send_batches(), boost::asio::detached);
  co_await check->ready.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (check->error) std::rethrow_exception(check->error);
  co_return check->found;
}

// One batch at a time: what arrives meanwhile waits for the next, so under
// load batches grow and round trips do not.
boost::asio::awaitable<void> RedisLoginSessions::send_batches() {
  for (;;) {
    std::vector<std::shared_ptr<Check>> batch;
    {
      std::lock_guard lock(mutex_);
      if (waiting_.empty()) {
        sending_ = false;
        co_return;
      }
      const auto take = std::min(waiting_.size(), kMaxSessionsPerBatch);
      batch.assign(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(take));
      waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(take));
    }
    std::vector<std::string> jtis;
    jtis.reserve(batch.size());
    for (const auto& check : batch) jtis.push_back(check->jti);
    std::vector<bool> found;
    std::exception_ptr error;
    try {
      found = co_await sessions_.exists_all(std::move(jtis));
    } catch (...) {
      error = std::current_exception();
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& check = batch[i];
      const bool answer = !error && found[i];
      boost::asio::post(check->ready.get_executor(), [check, answer, error] {
        check->found = answer;
        check->error = error;
        check->ready.expires_at(std::chrono::steady_clock::time_point::min());
      });
    }
  }
}

// The room's seq and log are read where every role reads them: store/rooms.
boost::asio::awaitable<std::int64_t> RedisRoomReader::current_seq(std::string room) {
  co_return co_await rooms::async_current_seq(redis_, shards_, std::move(room));
}

boost::asio::awaitable<std::vector<RoomReader::LogFrame>> RedisRoomReader::range(std::string room,
                                                                                 std::int64_t from,
                                                                                 std::int64_t to) {
  co_return co_await rooms::async_read_log(redis_, shards_, std::move(room), from, to);
}

boost::asio::awaitable<bool> RedisSendLimiter::allow(std::string user, std::string) {
  auto bucket = store::messages_bucket(user, rate_);
  const auto verdict = co_await limiter_.take(std::move(bucket));
  co_return verdict.allowed;
}

boost::asio::awaitable<std::vector<SharedFrame>> StoreHistoryReader::messages(
    protocol::HistoryRequest request) {
  // Named locals, not temporaries in the co_await expression (GCC 12, STYLE.md).
  auto query = history::query_of(request);
  auto step = history_.messages(std::move(request.room), query);
  auto items = co_await std::move(step);
  std::vector<SharedFrame> frames;
  frames.reserve(items.size());
  for (auto& item : items) frames.push_back(std::move(item.second));
  co_return frames;
}

void AmqpIngestPublisher::publish(protocol::IngestMessage message,
                                  std::function<void(amqp::PublishStatus)> done) {
  const auto shard = shard_of(message.room, shards_);
  amqp::Message out{"", ingest_queue(shard), protocol::encode_ingest(message), true, true};
  publisher_.publish(std::move(out), std::move(done));
}

}  // namespace rtmc::gateway
