// syncer-bench: how fast a Syncer carries messages from the sync streams into
// PostgreSQL. A measurement, not a check (no pass/fail, not a ctest test).
//
// Rows: for each batch size, M messages (in --rooms rooms over --shards
// streams) are XADDed first, as the sequencing script writes them; then one
// Syncer starts and the time until every one is in PostgreSQL (and trimmed
// from the streams) gives messages/s.
//
// Outage: with --outage-rate R, a backlog of R x --outage-s messages (what a
// PostgreSQL outage of that length leaves in Redis at R messages/s) is filled,
// then a Syncer starts while a producer keeps adding R messages/s; the time
// until the streams hold no more than one batch is the drain time.
//
// The streams are of shards far above any deployment's (unique per run) and
// the rooms unique, so it can share services with a running stack; both are
// deleted at the end (streams and the rows of its rooms).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/keys.hpp"
#include "protocol/frames.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "syncer/syncer.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using namespace rtmc;

struct Run {
  RedisConfig redis;
  PgConfig pg;
  std::vector<std::uint32_t> shards;
  std::vector<std::string> rooms;
  std::int64_t next = 0;  // message index: room next % rooms, seq next / rooms + 1

  // XADDs n more messages (pipelines of 1000).
  void fill(redis::Connection& connection, std::int64_t n) {
    std::vector<std::vector<std::string>> commands;
    const auto count = static_cast<std::int64_t>(rooms.size());
    for (std::int64_t k = 0; k < n; ++k, ++next) {
      const auto& room = rooms[static_cast<std::size_t>(next % count)];
      const auto seq = next / count + 1;
      std::string id("b");
      id += std::to_string(next);
      const auto shard = shards[static_cast<std::size_t>(next % count) % shards.size()];
      commands.push_back(
          {"XADD", keys::sync_stream(shard), "*", "room", room, "seq", std::to_string(seq), "f",
           protocol::message_frame(room, seq, id, "bench_user",
                                   "a message body of about sixty bytes, like a short chat line",
                                   1700000000000 + next)});
      if (commands.size() == 1000) {
        connection.pipeline(commands);
        commands.clear();
      }
    }
    if (!commands.empty()) connection.pipeline(commands);
  }

  std::int64_t backlog(redis::Connection& connection) const {
    std::int64_t total = 0;
    for (auto shard : shards) total += connection.command({"XLEN", keys::sync_stream(shard)}).integer;
    return total;
  }

  void clean(redis::Connection& connection, pg::Connection& db) {
    for (auto shard : shards) connection.command({"DEL", keys::sync_stream(shard)});
    db.exec("DELETE FROM messages WHERE room = ANY($1::text[])", {pg::text_array(rooms)});
    db.exec("DELETE FROM rooms WHERE room = ANY($1::text[])", {pg::text_array(rooms)});
    next = 0;
  }
};

syncer::SyncerConfig config_of(const Run& run, std::size_t batch_size) {
  syncer::SyncerConfig config;
  config.redis = run.redis;
  config.pg = run.pg;
  config.shards = run.shards;
  config.batch_size = batch_size;
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"syncer-bench: messages/s from the Redis sync streams into PostgreSQL, by batch size"};
  std::string redis_text = "127.0.0.1:6380";
  std::string pg_text = PgConfig{}.conninfo;
  std::int64_t messages = 200000;
  std::vector<std::size_t> batch_sizes{100, 1000, 5000};
  std::size_t room_count = 100;
  std::uint32_t shard_count = 16;
  std::int64_t outage_rate = 0;
  std::int64_t outage_s = 20;
  app.add_option("--redis", redis_text, "Redis (host:port or redis:// URL)")->envname("RTMC_REDIS");
  app.add_option("--pg", pg_text, "PostgreSQL conninfo")->envname("RTMC_PG");
  app.add_option("--messages", messages, "Messages per row")->capture_default_str();
  app.add_option("--batch-sizes", batch_sizes, "Batch sizes to measure")->delimiter(',');
  app.add_option("--rooms", room_count, "Rooms the messages go to")->capture_default_str();
  app.add_option("--shards", shard_count, "Sync streams they are spread over")->capture_default_str();
  app.add_option("--outage-rate", outage_rate, "Messages/s for the outage drain row (0 = skip it)");
  app.add_option("--outage-s", outage_s, "Outage length the backlog stands for")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    Run run;
    run.redis = RedisConfig::parse(redis_text);
    run.redis.timeout = 10s;
    run.pg.conninfo = pg_text;
    std::random_device device;
    const auto tag = std::uniform_int_distribution<std::uint32_t>(1, 1u << 30)(device);
    for (std::uint32_t i = 0; i < shard_count; ++i) run.shards.push_back(100000 + tag % 1000000 * 64 + i);
    for (std::size_t i = 0; i < room_count; ++i) {
      std::string room("bench-");
      room += std::to_string(tag);
      room += '-';
      room += std::to_string(i);
      run.rooms.push_back(room);
    }
    redis::Connection connection(run.redis);
    pg::Connection db(run.pg);
    pg::migrate(db);
    run.clean(connection, db);

    std::printf("%-10s %10s %10s %12s %10s\n", "batch", "messages", "seconds", "msg/s", "batches");
    for (auto batch_size : batch_sizes) {
      run.fill(connection, messages);
      const auto started = Clock::now();
      std::uint64_t batches = 0;
      {
        syncer::Syncer syncer(config_of(run, batch_size));
        while (syncer.counters().inserted < static_cast<std::uint64_t>(messages))
          std::this_thread::sleep_for(5ms);
        batches = syncer.counters().batches;
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      std::printf("%-10zu %10lld %10.2f %12.0f %10llu\n", batch_size, static_cast<long long>(messages),
                  seconds, static_cast<double>(messages) / seconds, static_cast<unsigned long long>(batches));
      std::fflush(stdout);
      run.clean(connection, db);
    }

    if (outage_rate > 0) {
      const auto backlog = outage_rate * outage_s;
      run.fill(connection, backlog);
      const auto started = Clock::now();
      std::atomic<bool> producing{true};
      std::thread producer([&] {
        redis::Connection own(run.redis);
        auto next_at = Clock::now();
        while (producing) {
          run.fill(own, outage_rate / 10);
          next_at += 100ms;
          std::this_thread::sleep_until(next_at);
        }
      });
      double seconds = 0;
      {
        syncer::Syncer syncer(config_of(run, 1000));
        while (run.backlog(connection) > 1000) std::this_thread::sleep_for(20ms);
        seconds = std::chrono::duration<double>(Clock::now() - started).count();
        producing = false;
        producer.join();
      }
      std::printf(
          "outage backlog of %lld messages (%lld s at %lld msg/s) drained in %.1f s while %lld msg/s "
          "kept coming\n",
          static_cast<long long>(backlog), static_cast<long long>(outage_s),
          static_cast<long long>(outage_rate), seconds, static_cast<long long>(outage_rate));
      run.clean(connection, db);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "syncer-bench: %s\n", error.what());
    return 1;
  }
  return 0;
}
