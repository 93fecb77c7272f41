#ifndef XENT_DETAIL_LOSSES_POLICY_HPP
#define XENT_DETAIL_LOSSES_POLICY_HPP

// The target's log-probability and the entropy of softmax(z), z = x / T, from one read of each
// sample (a policy-gradient step needs both): with e_k = exp(z_k - max), S = sum_k e_k,
//   log p_t = (z_t - max) - log S,     H = log S - sum_k e_k (z_k - max) / S,
// the read gathering max, S and sum_k e_k (z_k - max) (softmax_moments.hpp's centred moment), the
// target's logit read at finish. H comes from the logits, not from rounded probabilities: a class
// whose p underflows still contributes its e_k d_k. The gradient of sum_j (a_j log p_tj + b_j H_j):
//   d / d z_k = a [k = t] - p_k (a + b (log p_k + H)),
// one more pass, with the target's 1 - p_t formed from the other classes' mass where p_t >= 1/2
// (the sweep's target entry), so that a confident sample's gradient keeps its digits.

#include "../engine/sweep.hpp"
#include "softmax_moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// The write of one sample: g_k = -(a p_k + b p_k (d_k + shift)), d_k = z_k - max,
/// shift = H - log S (so d_k + shift = log p_k + H), and the target's a (1 - p_t) - b p_t (...).
/// p_k (d_k + shift) is formed before b multiplies it, and d is held at the lowest finite value,
/// so a masked class (p = 0, d = -inf) gets exactly 0 for any b.
template <class T>
struct log_prob_entropy_grad {
  T max = 0, inv_sum = 0, shift = 0, a = 0, b = 0, sum = 1;

  template <class V>
  V operator()(const V& z, const V&, const V&, V& mass) const {
    const V shifted = simd::psub(z, simd::pset1<V>(max));
    mass = simd::exp_nonpositive(shifted);
    const V d = simd::pmax(shifted, simd::pset1<V>(std::numeric_limits<T>::lowest()));
    const V p = simd::pmul(mass, simd::pset1<V>(inv_sum));
    const V entropy_term = simd::pmul(p, simd::padd(d, simd::pset1<V>(shift)));
    return simd::pnegate(simd::padd(simd::pmul(simd::pset1<V>(a), p), simd::pmul(simd::pset1<V>(b), entropy_term)));
  }
  /// p_t >= 1/2: 1 - p_t from the others' mass (its own formula would cancel).
  bool from_others(T z) const { return !(T(2) * simd::exp_nonpositive(simd::materialized(z) - max) < sum); }
  /// z: the target's x_t / T, materialised (as finish's) before max is taken off.
  T at_target(T z, T, T, double others) const {
    z = simd::materialized(z);
    const T e = simd::exp_nonpositive(z - max);
    const T p = e * inv_sum;
    const T rest = from_others(z) ? static_cast<T>(others) * inv_sum : T(1) - p;
    const T d = std::max(z - max, std::numeric_limits<T>::lowest());
    return a * rest - b * (p * (d + shift));
  }
};

/// The policy of target_log_prob_and_entropy on the sweep driver.
///   target_at(j): sample j's class, or -1 when ignored (never read; 0 recorded for both values);
///   log_probs, entropies: N values out; a(j), b(j): the upstream gradients of log p_t and H of
///   sample j; grad: whether the write pass writes the gradient.
template <class S, class TargetAt, class A, class B>
class log_prob_entropy_policy {
 public:
  using T = compute_t<S>;
  using stats_type = moment_stats<T, true>;
  using sample = moment_sample<T>;
  static constexpr bool has_lane_blocks = false;

  log_prob_entropy_policy(T inverse_temperature, TargetAt target_at, T* log_probs, T* entropies, A a, B b, bool grad)
      : inv_t_(inverse_temperature), target_at_(target_at), log_probs_(log_probs), entropies_(entropies), a_(a), b_(b),
        grad_(grad) {}

  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {T(0), inv_t_}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index j) const { return target_at_(j) < 0; }
  void skipped(Index j) const {
    if (log_probs_) log_probs_[j] = 0;
    if (entropies_) entropies_[j] = 0;
  }
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    const bool defined = std::isfinite(s.partial.max);
    // Materialised: z_t = x_t / T contracted into fma(x_t, 1 / T, -max) would leave the product's
    // rounding error where z_t is the max (half an ulp of 5e28 for a 1e30 logit at T = 20).
    const T z_t = simd::materialized(engine::value_of(*x.at(target_at_(j)), transform_x()));
    // (z_t - max) first: exact near the max, so a confident sample keeps its small log p's digits.
    if (log_probs_)
      log_probs_[j] = defined ? (z_t - s.partial.max) - std::log(s.partial.sum) : std::numeric_limits<T>::quiet_NaN();
    if (entropies_) entropies_[j] = entropy_of(s);
  }
  bool writes() const { return grad_; }
  engine::sample_writer<log_prob_entropy_grad<T>> writer(Index j, const sample& s) const {
    const bool defined = std::isfinite(s.partial.max);
    const T log_sum = std::log(s.partial.sum);
    const log_prob_entropy_grad<T> w{s.partial.max, T(1) / s.partial.sum, entropy_of(s) - log_sum, a_(j), b_(j),
                                     s.partial.sum};
    return {w, defined, target_at_(j)};
  }

 private:
  stats_type stats_;
  T inv_t_;
  TargetAt target_at_;
  T* log_probs_;
  T* entropies_;
  A a_;
  B b_;
  bool grad_;
};

}  // namespace xent::detail

#endif
