// Durability of the sequencing path against a Redis of the test's own, run
// with the production persistence settings (AOF on, appendfsync as
// scripts/services.sh sets it; the shared test Redis has no AOF), with the real
// api and gateway pointed at it:
//  - kill -9 and restart of Redis while messages flow: every acknowledged
//    message is delivered, and is in the room log, exactly once;
//  - Redis restarted from an older copy of its AOF (a machine crash or a
//    restore, simulated): no seq a client saw is given to another message;
//    the room continues above its reservation in PostgreSQL.
// Its own executable: it starts and kills processes, so it runs alone like
// every e2e test (RESOURCE_LOCK), and serially.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "common/config.hpp"
#include "store/postgres.hpp"
#include "store/redis.hpp"
#include "store/rooms.hpp"
#include "store/seq_reservations.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

const std::uint16_t kGateway = e2e_port(17007);
// The production policy (scripts/services.sh, docs/operations.md).
constexpr std::string_view kAppendFsync = "always";

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t at = 0;
  while (at <= dirs.size()) {
    auto end = dirs.find(':', at);
    if (end == std::string::npos) end = dirs.size();
    const fs::path candidate = fs::path(dirs.substr(at, end - at)) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    at = end + 1;
  }
  throw std::runtime_error(name + " is not on PATH");
}

// A redis-server of this test: data in a temp folder, a free port, the
// persistence settings of the production stack. kill9() and start() keep the
// folder, so a restart replays the AOF.
class OwnRedis {
 public:
  OwnRedis() : port_(free_port()), dir_(fs::temp_directory_path() / unique_name("rtmc-durability-")) {
    fs::create_directories(dir_);
    {
      std::ofstream conf(dir_ / "redis.conf");
      conf << "port " << port_ << "\nbind 127.0.0.1\ndir \"" << dir_.string() << "\"\n"
           << "save \"\"\nappendonly yes\nappendfsync " << kAppendFsync << "\n"
           << "maxmemory 256mb\nmaxmemory-policy noeviction\n";
      if (!conf.flush()) throw std::runtime_error("cannot write " + (dir_ / "redis.conf").string());
    }
    start();
  }
  ~OwnRedis() {
    process_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  OwnRedis(const OwnRedis&) = delete;
  OwnRedis& operator=(const OwnRedis&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void start() {
    process_ = std::make_unique<Process>("redis", find_on_path("redis-server"),
                                         std::vector<std::string>{(dir_ / "redis.conf").string()});
    if (!wait_for_port(port_, 30s)) throw std::runtime_error("redis did not start:\n" + process_->log_tail());
    // Accepting connections before the AOF is loaded answers LOADING.
    for (auto until = SteadyClock::now() + 30s; SteadyClock::now() < until;
         std::this_thread::sleep_for(50ms)) {
      try {
        RedisClient probe(address());
        if (probe.command({"PING"}) == "PONG") return;
      } catch (const std::exception&) {
      }
    }
    throw std::runtime_error("redis did not answer PING:\n" + process_->log_tail());
  }
  void kill9() { process_->kill9(); }
  fs::path aof_dir() const { return dir_ / "appendonlydir"; }
  // A copy of the AOF folder as it is now.
  void save_aof(const fs::path& to) const { fs::copy(aof_dir(), to, fs::copy_options::recursive); }
  void restore_aof(const fs::path& from) const {
    fs::remove_all(aof_dir());
    fs::copy(from, aof_dir(), fs::copy_options::recursive);
  }
  std::string run_id() const {
    redis::Connection client(RedisConfig::parse(address()));
    return rooms::server_run_id(client);
  }

 private:
  std::uint16_t port_;
  fs::path dir_;
  std::unique_ptr<Process> process_;
};

std::string msg_id(int n) {
  char text[16];
  std::snprintf(text, sizeof text, "m%04d", n);
  return text;
}

// (seq, id) of every message frame, in arrival order.
std::vector<std::pair<std::int64_t, std::string>> messages(const Collector::Frames& frames) {
  std::vector<std::pair<std::int64_t, std::string>> out;
  for (const auto& frame : frames)
    if (str(frame, "type") == "message") out.emplace_back(num(frame, "seq"), str(frame, "id"));
  return out;
}

// (seq, id) of the room's log in the given Redis, read with the rooms store.
std::map<std::int64_t, std::string> room_log(const std::string& redis_address, const std::string& room) {
  redis::Connection client(RedisConfig::parse(redis_address));
  std::map<std::int64_t, std::string> entries;
  for (const auto& [seq, frame] : rooms::read_log(client, 16, room, 1, 1'000'000))
    entries[seq] = std::string(boost::json::parse(*frame).as_object().at("id").as_string());
  return entries;
}

struct Stack {
  explicit Stack(const OwnRedis& redis) : services(service_env()), secret(random_secret()) {
    services.redis = redis.address();
    api = start_api(services, secret, kApiPort);
    gateway = start_gateway(services, secret, kGateway);
  }
  ServiceEnv services;
  std::string secret;
  std::unique_ptr<Process> api;
  std::unique_ptr<Process> gateway;
};

// A room member over TCP that reconnects and joins again when the gateway
// cuts it. After a Redis restart the room's seq skips (the seq guard), the
// gateway repairs the hole from the log, and a repair on a gateway Redis
// connection the restart broke fails and cuts the client (lost_sync,
// "reconnect"), as a real client would then reconnect. Frames of every
// connection are kept, in order.
class Member {
 public:
  Member(const TestUser& user, std::string room) : user_(user), room_(std::move(room)) { connect(); }
  ~Member() { finish(); }
  Member(const Member&) = delete;
  Member& operator=(const Member&) = delete;

  // Reconnects if the connection was cut; true if it did.
  bool reopen_if_cut() {
    if (collector_ && !collector_->closed()) return false;
    finish();
    ++reconnects_;
    connect();
    return true;
  }
  // Everything received so far, every connection's frames in order.
  Collector::Frames frames() const {
    auto all = earlier_;
    if (!collector_) return all;
    const auto now = collector_->frames();
    all.insert(all.end(), now.begin(), now.end());
    return all;
  }
  // The joined seq of the current connection.
  std::int64_t joined_seq() const { return joined_seq_; }
  int reconnects() const { return reconnects_; }
  // Waits until `done(frames())` holds, reconnecting when cut.
  bool wait_until(const std::function<bool(const Collector::Frames&)>& done, Millis timeout) {
    const auto until = SteadyClock::now() + timeout;
    while (SteadyClock::now() < until) {
      if (done(frames())) return true;
      reopen_if_cut();
      std::this_thread::sleep_for(20ms);
    }
    return done(frames());
  }
  void finish() {
    if (!collector_) return;
    collector_->stop();
    const auto now = collector_->frames();
    earlier_.insert(earlier_.end(), now.begin(), now.end());
    collector_.reset();
    client_.reset();
  }

 private:
  // Right after a Redis restart the gateway may answer `unavailable` (its
  // first command on a connection the restart broke fails): retry, as a
  // client does.
  void connect() {
    for (int attempt = 1;; ++attempt) {
      try {
        client_ = std::make_unique<LineClient>(kGateway, 0, "member " + user_.name);
        client_->auth(user_.token, user_.name);
        joined_seq_ = client_->join(room_);
        break;
      } catch (const std::exception& error) {
        if (attempt == 20) throw;
        std::cerr << "member: " << error.what() << "; connecting again\n";
        std::this_thread::sleep_for(250ms);
      }
    }
    collector_ = std::make_unique<Collector>(*client_);
  }
  TestUser user_;
  std::string room_;
  std::unique_ptr<LineClient> client_;
  std::unique_ptr<Collector> collector_;
  Collector::Frames earlier_;
  std::int64_t joined_seq_ = 0;
  int reconnects_ = 0;
};

// No message id twice, and seqs rising within each connection; returns seq
// -> id of everything the member saw, failing on a seq seen with two ids.
std::map<std::int64_t, std::string> check_seen(const Collector::Frames& frames) {
  std::map<std::int64_t, std::string> id_of_seq;
  std::set<std::string> ids;
  std::int64_t last = 0;
  for (const auto& frame : frames) {
    if (str(frame, "type") == "joined") last = num(frame, "seq");
    if (str(frame, "type") != "message") continue;
    const auto seq = num(frame, "seq");
    const auto id = str(frame, "id");
    EXPECT_GT(seq, last) << id;
    last = seq;
    EXPECT_TRUE(ids.insert(id).second) << "delivered twice: " << id;
    // A client that saw seq n with message X never sees seq n with another.
    const auto [it, inserted] = id_of_seq.emplace(seq, id);
    EXPECT_TRUE(inserted || it->second == id)
        << "seq " << seq << " given to " << it->second << " and to " << id;
  }
  return id_of_seq;
}

// Publishes over REST (the publisher cannot be cut as a room member), a few
// attempts with the same id (deduplicated; after a Redis restart each of the
// api's Redis connections fails once); 202 = acknowledged.
bool publish(const HttpClient& http, const TestUser& user, const std::string& room, int n,
             int attempts = 10) {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    try {
      if (http.publish(user.token, room, "body " + msg_id(n), msg_id(n)).status == 202) return true;
    } catch (const std::exception&) {
      // no answer: not acknowledged
    }
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

TEST(Durability, KillNineOfRedisWhileMessagesFlowLosesNothingAcknowledged) {
  OwnRedis redis;
  Stack stack(redis);
  HttpClient http(kApiPort);
  const auto sender = make_user(http, "dsend");
  const auto reader = make_user(http, "dread");
  const auto room = unique_name("durable-");
  Member member(reader, room);
  ASSERT_EQ(member.joined_seq(), 0);

  constexpr int kMessages = 400;
  constexpr int kKillAt = 100;
  std::set<std::string> acked;
  auto restart_at = SteadyClock::time_point::max();
  for (int n = 0; n < kMessages; ++n) {
    if (publish(http, sender, room, n, 1)) acked.insert(msg_id(n));
    member.reopen_if_cut();
    if (n == kKillAt) {
      redis.kill9();
      restart_at = SteadyClock::now() + 1s;
      std::cerr << "killed redis after publish #" << n << " (" << acked.size() << " acknowledged)\n";
    }
    if (SteadyClock::now() >= restart_at) {
      redis.start();
      restart_at = SteadyClock::time_point::max();
      std::cerr << "restarted redis after publish #" << n << "\n";
    }
    std::this_thread::sleep_for(5ms);
  }
  if (restart_at != SteadyClock::time_point::max()) {
    std::this_thread::sleep_until(restart_at);
    redis.start();
  }
  std::cerr << acked.size() << " of " << kMessages << " publishes acknowledged\n";
  ASSERT_GT(acked.size(), static_cast<std::size_t>(kKillAt));

  // Every acknowledged message reaches the room log of the restarted Redis.
  std::map<std::int64_t, std::string> log;
  const auto until = SteadyClock::now() + 90s;
  auto all_logged = [&] {
    std::set<std::string> logged;
    for (const auto& [seq, id] : log) logged.insert(id);
    return std::includes(logged.begin(), logged.end(), acked.begin(), acked.end());
  };
  for (log = room_log(redis.address(), room); !all_logged() && SteadyClock::now() < until;
       log = room_log(redis.address(), room))
    std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(all_logged()) << log.size() << " messages in the room log, " << acked.size() << " acknowledged";
  // ... once each.
  std::map<std::string, int> times;
  for (const auto& [seq, id] : log) ++times[id];
  for (const auto& id : acked) EXPECT_EQ(times[id], 1) << id << " in the room log";

  // The member gets them too, each once, at the seq the log has; over the
  // connection it has at the end, every message sequenced after it joined.
  const auto last_seq = log.rbegin()->first;
  ASSERT_TRUE(member.wait_until(
      [&](const auto& frames) {
        const auto seen = messages(frames);
        return member.joined_seq() >= last_seq || (!seen.empty() && seen.back().first >= last_seq);
      },
      60s))
      << "the member did not get seq " << last_seq;
  std::this_thread::sleep_for(1s);  // duplicates would arrive now
  member.finish();
  std::cerr << "member reconnected " << member.reconnects() << " time(s)\n";
  const auto seen = check_seen(member.frames());
  for (const auto& [seq, id] : seen) EXPECT_EQ(log[seq], id) << "seq " << seq;
  const auto since = member.reconnects() == 0 ? 0 : member.joined_seq();
  for (const auto& [seq, id] : log) {
    if (seq > since) {
      EXPECT_TRUE(seen.contains(seq)) << "the member missed seq " << seq;
    }
  }
  EXPECT_TRUE(stack.gateway->running());
}

TEST(Durability, RedisRestoredFromAnOlderAofNeverReusesASeq) {
  OwnRedis redis;
  Stack stack(redis);
  HttpClient http(kApiPort);
  const auto sender = make_user(http, "osend");
  const auto reader = make_user(http, "oread");
  const auto room = unique_name("rollback-");
  Member member(reader, room);
  ASSERT_EQ(member.joined_seq(), 0);

  constexpr int kPhase = 50;
  std::set<std::string> acked;
  auto send_phase = [&](int phase) {
    for (int n = phase * kPhase; n < (phase + 1) * kPhase; ++n) {
      ASSERT_TRUE(publish(http, sender, room, n)) << msg_id(n);
      acked.insert(msg_id(n));
    }
    ASSERT_TRUE(member.wait_until(
        [&](const auto& frames) {
          std::set<std::string> seen;
          for (const auto& [seq, id] : messages(frames)) seen.insert(id);
          return std::includes(seen.begin(), seen.end(), acked.begin(), acked.end());
        },
        60s))
        << "phase " << phase << ": acknowledged messages missing";
  };

  // 1: seqs 1..50, then the AOF is copied (a backup, or what a machine
  // crash leaves of a file fsynced less often than the acks).
  send_phase(0);
  const fs::path backup = fs::temp_directory_path() / unique_name("rtmc-aof-backup-");
  redis.save_aof(backup);
  const auto first_run = redis.run_id();
  // 2: seqs 51..100 reach the member, then Redis loses them.
  send_phase(1);
  redis.kill9();
  redis.restore_aof(backup);
  fs::remove_all(backup);
  redis.start();
  ASSERT_NE(redis.run_id(), first_run);
  // The gateway's Redis connections still point at the killed process: each
  // fails once before it reconnects. Use them (auth and join on a scratch
  // connection) until they work, so the member's repair of the coming hole
  // reads the log instead of cutting it (see Member).
  for (int ok = 0, attempt = 0; ok < 4; ++attempt) {
    ASSERT_LT(attempt, 40) << "the gateway does not answer after the Redis restart";
    try {
      LineClient scratch(kGateway, 0, "scratch");
      scratch.auth(reader.token, reader.name);
      scratch.join(room);
      ++ok;
    } catch (const std::exception&) {
      ok = 0;
      std::this_thread::sleep_for(100ms);
    }
  }
  // 3: new messages; the room continues above its reservation.
  send_phase(2);
  std::this_thread::sleep_for(1s);
  member.finish();
  std::cerr << "member reconnected " << member.reconnects() << " time(s)\n";

  const auto frames = member.frames();
  const auto seen = check_seen(frames);
  const auto all = messages(frames);
  // One connection throughout: seqs 1..100, then the jump over (100, 1000].
  EXPECT_EQ(member.reconnects(), 0);
  ASSERT_EQ(all.size(), static_cast<std::size_t>(3 * kPhase));
  for (int n = 0; n < 3 * kPhase; ++n) {
    EXPECT_EQ(all[n].first, n < 2 * kPhase ? n + 1 : 1000 + n - 2 * kPhase + 1) << all[n].second;
    EXPECT_EQ(all[n].second, msg_id(n));
  }
  // Phase 3 lies above the block reserved before the loss: nothing in
  // (100, 1000] was given, and the first new seq is 1001.
  const std::int64_t block = 1000;  // the gateway's default --seq-block
  const auto log = room_log(redis.address(), room);
  std::vector<std::int64_t> phase3;
  for (const auto& [seq, id] : log)
    if (std::stoi(id.substr(1)) >= 2 * kPhase) phase3.push_back(seq);
  ASSERT_EQ(phase3.size(), static_cast<std::size_t>(kPhase));
  EXPECT_EQ(phase3.front(), block + 1);
  EXPECT_EQ(phase3.back(), block + kPhase);
  for (const auto& [seq, id] : log) EXPECT_TRUE(seq <= kPhase || seq > block) << "seq " << seq << " " << id;
  for (const auto& [seq, id] : seen) {
    EXPECT_TRUE(seq <= 2 * kPhase || seq > block) << "seq " << seq;
    if (seq > block) {
      EXPECT_EQ(log.at(seq), id) << "seq " << seq;
    }
  }
  pg::Connection database(PgConfig{stack.services.pg});
  EXPECT_EQ(seq_reservations::reserved(database, room), 2 * block);

  // The skipped range (100, 1000] is a gap for the member, never a reuse.
  std::vector<boost::json::object> gaps;
  for (const auto& frame : frames)
    if (str(frame, "type") == "gap") gaps.push_back(frame);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(str(gaps[0], "room"), room);
  EXPECT_EQ(num(gaps[0], "from"), 2 * kPhase + 1);
  EXPECT_EQ(num(gaps[0], "to"), block);
}

}  // namespace
}  // namespace rtmc::e2e
