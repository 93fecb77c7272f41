#ifndef XENT_DETAIL_LSE_KERNEL_HPP
#define XENT_DETAIL_LSE_KERNEL_HPP

// The log-sum-exp kernels. One sample's classes are read in L1-sized chunks: a lane-wise max pass,
// then an exp-sum pass over the chunk while it is still in L1, folded into the running partial with
// one rescale per chunk (instead of one per element, as a per-element online softmax would need).

#include "../core/lse_partial.hpp"
#include "engine/view.hpp"
#include "simd/math.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// Elements per chunk: 16 KiB, half of a typical L1 data cache.
template <class T>
inline constexpr Index lse_chunk = 16384 / Index(sizeof(T));

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

/// What one read of a chunk gathers besides its partial: label smoothing needs the sum of the
/// logits (weighted by the class weights when there are any).
enum class chunk_sums { none, logits, weighted_logits };

/// One chunk of one sample, summarized in one read: the partial, and (when asked) the sums of the
/// logits relative to `ref` (the chunk's max when finite, else 0), which keeps the sums of large
/// logits (1e30, or 1e4 in float) free of cancellation.
template <class T>
struct chunk_summary {
  lse_partial<T> partial = lse_partial<T>::identity();
  T ref = 0;
  T logit_sum = 0;     // sum_k (x_k - ref)
  T weighted_sum = 0;  // sum_k w_k (x_k - ref)
  T weight_sum = 0;    // sum_k w_k
};

template <chunk_sums S, class T>
void add_logit_sums_scalar(chunk_summary<T>& c, const T* x, const T* w, Index begin, Index end) {
  for (Index i = begin; i < end; ++i) {
    const T d = x[i] - c.ref;
    if constexpr (S != chunk_sums::none) c.logit_sum += d;
    if constexpr (S == chunk_sums::weighted_logits) {
      c.weighted_sum += w[i] * d;
      c.weight_sum += w[i];
    }
  }
}

/// Memory the exp-sum pass brings into cache while it computes, one line per packet it reads: what
/// is read next. The pass is bound by the exp, so the memory would otherwise sit idle.
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

/// The summary of n contiguous logits (n at most a chunk, so that the second pass reads L1): a
/// lane-wise max pass, then one pass for the exp-sum and the logit sums. w: the chunk's class
/// weights, read only for chunk_sums::weighted_logits. ahead: by default chunk_after_next.
template <chunk_sums S, class T>
chunk_summary<T> summarize_chunk(const T* x, const T* w, Index n, read_ahead ahead) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  chunk_summary<T> c;
  const T m = max_contiguous(x, n);
  if (!std::isfinite(m)) {
    // NaN decides; +inf decides unless a NaN comes (merge sees to that); all -inf adds nothing.
    c.partial = std::isnan(m) ? lse_partial<T>{m, m} : m == inf ? lse_partial<T>{inf, T(1)} : lse_partial<T>::identity();
    add_logit_sums_scalar<S>(c, x, w, 0, n);  // -inf logits make the sums -inf (or NaN at weight 0), as torch
    return c;
  }
  c.ref = m;
  T s = 0;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    if (n >= 4 * ps) {
      const P vm = simd::pset1<P>(m), zero = simd::pset1<P>(T(0));
      P s0 = zero, s1 = zero, s2 = zero, s3 = zero;
      P a0 = zero, a1 = zero, b0 = zero, b1 = zero, w0 = zero, w1 = zero;
      auto step = [&](Index at, P& sum, P& logits, P& weighted, P& weights) {
        const P d = simd::psub(simd::load<P>(x + at), vm);
        sum = simd::padd(sum, simd::exp_for_sum(d));
        if constexpr (S != chunk_sums::none) logits = simd::padd(logits, d);
        if constexpr (S == chunk_sums::weighted_logits) {
          const P wk = simd::load<P>(w + at);
          weighted = simd::pmadd(wk, d, weighted);
          weights = simd::padd(weights, wk);
        }
      };
      // The exp-sum's four chains restart every block of 8 steps and the blocks add into `total`:
      // no chain adds more than 8 terms, so the sum's rounding error stays a few ulp however long
      // the chunk (one chain over a 2048-double chunk on AVX2 would add 128, about 5 ulp).
      constexpr Index block = 32 * ps;
      P total = zero;
      while (i + 4 * ps <= n) {
        s0 = zero, s1 = zero, s2 = zero, s3 = zero;
        for (const Index end = std::min(n, i + block); i + 4 * ps <= end; i += 4 * ps) {
          const Index offset = i * Index(sizeof(T));
          if (offset < ahead.bytes)
            for (Index line = 0; line < Index(4 * ps * sizeof(T)); line += 64) simd::prefetch(ahead.begin + offset + line);
          step(i, s0, a0, b0, w0);
          step(i + ps, s1, a1, b1, w1);
          step(i + 2 * ps, s2, a0, b0, w0);
          step(i + 3 * ps, s3, a1, b1, w1);
        }
        total = simd::padd(total, simd::padd(simd::padd(s0, s1), simd::padd(s2, s3)));
      }
      s0 = zero;
      for (; i + ps <= n; i += ps) step(i, s0, a0, b0, w0);
      s = simd::predux(simd::padd(total, s0));
      if constexpr (S != chunk_sums::none) c.logit_sum = simd::predux(simd::padd(a0, a1));
      if constexpr (S == chunk_sums::weighted_logits) {
        c.weighted_sum = simd::predux(simd::padd(b0, b1));
        c.weight_sum = simd::predux(simd::padd(w0, w1));
      }
    }
  }
  for (Index k = i; k < n; ++k) s += simd::exp_nonpositive_scalar(x[k] - m);
  add_logit_sums_scalar<S>(c, x, w, i, n);
  c.partial = {m, s};
  return c;
}

template <chunk_sums S, class T>
chunk_summary<T> summarize_chunk(const T* x, const T* w, Index n) {
  return summarize_chunk<S>(x, w, n, chunk_after_next(x, n));
}

/// A whole sample's summary: its chunks' summaries folded left to right. The fold is the same
/// whoever computed the chunks (one thread, or several splitting the classes), so results do not
/// depend on the thread count.
template <class T>
struct sample_summary {
  lse_partial<T> partial = lse_partial<T>::identity();
  T ref = 0;  // the first chunk's; the sums below are relative to it
  T logit_sum = 0;
  T weighted_sum = 0;
  T weight_sum = 0;
  bool empty = true;

  void add(const chunk_summary<T>& c, Index chunk_size) {
    if (empty) {
      partial = c.partial;
      ref = c.ref;
      logit_sum = c.logit_sum;
      weighted_sum = c.weighted_sum;
      weight_sum = c.weight_sum;
      empty = false;
      return;
    }
    const T shift = c.ref - ref;
    logit_sum += c.logit_sum + T(chunk_size) * shift;
    weighted_sum += c.weighted_sum + c.weight_sum * shift;
    weight_sum += c.weight_sum;
    // merge with the identity is exact, and skipping it saves an exp per sample at small C.
    partial = partial.max == -std::numeric_limits<T>::infinity() ? c.partial : merge(partial, c.partial);
  }
};

inline Index chunk_count(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

/// The summary of n contiguous logits. next: null, or n more logits to bring into cache meanwhile
/// (instead of the chunks after next, which then are in cache already).
template <chunk_sums S, class T>
sample_summary<T> summarize_contiguous(const T* x, const T* w, Index n, const T* next = nullptr) {
  sample_summary<T> acc;
  for (Index start = 0; start < n; start += lse_chunk<T>) {
    const Index len = std::min(lse_chunk<T>, n - start);
    const read_ahead ahead = next ? read_ahead{reinterpret_cast<const char*>(next + start), len * Index(sizeof(T))}
                                  : chunk_after_next(x + start, len);
    acc.add(summarize_chunk<S>(x + start, S == chunk_sums::weighted_logits ? w + start : w, len, ahead), len);
  }
  return acc;
}

/// The partial of n contiguous logits.
template <class T>
lse_partial<T> lse_partial_contiguous(const T* x, Index n) {
  return summarize_contiguous<chunk_sums::none>(x, static_cast<const T*>(nullptr), n).partial;
}

/// Sum of exp(x[i] - m) over n contiguous values, for a finite m >= every x[i].
template <class T>
T sum_exp_contiguous(const T* x, Index n, T m) {
  T s = 0;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    const P vm = simd::pset1<P>(m);
    P s0 = simd::pset1<P>(T(0)), s1 = s0;
    for (; i + 2 * ps <= n; i += 2 * ps) {
      s0 = simd::padd(s0, simd::exp_for_sum(simd::psub(simd::load<P>(x + i), vm)));
      s1 = simd::padd(s1, simd::exp_for_sum(simd::psub(simd::load<P>(x + i + ps), vm)));
    }
    s = simd::predux(simd::padd(s0, s1));
  }
  for (; i < n; ++i) s += simd::exp_nonpositive_scalar(x[i] - m);
  return s;
}

/// The partial of n logits `stride` apart; a scalar loop in T, for a class axis that is not contiguous.
template <class T>
lse_partial<T> lse_partial_strided(const T* x, Index n, Index stride) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  T m = -inf;
  for (Index i = 0; i < n; ++i) {
    const T v = x[i * stride];
    if (std::isnan(v)) return {v, v};
    if (v > m) m = v;
  }
  if (m == -inf) return lse_partial<T>::identity();
  if (m == inf) return {inf, T(1)};
  // One scalar chain has none of the packet path's many partial sums, so compensate instead
  // (Kahan): the error then stays a few ulp whatever the class count.
  T s = 0, compensation = 0;
  for (Index i = 0; i < n; ++i) {
    const T term = simd::exp_nonpositive_scalar(x[i * stride] - m) - compensation;
    const T next = s + term;
    compensation = (next - s) - term;
    s = next;
  }
  return {m, s};
}

template <class T>
lse_partial<T> lse_partial_of_sample(const samples_view<const T>& v, Index j) {
  return v.classes_contiguous() ? lse_partial_contiguous(v.sample(j), v.classes)
                                : lse_partial_strided(v.sample(j), v.classes, v.class_stride);
}

}  // namespace xent::detail

#endif
