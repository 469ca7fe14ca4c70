#pragma once
// Registered users in PostgreSQL: users(name, password_hash) with a unique
// index on lower(name) (migrations/), so names are unique regardless of case
// and a lookup by any case is an index lookup.
//
// Thread-safety: every method may be called concurrently from any io thread
// (pg::Pool is thread-safe). Throws store::Unavailable when PostgreSQL cannot
// answer now (pg::PgError::unavailable()); other database errors throw
// pg::PgError.

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>

#include "store/postgres.hpp"

namespace rtmc::store {

struct User {
  std::string name;  // as registered (original case)
  std::string password_hash;
};

class Users {
 public:
  explicit Users(pg::Pool& pool) : pool_(pool) {}

  // false when the name is taken regardless of case.
  boost::asio::awaitable<bool> create(std::string name, std::string password_hash);
  // Case-insensitive lookup.
  boost::asio::awaitable<std::optional<User>> find(std::string name);

 private:
  pg::Pool& pool_;
};

}  // namespace rtmc::store
