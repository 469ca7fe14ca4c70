#include "load.hpp"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
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
#include <cmath>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <semaphore>
#include <stdexcept>
#include <thread>

#include "client_io.hpp"
#include "window.hpp"
#include "wire.hpp"

namespace rtmc::bench {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto as_tuple_awaitable = asio::as_tuple(use_awaitable);

namespace {

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// One io thread and what its connections measure. Everything but the atomics
// is touched only by its thread, or by the orchestrator after the thread ended.
struct Worker {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  // Shared by all connections of this thread: filled by a synchronous read and
  // consumed before the next suspension, so no two users overlap.
  std::array<char, 64 * 1024> scratch{};

  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> published{0};
  LatencyHistogram latency;
  std::uint64_t duplicates = 0;
  std::uint64_t foreign = 0;
  std::uint64_t dropped_subscribers = 0;
  std::uint64_t dropped_publishers = 0;
  std::int64_t first_send_ns = std::numeric_limits<std::int64_t>::max();
  std::int64_t last_send_ns = 0;
  std::int64_t last_delivery_ns = 0;
  std::map<std::string, std::uint64_t> errors;
  std::string first_error;
  std::thread thread;
};

enum class Role { subscriber, publisher };

// A connection lives on its worker's thread; `close` is posted there.
struct Conn {
  Conn(Worker& owner, Role role_, int index_)
      : worker(owner), socket(owner.io), timer(owner.io), wake(owner.io), role(role_), index(index_) {}

  void close() {
    closing = true;
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
    wake.cancel();
  }

  // Full-speed mode: an answer frees a slot and wakes the waiting publisher.
  void settle_one() {
    window.settled();
    if (waiting) wake.cancel();
  }

  Worker& worker;
  tcp::socket socket;
  asio::steady_timer timer;  // handshake watchdog, then ping interval or publish pacing
  asio::steady_timer wake;   // full-speed publisher: waits here for a free slot
  SendWindow window;
  bool waiting = false;
  Role role;
  int index;
  std::string tail;  // input received but not yet a whole line/reply
  int heartbeat_s = 0;
  bool established = false;
  bool timed_out = false;
  bool closing = false;  // closed by us, so the end is not a drop
  DeliveryTracker tracker;
  SeqChecker seq;
};

struct RunState {
  RunState(const LoadConfig& config_, std::vector<tcp::endpoint> endpoints_)
      : config(config_), endpoints(std::move(endpoints_)) {}
  const LoadConfig& config;
  std::vector<tcp::endpoint> endpoints;
  std::atomic<bool> stopping{false};
  std::atomic<int> subscribers_connected{0};
  std::atomic<int> publishers_connected{0};
  std::atomic<int> publishers_done{0};
  std::atomic<int> threads_running{0};
  std::atomic<std::uint64_t> connect_failures{0};
  std::mutex first_error_mutex;  // failure path only
  std::string first_connect_error;
};

struct PublishPlan {
  std::uint64_t count = 0;
  double period_s = 0;  // between two messages of this publisher
  double offset_s = 0;  // so the publishers interleave evenly
  Clock::time_point start;
};

void record_error(Worker& worker, const std::string& code, const std::string& message) {
  ++worker.errors[code.empty() ? "unknown" : code];
  if (worker.first_error.empty()) worker.first_error = code + ": " + message;
}

// Feeds every complete line of tail+data to `on_line`; keeps the rest in tail.
template <typename OnLine>
void for_each_line(std::string& tail, std::string_view data, OnLine&& on_line) {
  std::string_view input = data;
  if (!tail.empty()) {
    tail.append(data);
    input = tail;
  }
  std::size_t start = 0;
  for (auto newline = input.find('\n'); newline != std::string_view::npos;
       newline = input.find('\n', start)) {
    on_line(input.substr(start, newline - start));
    start = newline + 1;
  }
  if (tail.empty()) {
    tail.assign(input.substr(start));
  } else {
    tail.erase(0, start);
  }
}

template <typename OnReply>
void for_each_reply(std::string& tail, std::string_view data, OnReply&& on_reply) {
  std::string_view input = data;
  if (!tail.empty()) {
    tail.append(data);
    input = tail;
  }
  std::size_t start = 0;
  RespReply reply;
  while (std::size_t used = parse_resp(input.substr(start), reply)) {
    on_reply(reply);
    start += used;
  }
  if (tail.empty()) {
    tail.assign(input.substr(start));
  } else {
    tail.erase(0, start);
  }
}

void deliver(Conn& conn, const BodyStamp& stamp, std::int64_t now_ns, int publishers) {
  Worker& worker = conn.worker;
  if (stamp.publisher >= static_cast<std::uint32_t>(publishers)) {
    ++worker.foreign;
    return;
  }
  if (conn.tracker.record(stamp.publisher, stamp.counter) == DeliveryTracker::Outcome::duplicate) {
    ++worker.duplicates;
    return;
  }
  worker.latency.record(now_ns > stamp.send_ns ? static_cast<std::uint64_t>(now_ns - stamp.send_ns) : 0);
  worker.delivered.fetch_add(1, std::memory_order_relaxed);
  worker.last_delivery_ns = now_ns;
}

void consume(Conn& conn, std::string_view data, std::int64_t now_ns, const LoadConfig& config) {
  Worker& worker = conn.worker;
  if (config.target == Target::gateway) {
    for_each_line(conn.tail, data, [&](std::string_view text) {
      GatewayLine line = parse_gateway_line(text);
      switch (line.kind) {
        case GatewayLine::Kind::message:
          // A publisher gets its own messages back; only subscribers count them.
          if (conn.role == Role::publisher) break;
          conn.seq.record(line.seq);
          if (line.stamp) {
            deliver(conn, *line.stamp, now_ns, config.publishers);
          } else {
            ++worker.foreign;
          }
          break;
        case GatewayLine::Kind::ack:
          worker.acked.fetch_add(1, std::memory_order_relaxed);
          conn.settle_one();
          break;
        case GatewayLine::Kind::error:
          record_error(worker, line.code, line.message);
          // A refused send is answered too; without this its slot would stay taken.
          if (conn.role == Role::publisher) conn.settle_one();
          break;
        case GatewayLine::Kind::unreadable:
          record_error(worker, "unreadable_line", std::string(text.substr(0, 200)));
          break;
        default: break;
      }
    });
  } else {
    for_each_reply(conn.tail, data, [&](const RespReply& reply) {
      if (reply.head.kind == '*' && reply.head.integer == 3 && reply.items[0].text == "message") {
        if (auto stamp = parse_body(reply.items[2].text)) {
          deliver(conn, *stamp, now_ns, config.publishers);
        } else {
          ++worker.foreign;
        }
      } else if (reply.head.kind == ':') {
        worker.acked.fetch_add(1, std::memory_order_relaxed);
        conn.settle_one();
      } else if (reply.head.kind == '-') {
        record_error(worker, "redis_error", std::string(reply.head.text));
        if (conn.role == Role::publisher) conn.settle_one();
      }
    });
  }
  if (conn.tail.size() > kMaxPendingInput)
    throw std::runtime_error("server sent an unterminated frame over 1 MiB");
}

// Sends `request` and waits for `wanted`; an error frame ends the handshake
// with that error, except `unavailable` (the gateway's store queue is full
// during a ramp), which asks for a retry: sent again after a pause.
awaitable<GatewayLine> request_gateway(Conn& conn, const std::string& request, GatewayLine::Kind wanted,
                                       const char* step) {
  constexpr int kMaxAttempts = 20;
  co_await asio::async_write(conn.socket, asio::buffer(request), use_awaitable);
  asio::steady_timer pause(conn.socket.get_executor());
  for (int attempt = 1;;) {
    GatewayLine line = co_await read_gateway_line(conn);
    if (line.kind == wanted) co_return line;
    if (line.kind != GatewayLine::Kind::error) continue;
    if (line.code != "unavailable" || attempt >= kMaxAttempts)
      throw std::runtime_error(std::string(step) + " refused: " + line.code + ": " + line.message);
    pause.expires_after(std::chrono::milliseconds(50 * attempt++));
    co_await pause.async_wait(use_awaitable);
    co_await asio::async_write(conn.socket, asio::buffer(request), use_awaitable);
  }
}

// auth and join one at a time: a gateway may refuse anything sent before auth_ok.
awaitable<void> gateway_handshake(Conn& conn, const tcp::endpoint& endpoint, const std::string& token,
                                  const std::string& room) {
  co_await conn.socket.async_connect(endpoint, use_awaitable);
  conn.socket.set_option(tcp::no_delay(true));
  // Named locals, not temporaries inside co_await (GCC 12, STYLE.md).
  const std::string auth = auth_frame(token);
  GatewayLine auth_ok = co_await request_gateway(conn, auth, GatewayLine::Kind::auth_ok, "auth");
  conn.heartbeat_s = auth_ok.heartbeat_s;
  const std::string join = join_frame(room);
  GatewayLine joined = co_await request_gateway(conn, join, GatewayLine::Kind::joined, "join");
  conn.seq.start(joined.seq);
}

awaitable<void> redis_handshake(Conn& conn, const tcp::endpoint& endpoint, const std::string& channel) {
  co_await conn.socket.async_connect(endpoint, use_awaitable);
  conn.socket.set_option(tcp::no_delay(true));
  if (conn.role == Role::publisher) co_return;
  std::string subscribe = subscribe_command(channel);
  co_await asio::async_write(conn.socket, asio::buffer(subscribe), use_awaitable);
  for (;;) {
    RespReply reply;
    std::size_t used = parse_resp(conn.tail, reply);
    if (used == 0) {
      co_await read_more(conn);
      continue;
    }
    conn.tail.erase(0, used);
    if (reply.head.kind == '-')
      throw std::runtime_error("SUBSCRIBE refused: " + std::string(reply.head.text));
    if (reply.head.kind == '*' && reply.head.integer == 3 && reply.items[0].text == "subscribe") co_return;
  }
}

awaitable<void> establish(std::shared_ptr<Conn> conn, RunState& run, tcp::endpoint endpoint,
                          std::string token) {
  const LoadConfig& config = run.config;
  conn->timer.expires_after(std::chrono::milliseconds(static_cast<long>(config.connect_timeout_s * 1000)));
  conn->timer.async_wait([conn](boost::system::error_code ec) {
    if (ec || conn->established) return;
    conn->timed_out = true;
    boost::system::error_code ignored;
    conn->socket.close(ignored);
  });
  try {
    if (config.target == Target::gateway) {
      co_await gateway_handshake(*conn, endpoint, token, config.room);
    } else {
      co_await redis_handshake(*conn, endpoint, config.room);
    }
  } catch (const std::exception&) {
    conn->timer.cancel();
    if (conn->timed_out)
      throw std::runtime_error("no handshake within " + std::to_string(config.connect_timeout_s) + " s");
    throw;
  }
  conn->established = true;
  conn->timer.cancel();
  conn->socket.non_blocking(true);
}

// Reads until the connection ends: wait for readability, then drain the
// socket synchronously into the thread's scratch buffer (no per-connection
// read buffer, which matters at 10,000 connections).
awaitable<void> receive(std::shared_ptr<Conn> conn, RunState& run) {
  Worker& worker = conn->worker;
  try {
    if (!conn->tail.empty()) consume(*conn, {}, steady_ns(), run.config);
    for (bool open = true; open;) {
      auto [wait_error] = co_await conn->socket.async_wait(tcp::socket::wait_read, as_tuple_awaitable);
      if (wait_error) break;
      for (;;) {
        boost::system::error_code ec;
        std::size_t got = conn->socket.read_some(asio::buffer(worker.scratch), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) break;
        if (ec) {
          open = false;
          break;
        }
        // One clock read per chunk: every message in it arrived by now.
        consume(*conn, std::string_view(worker.scratch.data(), got), steady_ns(), run.config);
        if (got < worker.scratch.size()) break;
      }
    }
  } catch (const std::exception& e) {
    record_error(worker, "bench_protocol", e.what());
  }
  if (!conn->closing) {
    ++(conn->role == Role::subscriber ? worker.dropped_subscribers : worker.dropped_publishers);
    conn->close();
  }
}

// Open loop: message k is due at start + offset + k*period whatever the
// server's pace; a late publisher sends everything due in one write. The send
// time stamped in a body is when its write was issued.
awaitable<void> publish(std::shared_ptr<Conn> conn, RunState& run, PublishPlan plan) {
  const LoadConfig& config = run.config;
  Worker& worker = conn->worker;
  const bool gateway = config.target == Target::gateway;
  const Clock::duration ping_interval =
      conn->heartbeat_s > 0 ? Clock::duration(std::chrono::milliseconds(conn->heartbeat_s * 500))
                            : Clock::duration(std::chrono::hours(1));
  auto next_ping = Clock::now() + ping_interval;
  auto due_at = [&](std::uint64_t k) {
    return plan.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                            plan.offset_s + static_cast<double>(k) * plan.period_s));
  };
  std::string batch;
  std::uint64_t sent = 0;
  while (sent < plan.count && !run.stopping.load(std::memory_order_relaxed)) {
    auto now = Clock::now();
    double elapsed = std::chrono::duration<double>(now - plan.start).count() - plan.offset_s;
    std::uint64_t due = elapsed < 0 ? 0 : static_cast<std::uint64_t>(std::floor(elapsed / plan.period_s)) + 1;
    due = std::min(due, plan.count);
    batch.clear();
    std::int64_t send_ns = steady_ns();
    for (std::uint64_t k = sent; k < due; ++k) {
      BodyStamp stamp{static_cast<std::uint32_t>(conn->index), k, send_ns};
      if (gateway) {
        append_send_frame(batch, config.room, config.run_tag, stamp, config.body_bytes);
      } else {
        append_publish_command(batch, config.room, stamp, config.body_bytes);
      }
    }
    if (gateway && now >= next_ping) {
      batch += ping_frame();
      next_ping = now + ping_interval;
    }
    if (!batch.empty()) {
      auto [ec, written] = co_await asio::async_write(conn->socket, asio::buffer(batch), as_tuple_awaitable);
      if (ec) break;
      if (due > sent) {
        worker.first_send_ns = std::min(worker.first_send_ns, send_ns);
        worker.last_send_ns = std::max(worker.last_send_ns, send_ns);
        worker.published.fetch_add(due - sent, std::memory_order_relaxed);
        sent = due;
      }
    }
    if (sent >= plan.count) break;
    conn->timer.expires_at(std::min(due_at(sent), next_ping));
    co_await conn->timer.async_wait(as_tuple_awaitable);
  }
  run.publishers_done.fetch_add(1);
}

// Full speed: as many messages as the window has room for, the next ones as
// soon as answers free slots, until `end`. Send stamps as in publish().
awaitable<void> publish_window(std::shared_ptr<Conn> conn, RunState& run, Clock::time_point start,
                               Clock::time_point end) {
  const LoadConfig& config = run.config;
  Worker& worker = conn->worker;
  const bool gateway = config.target == Target::gateway;
  const Clock::duration ping_interval =
      conn->heartbeat_s > 0 ? Clock::duration(std::chrono::milliseconds(conn->heartbeat_s * 500))
                            : Clock::duration(std::chrono::hours(1));
  conn->timer.expires_at(start);
  co_await conn->timer.async_wait(as_tuple_awaitable);
  auto next_ping = Clock::now() + ping_interval;
  std::string batch;
  std::uint64_t sent = 0;
  while (!run.stopping.load(std::memory_order_relaxed) && !conn->closing) {
    auto now = Clock::now();
    if (now >= end) break;
    const std::uint64_t room = conn->window.room();
    batch.clear();
    const std::int64_t send_ns = steady_ns();
    for (std::uint64_t k = sent; k < sent + room; ++k) {
      BodyStamp stamp{static_cast<std::uint32_t>(conn->index), k, send_ns};
      if (gateway) {
        append_send_frame(batch, config.room, config.run_tag, stamp, config.body_bytes);
      } else {
        append_publish_command(batch, config.room, stamp, config.body_bytes);
      }
    }
    if (gateway && now >= next_ping) {
      batch += ping_frame();
      next_ping = now + ping_interval;
    }
    if (!batch.empty()) {
      conn->window.sent(room);
      auto [ec, written] = co_await asio::async_write(conn->socket, asio::buffer(batch), as_tuple_awaitable);
      if (ec) break;
      if (room > 0) {
        worker.first_send_ns = std::min(worker.first_send_ns, send_ns);
        worker.last_send_ns = std::max(worker.last_send_ns, send_ns);
        worker.published.fetch_add(room, std::memory_order_relaxed);
        sent += room;
      }
      // Answers may have come in during the write.
      if (conn->window.room() > 0) continue;
    }
    conn->waiting = true;
    conn->wake.expires_at(std::min(end, next_ping));
    co_await conn->wake.async_wait(as_tuple_awaitable);
    conn->waiting = false;
  }
  run.publishers_done.fetch_add(1);
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

}  // namespace

LoadResult run_load(const LoadConfig& config) {
  if (config.servers.empty()) throw std::runtime_error("no server address");
  if (config.target == Target::gateway &&
      static_cast<int>(config.publisher_tokens.size()) != config.publishers)
    throw std::runtime_error("one token per publisher is needed");

  auto progress = [&config](const std::string& text) {
    if (config.progress) config.progress(text);
  };
  RunState run(config, resolve(config.servers));
  LoadResult result;
  const bool full_speed = config.window > 0;
  result.target_messages =
      full_speed ? 0 : static_cast<std::uint64_t>(std::llround(config.rate * config.duration_s));

  const int thread_count = std::max(1, config.threads);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < thread_count; ++i) workers.push_back(std::make_unique<Worker>());
  run.threads_running = thread_count;
  for (auto& worker : workers) {
    worker->thread = std::thread([&run, &io = worker->io] {
      io.run();
      run.threads_running.fetch_sub(1);
    });
  }
  // Destroyed before `workers`: their sockets belong to the workers' io_contexts.
  std::vector<std::shared_ptr<Conn>> subscribers;
  std::vector<std::shared_ptr<Conn>> publishers;

  // Ramp: at most ramp_in_flight handshakes at once, so neither the server's
  // accept backlog nor its auth path is flooded.
  auto ramp_start = Clock::now();
  std::counting_semaphore<> slots(std::max(1, config.ramp_in_flight));
  std::latch handshakes(config.subscribers + config.publishers);
  std::size_t next_worker = 0;
  auto open = [&](Role role, int index) {
    Worker& worker = *workers[next_worker++ % workers.size()];
    auto conn = std::make_shared<Conn>(worker, role, index);
    if (role == Role::publisher)
      conn->window = SendWindow(static_cast<std::uint64_t>(std::max(0, config.window)));
    (role == Role::subscriber ? subscribers : publishers).push_back(conn);
    const tcp::endpoint& endpoint = run.endpoints[static_cast<std::size_t>(index) % run.endpoints.size()];
    std::string token;
    if (config.target == Target::gateway)
      token = role == Role::subscriber ? config.subscriber_token
                                       : config.publisher_tokens[static_cast<std::size_t>(index)];
    slots.acquire();
    asio::co_spawn(worker.io, establish(conn, run, endpoint, std::move(token)),
                   [conn, &run, &slots, &handshakes](std::exception_ptr error) {
                     if (error) {
                       run.connect_failures.fetch_add(1);
                       std::string reason;
                       try {
                         std::rethrow_exception(error);
                       } catch (const boost::system::system_error& e) {
                         reason = e.code().message();
                       } catch (const std::exception& e) {
                         reason = e.what();
                       }
                       std::lock_guard lock(run.first_error_mutex);
                       if (run.first_connect_error.empty()) run.first_connect_error = reason;
                       conn->close();
                     } else {
                       (conn->role == Role::subscriber ? run.subscribers_connected : run.publishers_connected)
                           .fetch_add(1);
                       asio::co_spawn(conn->worker.io, receive(conn, run), asio::detached);
                       if (conn->role == Role::subscriber)
                         asio::co_spawn(conn->worker.io, keep_alive(conn), asio::detached);
                     }
                     slots.release();
                     handshakes.count_down();
                   });
  };
  for (int i = 0; i < config.subscribers; ++i) open(Role::subscriber, i);
  for (int i = 0; i < config.publishers; ++i) open(Role::publisher, i);
  handshakes.wait();
  result.ramp_s = std::chrono::duration<double>(Clock::now() - ramp_start).count();
  result.subscribers_connected = run.subscribers_connected.load();
  result.publishers_connected = run.publishers_connected.load();
  progress(fmt::format("{} subscribers and {} publishers ready in {:.2f} s ({} failed)",
                       result.subscribers_connected, result.publishers_connected, result.ramp_s,
                       run.connect_failures.load()));
  result.connect_failures = run.connect_failures.load();
  result.first_connect_error = run.first_connect_error;

  std::vector<std::shared_ptr<Conn>> active_publishers;
  for (auto& conn : publishers)
    if (conn->established) active_publishers.push_back(conn);

  double cpu_at_start = process_cpu_seconds();
  if (!active_publishers.empty() && result.subscribers_connected > 0) {
    const auto publisher_count = static_cast<std::uint64_t>(active_publishers.size());
    const auto start = Clock::now() + std::chrono::milliseconds(100);
    const auto publish_end =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config.duration_s));
    for (std::uint64_t j = 0; full_speed && j < publisher_count; ++j) {
      auto& conn = active_publishers[j];
      asio::co_spawn(conn->worker.io, publish_window(conn, run, start, publish_end), asio::detached);
    }
    for (std::uint64_t j = 0; !full_speed && j < publisher_count; ++j) {
      PublishPlan plan;
      plan.count =
          result.target_messages / publisher_count + (j < result.target_messages % publisher_count ? 1 : 0);
      plan.period_s = static_cast<double>(publisher_count) / config.rate;
      plan.offset_s = static_cast<double>(j) / config.rate;
      plan.start = start;
      auto& conn = active_publishers[j];
      asio::co_spawn(conn->worker.io, publish(conn, run, plan), asio::detached);
    }

    auto sum = [&](std::atomic<std::uint64_t> Worker::*field) {
      std::uint64_t total = 0;
      for (auto& worker : workers) total += (worker.get()->*field).load(std::memory_order_relaxed);
      return total;
    };
    const auto planned_end =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config.duration_s));
    const auto drain =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config.drain_s));
    // A publisher that falls behind may finish late; past this it is cut off.
    const auto hard_end =
        planned_end + drain + std::max<Clock::duration>(std::chrono::seconds(10), planned_end - start);
    progress(full_speed ? fmt::format("publishing at full speed, window {} per publisher", config.window)
                        : "publishing " + std::to_string(result.target_messages) + " messages");
    std::this_thread::sleep_until(planned_end);
    progress("draining");
    std::optional<Clock::time_point> drain_end;
    for (;;) {
      auto now = Clock::now();
      if (!drain_end && run.publishers_done.load() == static_cast<int>(publisher_count))
        drain_end = std::max(now, planned_end) + drain;
      if (drain_end) {
        std::uint64_t published = sum(&Worker::published);
        std::uint64_t expected = published * static_cast<std::uint64_t>(result.subscribers_connected);
        if (sum(&Worker::delivered) >= expected && sum(&Worker::acked) >= published) {
          result.drained = true;
          break;
        }
        if (now >= *drain_end) break;
      }
      if (now >= hard_end) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } else {
    progress("nothing to publish: no publisher or no subscriber connected");
  }
  run.stopping = true;
  if (config.before_close) config.before_close();
  progress("closing connections");
  result.bench_cpu_s = process_cpu_seconds() - cpu_at_start;

  for (auto* group : {&subscribers, &publishers})
    for (auto& conn : *group) asio::post(conn->worker.io, [conn] { conn->close(); });
  for (auto& worker : workers) worker->guard.reset();
  auto give_up = Clock::now() + std::chrono::seconds(5);
  while (run.threads_running.load() > 0 && Clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (run.threads_running.load() > 0) progress("io threads still busy after 5 s; stopping them");
  for (auto& worker : workers) worker->io.stop();
  for (auto& worker : workers) worker->thread.join();
  progress("closed");

  std::int64_t first_send = std::numeric_limits<std::int64_t>::max();
  std::int64_t last_send = 0;
  std::int64_t last_delivery = 0;
  for (auto& worker : workers) {
    result.published += worker->published.load();
    result.acked += worker->acked.load();
    result.delivered += worker->delivered.load();
    result.duplicates += worker->duplicates;
    result.foreign += worker->foreign;
    result.latency.merge(worker->latency);
    first_send = std::min(first_send, worker->first_send_ns);
    last_send = std::max(last_send, worker->last_send_ns);
    last_delivery = std::max(last_delivery, worker->last_delivery_ns);
    for (const auto& [code, count] : worker->errors) result.server_errors[code] += count;
    if (result.first_server_error.empty()) result.first_server_error = worker->first_error;
  }
  for (auto& conn : subscribers) {
    if (!conn->established) continue;
    result.reordered += conn->tracker.reordered();
    result.seq_gaps += conn->seq.gaps();
    result.seq_regressions += conn->seq.regressions();
  }
  for (auto& worker : workers) {
    result.dropped_subscribers += worker->dropped_subscribers;
    result.dropped_publishers += worker->dropped_publishers;
  }
  result.expected = result.published * static_cast<std::uint64_t>(result.subscribers_connected);
  if (result.published > 0) {
    result.publish_span_s = static_cast<double>(last_send - first_send) / 1e9;
    result.delivery_span_s = static_cast<double>(std::max(last_delivery, last_send) - first_send) / 1e9;
  }
  return result;
}

}  // namespace rtmc::bench
