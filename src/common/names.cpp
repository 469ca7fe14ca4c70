#include "common/names.hpp"

#include <array>
#include <chrono>
#include <random>

namespace rtmc {
namespace {

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

template <class Extra>
bool charset_ok(std::string_view s, std::size_t max_len, Extra extra) {
  if (s.empty() || s.size() > max_len) return false;
  for (char c : s)
    if (!is_alnum(c) && !extra(c)) return false;
  return true;
}

}  // namespace

bool valid_user_name(std::string_view name) {
  return charset_ok(name, 32, [](char c) { return c == '_' || c == '.' || c == '-'; }) &&
         is_alnum(name.front());
}

bool valid_room_name(std::string_view room) {
  return charset_ok(room, 64, [](char c) { return c == '_' || c == '.' || c == '-'; });
}

bool valid_message_id(std::string_view id) {
  return charset_ok(id, 64, [](char c) { return c == '_' || c == '.' || c == ':' || c == '-'; });
}

bool valid_password(std::string_view password) {
  return password.size() >= 8 && password.size() <= 256;
}

bool valid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) < len) return false;
    for (std::size_t i = 1; i < len; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr std::array<std::uint32_t, 5> min_for_len{0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += len;
  }
  return true;
}

std::string fold_user_name(std::string_view name) {
  std::string folded(name);
  for (char& c : folded)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return folded;
}

std::string make_message_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(32, '0');
  auto a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) {
    id[i] = hex[(a >> (i * 4)) & 0xF];
    id[16 + i] = hex[(b >> (i * 4)) & 0xF];
  }
  return id;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace rtmc
