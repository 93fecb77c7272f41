// What a consumer's threads are made of: built by the consumer.cxx20_serial projects (xent::xent or
// xent.pc alone, -std=c++20, XENT_CONSUMER_OPENMP=0) and consumer.find_package_openmp
// (xent::openmp or xent-openmp.pc, XENT_CONSUMER_OPENMP=1). Exits non-zero on any mismatch.
//
// The same cross_entropy call is asked for 2 threads in both; whether the process then has more
// than one thread (Linux: /proc/self/task) says whether xent really spread it over an OpenMP team
// (the runtime keeps its pool threads alive after the region), or stayed serial as it must without
// OpenMP. Either way the loss must be the thread-count-independent one, and match a plain
// double-precision sum.
#include <xent/xent.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iterator>

#if !defined(XENT_CONSUMER_OPENMP) || !defined(XENT_CONSUMER_CPLUSPLUS)
#error "build with -DXENT_CONSUMER_OPENMP=0|1 -DXENT_CONSUMER_CPLUSPLUS=<the __cplusplus the consumer chose>"
#endif

// xent requires C++17 but must not pick the standard: a C++20 consumer stays C++20 (an -std=c++17
// from xent.pc placed after the consumer's -std=c++20 would silently lower it).
static_assert(__cplusplus >= XENT_CONSUMER_CPLUSPLUS, "xent's usage requirements lowered the consumer's C++ standard");

#if XENT_CONSUMER_OPENMP && !defined(_OPENMP)
#error "linked xent's OpenMP target, yet _OPENMP is undefined: the OpenMP flag did not reach the consumer"
#elif !XENT_CONSUMER_OPENMP && defined(_OPENMP)
#error "_OPENMP is defined in a consumer that asked for no threads: xent forced -fopenmp on it"
#endif

#if __cplusplus >= 202002L
#include <span>
#endif

namespace {

long thread_count() {
#ifdef __linux__
  std::error_code ec;
  const std::filesystem::directory_iterator tasks("/proc/self/task", ec);
  return ec ? -1 : long(std::distance(tasks, std::filesystem::directory_iterator()));
#else
  return -1;  // unknown: the thread check is skipped
#endif
}

}  // namespace

int main() {
  int failures = 0;
  // 64 x 2048 = 131072 logits: 4 x the 32768 per thread below which a call stays serial
  // (docs/fused.md), so 2 threads are worth it.
  const Eigen::Index C = 64, N = 2048;
  Eigen::MatrixXf logits(C, N);
  Eigen::VectorXi targets(N);
  for (Eigen::Index j = 0; j < N; ++j) {
    for (Eigen::Index k = 0; k < C; ++k) logits(k, j) = float(std::sin(0.37 * double(k) + 0.11 * double(j)) * 3);
    targets(j) = int((7 * j) % C);
  }

  // The mean of -log softmax(x)[t] in double, straight from the definition.
  double sum = 0;
  for (Eigen::Index j = 0; j < N; ++j) {
    double m = logits(0, j);
    for (Eigen::Index k = 1; k < C; ++k) m = std::fmax(m, double(logits(k, j)));
    double s = 0;
    for (Eigen::Index k = 0; k < C; ++k) s += std::exp(double(logits(k, j)) - m);
    sum += m + std::log(s) - double(logits(targets(j), j));
  }
  const double reference = sum / double(N);

  const long before = thread_count();
  xent::cross_entropy_options opts;
  opts.num_threads = 2;
  const float threaded = xent::cross_entropy(logits, targets, opts).value();
  const long after = thread_count();
  opts.num_threads = 1;
  const float serial = xent::cross_entropy(logits, targets, opts).value();

#if __cplusplus >= 202002L
  // A C++20 consumer uses its own standard library alongside xent's headers.
  const std::span<const float> first_sample(logits.data(), std::size_t(C));
  const float lse0 = xent::logsumexp(Eigen::Map<const Eigen::VectorXf>(first_sample.data(), C))(0);
  double s0 = 0;
  for (const float x : first_sample) s0 += std::exp(double(x));
  const bool lse_ok = std::abs(double(lse0) - std::log(s0)) <= 1e-5;
  std::printf("%s: C++20 span of sample 0: logsumexp %.9g, expected %.9g\n", lse_ok ? "ok" : "FAIL", double(lse0), std::log(s0));
  failures += lse_ok ? 0 : 1;
#endif

  const bool value_ok = std::abs(double(threaded) - reference) <= 1e-5 * reference;
  std::printf("%s: cross_entropy %.9g, double-precision reference %.9g\n", value_ok ? "ok" : "FAIL", double(threaded),
              reference);
  failures += value_ok ? 0 : 1;
  const bool same_ok = threaded == serial;
  std::printf("%s: 2 threads asked %.9g, 1 thread %.9g (must be the same bits)\n", same_ok ? "ok" : "FAIL",
              double(threaded), double(serial));
  failures += same_ok ? 0 : 1;

  if (before < 0 || after < 0) {
    std::printf("skipped: no /proc/self/task, the thread count is not checked\n");
  } else {
    const bool threads_ok = XENT_CONSUMER_OPENMP ? after > before : after == before;
    std::printf("%s: process threads %ld before the call, %ld after (%s)\n", threads_ok ? "ok" : "FAIL", before, after,
                XENT_CONSUMER_OPENMP ? "an OpenMP team must have run it" : "no OpenMP: it must have stayed serial");
    failures += threads_ok ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}
