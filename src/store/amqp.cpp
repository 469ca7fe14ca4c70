#include "store/amqp.hpp"
