#ifndef XENT_DETAIL_SIMD_MATH_HPP
#define XENT_DETAIL_SIMD_MATH_HPP

// The elementary functions of xent's formulas, each one template over V (a packet, or a scalar as
// a packet of one lane), with its range and accuracy stated. Results below the smallest normal
// number are flushed to 0 throughout (docs/kernels.md): an absolute error under 1.2e-38 in float
// (2.2e-308 in double) that keeps every kernel off the slow paths denormal arithmetic takes.

#include "packet.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <type_traits>

namespace xent::detail::simd {

/// log of the smallest normal number: exp of anything below it is flushed to 0.
template <class T>
inline const T exp_flush_below = std::log(std::numeric_limits<T>::min());

/// True when xent's own float exp runs on P (it builds 2^n in the exponent bits, so it needs
/// Eigen's integer packet of the same width).
template <class P>
inline constexpr bool has_fast_exp = integer_packet_probe<P>(0);
/// The same, named by the scalar type (a packet type as a template argument draws GCC's
/// -Wignored-attributes outside a template).
template <class T>
inline constexpr bool has_fast_exp_for = has_fast_exp<packet<T>>;

/// exp(d) for float d in [-87.33, 0], within 1.07 ulp of the exact value over every float in
/// [-87.3, 0] (tests/test_simd.cpp checks all 1.1e9 of them with XENT_EXP_EXHAUSTIVE=1, a sample by default).
/// Below -87.33 the argument is clamped there (a result under 1.3e-38, which no sum containing a 1
/// can see); -inf gives the same. NaN is not an input (the kernels find NaN in their max pass).
///
/// Eigen 3.4's pexp costs about 20 packet operations and its final 2^n scaling goes through a
/// general ldexp; here: round d / ln 2 with the 1.5 * 2^23 shifter (n lands in the low mantissa
/// bits), a two-constant Cody-Waite reduction to r in [-ln 2 / 2, ln 2 / 2], a degree-6 polynomial
/// (near-minimax, fitted by tools/exp_coefficients.py) and 2^n added straight to the exponent bits
/// (one vscalefps on AVX-512):
/// 13 operations (12 on AVX-512), 2.7x faster than pexp on AVX-512 (docs/performance.md).
template <class P>
P exp_clamped(const P& d) {
  using namespace Eigen::internal;
  static_assert(has_fast_exp<P>);
  using PI = typename unpacket_traits<P>::integer_packet;
  const P x = pmax(d, pset1<P>(-87.33f));
  const P shifter = pset1<P>(12582912.0f);  // 1.5 * 2^23
  const P t = pmadd(x, pset1<P>(1.44269504088896341f), shifter);
  const P n = psub(t, shifter);
  P r = pmadd(n, pset1<P>(-0.693145751953125f), x);  // ln 2, high part: n * it is exact
  r = pmadd(n, pset1<P>(-1.428606765330187045e-06f), r);
  P p = pset1<P>(0x1.6daf6ap-10f);
  p = pmadd(p, r, pset1<P>(0x1.1276bcp-7f));
  p = pmadd(p, r, pset1<P>(0x1.55545ap-5f));
  p = pmadd(p, r, pset1<P>(0x1.5553f6p-3f));
  p = pmadd(p, r, pset1<P>(0.5f));
  p = pmadd(p, r, pset1<P>(1.0f));
  p = pmadd(p, r, pset1<P>(1.0f));
#ifdef EIGEN_VECTORIZE_AVX512
  // One instruction for p * 2^n: the kernels are bound by these operations. The same bits as below
  // wherever the result is normal; under 2^-126 it rounds the subnormal, which the exponent add cannot.
  if constexpr (unpacket_traits<P>::size == 16) return _mm512_scalef_ps(p, n);
#endif
  // t's low 9 bits hold n mod 512; shifted into the exponent field they add n to p's exponent
  // (p is in [0.7, 1.42], and n >= -126 keeps the result normal).
  const PI scale = plogical_shift_left<23>(preinterpret<PI>(t));
  return preinterpret<P>(padd(preinterpret<PI>(p), scale));
}

/// exp(d) for d <= 0 where only sums read the result: every term a sum of exp(x - max) adds is
/// finite, and those below e^-87.33 vanish next to the max's own 1.
template <class V>
V exp_for_sum(const V& d) {
  if constexpr (lanes<V> == 1) {
    using std::exp;
    return exp(d);
  } else if constexpr (has_fast_exp<V>) {
    return exp_clamped(d);
  } else {
    return eigen_exp(d);
  }
}

/// exp(x) for x <= 0, with exact 0 below log(min normal) and at -inf: what softmax writes, so a
/// masked (-inf) logit gets exactly the 0 torch gives it. Denormal results are flushed to 0 as well.
template <class V>
V exp_nonpositive(const V& x) {
  using T = scalar_of<V>;
  if constexpr (lanes<V> == 1) {
    return x < exp_flush_below<T> ? T(0) : std::exp(x);
  } else {
    return pandnot(exp_for_sum(x), pcmp_lt(x, pset1<V>(exp_flush_below<T>)));
  }
}
template <class T>
T exp_nonpositive_scalar(T x) {
  return exp_nonpositive(x);
}

/// exp(x) for any x: +inf above the largest finite result, 0 below log(min normal) (denormal
/// results flushed), NaN for NaN. Eigen's pexp on the range where it is accurate (within 2 ulp).
template <class V>
V exp_any(const V& x) {
  using T = scalar_of<V>;
  if constexpr (lanes<V> == 1) {
    return x < exp_flush_below<T> ? T(0) : std::exp(x);
  } else {
    const V big = pset1<V>(std::log(std::numeric_limits<T>::max()));
    const V e = pselect(pcmp_lt(big, x), pset1<V>(std::numeric_limits<T>::infinity()), eigen_exp(x));
    return pandnot(e, pcmp_lt(x, pset1<V>(exp_flush_below<T>)));
  }
}

/// log(x) for every x >= 0, denormals included (Eigen's plog takes them as the smallest normal
/// number): -inf at 0, NaN below 0 and for NaN, +inf at +inf. Within Eigen's plog accuracy (1 ulp
/// for float, 1 for double) elsewhere.
template <class V>
V log_any(const V& x) {
  using T = scalar_of<V>;
  if constexpr (lanes<V> == 1) {
    using std::log;
    return log(x);
  } else {
    // 2^(digits + 1) lifts the smallest denormal into the normal range; its log is taken off again.
    constexpr int lift = std::numeric_limits<T>::digits + 1;
    const V tiny = pcmp_lt(x, pset1<V>(std::numeric_limits<T>::min()));
    const V scaled = pselect(tiny, pmul(x, pset1<V>(std::ldexp(T(1), lift))), x);
    return psub(plog(scaled), pand(tiny, pset1<V>(T(lift) * T(0.693147180559945309417232121458176568L))));
  }
}

/// log(1 + e) for e in [0, 1] (softplus(-|x|)): 2 atanh(s) with s = e / (2 + e) in [0, 1/3], the
/// odd series of atanh to the type's precision (s^2 <= 1/9: 8 terms for float, 17 for double), one
/// division and a Horner chain: about half the work of Eigen's log1p (a full-range log, then a
/// division). e must be 0 or a normal number (exp_nonpositive flushes denormal results to 0).
template <class V>
EIGEN_ALWAYS_INLINE V log1p_unit(const V& e) {
  using T = scalar_of<V>;
  constexpr int terms = sizeof(T) == 4 ? 8 : 17;
  const V s = pdiv(e, padd(pset1<V>(T(2)), e));
  const V z = pmul(s, s);
  // 2 s (1 + z q(z)): the leading term added last, so the series' own roundings are those of a
  // correction below 1/27 of the result.
  V q = pset1<V>(T(1) / T(2 * terms - 1));
  for (int k = terms - 2; k >= 1; --k) q = pmadd(q, z, pset1<V>(T(1) / T(2 * k + 1)));
  const V two_s = padd(s, s);
  return pmadd(two_s, pmul(z, q), two_s);
}

/// The pieces of softplus that every binary formula shares, for one x:
///   e = exp(-|x|) in (0, 1],  l = log1p(e) = softplus(-|x|),  r() = 1 / (1 + e),
/// so that softplus(x) = max(x, 0) + l, softplus(-x) = max(-x, 0) + l, and
/// sigmoid(x) = r for x >= 0, e r for x < 0 (sigmoid(-x) the other one): no cancellation for any x,
/// no overflow for any finite x (+-1e30 included). log1p_unit(e) is within 2 ulp of softplus(-|x|)
/// where that is normal (exp within 1.1, the series within 1 on top).
template <class V>
struct softplus_parts {
  V x, e, l;
  // Inlined into each formula, so that what a formula does not use (1 / (1 + e) for a loss
  // alone) is never computed: out of line, the constructor ran every part for every caller.
  EIGEN_ALWAYS_INLINE explicit softplus_parts(const V& x_in) : x(x_in) {
    e = exp_nonpositive(pnegate(pabs(x)));
    l = log1p_unit(e);
  }
  EIGEN_ALWAYS_INLINE V r() const { return pdiv(pset1<V>(scalar_of<V>(1)), padd(pset1<V>(scalar_of<V>(1)), e)); }  // 1 / (1 + e)
  // max_nan: a NaN x must reach the result (every other part of a NaN x is NaN already).
  EIGEN_ALWAYS_INLINE V softplus() const { return padd(max_nan(x, pset1<V>(scalar_of<V>(0))), l); }           // log(1 + exp(x))
  EIGEN_ALWAYS_INLINE V softplus_neg() const { return padd(max_nan(pnegate(x), pset1<V>(scalar_of<V>(0))), l); }  // log(1 + exp(-x))
  EIGEN_ALWAYS_INLINE V sigmoid() const {
    const V rr = r();
    return pselect(negative(), pmul(e, rr), rr);
  }
  EIGEN_ALWAYS_INLINE V sigmoid_neg() const {  // sigmoid(-x) = 1 - sigmoid(x)
    const V rr = r();
    return pselect(negative(), rr, pmul(e, rr));
  }
  EIGEN_ALWAYS_INLINE V negative() const { return pcmp_lt(x, pset1<V>(scalar_of<V>(0))); }
};

/// x^g for x in [0, 1] and g >= 0 (0^0 = 1): exp(g log x), with a product for g = 2.
template <class V>
V pow_unit(const V& x, scalar_of<V> g) {
  using T = scalar_of<V>;
  if (g == T(2)) return pmul(x, x);
  if (g == T(1)) return x;
  if (g == T(0)) return pset1<V>(T(1));
  // exp(g * log 0) = exp(-inf) = 0, as 0^g for g > 0.
  return exp_any(pmul(pset1<V>(g), plog(x)));
}

}  // namespace xent::detail::simd

#endif
