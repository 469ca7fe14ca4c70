#pragma once
// Login sessions: session:<jti> -> user name in Redis, expiring with the
// token. The api writes one at login and deletes it at logout; every role
// that accepts a token (api, gateway) checks it here, so a logout ends the
// token everywhere.
//
// Thread-safety: every method may be called concurrently from any io thread
// (redis::Client is thread-safe). Throws store::Unavailable when Redis cannot
// answer; a Redis error reply (a bug, not an outage) throws std::runtime_error.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <string>

#include "store/redis.hpp"

namespace rtmc::store {

class LoginSessions {
 public:
  explicit LoginSessions(redis::Client& redis) : redis_(redis) {}

  boost::asio::awaitable<void> put(std::string jti, std::string user, std::chrono::milliseconds ttl);
  boost::asio::awaitable<bool> exists(std::string jti);
  // exists() for many sessions in one round trip (a pipeline): answers in
  // the order of `jtis`. Throws like exists() when Redis cannot answer;
  // an error reply for one session throws for all.
  boost::asio::awaitable<std::vector<bool>> exists_all(std::vector<std::string> jtis);
  // true if a live session was removed; of two concurrent removes exactly
  // one gets true.
  boost::asio::awaitable<bool> remove(std::string jti);

 private:
  boost::asio::awaitable<redis::Reply> run(std::vector<std::string> command);
  redis::Client& redis_;
};

}  // namespace rtmc::store
