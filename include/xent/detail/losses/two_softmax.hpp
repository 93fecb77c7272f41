#ifndef XENT_DETAIL_LOSSES_TWO_SOFTMAX_HPP
#define XENT_DETAIL_LOSSES_TWO_SOFTMAX_HPP

// Two softmax distributions read together on the sweep driver (the divergences between logit
// sets, and distillation on them): the sweep's x are logits a, its y logits b, each at its own inverse
// temperature. One read of a chunk gives the differences from the maxes, scaled,
//   dz = (a - max a) / T_a,   du = (b - max b) / T_b,
// (torch scales first, a / T, which loses |a| eps of the exponent for large logits), their
// exp-sums S_z and S_u, and one of the cross sums
//   forward: f = sum_k e^du_k (du_k - dz_k),  so that  KL(Q || P) = f / S_u - log S_u + log S_z,
//   reverse: g = sum_k e^dz_k (dz_k - du_k),  so that  KL(P || Q) = g / S_z - log S_z + log S_u,
// with P = softmax(a / T_a), Q = softmax(b / T_b); with Hard also a's raw exp-sum at T = 1 (a
// cross-entropy term on hard targets).

#include "../engine/sweep.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// Which cross sum a two-softmax read gathers. none: each exp-sum kept as the count of classes at
/// the max and the tail below it, S = n + tail (for a loss that reads the sample again once it knows
/// them and needs p - q where both are near 1: 1 / S_z - 1 / S_u from the tails, without the
/// rounding of each sum near 1).
enum class cross_sum { none, forward, reverse };

/// A sample's folded statistics, each relative to its input's max: the exp-sums at the
/// temperatures, the cross sum, a's raw exp-sum (Hard), and what a second read adds.
template <class T>
struct two_softmax_sample {
  T max_s = -std::numeric_limits<T>::infinity(), max_t = -std::numeric_limits<T>::infinity();
  T sum_z = 0, sum_u = 0, cross = 0, sum_raw = 0;
  T at_max_z = 0, tail_z = 0, at_max_u = 0, tail_u = 0;  // cross_sum::none: S_z = at_max_z + tail_z, the same for u
  double second[4] = {0, 0, 0, 0};
  bool defined = true;
};

template <class T, bool Hard, cross_sum Cross>
struct two_softmax_stats {
  // S_raw (the engine's, Hard only), then S_z, S_u, cross; or (none) n_z, tail_z, n_u, tail_u.
  static constexpr bool tails = Cross == cross_sum::none;
  static constexpr int sums = tails ? 5 : 4;
  static constexpr bool uses_y = true, uses_w = false, max_of_y = true, exp_of_x = Hard;
  T inverse_temperature_x = 1, inverse_temperature_y = 1;
  using sample = two_softmax_sample<T>;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V&, const V& t, const V&, const V& max_t) const {
    const V zero = simd::pset1<V>(T(0));
    const V dz = simd::pmul(d, simd::pset1<V>(inverse_temperature_x));
    const V du = simd::pmul(simd::psub(t, max_t), simd::pset1<V>(inverse_temperature_y));
    const V ez = simd::exp_nonpositive(dz), eu = simd::exp_nonpositive(du);
    if constexpr (tails) {
      const V one = simd::pset1<V>(T(1));
      const V top_z = simd::pcmp_eq(dz, zero), top_u = simd::pcmp_eq(du, zero);
      acc[0] = simd::padd(acc[0], simd::pand(top_z, one));
      acc[1] = simd::padd(acc[1], simd::pandnot(ez, top_z));
      acc[2] = simd::padd(acc[2], simd::pand(top_u, one));
      acc[3] = simd::padd(acc[3], simd::pandnot(eu, top_u));
      return;
    }
    acc[0] = simd::padd(acc[0], ez);
    acc[1] = simd::padd(acc[1], eu);
    // A class without mass in the weighting distribution adds 0 whatever the other's value (no 0 * -inf).
    if constexpr (Cross == cross_sum::forward)
      acc[2] = simd::padd(acc[2], simd::pandnot(simd::pmul(eu, simd::psub(du, dz)), simd::pcmp_eq(eu, zero)));
    if constexpr (Cross == cross_sum::reverse)
      acc[2] = simd::padd(acc[2], simd::pandnot(simd::pmul(ez, simd::psub(dz, du)), simd::pcmp_eq(ez, zero)));
  }

  /// A chunk with a NaN or +inf in either input makes the sample undefined (torch's log_softmax is
  /// NaN there); a chunk with every class of one input masked adds nothing of that input, and mass
  /// of the weighting distribution where the other is all masked makes the cross sum +inf.
  void nonfinite(engine::chunk_stats<T, sums>& c, const T* s, const T* t, const T*, Index n) const {
    constexpr T inf = std::numeric_limits<T>::infinity();
    const bool bad = std::isnan(c.max) || std::isnan(c.max_y) || c.max == inf || c.max_y == inf;
    for (int k = 0; k < sums; ++k) c.sum[k] = bad ? std::numeric_limits<T>::quiet_NaN() : T(0);
    if (bad) return;
    for (Index i = 0; i < n; ++i) {
      const T dz = c.max == -inf ? -inf : (s[i] - c.max) * inverse_temperature_x;
      const T du = c.max_y == -inf ? -inf : (t[i] - c.max_y) * inverse_temperature_y;
      const T ez = std::exp(dz), eu = std::exp(du);
      if (Hard && c.max != -inf) c.sum[0] += std::exp(s[i] - c.max);
      if constexpr (tails) {
        (dz == T(0) ? c.sum[1] : c.sum[2]) += dz == T(0) ? T(1) : ez;
        (du == T(0) ? c.sum[3] : c.sum[4]) += du == T(0) ? T(1) : eu;
        continue;
      }
      c.sum[1] += ez;
      c.sum[2] += eu;
      if constexpr (Cross == cross_sum::forward)
        if (eu != T(0)) c.sum[3] += eu * (du - dz);  // +inf where a is masked
      if constexpr (Cross == cross_sum::reverse)
        if (ez != T(0)) c.sum[3] += ez * (dz - du);  // +inf where b is masked
    }
  }

  void fold(sample& s, const engine::chunk_stats<T, sums>& c, Index) const {
    constexpr T inf = std::numeric_limits<T>::infinity();
    if (!s.defined || std::isnan(c.sum[1]) || std::isnan(c.sum[2])) {
      s.defined = false;
      return;
    }
    const T ms = std::max(s.max_s, c.max), mt = std::max(s.max_t, c.max_y);
    // What carries a sum relative to `from` over to `to`, for exps of (x - max) / T (or of x - max).
    auto carry = [&](T from, T to, T scale) { return from == -inf ? T(0) : std::exp((from - to) * scale); };
    const T ix = inverse_temperature_x, iy = inverse_temperature_y;
    const T rz_old = carry(s.max_s, ms, ix), rz_new = carry(c.max, ms, ix);
    const T ru_old = carry(s.max_t, mt, iy), ru_new = carry(c.max_y, mt, iy);
    if constexpr (Hard) s.sum_raw = s.sum_raw * carry(s.max_s, ms, T(1)) + c.sum[0] * carry(c.max, ms, T(1));
    if constexpr (tails) {
      // A part at the new max keeps its count; a part below it joins the tail, rescaled.
      auto merge = [&](T& at_max, T& tail, T from, T c_at_max, T c_tail, T c_from, T to, T scale) {
        T n = 0, below = 0;
        if (from == to) n += at_max, below += tail;
        else if (from != -inf) below += (at_max + tail) * std::exp((from - to) * scale);
        if (c_from == to) n += c_at_max, below += c_tail;
        else if (c_from != -inf) below += (c_at_max + c_tail) * std::exp((c_from - to) * scale);
        at_max = n;
        tail = below;
      };
      merge(s.at_max_z, s.tail_z, s.max_s, c.sum[1], c.sum[2], c.max, ms, ix);
      merge(s.at_max_u, s.tail_u, s.max_t, c.sum[3], c.sum[4], c.max_y, mt, iy);
      s.sum_z = s.at_max_z + s.tail_z;
      s.sum_u = s.at_max_u + s.tail_u;
      s.max_s = ms;
      s.max_t = mt;
      return;
    }
    if constexpr (Cross != cross_sum::none) {
      // The cross sum is relative to the maxes it was formed with; each part moves by its shift of
      // the weighted difference (du - dz forward, dz - du reverse), times its weights' sum.
      auto moved = [&](T f, T weights, T at_s, T at_t, T r) {
        if (r == T(0)) return T(0);
        const T shift_z = at_s == -inf ? -inf : (at_s - ms) * ix, shift_u = at_t == -inf ? -inf : (at_t - mt) * iy;
        const T shift = Cross == cross_sum::forward ? shift_u - shift_z : shift_z - shift_u;
        return r * (f + shift * weights);
      };
      if constexpr (Cross == cross_sum::forward)
        s.cross = moved(s.cross, s.sum_u, s.max_s, s.max_t, ru_old) + moved(c.sum[3], c.sum[2], c.max, c.max_y, ru_new);
      else
        s.cross = moved(s.cross, s.sum_z, s.max_s, s.max_t, rz_old) + moved(c.sum[3], c.sum[1], c.max, c.max_y, rz_new);
    }
    s.sum_z = s.sum_z * rz_old + c.sum[1] * rz_new;
    s.sum_u = s.sum_u * ru_old + c.sum[2] * ru_new;
    s.max_s = ms;
    s.max_t = mt;
  }
};

/// KL(Q || P) of a sample folded with the forward cross sum; NaN when undefined (NaN or +inf
/// logits, or an all-masked Q), +inf when Q has mass on an all-masked P. KL(P || Q) is the same
/// with the roles swapped (reverse_kl).
template <class T>
T forward_kl(const two_softmax_sample<T>& s) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  if (!s.defined || s.max_t == -inf) return std::numeric_limits<T>::quiet_NaN();
  if (s.max_s == -inf) return inf;
  return s.cross / s.sum_u - std::log(s.sum_u) + std::log(s.sum_z);
}
template <class T>
T reverse_kl(const two_softmax_sample<T>& s) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  if (!s.defined || s.max_s == -inf) return std::numeric_limits<T>::quiet_NaN();
  if (s.max_t == -inf) return inf;
  return s.cross / s.sum_z - std::log(s.sum_z) + std::log(s.sum_u);
}

}  // namespace xent::detail

#endif
