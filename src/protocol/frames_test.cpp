#include "protocol/frames.hpp"

#include <gtest/gtest.h>

namespace rtmc::protocol {
namespace {

ParseLimits limits{.max_body_bytes = 16};

FrameError error_of(std::string_view line) {
  auto parsed = parse_client_frame(line, limits);
  EXPECT_TRUE(std::holds_alternative<FrameError>(parsed)) << line;
  return std::holds_alternative<FrameError>(parsed) ? std::get<FrameError>(parsed) : FrameError{};
}

Frame frame_of(std::string_view line) {
  auto parsed = parse_client_frame(line, limits);
  EXPECT_TRUE(std::holds_alternative<Frame>(parsed)) << line;
  return std::holds_alternative<Frame>(parsed) ? std::get<Frame>(parsed) : Frame{};
}

TEST(ParseClientFrame, RecognisesEveryRequest) {
  EXPECT_EQ(std::get<AuthRequest>(frame_of(R"({"type":"auth","token":"abc"})").request).token, "abc");
  EXPECT_EQ(std::get<JoinRequest>(frame_of(R"({"type":"join","room":"a.b-c_1"})").request).room, "a.b-c_1");
  EXPECT_EQ(std::get<LeaveRequest>(frame_of(R"({"type":"leave","room":"r"})").request).room, "r");
  EXPECT_TRUE(std::holds_alternative<PingRequest>(frame_of(R"({"type":"ping"})").request));
  auto send = std::get<SendRequest>(frame_of(R"({"type":"send","room":"r","id":"m:1","body":"hi"})").request);
  EXPECT_EQ(send.room, "r");
  EXPECT_EQ(send.id, "m:1");
  EXPECT_EQ(send.body, "hi");
}

TEST(ParseClientFrame, JoinSince) {
  EXPECT_FALSE(std::get<JoinRequest>(frame_of(R"({"type":"join","room":"r"})").request).since);
  EXPECT_EQ(std::get<JoinRequest>(frame_of(R"({"type":"join","room":"r","since":0})").request).since, 0);
  EXPECT_EQ(std::get<JoinRequest>(frame_of(R"({"type":"join","room":"r","since":42})").request).since, 42);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":-1})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":"4"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":4.5})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":null})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":18446744073709551615})").code,
            ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"r","since":-1,"ref":3})").ref, "3");
}

TEST(ParseClientFrame, JoinedAndGapFrames) {
  EXPECT_EQ(joined_frame("r", 7, true, std::string("1")),
            "{\"type\":\"joined\",\"room\":\"r\",\"seq\":7,\"recovered\":true,\"ref\":1}\n");
  EXPECT_EQ(joined_frame("r", 7, false, std::nullopt),
            "{\"type\":\"joined\",\"room\":\"r\",\"seq\":7,\"recovered\":false}\n");
  EXPECT_EQ(joined_frame("r", 7, std::nullopt), "{\"type\":\"joined\",\"room\":\"r\",\"seq\":7}\n");
  EXPECT_EQ(gap_frame("r", 3, 9), "{\"type\":\"gap\",\"room\":\"r\",\"from\":3,\"to\":9}\n");
}

TEST(ParseClientFrame, MakesAnIdWhenAbsent) {
  auto first = std::get<SendRequest>(frame_of(R"({"type":"send","room":"r","body":"x"})").request);
  auto second = std::get<SendRequest>(frame_of(R"({"type":"send","room":"r","body":"x"})").request);
  EXPECT_FALSE(first.id.empty());
  EXPECT_NE(first.id, second.id);
}

TEST(ParseClientFrame, AcceptsCrlfAndIgnoresUnknownFields) {
  auto frame = frame_of("{\"type\":\"ping\",\"from\":\"mallory\",\"x\":[1]}\r");
  EXPECT_TRUE(std::holds_alternative<PingRequest>(frame.request));
}

TEST(ParseClientFrame, EchoesAnyRefVerbatim) {
  EXPECT_EQ(frame_of(R"({"type":"ping","ref":{"a":[1,"x"]}})").ref,
            std::optional<std::string>(R"({"a":[1,"x"]})"));
  EXPECT_EQ(error_of(R"({"type":"nope","ref":7})").ref, std::optional<std::string>("7"));
  EXPECT_EQ(pong_frame(std::string("\"r1\"")), "{\"type\":\"pong\",\"ref\":\"r1\"}\n");
}

TEST(ParseClientFrame, ClassifiesBadInput) {
  EXPECT_EQ(error_of("{not json").code, ErrorCode::bad_json);
  EXPECT_EQ(error_of(R"({"type":"ping"}{"type":"ping"})").code, ErrorCode::bad_json);
  EXPECT_EQ(error_of("\xff\xfe").code, ErrorCode::bad_json);
  EXPECT_EQ(error_of("[1,2]").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"("text")").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":5})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"room":"r"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"fly"})").code, ErrorCode::unknown_type);
  EXPECT_EQ(error_of(R"({"type":"auth"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":7})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"join","room":"no spaces"})").code, ErrorCode::bad_room);
  EXPECT_EQ(error_of(R"({"type":"join","room":""})").code, ErrorCode::bad_room);
  EXPECT_EQ(error_of(std::string(R"({"type":"join","room":")") + std::string(65, 'a') + "\"}").code,
            ErrorCode::bad_room);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r","body":""})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r","body":1})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r","body":"x","id":3})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r","body":"x","id":"a b"})").code, ErrorCode::bad_id);
  EXPECT_EQ(error_of(R"({"type":"send","room":"r","body":"0123456789abcdefX"})").code,
            ErrorCode::body_too_large);
}

TEST(ServerFrames, AreOneJsonObjectPerLine) {
  auto frame = message_frame("r", 42, "m1", "alice", "he said \"hi\"\n", 1700000000000);
  ASSERT_EQ(frame.back(), '\n');
  EXPECT_EQ(frame.find('\n'), frame.size() - 1);
  auto object = parse_server_frame(frame);
  ASSERT_TRUE(object);
  EXPECT_EQ((*object)["type"].as_string(), "message");
  EXPECT_EQ((*object)["seq"].as_int64(), 42);
  EXPECT_EQ((*object)["body"].as_string(), "he said \"hi\"\n");
  EXPECT_EQ((*object)["ts"].as_int64(), 1700000000000);
  auto header = peek_message(frame);
  ASSERT_TRUE(header);
  EXPECT_EQ(header->room, "r");
  EXPECT_EQ(header->seq, 42);
}

TEST(ParseClientFrame, Refresh) {
  EXPECT_EQ(std::get<RefreshRequest>(frame_of(R"({"type":"refresh","token":"t.k.n"})").request).token,
            "t.k.n");
  EXPECT_EQ(frame_of(R"({"type":"refresh","token":"t","ref":7})").ref, "7");
  EXPECT_EQ(error_of(R"({"type":"refresh"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"refresh","token":5})").code, ErrorCode::bad_frame);
}

TEST(ServerFrames, Refreshed) {
  EXPECT_EQ(refreshed_frame("Alice", 1700000000000, std::string("\"r\"")),
            "{\"type\":\"refreshed\",\"user\":\"Alice\",\"expires_at\":1700000000000,\"ref\":\"r\"}\n");
  EXPECT_EQ(refreshed_frame("a", 1, std::nullopt),
            "{\"type\":\"refreshed\",\"user\":\"a\",\"expires_at\":1}\n");
}

TEST(ServerFrames, TemplateJoinsToTheSameFrame) {
  auto parts = message_frame_template("room-1", "id", "bob", "x\"seq\":-1,", 5);
  EXPECT_EQ(parts.prefix + "1234" + parts.suffix,
            message_frame("room-1", 1234, "id", "bob", "x\"seq\":-1,", 5));
}

TEST(ServerFrames, ErrorCarriesCodeMessageAndRef) {
  auto object = parse_server_frame(error_frame(ErrorCode::not_joined, "join first", std::string("[1]")));
  ASSERT_TRUE(object);
  EXPECT_EQ((*object)["code"].as_string(), "not_joined");
  EXPECT_EQ((*object)["message"].as_string(), "join first");
  EXPECT_EQ((*object)["ref"].as_array().size(), 1u);
  EXPECT_TRUE(is_fatal(ErrorCode::slow_consumer));
  EXPECT_FALSE(is_fatal(ErrorCode::bad_json));
}

TEST(Ingest, RoundTripsAndRejectsMalformed) {
  IngestMessage message{"room", "id-1", "alice", "body"};
  auto decoded = decode_ingest(encode_ingest(message), limits);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->room, "room");
  EXPECT_EQ(decoded->id, "id-1");
  EXPECT_EQ(decoded->from, "alice");
  EXPECT_EQ(decoded->body, "body");
  EXPECT_FALSE(decode_ingest("garbage", limits));
  EXPECT_FALSE(decode_ingest(R"({"room":"bad room","id":"1","from":"a","body":"x"})", limits));
  EXPECT_FALSE(decode_ingest(R"({"room":"r","id":"1","from":"a","body":"0123456789abcdefX"})", limits));
}

}  // namespace
}  // namespace rtmc::protocol

namespace rtmc::protocol {
namespace {

TEST(ParseClientFrame, RefusesARefOverTheLimit) {
  ParseLimits small{.max_body_bytes = 16, .max_ref_bytes = 10};
  // "\"12345678\"" is exactly 10 bytes serialized.
  auto ok = parse_client_frame(R"({"type":"ping","ref":"12345678"})", small);
  ASSERT_TRUE(std::holds_alternative<Frame>(ok));
  EXPECT_EQ(std::get<Frame>(ok).ref, "\"12345678\"");
  auto too_long = parse_client_frame(R"({"type":"ping","ref":"123456789"})", small);
  ASSERT_TRUE(std::holds_alternative<FrameError>(too_long));
  EXPECT_EQ(std::get<FrameError>(too_long).code, ErrorCode::bad_frame);
  // Not echoed: echoing it is what the limit prevents.
  EXPECT_FALSE(std::get<FrameError>(too_long).ref);
}

TEST(ParseClientFrame, DefaultRefLimitIsOneKibibyte) {
  ParseLimits defaults;
  std::string ref_1k(1022, 'x');  // plus two quotes = 1024
  auto ok = parse_client_frame(R"({"type":"ping","ref":")" + ref_1k + "\"}", defaults);
  EXPECT_TRUE(std::holds_alternative<Frame>(ok));
  auto too_long = parse_client_frame(R"({"type":"ping","ref":")" + ref_1k + "x\"}", defaults);
  EXPECT_TRUE(std::holds_alternative<FrameError>(too_long));
}

TEST(ErrorCodes, NewCodesAndTheirFatality) {
  EXPECT_STREQ(to_string(ErrorCode::too_many_rooms), "too_many_rooms");
  EXPECT_STREQ(to_string(ErrorCode::rate_limited), "rate_limited");
  EXPECT_STREQ(to_string(ErrorCode::server_full), "server_full");
  EXPECT_STREQ(to_string(ErrorCode::server_shutdown), "server_shutdown");
  EXPECT_FALSE(is_fatal(ErrorCode::too_many_rooms));
  EXPECT_FALSE(is_fatal(ErrorCode::rate_limited));
  EXPECT_FALSE(is_fatal(ErrorCode::forbidden));
  EXPECT_TRUE(is_fatal(ErrorCode::server_full));
  EXPECT_TRUE(is_fatal(ErrorCode::server_shutdown));
}

}  // namespace
}  // namespace rtmc::protocol

namespace rtmc::protocol {
namespace {

TEST(Presence, StatusAndMembersRequests) {
  auto status = frame_of(R"({"type":"status","user":"Alice","ref":3})");
  EXPECT_EQ(std::get<StatusRequest>(status.request).user, "Alice");
  EXPECT_EQ(status.ref, std::optional<std::string>("3"));
  // Any string parses: a name breaking the rules is an unknown user, which
  // the connection answers with not_found.
  EXPECT_EQ(std::get<StatusRequest>(frame_of(R"({"type":"status","user":"no such!"})").request).user,
            "no such!");
  EXPECT_EQ(error_of(R"({"type":"status"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"status","user":5,"ref":"r"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"status","user":5,"ref":"r"})").ref, std::optional<std::string>("\"r\""));

  EXPECT_EQ(std::get<MembersRequest>(frame_of(R"({"type":"members","room":"lobby"})").request).room, "lobby");
  EXPECT_EQ(error_of(R"({"type":"members"})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"members","room":1})").code, ErrorCode::bad_frame);
  EXPECT_EQ(error_of(R"({"type":"members","room":"bad room"})").code, ErrorCode::bad_room);
}

TEST(Presence, StatusFrame) {
  EXPECT_EQ(status_frame("Alice", true, 1700000000123, std::nullopt),
            R"({"type":"status","user":"Alice","status":"online","last_seen":1700000000123})"
            "\n");
  EXPECT_EQ(status_frame("bob", false, 5, std::string("7")),
            R"({"type":"status","user":"bob","status":"offline","last_seen":5,"ref":7})"
            "\n");
  EXPECT_EQ(status_frame("carol", false, std::nullopt, std::nullopt),
            R"({"type":"status","user":"carol","status":"offline","last_seen":null})"
            "\n");
}

TEST(Presence, MembersFrame) {
  EXPECT_EQ(members_frame("lobby", {"alice", "bob"}, std::string("\"m\"")),
            R"({"type":"members","room":"lobby","users":["alice","bob"],"ref":"m"})"
            "\n");
  EXPECT_EQ(members_frame("lobby", {}, std::nullopt), R"({"type":"members","room":"lobby","users":[]})"
                                                      "\n");
}

TEST(Presence, PresenceFrameAndItsPeek) {
  const auto join = presence_frame("lobby", "alice", true);
  EXPECT_EQ(join, R"({"type":"presence","room":"lobby","user":"alice","event":"join"})"
                  "\n");
  EXPECT_EQ(presence_frame("lobby", "alice", false),
            R"({"type":"presence","room":"lobby","user":"alice","event":"leave"})"
            "\n");
  auto header = peek_presence(join);
  ASSERT_TRUE(header);
  EXPECT_EQ(header->room, "lobby");
  EXPECT_EQ(header->user, "alice");
  std::string_view without_newline(join);
  without_newline.remove_suffix(1);
  ASSERT_TRUE(peek_presence(without_newline));
  EXPECT_EQ(peek_presence(without_newline)->user, "alice");

  EXPECT_FALSE(peek_presence(message_frame("lobby", 1, "m", "alice", "x", 1)));
  EXPECT_FALSE(peek_presence(""));
  EXPECT_FALSE(peek_presence(R"({"type":"presence",)"));
  EXPECT_FALSE(peek_presence(R"({"type":"presence","room":"lobby","event":"join"})"));
  EXPECT_FALSE(peek_presence(R"({"type":"presence","room":"bad room","user":"a","event":"join"})"));
  EXPECT_FALSE(peek_presence(R"({"type":"presence","room":"r","user":"a b","event":"join"})"));
  EXPECT_FALSE(peek_presence(R"({"type":"presence","room":"r","user":"a","event":"stay"})"));
}

TEST(ErrorCodes, NotFoundIsNotFatal) {
  EXPECT_STREQ(to_string(ErrorCode::not_found), "not_found");
  EXPECT_FALSE(is_fatal(ErrorCode::not_found));
  auto object = parse_server_frame(error_frame(ErrorCode::not_found, "no user x", std::string("1")));
  ASSERT_TRUE(object);
  EXPECT_EQ((*object)["code"].as_string(), "not_found");
}

TEST(History, ParsesTheRequest) {
  auto latest = std::get<HistoryRequest>(frame_of(R"({"type":"history","room":"lobby"})").request);
  EXPECT_EQ(latest.room, "lobby");
  EXPECT_FALSE(latest.after_seq);
  EXPECT_FALSE(latest.before_seq);
  EXPECT_EQ(latest.limit, 50);
  auto after = frame_of(R"({"type":"history","room":"r","after_seq":0,"limit":100,"ref":[1]})");
  EXPECT_EQ(std::get<HistoryRequest>(after.request).after_seq, 0);
  EXPECT_EQ(std::get<HistoryRequest>(after.request).limit, 100);
  EXPECT_EQ(after.ref, std::optional<std::string>("[1]"));
  auto before = std::get<HistoryRequest>(
      frame_of(R"({"type":"history","room":"r","before_seq":9007199254740993,"limit":1})").request);
  EXPECT_EQ(before.before_seq, 9007199254740993);
  EXPECT_FALSE(before.after_seq);
  EXPECT_EQ(before.limit, 1);
  // null is the same as absent.
  auto nulls = std::get<HistoryRequest>(
      frame_of(R"({"type":"history","room":"r","after_seq":null,"before_seq":4,"limit":null})").request);
  EXPECT_FALSE(nulls.after_seq);
  EXPECT_EQ(nulls.before_seq, 4);
  EXPECT_EQ(nulls.limit, 50);
}

TEST(History, RefusesBadRequests) {
  for (const auto* line : {
           R"({"type":"history","room":"r","after_seq":1,"before_seq":2})",
           R"({"type":"history","room":"r","after_seq":-1})",
           R"({"type":"history","room":"r","before_seq":-5})",
           R"({"type":"history","room":"r","after_seq":"3"})",
           R"({"type":"history","room":"r","after_seq":1.5})",
           R"({"type":"history","room":"r","after_seq":18446744073709551615})",
           R"({"type":"history","room":"r","limit":0})",
           R"({"type":"history","room":"r","limit":101})",
           R"({"type":"history","room":"r","limit":-1})",
           R"({"type":"history","room":"r","limit":"10"})",
           R"({"type":"history","room":"r","limit":true})",
           R"({"type":"history"})",
           R"({"type":"history","room":7})",
       }) {
    auto error = error_of(line);
    EXPECT_EQ(error.code, ErrorCode::bad_frame) << line;
    EXPECT_FALSE(is_fatal(error.code));
  }
  EXPECT_EQ(error_of(R"({"type":"history","room":"no room","ref":"x"})").code, ErrorCode::bad_room);
  EXPECT_EQ(error_of(R"({"type":"history","room":"r","limit":0,"ref":"x"})").ref,
            std::optional<std::string>("\"x\""));
}

TEST(History, EmbedsTheStoredFramesVerbatim) {
  const auto first = message_frame("r", 1, "a", "alice", "hi \"there\"", 1700000000001);
  const auto second = message_frame("r", 2, "b", "bob", "caf\xc3\xa9", 1700000000002);
  const std::vector<std::string_view> frames{first, second};
  const auto reply = history_frame("r", frames, std::string("7"));
  // Appended, not "literal" + string: GCC 12 warns falsely (-Wrestrict).
  std::string inner = first.substr(0, first.size() - 1);
  inner.append(",").append(second.substr(0, second.size() - 1));
  std::string expected(R"({"type":"history","room":"r","messages":[)");
  expected.append(inner).append(R"(],"ref":7})").append("\n");
  EXPECT_EQ(reply, expected);
  auto parsed = parse_server_frame(reply);
  ASSERT_TRUE(parsed);
  const auto& messages = parsed->at("messages").as_array();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].as_object(), *parse_server_frame(first));
  EXPECT_EQ(messages[1].as_object().at("body").as_string(), "caf\xc3\xa9");
  EXPECT_EQ(history_frame("lobby", {}, std::nullopt), R"({"type":"history","room":"lobby","messages":[]})"
                                                      "\n");
  EXPECT_EQ(message_array({}), "[]");
  std::string array(1, '[');
  array.append(inner).append("]");
  EXPECT_EQ(message_array(frames), array);
}

TEST(Ingest, CarriesTheAcceptTimeAndStaysCompatibleWithoutIt) {
  IngestMessage message{"room", "id-1", "alice", "body", 1796180645678};
  const auto line = encode_ingest(message);
  EXPECT_NE(line.find(R"("accepted_at":1796180645678)"), std::string::npos) << line;
  auto decoded = decode_ingest(line, limits);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->accepted_ms, 1796180645678);
  // An older publisher's line: no field, decoded as unknown (0), not refused.
  auto old = decode_ingest(R"({"room":"r","id":"1","from":"a","body":"x"})", limits);
  ASSERT_TRUE(old);
  EXPECT_EQ(old->accepted_ms, 0);
  // Unset: not written at all, so older consumers see the lines they know.
  EXPECT_EQ(encode_ingest(IngestMessage{"r", "1", "a", "x"}).find("accepted_at"), std::string::npos);
  // A bad value costs the metric, not the message.
  auto odd = decode_ingest(R"({"room":"r","id":"1","from":"a","body":"x","accepted_at":"soon"})", limits);
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->accepted_ms, 0);
}

}  // namespace
}  // namespace rtmc::protocol
