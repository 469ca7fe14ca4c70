#include "report.hpp"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <functional>

namespace rtmc::bench {

namespace {

std::string milliseconds(std::uint64_t nanoseconds) {
  return fmt::format("{:.3f}", static_cast<double>(nanoseconds) / 1e6);
}

std::string mebibytes(std::uint64_t kib) {
  return fmt::format("{:.1f}", static_cast<double>(kib) / 1024.0);
}

double loss_percent(const LoadResult& load) {
  if (load.expected == 0) return 0;
  return 100.0 * static_cast<double>(load.expected - std::min(load.delivered, load.expected)) /
         static_cast<double>(load.expected);
}

double deliveries_per_s(const LoadResult& load) {
  return load.delivery_span_s > 0 ? static_cast<double>(load.delivered) / load.delivery_span_s : 0;
}

std::string error_summary(const LoadResult& load) {
  std::uint64_t total = 0;
  for (const auto& [code, count] : load.server_errors) total += count;
  return std::to_string(total);
}

struct Row {
  std::string label;
  std::function<std::string(const RunReport&)> value;
};

std::vector<Row> rows(const BenchParameters& parameters) {
  auto server = [](auto pick) {
    return [pick](const RunReport& run) -> std::string {
      return run.server_before && run.server_after ? pick(*run.server_before, *run.server_after) : "-";
    };
  };
  return {
      {"subscribers connected",
       [&](const RunReport& r) {
         return fmt::format("{}/{}", r.load.subscribers_connected, parameters.subscribers);
       }},
      {"publishers connected",
       [&](const RunReport& r) {
         return fmt::format("{}/{}", r.load.publishers_connected, parameters.publishers);
       }},
      {"connect failures", [](const RunReport& r) { return std::to_string(r.load.connect_failures); }},
      {"connect+ramp s", [](const RunReport& r) { return fmt::format("{:.2f}", r.load.ramp_s); }},
      {"messages planned", [](const RunReport& r) { return std::to_string(r.load.target_messages); }},
      {"published", [](const RunReport& r) { return std::to_string(r.load.published); }},
      {"acked", [](const RunReport& r) { return std::to_string(r.load.acked); }},
      {"publish span s", [](const RunReport& r) { return fmt::format("{:.2f}", r.load.publish_span_s); }},
      {"expected deliveries", [](const RunReport& r) { return std::to_string(r.load.expected); }},
      {"delivered", [](const RunReport& r) { return std::to_string(r.load.delivered); }},
      {"lost (by drain end)",
       [](const RunReport& r) {
         std::uint64_t lost = r.load.expected - std::min(r.load.delivered, r.load.expected);
         return fmt::format("{} ({:.3f}%)", lost, loss_percent(r.load));
       }},
      {"duplicates", [](const RunReport& r) { return std::to_string(r.load.duplicates); }},
      {"out of order", [](const RunReport& r) { return std::to_string(r.load.reordered); }},
      {"seq gaps/regressions",
       [](const RunReport& r) {
         return r.has_seq ? fmt::format("{}/{}", r.load.seq_gaps, r.load.seq_regressions)
                          : std::string("n/a");
       }},
      {"dropped subs/pubs",
       [](const RunReport& r) {
         return fmt::format("{}/{}", r.load.dropped_subscribers, r.load.dropped_publishers);
       }},
      {"server errors", [](const RunReport& r) { return error_summary(r.load); }},
      {"foreign messages", [](const RunReport& r) { return std::to_string(r.load.foreign); }},
      {"all delivered+acked", [](const RunReport& r) { return std::string(r.load.drained ? "yes" : "NO"); }},
      {"deliveries/s", [](const RunReport& r) { return fmt::format("{:.0f}", deliveries_per_s(r.load)); }},
      {"latency p50 ms", [](const RunReport& r) { return milliseconds(r.load.latency.percentile(50)); }},
      {"latency p90 ms", [](const RunReport& r) { return milliseconds(r.load.latency.percentile(90)); }},
      {"latency p99 ms", [](const RunReport& r) { return milliseconds(r.load.latency.percentile(99)); }},
      {"latency p99.9 ms", [](const RunReport& r) { return milliseconds(r.load.latency.percentile(99.9)); }},
      {"latency max ms", [](const RunReport& r) { return milliseconds(r.load.latency.max()); }},
      {"latency mean ms",
       [](const RunReport& r) { return fmt::format("{:.3f}", r.load.latency.mean() / 1e6); }},
      {"server RSS before MiB",
       server([](const ProcessSample& before, const ProcessSample&) { return mebibytes(before.rss_kib); })},
      {"server RSS after MiB",
       server([](const ProcessSample&, const ProcessSample& after) { return mebibytes(after.rss_kib); })},
      {"server peak RSS MiB", server([](const ProcessSample&, const ProcessSample& after) {
         return mebibytes(after.peak_rss_kib);
       })},
      {"server CPU s", server([](const ProcessSample& before, const ProcessSample& after) {
         return fmt::format("{:.2f}", after.cpu_s - before.cpu_s);
       })},
      {"bench CPU s (publish+drain)",
       [](const RunReport& r) { return fmt::format("{:.2f}", r.load.bench_cpu_s); }},
  };
}

}  // namespace

void print_report(std::FILE* out, const BenchParameters& parameters, const std::vector<RunReport>& runs) {
  const std::string pace = parameters.window > 0
                               ? fmt::format("full speed with {} in flight per publisher", parameters.window)
                               : fmt::format("R={} msg/s", parameters.rate);
  fmt::print(
      out, "\nrtmc-bench: S={} subscribers, P={} publishers, {}, D={} s, body {} B, {} io threads, room {}\n",
      parameters.subscribers, parameters.publishers, pace, parameters.duration_s, parameters.body_bytes,
      parameters.threads, parameters.room);
  constexpr int label_width = 28;
  constexpr int column_width = 18;
  std::string header = fmt::format("{:<{}}", "", label_width);
  for (const auto& run : runs) header += fmt::format("{:>{}}", run.name, column_width);
  fmt::print(out, "{}\n", header);
  for (const auto& row : rows(parameters)) {
    std::string line = fmt::format("{:<{}}", row.label, label_width);
    for (const auto& run : runs) line += fmt::format("{:>{}}", run.ran ? row.value(run) : "-", column_width);
    fmt::print(out, "{}\n", line);
  }
  for (const auto& run : runs) {
    if (!run.ran) fmt::print(out, "{}: not run: {}\n", run.name, run.not_run_reason);
    if (!run.load.first_connect_error.empty())
      fmt::print(out, "{}: first connect error: {}\n", run.name, run.load.first_connect_error);
    if (!run.load.server_errors.empty()) {
      std::string codes;
      for (const auto& [code, count] : run.load.server_errors) codes += fmt::format(" {}={}", code, count);
      fmt::print(out, "{}: server errors:{} (first: {})\n", run.name, codes, run.load.first_server_error);
    }
  }
  std::fflush(out);
}

std::string report_json(const BenchParameters& parameters, const std::vector<RunReport>& runs) {
  namespace json = boost::json;
  json::object root{{"subscribers", parameters.subscribers},
                    {"publishers", parameters.publishers},
                    {"rate", parameters.rate},
                    {"window", parameters.window},
                    {"duration_s", parameters.duration_s},
                    {"body_bytes", parameters.body_bytes},
                    {"threads", parameters.threads},
                    {"room", parameters.room}};
  json::object results;
  for (const auto& run : runs) {
    json::object entry{{"ran", run.ran}};
    if (!run.ran) entry["reason"] = run.not_run_reason;
    const LoadResult& load = run.load;
    entry["subscribers_connected"] = load.subscribers_connected;
    entry["publishers_connected"] = load.publishers_connected;
    entry["connect_failures"] = load.connect_failures;
    entry["ramp_s"] = load.ramp_s;
    entry["published"] = load.published;
    entry["acked"] = load.acked;
    entry["expected"] = load.expected;
    entry["delivered"] = load.delivered;
    entry["lost"] = load.expected - std::min(load.delivered, load.expected);
    entry["duplicates"] = load.duplicates;
    entry["reordered"] = load.reordered;
    if (run.has_seq) {
      entry["seq_gaps"] = load.seq_gaps;
      entry["seq_regressions"] = load.seq_regressions;
    }
    entry["dropped_subscribers"] = load.dropped_subscribers;
    entry["dropped_publishers"] = load.dropped_publishers;
    json::object errors;
    for (const auto& [code, count] : load.server_errors) errors[code] = count;
    entry["server_errors"] = std::move(errors);
    entry["deliveries_per_s"] = deliveries_per_s(load);
    entry["latency_ms"] = json::object{
        {"p50", load.latency.percentile(50) / 1e6}, {"p90", load.latency.percentile(90) / 1e6},
        {"p99", load.latency.percentile(99) / 1e6}, {"p99_9", load.latency.percentile(99.9) / 1e6},
        {"max", load.latency.max() / 1e6},          {"mean", load.latency.mean() / 1e6}};
    if (run.server_before && run.server_after) {
      entry["server_rss_before_kib"] = run.server_before->rss_kib;
      entry["server_rss_after_kib"] = run.server_after->rss_kib;
      entry["server_peak_rss_kib"] = run.server_after->peak_rss_kib;
      entry["server_cpu_s"] = run.server_after->cpu_s - run.server_before->cpu_s;
    }
    entry["bench_cpu_s"] = load.bench_cpu_s;
    results[run.name] = std::move(entry);
  }
  root["runs"] = std::move(results);
  return json::serialize(root) + "\n";
}

}  // namespace rtmc::bench
