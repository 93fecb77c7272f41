// xent::linear_cross_entropy against the GEMMs it is made of and, with libtorch, against torch's
// matmul + cross_entropy, on the same buffers in one run.
//
// Two binaries from this file: xent_bench_linear (Eigen's GEMM everywhere) and, when CMake finds a
// BLAS, xent_bench_linear_blas (xent::blas: xent's tile GEMMs and the bare GEMM baselines on the
// BLAS, i.e. cblas_sgemm; libtorch, linked when found, calls the same BLAS on Debian). The BLAS
// binary prints the BLAS's kernel (OpenBLAS: openblas_get_corename(), which OPENBLAS_CORETYPE
// overrides) in the context.
//
// Shapes: hidden D x N (torch [N, D]), weight D x V (torch nn.Linear's [V, D]), fp32, int64 targets;
// hidden ~ U(-sqrt 3, sqrt 3) (unit variance), weight scaled so the logits have standard deviation 3.
//
// Modes (each one a benchmark per shape and thread count):
//   gemm            Z = W^T H, the N x V logits materialised: the baseline of the forward rows
//   gemm_ce         gemm, then xent::cross_entropy(Z, targets)
//   linear_fwd      xent::linear_cross_entropy(H, W, targets)
//   three_gemms     Z = W^T H, grad_H = W dZ, grad_W = H dZ^T: the baseline of the training rows
//   gemm_ce_train   gemm, cross_entropy and cross_entropy_backward into dZ, then the two gradient GEMMs
//   linear_train    xent::linear_cross_entropy_with_grad(H, W, targets, 1, opts, grad_H, grad_W)
//   linear_fwd_bwd  linear_cross_entropy, then linear_cross_entropy_backward (an autograd-style pair)
//   topk_fwd        xent::linear_divergence(H, W, teacher) against a top-k teacher (k = 64 log-probabilities
//                   holding 0.9 of the mass, forward KL): fused linear distillation, baseline gemm
//   topk_train      xent::linear_divergence_with_grad(H, W, teacher, 1, opts, grad_H, grad_W), baseline three_gemms
//   torch_fwd       libtorch: cross_entropy(matmul(H, W^T), targets), no autograd (with libtorch only)
//   torch_train     libtorch: the same with H, W requiring grad, then loss.backward() (autograd)
// With libtorch, linear_fwd also times torch_fwd, and linear_train and linear_fwd_bwd time
// torch_train, in the same iteration: counters x_torch and x_torch_cpu.
// Every iteration of a non-baseline mode also times its baseline on the same buffers, alternating
// which goes first, and reports the ratio as the counter x_gemm or x_3gemm: on a shared machine a
// ratio of two timings taken seconds apart is far steadier than two medians taken minutes apart.
// The _cpu counters are the same ratios of process CPU time (every thread), which time slicing by
// other processes does not inflate: on a loaded machine they are the ones to read for T:1.
//
// Threads: "T:1" runs Eigen's GEMM (or the BLAS), xent and libtorch single-threaded. "T:2" gives the bare GEMMs two OpenMP
// threads (Eigen::setNbThreads(2); only when xent is built with OpenMP) and xent num_threads = 2
// (an OpenMP team of two workers, each calling a single-threaded GEMM); xent::cross_entropy in the
// materialised rows gets num_threads = T as well. The BLAS binary gives the BLAS T threads for the
// bare GEMMs and torch (openblas_set_num_threads); xent holds it at one per tile call by itself.
// libtorch gets at::set_num_threads(T).
//
// Flags of our own (removed before Google Benchmark sees the command line):
//   --xent_smoke          small shapes, and an agreement check of every mode (non-zero exit if any
//                         disagrees); for ctest
//   --xent_mode=NAME      run NAME once on --xent_shape and exit, for /usr/bin/time -v (peak RSS);
//                         NAME may also be "inputs" (allocate and fill the inputs only)
//   --xent_shape=N,D,V    default 2048,2048,32000
//   --xent_threads=T      default 1

#include <xent/xent.hpp>

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <time.h>
#include <vector>

namespace {

using Eigen::Index;

struct Shape {
  Index n, d, v;
  std::string name() const {
    return "N:" + std::to_string(n) + "/D:" + std::to_string(d) + "/V:" + std::to_string(v);
  }
  double gemm_flops() const { return 2.0 * double(n) * double(d) * double(v); }
};

const std::vector<Shape> full_shapes = {{2048, 2048, 32000}, {2048, 2048, 128256}, {512, 1024, 32000}};
constexpr Index topk_k = 64;  // the top-k teacher's classes per sample (fewer when V is smaller)
const std::vector<Shape> smoke_shapes = {{64, 32, 1000}, {37, 24, 517}};

enum class Mode {
  gemm,
  gemm_ce,
  linear_fwd,
  three_gemms,
  gemm_ce_train,
  linear_train,
  linear_fwd_bwd,
  topk_fwd,
  topk_train,
  torch_fwd,
  torch_train
};
const char* const mode_names[] = {"gemm",           "gemm_ce",  "linear_fwd", "three_gemms", "gemm_ce_train", "linear_train",
                                  "linear_fwd_bwd", "topk_fwd", "topk_train", "torch_fwd",   "torch_train"};
#ifdef XENT_BENCH_WITH_TORCH
constexpr int mode_count = 11;
#else
constexpr int mode_count = 9;
#endif

bool is_baseline(Mode m) { return m == Mode::gemm || m == Mode::three_gemms; }
bool is_training(Mode m) {
  return m != Mode::gemm && m != Mode::gemm_ce && m != Mode::linear_fwd && m != Mode::topk_fwd && m != Mode::torch_fwd;
}
bool is_topk(Mode m) { return m == Mode::topk_fwd || m == Mode::topk_train; }
Mode baseline_of(Mode m) { return is_training(m) ? Mode::three_gemms : Mode::gemm; }
bool is_torch(Mode m) { return m == Mode::torch_fwd || m == Mode::torch_train; }
/// The libtorch row a fused row is also compared with (x_torch), or the row itself if none.
Mode torch_of(Mode m) {
#ifdef XENT_BENCH_WITH_TORCH
  if (m == Mode::linear_fwd) return Mode::torch_fwd;
  if (m == Mode::linear_train || m == Mode::linear_fwd_bwd) return Mode::torch_train;
#endif
  return m;
}
bool needs_logits(Mode m) { return m == Mode::gemm || m == Mode::gemm_ce || m == Mode::three_gemms || m == Mode::gemm_ce_train; }
bool needs_grads(Mode m) { return is_training(m) && !is_torch(m); }

/// Smoke runs copy torch's gradients into the buffers, to check them; timed runs leave them in torch.
bool copy_torch_grads = false;

/// Uniform in [-half_width, half_width] from a fixed-seed linear congruential generator: the same
/// inputs in every run, fast enough for a gigabyte of weights.
struct uniform_source {
  std::minstd_rand engine{20240601};
  float operator()(float half_width) {
    return float((double(engine() - engine.min()) / double(engine.max() - engine.min()) * 2 - 1) * half_width);
  }
};

struct Buffers {
  Shape shape{0, 0, 0};
  Eigen::MatrixXf hidden, weight;              // D x N, D x V
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets;
  Eigen::MatrixXf logits, grad_logits;         // V x N, only for the materialised modes
  Eigen::MatrixXf grad_hidden, grad_weight;    // D x N, D x V
  xent::topk_teacher<int, float> teacher;      // k x N log-probabilities, 0.9 of each sample's mass

  Buffers(const Shape& s, bool logits_needed, bool grads_needed) : shape(s) {
    uniform_source rng;
    hidden.resize(s.d, s.n);
    weight.resize(s.d, s.v);
    for (Index i = 0; i < hidden.size(); ++i) hidden.data()[i] = rng(std::sqrt(3.0f));
    const float w = float(3 * std::sqrt(3.0) / std::sqrt(double(s.d)));
    for (Index i = 0; i < weight.size(); ++i) weight.data()[i] = rng(w);
    targets.resize(s.n);
    for (Index j = 0; j < s.n; ++j) targets(j) = std::int64_t(rng.engine() % std::uint64_t(s.v));
    if (logits_needed) logits.setZero(s.v, s.n);
    if (logits_needed && grads_needed) grad_logits.setConstant(s.v, s.n, 1e-3f);
    if (grads_needed) {
      grad_hidden.setZero(s.d, s.n);
      grad_weight.setZero(s.d, s.v);
    }
    const Index k = std::min(topk_k, s.v);
    teacher.values_are = xent::topk_values::log_probs;
    teacher.indices.resize(k, s.n);
    teacher.values.resize(k, s.n);
    std::vector<char> taken(static_cast<std::size_t>(s.v));
    for (Index j = 0; j < s.n; ++j) {
      std::fill(taken.begin(), taken.end(), 0);
      double total = 0;
      for (Index i = 0; i < k; ++i) {
        Index c = Index(rng.engine() % std::uint64_t(s.v));
        while (taken[std::size_t(c)]) c = (c + 1) % s.v;
        taken[std::size_t(c)] = 1;
        teacher.indices(i, j) = int(c);
        teacher.values(i, j) = std::exp(rng(4.0f));
        total += teacher.values(i, j);
      }
      for (Index i = 0; i < k; ++i) teacher.values(i, j) = float(std::log(0.9 * teacher.values(i, j) / total));
    }
  }
};

std::unique_ptr<Buffers> current;  // one shape's buffers at a time (the large shape needs ~4 GB)

Buffers& buffers_for(const Shape& s) {
  if (!current || current->shape.n != s.n || current->shape.d != s.d || current->shape.v != s.v) {
    current.reset();
    current = std::make_unique<Buffers>(s, true, true);
  }
  return *current;
}

void eigen_threads(int threads) {
#ifdef XENT_BENCH_OPENMP
  Eigen::setNbThreads(threads);
#else
  (void)threads;
#endif
}

/// The BLAS's own thread count (OpenBLAS), for the bare GEMMs and libtorch.
void blas_threads(int threads) {
#if defined(XENT_USE_BLAS) && defined(OPENBLAS_VERSION)
  openblas_set_num_threads(threads);
#else
  (void)threads;
#endif
}

/// A bare GEMM of the baselines: c = op(a) op(b), on the BLAS in the BLAS binary (T threads), Eigen's
/// GEMM otherwise (xent::detail::tile_gemm picks; the baseline is not one of xent's tiles).
template <bool TA, bool TB, class C, class A, class B>
void bare_gemm(C& c, const A& a, const B& b) {
  xent::detail::tile_gemm<TA, TB>(c, a, b, false);
}

#ifdef XENT_BENCH_WITH_TORCH
/// torch's F.cross_entropy(H @ W^T, targets) on the bench's buffers (from_blob: no copy); with
/// train, H and W require grad and loss.backward() runs (gradients copied out in smoke runs only).
double torch_run(Buffers& b, int threads, bool train) {
  at::set_num_threads(threads);
  const Shape& s = b.shape;
  auto t = torch::from_blob(b.targets.data(), {s.n}, torch::kLong);
  auto h = torch::from_blob(b.hidden.data(), {s.n, s.d}, torch::kFloat);
  auto w = torch::from_blob(b.weight.data(), {s.v, s.d}, torch::kFloat);
  if (!train) {
    torch::NoGradGuard no_grad;
    return torch::nn::functional::cross_entropy(torch::matmul(h, w.t()), t).item<double>();
  }
  h.requires_grad_(true);
  w.requires_grad_(true);
  auto loss = torch::nn::functional::cross_entropy(torch::matmul(h, w.t()), t);
  loss.backward();
  if (copy_torch_grads) {
    b.grad_hidden = Eigen::Map<const Eigen::MatrixXf>(h.grad().contiguous().data_ptr<float>(), s.d, s.n);
    b.grad_weight = Eigen::Map<const Eigen::MatrixXf>(w.grad().contiguous().data_ptr<float>(), s.d, s.v);
  }
  return loss.item<double>();
}
#endif

/// Runs mode m once; returns the loss (0 for the bare GEMMs) so that nothing is optimised away.
double run_mode(Mode m, Buffers& b, int threads) {
  xent::linear_cross_entropy_options lo;
  lo.num_threads = threads;
  xent::cross_entropy_options co;
  co.num_threads = threads;
  xent::linear_divergence_options dopts;
  dopts.num_threads = threads;
  const bool xent_threads = m == Mode::linear_fwd || m == Mode::linear_train || m == Mode::linear_fwd_bwd || is_topk(m);
  // xent's workers each call a one-thread GEMM; the bare GEMMs get Eigen's own threads (or the
  // BLAS's: xent sets OpenBLAS to one thread during its own calls).
  eigen_threads(xent_threads ? 1 : threads);
  blas_threads(threads);
  switch (m) {
    case Mode::gemm:
      bare_gemm<true, false>(b.logits, b.weight, b.hidden);
      return double(b.logits(0, 0));
    case Mode::gemm_ce:
      bare_gemm<true, false>(b.logits, b.weight, b.hidden);
      return xent::cross_entropy(b.logits, b.targets, co).value();
    case Mode::linear_fwd:
      return xent::linear_cross_entropy(b.hidden, b.weight, b.targets, lo).loss.value();
    case Mode::three_gemms:
      bare_gemm<true, false>(b.logits, b.weight, b.hidden);
      bare_gemm<false, false>(b.grad_hidden, b.weight, b.grad_logits);
      bare_gemm<false, true>(b.grad_weight, b.hidden, b.grad_logits);
      return double(b.logits(0, 0) + b.grad_hidden(0, 0) + b.grad_weight(0, 0));
    case Mode::gemm_ce_train: {
      bare_gemm<true, false>(b.logits, b.weight, b.hidden);
      const double loss = xent::cross_entropy(b.logits, b.targets, co).value();
      xent::cross_entropy_backward(b.logits, b.targets, 1.0f, co, b.grad_logits);
      bare_gemm<false, false>(b.grad_hidden, b.weight, b.grad_logits);
      bare_gemm<false, true>(b.grad_weight, b.hidden, b.grad_logits);
      return loss;
    }
    case Mode::linear_train:
      return xent::linear_cross_entropy_with_grad(b.hidden, b.weight, b.targets, 1.0f, lo, b.grad_hidden,
                                                  b.grad_weight)
          .loss.value();
    case Mode::linear_fwd_bwd: {
      const double loss = xent::linear_cross_entropy(b.hidden, b.weight, b.targets, lo).loss.value();
      xent::linear_cross_entropy_backward(b.hidden, b.weight, b.targets, 1.0f, lo, b.grad_hidden, b.grad_weight);
      return loss;
    }
    case Mode::topk_fwd:
      return xent::linear_divergence(b.hidden, b.weight, b.teacher, dopts).value();
    case Mode::topk_train:
      return xent::linear_divergence_with_grad(b.hidden, b.weight, b.teacher, 1.0f, dopts, b.grad_hidden, b.grad_weight).value();
    case Mode::torch_fwd:
    case Mode::torch_train:
#ifdef XENT_BENCH_WITH_TORCH
      return torch_run(b, threads, m == Mode::torch_train);
#else
      break;
#endif
  }
  return 0;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct timing {
  double wall, cpu;  // seconds; cpu: every thread of the process
};

timing time_of(Mode m, Buffers& b, int threads, double& sink) {
  const double cpu = process_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  sink += run_mode(m, b, threads);
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), process_cpu_seconds() - cpu};
}

void bench_mode(benchmark::State& state, Shape s, Mode m, int threads) {
  Buffers& b = buffers_for(s);
  double sink = 0, ratio_sum = 0, cpu_ratio_sum = 0, base_sum = 0, cpu_sum = 0;
  double torch_ratio_sum = 0, torch_cpu_ratio_sum = 0;
  const bool vs_torch = torch_of(m) != m;
  std::int64_t iteration = 0;
  for (auto _ : state) {
    timing t{}, base{}, torch{};
    if (is_baseline(m)) {
      t = time_of(m, b, threads, sink);
    } else if (iteration % 2 == 0) {
      base = time_of(baseline_of(m), b, threads, sink);
      if (vs_torch) torch = time_of(torch_of(m), b, threads, sink);
      t = time_of(m, b, threads, sink);
    } else {
      t = time_of(m, b, threads, sink);
      if (vs_torch) torch = time_of(torch_of(m), b, threads, sink);
      base = time_of(baseline_of(m), b, threads, sink);
    }
    state.SetIterationTime(t.wall);
    cpu_sum += t.cpu;
    if (!is_baseline(m)) {
      ratio_sum += t.wall / base.wall;
      cpu_ratio_sum += t.cpu / base.cpu;
      base_sum += base.wall;
    }
    if (vs_torch) {
      torch_ratio_sum += t.wall / torch.wall;
      torch_cpu_ratio_sum += t.cpu / torch.cpu;
    }
    ++iteration;
  }
  benchmark::DoNotOptimize(sink);
  const double gemms = (is_training(m) ? 3.0 : 1.0) * s.gemm_flops();
  state.counters["GFLOPS_equiv"] = benchmark::Counter(gemms * double(iteration) / 1e9, benchmark::Counter::kIsRate);
  state.counters["cpu_s"] = benchmark::Counter(cpu_sum, benchmark::Counter::kAvgIterations);
  if (!is_baseline(m)) {
    const std::string base = baseline_of(m) == Mode::gemm ? "x_gemm" : "x_3gemm";
    state.counters[base] = benchmark::Counter(ratio_sum, benchmark::Counter::kAvgIterations);
    state.counters[base + "_cpu"] = benchmark::Counter(cpu_ratio_sum, benchmark::Counter::kAvgIterations);
    state.counters["baseline_s"] = benchmark::Counter(base_sum, benchmark::Counter::kAvgIterations);
  }
  if (vs_torch) {
    state.counters["x_torch"] = benchmark::Counter(torch_ratio_sum, benchmark::Counter::kAvgIterations);
    state.counters["x_torch_cpu"] = benchmark::Counter(torch_cpu_ratio_sum, benchmark::Counter::kAvgIterations);
  }
}

/// Every mode on a small shape: the losses must agree with the materialised one, the gradients
/// of the fused modes with the materialised training's.
bool smoke_check(const Shape& s, int threads) {
  Buffers b(s, true, true);
  double loss[mode_count];
  Eigen::MatrixXf gh_ref, gw_ref;
  double topk_ref = 0;
  Eigen::MatrixXf topk_gh, topk_gw;
  for (int i = 0; i < mode_count; ++i) {
    if (Mode(i) == Mode::topk_fwd) {
      // The materialised reference of the top-k rows: topk_divergence on the logits, its gradient
      // through the two GEMMs.
      bare_gemm<true, false>(b.logits, b.weight, b.hidden);
      xent::divergence_options d;
      d.reduction = xent::reduction::batchmean;
      topk_ref = xent::topk_divergence(b.logits, b.teacher, d).value();
      xent::topk_divergence_backward(b.logits, b.teacher, 1.0f, d, b.grad_logits);
      topk_gh = b.weight * b.grad_logits;
      topk_gw = b.hidden * b.grad_logits.transpose();
    }
    loss[i] = run_mode(Mode(i), b, threads);
    if (Mode(i) == Mode::topk_train) {
      const double eh = (b.grad_hidden - topk_gh).cwiseAbs().maxCoeff() / topk_gh.cwiseAbs().maxCoeff();
      const double ew = (b.grad_weight - topk_gw).cwiseAbs().maxCoeff() / topk_gw.cwiseAbs().maxCoeff();
      if (!(eh < 1e-5 && ew < 1e-5)) {
        std::fprintf(stderr, "bench_linear smoke: %s topk_train T:%d gradients disagree (hidden %g, weight %g)\n",
                     s.name().c_str(), threads, eh, ew);
        return false;
      }
    }
    if (Mode(i) == Mode::gemm_ce_train) {
      gh_ref = b.grad_hidden;
      gw_ref = b.grad_weight;
    }
    if (Mode(i) == Mode::linear_train || Mode(i) == Mode::linear_fwd_bwd || Mode(i) == Mode::torch_train) {
      const double eh = (b.grad_hidden - gh_ref).cwiseAbs().maxCoeff() / gh_ref.cwiseAbs().maxCoeff();
      const double ew = (b.grad_weight - gw_ref).cwiseAbs().maxCoeff() / gw_ref.cwiseAbs().maxCoeff();
      if (!(eh < 1e-5 && ew < 1e-5)) {
        std::fprintf(stderr, "bench_linear smoke: %s %s T:%d gradients disagree (hidden %g, weight %g)\n",
                     s.name().c_str(), mode_names[i], threads, eh, ew);
        return false;
      }
    }
  }
  const double ref = loss[int(Mode::gemm_ce)];
  for (int i = 0; i < mode_count; ++i) {
    const Mode m = Mode(i);
    if (is_baseline(m) || m == Mode::gemm_ce) continue;
    const double want = is_topk(m) ? topk_ref : ref;
    if (!(std::fabs(loss[int(m)] - want) <= 1e-5 * std::fabs(want))) {
      std::fprintf(stderr, "bench_linear smoke: %s %s T:%d loss %.9g, materialised %.9g\n", s.name().c_str(),
                   mode_names[int(m)], threads, loss[int(m)], want);
      return false;
    }
  }
  return true;
}

int run_one(const std::string& name, const Shape& s, int threads) {
  if (name == "inputs") {
    Buffers b(s, false, false);
    std::printf("inputs %s: hidden %.1f MiB, weight %.1f MiB\n", s.name().c_str(),
                double(b.hidden.size()) * 4 / 1048576, double(b.weight.size()) * 4 / 1048576);
    return 0;
  }
  for (int i = 0; i < mode_count; ++i)
    if (name == mode_names[i]) {
      Buffers b(s, needs_logits(Mode(i)), needs_grads(Mode(i)));
      double sink = 0;
      const timing t = time_of(Mode(i), b, threads, sink);
      std::printf("%s %s T:%d: %.3f s (cpu %.3f s), loss %.9g\n", name.c_str(), s.name().c_str(), threads, t.wall, t.cpu,
                  sink);
      return 0;
    }
  std::fprintf(stderr, "bench_linear: unknown --xent_mode=%s\n", name.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::string mode;
  Shape shape = full_shapes[0];
  int threads = 1;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--xent_smoke") {
      smoke = true;
    } else if (a.rfind("--xent_mode=", 0) == 0) {
      mode = a.substr(12);
    } else if (a.rfind("--xent_shape=", 0) == 0) {
      long n = 0, d = 0, v = 0;
      if (std::sscanf(a.c_str() + 13, "%ld,%ld,%ld", &n, &d, &v) != 3 || n < 1 || d < 1 || v < 1) {
        std::fprintf(stderr, "bench_linear: --xent_shape wants N,D,V\n");
        return 2;
      }
      shape = {n, d, v};
    } else if (a.rfind("--xent_threads=", 0) == 0) {
      threads = std::atoi(a.c_str() + 15);
    } else {
      args.push_back(argv[i]);
    }
  }
  if (!mode.empty()) return run_one(mode, shape, threads);

  int bench_argc = int(args.size());
  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 2;
  benchmark::AddCustomContext("xent_shapes", smoke ? "smoke" : "full");
  copy_torch_grads = smoke;
#ifdef XENT_USE_BLAS
  benchmark::AddCustomContext("xent_gemm", "BLAS (XENT_USE_BLAS)");
#ifdef OPENBLAS_VERSION
  // The kernel OpenBLAS chose for this CPU (a KVM guest may be taken for an old core: then set
  // OPENBLAS_CORETYPE, e.g. SkylakeX for an AVX-512 machine).
  benchmark::AddCustomContext("openblas", std::string(OPENBLAS_VERSION) + ", core " + openblas_get_corename() +
                                              ", OPENBLAS_CORETYPE=" +
                                              (std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)"));
#endif
#else
  benchmark::AddCustomContext("xent_gemm", "Eigen");
#endif
#ifdef XENT_BENCH_WITH_TORCH
  {
    // Which BLAS libtorch was built against (its build configuration's BLAS_INFO).
    const std::string config = at::show_config();
    const auto pos = config.find("BLAS_INFO=");
    benchmark::AddCustomContext("torch_blas", pos == std::string::npos ? "?" : config.substr(pos + 10, config.find_first_of(", \n", pos) - pos - 10));
  }
#endif
#ifdef XENT_BENCH_OPENMP
  benchmark::AddCustomContext("xent_openmp", "yes");
  const std::vector<int> thread_counts = {1, 2};
#else
  benchmark::AddCustomContext("xent_openmp", "no (no 2-thread rows: Eigen's GEMM would stay on one thread)");
  const std::vector<int> thread_counts = {1};
#endif

  bool failed = false;
  if (smoke)
    for (const Shape& s : smoke_shapes)
      for (int t : thread_counts) failed |= !smoke_check(s, t);

  for (const Shape& s : smoke ? smoke_shapes : full_shapes)
    for (int t : thread_counts)
      for (int i = 0; i < mode_count; ++i)
        benchmark::RegisterBenchmark((std::string(mode_names[i]) + "/" + s.name() + "/T:" + std::to_string(t)).c_str(),
                                     bench_mode, s, Mode(i), t)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  current.reset();
  return failed ? 1 : 0;
}
