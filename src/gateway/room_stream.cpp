#include "gateway/room_stream.hpp"

#include <algorithm>

#include "protocol/frames.hpp"

namespace rtmc::gateway {

RoomStreams::Join RoomStreams::join(const std::string& room, std::size_t max_rooms) {
  if (rooms_.contains(room)) return {JoinResult::already_in};
  if (rooms_.size() >= max_rooms) return {JoinResult::too_many_rooms};
  auto& stream = rooms_[room];
  stream.membership = ++memberships_;
  return {JoinResult::added, stream.membership};
}

RoomStreams::Stream* RoomStreams::find(const std::string& room, std::uint64_t membership) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || it->second.membership != membership) return nullptr;
  return &it->second;
}

void RoomStreams::joined(const std::string& room, std::uint64_t membership, std::int64_t seq, Output& out) {
  Stream* stream = find(room, membership);
  if (stream == nullptr || stream->phase != Stream::Phase::joining) return;
  stream->last_seq = seq;
  stream->read_seq = seq;
  // Frames dropped while joining (over the hold bound) are read back.
  if (stream->target > seq) {
    start_reading(room, *stream, out);
    return;
  }
  release_held(room, *stream, out);
}

RoomStreams::Repair RoomStreams::replay_start(const std::string& room, std::uint64_t membership,
                                              std::int64_t since, std::int64_t seq) const {
  return Repair{room, membership, since + 1, std::min(seq, since + limits_.chunk)};
}

RoomStreams::RepairResult RoomStreams::resume(const Repair& first, std::vector<LogFrame> frames,
                                              std::int64_t seq, std::size_t budget, Output& out) {
  Stream* stream = find(first.room, first.membership);
  if (stream == nullptr || stream->phase != Stream::Phase::joining) return RepairResult::stale;
  stream->phase = Stream::Phase::reading;
  stream->last_seq = first.from - 1;
  stream->read_seq = first.from - 1;
  stream->target = std::max(stream->target, seq);
  apply(first.room, *stream, first, std::move(frames), budget, out);
  return RepairResult::applied;
}

void RoomStreams::abandon(const std::string& room, std::uint64_t membership) {
  auto it = rooms_.find(room);
  if (it == rooms_.end() || it->second.membership != membership) return;
  drop_held(it->second);
  erase(it);
}

bool RoomStreams::leave(const std::string& room) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return false;
  drop_held(it->second);
  erase(it);
  return true;
}

void RoomStreams::erase(Rooms::iterator it) {
  if (last_found_ == &*it) last_found_ = nullptr;
  rooms_.erase(it);
}

RoomStreams::Next RoomStreams::deliver_next(const RoomKey& room, std::int64_t seq) {
  if (last_found_ == nullptr || last_found_->first != room.name) {
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return Next::not_in_room;
    last_found_ = &*it;
  }
  Stream& stream = last_found_->second;
  if (stream.phase != Stream::Phase::live || seq != stream.last_seq + 1) return Next::other;
  stream.last_seq = seq;
  return Next::send;
}

void RoomStreams::deliver(const std::string& room, std::int64_t seq, const SharedFrame& frame, Output& out) {
  deliver_item(room, Item{seq, seq, frame, false}, out);
}

void RoomStreams::deliver_gap(const std::string& room, std::int64_t from, std::int64_t to,
                              const SharedFrame& frame, Output& out) {
  if (from > to) return;
  deliver_item(room, Item{from, to, frame, true}, out);
}

void RoomStreams::deliver_item(const std::string& room, Item item, Output& out) {
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  Stream& stream = it->second;
  if (stream.phase != Stream::Phase::live) {
    hold(stream, std::move(item));
    return;
  }
  accept(room, stream, std::move(item), out);
}

void RoomStreams::hold(Stream& stream, Item item) {
  // What the log read already covers is handed out from the read.
  if (item.seq <= stream.read_seq) return;
  if (held_bytes_ + item.frame->size() > limits_.hold_bytes) {
    stream.target = std::max(stream.target, item.seq);
    return;
  }
  held_bytes_ += item.frame->size();
  stream.held.push_back(std::move(item));
}

void RoomStreams::drop_held(Stream& stream) {
  for (const auto& item : stream.held) held_bytes_ -= item.frame->size();
  stream.held.clear();
}

void RoomStreams::accept(const std::string& room, Stream& stream, Item item, Output& out) {
  if (item.seq <= stream.last_seq) return;
  if (item.from <= stream.last_seq + 1) {
    hand_on(room, stream, std::move(item), out);
    return;
  }
  // A hole the fan-out thread could not know about (it saw this room for the
  // first time after frames this client is owed): read it from the room log
  // and hold what comes meanwhile.
  stream.phase = Stream::Phase::reading;
  stream.read_seq = stream.last_seq;
  stream.target = std::max(stream.target, item.from - 1);
  hold(stream, std::move(item));
  start_reading(room, stream, out);
}

void RoomStreams::hand_on(const std::string& room, Stream& stream, Item item, Output& out) {
  if (item.gap) {
    // Part of the range may have reached this client already.
    const std::int64_t from = std::max(item.from, stream.last_seq + 1);
    if (from != item.from)
      item.frame = std::make_shared<const std::string>(protocol::gap_frame(room, from, item.seq));
    ++out.gaps;
    out.gap_seqs += static_cast<std::uint64_t>(item.seq - from + 1);
  }
  stream.last_seq = item.seq;
  out.frames.push_back(std::move(item.frame));
}

void RoomStreams::start_reading(const std::string& room, Stream& stream, Output& out) {
  stream.phase = Stream::Phase::reading;
  const std::int64_t from = stream.read_seq + 1;
  out.repair =
      Repair{room, stream.membership, from, std::min(stream.target, stream.read_seq + limits_.chunk)};
}

void RoomStreams::apply(const std::string& room, Stream& stream, const Repair& read,
                        std::vector<LogFrame> frames, std::size_t budget, Output& out) {
  auto gap_to = [&](std::int64_t to) {
    if (to <= stream.read_seq) return;
    std::int64_t from = stream.read_seq + 1;
    // A range missing across chunks (a long skipped range) is one gap.
    if (!stream.buffer.empty() && stream.buffer.back().gap && stream.buffer.back().seq == from - 1) {
      from = stream.buffer.back().from;
      stream.buffer.pop_back();
    }
    stream.buffer.push_back(
        Item{from, to, std::make_shared<const std::string>(protocol::gap_frame(room, from, to)), true});
    stream.read_seq = to;
  };
  for (auto& [seq, frame] : frames) {
    if (seq <= stream.read_seq || seq > read.to) continue;
    gap_to(seq - 1);
    stream.buffer.push_back(Item{seq, seq, std::move(frame), false});
    stream.read_seq = seq;
  }
  // The log no longer has (or never had) whatever it did not return.
  gap_to(read.to);
  // Held frames the read has passed are duplicates: freeing their bytes
  // lets the next live frames be held rather than chased in the log.
  std::erase_if(stream.held, [&](const Item& item) {
    if (item.seq > stream.read_seq) return false;
    held_bytes_ -= item.frame->size();
    return true;
  });
  pump_stream(room, stream, budget, out);
}

void RoomStreams::pump_stream(const std::string& room, Stream& stream, std::size_t budget, Output& out) {
  std::size_t handed = 0;
  while (!stream.buffer.empty()) {
    // A gap at the end of what was read may go on in the next chunk: it
    // waits for that read, so the client gets the whole range as one.
    if (stream.buffer.size() == 1 && stream.buffer.front().gap && stream.read_seq < stream.target) break;
    const std::size_t size = stream.buffer.front().frame->size();
    if (handed > 0 && handed + size > budget) return;
    handed += size;
    hand_on(room, stream, std::move(stream.buffer.front()), out);
    stream.buffer.pop_front();
  }
  if (stream.read_seq < stream.target)
    start_reading(room, stream, out);
  else
    release_held(room, stream, out);
}

void RoomStreams::release_held(const std::string& room, Stream& stream, Output& out) {
  stream.phase = Stream::Phase::live;
  auto held = std::exchange(stream.held, {});
  for (const auto& item : held) held_bytes_ -= item.frame->size();
  std::stable_sort(held.begin(), held.end(), [](const Item& a, const Item& b) { return a.seq < b.seq; });
  for (auto& item : held) {
    if (stream.phase == Stream::Phase::live)
      accept(room, stream, std::move(item), out);
    else
      hold(stream, std::move(item));
  }
}

RoomStreams::RepairResult RoomStreams::repaired(const Repair& repair,
                                                std::optional<std::vector<LogFrame>> frames, Output& out,
                                                std::size_t budget) {
  Stream* stream = find(repair.room, repair.membership);
  if (stream == nullptr) return RepairResult::stale;
  if (!frames) return RepairResult::failed;
  // An answer to a read this stream no longer waits for hands on nothing.
  if (stream->phase != Stream::Phase::reading || repair.from != stream->read_seq + 1)
    return RepairResult::applied;
  apply(repair.room, *stream, repair, std::move(*frames), budget, out);
  return RepairResult::applied;
}

RoomStreams::RepairResult RoomStreams::pump(const std::string& room, std::uint64_t membership,
                                            std::size_t budget, Output& out) {
  Stream* stream = find(room, membership);
  if (stream == nullptr) return RepairResult::stale;
  if (stream->phase != Stream::Phase::reading || stream->buffer.empty()) return RepairResult::applied;
  pump_stream(room, *stream, budget, out);
  return RepairResult::applied;
}

bool RoomStreams::buffered(const std::string& room, std::uint64_t membership) const {
  auto it = rooms_.find(room);
  return it != rooms_.end() && it->second.membership == membership && !it->second.buffer.empty();
}

std::vector<std::string> RoomStreams::clear() {
  std::vector<std::string> names;
  names.reserve(rooms_.size());
  for (auto& [room, _] : rooms_) names.push_back(room);
  rooms_.clear();
  last_found_ = nullptr;
  held_bytes_ = 0;
  return names;
}

}  // namespace rtmc::gateway
