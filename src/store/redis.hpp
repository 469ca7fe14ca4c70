#pragma once
// Redis access. `Connection` is hiredis' synchronous API owned by exactly one
// thread (a BlockingWorker or a dedicated loop thread); `Client` is the async
// facade io threads use, a few workers ("lanes") each owning a Connection.
//
// Client pipelines automatically (as ioredis and StackExchange.Redis do):
// when a lane's worker wakes it writes every command, pipeline and eval
// queued on it at once and then reads their replies in order, so a burst of
// N callers costs one round trip, not N. Each caller still gets its own
// reply or error; run() jobs, which need the connection to themselves, are
// never part of such a round (FIFO order around them holds).

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
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

  // Split form of command(): append() queues the command (connecting if
  // needed) without any I/O; take() flushes what is queued and returns that
  // command's reply. Replies may be taken in any order: take() keeps the
  // replies it reads before the one asked for until they are taken (every
  // appended command's reply must be taken once, also after a failure). A
  // take() whose reply was not read before the connection the command went
  // out on failed throws RedisError.
  struct Ticket {
    std::uint64_t connection = 0;  // connects() when appended
    std::uint64_t index = 0;       // position in that connection's reply stream
  };
  Ticket append(const std::vector<std::string>& args);
  Reply take(Ticket ticket);
  // take() of each, in order; all are taken, the first failure is thrown.
  std::vector<Reply> take_all(const std::vector<Ticket>& tickets);
  // EVALSHA of `script`, appended (SCRIPT LOAD first, synchronously, if this
  // connection has not loaded it yet).
  Ticket append_eval(const Script& script, const std::vector<std::string>& keys,
                     const std::vector<std::string>& args);
  // The reply of append_eval()'s ticket; on NOSCRIPT reloads the script and
  // runs the call again (a NOSCRIPT call did not run).
  Reply take_eval(Ticket ticket, const Script& script, const std::vector<std::string>& keys,
                  const std::vector<std::string>& args);
  // Writes what append() queued without reading any reply, so the server
  // works on it while the caller does something else before take(). Blocks
  // until the output buffer is in the kernel. On a write failure the
  // connection is dropped (the appended commands' take() then throws) and
  // RedisError is thrown.
  void flush();

  // Whether a connection is open, and how many were made so far. A call
  // connects only at its start, and only when there is no connection (the
  // first call, or one after a call that failed and threw): what a caller
  // learnt about the server on one connection (its run_id) holds for the next
  // call if it is connected() now with the same connects().
  bool connected() const { return context_ != nullptr; }
  std::uint64_t connects() const { return connects_; }

 private:
  redisContext* context();  // connects when needed; throws RedisError
  redisContext* connect();  // a new authenticated context; throws RedisError
  void drop();
  std::string load(const Script& script);

  RedisConfig config_;
  redisContext* context_ = nullptr;
  std::uint64_t connects_ = 0;
  std::vector<std::pair<std::string, std::string>> loaded_;  // source -> sha1
  std::uint64_t appended_ = 0;                               // commands appended on this connection
  std::uint64_t read_ = 0;                                   // replies read from it
  // Read, not yet taken, by (connection, index). Kept across a drop(): the
  // replies read before the connection failed are still their callers'.
  std::map<std::pair<std::uint64_t, std::uint64_t>, Reply> early_;
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

  // Pipelined rounds run so far, over all lanes (for tests and metrics).
  std::uint64_t rounds() const;

 private:
  struct Lane;
  Lane& pick();
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace rtmc::redis
