// The parts of the connection scenario that need no sockets.

#include <arpa/inet.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "conns.hpp"

namespace rtmc::bench {

void ConnsTally::merge(const ConnsTally& other) {
  if (other.clients > 0) start_ns = clients > 0 ? std::min(start_ns, other.start_ns) : other.start_ns;
  clients += other.clients;
  authenticated += other.authenticated;
  failed += other.failed;
  dropped += other.dropped;
  retries += other.retries;
  last_auth_ns = std::max(last_auth_ns, other.last_auth_ns);
  handshake_max_ns = std::max(handshake_max_ns, other.handshake_max_ns);
  handshake_sum_ns += other.handshake_sum_ns;
  if (first_error.empty()) first_error = other.first_error;
}

std::string ConnsTally::to_line() const {
  std::ostringstream out;
  out << clients << ' ' << authenticated << ' ' << failed << ' ' << dropped << ' ' << retries << ' '
      << start_ns << ' ' << last_auth_ns << ' ' << handshake_max_ns << ' ' << handshake_sum_ns << ' ';
  for (char c : first_error) out << (c == '\n' || c == '\r' ? ' ' : c);
  out << '\n';
  return out.str();
}

std::optional<ConnsTally> ConnsTally::from_line(std::string_view line) {
  std::istringstream in{std::string(line)};
  ConnsTally tally;
  in >> tally.clients >> tally.authenticated >> tally.failed >> tally.dropped >> tally.retries >>
      tally.start_ns >> tally.last_auth_ns >> tally.handshake_max_ns >> tally.handshake_sum_ns;
  if (!in || in.get() != ' ') return std::nullopt;
  std::getline(in, tally.first_error);
  return tally;
}

double ConnsTally::storm_s() const {
  return authenticated > 0 && last_auth_ns > start_ns ? static_cast<double>(last_auth_ns - start_ns) / 1e9
                                                      : 0.0;
}

std::vector<std::string> parse_source_addresses(std::string_view text) {
  std::vector<std::string> out;
  auto check = [](const std::string& address) {
    in_addr parsed{};
    if (::inet_pton(AF_INET, address.c_str(), &parsed) != 1)
      throw std::invalid_argument("not an IPv4 address: '" + address + "'");
    return parsed;
  };
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string item(text.substr(0, comma));
    text.remove_prefix(comma == std::string_view::npos ? text.size() : comma + 1);
    if (item.empty()) continue;
    auto dash = item.find('-');
    if (dash == std::string::npos) {
      check(item);
      out.push_back(item);
      continue;
    }
    const std::string first = item.substr(0, dash);
    const std::string last = item.substr(dash + 1);
    const std::uint32_t from = ntohl(check(first).s_addr);
    const std::uint32_t to = ntohl(check(last).s_addr);
    if (to < from || (from >> 8) != (to >> 8))
      throw std::invalid_argument("a range varies the last octet only, upwards: '" + item + "'");
    for (std::uint32_t address = from; address <= to; ++address) {
      in_addr value{htonl(address)};
      char buffer[INET_ADDRSTRLEN];
      out.emplace_back(::inet_ntop(AF_INET, &value, buffer, sizeof buffer));
    }
  }
  return out;
}

double kib_per_connection(std::uint64_t before_kib, std::uint64_t after_kib, std::uint64_t connections) {
  if (connections == 0) return 0;
  return (static_cast<double>(after_kib) - static_cast<double>(before_kib)) /
         static_cast<double>(connections);
}

}  // namespace rtmc::bench
