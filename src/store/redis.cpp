#include "store/redis.hpp"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <ctime>
#include <exception>

namespace rtmc::redis {

bool is_refusal(std::string_view error) {
  static constexpr std::array<std::string_view, 13> kCodes{
      "OOM ",         "LOADING ",    "BUSY ",     "MASTERDOWN ", "READONLY ", "MISCONF ",  "TRYAGAIN ",
      "CLUSTERDOWN ", "NOREPLICAS ", "NOSCRIPT ", "NOPERM ",     "NOAUTH ",   "WRONGPASS "};
  for (auto code : kCodes)
    if (error.substr(0, code.size()) == code) return true;
  return false;
}
namespace {

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

Reply convert(const redisReply& raw) {
  Reply reply;
  switch (raw.type) {
    case REDIS_REPLY_STRING:
      reply.type = Reply::Type::string;
      reply.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_STATUS:
      reply.type = Reply::Type::status;
      reply.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_ERROR:
      reply.type = Reply::Type::error;
      reply.str.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_INTEGER:
      reply.type = Reply::Type::integer;
      reply.integer = raw.integer;
      break;
    case REDIS_REPLY_ARRAY:
      reply.type = Reply::Type::array;
      reply.elements.reserve(raw.elements);
      for (std::size_t i = 0; i < raw.elements; ++i) reply.elements.push_back(convert(*raw.element[i]));
      break;
    default:  // REDIS_REPLY_NIL; RESP3 types do not exist in hiredis 0.14
      reply.type = Reply::Type::nil;
      break;
  }
  return reply;
}

// hiredis writes with write(2), so a write to a connection the server reset
// raises SIGPIPE, whose default action ends the process. For the duration of
// a call SIGPIPE is blocked on this thread, and one the call raised is
// consumed before unblocking (the technique libpq uses); the failed write
// itself surfaces as EPIPE and then as RedisError.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
    was_pending_ = pending();
  }
  ~SigpipeGuard() {
    if (!was_pending_ && pending()) {
      const timespec no_wait{};
      sigtimedwait(&pipe_, nullptr, &no_wait);
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  static bool pending() {
    sigset_t set;
    sigpending(&set);
    return sigismember(&set, SIGPIPE) == 1;
  }
  sigset_t pipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

bool is_noscript(const Reply& reply) {
  return reply.is_error() && reply.str.rfind("NOSCRIPT", 0) == 0;
}

// Pointer/length views of the arguments; hiredis copies them while
// formatting, so they need only outlive the call. Binary-safe.
struct ArgvView {
  explicit ArgvView(const std::vector<std::string>& args) {
    argv.reserve(args.size());
    argvlen.reserve(args.size());
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      argvlen.push_back(arg.size());
    }
  }
  int argc() const { return static_cast<int>(argv.size()); }
  std::vector<const char*> argv;
  std::vector<std::size_t> argvlen;
};

std::vector<std::string> evalsha_args(const std::string& sha, const std::vector<std::string>& keys,
                                      const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.emplace_back("EVALSHA");
  argv.push_back(sha);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace

Connection::Connection(RedisConfig config) : config_(std::move(config)) {}

Connection::~Connection() {
  drop();
}

void Connection::drop() {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
  // A new connection may reach a restarted server without our scripts.
  loaded_.clear();
  appended_ = 0;
  read_ = 0;
}

redisContext* Connection::context() {
  if (context_ != nullptr) return context_;
  try {
    context_ = connect();
  } catch (const RedisError&) {
    note_error(config_.events);
    throw;
  }
  ++connects_;
  note_connect(config_.events);
  return context_;
}

redisContext* Connection::connect() {
  const timeval timeout = to_timeval(config_.timeout);
  redisContext* ctx = redisConnectWithTimeout(config_.address.host.c_str(), config_.address.port, timeout);
  if (ctx == nullptr) throw RedisError("redis " + config_.address.str() + ": cannot allocate context");
  if (ctx->err != 0) {
    std::string message = "redis " + config_.address.str() + ": connect: " + ctx->errstr;
    redisFree(ctx);
    throw RedisError(message);
  }
  // hiredis has no command timeouts of its own: socket timeouts make a
  // stuck server surface as an I/O error instead of blocking the worker.
  if (redisSetTimeout(ctx, timeout) != REDIS_OK || redisEnableKeepAlive(ctx) != REDIS_OK) {
    std::string message = "redis " + config_.address.str() + ": socket setup: " + ctx->errstr;
    redisFree(ctx);
    throw RedisError(message);
  }
  // Every new connection, the first and each reconnect, authenticates
  // before anything else is sent on it.
  if (!config_.password.empty()) {
    std::vector<std::string> args{"AUTH"};
    if (!config_.user.empty()) args.push_back(config_.user);
    args.push_back(config_.password);
    ArgvView view(args);
    const SigpipeGuard no_sigpipe;
    ReplyPtr raw(
        static_cast<redisReply*>(redisCommandArgv(ctx, view.argc(), view.argv.data(), view.argvlen.data())));
    std::string failure;
    if (!raw)
      failure = ctx->errstr;
    else if (raw->type == REDIS_REPLY_ERROR)
      failure.assign(raw->str, raw->len);  // e.g. WRONGPASS; never echoes the password
    if (!failure.empty()) {
      redisFree(ctx);
      throw RedisError("redis " + config_.describe() + ": AUTH failed: " + failure);
    }
  }
  return ctx;
}

Connection::Ticket Connection::append(const std::vector<std::string>& args) {
  if (args.empty()) throw std::invalid_argument("redis command without arguments");
  redisContext* ctx = context();
  ArgvView view(args);  // non-const: hiredis 0.14 takes const char** argv
  if (redisAppendCommandArgv(ctx, view.argc(), view.argv.data(), view.argvlen.data()) != REDIS_OK) {
    // Only formatting happens here (out of memory): the output buffer may
    // hold part of the command, so the connection is in no known state.
    std::string message = "redis " + config_.address.str() + ": append " + args.front() + ": " + ctx->errstr;
    drop();
    note_error(config_.events);
    throw RedisError(message);
  }
  return Ticket{connects_, appended_++};
}

Reply Connection::take(Ticket ticket) {
  if (auto early = early_.find({ticket.connection, ticket.index}); early != early_.end()) {
    Reply reply = std::move(early->second);
    early_.erase(early);
    return reply;
  }
  if (context_ == nullptr || ticket.connection != connects_)
    throw RedisError("redis " + config_.address.str() +
                     ": the connection failed before this command's reply was read");
  if (ticket.index < read_ || ticket.index >= appended_)
    throw std::logic_error("redis reply taken twice or never appended");
  const SigpipeGuard no_sigpipe;
  for (;;) {
    void* out = nullptr;
    // The first read of a round writes the whole output buffer first.
    if (redisGetReply(context_, &out) != REDIS_OK || out == nullptr) {
      std::string message = "redis " + config_.address.str() + ": reply " + std::to_string(ticket.index) +
                            ": " + context_->errstr;
      drop();
      note_error(config_.events);
      throw RedisError(message);
    }
    ReplyPtr raw(static_cast<redisReply*>(out));
    const std::uint64_t index = read_++;
    if (index == ticket.index) return convert(*raw);
    early_.emplace(std::pair{connects_, index}, convert(*raw));
  }
}

void Connection::flush() {
  if (context_ == nullptr) return;
  const SigpipeGuard no_sigpipe;
  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) {
      std::string message = "redis " + config_.address.str() + ": write: " + context_->errstr;
      drop();
      throw RedisError(message);
    }
  }
}

Reply Connection::command(const std::vector<std::string>& args) {
  return take(append(args));
}

std::vector<Reply> Connection::pipeline(const std::vector<std::vector<std::string>>& commands) {
  std::vector<Reply> replies;
  if (commands.empty()) return replies;
  // Checked before anything is appended: a half-appended batch would leave
  // stray commands in the output buffer.
  for (const auto& args : commands)
    if (args.empty()) throw std::invalid_argument("redis command without arguments");
  std::vector<Ticket> tickets;
  tickets.reserve(commands.size());
  for (const auto& args : commands) tickets.push_back(append(args));
  return take_all(tickets);
}

std::vector<Reply> Connection::take_all(const std::vector<Ticket>& tickets) {
  std::vector<Reply> replies;
  replies.reserve(tickets.size());
  // Every ticket is taken even after one failed, so no reply read early is
  // left behind; the first failure is the caller's.
  std::exception_ptr failure;
  for (const auto& ticket : tickets) {
    try {
      replies.push_back(take(ticket));
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return replies;
}

std::string Connection::load(const Script& script) {
  auto cached =
      std::find_if(loaded_.begin(), loaded_.end(), [&](const auto& e) { return e.first == script.source; });
  if (cached != loaded_.end()) return cached->second;
  Reply reply = command({"SCRIPT", "LOAD", script.source});
  if (reply.type != Reply::Type::string)
    throw RedisError("redis " + config_.address.str() + ": SCRIPT LOAD failed: " + reply.str);
  loaded_.emplace_back(script.source, reply.str);
  return reply.str;
}

Reply Connection::eval(const Script& script, const std::vector<std::string>& keys,
                       const std::vector<std::string>& args) {
  return take_eval(append_eval(script, keys, args), script, keys, args);
}

Connection::Ticket Connection::append_eval(const Script& script, const std::vector<std::string>& keys,
                                           const std::vector<std::string>& args) {
  return append(evalsha_args(load(script), keys, args));
}

Reply Connection::take_eval(Ticket ticket, const Script& script, const std::vector<std::string>& keys,
                            const std::vector<std::string>& args) {
  Reply reply = take(ticket);
  if (!is_noscript(reply)) return reply;
  // The server lost its script cache (restart, SCRIPT FLUSH, failover).
  std::erase_if(loaded_, [&](const auto& e) { return e.first == script.source; });
  return command(evalsha_args(load(script), keys, args));
}

std::vector<Reply> Connection::eval_pipeline(const Script& script, const std::vector<EvalCall>& calls) {
  auto run = [&](const std::vector<std::size_t>& which) {
    const std::string sha = load(script);
    std::vector<std::vector<std::string>> commands;
    commands.reserve(which.size());
    for (std::size_t i : which) commands.push_back(evalsha_args(sha, calls[i].keys, calls[i].args));
    return pipeline(commands);
  };
  std::vector<std::size_t> all(calls.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<Reply> replies = run(all);

  // A NOSCRIPT call did not run, so re-running exactly those is safe even if
  // the cache was flushed part-way through the batch.
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < replies.size(); ++i)
    if (is_noscript(replies[i])) missing.push_back(i);
  if (missing.empty()) return replies;
  std::erase_if(loaded_, [&](const auto& e) { return e.first == script.source; });
  std::vector<Reply> retried = run(missing);
  for (std::size_t j = 0; j < missing.size(); ++j) replies[missing[j]] = std::move(retried[j]);
  return replies;
}

namespace {
struct EvalArgs {
  Script script;
  std::vector<std::string> keys;
  std::vector<std::string> args;
};
}  // namespace

struct Client::Lane {
  Lane(RedisConfig config, std::string name, WorkerLimits limits)
      : connection(std::move(config)), worker(std::move(name), limits) {}
  // Declared before the worker so the worker thread is joined first.
  Connection connection;
  BlockingWorker worker;
};

Client::Client(RedisConfig config, std::size_t connections, WorkerLimits limits) {
  connections = std::max<std::size_t>(connections, 1);
  for (std::size_t i = 0; i < connections; ++i)
    lanes_.push_back(std::make_unique<Lane>(config, "redis-" + std::to_string(i), limits));
}

Client::~Client() = default;

std::uint64_t Client::rounds() const {
  std::uint64_t total = 0;
  for (const auto& lane : lanes_) total += lane->worker.staged_rounds();
  return total;
}

// The jobs are named locals rather than temporaries inside the co_await
// expression: GCC 12 destroys such temporaries' captures twice (the
// coroutine frame then double-frees the moved-from arguments).
Client::Lane& Client::pick() {
  return *lanes_[next_.fetch_add(1, std::memory_order_relaxed) % lanes_.size()];
}

// command, pipeline and eval are staged jobs (BlockingWorker::run_staged):
// the first stage appends, the second takes the reply, so whatever is queued
// on a lane when its worker wakes goes out in one write.
boost::asio::awaitable<Reply> Client::command(std::vector<std::string> args) {
  Lane& lane = pick();
  auto job = [&lane, args = std::move(args)] {
    const auto ticket = lane.connection.append(args);
    return [&lane, ticket] { return lane.connection.take(ticket); };
  };
  Reply reply = co_await lane.worker.run_staged(std::move(job));
  co_return reply;
}

boost::asio::awaitable<std::vector<Reply>> Client::pipeline(std::vector<std::vector<std::string>> commands) {
  Lane& lane = pick();
  auto job = [&lane, commands = std::move(commands)] {
    for (const auto& args : commands)
      if (args.empty()) throw std::invalid_argument("redis command without arguments");
    std::vector<Connection::Ticket> tickets;
    tickets.reserve(commands.size());
    for (const auto& args : commands) tickets.push_back(lane.connection.append(args));
    return [&lane, tickets = std::move(tickets)] { return lane.connection.take_all(tickets); };
  };
  std::vector<Reply> replies = co_await lane.worker.run_staged(std::move(job));
  co_return replies;
}

boost::asio::awaitable<Reply> Client::eval(Script script, std::vector<std::string> keys,
                                           std::vector<std::string> args) {
  Lane& lane = pick();
  auto call = std::make_shared<const EvalArgs>(EvalArgs{std::move(script), std::move(keys), std::move(args)});
  auto job = [&lane, call] {
    const auto ticket = lane.connection.append_eval(call->script, call->keys, call->args);
    return [&lane, call, ticket] {
      return lane.connection.take_eval(ticket, call->script, call->keys, call->args);
    };
  };
  Reply reply = co_await lane.worker.run_staged(std::move(job));
  co_return reply;
}

boost::asio::awaitable<void> Client::run(std::function<void(Connection&)> job) {
  Lane& lane = pick();
  auto wrapped = [&lane, job = std::move(job)] { job(lane.connection); };
  co_await lane.worker.run(std::move(wrapped));
}

}  // namespace rtmc::redis
