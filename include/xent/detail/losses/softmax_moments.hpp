#ifndef XENT_DETAIL_LOSSES_SOFTMAX_MOMENTS_HPP
#define XENT_DETAIL_LOSSES_SOFTMAX_MOMENTS_HPP

// Two sweeps whose one extra statistic is an expectation under p = softmax(x):
//   the softmax Hessian-vector product (diag(p) - p p^T) v = p (v - <p, v>),  with sum_k e_k v_k;
//   the entropy of softmax(x), H = log S - sum_k e_k (x_k - max) / S,            with sum_k e_k (x_k - max),
//     and its gradient dH / dx_k = -p_k (log p_k + H).
// e_k = exp(x_k - max), S = sum_k e_k. One read of each sample for the statistics, one for the output.

#include "../engine/sweep.hpp"
#include "softmax.hpp"

#include <cmath>
#include <limits>

namespace xent::detail {

/// A sample's partial and one exp-weighted sum E, relative to the partial's max.
template <class T>
struct moment_sample {
  lse_partial<T> partial = lse_partial<T>::identity();
  T moment = 0;
};

/// Centered: E = sum_k e_k (x_k - max) (moves with the max); otherwise E = sum_k e_k y_k.
template <class T, bool Centered>
struct moment_stats {
  static constexpr int sums = 2;
  static constexpr bool uses_y = !Centered, uses_w = false, max_of_y = false, exp_of_x = true;
  using sample = moment_sample<T>;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V& e, const V& y, const V&, const V&) const {
    if constexpr (Centered) {
      // A masked class (-inf) must add 0. The packet exp of a sum is not 0 there (it clamps its
      // argument: about 1.2e-38 in float), and times d held at the lowest finite value that adds a term
      // of order 1 to the moment; so e is flushed below
      // log(min normal), as exp_nonpositive's, where e d is below any ulp of the moment's terms.
      V live = e;
      if constexpr (simd::lanes<V> == 1) {
        live = d < simd::exp_flush_below<T> ? T(0) : e;
      } else {
        live = simd::pandnot(e, simd::pcmp_lt(d, simd::pset1<V>(simd::exp_flush_below<T>)));
      }
      acc[0] = simd::padd(acc[0], simd::pmul(live, simd::pmax(d, simd::pset1<V>(std::numeric_limits<T>::lowest()))));
    } else {
      acc[0] = simd::padd(acc[0], simd::pmul(e, y));
    }
  }
  void nonfinite(engine::chunk_stats<T, 2>& c, const T*, const T*, const T*, Index) const {
    c.sum[0] = std::isnan(c.max) ? c.max : c.max == std::numeric_limits<T>::infinity() ? T(1) : T(0);
    c.sum[1] = std::isfinite(c.max) || c.max == -std::numeric_limits<T>::infinity() ? T(0) : c.sum[0];
  }
  void fold(sample& s, const engine::chunk_stats<T, 2>& c, Index) const {
    const lse_partial<T> p{c.max, c.sum[0]};
    if (s.partial.max == -std::numeric_limits<T>::infinity()) {
      s.partial = p;
      s.moment = c.sum[1];
      return;
    }
    const lse_partial<T> merged = merge(s.partial, p);
    if (!std::isfinite(merged.max)) {
      s.partial = merged;
      return;
    }
    auto carried = [&](T from, T moment, T sum) {
      if (from == -std::numeric_limits<T>::infinity()) return T(0);
      const T r = std::exp(from - merged.max);
      return Centered ? r * (moment + (from - merged.max) * sum) : r * moment;
    };
    s.moment = carried(s.partial.max, s.moment, s.partial.sum) + carried(c.max, c.sum[1], c.sum[0]);
    s.partial = merged;
  }
};

/// p_k (v_k - pv): the HVP's write.
template <class T>
struct hvp_writer {
  T max = 0, inv_sum = 0, pv = 0;
  template <class V>
  V operator()(const V& x, const V& v, const V&, V&) const {
    const V p = simd::pmul(simd::exp_nonpositive(simd::psub(x, simd::pset1<V>(max))), simd::pset1<V>(inv_sum));
    return simd::pmul(p, simd::psub(v, simd::pset1<V>(pv)));
  }
};

/// -c p_k ((x_k - max) - log S + H): the entropy's gradient times c. A masked class has p = 0.
template <class T>
struct entropy_grad {
  T max = 0, inv_sum = 0, shift = 0, c = 0;  // shift = H - log S
  template <class V>
  V operator()(const V& x, const V&, const V&, V&) const {
    const V d = simd::psub(x, simd::pset1<V>(max));
    const V p = simd::pmul(simd::exp_nonpositive(d), simd::pset1<V>(inv_sum));
    const V lowest = simd::pset1<V>(std::numeric_limits<T>::lowest());
    return simd::pmul(simd::pset1<V>(-c), simd::pmul(p, simd::padd(simd::pmax(d, lowest), simd::pset1<V>(shift))));
  }
};

/// The entropy of softmax of a folded sample (NaN when the log-sum-exp is not finite).
template <class T>
T entropy_of(const moment_sample<T>& s) {
  if (!std::isfinite(s.partial.max)) return std::numeric_limits<T>::quiet_NaN();
  return std::log(s.partial.sum) - s.moment / s.partial.sum;
}

/// The HVP (Centered = false, y = v, out = the product) or the entropy (Centered = true: values[j]
/// = H_j, and with out, the gradient of sum_j scale(j) H_j) as a sweep policy.
template <class S, bool Centered, class ScaleAt>
class moment_policy {
 public:
  using T = compute_t<S>;
  using stats_type = moment_stats<T, Centered>;
  using sample = moment_sample<T>;
  static constexpr bool has_lane_blocks = false;

  moment_policy(T* values, ScaleAt scale, bool writes) : values_(values), scale_(scale), writes_(writes) {}
  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index) const { return false; }
  void skipped(Index) const {}
  void finish(Index j, const sample& s, const engine::row<S>&) const {
    if constexpr (Centered)
      if (values_) values_[j] = entropy_of(s);
  }
  bool writes() const { return writes_; }
  auto writer(Index j, const sample& s) const {
    const bool defined = std::isfinite(s.partial.max);
    const T inv = T(1) / s.partial.sum;
    if constexpr (Centered) {
      const T H = entropy_of(s);
      return engine::sample_writer<entropy_grad<T>>{{s.partial.max, inv, H - std::log(s.partial.sum), scale_(j)}, defined, -1};
    } else {
      return engine::sample_writer<hvp_writer<T>>{{s.partial.max, inv, s.moment * inv}, defined, -1};
    }
  }

 private:
  stats_type stats_;
  T* values_;
  ScaleAt scale_;
  bool writes_;
};

}  // namespace xent::detail

#endif
