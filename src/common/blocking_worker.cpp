#include "common/blocking_worker.hpp"

#include <pthread.h>

#include <vector>

namespace rtmc {

BlockingWorker::BlockingWorker(std::string name, WorkerLimits limits)
    : name_(std::move(name)), limits_(limits) {
  thread_ = std::thread([this] { loop(); });
  pthread_setname_np(thread_.native_handle(), name_.substr(0, 15).c_str());
}

BlockingWorker::~BlockingWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool BlockingWorker::post(std::function<void()> job) {
  return push(Job{[job = std::move(job)]() mutable { return std::move(job); }, false});
}

bool BlockingWorker::push(Job job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return true;
    if (limits_.max_queue > 0 && jobs_.size() >= limits_.max_queue) return false;
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void BlockingWorker::loop() {
  std::vector<Job> round;
  std::vector<std::function<void()>> second_stages;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      // Pending jobs are finished before stopping so no awaiting coroutine is
      // left without an answer.
      if (jobs_.empty()) return;
      const bool staged = jobs_.front().staged;
      do {
        round.push_back(std::move(jobs_.front()));
        jobs_.pop_front();
      } while (staged && !jobs_.empty() && jobs_.front().staged);
    }
    if (!round.front().staged) {
      if (auto rest = round.front().start()) rest();
    } else {
      staged_rounds_.fetch_add(1, std::memory_order_relaxed);
      for (auto& job : round)
        if (auto rest = job.start()) second_stages.push_back(std::move(rest));
      for (auto& rest : second_stages) rest();
      second_stages.clear();
    }
    round.clear();
  }
}

}  // namespace rtmc
