#include "common/names.hpp"

#include <gtest/gtest.h>

#include <set>

#include "common/keys.hpp"

namespace rtmc {
namespace {

TEST(Names, UserNames) {
  EXPECT_TRUE(valid_user_name("alice"));
  EXPECT_TRUE(valid_user_name("A.b-c_9"));
  EXPECT_TRUE(valid_user_name(std::string(32, 'x')));
  EXPECT_FALSE(valid_user_name(std::string(33, 'x')));
  EXPECT_FALSE(valid_user_name(""));
  EXPECT_FALSE(valid_user_name("_alice"));
  EXPECT_FALSE(valid_user_name(".alice"));
  EXPECT_FALSE(valid_user_name("al ice"));
  EXPECT_FALSE(valid_user_name("al:ice"));
  EXPECT_EQ(fold_user_name("AliCe"), "alice");
}

TEST(Names, RoomsIdsPasswords) {
  EXPECT_TRUE(valid_room_name("_room"));
  EXPECT_TRUE(valid_room_name(std::string(64, 'r')));
  EXPECT_FALSE(valid_room_name(std::string(65, 'r')));
  EXPECT_FALSE(valid_room_name("a:b"));
  EXPECT_TRUE(valid_message_id("a:b"));
  EXPECT_FALSE(valid_message_id("a/b"));
  EXPECT_FALSE(valid_password("1234567"));
  EXPECT_TRUE(valid_password("12345678"));
  EXPECT_FALSE(valid_password(std::string(257, 'p')));
}

TEST(Names, Utf8) {
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("\xed\x95\x9c\xea\xb8\x80"));  // 한글
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));                 // overlong '/'
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));             // surrogate
  EXPECT_FALSE(valid_utf8("\xe2\x82"));                 // truncated
}

TEST(Names, MessageIdsAreValidAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = make_message_id();
    EXPECT_TRUE(valid_message_id(id));
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(Keys, ShardIsStableAndKeysShareTheHashTag) {
  EXPECT_EQ(shard_of("lobby", 16), shard_of("lobby", 16));
  EXPECT_LT(shard_of("lobby", 16), 16u);
  std::set<std::uint32_t> used;
  for (int i = 0; i < 200; ++i) used.insert(shard_of("room" + std::to_string(i), 16));
  EXPECT_EQ(used.size(), 16u);
  EXPECT_EQ(keys::room_seq(3, "r"), "{3}:seq:r");
  EXPECT_EQ(keys::room_seq_mark(3, "r"), "{3}:seqmark:r");
  EXPECT_EQ(keys::sync_stream(3).substr(0, 3), "{3}");
  EXPECT_EQ(keys::dedupe(3, "r", "alice", "a:b"), "{3}:dedupe:r:alice:a:b");
  EXPECT_EQ(ingest_queue(5), "rtmc.ingest.5");
}

TEST(Keys, PresenceKeysFoldUserNamesButNotRooms) {
  EXPECT_EQ(keys::online("Alice"), "online:alice");
  EXPECT_EQ(keys::status("ALICE"), "status:alice");
  EXPECT_EQ(keys::members("Lobby"), "members:Lobby");
  EXPECT_EQ(keys::gateways(), "gateways");
  EXPECT_EQ(keys::gateway_alive("8001-ab"), "gateway:8001-ab:alive");
  EXPECT_EQ(keys::gateway_connections("8001-ab"), "gateway:8001-ab:connections");
  EXPECT_EQ(keys::gateway_rooms("8001-ab"), "gateway:8001-ab:rooms");
}

}  // namespace
}  // namespace rtmc
