#ifndef XENT_DETAIL_PACKET_HPP
#define XENT_DETAIL_PACKET_HPP

// The only place xent names Eigen::internal: packet math is not a stable interface between Eigen
// 3.4 and 5, so every kernel goes through these few names.

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <type_traits>

namespace xent::detail::simd {

template <class T>
using packet = typename Eigen::internal::packet_traits<T>::type;

template <class T>
inline constexpr Eigen::Index packet_size = Eigen::internal::unpacket_traits<packet<T>>::size;

/// True when the kernels can run on packets of T (vectorised exp included); otherwise the scalar
/// loops do all the work.
template <class T>
inline constexpr bool has_packet_exp = Eigen::internal::packet_traits<T>::Vectorizable &&
                                       Eigen::internal::packet_traits<T>::HasExp && (packet_size<T> > 1);

using Eigen::internal::padd;
using Eigen::internal::pmadd;
using Eigen::internal::pmul;
using Eigen::internal::pset1;
using Eigen::internal::psub;
using Eigen::internal::predux;

template <class P>
P load(const typename Eigen::internal::unpacket_traits<P>::type* from) {
  return Eigen::internal::ploadu<P>(from);
}
template <class T, class P>
void store(T* to, const P& p) {
  Eigen::internal::pstoreu(to, p);
}

/// Asks for the cache line holding p ahead of use (a hint: never faults, even past a buffer's end).
/// Into L2 (locality 2), not L1: what is read ahead is a chunk or a sample away, and L1 holds the
/// chunk being worked on.
inline void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}

/// Lane-wise max that returns NaN when either side is NaN, so a NaN logit can never be lost in
/// the max pass (plain pmax keeps whichever operand the instruction prefers).
template <class P>
P max_nan(const P& a, const P& b) {
  return Eigen::internal::pmax<Eigen::PropagateNaN>(a, b);
}
template <class P>
typename Eigen::internal::unpacket_traits<P>::type reduce_max_nan(const P& a) {
  return Eigen::internal::predux_max<Eigen::PropagateNaN>(a);
}

/// log of the smallest normal number: exp of anything below it is flushed to 0.
template <class T>
inline const T exp_flush_below = std::log(std::numeric_limits<T>::min());

/// True when xent's own float exp runs on P (it builds 2^n in the exponent bits, so it needs
/// Eigen's integer packet of the same width).
template <class P>
constexpr auto fast_exp_probe(int) -> decltype(sizeof(typename Eigen::internal::unpacket_traits<P>::integer_packet), true) {
  return std::is_same_v<typename Eigen::internal::unpacket_traits<P>::type, float>;
}
template <class P>
constexpr bool fast_exp_probe(...) {
  return false;
}
template <class P>
inline constexpr bool has_fast_exp = fast_exp_probe<P>(0);
/// The same, named by the scalar type (a packet type as a template argument draws GCC's
/// -Wignored-attributes outside a template).
template <class T>
inline constexpr bool has_fast_exp_for = has_fast_exp<packet<T>>;

/// exp(d) for float d in [-87.33, 0], within 1.07 ulp of the exact value over every float in
/// [-87.3, 0] (tests/test_exp.cpp checks all 1.1e9 of them when asked, a sample by default).
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
template <class P>
P exp_for_sum(const P& d) {
  if constexpr (has_fast_exp<P>)
    return exp_clamped(d);
  else
    return Eigen::internal::pexp(d);
}

/// exp(x) for x <= 0, with exact 0 below log(min normal) and at -inf: what softmax writes, so a
/// masked (-inf) logit gets exactly the 0 torch gives it. Denormal results are flushed to 0 as well.
template <class P>
P exp_nonpositive(const P& x) {
  using T = typename Eigen::internal::unpacket_traits<P>::type;
  const P underflow = Eigen::internal::pcmp_lt(x, pset1<P>(exp_flush_below<T>));
  return Eigen::internal::pandnot(exp_for_sum(x), underflow);
}
template <class T>
T exp_nonpositive_scalar(T x) {
  return x < exp_flush_below<T> ? T(0) : std::exp(x);
}

}  // namespace xent::detail::simd

#endif
