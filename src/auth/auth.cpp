#include "auth/auth.hpp"
