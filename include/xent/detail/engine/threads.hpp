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

/// The most OS threads one call starts: the processors this process may use. A num_threads of
/// thousands asks for a team the machine cannot run; the work is the same on fewer threads.
inline int hardware_threads() {
#ifdef _OPENMP
  const int procs = omp_get_num_procs();
#else
  const int procs = static_cast<int>(std::thread::hardware_concurrency());
#endif
  return procs > 0 ? procs : 1;
}

/// requested: the options' num_threads (0 = OpenMP's default); work: the logits one call reads.
/// The results of the sweep and elementwise drivers do not depend on it (their blocks are fixed).
inline int thread_count(int requested, Eigen::Index work) {
#ifdef _OPENMP
  int wanted = requested > 0 ? requested : omp_get_max_threads();
  wanted = wanted < hardware_threads() ? wanted : hardware_threads();
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
  // At most one OS thread per processor; each runs every team-th worker, so the workers (and the
  // order their results are combined in) are the same however many threads run them.
  const int team_size = workers < hardware_threads() ? workers : hardware_threads();
#ifdef _OPENMP
#pragma omp parallel num_threads(team_size)
  {
    const int team = omp_get_num_threads();
    for (int w = omp_get_thread_num(); w < workers; w += team) guarded(w);
  }
#else
  auto run_share = [&](int first) {
    for (int w = first; w < workers; w += team_size) guarded(w);
  };
  std::vector<std::thread> others;
  others.reserve(static_cast<std::size_t>(team_size - 1));
  try {
    for (int r = 1; r < team_size; ++r) others.emplace_back(run_share, r);
  } catch (...) {
    // Could not start a thread: finish with the ones that did start, then report it.
    run_share(0);
    for (std::thread& t : others) t.join();
    throw;
  }
  run_share(0);
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
  [[maybe_unused]] int saved_ = 0;  // unused without OpenMP
};

}  // namespace xent::detail

#endif
