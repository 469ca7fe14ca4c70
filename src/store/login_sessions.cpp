#include "store/login_sessions.hpp"

#include <algorithm>

#include "common/keys.hpp"
#include "store/unavailable.hpp"

namespace rtmc::store {

boost::asio::awaitable<redis::Reply> LoginSessions::run(std::vector<std::string> command) {
  redis::Reply reply;
  try {
    reply = co_await redis_.command(std::move(command));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  if (reply.is_error() && redis::is_refusal(reply.str)) throw Unavailable("redis refused: " + reply.str);
  if (reply.is_error()) throw std::runtime_error("redis error reply: " + reply.str);
  co_return reply;
}

boost::asio::awaitable<void> LoginSessions::put(std::string jti, std::string user,
                                                std::chrono::milliseconds ttl) {
  auto px = std::max<std::chrono::milliseconds::rep>(ttl.count(), 1);
  std::vector<std::string> command{"SET", keys::session(jti), std::move(user), "PX", std::to_string(px)};
  co_await run(std::move(command));
}

boost::asio::awaitable<bool> LoginSessions::exists(std::string jti) {
  std::vector<std::string> command{"EXISTS", keys::session(jti)};
  auto reply = co_await run(std::move(command));
  co_return reply.integer > 0;
}

boost::asio::awaitable<std::vector<bool>> LoginSessions::exists_all(std::vector<std::string> jtis) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(jtis.size());
  for (const auto& jti : jtis) commands.push_back({"EXISTS", keys::session(jti)});
  std::vector<redis::Reply> replies;
  try {
    replies = co_await redis_.pipeline(std::move(commands));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  std::vector<bool> found;
  found.reserve(replies.size());
  for (const auto& reply : replies) {
    if (reply.is_error() && redis::is_refusal(reply.str)) throw Unavailable("redis refused: " + reply.str);
    if (reply.is_error()) throw std::runtime_error("redis error reply: " + reply.str);
    found.push_back(reply.integer > 0);
  }
  co_return found;
}

boost::asio::awaitable<bool> LoginSessions::remove(std::string jti) {
  std::vector<std::string> command{"DEL", keys::session(jti)};
  auto reply = co_await run(std::move(command));
  co_return reply.integer > 0;
}

}  // namespace rtmc::store
