#include "api/server.hpp"

#include "api/api_service.hpp"
#include "api/listener.hpp"
#include "api/real_backends.hpp"
#include "api/router.hpp"
#include "auth/auth.hpp"
#include "store/amqp.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include <optional>
#include <thread>
#include <vector>

namespace rtmc::api {

namespace net = boost::asio;
using net::ip::tcp;

int apply_migrations(const PgConfig& config) {
  pg::Connection connection(config);
  return pg::migrate(connection);
}

namespace {

// One io thread: its io_context and the connections living on it.
struct IoThread {
  // Declared first so it outlives `context`: destroying the context destroys
  // suspended sessions, which unregister themselves here.
  ConnectionSet connections;
  net::io_context context;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::optional<net::steady_timer> hard_stop;
  std::thread thread;

  ~IoThread() {
    // The timer dies before the context; sessions destroyed with the context
    // must not try to cancel it.
    connections.forget_on_empty();
  }
};

std::vector<std::unique_ptr<IoThread>> make_io_threads(unsigned count) {
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<IoThread>> threads;
  for (unsigned i = 0; i < count; ++i) threads.push_back(std::make_unique<IoThread>());
  return threads;
}

tcp::endpoint resolve(const HostPort& address) {
  net::io_context context;
  tcp::resolver resolver(context);
  auto results = resolver.resolve(address.host, std::to_string(address.port),
                                  tcp::resolver::numeric_service | tcp::resolver::passive);
  if (results.empty()) throw std::runtime_error("cannot resolve listen address " + address.str());
  return results.begin()->endpoint();
}

// A body of max_body_bytes may grow sixfold as JSON (\u00XX escapes); the
// request must still fit the HTTP body limit.
ApiConfig with_consistent_limits(ApiConfig config) {
  const std::size_t needed = config.limits.max_body_bytes * 6 + 1024;
  config.http.body_bytes = std::max(config.http.body_bytes, needed);
  return config;
}

amqp::Publisher::Options publisher_options(const ApiConfig& config) {
  amqp::Publisher::Options options;
  options.window = config.publish_window;
  options.give_up_after = config.publish_give_up;
  options.ingest_shards = config.amqp.ingest_shards;
  return options;
}

}  // namespace

// Member order is destruction order reversed, and it matters: the io threads'
// contexts must outlive the backends (a backend finishing a call posts its
// completion to the caller's context), and Metrics must outlive the contexts
// (sessions count their close when destroyed).
struct ApiServer::Impl {
  explicit Impl(ApiConfig cfg)
      : config(with_consistent_limits(std::move(cfg))),
        threads(make_io_threads(config.threads)),
        tokens(config.auth.jwt_secret, config.auth.token_ttl),
        redis(config.redis, config.redis_connections, WorkerLimits{config.backend_queue_limit, config.redis.timeout}),
        pg(config.pg, config.pg_connections, pg::Options{config.pg_timeout, config.backend_queue_limit}),
        publisher(config.amqp, publisher_options(config)),
        login_hasher("argon2-login", config.login_password_workers, config.password_queue_limit),
        register_hasher("argon2-reg", config.register_password_workers, config.password_queue_limit),
        users(pg),
        sessions(redis),
        rate_limits(redis),
        health(config.redis, config.pg, publisher, config.health_timeout),
        messages(publisher),
        service(ServiceConfig{config.amqp.ingest_shards, config.limits.max_body_bytes, config.rate_limits,
                              config.health_cache},
                ApiBackends{users, sessions, login_hasher, register_hasher, messages, rate_limits, health}, tokens,
                metrics),
        listener(threads.front()->context, resolve(config.listen)) {
    if (config.auth.jwt_secret.empty()) throw std::invalid_argument("ApiConfig: auth.jwt_secret is empty");
    service.install(router);
  }

  void spawn_session(std::size_t target, tcp::socket socket) {
    auto& thread = *threads[target];
    auto session = std::make_shared<HttpSession>(std::move(socket), router, metrics, config.http, thread.connections);
    net::co_spawn(thread.context, HttpSession::run(std::move(session)), net::detached);
  }

  // On `thread`'s own io thread.
  void stop_thread(IoThread& thread) {
    thread.hard_stop.emplace(thread.context);
    thread.hard_stop->expires_after(config.shutdown_grace);
    thread.hard_stop->async_wait([&thread](boost::system::error_code ec) {
      if (ec) return;
      spdlog::warn("requests still in flight after the shutdown grace period; cutting them");
      thread.context.stop();
    });
    thread.connections.stop_all([&thread] { thread.hard_stop->cancel(); });
  }

  ApiConfig config;
  Metrics metrics;
  std::vector<std::unique_ptr<IoThread>> threads;
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
  AmqpMessagePublisher messages;
  ApiService service;
  Router router;
  Listener listener;
  std::atomic<bool> started{false};
  std::atomic<bool> stopped{false};
};

ApiServer::ApiServer(ApiConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

ApiServer::~ApiServer() {
  stop();
  wait();
}

std::uint16_t ApiServer::port() const { return impl_->listener.local_endpoint().port(); }

void ApiServer::start() {
  if (impl_->stopped || impl_->started.exchange(true)) return;
  std::vector<net::any_io_executor> targets;
  for (auto& thread : impl_->threads) targets.push_back(thread->context.get_executor());
  net::co_spawn(impl_->threads.front()->context,
                impl_->listener.run(std::move(targets),
                                    [impl = impl_.get()](std::size_t target, tcp::socket socket) {
                                      impl->spawn_session(target, std::move(socket));
                                    }),
                net::detached);
  for (auto& thread : impl_->threads) {
    thread->work.emplace(thread->context.get_executor());
    thread->thread = std::thread([context = &thread->context] {
      for (;;) {
        try {
          context->run();
          return;
        } catch (const std::exception& error) {
          // Sessions catch their own errors; this is a last line of defence
          // so one bug does not take the process down.
          spdlog::error("io thread: uncaught exception: {}", error.what());
        }
      }
    });
  }
  spdlog::info("rtmc-api listening on {} with {} io threads", impl_->listener.local_endpoint().address().to_string() +
                                                                   ":" + std::to_string(port()),
               impl_->threads.size());
}

void ApiServer::stop() {
  if (impl_->stopped.exchange(true) || !impl_->started) return;
  auto* impl = impl_.get();
  net::post(impl->threads.front()->context, [impl] { impl->listener.close(); });
  for (auto& thread : impl->threads) {
    net::post(thread->context, [impl, t = thread.get()] { impl->stop_thread(*t); });
    thread->work.reset();
  }
}

void ApiServer::wait() {
  for (auto& thread : impl_->threads)
    if (thread->thread.joinable()) thread->thread.join();
}

}  // namespace rtmc::api
