#ifndef XENT_DETAIL_LOSSES_DISTILL_HPP
#define XENT_DETAIL_LOSSES_DISTILL_HPP

// Knowledge distillation on the sweep driver, with the temperature folded into the read: the raw
// student logits s and teacher logits t are read once each per chunk, and the differences from
// their maxes are scaled, dz = (s - max s) / T and du = (t - max t) / T (torch scales first, s / T,
// which loses |s| eps of the exponent for large logits). One read gives both exp-sums at T and
//   f = sum_k e^du_k (du_k - dz_k),   so that   KL(softmax(t / T) || softmax(s / T)) = f / S_u - log S_u + log S_z;
// with hard targets also the raw exp-sum, for the (1 - alpha) cross-entropy term at T = 1. The
// write pass forms the gradient of the whole mix in one write; its target entry is formed last as
// minus the sum of the others (the gradient sums to 0 over the classes).

#include "../engine/sweep.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// A sample's folded statistics, each relative to its input's max: the exp-sums at T of the student
/// and the teacher, the cross sum f, and the raw student's exp-sum (hard targets).
template <class T>
struct distill_sample {
  T max_s = -std::numeric_limits<T>::infinity(), max_t = -std::numeric_limits<T>::infinity();
  T sum_z = 0, sum_u = 0, cross = 0, sum_raw = 0;
  bool defined = true;
};

template <class T, bool Hard>
struct distill_stats {
  static constexpr int sums = 4;  // S_raw (the engine's, hard targets only), S_z, S_u, f
  static constexpr bool uses_y = true, uses_w = false, max_of_y = true, exp_of_x = Hard;
  T inverse_temperature = 1;
  using sample = distill_sample<T>;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V&, const V& t, const V&, const V& max_t) const {
    const V inv = simd::pset1<V>(inverse_temperature), zero = simd::pset1<V>(T(0));
    const V dz = simd::pmul(d, inv), du = simd::pmul(simd::psub(t, max_t), inv);
    const V eu = simd::exp_nonpositive(du);
    acc[0] = simd::padd(acc[0], simd::exp_nonpositive(dz));
    acc[1] = simd::padd(acc[1], eu);
    // A masked teacher class (e^du = 0) adds 0 whatever the student's value (no 0 * -inf).
    acc[2] = simd::padd(acc[2], simd::pandnot(simd::pmul(eu, simd::psub(du, dz)), simd::pcmp_eq(eu, zero)));
  }

  /// A chunk with a NaN or +inf in either input makes the sample's loss NaN (torch's log_softmax is
  /// NaN there); a chunk with every class of one input masked adds nothing of that input, and teacher
  /// mass where the student is all masked makes the divergence +inf.
  void nonfinite(engine::chunk_stats<T, sums>& c, const T* s, const T* t, const T*, Index n) const {
    constexpr T inf = std::numeric_limits<T>::infinity();
    const bool bad = std::isnan(c.max) || std::isnan(c.max_y) || c.max == inf || c.max_y == inf;
    for (int k = 0; k < sums; ++k) c.sum[k] = bad ? std::numeric_limits<T>::quiet_NaN() : T(0);
    if (bad) return;
    for (Index i = 0; i < n; ++i) {
      const T dz = c.max == -inf ? -inf : (s[i] - c.max) * inverse_temperature;
      const T du = c.max_y == -inf ? -inf : (t[i] - c.max_y) * inverse_temperature;
      const T eu = std::exp(du);
      if (Hard && c.max != -inf) c.sum[0] += std::exp(s[i] - c.max);
      c.sum[1] += std::exp(dz);
      c.sum[2] += eu;
      if (eu != T(0)) c.sum[3] += eu * (du - dz);  // +inf where the student is masked
    }
  }

  void fold(sample& s, const engine::chunk_stats<T, sums>& c, Index) const {
    constexpr T inf = std::numeric_limits<T>::infinity();
    if (!s.defined || std::isnan(c.sum[1]) || std::isnan(c.sum[2])) {
      s.defined = false;
      return;
    }
    const T ms = std::max(s.max_s, c.max), mt = std::max(s.max_t, c.max_y);
    // What carries a sum relative to `from` over to `to`, for exps of (x - max) / T (or of x - max).
    auto carry = [&](T from, T to, T scale) { return from == -inf ? T(0) : std::exp((from - to) * scale); };
    const T inv = inverse_temperature;
    const T rz_old = carry(s.max_s, ms, inv), rz_new = carry(c.max, ms, inv);
    const T ru_old = carry(s.max_t, mt, inv), ru_new = carry(c.max_y, mt, inv);
    // f is relative to the maxes it was formed with; each part moves by its shift of du - dz.
    auto moved = [&](T f, T su, T at_t, T at_s, T r) {
      if (r == T(0)) return T(0);
      const T shift = ((at_t - mt) - (at_s == -inf ? -inf : at_s - ms)) * inv;
      return r * (f + shift * su);
    };
    s.cross = moved(s.cross, s.sum_u, s.max_t, s.max_s, ru_old) + moved(c.sum[3], c.sum[2], c.max_y, c.max, ru_new);
    s.sum_z = s.sum_z * rz_old + c.sum[1] * rz_new;
    s.sum_u = s.sum_u * ru_old + c.sum[2] * ru_new;
    if constexpr (Hard) s.sum_raw = s.sum_raw * carry(s.max_s, ms, T(1)) + c.sum[0] * carry(c.max, ms, T(1));
    s.max_s = ms;
    s.max_t = mt;
  }
};

/// KL(softmax(t / T) || softmax(s / T)) of a folded sample; NaN when undefined (NaN or +inf logits,
/// or an all-masked teacher), +inf when the teacher has mass on an all-masked student.
template <class T>
T distill_kl(const distill_sample<T>& s) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  if (!s.defined || s.max_t == -inf) return std::numeric_limits<T>::quiet_NaN();
  if (s.max_s == -inf) return inf;
  return s.cross / s.sum_u - std::log(s.sum_u) + std::log(s.sum_z);
}

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
  using stats_type = distill_stats<T, Hard>;
  using sample = distill_sample<T>;
  static constexpr bool has_lane_blocks = false;

  distill_policy(T temperature, TargetAt target_at, T* kl, T* ce, SoftScale soft, HardScale hard, bool grad)
      : temperature_(temperature), target_at_(target_at), kl_(kl), ce_(ce), soft_(soft), hard_(hard), grad_(grad) {
    stats_.inverse_temperature = T(1) / temperature;
  }
  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index) const { return false; }
  void skipped(Index) const {}
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    kl_[j] = distill_kl(s);
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
    const distill_grad<T> g{s.max_s, s.max_t, stats_.inverse_temperature, soft / s.sum_z, soft / s.sum_u, hard,
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
