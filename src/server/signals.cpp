#include "server/signals.hpp"

#include <pthread.h>

namespace rtmc::server {

StopSignals::StopSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int StopSignals::wait() {
  int received = 0;
  sigwait(&set_, &received);  // fails only for an invalid set, and ours is valid
  return received;
}

}  // namespace rtmc::server
