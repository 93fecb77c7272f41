#ifndef XENT_DETAIL_ENGINE_SWEEP_HPP
#define XENT_DETAIL_ENGINE_SWEEP_HPP

// The per-sample sweep: one driver for every loss that normalises each sample's classes
// (cross_entropy, softmax and log_softmax, the focal and generalised losses, distillation, the HVP,
// the entropy of logits, the target's log-probability with the entropy (policy gradients), the
// information measures' values, the evaluation metrics and temperature fitting's moments). A loss supplies a policy (detail/losses/): which statistics one read of a
// chunk gathers besides the log-sum-exp partial, how chunks fold into a sample, what the sample's
// loss is, and what the write pass writes per class (a template over packet or scalar); the driver
// owns the rest:
//  - chunks of 16 KiB: a lane-wise max pass, then one fused pass computing exp(x - max) and the
//    loss's sums while the chunk is in L1, folded into the sample with one rescale per chunk; each
//    pass reads ahead (the chunk after next, or the next sample when a write pass follows);
//  - inputs seen through a transform (soft-cap, 1 / temperature) and widened from bf16 / half to
//    float chunk by chunk; a strided class axis gathered into the chunk buffer (the same vectorised
//    code, not a scalar path); the write pass applies the transform's derivative and narrows once;
//  - three thread splits: across samples; across one sample's chunks when there are few samples
//    (N = 16, C = 128K: summaries in parallel, folded in order); the loss's own lane blocks of
//    samples when it has them (C <= 16). Every split folds in the same order: the same bits for
//    any thread count.
// The scalar reference paths the tests hold this to are tests/reference.hpp and tests/*_reference.hpp.

#include "../../core/lse_partial.hpp"
#include "../simd/math.hpp"
#include "reduce.hpp"
#include "threads.hpp"
#include "transform.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent::detail {

namespace engine {

/// Elements per chunk: 16 KiB of the compute type, half of a typical L1 data cache.
template <class T>
inline constexpr Index chunk_elements = 16384 / Index(sizeof(T));

inline Index chunk_count(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

/// Max of n contiguous values; NaN if any is NaN.
template <class T>
T max_contiguous(const T* x, Index n) {
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  T m = neg_inf;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    if (n >= 4 * ps) {
      // Four independent chains hide the latency of max.
      P m0 = simd::pset1<P>(neg_inf), m1 = m0, m2 = m0, m3 = m0;
      for (; i + 4 * ps <= n; i += 4 * ps) {
        m0 = simd::max_nan(m0, simd::load<P>(x + i));
        m1 = simd::max_nan(m1, simd::load<P>(x + i + ps));
        m2 = simd::max_nan(m2, simd::load<P>(x + i + 2 * ps));
        m3 = simd::max_nan(m3, simd::load<P>(x + i + 3 * ps));
      }
      for (; i + ps <= n; i += ps) m0 = simd::max_nan(m0, simd::load<P>(x + i));
      m = simd::reduce_max_nan(simd::max_nan(simd::max_nan(m0, m1), simd::max_nan(m2, m3)));
    }
  }
  for (; i < n; ++i) {
    if (std::isnan(x[i])) return x[i];
    if (x[i] > m) m = x[i];
  }
  return m;
}

/// Memory a pass brings into cache while it computes, one line per packet it reads: what is read
/// next. The passes are bound by the exp, so the memory would otherwise sit idle.
struct read_ahead {
  const char* begin = nullptr;
  Index bytes = 0;
};

/// What a chunk's pass reads ahead by default: the chunk after next (prefetched into L2). The next
/// one was brought in during the previous chunk's pass, so its max pass does not wait on DRAM.
template <class S>
read_ahead chunk_after_next(const S* chunk, Index len) {
  return {reinterpret_cast<const char*>(chunk + 2 * len), len * Index(sizeof(S))};
}

// ---- How a loss sees its inputs

/// One sample's classes as stored: data[k * stride], k < classes.
template <class S>
struct row {
  const S* data = nullptr;
  Index stride = 1;
  const S* at(Index k) const { return data + k * stride; }
};

/// The classes [start, start + len) of a row as the loss sees them, in the compute type: the row's
/// own memory (contiguous, same type, no transform), or their values in `buffer`.
template <class S>
const compute_t<S>* chunk_values(const row<S>& r, Index start, Index len, compute_t<S>* buffer,
                                 const transform<compute_t<S>>& f) {
  using T = compute_t<S>;
  if constexpr (std::is_same_v<S, T>)
    if (r.stride == 1 && f.identity()) return r.data + start;
  const S* x = r.at(start);
  if (r.stride == 1) {
    for (Index i = 0; i < len; ++i) buffer[i] = static_cast<T>(x[i]);
  } else {
    for (Index i = 0; i < len; ++i) buffer[i] = static_cast<T>(x[i * r.stride]);
  }
  apply_transform(buffer, len, f);
  return buffer;
}

// ---- One read of a chunk

/// What one read of a chunk gathers: the max of x (and of the second input y where the loss needs
/// it) and the loss's sums; sum[0] is always sum_k exp(x_k - max).
template <class T, int K>
struct chunk_stats {
  T max = -std::numeric_limits<T>::infinity();
  T max_y = -std::numeric_limits<T>::infinity();
  T sum[K] = {};
};

/// The statistics of n contiguous values (n at most a chunk, so that the second pass reads L1): a
/// lane-wise max pass, then one fused pass for the exp-sum and the loss's sums. A Stats type says:
///   static constexpr int sums;            K, sum[0] being the exp-sum
///   static constexpr bool uses_y, uses_w, max_of_y;
///   static constexpr bool exp_of_x;       false: the loss forms its own exps (sum[0] stays 0)
///   template <class V> void accumulate(V* acc, const V& x, const V& d, const V& e, const V& y,
///                                      const V& w, const V& max_y) const;   adds to acc[0 .. K-2]
///     (sum[1 ..]) for one packet: x the values, d = x - max, e = exp(d), y and w the other inputs;
///   void nonfinite(chunk_stats&, const T* x, const T* y, const T* w, Index n) const;  a chunk whose
///     max is NaN, +inf or -inf (or y's when max_of_y): the loss writes its sums' special values.
/// The chains of every sum restart each block of 8 steps (the reduction policy, reduce.hpp), so
/// their rounding error stays a few ulp however long the chunk.
template <class Stats, class T>
chunk_stats<T, Stats::sums> summarize_chunk(const Stats& st, const T* x, const T* y, const T* w, Index n,
                                            read_ahead ahead) {
  constexpr int K = Stats::sums;
  chunk_stats<T, K> c;
  c.max = max_contiguous(x, n);
  if constexpr (Stats::max_of_y) c.max_y = max_contiguous(y, n);
  if (!std::isfinite(c.max) || (Stats::max_of_y && !std::isfinite(c.max_y))) {
    st.nonfinite(c, x, y, w, n);
    return c;
  }
  const T m = c.max;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    if (n >= 4 * ps) {
      const P vm = simd::pset1<P>(m), vmy = simd::pset1<P>(c.max_y), zero = simd::pset1<P>(T(0)), one = simd::pset1<P>(T(1));
      // Four chains for the exp-sum, two for each of the loss's sums.
      P s0, s1, s2, s3, total = zero;
      P a0[K > 1 ? K - 1 : 1], a1[K > 1 ? K - 1 : 1], totals[K > 1 ? K - 1 : 1];
      for (int k = 0; k + 1 < K; ++k) totals[k] = zero;
      auto step = [&](Index at, P& sum, P* acc) {
        const P xv = simd::load<P>(x + at);
        const P d = simd::psub(xv, vm);
        const P e = Stats::exp_of_x ? simd::exp_for_sum(d) : zero;
        sum = simd::padd(sum, e);
        if constexpr (K > 1)
          st.accumulate(acc, xv, d, e, Stats::uses_y ? simd::load<P>(y + at) : zero, Stats::uses_w ? simd::load<P>(w + at) : one,
                        vmy);
      };
      constexpr Index block = 32 * ps;
      while (i + 4 * ps <= n) {
        s0 = zero, s1 = zero, s2 = zero, s3 = zero;
        for (int k = 0; k + 1 < K; ++k) a0[k] = zero, a1[k] = zero;
        for (const Index end = std::min(n, i + block); i + 4 * ps <= end; i += 4 * ps) {
          const Index offset = i * Index(sizeof(T));
          if (offset < ahead.bytes)
            for (Index line = 0; line < Index(4 * ps * sizeof(T)); line += 64) simd::prefetch(ahead.begin + offset + line);
          step(i, s0, a0);
          step(i + ps, s1, a1);
          step(i + 2 * ps, s2, a0);
          step(i + 3 * ps, s3, a1);
        }
        total = simd::padd(total, simd::padd(simd::padd(s0, s1), simd::padd(s2, s3)));
        for (int k = 0; k + 1 < K; ++k) totals[k] = simd::padd(totals[k], simd::padd(a0[k], a1[k]));
      }
      s0 = zero;
      for (int k = 0; k + 1 < K; ++k) a0[k] = zero;
      for (; i + ps <= n; i += ps) step(i, s0, a0);
      c.sum[0] = simd::predux(simd::padd(total, s0));
      for (int k = 0; k + 1 < K; ++k) c.sum[k + 1] = simd::predux(simd::padd(totals[k], a0[k]));
    }
  }
  // The ragged end (and every value without packets), through the same formula on scalars.
  T acc[K > 1 ? K - 1 : 1] = {};
  for (; i < n; ++i) {
    const T d = x[i] - m;
    const T e = Stats::exp_of_x ? simd::exp_nonpositive(d) : T(0);
    c.sum[0] += e;
    if constexpr (K > 1)
      st.accumulate(acc, x[i], d, e, Stats::uses_y ? y[i] : T(0), Stats::uses_w ? w[i] : T(1), c.max_y);
  }
  for (int k = 0; k + 1 < K; ++k) c.sum[k + 1] += acc[k];
  return c;
}

// ---- The write pass

/// What a write pass of one sample needs: the writer, whether the sample has an output at all
/// (false: NaN everywhere, as torch does for a sample whose log-sum-exp is not finite), and a
/// target class whose entry is formed last (-1: none). The writer is a functor with
///   template <class V> V operator()(const V& z, const V& y, const V& w, V& mass) const
/// giving the output (d loss / d z) at one class, and in `mass` the exp it was formed from; and,
/// when there is a target, T at_target(T z_t, T y_t, T w_t, double others) const, the target's
/// entry from the sum of the other classes' mass. With its own formula p_t Q - q_t, p_t near 1
/// cancels; a sum of the others' (positive) probabilities does not.
template <class Writer>
struct sample_writer {
  Writer w;
  bool defined = true;
  Index target = -1;
};

/// The writer of a policy without a write pass (writes() is false): never called.
struct no_writer {
  template <class V>
  V operator()(const V& z, const V&, const V&, V&) const {
    return z;
  }
};

/// What a policy that only reads has by default: no class weights, no transform, no skipped
/// sample, no lane blocks, no write pass. Such a policy derives from this and adds its stats,
/// sample and finish.
template <class T>
struct read_only_policy {
  static constexpr bool has_lane_blocks = false;
  const T* class_weights() const { return nullptr; }
  transform<T> transform_x() const { return {}; }
  transform<T> transform_y() const { return {}; }
  bool skip(Index) const { return false; }
  void skipped(Index) const {}
  bool writes() const { return false; }
  template <class Sample>
  sample_writer<no_writer> writer(Index, const Sample&) const {
    return {};
  }
};

/// Whether a writer forms a target entry (has at_target).
template <class Writer, class = void>
inline constexpr bool has_target_entry = false;
template <class Writer>
inline constexpr bool has_target_entry<Writer, std::void_t<decltype(&Writer::at_target)>> = true;

/// Whether the target's entry needs the others' mass: a writer may say so per sample
/// (bool from_others(T z_t) const: p_t >= 1/2, where its own formula would cancel); without it,
/// always. Below p_t = 1/2 the write pass then skips summing the mass.
template <class Writer, class = void>
inline constexpr bool has_from_others = false;
template <class Writer>
inline constexpr bool has_from_others<Writer, std::void_t<decltype(&Writer::from_others)>> = true;

template <class Writer, class T>
bool sums_others(const sample_writer<Writer>& sw, T z_t) {
  if (sw.target < 0 || !sw.defined) return false;
  if constexpr (has_from_others<Writer>) {
    return sw.w.from_others(z_t);
  } else {
    (void)z_t;
    return true;
  }
}

/// Writes classes [begin, end) of one sample into out (its own row; may be x's memory), from x (and
/// y, w) through the writer, the transform's derivative applied. Returns the sum of the classes'
/// mass, the target's left out (not subtracted: that would cancel), when `summed` (else 0).
template <class S, class Writer>
double write_range(const row<S>& x, const row<S>* y, const compute_t<S>* w, S* out, Index out_stride, Index begin,
                   Index end, const sample_writer<Writer>& sw, bool summed, const transform<compute_t<S>>& fx,
                   const transform<compute_t<S>>& fy) {
  using T = compute_t<S>;
  if (!sw.defined) {
    for (Index k = begin; k < end; ++k) out[k * out_stride] = S(std::numeric_limits<T>::quiet_NaN());
    return 0;
  }
  using V = simd::vector_of<T>;
  constexpr Index ps = simd::vector_lanes<T>;
  const bool direct = std::is_same_v<S, T> && x.stride == 1 && out_stride == 1 && fx.identity();
  double total = 0;
  alignas(64) T xb[chunk_elements<T>], yb[chunk_elements<T>], gb[chunk_elements<T>];
  const V zero = simd::pset1<V>(T(0)), one = simd::pset1<V>(T(1));
  for (Index start = begin; start < end; start += chunk_elements<T>) {
    const Index len = std::min(chunk_elements<T>, end - start);
    const T* z = chunk_values(x, start, len, xb, fx);
    const T* yv = y ? chunk_values(*y, start, len, yb, fy) : nullptr;
    const T* wv = w ? w + start : nullptr;
    T* g = direct ? reinterpret_cast<T*>(out) + start : gb;
    const Index t = summed ? sw.target - start : -1;  // the target's place in this chunk, if here
    // Per chunk, then across chunks: the order the chunk-split threads sum in too. The packet
    // chain folds into double every chain_terms packets (the reduction policy).
    double chunk_total = 0;
    V acc = zero;
    int terms = 0;
    auto fold = [&] {
      alignas(64) T lanes_out[ps];
      simd::store(lanes_out, acc);
      for (Index l = 0; l < ps; ++l) chunk_total += double(lanes_out[l]);
      acc = zero;
      terms = 0;
    };
    // The packet loop with what it reads and sums fixed at compile time: no per-packet branch.
    auto packets = [&](auto summed_c, auto has_y, auto has_w) {
      constexpr bool Summed = decltype(summed_c)::value, HasY = decltype(has_y)::value, HasW = decltype(has_w)::value;
      Index i = 0;
      for (; i + ps <= len; i += ps) {
        V mass = zero;
        V yi = zero, wi = one;
        if constexpr (HasY) yi = simd::load<V>(yv + i);
        if constexpr (HasW) wi = simd::load<V>(wv + i);
        simd::store(g + i, sw.w(simd::load<V>(z + i), yi, wi, mass));
        if constexpr (Summed) {
          if (t >= i && t < i + ps) {
            // The packet that holds the target: its lane is left out of the sum.
            alignas(64) T lanes[ps];
            simd::store(lanes, mass);
            lanes[t - i] = T(0);
            acc = simd::padd(acc, simd::load<V>(lanes));
          } else {
            acc = simd::padd(acc, mass);
          }
          if (++terms == chain_terms) fold();
        }
      }
      return i;
    };
    auto with_w = [&](auto summed_c, auto has_y) {
      return wv ? packets(summed_c, has_y, std::true_type{}) : packets(summed_c, has_y, std::false_type{});
    };
    auto with_y = [&](auto summed_c) { return yv ? with_w(summed_c, std::true_type{}) : with_w(summed_c, std::false_type{}); };
    Index i = summed ? with_y(std::true_type{}) : with_y(std::false_type{});
    for (; i < len; ++i) {
      T mass = 0;
      g[i] = sw.w(z[i], yv ? yv[i] : T(0), wv ? wv[i] : T(1), mass);
      if (summed && i != t) chunk_total += double(mass);
    }
    if (summed) {
      fold();
      total += chunk_total;
    }
    if (!direct) {
      apply_transform_derivative(x.at(start), x.stride, g, len, fx);
      for (Index k = 0; k < len; ++k) out[(start + k) * out_stride] = S(g[k]);
    }
  }
  return total;
}

/// The target's entry from the others' mass, times the transform's derivative at the target's input
/// x_t (read before the write pass: the output may be x's memory).
template <class S, class Writer>
void write_target(S x_t, const row<S>* y, const compute_t<S>* w, S* out, Index out_stride, const sample_writer<Writer>& sw,
                  double others, const transform<compute_t<S>>& fx, const transform<compute_t<S>>& fy) {
  using T = compute_t<S>;
  if constexpr (has_target_entry<Writer>) {
    if (!sw.defined || sw.target < 0) return;
    const Index t = sw.target;
    T g = sw.w.at_target(value_of(x_t, fx), y ? value_of(*y->at(t), fy) : T(0), w ? w[t] : T(1), others);
    apply_transform_derivative(&x_t, 1, &g, 1, fx);
    out[t * out_stride] = S(g);
  } else {
    (void)x_t, (void)y, (void)w, (void)out, (void)out_stride, (void)sw, (void)others, (void)fx, (void)fy;
  }
}

/// Sums of a functor over classes [begin, end) of one sample, for a loss that reads a sample a
/// second time once its statistics are known (a term that needs the normalised probabilities, such
/// as the Jensen-Shannon mixture's log or a total variation's |p - q|). F has
///   static constexpr int sums;  template <class V> void operator()(const V& z, const V& y, V* acc) const;
/// adding its K terms of one packet (or scalar) of x's and y's values into acc. Chunk by chunk
/// through the chunk buffer, the packet chains folded into double every chain_terms steps and the
/// chunks summed in order (the reduction policy): the chunk-split threads sum in the same order.
template <class F, class S>
std::array<double, F::sums> sum_range(const F& f, const row<S>& x, const row<S>* y, Index begin, Index end,
                                      const transform<compute_t<S>>& fx, const transform<compute_t<S>>& fy) {
  using T = compute_t<S>;
  using V = simd::vector_of<T>;
  constexpr int K = F::sums;
  constexpr Index ps = simd::vector_lanes<T>;
  std::array<double, K> total{};
  alignas(64) T xb[chunk_elements<T>], yb[chunk_elements<T>];
  for (Index start = begin; start < end; start += chunk_elements<T>) {
    const Index len = std::min(chunk_elements<T>, end - start);
    const T* z = chunk_values(x, start, len, xb, fx);
    const T* yv = y ? chunk_values(*y, start, len, yb, fy) : z;
    std::array<double, K> chunk_total{};
    V acc[K];
    for (int k = 0; k < K; ++k) acc[k] = simd::pset1<V>(T(0));
    int terms = 0;
    auto fold = [&] {
      for (int k = 0; k < K; ++k) {
        alignas(64) T lanes[ps];
        simd::store(lanes, acc[k]);
        for (Index l = 0; l < ps; ++l) chunk_total[k] += double(lanes[l]);
        acc[k] = simd::pset1<V>(T(0));
      }
      terms = 0;
    };
    Index i = 0;
    for (; i + ps <= len; i += ps) {
      f(simd::load<V>(z + i), simd::load<V>(yv + i), acc);
      if (++terms == chain_terms) fold();
    }
    fold();
    T tail[K] = {};
    for (; i < len; ++i) f(z[i], yv[i], tail);
    for (int k = 0; k < K; ++k) total[k] += chunk_total[k] + double(tail[k]);
  }
  return total;
}

// ---- The driver

/// The views one sweep reads and writes; y (the second input) and out are optional.
template <class S>
struct sweep_views {
  samples_view<const S> x;
  const samples_view<const S>* y = nullptr;
  const samples_view<S>* out = nullptr;
};

/// Optional parts of a policy:
///   sample start_sample(Index j) const;    the sample's statistics before its first chunk (default:
///                                          value-initialised), e.g. its target's logit
///   Stats: void chunk_values(sample&, const chunk_stats&, const T* z, Index start, Index len) const;
///                                          what a statistic needs of the chunk's values themselves
///                                          (a count against the target), called after each fold
///                                          while the chunk is in L1.
///   void second_read(Index j, sample&, const row<S>& x, const row<S>* y, Index classes) const;
///                                          a second read of the sample once its statistics are
///                                          folded, before finish (engine::sum_range: sums that
///                                          need the normalised values).
template <class Policy, class = void>
inline constexpr bool has_start_sample = false;
template <class Policy>
inline constexpr bool has_start_sample<Policy, std::void_t<decltype(std::declval<const Policy&>().start_sample(Index(0)))>> = true;

template <class Stats, class Sample, class Chunk, class T, class = void>
inline constexpr bool has_chunk_values = false;
template <class Stats, class Sample, class Chunk, class T>
inline constexpr bool has_chunk_values<
    Stats, Sample, Chunk, T,
    std::void_t<decltype(std::declval<const Stats&>().chunk_values(std::declval<Sample&>(), std::declval<const Chunk&>(),
                                                                   static_cast<const T*>(nullptr), Index(0), Index(0)))>> = true;

template <class Policy, class S, class = void>
inline constexpr bool has_second_read = false;
template <class Policy, class S>
inline constexpr bool has_second_read<
    Policy, S,
    std::void_t<decltype(std::declval<const Policy&>().second_read(Index(0), std::declval<typename Policy::sample&>(),
                                                                   std::declval<const row<S>&>(),
                                                                   static_cast<const row<S>*>(nullptr), Index(0)))>> = true;

template <class Policy>
typename Policy::sample start_of(const Policy& p, Index j) {
  if constexpr (has_start_sample<Policy>) {
    return p.start_sample(j);
  } else {
    (void)p, (void)j;
    return typename Policy::sample{};
  }
}

/// Folds one chunk's statistics into its sample, and runs the stats' chunk_values on the chunk's values.
template <class Stats, class Sample, class Chunk, class T>
void fold_chunk(const Stats& st, Sample& s, const Chunk& c, const T* z, Index start, Index len) {
  st.fold(s, c, len);
  if constexpr (has_chunk_values<Stats, Sample, Chunk, T>) st.chunk_values(s, c, z, start, len);
  (void)z, (void)start;
}

/// The statistics of sample j, chunk by chunk, folded left to right. next: null, or the
/// next sample's values to bring into cache meanwhile (with a write pass, that pass is bound by
/// its writes and this one by the exp, so this is where the next read overlaps best).
template <class Policy, class S>
typename Policy::sample summarize_sample(const Policy& p, Index j, const row<S>& x, const row<S>* y, Index n, const S* next) {
  using T = compute_t<S>;
  typename Policy::sample s = start_of(p, j);
  alignas(64) T xb[chunk_elements<T>], yb[chunk_elements<T>];
  const auto& st = p.stats();
  const T* w = p.class_weights();
  for (Index start = 0; start < n; start += chunk_elements<T>) {
    const Index len = std::min(chunk_elements<T>, n - start);
    const T* z = chunk_values(x, start, len, xb, p.transform_x());
    const T* yv = y ? chunk_values(*y, start, len, yb, p.transform_y()) : nullptr;
    const read_ahead ahead = next ? read_ahead{reinterpret_cast<const char*>(next + start), len * Index(sizeof(S))}
                                  : chunk_after_next(x.at(start), x.stride == 1 ? len : 0);
    fold_chunk(st, s, summarize_chunk(st, z, yv, w ? w + start : nullptr, len, ahead), z, start, len);
  }
  return s;
}

/// Runs a policy over every sample. A Policy says (see detail/losses/ for the losses'):
///   using sample;                          the folded statistics of a sample
///   const Stats& stats() const;            the chunk statistics and their fold
///   const T* class_weights() const;        one per class in the compute type, or null
///   transform<T> transform_x(), transform_y() const;
///   bool skip(Index j) const;              an ignored sample: never read
///   void skipped(Index j) const;           what it records for one
///   void finish(Index j, const sample&, const row<S>& x) const;   the sample's loss (before any
///                                          write: x may be the output's memory)
///   bool writes() const;                   a write pass follows (gradient, softmax, ...)
///   auto writer(Index j, const sample&) const -> sample_writer<...>;
///   bool lane_blocks(...)                  optional: see lane_block_split;
///   start_sample, Stats::chunk_values      optional: see has_start_sample.
template <class Policy, class S>
void sweep(const Policy& p, const sweep_views<S>& v, int requested_threads) {
  using T = compute_t<S>;
  const Index N = v.x.samples, C = v.x.classes;
  const int threads = thread_count(requested_threads, N * C);
  const bool writes = p.writes() && v.out;
  auto x_row = [&](Index j) { return row<S>{v.x.sample(j), v.x.class_stride}; };
  auto y_row = [&](Index j) { return row<S>{v.y->sample(j), v.y->class_stride}; };
  auto zero_out = [&](Index j, Index begin, Index end) {
    for (Index k = begin; k < end; ++k) v.out->sample(j)[k * v.out->class_stride] = S(0);
  };

  auto one_sample = [&](Index j) {
    if (p.skip(j)) {
      p.skipped(j);
      if (writes) zero_out(j, 0, C);
      return;
    }
    const row<S> x = x_row(j);
    const row<S> y_storage = v.y ? y_row(j) : row<S>{};
    const row<S>* y = v.y ? &y_storage : nullptr;
    const S* next = writes && j + 1 < N && x.stride == 1 ? v.x.sample(j + 1) : nullptr;
    typename Policy::sample s = summarize_sample(p, j, x, y, C, next);
    if constexpr (has_second_read<Policy, S>) p.second_read(j, s, x, y, C);
    p.finish(j, s, x);
    if (!writes) return;
    const auto sw = p.writer(j, s);
    const S x_t = sw.target >= 0 ? *x.at(sw.target) : S(0);
    S* out = v.out->sample(j);
    const bool summed = sums_others(sw, value_of(x_t, p.transform_x()));
    const double others = write_range(x, y, p.class_weights(), out, v.out->class_stride, 0, C, sw, summed,
                                      p.transform_x(), p.transform_y());
    write_target(x_t, y, p.class_weights(), out, v.out->class_stride, sw, others, p.transform_x(), p.transform_y());
  };

  if constexpr (Policy::has_lane_blocks) {
    if (p.lane_blocks(v, threads, one_sample)) return;
  }

  const Index chunks = chunk_count(C, chunk_elements<T>);
  if (threads == 1 || N >= 4 * threads || chunks < 2) {
    parallel_for(N, threads, one_sample);
    return;
  }

  // Few samples, many classes: threads share each sample's chunks. The chunks' statistics fold in
  // the same order as one_sample's, so the result is the same bits as on one thread.
  using chunk = decltype(summarize_chunk(p.stats(), static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                                         static_cast<const T*>(nullptr), Index(0), read_ahead{}));
  std::vector<chunk> parts(static_cast<std::size_t>(N * chunks));
  parallel_for(N * chunks, threads, [&](Index i) {
    const Index j = i / chunks, start = (i % chunks) * chunk_elements<T>, len = std::min(chunk_elements<T>, C - start);
    if (p.skip(j)) return;
    alignas(64) T xb[chunk_elements<T>], yb[chunk_elements<T>];
    const row<S> x = x_row(j);
    const T* z = chunk_values(x, start, len, xb, p.transform_x());
    const T* yv = v.y ? chunk_values(y_row(j), start, len, yb, p.transform_y()) : nullptr;
    const T* w = p.class_weights();
    parts[std::size_t(i)] = summarize_chunk(p.stats(), z, yv, w ? w + start : nullptr, len,
                                            chunk_after_next(x.at(start), x.stride == 1 ? len : 0));
  });
  std::vector<typename Policy::sample> samples(static_cast<std::size_t>(N));
  for (Index j = 0; j < N; ++j) {
    if (p.skip(j)) {
      p.skipped(j);
      continue;
    }
    auto& s = samples[std::size_t(j)];
    s = start_of(p, j);
    alignas(64) T xb[chunk_elements<T>];
    for (Index c = 0; c < chunks; ++c) {
      const Index start = c * chunk_elements<T>, len = std::min(chunk_elements<T>, C - start);
      // A stats' chunk_values needs the chunk again (read a second time, in this thread).
      const T* z = has_chunk_values<std::decay_t<decltype(p.stats())>, typename Policy::sample, chunk, T>
                       ? chunk_values(x_row(j), start, len, xb, p.transform_x())
                       : nullptr;
      fold_chunk(p.stats(), s, parts[std::size_t(j * chunks + c)], z, start, len);
    }
  }
  if constexpr (has_second_read<Policy, S>) {
    parallel_for(N, threads, [&](Index j) {
      if (p.skip(j)) return;
      const row<S> y_storage = v.y ? y_row(j) : row<S>{};
      p.second_read(j, samples[std::size_t(j)], x_row(j), v.y ? &y_storage : nullptr, C);
    });
  }
  for (Index j = 0; j < N; ++j) {
    if (!p.skip(j)) p.finish(j, samples[std::size_t(j)], x_row(j));
  }
  if (!writes) return;
  std::vector<S> target_inputs(static_cast<std::size_t>(N), S(0));  // before the writes: out may be x
  for (Index j = 0; j < N; ++j) {
    if (p.skip(j)) continue;
    const Index t = p.writer(j, samples[std::size_t(j)]).target;
    if (t >= 0) target_inputs[std::size_t(j)] = *x_row(j).at(t);
  }
  std::vector<double> others(static_cast<std::size_t>(N * chunks), 0.0);
  parallel_for(N * chunks, threads, [&](Index i) {
    const Index j = i / chunks, begin = (i % chunks) * chunk_elements<T>, end = std::min(begin + chunk_elements<T>, C);
    if (p.skip(j)) {
      zero_out(j, begin, end);
      return;
    }
    const row<S> x = x_row(j);
    const row<S> y_storage = v.y ? y_row(j) : row<S>{};
    const auto sw = p.writer(j, samples[std::size_t(j)]);
    others[std::size_t(i)] = write_range(x, v.y ? &y_storage : nullptr, p.class_weights(), v.out->sample(j),
                                         v.out->class_stride, begin, end, sw,
                                         sums_others(sw, value_of(target_inputs[std::size_t(j)], p.transform_x())),
                                         p.transform_x(), p.transform_y());
  });
  for (Index j = 0; j < N; ++j) {
    if (p.skip(j)) continue;
    double sum = 0;
    for (Index c = 0; c < chunks; ++c) sum += others[std::size_t(j * chunks + c)];
    const row<S> y_storage = v.y ? y_row(j) : row<S>{};
    write_target(target_inputs[std::size_t(j)], v.y ? &y_storage : nullptr, p.class_weights(), v.out->sample(j),
                 v.out->class_stride, p.writer(j, samples[std::size_t(j)]), sum, p.transform_x(), p.transform_y());
  }
}

}  // namespace engine
}  // namespace xent::detail

#endif
