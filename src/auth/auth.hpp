#pragma once
// Passwords (Argon2id via libsodium) and session tokens (JWT HS256 via
// libjwt). Pure functions of their inputs; no I/O. Sessions themselves live in
// Redis as session:<jti> (see common/keys.hpp) with the token's lifetime.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rtmc::auth {

// Argon2id with libsodium's interactive limits. CPU- and memory-heavy
// (~tens of ms): call from a worker, never from an io thread.
std::string hash_password(std::string_view password);
bool verify_password(std::string_view stored_hash, std::string_view password);
// Spends the time of one verification, so an unknown user cannot be told
// from a wrong password by timing.
void burn_verify_time(std::string_view password);

struct Claims {
  std::string user;  // sub
  std::string jti;
  std::int64_t expires_at_ms = 0;  // exp * 1000
};

struct IssuedToken {
  std::string token;
  Claims claims;
};

class TokenService {
 public:
  static constexpr std::size_t kMinSecretBytes = 32;
  // Throws std::invalid_argument for a secret shorter than kMinSecretBytes.
  TokenService(std::string secret, std::chrono::seconds lifetime);
  IssuedToken issue(std::string_view user) const;
  // Checks the signature (HS256 only; "none" and other algorithms are
  // refused), the presence of sub/jti/exp, and expiry against `now_ms`.
  std::optional<Claims> verify(std::string_view token, std::int64_t now_ms) const;
  std::chrono::seconds lifetime() const { return lifetime_; }

 private:
  std::string secret_;
  std::chrono::seconds lifetime_;
};

}  // namespace rtmc::auth
