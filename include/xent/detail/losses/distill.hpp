#ifndef XENT_DETAIL_LOSSES_DISTILL_HPP
#define XENT_DETAIL_LOSSES_DISTILL_HPP

// Knowledge distillation on the sweep driver, with the temperature folded into the read: the raw
// student logits s and teacher logits t are read once each per chunk (two_softmax.hpp: both
// exp-sums at T and the forward cross sum, KL(softmax(t / T) || softmax(s / T)) from them); with
// hard targets also the raw exp-sum, for the (1 - alpha) cross-entropy term at T = 1. The
// write pass forms the gradient of the whole mix in one write; its target entry is formed last as
// minus the sum of the others (the gradient sums to 0 over the classes).

#include "two_softmax.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// d loss / d s_k = soft_z p^z_k - soft_t p^u_k + hard p^raw_k, as exps of the differences from
/// the maxes (the hard target's -hard is the target entry, formed by the sweep).
template <class T>
struct distill_grad {
  T max_s = 0, max_t = 0, inverse_temperature = 1, soft_z = 0, soft_t = 0, hard = 0;
  T hard_factor = 0, sum_raw = 1;  // hard = hard_factor / sum_raw
  template <class V>
  V soft(const V& s, const V& t) const {
    const V inv = simd::pset1<V>(inverse_temperature);
    return simd::psub(simd::pmul(simd::exp_nonpositive(simd::pmul(simd::psub(s, simd::pset1<V>(max_s)), inv)), simd::pset1<V>(soft_z)),
                      simd::pmul(simd::exp_nonpositive(simd::pmul(simd::psub(t, simd::pset1<V>(max_t)), inv)), simd::pset1<V>(soft_t)));
  }
  /// mass: the raw student probability's exp, exp(s_k - max s) (hard targets).
  template <class V>
  V operator()(const V& s, const V& t, const V&, V& mass) const {
    V g = soft(s, t);
    if (hard != T(0)) {
      mass = simd::exp_nonpositive(simd::psub(s, simd::pset1<V>(max_s)));
      g = simd::padd(g, simd::pmul(mass, simd::pset1<V>(hard)));
    } else {
      mass = simd::pset1<V>(T(0));
    }
    return g;
  }
  /// The soft part at the target, and hard_factor (p^raw_t - 1): from its own formula below
  /// p^raw_t = 1/2, as -hard sum_{k != t} e^raw_k above.
  bool from_others(T s_t) const { return !(T(2) * simd::exp_nonpositive(s_t - max_s) < sum_raw); }
  T at_target(T s_t, T t_t, T, double others) const {
    const T e = simd::exp_nonpositive(s_t - max_s);
    if (!from_others(s_t)) return soft(s_t, t_t) + (hard * e - hard_factor);
    return soft(s_t, t_t) - hard * static_cast<T>(others);
  }
};

/// The distillation mix as a sweep policy: per sample kl[j] and (hard targets) ce[j] (0 when
/// ignored); the write pass writes the gradient of soft_scale(j) T^2 KL_j + hard_scale(j) CE_j.
template <class S, bool Hard, class TargetAt, class SoftScale, class HardScale>
class distill_policy {
 public:
  using T = compute_t<S>;
  using stats_type = two_softmax_stats<T, Hard, cross_sum::forward>;
  using sample = two_softmax_sample<T>;
  static constexpr bool has_lane_blocks = false;

  distill_policy(T temperature, TargetAt target_at, T* kl, T* ce, SoftScale soft, HardScale hard, bool grad)
      : temperature_(temperature), target_at_(target_at), kl_(kl), ce_(ce), soft_(soft), hard_(hard), grad_(grad) {
    stats_.inverse_temperature_x = stats_.inverse_temperature_y = T(1) / temperature;
  }
  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index) const { return false; }
  void skipped(Index) const {}
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    kl_[j] = forward_kl(s);
    if constexpr (Hard) {
      const Index t = target_at_(j);
      // The raw log-sum-exp, max s + log S_raw, less the target's logit ((x_t - max) first).
      ce_[j] = t < 0 ? T(0)
                     : s.defined && std::isfinite(s.max_s) ? std::log(s.sum_raw) - (static_cast<T>(*x.at(t)) - s.max_s)
                                                           : std::numeric_limits<T>::quiet_NaN();
    }
  }
  bool writes() const { return grad_; }
  engine::sample_writer<distill_grad<T>> writer(Index j, const sample& s) const {
    // d (T^2 KL) / d s = T (p^z - p^u); d CE / d s = p^raw - onehot.
    const T soft = soft_(j) * temperature_;
    const Index t = Hard ? target_at_(j) : Index(-1);
    const T hard_factor = Hard && t >= 0 ? hard_(j) : T(0);
    const T hard = hard_factor != T(0) ? hard_factor / s.sum_raw : T(0);  // (no raw sum without hard targets)
    const distill_grad<T> g{s.max_s, s.max_t, stats_.inverse_temperature_x, soft / s.sum_z, soft / s.sum_u, hard,
                            hard_factor, s.sum_raw};
    const bool defined = s.defined && std::isfinite(s.max_s) && std::isfinite(s.max_t);
    return {g, defined, hard != T(0) ? t : Index(-1)};
  }

 private:
  stats_type stats_;
  T temperature_;
  TargetAt target_at_;
  T* kl_;
  T* ce_;
  SoftScale soft_;
  HardScale hard_;
  bool grad_;
};

}  // namespace xent::detail

#endif
