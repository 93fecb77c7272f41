// Every xent loss against the memory rooflines of its own inputs and against libtorch's same call,
// forward and forward + gradient, at 1 and 2 threads, on the same buffers in one run.
//
// Inputs (fp32, torch [N, C] memory = Eigen column-major C x N; built per shape, deterministic):
//   x     logits, randn * 3                           z   a second randn * 3 (teacher logits, HVP's v)
//   p     softmax(z) per sample (probability targets) logp log_softmax(x) (log-probabilities)
//   pb    sigmoid(randn) (probabilities in (0, 1))    b   0/1 floats, P(1) = 1/2 (binary targets)
//   targets: int64 class indices, uniform in [0, C).
// Each loss names its same-shape inputs; consecutive losses with the same inputs form a group, and
// per group and thread count the rooflines run first on exactly those buffers (one read of every
// input, two streams at once for two inputs; read + write: the inputs read, one N x C written), then
// per loss libtorch and xent. Only the inputs of the current group are held (plus one N x C output
// buffer, touched before timing): at N x C = 4096 x 32000 that is at most 1.5 GB before libtorch's
// temporaries.
//
// Every figure is ns per element of one N x C matrix (ns_per_elem) on the row's clock: process CPU
// time at 1 thread, wall clock at 2 (bench_support.hpp). bench/run_bench.py --losses writes
// docs/performance.md from the medians of one run.
//
// Each row is one call of xent's API: L(inputs, targets, opts) for the forward and
// L_with_grad(inputs, targets, opts, grad) for forward + gradient (into a buffer touched before
// timing), with opts.num_threads = the row's thread count; the normalisers and the HVP, which write
// an N x C output and have no gradient row, through *_into(..., out, 0, threads). The context
// entries call.<loss>.fwd / .fwd_grad / .torch of the JSON say what was timed.
//
// Before the first row of a group, each of its losses is checked (forward and gradient, each thread
// count) against a scalar double-precision reference: relative 1e-4 for the reduced values, the
// gradient through directional derivatives of the reference on a spread of samples; libtorch's
// value too, and (--xent_smoke) libtorch's gradient. A disagreement is printed and the exit code is 2.
//
// Flags of our own (removed before Google Benchmark sees the command line):
//   --xent_smoke             tiny shapes, every row once (ctest's bench.losses_smoke)
//   --xent_no_check          skip the agreement checks
//   --xent_shapes=NxC,...    these shapes instead of the default ones
//   --xent_losses=a,b,...    only these losses (names as in the rows: ce, ce_prob, nll, ...)
//   --xent_list              print the losses, their inputs and the calls timed, and exit
//   --xent_rss=LOSS:MODE     no benchmark: build LOSS's inputs, reset the peak RSS, run MODE once,
//                            print the RSS figures, exit. MODE: inputs, fwd, fwd_grad, torch_fwd,
//                            torch_fwd_bwd. run_loss_bench.py runs one process per figure.
//   --xent_rss_shape=NxC     the shape of --xent_rss (default 4096x32000)
//   --xent_threads=T         the thread count of --xent_rss (default 1)

#include <xent/xent.hpp>

#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif


#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace xent_bench;
using Mat = Eigen::MatrixXf;
using targets_t = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

struct Shape {
  Index n;  // samples
  Index c;  // classes
  Index elems() const { return n * c; }
  std::string name() const { return "N:" + std::to_string(n) + "/C:" + std::to_string(c); }
  bool operator<(const Shape& o) const { return n != o.n ? n < o.n : c < o.c; }
  bool operator==(const Shape& o) const { return n == o.n && c == o.c; }
};

// An LLM vocabulary, ImageNet-sized C, and a tiny C with a huge N (per-sample overhead). The
// class-index cross-entropy also runs at the two other shapes of docs/performance.md's main table,
// so that its goals can be read from this binary alone.
const std::vector<Shape> full_shapes = {{4096, 32000}, {65536, 1000}, {1048576, 10}};
const std::vector<Shape> ce_extra_shapes = {{1024, 128256}, {16, 128256}};
// The smoke shapes: C = 1000 (the goals' range) with at least 2 x 32768 elements, so that xent really
// splits a 2-thread call (below that it runs serially and the 2-thread checks would repeat the
// 1-thread ones); C = 10; an odd C over a few samples.
const std::vector<Shape> smoke_shapes = {{128, 1000}, {512, 10}, {4, 4099}};

bool check_enabled = true;
bool smoke = false;
bool failed = false;  // a disagreement or an exception: main returns 2

// ---------------------------------------------------------------------------------------------
// The inputs of one shape

enum Input : int { X, Z, P, LOGP, PB, B, n_inputs };
const char* const input_names[n_inputs] = {"x", "z", "p", "logp", "pb", "b"};

struct Buffers {
  Shape shape;
  std::array<std::unique_ptr<Mat>, n_inputs> m;
  targets_t targets;
  Eigen::VectorXf vec;          // N: a per-sample output (entropy)
  std::unique_ptr<Mat> out;     // C x N: the gradient / output buffer
#ifdef XENT_BENCH_WITH_TORCH
  torch::Tensor out_t;
#endif

  explicit Buffers(Shape s) : shape(s), targets(s.n), vec(s.n) {
    splitmix64 rng{seed(4)};
    for (Index j = 0; j < s.n; ++j) targets(j) = std::int64_t(rng.next() % std::uint64_t(s.c));
  }

  std::uint64_t seed(int k) const { return 0x1055e5000ULL + std::uint64_t(shape.n) * 31 + std::uint64_t(shape.c) * 7 + std::uint64_t(k); }

  // Holds exactly `needed` (frees the other inputs first, so that at most the inputs of one loss
  // are alive), building what is missing.
  void require(const std::vector<Input>& needed) {
    for (int i = 0; i < n_inputs; ++i)
      if (std::find(needed.begin(), needed.end(), Input(i)) == needed.end()) m[std::size_t(i)].reset();
    for (Input i : needed) get(i);
  }

  const Mat& get(Input i) {
    auto& slot = m[std::size_t(i)];
    if (!slot) slot = make(i);
    return *slot;
  }
  const Mat& in(Input i) const { return *m[std::size_t(i)]; }

  std::unique_ptr<Mat> make(Input i) const {
    auto mat = std::make_unique<Mat>(shape.c, shape.n);
    float* d = mat->data();
    const Index total = shape.elems();
    switch (i) {
      case X:
      case LOGP: {
        splitmix64 rng{seed(1)};
        fill_normal(rng, d, total, 3.0);
        if (i == LOGP) per_sample(*mat, true);
        break;
      }
      case Z:
      case P: {
        splitmix64 rng{seed(2)};
        fill_normal(rng, d, total, 3.0);
        if (i == P) per_sample(*mat, false);
        break;
      }
      case PB: {
        splitmix64 rng{seed(5)};
        fill_normal(rng, d, total, 1.0);
        for (Index k = 0; k < total; ++k) d[k] = float(1.0 / (1.0 + std::exp(-double(d[k]))));
        break;
      }
      case B: {
        splitmix64 rng{seed(3)};
        for (Index k = 0; k < total; k += 64) {
          const std::uint64_t bits = rng.next();
          for (Index q = 0; q < 64 && k + q < total; ++q) d[k + q] = float((bits >> q) & 1u);
        }
        break;
      }
      default:
        break;
    }
    return mat;
  }

  // In place, in double: log_softmax (log = true) or softmax of every column.
  static void per_sample(Mat& mat, bool log) {
    for (Index j = 0; j < mat.cols(); ++j) {
      float* x = mat.col(j).data();
      double mx = -INFINITY, s = 0;
      for (Index k = 0; k < mat.rows(); ++k) mx = std::max(mx, double(x[k]));
      for (Index k = 0; k < mat.rows(); ++k) s += std::exp(double(x[k]) - mx);
      const double lse = mx + std::log(s);
      for (Index k = 0; k < mat.rows(); ++k) x[k] = float(log ? double(x[k]) - lse : std::exp(double(x[k]) - lse));
    }
  }

  // The output of the writing rows: allocated and touched (no page faults timed) on first use.
  Mat& out_buffer() {
    if (!out) {
      out = std::make_unique<Mat>(shape.c, shape.n);
      out->setZero();
#ifdef XENT_BENCH_WITH_TORCH
      out_t = torch::from_blob(out->data(), {shape.n, shape.c}, torch::kFloat);
#endif
    }
    return *out;
  }
};

// ---------------------------------------------------------------------------------------------
// The xent calls

template <class O>
O with_threads(O o, int threads) {
  o.num_threads = threads;
  return o;
}

// ---------------------------------------------------------------------------------------------
// The double-precision reference of every loss, sample by sample

struct lse_of {
  double value;
  lse_of(const double* x, Index c, double scale = 1) {
    double m = -INFINITY, s = 0;
    for (Index k = 0; k < c; ++k) m = std::max(m, x[k] * scale);
    for (Index k = 0; k < c; ++k) s += std::exp(x[k] * scale - m);
    value = m + std::log(s);
  }
};

inline double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

double column(const Buffers& b, Input i, Index j, Index k) { return double(b.in(i)(k, j)); }

std::vector<double> column_of(const Buffers& b, Input i, Index j) {
  std::vector<double> w(static_cast<std::size_t>(b.shape.c));
  for (Index k = 0; k < b.shape.c; ++k) w[std::size_t(k)] = column(b, i, j, k);
  return w;
}

// ---------------------------------------------------------------------------------------------
// The losses

enum class Kind {
  scalar,      // the call returns the reduced loss
  per_sample,  // the call returns one value per sample (entropy_from_logits)
  matrix,      // the call writes an N x C output (log_softmax, softmax, HVP): held to read + write
};

using Body = std::function<double(Buffers&, int threads)>;
using GradBody = std::function<double(Buffers&, int threads, Mat& grad)>;
// Sample j's contribution to the loss (or its per-sample value), with the column of the
// differentiated input given in double (w); the other inputs are read from the buffers.
using RefSample = std::function<double(const Buffers&, Index j, const double* w)>;
// Sample j of an N x C output: out[k], and the magnitude of the terms it is made of (tolerance).
using RefColumn = std::function<void(const Buffers&, Index j, double* out, double* scale)>;
#ifdef XENT_BENCH_WITH_TORCH
// The loss (or output) from the differentiated input `w` (a leaf that may require grad).
using TorchBody = std::function<torch::Tensor(Buffers&, const torch::Tensor& w)>;
#endif

struct Loss {
  std::string name;          // rows: xent_<name>_fwd, xent_<name>_fwd_grad, torch_<name>_fwd, torch_<name>_fwd_bwd
  std::vector<Input> in;     // its same-shape inputs, the differentiated one first
  Kind kind = Kind::scalar;
  std::string fwd_call, grad_call, torch_call;  // what is timed, for the docs
  Body fwd;
  GradBody grad;             // empty: no forward + gradient row
  // Reference
  RefSample ref;             // scalar and per_sample kinds
  RefColumn ref_column;      // matrix kind
  std::function<double(const Shape&)> divisor;  // the reduction's: loss = sum_j ref(j) / divisor
  bool prob_input = false;   // the differentiated input is a probability: perturb by min(p, 1 - p)
  bool torch_backward = true;  // libtorch's row has a backward (not for the normalisers and the HVP)
#ifdef XENT_BENCH_WITH_TORCH
  TorchBody torch;
#endif
  Input wrt() const { return in.front(); }
};

#ifdef XENT_BENCH_WITH_TORCH
namespace F = torch::nn::functional;
torch::Tensor view(const Mat& m) {
  return torch::from_blob(const_cast<float*>(m.data()), {m.cols(), m.rows()}, torch::kFloat);
}
torch::Tensor view(targets_t& t) { return torch::from_blob(t.data(), {t.size()}, torch::kLong); }
#endif

double divisor_samples(const Shape& s) { return double(s.n); }
double divisor_elements(const Shape& s) { return double(s.n) * double(s.c); }
double divisor_one(const Shape&) { return 1.0; }

constexpr double focal_alpha = 0.25, focal_gamma = 2, gce_q = 0.7, distill_T = 2, distill_alpha = 0.5;

xent::distillation_options distill_options(double alpha, int threads) {
  xent::distillation_options o;
  o.temperature = distill_T;
  o.alpha = alpha;
  return with_threads(o, threads);
}

// The KL term of distillation for sample j, times T^2: s given (w), teacher logits from z.
double distill_kl(const Buffers& b, Index j, const double* s) {
  const Index c = b.shape.c;
  std::vector<double> t(std::size_t(c), 0.0);
  for (Index k = 0; k < c; ++k) t[std::size_t(k)] = column(b, Z, j, k);
  const double ls = lse_of(s, c, 1 / distill_T).value, lt = lse_of(t.data(), c, 1 / distill_T).value;
  double kl = 0;
  for (Index k = 0; k < c; ++k) {
    const double lpt = t[std::size_t(k)] / distill_T - lt;
    kl += std::exp(lpt) * (lpt - (s[k] / distill_T - ls));
  }
  return kl * distill_T * distill_T;
}

// divergence between softmax(s) (s given, w) and softmax(z) for sample j, at T = 1, in double.
double divergence_ref(const Buffers& b, Index j, const double* s, xent::divergence_kind kind) {
  const Index c = b.shape.c;
  std::vector<double> t(std::size_t(c), 0.0);
  for (Index k = 0; k < c; ++k) t[std::size_t(k)] = column(b, Z, j, k);
  const double ls = lse_of(s, c).value, lt = lse_of(t.data(), c).value;
  double d = 0;
  for (Index k = 0; k < c; ++k) {
    const double lp = s[k] - ls, lq = t[std::size_t(k)] - lt, p = std::exp(lp), q = std::exp(lq);
    switch (kind) {
      case xent::divergence_kind::forward_kl: d += q * (lq - lp); break;
      case xent::divergence_kind::reverse_kl: d += p * (lp - lq); break;
      case xent::divergence_kind::jsd: {
        const double lm = std::log(0.5 * (p + q));
        d += 0.5 * (p * (lp - lm) + q * (lq - lm));
        break;
      }
      case xent::divergence_kind::tvd: d += 0.5 * std::fabs(p - q); break;
    }
  }
  return d;
}

std::vector<Loss> make_losses() {
  std::vector<Loss> L;
  auto samples = divisor_samples;
  auto elements = divisor_elements;

  // Class-index cross_entropy: the same call as xent_bench's rows (kept there), so that this run's
  // table has the cross-entropy goals too.
  {
    Loss l;
    l.name = "ce";
    l.in = {X};
    l.fwd_call = "xent::cross_entropy(x, targets, opts)";
    l.grad_call = "xent::cross_entropy_with_grad(x, targets, opts, grad)";
    l.torch_call = "F::cross_entropy(x, targets)";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::cross_entropy(b.in(X), b.targets, with_threads(xent::cross_entropy_options{}, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::cross_entropy_with_grad(b.in(X), b.targets, with_threads(xent::cross_entropy_options{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) { return lse_of(x, b.shape.c).value - x[b.targets(j)]; };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) { return F::cross_entropy(x, view(b.targets)); };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "softmax_focal";
    l.in = {X};
    using O = xent::softmax_focal_loss_options;
    l.fwd_call = "xent::softmax_focal_loss(x, targets, opts)";
    l.grad_call = "xent::softmax_focal_loss_with_grad(x, targets, opts, grad)";
    l.torch_call = "lp = log_softmax(x, 1).gather(1, t); (-(1 - lp.exp()).pow(2) * lp).mean()";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::softmax_focal_loss(b.in(X), b.targets, with_threads(O{}, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::softmax_focal_loss_with_grad(b.in(X), b.targets, with_threads(O{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) {
      const double lp = x[b.targets(j)] - lse_of(x, b.shape.c).value;
      const double m = -std::expm1(lp);
      return -std::pow(m, focal_gamma) * lp;
    };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) {
      auto lp = torch::log_softmax(x, 1).gather(1, view(b.targets).unsqueeze(1)).squeeze(1);
      return (-(1 - lp.exp()).pow(focal_gamma) * lp).mean();
    };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "gce";
    l.in = {X};
    using O = xent::generalized_cross_entropy_options;
    l.fwd_call = "xent::generalized_cross_entropy(x, targets, opts), q = 0.7";
    l.grad_call = "xent::generalized_cross_entropy_with_grad(x, targets, opts, grad)";
    l.torch_call = "p = softmax(x, 1).gather(1, t); ((1 - p.pow(q)) / q).mean()";
    l.fwd = [](Buffers& b, int t) {
      O o;
      o.q = gce_q;
      return double(xent::generalized_cross_entropy(b.in(X), b.targets, with_threads(o, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      O o;
      o.q = gce_q;
      return double(xent::generalized_cross_entropy_with_grad(b.in(X), b.targets, with_threads(o, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) {
      const double lp = x[b.targets(j)] - lse_of(x, b.shape.c).value;
      return -std::expm1(gce_q * lp) / gce_q;
    };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) {
      auto p = torch::softmax(x, 1).gather(1, view(b.targets).unsqueeze(1)).squeeze(1);
      return ((1 - p.pow(gce_q)) / gce_q).mean();
    };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "log_softmax";
    l.in = {X};
    l.kind = Kind::matrix;
    l.fwd_call = "xent::log_softmax_into(x, out, 0, threads)";
    l.torch_call = "at::log_softmax_out(out, x, 1)";
    l.fwd = [](Buffers& b, int t) {
      xent::log_softmax_into(b.in(X), *b.out, 0, t);
      return double(b.out->coeff(0, 0));
    };
    l.ref_column = [](const Buffers& b, Index j, double* out, double* scale) {
      const std::vector<double> x = column_of(b, X, j);
      const double lse = lse_of(x.data(), b.shape.c).value;
      for (Index k = 0; k < b.shape.c; ++k) {
        out[k] = x[std::size_t(k)] - lse;
        scale[k] = std::abs(x[std::size_t(k)]) + std::abs(lse);
      }
    };
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) { return at::log_softmax_out(b.out_t, x, 1); };
#endif
    l.torch_backward = false;
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "softmax";
    l.in = {X};
    l.kind = Kind::matrix;
    l.fwd_call = "xent::softmax_into(x, out, 0, threads)";
    l.torch_call = "at::softmax_out(out, x, 1)";
    l.fwd = [](Buffers& b, int t) {
      xent::softmax_into(b.in(X), *b.out, 0, t);
      return double(b.out->coeff(0, 0));
    };
    l.ref_column = [](const Buffers& b, Index j, double* out, double* scale) {
      const std::vector<double> x = column_of(b, X, j);
      const double lse = lse_of(x.data(), b.shape.c).value;
      for (Index k = 0; k < b.shape.c; ++k) scale[k] = out[k] = std::exp(x[std::size_t(k)] - lse);
    };
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) { return at::softmax_out(b.out_t, x, 1); };
#endif
    l.torch_backward = false;
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "entropy";
    l.in = {X};
    l.kind = Kind::per_sample;
    l.fwd_call = "xent::entropy_from_logits(x, opts) (per sample)";
    l.grad_call = "xent::entropy_from_logits_with_grad(x, opts, grad)";
    l.torch_call = "-(softmax(x, 1) * log_softmax(x, 1)).sum(1) (per sample; backward of their sum)";
    l.fwd = [](Buffers& b, int t) {
      b.vec = xent::entropy_from_logits(b.in(X), with_threads(xent::measure_options{}, t));
      return double(b.vec(0));
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      b.vec = xent::entropy_from_logits_with_grad(b.in(X), with_threads(xent::measure_options{}, t), g);
      return double(b.vec(0));
    };
    l.ref = [](const Buffers& b, Index, const double* x) {
      const double lse = lse_of(x, b.shape.c).value;
      double h = 0;
      for (Index k = 0; k < b.shape.c; ++k) h -= std::exp(x[k] - lse) * (x[k] - lse);
      return h;
    };
    l.divisor = divisor_one;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers&, const torch::Tensor& x) { return -(torch::softmax(x, 1) * torch::log_softmax(x, 1)).sum(1); };
#endif
    L.push_back(l);
  }
  // Binary targets.
  {
    Loss l;
    l.name = "bce_logits";
    l.in = {X, B};
    using O = xent::binary_cross_entropy_with_logits_options<float>;
    l.fwd_call = "xent::binary_cross_entropy_with_logits(x, b, opts)";
    l.grad_call = "xent::binary_cross_entropy_with_logits_with_grad(x, b, opts, grad)";
    l.torch_call = "F::binary_cross_entropy_with_logits(x, b)";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::binary_cross_entropy_with_logits(b.in(X), b.in(B), with_threads(O{}, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::binary_cross_entropy_with_logits_with_grad(b.in(X), b.in(B), with_threads(O{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) {
      double s = 0;
      for (Index k = 0; k < b.shape.c; ++k) {
        const double y = column(b, B, j, k), sp = softplus(x[k]);  // softplus(-x) = softplus(x) - x
        s += (1 - y) * sp + y * (sp - x[k]);
      }
      return s;
    };
    l.divisor = elements;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, view(b.in(B))); };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "sigmoid_focal";
    l.in = {X, B};
    using O = xent::sigmoid_focal_loss_options;
    l.fwd_call = "xent::sigmoid_focal_loss(x, b, opts), reduction mean, alpha 0.25, gamma 2";
    l.grad_call = "xent::sigmoid_focal_loss_with_grad(x, b, opts, grad)";
    l.torch_call = "torchvision's formula: sigmoid, BCE-with-logits (none), p_t, pow, alpha_t, mean";
    auto opts = [](int t) {
      O o;
      o.reduction = xent::reduction::mean;
      return with_threads(o, t);
    };
    l.fwd = [opts](Buffers& b, int t) { return double(xent::sigmoid_focal_loss(b.in(X), b.in(B), opts(t)).value()); };
    l.grad = [opts](Buffers& b, int t, Mat& g) {
      return double(xent::sigmoid_focal_loss_with_grad(b.in(X), b.in(B), opts(t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) {
      double s = 0;
      for (Index k = 0; k < b.shape.c; ++k) {
        const double y = column(b, B, j, k), sp = softplus(x[k]);
        const double p = std::exp(x[k] - sp);  // sigmoid(x) = exp(-softplus(-x))
        const double ce = (1 - y) * sp + y * (sp - x[k]);
        const double m = 1 - (p * y + (1 - p) * (1 - y));
        s += (focal_alpha * y + (1 - focal_alpha) * (1 - y)) * ce * std::pow(m, focal_gamma);
      }
      return s;
    };
    l.divisor = elements;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) {
      const torch::Tensor y = view(b.in(B));
      auto p = torch::sigmoid(x);
      auto ce = F::binary_cross_entropy_with_logits(x, y, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
      auto p_t = p * y + (1 - p) * (1 - y);
      auto loss = ce * (1 - p_t).pow(focal_gamma);
      auto alpha_t = focal_alpha * y + (1 - focal_alpha) * (1 - y);
      return (alpha_t * loss).mean();
    };
#endif
    L.push_back(l);
  }
  // Two logits inputs.
  {
    Loss l;
    l.name = "distill";
    l.in = {X, Z};
    l.fwd_call = "xent::distillation_loss(s, t, opts), opts.temperature = 2";
    l.grad_call = "xent::distillation_loss_with_grad(s, t, opts, grad)";
    l.torch_call = "F::kl_div(log_softmax(s / T), softmax(t / T), batchmean) * T * T";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::distillation_loss(b.in(X), b.in(Z), distill_options(1, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::distillation_loss_with_grad(b.in(X), b.in(Z), distill_options(1, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* s) { return distill_kl(b, j, s); };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& s) {
      return F::kl_div(torch::log_softmax(s / distill_T, 1), torch::softmax(view(b.in(Z)) / distill_T, 1),
                       F::KLDivFuncOptions().reduction(torch::kBatchMean)) *
             (distill_T * distill_T);
    };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "distill_mixed";
    l.in = {X, Z};
    l.fwd_call = "xent::distillation_loss(s, t, targets, opts), opts.temperature = 2, opts.alpha = 0.5";
    l.grad_call = "xent::distillation_loss_with_grad(s, t, targets, opts, grad)";
    l.torch_call = "0.5 * (the soft term) + 0.5 * F::cross_entropy(s, targets)";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::distillation_loss(b.in(X), b.in(Z), b.targets, distill_options(distill_alpha, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::distillation_loss_with_grad(b.in(X), b.in(Z), b.targets, distill_options(distill_alpha, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* s) {
      const double ce = lse_of(s, b.shape.c).value - s[b.targets(j)];
      return distill_alpha * distill_kl(b, j, s) + (1 - distill_alpha) * ce;
    };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& s) {
      auto soft = F::kl_div(torch::log_softmax(s / distill_T, 1), torch::softmax(view(b.in(Z)) / distill_T, 1),
                            F::KLDivFuncOptions().reduction(torch::kBatchMean)) *
                  (distill_T * distill_T);
      return distill_alpha * soft + (1 - distill_alpha) * F::cross_entropy(s, view(b.targets));
    };
#endif
    L.push_back(l);
  }
  // divergence between two logit sets, at T = 1, batchmean. Forward KL has its own row beside
  // distill's soft term (T = 2, a softmax target): issue 17's goal is against the composition
  // log_softmax twice + kl_div(log_target) + autograd, which is what torch_fkl times.
  for (const auto kind : {xent::divergence_kind::forward_kl, xent::divergence_kind::reverse_kl, xent::divergence_kind::jsd,
                          xent::divergence_kind::tvd}) {
    Loss l;
    const std::string k = xent::to_string(kind);
    l.name = kind == xent::divergence_kind::forward_kl ? "fkl" : kind == xent::divergence_kind::reverse_kl ? "rkl" : k;
    l.in = {X, Z};
    l.fwd_call = "xent::divergence(s, t, opts), opts.kind = " + k;
    l.grad_call = "xent::divergence_with_grad(s, t, opts, grad)";
    l.fwd = [kind](Buffers& b, int t) {
      xent::divergence_options o;
      o.kind = kind;
      return double(xent::divergence(b.in(X), b.in(Z), with_threads(o, t)).value());
    };
    l.grad = [kind](Buffers& b, int t, Mat& g) {
      xent::divergence_options o;
      o.kind = kind;
      return double(xent::divergence_with_grad(b.in(X), b.in(Z), with_threads(o, t), g).value());
    };
    l.ref = [kind](const Buffers& b, Index j, const double* s) { return divergence_ref(b, j, s, kind); };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    if (kind == xent::divergence_kind::forward_kl) {
      l.torch_call = "F::kl_div(log_softmax(s), log_softmax(t), batchmean, log_target)";
      l.torch = [](Buffers& b, const torch::Tensor& s) {
        return F::kl_div(torch::log_softmax(s, 1), torch::log_softmax(view(b.in(Z)), 1),
                         F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
      };
    } else if (kind == xent::divergence_kind::reverse_kl) {
      l.torch_call = "F::kl_div(log_softmax(t), log_softmax(s), batchmean, log_target)";
      l.torch = [](Buffers& b, const torch::Tensor& s) {
        return F::kl_div(torch::log_softmax(view(b.in(Z)), 1), torch::log_softmax(s, 1),
                         F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
      };
    } else if (kind == xent::divergence_kind::jsd) {
      l.torch_call = "m = (p + q) / 2; (kl_div(log m, log p) + kl_div(log m, log q)) / 2, batchmean, log_target";
      l.torch = [](Buffers& b, const torch::Tensor& s) {
        const auto lp = torch::log_softmax(s, 1), lq = torch::log_softmax(view(b.in(Z)), 1);
        const auto lm = torch::log(0.5 * (lp.exp() + lq.exp()));
        const auto o = F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true);
        return 0.5 * (F::kl_div(lm, lp, o) + F::kl_div(lm, lq, o));
      };
    } else {
      l.torch_call = "(softmax(s) - softmax(t)).abs().sum(1).mean() / 2";
      l.torch = [](Buffers& b, const torch::Tensor& s) {
        return 0.5 * (torch::softmax(s, 1) - torch::softmax(view(b.in(Z)), 1)).abs().sum(1).mean();
      };
    }
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "softmax_hvp";
    l.in = {X, Z};
    l.kind = Kind::matrix;
    l.fwd_call = "xent::softmax_hvp_into(x, v, out, 0, threads)";
    l.torch_call = "p = softmax(x, 1); p * (v - (p * v).sum(1, keepdim))";
    l.fwd = [](Buffers& b, int t) {
      xent::softmax_hvp_into(b.in(X), b.in(Z), *b.out, 0, t);
      return double(b.out->coeff(0, 0));
    };
    l.ref_column = [](const Buffers& b, Index j, double* out, double* scale) {
      const Index c = b.shape.c;
      const std::vector<double> x = column_of(b, X, j);
      const double lse = lse_of(x.data(), c).value;
      double pv = 0, apv = 0;
      for (Index k = 0; k < c; ++k) {
        const double p = std::exp(x[std::size_t(k)] - lse), v = column(b, Z, j, k);
        pv += p * v;
        apv += p * std::abs(v);
      }
      for (Index k = 0; k < c; ++k) {
        const double p = std::exp(x[std::size_t(k)] - lse), v = column(b, Z, j, k);
        out[k] = p * (v - pv);
        scale[k] = p * (std::abs(v) + apv);
      }
    };
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) {
      const torch::Tensor v = view(b.in(Z));
      auto p = torch::softmax(x, 1);
      return p * (v - (p * v).sum(1, true));
    };
#endif
    l.torch_backward = false;
    L.push_back(l);
  }
  // Probability targets.
  {
    Loss l;
    l.name = "ce_prob";
    l.in = {X, P};
    using O = xent::cross_entropy_options;
    l.fwd_call = "xent::cross_entropy(x, p, opts) (probability targets)";
    l.grad_call = "xent::cross_entropy_with_grad(x, p, opts, grad)";
    l.torch_call = "F::cross_entropy(x, p) (probability targets)";
    l.fwd = [](Buffers& b, int t) { return double(xent::cross_entropy(b.in(X), b.in(P), with_threads(O{}, t)).value()); };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::cross_entropy_with_grad(b.in(X), b.in(P), with_threads(O{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* x) {
      const double lse = lse_of(x, b.shape.c).value;
      double s = 0;
      for (Index k = 0; k < b.shape.c; ++k) s -= column(b, P, j, k) * (x[k] - lse);
      return s;
    };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& x) { return F::cross_entropy(x, view(b.in(P))); };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "kl_div";
    l.in = {LOGP, P};
    using O = xent::kl_div_options;
    l.fwd_call = "xent::kl_div(logp, p, opts), batchmean";
    l.grad_call = "xent::kl_div_with_grad(logp, p, opts, grad)";
    l.torch_call = "F::kl_div(logp, p, batchmean)";
    auto opts = [](int t) {
      O o;
      o.reduction = xent::reduction::batchmean;
      return with_threads(o, t);
    };
    l.fwd = [opts](Buffers& b, int t) { return double(xent::kl_div(b.in(LOGP), b.in(P), opts(t)).value()); };
    l.grad = [opts](Buffers& b, int t, Mat& g) { return double(xent::kl_div_with_grad(b.in(LOGP), b.in(P), opts(t), g).value()); };
    l.ref = [](const Buffers& b, Index j, const double* lq) {
      double s = 0;
      for (Index k = 0; k < b.shape.c; ++k) {
        const double p = column(b, P, j, k);
        if (p > 0) s += p * (std::log(p) - lq[k]);
      }
      return s;
    };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& lq) {
      return F::kl_div(lq, view(b.in(P)), F::KLDivFuncOptions().reduction(torch::kBatchMean));
    };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "nll";
    l.in = {LOGP};
    using O = xent::nll_loss_options;
    l.fwd_call = "xent::nll_loss(logp, targets, opts)";
    l.grad_call = "xent::nll_loss_with_grad(logp, targets, opts, grad)";
    l.torch_call = "F::nll_loss(logp, targets)";
    l.fwd = [](Buffers& b, int t) { return double(xent::nll_loss(b.in(LOGP), b.targets, with_threads(O{}, t)).value()); };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::nll_loss_with_grad(b.in(LOGP), b.targets, with_threads(O{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* lp) { return -lp[b.targets(j)]; };
    l.divisor = samples;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& lp) { return F::nll_loss(lp, view(b.targets)); };
#endif
    L.push_back(l);
  }
  {
    Loss l;
    l.name = "bce";
    l.in = {PB, B};
    using O = xent::binary_cross_entropy_options<float>;
    l.fwd_call = "xent::binary_cross_entropy(pb, b, opts)";
    l.grad_call = "xent::binary_cross_entropy_with_grad(pb, b, opts, grad)";
    l.torch_call = "F::binary_cross_entropy(pb, b)";
    l.fwd = [](Buffers& b, int t) {
      return double(xent::binary_cross_entropy(b.in(PB), b.in(B), with_threads(O{}, t)).value());
    };
    l.grad = [](Buffers& b, int t, Mat& g) {
      return double(xent::binary_cross_entropy_with_grad(b.in(PB), b.in(B), with_threads(O{}, t), g).value());
    };
    l.ref = [](const Buffers& b, Index j, const double* p) {
      double s = 0;
      for (Index k = 0; k < b.shape.c; ++k) {
        const double y = column(b, B, j, k);
        s -= y * std::max(std::log(p[k]), -100.0) + (1 - y) * std::max(std::log1p(-p[k]), -100.0);
      }
      return s;
    };
    l.divisor = elements;
    l.prob_input = true;
#ifdef XENT_BENCH_WITH_TORCH
    l.torch = [](Buffers& b, const torch::Tensor& p) { return F::binary_cross_entropy(p, view(b.in(B))); };
#endif
    L.push_back(l);
  }
  return L;
}

const std::vector<Loss>& losses() {
  static const std::vector<Loss> all = make_losses();
  return all;
}

// ---------------------------------------------------------------------------------------------
// Agreement with the reference

void fail(const Shape& s, const std::string& what) {
  std::fprintf(stderr, "xent_bench_losses: %s at %s\n", what.c_str(), s.name().c_str());
  failed = true;
}

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// The samples checked one by one: all of a small shape, else 16 spread over the batch.
std::vector<Index> spread(const Shape& s) {
  std::vector<Index> js;
  const Index step = s.n <= 64 ? 1 : s.n / 16;
  for (Index j = 0; j < s.n; j += step) js.push_back(j);
  if (js.back() != s.n - 1) js.push_back(s.n - 1);
  return js;
}

// sum_j ref(j) / divisor, in double, over every sample.
double reference_value(const Loss& l, const Buffers& b) {
  double s = 0;
  for (Index j = 0; j < b.shape.n; ++j) s += l.ref(b, j, column_of(b, l.wrt(), j).data());
  return s / l.divisor(b.shape);
}

// The direction of the gradient checks at sample j: +-1 per class (+-min(p, 1 - p) / 2 for a
// probability input), from a fixed seed.
std::vector<double> direction(const Loss& l, const Buffers& b, Index j, int which) {
  splitmix64 rng{0xd1ec7ULL + std::uint64_t(j) * 131 + std::uint64_t(which)};
  std::vector<double> d(std::size_t(b.shape.c));
  for (Index k = 0; k < b.shape.c; ++k) {
    double s = (rng.next() & 1) ? 1.0 : -1.0;
    if (l.prob_input) {
      const double p = column(b, l.wrt(), j, k);
      s *= 0.5 * std::min(p, 1 - p);
    }
    d[std::size_t(k)] = s;
  }
  return d;
}

// The gradient `g` (C x N, of the differentiated input) against central differences of the
// reference along two directions per sample; returns an empty string or the first disagreement.
template <class G>
std::string check_gradient(const Loss& l, const Buffers& b, const G& grad_at) {
  const double eps = 1e-4, div = l.divisor(b.shape);
  for (Index j : spread(b.shape)) {
    std::vector<double> w = column_of(b, l.wrt(), j);
    for (int which = 0; which < 2; ++which) {
      const std::vector<double> d = direction(l, b, j, which);
      std::vector<double> plus(w), minus(w);
      for (std::size_t k = 0; k < w.size(); ++k) {
        plus[k] += eps * d[k];
        minus[k] -= eps * d[k];
      }
      const double fd = (l.ref(b, j, plus.data()) - l.ref(b, j, minus.data())) / (2 * eps * div);
      double gd = 0, mag = 0;
      for (Index k = 0; k < b.shape.c; ++k) {
        const double g = grad_at(k, j);
        gd += g * d[std::size_t(k)];
        mag += std::abs(g * d[std::size_t(k)]);
      }
      if (!(std::abs(gd - fd) <= 1e-4 * std::max({mag, std::abs(fd), 1e-30})))
        return "sample " + std::to_string(j) + ": <grad, d> = " + fmt(gd) + ", reference " + fmt(fd);
    }
  }
  return "";
}

// An N x C output (or the per-sample vector) against the reference on the spread samples.
std::string check_output(const Loss& l, const Buffers& b, const std::function<double(Index, Index)>& at) {
  std::vector<double> ref(std::size_t(b.shape.c)), scale(std::size_t(b.shape.c));
  for (Index j : spread(b.shape)) {
    if (l.kind == Kind::per_sample) {
      const double r = l.ref(b, j, column_of(b, l.wrt(), j).data()), v = at(0, j);
      if (!close(v, r, 1e-4)) return "sample " + std::to_string(j) + ": " + fmt(v) + ", reference " + fmt(r);
      continue;
    }
    l.ref_column(b, j, ref.data(), scale.data());
    for (Index k = 0; k < b.shape.c; ++k) {
      const double v = at(k, j), r = ref[std::size_t(k)];
      if (!(std::abs(v - r) <= 1e-4 * std::max({std::abs(r), scale[std::size_t(k)], 1e-30})))
        return "sample " + std::to_string(j) + ", class " + std::to_string(k) + ": " + fmt(v) + ", reference " + fmt(r);
    }
  }
  return "";
}

void check_loss(const Loss& l, Buffers& b) {
  const Shape s = b.shape;
  const bool scalar = l.kind == Kind::scalar;
  const double reference = scalar ? reference_value(l, b) : 0.0;
  Mat& out = b.out_buffer();
  auto in_grad = [&](Index k, Index j) { return double(out(k, j)); };
  for (int t : thread_counts) {
    const std::string tag = " (" + std::to_string(t) + " thread" + (t > 1 ? "s)" : ")");
    try {
      const double v = l.fwd(b, t);
      std::string bad;
      if (scalar && !close(v, reference, 1e-4))
        bad = fmt(v) + ", reference " + fmt(reference);
      else if (l.kind == Kind::per_sample)
        bad = check_output(l, b, [&](Index, Index j) { return double(b.vec(j)); });
      else if (l.kind == Kind::matrix)
        bad = check_output(l, b, in_grad);
      if (!bad.empty()) fail(s, "xent " + l.name + " forward" + tag + " disagrees with the double reference: " + bad);
      if (l.grad) {
        out.setZero();
        const double vg = l.grad(b, t, out);
        if (scalar && !close(vg, reference, 1e-4))
          fail(s, "xent " + l.name + " forward + gradient" + tag + " loss disagrees with the double reference: " + fmt(vg) +
                      ", reference " + fmt(reference));
        if (l.kind == Kind::per_sample) {
          bad = check_output(l, b, [&](Index, Index j) { return double(b.vec(j)); });
          if (!bad.empty()) fail(s, "xent " + l.name + " forward + gradient" + tag + " values disagree with the double reference: " + bad);
        }
        bad = check_gradient(l, b, in_grad);
        if (!bad.empty()) fail(s, "xent " + l.name + " gradient" + tag + " disagrees with the double reference: " + bad);
      }
    } catch (const std::exception& e) {
      fail(s, "xent " + l.name + tag + " threw: " + e.what());
    }
  }
#ifdef XENT_BENCH_WITH_TORCH
  // libtorch's rows compute the same thing: its value (1 thread), and in the smoke run its gradient.
  try {
    at::set_num_threads(1);
    const torch::Tensor w = view(b.in(l.wrt()));
    if (scalar) {
      torch::NoGradGuard no_grad;
      const double v = l.torch(b, w).item<double>();
      if (!close(v, reference, 1e-4)) fail(s, "libtorch " + l.name + " forward disagrees with the double reference: " + fmt(v) + ", reference " + fmt(reference));
    } else {
      torch::NoGradGuard no_grad;
      torch::Tensor r = l.torch(b, w).contiguous();
      const float* p = r.data_ptr<float>();
      const Index c = l.kind == Kind::matrix ? s.c : 1;
      const std::string bad = check_output(l, b, [&](Index k, Index j) { return double(p[j * c + k]); });
      if (!bad.empty()) fail(s, "libtorch " + l.name + " forward disagrees with the double reference: " + bad);
    }
    if (smoke && l.torch_backward && l.grad) {
      torch::Tensor leaf = view(b.in(l.wrt())).clone().requires_grad_(true);
      torch::Tensor loss = l.torch(b, leaf);
      (loss.dim() ? loss.sum() : loss).backward();
      const torch::Tensor g = leaf.grad().contiguous();
      const float* p = g.data_ptr<float>();
      const std::string bad = check_gradient(l, b, [&](Index k, Index j) { return double(p[j * s.c + k]); });
      if (!bad.empty()) fail(s, "libtorch " + l.name + " gradient disagrees with the double reference: " + bad);
    }
  } catch (const std::exception& e) {
    fail(s, "libtorch " + l.name + " threw: " + e.what());
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// Rows

// Consecutive losses with the same inputs: the rooflines of a group read exactly those buffers.
struct Group {
  std::vector<Input> in;
  std::vector<const Loss*> members;
  std::string suffix() const {
    std::string s;
    for (Input i : in) s += std::string("_") + input_names[i];
    return s;
  }
};

// The one shape whose buffers are alive; a new shape frees the previous one's first.
Buffers& buffers_for(Shape s) {
  static std::unique_ptr<Buffers> current;
  if (!current || !(current->shape == s)) {
    current.reset();
    current = std::make_unique<Buffers>(s);
  }
  return *current;
}

// Makes the group's inputs current, and checks its losses the first time they are used at a shape.
Buffers& prepare(Shape s, const Group& g) {
  static std::set<std::pair<Shape, const Loss*>> checked;
  Buffers& b = buffers_for(s);
  b.require(g.in);
  if (check_enabled)
    for (const Loss* l : g.members)
      if (checked.insert({s, l}).second) check_loss(*l, b);
  return b;
}

struct Row {
  std::string kernel;       // e.g. "xent_kl_div_fwd"
  int threads = 1;
  std::string roofline = {};  // the row it is held to (same group and thread count); empty for none
  std::string torch = {};     // the libtorch row computing the same result
  std::string label = {};
  bool writes = false;      // needs the N x C output buffer
  bool is_torch = false;
  std::string key(const Shape& s, int t) const { return kernel + "/" + s.name() + "/threads:" + std::to_string(t); }
  std::string key(const Shape& s) const { return key(s, threads); }
};

// After a parallel region OpenMP's idle threads spin for a while (libgomp: milliseconds), which the
// process CPU time of a 1-thread row started just then would count: let them fall asleep first.
void settle(int threads) {
  static int last = 1;
  if (threads == 1 && last > 1 && !smoke) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  last = threads;
}

void timed(benchmark::State& state, const Row& r, Shape s, const Group& g, const std::function<void(Buffers&)>& body) {
  Buffers& b = prepare(s, g);
  if (r.writes) b.out_buffer();
#ifdef XENT_BENCH_WITH_TORCH
  if (r.is_torch) at::set_num_threads(r.threads);
#endif
  settle(r.threads);
  try {
    const Timing me = time_row(state, r.key(s), r.threads, double(s.elems()), "elem", [&] { body(b); });
    if (!r.roofline.empty())
      if (const Timing* t = latest_of(r.roofline + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
        state.counters[r.roofline.rfind("roofline_rw", 0) == 0 ? "x_rw_roofline" : "x_read_roofline"] = me.ns / t->ns;
    if (!r.torch.empty())
      if (const Timing* t = latest_of(r.torch + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
        state.counters["speedup_vs_torch"] = t->ns / me.ns;
    if (r.threads > 1)
      if (const Timing* t = latest_of(r.key(s, 1))) state.counters["speedup_vs_1_thread"] = t->ns_wall / me.ns_wall;
  } catch (const std::exception& e) {
    fail(s, r.kernel + " threw: " + e.what());
    state.SkipWithError(e.what());
  }
  if (!r.label.empty()) state.SetLabel(r.label);
}

void register_group(Shape s, const Group& g, int t) {
  auto add = [&](const Row& r, std::function<void(Buffers&)> body) {
    auto* bm = benchmark::RegisterBenchmark(r.key(s).c_str(),
                                            [r, s, g, body](benchmark::State& st) { timed(st, r, s, g, body); });
    bm->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
    if (r.threads > 1) bm->UseRealTime();
    if (smoke) bm->Iterations(1);
  };
  const Index total = s.elems();
  const std::vector<Input> in = g.in;
  const std::string read = "roofline_read" + g.suffix(), rw = "roofline_rw" + g.suffix();

  // The rooflines first: every later ratio of this group divides by them.
  Row r{read, t};
  r.label = "one read of " + g.suffix().substr(1);
  add(r, [t, total, in](Buffers& b) {
    if (in.size() == 1)
      benchmark::DoNotOptimize(read_sum(t, b.in(in[0]).data(), total));
    else
      benchmark::DoNotOptimize(read_sum(t, b.in(in[0]).data(), b.in(in[1]).data(), total));
  });
  r = Row{rw, t};
  r.label = "read of " + g.suffix().substr(1) + " + one N x C write";
  r.writes = true;
  add(r, [t, total, in](Buffers& b) {
    if (in.size() == 1)
      read_write(t, b.in(in[0]).data(), b.out->data(), total);
    else
      read_write(t, b.in(in[0]).data(), b.in(in[1]).data(), b.out->data(), total);
    benchmark::DoNotOptimize(b.out->data());
  });

  for (const Loss* lp : g.members) {
    const Loss& l = *lp;
    const bool writes_fwd = l.kind == Kind::matrix;
#ifdef XENT_BENCH_WITH_TORCH
    const std::string torch_fwd = "torch_" + l.name + "_fwd", torch_bwd = "torch_" + l.name + "_fwd_bwd";
    r = Row{torch_fwd, t};
    r.label = l.torch_call;
    r.is_torch = true;
    r.writes = writes_fwd;
    add(r, [lp](Buffers& b) {
      torch::NoGradGuard no_grad;
      auto out = lp->torch(b, view(b.in(lp->wrt())));
      benchmark::DoNotOptimize(out.data_ptr());
    });
    if (l.grad && l.torch_backward) {
      // The gradient is dropped after each step (zero_grad(set_to_none=True)): every iteration
      // allocates it afresh, as a training step does.
      r = Row{torch_bwd, t};
      r.label = l.torch_call + " + backward";
      r.is_torch = true;
      add(r, [lp](Buffers& b) {
        auto leaf = view(b.in(lp->wrt())).requires_grad_(true);
        auto loss = lp->torch(b, leaf);
        (loss.dim() ? loss.sum() : loss).backward();
        benchmark::DoNotOptimize(leaf.grad().data_ptr());
      });
    }
#else
    const std::string torch_fwd, torch_bwd;
#endif
    r = Row{"xent_" + l.name + "_fwd", t, writes_fwd ? rw : read, torch_fwd};
    r.label = l.fwd_call;
    r.writes = writes_fwd;
    add(r, [lp, t](Buffers& b) { benchmark::DoNotOptimize(lp->fwd(b, t)); });
    if (l.grad) {
      r = Row{"xent_" + l.name + "_fwd_grad", t, rw, l.torch_backward ? torch_bwd : std::string()};
      r.label = l.grad_call + " into a touched buffer";
      r.writes = true;
      add(r, [lp, t](Buffers& b) {
        benchmark::DoNotOptimize(lp->grad(b, t, *b.out));
        benchmark::DoNotOptimize(b.out->data());
      });
    }
  }
}

std::vector<Group> groups_of(const std::vector<const Loss*>& selected) {
  std::vector<Group> gs;
  for (const Loss* l : selected) {
    if (gs.empty() || gs.back().in != l->in) gs.push_back(Group{l->in, {}});
    gs.back().members.push_back(l);
  }
  return gs;
}

// ---------------------------------------------------------------------------------------------
// --xent_rss: one loss, one mode, once

int run_rss(const std::string& spec, Shape s, int threads) {
  const std::size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon), mode = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const Loss* lp = nullptr;
  for (const Loss& l : losses())
    if (l.name == name) lp = &l;
  if (!lp) {
    std::fprintf(stderr, "xent_bench_losses: unknown loss '%s' in --xent_rss\n", name.c_str());
    return 1;
  }
  const Loss& l = *lp;
  const long before = status_kib("VmRSS");
  Buffers b(s);
  b.require(l.in);
  // The caller's output buffer: allocated, not touched, so what the call writes into it counts.
  if (mode == "fwd_grad" || (mode == "fwd" && l.kind == Kind::matrix) || (mode == "torch_fwd" && l.kind == Kind::matrix)) {
    b.out = std::make_unique<Mat>(s.c, s.n);
#ifdef XENT_BENCH_WITH_TORCH
    b.out_t = torch::from_blob(b.out->data(), {s.n, s.c}, torch::kFloat);
#endif
  }
  const long inputs = status_kib("VmRSS");
  // Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
  bool reset = false;
  {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.flush();
    reset = bool(f);
  }
  double value = 0;
  try {
    if (mode == "inputs") {
    } else if (mode == "fwd") {
      value = l.fwd(b, threads);
    } else if (mode == "fwd_grad" && l.grad) {
      value = l.grad(b, threads, *b.out);
#ifdef XENT_BENCH_WITH_TORCH
    } else if (mode == "torch_fwd") {
      at::set_num_threads(threads);
      torch::NoGradGuard no_grad;
      auto r = l.torch(b, view(b.in(l.wrt())));
      value = r.dim() ? r.sum().item<double>() : r.item<double>();
    } else if (mode == "torch_fwd_bwd" && l.torch_backward) {
      at::set_num_threads(threads);
      auto leaf = view(b.in(l.wrt())).requires_grad_(true);
      auto r = l.torch(b, leaf);
      auto loss = r.dim() ? r.sum() : r;
      loss.backward();
      value = loss.item<double>();
      benchmark::DoNotOptimize(leaf.grad().data_ptr());
#endif
    } else {
      std::fprintf(stderr, "xent_bench_losses: mode '%s' does not exist for %s in this build\n", mode.c_str(), name.c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xent_bench_losses: %s:%s threw: %s\n", name.c_str(), mode.c_str(), e.what());
    return 2;
  }
  std::printf("xent_rss loss=%s mode=%s shape=%s threads=%d rss_start_kib=%ld rss_inputs_kib=%ld hwm_kib=%ld hwm_reset=%d value=%.9g\n",
              name.c_str(), mode.c_str(), s.name().c_str(), threads, before, inputs, status_kib("VmHWM"), reset ? 1 : 0, value);
  return 0;
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

void list_losses() {
  for (const Loss& l : losses()) {
    std::string in;
    for (Input i : l.in) in += std::string(in.empty() ? "" : ",") + input_names[i];
    std::printf("%s\tinputs=%s\n  fwd: %s\n  fwd_grad: %s\n  torch: %s\n", l.name.c_str(), in.c_str(), l.fwd_call.c_str(),
                l.grad ? l.grad_call.c_str() : "none (its output is N x C: no gradient row)", l.torch_call.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* env = std::getenv("XENT_BENCH_SMOKE")) smoke = env[0] != '\0' && std::strcmp(env, "0") != 0;
  rss_flags rss;
  std::vector<Shape> shapes;
  std::vector<std::string> only;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const char* v = nullptr;
    if (std::strcmp(argv[i], "--xent_smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--xent_no_check") == 0) {
      check_enabled = false;
    } else if (std::strcmp(argv[i], "--xent_list") == 0) {
      list_losses();
      return 0;
    } else if (starts_with(argv[i], "--xent_shapes=", &v)) {
      for (const std::string& sh : split_list(v)) {
        Shape s{0, 0};
        if (!parse_shape(sh.c_str(), s.n, s.c)) {
          std::fprintf(stderr, "xent_bench_losses: --xent_shapes expects NxC,NxC,..., got '%s'\n", v);
          return 1;
        }
        shapes.push_back(s);
      }
    } else if (starts_with(argv[i], "--xent_losses=", &v)) {
      only = split_list(v);
    } else if (const int taken = rss.take(argv[i], "xent_bench_losses"); taken != 0) {
      if (taken < 0) return 1;
    } else {
      args.push_back(argv[i]);
    }
  }
#ifdef XENT_BENCH_WITH_TORCH
  at::set_num_threads(1);
  at::set_num_interop_threads(1);
#endif
  if (!rss.mode.empty()) return run_rss(rss.mode, Shape{rss.n, rss.c}, rss.threads);

  std::vector<const Loss*> selected;
  for (const std::string& name : only)
    if (std::none_of(losses().begin(), losses().end(), [&](const Loss& l) { return l.name == name; })) {
      std::fprintf(stderr, "xent_bench_losses: unknown loss '%s' (--xent_list lists them)\n", name.c_str());
      return 1;
    }
  for (const Loss& l : losses())
    if (only.empty() || std::find(only.begin(), only.end(), l.name) != only.end()) selected.push_back(&l);

  int bench_argc = int(args.size());
  add_common_context(smoke);
  for (const Loss& l : losses()) {
    benchmark::AddCustomContext("call." + l.name + ".fwd", l.fwd_call);
    benchmark::AddCustomContext("call." + l.name + ".fwd_grad", l.grad ? l.grad_call : "none (its output is N x C: no gradient row)");
    benchmark::AddCustomContext("call." + l.name + ".torch", l.torch_call);
    benchmark::AddCustomContext("call." + l.name + ".kind",
                                l.kind == Kind::scalar ? "scalar" : l.kind == Kind::matrix ? "matrix" : "per_sample");
    std::string in;
    for (Input i : l.in) in += std::string(in.empty() ? "" : ",") + input_names[i];
    benchmark::AddCustomContext("call." + l.name + ".inputs", in);
  }

  std::string order;
  for (const Loss& l : losses()) order += (order.empty() ? "" : ",") + l.name;
  benchmark::AddCustomContext("losses", order);
  benchmark::AddCustomContext("rooflines", "read: one vectorised pass over the loss's same-shape inputs (two streams for two); "
                                           "rw: that read plus one N x C write into a touched buffer");

  const std::vector<Group> groups = groups_of(selected);
  const bool default_shapes = shapes.empty();
  if (default_shapes) shapes = smoke ? smoke_shapes : full_shapes;
  for (const Shape& s : shapes)
    for (const Group& g : groups)
      for (int t : thread_counts) register_group(s, g, t);
  if (default_shapes && !smoke) {
    std::vector<const Loss*> ce;
    for (const Loss* l : selected)
      if (l->name == "ce") ce.push_back(l);
    for (const Shape& s : ce_extra_shapes)
      for (const Group& g : groups_of(ce))
        for (int t : thread_counts) register_group(s, g, t);
  }
  start_thread_team();

  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (failed) {
    std::fprintf(stderr, "xent_bench_losses: disagreements or errors (see above)\n");
    return 2;
  }
  return 0;
}
