// The message path end to end (flows 1 and 3): REST publishes and TCP sends
// through RabbitMQ, sequencing in Redis and fan-out to two gateways.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <map>
#include <set>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGatewayA = e2e_port(17001);
const std::uint16_t kGatewayB = e2e_port(17002);

class MessagePath : public ::testing::Test {
 protected:
  void SetUp() override {
    services_ = service_env();
    api_ = start_api(services_, secret_, kApiPort);
    gateway_a_ = start_gateway(services_, secret_, kGatewayA);
    gateway_b_ = start_gateway(services_, secret_, kGatewayB);
  }

  void TearDown() override {
    // A crash of a server under test is a failure even if every frame
    // arrived before it.
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

  ServiceEnv services_;
  std::string secret_ = random_secret();
  std::unique_ptr<Process> api_;
  std::unique_ptr<Process> gateway_a_;
  std::unique_ptr<Process> gateway_b_;
  HttpClient http_{kApiPort};
};

// Waits out `quiet` once, then checks that none of the clients received
// anything in the meantime (cheaper than a quiet period per client).
void expect_all_quiet(const std::vector<LineClient*>& clients, Millis quiet) {
  std::this_thread::sleep_for(quiet);
  for (auto* client : clients) client->expect_silence(50ms);
}

// Reads exactly `count` frames.
std::vector<boost::json::object> collect(LineClient& client, std::size_t count, Millis timeout = 10s) {
  std::vector<boost::json::object> frames;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (frames.size() < count) {
    auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    frames.push_back(client.next(std::max(left, Millis(1))));
  }
  return frames;
}

boost::json::object ack(const std::string& room, const std::string& id,
                        std::optional<boost::json::value> ref = {}) {
  boost::json::object frame{{"type", "ack"}, {"id", id}, {"room", room}};
  if (ref) frame["ref"] = *ref;
  return frame;
}

// Splits a sender's frames into acks (in arrival order) and messages; no
// order is promised between an ack and the sender's own copy.
struct Split {
  std::vector<boost::json::object> acks;
  std::vector<boost::json::object> messages;
};
Split split(std::vector<boost::json::object> frames) {
  Split out;
  for (auto& frame : frames) {
    if (str(frame, "type") == "ack")
      out.acks.push_back(std::move(frame));
    else
      out.messages.push_back(std::move(frame));
  }
  return out;
}

TEST_F(MessagePath, RestAndTcpReachEveryRoomMemberOnBothGatewaysExactlyOnce) {
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  auto carol = make_user(http_, "carol");
  auto dave = make_user(http_, "dave");
  const auto room_a = unique_name("roomA-");
  const auto room_b = unique_name("roomB-");

  auto a = connect(kGatewayA, alice, "alice@A");
  auto b = connect(kGatewayB, bob, "bob@B");
  auto c = connect(kGatewayB, carol, "carol@B");
  auto d = connect(kGatewayA, dave, "dave@A(room B)");
  ASSERT_EQ(a->join(room_a), 0) << "a fresh room starts at seq 0";
  ASSERT_EQ(b->join(room_a), 0);
  ASSERT_EQ(c->join(room_a), 0);
  ASSERT_EQ(d->join(room_b), 0);
  std::vector<LineClient*> members{a.get(), b.get(), c.get()};

  // Flow 1: REST publish, answered 202 after the confirm.
  auto published = http_.publish(alice.token, room_a, "hello over rest", std::string("rest-1"));
  ASSERT_EQ(published.status, 202) << published.describe();
  EXPECT_EQ(published.json(), (boost::json::object{{"id", "rest-1"}, {"room", room_a}}))
      << published.describe();
  for (auto* member : members) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room_a, 1, "rest-1", alice.name, "hello over rest");
  }
  expect_all_quiet({a.get(), b.get(), c.get(), d.get()}, 700ms);

  // Flow 3: a TCP send from a member on the other gateway; the sender gets
  // its ack (ref echoed) and its own copy, in either order.
  b->send(room_a, "tcp-1", "hello over tcp", boost::json::value(7));
  auto sender = split(collect(*b, 2));
  ASSERT_EQ(sender.acks.size(), 1u);
  EXPECT_EQ(sender.acks[0], ack(room_a, "tcp-1", boost::json::value(7))) << to_text(sender.acks[0]);
  ASSERT_EQ(sender.messages.size(), 1u);
  expect_message(sender.messages[0], room_a, 2, "tcp-1", bob.name, "hello over tcp");
  for (auto* member : {a.get(), c.get()}) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room_a, 2, "tcp-1", bob.name, "hello over tcp");
  }
  expect_all_quiet({a.get(), b.get(), c.get(), d.get()}, 700ms);

  // Room B is alive (the silence above is not a dead client), and room A
  // members do not hear it.
  d->send(room_b, "b-1", "only for room B");
  auto other = split(collect(*d, 2));
  ASSERT_EQ(other.acks.size(), 1u);
  EXPECT_EQ(other.acks[0], ack(room_b, "b-1"));
  ASSERT_EQ(other.messages.size(), 1u);
  expect_message(other.messages[0], room_b, 1, "b-1", dave.name, "only for room B");
  expect_all_quiet({a.get(), b.get(), c.get(), d.get()}, 700ms);

  // After leaving, carol hears nothing more of room A.
  c->send_json({{"type", "leave"}, {"room", room_a}, {"ref", "bye"}});
  EXPECT_EQ(c->next(), (boost::json::object{{"type", "left"}, {"room", room_a}, {"ref", "bye"}}));
  published = http_.publish(alice.token, room_a, "after carol left", std::string("rest-2"));
  ASSERT_EQ(published.status, 202) << published.describe();
  for (auto* member : {a.get(), b.get()}) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room_a, 3, "rest-2", alice.name, "after carol left");
  }
  expect_all_quiet({a.get(), b.get(), c.get(), d.get()}, 700ms);
}

TEST_F(MessagePath, ThousandPipelinedMessagesFromFourSendersArriveInOneOrderEverywhere) {
  constexpr int kSenders = 4;
  constexpr int kPerSender = 250;
  constexpr int kTotal = kSenders * kPerSender;
  const auto room = unique_name("load-");

  std::vector<TestUser> users;
  std::vector<std::unique_ptr<LineClient>> senders;
  std::vector<std::unique_ptr<LineClient>> listeners;
  for (int i = 0; i < kSenders; ++i) {
    // (appending, not "literal" + std::string: GCC 12 warns falsely with -Wrestrict)
    std::string prefix = "s";
    prefix += std::to_string(i);
    prefix += "-";
    users.push_back(make_user(http_, prefix));
    auto port = i % 2 == 0 ? kGatewayA : kGatewayB;
    senders.push_back(
        connect(port, users.back(), std::string("sender") + std::to_string(i) + "@" + std::to_string(port)));
  }
  for (auto port : {kGatewayA, kGatewayB}) {
    users.push_back(make_user(http_, "l-"));
    listeners.push_back(connect(port, users.back(), "listener@" + std::to_string(port)));
  }
  std::vector<LineClient*> members;
  for (auto& client : senders) members.push_back(client.get());
  for (auto& client : listeners) members.push_back(client.get());
  const std::int64_t base = members.front()->join(room);
  ASSERT_EQ(base, 0);
  for (std::size_t i = 1; i < members.size(); ++i)
    ASSERT_EQ(members[i]->join(room), base) << members[i]->label();

  auto id_of = [](int sender, int index) {
    char text[32];
    std::snprintf(text, sizeof text, "m%d-%03d", sender, index);
    return std::string(text);
  };
  auto body_of = [](const std::string& id) { return "body of " + id; };

  // Each sender pipelines all its sends in one write.
  for (int s = 0; s < kSenders; ++s) {
    std::string batch;
    for (int i = 0; i < kPerSender; ++i) {
      auto id = id_of(s, i);
      batch += boost::json::serialize(
                   boost::json::object{{"type", "send"}, {"room", room}, {"id", id}, {"body", body_of(id)}}) +
               "\n";
    }
    senders[s]->send_raw(batch);
  }

  std::map<std::string, int> sender_of_user;
  for (int s = 0; s < kSenders; ++s) sender_of_user[users[s].name] = s;

  std::vector<std::vector<std::pair<std::string, std::string>>> orders;  // (from, id) per member
  std::vector<std::vector<boost::json::object>> all_messages;
  for (std::size_t m = 0; m < members.size(); ++m) {
    auto& client = *members[m];
    SCOPED_TRACE(client.label());
    const bool is_sender = m < static_cast<std::size_t>(kSenders);
    auto frames = collect(client, kTotal + (is_sender ? kPerSender : 0), 90s);
    auto parts = split(std::move(frames));

    if (is_sender) {
      ASSERT_EQ(parts.acks.size(), static_cast<std::size_t>(kPerSender));
      for (int i = 0; i < kPerSender; ++i)
        ASSERT_EQ(parts.acks[i], ack(room, id_of(static_cast<int>(m), i)))
            << "acks must come in the order of the sends; ack #" << i << " is " << to_text(parts.acks[i]);
    }
    ASSERT_EQ(parts.messages.size(), static_cast<std::size_t>(kTotal));

    std::vector<std::pair<std::string, std::string>> order;
    std::vector<int> next_index(kSenders, 0);
    std::set<std::string> seen;
    for (int i = 0; i < kTotal; ++i) {
      const auto& frame = parts.messages[i];
      const auto from = str(frame, "from");
      const auto id = str(frame, "id");
      ASSERT_TRUE(sender_of_user.count(from)) << "unknown sender in " << to_text(frame);
      // seq base+1 .. base+1000 without gap or duplicate, fields exact.
      expect_message(frame, room, base + 1 + i, id, from, body_of(id));
      ASSERT_TRUE(seen.insert(from + "/" + id).second) << "duplicate " << to_text(frame);
      const int s = sender_of_user[from];
      ASSERT_EQ(id, id_of(s, next_index[s]))
          << "sender " << s << "'s messages out of send order at seq " << base + 1 + i;
      ++next_index[s];
      order.emplace_back(from, id);
    }
    orders.push_back(std::move(order));
    all_messages.push_back(std::move(parts.messages));
  }
  for (std::size_t m = 1; m < orders.size(); ++m)
    EXPECT_TRUE(orders[m] == orders[0])
        << members[m]->label() << " saw another order than " << members[0]->label();
  // One frame per message, the same everywhere (ts included).
  for (std::size_t m = 1; m < all_messages.size(); ++m)
    EXPECT_TRUE(all_messages[m] == all_messages[0])
        << members[m]->label() << " got frames that differ from " << members[0]->label() << "'s";
  expect_all_quiet(members, 1000ms);
}

TEST_F(MessagePath, LateJoinerGetsEverythingAfterItsJoinedSeqWithoutGap) {
  constexpr int kMessages = 600;
  auto sender_user = make_user(http_, "stream");
  auto early_user = make_user(http_, "early");
  auto late_user = make_user(http_, "late");
  const auto room = unique_name("late-");
  auto sender = connect(kGatewayA, sender_user, "sender@A");
  auto early = connect(kGatewayB, early_user, "early@B");
  ASSERT_EQ(sender->join(room), 0);
  ASSERT_EQ(early->join(room), 0);
  Collector sender_frames(*sender);
  Collector early_frames(*early);

  // Joins land while the room is busy: one on each gateway, at different points.
  std::vector<std::unique_ptr<LineClient>> late;
  std::vector<std::int64_t> joined;
  for (int i = 0; i < kMessages; ++i) {
    auto id = numbered("s", i);
    sender->send(room, id, numbered("n", i));
    if (i % 10 == 9) std::this_thread::sleep_for(3ms);
    if (i == 150 || i == 300 || i == 450) {
      const auto port = i == 300 ? kGatewayA : kGatewayB;
      late.push_back(
          connect(port, late_user,
                  numbered("late#", static_cast<std::int64_t>(late.size())) + "@" + std::to_string(port)));
      joined.push_back(late.back()->join(room));
    }
  }
  std::cerr << "late joiners joined at seq";
  for (auto seq : joined) std::cerr << " " << seq;
  std::cerr << " of " << kMessages << "\n";
  auto all_in = [&](const Collector::Frames& frames) {
    return count_type(frames, "message") >= static_cast<std::size_t>(kMessages);
  };
  ASSERT_TRUE(early_frames.wait_until(all_in, 60s)) << count_type(early_frames.frames(), "message");
  ASSERT_TRUE(sender_frames.wait_until(all_in, 60s)) << count_type(sender_frames.frames(), "message");
  early_frames.stop();
  sender_frames.stop();
  auto reference = early_frames.frames();
  ASSERT_EQ(reference.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i)
    expect_message(reference[i], room, i + 1, numbered("s", i), sender_user.name, numbered("n", i));

  for (std::size_t l = 0; l < late.size(); ++l) {
    SCOPED_TRACE(late[l]->label() + numbered(" joined at seq ", joined[l]));
    ASSERT_GE(joined[l], 0);
    ASSERT_LE(joined[l], kMessages);
    // Exactly the frames after its joined seq: no gap, nothing older, no duplicate.
    for (std::int64_t seq = joined[l] + 1; seq <= kMessages; ++seq) {
      auto frame = late[l]->next(30s);
      ASSERT_EQ(frame, reference[seq - 1])
          << "expected seq " << seq << ", got " << to_text(frame).substr(0, 200);
    }
    late[l]->expect_silence(300ms);
  }
}

TEST_F(MessagePath, RepeatedIdsAreDeliveredOncePerSender) {
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  auto carol = make_user(http_, "carol");
  const auto room = unique_name("dedupe-");

  auto a = connect(kGatewayA, alice, "alice@A");
  auto b = connect(kGatewayB, bob, "bob@B");
  auto c = connect(kGatewayB, carol, "carol@B");
  ASSERT_EQ(a->join(room), 0);
  ASSERT_EQ(b->join(room), 0);
  ASSERT_EQ(c->join(room), 0);
  const std::vector<LineClient*> members{a.get(), b.get(), c.get()};
  const boost::json::object accepted{{"id", "dup-rest"}, {"room", room}};

  // REST twice with one id: both 202 with that id, one delivery.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto response = http_.publish(alice.token, room, "rest body", std::string("dup-rest"));
    ASSERT_EQ(response.status, 202) << "attempt " << attempt << ": " << response.describe();
    EXPECT_EQ(response.json(), accepted) << response.describe();
  }
  for (auto* member : members) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room, 1, "dup-rest", alice.name, "rest body");
  }

  // TCP twice with one id: both acked (in order), one delivery.
  b->send(room, "dup-tcp", "tcp body", boost::json::value(1));
  b->send(room, "dup-tcp", "tcp body", boost::json::value(2));
  auto sender = split(collect(*b, 3));
  ASSERT_EQ(sender.acks.size(), 2u);
  EXPECT_EQ(sender.acks[0], ack(room, "dup-tcp", boost::json::value(1)));
  EXPECT_EQ(sender.acks[1], ack(room, "dup-tcp", boost::json::value(2)));
  ASSERT_EQ(sender.messages.size(), 1u);
  expect_message(sender.messages[0], room, 2, "dup-tcp", bob.name, "tcp body");
  for (auto* member : {a.get(), c.get()}) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room, 2, "dup-tcp", bob.name, "tcp body");
  }

  // The same sender repeating its REST id over TCP: acked, not delivered.
  a->send(room, "dup-rest", "rest body");
  EXPECT_EQ(a->next(), ack(room, "dup-rest"));

  // Ids are per sender: bob's and alice's "shared-id" are two messages.
  b->send(room, "shared-id", "from bob");
  auto bob_frames = split(collect(*b, 2));
  ASSERT_EQ(bob_frames.acks.size(), 1u);
  EXPECT_EQ(bob_frames.acks[0], ack(room, "shared-id"));
  ASSERT_EQ(bob_frames.messages.size(), 1u);
  expect_message(bob_frames.messages[0], room, 3, "shared-id", bob.name, "from bob");
  auto response = http_.publish(alice.token, room, "from alice", std::string("shared-id"));
  ASSERT_EQ(response.status, 202) << response.describe();
  EXPECT_EQ(response.json(), (boost::json::object{{"id", "shared-id"}, {"room", room}}));
  expect_message(b->next(), room, 4, "shared-id", alice.name, "from alice");
  for (auto* member : {a.get(), c.get()}) {
    SCOPED_TRACE(member->label());
    expect_message(member->next(), room, 3, "shared-id", bob.name, "from bob");
    expect_message(member->next(), room, 4, "shared-id", alice.name, "from alice");
  }
  expect_all_quiet(members, 1000ms);
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

// A gateway accepts clients as soon as it listens, while its own RabbitMQ
// connections may still be on their way (here: held for 3 s by a proxy, as
// in a partition between that gateway and the broker while the others work).
// A client that joins in that window was told `joined` seq S; it must then
// get S+1, S+2, ... without a hole, including what the other gateways
// sequenced before this gateway's fan-out queue existed.
TEST_F(MessagePath, ClientJoiningBeforeItsGatewayReachesRabbitMqMissesNothing) {
  const std::uint16_t kLateGateway = e2e_port(17003);
  HeldProxy partition(url_port(services_.amqp), 3000ms);
  auto late_gateway =
      start_gateway(services_, secret_, kLateGateway, {"--amqp", partition.rewrite_url(services_.amqp)},
                    /*wait_for_pipeline=*/false);
  auto alice = make_user(http_, "alice");
  auto bob = make_user(http_, "bob");
  const auto room = unique_name("early-");

  LineClient early(kLateGateway, 0, "bob@late-gateway");
  early.auth(bob.token, bob.name);
  ASSERT_EQ(early.join(room), 0);
  ASSERT_EQ(late_gateway->count_in_log("fanout: consuming"), 0u)
      << "the proxy should still hold the gateway's RabbitMQ connections";
  auto reference = connect(kGatewayA, alice, "alice@A");
  ASSERT_EQ(reference->join(room), 0);

  // Sequenced by the other gateways while the late one has no fan-out queue.
  for (int i = 1; i <= 3; ++i) {
    auto response = http_.publish(alice.token, room, numbered("during partition ", i), numbered("p", i));
    ASSERT_EQ(response.status, 202) << response.describe();
    expect_message(reference->next(), room, i, numbered("p", i), alice.name,
                   numbered("during partition ", i));
  }
  ASSERT_EQ(late_gateway->count_in_log("fanout: consuming"), 0u)
      << "the partition ended too soon for this test";
  ASSERT_TRUE(late_gateway->wait_for_log("fanout: consuming", 30s)) << late_gateway->log_tail();
  auto after = http_.publish(alice.token, room, "after partition", std::string("p4"));
  ASSERT_EQ(after.status, 202) << after.describe();
  expect_message(reference->next(), room, 4, "p4", alice.name, "after partition");

  std::vector<boost::json::object> got;
  for (;;) {
    auto result = early.read(10s);
    if (result.kind != ReadResult::Kind::frame) break;
    got.push_back(std::move(result.frame));
    if (num(got.back(), "seq") >= 4) break;
  }
  std::string seen;
  for (const auto& frame : got) seen += numbered(" ", num(frame, "seq"));
  ASSERT_EQ(got.size(), 4u) << "the early client got seqs" << seen << " instead of 1 2 3 4";
  for (int i = 1; i <= 3; ++i)
    expect_message(got[i - 1], room, i, numbered("p", i), alice.name, numbered("during partition ", i));
  expect_message(got[3], room, 4, "p4", alice.name, "after partition");
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

// The same after a RabbitMQ blip: the gateway's broker connections are cut
// for 3 s while the other gateways sequence messages for the room, then
// reconnected. A member must get every seq after its joined seq, without a
// hole, whether or not its gateway had fanned out anything of the room
// before the cut.
class RabbitMqBlip : public MessagePath {
 protected:
  void run(bool room_had_traffic) {
    const std::uint16_t proxied_port = e2e_port(17003);
    HeldProxy link(url_port(services_.amqp), 0ms);
    auto proxied =
        start_gateway(services_, secret_, proxied_port, {"--amqp", link.rewrite_url(services_.amqp)});
    auto alice = make_user(http_, "alice");
    auto bob = make_user(http_, "bob");
    const auto room = unique_name("blip-");

    LineClient member(proxied_port, 0, "bob@proxied-gateway");
    member.auth(bob.token, bob.name);
    ASSERT_EQ(member.join(room), 0);
    auto reference = connect(kGatewayA, alice, "alice@A");
    ASSERT_EQ(reference->join(room), 0);

    std::vector<std::pair<std::string, std::string>> sent;  // (id, body) by seq - 1
    auto publish = [&](const std::string& id, const std::string& body) {
      auto response = http_.publish(alice.token, room, body, id);
      ASSERT_EQ(response.status, 202) << response.describe();
      sent.emplace_back(id, body);
      expect_message(reference->next(), room, static_cast<std::int64_t>(sent.size()), id, alice.name, body);
    };
    if (room_had_traffic) {
      publish("before", "before the blip");
      expect_message(member.next(), room, 1, "before", alice.name, "before the blip");
    }

    link.cut(3000ms);
    ASSERT_TRUE(proxied->wait_for_log("fanout: ", 10s, 2)) << "the gateway did not notice the cut:\n"
                                                           << proxied->log_tail();
    for (int i = 1; i <= 3; ++i) publish(numbered("b", i), numbered("during blip ", i));
    ASSERT_EQ(proxied->count_in_log("fanout: consuming"), 1u) << "reconnected too soon for this test";
    ASSERT_TRUE(proxied->wait_for_log("fanout: consuming", 30s, 2)) << proxied->log_tail();
    publish("after", "after the blip");

    const auto first = room_had_traffic ? 2 : 1;
    const auto last = static_cast<std::int64_t>(sent.size());
    std::vector<boost::json::object> got;
    for (;;) {
      auto result = member.read(10s);
      if (result.kind != ReadResult::Kind::frame) break;
      got.push_back(std::move(result.frame));
      if (num(got.back(), "seq") >= last) break;
    }
    std::string seen, wanted;
    for (const auto& frame : got) seen += numbered(" ", num(frame, "seq"));
    for (auto seq = first; seq <= last; ++seq) wanted += numbered(" ", seq);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(last - first + 1))
        << "the member got seqs" << seen << " instead of" << wanted;
    for (auto seq = first; seq <= last; ++seq)
      expect_message(got[seq - first], room, seq, sent[seq - 1].first, alice.name, sent[seq - 1].second);
  }
};

TEST_F(RabbitMqBlip, MemberOfARoomWithEarlierTrafficMissesNothingAcrossTheReconnect) {
  run(true);
}

TEST_F(RabbitMqBlip, MemberOfAQuietRoomMissesNothingAcrossTheReconnect) {
  run(false);
}

}  // namespace
}  // namespace rtmc::e2e
