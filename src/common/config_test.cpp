#include "common/config.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace rtmc {
namespace {

TEST(RedisConfigParse, PlainHostPortHasNoCredentials) {
  auto config = RedisConfig::parse("10.1.2.3:6390");
  EXPECT_EQ(config.address.host, "10.1.2.3");
  EXPECT_EQ(config.address.port, 6390);
  EXPECT_EQ(config.user, "");
  EXPECT_EQ(config.password, "");
  EXPECT_EQ(config.timeout, RedisConfig{}.timeout);
}

TEST(RedisConfigParse, PortOnlyKeepsTheLoopbackHost) {
  auto config = RedisConfig::parse(":7000");
  EXPECT_EQ(config.address.host, "127.0.0.1");
  EXPECT_EQ(config.address.port, 7000);
}

TEST(RedisConfigParse, UrlWithUserAndPassword) {
  auto config = RedisConfig::parse("redis://rtmc:s3cret@127.0.0.1:6380");
  EXPECT_EQ(config.address.host, "127.0.0.1");
  EXPECT_EQ(config.address.port, 6380);
  EXPECT_EQ(config.user, "rtmc");
  EXPECT_EQ(config.password, "s3cret");
}

TEST(RedisConfigParse, UrlWithPasswordOnly) {
  auto colon_form = RedisConfig::parse("redis://:pw@localhost:1234/");
  EXPECT_EQ(colon_form.user, "");
  EXPECT_EQ(colon_form.password, "pw");
  EXPECT_EQ(colon_form.address.host, "localhost");
  EXPECT_EQ(colon_form.address.port, 1234);
  // As redis-cli -u reads it: userinfo without a colon is the password.
  auto bare = RedisConfig::parse("redis://pw@localhost:1234");
  EXPECT_EQ(bare.user, "");
  EXPECT_EQ(bare.password, "pw");
}

TEST(RedisConfigParse, UrlWithoutCredentialsOrPort) {
  auto config = RedisConfig::parse("redis://cache.internal");
  EXPECT_EQ(config.address.host, "cache.internal");
  EXPECT_EQ(config.address.port, 6379);
  EXPECT_EQ(config.password, "");
  EXPECT_EQ(RedisConfig::parse("redis://127.0.0.1:6380/0").address.port, 6380);
}

TEST(RedisConfigParse, PercentEncodedCredentialsAreDecoded) {
  auto config = RedisConfig::parse("redis://us%3Aer:p%40ss%2Fw%3a%25rd@127.0.0.1:6380");
  EXPECT_EQ(config.user, "us:er");
  EXPECT_EQ(config.password, "p@ss/w:%rd");
}

TEST(RedisConfigParse, RawAtAndSlashInPasswordStillParse) {
  auto config = RedisConfig::parse("redis://u:a/b@c@127.0.0.1:6380");
  EXPECT_EQ(config.user, "u");
  EXPECT_EQ(config.password, "a/b@c");
  EXPECT_EQ(config.address.port, 6380);
}

TEST(RedisConfigParse, RefusesWhatItCannotHonour) {
  for (const char* text : {"rediss://h:6380", "unix:///tmp/redis.sock", "redis://h:6380/1", "redis://:6380",
                           "redis://", "redis://u:@h:6380", "redis://h:port", "redis://h:6380?db=1",
                           "user:pw@h:6380", "redis://u:p%zz@h:1", "h"}) {
    EXPECT_THROW(RedisConfig::parse(text), std::invalid_argument) << text;
  }
}

TEST(RedisConfigParse, ErrorsNeverQuoteThePassword) {
  for (const char* text : {"redis://u:topsecret@h:notaport", "redis://u:topsecret%zz@h:1",
                           "redis://u:topsecret@h:1/5", "redis://u:topsecret@:1"}) {
    try {
      RedisConfig::parse(text);
      ADD_FAILURE() << "no error for " << text;
    } catch (const std::invalid_argument& error) {
      EXPECT_EQ(std::string(error.what()).find("topsecret"), std::string::npos) << error.what();
    }
  }
}

TEST(RedisConfigParse, DescribeShowsUserButNotPassword) {
  auto config = RedisConfig::parse("redis://rtmc:topsecret@127.0.0.1:6380");
  EXPECT_EQ(config.describe(), "rtmc@127.0.0.1:6380");
  EXPECT_EQ(RedisConfig::parse("127.0.0.1:6380").describe(), "127.0.0.1:6380");
}

// CommonOptions reads RTMC_* variables. The test runner's own (scripts/test.sh
// exports RTMC_REDIS etc.) are put aside for each test and restored after.
class CommonOptionsTest : public ::testing::Test {
 protected:
  static constexpr const char* kVariables[] = {"RTMC_REDIS",
                                               "RTMC_REDIS_FILE",
                                               "RTMC_AMQP",
                                               "RTMC_AMQP_FILE",
                                               "RTMC_PG",
                                               "RTMC_PG_FILE",
                                               "RTMC_JWT_SECRET",
                                               "RTMC_JWT_SECRET_FILE",
                                               "RTMC_STATUS_CACHE_TTL_S"};

  void SetUp() override {
    for (const char* name : kVariables) {
      if (const char* value = std::getenv(name)) saved_.emplace_back(name, value);
      ::unsetenv(name);
    }
  }

  void TearDown() override {
    for (const char* name : kVariables) ::unsetenv(name);
    for (const auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
    std::filesystem::remove_all(dir_);
  }

  std::string write_file(const std::string& name, const std::string& contents) {
    std::filesystem::create_directories(dir_);
    auto path = dir_ / name;
    std::ofstream(path) << contents;
    return path.string();
  }

  // Parses `args` (without the program name) and finishes.
  CommonOptions parse(const std::string& args) {
    CommonOptions options;
    CLI::App app;
    options.add_to(app);
    app.parse(args, false);
    options.finish();
    return options;
  }

  std::vector<std::pair<std::string, std::string>> saved_;
  const std::string secret_ = std::string(40, 'k');
  std::filesystem::path dir_ =
      std::filesystem::temp_directory_path() / ("rtmc-config-test-" + std::to_string(::getpid()));
};

TEST_F(CommonOptionsTest, DefaultsPointAtTheLocalStackWithoutCredentials) {
  auto options = parse("--jwt-secret " + secret_);
  EXPECT_EQ(options.redis.address.str(), "127.0.0.1:6380");
  EXPECT_EQ(options.redis.password, "");
}

TEST_F(CommonOptionsTest, StatusCacheTtlFromFlagOrEnvironment) {
  EXPECT_EQ(parse("--jwt-secret " + secret_).presence.status_cache_ttl, std::chrono::seconds(300));
  EXPECT_EQ(parse("--jwt-secret " + secret_ + " --status-cache-ttl-s 42").presence.status_cache_ttl,
            std::chrono::seconds(42));
  ::setenv("RTMC_STATUS_CACHE_TTL_S", "7", 1);
  EXPECT_EQ(parse("--jwt-secret " + secret_).presence.status_cache_ttl, std::chrono::seconds(7));
  EXPECT_THROW(parse("--jwt-secret " + secret_ + " --status-cache-ttl-s 0"), CLI::ValidationError);
}

TEST_F(CommonOptionsTest, RedisUrlFromTheEnvironment) {
  ::setenv("RTMC_REDIS", "redis://app:pw1@127.0.0.1:6395", 1);
  auto options = parse("--jwt-secret " + secret_);
  EXPECT_EQ(options.redis.address.str(), "127.0.0.1:6395");
  EXPECT_EQ(options.redis.user, "app");
  EXPECT_EQ(options.redis.password, "pw1");
}

TEST_F(CommonOptionsTest, EverySecretFromFilesNamedInTheEnvironment) {
  ::setenv("RTMC_REDIS_FILE", write_file("redis", "redis://app:pw2@127.0.0.1:6395\n").c_str(), 1);
  ::setenv("RTMC_AMQP_FILE", write_file("amqp", "amqp://app:pw3@127.0.0.1:5688/\n").c_str(), 1);
  ::setenv("RTMC_PG_FILE", write_file("pg", "host=127.0.0.1 port=5448 password=pw4\n").c_str(), 1);
  ::setenv("RTMC_JWT_SECRET_FILE", write_file("jwt", secret_ + "\r\n").c_str(), 1);
  auto options = parse("");
  EXPECT_EQ(options.redis.user, "app");
  EXPECT_EQ(options.redis.password, "pw2");
  EXPECT_EQ(options.redis.address.port, 6395);
  EXPECT_EQ(options.amqp.url, "amqp://app:pw3@127.0.0.1:5688/");
  EXPECT_EQ(options.pg.conninfo, "host=127.0.0.1 port=5448 password=pw4");
  EXPECT_EQ(options.auth.jwt_secret, secret_);
}

TEST_F(CommonOptionsTest, FileFlagsWorkLikeTheirVariables) {
  auto redis = write_file("redis", "127.0.0.1:6001");
  auto options = parse("--jwt-secret " + secret_ + " --redis-file " + redis);
  EXPECT_EQ(options.redis.address.port, 6001);
}

TEST_F(CommonOptionsTest, ValueAndFileTogetherAreRefused) {
  ::setenv("RTMC_REDIS", "redis://a:b@127.0.0.1:1", 1);
  ::setenv("RTMC_REDIS_FILE", write_file("redis", "redis://a:c@127.0.0.1:1").c_str(), 1);
  EXPECT_THROW(parse("--jwt-secret " + secret_), std::runtime_error);
  ::unsetenv("RTMC_REDIS");
  ::setenv("RTMC_PG_FILE", write_file("pg", "host=x").c_str(), 1);
  EXPECT_THROW(parse("--jwt-secret " + secret_ + " --pg host=y"), std::runtime_error);
}

TEST_F(CommonOptionsTest, MissingOrEmptyFileIsAnError) {
  ::setenv("RTMC_AMQP_FILE", (dir_ / "absent").c_str(), 1);
  EXPECT_THROW(parse("--jwt-secret " + secret_), std::runtime_error);
  ::setenv("RTMC_AMQP_FILE", write_file("empty", "\n").c_str(), 1);
  EXPECT_THROW(parse("--jwt-secret " + secret_), std::runtime_error);
}

TEST_F(CommonOptionsTest, BadRedisUrlNamesTheOptionNotThePassword) {
  ::setenv("RTMC_REDIS", "redis://u:topsecret@h:nope", 1);
  try {
    parse("--jwt-secret " + secret_);
    FAIL() << "no error";
  } catch (const std::runtime_error& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("--redis"), std::string::npos) << message;
    EXPECT_EQ(message.find("topsecret"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace rtmc
