#include "store/postgres.hpp"
