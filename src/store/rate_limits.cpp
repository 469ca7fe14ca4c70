#include "store/rate_limits.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "common/keys.hpp"
#include "common/names.hpp"
#include "store/unavailable.hpp"

namespace rtmc::store {

namespace {

// GCRA over one key, in microseconds of the server's clock. The key holds
// `tat`, the time at which the bucket is full again (absent: full now).
// Spent tokens = (tat - now) / interval. A request of `cost` tokens fits when
// the new tat is at most burst * interval ahead of now.
//   ARGV: burst, interval_us, cost, mode ("take" | "peek" | "charge" | "refund")
//   returns {allowed 0|1, retry_after_us, spent_us (tat - now after the call)}
// string.format('%.0f'): Lua 5.1's tostring keeps only 14 digits.
const redis::Script kBucketScript(R"lua(
local burst = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local capacity = burst * interval
local after = tat + cost * interval
local fits = after - now <= capacity
local retry = 0
if not fits then retry = after - now - capacity end
if mode == 'peek' or (mode == 'take' and not fits) then
  return {fits and 1 or 0, retry, tat - now}
end
if mode == 'refund' then
  tat = math.max(now, tat - cost * interval)
  if tat == now then
    redis.call('DEL', KEYS[1])
    return {1, 0, 0}
  end
elseif mode == 'take' then
  tat = after
else
  tat = math.min(after, now + capacity)
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {fits and 1 or 0, retry, tat - now}
)lua");

Rate make_rate(double per_second, std::uint32_t burst) {
  if (!(per_second > 0) || burst == 0) return Rate{};
  const double interval_us = std::max(1.0, std::round(1e6 / per_second));
  return Rate{burst, std::chrono::microseconds(static_cast<std::int64_t>(interval_us))};
}

Verdict to_verdict(const redis::Reply& reply, const Rate& rate) {
  if (reply.is_error() && redis::is_refusal(reply.str)) throw Unavailable("redis refused: " + reply.str);
  if (reply.is_error()) throw std::runtime_error("rate limit script: " + reply.str);
  if (reply.type != redis::Reply::Type::array || reply.elements.size() != 3)
    throw std::runtime_error("rate limit script: unexpected reply");
  Verdict verdict;
  verdict.allowed = reply.elements[0].integer == 1;
  verdict.retry_after = std::chrono::microseconds(std::max<long long>(reply.elements[1].integer, 0));
  verdict.used = static_cast<double>(std::max<long long>(reply.elements[2].integer, 0)) /
                 static_cast<double>(rate.interval.count());
  return verdict;
}

}  // namespace

Rate Rate::per_second(double per_second, std::uint32_t burst) {
  return make_rate(per_second, burst);
}
Rate Rate::per_minute(double per_minute, std::uint32_t burst) {
  return make_rate(per_minute / 60.0, burst);
}

Rate messages_rate(double per_second, std::uint32_t burst) {
  if (burst == 0) burst = static_cast<std::uint32_t>(std::ceil(per_second));
  return Rate::per_second(per_second, burst);
}

Bucket messages_bucket(std::string_view user, Rate rate) {
  return Bucket{"messages:" + fold_user_name(user), rate};
}

std::int64_t retry_after_seconds(std::chrono::microseconds retry_after) {
  const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry_after).count();
  return std::max<std::int64_t>(seconds, 1);
}

boost::asio::awaitable<Verdict> RateLimiter::take(Bucket bucket, std::uint32_t cost) {
  std::vector<Bucket> one;
  one.push_back(std::move(bucket));
  auto verdicts = co_await apply(std::move(one), cost, "take");
  co_return verdicts.front();
}

boost::asio::awaitable<std::vector<Verdict>> RateLimiter::peek(std::vector<Bucket> buckets) {
  co_return co_await apply(std::move(buckets), 1, "peek");
}

boost::asio::awaitable<std::vector<Verdict>> RateLimiter::charge(std::vector<Bucket> buckets,
                                                                 std::uint32_t cost) {
  co_return co_await apply(std::move(buckets), cost, "charge");
}

boost::asio::awaitable<std::vector<Verdict>> RateLimiter::refund(std::vector<Bucket> buckets,
                                                                 std::uint32_t cost) {
  co_return co_await apply(std::move(buckets), cost, "refund");
}

boost::asio::awaitable<std::vector<Verdict>> RateLimiter::apply(std::vector<Bucket> buckets,
                                                                std::uint32_t cost, const char* mode) {
  std::vector<Verdict> verdicts(buckets.size());
  std::vector<redis::Connection::EvalCall> calls;
  std::vector<std::size_t> limited;  // index into buckets of each call
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const Rate& rate = buckets[i].rate;
    if (!rate.limited()) continue;
    std::vector<std::string> keys{keys::rate_limit(buckets[i].name)};
    std::vector<std::string> args{std::to_string(rate.burst), std::to_string(rate.interval.count()),
                                  std::to_string(cost), mode};
    calls.push_back({std::move(keys), std::move(args)});
    limited.push_back(i);
  }
  if (calls.empty()) co_return verdicts;

  // The job may still run after a caller that gave up at its deadline is
  // gone, so it owns what it reads and writes.
  auto replies = std::make_shared<std::vector<redis::Reply>>();
  auto job = [replies, calls = std::move(calls)](redis::Connection& connection) {
    *replies = connection.eval_pipeline(kBucketScript, calls);
  };
  try {
    co_await redis_.run(std::move(job));
  } catch (const redis::RedisError& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  } catch (const WorkerUnavailable& error) {
    throw Unavailable(std::string("redis: ") + error.what());
  }
  if (replies->size() != limited.size()) throw std::runtime_error("rate limit script: reply count mismatch");
  for (std::size_t j = 0; j < limited.size(); ++j)
    verdicts[limited[j]] = to_verdict((*replies)[j], buckets[limited[j]].rate);
  co_return verdicts;
}

}  // namespace rtmc::store
