#include "common/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <limits>

namespace rtmc::metrics {

prometheus::Family<prometheus::Counter>& Registry::counter_family(const std::string& name,
                                                                  const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(core_);
}

prometheus::Family<prometheus::Gauge>& Registry::gauge_family(const std::string& name,
                                                              const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(core_);
}

prometheus::Counter& Registry::counter(const std::string& name, const std::string& help,
                                       const Labels& labels) {
  return counter_family(name, help).Add(labels);
}

prometheus::Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  return gauge_family(name, help).Add(labels);
}

prometheus::Family<prometheus::Histogram>& Registry::histogram_family(const std::string& name,
                                                                      const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(core_);
}

prometheus::Histogram& Registry::histogram(const std::string& name, const std::string& help,
                                           const prometheus::Histogram::BucketBoundaries& buckets,
                                           const Labels& labels) {
  return histogram_family(name, help).Add(labels, buckets);
}

const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return buckets;
}

const prometheus::Histogram::BucketBoundaries& batch_size_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets{1,   2,   4,   8,    16,   32,  64,
                                                               128, 256, 512, 1024, 2048, 4096};
  return buckets;
}

std::vector<std::string> family_names(const std::string& text) {
  std::vector<std::string> names;
  std::string_view rest(text);
  constexpr std::string_view kType = "# TYPE ";
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const auto line = rest.substr(0, end);
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    if (line.substr(0, kType.size()) != kType) continue;
    const auto name = line.substr(kType.size());
    names.emplace_back(name.substr(0, name.find(' ')));
  }
  return names;
}

void Registry::add_collector(Collector collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string Registry::render() const {
  auto families = core_.Collect();
  {
    std::lock_guard lock(mutex_);
    for (const auto& collector : collectors_) {
      auto more = collector();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

namespace {

prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type,
                                const std::vector<Sample>& samples) {
  prometheus::MetricFamily result{std::move(name), std::move(help), type, {}};
  for (const auto& sample : samples) {
    prometheus::ClientMetric metric;
    for (const auto& [label, value] : sample.labels) metric.label.push_back({label, value});
    if (type == prometheus::MetricType::Counter)
      metric.counter.value = sample.value;
    else
      metric.gauge.value = sample.value;
    result.metric.push_back(std::move(metric));
  }
  return result;
}

}  // namespace

prometheus::MetricFamily counter_family(std::string name, std::string help,
                                        const std::vector<Sample>& samples) {
  return family(std::move(name), std::move(help), prometheus::MetricType::Counter, samples);
}

prometheus::MetricFamily gauge_family(std::string name, std::string help,
                                      const std::vector<Sample>& samples) {
  return family(std::move(name), std::move(help), prometheus::MetricType::Gauge, samples);
}

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)) {}

void Histogram::observe(double value) {
  observe(value, 1);
}

void Histogram::observe(double value, std::uint64_t times) {
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(times, std::memory_order_relaxed);
  sum_.fetch_add(value * static_cast<double>(times), std::memory_order_relaxed);
}

prometheus::ClientMetric Histogram::snapshot() const {
  prometheus::ClientMetric metric;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back(bucket);
  }
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = sum_.load(std::memory_order_relaxed);
  return metric;
}

std::uint64_t Histogram::count() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

double Histogram::sum() const {
  return sum_.load(std::memory_order_relaxed);
}

prometheus::MetricFamily histogram_family(std::string name, std::string help,
                                          const std::vector<std::pair<Labels, const Histogram*>>& series) {
  prometheus::MetricFamily result{std::move(name), std::move(help), prometheus::MetricType::Histogram, {}};
  for (const auto& [labels, histogram] : series) {
    auto metric = histogram->snapshot();
    for (const auto& [label, value] : labels) metric.label.push_back({label, value});
    result.metric.push_back(std::move(metric));
  }
  return result;
}

}  // namespace rtmc::metrics
