// Overload (issue 8, Contract C of the scale design): beyond the publisher's
// backlog bound the api answers 503 `overloaded` with Retry-After at once,
// while a gateway never refuses a TCP send for it: it stops reading the
// sender until there is room, and every acknowledged message still arrives
// once, in order. Tiny bounds make the overload certain on any machine.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17006);
const std::uint16_t kApi = e2e_port(18083);

// prefix + n, appended (GCC 12 reports a bogus -Wrestrict for "m" + to_string).
std::string with_number(std::string prefix, int n) {
  prefix.append(std::to_string(n));
  return prefix;
}

// The api's publisher holds one message at most. Its broker link is cut and
// held, so the first publish stays in the backlog: a second one at that time
// is answered 503 overloaded with Retry-After, at once. Once the broker is
// back, publishes are accepted again.
TEST(Overload, TheApiAnswersOverloadedAtOnceBeyondItsBacklog) {
  const auto services = service_env();
  const auto secret = random_secret();
  HeldProxy link(url_port(services.amqp), 0ms);
  auto api = start_api(services, secret, kApi,
                       {"--amqp", link.rewrite_url(services.amqp), "--publish-backlog", "1"});
  HttpClient http(kApi);
  const auto user = make_user(http, "overload");
  const auto room = unique_name("overload-");

  link.cut(8000ms);
  // Two at once: whichever the publisher takes first holds the backlog, the
  // other is refused without waiting for the broker.
  auto first = std::async(std::launch::async, [&] { return http.publish(user.token, room, "one"); });
  auto second = std::async(std::launch::async, [&] { return http.publish(user.token, room, "two"); });
  std::vector<HttpResponse> answers{first.get(), second.get()};
  std::size_t overloaded = 0;
  for (const auto& answer : answers) {
    if (answer.status == 503 && str(answer.json(), "error") == "overloaded") {
      ++overloaded;
      expect_http_error(answer, 503, "overloaded");
      EXPECT_EQ(answer.headers.count("retry-after"), 1u) << answer.describe();
      if (answer.headers.count("retry-after") != 0) {
        EXPECT_GE(std::stoi(answer.headers.at("retry-after")), 1);
      }
    } else {
      // The held one: the broker is away, so `unavailable` (or accepted,
      // had the hold ended).
      EXPECT_TRUE(answer.status == 503 || answer.status == 202) << answer.describe();
    }
  }
  EXPECT_EQ(overloaded, 1u) << answers[0].describe() << "\n" << answers[1].describe();

  // The broker back: accepted again (the publisher reconnects with backoff).
  int status = 0;
  for (int attempt = 0; attempt < 60 && status != 202; ++attempt) {
    status = http.publish(user.token, room, "after").status;
    if (status != 202) std::this_thread::sleep_for(250ms);  // a retry pace, not an assertion
  }
  EXPECT_EQ(status, 202);
}

// The gateway's publisher backlog holds one send at a time: two senders
// pipelining 150 sends each are slowed (not read while it is full), never
// answered an error, and a member of the room receives all 300, each once,
// each sender's in its send order.
TEST(Overload, TcpSendersAreSlowedNeverRefusedAndEveryAckedMessageArrivesOnceInOrder) {
  constexpr int kPerSender = 150;
  const auto services = service_env();
  const auto secret = random_secret();
  auto api = start_api(services, secret, kApi);
  auto gateway = start_gateway(services, secret, kGateway, {"--ingest-backlog", "1"});
  HttpClient http(kApi);
  const auto room = unique_name("slowed-");

  auto member_user = make_user(http, "member");
  LineClient member(kGateway, 0, "member");
  member.auth(member_user.token, member_user.name);
  ASSERT_EQ(member.join(room), 0);
  Collector received(member);

  std::vector<TestUser> users{make_user(http, "sender"), make_user(http, "sender")};
  std::vector<std::unique_ptr<LineClient>> senders;
  for (const auto& user : users) {
    senders.push_back(std::make_unique<LineClient>(kGateway, 0, user.name));
    senders.back()->auth(user.token, user.name);
    senders.back()->join(room);
  }
  // Every send written at once, without waiting for acks.
  for (std::size_t s = 0; s < senders.size(); ++s) {
    std::string burst;
    for (int i = 0; i < kPerSender; ++i) {
      const auto number = std::to_string(i);
      boost::json::object send{
          {"type", "send"}, {"room", room}, {"id", "m" + number}, {"body", "b" + number}};
      burst.append(boost::json::serialize(send));
      burst.push_back('\n');
    }
    senders[s]->send_raw(burst);
  }
  for (std::size_t s = 0; s < senders.size(); ++s) {
    for (int acks = 0; acks < kPerSender;) {
      auto frame = senders[s]->next(30s);
      if (str(frame, "type") == "message") continue;  // its own room's messages
      ASSERT_EQ(str(frame, "type"), "ack") << to_text(frame);
      EXPECT_EQ(str(frame, "id"), with_number("m", acks++));
    }
  }

  ASSERT_TRUE(received.wait_until(
      [&](const Collector::Frames& frames) { return count_type(frames, "message") >= 2 * kPerSender; }, 60s))
      << count_type(received.frames(), "message") << " messages arrived";
  received.stop();
  std::map<std::string, int> next_of;
  std::int64_t seq = 0;
  for (const auto& frame : received.frames()) {
    if (str(frame, "type") != "message") continue;
    EXPECT_EQ(num(frame, "seq"), ++seq) << to_text(frame);
    const auto from = str(frame, "from");
    EXPECT_EQ(str(frame, "id"), with_number("m", next_of[from]++)) << to_text(frame);
  }
  for (const auto& user : users) EXPECT_EQ(next_of[user.name], kPerSender) << user.name;
  member.expect_silence(300ms);  // nothing more: each once
}

}  // namespace
}  // namespace rtmc::e2e
