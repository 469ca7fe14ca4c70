// sequence-bench: what the sequencer's Redis step costs under an AOF fsync
// policy. A measurement, not a check (not a ctest test). One connection, as
// the sequencer has, runs rooms::sequence on batches of `--batch` messages
// spread over `--rooms` rooms (one script call per room, pipelined), back to
// back for `--seconds`, and prints messages/s and the latency of a batch (a
// sequenced message is acked only after its batch's reply, so this is what
// the fsync policy adds to every message). Run it once per policy against a
// redis-server with AOF on (CONFIG SET appendfsync always|everysec between
// runs, or --policy to have it set). Rooms have names of their own and a
// large block installed, so the guard costs its one HMGET per call as in
// production; their keys are deleted at the end.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/keys.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1,
                         static_cast<std::size_t>(p * static_cast<double>(values.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sequence-bench: the sequencing script's throughput and batch latency"};
  std::string redis_text = "127.0.0.1:6380";
  std::size_t rooms_count = 16;
  std::size_t batch = 256;
  double seconds = 5;
  std::size_t body = 128;
  std::string policy;
  app.add_option("--redis", redis_text, "host:port or redis:// URL")->capture_default_str();
  app.add_option("--rooms", rooms_count, "rooms the messages are spread over")->capture_default_str();
  app.add_option("--batch", batch, "messages per rooms::sequence call")->capture_default_str();
  app.add_option("--seconds", seconds, "duration")->capture_default_str();
  app.add_option("--body-bytes", body, "message body size")->capture_default_str();
  app.add_option("--policy", policy, "CONFIG SET appendfsync to this first (always|everysec|no)");
  CLI11_PARSE(app, argc, argv);

  try {
    auto config = rtmc::RedisConfig::parse(redis_text);
    rtmc::redis::Connection redis(config);
    if (!policy.empty()) {
      const auto reply = redis.command({"CONFIG", "SET", "appendfsync", policy});
      if (reply.is_error()) throw std::runtime_error("CONFIG SET appendfsync: " + reply.str);
    }
    const auto aof = redis.command({"CONFIG", "GET", "appendonly"});
    const auto fsync = redis.command({"CONFIG", "GET", "appendfsync"});
    const auto run_id = rtmc::rooms::server_run_id(redis);
    rtmc::rooms::SequenceSettings settings;
    settings.log_length = 1000;
    std::random_device device;
    const auto tag = std::to_string(device() % 1000000);
    std::vector<std::string> rooms;
    std::vector<rtmc::rooms::SeqBlock> blocks;
    for (std::size_t r = 0; r < rooms_count; ++r) {
      rooms.push_back("seqbench-" + tag + "-" + std::to_string(r));
      blocks.push_back({rooms.back(), 0, 1'000'000'000'000});
    }
    for (const auto& result : rtmc::rooms::install_seqs(redis, settings.shards, run_id, blocks))
      if (!result.error.empty()) throw std::runtime_error("install: " + result.error);

    const std::string body_text(body, 'x');
    std::uint64_t next_id = 0;
    std::uint64_t messages = 0;
    std::vector<double> batch_ms;
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      std::vector<rtmc::rooms::SequenceRequest> requests;
      requests.reserve(batch);
      for (std::size_t i = 0; i < batch; ++i, ++next_id) {
        const auto& room = rooms[next_id % rooms.size()];
        const auto id = std::to_string(next_id);
        requests.push_back(
            {room, id, "bench", R"({"type":"message","room":")" + room + R"(","seq":)",
             R"(,"id":")" + id + R"(","from":"bench","body":")" + body_text + R"(","ts":1})" + "\n"});
      }
      const auto t0 = Clock::now();
      const auto results = rtmc::rooms::sequence(redis, settings, run_id, requests);
      batch_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      for (const auto& result : results)
        if (result.status != rtmc::rooms::SequenceResult::Status::sequenced)
          throw std::runtime_error(std::string("not sequenced: ") + rtmc::rooms::to_string(result.status) +
                                   " " + result.error);
      messages += results.size();
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf(
        "appendonly=%s appendfsync=%s rooms=%zu batch=%zu body=%zuB: %.0f msg/s, batch p50 %.2f ms, p99 %.2f "
        "ms, "
        "max %.2f ms (%zu batches)\n",
        aof.elements.size() == 2 ? aof.elements[1].str.c_str() : "?",
        fsync.elements.size() == 2 ? fsync.elements[1].str.c_str() : "?", rooms_count, batch, body,
        static_cast<double>(messages) / elapsed, percentile(batch_ms, 0.5), percentile(batch_ms, 0.99),
        percentile(batch_ms, 1.0), batch_ms.size());

    // The rooms' keys; the shard sync streams keep what was appended (a
    // bench Redis, or a syncer, drains them).
    for (const auto& room : rooms) {
      const auto shard = rtmc::shard_of(room, settings.shards);
      redis.command({"DEL", rtmc::keys::room_seq(shard, room), rtmc::keys::room_log(shard, room),
                     rtmc::keys::room_seq_mark(shard, room)});
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sequence-bench: %s\n", error.what());
    return 1;
  }
}
