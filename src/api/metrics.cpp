#include "api/metrics.hpp"

namespace rtmc::api {
namespace {

constexpr std::array kPublishStatuses{amqp::PublishStatus::confirmed, amqp::PublishStatus::nacked,
                                      amqp::PublishStatus::unroutable, amqp::PublishStatus::unavailable,
                                      amqp::PublishStatus::overloaded};

std::size_t publish_index(amqp::PublishStatus result) {
  for (std::size_t i = 0; i < kPublishStatuses.size(); ++i)
    if (kPublishStatuses[i] == result) return i;
  return kPublishStatuses.size() - 1;
}

// Not amqp::to_string: the label values are part of the metrics contract and
// must not change when log wording does.
const char* publish_label(amqp::PublishStatus result) {
  switch (result) {
    case amqp::PublishStatus::confirmed: return "confirmed";
    case amqp::PublishStatus::nacked: return "nacked";
    case amqp::PublishStatus::unroutable: return "unroutable";
    case amqp::PublishStatus::unavailable: return "unavailable";
    case amqp::PublishStatus::overloaded: return "overloaded";
  }
  return "unavailable";
}

}  // namespace

Metrics::Metrics() : Metrics(std::make_unique<metrics::Registry>()) {}

Metrics::Metrics(metrics::Registry& registry)
    : registry_(registry),
      http_(registry, "rtmc_api"),
      amqp_connected_(
          registry.gauge("rtmc_api_amqp_connected", "1 while the RabbitMQ publisher is connected.")) {
  static_assert(kPublishStatuses.size() == kPublishResults);
  auto& family = registry.counter_family("rtmc_api_publish_total", "Publishes to RabbitMQ, by outcome.");
  // Every outcome is listed from the start, zeros included, so alerts on a
  // rate see the series before the first failure.
  for (std::size_t i = 0; i < kPublishResults; ++i)
    publishes_[i] = &family.Add({{"result", publish_label(kPublishStatuses[i])}});
  auto& logins = registry.counter_family("rtmc_api_logins_total", "POST /login answers, by result.");
  logins_ = {&logins.Add({{"result", "ok"}}), &logins.Add({{"result", "refused"}}),
             &logins.Add({{"result", "rate_limited"}})};
  auto& limited = registry.counter_family(
      "rtmc_api_rate_limited_total", "Requests refused 429 rate_limited, by the limit that refused them.");
  rate_limited_ = {&limited.Add({{"limit", "register"}}), &limited.Add({{"limit", "login"}}),
                   &limited.Add({{"limit", "publish"}})};
  // Kept in atomics (no lock per publish); rendered at scrape time. The
  // registry's scrapes end before this object goes (ApiServer's order).
  registry.add_collector([this] {
    return std::vector{metrics::histogram_family(
        "rtmc_api_publish_confirm_seconds",
        "Seconds from the publish of a POST /messages to RabbitMQ's confirm.", {{{}, &publish_confirm_}})};
  });
}

std::uint64_t Metrics::logins(Login result) const {
  return static_cast<std::uint64_t>(logins_[static_cast<std::size_t>(result)]->Value());
}

std::uint64_t Metrics::rate_limited(Limit limit) const {
  return static_cast<std::uint64_t>(rate_limited_[static_cast<std::size_t>(limit)]->Value());
}

Metrics::Metrics(std::unique_ptr<metrics::Registry> own) : Metrics(*own) {
  own_registry_ = std::move(own);
}

void Metrics::count_publish(amqp::PublishStatus result) {
  publishes_[publish_index(result)]->Increment();
}

void Metrics::watch_status_cache(const store::StatusCacheCounters& counters) {
  const auto* watched = &counters;
  registry_.add_collector([watched] {
    std::vector<prometheus::MetricFamily> families;
    families.push_back(metrics::counter_family(
        "rtmc_status_cache_hits_total", "User status reads answered from the Redis cache.",
        {metrics::Sample{{}, static_cast<double>(watched->hits.load(std::memory_order_relaxed))}}));
    families.push_back(metrics::counter_family(
        "rtmc_status_cache_misses_total", "User status reads that missed the cache and asked PostgreSQL.",
        {metrics::Sample{{}, static_cast<double>(watched->misses.load(std::memory_order_relaxed))}}));
    return families;
  });
}

std::uint64_t Metrics::publishes(amqp::PublishStatus result) const {
  return static_cast<std::uint64_t>(publishes_[publish_index(result)]->Value());
}

std::string Metrics::render(bool amqp_connected) const {
  amqp_connected_.Set(amqp_connected ? 1 : 0);
  return registry_.render();
}

}  // namespace rtmc::api
