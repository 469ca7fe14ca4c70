#pragma once
// The connections of one io thread and the rooms each is in, so a batch of
// sequenced frames reaches a room's local members without a lock. Only that
// io thread touches it.
//
// Removal goes through the connection's own rooms (it knows them), so a close
// costs O(its rooms), not O(rooms of the thread).
//
// A template only so its tests need no real connections; the gateway uses
// ConnectionIndex = BasicConnectionIndex<ClientConnection>.
//
// The observer hears when a room gets its first member on this index and
// when it loses its last (the fan-out binds and unbinds rooms on that,
// through LocalRooms); it runs on the index's thread, on those edges only.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace rtmc::gateway {

template <class Connection>
class BasicConnectionIndex {
 public:
  using Member = std::shared_ptr<Connection>;
  using Members = std::unordered_map<Connection*, Member>;

  // A room's local members in a dense array: a delivery walks it in order
  // and can prefetch the members ahead of the one it serves (with 10,000
  // members a node-based walk missed the cache on every member). Removal
  // swaps the last member into the hole.
  class RoomMembers {
   public:
    bool add(const Member& connection) {
      if (!position_.try_emplace(connection.get(), list_.size()).second) return false;
      list_.push_back(connection);
      return true;
    }
    void remove(Connection* connection) {
      auto it = position_.find(connection);
      if (it == position_.end()) return;
      const std::size_t hole = it->second;
      position_.erase(it);
      if (hole + 1 != list_.size()) {
        list_[hole] = std::move(list_.back());
        position_[list_[hole].get()] = hole;
      }
      list_.pop_back();
    }
    const std::vector<Member>& list() const { return list_; }
    std::size_t size() const { return list_.size(); }
    bool empty() const { return list_.empty(); }

   private:
    std::vector<Member> list_;
    std::unordered_map<Connection*, std::size_t> position_;
  };
  using RoomObserver = std::function<void(const std::string& room, bool occupied)>;

  BasicConnectionIndex() = default;
  explicit BasicConnectionIndex(RoomObserver observer) : observer_(std::move(observer)) {}

  void add(const Member& connection) { connections_.emplace(connection.get(), connection); }

  // Forgets the connection and its memberships of `rooms`.
  void remove(Connection* connection, const std::vector<std::string>& rooms) {
    for (const auto& room : rooms) leave(room, connection);
    connections_.erase(connection);
  }

  void join(const std::string& room, const Member& connection) {
    ++room_lookups_;
    auto [it, created] = rooms_.try_emplace(room);
    it->second.add(connection);
    if (created && observer_) observer_(room, true);
  }

  void leave(const std::string& room, Connection* connection) {
    ++room_lookups_;
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    it->second.remove(connection);
    if (!it->second.empty()) return;
    rooms_.erase(it);
    if (observer_) observer_(room, false);
  }

  // nullptr when no local connection is in the room.
  const RoomMembers* members(const std::string& room) const {
    auto it = rooms_.find(room);
    return it == rooms_.end() ? nullptr : &it->second;
  }

  const Members& connections() const { return connections_; }
  std::size_t room_count() const { return rooms_.size(); }
  // Room-map lookups by join/leave/remove, for tests of removal cost.
  std::size_t room_lookups() const { return room_lookups_; }

 private:
  Members connections_;
  std::unordered_map<std::string, RoomMembers> rooms_;
  std::size_t room_lookups_ = 0;
  RoomObserver observer_;
};

class ClientConnection;
using ConnectionIndex = BasicConnectionIndex<ClientConnection>;

}  // namespace rtmc::gateway
