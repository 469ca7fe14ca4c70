// A client that stops reading is dropped as slow_consumer once its send
// queue goes over the hard limit, or stays over the soft limit for the soft
// time, and nobody else in the room notices; a client that reads slowly
// through a burst far over the soft limit is not cut.

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <thread>

#include "support.hpp"

namespace rtmc::e2e {
namespace {

const std::uint16_t kGateway = e2e_port(17007);
constexpr std::size_t kSendQueueBytes = 256 * 1024;
// The first test is about the hard limit: the soft time never runs out.
constexpr std::size_t kHardBytes = 1024 * 1024;
constexpr std::size_t kBodyBytes = 4000;
constexpr std::size_t kMaxBodyBytes = 4096;  // the default --max-body
// Bursts well below the bound: the gateway counts a gathered write's bytes
// as queued until its completion handler runs, which is after every
// delivery already posted to that io thread, so a single burst above the
// bound would overflow a fast reader's queue too.
constexpr int kBatch = 20;        // ~80 KB of frames per batch
constexpr int kMaxBatches = 200;  // ~16 MB: far beyond any socket buffer
constexpr int kBatchesAfterDrop = 5;

TEST(SlowConsumer, ClientThatStopsReadingIsDroppedWhileOthersReceiveEverything) {
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway =
      start_gateway(services, secret, kGateway,
                    {"--send-queue-bytes", std::to_string(kSendQueueBytes), "--send-queue-hard-bytes",
                     std::to_string(kHardBytes), "--send-queue-soft-s", "3600"});
  HttpClient http(kApiPort);
  auto publisher_user = make_user(http, "pub");
  auto fast_user = make_user(http, "fast");
  auto slow_user = make_user(http, "slow");
  const auto room = unique_name("flood-");

  // A tiny receive buffer (which also turns off receive autotuning), so the
  // gateway's queue for it fills instead of the kernel's buffers.
  LineClient slow(kGateway, 4096, "slow");
  slow.auth(slow_user.token, slow_user.name);
  const auto base = slow.join(room);
  ASSERT_EQ(base, 0);
  LineClient fast(kGateway, 0, "fast");
  fast.auth(fast_user.token, fast_user.name);
  ASSERT_EQ(fast.join(room), base);
  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), base);

  // From here on the slow client is never read until the end.
  auto fast_frames = std::make_unique<Collector>(fast);
  auto publisher_frames = std::make_unique<Collector>(publisher);

  const std::string body(kBodyBytes, 'f');
  auto id_of = [](int n) {
    std::string id = "f";  // appended: GCC 12 warns falsely about "literal" + std::string
    id += std::to_string(n);
    return id;
  };
  int sent = 0;
  int batches_after_drop = -1;
  for (int batch = 0; batch < kMaxBatches && batches_after_drop < kBatchesAfterDrop; ++batch) {
    std::string lines;
    for (int i = 0; i < kBatch; ++i, ++sent)
      lines += boost::json::serialize(boost::json::object{
                   {"type", "send"}, {"room", room}, {"id", id_of(sent)}, {"body", body}}) +
               "\n";
    publisher.send_raw(lines);
    // Lockstep: the readers keep up before the next batch, so only the slow
    // client can overflow.
    const auto want = static_cast<std::size_t>(sent);
    ASSERT_TRUE(fast_frames->wait_until([&](const auto& f) { return count_type(f, "message") >= want; }, 60s))
        << "fast reader has " << count_type(fast_frames->frames(), "message") << " of " << sent
        << " messages; closed=" << fast_frames->closed() << " " << fast_frames->error();
    ASSERT_TRUE(publisher_frames->wait_until(
        [&](const auto& f) { return count_type(f, "message") >= want && count_type(f, "ack") >= want; }, 60s))
        << "publisher has " << count_type(publisher_frames->frames(), "ack") << " acks and "
        << count_type(publisher_frames->frames(), "message") << " messages of " << sent
        << "; closed=" << publisher_frames->closed() << " " << publisher_frames->error();
    if (batches_after_drop >= 0)
      ++batches_after_drop;
    else if (gateway->count_in_log("closed: slow_consumer") > 0)
      batches_after_drop = 0;
  }
  EXPECT_GE(batches_after_drop, 0) << "the gateway never logged a slow_consumer close after " << sent
                                   << " messages of " << kBodyBytes << " bytes";
  fast_frames->stop();
  publisher_frames->stop();

  // The fast member got every message, in order, exactly once, and the
  // publisher every ack, in send order.
  auto check_stream = [&](const Collector::Frames& frames, const std::string& who, bool with_acks) {
    SCOPED_TRACE(who);
    std::int64_t expected_seq = base + 1;
    int next_ack = 0;
    for (const auto& frame : frames) {
      if (str(frame, "type") == "ack") {
        ASSERT_TRUE(with_acks) << to_text(frame);
        ASSERT_EQ(frame, (boost::json::object{{"type", "ack"}, {"id", id_of(next_ack)}, {"room", room}}));
        ++next_ack;
        continue;
      }
      expect_message(frame, room, expected_seq, id_of(static_cast<int>(expected_seq - base - 1)),
                     publisher_user.name, body);
      ++expected_seq;
    }
    EXPECT_EQ(expected_seq - base - 1, sent);
    EXPECT_EQ(next_ack, with_acks ? sent : 0);
  };
  check_stream(fast_frames->frames(), "fast", false);
  check_stream(publisher_frames->frames(), "publisher", true);
  fast.ping(boost::json::value("fast still connected"));
  publisher.ping(boost::json::value("publisher still connected"));
  fast.expect_silence(300ms);

  // The slow client's connection is gone: what it can still read is a
  // gap-free prefix of the room, possibly ending in the slow_consumer error.
  auto leftovers = slow.expect_closed(15s);
  std::int64_t expected_seq = base + 1;
  for (std::size_t i = 0; i < leftovers.size(); ++i) {
    const auto& frame = leftovers[i];
    if (i + 1 == leftovers.size() && str(frame, "type") == "error") {
      expect_error(frame, "slow_consumer");
      break;
    }
    expect_message(frame, room, expected_seq, id_of(static_cast<int>(expected_seq - base - 1)),
                   publisher_user.name, body);
    ++expected_seq;
  }
  EXPECT_LT(expected_seq - base - 1, sent) << "the slow client was never cut short";
  std::cerr << "slow client read " << leftovers.size() << " frames (last: "
            << (leftovers.empty() ? std::string("none") : to_text(leftovers.back()).substr(0, 80))
            << "), partial line " << slow.partial_line().size() << " bytes; " << sent << " sent\n";
  // Only the slow client was dropped, by the hard limit.
  EXPECT_EQ(gateway->count_in_log("closed: slow_consumer"), 1u);
  EXPECT_EQ(gateway->count_in_log("send queue exceeded " + std::to_string(kHardBytes) + " bytes"), 1u);
  EXPECT_TRUE(gateway->running());
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

// Clients that read as fast as they can are not slow consumers, even when a
// room gets a burst bigger than the send queue bound (here: one publisher
// pipelining 400 messages of the largest body, ~1.7 MB, against the default
// 1 MiB bound). Loopback kernel buffers alone can take such a burst.
TEST(SlowConsumer, ReadingClientsSurviveABurstLargerThanTheSendQueue) {
  constexpr int kMessages = 400;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway = start_gateway(services, secret, kGateway);  // default --send-queue-bytes (1 MiB)
  HttpClient http(kApiPort);
  auto publisher_user = make_user(http, "burst");
  const auto room = unique_name("burst-");

  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  std::vector<std::unique_ptr<LineClient>> readers;
  for (int i = 0; i < 3; ++i) {
    auto user = make_user(http, "reader");
    readers.push_back(std::make_unique<LineClient>(kGateway, 0, "reader " + user.name));
    readers.back()->auth(user.token, user.name);
    ASSERT_EQ(readers.back()->join(room), 0);
  }
  std::vector<std::unique_ptr<Collector>> collectors;
  for (auto& reader : readers) collectors.push_back(std::make_unique<Collector>(*reader));
  collectors.push_back(std::make_unique<Collector>(publisher));

  const std::string body(kMaxBodyBytes, 'x');
  std::string lines;
  for (int i = 0; i < kMessages; ++i) {
    std::string id = "b";
    id += std::to_string(i);
    lines += boost::json::serialize(
                 boost::json::object{{"type", "send"}, {"room", room}, {"id", id}, {"body", body}}) +
             "\n";
  }
  publisher.send_raw(lines);

  for (std::size_t c = 0; c < collectors.size(); ++c) {
    bool complete = collectors[c]->wait_until(
        [&](const auto& frames) {
          return count_type(frames, "message") >= static_cast<std::size_t>(kMessages);
        },
        60s);
    auto frames = collectors[c]->frames();
    EXPECT_TRUE(complete) << "client #" << c << " got " << count_type(frames, "message") << " of "
                          << kMessages << " messages; closed=" << collectors[c]->closed() << "; last frame: "
                          << (frames.empty() ? std::string("none") : to_text(frames.back()).substr(0, 160));
  }
  for (auto& collector : collectors) collector->stop();
  EXPECT_EQ(gateway->count_in_log("closed: slow_consumer"), 0u);
}

}  // namespace
}  // namespace rtmc::e2e

namespace rtmc::e2e {
namespace {

std::string flood_lines(const std::string& room, int from, int count, const std::string& body) {
  std::string lines;
  for (int i = from; i < from + count; ++i)
    lines += boost::json::serialize(boost::json::object{
                 {"type", "send"}, {"room", room}, {"id", numbered("s", i)}, {"body", body}}) +
             "\n";
  return lines;
}

// Under the hard limit, a client that stopped reading is cut only once its
// queue stayed over the soft limit for the soft time: never earlier than
// that after the first message was sent (the queue cannot be over any limit
// before). Only a lower bound is asserted.
TEST(SlowConsumer, AClientThatStopsReadingIsCutAfterTheSoftTime) {
  constexpr int kSoftSeconds = 2;
  constexpr std::size_t kSoftBytes = 64 * 1024;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  auto gateway =
      start_gateway(services, secret, kGateway,
                    {"--send-queue-bytes", std::to_string(kSoftBytes), "--send-queue-hard-bytes",
                     std::to_string(256 << 20), "--send-queue-soft-s", std::to_string(kSoftSeconds)});
  HttpClient http(kApiPort);
  auto publisher_user = make_user(http, "pub");
  auto stopped_user = make_user(http, "stopped");
  const auto room = unique_name("soft-");
  LineClient stopped(kGateway, 4096, "stopped");
  stopped.auth(stopped_user.token, stopped_user.name);
  ASSERT_EQ(stopped.join(room), 0);
  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  auto publisher_frames = std::make_unique<Collector>(publisher);

  const std::string body(kBodyBytes, 's');
  const auto first_send = std::chrono::steady_clock::now();
  int sent = 0;
  bool cut = false;
  while (!cut && std::chrono::steady_clock::now() - first_send < 90s) {
    publisher.send_raw(flood_lines(room, sent, kBatch, body));
    sent += kBatch;
    const auto want = static_cast<std::size_t>(sent);
    ASSERT_TRUE(
        publisher_frames->wait_until([&](const auto& f) { return count_type(f, "ack") >= want; }, 60s))
        << "publisher has " << count_type(publisher_frames->frames(), "ack") << " acks of " << sent;
    cut = gateway->count_in_log("closed: slow_consumer") > 0;
    // Read after the log: a cut seen now happened before now.
    const auto elapsed = std::chrono::steady_clock::now() - first_send;
    if (cut) {
      EXPECT_GE(elapsed, std::chrono::seconds(kSoftSeconds)) << "cut before the soft time had passed";
    }
    // The client is flooded steadily but not in one go: ~80 KB per 50 ms.
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(cut) << "the client that stopped reading was never cut; " << sent << " messages sent";
  EXPECT_EQ(gateway->count_in_log("send queue stayed over " + std::to_string(kSoftBytes) + " bytes"), 1u);
  publisher_frames->stop();
  auto leftovers = stopped.expect_closed(15s);
  ASSERT_FALSE(leftovers.empty());
  expect_error(leftovers.back(), "slow_consumer");
  EXPECT_LT(leftovers.size(), static_cast<std::size_t>(sent));
  EXPECT_TRUE(gateway->running());
}

// A client that reads slowly but steadily (its receive buffer 4 KiB, about
// 1 MB/s) gets a burst of 400 messages (1.7 MB, 26 times the soft limit)
// and drains it within the soft time: it gets every message and is not cut.
TEST(SlowConsumer, AClientReadingSlowlyThroughABurstFarOverTheSoftLimitIsNotCut) {
  constexpr int kMessages = 400;
  constexpr std::size_t kSoftBytes = 64 * 1024;
  auto services = service_env();
  auto secret = random_secret();
  auto api = start_api(services, secret, kApiPort);
  // The default soft time (10 s) and hard limit (32 MiB).
  auto gateway =
      start_gateway(services, secret, kGateway, {"--send-queue-bytes", std::to_string(kSoftBytes)});
  HttpClient http(kApiPort);
  auto publisher_user = make_user(http, "pub");
  auto reader_user = make_user(http, "reader");
  const auto room = unique_name("steady-");
  LineClient reader(kGateway, 4096, "reader");
  reader.auth(reader_user.token, reader_user.name);
  ASSERT_EQ(reader.join(room), 0);
  LineClient publisher(kGateway, 0, "publisher");
  publisher.auth(publisher_user.token, publisher_user.name);
  ASSERT_EQ(publisher.join(room), 0);
  auto publisher_frames = std::make_unique<Collector>(publisher);

  const std::string body(kMaxBodyBytes, 'r');
  publisher.send_raw(flood_lines(room, 0, kMessages, body));
  for (int i = 0; i < kMessages; ++i) {
    auto frame = reader.next(30s);
    expect_message(frame, room, i + 1, numbered("s", i), publisher_user.name, body);
    std::this_thread::sleep_for(4ms);
  }
  ASSERT_TRUE(publisher_frames->wait_until(
      [&](const auto& f) { return count_type(f, "message") >= static_cast<std::size_t>(kMessages); }, 60s));
  publisher_frames->stop();
  reader.ping(boost::json::value("still connected"));
  EXPECT_EQ(gateway->count_in_log("closed: slow_consumer"), 0u);
}

}  // namespace
}  // namespace rtmc::e2e
