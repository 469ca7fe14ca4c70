#pragma once
// Redis access. `Connection` is hiredis' synchronous API owned by exactly one
// thread (a BlockingWorker or a dedicated loop thread); `Client` is the async
// facade io threads use, a few workers each owning a Connection.

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/blocking_worker.hpp"
#include "common/config.hpp"

struct redisContext;

namespace rtmc::redis {

// I/O or protocol failure. The connection is dropped; the next call reconnects.
class RedisError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error reply Redis gives while it cannot take the command now (memory
// full under noeviction, loading, busy script, read-only replica, a
// credential or permission problem of the deployment...): the same command
// succeeds once the condition passes, so callers treat it as an outage
// (retry, 503 / `unavailable`), never as a fault of the request.
bool is_refusal(std::string_view error);

struct Reply {
  enum class Type { nil, integer, string, status, error, array };
  Type type = Type::nil;
  long long integer = 0;
  std::string str;  // string, status and error replies
  std::vector<Reply> elements;

  bool is_nil() const { return type == Type::nil; }
  bool is_error() const { return type == Type::error; }
};

// A Lua script run by EVALSHA, loaded on first use per connection and
// reloaded after NOSCRIPT (e.g. after a Redis restart).
struct Script {
  // A constructor rather than aggregate initialization on purpose: GCC 12
  // destroys a brace-initialized aggregate temporary twice when it appears
  // inside a co_await expression (`co_await client.eval(Script{"..."}, ...)`).
  explicit Script(std::string text) : source(std::move(text)) {}
  std::string source;
};

class Connection {
 public:
  explicit Connection(RedisConfig config);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Redis error replies come back as Type::error; only I/O problems throw.
  Reply command(const std::vector<std::string>& args);
  // One round trip for many commands; replies in order.
  std::vector<Reply> pipeline(const std::vector<std::vector<std::string>>& commands);
  // A script the server refuses to load (a Lua syntax error) throws
  // RedisError; errors raised while it runs are Type::error replies.
  Reply eval(const Script& script, const std::vector<std::string>& keys,
             const std::vector<std::string>& args);
  struct EvalCall {
    std::vector<std::string> keys;
    std::vector<std::string> args;
  };
  // Pipelined EVALSHA of one script over many calls.
  std::vector<Reply> eval_pipeline(const Script& script, const std::vector<EvalCall>& calls);

  // Whether a connection is open, and how many were made so far. A call
  // connects only at its start, and only when there is no connection (the
  // first call, or one after a call that failed and threw): what a caller
  // learnt about the server on one connection (its run_id) holds for the next
  // call if it is connected() now with the same connects().
  bool connected() const { return context_ != nullptr; }
  std::uint64_t connects() const { return connects_; }

 private:
  redisContext* context();  // connects when needed; throws RedisError
  void drop();
  std::string load(const Script& script);

  RedisConfig config_;
  redisContext* context_ = nullptr;
  std::uint64_t connects_ = 0;
  std::vector<std::pair<std::string, std::string>> loaded_;  // source -> sha1
};

class Client {
 public:
  // `limits` bound each connection's queue and every call's wait
  // (BlockingWorker); a call over them throws WorkerUnavailable.
  explicit Client(RedisConfig config, std::size_t connections = 2, WorkerLimits limits = {});
  ~Client();
  // Runs on a worker; throws RedisError in the awaiting coroutine.
  boost::asio::awaitable<Reply> command(std::vector<std::string> args);
  boost::asio::awaitable<std::vector<Reply>> pipeline(std::vector<std::vector<std::string>> commands);
  boost::asio::awaitable<Reply> eval(Script script, std::vector<std::string> keys,
                                     std::vector<std::string> args);
  // Runs `job` with one worker's Connection, on that worker's thread, for
  // work the calls above do not cover. The job must not keep the reference.
  // With a deadline (limits.max_wait) the job may still run after its caller
  // gave up, so it must own what it touches (no captures by reference).
  boost::asio::awaitable<void> run(std::function<void(Connection&)> job);

 private:
  struct Lane;
  Lane& pick();
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace rtmc::redis
