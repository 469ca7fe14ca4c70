#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "chat/chat_core.hpp"
#include "chat/http_client.hpp"

namespace rtmc::chat {
namespace {

namespace json = boost::json;

json::object parse_frame(const std::string& frame) {
  EXPECT_FALSE(frame.empty());
  EXPECT_EQ(frame.back(), '\n');
  return json::parse(frame).as_object();
}

ChatCore signed_in_core() {
  ChatCore core({.initial_room = "lobby", .id_prefix = "t", .utc_clock = true});
  core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})");
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})");
  return core;
}

TEST(ChatCore, AuthOkJoinsTheInitialRoomAndRecordsHeartbeat) {
  ChatCore core({.initial_room = "lobby", .id_prefix = "t", .utc_clock = true});
  EXPECT_EQ(parse_frame(core.auth_frame("tok")), (json::object{{"type", "auth"}, {"token", "tok"}}));
  Effects effects = core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})");
  ASSERT_EQ(effects.frames.size(), 1u);
  auto join = parse_frame(effects.frames[0]);
  EXPECT_EQ(join.at("type"), "join");
  EXPECT_EQ(join.at("room"), "lobby");
  EXPECT_TRUE(core.authenticated());
  EXPECT_EQ(core.user(), "alice");
  EXPECT_EQ(core.heartbeat_s(), 30);
  EXPECT_EQ(core.current_room(), "lobby");
}

TEST(ChatCore, PlainTextIsSentToTheCurrentRoomAndTrackedUntilAcked) {
  ChatCore core = signed_in_core();
  Effects effects = core.on_input("hello there");
  ASSERT_EQ(effects.frames.size(), 1u);
  auto send = parse_frame(effects.frames[0]);
  EXPECT_EQ(send.at("type"), "send");
  EXPECT_EQ(send.at("room"), "lobby");
  EXPECT_EQ(send.at("body"), "hello there");
  EXPECT_EQ(send.at("id"), "t-1");
  EXPECT_EQ(core.pending_acks(), 1u);

  Effects second = core.on_input("again\r");
  EXPECT_EQ(parse_frame(second.frames[0]).at("id"), "t-2");
  EXPECT_EQ(parse_frame(second.frames[0]).at("body"), "again");
  EXPECT_EQ(core.pending_acks(), 2u);

  Effects ack = core.on_server_line(R"({"type":"ack","room":"lobby","id":"t-1"})");
  EXPECT_TRUE(ack.messages.empty());
  EXPECT_TRUE(ack.notices.empty());
  EXPECT_EQ(core.pending_acks(), 1u);
}

TEST(ChatCore, BlankLinesSendNothing) {
  ChatCore core = signed_in_core();
  EXPECT_TRUE(core.on_input("").frames.empty());
  EXPECT_TRUE(core.on_input("   \t").frames.empty());
  EXPECT_EQ(core.pending_acks(), 0u);
}

TEST(ChatCore, DoubleSlashSendsALeadingSlash) {
  ChatCore core = signed_in_core();
  Effects effects = core.on_input("//join is not a command");
  ASSERT_EQ(effects.frames.size(), 1u);
  EXPECT_EQ(parse_frame(effects.frames[0]).at("body"), "/join is not a command");
}

TEST(ChatCore, JoinSwitchesTheCurrentRoomAtOnce) {
  ChatCore core = signed_in_core();
  Effects join = core.on_input("/join dev.ops");
  ASSERT_EQ(join.frames.size(), 1u);
  EXPECT_EQ(parse_frame(join.frames[0]).at("type"), "join");
  EXPECT_EQ(parse_frame(join.frames[0]).at("room"), "dev.ops");
  EXPECT_EQ(core.current_room(), "dev.ops");
  EXPECT_EQ(parse_frame(core.on_input("hi").frames[0]).at("room"), "dev.ops");
}

TEST(ChatCore, BadRoomNameIsRefusedLocally) {
  ChatCore core = signed_in_core();
  Effects effects = core.on_input("/join no spaces!");
  EXPECT_TRUE(effects.frames.empty());
  ASSERT_EQ(effects.notices.size(), 1u);
  EXPECT_NE(effects.notices[0].find("bad room name"), std::string::npos);
  EXPECT_EQ(core.current_room(), "lobby");
  EXPECT_TRUE(core.on_input("/join").frames.empty());
}

TEST(ChatCore, RoomSwitchesOnlyToJoinedRooms) {
  ChatCore core = signed_in_core();
  core.on_input("/join b");
  Effects unknown = core.on_input("/room zzz");
  EXPECT_EQ(core.current_room(), "b");
  ASSERT_EQ(unknown.notices.size(), 1u);
  EXPECT_NE(unknown.notices[0].find("not in room #zzz"), std::string::npos);
  core.on_input("/room lobby");
  EXPECT_EQ(core.current_room(), "lobby");
}

TEST(ChatCore, LeaveDefaultsToTheCurrentRoomAndPicksAnother) {
  ChatCore core = signed_in_core();
  core.on_input("/join b");
  Effects leave = core.on_input("/leave");
  ASSERT_EQ(leave.frames.size(), 1u);
  auto frame = parse_frame(leave.frames[0]);
  EXPECT_EQ(frame.at("type"), "leave");
  EXPECT_EQ(frame.at("room"), "b");
  EXPECT_EQ(core.current_room(), "lobby");
  core.on_input("/leave lobby");
  EXPECT_EQ(core.current_room(), "");
  Effects orphan = core.on_input("text with no room");
  EXPECT_TRUE(orphan.frames.empty());
  EXPECT_EQ(orphan.notices.size(), 1u);
  EXPECT_TRUE(core.on_input("/leave lobby").frames.empty());
}

TEST(ChatCore, QuitHelpAndUnknownCommands) {
  ChatCore core = signed_in_core();
  EXPECT_TRUE(core.on_input("/quit").quit);
  EXPECT_FALSE(core.on_input("/help").quit);
  EXPECT_NE(core.on_input("/help").notices.at(0).find("/join"), std::string::npos);
  Effects unknown = core.on_input("/frobnicate now");
  EXPECT_TRUE(unknown.frames.empty());
  EXPECT_NE(unknown.notices.at(0).find("unknown command /frobnicate"), std::string::npos);
}

TEST(ChatCore, MessagesAreFormattedWithClockRoomAndSender) {
  ChatCore core = signed_in_core();
  Effects effects = core.on_server_line(
      R"({"type":"message","room":"lobby","seq":7,"id":"x","from":"bob","body":"hi all","ts":3723004})");
  ASSERT_EQ(effects.messages.size(), 1u);
  EXPECT_EQ(effects.messages[0], "[01:02:03] #lobby <bob> hi all");
}

TEST(ChatCore, ControlCharactersFromPeersAreNeutralised) {
  EXPECT_EQ(printable("a\x1b[2Jb"), "a?[2Jb");
  EXPECT_EQ(printable("x\xc2\x9by"), "x?y");           // C1 CSI
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");  // ordinary UTF-8 stays
  EXPECT_EQ(printable("tab\there"), "tab here");
  EXPECT_EQ(format_message("r", "e\nvil", "b\x07", 0, true), "[00:00:00] #r <e?vil> b?");
}

TEST(ChatCore, SendErrorClearsThePendingSendAndIsShown) {
  ChatCore core = signed_in_core();
  std::string id = parse_frame(core.on_input("x").frames[0]).at("id").as_string().c_str();
  Effects error = core.on_server_line(
      R"({"type":"error","code":"body_too_large","message":"body over 4096 bytes","ref":")" + id + "\"}");
  EXPECT_EQ(core.pending_acks(), 0u);
  ASSERT_EQ(error.notices.size(), 1u);
  EXPECT_EQ(error.notices[0], "! error body_too_large: body over 4096 bytes");
  EXPECT_FALSE(error.closing);
}

TEST(ChatCore, FatalErrorsAnnounceTheClose) {
  ChatCore core = signed_in_core();
  EXPECT_TRUE(core.on_server_line(R"({"type":"error","code":"slow_consumer","message":"m"})").closing);
  EXPECT_TRUE(core.on_server_line(R"({"type":"error","code":"unauthorized","message":"m"})").closing);
  EXPECT_FALSE(core.on_server_line(R"({"type":"error","code":"not_joined","message":"m"})").closing);
}

TEST(ChatCore, FailedJoinForgetsTheRoom) {
  ChatCore core = signed_in_core();
  auto join = parse_frame(core.on_input("/join later").frames[0]);
  std::string ref = json::serialize(join.at("ref"));
  core.on_server_line(R"({"type":"error","code":"bad_room","message":"m","ref":)" + ref + "}");
  EXPECT_EQ(core.joined_rooms().count("later"), 0u);
  EXPECT_EQ(core.current_room(), "lobby");
}

TEST(ChatCore, UnreadableServerLinesAreReportedNotFatal) {
  ChatCore core = signed_in_core();
  Effects effects = core.on_server_line("not json{");
  ASSERT_EQ(effects.notices.size(), 1u);
  EXPECT_NE(effects.notices[0].find("unreadable"), std::string::npos);
  EXPECT_FALSE(effects.closing);
  EXPECT_TRUE(core.on_server_line(R"({"type":"pong"})").notices.empty());
  EXPECT_TRUE(core.on_server_line(R"({"type":"something_new"})").notices.empty());
}

TEST(HttpUrl, ParsesHostPortAndBasePath) {
  HttpUrl url = HttpUrl::parse("http://127.0.0.1:8080");
  EXPECT_EQ(url.host, "127.0.0.1");
  EXPECT_EQ(url.port, 8080);
  EXPECT_EQ(url.base_path, "");
  HttpUrl with_path = HttpUrl::parse("http://api.local/v1/");
  EXPECT_EQ(with_path.host, "api.local");
  EXPECT_EQ(with_path.port, 80);
  EXPECT_EQ(with_path.base_path, "/v1");
  EXPECT_THROW(HttpUrl::parse("https://x"), std::invalid_argument);
  EXPECT_THROW(HttpUrl::parse("http://x:99999"), std::invalid_argument);
  EXPECT_THROW(HttpUrl::parse("http://:80"), std::invalid_argument);
}

}  // namespace
}  // namespace rtmc::chat
