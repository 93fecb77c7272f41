#ifndef XENT_DETAIL_THREADS_HPP
#define XENT_DETAIL_THREADS_HPP

// How many threads one call uses, and the one loop that spreads work over them. Without OpenMP
// (_OPENMP undefined: the library was not compiled with -fopenmp) every call is serial.

#include <Eigen/Core>

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

}  // namespace xent::detail

#endif
