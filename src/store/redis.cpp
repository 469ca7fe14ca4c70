#include "store/redis.hpp"
