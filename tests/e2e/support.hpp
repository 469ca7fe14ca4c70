#pragma once
// Support for black-box end-to-end tests: child processes for the real
// binaries, a blocking line client for the gateway protocol, a tiny HTTP/1.1
// client for the api, and a minimal Redis client (for planting sessions).
//
// Failures are reported by throwing std::runtime_error with a message that
// says what was expected and what arrived; GoogleTest turns an escaping
// exception into a test failure carrying that message. Every wait has a
// deadline, so no helper can hang a test.
//
// Threading: objects are not shared between threads, with one exception: a
// LineClient may be written (send_*) by one thread while another reads it.

#include <sys/types.h>

#include <atomic>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace rtmc::e2e {

using namespace std::chrono_literals;
using Millis = std::chrono::milliseconds;

// The e2e suite's fixed ports (CI stack): api 18080-18085, gateways
// 17001-17009, each plus RTMC_E2E_PORT_OFFSET (default 0) so a developer's
// run need not collide with a CI run on the same machine.
std::uint16_t e2e_port(std::uint16_t base);
inline const std::uint16_t kApiPort = e2e_port(18080);

// Service addresses from RTMC_TEST_REDIS / RTMC_TEST_AMQP / RTMC_TEST_PG;
// throws with a clear message when one is missing.
struct ServiceEnv {
  std::string redis;
  std::string amqp;
  std::string pg;
};
ServiceEnv service_env();

// "<prefix><8 random hex>": names that cannot collide on shared services.
std::string unique_name(std::string_view prefix);
// prefix + n. (Appending: GCC 12 reports a false -Wrestrict on
// "literal" + std::string, so the tests build such strings here.)
std::string numbered(std::string_view prefix, std::int64_t n);
// A random 32-byte hex secret.
std::string random_secret();
// A loopback TCP port nothing listens on right now (for a server a test
// starts itself, or an address that must refuse connections).
std::uint16_t free_port();

// ---------------------------------------------------------------- processes

// A child process with stdout+stderr in a log file under the build dir. The
// destructor stops it (SIGTERM, then SIGKILL after a grace period) and, when
// the running test has failed, prints the tail of its log. Children die with
// the test process (PR_SET_PDEATHSIG), so a killed test leaves no server
// holding a port.
class Process {
 public:
  Process(std::string name, std::string binary, std::vector<std::string> args,
          std::map<std::string, std::string> extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::filesystem::path& log_path() const { return log_path_; }

  std::string log() const;
  std::string log_tail(std::size_t lines = 60) const;
  // Waits until the log contains `needle` `count` times; false on timeout or
  // when the process exits first.
  bool wait_for_log(std::string_view needle, Millis timeout, std::size_t count = 1) const;
  std::size_t count_in_log(std::string_view needle) const;

  // True while the child has not exited (reaps it if it has).
  bool running() const;
  // SIGKILL and reap, at once.
  void kill9();
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status as
  // given by waitpid (or -1 if it had already been reaped).
  int terminate(Millis grace = 5s);

 private:
  std::string name_;
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  // Updated by running() when it reaps the child.
  mutable bool reaped_ = false;
  mutable int status_ = 0;
};

// Polls 127.0.0.1:port until a TCP connect succeeds.
bool wait_for_port(std::uint16_t port, Millis timeout);

// The environment the servers under test get: service addresses, the test's
// JWT secret, debug-free logging.
std::map<std::string, std::string> server_env(const ServiceEnv& services, const std::string& jwt_secret);

// Starts rtmc-api on `port` and waits until GET /healthz answers 200 with
// amqp_connected true. Extra flags are appended.
std::unique_ptr<Process> start_api(const ServiceEnv& services, const std::string& jwt_secret,
                                   std::uint16_t port, std::vector<std::string> extra_args = {});

// The HTTP port (/healthz, /metrics) start_gateway gives the gateway on `port`.
inline std::uint16_t gateway_http_port(std::uint16_t port) {
  return static_cast<std::uint16_t>(port + 1000);
}

// Starts rtmc-gateway on `port` (HTTP on gateway_http_port(port)) and waits until it accepts, its fan-out
// queue is consumed ("fanout: consuming") and its sequencer is attached to the ingest shards ("sequencer:
// consuming"); only then is every message sent to a room it serves sure to reach it. With wait_for_pipeline
// false it waits for the port only.
std::unique_ptr<Process> start_gateway(const ServiceEnv& services, const std::string& jwt_secret,
                                       std::uint16_t port, std::vector<std::string> extra_args = {},
                                       bool wait_for_pipeline = true);

// A TCP forwarder on an ephemeral loopback port to 127.0.0.1:upstream_port
// that holds every connection accepted during its first `hold` (no bytes
// either way, like a network partition) and forwards normally after it.
// Threads of its own; the destructor closes everything.
class HeldProxy {
 public:
  HeldProxy(std::uint16_t upstream_port, Millis hold);
  ~HeldProxy();
  HeldProxy(const HeldProxy&) = delete;
  HeldProxy& operator=(const HeldProxy&) = delete;
  std::uint16_t port() const { return port_; }
  // `url` (scheme://user:pw@127.0.0.1:PORT/...) with this proxy's port.
  std::string rewrite_url(const std::string& url) const;
  // A new partition: closes every forwarded connection now and holds new
  // ones for `hold`.
  void cut(Millis hold);

 private:
  void accept_loop();
  void pump(int client, int generation);
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t upstream_port_;
  std::atomic<std::int64_t> open_at_ns_;  // steady_clock
  std::atomic<int> generation_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<int> live_fds_;  // forwarded sockets, shut down by cut()
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

// The port of a URL such as amqp://guest:guest@127.0.0.1:5672/.
std::uint16_t url_port(const std::string& url);

// ---------------------------------------------------------------- gateway client

struct ReadResult {
  enum class Kind { frame, timeout, closed } kind = Kind::timeout;
  boost::json::object frame;  // for Kind::frame
  std::string line;           // the raw line of a frame
};

class LineClient {
 public:
  // Connects to 127.0.0.1:port. A non-zero receive_buffer sets SO_RCVBUF
  // before connecting (to make a slow reader).
  explicit LineClient(std::uint16_t port, int receive_buffer = 0, std::string label = "client");
  ~LineClient();
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  const std::string& label() const { return label_; }
  const std::string& user() const { return user_; }

  // Writes everything (blocking, 10 s deadline). Throws if the peer is gone.
  void send_raw(std::string_view bytes);
  void send_line(std::string_view line) { send_raw(std::string(line) + "\n"); }
  void send_json(const boost::json::object& frame);
  // Like send_raw, but reports failure instead of throwing (a closed peer).
  bool try_send_raw(std::string_view bytes);
  // Half-closes nothing: closes the socket at once.
  void close();

  // The next server frame. A line that is not a JSON object is a failure.
  ReadResult read(Millis timeout);
  // The next frame; throws on timeout or close.
  boost::json::object next(Millis timeout = 10s);
  // Throws if any frame arrives (or the connection closes) within `quiet`.
  void expect_silence(Millis quiet);
  // Reads until the server closes the connection; frames read on the way are
  // returned. Throws if it stays open past `timeout`.
  std::vector<boost::json::object> expect_closed(Millis timeout);
  // Bytes after the last newline when the connection closed.
  const std::string& partial_line() const { return buffer_; }

  // Protocol helpers; each throws unless the exact expected reply arrives.
  void auth(const std::string& token, const std::string& expected_user, int expected_heartbeat_s = -1);
  std::int64_t join(const std::string& room);  // returns the joined seq
  void send(const std::string& room, const std::string& id, const std::string& body,
            std::optional<boost::json::value> ref = std::nullopt);
  void ping(const boost::json::value& ref);  // expects {"type":"pong","ref":ref}

  // Every frame read so far (for diagnostics).
  std::string history(std::size_t last = 10) const;
  // `presence` frames are skipped by read() (and so by everything built on
  // it) unless a test asks for them.
  void keep_presence(bool keep) { keep_presence_ = keep; }

 private:
  int fd_ = -1;
  std::string label_;
  std::string user_;
  std::string buffer_;
  bool eof_ = false;
  bool keep_presence_ = false;
  std::vector<std::string> seen_;
};

// Reads a LineClient on a thread of its own until stopped (or the connection
// closes), keeping every frame; the test thread may meanwhile write to the
// client and inspect what arrived. Nothing else may read the client while a
// Collector runs.
class Collector {
 public:
  using Frames = std::vector<boost::json::object>;
  explicit Collector(LineClient& client);
  ~Collector();
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // Stops and joins the reader thread; the client may be read again after.
  void stop();
  Frames frames() const;
  std::size_t size() const;
  bool closed() const;
  // Why the reader stopped early (a malformed line), or "".
  std::string error() const;
  // Waits until `done(frames)` holds (checked on every arrival); false on
  // timeout, or if the connection closes first without it holding.
  bool wait_until(const std::function<bool(const Frames&)>& done, Millis timeout) const;

 private:
  void run();
  LineClient& client_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  Frames frames_;
  bool closed_ = false;
  std::string error_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

std::size_t count_type(const Collector::Frames& frames, std::string_view type);

// Throws unless `frame` is exactly the message frame described (ts must be
// an integer within a minute of now).
void expect_message(const boost::json::object& frame, const std::string& room, std::int64_t seq,
                    const std::string& id, const std::string& from, const std::string& body);
// Throws unless `frame` is {"type":"error","code":code,"message":<string>} plus
// "ref" exactly when `ref` is given.
void expect_error(const boost::json::object& frame, std::string_view code,
                  const std::optional<boost::json::value>& ref = std::nullopt);
std::string to_text(const boost::json::object& frame);
std::string str(const boost::json::object& frame, std::string_view key);  // "" if absent or not a string
std::int64_t num(const boost::json::object& frame,
                 std::string_view key);  // throws if absent or not an integer

// ---------------------------------------------------------------- HTTP client

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  boost::json::object json() const;  // throws if the body is not a JSON object
  std::string describe() const;
};

class HttpClient {
 public:
  explicit HttpClient(std::uint16_t port) : port_(port) {}
  // One request on a fresh connection (Connection: close). `headers` are
  // added verbatim ("Name: value" each). Throws on a transport failure.
  HttpResponse request(std::string_view method, std::string_view target, std::string_view body = {},
                       std::vector<std::string> headers = {}, Millis timeout = 15s) const;
  // A JSON POST with an optional bearer token.
  HttpResponse post_json(std::string_view target, const std::string& body,
                         const std::string& token = {}) const;

  // Helpers that throw unless the documented success status comes back.
  void register_user(const std::string& user, const std::string& password) const;
  std::string login(const std::string& user, const std::string& password) const;  // the token
  HttpResponse publish(const std::string& token, const std::string& room, const std::string& body,
                       const std::optional<std::string>& id = std::nullopt) const;

 private:
  std::uint16_t port_;
};

// A registered user with a live token.
struct TestUser {
  std::string name;
  std::string password;
  std::string token;
};
TestUser make_user(const HttpClient& api, std::string_view prefix = "u");

// Throws unless the response has `status` and a JSON body
// {"error":error_code,"message":<non-empty string>}.
void expect_http_error(const HttpResponse& response, int status, std::string_view error_code);

// ---------------------------------------------------------------- Redis

// RESP over a blocking socket, for test set-up only (e.g. planting a session).
class RedisClient {
 public:
  // `address` as the servers take it: host:port or redis://[user:]password@host:port
  // (AUTH is sent first).
  explicit RedisClient(const std::string& address);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;
  // Returns the reply as text (simple/bulk string, integer, or "nil");
  // throws on an error reply.
  std::string command(const std::vector<std::string>& args);

 private:
  int fd_ = -1;
  std::string buffer_;
};

}  // namespace rtmc::e2e
