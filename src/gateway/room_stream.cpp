#include "gateway/room_stream.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace rtmc::gateway {

RoomStreams::Join RoomStreams::join(const std::string& room, std::size_t max_rooms) {
  if (rooms_.contains(room)) return {JoinResult::already_in};
  if (rooms_.size() >= max_rooms) return {JoinResult::too_many_rooms};
  auto& stream = rooms_[room];
  stream.membership = ++memberships_;
  return {JoinResult::added, stream.membership};
}

void RoomStreams::joined(const std::string& room, std::uint64_t membership, std::int64_t seq, Output& out) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || it->second.membership != membership) return;
  it->second.last_seq = seq;
  release_held(room, it->second, out);
}

void RoomStreams::abandon(const std::string& room, std::uint64_t membership) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || it->second.membership != membership) return;
  drop_held(it->second);
  rooms_.erase(it);
}

bool RoomStreams::leave(const std::string& room) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return false;
  drop_held(it->second);
  rooms_.erase(it);
  return true;
}

void RoomStreams::deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame, Output& out) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  Stream& stream = it->second;
  if (stream.pending) {
    hold(stream, seq, frame);
    return;
  }
  accept(room, stream, seq, frame, out);
}

void RoomStreams::hold(Stream& stream, std::int64_t seq, const SharedFrame& frame) {
  stream.held.emplace_back(seq, frame);
  held_bytes_ += frame->size();
}

void RoomStreams::drop_held(Stream& stream) {
  for (const auto& [_, frame] : stream.held) held_bytes_ -= frame->size();
  stream.held.clear();
}

void RoomStreams::accept(const std::string& room, Stream& stream, std::int64_t seq, const SharedFrame& frame,
                         Output& out) {
  if (seq <= stream.last_seq) return;
  if (seq == stream.last_seq + 1) {
    stream.last_seq = seq;
    out.frames.push_back(frame);
    return;
  }
  // A hole the fan-out thread could not know about (it saw this room for the
  // first time after frames this client is owed): fetch it from the room log
  // and hold what comes meanwhile.
  stream.pending = true;
  hold(stream, seq, frame);
  out.repair = Repair{room, stream.membership, stream.last_seq + 1, seq - 1};
}

void RoomStreams::release_held(const std::string& room, Stream& stream, Output& out) {
  stream.pending = false;
  auto held = std::exchange(stream.held, {});
  for (const auto& [_, frame] : held) held_bytes_ -= frame->size();
  std::stable_sort(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, frame] : held) {
    if (stream.pending)
      hold(stream, seq, frame);
    else
      accept(room, stream, seq, frame, out);
  }
}

RoomStreams::RepairResult RoomStreams::repaired(const Repair& repair,
                                                std::optional<std::vector<LogFrame>> frames, Output& out) {
  const std::string& room = repair.room;
  auto it = rooms_.find(room);
  if (it == rooms_.end() || it->second.membership != repair.membership) return RepairResult::stale;
  if (!frames) return RepairResult::failed;
  Stream& stream = it->second;
  const std::int64_t to = repair.to;
  // What the log no longer has (trimmed, over --room-log-length behind) is
  // skipped; what it still has is delivered.
  auto skip_to = [&](std::int64_t seq) {
    if (seq <= stream.last_seq + 1) return;
    spdlog::error("room {}: seqs {}..{} were trimmed from the log before this client got them", room,
                  stream.last_seq + 1, seq - 1);
    stream.last_seq = seq - 1;
  };
  for (auto& [seq, frame] : *frames) {
    if (seq <= stream.last_seq || seq > to) continue;
    skip_to(seq);
    stream.last_seq = seq;
    out.frames.push_back(std::move(frame));
  }
  skip_to(to + 1);
  release_held(room, stream, out);
  return RepairResult::applied;
}

std::vector<std::string> RoomStreams::clear() {
  std::vector<std::string> names;
  names.reserve(rooms_.size());
  for (auto& [room, _] : rooms_) names.push_back(room);
  rooms_.clear();
  held_bytes_ = 0;
  return names;
}

}  // namespace rtmc::gateway
