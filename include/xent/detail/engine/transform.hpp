#ifndef XENT_DETAIL_ENGINE_TRANSFORM_HPP
#define XENT_DETAIL_ENGINE_TRANSFORM_HPP

// How a loss sees its inputs: the soft-cap (Gemma 2) or a scale (1 / temperature), applied to a
// chunk and differentiated through, once for every driver (the sweep and the linear tiles).

#include "../simd/math.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace xent::detail {

/// The type a kernel computes in for a given input type: bf16 and half are widened to float.
template <class S>
struct compute_of {
  using type = S;
};
template <>
struct compute_of<Eigen::bfloat16> {
  using type = float;
};
template <>
struct compute_of<Eigen::half> {
  using type = float;
};
template <class S>
using compute_t = typename compute_of<S>::type;

namespace engine {

/// z = softcap * tanh(x / softcap) (Gemma 2) or z = x * scale (1 / temperature), or x itself.
template <class T>
struct transform {
  T softcap = 0;
  T scale = 1;
  bool identity() const noexcept { return softcap == 0 && scale == T(1); }
};

/// The transform of n values in place (the chunk buffer).
template <class T>
void apply_transform(T* z, Index n, const transform<T>& f) {
  if (f.identity()) return;
  Index i = 0;
  if (f.softcap != 0) {
    if constexpr (simd::has_packet_exp<T> && simd::has_packet_tanh<T>) {
      using P = simd::packet<T>;
      constexpr Index ps = simd::packet_size<T>;
      const P cap = simd::pset1<P>(f.softcap), inv = simd::pset1<P>(T(1) / f.softcap);
      for (; i + ps <= n; i += ps) simd::store(z + i, simd::pmul(cap, simd::tanh(simd::pmul(simd::load<P>(z + i), inv))));
    }
    for (; i < n; ++i) z[i] = f.softcap * std::tanh(z[i] / f.softcap);
    return;
  }
  for (; i < n; ++i) z[i] *= f.scale;
}

/// d z / d x of the transform at x, times g, over n values (g in place). The soft-cap's derivative
/// is sech^2(x / c) = 4 e / (1 + e)^2 with e = exp(-2 |x / c|), not 1 - tanh^2, which cancels to
/// noise (up to 5e-7 in float) where the cap saturates. Strided or narrower x is widened into a
/// block first, so every layout runs the same packet code.
template <class S, class T>
void apply_transform_derivative(const S* x, Index stride, T* g, Index n, const transform<T>& f) {
  if (f.identity()) return;
  if (f.softcap == 0) {
    for (Index i = 0; i < n; ++i) g[i] *= f.scale;
    return;
  }
  const T k = T(-2) / f.softcap;
  auto sech2_times = [k](const auto& xv, const auto& gv) {
    using V = std::decay_t<decltype(xv)>;
    const V e = simd::exp_nonpositive(simd::pmul(simd::pabs(xv), simd::pset1<V>(k)));
    const V one_e = simd::padd(simd::pset1<V>(T(1)), e);
    return simd::pmul(gv, simd::pdiv(simd::pmul(simd::pset1<V>(T(4)), e), simd::pmul(one_e, one_e)));
  };
  constexpr Index block = 256;
  alignas(64) T widened[block];
  for (Index start = 0; start < n; start += block) {
    const Index len = std::min(block, n - start);
    const T* xs;
    if constexpr (std::is_same_v<S, T>) {
      xs = stride == 1 ? x + start : widened;
    } else {
      xs = widened;
    }
    if (xs == widened)
      for (Index i = 0; i < len; ++i) widened[i] = static_cast<T>(x[(start + i) * stride]);
    T* gs = g + start;
    Index i = 0;
    if constexpr (simd::has_packet_exp<T>) {
      using P = simd::packet<T>;
      constexpr Index ps = simd::packet_size<T>;
      for (; i + ps <= len; i += ps) simd::store(gs + i, sech2_times(simd::load<P>(xs + i), simd::load<P>(gs + i)));
    }
    for (; i < len; ++i) gs[i] = sech2_times(xs[i], gs[i]);
  }
}
/// One logit as the loss sees it.
template <class S>
compute_t<S> value_of(S x, const transform<compute_t<S>>& f) {
  const auto v = static_cast<compute_t<S>>(x);
  if (f.softcap != 0) return f.softcap * std::tanh(v / f.softcap);
  return v * f.scale;
}

}  // namespace engine
}  // namespace xent::detail

#endif
