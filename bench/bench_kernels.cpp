// xent's cross-entropy against the memory rooflines and libtorch, on the same buffers in one run.
//
// Every benchmark of a shape reads the same logits (fp32, randn * 3, torch [N, C] = Eigen C x N
// column-major) and targets (int64), built once per shape. Per shape the rooflines run first, then
// libtorch, then xent, so each xent row can report as counters its ratio to the roofline and to
// libtorch of the same thread count, timed seconds (not runs) apart. docs/performance.md is written
// by bench/run_bench.py from the medians of one such run (it recomputes the ratios from medians).
//
// Clocks: a 1-thread row is timed with the process's CPU time (user + system of every thread, so a
// helper thread the library might start is not missed, and the time other jobs hold the core on this
// shared machine is); a 2-thread row with the wall clock, the only one that shows a speedup. The
// JSON has both for every row (ns_per_logit is the row's own clock, ns_per_logit_wall the wall).
//
// Flags of our own (removed before Google Benchmark sees the command line):
//   --xent_smoke           small shapes only (also: XENT_BENCH_SMOKE=1 in the environment), for ctest
//   --xent_no_check        skip the per-shape agreement check
//   --xent_rss=MODE        no benchmark: build the inputs, run MODE once, print the RSS before and after
//                          building the inputs, exit. run_bench.py runs it under /usr/bin/time -v for the
//                          peak. MODE: inputs (nothing), fwd, fwd_grad, fwd_grad_in_place, torch_fwd,
//                          torch_fwd_bwd.
//   --xent_rss_shape=NxC   the shape of --xent_rss (default 4096x32000)
//   --xent_threads=T       the thread count of --xent_rss (default 1)

#include <xent/xent.hpp>

#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace xent_bench;
using targets_t = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

struct Shape {
  Index n;  // samples
  Index c;  // classes
  Index logits() const { return n * c; }
  std::string name() const { return "N:" + std::to_string(n) + "/C:" + std::to_string(c); }
};

// An LLM vocabulary at two batch sizes, ImageNet-sized C, a decode-sized batch over a 128K
// vocabulary (the vocabulary split across threads), and a tiny C with a huge N (per-sample overhead).
const std::vector<Shape> full_shapes = {{4096, 32000}, {1024, 128256}, {65536, 1000}, {16, 128256}, {1048576, 10}};
const std::vector<Shape> smoke_shapes = {{64, 1000}, {16, 4096}, {512, 10}};

bool check_enabled = true;
bool failed = false;  // a disagreement between kernels: main returns non-zero (the smoke test fails)

xent::cross_entropy_options ce_options(int threads) {
  xent::cross_entropy_options o;
  o.num_threads = threads;
  return o;
}

// ---------------------------------------------------------------------------------------------
// The buffers of one shape

using bf16_matrix = Eigen::Matrix<Eigen::bfloat16, Eigen::Dynamic, Eigen::Dynamic>;

struct Buffers {
  Shape shape{0, 0};
  Eigen::MatrixXf logits;  // C x N: sample j's classes contiguous, as torch [N, C]
  targets_t targets;       // N, in [0, C)
  Eigen::VectorXf per_sample;            // N: logsumexp output
  std::unique_ptr<Eigen::MatrixXf> out;  // C x N, only for the kernels that write (see out_buffer)
  std::unique_ptr<bf16_matrix> bf16;  // the logits rounded to bf16, for the bf16 rows only
#ifdef XENT_BENCH_WITH_TORCH
  torch::Tensor x, t, x_grad;  // views of logits / targets (from_blob: no copy)
  torch::Tensor out_t;         // view of *out, once it exists
#endif

  explicit Buffers(Shape s) : shape(s), logits(s.c, s.n), targets(s.n), per_sample(s.n) {
    splitmix64 rng{0x5eed0000ULL + std::uint64_t(s.n) * 31 + std::uint64_t(s.c)};
    fill_normal(rng, logits.data(), s.logits(), 3.0);
    for (Index j = 0; j < s.n; ++j) targets(j) = std::int64_t(rng.next() % std::uint64_t(s.c));
#ifdef XENT_BENCH_WITH_TORCH
    this->x = torch::from_blob(logits.data(), {s.n, s.c}, torch::kFloat);
    t = torch::from_blob(targets.data(), {s.n}, torch::kLong);
    x_grad = torch::from_blob(logits.data(), {s.n, s.c}, torch::kFloat).requires_grad_(true);
#endif
  }

  // The output of the writing kernels: allocated and touched (so no page faults are timed) on first
  // use only, so that a forward-only run holds the logits and nothing of this size.
  Eigen::MatrixXf& out_buffer() {
    if (!out) {
      out = std::make_unique<Eigen::MatrixXf>(shape.c, shape.n);
      out->setZero();
#ifdef XENT_BENCH_WITH_TORCH
      out_t = torch::from_blob(out->data(), {shape.n, shape.c}, torch::kFloat);
#endif
    }
    return *out;
  }

  bf16_matrix& bf16_logits() {
    if (!bf16) bf16 = std::make_unique<bf16_matrix>(logits.cast<Eigen::bfloat16>());
    return *bf16;
  }
};

void check_agreement(Buffers& b);

// One shape's buffers are alive at a time: the benchmarks are registered shape by shape, so a new
// shape frees the previous one's (up to 1 GiB of logits plus the output) before allocating.
Buffers& buffers_for(Shape s) {
  static std::unique_ptr<Buffers> current;
  if (!current || current->shape.n != s.n || current->shape.c != s.c) {
    current.reset();
    current = std::make_unique<Buffers>(s);
    if (check_enabled) check_agreement(*current);
  }
  return *current;
}

// ---------------------------------------------------------------------------------------------
// Timing and ratios

// One row of a shape's table: a kernel at a thread count.
struct Row {
  std::string kernel;              // e.g. "xent_ce_fwd"
  int threads = 1;                 // 1: timed with process CPU time; 2: with the wall clock
  const char* roofline = nullptr;  // the roofline it is held to (the same thread count), if any
  const char* torch = nullptr;     // the libtorch kernel computing the same result (same thread count)
  const char* label = nullptr;
  bool writes = false;  // writes N x C values: the output buffer is allocated before timing
  bool is_torch = false;
  std::string key(const Shape& s, int t) const { return kernel + "/" + s.name() + "/threads:" + std::to_string(t); }
  std::string key(const Shape& s) const { return key(s, threads); }
};

using Body = std::function<void(Buffers&)>;

// Times body(buffers), after prepare(buffers) when given (untimed, every iteration), and reports
// ns/logit and the ratios to the rows of the same shape measured earlier in this run: x_* are "times
// the roofline's time" (lower is better, 1.0 at best); speedup_* are "the other's time / this time"
// (higher is better).
void timed(benchmark::State& state, const Row& r, Shape s, const Body& body, const Body& prepare) {
  Buffers& b = buffers_for(s);
  if (r.writes) b.out_buffer();
#ifdef XENT_BENCH_WITH_TORCH
  // Also sets OpenMP's default team size on this thread; the xent rows and the rooflines name
  // their thread count explicitly, so this touches only torch.
  if (r.is_torch) at::set_num_threads(r.threads);
#endif
  const Timing me = time_row(
      state, r.key(s), r.threads, double(s.logits()), "logit", [&] { body(b); },
      prepare ? std::function<void()>([&] { prepare(b); }) : std::function<void()>());
  state.counters["GB_per_s_logits"] = 4.0 / me.ns;
  if (r.roofline)
    if (const Timing* t = latest_of(std::string(r.roofline) + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
      state.counters[std::strcmp(r.roofline, "rw_roofline") == 0 ? "x_rw_roofline" : "x_read_roofline"] = me.ns / t->ns;
  // r.torch names the row of the same result; the weight and mask rows name the plain xent forward
  // instead, and their counter says so (speedup_vs_xent_ce_fwd, issue 16's goal: >= 0.95).
  if (r.torch)
    if (const Timing* t = latest_of(std::string(r.torch) + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
      state.counters[std::strncmp(r.torch, "torch_", 6) == 0 ? std::string("speedup_vs_torch") : "speedup_vs_" + std::string(r.torch)] =
          t->ns / me.ns;
  if (r.threads > 1)
    if (const Timing* t = latest_of(r.key(s, 1))) state.counters["speedup_vs_1_thread"] = t->ns_wall / me.ns_wall;
  if (r.label) state.SetLabel(r.label);
}

// ---------------------------------------------------------------------------------------------
// Agreement: the benchmarks time kernels that compute the same thing; check that they do, on
// every shape, before any of its rows is timed.


void fail(const Shape& s, const std::string& what) {
  std::fprintf(stderr, "xent_bench: %s disagree at %s\n", what.c_str(), s.name().c_str());
  failed = true;
}

// Per-sample log-sum-exp and loss in double, from the logits as stored (float or bf16).
template <class T>
struct reference_sample {
  double lse, loss;
  reference_sample(const T* x, Index c, Index target) {
    double m = -INFINITY;
    for (Index k = 0; k < c; ++k) m = std::max(m, double(float(x[k])));
    double sum = 0;
    for (Index k = 0; k < c; ++k) sum += std::exp(double(float(x[k])) - m);
    lse = m + std::log(sum);
    loss = lse - double(float(x[target]));
  }
};

template <class T>
double reference_mean_loss(const T* x, const Buffers& b) {
  double loss = 0;
  for (Index j = 0; j < b.shape.n; ++j) loss += reference_sample<T>(x + j * b.shape.c, b.shape.c, b.targets(j)).loss;
  return loss / double(b.shape.n);
}

template <class L>
double as_double(const L& v) {
  return double(float(v));  // float and Eigen::bfloat16 alike
}

// The gradient of the mean loss, checked on a spread of samples against softmax - one_hot(target), / N.
void check_gradient(const Buffers& b, const Eigen::MatrixXf& grad, const std::string& what) {
  const Shape s = b.shape;
  const Index step = std::max<Index>(1, s.n / 16);
  for (Index j = 0; j < s.n; j += step) {
    const float* x = b.logits.col(j).data();
    const double lse = reference_sample<float>(x, s.c, b.targets(j)).lse;
    for (Index k = 0; k < s.c; ++k) {
      const double ref = (std::exp(double(x[k]) - lse) - (k == b.targets(j) ? 1.0 : 0.0)) / double(s.n);
      if (!(std::abs(grad(k, j) - ref) <= 1e-5 * (std::abs(ref) + 1.0 / double(s.n)))) {
        fail(s, what + " gradient and the double reference");
        return;
      }
    }
  }
}

void check_agreement(Buffers& b) {
  const Shape s = b.shape;
  const double reference = reference_mean_loss(b.logits.data(), b);

  // Forward, at every thread count: the mean loss, and the per-sample losses on a spread of samples.
  const Index step = std::max<Index>(1, s.n / 16);
  for (int t : thread_counts) {
    const std::string tag = " (" + std::to_string(t) + " thread(s))";
    if (!close(xent::cross_entropy(b.logits, b.targets, ce_options(t)).value(), reference, 1e-5))
      fail(s, "xent::cross_entropy" + tag + " and the double reference");
    xent::cross_entropy_options none = ce_options(t);
    none.reduction = xent::reduction::none;
    const auto per_sample = xent::cross_entropy(b.logits, b.targets, none).per_sample();
    for (Index j = 0; j < s.n; j += step)
      if (!close(per_sample(j), reference_sample<float>(b.logits.col(j).data(), s.c, b.targets(j)).loss, 1e-5)) {
        fail(s, "xent::cross_entropy(reduction none)" + tag + " and the double reference");
        break;
      }
    // Forward + gradient: the same loss, and the gradient.
    Eigen::MatrixXf& out = b.out_buffer();
    if (!close(xent::cross_entropy_with_grad(b.logits, b.targets, ce_options(t), out).value(), reference, 1e-5))
      fail(s, "xent::cross_entropy_with_grad" + tag + " loss and the double reference");
    check_gradient(b, out, "xent::cross_entropy_with_grad" + tag);
  }
  Eigen::MatrixXf& out = b.out_buffer();
  out = b.logits;
  if (!close(xent::cross_entropy_with_grad_in_place(out, b.targets, ce_options(1)).value(), reference, 1e-5))
    fail(s, "xent::cross_entropy_with_grad_in_place loss and the double reference");
  check_gradient(b, out, "xent::cross_entropy_with_grad_in_place");

  // The log-sum-exp rows.
  xent::logsumexp_into(b.logits, b.per_sample);
  for (Index j = 0; j < s.n; j += step)
    if (!close(b.per_sample(j), reference_sample<float>(b.logits.col(j).data(), s.c, 0).lse, 1e-5)) {
      fail(s, "xent_logsumexp and the double reference");
      break;
    }

  // bf16 logits are read as they are (fp32 accumulation): held to the double loss of the bf16
  // values themselves. A bf16 result carries 8 bits; a float one is held to float's tolerance.
  {
    const bf16_matrix& x16 = b.bf16_logits();
    const auto loss16 = xent::cross_entropy(x16, b.targets, ce_options(1)).value();
    const double rel = std::is_same_v<std::decay_t<decltype(loss16)>, Eigen::bfloat16> ? 1e-2 : 1e-5;
    if (!close(as_double(loss16), reference_mean_loss(x16.data(), b), rel))
      fail(s, "xent::cross_entropy(bf16) and the double reference");
  }

#ifdef XENT_BENCH_WITH_TORCH
  // The same loss as torch's: what users compare against.
  torch::NoGradGuard no_grad;
  at::set_num_threads(1);
  const double torch_loss = torch::nn::functional::cross_entropy(b.x, b.t).item<double>();
  if (!close(torch_loss, reference, 1e-5)) fail(s, "torch's cross_entropy and the double reference");
  if (!close(xent::cross_entropy(b.logits, b.targets, ce_options(1)).value(), torch_loss, 1e-5))
    fail(s, "xent::cross_entropy and torch's cross_entropy");
#endif
}

// ---------------------------------------------------------------------------------------------
// Registration

// Every row of shape s at `threads` threads. The 1-thread rows of a shape all run before its
// 2-thread rows: after a parallel region OpenMP's idle threads spin for a while (libgomp: ~10 ms),
// which the process CPU time of a 1-thread row run just then would count.
void register_rows(Shape s, int threads) {
  const int t = threads;
  auto add = [&](const Row& r, Body body, Body prepare = nullptr) {
    auto* bm = benchmark::RegisterBenchmark(r.key(s).c_str(), [r, s, body, prepare](benchmark::State& st) {
      timed(st, r, s, body, prepare);
    });
    bm->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
    if (r.threads > 1) bm->UseRealTime();
  };
  const Index total = s.logits();

  // The rooflines first: every later ratio of this shape divides by them.
  Row r{"read_roofline", t};
  r.label = "sum of the logits, 8 accumulators";
  add(r, [t, total](Buffers& b) { benchmark::DoNotOptimize(read_sum(t, b.logits.data(), total)); });
  r = Row{"rw_roofline", t};
  r.label = "y = x + 1 into a touched buffer";
  r.writes = true;
  add(r, [t, total](Buffers& b) {
    read_write(t, b.logits.data(), b.out_buffer().data(), total);
    benchmark::DoNotOptimize(b.out->data());
  });
  if (t == 1) {
    r = Row{"exp_pass", 1, "read_roofline"};
    r.label = "sum of pexp(x - 40): the exp floor of one pass";
    add(r, [total](Buffers& b) { benchmark::DoNotOptimize(exp_sum(b.logits.data(), total)); });
  }
  r = Row{"bf16_read_roofline", t};
  r.label = "sum of the bf16 logits' bytes read as floats";
  add(r, [t, total](Buffers& b) {
    // Half the bytes: N * C / 2 floats (an odd last bf16 is left out).
    benchmark::DoNotOptimize(read_sum(t, reinterpret_cast<const float*>(b.bf16_logits().data()), total / 2));
  });

#ifdef XENT_BENCH_WITH_TORCH
  r = Row{"torch_ce_fwd", t};
  r.label = "F::cross_entropy, mean";
  r.is_torch = true;
  add(r, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    auto loss = torch::nn::functional::cross_entropy(b.x, b.t);
    benchmark::DoNotOptimize(loss.data_ptr());
  });
  // The gradient is dropped after each step (torch 2.x's zero_grad(set_to_none=True) default), so
  // every iteration allocates it afresh, as a training step does.
  r = Row{"torch_ce_fwd_bwd", t};
  r.label = "F::cross_entropy + backward, grad set to none";
  r.is_torch = true;
  add(r, [](Buffers& b) {
    auto loss = torch::nn::functional::cross_entropy(b.x_grad, b.t);
    loss.backward();
    benchmark::DoNotOptimize(b.x_grad.grad().data_ptr());
    b.x_grad.mutable_grad().reset();
  });
#endif

  const auto opts = ce_options(t);
  r = Row{"xent_ce_fwd", t, "read_roofline", "torch_ce_fwd"};
  r.label = "xent::cross_entropy, mean";
  add(r, [opts](Buffers& b) {
    float loss = xent::cross_entropy(b.logits, b.targets, opts).value();
    benchmark::DoNotOptimize(loss);
  });
  // Per-token weights and a mask (every sample kept, so the work is the plain forward's): issue 16's
  // goal is at most 5 % over xent_ce_fwd (counter speedup_vs_xent_ce_fwd >= 0.95; run_bench.py's
  // goal table takes the ratio of the medians).
  auto weighted = std::make_shared<xent::cross_entropy_options>(opts);
  weighted->sample_weight = Eigen::VectorXd::LinSpaced(s.n, 0.5, 1.5);
  r = Row{"xent_ce_fwd_sample_weight", t, "read_roofline", "xent_ce_fwd"};
  r.label = "xent::cross_entropy with sample_weight, mean";
  add(r, [weighted](Buffers& b) {
    float loss = xent::cross_entropy(b.logits, b.targets, *weighted).value();
    benchmark::DoNotOptimize(loss);
  });
  auto masked = std::make_shared<xent::cross_entropy_options>(opts);
  masked->mask = xent::sample_mask::Constant(s.n, true);
  r = Row{"xent_ce_fwd_mask", t, "read_roofline", "xent_ce_fwd"};
  r.label = "xent::cross_entropy with an all-true mask, mean";
  add(r, [masked](Buffers& b) {
    float loss = xent::cross_entropy(b.logits, b.targets, *masked).value();
    benchmark::DoNotOptimize(loss);
  });
  r = Row{"xent_ce_fwd_grad", t, "rw_roofline", "torch_ce_fwd_bwd"};
  r.label = "xent::cross_entropy_with_grad into a touched buffer";
  r.writes = true;
  add(r, [opts](Buffers& b) {
    float loss = xent::cross_entropy_with_grad(b.logits, b.targets, opts, *b.out).value();
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(b.out->data());
  });
  if (t == 1) {
    // The buffer is refilled with the logits before each call, untimed.
    r = Row{"xent_ce_fwd_grad_in_place", 1, "rw_roofline", "torch_ce_fwd_bwd"};
    r.label = "xent::cross_entropy_with_grad_in_place on a copy of the logits";
    r.writes = true;
    add(
        r,
        [opts](Buffers& b) {
          float loss = xent::cross_entropy_with_grad_in_place(*b.out, b.targets, opts).value();
          benchmark::DoNotOptimize(loss);
          benchmark::DoNotOptimize(b.out->data());
        },
        [](Buffers& b) { *b.out = b.logits; });
  }
  r = Row{"xent_ce_fwd_bf16", t, "bf16_read_roofline", "torch_ce_fwd"};
  r.label = "xent::cross_entropy of bf16 logits, mean";
  add(r, [opts](Buffers& b) {
    auto loss = xent::cross_entropy(b.bf16_logits(), b.targets, opts).value();
    benchmark::DoNotOptimize(loss);
  });
  if (t != 1) return;

  // The building blocks, one thread: log-sum-exp, softmax and log-softmax against torch's.
#ifdef XENT_BENCH_WITH_TORCH
  r = Row{"torch_logsumexp", 1};
  r.label = "torch::logsumexp(x, 1)";
  r.is_torch = true;
  add(r, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    auto lse = torch::logsumexp(b.x, 1);
    benchmark::DoNotOptimize(lse.data_ptr());
  });
  r = Row{"torch_softmax", 1};
  r.label = "at::softmax_out into a touched buffer";
  r.is_torch = r.writes = true;
  add(r, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    at::softmax_out(b.out_t, b.x, 1);
    benchmark::DoNotOptimize(b.out_t.data_ptr());
  });
  r = Row{"torch_log_softmax", 1};
  r.label = "at::log_softmax_out into a touched buffer";
  r.is_torch = r.writes = true;
  add(r, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    at::log_softmax_out(b.out_t, b.x, 1);
    benchmark::DoNotOptimize(b.out_t.data_ptr());
  });
#endif
  add(Row{"xent_logsumexp", 1, "read_roofline", "torch_logsumexp"}, [](Buffers& b) {
    xent::logsumexp_into(b.logits, b.per_sample);
    benchmark::DoNotOptimize(b.per_sample.data());
  });
  r = Row{"xent_softmax", 1, "rw_roofline", "torch_softmax"};
  r.writes = true;
  add(r, [](Buffers& b) {
    xent::softmax_into(b.logits, *b.out);
    benchmark::DoNotOptimize(b.out->data());
  });
  r = Row{"xent_log_softmax", 1, "rw_roofline", "torch_log_softmax"};
  r.writes = true;
  add(r, [](Buffers& b) {
    xent::log_softmax_into(b.logits, *b.out);
    benchmark::DoNotOptimize(b.out->data());
  });
}

// ---------------------------------------------------------------------------------------------
// --xent_rss: one mode, once, for /usr/bin/time -v

int run_rss(const std::string& mode, Shape s, int threads) {
  const long before = status_kib("VmRSS");
  Buffers b(s);
  const long inputs = status_kib("VmRSS");
  const auto opts = ce_options(threads);
  double loss = 0;
  if (mode == "inputs") {
  } else if (mode == "fwd") {
    loss = xent::cross_entropy(b.logits, b.targets, opts).value();
  } else if (mode == "fwd_grad") {
    Eigen::MatrixXf grad(s.c, s.n);  // the caller's buffer: the one N x C output allowed
    loss = xent::cross_entropy_with_grad(b.logits, b.targets, opts, grad).value();
    benchmark::DoNotOptimize(grad.data());
  } else if (mode == "fwd_grad_in_place") {
    loss = xent::cross_entropy_with_grad_in_place(b.logits, b.targets, opts).value();
#ifdef XENT_BENCH_WITH_TORCH
  } else if (mode == "torch_fwd") {
    at::set_num_threads(threads);
    torch::NoGradGuard no_grad;
    loss = torch::nn::functional::cross_entropy(b.x, b.t).item<double>();
  } else if (mode == "torch_fwd_bwd") {
    at::set_num_threads(threads);
    auto l = torch::nn::functional::cross_entropy(b.x_grad, b.t);
    l.backward();
    loss = l.item<double>();
    benchmark::DoNotOptimize(b.x_grad.grad().data_ptr());
#endif
  } else {
    std::fprintf(stderr, "xent_bench: unknown --xent_rss mode '%s'\n", mode.c_str());
    return 1;
  }
  // One line for run_bench.py; /usr/bin/time -v gives the peak of the whole process.
  std::printf("xent_rss mode=%s shape=%s threads=%d rss_start_kib=%ld rss_inputs_kib=%ld hwm_kib=%ld loss=%.9g\n",
              mode.c_str(), s.name().c_str(), threads, before, inputs, status_kib("VmHWM"), loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  if (const char* env = std::getenv("XENT_BENCH_SMOKE")) smoke = env[0] != '\0' && std::strcmp(env, "0") != 0;
  rss_flags rss;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--xent_smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--xent_no_check") == 0) {
      check_enabled = false;
    } else if (const int taken = rss.take(argv[i], "xent_bench"); taken != 0) {
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

  int bench_argc = int(args.size());
  add_common_context(smoke);
  benchmark::AddCustomContext("bf16_rows", "yes");

  for (const Shape& s : smoke ? smoke_shapes : full_shapes)
    for (int t : thread_counts) register_rows(s, t);
  start_thread_team();

  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (failed) {
    std::fprintf(stderr, "xent_bench: kernels disagree (see above)\n");
    return 2;
  }
  return 0;
}
