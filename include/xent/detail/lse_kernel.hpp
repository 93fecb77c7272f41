#ifndef XENT_DETAIL_LSE_KERNEL_HPP
#define XENT_DETAIL_LSE_KERNEL_HPP

// The log-sum-exp kernels. One sample's classes are read in L1-sized chunks: a lane-wise max pass,
// then an exp-sum pass over the chunk while it is still in L1, folded into the running partial with
// one rescale per chunk (instead of one per element, as a per-element online softmax would need).

#include "../kernels/lse_partial.hpp"
#include "layout.hpp"
#include "packet.hpp"
#include "reference.hpp"

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

/// Sum of exp(x[i] - m) over n contiguous values, for a finite m >= every x[i].
template <class T>
T sum_exp_contiguous(const T* x, Index n, T m) {
  T s = 0;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    if (n >= 4 * ps) {
      const P vm = simd::pset1<P>(m);
      P s0 = simd::pset1<P>(T(0)), s1 = s0, s2 = s0, s3 = s0;
      for (; i + 4 * ps <= n; i += 4 * ps) {
        s0 = simd::padd(s0, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i), vm)));
        s1 = simd::padd(s1, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + ps), vm)));
        s2 = simd::padd(s2, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + 2 * ps), vm)));
        s3 = simd::padd(s3, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i + 3 * ps), vm)));
      }
      for (; i + ps <= n; i += ps) s0 = simd::padd(s0, simd::exp_nonpositive(simd::psub(simd::load<P>(x + i), vm)));
      s = simd::predux(simd::padd(simd::padd(s0, s1), simd::padd(s2, s3)));
    }
  }
  for (; i < n; ++i) s += simd::exp_nonpositive_scalar(x[i] - m);
  return s;
}

/// The partial of n contiguous logits.
template <class T>
lse_partial<T> lse_partial_contiguous(const T* x, Index n) {
  lse_partial<T> acc = lse_partial<T>::identity();
  for (Index start = 0; start < n; start += lse_chunk<T>) {
    const Index len = std::min(lse_chunk<T>, n - start);
    const T m = max_contiguous(x + start, len);
    if (m == -std::numeric_limits<T>::infinity()) continue;  // all masked: contributes nothing
    if (std::isnan(m)) return {m, m};
    if (m == std::numeric_limits<T>::infinity()) {
      // +inf decides the result unless a NaN follows, as in torch.
      const Index rest = start + len;
      const T after = rest < n ? max_contiguous(x + rest, n - rest) : T(0);
      return std::isnan(after) ? lse_partial<T>{after, after} : lse_partial<T>{m, T(1)};
    }
    const lse_partial<T> chunk{m, sum_exp_contiguous(x + start, len, m)};
    // The first finite chunk needs no rescale: skipping merge saves an exp per sample at small C.
    acc = acc.max == -std::numeric_limits<T>::infinity() ? chunk : merge(acc, chunk);
  }
  return acc;
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
