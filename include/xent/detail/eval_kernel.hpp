#ifndef XENT_DETAIL_EVAL_KERNEL_HPP
#define XENT_DETAIL_EVAL_KERNEL_HPP

// One sample's logits -> everything the evaluation metrics need, in one sweep. The classes are read
// in the L1-sized chunks of the log-sum-exp kernel: per chunk a max pass (max_contiguous, which
// brings the chunk into L1), one packet pass that sums exp(beta (x - max)), its square and x - max,
// and a count of the logits ranked above the target, both over the chunk while it is still in L1.
// Chunks fold into the running sums with one rescale each, as lse_partial_contiguous does. The
// count only runs where it can change the answer: on chunks whose max reaches the target's logit,
// and until the rank reaches the cap (top-k needs no more than "rank >= k").
//
// Also here: the scalar path (any stride, sums in double) that serves strided class axes and that
// the tests hold the packet path to. (Temperature fitting's moments run on the sweep:
// detail/losses/temperature.hpp.)

#include "engine/view.hpp"
#include "engine/sweep.hpp"
#include "simd/math.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace xent::detail {

/// What the metrics need from one sample (beta = 1 / temperature):
///   max     the largest logit
///   sum     sum_k exp(beta (x_k - max))          (so p_k = exp(beta (x_k - max)) / sum)
///   sum_sq  sum_k exp(2 beta (x_k - max))        (so sum_k p_k^2 = sum_sq / sum^2)
///   target  the target's logit
///   rank    the target's position in a stable descending sort of the logits,
///           #{k : x_k > x_t} + #{k < t : x_k = x_t}, capped at rank_cap (rank < cap is exact);
///           0 exactly when argmax (first index) = t
/// `defined` is false when the sample has a NaN or +inf logit, or all its logits are -inf: there is
/// no distribution then (torch gives NaN) and the other fields are meaningless. `neg_inf` is true
/// when some logit may be -inf (a mask); it is also set when x - max overflowed, so a caller that
/// must tell masks apart counts them exactly (count_nonfinite).
template <class S>
struct eval_sample {
  S max = -std::numeric_limits<S>::infinity();
  S sum = 0;
  S sum_sq = 0;
  S target = 0;
  Index rank = 0;
  bool defined = true;
  bool neg_inf = false;
};

/// Number of NaN and +-inf values among n values `stride` apart.
template <class T>
Index count_nonfinite(const T* x, Index n, Index stride) {
  Index c = 0;
  for (Index i = 0; i < n; ++i) c += std::isfinite(x[i * stride]) ? 0 : 1;
  return c;
}

// Counters as wide as T, so that the compiler vectorises the compare-and-count loops below on the
// packet's lanes (chunks are far shorter than 2^31).
template <class T>
using lane_count = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;

/// #{i : x_i > t} over n contiguous values (a loop the compiler vectorises).
template <class T>
Index count_above(const T* x, Index n, T t) {
  lane_count<T> c = 0;
  for (Index i = 0; i < n; ++i) c += x[i] > t ? 1 : 0;
  return Index(c);
}

/// #{i : x_i >= t} over n contiguous values.
template <class T>
Index count_at_or_above(const T* x, Index n, T t) {
  lane_count<T> c = 0;
  for (Index i = 0; i < n; ++i) c += x[i] >= t ? 1 : 0;
  return Index(c);
}

/// The target's stable descending rank restricted to classes [start, start + n) of a sample whose
/// target is class t: classes before t count when >= x_t (ties go to the lower index), after t when >.
template <class T>
Index rank_part(const T* chunk, Index start, Index n, Index t, T xt) {
  const Index before = std::clamp(t - start, Index(0), n);           // classes of the chunk below t
  const Index after_begin = std::clamp(t + 1 - start, Index(0), n);  // first class of the chunk above t
  return count_at_or_above(chunk, before, xt) + count_above(chunk + after_begin, n - after_begin, xt);
}

template <class T>
struct exp_sums {
  T sum, sum_sq, shifted;
};

/// sum exp(beta (x - m)), sum exp(2 beta (x - m)) and sum (x - m) over n contiguous values, for a
/// finite m >= every x. The last is -inf when some x is -inf (or x - m overflowed). The exp is the
/// sums-only one (exp_for_sum): a term under e^-87.3 may come out as that bound, invisible next to
/// the max's own 1 in the sum, and squared to 0 in the sum of squares.
template <class T>
exp_sums<T> exp_sums_contiguous(const T* x, Index n, T m, T beta) {
  T s = 0, q = 0, z = 0;
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    if (n >= 2 * ps) {
      const P vm = simd::pset1<P>(m), vb = simd::pset1<P>(beta);
      // Two independent chains per sum hide the latency of the adds; they restart every 16 steps
      // (blocks added into the totals), so no chain adds more than 16 terms: the error of the sums
      // stays a few ulp at any chunk length.
      const P zero = simd::pset1<P>(T(0));
      P s0 = zero, s1 = zero, q0 = zero, q1 = zero, z0 = zero, z1 = zero, st = zero, qt = zero;
      constexpr Index block = 32 * ps;
      while (i + 2 * ps <= n) {
        s0 = zero, s1 = zero, q0 = zero, q1 = zero;
        for (const Index end = std::min(n, i + block); i + 2 * ps <= end; i += 2 * ps) {
          const P d0 = simd::psub(simd::load<P>(x + i), vm);
          const P d1 = simd::psub(simd::load<P>(x + i + ps), vm);
          const P e0 = simd::exp_for_sum(simd::pmul(d0, vb));
          const P e1 = simd::exp_for_sum(simd::pmul(d1, vb));
          s0 = simd::padd(s0, e0);
          s1 = simd::padd(s1, e1);
          q0 = simd::padd(q0, simd::pmul(e0, e0));
          q1 = simd::padd(q1, simd::pmul(e1, e1));
          z0 = simd::padd(z0, d0);
          z1 = simd::padd(z1, d1);
        }
        st = simd::padd(st, simd::padd(s0, s1));
        qt = simd::padd(qt, simd::padd(q0, q1));
      }
      s0 = st, q0 = qt, s1 = zero, q1 = zero;
      for (; i + ps <= n; i += ps) {
        const P d = simd::psub(simd::load<P>(x + i), vm);
        const P e = simd::exp_for_sum(simd::pmul(d, vb));
        s0 = simd::padd(s0, e);
        q0 = simd::padd(q0, simd::pmul(e, e));
        z0 = simd::padd(z0, d);
      }
      s = simd::predux(simd::padd(s0, s1));
      q = simd::predux(simd::padd(q0, q1));
      z = simd::predux(simd::padd(z0, z1));
    }
  }
  for (; i < n; ++i) {
    const T d = x[i] - m;
    const T e = simd::exp_nonpositive_scalar(d * beta);
    s += e;
    q += e * e;
    z += d;
  }
  return {s, q, z};
}

/// The sample of n contiguous logits with target class t (0 <= t < n), at inverse temperature beta > 0.
template <class T>
eval_sample<T> eval_sample_contiguous(const T* x, Index n, Index t, T beta, Index rank_cap) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  eval_sample<T> r;
  r.target = x[t];
  for (Index start = 0; start < n; start += engine::chunk_elements<T>) {
    const Index len = std::min(engine::chunk_elements<T>, n - start);
    const T* chunk = x + start;
    const T m = engine::max_contiguous(chunk, len);
    if (!(m < inf)) {  // NaN or +inf: no distribution, nothing more to learn
      r.defined = false;
      return r;
    }
    // A chunk whose max is below the target's logit holds nothing ranked above it.
    if (r.rank < rank_cap && !(m < r.target)) r.rank = std::min(rank_cap, r.rank + rank_part(chunk, start, len, t, r.target));
    if (m == -inf) {  // every class of the chunk masked
      r.neg_inf = true;
      continue;
    }
    const exp_sums<T> c = exp_sums_contiguous(chunk, len, m, beta);
    r.neg_inf = r.neg_inf || c.shifted == -inf;
    if (r.max == -inf) {  // the first chunk with a finite max needs no rescale
      r.max = m;
      r.sum = c.sum;
      r.sum_sq = c.sum_sq;
    } else if (m > r.max) {
      const T f = simd::exp_nonpositive_scalar(beta * (r.max - m));
      r.sum = r.sum * f + c.sum;
      r.sum_sq = r.sum_sq * (f * f) + c.sum_sq;
      r.max = m;
    } else {
      const T f = simd::exp_nonpositive_scalar(beta * (m - r.max));
      r.sum += c.sum * f;
      r.sum_sq += c.sum_sq * (f * f);
    }
  }
  r.defined = r.max != -inf;
  return r;
}

/// The same for n logits `stride` apart: plain scalar loops with compensated sums in double. It serves
/// strided class axes and is the reference the tests hold eval_sample_contiguous to.
template <class T>
eval_sample<double> eval_sample_scalar(const T* x, Index n, Index stride, Index t, T beta, Index rank_cap) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  eval_sample<double> r;
  r.target = double(x[t * stride]);
  for (Index k = 0; k < n; ++k) {
    const double v = double(x[k * stride]);
    if (std::isnan(v) || v == inf) {
      r.defined = false;
      return r;
    }
    r.neg_inf = r.neg_inf || v == -inf;
    r.max = std::max(r.max, v);
    r.rank += (v > r.target || (k < t && v == r.target)) ? 1 : 0;
  }
  r.rank = std::min(r.rank, rank_cap);
  if (r.max == -inf) {
    r.defined = false;
    return r;
  }
  // Compensated (Kahan) sums: one scalar chain would otherwise lose up to n ulp.
  double cs = 0, cq = 0;
  const auto add = [](double& sum, double& c, double term) {
    const double y = term - c, next = sum + y;
    c = (next - sum) - y;
    sum = next;
  };
  for (Index k = 0; k < n; ++k) {
    const double e = std::exp(double(beta) * (double(x[k * stride]) - r.max));
    add(r.sum, cs, e);
    add(r.sum_sq, cq, e * e);
  }
  return r;
}

template <class T>
eval_sample<T> eval_sample_of(const samples_view<const T>& v, Index j, Index t, T beta, Index rank_cap) {
  if (v.classes_contiguous()) return eval_sample_contiguous(v.sample(j), v.classes, t, beta, rank_cap);
  const eval_sample<double> d = eval_sample_scalar(v.sample(j), v.classes, v.class_stride, t, beta, rank_cap);
  return {T(d.max), T(d.sum), T(d.sum_sq), T(d.target), d.rank, d.defined, d.neg_inf};
}

}  // namespace xent::detail

#endif
