// rtmc-bench: fan-out load against the gateways, then the same load against a
// private redis-server's pub/sub, printed side by side. Wiring only: the load
// itself is in load.cpp.

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "chat/http_client.hpp"
#include "common/config.hpp"
#include "common/names.hpp"
#include "conns.hpp"
#include "load.hpp"
#include "pin.hpp"
#include "processes.hpp"
#include "report.hpp"
#include "rooms.hpp"
#include "storm.hpp"
#include "wire.hpp"

namespace rtmc::bench {
namespace {

namespace asio = boost::asio;

struct BenchOptions {
  int subscribers = 1000;
  int publishers = 1;
  double rate = 1000;
  double duration_s = 10;
  std::size_t body_bytes = 128;
  double drain_s = 3;
  std::string api = "http://127.0.0.1:8080";
  std::string gateways = "127.0.0.1:7000";
  std::string room;
  int threads = 0;
  int ramp_in_flight = 256;
  double connect_timeout_s = 15;
  bool gateway_run = true;
  bool redis_compare = true;
  std::string redis_server = "redis-server";
  std::vector<int> gateway_pids;
  std::string json_path;
  bool presence_storm = false;
  int storm_clients = 1000;
  double storm_spread_s = 1.0;
  int storm_per_process = 15000;
  std::string storm_user_prefix = "storm";
  int storm_sign_in_concurrency = 16;
  int window = 0;
  bool pin = false;
  std::string pin_server_cpus = "0";
  std::string pin_bench_cpus = "1";
  std::string stack_dir = ".stack";
  std::vector<int> pin_pids;
};

void progress(const std::string& text) {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm parts{};
  localtime_r(&seconds, &parts);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &parts);
  std::fprintf(stderr, "%s.%03d rtmc-bench: %s\n", clock, static_cast<int>(millis), text.c_str());
  std::fflush(stderr);
}

// --pin: this process (before any thread starts) on the bench CPUs; the stack's
// servers, the --gateway-pid/--pin-pid processes and their descendants on the
// server CPUs. Nothing is restored.
void apply_pin(const BenchOptions& options) {
  pin_self(parse_cpu_list(options.pin_bench_cpus));
  std::vector<pid_t> roots = stack_server_pids(options.stack_dir);
  for (int pid : options.gateway_pids) roots.push_back(pid);
  for (int pid : options.pin_pids) roots.push_back(pid);
  PinOutcome outcome = pin_process_trees(roots, parse_cpu_list(options.pin_server_cpus));
  std::string listed;
  for (pid_t pid : roots) listed += fmt::format(" {}", pid);
  progress(
      fmt::format("pinned: bench on CPU {}; servers{} and their children ({} processes, {} threads) on "
                  "CPU {}",
                  options.pin_bench_cpus, listed, outcome.processes, outcome.tasks, options.pin_server_cpus));
  for (const auto& failure : outcome.failures) progress("pin failed: " + failure);
  if (roots.empty())
    progress("pin: no server PIDs found (no " + options.stack_dir + "/pids, no --gateway-pid)");
}

std::vector<HostPort> parse_gateways(const std::string& list) {
  std::vector<HostPort> gateways;
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ',');)
    if (!item.empty()) gateways.push_back(HostPort::parse(item));
  if (gateways.empty()) throw std::invalid_argument("--gateway needs at least one host:port");
  return gateways;
}

std::optional<ProcessSample> sample_all(const std::vector<int>& pids) {
  if (pids.empty()) return std::nullopt;
  ProcessSample total;
  for (int pid : pids) {
    auto sample = sample_process(pid);
    if (!sample) {
      progress("cannot read /proc/" + std::to_string(pid) + " (gateway pid)");
      return std::nullopt;
    }
    total.rss_kib += sample->rss_kib;
    total.peak_rss_kib += sample->peak_rss_kib;
    total.cpu_s += sample->cpu_s;
  }
  return total;
}

struct Credentials {
  std::string subscriber_token;
  std::vector<std::string> publisher_tokens;
};

// One user for all subscribers (a token may serve many connections) and one
// per publisher, so the per-sender dedupe and ordering are exercised per publisher.
Credentials sign_in(const BenchOptions& options, const std::string& tag) {
  chat::HttpUrl api = chat::HttpUrl::parse(options.api);
  const std::string password = make_message_id();
  const auto timeout = std::chrono::seconds(30);
  auto token_for = [&](std::string user) -> asio::awaitable<std::string> {
    co_await chat::register_user(api, user, password, timeout);
    chat::LoginResult session = co_await chat::login(api, user, password, timeout);
    co_return session.token;
  };
  asio::io_context io;
  auto subscriber = asio::co_spawn(io, token_for("bench" + tag + "s"), asio::use_future);
  std::vector<std::future<std::string>> publishers;
  for (int i = 0; i < options.publishers; ++i)
    publishers.push_back(
        asio::co_spawn(io, token_for("bench" + tag + "p" + std::to_string(i)), asio::use_future));
  io.run();
  Credentials credentials{subscriber.get(), {}};
  for (auto& publisher : publishers) credentials.publisher_tokens.push_back(publisher.get());
  return credentials;
}

LoadConfig base_config(const BenchOptions& options, const std::string& room, const std::string& tag) {
  LoadConfig config;
  config.room = room;
  config.run_tag = tag;
  config.subscribers = options.subscribers;
  config.publishers = options.publishers;
  config.rate = options.rate;
  config.duration_s = options.duration_s;
  config.body_bytes = options.body_bytes;
  config.drain_s = options.drain_s;
  config.threads = options.threads;
  config.ramp_in_flight = options.ramp_in_flight;
  config.connect_timeout_s = options.connect_timeout_s;
  config.window = options.window;
  config.progress = progress;
  return config;
}

std::string describe(const LoadResult& load) {
  return fmt::format("{}/{} deliveries, p99 {:.3f} ms", load.delivered, load.expected,
                     static_cast<double>(load.latency.percentile(99)) / 1e6);
}

RunReport gateway_run(const BenchOptions& options, const std::string& room, const std::string& tag) {
  RunReport report;
  report.name = "gateway";
  report.has_seq = true;
  LoadConfig config = base_config(options, room, tag);
  config.target = Target::gateway;
  config.servers = parse_gateways(options.gateways);
  try {
    progress("signing in " + std::to_string(options.publishers + 1) + " users at " + options.api);
    Credentials credentials = sign_in(options, tag);
    config.subscriber_token = credentials.subscriber_token;
    config.publisher_tokens = credentials.publisher_tokens;
  } catch (const boost::system::system_error& e) {
    report.not_run_reason = "sign-in failed: network error: " + e.code().message();
    progress(report.not_run_reason);
    return report;
  } catch (const std::exception& e) {
    report.not_run_reason = std::string("sign-in failed: ") + e.what();
    progress(report.not_run_reason);
    return report;
  }
  report.server_before = sample_all(options.gateway_pids);
  config.before_close = [&] { report.server_after = sample_all(options.gateway_pids); };
  progress("gateway run: " + std::to_string(options.subscribers) + " subscribers, " +
           std::to_string(options.publishers) + " publishers on " + options.gateways);
  report.load = run_load(config);
  report.ran = true;
  progress("gateway run done: " + describe(report.load));
  return report;
}

RunReport redis_run(const BenchOptions& options, const std::string& room, const std::string& tag) {
  RunReport report;
  report.name = "redis";
  LoadConfig config = base_config(options, room, tag);
  config.target = Target::redis;
  try {
    RedisServer redis(options.redis_server, options.subscribers + options.publishers + 64);
    progress("redis run: redis-server pid " + std::to_string(redis.pid()) +
             " on 127.0.0.1:" + std::to_string(redis.port()));
    config.servers = {HostPort{"127.0.0.1", redis.port()}};
    if (options.pin) {
      PinOutcome pinned = pin_process_trees({redis.pid()}, parse_cpu_list(options.pin_server_cpus));
      progress(
          fmt::format("pinned redis-server ({} threads) on CPU {}", pinned.tasks, options.pin_server_cpus));
    }
    report.server_before = sample_process(redis.pid());
    config.before_close = [&] { report.server_after = sample_process(redis.pid()); };
    report.load = run_load(config);
    report.ran = true;
    redis.stop();
  } catch (const std::exception& e) {
    report.not_run_reason = e.what();
    progress("redis run failed: " + report.not_run_reason);
    return report;
  }
  progress("redis run done: " + describe(report.load));
  return report;
}

// The presence storm mode: its own sign-in (one user per client), run and report.
int presence_storm(const BenchOptions& options) {
  std::vector<std::string> users;
  for (int i = 0; i < options.storm_clients; ++i)
    users.push_back(options.storm_user_prefix + std::to_string(i));
  const char* from_env = std::getenv("RTMC_BENCH_STORM_PASSWORD");
  const std::string password = from_env != nullptr ? from_env : "rtmc-storm-bench";
  StormConfig config;
  config.servers = parse_gateways(options.gateways);
  config.room = options.room;
  config.spread_s = options.storm_spread_s;
  config.per_process = options.storm_per_process;
  config.threads = options.threads;
  config.connect_timeout_s = options.connect_timeout_s;
  config.quiet_s = options.drain_s;
  config.progress = progress;
  try {
    progress(fmt::format("signing in {} users {}0..{}{} at {}", users.size(), options.storm_user_prefix,
                         options.storm_user_prefix, users.size() - 1, options.api));
    config.tokens = sign_in_users(options.api, users, password, options.storm_sign_in_concurrency, progress);
  } catch (const boost::system::system_error& e) {
    progress("sign-in failed: network error: " + e.code().message());
    return 1;
  } catch (const std::exception& e) {
    progress(std::string("sign-in failed: ") + e.what());
    return 1;
  }
  std::optional<ProcessSample> before = sample_all(options.gateway_pids);
  std::optional<ProcessSample> after;
  config.before_close = [&] { after = sample_all(options.gateway_pids); };
  progress(fmt::format("storm: {} clients join #{} over {:.2f} s", users.size(), options.room,
                       options.storm_spread_s));
  StormTally tally = run_storm(config);
  StormSummary summary = summarize(tally);
  std::uint64_t reference = reference_presence_joins(tally.joined);

  std::string table;
  table += fmt::format("presence storm: {} clients, one user each, join #{} spread over {:.2f} s\n",
                       tally.clients, options.room, options.storm_spread_s);
  table += fmt::format("  joined / failed / dropped      {} / {} / {}\n", tally.joined, tally.failed,
                       tally.dropped);
  table += fmt::format("  all joined after               {:.3f} s (first client due -> last joined)\n",
                       summary.all_joined_s);
  table += fmt::format("  join latency mean / max        {:.1f} / {:.1f} ms (connect -> joined)\n",
                       summary.mean_join_latency_ms, summary.max_join_latency_ms);
  table += fmt::format("  presence joins received        {} (reference n(n-1)/2 = {})\n",
                       tally.presence_joins, reference);
  table += fmt::format("  presence leaves received       {}\n", tally.presence_leaves);
  table += fmt::format("  last presence after            {:.3f} s\n", summary.last_presence_s);
  table += fmt::format("  presence frames/s              {:.0f} (received / last presence time)\n",
                       summary.presence_per_s);
  table += fmt::format("  server errors                  {}\n", tally.server_errors);
  if (before && after)
    table += fmt::format("  gateway CPU s / RSS after      {:.2f} / {} MiB\n", after->cpu_s - before->cpu_s,
                         after->rss_kib / 1024);
  if (!tally.first_error.empty()) table += "  first error: " + tally.first_error + "\n";
  std::fputs(table.c_str(), stdout);
  if (!options.json_path.empty()) {
    std::ofstream json(options.json_path);
    json << fmt::format(
        R"({{"mode":"presence_storm","clients":{},"joined":{},"failed":{},"dropped":{},"all_joined_s":{:.6f},)"
        R"("join_latency_mean_ms":{:.3f},"join_latency_max_ms":{:.3f},"presence_joins":{},"presence_leaves":{},)"
        R"("reference_presence_joins":{},"last_presence_s":{:.6f},"presence_per_s":{:.1f},"server_errors":{},)"
        R"("gateway_cpu_s":{}}})"
        "\n",
        tally.clients, tally.joined, tally.failed, tally.dropped, summary.all_joined_s,
        summary.mean_join_latency_ms, summary.max_join_latency_ms, tally.presence_joins,
        tally.presence_leaves, reference, summary.last_presence_s, summary.presence_per_s,
        tally.server_errors,
        before && after ? fmt::format("{:.3f}", after->cpu_s - before->cpu_s) : std::string("null"));
  }
  return tally.joined == tally.clients ? 0 : 1;
}

}  // namespace
}  // namespace rtmc::bench

int main(int argc, char** argv) {
  using namespace rtmc::bench;
  BenchOptions options;
  CLI::App app{
      "rtmc-bench: fan-out load generator.\n"
      "S subscriber connections join one room; P publishers (each its own user) send R messages/s in\n"
      "total for D seconds, each body exactly --body-bytes long and stamped with publisher, counter and\n"
      "send time. After a drain (ends early once everything arrived) it prints published/acked/\n"
      "expected (= published x connected subscribers)/delivered, loss, duplicates, ordering, seq gaps,\n"
      "deliveries/s and send->receipt latency percentiles. Then the same load runs against a private\n"
      "redis-server (SUBSCRIBE/PUBLISH) it starts and stops itself, and both are shown side by side.\n"
      "Example: rtmc-bench -s 1000 -p 1 -r 1000 -d 10 --gateway-pid $(pgrep -n rtmc-gateway)"};
  app.add_option("-s,--subscribers", options.subscribers, "subscriber connections")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("-p,--publishers", options.publishers, "publisher connections (one user each)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("-r,--rate", options.rate, "messages per second, all publishers together")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("-d,--duration", options.duration_s, "seconds of publishing")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--body-bytes", options.body_bytes, "message body size")
      ->check(CLI::Range(kMinBodyBytes, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--drain-s", options.drain_s, "longest wait for deliveries after publishing ends")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--api", options.api, "api base URL (register/login)")
      ->envname("RTMC_BENCH_API")
      ->capture_default_str();
  app.add_option("--gateway", options.gateways,
                 "gateway host:port[,host:port...]; connections spread round-robin")
      ->envname("RTMC_BENCH_GATEWAY")
      ->capture_default_str();
  app.add_option("--room", options.room, "room / Redis channel (default: bench-<random>)");
  app.add_option("--threads", options.threads, "io threads (default: number of cores, at least 2)")
      ->check(CLI::Range(1, 256));
  app.add_option("--ramp-in-flight", options.ramp_in_flight, "connection handshakes in progress at once")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--connect-timeout-s", options.connect_timeout_s, "limit for one connection's handshake")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--gateway-run,!--no-gateway-run", options.gateway_run,
               "run the load against the gateways (default: on)");
  app.add_flag("--redis-compare,!--no-redis-compare", options.redis_compare,
               "then run it against a private redis-server (default: on)");
  app.add_option("--redis-server", options.redis_server, "redis-server executable")->capture_default_str();
  app.add_option("--gateway-pid", options.gateway_pids,
                 "gateway PID(s) whose RSS and CPU to report (repeat for several; values are summed)")
      ->delimiter(',');
  app.add_option("--json", options.json_path, "also write the results as JSON to this file");
  app.add_flag("--presence-storm", options.presence_storm,
               "instead of the fan-out load: N clients (users <prefix>0..N-1) join one room within "
               "--storm-spread-s; reports time until all joined and presence frames received "
               "(--drain-s: stop after this long without a presence frame)");
  app.add_option("--storm-clients", options.storm_clients, "presence storm: clients, one user each")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--storm-spread-s", options.storm_spread_s,
                 "presence storm: the joins are spread over this long")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--storm-per-process", options.storm_per_process,
                 "presence storm: clients per process; more are split over forked processes")
      ->check(CLI::Range(1, 19000))
      ->capture_default_str();
  app.add_option("--storm-user-prefix", options.storm_user_prefix,
                 "presence storm: user names (registered if new; password RTMC_BENCH_STORM_PASSWORD, "
                 "default rtmc-storm-bench)")
      ->capture_default_str();
  app.add_option("--storm-sign-in-concurrency", options.storm_sign_in_concurrency,
                 "presence storm: register/login calls in flight")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--window", options.window,
                 "full speed instead of -r: each publisher keeps N messages unanswered (gateway ack, Redis "
                 "PUBLISH reply) and sends the next on each answer, for -d seconds (like redis-benchmark -P)")
      ->check(CLI::Range(1, 100000));
  app.add_flag(
      "--pin", options.pin,
      "bench threads on --pin-bench-cpus, the servers (STACK_DIR/pids, --gateway-pid, --pin-pid, all "
      "their threads and child processes) and the comparison redis-server on --pin-server-cpus; "
      "not undone afterwards");
  app.add_option("--pin-server-cpus", options.pin_server_cpus, "CPUs for the servers with --pin")
      ->capture_default_str();
  app.add_option("--pin-bench-cpus", options.pin_bench_cpus, "CPUs for this process with --pin")
      ->capture_default_str();
  app.add_option("--stack-dir", options.stack_dir,
                 "scripts/stack.sh's STACK_DIR (its pids/, jwt-secret, secrets/)")
      ->envname("STACK_DIR")
      ->capture_default_str();
  app.add_option("--pin-pid", options.pin_pids, "more server PIDs to pin with --pin")->delimiter(',');
  ConnsOptions conns_options;
  add_conns_options(app, conns_options);
  RoomsOptions rooms;
  add_rooms_options(app, rooms);
  CLI11_PARSE(app, argc, argv);
  if (options.pin) {
    try {
      apply_pin(options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rtmc-bench: --pin: %s\n", e.what());
      return 2;
    }
  }

  if (options.threads == 0) options.threads = std::max(2u, std::thread::hardware_concurrency());
  const std::string tag = rtmc::make_message_id().substr(0, 8);
  if (options.room.empty()) options.room = "bench-" + tag;
  if (!rtmc::valid_room_name(options.room)) {
    std::fprintf(stderr, "rtmc-bench: bad room name '%s'\n", options.room.c_str());
    return 2;
  }
  std::uint64_t fd_limit = raise_fd_limit();
  std::uint64_t fds_needed =
      conns_options.connections > 0
          ? static_cast<std::uint64_t>(std::min(conns_options.connections, conns_options.per_process)) + 64
      : options.presence_storm
          ? static_cast<std::uint64_t>(std::min(options.storm_clients, options.storm_per_process)) + 64
          : static_cast<std::uint64_t>(options.subscribers + options.publishers) + 64;
  if (fd_limit < fds_needed) {
    std::fprintf(stderr,
                 "rtmc-bench: a process of this run needs ~%llu file descriptors, the limit is %llu\n",
                 static_cast<unsigned long long>(fds_needed), static_cast<unsigned long long>(fd_limit));
    return 2;
  }

  if (conns_options.seed_users > 0 || conns_options.connections > 0) {
    ConnsContext context{
        parse_gateways(options.gateways), options.gateway_pids,      options.stack_dir, options.threads,
        options.ramp_in_flight,           options.connect_timeout_s, options.json_path, progress};
    try {
      return conns_options.seed_users > 0 ? run_seed_command(conns_options, context)
                                          : run_connections_command(conns_options, context);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rtmc-bench: %s\n", e.what());
      return 1;
    }
  }
  if (rooms.enabled) {
    try {
      return rooms_main(
          rooms, {options.api, options.gateways, options.gateway_pids, options.rate, options.duration_s,
                  options.body_bytes, options.drain_s, options.threads, options.ramp_in_flight, progress});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rtmc-bench: %s\n", e.what());
      return 1;
    }
  }
  if (options.presence_storm) {
    try {
      return presence_storm(options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rtmc-bench: %s\n", e.what());
      return 1;
    }
  }

  std::vector<RunReport> runs;
  try {
    // Sequential, and each run closes its connections before the next starts.
    if (options.gateway_run) runs.push_back(gateway_run(options, options.room, tag));
    if (options.redis_compare) runs.push_back(redis_run(options, options.room, tag));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtmc-bench: %s\n", e.what());
    return 1;
  }
  if (runs.empty()) {
    std::fputs("rtmc-bench: nothing to run (--no-gateway-run and --no-redis-compare)\n", stderr);
    return 2;
  }

  BenchParameters parameters{options.subscribers, options.publishers, options.rate, options.duration_s,
                             options.body_bytes,  options.threads,    options.room, options.window};
  print_report(stdout, parameters, runs);
  if (!options.json_path.empty()) {
    std::ofstream json(options.json_path);
    json << report_json(parameters, runs);
  }
  bool all_ran = true;
  for (const auto& run : runs) all_ran = all_ran && run.ran && run.load.published > 0;
  return all_ran ? 0 : 1;
}
