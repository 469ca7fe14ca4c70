#pragma once
// Validation rules shared by the api, the gateway and the sequencer, so a
// name accepted at one edge is accepted everywhere.

#include <cstdint>
#include <string>
#include <string_view>

namespace rtmc {

// 1-32 of [A-Za-z0-9_.-], starting with a letter or digit.
bool valid_user_name(std::string_view name);
// 1-64 of [A-Za-z0-9_.-].
bool valid_room_name(std::string_view room);
// 1-64 of [A-Za-z0-9_.:-].
bool valid_message_id(std::string_view id);
// 8-256 bytes.
bool valid_password(std::string_view password);
// Valid UTF-8 (no overlongs, no surrogates).
bool valid_utf8(std::string_view text);

// User names are unique regardless of case; this is the canonical key.
std::string fold_user_name(std::string_view name);

// A fresh random message id (hex), for sends that carry none.
std::string make_message_id();

// Milliseconds since the Unix epoch.
std::int64_t now_ms();

}  // namespace rtmc
