#include "common/metrics.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace rtmc::metrics {
namespace {

TEST(MetricsRegistry, RendersCountersAndGaugesAsPrometheusText) {
  Registry registry;
  auto& requests = registry.counter_family("rtmc_test_requests_total", "Requests.");
  requests.Add({{"status", "200"}}).Increment(2);
  registry.gauge("rtmc_test_open", "Open things.").Set(3);
  const auto text = registry.render();
  EXPECT_NE(text.find("# HELP rtmc_test_requests_total Requests.\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE rtmc_test_requests_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_requests_total{status=\"200\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE rtmc_test_open gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_open 3\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, SameNameIsTheSameSeries) {
  Registry registry;
  registry.counter("rtmc_test_total", "Help.").Increment();
  registry.counter("rtmc_test_total", "Help.").Increment();
  EXPECT_NE(registry.render().find("rtmc_test_total 2\n"), std::string::npos) << registry.render();
}

TEST(MetricsRegistry, CollectorsAreReadAtEveryScrape) {
  Registry registry;
  double closed = 1;
  registry.add_collector([&closed] {
    return std::vector{counter_family("rtmc_test_closed_total", "Closed, by reason.",
                                      {{{{"reason", "slow_consumer"}}, closed}, {{{"reason", "idle"}}, 0}}),
                       gauge_family("rtmc_test_level", "A level.", {{{}, 7}})};
  });
  auto text = registry.render();
  EXPECT_NE(text.find("# TYPE rtmc_test_closed_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_closed_total{reason=\"slow_consumer\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_closed_total{reason=\"idle\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_level 7\n"), std::string::npos) << text;
  closed = 5;
  text = registry.render();
  EXPECT_NE(text.find("rtmc_test_closed_total{reason=\"slow_consumer\"} 5\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, TwoRegistriesAreIndependent) {
  Registry a;
  Registry b;
  a.counter("rtmc_test_total", "Help.").Increment();
  EXPECT_EQ(b.render().find("rtmc_test_total"), std::string::npos);
}

TEST(MetricsRegistry, RendersHistogramsAndListsFamilyNames) {
  Registry registry;
  auto& latency = registry.histogram("rtmc_test_latency_seconds", "Latency.", latency_buckets());
  latency.Observe(0.003);
  latency.Observe(20);
  registry.counter("rtmc_test_total", "Things.");
  const auto text = registry.render();
  EXPECT_NE(text.find("rtmc_test_latency_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_latency_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_latency_seconds_count 2\n"), std::string::npos) << text;
  auto names = family_names(text);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"rtmc_test_latency_seconds", "rtmc_test_total"}));
}

TEST(MetricsHistogram, AtomicHistogramRendersCumulativeBuckets) {
  Histogram sizes(batch_size_buckets());
  sizes.observe(1);
  sizes.observe(3, 2);
  sizes.observe(100000);
  EXPECT_EQ(sizes.count(), 4u);
  EXPECT_DOUBLE_EQ(sizes.sum(), 100007);
  Registry registry;
  registry.add_collector([&sizes] {
    return std::vector{histogram_family("rtmc_test_batch_size", "Sizes.", {{{{"role", "x"}}, &sizes}})};
  });
  const auto text = registry.render();
  EXPECT_NE(text.find("# TYPE rtmc_test_batch_size histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_batch_size_bucket{role=\"x\",le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_batch_size_bucket{role=\"x\",le=\"2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_batch_size_bucket{role=\"x\",le=\"4\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_batch_size_bucket{role=\"x\",le=\"+Inf\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_test_batch_size_count{role=\"x\"} 4\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace rtmc::metrics
