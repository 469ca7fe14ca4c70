// The many-rooms scenario's room assignment (rooms.hpp), apart from the I/O
// so the unit tests need no asio.

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

#include "rooms.hpp"

namespace rtmc::bench {

std::vector<int> rooms_of_connection(int gateway, int local, int gateways, int connections_per_gateway,
                                     int rooms_per_connection, int rooms, int spread) {
  if (gateways < 1 || spread < 1 || spread > gateways || rooms < 1)
    throw std::invalid_argument("rooms: need 1 <= --rooms-spread <= gateways and rooms >= 1");
  const long memberships = static_cast<long>(gateways) * connections_per_gateway * rooms_per_connection;
  if (memberships % rooms != 0 || rooms % gateways != 0)
    throw std::invalid_argument(
        "rooms: gateways x connections x rooms-per-connection must be a multiple of "
        "the room count, and the room count of the gateway count");
  const long members = memberships / rooms;
  // Room r's members are split over gateways r, r+1, ... (position 0 first):
  // members / spread each, the first members % spread positions one more.
  const long base = members / spread;
  const long extra = members % spread;
  if (base + (extra ? 1 : 0) > connections_per_gateway)
    throw std::invalid_argument("rooms: more members of a room on a gateway than it has connections");
  if (base == 0) throw std::invalid_argument("rooms: fewer members a room than gateways to spread over");
  // Gateway g holds the rooms r at position (g - r) mod gateways < spread, in
  // order, each with its share of membership slots; slot s is connection
  // s mod C's. Connection c gets slots c, c + C, ...; a room's slots are
  // consecutive and at most C, so no room twice.
  std::vector<std::pair<long, int>> ends;  // (first slot after the room, room)
  long slots = 0;
  for (int r = 0; r < rooms; ++r) {
    const long position = ((gateway - r) % gateways + gateways) % gateways;
    if (position >= spread) continue;
    slots += base + (position < extra ? 1 : 0);
    ends.emplace_back(slots, r);
  }
  if (slots != static_cast<long>(connections_per_gateway) * rooms_per_connection)
    throw std::invalid_argument("rooms: the rooms do not fill every connection evenly");
  std::vector<int> result;
  for (int k = 0; k < rooms_per_connection; ++k) {
    const long slot = local + static_cast<long>(k) * connections_per_gateway;
    auto it = std::upper_bound(ends.begin(), ends.end(), std::make_pair(slot, rooms));
    result.push_back(it->second);
  }
  return result;
}

}  // namespace rtmc::bench
