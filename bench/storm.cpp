#include "storm.hpp"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <csignal>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "chat/http_client.hpp"
#include "client_io.hpp"
#include "processes.hpp"
#include "wire.hpp"

namespace rtmc::bench {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto as_tuple_awaitable = asio::as_tuple(use_awaitable);

namespace {

Clock::time_point at_ns(std::int64_t ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

// Written only by its worker's thread, read by the calling thread while the
// workers run: single-writer relaxed atomics.
void raise_to(std::atomic<std::int64_t>& value, std::int64_t candidate) {
  if (candidate > value.load(std::memory_order_relaxed)) value.store(candidate, std::memory_order_relaxed);
}

void bump(std::atomic<std::uint64_t>& value) {
  value.fetch_add(1, std::memory_order_relaxed);
}

struct StormWorker {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  // Filled by a synchronous read and consumed before the next suspension.
  std::array<char, 64 * 1024> scratch{};
  std::atomic<std::uint64_t> joined{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> presence_joins{0};
  std::atomic<std::uint64_t> presence_leaves{0};
  std::atomic<std::uint64_t> server_errors{0};
  std::atomic<std::int64_t> last_joined_ns{0};
  std::atomic<std::int64_t> last_presence_ns{0};
  std::atomic<std::int64_t> join_latency_max_ns{0};
  std::atomic<std::int64_t> join_latency_sum_ns{0};
  std::thread thread;
};

struct StormRun {
  const StormConfig& config;
  std::vector<tcp::endpoint> endpoints;
  std::atomic<bool> stopping{false};
  std::mutex first_error_mutex;  // failure path only
  std::string first_error;

  void record_error(const std::string& text) {
    std::lock_guard lock(first_error_mutex);
    if (first_error.empty()) first_error = text;
  }
};

// Lives on its worker's thread; `close` is posted there.
struct StormClient {
  explicit StormClient(StormWorker& owner) : worker(owner), socket(owner.io), timer(owner.io) {}

  void close() {
    closing = true;
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
  }

  StormWorker& worker;
  tcp::socket socket;
  asio::steady_timer timer;  // start delay, handshake watchdog, then ping interval
  std::string tail;
  int heartbeat_s = 0;
  bool joined = false;
  bool timed_out = false;
  bool closing = false;
};

void count_line(StormClient& client, const GatewayLine& line, std::int64_t now_ns, StormRun& run) {
  StormWorker& worker = client.worker;
  if (line.kind == GatewayLine::Kind::presence) {
    bump(line.event == "leave" ? worker.presence_leaves : worker.presence_joins);
    raise_to(worker.last_presence_ns, now_ns);
  } else if (line.kind == GatewayLine::Kind::error) {
    bump(worker.server_errors);
    run.record_error("server error " + line.code + ": " + line.message);
  }
}

// Presence frames may come before `joined` (the room may list the connection
// first); they count like any other.
awaitable<void> await_kind(StormClient& client, GatewayLine::Kind wanted, const char* step, StormRun& run) {
  for (;;) {
    GatewayLine line = co_await read_gateway_line(client);
    if (line.kind == wanted) {
      if (wanted == GatewayLine::Kind::auth_ok) client.heartbeat_s = line.heartbeat_s;
      co_return;
    }
    if (line.kind == GatewayLine::Kind::error)
      throw std::runtime_error(std::string(step) + ": " + line.code + ": " + line.message);
    count_line(client, line, steady_ns(), run);
  }
}

awaitable<void> handshake(std::shared_ptr<StormClient> client, StormRun& run, tcp::endpoint endpoint,
                          const std::string& token) {
  const std::string auth = auth_frame(token);
  const std::string join = join_frame(run.config.room);
  co_await client->socket.async_connect(endpoint, use_awaitable);
  client->socket.set_option(tcp::no_delay(true));
  co_await asio::async_write(client->socket, asio::buffer(auth), use_awaitable);
  co_await await_kind(*client, GatewayLine::Kind::auth_ok, "auth", run);
  co_await asio::async_write(client->socket, asio::buffer(join), use_awaitable);
  co_await await_kind(*client, GatewayLine::Kind::joined, "join", run);
}

// After the join: wait for readability, then drain the socket synchronously
// into the worker's scratch buffer (no read buffer per connection).
awaitable<void> receive(std::shared_ptr<StormClient> client, StormRun& run) {
  StormWorker& worker = client->worker;
  client->socket.non_blocking(true);
  auto consume = [&](std::string_view data) {
    std::int64_t now = steady_ns();
    client->tail.append(data);
    std::string_view input = client->tail;
    std::size_t start = 0;
    for (auto newline = input.find('\n'); newline != std::string_view::npos;
         newline = input.find('\n', start)) {
      count_line(*client, parse_gateway_line(input.substr(start, newline - start)), now, run);
      start = newline + 1;
    }
    client->tail.erase(0, start);
    if (client->tail.size() > kMaxPendingInput) throw std::runtime_error("unterminated frame over 1 MiB");
  };
  try {
    consume({});  // what the handshake read past `joined`
    for (bool open = true; open;) {
      auto [wait_error] = co_await client->socket.async_wait(tcp::socket::wait_read, as_tuple_awaitable);
      if (wait_error) break;
      for (;;) {
        boost::system::error_code ec;
        std::size_t got = client->socket.read_some(asio::buffer(worker.scratch), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) break;
        if (ec) {
          open = false;
          break;
        }
        consume(std::string_view(worker.scratch.data(), got));
        if (got < worker.scratch.size()) break;
      }
    }
  } catch (const std::exception& e) {
    run.record_error(std::string("bench: ") + e.what());
  }
  if (!client->closing) {
    bump(worker.dropped);
    client->close();
  }
}

awaitable<void> storm_client(std::shared_ptr<StormClient> client, StormRun& run, tcp::endpoint endpoint,
                             std::string token, std::int64_t due_ns) {
  StormWorker& worker = client->worker;
  client->timer.expires_at(at_ns(due_ns));
  co_await client->timer.async_wait(as_tuple_awaitable);
  if (run.stopping.load(std::memory_order_relaxed)) {
    bump(worker.failed);
    co_return;
  }
  const std::int64_t began = steady_ns();
  client->timer.expires_after(
      std::chrono::milliseconds(static_cast<long>(run.config.connect_timeout_s * 1000)));
  client->timer.async_wait([client](boost::system::error_code ec) {
    if (ec || client->joined) return;
    client->timed_out = true;
    boost::system::error_code ignored;
    client->socket.close(ignored);
  });
  bool ok = false;
  try {
    co_await handshake(client, run, endpoint, token);
    ok = !client->timed_out;
  } catch (const boost::system::system_error& e) {
    run.record_error(client->timed_out ? "no join within --connect-timeout-s" : e.code().message());
  } catch (const std::exception& e) {
    run.record_error(e.what());
  }
  if (!ok) {
    bump(worker.failed);
    client->close();
    co_return;
  }
  client->joined = true;
  client->timer.cancel();
  const std::int64_t now = steady_ns();
  bump(worker.joined);
  raise_to(worker.last_joined_ns, now);
  raise_to(worker.join_latency_max_ns, now - began);
  worker.join_latency_sum_ns.fetch_add(now - began, std::memory_order_relaxed);
  asio::co_spawn(worker.io, keep_alive(client), asio::detached);
  co_await receive(client, run);
}

awaitable<std::string> sign_in_one(const chat::HttpUrl& api, const std::string& user,
                                   const std::string& password) {
  const auto timeout = std::chrono::seconds(30);
  // The api limits registrations per address (--register-rate); wait out its 429s.
  for (int attempt = 1;; ++attempt) {
    try {
      co_await chat::register_user(api, user, password, timeout);
      break;
    } catch (const chat::ApiError& e) {
      if (e.status() != 429 || attempt == 600) throw;
    }
    asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(500));
    co_await pause.async_wait(use_awaitable);
  }
  chat::LoginResult session = co_await chat::login(api, user, password, timeout);
  co_return session.token;
}

awaitable<void> sign_in_worker(const chat::HttpUrl& api, const std::vector<std::string>& users,
                               const std::string& password, std::vector<std::string>& tokens,
                               std::size_t& next, const std::function<void(const std::string&)>& progress) {
  while (next < users.size()) {
    std::size_t index = next++;
    tokens[index] = co_await sign_in_one(api, users[index], password);
    if (progress && (index + 1) % 250 == 0)
      progress(fmt::format("signed in {} of {} users", index + 1, users.size()));
  }
}

std::vector<tcp::endpoint> resolve(const std::vector<HostPort>& servers) {
  asio::io_context io;
  tcp::resolver resolver(io);
  std::vector<tcp::endpoint> endpoints;
  for (const auto& server : servers) {
    boost::system::error_code ec;
    auto results = resolver.resolve(server.host, std::to_string(server.port), ec);
    if (ec || results.empty())
      throw std::runtime_error("cannot resolve " + server.str() + ": " + ec.message());
    endpoints.push_back(results.begin()->endpoint());
  }
  return endpoints;
}

// Clients [begin, end) in this process. `settled` gets the tally while every
// connection is still open; then the connections are closed.
StormTally run_slice(const StormConfig& config, int begin, int end, std::int64_t start_ns,
                     const std::function<void(const StormTally&)>& settled) {
  auto progress = [&config](const std::string& text) {
    if (config.progress) config.progress(text);
  };
  StormRun run{config, resolve(config.servers), {}, {}, {}};
  const int clients = static_cast<int>(config.tokens.size());
  const int thread_count = std::max(1, config.threads);
  std::vector<std::unique_ptr<StormWorker>> workers;
  for (int i = 0; i < thread_count; ++i) workers.push_back(std::make_unique<StormWorker>());
  for (auto& worker : workers) worker->thread = std::thread([&io = worker->io] { io.run(); });
  // Destroyed before `workers`: their sockets belong to the workers' io_contexts.
  std::vector<std::shared_ptr<StormClient>> opened;
  opened.reserve(static_cast<std::size_t>(end - begin));
  for (int i = begin; i < end; ++i) {
    StormWorker& worker = *workers[static_cast<std::size_t>(i - begin) % workers.size()];
    auto client = std::make_shared<StormClient>(worker);
    opened.push_back(client);
    const tcp::endpoint& endpoint = run.endpoints[static_cast<std::size_t>(i) % run.endpoints.size()];
    asio::co_spawn(worker.io,
                   storm_client(client, run, endpoint, config.tokens[static_cast<std::size_t>(i)],
                                start_ns + start_offset_ns(i, clients, config.spread_s)),
                   asio::detached);
  }

  auto sum = [&](std::atomic<std::uint64_t> StormWorker::*field) {
    std::uint64_t total = 0;
    for (auto& worker : workers) total += (worker.get()->*field).load(std::memory_order_relaxed);
    return total;
  };
  const auto expected = static_cast<std::uint64_t>(end - begin);
  // Each client ends its handshake by its watchdog at the latest.
  const auto handshakes_end =
      at_ns(start_ns) + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(config.spread_s + config.connect_timeout_s + 2));
  while (sum(&StormWorker::joined) + sum(&StormWorker::failed) < expected && Clock::now() < handshakes_end)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  progress(fmt::format("{} joined, {} failed; waiting for presence to settle", sum(&StormWorker::joined),
                       sum(&StormWorker::failed)));

  const auto quiet =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config.quiet_s));
  const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(config.max_wait_s));
  std::uint64_t seen = sum(&StormWorker::presence_joins) + sum(&StormWorker::presence_leaves);
  auto last_change = Clock::now();
  while (Clock::now() < give_up && Clock::now() - last_change < quiet) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::uint64_t now_seen = sum(&StormWorker::presence_joins) + sum(&StormWorker::presence_leaves);
    if (now_seen != seen) {
      seen = now_seen;
      last_change = Clock::now();
    }
  }

  StormTally tally;
  tally.clients = expected;
  tally.start_ns = start_ns;
  tally.joined = sum(&StormWorker::joined);
  tally.failed = sum(&StormWorker::failed);
  tally.dropped = sum(&StormWorker::dropped);
  tally.presence_joins = sum(&StormWorker::presence_joins);
  tally.presence_leaves = sum(&StormWorker::presence_leaves);
  tally.server_errors = sum(&StormWorker::server_errors);
  for (auto& worker : workers) {
    tally.last_joined_ns = std::max(tally.last_joined_ns, worker->last_joined_ns.load());
    tally.last_presence_ns = std::max(tally.last_presence_ns, worker->last_presence_ns.load());
    tally.join_latency_max_ns = std::max(tally.join_latency_max_ns, worker->join_latency_max_ns.load());
    tally.join_latency_sum_ns += worker->join_latency_sum_ns.load();
  }
  // Clients still waiting for a handshake at the cut count as failed.
  tally.failed = expected - std::min(expected, tally.joined);
  {
    std::lock_guard lock(run.first_error_mutex);
    tally.first_error = run.first_error;
  }
  settled(tally);

  run.stopping = true;
  for (auto& client : opened) asio::post(client->worker.io, [client] { client->close(); });
  for (auto& worker : workers) worker->guard.reset();
  auto deadline = Clock::now() + std::chrono::seconds(5);
  for (auto& worker : workers) {
    while (!worker->io.stopped() && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    worker->io.stop();
    worker->thread.join();
  }
  return tally;
}

// In the child: run the slice, report the tally, wait for the word to close.
[[noreturn]] void child_main(const StormConfig& config, const Child& self, int up, int down,
                             std::int64_t start_ns) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  int code = 0;
  bool reported = false;
  auto report = [&](const StormTally& tally) {
    write_all(up, tally.to_line());
    reported = true;
    char go = 0;
    while (::read(down, &go, 1) < 0 && errno == EINTR) {
    }
  };
  try {
    StormConfig own = config;
    own.before_close = nullptr;
    own.progress = [&config, &self](const std::string& text) {
      if (config.progress)
        config.progress(fmt::format("[clients {}..{}] {}", self.range.first, self.range.second - 1, text));
    };
    run_slice(own, self.range.first, self.range.second, start_ns, report);
  } catch (const std::exception& e) {
    if (!reported) {
      StormTally failed;
      failed.clients = failed.failed = static_cast<std::uint64_t>(self.range.second - self.range.first);
      failed.start_ns = start_ns;
      failed.first_error = e.what();
      write_all(up, failed.to_line());
    }
    code = 1;
  }
  std::fflush(nullptr);
  _exit(code);
}

}  // namespace

std::vector<std::string> sign_in_users(const std::string& api_url, const std::vector<std::string>& users,
                                       const std::string& password, int concurrency,
                                       const std::function<void(const std::string&)>& progress) {
  chat::HttpUrl api = chat::HttpUrl::parse(api_url);
  std::vector<std::string> tokens(users.size());
  std::size_t next = 0;
  std::exception_ptr failure;
  asio::io_context io;
  for (int i = 0; i < std::max(1, concurrency); ++i)
    asio::co_spawn(io, sign_in_worker(api, users, password, tokens, next, progress),
                   [&](std::exception_ptr error) {
                     if (error && !failure) {
                       failure = error;
                       next = users.size();  // the other workers stop after their current user
                     }
                   });
  io.run();
  if (failure) std::rethrow_exception(failure);
  return tokens;
}

StormTally run_storm(const StormConfig& config) {
  const int clients = static_cast<int>(config.tokens.size());
  if (config.servers.empty()) throw std::runtime_error("no gateway address");
  auto ranges = split_clients(clients, config.per_process);
  if (ranges.size() <= 1) {
    std::int64_t start_ns = steady_ns() + 200'000'000;
    return run_slice(config, 0, clients, start_ns, [&](const StormTally&) {
      if (config.before_close) config.before_close();
    });
  }

  // Children get the same start, far enough ahead for all of them to be ready.
  std::int64_t start_ns = steady_ns() + 1'000'000'000;
  std::vector<Child> children;
  for (const auto& range : ranges) {
    int up[2];
    int down[2];
    if (pipe(up) != 0 || pipe(down) != 0) throw std::runtime_error("pipe failed");
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      // Without its siblings' pipe ends, a child sees EOF when the parent goes.
      for (const auto& sibling : children) {
        ::close(sibling.from_child);
        ::close(sibling.to_child);
      }
      ::close(up[0]);
      ::close(down[1]);
      Child self;
      self.range = range;
      child_main(config, self, up[1], down[0], start_ns);
    }
    ::close(up[1]);
    ::close(down[0]);
    children.push_back(Child{pid, up[0], down[1], range});
  }

  StormTally total;
  for (auto& child : children) {
    std::string line = read_line_from(child.from_child);
    auto tally = StormTally::from_line(line);
    if (!tally) {
      tally = StormTally{};
      tally->clients = tally->failed = static_cast<std::uint64_t>(child.range.second - child.range.first);
      tally->start_ns = start_ns;
      tally->first_error = "bench child process " + std::to_string(child.pid) + " reported nothing";
    }
    total.merge(*tally);
  }
  if (config.before_close) config.before_close();
  for (auto& child : children) {
    write_all(child.to_child, "g");
    ::close(child.to_child);
  }
  for (auto& child : children) {
    int status = 0;
    while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(child.from_child);
  }
  return total;
}

}  // namespace rtmc::bench
