// A parallel loop on XLA's CPU thread pool, for cellax's CPU kernels (an FFI handler binds
// .Ctx<ffi::ThreadPool>() to get the pool).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace cellax {

// f(i) for i in [0, n): the calling thread and up to num_threads - 1 tasks on XLA's CPU thread pool
// take indices from one counter. The caller works too, so nothing waits on a pool that runs the tasks
// late, inline or never; a task that starts after the last index was taken returns untouched.
template <class F>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t n, const F& f) {
  struct Counter {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto counter = std::make_shared<Counter>();
  auto work = [counter, n, &f] {
    int64_t finished = 0;
    for (int64_t i; (i = counter->next.fetch_add(1)) < n; ++finished) f(i);
    if (finished == 0) return;
    std::lock_guard<std::mutex> lock(counter->mu);
    counter->done += finished;
    if (counter->done == n) counter->cv.notify_all();
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(counter->mu);
  counter->cv.wait(lock, [&] { return counter->done == n; });
}

}  // namespace cellax
