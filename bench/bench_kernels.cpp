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

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#include <torch/version.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <time.h>
#include <type_traits>
#include <vector>

namespace {

using Eigen::Index;
using targets_t = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

// The 2-thread rows need OpenMP in the bench itself (the rooflines split their pass across a team);
// without it only the 1-thread rows exist.
#ifdef _OPENMP
const std::vector<int> thread_counts = {1, 2};
#else
const std::vector<int> thread_counts = {1};
#endif

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
    float* x = logits.data();
    const Index total = s.logits();
    const double two_pi = 6.283185307179586;
    for (Index i = 0; i < total; i += 2) {  // Box-Muller: two normals per pair of uniforms
      const double r = 3.0 * std::sqrt(-2.0 * std::log(rng.uniform())), a = two_pi * rng.uniform();
      x[i] = float(r * std::cos(a));
      if (i + 1 < total) x[i + 1] = float(r * std::sin(a));
    }
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
// The rooflines. Written over Eigen's packets directly (not xent's internal adapter, which the
// kernels may change): the same ISA as the kernels they bound, from the same -march flags.

namespace pk {
using P = Eigen::internal::packet_traits<float>::type;
constexpr Index size = Eigen::internal::packet_traits<float>::size;
// Unaligned packet loads (intrinsics: valid whatever the bytes hold, so the bf16 roofline may read
// its buffer as floats); the scalar tails copy bytes for the same reason.
inline P load(const float* p) { return Eigen::internal::ploadu<P>(p); }
inline float scalar(const float* p) {
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace pk

// One vectorised pass that reads every logit: a sum with 8 independent accumulators, so the add
// latency never limits it and only the memory system does.
float read_sum(const float* x, Index n) {
  using Eigen::internal::padd;
  constexpr Index ps = pk::size;
  pk::P a0 = Eigen::internal::pset1<pk::P>(0.f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  Index i = 0;
  for (; i + 8 * ps <= n; i += 8 * ps) {
    a0 = padd(a0, pk::load(x + i));
    a1 = padd(a1, pk::load(x + i + ps));
    a2 = padd(a2, pk::load(x + i + 2 * ps));
    a3 = padd(a3, pk::load(x + i + 3 * ps));
    a4 = padd(a4, pk::load(x + i + 4 * ps));
    a5 = padd(a5, pk::load(x + i + 5 * ps));
    a6 = padd(a6, pk::load(x + i + 6 * ps));
    a7 = padd(a7, pk::load(x + i + 7 * ps));
  }
  float s = Eigen::internal::predux(padd(padd(padd(a0, a1), padd(a2, a3)), padd(padd(a4, a5), padd(a6, a7))));
  for (; i < n; ++i) s += pk::scalar(x + i);
  return s;
}

// One pass that reads every logit and writes one value per logit into an already touched buffer.
void read_write(const float* x, float* y, Index n) {
  using Eigen::internal::padd;
  using Eigen::internal::pstoreu;
  constexpr Index ps = pk::size;
  const pk::P one = Eigen::internal::pset1<pk::P>(1.f);
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    pstoreu(y + i, padd(pk::load(x + i), one));
    pstoreu(y + i + ps, padd(pk::load(x + i + ps), one));
    pstoreu(y + i + 2 * ps, padd(pk::load(x + i + 2 * ps), one));
    pstoreu(y + i + 3 * ps, padd(pk::load(x + i + 3 * ps), one));
  }
  for (; i < n; ++i) y[i] = x[i] + 1.f;
}

// The compute floor of a one-pass log-sum-exp: one read pass that takes Eigen's packet exp of every
// logit and sums the results. The shift keeps the argument non-positive for randn * 3 logits, as
// x - max is in the kernels.
float exp_sum(const float* x, Index n) {
  using Eigen::internal::padd;
  using Eigen::internal::pexp;
  using Eigen::internal::psub;
  constexpr Index ps = pk::size;
  const pk::P shift = Eigen::internal::pset1<pk::P>(40.f);
  pk::P a0 = Eigen::internal::pset1<pk::P>(0.f), a1 = a0, a2 = a0, a3 = a0;
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    a0 = padd(a0, pexp(psub(pk::load(x + i), shift)));
    a1 = padd(a1, pexp(psub(pk::load(x + i + ps), shift)));
    a2 = padd(a2, pexp(psub(pk::load(x + i + 2 * ps), shift)));
    a3 = padd(a3, pexp(psub(pk::load(x + i + 3 * ps), shift)));
  }
  float s = Eigen::internal::predux(padd(padd(a0, a1), padd(a2, a3)));
  for (; i < n; ++i) s += std::exp(x[i] - 40.f);
  return s;
}

// Runs part(t, begin, end) on `threads` OpenMP threads, each over a contiguous share of [0, n)
// that starts on a 64-byte line (a multiple of 16 floats), so no line is shared between writers.
void split(int threads, Index n, const std::function<void(int, Index, Index)>& part) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      const Index share = ((n + team - 1) / team + 15) / 16 * 16;
      const Index begin = std::min(n, t * share), end = std::min(n, begin + share);
      part(t, begin, end);
    }
    return;
  }
#endif
  (void)threads;
  part(0, 0, n);
}

float read_sum(int threads, const float* x, Index n) {
  std::vector<float> parts(std::size_t(std::max(threads, 1)), 0.f);
  split(threads, n, [&](int t, Index begin, Index end) { parts[std::size_t(t)] = read_sum(x + begin, end - begin); });
  float s = 0;
  for (float p : parts) s += p;
  return s;
}

void read_write(int threads, const float* x, float* y, Index n) {
  split(threads, n, [&](int, Index begin, Index end) { read_write(x + begin, y + begin, end - begin); });
}

// ---------------------------------------------------------------------------------------------
// Timing and ratios

struct Clocks {
  double process_cpu, wall;  // ns
};

Clocks clocks_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  const double cpu = double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return {cpu, double(ts.tv_sec) * 1e9 + double(ts.tv_nsec)};
}

double load_average_1min() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

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

struct Timing {
  double ns = 0;       // ns/logit on the row's own clock
  double ns_wall = 0;  // ns/logit on the wall clock
};

// The last timed run of each row in this process. Google Benchmark's final call of a benchmark
// function is the one it reports, so this holds the reported figure.
std::map<std::string, Timing>& latest() {
  static std::map<std::string, Timing> m;
  return m;
}

const Timing* latest_of(const std::string& key) {
  auto it = latest().find(key);
  return it == latest().end() ? nullptr : &it->second;
}

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
  double cpu = 0, wall = 0;
  for (auto _ : state) {
    if (prepare) {
      state.PauseTiming();
      prepare(b);
      state.ResumeTiming();
    }
    const Clocks c0 = clocks_now();
    body(b);
    benchmark::ClobberMemory();
    const Clocks c1 = clocks_now();
    cpu += c1.process_cpu - c0.process_cpu;
    wall += c1.wall - c0.wall;
  }
  const double logits = double(state.iterations()) * double(s.logits());
  const Timing me{(r.threads == 1 ? cpu : wall) / logits, wall / logits};
  latest()[r.key(s)] = me;
  state.counters["ns_per_logit"] = me.ns;
  state.counters["ns_per_logit_wall"] = me.ns_wall;
  state.counters["cpu_per_wall"] = wall > 0 ? cpu / wall : 0;  // ~ the threads that really ran
  state.counters["GB_per_s_logits"] = 4.0 / me.ns;
  state.counters["load1"] = load_average_1min();
  if (r.roofline)
    if (const Timing* t = latest_of(std::string(r.roofline) + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
      state.counters[std::strcmp(r.roofline, "rw_roofline") == 0 ? "x_rw_roofline" : "x_read_roofline"] = me.ns / t->ns;
  if (r.torch)
    if (const Timing* t = latest_of(std::string(r.torch) + "/" + s.name() + "/threads:" + std::to_string(r.threads)))
      state.counters["speedup_vs_torch"] = t->ns / me.ns;
  if (r.threads > 1)
    if (const Timing* t = latest_of(r.key(s, 1))) state.counters["speedup_vs_1_thread"] = t->ns_wall / me.ns_wall;
  if (r.label) state.SetLabel(r.label);
}

// ---------------------------------------------------------------------------------------------
// Agreement: the benchmarks time kernels that compute the same thing; check that they do, on
// every shape, before any of its rows is timed.

bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::abs(b)); }

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

long status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::size_t len = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, len, field) == 0 && line.size() > len && line[len] == ':') return std::atol(line.c_str() + len + 1);
  return -1;
}

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

std::string eigen_version() {
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
}

bool starts_with(const char* s, const char* prefix, const char** rest) {
  const std::size_t n = std::strlen(prefix);
  if (std::strncmp(s, prefix, n) != 0) return false;
  *rest = s + n;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  if (const char* env = std::getenv("XENT_BENCH_SMOKE")) smoke = env[0] != '\0' && std::strcmp(env, "0") != 0;
  std::string rss_mode;
  Shape rss_shape{4096, 32000};
  int rss_threads = 1;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const char* v = nullptr;
    if (std::strcmp(argv[i], "--xent_smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--xent_no_check") == 0) {
      check_enabled = false;
    } else if (starts_with(argv[i], "--xent_rss=", &v)) {
      rss_mode = v;
    } else if (starts_with(argv[i], "--xent_rss_shape=", &v)) {
      long long n = 0, c = 0;
      if (std::sscanf(v, "%lldx%lld", &n, &c) != 2 || n <= 0 || c <= 0) {
        std::fprintf(stderr, "xent_bench: --xent_rss_shape expects NxC, got '%s'\n", v);
        return 1;
      }
      rss_shape = {Index(n), Index(c)};
    } else if (starts_with(argv[i], "--xent_threads=", &v)) {
      rss_threads = std::atoi(v);
    } else {
      args.push_back(argv[i]);
    }
  }
#ifdef XENT_BENCH_WITH_TORCH
  at::set_num_threads(1);
  at::set_num_interop_threads(1);
#endif
  if (!rss_mode.empty()) return run_rss(rss_mode, rss_shape, rss_threads);

  int bench_argc = int(args.size());
  benchmark::AddCustomContext("xent_shapes", smoke ? "smoke" : "full");
  benchmark::AddCustomContext("eigen_version", eigen_version());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
#ifdef _OPENMP
  benchmark::AddCustomContext("openmp", std::to_string(_OPENMP));
#else
  benchmark::AddCustomContext("openmp", "none (1-thread rows only)");
#endif
  benchmark::AddCustomContext("bf16_rows", "yes");
  benchmark::AddCustomContext("clocks", "1-thread rows: process CPU time; 2-thread rows: wall clock");
#ifdef XENT_BENCH_WITH_TORCH
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
#else
  benchmark::AddCustomContext("torch_version", "none (built without libtorch)");
#endif

  for (const Shape& s : smoke ? smoke_shapes : full_shapes)
    for (int t : thread_counts) register_rows(s, t);
#ifdef _OPENMP
  // Start the team before anything is timed (the first parallel region creates its threads).
#pragma omp parallel num_threads(thread_counts.back())
  benchmark::DoNotOptimize(omp_get_thread_num());
#endif

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
