#pragma once
// The real adapters of ports.hpp over the shared domain stores (login
// sessions: store/login_sessions; room seq and log: store/rooms; send rate:
// store/rate_limits; history: store/history) and the RabbitMQ publisher. Thin on purpose: the logic lives in
// the stores, which the api and the sequencer use too.
//
// Threading: as the ports say; redis::Client and amqp::Publisher are
// thread-safe, these add no state.

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/config.hpp"
#include "gateway/ports.hpp"
#include "store/history.hpp"
#include "store/login_sessions.hpp"
#include "store/rate_limits.hpp"

namespace rtmc::redis {
class Client;
}

namespace rtmc::gateway {

// The same check the api makes (store::LoginSessions), so a logout ends the
// token everywhere. Checks asked for while one round trip is out are sent
// together in the next one (a pipeline): a connect storm (19,000 auths in a
// few seconds) and every connection's re-check each heartbeat cost a few
// round trips, not one Redis call and two thread switches each.
// Thread-safe: any io thread may call exists(); the answer comes back on
// the caller's executor.
class RedisLoginSessions final : public LoginSessions {
 public:
  explicit RedisLoginSessions(redis::Client& redis) : sessions_(redis) {}
  boost::asio::awaitable<bool> exists(std::string jti) override;

 private:
  struct Check;
  boost::asio::awaitable<void> send_batches();
  std::mutex mutex_;
  std::vector<std::shared_ptr<Check>> waiting_;  // guarded by mutex_
  bool sending_ = false;                         // guarded by mutex_

 private:
  store::LoginSessions sessions_;
};

class RedisRoomReader final : public RoomReader {
 public:
  RedisRoomReader(redis::Client& redis, std::uint32_t ingest_shards)
      : redis_(redis), shards_(ingest_shards) {}
  boost::asio::awaitable<std::int64_t> current_seq(std::string room) override;
  boost::asio::awaitable<std::vector<LogFrame>> range(std::string room, std::int64_t from,
                                                      std::int64_t to) override;

 private:
  redis::Client& redis_;
  std::uint32_t shards_;
};

// The api's publish budget (store::messages_bucket), so a user's REST and
// TCP sends share one count. Only wired when a rate is set: each call is a
// Redis round trip.
class RedisSendLimiter final : public SendLimiter {
 public:
  RedisSendLimiter(redis::Client& redis, store::Rate rate) : limiter_(redis), rate_(rate) {}
  boost::asio::awaitable<bool> allow(std::string user, std::string room) override;

 private:
  store::RateLimiter limiter_;
  store::Rate rate_;
};

class StoreHistoryReader final : public HistoryReader {
 public:
  StoreHistoryReader(redis::Client& redis, pg::Pool& pool, std::uint32_t ingest_shards)
      : history_(redis, pool, ingest_shards) {}
  boost::asio::awaitable<std::vector<SharedFrame>> messages(protocol::HistoryRequest request) override;

 private:
  history::History history_;
};

class AmqpIngestPublisher final : public IngestPublisher {
 public:
  // `max_backlog`: sends accepted and not confirmed, all connections
  // together, before has_room() says no (0 = no bound). The publisher itself
  // has no bound, so a send that passed has_room() is never refused.
  AmqpIngestPublisher(amqp::Publisher& publisher, std::uint32_t ingest_shards, std::size_t max_backlog = 0)
      : publisher_(publisher), shards_(ingest_shards), max_backlog_(max_backlog) {}
  void publish(protocol::IngestMessage message, std::function<void(amqp::PublishStatus)> done) override;
  bool has_room() const override { return max_backlog_ == 0 || publisher_.backlog() < max_backlog_; }

 private:
  amqp::Publisher& publisher_;
  std::uint32_t shards_;
  std::size_t max_backlog_;
};

}  // namespace rtmc::gateway
