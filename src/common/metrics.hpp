#pragma once
// The metrics registry of one role (api, gateway, syncer): the role owns one
// and passes it to the components that count, so there is no global registry.
// Two kinds of metrics live in it:
//   - counters and gauges the components update themselves (prometheus-cpp's
//     core registry: counter(), gauge(), counter_family());
//   - collectors: functions that read state kept elsewhere (the gateway's
//     close-reason atomics) when /metrics is scraped.
// render() produces the Prometheus text format; the role serves it with its
// own HTTP code (no civetweb exposer).
//
// Threading: every member is safe to call from any thread at once. Metric
// references stay valid as long as the Registry.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace rtmc::metrics {

// Content-Type of render()'s text.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

using Labels = std::map<std::string, std::string>;

// Builds the families of a scrape; called on the scraping thread.
using Collector = std::function<std::vector<prometheus::MetricFamily>()>;

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Adding a name again returns the same family (same help and type), so two
  // components may share one.
  prometheus::Family<prometheus::Counter>& counter_family(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name, const std::string& help);
  prometheus::Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  prometheus::Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  // Histograms are in seconds (or a plain count) with fixed buckets. Observe()
  // takes the histogram's mutex: fine once per publish or per batch, not
  // once per delivered frame.
  prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                              const std::string& help);
  prometheus::Histogram& histogram(const std::string& name, const std::string& help,
                                   const prometheus::Histogram::BucketBoundaries& buckets,
                                   const Labels& labels = {});

  void add_collector(Collector collector);

  // Every family, in the Prometheus text exposition format 0.0.4.
  std::string render() const;

  prometheus::Registry& core() { return core_; }

 private:
  prometheus::Registry core_;
  mutable std::mutex mutex_;  // guards collectors_ (scrapes are rare; adds rarer)
  std::vector<Collector> collectors_;
};

// Bucket bounds, in seconds, of the latency histograms (publish->confirm,
// accept->fan-out): 0.5 ms to 10 s.
const prometheus::Histogram::BucketBoundaries& latency_buckets();
// Bucket bounds of the batch-size histograms: 1 to 4096, powers of two.
const prometheus::Histogram::BucketBoundaries& batch_size_buckets();

// A histogram kept in atomics, for hot paths and for components that may
// outlive (or die before) the registry: observe() takes no lock and
// allocates nothing; a collector renders it (histogram_family below).
// Buckets are fixed at construction.
//
// Threading: observe() and snapshot() from any thread at once. A scrape may
// see an observation in its bucket and not yet in the sum (never counted
// twice, never lost).
class Histogram {
 public:
  explicit Histogram(const std::vector<double>& bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double value);
  // `value` observed `times` times at once (a batch whose messages share a
  // measure).
  void observe(double value, std::uint64_t times);
  // Cumulative bucket counts as Prometheus wants them.
  prometheus::ClientMetric snapshot() const;
  std::uint64_t count() const;
  double sum() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // per bucket, +Inf last; not cumulative
  std::atomic<double> sum_{0};
};

prometheus::MetricFamily histogram_family(std::string name, std::string help,
                                          const std::vector<std::pair<Labels, const Histogram*>>& series);

// The name of each family rendered: for tests that compare what is exposed
// with what the dashboard and the docs use.
std::vector<std::string> family_names(const std::string& rendered_text);

// One sample of a family built by a collector.
struct Sample {
  Labels labels;
  double value = 0;
};
prometheus::MetricFamily counter_family(std::string name, std::string help,
                                        const std::vector<Sample>& samples);
prometheus::MetricFamily gauge_family(std::string name, std::string help, const std::vector<Sample>& samples);

}  // namespace rtmc::metrics
