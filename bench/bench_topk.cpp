// topk_divergence (a teacher stored as its top-k classes, one lumped tail) against divergence with
// the full teacher logits, forward and forward + student gradient, at 1 and 2 threads. Not run by
// the tests (no smoke entry): timing only.
//
// Inputs (fp32, Eigen column-major C x N = torch [N, C]; deterministic): student logits randn * 2,
// a peaked teacher (randn, and k classes per sample at 22 + 5 u); its top-k as int32 indices and
// float32 logits with the full lse. Rows: ns per student logit (N x C), as the other bench files;
// the counters give the teacher's bytes per token for each form, and on the top-k forward rows the
// teacher's largest tail mass and the gap to the full teacher's loss (issue 17's goals).
//
//   xent_bench_topk [--benchmark_filter=...]

#include <xent/xent.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace {

using Eigen::Index;
using matrix = Eigen::MatrixXf;

struct inputs {
  matrix s, t;
  xent::topk_teacher<int, float> teacher;
};

const inputs& inputs_of(Index C, Index N, Index k) {
  static inputs cached;
  static Index cc = -1, cn = -1, ck = -1;
  if (cc == C && cn == N && ck == k) return cached;
  std::mt19937_64 rng(20261203);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> u(0, 1);
  std::uniform_int_distribution<Index> cls(0, C - 1);
  cached.s.resize(C, N);
  cached.t.resize(C, N);
  for (Index i = 0; i < cached.s.size(); ++i) cached.s.data()[i] = 2 * normal(rng);
  for (Index i = 0; i < cached.t.size(); ++i) cached.t.data()[i] = normal(rng);
  for (Index j = 0; j < N; ++j)
    for (Index i = 0; i < k; ++i) cached.t(cls(rng), j) = 22 + 5 * u(rng);
  auto& tk = cached.teacher;
  tk.indices.resize(k, N);
  tk.values.resize(k, N);
  tk.lse.resize(N);
  tk.values_are = xent::topk_values::logits;
  std::vector<int> order(static_cast<std::size_t>(C));
  for (Index j = 0; j < N; ++j) {
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int b) { return cached.t(a, j) > cached.t(b, j); });
    const double m = cached.t.col(j).maxCoeff();
    double sum = 0;
    for (Index c = 0; c < C; ++c) sum += std::exp(double(cached.t(c, j)) - m);
    tk.lse(j) = static_cast<float>(m + std::log(sum));
    for (Index i = 0; i < k; ++i) {
      tk.indices(i, j) = order[std::size_t(i)];
      tk.values(i, j) = cached.t(order[std::size_t(i)], j);
    }
  }
  cc = C, cn = N, ck = k;
  return cached;
}

void run(benchmark::State& state, bool topk, bool grad) {
  const Index C = state.range(0), N = state.range(1), k = state.range(2);
  const int threads = int(state.range(3));
  const inputs& in = inputs_of(C, N, k);
  xent::divergence_options o;
  o.kind = xent::divergence_kind::forward_kl;
  o.num_threads = threads;
  matrix g = matrix::Zero(C, N);
  for (auto _ : state) {
    float v;
    if (topk)
      v = grad ? xent::topk_divergence_with_grad(in.s, in.teacher, o, g).value() : xent::topk_divergence(in.s, in.teacher, o).value();
    else
      v = grad ? xent::divergence_with_grad(in.s, in.t, o, g).value() : xent::divergence(in.s, in.t, o).value();
    benchmark::DoNotOptimize(v);
    benchmark::ClobberMemory();
  }
  const double elems = double(C) * double(N);
  // Inverted rate of elems * 1e-9 per iteration: seconds per 1e-9 element = ns per element.
  state.counters["ns_per_elem"] =
      benchmark::Counter(elems * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["teacher_bytes_per_token"] =
      topk ? double(k * (sizeof(int) + sizeof(float)) + sizeof(float)) : double(C * sizeof(float));
  if (topk && !grad) {
    // Issue 17's accuracy goal on these inputs, untimed: the teacher's largest tail mass and
    // |top-k loss - full-teacher loss| (within 1e-6 when the tail is below 1e-6).
    // In double, so that the gap is the tail's and not float's rounding of a loss of a few nats.
    const Eigen::MatrixXd s = in.s.cast<double>(), t = in.t.cast<double>();
    // The lse from the double logits (the stored float one is off by ~27 float ulps' worth of mass).
    Eigen::VectorXd lse(N);
    for (Index j = 0; j < N; ++j) {
      const double m = t.col(j).maxCoeff();
      lse(j) = m + std::log((t.col(j).array() - m).exp().sum());
    }
    const xent::topk_teacher<int, double> teacher{in.teacher.indices, in.teacher.values.cast<double>(), in.teacher.values_are, lse};
    double tail = 0;
    for (Index j = 0; j < N; ++j) tail = std::max(tail, 1 - (teacher.values.col(j).array() - lse(j)).exp().sum());
    state.counters["teacher_tail_max"] = tail;
    state.counters["teacher_memory_x_less"] = double(C * sizeof(float)) / double(k * (sizeof(int) + sizeof(float)) + sizeof(float));
    state.counters["loss_gap_vs_full"] =
        std::fabs(xent::topk_divergence(s, teacher, o).value() - xent::divergence(s, t, o).value());
  }
}

void args(benchmark::internal::Benchmark* b) {
  for (const int threads : {1, 2})
    for (const Index C : {32768, 131072}) b->Args({C, 64, 64, threads});
  b->ArgNames({"C", "N", "k", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

void BM_topk_forward(benchmark::State& s) { run(s, true, false); }
void BM_topk_forward_grad(benchmark::State& s) { run(s, true, true); }
void BM_full_forward(benchmark::State& s) { run(s, false, false); }
void BM_full_forward_grad(benchmark::State& s) { run(s, false, true); }
BENCHMARK(BM_topk_forward)->Apply(args);
BENCHMARK(BM_topk_forward_grad)->Apply(args);
BENCHMARK(BM_full_forward)->Apply(args);
BENCHMARK(BM_full_forward_grad)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
