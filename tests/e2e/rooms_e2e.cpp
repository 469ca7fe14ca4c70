// Per-room fan-out routing (issue 8, goal 6): each gateway's fan-out queue is
// bound to the rooms it has members in, so it receives only their frames; a
// room whose last local member left is unbound and forgotten; a join of a
// room the gateway was not bound to loses nothing to the bind race; a
// fan-out reconnect binds and catches up only the rooms with local members.
// What a gateway's queue received is read from its /metrics.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGatewayA = e2e_port(17001);
const std::uint16_t kGatewayB = e2e_port(17002);
const std::uint16_t kGatewayProxied = e2e_port(17003);

const std::string kMessages = R"(rtmc_gateway_fanout_frames_total{kind="message"})";
const std::string kStale = "rtmc_gateway_fanout_stale_frames_total";
const std::string kBound = "rtmc_gateway_fanout_rooms_bound";
const std::string kBinds = "rtmc_gateway_fanout_room_binds_total";

// One series of a gateway's /metrics.
double metric(std::uint16_t gateway_port, const std::string& series) {
  HttpClient http(gateway_http_port(gateway_port));
  auto body = http.request("GET", "/metrics").body;
  auto at = body.find("\n" + series + " ");
  if (at == std::string::npos) throw std::runtime_error("no metric " + series + " in:\n" + body);
  return std::stod(body.substr(at + series.size() + 2));
}

// Polls until the series has `value`; false after `timeout`.
bool wait_for_metric(std::uint16_t gateway_port, const std::string& series, double value, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (metric(gateway_port, series) != value) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// Reads `client` until a message of `room` with seq >= `last` arrived;
// returns the seqs of `room`'s messages (a gap frame is recorded as -1, a
// message of another room is a failure).
std::vector<std::int64_t> read_seqs(LineClient& client, const std::string& room, std::int64_t last,
                                    Millis timeout = 20s) {
  std::vector<std::int64_t> seqs;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (seqs.empty() || seqs.back() < last) {
    auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) throw std::runtime_error("timed out; last frames: " + client.history());
    auto result = client.read(left);
    if (result.kind != ReadResult::Kind::frame) throw std::runtime_error("closed: " + client.history());
    const auto type = str(result.frame, "type");
    if (type == "gap") seqs.push_back(-1);
    if (type != "message") continue;
    if (str(result.frame, "room") != room) ADD_FAILURE() << "a frame of another room: " << result.line;
    seqs.push_back(num(result.frame, "seq"));
  }
  return seqs;
}

// Every seq in (joined, last], once, in order.
void expect_every_seq(const std::vector<std::int64_t>& seqs, std::int64_t joined, std::int64_t last) {
  std::vector<std::int64_t> wanted;
  for (auto seq = joined + 1; seq <= last; ++seq) wanted.push_back(seq);
  if (seqs == wanted) return;
  std::string seen;
  for (auto seq : seqs) seen += numbered(" ", seq);
  ADD_FAILURE() << "after joined " << joined << " wanted every seq up to " << last << " once, got" << seen;
}

class Rooms : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_a_ = start_gateway(services_, secret_, kGatewayA);
    gateway_b_ = start_gateway(services_, secret_, kGatewayB);
  }

  void TearDown() override {
    for (auto* process : {api_.get(), gateway_a_.get(), gateway_b_.get()}) {
      if (process == nullptr) continue;
      EXPECT_TRUE(process->running()) << process->name() << " exited during the test";
    }
  }

  std::unique_ptr<LineClient> connect(std::uint16_t port, const TestUser& user, const std::string& label) {
    auto client = std::make_unique<LineClient>(port, 0, label);
    client->auth(user.token, user.name);
    return client;
  }

  void publish(const TestUser& user, const std::string& room, const std::string& id) {
    auto response = http_.publish(user.token, room, "body of " + id, id);
    ASSERT_EQ(response.status, 202) << response.describe();
  }

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_a_;
  std::unique_ptr<Process> gateway_b_;
  HttpClient http_{kApiPort};
};

TEST_F(Rooms, EachGatewayReceivesOnlyTheFramesOfItsRooms) {
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  const auto room_a = unique_name("only-a-");
  const auto room_b = unique_name("only-b-");
  auto a = connect(kGatewayA, alice, "alice@A");
  auto b = connect(kGatewayB, bob, "bob@B");
  ASSERT_EQ(a->join(room_a), 0);
  ASSERT_EQ(b->join(room_b), 0);
  ASSERT_TRUE(wait_for_metric(kGatewayA, kBound, 1, 10s)) << "gateway A binds its one room";
  ASSERT_TRUE(wait_for_metric(kGatewayB, kBound, 1, 10s)) << "gateway B binds its one room";
  const double a_before = metric(kGatewayA, kMessages);
  const double b_before = metric(kGatewayB, kMessages);

  constexpr int kToA = 20;
  constexpr int kToB = 7;
  for (int i = 1; i <= kToA; ++i) publish(bob, room_a, numbered("a", i));
  for (int i = 1; i <= kToB; ++i) publish(alice, room_b, numbered("b", i));
  expect_every_seq(read_seqs(*a, room_a, kToA), 0, kToA);
  expect_every_seq(read_seqs(*b, room_b, kToB), 0, kToB);

  // Every frame of a room reaches its gateway's queue before the member
  // reads it, so the counts are final here.
  EXPECT_EQ(metric(kGatewayA, kMessages) - a_before, kToA) << "gateway A got only room A's frames";
  EXPECT_EQ(metric(kGatewayB, kMessages) - b_before, kToB) << "gateway B got only room B's frames";
  EXPECT_EQ(metric(kGatewayA, kStale), 0);
  EXPECT_EQ(metric(kGatewayB, kStale), 0);
}

TEST_F(Rooms, ARoomWhoseLastLocalMemberLeftIsUnboundAndItsFramesStayAway) {
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  auto carol = make_user(http_, "carol");
  const auto room = unique_name("leaving-");
  const auto marker = unique_name("marker-");
  auto a = connect(kGatewayA, alice, "alice@A");
  auto c = connect(kGatewayA, carol, "carol@A(marker)");
  auto b = connect(kGatewayB, bob, "bob@B");
  ASSERT_EQ(a->join(room), 0);
  ASSERT_EQ(c->join(marker), 0);
  ASSERT_EQ(b->join(room), 0);
  ASSERT_TRUE(wait_for_metric(kGatewayA, kBound, 2, 10s));
  publish(bob, room, "m1");
  expect_every_seq(read_seqs(*a, room, 1), 0, 1);
  expect_every_seq(read_seqs(*b, room, 1), 0, 1);

  a->send_json({{"type", "leave"}, {"room", room}});
  EXPECT_EQ(str(a->next(), "type"), "left");
  ASSERT_TRUE(wait_for_metric(kGatewayA, kBound, 1, 10s)) << "the room without local members is unbound";
  const double a_before = metric(kGatewayA, kMessages);

  for (int i = 2; i <= 6; ++i) publish(bob, room, numbered("m", i));
  expect_every_seq(read_seqs(*b, room, 6), 1, 6);
  // A frame to a room gateway A still serves, sent after them, has arrived
  // there: had the room's binding been left, its frames would have as well.
  publish(bob, marker, "marker");
  expect_every_seq(read_seqs(*c, marker, 1), 0, 1);
  EXPECT_EQ(metric(kGatewayA, kMessages) - a_before, 1) << "only the marker reached gateway A";
  a->expect_silence(200ms);

  // Back in the room: bound again, and the join starts where it says.
  const auto joined = a->join(room);
  EXPECT_EQ(joined, 6);
  publish(bob, room, "m7");
  expect_every_seq(read_seqs(*a, room, 7), joined, 7);
  EXPECT_TRUE(wait_for_metric(kGatewayA, kBound, 2, 10s));
}

// The bind race: a gateway with no member of the room gets a joiner while
// another client sends to the room as fast as it can. Frames published
// between the join's seq read and the binding are not in the gateway's queue;
// the catch-up after bind-ok must supply them. Several joiners in turn,
// each the room's only member on gateway B (so each join binds afresh and
// each leave unbinds).
TEST_F(Rooms, AJoinDuringFastSendingGetsEverySeqAfterJoinedOnceInOrder) {
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  const auto room = unique_name("race-");
  auto sender = connect(kGatewayA, alice, "alice@A(sender)");
  ASSERT_EQ(sender->join(room), 0);

  // The sender keeps at most kInFlight messages unanswered (so it cannot
  // finish before the joiners ran, however fast the pipeline is against its
  // reader) and sends until every joiner had its turn.
  constexpr std::size_t kInFlight = 300;
  constexpr std::size_t kTurns = 12;
  constexpr std::int64_t kWindow = 100;
  Collector acks(*sender);  // an ack and the sender's own copy per message
  std::atomic<bool> stop_sending{false};
  std::atomic<std::int64_t> sent{0};
  // A jthread: if a read below throws, the sender is stopped and joined and
  // the test fails with the reason instead of std::terminate.
  std::jthread sending([&](std::stop_token stop) {
    for (std::int64_t i = 1; !stop.stop_requested() && !stop_sending; ++i) {
      while (2 * static_cast<std::size_t>(i - 1) > acks.size() + 2 * kInFlight && !stop.stop_requested())
        std::this_thread::sleep_for(1ms);
      sender->send(room, numbered("s", i), "x");
      sent = i;
    }
  });
  struct Joined {
    std::int64_t seq;
    std::vector<std::int64_t> seqs;
  };
  std::vector<Joined> windows;
  // Joiners in turn while the sender runs; each reads 100 seqs past its join,
  // then leaves (gateway B unbinds the room), and the next joins.
  while (windows.size() < kTurns) {
    auto joiner = connect(kGatewayB, bob, numbered("bob@B#", static_cast<std::int64_t>(windows.size())));
    const auto seq = joiner->join(room);
    windows.push_back({seq, read_seqs(*joiner, room, seq + kWindow)});
    joiner->close();
  }
  // The last one joins while the sender still runs and stays to the end.
  auto last = connect(kGatewayB, bob, "bob@B(last)");
  const auto last_joined = last->join(room);
  std::this_thread::sleep_for(50ms);
  stop_sending = true;
  sending.join();
  const auto final_seq = sent.load();
  ASSERT_LT(last_joined, final_seq) << "the last joiner joined while the sender ran";
  auto final_seqs = read_seqs(*last, room, final_seq, 60s);
  const auto every_ack = [&](const Collector::Frames& frames) {
    // Presence frames of the joiners arrive too; count only when enough.
    const auto wanted = static_cast<std::size_t>(final_seq);
    return frames.size() >= 2 * wanted && count_type(frames, "ack") == wanted;
  };
  EXPECT_TRUE(acks.wait_until(every_ack, 30s)) << "every send acked";
  acks.stop();

  for (const auto& window : windows) {
    SCOPED_TRACE(numbered("joined at ", window.seq));
    expect_every_seq(window.seqs, window.seq, window.seq + kWindow);
  }
  expect_every_seq(final_seqs, last_joined, final_seq);
  last->expect_silence(300ms);
}

// A fan-out reconnect binds again only the rooms with local members and
// catches them up; a room the gateway's clients left before the cut stays
// unbound.
TEST_F(Rooms, AFanOutReconnectBindsAndCatchesUpOnlyLocalRooms) {
  HeldProxy link(url_port(services_.amqp), 0ms);
  auto proxied =
      start_gateway(services_, secret_, kGatewayProxied, {"--amqp", link.rewrite_url(services_.amqp)});
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  const auto kept = unique_name("kept-");
  const auto left = unique_name("left-");

  auto member = connect(kGatewayProxied, bob, "bob@proxied");
  ASSERT_EQ(member->join(kept), 0);
  ASSERT_EQ(member->join(left), 0);
  auto reference = connect(kGatewayA, alice, "alice@A(kept only)");
  ASSERT_EQ(reference->join(kept), 0);
  ASSERT_TRUE(wait_for_metric(kGatewayProxied, kBound, 2, 10s));
  publish(alice, kept, "k1");
  expect_every_seq(read_seqs(*member, kept, 1), 0, 1);
  publish(alice, left, "l1");
  expect_every_seq(read_seqs(*member, left, 1), 0, 1);
  member->send_json({{"type", "leave"}, {"room", left}});
  EXPECT_EQ(str(member->next(), "type"), "left");
  ASSERT_TRUE(wait_for_metric(kGatewayProxied, kBound, 1, 10s));
  const double binds_before = metric(kGatewayProxied, kBinds);

  link.cut(3000ms);
  ASSERT_TRUE(proxied->wait_for_log("fanout: ", 10s, 2)) << proxied->log_tail();
  for (int i = 2; i <= 4; ++i) {
    publish(alice, kept, numbered("k", i));
    publish(alice, left, numbered("l", i));
  }
  expect_every_seq(read_seqs(*reference, kept, 4), 0, 4);
  ASSERT_EQ(proxied->count_in_log("fanout: consuming"), 1u) << "reconnected too soon for this test";
  ASSERT_TRUE(proxied->wait_for_log("fanout: consuming", 30s, 2)) << proxied->log_tail();
  ASSERT_TRUE(wait_for_metric(kGatewayProxied, kBound, 1, 10s)) << "only the kept room is bound again";
  EXPECT_EQ(metric(kGatewayProxied, kBinds) - binds_before, 1) << "one room bound after the reconnect";
  EXPECT_TRUE(proxied->wait_for_log("binding 1 rooms", 1s)) << proxied->log_tail();

  publish(alice, kept, "k5");
  expect_every_seq(read_seqs(*member, kept, 5), 1, 5);
  member->expect_silence(300ms);
}

}  // namespace
}  // namespace rtmc::e2e
