#ifndef XENT_DETAIL_ENGINE_THREADS_HPP
#define XENT_DETAIL_ENGINE_THREADS_HPP

// How many threads one call uses, and the loops that spread work over them. parallel_for (the
// cross-entropy kernels) uses OpenMP and is serial without it (_OPENMP undefined); fork_join (the
// linear cross-entropy) uses OpenMP too, and std::thread without it.

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

// fork_join: the linear cross-entropy's workers (static assignment: worker r gets items r, r + T,
// ..., so a given worker count always sums in the same order). An OpenMP team when OpenMP is on,
// std::threads otherwise.

/// Runs body(worker) for worker in [0, workers) and returns when all are done. The first exception
/// thrown by any worker is rethrown here (one escaping a std::thread or an OpenMP region would end
/// the program).
///
/// Under OpenMP the workers are a parallel region, so the Eigen GEMMs they call stay on their
/// thread (Eigen starts no team inside a team). The runtime may give fewer threads than asked
/// (a call from inside another parallel region gets one): each thread then runs every
/// team-size-th worker in turn, and the results are the same as with a full team.
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
#ifdef _OPENMP
#pragma omp parallel num_threads(workers)
  {
    const int team = omp_get_num_threads();
    for (int w = omp_get_thread_num(); w < workers; w += team) guarded(w);
  }
#else
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
#endif
  if (failure) std::rethrow_exception(failure);
}

/// For the lifetime of this object, a serial call keeps Eigen's GEMMs on the calling thread: under
/// OpenMP Eigen would start a team of omp_get_max_threads() threads for every large product. It
/// sets the calling thread's OpenMP thread count to 1 and restores it (an explicit
/// Eigen::setNbThreads(n) still wins: Eigen reads it first).
class serial_gemm_scope {
 public:
  explicit serial_gemm_scope(bool serial) {
#ifdef _OPENMP
    if (serial) {
      saved_ = omp_get_max_threads();
      omp_set_num_threads(1);
    }
#else
    (void)serial;
#endif
  }
  ~serial_gemm_scope() {
#ifdef _OPENMP
    if (saved_ > 0) omp_set_num_threads(saved_);
#endif
  }
  serial_gemm_scope(const serial_gemm_scope&) = delete;
  serial_gemm_scope& operator=(const serial_gemm_scope&) = delete;

 private:
  int saved_ = 0;
};

}  // namespace xent::detail

#endif
