#include "api/server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>

#include "api/api_service.hpp"
#include "api/metrics.hpp"
#include "api/real_backends.hpp"
#include "api/router.hpp"
#include "api/web_assets.hpp"
#include "auth/auth.hpp"
#include "common/metrics.hpp"
#include "server/http_server.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"

namespace rtmc::api {

int apply_migrations(const PgConfig& config) {
  pg::Connection connection(config);
  return pg::migrate(connection);
}

namespace {

// A body of max_body_bytes may grow sixfold as JSON (\u00XX escapes); the
// request must still fit the HTTP body limit.
ApiConfig with_consistent_limits(ApiConfig config) {
  const std::size_t needed = config.common.limits.max_body_bytes * 6 + 1024;
  config.http.body_bytes = std::max(config.http.body_bytes, needed);
  return config;
}

amqp::Publisher::Options publisher_options(const ApiConfig& config) {
  amqp::Publisher::Options options;
  options.window = config.publish_window;
  options.give_up_after = config.publish_give_up;
  options.batch_messages = config.publish_batch;
  options.max_backlog = config.publish_backlog;
  options.ingest_shards = config.common.amqp.ingest_shards;
  return options;
}

server::HttpServerConfig http_config(const ApiConfig& config) {
  server::HttpServerConfig http;
  http.listen = config.listen;
  http.threads = config.threads;
  http.max_connections = config.max_connections;
  http.limits = config.http;
  http.shutdown_grace = config.shutdown_grace;
  http.name = "rtmc-api";
  return http;
}

// Every route the api serves, in one place: the server and routes() both
// fill their Router here, so the list printed is the list served.
void install_routes(Router& router, ApiService& service, const ApiConfig& config) {
  service.install(router);
  install_web_routes(router, config.ws_urls);
}

// The backends of a service built only to list its routes: no handler
// runs, so none is ever called.
class NoBackends final : public UserStore,
                         public SessionStore,
                         public PasswordHasher,
                         public MessagePublisher,
                         public RateLimits,
                         public HealthProbe,
                         public StatusReader,
                         public HistoryStore {
 public:
  boost::asio::awaitable<bool> create(std::string, std::string) override { throw none(); }
  boost::asio::awaitable<std::optional<StoredUser>> find(std::string) override { throw none(); }
  boost::asio::awaitable<void> put(std::string, std::string, std::chrono::milliseconds) override {
    throw none();
  }
  boost::asio::awaitable<bool> exists(std::string) override { throw none(); }
  boost::asio::awaitable<bool> remove(std::string) override { throw none(); }
  boost::asio::awaitable<std::string> hash(std::string) override { throw none(); }
  boost::asio::awaitable<bool> verify(std::string, std::string) override { throw none(); }
  boost::asio::awaitable<void> burn(std::string) override { throw none(); }
  boost::asio::awaitable<amqp::PublishStatus> publish(amqp::Message) override { throw none(); }
  bool connected() const override { return false; }
  boost::asio::awaitable<store::Verdict> take(store::Bucket) override { throw none(); }
  boost::asio::awaitable<std::vector<store::Verdict>> peek(std::vector<store::Bucket>) override {
    throw none();
  }
  boost::asio::awaitable<std::vector<store::Verdict>> charge(std::vector<store::Bucket>) override {
    throw none();
  }
  boost::asio::awaitable<void> refund(std::vector<store::Bucket>) override { throw none(); }
  boost::asio::awaitable<DependencyHealth> probe() override { throw none(); }
  boost::asio::awaitable<std::optional<store::UserStatus>> get(std::string) override { throw none(); }
  boost::asio::awaitable<history::Items> messages(protocol::HistoryRequest) override { throw none(); }
  boost::asio::awaitable<history::RoomPage> rooms(std::optional<std::string>, std::size_t) override {
    throw none();
  }

 private:
  static Unavailable none() { return Unavailable("a route-listing service has no backends"); }
};

ServiceConfig service_config(const ApiConfig& config) {
  return ServiceConfig{config.common.amqp.ingest_shards, config.common.limits.max_body_bytes,
                       config.rate_limits, config.health_cache};
}

const ApiConfig& checked(const ApiConfig& config) {
  if (config.common.auth.jwt_secret.empty())
    throw std::invalid_argument("ApiConfig: auth.jwt_secret is empty");
  return config;
}

}  // namespace

// Member order is destruction order reversed, and it matters: the HTTP
// server's io contexts must outlive the backends (a backend finishing a call
// posts its completion to the caller's context), and the metrics and router
// must outlive the contexts (connections count their close when destroyed).
// The server binds first, so a taken port fails before backends connect.
struct ApiServer::Impl {
  explicit Impl(ApiConfig cfg)
      : config(with_consistent_limits(std::move(cfg))),
        metrics(registry),
        http(http_config(checked(config)), router, metrics.http()),
        tokens(config.common.auth.jwt_secret, config.common.auth.token_ttl),
        redis(config.common.redis, config.redis_connections,
              WorkerLimits{config.backend_queue_limit, config.common.redis.timeout}),
        pg(config.common.pg, config.pg_connections,
           pg::Options{config.pg_timeout, config.backend_queue_limit}),
        publisher(config.common.amqp, publisher_options(config)),
        login_hasher("argon2-login", config.login_password_workers, config.password_queue_limit),
        register_hasher("argon2-reg", config.register_password_workers, config.password_queue_limit),
        users(pg),
        sessions(redis),
        rate_limits(redis),
        health(config.common.redis, config.common.pg, publisher, config.health_timeout),
        status(redis, pg, config.common.presence.status_cache_ttl),
        messages(publisher),
        history(redis, pg, config.common.amqp.ingest_shards),
        service(service_config(config),
                ApiBackends{users, sessions, login_hasher, register_hasher, messages, rate_limits, health,
                            status, history},
                tokens, metrics) {
    metrics.watch_status_cache(status.counters());
    add_store_metrics(registry, "api", config.common);
    install_routes(router, service, config);
  }

  ApiConfig config;
  metrics::Registry registry;
  Metrics metrics;
  Router router;
  server::HttpServer http;
  auth::TokenService tokens;
  redis::Client redis;
  pg::Pool pg;
  amqp::Publisher publisher;
  WorkerPasswordHasher login_hasher;
  WorkerPasswordHasher register_hasher;
  StoreUsers users;
  StoreSessions sessions;
  StoreRateLimits rate_limits;
  BackendHealthProbe health;
  StoreStatusReader status;
  AmqpMessagePublisher messages;
  StoreHistory history;
  ApiService service;
};

std::vector<std::string> ApiServer::routes(const ApiConfig& config) {
  NoBackends none;
  metrics::Registry registry;
  Metrics metrics(registry);
  // Signs nothing: only ApiService's constructor wants a TokenService.
  const auth::TokenService tokens(std::string(auth::TokenService::kMinSecretBytes, 'x'),
                                  std::chrono::hours(1));
  ApiService service(service_config(config),
                     ApiBackends{none, none, none, none, none, none, none, none, none}, tokens, metrics);
  Router router;
  install_routes(router, service, config);
  return router.describe();
}

ApiServer::ApiServer(ApiConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

ApiServer::~ApiServer() {
  stop();
  wait();
}

std::uint16_t ApiServer::port() const {
  return impl_->http.port();
}

std::size_t ApiServer::max_connections() const {
  return impl_->http.max_connections();
}

void ApiServer::start() {
  impl_->http.start();
}

void ApiServer::stop() {
  impl_->http.stop();
}

void ApiServer::wait() {
  impl_->http.wait();
}

}  // namespace rtmc::api
