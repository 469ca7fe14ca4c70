#include "rooms.hpp"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <future>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "client_io.hpp"
#include "processes.hpp"
#include "stats.hpp"
#include "storm.hpp"
#include "wire.hpp"

namespace rtmc::bench {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

std::string make_tag() {
  std::random_device random;
  return fmt::format("{:08x}", random());
}

std::string room_name(const std::string& tag, int room) {
  return fmt::format("rooms-{}-{}", tag, room);
}

// GET /metrics, blocking; the value of `series` ("name" or "name{labels}").
std::optional<double> read_metric(const HostPort& http, const std::string& series) {
  try {
    asio::io_context io;
    tcp::socket socket(io);
    tcp::resolver resolver(io);
    asio::connect(socket, resolver.resolve(http.host, std::to_string(http.port)));
    const std::string request =
        "GET /metrics HTTP/1.1\r\nHost: " + http.str() + "\r\nConnection: close\r\n\r\n";
    asio::write(socket, asio::buffer(request));
    std::string body;
    boost::system::error_code ec;
    std::array<char, 16384> chunk;
    for (;;) {
      auto got = socket.read_some(asio::buffer(chunk), ec);
      body.append(chunk.data(), got);
      if (ec) break;
    }
    auto at = body.find("\n" + series + " ");
    if (at == std::string::npos) return std::nullopt;
    return std::stod(body.substr(at + series.size() + 2));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

struct Connection {
  explicit Connection(asio::io_context& io) : socket(io), timer(io) {}
  tcp::socket socket;
  asio::steady_timer timer;
  std::string tail;
  int heartbeat_s = 0;
  bool closing = false;
  bool ready = false;
  int gateway = 0;
  std::uint32_t id = 0;  // publisher id in body stamps
  std::uint64_t counter = 0;
  std::vector<int> rooms;
  std::string outbox;
  bool writing = false;
  Clock::time_point last_write = Clock::now();
};

struct Thread {
  asio::io_context io{1};
  std::vector<std::shared_ptr<Connection>> connections;
  LatencyHistogram latency;
  std::uint64_t errors = 0;
  std::string first_error;
};

struct Shared {
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<int> ready{0};
  std::atomic<int> failed{0};
  std::atomic<bool> publishing{false};
  std::atomic<bool> stopping{false};
  std::vector<std::atomic<std::uint64_t>> per_gateway;
  explicit Shared(std::size_t gateways) : per_gateway(gateways) {}
};

// One gathered write in flight per connection; sends and pings queue here.
asio::awaitable<void> flush(std::shared_ptr<Connection> conn) {
  while (!conn->outbox.empty() && !conn->closing) {
    std::string out = std::move(conn->outbox);
    conn->outbox.clear();
    conn->last_write = Clock::now();
    auto [ec, _] = co_await asio::async_write(conn->socket, asio::buffer(out), nothrow);
    if (ec) break;
  }
  conn->writing = false;
}

void queue_write(const std::shared_ptr<Connection>& conn, asio::io_context& io) {
  if (conn->writing) return;
  conn->writing = true;
  asio::co_spawn(io, flush(conn), asio::detached);
}

asio::awaitable<void> handshake(std::shared_ptr<Connection> conn, tcp::endpoint endpoint, std::string token,
                                const RoomsConfig& config) {
  co_await conn->socket.async_connect(endpoint, asio::use_awaitable);
  conn->socket.set_option(tcp::no_delay(true));
  std::string hello = auth_frame(token);
  for (int room : conn->rooms) hello += join_frame(room_name(config.run_tag, room));
  co_await asio::async_write(conn->socket, asio::buffer(hello), asio::use_awaitable);
  std::size_t joined = 0;
  while (joined < conn->rooms.size()) {
    GatewayLine line = co_await read_gateway_line(*conn);
    if (line.kind == GatewayLine::Kind::auth_ok) conn->heartbeat_s = line.heartbeat_s;
    if (line.kind == GatewayLine::Kind::joined) ++joined;
    if (line.kind == GatewayLine::Kind::error) throw std::runtime_error(line.code + ": " + line.message);
  }
}

asio::awaitable<void> read_loop(std::shared_ptr<Connection> conn, Thread& thread, Shared& shared) {
  std::array<char, 16384> chunk;
  for (;;) {
    std::size_t start = 0;
    for (auto newline = conn->tail.find('\n'); newline != std::string::npos;
         newline = conn->tail.find('\n', start)) {
      GatewayLine line = parse_gateway_line(std::string_view(conn->tail).substr(start, newline - start));
      start = newline + 1;
      switch (line.kind) {
        case GatewayLine::Kind::message:
          shared.delivered.fetch_add(1, std::memory_order_relaxed);
          shared.per_gateway[conn->gateway].fetch_add(1, std::memory_order_relaxed);
          if (line.stamp)
            thread.latency.record(static_cast<std::uint64_t>(steady_ns() - line.stamp->send_ns));
          break;
        case GatewayLine::Kind::ack: shared.acked.fetch_add(1, std::memory_order_relaxed); break;
        case GatewayLine::Kind::error:
          if (thread.errors++ == 0) thread.first_error = line.code + ": " + line.message;
          break;
        default: break;
      }
    }
    conn->tail.erase(0, start);
    auto [ec, got] = co_await conn->socket.async_read_some(asio::buffer(chunk), nothrow);
    if (ec) co_return;
    conn->tail.append(chunk.data(), got);
  }
}

// A ping for every ready connection that has not written for 0.4 heartbeat,
// so the gateway's idle cut (2.5 x heartbeat) spares connections that only
// listen, during the ramp as well.
asio::awaitable<void> ping_loop(Thread& thread, Shared& shared) {
  asio::steady_timer timer(thread.io);
  while (!shared.stopping) {
    timer.expires_after(std::chrono::seconds(1));
    auto [ec] = co_await timer.async_wait(nothrow);
    if (ec) co_return;
    for (auto& conn : thread.connections) {
      if (!conn->ready || conn->closing || conn->heartbeat_s <= 0) continue;
      if (Clock::now() - conn->last_write < std::chrono::milliseconds(conn->heartbeat_s * 400)) continue;
      conn->outbox += ping_frame();
      queue_write(conn, thread.io);
    }
  }
}

// This thread's share of the rate: a random ready connection sends to a
// random room of its own.
asio::awaitable<void> publish_loop(Thread& thread, Shared& shared, const RoomsConfig& config, double rate,
                                   std::uint32_t seed) {
  std::mt19937 random(seed);
  asio::steady_timer timer(thread.io);
  std::vector<std::shared_ptr<Connection>> ready;
  for (auto& conn : thread.connections)
    if (conn->ready) ready.push_back(conn);
  if (ready.empty()) co_return;
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config.duration_s));
  std::uint64_t sent = 0;
  while (Clock::now() < end && !shared.stopping) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const auto due = static_cast<std::uint64_t>(elapsed * rate);
    for (; sent < due; ++sent) {
      auto& conn = ready[random() % ready.size()];
      const int room = conn->rooms[random() % conn->rooms.size()];
      BodyStamp stamp{conn->id, ++conn->counter, steady_ns()};
      append_send_frame(conn->outbox, room_name(config.run_tag, room), config.run_tag, stamp,
                        config.body_bytes);
      queue_write(conn, thread.io);
      shared.sent.fetch_add(1, std::memory_order_relaxed);
    }
    timer.expires_after(std::chrono::milliseconds(1));
    co_await timer.async_wait(nothrow);
  }
}

struct GatewayFigures {
  double frames = 0;
  double bound = 0;
  double binds = 0;
};

GatewayFigures gateway_figures(const HostPort& http) {
  GatewayFigures figures;
  figures.frames = read_metric(http, R"(rtmc_gateway_fanout_frames_total{kind="message"})").value_or(-1);
  figures.bound = read_metric(http, "rtmc_gateway_fanout_rooms_bound").value_or(-1);
  figures.binds = read_metric(http, "rtmc_gateway_fanout_room_binds_total").value_or(-1);
  return figures;
}

}  // namespace

int run_rooms(const RoomsConfig& config) {
  const int gateways = static_cast<int>(config.gateways.size());
  if (gateways == 0) throw std::invalid_argument("rooms: no gateway");
  if (config.gateway_http.size() != config.gateways.size())
    throw std::invalid_argument("rooms: give one --gateway-http address per gateway");
  const int members = gateways * config.connections_per_gateway * config.rooms_per_connection / config.rooms;
  auto say = [&](const std::string& text) {
    if (config.progress) config.progress(text);
  };

  Shared shared(config.gateways.size());
  std::vector<std::unique_ptr<Thread>> threads;
  for (int i = 0; i < config.threads; ++i) threads.push_back(std::make_unique<Thread>());
  std::vector<tcp::endpoint> endpoints;
  for (const auto& gateway : config.gateways) {
    asio::io_context io;
    tcp::resolver resolver(io);
    endpoints.push_back(*resolver.resolve(gateway.host, std::to_string(gateway.port)).begin());
  }
  std::uint32_t next_id = 0;
  for (int g = 0; g < gateways; ++g)
    for (int c = 0; c < config.connections_per_gateway; ++c) {
      auto& thread = *threads[next_id % threads.size()];
      auto conn = std::make_shared<Connection>(thread.io);
      conn->gateway = g;
      conn->id = next_id++;
      conn->rooms = rooms_of_connection(g, c, gateways, config.connections_per_gateway,
                                        config.rooms_per_connection, config.rooms, config.spread);
      thread.connections.push_back(conn);
    }
  std::vector<GatewayFigures> before;
  for (const auto& http : config.gateway_http) before.push_back(gateway_figures(http));

  // Ramp: per thread, ramp_in_flight / threads handshakes at once.
  say(fmt::format("connecting {} connections to {} gateways, {} rooms each", next_id, gateways,
                  config.rooms_per_connection));
  const auto ramp_start = Clock::now();
  const int per_thread_in_flight = std::max(1, config.ramp_in_flight / config.threads);
  for (auto& thread_ptr : threads) {
    Thread& thread = *thread_ptr;
    auto next = std::make_shared<std::size_t>(0);
    for (int worker = 0; worker < per_thread_in_flight; ++worker)
      asio::co_spawn(
          thread.io,
          [&thread, &shared, &config, &endpoints, next]() -> asio::awaitable<void> {
            while (*next < thread.connections.size()) {
              auto conn = thread.connections[(*next)++];
              try {
                co_await handshake(conn, endpoints[conn->gateway], config.token, config);
                conn->ready = true;
                conn->last_write = Clock::now();
                shared.ready.fetch_add(1);
                asio::co_spawn(thread.io, read_loop(conn, thread, shared), asio::detached);
              } catch (const std::exception& error) {
                if (shared.failed.fetch_add(1) == 0 && thread.first_error.empty())
                  thread.first_error = std::string("connect: ") + error.what();
              }
            }
          },
          asio::detached);
  }
  for (auto& thread : threads) asio::co_spawn(thread->io, ping_loop(*thread, shared), asio::detached);
  std::vector<std::thread> runners;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& thread : threads) {
    guards.push_back(asio::make_work_guard(thread->io));
    runners.emplace_back([&io = thread->io] { io.run(); });
  }
  const int total = static_cast<int>(next_id);
  while (shared.ready + shared.failed < total) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double ramp_s = std::chrono::duration<double>(Clock::now() - ramp_start).count();
  say(fmt::format("{} connected, {} failed in {:.1f} s", shared.ready.load(), shared.failed.load(), ramp_s));
  // Let the gateways finish their bindings (they follow the joins).
  for (int i = 0; i < 100; ++i) {
    bool settled = true;
    for (const auto& http : config.gateway_http)
      settled = settled && read_metric(http, "rtmc_gateway_fanout_rooms_pending").value_or(0) == 0;
    if (settled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::vector<GatewayFigures> bound;
  for (const auto& http : config.gateway_http) bound.push_back(gateway_figures(http));
  const std::uint64_t delivered_before = shared.delivered;
  auto sample_gateways = [&] {
    std::vector<std::optional<ProcessSample>> samples;
    for (pid_t pid : config.gateway_pids) samples.push_back(sample_process(pid));
    return samples;
  };
  const auto cpu_before = sample_gateways();

  say(fmt::format("publishing {:.0f} msg/s for {:.0f} s", config.rate, config.duration_s));
  const auto publish_start = Clock::now();
  std::vector<std::future<void>> publishers;
  for (std::size_t i = 0; i < threads.size(); ++i)
    publishers.push_back(asio::co_spawn(
        threads[i]->io,
        publish_loop(*threads[i], shared, config, config.rate / static_cast<double>(threads.size()),
                     static_cast<std::uint32_t>(i + 1)),
        asio::use_future));
  for (auto& publisher : publishers) publisher.get();
  const double publish_s = std::chrono::duration<double>(Clock::now() - publish_start).count();
  // Drain: until every acked message reached its members, or drain_s.
  const auto drain_end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(config.drain_s));
  auto expected = [&] { return shared.acked.load() * static_cast<std::uint64_t>(members); };
  while (Clock::now() < drain_end &&
         (shared.acked < shared.sent || shared.delivered - delivered_before < expected()))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double deliver_s = std::chrono::duration<double>(Clock::now() - publish_start).count();
  std::vector<GatewayFigures> after;
  for (const auto& http : config.gateway_http) after.push_back(gateway_figures(http));
  const auto cpu_after = sample_gateways();

  shared.stopping = true;
  for (auto& thread : threads)
    asio::post(thread->io, [&thread = *thread] {
      for (auto& conn : thread.connections) {
        conn->closing = true;
        boost::system::error_code ignored;
        conn->socket.close(ignored);
      }
    });
  guards.clear();
  for (auto& thread : threads) thread->io.stop();
  for (auto& runner : runners) runner.join();

  LatencyHistogram latency;
  std::uint64_t errors = 0;
  std::string first_error;
  for (auto& thread : threads) {
    latency.merge(thread->latency);
    errors += thread->errors;
    if (first_error.empty()) first_error = thread->first_error;
  }
  const std::uint64_t sent = shared.sent, acked = shared.acked;
  const std::uint64_t delivered = shared.delivered - delivered_before;
  auto ms = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e6; };
  std::string out;
  out += fmt::format(
      "rooms scenario: {} gateways x {} connections, each in {} of {} rooms ({} members a room on {} "
      "gateways), {:.0f} msg/s for {:.0f} s\n",
      gateways, config.connections_per_gateway, config.rooms_per_connection, config.rooms, members,
      config.spread, config.rate, config.duration_s);
  out += fmt::format("  connected / failed / ramp       {} / {} / {:.1f} s\n", shared.ready.load(),
                     shared.failed.load(), ramp_s);
  out += fmt::format("  sent / acked                    {} / {} ({:.0f} msg/s sent)\n", sent, acked,
                     static_cast<double>(sent) / publish_s);
  out += fmt::format("  deliveries / expected           {} / {} (acked x {} members)\n", delivered,
                     expected(), members);
  out +=
      fmt::format("  deliveries/s                    {:.0f}\n", static_cast<double>(delivered) / deliver_s);
  out += fmt::format("  latency p50 / p99 / p99.9 / max {:.2f} / {:.2f} / {:.2f} / {:.2f} ms\n",
                     ms(latency.percentile(50)), ms(latency.percentile(99)), ms(latency.percentile(99.9)),
                     ms(latency.max()));
  out += fmt::format("  server errors                   {}{}\n", errors,
                     first_error.empty() ? "" : " (first: " + first_error + ")");
  out +=
      "  gateway                rooms bound  binds  fan-out frames  of all sent  deliveries to its clients"
      "  CPU s  RSS MiB\n";
  double frames_total = 0;
  for (int g = 0; g < gateways; ++g) {
    const double frames = after[g].frames - bound[g].frames;
    frames_total += frames;
    std::string cpu = "     -        -";
    if (static_cast<std::size_t>(g) < cpu_after.size() && cpu_before[g] && cpu_after[g])
      cpu = fmt::format("{:>6.2f}  {:>7}", cpu_after[g]->cpu_s - cpu_before[g]->cpu_s,
                        cpu_after[g]->rss_kib / 1024);
    out += fmt::format("  {:<22} {:>11.0f}  {:>5.0f}  {:>14.0f}  {:>10.1f}%  {:>25}  {}\n",
                       config.gateways[g].str(), bound[g].bound, bound[g].binds - before[g].binds, frames,
                       acked ? 100.0 * frames / static_cast<double>(acked) : 0.0,
                       shared.per_gateway[g].load(), cpu);
  }
  out += fmt::format(
      "  all gateways: {:.0f} fan-out frames for {} messages ({:.2f} per message; a plain fanout "
      "exchange: {})\n",
      frames_total, acked, acked ? frames_total / static_cast<double>(acked) : 0.0, gateways);
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return shared.failed == 0 && delivered >= expected() && acked == sent ? 0 : 1;
}

GatewayProcesses::GatewayProcesses(const std::string& binary, int count, std::uint16_t base_port,
                                   const std::vector<std::string>& extra_args)
    : base_port_(base_port) {
  for (int i = 0; i < count; ++i) {
    const auto port = static_cast<std::uint16_t>(base_port + i);
    std::vector<std::string> args{binary, "--listen", fmt::format("127.0.0.1:{}", port), "--http-listen",
                                  fmt::format("127.0.0.1:{}", port + 1000)};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      std::vector<char*> argv;
      for (auto& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    pids_.push_back(pid);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  for (const auto& http : this->http())
    while (!read_metric(http, "rtmc_gateway_fanout_rooms_bound")) {
      for (pid_t pid : pids_) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid)
          throw std::runtime_error(fmt::format("gateway pid {} exited at start (see its output above)", pid));
      }
      if (Clock::now() > deadline)
        throw std::runtime_error("a gateway did not answer /metrics: " + http.str());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  // The fan-out consumers attach shortly after /metrics answers.
  std::this_thread::sleep_for(std::chrono::seconds(2));
}

GatewayProcesses::~GatewayProcesses() {
  for (pid_t pid : pids_) kill(pid, SIGTERM);
  for (pid_t pid : pids_) {
    int status = 0;
    waitpid(pid, &status, 0);
  }
}

std::vector<HostPort> GatewayProcesses::clients() const {
  std::vector<HostPort> result;
  for (std::size_t i = 0; i < pids_.size(); ++i)
    result.push_back(HostPort{"127.0.0.1", static_cast<std::uint16_t>(base_port_ + i)});
  return result;
}

std::vector<HostPort> GatewayProcesses::http() const {
  std::vector<HostPort> result;
  for (std::size_t i = 0; i < pids_.size(); ++i)
    result.push_back(HostPort{"127.0.0.1", static_cast<std::uint16_t>(base_port_ + 1000 + i)});
  return result;
}

void add_rooms_options(CLI::App& app, RoomsOptions& options) {
  app.add_flag("--rooms", options.enabled,
               "instead of the one-room load: the many-rooms scenario (gateways x --rooms-connections "
               "connections, each in --rooms-per-connection of --rooms-count rooms, every connection also "
               "sends; -r msg/s in total to random rooms); prints per gateway the fan-out frames it "
               "received against all sent, and its rooms bound");
  app.add_option("--rooms-connections", options.connections_per_gateway, "rooms: connections per gateway")
      ->check(CLI::Range(1, 19000))
      ->capture_default_str();
  app.add_option("--rooms-per-connection", options.rooms_per_connection, "rooms: rooms each connection joins")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--rooms-count", options.rooms, "rooms: rooms in all")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--rooms-spread", options.spread,
                 "rooms: gateways a room's members are on (= the gateway count: every gateway has members "
                 "of every room)")
      ->capture_default_str();
  app.add_option("--gateway-http", options.gateway_http,
                 "rooms: the gateways' HTTP host:port (/metrics), one per --gateway, same order");
  app.add_option("--spawn-gateways", options.spawn_binary,
                 "rooms: start --spawn-count rtmc-gateway processes from this binary (configured by this "
                 "process's RTMC_* environment) instead of using --gateway");
  app.add_option("--spawn-count", options.spawn_count, "rooms: gateways to start")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--spawn-base-port", options.spawn_base_port,
                 "rooms: started gateways listen on base+i, HTTP on base+1000+i")
      ->check(CLI::Range(1024, 60000))
      ->capture_default_str();
}

int rooms_main(const RoomsOptions& options, const CommonLoad& load) {
  auto parse_list = [](const std::string& list) {
    std::vector<HostPort> out;
    std::stringstream items(list);
    for (std::string item; std::getline(items, item, ',');)
      if (!item.empty()) out.push_back(HostPort::parse(item));
    return out;
  };
  RoomsConfig config;
  config.connections_per_gateway = options.connections_per_gateway;
  config.rooms_per_connection = options.rooms_per_connection;
  config.rooms = options.rooms;
  config.spread = options.spread;
  config.rate = load.rate;
  config.duration_s = load.duration_s;
  config.body_bytes = load.body_bytes;
  config.drain_s = load.drain_s;
  config.threads = load.threads;
  config.ramp_in_flight = load.ramp_in_flight;
  config.progress = load.progress;
  config.run_tag = make_tag();
  std::unique_ptr<GatewayProcesses> spawned;
  if (!options.spawn_binary.empty()) {
    load.progress(
        fmt::format("starting {} gateways on 127.0.0.1:{}..", options.spawn_count, options.spawn_base_port));
    spawned = std::make_unique<GatewayProcesses>(options.spawn_binary, options.spawn_count,
                                                 static_cast<std::uint16_t>(options.spawn_base_port),
                                                 std::vector<std::string>{});
    config.gateways = spawned->clients();
    config.gateway_http = spawned->http();
    config.gateway_pids = spawned->pids();
  } else {
    config.gateways = parse_list(load.gateways);
    config.gateway_http = parse_list(options.gateway_http);
    for (int pid : load.gateway_pids) config.gateway_pids.push_back(pid);
  }
  // Checks the numbers before anything connects.
  rooms_of_connection(0, 0, static_cast<int>(config.gateways.size()), config.connections_per_gateway,
                      config.rooms_per_connection, config.rooms, config.spread);
  const char* from_env = std::getenv("RTMC_BENCH_STORM_PASSWORD");
  const std::string password = from_env != nullptr ? from_env : "rtmc-storm-bench";
  load.progress("signing in user roomsbench at " + load.api);
  config.token = sign_in_users(load.api, {"roomsbench"}, password, 1, load.progress).at(0);
  return run_rooms(config);
}

}  // namespace rtmc::bench
