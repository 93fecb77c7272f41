#ifndef XENT_DETAIL_PACKET_HPP
#define XENT_DETAIL_PACKET_HPP

// The only place xent names Eigen::internal: packet math is not a stable interface between Eigen
// 3.4 and 5, so every kernel goes through these few names.

#include <Eigen/Core>

#include <cmath>
#include <limits>

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

/// exp(x) for x <= 0, with exact 0 below log(min normal) and at -inf. Eigen's pexp clamps its
/// argument at about -88.4 (float) and would return a tiny non-zero for a masked (-inf) logit;
/// torch returns exactly 0 there, and so do we. Denormal results are flushed to 0 as well.
template <class P>
P exp_nonpositive(const P& x) {
  using T = typename Eigen::internal::unpacket_traits<P>::type;
  const P underflow = Eigen::internal::pcmp_lt(x, pset1<P>(exp_flush_below<T>));
  return Eigen::internal::pandnot(Eigen::internal::pexp(x), underflow);
}
template <class T>
T exp_nonpositive_scalar(T x) {
  return x < exp_flush_below<T> ? T(0) : std::exp(x);
}

}  // namespace xent::detail::simd

#endif
