// Issue 16's goal (a per-sample weight or mask vector costs <= 5 % on the fused cross-entropy
// forward) as an A/B on one thread: the plain, sample_weight and all-true-mask forwards called in a
// shuffled order every round, each call timed on the thread's CPU clock, and the ratio to the plain
// call of the same round taken per round. Rounds are ~3 calls apart, so load that drifts over
// seconds (this machine is shared) cancels; the median and quartiles of the per-round ratios are
// printed. Google Benchmark's rows (xent_bench: xent_ce_fwd_sample_weight / _mask) give the same
// ratio from medians seconds apart, which a loaded machine blurs by +-5 % or more.
//
//   xent_bench_weight_ab N C ROUNDS     e.g. 1048576 10 300, 65536 1000 200, 4096 32000 150

#include <xent/xent.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <time.h>
#include <vector>

namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double quantile(std::vector<double> v, double f) {
  std::sort(v.begin(), v.end());
  return v[std::size_t(f * double(v.size() - 1) + 0.5)];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s N C ROUNDS\n", argv[0]);
    return 1;
  }
  const Eigen::Index N = std::atol(argv[1]), C = std::atol(argv[2]);
  const int rounds = std::atoi(argv[3]);
  if (N <= 0 || C <= 0 || rounds <= 0) {
    std::fprintf(stderr, "%s: N, C and ROUNDS must be > 0\n", argv[0]);
    return 1;
  }
  Eigen::MatrixXf x(C, N);
  std::mt19937_64 rng(16);
  std::normal_distribution<float> normal(0, 3);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = std::int64_t(rng() % std::uint64_t(C));

  xent::cross_entropy_options plain;
  plain.num_threads = 1;
  xent::cross_entropy_options weighted = plain, masked = plain;
  weighted.sample_weight = Eigen::VectorXd::LinSpaced(N, 0.5, 1.5);
  masked.mask = xent::sample_mask::Constant(N, true);  // every sample kept: the plain forward's work
  const xent::cross_entropy_options* opts[3] = {&plain, &weighted, &masked};

  std::vector<double> plain_ms, ratio_w, ratio_m;
  volatile float sink = 0;
  int order[3] = {0, 1, 2};
  for (int r = 0; r < rounds + 3; ++r) {  // 3 warm-up rounds
    double s[3];
    std::shuffle(order, order + 3, rng);
    for (const int k : order) {
      const double a = thread_seconds();
      sink = sink + xent::cross_entropy(x, t, *opts[k]).value();
      s[k] = thread_seconds() - a;
    }
    if (r < 3) continue;
    plain_ms.push_back(1e3 * s[0]);
    ratio_w.push_back(s[1] / s[0]);
    ratio_m.push_back(s[2] / s[0]);
  }
  std::printf("N=%ld C=%ld rounds=%d: plain %.3f ms (%.3f ns/logit); sample_weight / plain %.3f [q25 %.3f, q75 %.3f]; "
              "mask / plain %.3f [q25 %.3f, q75 %.3f] (medians of per-round ratios)\n",
              long(N), long(C), rounds, quantile(plain_ms, 0.5), 1e6 * quantile(plain_ms, 0.5) / double(N * C),
              quantile(ratio_w, 0.5), quantile(ratio_w, 0.25), quantile(ratio_w, 0.75), quantile(ratio_m, 0.5),
              quantile(ratio_m, 0.25), quantile(ratio_m, 0.75));
  return 0;
}
