#pragma once
// One io thread's world: its io_context, its sessions and which of them are
// in which room. Only that thread touches the maps, so joins, leaves and
// deliveries need no lock; other threads post to `io`.

#include "gateway/session.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace rtmc::gateway {

class IoShard {
 public:
  boost::asio::io_context io{1};

  void add(const std::shared_ptr<Session>& session) { sessions_.emplace(session.get(), session); }

  void remove(Session* session) {
    sessions_.erase(session);
    for (auto it = rooms_.begin(); it != rooms_.end();) {
      it->second.erase(session);
      it = it->second.empty() ? rooms_.erase(it) : std::next(it);
    }
  }

  void join(const std::string& room, const std::shared_ptr<Session>& session) {
    rooms_[room].emplace(session.get(), session);
  }

  void leave(const std::string& room, Session* session) {
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    it->second.erase(session);
    if (it->second.empty()) rooms_.erase(it);
  }

  // One shared frame for every local member of the room; each member's
  // frames of the batch leave in one write.
  void deliver(const SequencedBatch& batch) {
    for (const auto& item : batch) {
      auto it = rooms_.find(item.room);
      if (it == rooms_.end()) continue;
      // Safe to iterate: a member closed by this delivery (slow consumer)
      // leaves the map later, in a posted handler (Session::close), and so
      // stays alive until the flushes below.
      for (auto& [_, session] : it->second) session->deliver(item.room, item.seq, item.frame);
    }
  }

  void flush_deferred() {
    flush_posted_ = false;
    auto sessions = std::move(deferred_flushes_);
    deferred_flushes_.clear();
    for (auto& session : sessions) session->flush_deferred();
  }

  // The flush is posted behind whatever is already queued on this thread:
  // when the thread is behind, the batches waiting there join this one in the
  // same writes (one syscall per session for all of them); when it is idle,
  // the flush runs right away.
  void defer_flush(std::shared_ptr<Session> session) {
    deferred_flushes_.push_back(std::move(session));
    if (!flush_posted_) {
      flush_posted_ = true;
      boost::asio::post(io, [this] { flush_deferred(); });
    }
  }

  // Read buffer shared by the sessions of this thread (see Session::read_loop).
  std::array<char, 64 * 1024>& scratch() { return scratch_; }

  void close_all() {
    auto all = sessions_;
    for (auto& [_, session] : all) session->close(CloseReason::server_shutdown);
  }

 private:
  std::array<char, 64 * 1024> scratch_;
  std::vector<std::shared_ptr<Session>> deferred_flushes_;
  bool flush_posted_ = false;
  std::unordered_map<Session*, std::shared_ptr<Session>> sessions_;
  std::unordered_map<std::string, std::unordered_map<Session*, std::shared_ptr<Session>>> rooms_;
};

}  // namespace rtmc::gateway
