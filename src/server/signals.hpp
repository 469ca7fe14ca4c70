#pragma once
// Stop on SIGINT/SIGTERM for a role's main():
//
//   rtmc::server::StopSignals signals;  // first, before any thread starts
//   ... build and start the role ...
//   int signal = signals.wait();        // blocks until SIGINT or SIGTERM
//   ... stop the role ...
//
// Threading: construct on the main thread before any other thread exists:
// the signals are blocked there and in every thread created afterwards, so
// only wait() receives them (no async-signal-safety concerns in handlers).
// SIGPIPE is ignored too: a write to a closed socket is an error code.

#include <csignal>

namespace rtmc::server {

class StopSignals {
 public:
  StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The signal received (SIGINT or SIGTERM).
  int wait();

 private:
  sigset_t set_{};
};

}  // namespace rtmc::server
