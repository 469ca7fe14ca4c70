#include "gateway/store_ports.hpp"

#include "common/keys.hpp"
#include "store/amqp.hpp"
#include "store/login_sessions.hpp"
#include "store/rate_limits.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"

namespace rtmc::gateway {

boost::asio::awaitable<bool> RedisLoginSessions::exists(std::string jti) {
  co_return co_await sessions_.exists(std::move(jti));
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
