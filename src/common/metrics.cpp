#include "common/metrics.hpp"

#include <prometheus/text_serializer.h>

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

}  // namespace rtmc::metrics
