#pragma once
// The one place that decides whether a user may join, send to or read a
// room. Every entry point asks it: the gateway (TCP today, WebSocket later)
// for join and send, the api for publishMessage. Names reach it already
// validated by the protocol layer.
//
// Today every authenticated user may do everything; private rooms and direct
// messages add their rules here (they may need a store port then, so callers
// already treat the answer as a decision that can say no).
//
// Threading: stateless and const, safe from any thread.

#include <string_view>

namespace rtmc::auth {

class RoomAccess {
 public:
  enum class Action { join, send, read };

  bool allowed(std::string_view user, std::string_view room, Action action) const {
    (void)user;
    (void)room;
    (void)action;
    return true;
  }
};

}  // namespace rtmc::auth
