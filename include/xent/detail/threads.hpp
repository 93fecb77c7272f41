#ifndef XENT_DETAIL_THREADS_HPP
#define XENT_DETAIL_THREADS_HPP

// How many threads one call uses, and the loops that spread work over them. parallel_for (the
// cross-entropy kernels) uses OpenMP and is serial without it (_OPENMP undefined); fork_join (the
// linear cross-entropy) uses std::thread.

#include <Eigen/Core>

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace xent::detail {

/// Below this many logits a call stays on the calling thread: waking a team costs microseconds.
inline constexpr Eigen::Index min_logits_per_thread = 1 << 15;

/// requested: the options' num_threads (0 = OpenMP's default); work: the logits one call reads.
inline int thread_count(int requested, Eigen::Index work) {
#ifdef _OPENMP
  const int wanted = requested > 0 ? requested : omp_get_max_threads();
  const Eigen::Index useful = work / min_logits_per_thread;
  if (useful < 2 || wanted < 2) return 1;
  return static_cast<int>(useful < wanted ? useful : wanted);
#else
  (void)requested;
  (void)work;
  return 1;
#endif
}

/// f(i) for i in [0, n), statically split over `threads` threads (each gets one contiguous range).
/// f must not throw: every check happens before a kernel starts.
template <class F>
void parallel_for(Eigen::Index n, int threads, F&& f) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (Eigen::Index i = 0; i < n; ++i) f(i);
    return;
  }
#else
  (void)threads;
#endif
  for (Eigen::Index i = 0; i < n; ++i) f(i);
}

// fork_join: the linear cross-entropy's workers (std::thread, static assignment: worker r gets items
// r, r + T, ...), which also run where OpenMP is absent.

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
