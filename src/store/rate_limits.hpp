#pragma once
// Rate limits as token buckets kept in Redis, so every process of a role
// (and every role: the api's logins and publishes, the gateway's sends)
// shares one count per subject. A bucket holds up to `burst` tokens and
// gains one every `interval`; an absent key is a full bucket, and a key
// expires once its bucket is full again, so idle subjects cost no memory.
//
// One Lua script (rate_limits.cpp) does the arithmetic atomically on the
// Redis server's clock (GCRA: the key holds the time at which the bucket is
// full again), so process clocks never matter.
//
// Thread-safety: every method may be called concurrently from any io thread.
// Throws store::Unavailable when Redis cannot answer.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/redis.hpp"

namespace rtmc::store {

struct Rate {
  std::uint32_t burst = 0;                // 0 = no limit
  std::chrono::microseconds interval{0};  // one token back per interval

  bool limited() const { return burst > 0 && interval.count() > 0; }
  // `per_second` tokens a second (fractions allowed), at most `burst` held;
  // a rate <= 0 or a burst of 0 is no limit.
  static Rate per_second(double per_second, std::uint32_t burst);
  static Rate per_minute(double per_minute, std::uint32_t burst);
};

struct Bucket {
  std::string name;  // kind and subject, e.g. "register:203.0.113.7" (keys::rate_limit)
  Rate rate;
};

struct Verdict {
  bool allowed = true;
  // When refused: the wait until the request would be allowed.
  std::chrono::microseconds retry_after{0};
  // Tokens spent and not yet refilled, after the call (0..burst).
  double used = 0;
};

// The bucket of messages `user` publishes, over REST and TCP alike (one
// budget per user whatever the entry point).
Bucket messages_bucket(std::string_view user, Rate rate);
// The rate of that bucket from --publish-rate / --publish-burst, which api
// and gateway share: `burst` 0 means one second's worth (at least 1 token).
Rate messages_rate(double per_second, std::uint32_t burst);

// Whole seconds for a Retry-After header: rounded up, at least 1.
std::int64_t retry_after_seconds(std::chrono::microseconds retry_after);

class RateLimiter {
 public:
  explicit RateLimiter(redis::Client& redis) : redis_(redis) {}

  // Spends `cost` tokens if the bucket has them; otherwise refuses and
  // spends nothing. A bucket without a limit always allows, without Redis.
  boost::asio::awaitable<Verdict> take(Bucket bucket, std::uint32_t cost = 1);
  // For each bucket, whether one more token is there; spends nothing.
  boost::asio::awaitable<std::vector<Verdict>> peek(std::vector<Bucket> buckets);
  // Spends `cost` tokens of each bucket, down to empty, never refusing: for
  // events counted after the fact (a failed login). `allowed` says whether
  // the tokens were there.
  boost::asio::awaitable<std::vector<Verdict>> charge(std::vector<Bucket> buckets, std::uint32_t cost = 1);
  // Gives back `cost` tokens of each bucket (never above full): undoes a
  // charge made before the outcome was known (a login that succeeded).
  boost::asio::awaitable<std::vector<Verdict>> refund(std::vector<Bucket> buckets, std::uint32_t cost = 1);

 private:
  // One round trip for all buckets (pipelined script calls).
  boost::asio::awaitable<std::vector<Verdict>> apply(std::vector<Bucket> buckets, std::uint32_t cost,
                                                     const char* mode);
  redis::Client& redis_;
};

}  // namespace rtmc::store
