// The syncer's logic without services: entry parsing, batch order and
// parameters, failure classes, the batch clock, the health answer.
#include "syncer/entries.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "protocol/frames.hpp"
#include "syncer/endpoints.hpp"

namespace rtmc::syncer {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> fields(const std::string& room, const std::string& seq, const std::string& frame) {
  return {"room", room, "seq", seq, "f", frame};
}

redis::Reply text(const std::string& value) {
  redis::Reply reply;
  reply.type = redis::Reply::Type::string;
  reply.str = value;
  return reply;
}

redis::Reply array(std::vector<redis::Reply> elements) {
  redis::Reply reply;
  reply.type = redis::Reply::Type::array;
  reply.elements = std::move(elements);
  return reply;
}

redis::Reply entry(const std::string& id, const std::vector<std::string>& values) {
  std::vector<redis::Reply> list;
  for (const auto& value : values) list.push_back(text(value));
  return array({text(id), array(std::move(list))});
}

TEST(SyncerEntries, AMessageFrameBecomesItsRow) {
  const auto frame = protocol::message_frame("lobby", 42, "m-1", "alice", "hi \"there\"\n\\", 1700000000123);
  std::string problem;
  const auto row = parse_fields(fields("lobby", "42", frame), problem);
  ASSERT_TRUE(row) << problem;
  EXPECT_EQ(*row, (Row{"lobby", 42, "m-1", "alice", "hi \"there\"\n\\", 1700000000123}));
}

TEST(SyncerEntries, FieldOrderDoesNotMatter) {
  const auto frame = protocol::message_frame("lobby", 7, "x", "bob", "b", 5);
  std::string problem;
  const auto row = parse_fields({"f", frame, "seq", "7", "room", "lobby"}, problem);
  ASSERT_TRUE(row) << problem;
  EXPECT_EQ(row->seq, 7);
  EXPECT_EQ(row->sender, "bob");
}

TEST(SyncerEntries, MalformedEntriesAreRefusedWithAReason) {
  const auto good = protocol::message_frame("lobby", 3, "id", "alice", "body", 10);
  const std::vector<std::vector<std::string>> bad{
      {"room", "lobby", "seq", "3"},                                                     // no frame
      fields("lobby", "three", good),                                                    // seq not a number
      fields("lobby", "0", protocol::message_frame("lobby", 0, "id", "alice", "b", 1)),  // seq 0
      fields("lobby", "3", "{not json"),
      fields("lobby", "3", "[1,2]"),
      fields("lobby", "4", good),                                             // another seq
      fields("other", "3", good),                                             // another room
      fields("lobby", "3", R"({"type":"presence","room":"lobby","seq":3})"),  // not a message
      fields("lobby", "3",
             R"({"type":"message","room":"lobby","seq":3,"id":"id","from":"alice","body":"b"})"),
      fields("lobby", "3",
             R"({"type":"message","room":"lobby","seq":3,"id":"id","from":"alice","body":"b","ts":"1"})"),
      fields("lobby", "3", protocol::message_frame("lobby", 3, "id", "alice", "", 10)),  // empty body
      fields("lobby", "3", protocol::message_frame("lobby", 3, "id", "bad name!", "b", 10)),
      fields("lobby", "3", protocol::message_frame("lobby", 3, "id", "alice", std::string("a\0b", 3), 10)),
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    std::string problem;
    EXPECT_FALSE(parse_fields(bad[i], problem)) << "case " << i;
    EXPECT_FALSE(problem.empty()) << "case " << i;
  }
}

TEST(SyncerEntries, AStreamReplyBecomesEntriesWithTheirShard) {
  const auto one = protocol::message_frame("r", 1, "a", "alice", "x", 1);
  redis::Reply deleted = array({text("3-0"), redis::Reply{}});  // nil fields: deleted while pending
  const auto reply = array({entry("1-0", fields("r", "1", one)), entry("2-0", {"room", "r"}), deleted});
  const auto entries = parse_entries(reply, 5);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].id, "1-0");
  EXPECT_EQ(entries[0].shard, 5u);
  ASSERT_TRUE(entries[0].row);
  EXPECT_EQ(entries[0].row->id, "a");
  EXPECT_EQ(entries[1].id, "2-0");
  EXPECT_FALSE(entries[1].row);
  EXPECT_TRUE(parse_entries(redis::Reply{}, 0).empty());
}

TEST(SyncerEntries, RowsAreOrderedByRoomAndSeqWithRepeatsDropped) {
  std::vector<Row> rows{{"b", 2, "x", "u", "1", 1},
                        {"a", 9, "y", "u", "2", 1},
                        {"b", 1, "z", "u", "3", 1},
                        {"a", 9, "y", "u", "2", 1},
                        {"a", 3, "w", "u", "4", 1}};
  const auto ordered = ordered_rows(rows);
  ASSERT_EQ(ordered.size(), 4u);
  EXPECT_EQ(ordered[0].room + std::to_string(ordered[0].seq), "a3");
  EXPECT_EQ(ordered[1].room + std::to_string(ordered[1].seq), "a9");
  EXPECT_EQ(ordered[2].room + std::to_string(ordered[2].seq), "b1");
  EXPECT_EQ(ordered[3].room + std::to_string(ordered[3].seq), "b2");
}

TEST(SyncerEntries, InsertParametersAreSixQuotedArrays) {
  const auto params =
      insert_params({{"r", 1, "i", "alice", "say \"hi\" \\ {x,y}", -5}, {"r", 2, "j", "bob", "b", 7}});
  ASSERT_EQ(params.size(), 6u);
  EXPECT_EQ(*params[0], R"({"r","r"})");
  EXPECT_EQ(*params[1], R"({"1","2"})");
  EXPECT_EQ(*params[3], R"({"alice","bob"})");
  EXPECT_EQ(*params[4], R"({"say \"hi\" \\ {x,y}","b"})");
  EXPECT_EQ(*params[5], R"({"-5","7"})");
}

TEST(SyncerEntries, OutagesDeadlocksAndAMissingSchemaAreRetriedDataErrorsAreNot) {
  EXPECT_EQ(classify(pg::PgError("down", "")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("conn", "08006")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("shutdown", "57P01")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("deadlock", "40P01")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("serialization", "40001")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("no table", "42P01")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("read-only standby", "25006")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("no grant", "42501")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("no column", "42703")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("unknown", "XX000")), Failure::transient);
  EXPECT_EQ(classify(pg::PgError("too large", "54000")), Failure::rejected);
  EXPECT_EQ(classify(pg::PgError("bad utf8", "22021")), Failure::rejected);
  EXPECT_EQ(classify(pg::PgError("check", "23514")), Failure::rejected);
}

TEST(SyncerEntries, ABatchIsDueAtItsSizeOrItsWait) {
  const BatchPolicy policy{3, 100ms};
  const auto t0 = BatchPolicy::Clock::now();
  EXPECT_FALSE(policy.due(0, t0, t0 + 1h));
  EXPECT_FALSE(policy.due(2, t0, t0 + 99ms));
  EXPECT_TRUE(policy.due(2, t0, t0 + 100ms));
  EXPECT_TRUE(policy.due(3, t0, t0));
  EXPECT_EQ(policy.time_left(0, t0, t0, 500ms), 500ms);
  EXPECT_EQ(policy.time_left(1, t0, t0 + 40ms, 500ms), 60ms);
  EXPECT_EQ(policy.time_left(3, t0, t0, 500ms), 0ms);
}

TEST(SyncerHealth, DownStoreAnswers503WithTheBacklog) {
  Health health;
  health.backlog = {{0, 5}, {3, 7}, {4, -1}};
  auto ok = health_answer(health, "c1");
  EXPECT_EQ(ok.status, 200u);
  const auto body = boost::json::parse(ok.body).as_object();
  EXPECT_EQ(body.at("status").as_string(), "ok");
  EXPECT_EQ(body.at("backlog").as_object().at("3").as_int64(), 7);
  EXPECT_EQ(body.at("backlog").as_object().at("4").as_int64(), -1);
  EXPECT_EQ(body.at("backlog_total").as_int64(), 12);
  EXPECT_EQ(body.at("consumer").as_string(), "c1");
  health.pg_up = false;
  auto down = health_answer(health, "c1");
  EXPECT_EQ(down.status, 503u);
  const auto down_body = boost::json::parse(down.body).as_object();
  EXPECT_EQ(down_body.at("postgres").as_string(), "down");
  EXPECT_EQ(down_body.at("redis").as_string(), "up");
  EXPECT_EQ(down_body.at("backlog_total").as_int64(), 12);
}

TEST(SyncerLag, IsTheAgeOfTheOldestUnsyncedEntryOnTheRedisClock) {
  EXPECT_EQ(oldest_entry_age_ms(std::string_view("1796180645000-3"), 1796180647500), 2500);
  EXPECT_EQ(oldest_entry_age_ms(std::nullopt, 1796180647500), 0) << "empty stream: no lag";
  EXPECT_EQ(oldest_entry_age_ms(std::string_view("1796180649000-0"), 1796180647500), 0) << "never negative";
  EXPECT_FALSE(oldest_entry_age_ms(std::string_view("garbage"), 1));
  EXPECT_FALSE(oldest_entry_age_ms(std::string_view("12"), 1));
  EXPECT_EQ(redis_time_ms("1796180645", "678901"), 1796180645678);
  EXPECT_FALSE(redis_time_ms("x", "1"));
}

}  // namespace
}  // namespace rtmc::syncer
