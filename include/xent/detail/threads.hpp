#ifndef XENT_DETAIL_THREADS_HPP
#define XENT_DETAIL_THREADS_HPP

// A fork-join over a fixed number of workers for the kernels that take `num_threads`. Work is
// assigned statically (worker r gets items r, r + T, ...) so that a given thread count always
// produces the same sums in the same order: results repeat bit for bit from run to run.

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace xent::detail {

/// Runs body(worker) for worker in [0, workers), on the calling thread and workers - 1 others, and
/// returns when all are done. The first exception thrown by any worker is rethrown here (a
/// std::thread that lets one escape would call std::terminate).
template <class Body>
void fork_join(int workers, Body&& body) {
  if (workers <= 1) {
    body(0);
    return;
  }
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto guarded = [&](int worker) {
    try {
      body(worker);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> others;
  others.reserve(static_cast<std::size_t>(workers - 1));
  try {
    for (int r = 1; r < workers; ++r) others.emplace_back(guarded, r);
  } catch (...) {
    // Could not start a thread: finish with the ones that did start, then report it.
    guarded(0);
    for (std::thread& t : others) t.join();
    throw;
  }
  guarded(0);
  for (std::thread& t : others) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace xent::detail

#endif
