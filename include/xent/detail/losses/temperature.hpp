#ifndef XENT_DETAIL_LOSSES_TEMPERATURE_HPP
#define XENT_DETAIL_LOSSES_TEMPERATURE_HPP

// The per-sample moments temperature fitting needs (metrics/temperature.hpp), as a sweep policy.
// With z_k = x_k - max, e_k = exp(beta z_k) and p = softmax(beta x), per sample:
//   nll(beta)      = -beta z_t + log sum_k e_k
//   d nll/d beta   = E_p[z] - z_t                 (= E_p[x] - x_t)
//   d2 nll/d beta2 = E_p[z^2] - E_p[z]^2          (= Var_p[x] >= 0: nll is convex in beta)
// kept as s = sum e_k, s1 = sum e_k z_k, s2 = sum e_k z_k^2. z is formed from the raw logits
// before beta multiplies it (beta x - beta max would lose the digits of z where |x| >> |z|), so the
// sweep's transform stays the identity and the exp is the formula's own.

#include "../engine/sweep.hpp"
#include "../simd/math.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail::losses {

/// A sample's moments about its running max, in double across chunks.
template <class T>
struct temperature_sample {
  T max = -std::numeric_limits<T>::infinity();
  double s = 0, s1 = 0, s2 = 0;
  bool defined = true;  // false: a NaN or +inf logit
};

template <class T>
struct temperature_stats {
  static constexpr int sums = 4;  // sum[0], the sweep's exp-sum at beta = 1, is not formed
  static constexpr bool uses_y = false, uses_w = false, max_of_y = false, exp_of_x = false;
  using sample = temperature_sample<T>;
  T beta = 1;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V&, const V&, const V&, const V&) const {
    // A masked class (-inf) has e = 0 and must add 0, not 0 * inf: z is held at the lowest finite
    // value, and e z z is formed as (e z) z.
    const V z = simd::pmax(d, simd::pset1<V>(std::numeric_limits<T>::lowest()));
    const V e = simd::exp_nonpositive(simd::pmul(z, simd::pset1<V>(beta)));
    const V ez = simd::pmul(e, z);
    acc[0] = simd::padd(acc[0], e);
    acc[1] = simd::padd(acc[1], ez);
    acc[2] = simd::padd(acc[2], simd::pmul(ez, z));
  }
  void nonfinite(engine::chunk_stats<T, 4>& c, const T*, const T*, const T*, Index) const {
    c.sum[1] = c.sum[2] = c.sum[3] = T(0);  // all masked (-inf): nothing; NaN / +inf: fold marks it
  }
  void fold(sample& s, const engine::chunk_stats<T, 4>& c, Index) const {
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    if (!(c.max < std::numeric_limits<T>::infinity())) {
      s.defined = false;
      return;
    }
    if (c.max == neg_inf) return;
    double cs = c.sum[1], c1 = c.sum[2], c2 = c.sum[3];
    if (s.max != neg_inf && c.max != s.max) {
      // Re-centre the smaller-max side on the larger max: z -> z + delta, delta < 0, e -> r e.
      const bool chunk_higher = c.max > s.max;
      const double delta = chunk_higher ? double(s.max) - double(c.max) : double(c.max) - double(s.max);
      const double r = std::exp(double(beta) * delta);
      double& a = chunk_higher ? s.s : cs;
      double& a1 = chunk_higher ? s.s1 : c1;
      double& a2 = chunk_higher ? s.s2 : c2;
      a2 = r * (a2 + 2 * delta * a1 + delta * delta * a);
      a1 = r * (a1 + delta * a);
      a = r * a;
    }
    if (c.max > s.max) s.max = c.max;
    s.s += cs;
    s.s1 += c1;
    s.s2 += c2;
  }
};

/// What one sample contributes to a temperature fit.
struct temperature_moments {
  double nll = 0, gradient = 0, curvature = 0;
  bool defined = true;  // false: no distribution (NaN, +inf, all masked) or a masked target
};

/// The moments of every sample as a sweep policy: out[j] for sample j; target(j) its class, or -1
/// for a sample left out (never read).
template <class S, class TargetAt>
class temperature_policy : public engine::read_only_policy<compute_t<S>> {
 public:
  using T = compute_t<S>;
  using stats_type = temperature_stats<T>;
  using sample = temperature_sample<T>;

  temperature_policy(temperature_moments* out, TargetAt target, T beta) : out_(out), target_(target) { stats_.beta = beta; }
  const stats_type& stats() const { return stats_; }
  bool skip(Index j) const { return target_(j) < 0; }
  void skipped(Index j) const { out_[j] = temperature_moments{0, 0, 0, false}; }
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    const T xt = static_cast<T>(*x.at(target_(j)));
    temperature_moments& m = out_[j];
    if (!s.defined || s.max == -std::numeric_limits<T>::infinity() || xt == -std::numeric_limits<T>::infinity()) {
      m = temperature_moments{0, 0, 0, false};
      return;
    }
    const double ez = s.s1 / s.s, ez2 = s.s2 / s.s, zt = double(xt) - double(s.max);
    m.nll = -double(stats_.beta) * zt + std::log(s.s);
    m.gradient = ez - zt;
    m.curvature = std::max(0.0, ez2 - ez * ez);
    m.defined = true;
  }

 private:
  stats_type stats_;
  temperature_moments* out_;
  TargetAt target_;
};

}  // namespace xent::detail::losses

#endif
