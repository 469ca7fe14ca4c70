#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>
#include <string_view>
#include <vector>

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

// 2026-12-01 12:05:30 UTC, and times relative to it.
constexpr std::int64_t now_ms = 1796126730000;
constexpr std::int64_t today_12_03 = 1796126580000;
constexpr std::int64_t yesterday_18_02 = 1796061720000;

ChatCore signed_in_core() {
  ChatCore core(
      {.initial_room = "lobby", .id_prefix = "t", .utc_clock = true, .clock = [] { return now_ms; }});
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

std::string line(const json::object& object) {
  return json::serialize(object);
}

json::value ref_of(const std::string& frame) {
  return parse_frame(frame).at("ref");
}

json::object status_answer(std::string_view user, std::string_view status, json::value last_seen,
                           const json::value& ref) {
  return {{"type", "status"}, {"user", user}, {"status", status}, {"last_seen", last_seen}, {"ref", ref}};
}

json::object error_answer(std::string_view code, const json::value& ref) {
  return {{"type", "error"}, {"code", code}, {"message", "m"}, {"ref", ref}};
}

json::object members_answer(std::string_view room, json::array users, const json::value& ref) {
  return {{"type", "members"}, {"room", room}, {"users", std::move(users)}, {"ref", ref}};
}

TEST(ChatCore, PresenceEventsArePrintedAsChatLinesWithTheClock) {
  ChatCore core = signed_in_core();
  Effects joined = core.on_server_line(R"({"type":"presence","room":"lobby","user":"bob","event":"join"})");
  EXPECT_EQ(joined.messages, std::vector<std::string>{"[12:05:30] * bob joined #lobby"});
  EXPECT_TRUE(joined.notices.empty());
  EXPECT_TRUE(joined.frames.empty());
  Effects left = core.on_server_line(R"({"type":"presence","room":"lobby","user":"bob","event":"leave"})");
  EXPECT_EQ(left.messages, std::vector<std::string>{"[12:05:30] * bob left #lobby"});
  // Names from the wire cannot drive the terminal; unknown events are a newer server's.
  Effects evil = core.on_server_line(R"({"type":"presence","room":"r","user":"e\u001bvil","event":"join"})");
  EXPECT_EQ(evil.messages, std::vector<std::string>{"[12:05:30] * e?vil joined #r"});
  Effects odd = core.on_server_line(R"({"type":"presence","room":"r","user":"bob","event":"kicked"})");
  EXPECT_TRUE(odd.messages.empty());
  EXPECT_TRUE(odd.notices.empty());
}

TEST(ChatCore, WhoListsMembersWithStatusWhateverOrderTheAnswersComeIn) {
  ChatCore core = signed_in_core();
  Effects who = core.on_input("/who");
  ASSERT_EQ(who.frames.size(), 1u);
  auto members = parse_frame(who.frames[0]);
  EXPECT_EQ(members.at("type"), "members");
  EXPECT_EQ(members.at("room"), "lobby");
  EXPECT_EQ(core.pending_queries(), 1u);

  Effects asked = core.on_server_line(
      line(members_answer("lobby", {"alice", "bob", "carol", "dave"}, members.at("ref"))));
  EXPECT_TRUE(asked.notices.empty());
  ASSERT_EQ(asked.frames.size(), 4u);
  std::vector<json::value> refs;
  std::set<std::string> distinct_refs;
  for (std::size_t i = 0; i < 4; ++i) {
    auto status = parse_frame(asked.frames[i]);
    EXPECT_EQ(status.at("type"), "status");
    EXPECT_EQ(status.at("user"), json::array({"alice", "bob", "carol", "dave"}).at(i));
    refs.push_back(status.at("ref"));
    distinct_refs.insert(json::serialize(status.at("ref")));
  }
  EXPECT_EQ(distinct_refs.size(), 4u);

  // Last request first; nothing is printed until every member is answered.
  EXPECT_TRUE(core.on_server_line(line(status_answer("dave", "offline", nullptr, refs[3]))).notices.empty());
  EXPECT_TRUE(
      core.on_server_line(line(status_answer("alice", "online", today_12_03, refs[0]))).notices.empty());
  EXPECT_TRUE(
      core.on_server_line(line(status_answer("carol", "offline", yesterday_18_02, refs[2]))).notices.empty());
  EXPECT_EQ(core.pending_queries(), 1u);
  Effects done = core.on_server_line(line(status_answer("bob", "offline", today_12_03, refs[1])));
  ASSERT_EQ(done.notices.size(), 1u);
  EXPECT_EQ(done.notices[0],
            "* #lobby (4): alice (online), bob (offline, last seen 12:03), "
            "carol (offline, last seen 2026-11-30 18:02), dave (offline, never connected)");
  EXPECT_TRUE(done.frames.empty());
  EXPECT_EQ(core.pending_queries(), 0u);
  // A late duplicate is not a new answer.
  EXPECT_TRUE(
      core.on_server_line(line(status_answer("bob", "online", today_12_03, refs[1]))).notices.empty());
}

TEST(ChatCore, InterleavedWhoAndStatusAnswersAreMatchedByRef) {
  ChatCore core = signed_in_core();
  core.on_input("/join dev");
  Effects lobby_who = core.on_input("/who #lobby");
  EXPECT_EQ(parse_frame(lobby_who.frames.at(0)).at("room"), "lobby");
  json::value lobby_ref = ref_of(lobby_who.frames.at(0));
  json::value dev_ref = ref_of(core.on_input("/who").frames.at(0));
  json::value status_ref = ref_of(core.on_input("/status alice").frames.at(0));
  EXPECT_EQ(core.pending_queries(), 3u);

  Effects dev = core.on_server_line(line(members_answer("dev", {"alice"}, dev_ref)));
  Effects lobby = core.on_server_line(line(members_answer("lobby", {"alice", "bob"}, lobby_ref)));
  ASSERT_EQ(dev.frames.size(), 1u);
  ASSERT_EQ(lobby.frames.size(), 2u);
  // The same user asked three times, answered with different news: each answer goes where its ref says.
  Effects standalone =
      core.on_server_line(line(status_answer("alice", "online", yesterday_18_02, status_ref)));
  EXPECT_EQ(standalone.notices, std::vector<std::string>{"* alice is online (since 2026-11-30 18:02)"});
  EXPECT_TRUE(core.on_server_line(line(status_answer("bob", "offline", today_12_03, ref_of(lobby.frames[1]))))
                  .notices.empty());
  Effects dev_done =
      core.on_server_line(line(status_answer("alice", "online", today_12_03, ref_of(dev.frames[0]))));
  EXPECT_EQ(dev_done.notices, std::vector<std::string>{"* #dev (1): alice (online)"});
  Effects lobby_done =
      core.on_server_line(line(status_answer("alice", "offline", today_12_03, ref_of(lobby.frames[0]))));
  EXPECT_EQ(lobby_done.notices,
            std::vector<std::string>{
                "* #lobby (2): alice (offline, last seen 12:03), bob (offline, last seen 12:03)"});
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, WhoErrorsAreShownAndEndTheQuery) {
  ChatCore core = signed_in_core();
  json::value elsewhere = ref_of(core.on_input("/who elsewhere").frames.at(0));
  Effects not_joined = core.on_server_line(line(error_answer("not_joined", elsewhere)));
  EXPECT_EQ(not_joined.notices,
            std::vector<std::string>{"! /who #elsewhere: you are not in #elsewhere; /join elsewhere first"});
  EXPECT_FALSE(not_joined.closing);

  json::value lobby = ref_of(core.on_input("/who").frames.at(0));
  Effects unavailable = core.on_server_line(line(error_answer("unavailable", lobby)));
  EXPECT_EQ(unavailable.notices, std::vector<std::string>{"! /who #lobby: error unavailable: m"});
  EXPECT_EQ(core.pending_queries(), 0u);
  // The room was not forgotten, unlike after a failed join.
  EXPECT_EQ(core.current_room(), "lobby");
  EXPECT_EQ(core.joined_rooms().count("lobby"), 1u);
}

TEST(ChatCore, WhoShowsMembersWhoseStatusFailed) {
  ChatCore core = signed_in_core();
  json::value ref = ref_of(core.on_input("/who").frames.at(0));
  Effects asked = core.on_server_line(line(members_answer("lobby", {"alice", "gone", "bob"}, ref)));
  ASSERT_EQ(asked.frames.size(), 3u);
  EXPECT_TRUE(
      core.on_server_line(line(error_answer("unavailable", ref_of(asked.frames[2])))).notices.empty());
  EXPECT_TRUE(core.on_server_line(line(error_answer("not_found", ref_of(asked.frames[1])))).notices.empty());
  Effects done =
      core.on_server_line(line(status_answer("alice", "online", today_12_03, ref_of(asked.frames[0]))));
  EXPECT_EQ(done.notices, std::vector<std::string>{
                              "* #lobby (3): alice (online), gone (no such user), bob (status unavailable)"});
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, WhoOfAnEmptyRoomSaysSo) {
  ChatCore core = signed_in_core();
  json::value ref = ref_of(core.on_input("/who").frames.at(0));
  Effects empty = core.on_server_line(line(members_answer("lobby", {}, ref)));
  EXPECT_EQ(empty.notices, std::vector<std::string>{"* #lobby: no members"});
  EXPECT_TRUE(empty.frames.empty());
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, WhoNeedsARoom) {
  ChatCore core = signed_in_core();
  Effects bad = core.on_input("/who no/such");
  EXPECT_TRUE(bad.frames.empty());
  EXPECT_NE(bad.notices.at(0).find("bad room name"), std::string::npos);
  core.on_input("/leave");
  Effects nowhere = core.on_input("/who");
  EXPECT_TRUE(nowhere.frames.empty());
  EXPECT_NE(nowhere.notices.at(0).find("not in any room"), std::string::npos);
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, StatusPrintsOnlineOfflineAndNeverConnected) {
  ChatCore core = signed_in_core();
  Effects asked = core.on_input("/status ALICE");
  ASSERT_EQ(asked.frames.size(), 1u);
  auto request = parse_frame(asked.frames[0]);
  EXPECT_EQ(request.at("type"), "status");
  EXPECT_EQ(request.at("user"), "ALICE");
  // The answer carries the registered spelling.
  EXPECT_EQ(
      core.on_server_line(line(status_answer("alice", "online", today_12_03, request.at("ref")))).notices,
      std::vector<std::string>{"* alice is online (since 12:03)"});

  json::value bob = ref_of(core.on_input("/status bob").frames.at(0));
  EXPECT_EQ(core.on_server_line(line(status_answer("bob", "offline", yesterday_18_02, bob))).notices,
            std::vector<std::string>{"* bob is offline (last seen 2026-11-30 18:02)"});

  json::value carol = ref_of(core.on_input("/status carol").frames.at(0));
  EXPECT_EQ(core.on_server_line(line(status_answer("carol", "offline", nullptr, carol))).notices,
            std::vector<std::string>{"* carol is offline (never connected)"});

  // An answer without the name still names whom it is about.
  json::value dave = ref_of(core.on_input("/status dave").frames.at(0));
  EXPECT_EQ(core.on_server_line(line(json::object{{"type", "status"}, {"status", "offline"}, {"ref", dave}}))
                .notices,
            std::vector<std::string>{"* dave is offline (never connected)"});
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, StatusErrors) {
  ChatCore core = signed_in_core();
  json::value bob = ref_of(core.on_input("/status bob").frames.at(0));
  Effects not_found = core.on_server_line(line(error_answer("not_found", bob)));
  EXPECT_EQ(not_found.notices, std::vector<std::string>{"! no such user: bob"});
  EXPECT_FALSE(not_found.closing);

  json::value eve = ref_of(core.on_input("/status eve").frames.at(0));
  EXPECT_EQ(core.on_server_line(line(error_answer("unavailable", eve))).notices,
            std::vector<std::string>{"! /status eve: error unavailable: m"});
  EXPECT_EQ(core.pending_queries(), 0u);

  // A name no one can have is refused here, as the gateway would.
  Effects impossible = core.on_input("/status -x!");
  EXPECT_TRUE(impossible.frames.empty());
  EXPECT_EQ(impossible.notices, std::vector<std::string>{"! no such user: -x!"});
  Effects usage = core.on_input("/status");
  EXPECT_TRUE(usage.frames.empty());
  EXPECT_EQ(usage.notices, std::vector<std::string>{"! usage: /status USER"});
  EXPECT_EQ(core.pending_queries(), 0u);
}

TEST(ChatCore, AnswersToNoOpenQueryAreIgnored) {
  ChatCore core = signed_in_core();
  for (const char* ref : {"who:99", "who:99:0", "status:99", "who:x", "status:", "other"}) {
    EXPECT_TRUE(core.on_server_line(line(members_answer("lobby", {"a"}, ref))).frames.empty()) << ref;
    EXPECT_TRUE(core.on_server_line(line(status_answer("a", "online", 0, ref))).notices.empty()) << ref;
  }
  EXPECT_TRUE(core.on_server_line(R"({"type":"status","user":"a","status":"online"})").notices.empty());
}

TEST(ChatCore, PingsAtHalfTheHeartbeatOfAuthOk) {
  ChatCore core({.initial_room = "lobby", .id_prefix = "t", .utc_clock = true});
  EXPECT_EQ(parse_frame(ChatCore::ping_frame()), (json::object{{"type", "ping"}}));
  EXPECT_EQ(core.ping_interval().count(), 0);
  core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":15})");
  EXPECT_EQ(core.ping_interval(), std::chrono::milliseconds(7500));
  Effects pong = core.on_server_line(R"({"type":"pong"})");
  EXPECT_TRUE(pong.notices.empty());
  EXPECT_TRUE(pong.messages.empty());
  EXPECT_TRUE(pong.frames.empty());

  ChatCore silent({.initial_room = "lobby", .id_prefix = "t", .utc_clock = true});
  silent.on_server_line(R"({"type":"auth_ok","user":"alice"})");
  EXPECT_EQ(silent.ping_interval().count(), 0);
}

TEST(ChatCore, HelpListsWhoAndStatus) {
  std::string help = ChatCore::help_text();
  EXPECT_NE(help.find("/who [R]"), std::string::npos);
  EXPECT_NE(help.find("/status U"), std::string::npos);
}

TEST(ChatCore, ShutdownAndServerFullAnnounceTheClose) {
  ChatCore core = signed_in_core();
  EXPECT_TRUE(core.on_server_line(R"({"type":"error","code":"server_shutdown","message":"m"})").closing);
  EXPECT_TRUE(core.on_server_line(R"({"type":"error","code":"server_full","message":"m"})").closing);
}

TEST(FormatWhen, ClockForTodayDateOtherwise) {
  EXPECT_EQ(format_when(today_12_03, now_ms, true), "12:03");
  EXPECT_EQ(format_when(yesterday_18_02, now_ms, true), "2026-11-30 18:02");
  // Midnight belongs to the new day; a year ago on the same date is another day.
  EXPECT_EQ(format_when(1796083200000, now_ms, true), "00:00");
  EXPECT_EQ(format_when(today_12_03 - 365LL * 86400000, now_ms, true), "2025-12-01 12:03");
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

// ---- recovery (issue 7)

std::vector<json::object> frames_of(const Effects& effects) {
  std::vector<json::object> frames;
  for (const auto& text : effects.frames) frames.push_back(parse_frame(text));
  return frames;
}

std::string message_line(std::string_view room, std::int64_t seq) {
  std::string body = "m";
  body += std::to_string(seq);
  return json::serialize(json::object{{"type", "message"},
                                      {"room", room},
                                      {"seq", seq},
                                      {"id", "i"},
                                      {"from", "bob"},
                                      {"body", body},
                                      {"ts", now_ms}});
}

json::object message_object(std::string_view room, std::int64_t seq) {
  return json::parse(message_line(room, seq)).as_object();
}

// The bodies of the chat lines, in order ("m7" for seq 7).
std::vector<std::string> bodies(const Effects& effects) {
  std::vector<std::string> out;
  for (const auto& line : effects.messages) out.push_back(line.substr(line.rfind("> ") + 2));
  return out;
}

std::vector<std::string> range_bodies(std::int64_t from, std::int64_t to) {
  std::vector<std::string> out;
  for (auto seq = from; seq <= to; ++seq) {
    std::string body = "m";
    body += std::to_string(seq);
    out.push_back(body);
  }
  return out;
}

std::string history_reply(std::string_view room, std::string_view ref, std::int64_t from, std::int64_t to) {
  json::array messages;
  for (auto seq = from; seq <= to; ++seq) messages.push_back(message_object(room, seq));
  return json::serialize(
      json::object{{"type", "history"}, {"room", room}, {"messages", std::move(messages)}, {"ref", ref}});
}

ChatCore fresh_core() {
  ChatCore core(
      {.initial_room = "lobby", .id_prefix = "t", .utc_clock = true, .clock = [] { return now_ms; }});
  core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})");
  return core;
}

TEST(ChatRecovery, JoiningARoomWithMessagesShowsTheLatestThenTheLiveOnesInOrder) {
  ChatCore core = fresh_core();
  Effects joined = core.on_server_line(R"({"type":"joined","room":"lobby","seq":50})");
  auto frames = frames_of(joined);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0],
            (json::object{{"type", "history"}, {"room", "lobby"}, {"limit", 20}, {"ref", "recent:lobby"}}));
  // Live messages before the answer wait for it.
  EXPECT_TRUE(core.on_server_line(message_line("lobby", 51)).messages.empty());
  EXPECT_TRUE(core.on_server_line(message_line("lobby", 52)).messages.empty());
  // The answer may already hold newer ones: each is shown once.
  Effects shown = core.on_server_line(history_reply("lobby", "recent:lobby", 32, 51));
  EXPECT_EQ(bodies(shown), range_bodies(31 + 1, 52));
  EXPECT_EQ(core.last_seq("lobby"), 52);
  EXPECT_EQ(bodies(core.on_server_line(message_line("lobby", 53))), range_bodies(53, 53));
}

TEST(ChatRecovery, AFreshRoomAsksForNoHistory) {
  ChatCore core = fresh_core();
  EXPECT_TRUE(core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})").frames.empty());
  EXPECT_EQ(bodies(core.on_server_line(message_line("lobby", 1))), range_bodies(1, 1));
}

TEST(ChatRecovery, AServerWithoutHistoryStillShowsTheLiveMessages) {
  ChatCore core = fresh_core();
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":5})");
  core.on_server_line(message_line("lobby", 6));
  Effects error = core.on_server_line(
      R"({"type":"error","code":"unknown_type","message":"unknown frame type","ref":"recent:lobby"})");
  EXPECT_EQ(bodies(error), range_bodies(6, 6));
  EXPECT_EQ(core.joined_rooms().count("lobby"), 1u) << "the room stays joined";
}

TEST(ChatRecovery, AfterADropEveryRoomResumesWithSinceAndUnackedSendsAreResent) {
  ChatCore core = fresh_core();
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})");
  core.on_input("/join dev");
  core.on_server_line(R"({"type":"joined","room":"dev","seq":0})");
  for (std::int64_t seq = 1; seq <= 3; ++seq) core.on_server_line(message_line("lobby", seq));
  core.on_server_line(message_line("dev", 1));
  core.on_input("/room lobby");
  core.on_input("unanswered");
  core.on_disconnected();
  EXPECT_FALSE(core.authenticated());
  Effects resumed = core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})");
  auto frames = frames_of(resumed);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0], (json::object{{"type", "join"}, {"room", "dev"}, {"ref", "join:dev"}, {"since", 1}}));
  EXPECT_EQ(frames[1],
            (json::object{{"type", "join"}, {"room", "lobby"}, {"ref", "join:lobby"}, {"since", 3}}));
  EXPECT_EQ(frames[2].at("type"), "send");
  EXPECT_EQ(frames[2].at("id"), "t-1") << "the same id: the server's dedupe delivers it once";
  EXPECT_EQ(frames[2].at("body"), "unanswered");

  Effects joined = core.on_server_line(R"({"type":"joined","room":"lobby","seq":6,"recovered":true})");
  EXPECT_TRUE(joined.frames.empty()) << "no history: the replay brings what was missed";
  Effects replay;
  for (std::int64_t seq = 3; seq <= 7; ++seq) {  // 3 again: shown once
    Effects one = core.on_server_line(message_line("lobby", seq));
    for (auto& line : one.messages) replay.messages.push_back(line);
  }
  EXPECT_EQ(bodies(replay), range_bodies(4, 7));
}

// After Redis lost data the room's seq may be below the client's resume
// point until the next message: the server refuses that `since`
// (bad_frame). The client joins afresh rather than losing the room.
TEST(ChatRecovery, ASinceTheServerRefusesBecomesAPlainJoin) {
  ChatCore core = fresh_core();
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})");
  for (std::int64_t seq = 1; seq <= 3; ++seq) core.on_server_line(message_line("lobby", seq));
  core.on_disconnected();
  auto resumed = frames_of(core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})"));
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].at("since"), 3);
  Effects refused = core.on_server_line(
      R"({"type":"error","code":"bad_frame","message":"since 3 is above the room's seq 1","ref":"join:lobby"})");
  auto frames = frames_of(refused);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0], (json::object{{"type", "join"}, {"room", "lobby"}, {"ref", "join:lobby"}}));
  EXPECT_EQ(core.joined_rooms().count("lobby"), 1u) << "the room stays joined";
  auto recent = frames_of(core.on_server_line(R"({"type":"joined","room":"lobby","seq":1})"));
  ASSERT_EQ(recent.size(), 1u);
  EXPECT_EQ(recent[0].at("type"), "history");
  EXPECT_EQ(core.last_seq("lobby"), 1);
}

TEST(ChatRecovery, ARangeTooOldToRecoverIsSaidAndHistoryPagesBackFromIt) {
  ChatCore core = fresh_core();
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})");
  core.on_server_line(message_line("lobby", 1));
  core.on_disconnected();
  core.on_server_line(R"({"type":"auth_ok","user":"alice","heartbeat_s":30})");
  Effects joined = core.on_server_line(R"({"type":"joined","room":"lobby","seq":5001,"recovered":false})");
  ASSERT_EQ(joined.notices.size(), 1u);
  EXPECT_NE(joined.notices[0].find("5000 messages missed"), std::string::npos) << joined.notices[0];
  EXPECT_NE(joined.notices[0].find("/history"), std::string::npos);
  EXPECT_EQ(bodies(core.on_server_line(message_line("lobby", 5002))), range_bodies(5002, 5002));
  auto page = frames_of(core.on_input("/history"));
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0], (json::object{{"type", "history"},
                                   {"room", "lobby"},
                                   {"before_seq", 5002},
                                   {"limit", 20},
                                   {"ref", "page:lobby"}}));
  EXPECT_EQ(bodies(core.on_server_line(history_reply("lobby", "page:lobby", 4982, 5001))),
            range_bodies(4982, 5001));
  auto older = frames_of(core.on_input("/history"));
  ASSERT_EQ(older.size(), 1u);
  EXPECT_EQ(older[0].at("before_seq"), 4982) << "the next page is older still";
}

TEST(ChatRecovery, GapFramesAreShownAndSkippedOver) {
  ChatCore core = fresh_core();
  core.on_server_line(R"({"type":"joined","room":"lobby","seq":0})");
  core.on_server_line(message_line("lobby", 1));
  Effects gap = core.on_server_line(R"({"type":"gap","room":"lobby","from":2,"to":4})");
  ASSERT_EQ(gap.notices.size(), 1u);
  EXPECT_NE(gap.notices[0].find("2..4"), std::string::npos) << gap.notices[0];
  EXPECT_EQ(core.last_seq("lobby"), 4);
  EXPECT_EQ(bodies(core.on_server_line(message_line("lobby", 5))), range_bodies(5, 5));
}

}  // namespace
}  // namespace rtmc::chat
