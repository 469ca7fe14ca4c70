#include "wire.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace rtmc::bench {
namespace {

namespace json = boost::json;

TEST(Body, HasTheRequestedSizeAndRoundTrips) {
  BodyStamp stamp{3, 123456, 987654321012345};
  std::string body;
  append_body(body, stamp, 128);
  EXPECT_EQ(body.size(), 128u);
  auto parsed = parse_body(body);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->publisher, 3u);
  EXPECT_EQ(parsed->counter, 123456u);
  EXPECT_EQ(parsed->send_ns, 987654321012345);
}

TEST(Body, TheLargestStampFitsTheMinimumSize) {
  BodyStamp stamp{UINT32_MAX, UINT32_MAX, INT64_MAX};
  std::string body;
  append_body(body, stamp, kMinBodyBytes);
  EXPECT_EQ(body.size(), kMinBodyBytes);
  EXPECT_TRUE(parse_body(body));
}

TEST(Body, ForeignBodiesAreNotStamps) {
  EXPECT_FALSE(parse_body("hello world"));
  EXPECT_FALSE(parse_body("1:2:"));
  EXPECT_FALSE(parse_body("a:2:3:xx"));
  EXPECT_FALSE(parse_body("1:-2:3:xx"));
}

TEST(SendFrame, IsValidJsonWithTheProtocolFields) {
  std::string frame;
  append_send_frame(frame, "bench-ab", "tag1", BodyStamp{2, 9, 55}, 64);
  ASSERT_EQ(frame.back(), '\n');
  json::object object = json::parse(frame).as_object();
  EXPECT_EQ(object.at("type"), "send");
  EXPECT_EQ(object.at("room"), "bench-ab");
  EXPECT_EQ(object.at("id"), "tag1-2-9");
  EXPECT_EQ(object.at("body").as_string().size(), 64u);
  EXPECT_EQ(json::parse(auth_frame("t.o.k")).as_object().at("token"), "t.o.k");
  EXPECT_EQ(json::parse(join_frame("r")).as_object().at("type"), "join");
  EXPECT_EQ(json::parse(ping_frame()).as_object().at("type"), "ping");
}

std::string message_line(const std::string& body, std::int64_t seq) {
  return json::serialize(json::object{{"type", "message"},
                                      {"room", "r"},
                                      {"seq", seq},
                                      {"id", "i"},
                                      {"from", "u"},
                                      {"body", body},
                                      {"ts", 1700000000000}});
}

TEST(GatewayLine, ReadsMessageFrames) {
  std::string body;
  append_body(body, BodyStamp{1, 42, 777}, 80);
  GatewayLine line = parse_gateway_line(message_line(body, 1234));
  ASSERT_EQ(line.kind, GatewayLine::Kind::message);
  EXPECT_EQ(line.seq, 1234);
  ASSERT_TRUE(line.stamp);
  EXPECT_EQ(line.stamp->counter, 42u);
  EXPECT_EQ(line.stamp->publisher, 1u);
}

TEST(GatewayLine, ReadsFramesWithOtherSpacingAndOrder) {
  std::string body;
  append_body(body, BodyStamp{0, 5, 6}, 60);
  GatewayLine line = parse_gateway_line(R"({ "body" : ")" + body + R"(", "seq" : 9, "type" : "message" })");
  ASSERT_EQ(line.kind, GatewayLine::Kind::message);
  EXPECT_EQ(line.seq, 9);
  ASSERT_TRUE(line.stamp);
  EXPECT_EQ(line.stamp->counter, 5u);
}

TEST(GatewayLine, CompactFramesInAnotherKeyOrderStillParse) {
  // The fast path searches each key after the previous one; these orders
  // miss it and must come out of the full parse the same.
  std::string body;
  append_body(body, BodyStamp{2, 8, 9}, 60);
  for (const std::string& text : {R"({"type":"message","body":")" + body + R"(","room":"r","seq":11})",
                                  R"({"seq":11,"type":"message","room":"r","body":")" + body + R"("})",
                                  R"({"room":"r","type":"message","body":")" + body + R"(","seq":11})"}) {
    GatewayLine line = parse_gateway_line(text);
    ASSERT_EQ(line.kind, GatewayLine::Kind::message) << text;
    EXPECT_EQ(line.seq, 11) << text;
    ASSERT_TRUE(line.stamp) << text;
    EXPECT_EQ(line.stamp->publisher, 2u);
    EXPECT_EQ(line.stamp->counter, 8u);
  }
}

TEST(GatewayLine, ServerLayoutFastPathAndItsTruncation) {
  std::string body;
  append_body(body, BodyStamp{3, 123456789, 42}, 64);
  const std::string frame =
      R"({"type":"message","room":"bench-1","seq":9007199254740991,"id":"run-3-123456789",)"
      R"("from":"bench1p3","body":")" +
      body + R"(","ts":1700000000000})";
  GatewayLine line = parse_gateway_line(frame);
  ASSERT_EQ(line.kind, GatewayLine::Kind::message);
  EXPECT_EQ(line.seq, 9007199254740991);
  ASSERT_TRUE(line.stamp);
  EXPECT_EQ(line.stamp->publisher, 3u);
  EXPECT_EQ(line.stamp->counter, 123456789u);
  EXPECT_EQ(line.stamp->send_ns, 42);
  // Cut inside the body: neither path may invent a message.
  EXPECT_EQ(parse_gateway_line(frame.substr(0, frame.find(body) + 10)).kind, GatewayLine::Kind::unreadable);
}

TEST(GatewayLine, PeopleTextIsAMessageWithoutStamp) {
  GatewayLine line = parse_gateway_line(message_line(R"(say "type":"ack" \ here)", 3));
  ASSERT_EQ(line.kind, GatewayLine::Kind::message);
  EXPECT_EQ(line.seq, 3);
  EXPECT_FALSE(line.stamp);
}

TEST(GatewayLine, ReadsRepliesAndErrors) {
  EXPECT_EQ(parse_gateway_line(R"({"type":"ack","room":"r","id":"x"})").kind, GatewayLine::Kind::ack);
  GatewayLine auth = parse_gateway_line(R"({"type":"auth_ok","user":"u","heartbeat_s":30})");
  EXPECT_EQ(auth.kind, GatewayLine::Kind::auth_ok);
  EXPECT_EQ(auth.heartbeat_s, 30);
  GatewayLine joined = parse_gateway_line(R"({"type":"joined","room":"r","seq":17})");
  EXPECT_EQ(joined.kind, GatewayLine::Kind::joined);
  EXPECT_EQ(joined.seq, 17);
  GatewayLine error = parse_gateway_line(R"({"type":"error","code":"slow_consumer","message":"too slow"})");
  EXPECT_EQ(error.kind, GatewayLine::Kind::error);
  EXPECT_EQ(error.code, "slow_consumer");
  EXPECT_EQ(error.message, "too slow");
  EXPECT_EQ(parse_gateway_line(R"({"type":"pong"})").kind, GatewayLine::Kind::pong);
  EXPECT_EQ(parse_gateway_line(R"({"type":"later"})").kind, GatewayLine::Kind::other);
  GatewayLine join = parse_gateway_line(R"({"type":"presence","room":"r","user":"bob","event":"join"})");
  EXPECT_EQ(join.kind, GatewayLine::Kind::presence);
  EXPECT_EQ(join.event, "join");
  // Key order is not the fast path's business; the full parser takes over.
  GatewayLine leave = parse_gateway_line(R"({"event" : "leave","type":"presence","user":"b","room":"r"})");
  EXPECT_EQ(leave.kind, GatewayLine::Kind::presence);
  EXPECT_EQ(leave.event, "leave");
  GatewayLine escaped =
      parse_gateway_line(R"({"type":"presence","room":"r","user":"b","event":"jo\u0069n"})");
  EXPECT_EQ(escaped.kind, GatewayLine::Kind::presence);
  EXPECT_EQ(escaped.event, "join");
  EXPECT_EQ(parse_gateway_line("{nope").kind, GatewayLine::Kind::unreadable);
  EXPECT_EQ(parse_gateway_line("[1,2]").kind, GatewayLine::Kind::unreadable);
}

TEST(Resp, ReadsPushedMessages) {
  std::string push = "*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$11\r\n1:2:3:xxxxx\r\n";
  RespReply reply;
  ASSERT_EQ(parse_resp(push, reply), push.size());
  EXPECT_EQ(reply.head.kind, '*');
  EXPECT_EQ(reply.head.integer, 3);
  EXPECT_EQ(reply.items[0].text, "message");
  EXPECT_EQ(reply.items[1].text, "room");
  EXPECT_EQ(reply.items[2].text, "1:2:3:xxxxx");
}

TEST(Resp, EveryPrefixIsIncomplete) {
  std::string two = "*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n:42\r\n";
  std::size_t first = two.find(":42");
  RespReply reply;
  for (std::size_t n = 0; n < first; ++n)
    EXPECT_EQ(parse_resp(std::string_view(two).substr(0, n), reply), 0u) << n;
  ASSERT_EQ(parse_resp(two, reply), first);
  EXPECT_EQ(reply.items[0].text, "subscribe");
  EXPECT_EQ(reply.items[2].kind, ':');
  EXPECT_EQ(reply.items[2].integer, 1);
  ASSERT_EQ(parse_resp(std::string_view(two).substr(first), reply), 5u);
  EXPECT_EQ(reply.head.kind, ':');
  EXPECT_EQ(reply.head.integer, 42);
}

TEST(Resp, ScalarsAndNulls) {
  RespReply reply;
  EXPECT_EQ(parse_resp("+PONG\r\n", reply), 7u);
  EXPECT_EQ(reply.head.text, "PONG");
  EXPECT_EQ(parse_resp("-ERR wrong\r\n", reply), 12u);
  EXPECT_EQ(reply.head.kind, '-');
  EXPECT_EQ(reply.head.text, "ERR wrong");
  EXPECT_EQ(parse_resp("$-1\r\n", reply), 5u);
  EXPECT_TRUE(reply.head.is_null);
  EXPECT_EQ(parse_resp("$0\r\n\r\n", reply), 6u);
  EXPECT_EQ(reply.head.text, "");
}

TEST(Resp, MalformedInputThrows) {
  RespReply reply;
  EXPECT_THROW(parse_resp("?what\r\n", reply), std::runtime_error);
  EXPECT_THROW(parse_resp(":12x\r\n", reply), std::runtime_error);
  EXPECT_THROW(parse_resp("$3\r\nabcd\r\n", reply), std::runtime_error);
  EXPECT_THROW(parse_resp("*1\r\n*1\r\n:1\r\n", reply), std::runtime_error);
  EXPECT_THROW(parse_resp("*9\r\n", reply), std::runtime_error);
}

TEST(Resp, PublishCommandIsAWellFormedArray) {
  std::string command;
  append_publish_command(command, "chan", BodyStamp{0, 1, 2}, 128);
  RespReply reply;
  ASSERT_EQ(parse_resp(command, reply), command.size());
  EXPECT_EQ(reply.head.integer, 3);
  EXPECT_EQ(reply.items[0].text, "PUBLISH");
  EXPECT_EQ(reply.items[1].text, "chan");
  EXPECT_EQ(reply.items[2].text.size(), 128u);
  EXPECT_EQ(parse_body(reply.items[2].text)->send_ns, 2);
  std::string subscribe = subscribe_command("chan");
  ASSERT_EQ(parse_resp(subscribe, reply), subscribe.size());
  EXPECT_EQ(reply.items[0].text, "SUBSCRIBE");
}

}  // namespace
}  // namespace rtmc::bench
