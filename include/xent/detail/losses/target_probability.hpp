#ifndef XENT_DETAIL_LOSSES_TARGET_PROBABILITY_HPP
#define XENT_DETAIL_LOSSES_TARGET_PROBABILITY_HPP

// Losses that are a function of the target's log-probability alone, on the sweep driver:
//   softmax_focal_loss:        -alpha_t (1 - p_t)^gamma log p_t
//   generalized_cross_entropy: (1 - p_t^q) / q
// For any loss f(lp_t), d f / d x_k = F (p_k - delta_kt) with F = -f'(lp_t): the write pass writes
// c F p_k, and the target's entry is formed last as minus the sum of the others (no
// cancellation where p_t is near 1). One read of each sample for the loss (its log-sum-exp), one
// more for the gradient.

#include "../engine/sweep.hpp"
#include "softmax.hpp"

#include <cmath>
#include <limits>
#include <vector>

namespace xent::detail {

/// -alpha_t (1 - p)^gamma log p, and the factor F with d loss / d x_k = F (p_k - delta_kt):
/// F = alpha_t ((1 - p)^gamma - gamma (1 - p)^(gamma - 1) p log p). 1 - p as -expm1(lp): no
/// cancellation; at 1 - p = 0 the second term's limit is 0 for every gamma.
template <class T>
struct focal_formula {
  const std::vector<T>* alpha = nullptr;  // per class, or empty
  T gamma = 2;
  T alpha_of(Index t) const { return alpha && !alpha->empty() ? (*alpha)[std::size_t(t)] : T(1); }
  T loss(T lp, Index t) const { return -alpha_of(t) * std::pow(-std::expm1(lp), gamma) * lp; }
  T factor(T lp, Index t) const {
    const T m = -std::expm1(lp), p = std::exp(lp);
    T focus = 0;  // gamma m^(gamma - 1): its limit at m = 0 times the vanishing p log p is 0
    if (gamma != T(0) && m > T(0)) focus = gamma * std::pow(m, gamma - T(1));
    else if (gamma == T(1)) focus = T(1);
    return alpha_of(t) * (std::pow(m, gamma) - focus * p * lp);
  }
};

/// (1 - p^q) / q = -expm1(q lp) / q (no cancellation as q -> 0), F = p^q.
template <class T>
struct gce_formula {
  T q = T(0.7);
  T loss(T lp, Index) const { return -std::expm1(q * lp) / q; }
  T factor(T lp, Index) const { return std::exp(q * lp); }
};

/// g_k = scale * exp(z_k - max): the write pass of a loss whose gradient is F (p_k - delta_kt),
/// with scale = c F / sum.
template <class T>
struct scaled_probability {
  T max = 0, scale = 0, factor = 0, sum = 1;  // scale = factor / sum, factor = c F
  template <class V>
  V operator()(const V& z, const V&, const V&, V& mass) const {
    mass = simd::exp_nonpositive(simd::psub(z, simd::pset1<V>(max)));
    return simd::pmul(mass, simd::pset1<V>(scale));
  }
  /// c F (p_t - 1): from its own formula below p_t = 1/2, as -c F sum_{k != t} p_k above (where
  /// p_t - 1 would cancel).
  bool from_others(T z) const { return !(T(2) * simd::exp_nonpositive(z - max) < sum); }
  T at_target(T z, T, T, double others) const {
    const T e = simd::exp_nonpositive(z - max);
    if (!from_others(z)) return scale * e - factor;
    return -scale * static_cast<T>(others);
  }
};

/// A loss of the target's log-probability as a sweep policy. target_at(j): the class of sample j,
/// or -1 when ignored; losses: per sample (0 when ignored); scale(j): the upstream gradient.
template <class S, class Formula, class TargetAt, class ScaleAt>
class target_probability_policy {
 public:
  using T = compute_t<S>;
  using stats_type = lse_stats<T>;
  using sample = lse_partial<T>;
  static constexpr bool has_lane_blocks = false;

  target_probability_policy(const Formula& f, TargetAt target_at, T* losses, ScaleAt scale, bool grad)
      : f_(f), target_at_(target_at), losses_(losses), scale_(scale), grad_(grad) {}

  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index j) const { return target_at_(j) < 0; }
  void skipped(Index j) const { losses_[j] = 0; }
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    const Index t = target_at_(j);
    const T lp = log_prob(s, static_cast<T>(*x.at(t)));
    losses_[j] = f_.loss(lp, t);
    if (grad_) factors_at(j) = f_.factor(lp, t);
  }
  bool writes() const { return grad_; }
  engine::sample_writer<scaled_probability<T>> writer(Index j, const sample& s) const {
    const T F = factors_at(j);
    const T cF = scale_(j) * F;
    return {{s.max, cF / s.sum, cF, s.sum}, std::isfinite(s.max) && std::isfinite(F), target_at_(j)};
  }
  /// The factors need N entries when there is a gradient (finish runs before the writer).
  void reserve(Index samples) { factors_.assign(std::size_t(grad_ ? samples : 0), T(0)); }

 private:
  /// (x_t - max) - log(sum), NaN when the log-sum-exp is not finite (as torch's log_softmax).
  static T log_prob(const sample& s, T x_t) {
    if (!std::isfinite(s.max)) return std::numeric_limits<T>::quiet_NaN();
    return (x_t - s.max) - std::log(s.sum);
  }
  T& factors_at(Index j) const { return factors_[std::size_t(j)]; }

  Formula f_;
  stats_type stats_;
  TargetAt target_at_;
  T* losses_;
  ScaleAt scale_;
  bool grad_;
  mutable std::vector<T> factors_;  // per sample: written by finish(), read by writer(), one thread each
};

/// Runs a target-probability loss over every sample of v: losses out, and the gradient times
/// scale(j) into grad when given.
template <class S, class Formula, class TargetAt, class ScaleAt>
void target_probability_sweep(const samples_view<const S>& v, const Formula& f, TargetAt&& target_at,
                              compute_t<S>* losses, ScaleAt&& scale, const samples_view<S>* grad, int threads) {
  target_probability_policy<S, Formula, std::decay_t<TargetAt>, std::decay_t<ScaleAt>> policy(f, target_at, losses, scale,
                                                                                             grad != nullptr);
  policy.reserve(v.samples);
  engine::sweep(policy, engine::sweep_views<S>{v, nullptr, grad}, threads);
}

}  // namespace xent::detail

#endif
