// kill -9 of the gateway that holds the ingest consumers while messages flow:
// every acknowledged message still reaches the surviving gateway's clients,
// in order, exactly once. Its own executable, so the two gateways started
// here are the only consumers on the broker.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <map>
#include <set>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kSequencingGateway = e2e_port(17005);
const std::uint16_t kSurvivingGateway = e2e_port(17006);
constexpr int kTcpMessages = 600;
constexpr int kKillAfterAcks = 200;
constexpr int kRestMessages = 150;

using SteadyClock = std::chrono::steady_clock;

std::string tcp_id(int n) {
  char text[16];
  std::snprintf(text, sizeof text, "t%03d", n);
  return text;
}
std::string rest_id(int n) {
  char text[16];
  std::snprintf(text, sizeof text, "r%03d", n);
  return text;
}
int index_of(const std::string& id) {
  return std::stoi(id.substr(1));
}

TEST(Failover, AckedMessagesSurviveKillNineOfTheSequencingGateway) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  // A first, so it is the single active consumer of every ingest shard.
  auto sequencer = start_gateway(services, secret, kSequencingGateway);
  auto survivor = start_gateway(services, secret, kSurvivingGateway);
  HttpClient http(kApiPort);

  auto tcp_user = make_user(http, "tcp");
  auto rest_user = make_user(http, "rest");
  auto member_users = std::vector{make_user(http, "m1-"), make_user(http, "m2-")};
  const auto room = unique_name("failover-");

  std::vector<std::unique_ptr<LineClient>> members;
  for (const auto& user : member_users) {
    members.push_back(std::make_unique<LineClient>(kSurvivingGateway, 0, "member " + user.name));
    members.back()->auth(user.token, user.name);
  }
  LineClient publisher(kSurvivingGateway, 0, "tcp publisher");
  publisher.auth(tcp_user.token, tcp_user.name);
  const auto base = publisher.join(room);
  ASSERT_EQ(base, 0);
  for (auto& member : members) ASSERT_EQ(member->join(room), base);

  // Warm-up through the sequencing gateway: the path works before the kill.
  auto warm = http.publish(rest_user.token, room, "warm-up", std::string("warm"));
  ASSERT_EQ(warm.status, 202) << warm.describe();
  for (auto& member : members)
    expect_message(member->next(), room, base + 1, "warm", rest_user.name, "warm-up");
  expect_message(publisher.next(), room, base + 1, "warm", rest_user.name, "warm-up");

  std::vector<std::unique_ptr<Collector>> member_frames;
  for (auto& member : members) member_frames.push_back(std::make_unique<Collector>(*member));
  Collector publisher_frames(publisher);

  // REST publishes run alongside, one at a time, across the kill.
  std::map<std::string, int> rest_status;
  std::thread rest([&] {
    for (int i = 0; i < kRestMessages; ++i) {
      int status = 0;
      try {
        status = http.publish(rest_user.token, room, "rest " + rest_id(i), rest_id(i)).status;
      } catch (const std::exception&) {
        status = -1;  // no answer
      }
      rest_status[rest_id(i)] = status;
      std::this_thread::sleep_for(5ms);
    }
  });

  // TCP sends in small pipelined bursts, with the kill after ~200 acks, so
  // the sequencing gateway dies with deliveries in hand (sequenced or not,
  // fanned out or not, acked to RabbitMQ or not).
  bool killed = false;
  auto killed_at = SteadyClock::now();
  for (int i = 0; i < kTcpMessages; ++i) {
    publisher.send_line(boost::json::serialize(boost::json::object{
        {"type", "send"}, {"room", room}, {"id", tcp_id(i)}, {"body", "tcp " + tcp_id(i)}}));
    if (i % 10 != 9) continue;
    std::this_thread::sleep_for(5ms);
    if (!killed && count_type(publisher_frames.frames(), "ack") >= static_cast<std::size_t>(kKillAfterAcks)) {
      sequencer->kill9();
      killed = true;
      killed_at = SteadyClock::now();
      std::cerr << "killed the sequencing gateway after send #" << i << "\n";
    }
  }
  if (!killed) {
    // Confirms lagged behind the sends; kill as soon as 200 are in.
    ASSERT_TRUE(publisher_frames.wait_until(
        [](const auto& f) { return count_type(f, "ack") >= static_cast<std::size_t>(kKillAfterAcks); }, 30s));
    sequencer->kill9();
    killed = true;
    killed_at = SteadyClock::now();
    std::cerr << "killed the sequencing gateway after all sends\n";
  }
  rest.join();

  // Every TCP send is answered (ack or error) by the surviving gateway.
  ASSERT_TRUE(publisher_frames.wait_until(
      [](const auto& f) { return count_type(f, "ack") + count_type(f, "error") >= kTcpMessages; }, 60s))
      << "publisher got " << count_type(publisher_frames.frames(), "ack") << " acks and "
      << count_type(publisher_frames.frames(), "error") << " errors of " << kTcpMessages;

  std::set<std::string> acked;  // "from/id"
  int next_ack = 0;
  for (const auto& frame : publisher_frames.frames()) {
    if (str(frame, "type") == "ack") {
      // Acks and errors together come in send order.
      EXPECT_EQ(index_of(str(frame, "id")), next_ack++) << to_text(frame);
      acked.insert(tcp_user.name + "/" + str(frame, "id"));
    } else if (str(frame, "type") == "error") {
      EXPECT_EQ(str(frame, "code"), "unavailable") << to_text(frame);
      ++next_ack;
    }
  }
  int rest_accepted = 0;
  for (const auto& [id, status] : rest_status) {
    EXPECT_TRUE(status == 202 || status == 503 || status == -1) << id << ": HTTP " << status;
    if (status == 202) {
      acked.insert(rest_user.name + "/" + id);
      ++rest_accepted;
    }
  }
  std::cerr << acked.size() << " messages acknowledged (" << rest_accepted << " over REST)\n";

  // Every member of the surviving gateway (the publisher included) gets every
  // acknowledged message; allow RabbitMQ time to hand the shards over.
  auto has_all_acked = [&](const Collector::Frames& frames) {
    std::size_t found = 0;
    for (const auto& frame : frames)
      if (str(frame, "type") == "message" && acked.count(str(frame, "from") + "/" + str(frame, "id")))
        ++found;
    return found >= acked.size();
  };
  std::vector<Collector*> all;
  for (auto& collector : member_frames) all.push_back(collector.get());
  all.push_back(&publisher_frames);
  for (auto* collector : all) {
    bool complete = collector->wait_until(has_all_acked, 90s);
    EXPECT_TRUE(complete)
        << "a member is missing acknowledged messages "
        << std::chrono::duration_cast<std::chrono::seconds>(SteadyClock::now() - killed_at).count()
        << " s after the kill; closed=" << collector->closed() << " " << collector->error();
  }
  std::cerr << "all acknowledged messages delivered "
            << std::chrono::duration_cast<Millis>(SteadyClock::now() - killed_at).count()
            << " ms after the kill\n";
  // A moment for stragglers (duplicates would show up now).
  std::this_thread::sleep_for(1500ms);
  for (auto* collector : all) collector->stop();

  std::vector<std::vector<std::string>> orders;
  for (std::size_t m = 0; m < all.size(); ++m) {
    SCOPED_TRACE("member #" + std::to_string(m));
    std::int64_t expected_seq = base + 2;  // after the warm-up
    std::set<std::string> seen;
    std::map<std::string, int> last_index{{tcp_user.name, -1}, {rest_user.name, -1}};
    std::vector<std::string> order;
    for (const auto& frame : all[m]->frames()) {
      if (str(frame, "type") != "message") continue;
      const auto from = str(frame, "from");
      const auto id = str(frame, "id");
      ASSERT_TRUE(last_index.count(from)) << to_text(frame);
      const bool over_tcp = from == tcp_user.name;
      expect_message(frame, room, expected_seq, id, from, (over_tcp ? "tcp " : "rest ") + id);
      ++expected_seq;
      ASSERT_TRUE(seen.insert(from + "/" + id).second) << "delivered twice: " << to_text(frame);
      EXPECT_GT(index_of(id), last_index[from]) << "out of send order: " << to_text(frame);
      last_index[from] = index_of(id);
      order.push_back(from + "/" + id);
    }
    for (const auto& key : acked) EXPECT_TRUE(seen.count(key)) << "acknowledged but never delivered: " << key;
    orders.push_back(std::move(order));
  }
  for (std::size_t m = 1; m < orders.size(); ++m)
    EXPECT_TRUE(orders[m] == orders[0]) << "member #" << m << " saw another sequence than member #0";
  EXPECT_TRUE(survivor->running());
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

// While an api and a gateway cannot reach RabbitMQ (their links held by a
// proxy for 9 s), a REST publish is answered 503 and a TCP send
// `unavailable`: never a 202 or an ack without the broker's confirm. Once the
// link is back both work again, and every accepted message is delivered once.
TEST(BrokerOutage, PublishesAreRefusedNotFakedDuringAnOutageAndWorkAfterIt) {
  const std::uint16_t direct_api_port = e2e_port(18080);
  const std::uint16_t cut_api_port = e2e_port(18082);
  const std::uint16_t direct_gateway_port = e2e_port(17008);
  const std::uint16_t cut_gateway_port = e2e_port(17009);
  auto services = service_env();
  auto secret = random_secret();
  HeldProxy api_link(url_port(services.amqp), 0ms);
  HeldProxy gateway_link(url_port(services.amqp), 0ms);
  auto direct_api = start_api(services, secret, direct_api_port);
  auto cut_api = start_api(services, secret, cut_api_port, {"--amqp", api_link.rewrite_url(services.amqp)});
  auto direct_gateway = start_gateway(services, secret, direct_gateway_port);
  auto cut_gateway =
      start_gateway(services, secret, cut_gateway_port, {"--amqp", gateway_link.rewrite_url(services.amqp)});
  HttpClient http(direct_api_port);
  HttpClient cut_http(cut_api_port);
  auto rest_user = make_user(http, "rest");
  auto tcp_user = make_user(http, "tcp");
  auto member_user = make_user(http, "member");
  const auto room = unique_name("outage-");

  LineClient member(direct_gateway_port, 0, "member@direct");
  member.auth(member_user.token, member_user.name);
  ASSERT_EQ(member.join(room), 0);
  LineClient sender(cut_gateway_port, 0, "sender@cut");
  sender.auth(tcp_user.token, tcp_user.name);
  ASSERT_EQ(sender.join(room), 0);

  api_link.cut(9000ms);
  gateway_link.cut(9000ms);
  const auto cut_at = SteadyClock::now();
  sender.send(room, "tcp-during", "sent during the outage", boost::json::value("t1"));
  auto refused =
      cut_http.publish(rest_user.token, room, "posted during the outage", std::string("rest-during"));
  const auto rest_refused_after = std::chrono::duration_cast<Millis>(SteadyClock::now() - cut_at);
  expect_http_error(refused, 503, "unavailable");
  EXPECT_LT(rest_refused_after, 9000ms) << "the REST publish was answered only after the outage ended";
  // The gateway session also answers the TCP send, with an error, not an ack
  // (its own copy may arrive too, should the message get through later).
  boost::json::object answer;
  std::string before_answer;
  for (;;) {
    answer = sender.next(20s);
    before_answer +=
        numbered("  +", std::chrono::duration_cast<Millis>(SteadyClock::now() - cut_at).count()) + " ms " +
        to_text(answer) + "\n";
    if (str(answer, "type") != "message") break;
  }
  const auto answered_after = std::chrono::duration_cast<Millis>(SteadyClock::now() - cut_at);
  std::cerr << "REST refused after " << rest_refused_after.count() << " ms; TCP frames after the cut:\n"
            << before_answer;
  expect_error(answer, "unavailable", boost::json::value("t1"));
  EXPECT_LT(answered_after, 9000ms) << "the TCP send was answered only after the outage ended";

  // Back: both take messages again (the api once its publisher reconnected).
  ASSERT_TRUE(cut_gateway->wait_for_log("amqp publisher: connected", 30s, 2)) << cut_gateway->log_tail();
  HttpResponse accepted;
  for (auto deadline = SteadyClock::now() + 30s; SteadyClock::now() < deadline;) {
    accepted = cut_http.publish(rest_user.token, room, "posted after the outage", std::string("rest-after"));
    if (accepted.status == 202) break;
    std::this_thread::sleep_for(500ms);
  }
  ASSERT_EQ(accepted.status, 202) << accepted.describe();
  sender.send(room, "tcp-after", "sent after the outage", boost::json::value("t2"));
  for (;;) {
    auto frame = sender.next(15s);
    if (str(frame, "type") == "message") continue;  // copies of what the room gets
    ASSERT_EQ(frame,
              (boost::json::object{{"type", "ack"}, {"id", "tcp-after"}, {"room", room}, {"ref", "t2"}}));
    break;
  }

  // The member gets both accepted messages, once each, gap-free; the refused
  // ones may or may not have been sent after all (their retries are safe).
  std::set<std::string> seen;
  std::int64_t expected_seq = 1;
  while (!(seen.count("rest-after") && seen.count("tcp-after"))) {
    auto frame = member.next(30s);
    const auto id = str(frame, "id");
    ASSERT_TRUE(id == "tcp-during" || id == "rest-during" || id == "rest-after" || id == "tcp-after")
        << to_text(frame);
    const bool over_tcp = id.rfind("tcp", 0) == 0;
    const bool during = id.find("during") != std::string::npos;
    expect_message(
        frame, room, expected_seq++, id, over_tcp ? tcp_user.name : rest_user.name,
        std::string(over_tcp ? "sent" : "posted") + (during ? " during" : " after") + " the outage");
    ASSERT_TRUE(seen.insert(id).second) << "delivered twice: " << to_text(frame);
  }
  std::this_thread::sleep_for(1000ms);
  // Only a refused message may still trail in, once.
  for (;;) {
    auto result = member.read(200ms);
    if (result.kind != ReadResult::Kind::frame) break;
    const auto id = str(result.frame, "id");
    EXPECT_TRUE((id == "tcp-during" || id == "rest-during") && seen.insert(id).second) << result.line;
  }
}

}  // namespace
}  // namespace rtmc::e2e
