// The gateway's bounds and its stop: a connection cap answered with
// `server_full`, a room cap answered with `too_many_rooms`, and SIGTERM,
// which tells every client `server_shutdown` and ends the process with exit
// status 0 within 5 s, even while Redis or RabbitMQ is unreachable. And the
// per-user send rate (--publish-rate/--publish-burst, shared with the api):
// over it a send gets `rate_limited` and no ack; without it none is refused.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>

#include "auth/auth.hpp"
#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17008);

// A loopback port that was free a moment ago: nothing answers there.
std::string unreachable_amqp() {
  return "amqp://guest:guest@127.0.0.1:" + std::to_string(free_port()) + "/";
}
std::string unreachable_redis() {
  return "127.0.0.1:" + std::to_string(free_port());
}

// A token whose login session is planted in Redis directly (no api needed).
TestUser plant_user(const ServiceEnv& services, const std::string& secret, std::string_view prefix) {
  auth::TokenService tokens(secret, std::chrono::seconds(3600));
  auto name = unique_name(prefix);
  auto issued = tokens.issue(name);
  RedisClient redis(services.redis);
  redis.command({"SET", "session:" + issued.claims.jti, name, "EX", "3600"});
  return {name, "", issued.token};
}

// Exit status 0 within 5 s of SIGTERM (terminate() sends SIGKILL after 5 s,
// which fails the expectation).
void expect_clean_stop(Process& gateway) {
  const int status = gateway.terminate(5s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status
      << (WIFSIGNALED(status) ? " (signal " + std::to_string(WTERMSIG(status)) + ")" : "") << "\n"
      << gateway.log_tail();
}

// Reads until the error frame with `code`, then expects the close.
void expect_fatal_error(LineClient& client, std::string_view code) {
  auto frames = client.expect_closed(10s);
  ASSERT_FALSE(frames.empty()) << "closed without an error frame";
  expect_error(frames.back(), code);
}

TEST(GatewayStop, SigtermWithRedisAndRabbitMqUnreachableEndsCleanly) {
  ServiceEnv services{unreachable_redis(), unreachable_amqp(), ""};
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway, {}, false);
  // An auth that has to ask the unreachable Redis: retryable, not fatal.
  auth::TokenService tokens(secret, std::chrono::seconds(60));
  LineClient client(kGateway, 0, "waiting");
  client.send_json({{"type", "auth"}, {"token", tokens.issue("someone").token}});
  expect_error(client.next(), "unavailable");
  LineClient idle(kGateway, 0, "idle");
  idle.send_raw("{\"type\":");  // half a frame
  expect_clean_stop(*gateway);
}

// The publisher holds the send for 5 s (no broker) while SIGTERM arrives: the
// stop must end the publisher before the io threads it answers on go away.
TEST(GatewayStop, SigtermWithASendWaitingForAnUnreachableBrokerEndsCleanly) {
  auto real = service_env();
  ServiceEnv services{real.redis, unreachable_amqp(), real.pg};
  const auto secret = random_secret();
  auto user = plant_user(real, secret, "stop");
  auto gateway = start_gateway(services, secret, kGateway, {}, false);
  LineClient client(kGateway, 0, "sender");
  client.auth(user.token, user.name);
  client.send_json({{"type", "send"}, {"room", "x"}, {"body", "not joined"}});
  expect_error(client.next(), "not_joined");
  auto room = unique_name("stop-");
  client.join(room);
  client.send_json({{"type", "send"}, {"room", room}, {"id", "m1"}, {"body", "pending"}});
  client.expect_silence(300ms);  // no ack: the broker is unreachable
  expect_clean_stop(*gateway);
  // The client was told before the close (the pending send's `unavailable`
  // may come first or not at all).
  bool saw_shutdown = false;
  for (;;) {
    auto result = client.read(5s);
    if (result.kind != ReadResult::Kind::frame) break;
    if (str(result.frame, "code") == "server_shutdown") saw_shutdown = true;
  }
  EXPECT_TRUE(saw_shutdown) << client.history();
}

TEST(GatewayStop, SigtermTellsConnectedClientsServerShutdown) {
  auto services = service_env();
  const auto secret = random_secret();
  auto user = plant_user(services, secret, "bye");
  auto gateway = start_gateway(services, secret, kGateway);
  // Connected first: once the member's auth is answered, the gateway has
  // accepted this one too (accepts are in order), so the SIGTERM cannot
  // find it still in the listen backlog, where it would be closed unseen.
  LineClient unauthenticated(kGateway, 0, "anonymous");
  unauthenticated.send_raw("{\"type\":");  // half a frame
  LineClient client(kGateway, 0, "member");
  client.auth(user.token, user.name);
  client.join(unique_name("bye-"));
  ::kill(gateway->pid(), SIGTERM);
  expect_fatal_error(client, "server_shutdown");
  expect_fatal_error(unauthenticated, "server_shutdown");
  expect_clean_stop(*gateway);
}

TEST(GatewayLimits, OverTheConnectionCapANewClientGetsServerFull) {
  auto services = service_env();
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway, {"--max-connections", "2"});
  auto first = plant_user(services, secret, "cap");
  LineClient a(kGateway, 0, "a");
  a.auth(first.token, first.name);
  LineClient b(kGateway, 0, "b");
  b.auth(first.token, first.name);
  LineClient refused(kGateway, 0, "refused");
  expect_fatal_error(refused, "server_full");
  // The admitted ones are untouched.
  a.ping(2);
  b.ping(3);
  // A place freed is a place taken again.
  b.close();
  bool admitted = false;
  for (int attempt = 0; attempt < 50 && !admitted; ++attempt) {
    LineClient next(kGateway, 0, "next");
    next.send_json({{"type", "auth"}, {"token", first.token}});
    auto frame = next.next();
    admitted = str(frame, "type") == "auth_ok";
    if (!admitted) std::this_thread::sleep_for(100ms);  // the close is still on its way
  }
  EXPECT_TRUE(admitted);
  EXPECT_TRUE(gateway->running());
}

TEST(GatewayLimits, OverTheRoomCapAJoinGetsTooManyRooms) {
  auto services = service_env();
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway, {"--max-rooms-per-connection", "2"});
  auto user = plant_user(services, secret, "rooms");
  LineClient client(kGateway, 0, "joiner");
  client.auth(user.token, user.name);
  const auto a = unique_name("ra-");
  client.join(a);
  client.join(unique_name("rb-"));
  client.send_json({{"type", "join"}, {"room", unique_name("rc-")}, {"ref", "c"}});
  expect_error(client.next(), "too_many_rooms", boost::json::value("c"));
  // Not fatal, and a room already in is no new room.
  EXPECT_EQ(client.join(a), 0);
  client.send_json({{"type", "leave"}, {"room", a}});
  EXPECT_EQ(str(client.next(), "type"), "left");
  client.join(unique_name("rc-"));
  client.ping(1);
}

// Sends `count` messages to `room` at once (refs 0..count-1), then reads
// until each has its answer: "ack" or the error code. The ids of messages
// delivered meanwhile go to `delivered`.
std::map<std::string, std::string> send_burst(LineClient& client, const std::string& room, int count,
                                              std::set<std::string>& delivered) {
  for (int i = 0; i < count; ++i) {
    // Appended, not `"m" + std::to_string(i)`: GCC 12's -Wrestrict false positive.
    std::string id = "m";
    id += std::to_string(i);
    client.send(room, id, id, boost::json::value(i));
  }
  std::map<std::string, std::string> answers;
  while (answers.size() < static_cast<std::size_t>(count)) {
    auto frame = client.next();
    const auto type = str(frame, "type");
    if (type == "message") {
      delivered.insert(str(frame, "id"));
      continue;
    }
    EXPECT_TRUE(frame.contains("ref")) << client.history();
    if (!frame.contains("ref")) break;
    const auto ref = std::to_string(frame.at("ref").as_int64());
    EXPECT_EQ(answers.count(ref), 0u) << "two answers to send " << ref << "\n" << client.history();
    answers[ref] = type == "ack" ? "ack" : str(frame, "code");
  }
  return answers;
}

TEST(GatewayLimits, OverThePublishRateASendGetsRateLimitedAndNoAck) {
  auto services = service_env();
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway, {"--publish-rate", "1", "--publish-burst", "2"});
  auto user = plant_user(services, secret, "rate");
  LineClient client(kGateway, 0, "sender");
  client.auth(user.token, user.name);
  const auto room = unique_name("rate-");
  client.join(room);
  std::set<std::string> delivered;
  auto answers = send_burst(client, room, 3, delivered);
  EXPECT_EQ(answers, (std::map<std::string, std::string>{{"0", "ack"}, {"1", "ack"}, {"2", "rate_limited"}}))
      << client.history();
  // The two accepted ones are delivered, and the connection stays open.
  while (delivered.size() < 2) {
    auto frame = client.next();
    ASSERT_EQ(str(frame, "type"), "message") << client.history();
    delivered.insert(str(frame, "id"));
  }
  EXPECT_EQ(delivered, (std::set<std::string>{"m0", "m1"}));
  client.ping("after");
}

TEST(GatewayLimits, WithoutAPublishRateEverySendIsAcked) {
  auto services = service_env();
  const auto secret = random_secret();
  auto gateway = start_gateway(services, secret, kGateway);
  auto user = plant_user(services, secret, "free");
  LineClient client(kGateway, 0, "sender");
  client.auth(user.token, user.name);
  const auto room = unique_name("free-");
  client.join(room);
  constexpr int kSends = 20;
  std::set<std::string> delivered;
  auto answers = send_burst(client, room, kSends, delivered);
  ASSERT_EQ(answers.size(), static_cast<std::size_t>(kSends)) << client.history();
  for (const auto& [ref, answer] : answers) EXPECT_EQ(answer, "ack") << "send " << ref;
}

}  // namespace
}  // namespace rtmc::e2e
