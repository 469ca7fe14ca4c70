#include "common/store_events.hpp"

#include <array>
#include <utility>

#include "common/config.hpp"
#include "common/metrics.hpp"

namespace rtmc {

void add_store_metrics(metrics::Registry& registry, const std::string& role, const CommonOptions& options) {
  const std::array<std::pair<std::string, std::shared_ptr<StoreEvents>>, 3> stores{
      {{"redis", options.redis.events}, {"postgres", options.pg.events}, {"rabbitmq", options.amqp.events}}};
  registry.add_collector([role, stores] {
    std::vector<metrics::Sample> connects;
    std::vector<metrics::Sample> errors;
    for (const auto& [store, events] : stores) {
      const auto read = [&](const std::atomic<std::uint64_t>& value) {
        return static_cast<double>(value.load(std::memory_order_relaxed));
      };
      connects.push_back({{{"store", store}}, events ? read(events->connects) : 0.0});
      errors.push_back({{{"store", store}}, events ? read(events->errors) : 0.0});
    }
    return std::vector{
        metrics::counter_family("rtmc_" + role + "_store_connects_total",
                                "Connections opened to a store, the first ones and every reconnect.",
                                connects),
        metrics::counter_family(
            "rtmc_" + role + "_store_errors_total",
            "Failed calls to a store: connect failures, I/O errors, timeouts, lost links.", errors)};
  });
}

}  // namespace rtmc
