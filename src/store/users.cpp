#include "store/users.hpp"

#include "store/unavailable.hpp"

namespace rtmc::store {

namespace {
constexpr const char* kUniqueViolation = "23505";
}

boost::asio::awaitable<bool> Users::create(std::string name, std::string password_hash) {
  // co_await is not allowed in a catch block, hence the flag.
  bool taken = false;
  // Built outside the co_await: GCC 12 miscompiles braced lists in co_await
  // expressions ("array used as initializer").
  std::vector<pg::Param> params{std::move(name), std::move(password_hash)};
  try {
    co_await pool_.exec("INSERT INTO users (name, password_hash) VALUES ($1, $2)", std::move(params));
  } catch (const pg::PgError& error) {
    if (error.sqlstate() == kUniqueViolation)
      taken = true;
    else if (error.unavailable())
      throw Unavailable(error.what());
    else
      throw;
  }
  co_return !taken;
}

boost::asio::awaitable<std::optional<User>> Users::find(std::string name) {
  pg::Result result;
  std::vector<pg::Param> params{std::move(name)};
  try {
    // lower(name) matches the unique index, so this is an index lookup.
    result = co_await pool_.exec("SELECT name, password_hash FROM users WHERE lower(name) = lower($1)",
                                 std::move(params));
  } catch (const pg::PgError& error) {
    if (error.unavailable()) throw Unavailable(error.what());
    throw;
  }
  if (result.rows.empty() || result.rows.front().size() < 2 || !result.rows.front()[0] ||
      !result.rows.front()[1])
    co_return std::nullopt;
  co_return User{*result.rows.front()[0], *result.rows.front()[1]};
}

}  // namespace rtmc::store
