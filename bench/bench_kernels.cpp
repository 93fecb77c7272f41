// xent's kernels against the memory rooflines and libtorch, on the same buffers in one run.
//
// Every benchmark of a shape reads the same logits (fp32, randn * 3, torch [N, C] = Eigen C x N
// column-major) and targets (int64), built once per shape. Per shape the rooflines run first, then
// libtorch, then xent, so each xent result can report its ratio to timings taken minutes (not runs)
// apart. docs/performance.md is written by bench/run_bench.py from the medians of one such run.
//
// Flags of our own (removed before Google Benchmark sees the command line):
//   --xent_smoke     small shapes only (also: XENT_BENCH_SMOKE=1 in the environment), for ctest
//   --xent_no_check  skip the per-shape agreement check (which runs torch's cross_entropy), so that
//                    a single-benchmark run under /usr/bin/time -v shows that kernel's peak RSS only

#include <xent/xent.hpp>
// The roofline loops use the same packets (and so the same ISA) as the kernels they bound.
#include <xent/detail/packet.hpp>

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#include <torch/version.h>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <time.h>
#include <vector>

namespace {

using Eigen::Index;

struct Shape {
  Index n;  // samples
  Index c;  // classes
  Index logits() const { return n * c; }
  std::string name() const { return "N:" + std::to_string(n) + "/C:" + std::to_string(c); }
};

// The shapes of docs/performance.md: an LLM vocabulary at two batch sizes, ImageNet-sized C, a
// decode-sized batch over a 128K vocabulary, and a tiny C with a huge N (the per-sample overhead).
const std::vector<Shape> full_shapes = {{4096, 32000}, {1024, 128256}, {65536, 1000}, {16, 128256}, {1048576, 10}};
const std::vector<Shape> smoke_shapes = {{64, 1000}, {16, 4096}, {512, 10}};

bool check_enabled = true;
bool failed = false;  // a disagreement between kernels: main returns non-zero (the smoke test fails)

// ---------------------------------------------------------------------------------------------
// The buffers of one shape

// splitmix64: fast, seedable, and the same bytes on every machine (std::normal_distribution is not).
struct splitmix64 {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // In (0, 1]: log() of it is finite.
  double uniform() { return (double(next() >> 11) + 1.0) * 0x1.0p-53; }
};

struct Buffers {
  Shape shape{0, 0};
  Eigen::MatrixXf logits;                 // C x N: sample j's classes contiguous, as torch [N, C]
  std::vector<std::int64_t> targets;      // N, in [0, C)
  Eigen::VectorXf per_sample;             // N: logsumexp output
  std::unique_ptr<Eigen::MatrixXf> out;   // C x N, only for the kernels that write (see out_buffer)
#ifdef XENT_BENCH_WITH_TORCH
  torch::Tensor x, t, x_grad;  // views of logits / targets (from_blob: no copy)
  torch::Tensor out_t;         // view of *out, once it exists
#endif

  explicit Buffers(Shape s) : shape(s), logits(s.c, s.n), targets(std::size_t(s.n)), per_sample(s.n) {
    splitmix64 rng{0x5eed0000ULL + std::uint64_t(s.n) * 31 + std::uint64_t(s.c)};
    float* x = logits.data();
    const Index total = s.logits();
    const double two_pi = 6.283185307179586;
    for (Index i = 0; i < total; i += 2) {  // Box-Muller: two normals per pair of uniforms
      const double r = 3.0 * std::sqrt(-2.0 * std::log(rng.uniform())), a = two_pi * rng.uniform();
      x[i] = float(r * std::cos(a));
      if (i + 1 < total) x[i + 1] = float(r * std::sin(a));
    }
    for (auto& t : targets) t = std::int64_t(rng.next() % std::uint64_t(s.c));
#ifdef XENT_BENCH_WITH_TORCH
    this->x = torch::from_blob(logits.data(), {s.n, s.c}, torch::kFloat);
    t = torch::from_blob(targets.data(), {s.n}, torch::kLong);
    x_grad = torch::from_blob(logits.data(), {s.n, s.c}, torch::kFloat).requires_grad_(true);
#endif
  }

  // The output of the writing kernels: allocated and touched (so no page faults are timed) on first
  // use only, so that a forward-only run's peak RSS holds the logits and nothing of this size.
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
// The rooflines

namespace simd = xent::detail::simd;

// One vectorised pass that reads every logit: a sum with 8 independent accumulators, so the add
// latency never limits it and only the memory system does.
float read_sum(const float* x, Index n) {
  using P = simd::packet<float>;
  constexpr Index ps = simd::packet_size<float>;
  P a0 = simd::pset1<P>(0.f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  Index i = 0;
  for (; i + 8 * ps <= n; i += 8 * ps) {
    a0 = simd::padd(a0, simd::load<P>(x + i));
    a1 = simd::padd(a1, simd::load<P>(x + i + ps));
    a2 = simd::padd(a2, simd::load<P>(x + i + 2 * ps));
    a3 = simd::padd(a3, simd::load<P>(x + i + 3 * ps));
    a4 = simd::padd(a4, simd::load<P>(x + i + 4 * ps));
    a5 = simd::padd(a5, simd::load<P>(x + i + 5 * ps));
    a6 = simd::padd(a6, simd::load<P>(x + i + 6 * ps));
    a7 = simd::padd(a7, simd::load<P>(x + i + 7 * ps));
  }
  float s = simd::predux(simd::padd(simd::padd(simd::padd(a0, a1), simd::padd(a2, a3)),
                                    simd::padd(simd::padd(a4, a5), simd::padd(a6, a7))));
  for (; i < n; ++i) s += x[i];
  return s;
}

// One pass that reads every logit and writes one value per logit into an already touched buffer.
void read_write(const float* x, float* y, Index n) {
  using P = simd::packet<float>;
  constexpr Index ps = simd::packet_size<float>;
  const P one = simd::pset1<P>(1.f);
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    simd::store(y + i, simd::padd(simd::load<P>(x + i), one));
    simd::store(y + i + ps, simd::padd(simd::load<P>(x + i + ps), one));
    simd::store(y + i + 2 * ps, simd::padd(simd::load<P>(x + i + 2 * ps), one));
    simd::store(y + i + 3 * ps, simd::padd(simd::load<P>(x + i + 3 * ps), one));
  }
  for (; i < n; ++i) y[i] = x[i] + 1.f;
}

// The compute floor of a one-pass log-sum-exp: one read pass that takes xent's packet exp (Eigen's
// pexp plus the underflow flush) of every logit and sums the results. The shift keeps the argument
// non-positive for randn * 3 logits, as x - max is in the kernels.
float exp_sum(const float* x, Index n) {
  using P = simd::packet<float>;
  constexpr Index ps = simd::packet_size<float>;
  const P shift = simd::pset1<P>(40.f);
  P a0 = simd::pset1<P>(0.f), a1 = a0, a2 = a0, a3 = a0;
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    a0 = simd::padd(a0, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i), shift)));
    a1 = simd::padd(a1, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + ps), shift)));
    a2 = simd::padd(a2, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + 2 * ps), shift)));
    a3 = simd::padd(a3, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + 3 * ps), shift)));
  }
  float s = simd::predux(simd::padd(simd::padd(a0, a1), simd::padd(a2, a3)));
  for (; i < n; ++i) s += simd::exp_nonpositive_scalar(x[i] - 40.f);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Timing and ratios

// ns/logit of the last timed run of each "kernel/shape" in this process. Google Benchmark's final
// call of a benchmark function is the one it reports, so this holds the reported figure.
std::map<std::string, double>& latest() {
  static std::map<std::string, double> m;
  return m;
}

struct Kernel {
  const char* name;
  const char* read_ref;   // the roofline it is held to
  const char* rw_ref;     // the read+write roofline, for the kernels that write (or nullptr)
  const char* torch_ref;  // the libtorch kernel computing the same thing (or nullptr)
  const char* label;
  bool writes = false;  // writes N x C values: the output buffer is allocated before timing
};

double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

// Times body(buffers) and reports ns/logit and the ratios to the references of the same shape
// measured earlier in this run. x_* are "times the reference's time" (lower is better; the
// rooflines are 1.0 at best); speedup_vs_* is "reference time / this time" (higher is better).
//
// ns_per_logit is the benchmark thread's CPU time (user + system, so torch's page faults count):
// on a shared 2-core machine the wall clock also counts the time other jobs held the core, which
// moves ratios by tens of percent. Everything runs on this one thread (xent is single-threaded,
// torch has set_num_threads(1)). ns_per_logit_wall is the wall-clock figure, for comparison.
template <class Body>
void timed(benchmark::State& state, const Kernel& k, Shape s, Body&& body) {
  Buffers& b = buffers_for(s);
  if (k.writes) b.out_buffer();
  const double c0 = thread_cpu_ns();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body(b);
    benchmark::ClobberMemory();
  }
  const auto t1 = std::chrono::steady_clock::now();
  const double c1 = thread_cpu_ns();
  const double logits = double(state.iterations()) * double(s.logits());
  const double ns = (c1 - c0) / logits;
  latest()[std::string(k.name) + "/" + s.name()] = ns;
  state.counters["ns_per_logit"] = ns;
  state.counters["ns_per_logit_wall"] = std::chrono::duration<double, std::nano>(t1 - t0).count() / logits;
  state.counters["GB_per_s_read"] = 4.0 / ns;
  auto ref = [&](const char* other) -> double {
    if (!other) return 0;
    auto it = latest().find(std::string(other) + "/" + s.name());
    return it == latest().end() ? 0 : it->second;
  };
  if (const double r = ref(k.read_ref)) state.counters["x_read_roofline"] = ns / r;
  if (const double r = ref(k.rw_ref)) state.counters["x_rw_roofline"] = ns / r;
  if (const double r = ref(k.torch_ref)) state.counters["speedup_vs_torch"] = r / ns;
  if (std::strcmp(k.name, "xent_logsumexp") == 0) {
    if (const double r = ref("torch_ce_fwd")) state.counters["speedup_vs_torch_ce_fwd"] = r / ns;
  }
  if (k.label) state.SetLabel(k.label);
}

// ---------------------------------------------------------------------------------------------
// Agreement: the benchmarks time kernels that compute the same thing; check that they do.

bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::abs(b)); }

void fail(const Shape& s, const std::string& what) {
  std::fprintf(stderr, "xent_bench: %s disagree at %s\n", what.c_str(), s.name().c_str());
  failed = true;
}

void check_agreement(Buffers& b) {
  const Shape s = b.shape;
  xent::logsumexp_into(b.logits, b.per_sample);
  // A double-precision reference on a spread of samples.
  const Index step = std::max<Index>(1, s.n / 16);
  for (Index j = 0; j < s.n; j += step) {
    const float* x = b.logits.col(j).data();
    const double m = *std::max_element(x, x + s.c);
    double sum = 0;
    for (Index k = 0; k < s.c; ++k) sum += std::exp(double(x[k]) - m);
    if (!close(b.per_sample(j), m + std::log(sum), 1e-5)) fail(s, "xent_logsumexp and the double reference");
  }
#ifdef XENT_BENCH_WITH_TORCH
  torch::NoGradGuard no_grad;
  const torch::Tensor lse = torch::logsumexp(b.x, 1);
  const float* tl = lse.data_ptr<float>();
  for (Index j = 0; j < s.n; ++j)
    if (!close(b.per_sample(j), tl[j], 1e-5)) {
      fail(s, "xent_logsumexp and torch::logsumexp");
      break;
    }
  // The stand-in for the cross-entropy forward: mean(lse - x[target]) is torch's loss.
  double loss = 0;
  for (Index j = 0; j < s.n; ++j) loss += double(b.per_sample(j)) - double(b.logits(b.targets[std::size_t(j)], j));
  loss /= double(s.n);
  const double torch_loss = torch::nn::functional::cross_entropy(b.x, b.t).item<double>();
  if (!close(loss, torch_loss, 1e-5)) fail(s, "logsumexp-based cross-entropy and torch's cross_entropy");
#endif
}

// ---------------------------------------------------------------------------------------------
// Registration

void register_shape(Shape s) {
  auto add = [&](const Kernel& k, auto body) {
    benchmark::RegisterBenchmark((std::string(k.name) + "/" + s.name()).c_str(),
                                 [k, s, body](benchmark::State& st) { timed(st, k, s, body); })
        ->Unit(benchmark::kMillisecond);
  };
  const Index total = s.logits();

  // The rooflines first: every later ratio of this shape divides by them.
  add({"read_roofline", nullptr, nullptr, nullptr, "sum of the logits, 8 accumulators"},
      [total](Buffers& b) { benchmark::DoNotOptimize(read_sum(b.logits.data(), total)); });
  add({"rw_roofline", nullptr, nullptr, nullptr, "y = x + 1 into a touched buffer", true}, [total](Buffers& b) {
    read_write(b.logits.data(), b.out_buffer().data(), total);
    benchmark::DoNotOptimize(b.out->data());
  });
  add({"exp_pass", "read_roofline", nullptr, nullptr, "sum of pexp(x - 40): the exp floor of one pass"},
      [total](Buffers& b) { benchmark::DoNotOptimize(exp_sum(b.logits.data(), total)); });

#ifdef XENT_BENCH_WITH_TORCH
  add({"torch_logsumexp", nullptr, nullptr, nullptr, "torch::logsumexp(x, 1)"}, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    auto r = torch::logsumexp(b.x, 1);
    benchmark::DoNotOptimize(r.data_ptr());
  });
  add({"torch_softmax", nullptr, nullptr, nullptr, "at::softmax_out into a touched buffer", true}, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    at::softmax_out(b.out_t, b.x, 1);
    benchmark::DoNotOptimize(b.out_t.data_ptr());
  });
  add({"torch_log_softmax", nullptr, nullptr, nullptr, "at::log_softmax_out into a touched buffer", true}, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    at::log_softmax_out(b.out_t, b.x, 1);
    benchmark::DoNotOptimize(b.out_t.data_ptr());
  });
  add({"torch_ce_fwd", nullptr, nullptr, nullptr, "F::cross_entropy, mean"}, [](Buffers& b) {
    torch::NoGradGuard no_grad;
    auto loss = torch::nn::functional::cross_entropy(b.x, b.t);
    benchmark::DoNotOptimize(loss.data_ptr());
  });
  // The gradient is dropped after each step (torch 2.x's zero_grad(set_to_none=True) default), so
  // every iteration allocates it afresh, as a training step does.
  add({"torch_ce_fwd_bwd", nullptr, nullptr, nullptr, "F::cross_entropy + backward, grad set to none"},
      [](Buffers& b) {
        auto loss = torch::nn::functional::cross_entropy(b.x_grad, b.t);
        loss.backward();
        benchmark::DoNotOptimize(b.x_grad.grad().data_ptr());
        b.x_grad.mutable_grad().reset();
      });
#endif

  add({"xent_logsumexp", "read_roofline", nullptr, "torch_logsumexp",
       "stand-in for the CE forward until the fused CE lands"},
      [](Buffers& b) {
        xent::logsumexp_into(b.logits, b.per_sample);
        benchmark::DoNotOptimize(b.per_sample.data());
      });
  add({"xent_softmax", "read_roofline", "rw_roofline", "torch_softmax", nullptr, true}, [](Buffers& b) {
    xent::softmax_into(b.logits, b.out_buffer());
    benchmark::DoNotOptimize(b.out->data());
  });
  add({"xent_log_softmax", "read_roofline", "rw_roofline", "torch_log_softmax", nullptr, true}, [](Buffers& b) {
    xent::log_softmax_into(b.logits, b.out_buffer());
    benchmark::DoNotOptimize(b.out->data());
  });
}

std::string eigen_version() {
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  if (const char* env = std::getenv("XENT_BENCH_SMOKE")) smoke = env[0] != '\0' && std::strcmp(env, "0") != 0;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--xent_smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--xent_no_check") == 0) {
      check_enabled = false;
    } else {
      args.push_back(argv[i]);
    }
  }
  int bench_argc = int(args.size());

  benchmark::AddCustomContext("xent_shapes", smoke ? "smoke" : "full");
  benchmark::AddCustomContext("eigen_version", eigen_version());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
  benchmark::AddCustomContext("threads", "1 (xent is single-threaded; torch: at::set_num_threads(1))");
#ifdef XENT_BENCH_WITH_TORCH
  at::set_num_threads(1);
  at::set_num_interop_threads(1);
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
#else
  benchmark::AddCustomContext("torch_version", "none (built without libtorch)");
#endif

  for (const Shape& s : smoke ? smoke_shapes : full_shapes) register_shape(s);

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
