// amqp-publish-bench: throughput of rtmc::amqp::Publisher by confirm window.
// A measurement, not a check (no pass/fail, not a ctest test). Each row
// publishes 128-byte-ish persistent messages and waits for every answer;
// rows into a quorum queue (ingest-style: quorum, single active consumer)
// show what the broker's confirms cost, rows without a queue (unroutable,
// answered at once) the cost of the client and the broker's front end alone.
// The client CPU per message is measured with getrusage and, unlike msg/s,
// hardly depends on how busy the machine (and the broker on it) is.
//
// The queue has a unique name, is emptied (deleted and declared again) before
// every quorum row and deleted at the end, so the program can share a broker.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "store/amqp.hpp"

namespace {

using namespace std::chrono_literals;
using rtmc::AmqpConfig;
using rtmc::amqp::Connection;
using rtmc::amqp::Message;
using rtmc::amqp::Publisher;
using rtmc::amqp::PublishStatus;
using Clock = std::chrono::steady_clock;

std::string unique_name(const std::string& prefix) {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return prefix + "." + std::to_string(digits(device) % 1000000000000ULL);
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Counts answers (from the publisher's thread) and remembers when the last
// one came.
class Answers {
 public:
  explicit Answers(std::size_t expected) : expected_(expected) {}

  std::function<void(PublishStatus)> slot() {
    return [this](PublishStatus status) {
      std::lock_guard lock(mutex_);
      ++by_status_[static_cast<std::size_t>(status)];
      if (++answered_ == expected_) {
        last_ = Clock::now();
        all_answered_.notify_all();
      }
    };
  }
  bool wait(std::chrono::seconds timeout) {
    std::unique_lock lock(mutex_);
    return all_answered_.wait_for(lock, timeout, [&] { return answered_ >= expected_; });
  }
  std::size_t answered() {
    std::lock_guard lock(mutex_);
    return answered_;
  }
  std::size_t count(PublishStatus status) {
    std::lock_guard lock(mutex_);
    return by_status_[static_cast<std::size_t>(status)];
  }
  Clock::time_point last() {
    std::lock_guard lock(mutex_);
    return last_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_answered_;
  const std::size_t expected_;
  std::size_t answered_ = 0;
  std::size_t by_status_[4] = {};
  Clock::time_point last_;
};

// Deletes the benchmark's queue however the program ends (short of a signal).
class QueueGuard {
 public:
  QueueGuard(const AmqpConfig& config, std::string name) : config_(config), name_(std::move(name)) {}
  ~QueueGuard() {
    try {
      Connection connection(config_);
      connection.delete_queue(name_);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "could not delete queue %s: %s\n", name_.c_str(), error.what());
    }
  }
  QueueGuard(const QueueGuard&) = delete;
  QueueGuard& operator=(const QueueGuard&) = delete;

  void recreate_empty() {
    Connection connection(config_);
    connection.delete_queue(name_);
    connection.declare_ingest_queue(name_);
  }
  const std::string& name() const { return name_; }

 private:
  AmqpConfig config_;
  std::string name_;
};

struct Row {
  std::size_t window;
  bool quorum;
};

// Returns false if a row did not get all its answers in time or got answers
// other than the expected kind.
bool run_row(const AmqpConfig& config, QueueGuard& queue, const Row& row, std::size_t count) {
  const std::string padding(120, 'x');
  std::string routing_key = unique_name("rtmc.bench.nowhere");
  if (row.quorum) {
    queue.recreate_empty();
    routing_key = queue.name();
  }
  Publisher::Options options;
  options.window = row.window;
  options.give_up_after = 120s;
  options.ingest_shards = 0;  // the shared ingest queues are not ours to declare
  Publisher publisher(config, options);

  auto message = [&](std::string body) {
    Message result;
    result.routing_key = routing_key;
    result.body = std::move(body);
    return result;
  };
  // Timed from a live connection: connecting is not publishing.
  Answers warm_up(1);
  publisher.publish(message("warm-up"), warm_up.slot());
  if (!warm_up.wait(30s)) {
    std::fprintf(stderr, "no answer to the warm-up message within 30 s: is the broker at %s up?\n",
                 config.url.c_str());
    return false;
  }

  Answers answers(count);
  const double cpu_before = process_cpu_seconds();
  const auto start = Clock::now();
  for (std::size_t i = 0; i < count; ++i) publisher.publish(message(padding), answers.slot());
  if (!answers.wait(300s)) {
    std::fprintf(stderr, "window %zu: only %zu of %zu answered within 300 s\n", row.window,
                 answers.answered(), count);
    return false;
  }
  const double seconds = std::chrono::duration<double>(answers.last() - start).count();
  const double cpu_us = (process_cpu_seconds() - cpu_before) * 1e6 / static_cast<double>(count);
  const PublishStatus expected = row.quorum ? PublishStatus::confirmed : PublishStatus::unroutable;
  const std::size_t as_expected = answers.count(expected);
  std::printf("%-12s  window %4zu  %7zu msgs  %7.2f s  %8.0f msg/s  client CPU %6.1f us/msg",
              row.quorum ? "quorum queue" : "no queue", row.window, count, seconds,
              static_cast<double>(count) / seconds, cpu_us);
  if (as_expected != count) {
    std::printf("  (only %zu %s)", as_expected, rtmc::amqp::to_string(expected));
  }
  std::printf("\n");
  std::fflush(stdout);
  return as_expected == count;
}

}  // namespace

int main(int argc, char** argv) {
  AmqpConfig config;
  std::size_t count = 30000;
  CLI::App app{
      "amqp-publish-bench: confirmed-publish throughput of rtmc's AMQP Publisher by confirm window.\n"
      "Publishes --count ~128-byte persistent messages per row (window 1 rows: count/15, at least 1)\n"
      "into a uniquely named quorum queue of its own (deleted at the end) and, for comparison, to\n"
      "a routing key without a queue; prints msg/s and the client's CPU microseconds per message."};
  app.add_option("--amqp", config.url, "broker URL")->envname("RTMC_AMQP")->capture_default_str();
  app.add_option("--count", count, "messages per row")->check(CLI::Range(1, 10000000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::vector<Row> rows{{1, false},  {500, false}, {1, true},   {10, true},
                              {100, true}, {500, true},  {1000, true}};
  try {
    QueueGuard queue(config, unique_name("rtmc.bench.amqp"));
    std::printf("broker %s, queue %s\n", config.url.c_str(), queue.name().c_str());
    bool all_good = true;
    for (const auto& row : rows) {
      const std::size_t row_count = row.window == 1 ? std::max<std::size_t>(1, count / 15) : count;
      if (!run_row(config, queue, row, row_count)) all_good = false;
    }
    return all_good ? 0 : 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "amqp-publish-bench: %s\n", error.what());
    return 1;
  }
}
