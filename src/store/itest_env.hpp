#pragma once
// For integration tests only: what every *_itest reads from its environment
// (the RTMC_TEST_* addresses scripts/test.sh exports), and names no other
// test or run on the same services can have picked.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

namespace rtmc::itest {

// The variable's value; nullopt when it is unset or empty.
inline std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// `prefix` followed by up to twelve random digits.
inline std::string unique(const std::string& prefix) {
  std::random_device device;
  std::uniform_int_distribution<std::uint64_t> digits;
  return prefix + std::to_string(digits(device) % 1000000000000ULL);
}

}  // namespace rtmc::itest
