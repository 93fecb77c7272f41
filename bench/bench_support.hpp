// What the benchmark binaries share: deterministic inputs, the memory rooflines, the clocks and the
// bookkeeping that lets a row report its ratio to rows timed earlier in the same run, and the
// small helpers of their command lines and peak-RSS modes. One translation unit includes it per
// binary (bench_kernels.cpp, bench_losses.cpp).
//
// The rooflines are written over Eigen's packets directly (not xent's internal adapter, which the
// kernels may change): the same ISA as the kernels they bound, from the same -march flags.

#ifndef XENT_BENCH_SUPPORT_HPP
#define XENT_BENCH_SUPPORT_HPP

#include <benchmark/benchmark.h>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/version.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <time.h>
#include <vector>

namespace xent_bench {

using Eigen::Index;

// The 2-thread rows need OpenMP in the bench itself (the rooflines split their pass across a team);
// without it only the 1-thread rows exist.
#ifdef _OPENMP
inline const std::vector<int> thread_counts = {1, 2};
#else
inline const std::vector<int> thread_counts = {1};
#endif

// ---------------------------------------------------------------------------------------------
// Inputs

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

// x[0, total) = scale * N(0, 1), by Box-Muller (two normals per pair of uniforms).
inline void fill_normal(splitmix64& rng, float* x, Index total, double scale) {
  const double two_pi = 6.283185307179586;
  for (Index i = 0; i < total; i += 2) {
    const double r = scale * std::sqrt(-2.0 * std::log(rng.uniform())), a = two_pi * rng.uniform();
    x[i] = float(r * std::cos(a));
    if (i + 1 < total) x[i + 1] = float(r * std::sin(a));
  }
}

// ---------------------------------------------------------------------------------------------
// The rooflines

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

// One vectorised pass that reads every element: a sum with 8 independent accumulators, so the add
// latency never limits it and only the memory system does.
inline float read_sum(const float* x, Index n) {
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

// The same pass over two buffers of n elements at once (two streams, as a loss of two same-shape
// inputs reads them): 4 accumulators per stream.
inline float read_sum(const float* x, const float* y, Index n) {
  using Eigen::internal::padd;
  constexpr Index ps = pk::size;
  pk::P a0 = Eigen::internal::pset1<pk::P>(0.f), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    a0 = padd(a0, pk::load(x + i));
    b0 = padd(b0, pk::load(y + i));
    a1 = padd(a1, pk::load(x + i + ps));
    b1 = padd(b1, pk::load(y + i + ps));
    a2 = padd(a2, pk::load(x + i + 2 * ps));
    b2 = padd(b2, pk::load(y + i + 2 * ps));
    a3 = padd(a3, pk::load(x + i + 3 * ps));
    b3 = padd(b3, pk::load(y + i + 3 * ps));
  }
  float s = Eigen::internal::predux(padd(padd(padd(a0, a1), padd(a2, a3)), padd(padd(b0, b1), padd(b2, b3))));
  for (; i < n; ++i) s += pk::scalar(x + i) + pk::scalar(y + i);
  return s;
}

// One pass that reads every element and writes one value per element into an already touched buffer.
inline void read_write(const float* x, float* y, Index n) {
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

// Two buffers read, one written: out = x + y into an already touched buffer.
inline void read_write(const float* x, const float* y, float* out, Index n) {
  using Eigen::internal::padd;
  using Eigen::internal::pstoreu;
  constexpr Index ps = pk::size;
  Index i = 0;
  for (; i + 4 * ps <= n; i += 4 * ps) {
    pstoreu(out + i, padd(pk::load(x + i), pk::load(y + i)));
    pstoreu(out + i + ps, padd(pk::load(x + i + ps), pk::load(y + i + ps)));
    pstoreu(out + i + 2 * ps, padd(pk::load(x + i + 2 * ps), pk::load(y + i + 2 * ps)));
    pstoreu(out + i + 3 * ps, padd(pk::load(x + i + 3 * ps), pk::load(y + i + 3 * ps)));
  }
  for (; i < n; ++i) out[i] = x[i] + y[i];
}

// The compute floor of a one-pass log-sum-exp: one read pass that takes Eigen's packet exp of every
// element and sums the results. The shift keeps the argument non-positive for randn * 3 logits, as
// x - max is in the kernels.
inline float exp_sum(const float* x, Index n) {
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
inline void split(int threads, Index n, const std::function<void(int, Index, Index)>& part) {
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

// The threaded rooflines: each thread of the team reads (and writes) its own share.
inline float read_sum(int threads, const float* x, Index n) {
  std::vector<float> parts(std::size_t(std::max(threads, 1)), 0.f);
  split(threads, n, [&](int t, Index begin, Index end) { parts[std::size_t(t)] = read_sum(x + begin, end - begin); });
  float s = 0;
  for (float p : parts) s += p;
  return s;
}

inline float read_sum(int threads, const float* x, const float* y, Index n) {
  std::vector<float> parts(std::size_t(std::max(threads, 1)), 0.f);
  split(threads, n,
        [&](int t, Index begin, Index end) { parts[std::size_t(t)] = read_sum(x + begin, y + begin, end - begin); });
  float s = 0;
  for (float p : parts) s += p;
  return s;
}

inline void read_write(int threads, const float* x, float* y, Index n) {
  split(threads, n, [&](int, Index begin, Index end) { read_write(x + begin, y + begin, end - begin); });
}

inline void read_write(int threads, const float* x, const float* y, float* out, Index n) {
  split(threads, n, [&](int, Index begin, Index end) { read_write(x + begin, y + begin, out + begin, end - begin); });
}

// ---------------------------------------------------------------------------------------------
// Timing

struct Clocks {
  double process_cpu, wall;  // ns
};

inline Clocks clocks_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  const double cpu = double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return {cpu, double(ts.tv_sec) * 1e9 + double(ts.tv_nsec)};
}

inline double load_average_1min() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

struct Timing {
  double ns = 0;       // ns per element on the row's own clock
  double ns_wall = 0;  // ns per element on the wall clock
};

// The last timed run of each row in this process, by its benchmark name. Google Benchmark's final
// call of a benchmark function is the one it reports, so this holds the reported figure.
inline std::map<std::string, Timing>& latest() {
  static std::map<std::string, Timing> m;
  return m;
}

inline const Timing* latest_of(const std::string& key) {
  auto it = latest().find(key);
  return it == latest().end() ? nullptr : &it->second;
}

// Times body() over the benchmark's iterations, after prepare() when given (untimed, every
// iteration), on both clocks. A 1-thread row reports process CPU time (user + system of every thread,
// so a helper thread the library might start is not missed, and the time other jobs hold the core on
// this shared machine is); a row of more threads the wall clock, the only one that shows a speedup.
// Records the row under `key` in latest() and sets the counters every row has:
// ns_per_<unit> (the row's clock), ns_per_<unit>_wall, cpu_per_wall, load1.
inline Timing time_row(benchmark::State& state, const std::string& key, int threads, double elements,
                       const std::string& unit, const std::function<void()>& body,
                       const std::function<void()>& prepare = nullptr) {
  double cpu = 0, wall = 0;
  for (auto _ : state) {
    if (prepare) {
      state.PauseTiming();
      prepare();
      state.ResumeTiming();
    }
    const Clocks c0 = clocks_now();
    body();
    benchmark::ClobberMemory();
    const Clocks c1 = clocks_now();
    cpu += c1.process_cpu - c0.process_cpu;
    wall += c1.wall - c0.wall;
  }
  const double total = double(state.iterations()) * elements;
  const Timing me{(threads == 1 ? cpu : wall) / total, wall / total};
  latest()[key] = me;
  state.counters["ns_per_" + unit] = me.ns;
  state.counters["ns_per_" + unit + "_wall"] = me.ns_wall;
  state.counters["cpu_per_wall"] = wall > 0 ? cpu / wall : 0;  // ~ the threads that really ran
  state.counters["load1"] = load_average_1min();
  return me;
}

// ---------------------------------------------------------------------------------------------
// Agreement, command lines, peak RSS

inline bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::abs(b)); }

// A field of /proc/self/status in KiB (VmRSS, VmHWM), -1 if absent.
inline long status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::size_t len = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, len, field) == 0 && line.size() > len && line[len] == ':') return std::atol(line.c_str() + len + 1);
  return -1;
}

inline std::string eigen_version() {
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
}

inline bool starts_with(const char* s, const char* prefix, const char** rest) {
  const std::size_t n = std::strlen(prefix);
  if (std::strncmp(s, prefix, n) != 0) return false;
  *rest = s + n;
  return true;
}

// "NxC" -> n, c; false if malformed.
inline bool parse_shape(const char* v, Index& n, Index& c) {
  long long a = 0, b = 0;
  if (std::sscanf(v, "%lldx%lld", &a, &b) != 2 || a <= 0 || b <= 0) return false;
  n = Index(a);
  c = Index(b);
  return true;
}

// The peak-memory mode's flags, which every bench binary takes: --xent_rss=MODE, --xent_rss_shape=NxC
// (default 4096x32000), --xent_threads=T (default 1).
struct rss_flags {
  std::string mode;
  Index n = 4096, c = 32000;
  int threads = 1;

  // 1: arg was one of them (taken); 0: it is not; -1: a malformed shape (the message printed).
  int take(const char* arg, const char* program) {
    const char* v = nullptr;
    if (starts_with(arg, "--xent_rss=", &v)) {
      mode = v;
    } else if (starts_with(arg, "--xent_rss_shape=", &v)) {
      if (!parse_shape(v, n, c)) {
        std::fprintf(stderr, "%s: --xent_rss_shape expects NxC, got '%s'\n", program, v);
        return -1;
      }
    } else if (starts_with(arg, "--xent_threads=", &v)) {
      threads = std::atoi(v);
    } else {
      return 0;
    }
    return 1;
  }
};

// The context every binary reports in its JSON (run_bench.py prints it with the tables).
inline void add_common_context(bool smoke) {
  benchmark::AddCustomContext("xent_shapes", smoke ? "smoke" : "full");
  benchmark::AddCustomContext("eigen_version", eigen_version());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
#ifdef _OPENMP
  benchmark::AddCustomContext("openmp", std::to_string(_OPENMP));
#else
  benchmark::AddCustomContext("openmp", "none (1-thread rows only)");
#endif
  benchmark::AddCustomContext("clocks", "1-thread rows: process CPU time; 2-thread rows: wall clock");
#ifdef XENT_BENCH_WITH_TORCH
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
#else
  benchmark::AddCustomContext("torch_version", "none (built without libtorch)");
#endif
}

// Starts the OpenMP team before anything is timed (the first parallel region creates its threads).
inline void start_thread_team() {
#ifdef _OPENMP
#pragma omp parallel num_threads(thread_counts.back())
  benchmark::DoNotOptimize(omp_get_thread_num());
#endif
}

}  // namespace xent_bench

#endif
