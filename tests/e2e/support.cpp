#include "support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/config.hpp"

extern char** environ;

namespace rtmc::e2e {

namespace {

using Clock = std::chrono::steady_clock;

std::runtime_error failure(const std::string& what) {
  return std::runtime_error(what);
}

std::string hex(std::uint64_t value, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<std::size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i, value >>= 4) out[static_cast<std::size_t>(i)] = kDigits[value & 0xf];
  return out;
}

std::mt19937_64& rng() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return engine;
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Millis remaining(Clock::time_point deadline) {
  return std::max(Millis(0), std::chrono::duration_cast<Millis>(deadline - Clock::now()));
}

// A connected blocking-mode TCP socket to 127.0.0.1:port, or -1.
int connect_loopback(std::uint16_t port, int receive_buffer = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Writes all of `bytes` before `deadline`; false if the peer is gone or the
// deadline passes.
bool write_all(int fd, std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd waiter{fd, POLLOUT, 0};
      auto left = remaining(deadline);
      if (left.count() == 0) return false;
      ::poll(&waiter, 1, static_cast<int>(left.count()));
      continue;
    }
    return false;
  }
  return true;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::string current_test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return "no-test";
  return std::string(info->test_suite_name()) + "." + info->name();
}

bool test_failed() {
  return ::testing::Test::HasFailure();
}

std::string keys_of(const boost::json::object& frame) {
  std::string out;
  for (const auto& [key, _] : frame) {
    if (!out.empty()) out += ",";
    out += std::string(key);
  }
  return out;
}

void expect_keys(const boost::json::object& frame, std::vector<std::string_view> keys,
                 std::string_view what) {
  bool ok = frame.size() == keys.size();
  for (auto key : keys) ok = ok && frame.contains(key);
  if (!ok)
    throw failure(std::string(what) + ": expected exactly the fields {" +
                  [&] {
                    std::string list;
                    for (auto key : keys) list += (list.empty() ? "" : ",") + std::string(key);
                    return list;
                  }() +
                  "}, got {" + keys_of(frame) + "} in " + to_text(frame));
}

}  // namespace

// ---------------------------------------------------------------- environment

ServiceEnv service_env() {
  ServiceEnv env;
  const std::pair<const char*, std::string*> wanted[] = {
      {"RTMC_TEST_REDIS", &env.redis}, {"RTMC_TEST_AMQP", &env.amqp}, {"RTMC_TEST_PG", &env.pg}};
  for (const auto& [name, target] : wanted) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0')
      throw failure(std::string(name) +
                    " is not set: e2e tests need real Redis, RabbitMQ and PostgreSQL "
                    "(run scripts/test.sh, or scripts/services.sh start DIR && source DIR/env)");
    *target = value;
  }
  return env;
}

std::uint16_t e2e_port(std::uint16_t base) {
  const char* offset = std::getenv("RTMC_E2E_PORT_OFFSET");
  int value = offset == nullptr || *offset == '\0' ? 0 : std::atoi(offset);
  if (value < 0 || base + value > 65535) throw failure("bad RTMC_E2E_PORT_OFFSET");
  return static_cast<std::uint16_t>(base + value);
}

std::string unique_name(std::string_view prefix) {
  return std::string(prefix) + hex(rng()(), 8);
}

std::string numbered(std::string_view prefix, std::int64_t n) {
  std::string text(prefix);
  text += std::to_string(n);
  return text;
}

std::string random_secret() {
  return hex(rng()(), 16) + hex(rng()(), 16) + hex(rng()(), 16) + hex(rng()(), 16);
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool found = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  if (fd >= 0) ::close(fd);
  if (!found) throw std::runtime_error("cannot find a free port");
  return ntohs(address.sin_port);
}

// ---------------------------------------------------------------- Process

Process::Process(std::string name, std::string binary, std::vector<std::string> args,
                 std::map<std::string, std::string> extra_env)
    : name_(std::move(name)) {
  std::filesystem::path dir(RTMC_E2E_LOG_DIR);
  std::filesystem::create_directories(dir);
  log_path_ = dir / (current_test_name() + "-" + name_ + ".log");

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> argv_storage;
  argv_storage.push_back(binary);
  for (auto& arg : args) argv_storage.push_back(std::move(arg));
  std::vector<char*> argv;
  for (auto& arg : argv_storage) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::map<std::string, std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    auto equals = text.find('=');
    if (equals == std::string_view::npos) continue;
    environment[std::string(text.substr(0, equals))] = std::string(text.substr(equals + 1));
  }
  for (auto& [key, value] : extra_env) environment[key] = value;
  std::vector<std::string> env_storage;
  for (auto& [key, value] : environment) env_storage.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& entry : env_storage) envp.push_back(entry.data());
  envp.push_back(nullptr);

  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw failure("cannot open " + log_path_.string() + ": " + std::strerror(errno));
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    ::close(log_fd);
    throw failure(std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    static constexpr char kMessage[] = "e2e: execve failed\n";
    [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    ::_exit(127);
  }
  ::close(log_fd);
}

Process::~Process() {
  terminate();
  if (test_failed()) {
    std::cerr << "---- " << name_ << " (pid " << pid_ << ") log tail: " << log_path_.string() << " ----\n"
              << log_tail() << "---- end of " << name_ << " ----\n";
  }
}

std::string Process::log() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Process::log_tail(std::size_t lines) const {
  auto text = log();
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (std::size_t seen = 0; pos > 0; --pos) {
    if (text[pos - 1] == '\n' && ++seen == lines) break;
  }
  return text.substr(pos);
}

std::size_t Process::count_in_log(std::string_view needle) const {
  auto text = log();
  std::size_t count = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + needle.size()))
    ++count;
  return count;
}

bool Process::wait_for_log(std::string_view needle, Millis timeout, std::size_t count) const {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (count_in_log(needle) >= count) return true;
    if (Clock::now() >= deadline) return false;
    if (!running()) return count_in_log(needle) >= count;
    std::this_thread::sleep_for(50ms);
  }
}

bool Process::running() const {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  pid_t done = ::waitpid(pid_, &status, WNOHANG);
  if (done == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void Process::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  reaped_ = true;
  status_ = status;
}

int Process::terminate(Millis grace) {
  if (!running()) return reaped_ ? status_ : -1;
  ::kill(pid_, SIGTERM);
  auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    if (!running()) return status_;
    std::this_thread::sleep_for(20ms);
  }
  std::cerr << "e2e: " << name_ << " ignored SIGTERM for " << grace.count() << " ms; SIGKILL\n";
  kill9();
  return status_;
}

bool wait_for_port(std::uint16_t port, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int fd = connect_loopback(port);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

std::map<std::string, std::string> server_env(const ServiceEnv& services, const std::string& jwt_secret) {
  return {{"RTMC_REDIS", services.redis},
          {"RTMC_AMQP", services.amqp},
          {"RTMC_PG", services.pg},
          {"RTMC_JWT_SECRET", jwt_secret},
          {"RTMC_LOG_LEVEL", "info"}};
}

namespace {
void require_free(std::uint16_t port) {
  if (wait_for_port(port, 0ms))
    throw failure("port " + std::to_string(port) +
                  " is already in use before the test started its server (a leftover process?)");
}

void require_ready(Process& process, bool ready, std::string_view what) {
  if (ready) return;
  throw failure(process.name() + " did not become ready (" + std::string(what) +
                "); running=" + (process.running() ? "yes" : "no") + "; log tail:\n" + process.log_tail());
}
}  // namespace

std::unique_ptr<Process> start_api(const ServiceEnv& services, const std::string& jwt_secret,
                                   std::uint16_t port, std::vector<std::string> extra_args) {
  require_free(port);
  std::vector<std::string> args{"--listen", "127.0.0.1:" + std::to_string(port)};
  for (auto& arg : extra_args) args.push_back(std::move(arg));
  auto process = std::make_unique<Process>("api-" + std::to_string(port), RTMC_API_BIN, std::move(args),
                                           server_env(services, jwt_secret));
  require_ready(*process, wait_for_port(port, 60s), "port");
  HttpClient http(port);
  auto deadline = Clock::now() + 30s;
  std::string last;
  for (;;) {
    try {
      auto response = http.request("GET", "/healthz", {}, {}, 5s);
      last = response.describe();
      if (response.status == 200) {
        auto body = response.json();
        const auto* connected = body.if_contains("amqp_connected");
        if (connected == nullptr || !connected->is_bool() || connected->as_bool()) break;
      }
    } catch (const std::exception& error) {
      last = error.what();
    }
    require_ready(*process, Clock::now() < deadline && process->running(), "GET /healthz: " + last);
    std::this_thread::sleep_for(100ms);
  }
  return process;
}

std::unique_ptr<Process> start_gateway(const ServiceEnv& services, const std::string& jwt_secret,
                                       std::uint16_t port, std::vector<std::string> extra_args,
                                       bool wait_for_pipeline) {
  require_free(port);
  // Each gateway its own HTTP port, or several in one test collide on 7080.
  const auto http_port = gateway_http_port(port);
  require_free(http_port);
  std::vector<std::string> args{"--listen",      "127.0.0.1:" + std::to_string(port),
                                "--http-listen", "127.0.0.1:" + std::to_string(http_port),
                                "--threads",     "2"};
  for (auto& arg : extra_args) args.push_back(std::move(arg));
  auto process = std::make_unique<Process>("gateway-" + std::to_string(port), RTMC_GATEWAY_BIN,
                                           std::move(args), server_env(services, jwt_secret));
  require_ready(*process, wait_for_port(port, 60s), "port");
  if (!wait_for_pipeline) return process;
  require_ready(*process, process->wait_for_log("fanout: consuming", 60s),
                "no 'fanout: consuming' in its log");
  require_ready(*process, process->wait_for_log("sequencer: consuming", 60s),
                "no 'sequencer: consuming' in its log");
  return process;
}

// ---------------------------------------------------------------- HeldProxy

std::uint16_t url_port(const std::string& url) {
  auto at = url.rfind('@');
  auto colon = url.find(':', at == std::string::npos ? url.find("//") + 2 : at);
  if (colon == std::string::npos) throw failure("no port in URL '" + url + "'");
  return static_cast<std::uint16_t>(std::stoi(url.substr(colon + 1)));
}

std::string HeldProxy::rewrite_url(const std::string& url) const {
  auto at = url.rfind('@');
  auto colon = url.find(':', at == std::string::npos ? url.find("//") + 2 : at);
  auto end = url.find_first_not_of("0123456789", colon + 1);
  return url.substr(0, colon + 1) + std::to_string(port_) + (end == std::string::npos ? "" : url.substr(end));
}

HeldProxy::HeldProxy(std::uint16_t upstream_port, Millis hold)
    : upstream_port_(upstream_port), open_at_ns_((Clock::now() + hold).time_since_epoch().count()) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener_, 64) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    throw failure(std::string("proxy: cannot listen: ") + std::strerror(errno));
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

HeldProxy::~HeldProxy() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> pumps;
  {
    std::lock_guard lock(mutex_);  // the pumps take it on their way out: join without it
    pumps.swap(threads_);
  }
  for (auto& thread : pumps) thread.join();
  ::close(listener_);
}

void HeldProxy::accept_loop() {
  while (!stopping_) {
    pollfd waiter{listener_, POLLIN, 0};
    if (::poll(&waiter, 1, 100) <= 0) continue;
    int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    threads_.emplace_back([this, client, generation = generation_.load()] { pump(client, generation); });
  }
}

void HeldProxy::cut(Millis hold) {
  open_at_ns_ = (Clock::now() + hold).time_since_epoch().count();
  ++generation_;
  // At once, not at the pumps' next poll: nothing may pass after cut().
  std::lock_guard lock(mutex_);
  for (int fd : live_fds_) ::shutdown(fd, SHUT_RDWR);
}

void HeldProxy::pump(int client, int generation) {
  auto cut_off = [&] { return stopping_ || generation_ != generation; };
  while (!cut_off() && Clock::now().time_since_epoch().count() < open_at_ns_)
    std::this_thread::sleep_for(20ms);
  int upstream = cut_off() ? -1 : connect_loopback(upstream_port_);
  {
    std::lock_guard lock(mutex_);
    if (upstream >= 0 && cut_off()) ::shutdown(upstream, SHUT_RDWR);
    if (upstream >= 0) live_fds_.insert(live_fds_.end(), {client, upstream});
  }
  std::array<char, 64 * 1024> chunk;
  while (upstream >= 0 && !cut_off()) {
    pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
    if (::poll(fds, 2, 100) <= 0) continue;
    bool done = false;
    for (int side = 0; side < 2 && !done; ++side) {
      if (!(fds[side].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int from = fds[side].fd, to = fds[1 - side].fd;
      ssize_t n = ::recv(from, chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        done = true;
      else if (n > 0 && !write_all(to, std::string_view(chunk.data(), static_cast<std::size_t>(n)),
                                   Clock::now() + 10s))
        done = true;
    }
    if (done) break;
  }
  {
    std::lock_guard lock(mutex_);
    std::erase_if(live_fds_, [&](int fd) { return fd == client || fd == upstream; });
  }
  if (upstream >= 0) ::close(upstream);
  ::close(client);
}

// ---------------------------------------------------------------- LineClient

LineClient::LineClient(std::uint16_t port, int receive_buffer, std::string label) : label_(std::move(label)) {
  fd_ = connect_loopback(port, receive_buffer);
  if (fd_ < 0)
    throw failure(label_ + ": cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
                  std::strerror(errno));
}

LineClient::~LineClient() {
  close();
}

void LineClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool LineClient::try_send_raw(std::string_view bytes) {
  return fd_ >= 0 && write_all(fd_, bytes, Clock::now() + 10s);
}

void LineClient::send_raw(std::string_view bytes) {
  if (!try_send_raw(bytes))
    throw failure(label_ + ": could not write " + std::to_string(bytes.size()) + " bytes (" +
                  std::strerror(errno) + "); last frames:\n" + history());
}

void LineClient::send_json(const boost::json::object& frame) {
  send_line(boost::json::serialize(frame));
}

ReadResult LineClient::read(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::array<char, 64 * 1024> chunk;
  for (;;) {
    auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      boost::system::error_code ec;
      auto value = boost::json::parse(line, ec);
      if (ec || !value.is_object())
        throw failure(label_ + ": the server sent a line that is not a JSON object: '" + line.substr(0, 300) +
                      "'");
      seen_.push_back(line);
      // Presence events come whenever someone joins or leaves; only the
      // tests about them see them.
      if (!keep_presence_) {
        const auto* type = value.as_object().if_contains("type");
        if (type != nullptr && type->is_string() && type->as_string() == "presence") continue;
      }
      return {ReadResult::Kind::frame, std::move(value.as_object()), std::move(line)};
    }
    if (eof_ || fd_ < 0) return {ReadResult::Kind::closed, {}, {}};
    pollfd waiter{fd_, POLLIN, 0};
    int ready = ::poll(&waiter, 1, static_cast<int>(remaining(deadline).count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return {ReadResult::Kind::timeout, {}, {}};
    ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(chunk.data(), static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      eof_ = true;  // orderly close or reset: either way the server is gone
    }
  }
}

boost::json::object LineClient::next(Millis timeout) {
  auto result = read(timeout);
  if (result.kind == ReadResult::Kind::frame) return std::move(result.frame);
  throw failure(label_ +
                (result.kind == ReadResult::Kind::timeout
                     ? ": no frame within " + std::to_string(timeout.count()) + " ms"
                     : std::string(": connection closed while a frame was expected")) +
                "; last frames:\n" + history());
}

void LineClient::expect_silence(Millis quiet) {
  auto result = read(quiet);
  if (result.kind == ReadResult::Kind::frame)
    throw failure(label_ + ": expected no frame for " + std::to_string(quiet.count()) + " ms, got " +
                  result.line);
  if (result.kind == ReadResult::Kind::closed)
    throw failure(label_ + ": expected an open, quiet connection, but it was closed; last frames:\n" +
                  history());
}

std::vector<boost::json::object> LineClient::expect_closed(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::vector<boost::json::object> frames;
  for (;;) {
    auto result = read(remaining(deadline));
    if (result.kind == ReadResult::Kind::closed) return frames;
    if (result.kind == ReadResult::Kind::timeout)
      throw failure(label_ + ": connection still open after " + std::to_string(timeout.count()) +
                    " ms; last frames:\n" + history());
    frames.push_back(std::move(result.frame));
  }
}

std::string LineClient::history(std::size_t last) const {
  std::string out;
  std::size_t from = seen_.size() > last ? seen_.size() - last : 0;
  for (std::size_t i = from; i < seen_.size(); ++i) out += "  " + seen_[i].substr(0, 300) + "\n";
  if (out.empty()) out = "  (none)\n";
  return out;
}

void LineClient::auth(const std::string& token, const std::string& expected_user, int expected_heartbeat_s) {
  send_json({{"type", "auth"}, {"token", token}});
  auto frame = next();
  expect_keys(frame, {"type", "user", "heartbeat_s"}, label_ + " auth reply");
  if (str(frame, "type") != "auth_ok" || str(frame, "user") != expected_user ||
      !frame.at("heartbeat_s").is_int64() || num(frame, "heartbeat_s") <= 0 ||
      (expected_heartbeat_s >= 0 && num(frame, "heartbeat_s") != expected_heartbeat_s))
    throw failure(label_ + ": expected auth_ok for " + expected_user + ", got " + to_text(frame));
  user_ = expected_user;
}

std::int64_t LineClient::join(const std::string& room) {
  send_json({{"type", "join"}, {"room", room}});
  auto frame = next();
  expect_keys(frame, {"type", "room", "seq"}, label_ + " join reply");
  if (str(frame, "type") != "joined" || str(frame, "room") != room || !frame.at("seq").is_int64() ||
      num(frame, "seq") < 0)
    throw failure(label_ + ": expected joined for room " + room + ", got " + to_text(frame));
  return num(frame, "seq");
}

void LineClient::send(const std::string& room, const std::string& id, const std::string& body,
                      std::optional<boost::json::value> ref) {
  boost::json::object frame{{"type", "send"}, {"room", room}, {"id", id}, {"body", body}};
  if (ref) frame["ref"] = *ref;
  send_json(frame);
}

void LineClient::ping(const boost::json::value& ref) {
  send_json({{"type", "ping"}, {"ref", ref}});
  auto frame = next();
  if (frame != boost::json::object{{"type", "pong"}, {"ref", ref}})
    throw failure(label_ + ": expected {\"type\":\"pong\",\"ref\":" + boost::json::serialize(ref) +
                  "}, got " + to_text(frame));
}

// ---------------------------------------------------------------- Collector

Collector::Collector(LineClient& client) : client_(client), thread_([this] { run(); }) {}

Collector::~Collector() {
  stop();
}

void Collector::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void Collector::run() {
  while (!stopping_) {
    try {
      auto result = client_.read(100ms);
      std::lock_guard lock(mutex_);
      if (result.kind == ReadResult::Kind::frame) frames_.push_back(std::move(result.frame));
      if (result.kind == ReadResult::Kind::closed) closed_ = true;
      if (result.kind != ReadResult::Kind::timeout) changed_.notify_all();
      if (closed_) return;
    } catch (const std::exception& e) {
      std::lock_guard lock(mutex_);
      error_ = e.what();
      closed_ = true;
      changed_.notify_all();
      return;
    }
  }
}

Collector::Frames Collector::frames() const {
  std::lock_guard lock(mutex_);
  return frames_;
}

std::size_t Collector::size() const {
  std::lock_guard lock(mutex_);
  return frames_.size();
}

bool Collector::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::string Collector::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

bool Collector::wait_until(const std::function<bool(const Frames&)>& done, Millis timeout) const {
  std::unique_lock lock(mutex_);
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (done(frames_)) return true;
    if (closed_) return false;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) return done(frames_);
  }
}

std::size_t count_type(const Collector::Frames& frames, std::string_view type) {
  return static_cast<std::size_t>(std::count_if(
      frames.begin(), frames.end(), [&](const auto& frame) { return str(frame, "type") == type; }));
}

// ---------------------------------------------------------------- frame checks

std::string to_text(const boost::json::object& frame) {
  return boost::json::serialize(frame);
}

std::string str(const boost::json::object& frame, std::string_view key) {
  const auto* value = frame.if_contains(key);
  return value != nullptr && value->is_string() ? std::string(value->as_string()) : std::string();
}

std::int64_t num(const boost::json::object& frame, std::string_view key) {
  const auto* value = frame.if_contains(key);
  if (value == nullptr || !value->is_int64())
    throw failure("expected an integer '" + std::string(key) + "' in " + to_text(frame));
  return value->as_int64();
}

void expect_message(const boost::json::object& frame, const std::string& room, std::int64_t seq,
                    const std::string& id, const std::string& from, const std::string& body) {
  expect_keys(frame, {"type", "room", "seq", "id", "from", "body", "ts"}, "message frame");
  const auto* ts = frame.if_contains("ts");
  bool ts_ok = ts->is_int64() && std::llabs(ts->as_int64() - wall_ms()) < 60'000;
  if (str(frame, "type") != "message" || str(frame, "room") != room || !frame.at("seq").is_int64() ||
      num(frame, "seq") != seq || str(frame, "id") != id || str(frame, "from") != from ||
      str(frame, "body") != body || !ts_ok) {
    boost::json::object expected{{"type", "message"}, {"room", room}, {"seq", seq},
                                 {"id", id},          {"from", from}, {"body", body.substr(0, 100)}};
    throw failure("expected message " + to_text(expected) + " (ts = now +- 60 s), got " +
                  to_text(frame).substr(0, 400));
  }
}

void expect_error(const boost::json::object& frame, std::string_view code,
                  const std::optional<boost::json::value>& ref) {
  std::vector<std::string_view> keys{"type", "code", "message"};
  if (ref) keys.push_back("ref");
  expect_keys(frame, keys, "error frame (" + std::string(code) + ")");
  bool ok = str(frame, "type") == "error" && str(frame, "code") == code && !str(frame, "message").empty();
  if (ref) ok = ok && frame.at("ref") == *ref;
  if (!ok)
    throw failure("expected error '" + std::string(code) + "'" +
                  (ref ? " with ref " + boost::json::serialize(*ref) : std::string()) + ", got " +
                  to_text(frame));
}

// ---------------------------------------------------------------- HTTP

boost::json::object HttpResponse::json() const {
  boost::system::error_code ec;
  auto value = boost::json::parse(body, ec);
  if (ec || !value.is_object()) throw failure("expected a JSON object body in " + describe());
  return std::move(value.as_object());
}

std::string HttpResponse::describe() const {
  return "HTTP " + std::to_string(status) + " body '" + body.substr(0, 400) + "'";
}

HttpResponse HttpClient::request(std::string_view method, std::string_view target, std::string_view body,
                                 std::vector<std::string> headers, Millis timeout) const {
  auto deadline = Clock::now() + timeout;
  int fd = connect_loopback(port_);
  if (fd < 0) throw failure("HTTP: cannot connect to 127.0.0.1:" + std::to_string(port_));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};

  std::string text = std::string(method) + " " + std::string(target) +
                     " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port_) + "\r\nConnection: close\r\n";
  for (const auto& header : headers) text += header + "\r\n";
  if (!body.empty() || method == "POST") text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  text += "\r\n";
  text += body;
  // The server may answer (413) and close before reading the whole body.
  bool written = write_all(fd, text, deadline);

  std::string in;
  std::array<char, 16 * 1024> chunk;
  HttpResponse response;
  std::size_t header_end = std::string::npos;
  std::optional<std::size_t> content_length;
  bool chunked = false;
  auto complete = [&]() -> bool {
    if (header_end == std::string::npos) {
      header_end = in.find("\r\n\r\n");
      if (header_end == std::string::npos) return false;
      std::istringstream head(in.substr(0, header_end));
      std::string line;
      std::getline(head, line);
      if (line.size() < 12 || line.compare(0, 5, "HTTP/") != 0)
        throw failure("HTTP: bad status line '" + line + "'");
      response.status = std::stoi(line.substr(9, 3));
      while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        auto value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        response.headers[lower(line.substr(0, colon))] = value;
      }
      if (auto it = response.headers.find("content-length"); it != response.headers.end())
        content_length = std::stoul(it->second);
      if (auto it = response.headers.find("transfer-encoding"); it != response.headers.end())
        chunked = lower(it->second).find("chunked") != std::string::npos;
      if (response.status == 204 || response.status == 304 || method == "HEAD") content_length = 0;
    }
    const std::size_t body_start = header_end + 4;
    if (content_length) {
      if (in.size() < body_start + *content_length) return false;
      response.body = in.substr(body_start, *content_length);
      return true;
    }
    if (chunked) {
      std::string decoded;
      std::size_t pos = body_start;
      for (;;) {
        auto eol = in.find("\r\n", pos);
        if (eol == std::string::npos) return false;
        std::size_t size = std::stoul(in.substr(pos, eol - pos), nullptr, 16);
        if (size == 0) {
          response.body = decoded;
          return true;
        }
        if (in.size() < eol + 2 + size + 2) return false;
        decoded += in.substr(eol + 2, size);
        pos = eol + 2 + size + 2;
      }
    }
    return false;  // delimited by the close
  };

  bool closed = false;
  while (!complete()) {
    if (closed) {
      if (header_end == std::string::npos)
        throw failure("HTTP: connection closed before a full response (" + std::to_string(in.size()) +
                      " bytes; request written: " + (written ? "yes" : "no") + ")");
      response.body = in.substr(header_end + 4);
      break;
    }
    pollfd waiter{fd, POLLIN, 0};
    auto left = remaining(deadline);
    if (left.count() == 0)
      throw failure("HTTP: no complete response to " + std::string(method) + " " + std::string(target) +
                    " within " + std::to_string(timeout.count()) + " ms");
    if (::poll(&waiter, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd, chunk.data(), chunk.size(), MSG_DONTWAIT);
    if (n > 0)
      in.append(chunk.data(), static_cast<std::size_t>(n));
    else if (n == 0 || (errno != EAGAIN && errno != EINTR))
      closed = true;
  }
  return response;
}

HttpResponse HttpClient::post_json(std::string_view target, const std::string& body,
                                   const std::string& token) const {
  std::vector<std::string> headers{"Content-Type: application/json"};
  if (!token.empty()) headers.push_back("Authorization: Bearer " + token);
  return request("POST", target, body, std::move(headers));
}

void HttpClient::register_user(const std::string& user, const std::string& password) const {
  auto response = post_json(
      "/register", boost::json::serialize(boost::json::object{{"user", user}, {"password", password}}));
  if (response.status != 201)
    throw failure("POST /register " + user + ": expected 201, got " + response.describe());
}

std::string HttpClient::login(const std::string& user, const std::string& password) const {
  auto response = post_json(
      "/login", boost::json::serialize(boost::json::object{{"user", user}, {"password", password}}));
  if (response.status != 200)
    throw failure("POST /login " + user + ": expected 200, got " + response.describe());
  auto body = response.json();
  auto token = str(body, "token");
  const auto* expires = body.if_contains("expires_at");
  if (token.empty() || expires == nullptr || !expires->is_int64() || expires->as_int64() <= wall_ms())
    throw failure("POST /login: expected {token, expires_at in the future}, got " + response.describe());
  return token;
}

HttpResponse HttpClient::publish(const std::string& token, const std::string& room, const std::string& body,
                                 const std::optional<std::string>& id) const {
  boost::json::object request{{"room", room}, {"body", body}};
  if (id) request["id"] = *id;
  return post_json("/publishMessage", boost::json::serialize(request), token);
}

TestUser make_user(const HttpClient& api, std::string_view prefix) {
  TestUser user{unique_name(prefix), "pw-" + hex(rng()(), 12), {}};
  api.register_user(user.name, user.password);
  user.token = api.login(user.name, user.password);
  return user;
}

void expect_http_error(const HttpResponse& response, int status, std::string_view error_code) {
  bool ok = response.status == status;
  boost::json::object body;
  if (ok) {
    boost::system::error_code ec;
    auto value = boost::json::parse(response.body, ec);
    ok = !ec && value.is_object();
    if (ok) body = value.as_object();
  }
  ok = ok && body.size() == 2 && str(body, "error") == error_code && !str(body, "message").empty();
  auto type = response.headers.count("content-type") ? lower(response.headers.at("content-type")) : "";
  ok = ok && type.find("application/json") != std::string::npos;
  if (!ok)
    throw failure("expected HTTP " + std::to_string(status) + " application/json {\"error\":\"" +
                  std::string(error_code) + "\",\"message\":...}, got " + response.describe() +
                  " content-type '" + type + "'");
}

// ---------------------------------------------------------------- Redis

RedisClient::RedisClient(const std::string& address) {
  RedisConfig config;
  try {
    config = RedisConfig::parse(address);
  } catch (const std::invalid_argument& error) {
    throw failure(std::string("bad redis address in RTMC_TEST_REDIS: ") + error.what());
  }
  const auto& host = config.address.host;
  if (host != "127.0.0.1" && host != "localhost")
    throw failure("e2e expects a loopback redis, got " + config.describe());
  fd_ = connect_loopback(config.address.port);
  if (fd_ < 0) throw failure("cannot connect to redis at " + config.describe());
  if (config.password.empty()) return;
  std::vector<std::string> auth{"AUTH"};
  if (!config.user.empty()) auth.push_back(config.user);
  auth.push_back(config.password);
  command(auth);  // throws on WRONGPASS
}

RedisClient::~RedisClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RedisClient::command(const std::vector<std::string>& args) {
  std::string request = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& arg : args) request += "$" + std::to_string(arg.size()) + "\r\n" + arg + "\r\n";
  auto deadline = Clock::now() + 5s;
  if (!write_all(fd_, request, deadline)) throw failure("redis: write failed");
  std::array<char, 4096> chunk;
  auto fill_until = [&](auto&& done) {
    while (!done()) {
      pollfd waiter{fd_, POLLIN, 0};
      if (::poll(&waiter, 1, static_cast<int>(remaining(deadline).count())) <= 0)
        throw failure("redis: no reply");
      ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
      if (n <= 0) throw failure("redis: connection closed");
      buffer_.append(chunk.data(), static_cast<std::size_t>(n));
    }
  };
  fill_until([&] { return buffer_.find("\r\n") != std::string::npos; });
  auto eol = buffer_.find("\r\n");
  std::string head = buffer_.substr(0, eol);
  buffer_.erase(0, eol + 2);
  switch (head.empty() ? '?' : head[0]) {
    case '+':
    case ':': return head.substr(1);
    case '-': throw failure("redis error: " + head.substr(1));
    case '$': {
      long size = std::stol(head.substr(1));
      if (size < 0) return "nil";
      fill_until([&] { return buffer_.size() >= static_cast<std::size_t>(size) + 2; });
      std::string value = buffer_.substr(0, static_cast<std::size_t>(size));
      buffer_.erase(0, static_cast<std::size_t>(size) + 2);
      return value;
    }
    default: throw failure("redis: unsupported reply '" + head + "'");
  }
}

}  // namespace rtmc::e2e
