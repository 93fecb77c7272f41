// xent::parallel on 2 and 3 ranks (CTest runs this program under mpiexec -n 2 and -n 3; an
// argument changes the seed of the random cases: mpiexec -n 3 xent_test_vocab_parallel 17).
//
// Every rank builds the whole C x N logits from the same seed, keeps its shard, and holds the
// sharded loss and the gradient of its rows to the single-process xent::cross_entropy_with_grad on
// the whole logits, and to the exact value (long double, term by term). Budgets, float and double:
//   loss (per sample and reduced)  4 ulp, the ulp taken at max(|reference|, 1): a log of a sum >= 1
//                                  is known to absolute, not relative, precision, on one process too
//   gradient                       4 ulp, the ulp taken at max(|reference|, |c| * max weight), c the
//                                  reduction's scale: p_t - 1 cancels at the target
//   special values (NaN, +-inf)    bit for bit (NaN with NaN)
// against the single-process result; where the two round apart by more, the sharded value must be
// within the same budget of the exact value, the budget every kernel is held to. (Both round: the
// sum of exponentials and the label-smoothing sums are split and merged in another order. Over 60
// seeds x 2 and 3 ranks, 8 values needed the second clause; the sharded results stayed within
// 3.6 ulp (loss) and 4.1 ulp (gradient) of exact, the single-process ones within 3.1 and 4.8.)
// bf16 logits are compared with the single process only (bf16_logits). The worst errors are
// printed per case. Every rank must also hold the same bits.
//
// "One collective per call" is measured, not assumed: the PMPI wrappers below count every MPI
// communication call the library makes (MPI's profiling interface: these definitions take the place
// of the library's MPI_* symbols and forward to PMPI_*).
//
// Plain main, no Catch2: a failed check must never skip a collective on one rank only (the others
// would wait for ever), so every check records and continues; the verdict is reduced at the end.

#include "../support.hpp"

#include <xent/parallel/linear.hpp>
#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

// --- counting MPI calls ------------------------------------------------------------------------

namespace {
struct call_counts {
  int allreduce = 0;
  int allgather = 0;
  int other = 0;  // any other communication call
  int allreduce_count = -1;
  MPI_Op allreduce_op = MPI_OP_NULL;
  int total() const { return allreduce + allgather + other; }
};
call_counts calls;
}  // namespace

extern "C" {
int MPI_Allreduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  ++calls.allreduce;
  calls.allreduce_count = n;
  calls.allreduce_op = op;
  return PMPI_Allreduce(s, r, n, t, op, c);
}
int MPI_Allgather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, MPI_Comm c) {
  ++calls.allgather;
  return PMPI_Allgather(s, sn, st, r, rn, rt, c);
}
int MPI_Allgatherv(const void* s, int sn, MPI_Datatype st, void* r, const int rn[], const int d[], MPI_Datatype rt, MPI_Comm c) {
  ++calls.other;
  return PMPI_Allgatherv(s, sn, st, r, rn, d, rt, c);
}
int MPI_Iallreduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c, MPI_Request* q) {
  ++calls.other;
  return PMPI_Iallreduce(s, r, n, t, op, c, q);
}
int MPI_Iallgather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, MPI_Comm c, MPI_Request* q) {
  ++calls.other;
  return PMPI_Iallgather(s, sn, st, r, rn, rt, c, q);
}
int MPI_Bcast(void* b, int n, MPI_Datatype t, int root, MPI_Comm c) {
  ++calls.other;
  return PMPI_Bcast(b, n, t, root, c);
}
int MPI_Ibcast(void* b, int n, MPI_Datatype t, int root, MPI_Comm c, MPI_Request* q) {
  ++calls.other;
  return PMPI_Ibcast(b, n, t, root, c, q);
}
int MPI_Reduce(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, int root, MPI_Comm c) {
  ++calls.other;
  return PMPI_Reduce(s, r, n, t, op, root, c);
}
int MPI_Reduce_scatter_block(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  ++calls.other;
  return PMPI_Reduce_scatter_block(s, r, n, t, op, c);
}
int MPI_Scan(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  ++calls.other;
  return PMPI_Scan(s, r, n, t, op, c);
}
int MPI_Exscan(const void* s, void* r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  ++calls.other;
  return PMPI_Exscan(s, r, n, t, op, c);
}
int MPI_Barrier(MPI_Comm c) {
  ++calls.other;
  return PMPI_Barrier(c);
}
int MPI_Gather(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, int root, MPI_Comm c) {
  ++calls.other;
  return PMPI_Gather(s, sn, st, r, rn, rt, root, c);
}
int MPI_Scatter(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, int root, MPI_Comm c) {
  ++calls.other;
  return PMPI_Scatter(s, sn, st, r, rn, rt, root, c);
}
int MPI_Alltoall(const void* s, int sn, MPI_Datatype st, void* r, int rn, MPI_Datatype rt, MPI_Comm c) {
  ++calls.other;
  return PMPI_Alltoall(s, sn, st, r, rn, rt, c);
}
int MPI_Send(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c) {
  ++calls.other;
  return PMPI_Send(b, n, t, dest, tag, c);
}
int MPI_Ssend(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c) {
  ++calls.other;
  return PMPI_Ssend(b, n, t, dest, tag, c);
}
int MPI_Isend(const void* b, int n, MPI_Datatype t, int dest, int tag, MPI_Comm c, MPI_Request* q) {
  ++calls.other;
  return PMPI_Isend(b, n, t, dest, tag, c, q);
}
int MPI_Recv(void* b, int n, MPI_Datatype t, int src, int tag, MPI_Comm c, MPI_Status* st) {
  ++calls.other;
  return PMPI_Recv(b, n, t, src, tag, c, st);
}
int MPI_Irecv(void* b, int n, MPI_Datatype t, int src, int tag, MPI_Comm c, MPI_Request* q) {
  ++calls.other;
  return PMPI_Irecv(b, n, t, src, tag, c, q);
}
int MPI_Sendrecv(const void* sb, int sn, MPI_Datatype st, int dest, int stag, void* rb, int rn, MPI_Datatype rt, int src,
                 int rtag, MPI_Comm c, MPI_Status* status) {
  ++calls.other;
  return PMPI_Sendrecv(sb, sn, st, dest, stag, rb, rn, rt, src, rtag, c, status);
}
}  // extern "C"

// --- a harness that never skips a collective ----------------------------------------------------

namespace {

int rank = 0, ranks = 1;
int failures = 0;
unsigned long long seed = 0;  // argv[1]: other random cases, the same on every rank
std::string current;  // the case being run, for messages

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::printf("[rank %d] FAIL %s: %s\n", rank, current.c_str(), what.c_str());
  std::fflush(stdout);
}

/// The calls made by f, which must be exactly one MPI_Allreduce of `count` elements with a
/// user-defined op and nothing else.
template <class F>
void expect_one_allreduce(F&& f, int count, const std::string& what) {
  calls = {};
  f();
  expect(calls.allreduce == 1 && calls.total() == 1,
         what + ": " + std::to_string(calls.allreduce) + " MPI_Allreduce and " +
             std::to_string(calls.total() - calls.allreduce) + " other communication calls (expected 1 and 0)");
  expect(calls.allreduce_count == count,
         what + ": MPI_Allreduce of " + std::to_string(calls.allreduce_count) + " elements, expected " + std::to_string(count));
}

/// Runs f (which makes exactly one MPI_Allreduce on every rank) and expects xent::invalid_argument
/// naming `argument` (and containing `text`, if given).
template <class F>
void expect_invalid(F&& f, const std::string& argument, const std::string& text = "") {
  calls = {};
  try {
    f();
    expect(false, "no exception (expected one about " + argument + ")");
  } catch (const xent::invalid_argument& e) {
    expect(e.argument() == argument, "exception about '" + e.argument() + "' (expected '" + argument + "'): " + e.what());
    expect(text.empty() || std::string(e.what()).find(text) != std::string::npos,
           std::string("message '") + e.what() + "' lacks '" + text + "'");
  }
}

/// Whether every rank holds the same bits in v.
template <class T>
bool same_on_every_rank(const std::vector<T>& v) {
  std::vector<unsigned long long> bits(v.size()), lo, hi;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 4) {
      std::uint32_t b;
      std::memcpy(&b, &v[i], 4);
      bits[i] = b;
    } else {
      std::memcpy(&bits[i], &v[i], 8);
    }
  }
  lo = hi = bits;
  PMPI_Allreduce(MPI_IN_PLACE, lo.data(), int(lo.size()), MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
  PMPI_Allreduce(MPI_IN_PLACE, hi.data(), int(hi.size()), MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  return lo == hi;
}

double max_over_ranks(double x) {
  PMPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return x;
}

// --- the cases ----------------------------------------------------------------------------------

enum class values { normal, masked, huge, special };
enum class layout { even, reversed, one_empty };

struct spec {
  const char* name;
  Eigen::Index classes, samples;
  values kind = values::normal;
  layout split = layout::even;
  xent::reduction reduction = xent::reduction::mean;
  double smoothing = 0;
  bool weighted = false;
  bool ignore_some = false;
  int dim = 0;
};

/// The rank's shard under each layout: the even split; the even split in reverse rank order; the
/// even split over all ranks but rank 1, which holds nothing.
xent::parallel::vocab_shard shard_of(layout split, Eigen::Index classes) {
  switch (split) {
    case layout::even: return xent::parallel::even_shard(classes, rank, ranks);
    case layout::reversed: return xent::parallel::even_shard(classes, ranks - 1 - rank, ranks);
    case layout::one_empty:
      if (rank == 1) return {0, 0, classes};
      return xent::parallel::even_shard(classes, rank < 1 ? rank : rank - 1, ranks - 1);
  }
  return {};
}

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
using targets_t = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

/// The whole logits (C x N), the same on every rank: one engine per case, seeded by the case.
template <class T>
matrix<T> make_logits(const spec& s, std::mt19937_64& engine, const targets_t& targets) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  std::normal_distribution<double> normal(0.0, 3.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  matrix<T> x(s.classes, s.samples);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(normal(engine));
  const Eigen::Index C = s.classes, N = s.samples;
  switch (s.kind) {
    case values::normal: break;
    case values::masked:
      // About a third masked at random; then: one sample's target masked (loss +inf); one sample
      // with everything masked but its target; one sample with a whole half of the classes
      // masked, so that some rank's shard is all -inf; one sample all masked (NaN).
      for (Eigen::Index i = 0; i < x.size(); ++i)
        if (uniform(engine) < 0.33) x.data()[i] = -inf;
      for (Eigen::Index j = 0; j < N; ++j) x(targets(j) >= 0 && targets(j) < C ? targets(j) : 0, j) = T(1);
      if (N > 1 && targets(0) >= 0) x(targets(0), 0) = -inf;
      if (N > 2) {
        x.col(1).setConstant(-inf);
        if (targets(1) >= 0) x(targets(1), 1) = T(0.5);
      }
      if (N > 3) x.col(2).head(C / 2 + 1).setConstant(-inf);
      if (N > 4) x.col(3).setConstant(-inf);
      break;
    case values::huge:
      // +-1e30 (far beyond exp's range either way) mixed with ordinary values.
      for (Eigen::Index i = 0; i < x.size(); ++i) {
        const double u = uniform(engine);
        if (u < 0.05) x.data()[i] = T(1e30);
        else if (u < 0.3) x.data()[i] = T(-1e30);
      }
      if (N > 1) x.col(0).setConstant(T(-1e30));
      break;
    case values::special:
      // NaN and +inf, each in one sample on the last class (the last rank's shard); -inf elsewhere.
      if (N > 1) x(C - 1, 0) = std::numeric_limits<T>::quiet_NaN();
      if (N > 2) x(C - 1, 1) = inf;
      if (N > 3) x(0, 2) = inf;
      if (N > 4) {
        x(0, 3) = std::numeric_limits<T>::quiet_NaN();
        x(C - 1, 3) = inf;
      }
      break;
  }
  return x;
}

/// The budget (see the top of the file): within 4 ulp of the single-process result or, where the
/// two round apart by more, within 4 ulp of the exact value, the budget every kernel is held to.
int beyond_single = 0;  // values that needed the second clause
bool within_budget(double vs_single, double vs_exact) {
  if (vs_single <= 4) return true;
  ++beyond_single;
  return vs_exact <= 4;
}

/// Worst errors in ulps: the sharded result against the single-process one and against the exact
/// value, and the single-process result against the exact value (for comparison).
struct worst {
  double loss_vs_single = 0, loss_vs_exact = 0, single_loss_vs_exact = 0;
  double grad_vs_single = 0, grad_vs_exact = 0, single_grad_vs_exact = 0;
  void max_over_ranks() {
    for (double* v : {&loss_vs_single, &loss_vs_exact, &single_loss_vs_exact, &grad_vs_single, &grad_vs_exact,
                      &single_grad_vs_exact})
      *v = ::max_over_ranks(*v);
  }
  void fold(const worst& o) {
    loss_vs_single = std::max(loss_vs_single, o.loss_vs_single);
    loss_vs_exact = std::max(loss_vs_exact, o.loss_vs_exact);
    single_loss_vs_exact = std::max(single_loss_vs_exact, o.single_loss_vs_exact);
    grad_vs_single = std::max(grad_vs_single, o.grad_vs_single);
    grad_vs_exact = std::max(grad_vs_exact, o.grad_vs_exact);
    single_grad_vs_exact = std::max(single_grad_vs_exact, o.single_grad_vs_exact);
  }
};

/// One sample's log-softmax in long double, with torch's special values: (x - max) - log(sum) term by
/// term (not x - lse, which loses log(sum) next to a max of 1e30 even in long double).
struct exact_log_softmax {
  long double max = -std::numeric_limits<long double>::infinity(), log_sum = 0;
  bool defined = false;
  template <class T>
  exact_log_softmax(const T* x, Eigen::Index n) {
    bool nan = false;
    for (Eigen::Index i = 0; i < n; ++i) {
      nan = nan || std::isnan(x[i]);
      max = std::max<long double>(max, x[i]);
    }
    defined = !nan && std::isfinite(max);
    if (!defined) return;
    long double sum = 0;
    for (Eigen::Index i = 0; i < n; ++i) sum += std::exp(static_cast<long double>(x[i]) - max);
    log_sum = std::log(sum);
  }
  long double at(long double x) const { return defined ? (x - max) - log_sum : std::numeric_limits<long double>::quiet_NaN(); }
};

/// torch's cross-entropy in long double, term by term: the exact value both results are measured against.
struct exact_cross_entropy {
  std::vector<long double> per_sample;
  long double reduced = 0;
  matrix<long double> grad;  // d reduced loss / d x (grad_out = 1; for none, of the sum)
  long double c = 1;         // the reduction's scale of each sample's gradient

  template <class T>
  exact_cross_entropy(const matrix<T>& x, const targets_t& targets, const xent::cross_entropy_options& o) {
    const Eigen::Index C = x.rows(), N = x.cols();
    auto w = [&](Eigen::Index k) -> long double { return o.weight.size() ? o.weight(k) : 1.0L; };
    long double W = 0, denominator = 0;
    for (Eigen::Index k = 0; k < C; ++k) W += w(k);
    for (Eigen::Index j = 0; j < N; ++j)
      if (targets(j) != o.ignore_index) denominator += w(targets(j));
    c = o.reduction == xent::reduction::mean ? 1 / denominator : 1;
    const long double eps = o.label_smoothing;
    grad = matrix<long double>::Zero(C, N);
    long double total = 0;
    for (Eigen::Index j = 0; j < N; ++j) {
      const Eigen::Index t = targets(j);
      long double loss = 0;
      if (t != o.ignore_index) {
        const T* xj = x.col(j).data();
        const exact_log_softmax lp(xj, C);
        const long double nll = -w(t) * lp.at(xj[t]);
        long double smooth = 0;
        for (Eigen::Index k = 0; k < C; ++k) smooth -= w(k) * lp.at(xj[k]);
        loss = eps == 0 ? nll : (1 - eps) * nll + eps / C * smooth;
        const long double Q = (1 - eps) * w(t) + eps / C * W;
        for (Eigen::Index k = 0; k < C; ++k)
          grad(k, j) = std::exp(lp.at(xj[k])) * c * Q - c * (eps / C * w(k) + (k == t ? (1 - eps) * w(t) : 0));
      }
      per_sample.push_back(loss);
      total += loss;
    }
    reduced = o.reduction == xent::reduction::mean ? total / denominator : total;
  }
};

template <class T>
void run_case(const spec& s, worst& w) {
  current = std::string(s.name) + (sizeof(T) == 4 ? " float" : " double");
  const Eigen::Index C = s.classes, N = s.samples;
  std::mt19937_64 engine(std::hash<std::string>{}(s.name) ^ (sizeof(T) * 0x9e3779b97f4a7c15ull) ^ seed);
  xent::cross_entropy_options opts;
  opts.reduction = s.reduction;
  opts.label_smoothing = s.smoothing;
  opts.dim = s.dim;
  targets_t targets(N);
  std::uniform_int_distribution<std::int64_t> pick(0, C - 1);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = pick(engine);
  if (s.ignore_some) {
    opts.ignore_index = 3;  // not torch's -100, to show the option is honoured
    for (Eigen::Index j = 0; j < N; j += 3) targets(j) = 3;
  }
  double max_weight = 1;
  if (s.weighted) {
    std::uniform_real_distribution<double> wd(0.25, 2.0);
    opts.weight.resize(C);
    for (Eigen::Index k = 0; k < C; ++k) opts.weight(k) = wd(engine);
    max_weight = opts.weight.maxCoeff();
  }
  const matrix<T> x = make_logits<T>(s, engine, targets);

  // The references: one process on the whole logits, and the exact value.
  matrix<T> g_single(C, N);
  xent::cross_entropy_options single_opts = opts;
  single_opts.dim = 0;
  const xent::loss_result<T> single = xent::cross_entropy_with_grad(x, targets, single_opts, g_single);
  const exact_cross_entropy exact(x, targets, single_opts);

  const xent::parallel::vocab_shard shard = shard_of(s.split, C);
  matrix<T> g(s.dim == 0 ? shard.size : N, s.dim == 0 ? N : shard.size);
  xent::loss_result<T> got = xent::loss_result<T>::reduced(opts.reduction, T(0), 0.0);
  xent::loss_result<T> forward_only = got;
  auto run = [&](const auto& local) {
    expect_one_allreduce([&] { got = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, g); },
                         int(N + 1), "with_grad");
    expect_one_allreduce([&] { forward_only = xent::parallel::vocab_parallel_cross_entropy(local, targets, shard, opts, MPI_COMM_WORLD); },
                         int(N + 1), "forward");
  };
  const matrix<T> xt = s.dim == 0 ? matrix<T>() : matrix<T>(x.transpose());
  if (s.dim == 0)
    run(matrix<T>(x.middleRows(shard.begin, shard.size)));  // the rank's own storage
  else
    run(xt.middleCols(shard.begin, shard.size));  // a block of the N x C matrix, read in place

  // The loss.
  std::vector<T> got_values, forward_values, single_values;
  std::vector<long double> exact_values;
  if (s.reduction == xent::reduction::none) {
    for (Eigen::Index j = 0; j < N; ++j) {
      got_values.push_back(got.per_sample()(j));
      forward_values.push_back(forward_only.per_sample()(j));
      single_values.push_back(single.per_sample()(j));
      exact_values.push_back(exact.per_sample[std::size_t(j)]);
    }
  } else {
    got_values.push_back(got.value());
    forward_values.push_back(forward_only.value());
    single_values.push_back(single.value());
    exact_values.push_back(exact.reduced);
  }
  for (std::size_t i = 0; i < got_values.size(); ++i) {
    const double vs_single = xent_test::ulps(got_values[i], single_values[i], 1);
    const double vs_exact = xent_test::ulps(got_values[i], exact_values[i], 1);
    const double single_vs_exact = xent_test::ulps(single_values[i], exact_values[i], 1);
    w.loss_vs_single = std::max(w.loss_vs_single, vs_single);
    w.loss_vs_exact = std::max(w.loss_vs_exact, vs_exact);
    w.single_loss_vs_exact = std::max(w.single_loss_vs_exact, single_vs_exact);
    expect(within_budget(vs_single, vs_exact),
           "loss[" + std::to_string(i) + "] = " + std::to_string(double(got_values[i])) + ": " + std::to_string(vs_single) +
               " ulp from the single process, " + std::to_string(vs_exact) + " from the exact value (single process: " +
               std::to_string(single_vs_exact) + ")");
    expect(std::memcmp(&got_values[i], &forward_values[i], sizeof(T)) == 0, "forward-only loss differs from with_grad's");
  }
  expect(same_on_every_rank(got_values), "ranks hold different losses");

  // The gradient of the rank's rows.
  const long double floor = std::fabs(exact.c) * max_weight;
  for (Eigen::Index j = 0; j < N; ++j) {
    for (Eigen::Index k = 0; k < shard.size; ++k) {
      const T gk = s.dim == 0 ? g(k, j) : g(j, k);
      const T sk = g_single(shard.begin + k, j);
      const long double ek = exact.grad(shard.begin + k, j);
      const double vs_single = xent_test::ulps(gk, sk, floor);
      const double vs_exact = xent_test::ulps(gk, ek, floor);
      const double single_vs_exact = xent_test::ulps(sk, ek, floor);
      w.grad_vs_single = std::max(w.grad_vs_single, vs_single);
      w.grad_vs_exact = std::max(w.grad_vs_exact, vs_exact);
      w.single_grad_vs_exact = std::max(w.single_grad_vs_exact, single_vs_exact);
      expect(within_budget(vs_single, vs_exact),
             "grad[class " + std::to_string(shard.begin + k) + "][sample " + std::to_string(j) + "] = " +
                 std::to_string(double(gk)) + ": " + std::to_string(vs_single) + " ulp from the single process, " +
                 std::to_string(vs_exact) + " from the exact value (single process: " + std::to_string(single_vs_exact) + ")");
    }
  }
}

void vocab_parallel_matches_single_process() {
  using R = xent::reduction;
  const std::vector<spec> specs = {
      // name, C, N, values, layout, reduction, smoothing, weighted, ignore, dim
      {"C=7 N=5 mean", 7, 5},
      {"C=7 N=5 none", 7, 5, values::normal, layout::even, R::none},
      {"C=1 N=4 (ranks with no class)", 1, 4, values::normal, layout::even, R::sum},
      {"C=2 N=3", 2, 3, values::normal, layout::even, R::none},
      {"C=64 N=9 reversed ranks", 64, 9, values::normal, layout::reversed, R::none},
      {"C=64 N=9 rank 1 empty", 64, 9, values::normal, layout::one_empty, R::none},
      {"C=1000 N=17 smoothing", 1000, 17, values::normal, layout::even, R::none, 0.1},
      {"C=1000 N=17 smoothing mean", 1000, 17, values::normal, layout::even, R::mean, 0.1},
      {"C=1000 N=17 smoothing 1", 1000, 17, values::normal, layout::even, R::sum, 1.0},
      {"C=333 N=12 ignore_index", 333, 12, values::normal, layout::even, R::none, 0, false, true},
      {"C=333 N=12 ignore_index mean", 333, 12, values::normal, layout::even, R::mean, 0, false, true},
      {"C=333 N=12 weight smoothing ignore", 333, 12, values::normal, layout::even, R::none, 0.2, true, true},
      {"C=333 N=12 weight smoothing ignore mean", 333, 12, values::normal, layout::one_empty, R::mean, 0.2, true, true},
      {"C=5000 N=3 (crosses the 4096-float chunk)", 5000, 3, values::normal, layout::even, R::none, 0.05},
      {"C=9001 N=2 sum", 9001, 2, values::normal, layout::reversed, R::sum},
      {"C=50 N=8 -inf masks", 50, 8, values::masked, layout::even, R::none},
      {"C=50 N=8 -inf masks smoothing", 50, 8, values::masked, layout::even, R::none, 0.1},
      {"C=50 N=8 -inf masks smoothing weight", 50, 8, values::masked, layout::one_empty, R::none, 0.1, true},
      {"C=50 N=8 -inf masks mean (NaN)", 50, 8, values::masked, layout::even, R::mean},
      {"C=40 N=6 +-1e30", 40, 6, values::huge, layout::even, R::none},
      {"C=40 N=6 +-1e30 smoothing", 40, 6, values::huge, layout::reversed, R::none, 0.3},
      {"C=40 N=6 NaN and +inf", 40, 6, values::special, layout::even, R::none},
      {"C=40 N=6 NaN and +inf smoothing", 40, 6, values::special, layout::even, R::none, 0.1},
      {"C=30 N=7 dim 1", 30, 7, values::normal, layout::even, R::none, 0.1, true, true, 1},
      {"C=30 N=7 dim 1 masked", 30, 7, values::masked, layout::reversed, R::none, 0, false, false, 1},
  };
  if (rank == 0)
    std::printf("worst ulps per case, float | double: sharded vs single process, sharded vs exact (single process vs exact)\n");
  worst overall;
  for (const spec& s : specs) {
    worst f, d;
    run_case<float>(s, f);
    run_case<double>(s, d);
    f.max_over_ranks();
    d.max_over_ranks();
    if (rank == 0)
      std::printf("  %-44s loss %4.1f %4.1f (%4.1f)  grad %4.1f %4.1f (%4.1f) | loss %4.1f %4.1f (%4.1f)  grad %4.1f %4.1f (%4.1f)\n",
                  s.name, f.loss_vs_single, f.loss_vs_exact, f.single_loss_vs_exact, f.grad_vs_single, f.grad_vs_exact,
                  f.single_grad_vs_exact, d.loss_vs_single, d.loss_vs_exact, d.single_loss_vs_exact, d.grad_vs_single,
                  d.grad_vs_exact, d.single_grad_vs_exact);
    overall.fold(f);
    overall.fold(d);
  }
  if (rank == 0)
    std::printf("vocab_parallel_cross_entropy on %d ranks, %zu cases x float, double. Worst ulps, sharded vs single process / "
                "vs exact (single process vs exact): loss %.1f / %.1f (%.1f), gradient %.1f / %.1f (%.1f)\n",
                ranks, specs.size(), overall.loss_vs_single, overall.loss_vs_exact, overall.single_loss_vs_exact,
                overall.grad_vs_single, overall.grad_vs_exact, overall.single_grad_vs_exact);
  int beyond = beyond_single;
  PMPI_Allreduce(MPI_IN_PLACE, &beyond, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("%d value(s) more than 4 ulp from the single process's, each within 4 ulp of the exact value\n", beyond);
}

/// bf16 logits: computed in float on every rank as by the single-process cross_entropy, the
/// gradient narrowed once. Loss within 4 float ulp (at max(|value|, 1)) of the single process's,
/// each gradient entry within 1 bf16 ulp (at max(|value|, |c| max w)): the float values differ by
/// a few float ulps and may round to neighbouring bf16 values.
void bf16_logits() {
  using bf16 = Eigen::bfloat16;
  using R = xent::reduction;
  const std::vector<spec> specs = {
      {"bf16 C=1000 N=9 smoothing", 1000, 9, values::normal, layout::even, R::none, 0.1},
      {"bf16 C=333 N=12 weight smoothing ignore mean", 333, 12, values::normal, layout::one_empty, R::mean, 0.2, true, true},
      {"bf16 C=50 N=8 -inf masks", 50, 8, values::masked, layout::reversed, R::none},
      {"bf16 C=40 N=6 +-1e30 dim 1", 40, 6, values::huge, layout::even, R::sum, 0, false, false, 1},
  };
  double worst_loss = 0, worst_grad = 0;
  for (const spec& s : specs) {
    current = s.name;
    const Eigen::Index C = s.classes, N = s.samples;
    std::mt19937_64 engine(std::hash<std::string>{}(s.name) ^ seed);
    xent::cross_entropy_options opts;
    opts.reduction = s.reduction;
    opts.label_smoothing = s.smoothing;
    targets_t targets(N);
    std::uniform_int_distribution<std::int64_t> pick(0, C - 1);
    for (Eigen::Index j = 0; j < N; ++j) targets(j) = s.ignore_some && j % 3 == 0 ? opts.ignore_index : pick(engine);
    double max_weight = 1;
    if (s.weighted) {
      opts.weight = (Eigen::VectorXd::Random(C).array() * 0.75 + 1.25).matrix();
      max_weight = opts.weight.maxCoeff();
    }
    const matrix<bf16> x = make_logits<float>(s, engine, targets).cast<bf16>();
    matrix<bf16> g_single(C, N);
    const xent::loss_result<float> single = xent::cross_entropy_with_grad(x, targets, opts, g_single);

    const xent::parallel::vocab_shard shard = shard_of(s.split, C);
    opts.dim = s.dim;
    matrix<bf16> g(s.dim == 0 ? shard.size : N, s.dim == 0 ? N : shard.size);
    xent::loss_result<float> got = xent::loss_result<float>::reduced(opts.reduction, 0.0f, 0.0);
    const matrix<bf16> xt = x.transpose();
    expect_one_allreduce(
        [&] {
          if (s.dim == 0)
            got = xent::parallel::vocab_parallel_cross_entropy_with_grad(matrix<bf16>(x.middleRows(shard.begin, shard.size)),
                                                                         targets, shard, opts, MPI_COMM_WORLD, g);
          else
            got = xent::parallel::vocab_parallel_cross_entropy_with_grad(xt.middleCols(shard.begin, shard.size), targets, shard,
                                                                         opts, MPI_COMM_WORLD, g);
        },
        int(N + 1), "with_grad");
    std::vector<float> got_values, single_values;
    if (s.reduction == R::none) {
      for (Eigen::Index j = 0; j < N; ++j) {
        got_values.push_back(got.per_sample()(j));
        single_values.push_back(single.per_sample()(j));
      }
    } else {
      got_values.push_back(got.value());
      single_values.push_back(single.value());
    }
    for (std::size_t i = 0; i < got_values.size(); ++i) {
      const double e = xent_test::ulps(got_values[i], single_values[i], 1);
      worst_loss = std::max(worst_loss, e);
      expect(e <= 4, "loss[" + std::to_string(i) + "]: " + std::to_string(e) + " float ulp from the single process");
    }
    double denominator = 0;
    for (Eigen::Index j = 0; j < N; ++j)
      if (targets(j) != opts.ignore_index) denominator += s.weighted ? opts.weight(targets(j)) : 1.0;
    const double c = s.reduction == R::mean ? 1.0 / denominator : 1.0;
    for (Eigen::Index j = 0; j < N; ++j)
      for (Eigen::Index k = 0; k < shard.size; ++k) {
        const float gk = float(s.dim == 0 ? g(k, j) : g(j, k)), sk = float(g_single(shard.begin + k, j));
        // bf16 keeps 8 significant bits: its ulp at a is 2^(ilogb(a) - 7).
        const double scale = std::max({std::fabs(double(sk)), c * max_weight, double(std::numeric_limits<float>::min())});
        const double e = (std::isnan(sk) && std::isnan(gk)) || sk == gk ? 0 : std::fabs(double(gk) - sk) / std::ldexp(1.0, std::ilogb(scale) - 7);
        worst_grad = std::max(worst_grad, e);
        expect(e <= 1, "grad[class " + std::to_string(shard.begin + k) + "][sample " + std::to_string(j) + "]: " +
                           std::to_string(e) + " bf16 ulp from the single process");
      }
  }
  worst_loss = max_over_ranks(worst_loss);
  worst_grad = max_over_ranks(worst_grad);
  if (rank == 0)
    std::printf("bf16 logits, %zu cases: worst %.1f float ulp (loss), %.1f bf16 ulp (gradient) from the single process\n",
                specs.size(), worst_loss, worst_grad);
}

void gradient_in_place() {
  current = "gradient written over the local logits";
  const Eigen::Index C = 100, N = 6;
  std::mt19937_64 engine(7);
  std::normal_distribution<double> normal(0.0, 3.0);
  matrix<float> x(C, N);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = float(normal(engine));
  targets_t targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = (j * 37) % C;
  xent::cross_entropy_options opts;
  opts.label_smoothing = 0.1;
  const auto shard = xent::parallel::even_shard(C, MPI_COMM_WORLD);
  matrix<float> local = x.middleRows(shard.begin, shard.size), separate(shard.size, N);
  const float a = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, separate).value();
  Eigen::Map<matrix<float>> same(local.data(), local.rows(), local.cols());
  const float b = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, same).value();
  expect(a == b, "in place changed the loss");
  expect(local == separate, "in place changed the gradient");
}

void errors() {
  using xent::parallel::vocab_parallel_cross_entropy;
  using xent::parallel::vocab_parallel_cross_entropy_with_grad;
  const Eigen::Index C = 10, N = 4;
  const matrix<double> x = matrix<double>::Random(C, N);
  targets_t targets(N);
  targets << 0, 9, 4, 7;
  const auto shard = xent::parallel::even_shard(C, rank, ranks);
  const matrix<double> local = x.middleRows(shard.begin, shard.size);
  matrix<double> g(shard.size, N);
  xent::cross_entropy_options opts;

  current = "errors: target out of range";
  {
    targets_t bad = targets;
    bad(2) = C;
    expect_invalid([&] { vocab_parallel_cross_entropy(local, bad, shard, opts, MPI_COMM_WORLD); }, "target[2]",
                   "xent::vocab_parallel_cross_entropy: target[2] must be in [0, 10) or ignore_index (-100), but got 10");
    expect(calls.allreduce == 1, "the rejecting call still takes part in its one collective");
    bad(2) = -1;
    expect_invalid([&] { vocab_parallel_cross_entropy(local, bad, shard, opts, MPI_COMM_WORLD); }, "target[2]");
  }
  current = "errors: one rank's local logits have the wrong shape";
  {
    const matrix<double> wrong = rank == ranks - 1 ? matrix<double>(x.topRows(shard.size + 1)) : local;
    expect_invalid([&] { vocab_parallel_cross_entropy(wrong, targets, shard, opts, MPI_COMM_WORLD); },
                   rank == ranks - 1 ? "local_logits" : "comm",
                   rank == ranks - 1 ? "must be shard.size x samples" : "1 rank(s) rejecting theirs");
  }
  current = "errors: one rank's gradient buffer has the wrong shape";
  {
    matrix<double> wrong(shard.size, rank == 0 ? N + 1 : N);
    expect_invalid([&] { vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, wrong); },
                   rank == 0 ? "grad_local_out" : "comm");
  }
  current = "errors: every rank claims the whole vocabulary";
  {
    const xent::parallel::vocab_shard all{0, C, C};
    expect_invalid([&] { vocab_parallel_cross_entropy(x, targets, all, opts, MPI_COMM_WORLD); }, "shard",
                   "sizes summed over the ranks must equal classes (10), but got " + std::to_string(C * ranks));
  }
  current = "errors: a gap and an overlap of the same size";
  {
    // Rank 1 moves onto rank 0's classes: the sizes still add up to C, but rank 1's own classes
    // ([5, 10) on 2 ranks, [4, 7) on 3) are held by no rank, and the first of rank 0's by two.
    xent::parallel::vocab_shard moved = shard;
    if (rank == 1) moved.begin = 0;
    const matrix<double> moved_local = x.middleRows(moved.begin, moved.size);
    targets_t in_gap = targets;
    in_gap(1) = 5;
    expect_invalid([&] { vocab_parallel_cross_entropy(moved_local, in_gap, moved, opts, MPI_COMM_WORLD); }, "shard",
                   "target[0] = 0 held by 2 ranks");
    targets_t only_gap = in_gap;
    only_gap(0) = opts.ignore_index;
    expect_invalid([&] { vocab_parallel_cross_entropy(moved_local, only_gap, moved, opts, MPI_COMM_WORLD); }, "shard",
                   "target[1] = 5 held by 0 ranks");
    calls = {};
    expect_invalid([&] { xent::parallel::validate_shards(moved, MPI_COMM_WORLD); }, "shard", "held by rank 0 and rank 1");
    expect(calls.allgather == 1 && calls.total() == 1, "validate_shards makes one MPI_Allgather");
  }
  current = "errors: options";
  {
    xent::cross_entropy_options o;
    o.weight = Eigen::VectorXd::Ones(shard.size + 1);
    expect_invalid([&] { vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD); },
                   shard.size + 1 == C ? "comm" : "weight");
    o = {};
    o.label_smoothing = 1.5;
    expect_invalid([&] { vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD); }, "label_smoothing");
    o = {};
    o.reduction = xent::reduction::batchmean;
    expect_invalid([&] { vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD); }, "reduction");
    o = {};
    o.dim = 2;
    expect_invalid([&] { vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD); }, "dim");
    o = {};
    o.label_smoothing = 0.1;
    o.label_smoothing_excluded = Eigen::VectorXi::Constant(1, 0);
    expect_invalid([&] { vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD); }, "label_smoothing_excluded",
                   "not supported vocabulary-parallel");
  }
  current = "errors: shard outside the vocabulary, no samples";
  {
    const xent::parallel::vocab_shard outside{C - 1, 2, C};
    expect_invalid([&] { vocab_parallel_cross_entropy(matrix<double>(2, N), targets, outside, opts, MPI_COMM_WORLD); }, "shard",
                   "must lie in [0, classes) = [0, 10), but got [9, 11)");
    expect_invalid([&] { vocab_parallel_cross_entropy(matrix<double>(shard.size, 0), targets_t(0), shard, opts, MPI_COMM_WORLD); },
                   "targets");
    expect(calls.allreduce == 1 && calls.allreduce_count == 1, "no samples: the status record alone is reduced");
  }
  current = "validate_shards";
  {
    calls = {};
    try {
      xent::parallel::validate_shards(shard, MPI_COMM_WORLD);
      xent::parallel::validate_shards(shard_of(layout::reversed, C), MPI_COMM_WORLD);
      xent::parallel::validate_shards(shard_of(layout::one_empty, C), MPI_COMM_WORLD);
    } catch (const std::exception& e) {
      expect(false, std::string("a valid layout was rejected: ") + e.what());
    }
    expect(calls.allgather == 3 && calls.total() == 3, "validate_shards makes one MPI_Allgather per call");
    xent::parallel::vocab_shard other = shard;
    if (rank == ranks - 1) other.classes = C + 1;
    expect_invalid([&] { xent::parallel::validate_shards(other, MPI_COMM_WORLD); }, "shard.classes",
                   "must be the same on every rank (10 on rank 0), but got 11 on rank " + std::to_string(ranks - 1));
    xent::parallel::vocab_shard overlap = shard;
    if (rank == 0) overlap.size += 1;
    expect_invalid([&] { xent::parallel::validate_shards(overlap, MPI_COMM_WORLD); }, "shard",
                   "classes [" + std::to_string(xent::parallel::even_shard(C, 0, ranks).size) + ", " +
                       std::to_string(xent::parallel::even_shard(C, 0, ranks).size + 1) + ") held by rank 0 and rank 1");
    xent::parallel::vocab_shard short_end = shard;
    if (rank == ranks - 1) short_end.size -= 1;
    expect_invalid([&] { xent::parallel::validate_shards(short_end, MPI_COMM_WORLD); }, "shard", "classes [9, 10) held by no rank");
  }
  current = "even_shard";
  {
    expect_invalid([&] { xent::parallel::even_shard(0, 0, 2); }, "classes");
    expect_invalid([&] { xent::parallel::even_shard(5, 2, 2); }, "rank");
    expect_invalid([&] { xent::parallel::even_shard(5, 0, 0); }, "ranks");
    for (int p = 1; p <= 5; ++p)
      for (Eigen::Index classes : {1, 2, 7, 10, 32001}) {
        Eigen::Index next = 0, smallest = classes, largest = 0;
        for (int r = 0; r < p; ++r) {
          const auto s = xent::parallel::even_shard(classes, r, p);
          expect(s.begin == next && s.classes == classes, "even_shard does not tile");
          next += s.size;
          smallest = std::min(smallest, s.size);
          largest = std::max(largest, s.size);
        }
        expect(next == classes && largest - smallest <= 1, "even_shard is not balanced");
      }
  }
}

/// The merge of two records: commutative to the bit, associative on special values (the MPI op is
/// a loop over it).
void record_merge() {
  current = "record merge";
  using R = xent::parallel::detail::vocab_record<float>;
  constexpr float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<R> records = {R::identity(),
                                  {1.5f, 2.25f, 0.0f, -3.0f, 2.0f, 0},
                                  {3.0f, 1.0f, 3.0f, -0.5f, 1.5f, 1},
                                  {-inf, 0.0f, 0.0f, -inf, 4.0f, 0},
                                  {1e30f, 1.0f, 0.0f, -1e30f, 3.0f, 0},
                                  {inf, 1.0f, 0.0f, 0.0f, 1.0f, 0},
                                  {nan, nan, 0.0f, 0.0f, 1.0f, 0}};
  for (const R& a : records)
    for (const R& b : records) {
      const R ab = xent::parallel::detail::merge(a, b), ba = xent::parallel::detail::merge(b, a);
      // Field by field: the bytes between the five floats and the count are padding.
      const bool same = std::memcmp(&ab.max, &ba.max, 5 * sizeof(float)) == 0 && ab.holders == ba.holders;
      expect(same, "merge is not commutative to the bit");
    }
  const R id = R::identity();
  for (const R& a : records) {
    const R m = xent::parallel::detail::merge(a, id);
    expect((std::isnan(a.max) && std::isnan(m.max)) || (m.max == a.max && m.sum == a.sum && m.smooth == a.smooth),
           "identity is not neutral");
  }
  // A shard of -inf only, merged into a finite one: the smoothing sum carries the -inf.
  const R masked = xent::parallel::detail::merge(records[1], records[3]);
  expect(masked.max == 1.5f && masked.sum == 2.25f && masked.smooth == -inf, "-inf shard does not carry into the smoothing sum");
  // Shifting to a larger max: smooth + weight * (old max - new max).
  const R shifted = xent::parallel::detail::merge(records[1], records[2]);
  expect(shifted.max == 3.0f && shifted.smooth == -3.0f + 2.0f * (1.5f - 3.0f) + -0.5f && shifted.holders == 1,
         "smoothing sum not shifted to the merged max");
}

/// allreduce_sum on a stand-in for the evaluation accumulators (xent::metrics will expose a flat
/// array of doubles), on int64 counts, on Eigen vectors.
void data_parallel_sums() {
  current = "allreduce_sum";
  struct eval_accumulators {  // the stand-in: NLL sum, token count, correct predictions, squared error
    std::array<double, 4> values{};
    double* data() { return values.data(); }
    std::size_t size() const { return values.size(); }
  };
  eval_accumulators acc;
  acc.values = {0.5 * (rank + 1), 100.0 * (rank + 1), double(rank), 0.25};
  calls = {};
  xent::parallel::allreduce_sum(acc, MPI_COMM_WORLD);
  expect(calls.allreduce == 1 && calls.total() == 1 && calls.allreduce_count == 4 && calls.allreduce_op == MPI_SUM,
         "allreduce_sum is one MPI_Allreduce(MPI_SUM) of the 4 accumulators");
  const double p = ranks;
  expect(acc.values[0] == 0.5 * p * (p + 1) / 2 && acc.values[1] == 100 * p * (p + 1) / 2 &&
             acc.values[2] == p * (p - 1) / 2 && acc.values[3] == 0.25 * p,
         "allreduce_sum of doubles");

  std::vector<std::int64_t> counts = {(std::int64_t(1) << 53) + 1 + rank, -rank, 0};
  xent::parallel::allreduce_sum(counts, MPI_COMM_WORLD);
  expect(counts[0] == ranks * ((std::int64_t(1) << 53) + 1) + ranks * (ranks - 1) / 2 && counts[1] == -ranks * (ranks - 1) / 2,
         "allreduce_sum of int64 is exact beyond 2^53");

  Eigen::VectorXd v = Eigen::VectorXd::Constant(3, rank + 1.0);
  xent::parallel::allreduce_sum(v, MPI_COMM_WORLD);
  expect(v == Eigen::VectorXd::Constant(3, p * (p + 1) / 2), "allreduce_sum of an Eigen vector");
  Eigen::MatrixXf m = Eigen::MatrixXf::Constant(2, 3, 1.0f);
  calls = {};
  xent::parallel::allreduce_sum(m.row(1), MPI_COMM_WORLD);  // strided: through a copy
  expect(calls.allreduce == 1 && m.row(1) == Eigen::RowVector3f::Constant(float(ranks)) && m.row(0) == Eigen::RowVector3f::Ones(),
         "allreduce_sum of a strided row");
  calls = {};
  xent::parallel::allreduce_sum(static_cast<double*>(nullptr), 0, MPI_COMM_WORLD);
  expect(calls.allreduce == 1, "allreduce_sum of nothing still takes part in the collective");
}

}  // namespace

/// Sample weights, a mask and a normalizer: the sharded loss and gradient within 4 ulp of the single
/// process's with the same options (which tests/test_sample_weights.cpp holds to torch), still one
/// collective per call; a masked sample's gradient rows exactly 0.
template <class T>
void sample_weights_case(xent::reduction r, bool normalized) {
  current = std::string("sample weights ") + xent::to_string(r) + (normalized ? " normalizer" : "") +
            (sizeof(T) == 4 ? " float" : " double");
  const Eigen::Index C = 333, N = 20;
  std::mt19937_64 engine(0x5eed ^ seed);
  std::normal_distribution<double> normal(0, 3);
  std::uniform_real_distribution<double> wd(0.0, 2.0);
  matrix<T> x(C, N);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(engine));
  targets_t targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 6 == 5 ? -100 : std::int64_t(engine() % std::uint64_t(C));
  xent::cross_entropy_options opts;
  opts.reduction = r;
  opts.label_smoothing = 0.1;
  opts.sample_weight.resize(N);
  opts.mask.resize(N);
  for (Eigen::Index j = 0; j < N; ++j) {
    opts.sample_weight(j) = wd(engine);
    opts.mask(j) = j % 4 != 1;
  }
  opts.sample_weight(2) = 0;
  if (normalized) opts.normalizer = 41.5;
  matrix<T> g_single(C, N);
  const xent::loss_result<T> single = xent::cross_entropy_with_grad(x, targets, opts, g_single);
  const xent::parallel::vocab_shard shard = shard_of(layout::even, C);
  const matrix<T> local = x.middleRows(shard.begin, shard.size);
  matrix<T> g(shard.size, N);
  xent::loss_result<T> got = xent::loss_result<T>::reduced(r, T(0), 0.0);
  expect_one_allreduce([&] { got = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, g); },
                       int(N + 1), "with_grad");
  expect(got.denominator() == single.denominator(), "the denominator is the single process's");
  if (r == xent::reduction::none) {
    for (Eigen::Index j = 0; j < N; ++j)
      expect(xent_test::ulps(got.per_sample()(j), single.per_sample()(j), 1) <= 4, "loss[" + std::to_string(j) + "]");
  } else {
    expect(xent_test::ulps(got.value(), single.value(), 1) <= 4, "the reduced loss");
  }
  // The ulp at |c| * max sample weight, c the reduction's scale (p_t - 1 cancels at the target).
  const double divisor = normalized ? *opts.normalizer : r == xent::reduction::mean ? got.denominator() : 1.0;
  const long double floor = opts.sample_weight.maxCoeff() / divisor;
  for (Eigen::Index j = 0; j < N; ++j)
    for (Eigen::Index k = 0; k < shard.size; ++k) {
      expect(xent_test::ulps(g(k, j), g_single(shard.begin + k, j), floor) <= 4,
             "grad[class " + std::to_string(shard.begin + k) + "][sample " + std::to_string(j) + "]");
      if (!opts.mask(j) || opts.sample_weight(j) == 0) expect(g(k, j) == T(0), "a left-out sample's gradient is 0");
    }
}

void sample_weights() {
  for (const auto r : {xent::reduction::mean, xent::reduction::sum, xent::reduction::none})
    for (const bool normalized : {false, true}) {
      if (r == xent::reduction::none && normalized) continue;
      sample_weights_case<float>(r, normalized);
      sample_weights_case<double>(r, normalized);
    }
  if (rank == 0) std::printf("sample weights, mask and normalizer: sharded within 4 ulp of the single process\n");
}

/// softcap, z_loss and return_lse (alone and with smoothing of both kinds, class weights,
/// ignore_index, both layouts): the sharded loss, lse and gradient within 4 ulp of the single
/// process's with the same options (tests/test_fused.cpp and test_reference_data.cpp hold it to
/// torch), still one collective per call.
struct capped_spec {
  const char* name;
  double softcap, z_loss;
  bool return_lse;
  double smoothing;
  xent::label_smoothing_kind kind;
  bool weighted;
  xent::reduction reduction;
  int dim;
};

template <class T>
void capped_case(const capped_spec& s) {
  current = std::string(s.name) + (sizeof(T) == 4 ? " float" : " double");
  const Eigen::Index C = 1003, N = 13;
  std::mt19937_64 engine(std::hash<std::string>{}(s.name) ^ seed);
  // Logits beyond the cap (|x| up to ~60 with a cap of 30) so that tanh bends them.
  std::normal_distribution<double> normal(0, 20);
  matrix<T> x(C, N);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(engine));
  x(5, 2) = -std::numeric_limits<T>::infinity();  // a masked class stays masked under the cap
  targets_t targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 5 == 3 ? -100 : std::int64_t(engine() % std::uint64_t(C));
  xent::cross_entropy_options opts;
  opts.softcap = s.softcap;
  opts.z_loss = s.z_loss;
  opts.return_lse = s.return_lse;
  opts.label_smoothing = s.smoothing;
  opts.label_smoothing_kind = s.kind;
  opts.reduction = s.reduction;
  double max_weight = 1;
  if (s.weighted) {
    std::uniform_real_distribution<double> wd(0.25, 2.0);
    opts.weight.resize(C);
    for (Eigen::Index k = 0; k < C; ++k) opts.weight(k) = wd(engine);
    max_weight = opts.weight.maxCoeff();
  }
  matrix<T> g_single(C, N);
  const xent::loss_result<T> single = xent::cross_entropy_with_grad(x, targets, opts, g_single);
  const xent::parallel::vocab_shard shard = shard_of(layout::even, C);
  opts.dim = s.dim;
  matrix<T> g(s.dim == 0 ? shard.size : N, s.dim == 0 ? N : shard.size);
  xent::loss_result<T> got = xent::loss_result<T>::reduced(s.reduction, T(0), 0.0);
  xent::loss_result<T> forward_only = got;
  const matrix<T> local = s.dim == 0 ? matrix<T>(x.middleRows(shard.begin, shard.size))
                                     : matrix<T>(x.middleRows(shard.begin, shard.size).transpose());
  expect_one_allreduce([&] { got = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, g); },
                       int(N + 1), "with_grad");
  expect_one_allreduce([&] { forward_only = xent::parallel::vocab_parallel_cross_entropy(local, targets, shard, opts, MPI_COMM_WORLD); },
                       int(N + 1), "forward");
  auto close = [](T a, T b) { return (std::isnan(a) && std::isnan(b)) || a == b || xent_test::ulps(a, b, 1) <= 4; };
  if (s.reduction == xent::reduction::none) {
    for (Eigen::Index j = 0; j < N; ++j) {
      expect(close(got.per_sample()(j), single.per_sample()(j)),
             "loss[" + std::to_string(j) + "] = " + std::to_string(double(got.per_sample()(j))) + ", single process " +
                 std::to_string(double(single.per_sample()(j))));
      expect(std::memcmp(&got.per_sample()(j), &forward_only.per_sample()(j), sizeof(T)) == 0, "forward-only loss differs");
    }
  } else {
    expect(close(got.value(), single.value()),
           "the reduced loss " + std::to_string(double(got.value())) + ", single process " + std::to_string(double(single.value())));
    const T a = got.value(), b = forward_only.value();
    expect(std::memcmp(&a, &b, sizeof(T)) == 0, "forward-only loss differs");
  }
  if (s.return_lse) {
    for (Eigen::Index j = 0; j < N; ++j)
      expect(close(got.lse()(j), single.lse()(j)) && close(forward_only.lse()(j), single.lse()(j)),
             "lse[" + std::to_string(j) + "] = " + std::to_string(double(got.lse()(j))) + ", single process " +
                 std::to_string(double(single.lse()(j))));
    expect(std::isnan(got.lse()(3)), "an ignored sample's lse is NaN, as cross_entropy's");
  }
  const double divisor = s.reduction == xent::reduction::mean ? got.denominator() : 1.0;
  const long double floor = max_weight / divisor;
  for (Eigen::Index j = 0; j < N; ++j)
    for (Eigen::Index k = 0; k < shard.size; ++k) {
      const T gk = s.dim == 0 ? g(k, j) : g(j, k);
      const T sk = g_single(shard.begin + k, j);
      expect((std::isnan(gk) && std::isnan(sk)) || xent_test::ulps(gk, sk, floor) <= 4,
             "grad[class " + std::to_string(shard.begin + k) + "][sample " + std::to_string(j) + "] = " + std::to_string(double(gk)) +
                 ", single process " + std::to_string(double(sk)));
    }
}

void softcap_z_loss_lse() {
  using R = xent::reduction;
  using K = xent::label_smoothing_kind;
  const std::vector<capped_spec> specs = {
      {"softcap 30", 30, 0, false, 0, K::uniform, false, R::none, 0},
      {"softcap 30 mean", 30, 0, false, 0, K::uniform, false, R::mean, 0},
      {"z_loss 1e-3", 0, 1e-3, false, 0, K::uniform, false, R::none, 0},
      {"return_lse", 0, 0, true, 0, K::uniform, false, R::sum, 0},
      {"softcap z_loss lse smoothing", 30, 1e-3, true, 0.1, K::uniform, false, R::none, 0},
      {"softcap z_loss lse other_classes weight", 30, 1e-4, true, 0.1, K::other_classes, true, R::mean, 0},
      {"softcap z_loss lse weight dim 1", 5, 1e-2, true, 0.2, K::uniform, true, R::none, 1},
  };
  for (const capped_spec& s : specs) {
    capped_case<float>(s);
    capped_case<double>(s);
  }
  if (rank == 0)
    std::printf("softcap, z_loss, return_lse: %zu cases x float, double sharded within 4 ulp of the single process\n", specs.size());
}


// --- vocabulary-parallel linear cross-entropy ------------------------------------------------------

struct linear_spec {
  const char* name;
  bool v_by_d;
  bool bias;
  double smoothing;
  xent::label_smoothing_kind kind;
  double z_loss, softcap;
  bool return_lse, weighted;
  xent::reduction reduction;
  Eigen::Index sample_block;
  std::size_t max_block_bytes;  // 0: every block's logits recomputed for the gradient
};

template <class T>
bool same_bits(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }

/// The largest |a - b| over the largest |b|, in eps of T.
template <class A, class B>
double relative_eps(const A& a, const B& b) {
  using T = typename B::Scalar;
  const double scale = std::max(double(b.cwiseAbs().maxCoeff()), double(std::numeric_limits<T>::min()));
  return double((a - b).cwiseAbs().maxCoeff()) / scale / double(std::numeric_limits<T>::epsilon());
}

template <class T>
void linear_case(const linear_spec& s, double& worst_loss, double& worst_grad) {
  current = std::string(s.name) + (sizeof(T) == 4 ? " float" : " double");
  const Eigen::Index C = 1003, D = 24, N = 29;
  std::mt19937_64 engine(std::hash<std::string>{}(s.name) ^ seed);
  std::normal_distribution<double> normal(0, 1);
  matrix<T> h(D, N), w_dv(D, C);
  for (Eigen::Index i = 0; i < h.size(); ++i) h.data()[i] = T(normal(engine));
  for (Eigen::Index i = 0; i < w_dv.size(); ++i) w_dv.data()[i] = T(normal(engine) * (s.softcap != 0 ? 4 : 1));
  Eigen::Matrix<T, Eigen::Dynamic, 1> bias(C);
  for (Eigen::Index k = 0; k < C; ++k) bias(k) = T(normal(engine));
  targets_t targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 7 == 3 ? -100 : std::int64_t(engine() % std::uint64_t(C));
  xent::linear_cross_entropy_options opts;
  opts.label_smoothing = s.smoothing;
  opts.label_smoothing_kind = s.kind;
  opts.z_loss = s.z_loss;
  opts.softcap = s.softcap;
  opts.return_lse = s.return_lse;
  opts.reduction = s.reduction;
  opts.sample_block = s.sample_block;
  opts.max_block_bytes = s.max_block_bytes;
  if (s.weighted) {
    std::uniform_real_distribution<double> wd(0, 2);
    opts.sample_weight.resize(N);
    opts.mask.resize(N);
    for (Eigen::Index j = 0; j < N; ++j) {
      opts.sample_weight(j) = j % 5 == 1 ? 0.0 : wd(engine);  // a weight of 0 leaves the GEMMs
      opts.mask(j) = j % 6 != 2;
    }
  }
  const matrix<T> w = s.v_by_d ? matrix<T>(w_dv.transpose()) : w_dv;
  const xent::parallel::vocab_shard shard = shard_of(layout::even, C);
  const matrix<T> local_w = s.v_by_d ? matrix<T>(w.middleRows(shard.begin, shard.size)) : matrix<T>(w.middleCols(shard.begin, shard.size));
  const Eigen::Matrix<T, Eigen::Dynamic, 1> local_b = bias.segment(shard.begin, shard.size);

  // The one process, grad_out = 1 (ones for none).
  matrix<T> gh1(D, N), gw1(w.rows(), w.cols());
  Eigen::Matrix<T, Eigen::Dynamic, 1> gb1(C);
  const Eigen::Matrix<T, Eigen::Dynamic, 1> ones = Eigen::Matrix<T, Eigen::Dynamic, 1>::Ones(N);
  auto single_call = [&](const auto& grad_out) {
    return s.bias ? xent::linear_cross_entropy_with_grad(h, w, bias, targets, grad_out, opts, gh1, gw1, gb1)
                  : xent::linear_cross_entropy_with_grad(h, w, targets, grad_out, opts, gh1, gw1);
  };
  const auto single = s.reduction == xent::reduction::none ? single_call(ones) : single_call(T(1));

  matrix<T> gh(D, N), gw(local_w.rows(), local_w.cols());
  Eigen::Matrix<T, Eigen::Dynamic, 1> gb(shard.size);
  std::optional<xent::linear_cross_entropy_result<T>> got_call, forward_call;
  expect_one_allreduce(
      [&] {
        got_call = s.bias ? xent::parallel::vocab_parallel_linear_cross_entropy_with_grad(h, local_w, local_b, targets, shard, opts,
                                                                                      MPI_COMM_WORLD, gh, gw, gb)
                     : xent::parallel::vocab_parallel_linear_cross_entropy_with_grad(h, local_w, targets, shard, opts, MPI_COMM_WORLD, gh, gw);
      },
      int(N + 1), "linear with_grad");
  expect_one_allreduce(
      [&] {
        forward_call = s.bias ? xent::parallel::vocab_parallel_linear_cross_entropy(h, local_w, local_b, targets, shard, opts, MPI_COMM_WORLD)
                              : xent::parallel::vocab_parallel_linear_cross_entropy(h, local_w, targets, shard, opts, MPI_COMM_WORLD);
      },
      int(N + 1), "linear forward");
  const xent::linear_cross_entropy_result<T>&got = *got_call, &forward_only = *forward_call;
  // The logits of both come from GEMMs blocked differently: a loss is held to 8 ulp at
  // max(|loss|, 1), a gradient to 16 eps of its largest entry.
  auto loss_ulps = [](T a, T b) { return (std::isnan(a) && std::isnan(b)) ? 0.0 : xent_test::ulps(a, b, 1); };
  if (s.reduction == xent::reduction::none) {
    for (Eigen::Index j = 0; j < N; ++j) {
      const double e = loss_ulps(got.loss.per_sample()(j), single.loss.per_sample()(j));
      worst_loss = std::max(worst_loss, e);
      expect(e <= 8, "loss[" + std::to_string(j) + "] = " + std::to_string(double(got.loss.per_sample()(j))) + ", single process " +
                         std::to_string(double(single.loss.per_sample()(j))));
      expect(same_bits(got.loss.per_sample()(j), forward_only.loss.per_sample()(j)), "forward-only loss differs");
    }
  } else {
    const double e = loss_ulps(got.loss.value(), single.loss.value());
    worst_loss = std::max(worst_loss, e);
    expect(e <= 8, "the reduced loss " + std::to_string(double(got.loss.value())) + ", single process " +
                       std::to_string(double(single.loss.value())));
    expect(same_bits(got.loss.value(), forward_only.loss.value()), "forward-only loss differs");
    expect(got.loss.denominator() == single.loss.denominator(), "the mean's denominator differs");
  }
  if (s.return_lse) {
    for (Eigen::Index j = 0; j < N; ++j) {
      const bool left_out = std::isnan(single.lse(j));
      expect(left_out ? std::isnan(got.lse(j)) : loss_ulps(got.lse(j), single.lse(j)) <= 8,
             "lse[" + std::to_string(j) + "] = " + std::to_string(double(got.lse(j))) + ", single process " + std::to_string(double(single.lse(j))));
    }
  }
  const matrix<T> gw1_shard = s.v_by_d ? matrix<T>(gw1.middleRows(shard.begin, shard.size)) : matrix<T>(gw1.middleCols(shard.begin, shard.size));
  if (shard.size > 0) {
    const double e = relative_eps(gw, gw1_shard);
    worst_grad = std::max(worst_grad, e);
    expect(e <= 16, "grad_local_weight: " + std::to_string(e) + " eps of its largest entry from the single process");
    if (s.bias) {
      const double eb = relative_eps(gb, Eigen::Matrix<T, Eigen::Dynamic, 1>(gb1.segment(shard.begin, shard.size)));
      worst_grad = std::max(worst_grad, eb);
      expect(eb <= 16, "grad_local_bias: " + std::to_string(eb) + " eps of its largest entry from the single process");
    }
  }
  // The hidden state's gradient is the sum of the ranks' shares.
  xent::parallel::allreduce_sum(gh, MPI_COMM_WORLD);
  const double eh = relative_eps(gh, gh1);
  worst_grad = std::max(worst_grad, eh);
  expect(eh <= 16, "grad_hidden summed over the ranks: " + std::to_string(eh) + " eps of its largest entry from the single process");
  for (Eigen::Index j = 0; j < N; ++j)
    if (targets(j) == -100) expect(gh.col(j).isZero(0), "an ignored sample's grad_hidden column is 0");
}

void linear_matches_single_process() {
  using R = xent::reduction;
  using K = xent::label_smoothing_kind;
  const std::size_t keep = std::size_t(256) << 20;
  const std::vector<linear_spec> specs = {
      {"linear mean", false, false, 0, K::uniform, 0, 0, false, false, R::mean, 0, keep},
      {"linear V x D bias sum", true, true, 0, K::uniform, 0, 0, false, false, R::sum, 0, keep},
      {"linear smoothing none blocks of 8", false, true, 0.1, K::uniform, 0, 0, true, false, R::none, 8, keep},
      {"linear other_classes recomputed", true, false, 0.2, K::other_classes, 0, 0, false, false, R::mean, 5, 0},
      {"linear softcap z_loss lse", false, false, 0, K::uniform, 1e-3, 20, true, false, R::none, 0, keep},
      {"linear weights mask recomputed", true, true, 0.1, K::uniform, 1e-4, 0, true, true, R::mean, 7, 0},
      {"linear weights mask sum", false, false, 0, K::uniform, 0, 10, false, true, R::sum, 0, keep},
  };
  double worst_loss[2] = {0, 0}, worst_grad[2] = {0, 0};
  for (const linear_spec& s : specs) {
    linear_case<float>(s, worst_loss[0], worst_grad[0]);
    linear_case<double>(s, worst_loss[1], worst_grad[1]);
  }
  if (rank == 0)
    std::printf("linear: %zu cases x float, double within %.2f / %.2f ulp (loss) and %.2f / %.2f eps of the largest entry "
                "(gradients) of the single-process linear_cross_entropy\n",
                specs.size(), worst_loss[0], worst_loss[1], worst_grad[0], worst_grad[1]);
}

void linear_errors() {
  current = "linear errors";
  const Eigen::Index C = 40, D = 6, N = 5;
  const xent::parallel::vocab_shard shard = shard_of(layout::even, C);
  Eigen::MatrixXf h = Eigen::MatrixXf::Ones(D, N), w = Eigen::MatrixXf::Ones(D, shard.size);
  targets_t targets = targets_t::Zero(N);
  xent::linear_cross_entropy_options opts;
  expect_invalid([&] { xent::parallel::vocab_parallel_linear_cross_entropy(h, Eigen::MatrixXf::Ones(D + 1, shard.size), targets, shard, opts, MPI_COMM_WORLD); },
                 "local_weight", "D x shard.size");
  expect_invalid([&] { xent::parallel::vocab_parallel_linear_cross_entropy(Eigen::MatrixXf::Ones(D, N + 1), w, targets, shard, opts, MPI_COMM_WORLD); },
                 "hidden", "one column per target");
  expect_invalid([&] { xent::parallel::vocab_parallel_linear_cross_entropy(h, w, Eigen::VectorXf::Ones(shard.size + 1), targets, shard, opts, MPI_COMM_WORLD); },
                 "local_bias");
  Eigen::MatrixXf gh(D, N), gw(D, shard.size + 1);
  expect_invalid([&] { xent::parallel::vocab_parallel_linear_cross_entropy_with_grad(h, w, targets, shard, opts, MPI_COMM_WORLD, gh, gw); },
                 "grad_local_weight_out");
  // One rank's bad target: every rank throws, the others naming the failure elsewhere.
  targets_t bad = targets;
  if (rank == 0) bad(1) = C;
  expect_invalid([&] { xent::parallel::vocab_parallel_linear_cross_entropy(h, w, bad, shard, opts, MPI_COMM_WORLD); },
                 rank == 0 ? "target[1]" : "comm");
  if (rank == 0) std::printf("linear errors: named on every rank\n");
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks < 2 && rank == 0) std::printf("warning: run on 2 or more ranks (mpiexec -n 2) to test anything parallel\n");
  if (argc > 1) seed = std::strtoull(argv[1], nullptr, 10);
  if (rank == 0) std::printf("seed %llu (rerun with: mpiexec -n %d %s %llu)\n", seed, ranks, argv[0], seed);

  try {
    record_merge();
    vocab_parallel_matches_single_process();
    bf16_logits();
    sample_weights();
    softcap_z_loss_lse();
    linear_matches_single_process();
    linear_errors();
    gradient_in_place();
    errors();
    data_parallel_sums();
  } catch (const std::exception& e) {
    // Out of step with the other ranks now: abort rather than wait for ever.
    std::printf("[rank %d] unexpected exception in %s: %s\n", rank, current.c_str(), e.what());
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }

  int total = failures;
  PMPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s: %d failed check(s) over %d ranks\n", total ? "FAILED" : "passed", total, ranks);
  MPI_Finalize();
  return total ? 1 : 0;
}
