#ifndef XENT_DETAIL_SIMD_PACKET_HPP
#define XENT_DETAIL_SIMD_PACKET_HPP

// The one place xent names Eigen::internal (with simd/math.hpp, which builds on these names):
// Eigen's packet math is not a stable interface between Eigen 3.4 and 5, so every kernel goes
// through xent::detail::simd.
//
// Every operation here also takes a plain scalar T as a "packet" of one lane (Eigen's generic
// packet functions do), so a formula is written once as a template over V and runs on packets in
// the vectorised body and on scalars where there is no packet type.

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>

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

/// What the kernels compute on: packets of T where there are (with a vectorised exp), else T
/// itself (a packet of one lane). (Spelled through a struct: std::conditional_t<.., packet<T>, T>
/// draws GCC's -Wignored-attributes.)
template <class T, bool = has_packet_exp<T>>
struct vector_of_t {
  using type = T;
};
template <class T>
struct vector_of_t<T, true> {
  using type = packet<T>;
};
template <class T>
using vector_of = typename vector_of_t<T>::type;
/// Lanes of vector_of<T>.
template <class T>
inline constexpr Eigen::Index vector_lanes = has_packet_exp<T> ? packet_size<T> : 1;

/// The scalar type of a packet, or the type itself for a scalar.
template <class V>
using scalar_of = typename Eigen::internal::unpacket_traits<V>::type;

/// Lanes of V: 1 for a scalar.
template <class V>
inline constexpr Eigen::Index lanes = Eigen::internal::unpacket_traits<V>::size;

using Eigen::internal::pabs;
using Eigen::internal::padd;
using Eigen::internal::pand;
using Eigen::internal::pandnot;
using Eigen::internal::pcmp_eq;
using Eigen::internal::pcmp_le;
using Eigen::internal::pcmp_lt;
using Eigen::internal::pcmp_lt_or_nan;
using Eigen::internal::pdiv;
using Eigen::internal::pfirst;
using Eigen::internal::pgather;
using Eigen::internal::pload;
using Eigen::internal::plog;
using Eigen::internal::pmadd;
using Eigen::internal::pmax;
using Eigen::internal::pmin;
using Eigen::internal::pmul;
using Eigen::internal::pnegate;
using Eigen::internal::por;
using Eigen::internal::predux;
using Eigen::internal::predux_any;
using Eigen::internal::pscatter;
using Eigen::internal::pselect;
using Eigen::internal::pset1;
using Eigen::internal::pstore;
using Eigen::internal::pstoreu;
using Eigen::internal::psub;
using Eigen::internal::ptranspose;
using Eigen::internal::ptrue;

/// n packets as a block, for ptranspose (n = the packet size: a square transpose in registers).
template <class P, int n>
using packet_block = Eigen::internal::PacketBlock<P, n>;

template <class P>
P load(const scalar_of<P>* from) {
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

/// prefetch(p + bytes), where p + bytes may lie past the end of p's buffer: the address is formed
/// as an integer, since pointer arithmetic beyond an array's end is undefined.
inline void prefetch_ahead(const void* p, std::ptrdiff_t bytes) {
  prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) + std::uintptr_t(bytes)));
}

/// Lane-wise max that returns NaN when either side is NaN, so a NaN logit can never be lost in
/// the max pass (plain pmax keeps whichever operand the instruction prefers).
template <class P>
P max_nan(const P& a, const P& b) {
  return Eigen::internal::pmax<Eigen::PropagateNaN>(a, b);
}
template <class P>
scalar_of<P> reduce_max_nan(const P& a) {
  return Eigen::internal::predux_max<Eigen::PropagateNaN>(a);
}

/// x as computed, kept out of FMA contraction with what follows: a - b of two such products is then
/// exactly 0 where they are equal (a contracted fma(x, y, -b) leaves b's rounding error instead).
template <class V>
EIGEN_ALWAYS_INLINE V materialized(V x) {
  EIGEN_OPTIMIZATION_BARRIER(x);
  return x;
}

/// tanh of a packet where Eigen vectorises it; otherwise lane by lane.
template <class T>
inline constexpr bool has_packet_tanh = Eigen::internal::packet_traits<T>::HasTanh;
template <class V>
V tanh(const V& x) {
  return Eigen::internal::ptanh(x);
}

/// log1p, vectorised for every packet with a log (Eigen 3.4 has no packet log1p for double).
template <class V>
V log1p(const V& x) {
  if constexpr (lanes<V> == 1) {
    using std::log1p;
    return log1p(x);
  } else {
    return Eigen::internal::generic_plog1p(x);
  }
}

/// exp of a packet, Eigen's (any argument; see simd/math.hpp for xent's own on x <= 0).
template <class V>
V eigen_exp(const V& x) {
  return Eigen::internal::pexp(x);
}

/// The integer packet of the same width, when Eigen has one (xent's float exp builds 2^n in it).
template <class P>
constexpr auto integer_packet_probe(int) -> decltype(sizeof(typename Eigen::internal::unpacket_traits<P>::integer_packet), true) {
  return std::is_same_v<scalar_of<P>, float>;
}
template <class P>
constexpr bool integer_packet_probe(...) {
  return false;
}

}  // namespace xent::detail::simd

#endif
