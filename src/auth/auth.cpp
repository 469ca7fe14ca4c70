#include "auth/auth.hpp"

#include <jwt.h>
#include <sodium.h>

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <memory>
#include <stdexcept>

namespace rtmc::auth {
namespace {

// libsodium must be initialised before its random generator and pwhash are
// used; sodium_init is idempotent and thread-safe, the static makes it once.
void ensure_sodium() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium initialisation failed");
}

struct JwtDeleter {
  void operator()(jwt_t* jwt) const { jwt_free(jwt); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;

struct FreeDeleter {
  void operator()(char* text) const { std::free(text); }  // libjwt 1.10 has no jwt_free_str
};

// Far larger than any token we issue; refusing early bounds the work an
// attacker can make the JSON and base64 decoders do.
constexpr std::size_t kMaxTokenBytes = 8192;

std::string random_hex_128() {
  unsigned char bytes[16];
  randombytes_buf(bytes, sizeof bytes);
  char hex[sizeof bytes * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  return std::string(hex, sizeof bytes * 2);
}

}  // namespace

std::string hash_password(std::string_view password) {
  ensure_sodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                            crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0)
    throw std::runtime_error("password hashing failed (out of memory)");
  return std::string(out);
}

bool verify_password(std::string_view stored_hash, std::string_view password) {
  ensure_sodium();
  // crypto_pwhash_str_verify reads a NUL-terminated string of bounded size.
  if (stored_hash.empty() || stored_hash.size() >= crypto_pwhash_STRBYTES) return false;
  const std::string hash(stored_hash);
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

void burn_verify_time(std::string_view password) {
  // Computed once with the same parameters as real hashes, so a verification
  // against it costs what a real one does. Immutable after initialisation.
  static const std::string dummy = hash_password("rtmc dummy password for timing");
  (void)verify_password(dummy, password);
}

TokenService::TokenService(std::string secret, std::chrono::seconds lifetime)
    : secret_(std::move(secret)), lifetime_(lifetime) {
  // RFC 7518 section 3.2: an HS256 key must be at least as long as the hash
  // output, 256 bits; a shorter one can be brute-forced from a single token.
  if (secret_.size() < kMinSecretBytes)
    throw std::invalid_argument("JWT secret must be at least " + std::to_string(kMinSecretBytes) +
                                " bytes (RFC 7518 section 3.2), got " + std::to_string(secret_.size()));
  if (secret_.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument("JWT secret too long");
  if (lifetime_.count() <= 0) throw std::invalid_argument("token lifetime must be positive");
}

IssuedToken TokenService::issue(std::string_view user) const {
  ensure_sodium();
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0) throw std::runtime_error("jwt_new failed");
  JwtPtr jwt(raw);

  const auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  const std::int64_t exp = now_s + lifetime_.count();
  Claims claims{std::string(user), random_hex_128(), exp * 1000};

  if (jwt_add_grant(jwt.get(), "sub", claims.user.c_str()) != 0 ||
      jwt_add_grant(jwt.get(), "jti", claims.jti.c_str()) != 0 ||
      jwt_add_grant_int(jwt.get(), "iat", static_cast<long>(now_s)) != 0 ||
      jwt_add_grant_int(jwt.get(), "exp", static_cast<long>(exp)) != 0)
    throw std::runtime_error("jwt_add_grant failed");
  if (jwt_set_alg(jwt.get(), JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret_.data()),
                  static_cast<int>(secret_.size())) != 0)
    throw std::runtime_error("jwt_set_alg failed");

  std::unique_ptr<char, FreeDeleter> encoded(jwt_encode_str(jwt.get()));
  if (!encoded) throw std::runtime_error("jwt_encode_str failed");
  return IssuedToken{std::string(encoded.get()), std::move(claims)};
}

std::optional<Claims> TokenService::verify(std::string_view token, std::int64_t now_ms) const {
  if (token.empty() || token.size() > kMaxTokenBytes) return std::nullopt;
  const std::string text(token);  // jwt_decode wants a C string
  if (text.find('\0') != std::string::npos) return std::nullopt;

  jwt_t* raw = nullptr;
  // libjwt 1.10 verifies with whatever algorithm the token's header names, so
  // an HS384/HS512 token made with our secret passes jwt_decode. It refuses
  // alg "none" when a key is given (auth_test checks both); the explicit
  // algorithm check keeps that from resting on library behaviour.
  if (jwt_decode(&raw, text.c_str(), reinterpret_cast<const unsigned char*>(secret_.data()),
                 static_cast<int>(secret_.size())) != 0)
    return std::nullopt;
  JwtPtr jwt(raw);
  if (jwt_get_alg(jwt.get()) != JWT_ALG_HS256) return std::nullopt;

  const char* sub = jwt_get_grant(jwt.get(), "sub");
  const char* jti = jwt_get_grant(jwt.get(), "jti");
  if (sub == nullptr || *sub == '\0' || jti == nullptr || *jti == '\0') return std::nullopt;

  errno = 0;
  const long exp = jwt_get_grant_int(jwt.get(), "exp");
  if (errno != 0 || exp <= 0 || exp > std::numeric_limits<std::int64_t>::max() / 1000) return std::nullopt;
  const std::int64_t expires_at_ms = static_cast<std::int64_t>(exp) * 1000;
  if (expires_at_ms <= now_ms) return std::nullopt;

  return Claims{sub, jti, expires_at_ms};
}

}  // namespace rtmc::auth
