#include "gateway/store_ports.hpp"

#include "common/keys.hpp"
#include "gateway/room_log.hpp"
#include "store/amqp.hpp"
#include "store/redis.hpp"

namespace rtmc::gateway {

namespace {
// GCC 12 miscompiles braced string lists inside a co_await expression
// ("array used as initializer"), so commands are built by a plain function.
std::vector<std::string> redis_args(std::string command, std::string key) {
  std::vector<std::string> args;
  args.push_back(std::move(command));
  args.push_back(std::move(key));
  return args;
}
}  // namespace

boost::asio::awaitable<bool> RedisLoginSessions::exists(std::string jti) {
  auto reply = co_await redis_.command(redis_args("EXISTS", keys::session(jti)));
  if (reply.type != redis::Reply::Type::integer) throw redis::RedisError("EXISTS failed: " + reply.str);
  co_return reply.integer == 1;
}

boost::asio::awaitable<std::int64_t> RedisRoomReader::current_seq(std::string room) {
  auto reply = co_await redis_.command(redis_args("GET", keys::room_seq(shard_of(room, shards_), room)));
  if (reply.is_error()) throw redis::RedisError("GET failed: " + reply.str);
  co_return reply.type == redis::Reply::Type::string ? std::stoll(reply.str) : 0;
}

boost::asio::awaitable<std::vector<RoomReader::LogFrame>> RedisRoomReader::range(std::string room,
                                                                                 std::int64_t from,
                                                                                 std::int64_t to) {
  auto command = room_log_range(shard_of(room, shards_), room, from, to);
  auto reply = co_await redis_.command(std::move(command));
  co_return room_log_frames(reply);
}

void AmqpIngestPublisher::publish(protocol::IngestMessage message,
                                  std::function<void(amqp::PublishStatus)> done) {
  const auto shard = shard_of(message.room, shards_);
  amqp::Message out{"", ingest_queue(shard), protocol::encode_ingest(message), true, true};
  publisher_.publish(std::move(out), std::move(done));
}

}  // namespace rtmc::gateway
