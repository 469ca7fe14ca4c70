// Recovery after reconnect (issue 7): a join with `since` replays what the
// client missed from the room log, then goes live, with no gap and no
// duplicate at the seam while messages keep flowing; `recovered` says
// whether the log still covered the range; the replay is paced by the send
// queue, so it never cuts the client.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17001);

std::string id_of(std::string_view prefix, std::int64_t n) {
  return numbered(prefix, n);
}

// Sends `count` messages to `room` through `client` in batches of `batch`,
// each batch once the previous one is acknowledged on `frames` (which reads
// `client`); `acked` counts the acks awaited so far on that client.
void publish(LineClient& client, Collector& frames, std::size_t& acked, const std::string& room,
             std::string_view prefix, int count, const std::string& body, int batch = 50) {
  for (int sent = 0; sent < count;) {
    std::string lines;
    for (int i = 0; i < batch && sent < count; ++i, ++sent, ++acked)
      lines += boost::json::serialize(boost::json::object{
                   {"type", "send"}, {"room", room}, {"id", id_of(prefix, sent)}, {"body", body}}) +
               "\n";
    client.send_raw(lines);
    const auto want = acked;
    if (!frames.wait_until([&](const auto& f) { return count_type(f, "ack") >= want; }, 60s))
      throw std::runtime_error("publisher: " + std::to_string(count_type(frames.frames(), "ack")) +
                               " acks of " + std::to_string(want));
  }
}

// Acks come when RabbitMQ has a message, before it is sequenced: this waits
// until the room's seq (as a join reports it) reaches `seq`.
void wait_for_seq(std::uint16_t port, const TestUser& user, const std::string& room, std::int64_t seq) {
  LineClient probe(port, 0, "probe");
  probe.auth(user.token, user.name);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    const auto now = probe.join(room);
    if (now >= seq) return;
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("room " + room + " stays at seq " + std::to_string(now));
    probe.send_json({{"type", "leave"}, {"room", room}});
    // Whatever the short membership received, then `left`.
    while (str(probe.next(), "type") != "left") {
    }
    std::this_thread::sleep_for(20ms);
  }
}

// A publisher of its own that sends one message every `period` until
// stopped: the room keeps going while a client resumes.
class Trickle {
 public:
  Trickle(std::uint16_t port, const TestUser& user, std::string room, Millis period)
      : client_(port, 0, "trickle"), room_(std::move(room)) {
    client_.auth(user.token, user.name);
    client_.join(room_);
    frames_ = std::make_unique<Collector>(client_);
    thread_ = std::thread([this, period] {
      while (!stop_) {
        client_.send(room_, id_of("t", sent_), "trickle");
        ++sent_;
        std::this_thread::sleep_for(period);
      }
    });
  }
  // Stops sending; returns how many were sent, once all are acknowledged.
  int stop() {
    stop_ = true;
    thread_.join();
    const auto want = static_cast<std::size_t>(sent_.load());
    if (!frames_->wait_until([&](const auto& f) { return count_type(f, "ack") >= want; }, 60s))
      throw std::runtime_error("trickle: not every message was acknowledged");
    return sent_;
  }
  ~Trickle() {
    if (thread_.joinable()) {
      stop_ = true;
      thread_.join();
    }
  }

 private:
  LineClient client_;
  std::string room_;
  std::unique_ptr<Collector> frames_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::thread thread_;
};

// The joined frame of a join with `since` (read first), checked exactly.
boost::json::object join_since(LineClient& client, const std::string& room, std::int64_t since) {
  client.send_json({{"type", "join"}, {"room", room}, {"since", since}});
  auto joined = client.next();
  if (str(joined, "type") != "joined" || str(joined, "room") != room || !joined.contains("recovered") ||
      !joined.at("recovered").is_bool() || joined.size() != 4)
    throw std::runtime_error("expected joined with recovered, got " + to_text(joined));
  return joined;
}

// The seqs of the message frames of `room` among `frames`, in arrival order.
std::vector<std::int64_t> seqs_of(const Collector::Frames& frames, const std::string& room) {
  std::vector<std::int64_t> seqs;
  for (const auto& frame : frames)
    if (str(frame, "type") == "message" && str(frame, "room") == room) seqs.push_back(num(frame, "seq"));
  return seqs;
}

bool has_seq(const Collector::Frames& frames, std::int64_t seq) {
  for (auto it = frames.rbegin(); it != frames.rend(); ++it)
    if (str(*it, "type") == "message" && num(*it, "seq") == seq) return true;
  return false;
}

TEST(Recovery, AClientThatMissed500MessagesResumesWithEveryMessageOnceWhileTrafficFlows) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  // The log keeps the 500 and whatever the trickle adds meanwhile.
  auto gateway = start_gateway(services, secret, kGateway, {"--room-log-length", "5000"});
  HttpClient http(kApiPort);
  auto reader_user = make_user(http, "reader");
  auto publisher_user = make_user(http, "pub");
  auto trickle_user = make_user(http, "trickle");
  const auto room = unique_name("resume-");

  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  Collector published(publisher);
  std::size_t acked = 0;

  std::int64_t last_seen = 0;
  {
    LineClient reader(kGateway, 0, "reader");
    reader.auth(reader_user.token, reader_user.name);
    ASSERT_EQ(reader.join(room), 0);
    publish(publisher, published, acked, room, "a", 20, "before");
    for (int i = 1; i <= 20; ++i) {
      auto frame = reader.next();
      ASSERT_EQ(str(frame, "type"), "message") << to_text(frame);
      ASSERT_EQ(num(frame, "seq"), i);
      last_seen = i;
    }
    reader.close();  // the connection drops
  }
  // Messages keep flowing from another client through the whole test.
  Trickle trickle(kGateway, trickle_user, room, 3ms);
  publish(publisher, published, acked, room, "b", 500, "missed");
  // An ack means RabbitMQ has the message, not that it is sequenced yet: the
  // reader comes back once the publisher, a member, has seen seq 520.
  ASSERT_TRUE(published.wait_until([](const auto& f) { return has_seq(f, 520); }, 30s));

  LineClient reader(kGateway, 0, "reader-again");
  reader.auth(reader_user.token, reader_user.name);
  auto joined = join_since(reader, room, last_seen);
  EXPECT_TRUE(joined.at("recovered").as_bool()) << to_text(joined);
  const auto joined_seq = num(joined, "seq");
  EXPECT_GE(joined_seq, 520);
  Collector frames(reader);
  // More after the join, while the replay runs.
  publish(publisher, published, acked, room, "c", 200, "after");
  const int trickled = trickle.stop();
  const std::int64_t last = 20 + 500 + 200 + trickled;
  ASSERT_TRUE(frames.wait_until([&](const auto& f) { return has_seq(f, last); }, 60s))
      << "reader has " << seqs_of(frames.frames(), room).size() << " messages; want up to seq " << last
      << "; closed=" << frames.closed();
  frames.stop();
  reader.expect_silence(300ms);
  const auto all = frames.frames();
  const auto seqs = seqs_of(all, room);
  ASSERT_EQ(seqs.size(), static_cast<std::size_t>(last - last_seen));
  for (std::size_t i = 0; i < seqs.size(); ++i)
    ASSERT_EQ(seqs[i], last_seen + 1 + static_cast<std::int64_t>(i)) << "at position " << i;
  EXPECT_EQ(count_type(all, "gap"), 0u);
  EXPECT_EQ(count_type(all, "error"), 0u);
}

TEST(Recovery, SinceOlderThanTheLogIsNotRecoveredAndStreamsNothingOld) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway, {"--room-log-length", "100"});
  HttpClient http(kApiPort);
  auto reader_user = make_user(http, "reader");
  auto publisher_user = make_user(http, "pub");
  const auto room = unique_name("window-");

  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  Collector published(publisher);
  std::size_t acked = 0;
  // The smallest window (100); Redis trims approximately (whole stream nodes
  // of 100 entries), so 600 messages leave at most ~200 behind.
  publish(publisher, published, acked, room, "m", 600, "old");
  wait_for_seq(kGateway, publisher_user, room, 600);

  LineClient reader(kGateway, 0, "reader");
  reader.auth(reader_user.token, reader_user.name);
  auto joined = join_since(reader, room, 2);
  EXPECT_FALSE(joined.at("recovered").as_bool()) << to_text(joined);
  EXPECT_EQ(num(joined, "seq"), 600);
  reader.expect_silence(500ms);  // nothing old is streamed
  publisher.send(room, "live", "live");
  auto frame = reader.next();
  EXPECT_EQ(str(frame, "type"), "message") << to_text(frame);
  EXPECT_EQ(num(frame, "seq"), 601);

  // A since still in the window is recovered, and replays exactly (since, seq].
  LineClient second(kGateway, 0, "second");
  second.auth(reader_user.token, reader_user.name);
  auto recent = join_since(second, room, 595);
  EXPECT_TRUE(recent.at("recovered").as_bool()) << to_text(recent);
  EXPECT_EQ(num(recent, "seq"), 601);
  for (std::int64_t seq = 596; seq <= 601; ++seq) {
    auto message = second.next();
    ASSERT_EQ(str(message, "type"), "message") << to_text(message);
    ASSERT_EQ(num(message, "seq"), seq);
  }
  second.expect_silence(300ms);
}

TEST(Recovery, BadSinceIsABadFrameAndTheJoinDoesNotHappen) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway);
  HttpClient http(kApiPort);
  auto user = make_user(http, "bad");
  const auto room = unique_name("bad-since-");

  LineClient client(kGateway, 0, "client");
  client.auth(user.token, user.name);
  client.send_json({{"type", "join"}, {"room", room}, {"since", -1}, {"ref", 1}});
  expect_error(client.next(), "bad_frame", boost::json::value(1));
  client.send_json({{"type", "join"}, {"room", room}, {"since", 5}, {"ref", 2}});
  expect_error(client.next(), "bad_frame", boost::json::value(2));
  client.send_json({{"type", "join"}, {"room", room}, {"since", "0"}, {"ref", 3}});
  expect_error(client.next(), "bad_frame", boost::json::value(3));
  // Not in the room: a send is refused; the connection still serves.
  client.send(room, "x1", "hello", boost::json::value(4));
  expect_error(client.next(), "not_joined", boost::json::value(4));
  auto joined = join_since(client, room, 0);
  EXPECT_TRUE(joined.at("recovered").as_bool());
  EXPECT_EQ(num(joined, "seq"), 0);
}

TEST(Recovery, AReplayLargerThanTheSendQueueIsNotCut) {
  constexpr std::size_t kSendQueueBytes = 64 * 1024;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway =
      start_gateway(services, secret, kGateway, {"--send-queue-bytes", std::to_string(kSendQueueBytes)});
  HttpClient http(kApiPort);
  auto reader_user = make_user(http, "reader");
  auto publisher_user = make_user(http, "pub");
  const auto room = unique_name("big-replay-");

  // 1000 frames of ~4 KB: ~4 MB, over 60 times the send queue's bound.
  // Published over HTTP: a room member's queue (same bound) could not take
  // the live copies of such a burst.
  const std::string body(4000, 'r');
  for (int i = 0; i < 1000; ++i) {
    auto response = http.publish(publisher_user.token, room, body, id_of("m", i));
    ASSERT_LT(response.status, 300) << response.describe();
  }
  wait_for_seq(kGateway, publisher_user, room, 1000);

  LineClient reader(kGateway, 0, "reader");
  reader.auth(reader_user.token, reader_user.name);
  auto joined = join_since(reader, room, 0);
  ASSERT_TRUE(joined.at("recovered").as_bool()) << to_text(joined);
  ASSERT_EQ(num(joined, "seq"), 1000);
  for (std::int64_t seq = 1; seq <= 1000; ++seq) {
    auto frame = reader.next();
    ASSERT_EQ(str(frame, "type"), "message") << "at seq " << seq << ": " << to_text(frame);
    ASSERT_EQ(num(frame, "seq"), seq);
    ASSERT_EQ(str(frame, "body").size(), body.size());
  }
  reader.expect_silence(300ms);
}

std::string padded(std::string_view prefix, int n) {
  std::string text(prefix);
  const auto digits = std::to_string(n);
  text.append(4 - std::min<std::size_t>(4, digits.size()), '0');
  text += digits;
  return text;
}

// rtmc-chat, left alone, rides out a gateway restart: it reconnects, resumes
// its room with `since` and shows every message once, in order, including
// those sent while it was away.
TEST(Recovery, TheChatClientResumesByItselfAfterItsGatewayRestarts) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway);
  HttpClient http(kApiPort);
  auto chatter = make_user(http, "chat");
  auto publisher = make_user(http, "pub");
  const auto room = unique_name("chat-resume-");

  // stdin is /dev/null: the client lingers, printing what arrives.
  Process chat(
      "chat", RTMC_CHAT_BIN,
      {"--api", "http://127.0.0.1:" + std::to_string(kApiPort), "--gateway",
       "127.0.0.1:" + std::to_string(kGateway), "--user", chatter.name, "--room", room, "--linger-s", "120"},
      {{"RTMC_CHAT_PASSWORD", chatter.password}});
  ASSERT_TRUE(chat.wait_for_log("* joined #" + room, 20s)) << chat.log_tail();

  auto publish_http = [&](std::string_view prefix, int count) {
    for (int i = 0; i < count; ++i) {
      auto response = http.publish(publisher.token, room, padded(prefix, i), padded(prefix, i));
      ASSERT_EQ(response.status, 202) << response.describe();
    }
  };
  publish_http("before-", 10);
  ASSERT_TRUE(chat.wait_for_log(padded("before-", 9), 20s)) << chat.log_tail();

  gateway->terminate();
  // Sent while the client has no gateway: they wait in RabbitMQ until the
  // next gateway sequences them.
  publish_http("away-", 50);
  gateway = start_gateway(services, secret, kGateway);
  ASSERT_TRUE(chat.wait_for_log("* reconnected", 30s)) << chat.log_tail();
  publish_http("after-", 10);
  ASSERT_TRUE(chat.wait_for_log(padded("after-", 9), 30s)) << chat.log_tail();

  const auto log = chat.log();
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(padded("before-", i));
  for (int i = 0; i < 50; ++i) expected.push_back(padded("away-", i));
  for (int i = 0; i < 10; ++i) expected.push_back(padded("after-", i));
  std::size_t at = 0;
  for (const auto& body : expected) {
    const std::string line_end = "> " + body + "\n";
    const auto found = log.find(line_end, at);
    ASSERT_NE(found, std::string::npos) << body << " missing or out of order; log:\n" << chat.log_tail(120);
    EXPECT_EQ(log.find(line_end, found + 1), std::string::npos) << body << " shown twice";
    at = found + 1;
  }
  EXPECT_EQ(log.find("messages missed"), std::string::npos) << "the log covered the range";
  EXPECT_TRUE(chat.running()) << "the client lives on";
}

}  // namespace
}  // namespace rtmc::e2e
