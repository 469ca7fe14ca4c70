#include "conns.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
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
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <semaphore>
#include <stdexcept>
#include <thread>

#include "auth/auth.hpp"
#include "client_io.hpp"
#include "common/keys.hpp"
#include "common/names.hpp"
#include "processes.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "storm.hpp"
#include "wire.hpp"

namespace rtmc::bench {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto as_tuple_awaitable = asio::as_tuple(use_awaitable);
constexpr int kMaxAuthAttempts = 20;

std::string stack_file(const std::string& flag_value, const std::string& stack_dir, const char* relative) {
  return flag_value.empty() ? stack_dir + "/" + relative : flag_value;
}

std::vector<std::string> user_names(const std::string& prefix, int count) {
  std::vector<std::string> users;
  users.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) users.push_back(prefix + std::to_string(i));
  if (!users.empty() && !valid_user_name(users.back()))
    throw std::invalid_argument("'" + users.back() + "' is not a valid user name (--user-prefix)");
  return users;
}

// What the api's login leaves behind, without the api: a signed token and
// its session key, pipelined to Redis in chunks.
std::vector<std::string> mint_tokens(const std::vector<std::string>& users, const ConnsOptions& options,
                                     const ConnsContext& context) {
  const auto lifetime = std::chrono::seconds(static_cast<long>(options.token_ttl_s));
  auth::TokenService tokens(
      read_secret_file(stack_file(options.jwt_secret_file, context.stack_dir, "jwt-secret")), lifetime);
  redis::Connection redis(RedisConfig::parse(
      read_secret_file(stack_file(options.redis_url_file, context.stack_dir, "secrets/redis.url"))));
  const std::string ttl_ms = std::to_string(std::chrono::milliseconds(lifetime).count());
  std::vector<std::string> out;
  out.reserve(users.size());
  std::vector<std::vector<std::string>> commands;
  auto send = [&] {
    for (const auto& reply : redis.pipeline(commands))
      if (reply.is_error()) throw std::runtime_error("redis refused a session: " + reply.str);
    commands.clear();
  };
  for (const auto& user : users) {
    auth::IssuedToken issued = tokens.issue(user);
    commands.push_back({"SET", keys::session(issued.claims.jti), user, "PX", ttl_ms});
    out.push_back(std::move(issued.token));
    if (commands.size() == 1000) send();
  }
  if (!commands.empty()) send();
  return out;
}

// One io thread and its clients' counters.
struct ConnsWorker {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::array<char, 16 * 1024> scratch{};
  std::atomic<std::uint64_t> authenticated{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::int64_t> last_auth_ns{0};
  std::atomic<std::int64_t> handshake_max_ns{0};
  std::atomic<std::int64_t> handshake_sum_ns{0};
  std::thread thread;
};

struct IdleClient {
  explicit IdleClient(ConnsWorker& owner) : worker(owner), socket(owner.io), timer(owner.io) {}
  void close() {
    closing = true;
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
  }
  ConnsWorker& worker;
  tcp::socket socket;
  asio::steady_timer timer;  // handshake watchdog, then the ping interval
  std::string tail;
  int heartbeat_s = 0;
  bool established = false;
  bool closing = false;
};

void raise_to(std::atomic<std::int64_t>& value, std::int64_t candidate) {
  std::int64_t seen = value.load(std::memory_order_relaxed);
  while (candidate > seen && !value.compare_exchange_weak(seen, candidate, std::memory_order_relaxed)) {
  }
}

awaitable<void> handshake(std::shared_ptr<IdleClient> client, tcp::endpoint endpoint, std::string source,
                          const std::string& token) {
  auto& socket = client->socket;
  socket.open(tcp::v4());
  if (!source.empty()) {
    // The port is chosen at connect, per destination: one address then serves
    // far more than the ~28k ephemeral ports a bind(port 0) could.
    int on = 1;
    ::setsockopt(socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
    socket.bind(tcp::endpoint(asio::ip::make_address_v4(source), 0));
  }
  co_await socket.async_connect(endpoint, use_awaitable);
  const std::string auth = auth_frame(token);
  co_await asio::async_write(socket, asio::buffer(auth), use_awaitable);
  asio::steady_timer pause(socket.get_executor());
  for (int attempt = 1;; ++attempt) {
    GatewayLine line = co_await read_gateway_line(*client);
    if (line.kind == GatewayLine::Kind::auth_ok) {
      client->heartbeat_s = line.heartbeat_s;
      co_return;
    }
    if (line.kind != GatewayLine::Kind::error) continue;
    // `unavailable` (not fatal: the connection stays open) asks for a retry,
    // e.g. when the gateway's Redis queue is full; a real client retries too.
    if (line.code != "unavailable" || attempt >= kMaxAuthAttempts)
      throw std::runtime_error("auth refused: " + line.code + ": " + line.message);
    client->worker.retries.fetch_add(1, std::memory_order_relaxed);
    pause.expires_after(std::chrono::milliseconds(50 * attempt));
    co_await pause.async_wait(use_awaitable);
    co_await asio::async_write(socket, asio::buffer(auth), use_awaitable);
  }
}

// Reads (and drops) whatever comes until the connection ends.
awaitable<void> idle_read(std::shared_ptr<IdleClient> client) {
  client->tail.clear();
  client->tail.shrink_to_fit();
  for (;;) {
    auto [ec] = co_await client->socket.async_wait(tcp::socket::wait_read, as_tuple_awaitable);
    if (ec) break;
    boost::system::error_code read_error;
    client->socket.read_some(asio::buffer(client->worker.scratch), read_error);
    if (read_error && read_error != asio::error::would_block && read_error != asio::error::try_again) break;
  }
  if (!client->closing) {
    client->worker.dropped.fetch_add(1, std::memory_order_relaxed);
    client->close();
  }
}

// Opens clients [begin, end) from this process; `settled` is called once every
// handshake ended (the tally so far), and the clients close when it returns.
ConnsTally run_slice(const ConnsOptions&, const ConnsContext& context, const std::vector<std::string>& tokens,
                     int begin, int end, const std::string& source, std::int64_t start_ns,
                     const std::function<void(const ConnsTally&)>& settled) {
  auto progress = [&](const std::string& text) {
    if (context.progress) context.progress(text);
  };
  std::vector<tcp::endpoint> endpoints;
  {
    asio::io_context io;
    tcp::resolver resolver(io);
    for (const auto& server : context.gateways)
      endpoints.push_back(resolver.resolve(server.host, std::to_string(server.port)).begin()->endpoint());
  }
  const int thread_count = std::max(1, context.threads);
  std::vector<std::unique_ptr<ConnsWorker>> workers;
  for (int i = 0; i < thread_count; ++i) workers.push_back(std::make_unique<ConnsWorker>());
  for (auto& worker : workers) worker->thread = std::thread([&io = worker->io] { io.run(); });

  std::mutex error_mutex;
  std::string first_error;
  std::vector<std::shared_ptr<IdleClient>> clients;
  clients.reserve(static_cast<std::size_t>(end - begin));
  std::counting_semaphore<> slots(std::max(1, context.ramp_in_flight));
  std::latch done(end - begin);
  std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(start_ns)));
  const auto timeout = std::chrono::milliseconds(static_cast<long>(context.connect_timeout_s * 1000));
  for (int i = begin; i < end; ++i) {
    ConnsWorker& worker = *workers[static_cast<std::size_t>(i) % workers.size()];
    auto client = std::make_shared<IdleClient>(worker);
    clients.push_back(client);
    slots.acquire();
    const std::int64_t opened_ns = steady_ns();
    client->timer.expires_after(timeout);
    client->timer.async_wait([client](boost::system::error_code ec) {
      if (ec || client->established) return;
      boost::system::error_code ignored;
      client->socket.close(ignored);
    });
    asio::co_spawn(worker.io,
                   handshake(client, endpoints[static_cast<std::size_t>(i) % endpoints.size()], source,
                             tokens[static_cast<std::size_t>(i)]),
                   [client, opened_ns, &slots, &done, &error_mutex, &first_error](std::exception_ptr error) {
                     ConnsWorker& owner = client->worker;
                     if (error) {
                       owner.failed.fetch_add(1, std::memory_order_relaxed);
                       std::string reason;
                       try {
                         std::rethrow_exception(error);
                       } catch (const boost::system::system_error& e) {
                         reason = e.code().message();
                       } catch (const std::exception& e) {
                         reason = e.what();
                       }
                       {
                         std::lock_guard lock(error_mutex);
                         if (first_error.empty()) first_error = reason;
                       }
                       client->close();
                     } else {
                       client->established = true;
                       client->timer.cancel();
                       const std::int64_t now = steady_ns();
                       owner.authenticated.fetch_add(1, std::memory_order_relaxed);
                       raise_to(owner.last_auth_ns, now);
                       raise_to(owner.handshake_max_ns, now - opened_ns);
                       owner.handshake_sum_ns.fetch_add(now - opened_ns, std::memory_order_relaxed);
                       boost::system::error_code ignored;
                       client->socket.non_blocking(true, ignored);
                       asio::co_spawn(owner.io, idle_read(client), asio::detached);
                       asio::co_spawn(owner.io, keep_alive(client), asio::detached);
                     }
                     slots.release();
                     done.count_down();
                   });
  }
  done.wait();

  ConnsTally tally;
  tally.clients = static_cast<std::uint64_t>(end - begin);
  tally.start_ns = start_ns;
  for (auto& worker : workers) {
    tally.authenticated += worker->authenticated.load();
    tally.failed += worker->failed.load();
    tally.retries += worker->retries.load();
    tally.last_auth_ns = std::max(tally.last_auth_ns, worker->last_auth_ns.load());
    tally.handshake_max_ns = std::max(tally.handshake_max_ns, worker->handshake_max_ns.load());
    tally.handshake_sum_ns += worker->handshake_sum_ns.load();
  }
  {
    std::lock_guard lock(error_mutex);
    tally.first_error = first_error;
  }
  progress(fmt::format("{} authenticated, {} failed in {:.2f} s", tally.authenticated, tally.failed,
                       tally.storm_s()));
  settled(tally);
  for (auto& worker : workers) tally.dropped += worker->dropped.load();

  for (auto& client : clients) asio::post(client->worker.io, [client] { client->close(); });
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

// Runs every slice (forking above per_process) and calls `settled` with the
// merged tally while every connection is still open.
ConnsTally run_all(const ConnsOptions& options, const ConnsContext& context,
                   const std::vector<std::string>& tokens, const std::vector<std::string>& sources,
                   const std::function<void(const ConnsTally&)>& settled) {
  auto ranges = split_clients(static_cast<int>(tokens.size()), options.per_process);
  auto source_of = [&](std::size_t process) {
    return sources.empty() ? std::string() : sources[process % sources.size()];
  };
  if (ranges.size() <= 1) {
    std::int64_t start_ns = steady_ns() + 100'000'000;
    return run_slice(options, context, tokens, 0, static_cast<int>(tokens.size()), source_of(0), start_ns,
                     settled);
  }
  // --ramp-in-flight is for the whole run: the gateways see the sum.
  ConnsContext shared = context;
  shared.ramp_in_flight = std::max(1, context.ramp_in_flight / static_cast<int>(ranges.size()));
  // The same start for every child, far enough ahead for all to be ready.
  std::int64_t start_ns = steady_ns() + 1'000'000'000;
  std::vector<Child> children;
  for (std::size_t p = 0; p < ranges.size(); ++p) {
    int up[2];
    int down[2];
    if (pipe(up) != 0 || pipe(down) != 0) throw std::runtime_error("pipe failed");
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      for (const auto& sibling : children) {
        ::close(sibling.from_child);
        ::close(sibling.to_child);
      }
      ::close(up[0]);
      ::close(down[1]);
      int code = 0;
      bool reported = false;
      const auto range = ranges[p];
      try {
        ConnsContext own = shared;
        own.progress = [&context, range, source = source_of(p)](const std::string& text) {
          if (context.progress)
            context.progress(fmt::format("[clients {}..{}{}] {}", range.first, range.second - 1,
                                         source.empty() ? "" : " from " + source, text));
        };
        run_slice(options, own, tokens, range.first, range.second, source_of(p), start_ns,
                  [&](const ConnsTally& tally) {
                    write_all(up[1], tally.to_line());
                    reported = true;
                    char go = 0;
                    while (::read(down[0], &go, 1) < 0 && errno == EINTR) {
                    }
                  });
      } catch (const std::exception& e) {
        if (!reported) {
          ConnsTally failed;
          failed.clients = failed.failed = static_cast<std::uint64_t>(range.second - range.first);
          failed.start_ns = start_ns;
          failed.first_error = e.what();
          write_all(up[1], failed.to_line());
        }
        code = 1;
      }
      std::fflush(nullptr);
      _exit(code);
    }
    ::close(up[1]);
    ::close(down[0]);
    children.push_back(Child{pid, up[0], down[1], ranges[p]});
  }
  ConnsTally total;
  for (auto& child : children) {
    auto tally = ConnsTally::from_line(read_line_from(child.from_child));
    if (!tally) {
      tally = ConnsTally{};
      tally->clients = tally->failed = static_cast<std::uint64_t>(child.range.second - child.range.first);
      tally->start_ns = start_ns;
      tally->first_error = "bench child process " + std::to_string(child.pid) + " reported nothing";
    }
    total.merge(*tally);
  }
  settled(total);
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

std::optional<ProcessSample> sample_pids(const std::vector<int>& pids) {
  if (pids.empty()) return std::nullopt;
  ProcessSample total;
  for (int pid : pids) {
    auto sample = sample_process(pid);
    if (!sample) return std::nullopt;
    total.rss_kib += sample->rss_kib;
    total.peak_rss_kib += sample->peak_rss_kib;
    total.cpu_s += sample->cpu_s;
  }
  return total;
}

}  // namespace

void add_conns_options(CLI::App& app, ConnsOptions& options) {
  app.add_option("--connections", options.connections,
                 "instead of the fan-out load: N idle clients (users <--user-prefix>0..N-1, tokens minted "
                 "here) connect and authenticate as fast as --ramp-in-flight allows; reports the storm "
                 "time and the gateways' (--gateway-pid) RSS before/after and per connection")
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--seed-users", options.seed_users,
                 "create users <--user-prefix>0..N-1 in PostgreSQL (one Argon2id hash of "
                 "RTMC_BENCH_STORM_PASSWORD, default rtmc-storm-bench, for all) and exit")
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--user-prefix", options.user_prefix, "--connections/--seed-users: user name prefix")
      ->capture_default_str();
  app.add_option("--conn-per-process", options.per_process,
                 "--connections: clients per process; more are split over forked processes")
      ->check(CLI::Range(1, 19500))
      ->capture_default_str();
  app.add_option("--source-addrs", options.source_addresses,
                 "--connections: loopback source addresses, one per process in turn "
                 "(127.0.0.2-127.0.0.7 or a,b,c; default: none, the kernel picks)");
  app.add_option("--settle-s", options.settle_s, "--connections: wait after the storm before sampling RSS")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--hold-s", options.hold_s,
                 "--connections: keep the connections open this long after sampling")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--token-ttl-s", options.token_ttl_s,
                 "--connections: lifetime of the minted tokens/sessions")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--jwt-secret-file", options.jwt_secret_file, "JWT secret (default STACK_DIR/jwt-secret)");
  app.add_option("--redis-url-file", options.redis_url_file,
                 "Redis URL for the sessions (default STACK_DIR/secrets/redis.url)");
  app.add_option("--pg-file", options.pg_file, "PostgreSQL conninfo (default STACK_DIR/secrets/pg.conninfo)");
}

int run_seed_command(const ConnsOptions& options, const ConnsContext& context) {
  auto progress = [&](const std::string& text) {
    if (context.progress) context.progress(text);
  };
  user_names(options.user_prefix, options.seed_users);  // checks the names
  const char* from_env = std::getenv("RTMC_BENCH_STORM_PASSWORD");
  const std::string password = from_env != nullptr ? from_env : "rtmc-storm-bench";
  const auto started = Clock::now();
  const std::string hash = auth::hash_password(password);
  pg::Connection pg(
      PgConfig{read_secret_file(stack_file(options.pg_file, context.stack_dir, "secrets/pg.conninfo"))});
  // One statement per 10,000 users; a name taken in any case is left alone.
  long inserted = 0;
  for (int from = 0; from < options.seed_users; from += 10'000) {
    const int to = std::min(options.seed_users, from + 10'000) - 1;
    auto result = pg.exec(
        "INSERT INTO users (name, password_hash) SELECT $1 || g::text, $2 FROM generate_series($3::int, "
        "$4::int) AS g ON CONFLICT DO NOTHING",
        {options.user_prefix, hash, std::to_string(from), std::to_string(to)});
    inserted += result.affected;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  progress(fmt::format("seeded users {}0..{}{}: {} new, {} existed, in {:.2f} s", options.user_prefix,
                       options.user_prefix, options.seed_users - 1, inserted, options.seed_users - inserted,
                       seconds));
  std::printf("seeded %d users (%ld new) in %.2f s\n", options.seed_users, inserted, seconds);
  return 0;
}

int run_connections_command(const ConnsOptions& options, const ConnsContext& context) {
  auto progress = [&](const std::string& text) {
    if (context.progress) context.progress(text);
  };
  const std::vector<std::string> sources = parse_source_addresses(options.source_addresses);
  const auto users = user_names(options.user_prefix, options.connections);
  auto minting = Clock::now();
  progress(fmt::format("minting {} tokens and sessions ({}0..{}{})", users.size(), options.user_prefix,
                       options.user_prefix, users.size() - 1));
  const std::vector<std::string> tokens = mint_tokens(users, options, context);
  progress(fmt::format("minted in {:.2f} s", std::chrono::duration<double>(Clock::now() - minting).count()));

  const std::optional<ProcessSample> before = sample_pids(context.gateway_pids);
  std::optional<ProcessSample> after;
  const auto processes = split_clients(options.connections, options.per_process).size();
  progress(
      fmt::format("storm: {} clients in {} process(es), {} handshakes in flight in all, to {} gateway "
                  "address(es)",
                  options.connections, processes, context.ramp_in_flight, context.gateways.size()));
  ConnsTally tally = run_all(options, context, tokens, sources, [&](const ConnsTally& settled) {
    progress(fmt::format("all handshakes ended ({} authenticated); sampling in {:.1f} s",
                         settled.authenticated, options.settle_s));
    std::this_thread::sleep_for(std::chrono::duration<double>(options.settle_s));
    after = sample_pids(context.gateway_pids);
    if (options.hold_s > 0) {
      progress(fmt::format("holding the connections {:.1f} s", options.hold_s));
      std::this_thread::sleep_for(std::chrono::duration<double>(options.hold_s));
    }
  });

  std::string table;
  table += fmt::format("connections: {} idle authenticated clients, {} process(es), {} source address(es)\n",
                       tally.clients, processes, sources.empty() ? 1 : std::min(sources.size(), processes));
  table += fmt::format("  authenticated / failed / dropped   {} / {} / {}\n", tally.authenticated,
                       tally.failed, tally.dropped);
  table += fmt::format("  auth retries after `unavailable`   {}\n", tally.retries);
  table +=
      fmt::format("  connect+auth storm                 {:.3f} s ({:.0f} connections/s)\n", tally.storm_s(),
                  tally.storm_s() > 0 ? static_cast<double>(tally.authenticated) / tally.storm_s() : 0.0);
  table += fmt::format("  handshake mean / max               {:.1f} / {:.1f} ms (connect -> auth_ok)\n",
                       tally.authenticated > 0 ? static_cast<double>(tally.handshake_sum_ns) / 1e6 /
                                                     static_cast<double>(tally.authenticated)
                                               : 0.0,
                       static_cast<double>(tally.handshake_max_ns) / 1e6);
  if (before && after) {
    table +=
        fmt::format("  gateway RSS before / after         {:.1f} / {:.1f} MiB (peak {:.1f} MiB)\n",
                    static_cast<double>(before->rss_kib) / 1024, static_cast<double>(after->rss_kib) / 1024,
                    static_cast<double>(after->peak_rss_kib) / 1024);
    table += fmt::format("  gateway RSS per connection         {:.2f} KiB\n",
                         kib_per_connection(before->rss_kib, after->rss_kib, tally.authenticated));
    table += fmt::format("  gateway CPU s (storm + settle)     {:.2f}\n", after->cpu_s - before->cpu_s);
  }
  if (!tally.first_error.empty()) table += "  first error: " + tally.first_error + "\n";
  std::fputs(table.c_str(), stdout);
  if (!context.json_path.empty()) {
    std::ofstream json(context.json_path);
    json << fmt::format(
        R"({{"mode":"connections","clients":{},"processes":{},"authenticated":{},"failed":{},"dropped":{},"retries":{},)"
        R"("storm_s":{:.6f},"handshake_max_ms":{:.3f},"rss_before_kib":{},"rss_after_kib":{},"kib_per_connection":{}}})"
        "\n",
        tally.clients, processes, tally.authenticated, tally.failed, tally.dropped, tally.retries,
        tally.storm_s(), static_cast<double>(tally.handshake_max_ns) / 1e6,
        before ? std::to_string(before->rss_kib) : "null", after ? std::to_string(after->rss_kib) : "null",
        before && after
            ? fmt::format("{:.3f}", kib_per_connection(before->rss_kib, after->rss_kib, tally.authenticated))
            : std::string("null"));
  }
  return tally.authenticated == tally.clients ? 0 : 1;
}

}  // namespace rtmc::bench
