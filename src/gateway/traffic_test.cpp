#include "gateway/traffic.hpp"

#include <gtest/gtest.h>

namespace rtmc::gateway {
namespace {

TEST(Traffic, ServerFrameTypesAreReadFromTheirFirstBytes) {
  EXPECT_EQ(frame_out_type(protocol::ack_frame("r", "1", std::nullopt)), FrameOut::ack);
  EXPECT_EQ(frame_out_type(protocol::auth_ok_frame("alice", 30, std::nullopt)), FrameOut::auth_ok);
  EXPECT_EQ(frame_out_type(protocol::joined_frame("r", 3, std::nullopt)), FrameOut::joined);
  EXPECT_EQ(frame_out_type(protocol::left_frame("r", std::nullopt)), FrameOut::left);
  EXPECT_EQ(frame_out_type(protocol::pong_frame(std::nullopt)), FrameOut::pong);
  EXPECT_EQ(frame_out_type(protocol::error_frame(protocol::ErrorCode::bad_json, "x", std::nullopt)),
            FrameOut::error);
  EXPECT_EQ(frame_out_type(protocol::status_frame("alice", true, 5, std::nullopt)), FrameOut::status);
  EXPECT_EQ(frame_out_type(protocol::members_frame("r", {"a"}, std::nullopt)), FrameOut::members);
  EXPECT_EQ(frame_out_type(protocol::history_frame("r", {}, std::nullopt)), FrameOut::history);
  EXPECT_EQ(frame_out_type(R"({"type":"refreshed","user":"a","expires_at":1})"), FrameOut::refreshed);
  EXPECT_EQ(frame_out_type(R"({"type":"surprise"})"), FrameOut::other);
  EXPECT_EQ(frame_out_type("not json"), FrameOut::other);
  EXPECT_EQ(frame_out_type(""), FrameOut::other);
}

TEST(Traffic, ClientFrameTypesFollowTheRequestVariant) {
  EXPECT_EQ(frame_in_type(protocol::SendRequest{"r", "1", "hi"}), FrameIn::send);
  EXPECT_EQ(frame_in_type(protocol::AuthRequest{"t"}), FrameIn::auth);
  EXPECT_EQ(frame_in_type(protocol::HistoryRequest{}), FrameIn::history);
  EXPECT_EQ(frame_in_type(protocol::PingRequest{}), FrameIn::ping);
}

TEST(Traffic, EveryLabelIsRenderedFromTheStartAndCountsMove) {
  TrafficCounters counters;
  metrics::Registry registry;
  add_traffic_metrics(registry, counters);
  counters.count_in(FrameIn::send);
  counters.count_in(FrameIn::send);
  counters.count_out(protocol::pong_frame(std::nullopt));
  counters.count_error(protocol::ErrorCode::rate_limited);
  DeliveryCounts batch{};
  batch[static_cast<std::size_t>(DeliveryKind::message)] = 1000;
  counters.count_deliveries(batch);
  counters.count_deliveries(batch);
  counters.publish_confirm.observe(0.002);
  const auto text = registry.render();
  EXPECT_NE(text.find("rtmc_gateway_frames_in_total{type=\"send\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_frames_in_total{type=\"invalid\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_frames_out_total{type=\"pong\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_deliveries_total{kind=\"message\"} 2000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_deliveries_total{kind=\"presence\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_errors_sent_total{code=\"rate_limited\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("rtmc_gateway_errors_sent_total{code=\"not_found\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_publish_confirm_seconds_count 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rtmc_gateway_rate_limited_total 0\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace rtmc::gateway
