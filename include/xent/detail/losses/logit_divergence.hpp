#ifndef XENT_DETAIL_LOSSES_LOGIT_DIVERGENCE_HPP
#define XENT_DETAIL_LOSSES_LOGIT_DIVERGENCE_HPP

// Divergences between two logit sets on the sweep driver (losses/logit_divergence.hpp): the sweep's
// x are the logits a whose distribution P = softmax(a / T_a) is differentiated, its y the logits b
// of Q = softmax(b / T_b). The kinds, in these roles:
//   kl_q_p  KL(Q || P)       one read: the forward cross sum (two_softmax.hpp)
//   kl_p_q  KL(P || Q)       one read: the reverse cross sum
//   jsd     beta KL(P || M) + (1 - beta) KL(Q || M),  M = beta P + (1 - beta) Q
//   tvd     sum_k |P_k - Q_k| / 2
// The last two need the normalised probabilities, so they read the sample a second time (from
// L2: a sample of 32000 classes is 128 KiB per input) once the exp-sums are known. Swapping the
// roles (a <-> b, kl_q_p <-> kl_p_q, beta <-> 1 - beta) gives the same value: that is how the
// gradient w.r.t. b is formed, by a second sweep with the roles swapped.
// Distillation (losses/distill.hpp) adds a cross-entropy on hard labels at T = 1 to the same read:
// a's raw exp-sum comes with the chunk's (two_softmax.hpp's Hard), and the write pass adds
// hard (p^raw_k - onehot_k) to the divergence's gradient, its target entry formed last from the
// other classes' raw mass (no cancellation where p^raw_t is near 1).
// d / d a_k of each, with p = P_k, q = Q_k, m = M_k, D the sample's divergence:
//   kl_q_p  (p - q) / T_a
//   kl_p_q  p (log p - log q - D) / T_a
//   jsd     beta p (log(p / m) - KL(P || M)) / T_a
//   tvd     p (sign(p - q) - sum_i sign(p_i - q_i) p_i) / (2 T_a), formed as p sum_i (sign_k - sign_i) p_i / (2 T_a)

#include "../simd/math.hpp"
#include "measures.hpp"
#include "two_softmax.hpp"

#include <cmath>
#include <limits>
#include <type_traits>

namespace xent::detail {

/// The kinds, in the policy's roles (P differentiated); the public divergence_kind maps onto them.
enum class divergence_role { kl_q_p, kl_p_q, jsd, tvd };

constexpr cross_sum cross_of(divergence_role k) {
  return k == divergence_role::kl_q_p ? cross_sum::forward : k == divergence_role::kl_p_q ? cross_sum::reverse : cross_sum::none;
}

/// log(p / (w p + (1 - w) q)) for probabilities p, q, their difference d = p - q and w in (0, 1):
/// log1p((1 - w) d / m) where p / q is within [1/2, 2] (no cancellation as p nears q), else the log
/// of the ratio, or log p - log m where the ratio is not a normal number.
///
/// On packets one plog serves both forms: the near lanes' log1p is Eigen's generic_plog1p, the log
/// of u = 1 + y corrected by y / (u - 1), so u is chosen per lane (1 + y near, the ratio y far) and
/// the correction applied where near: the same bits as the two functions taken apart, with one log
/// and one quotient instead of four logs and three quotients (the log was jsd's whole cost, called
/// out of line for each of them). log p - log m only for a packet with a lane that needs it (p / m
/// under the smallest normal number, p > 0: rare, never in the inner loop of a typical sample).
template <class V>
V log_to_weighted_mixture(const V& p, const V& q, const V& d, simd::scalar_of<V> w) {
  using T = simd::scalar_of<V>;
  const V m = simd::padd(simd::pmul(simd::pset1<V>(w), p), simd::pmul(simd::pset1<V>(T(1) - w), q));
  const V near = losses::close_ratio(p, q);
  if constexpr (simd::lanes<V> == 1) {
    const V r = simd::pdiv(p, m);
    const V far = simd::pselect(simd::pcmp_le(simd::pset1<V>(std::numeric_limits<T>::min()), r), simd::log_any(r),
                                simd::psub(simd::log_any(p), simd::log_any(m)));
    return simd::pselect(near, simd::log1p(simd::pdiv(simd::pmul(simd::pset1<V>(T(1) - w), d), m)), far);
  } else {
    const V one = simd::pset1<V>(T(1));
    const V y = simd::pdiv(simd::pselect(near, simd::pmul(simd::pset1<V>(T(1) - w), d), p), m);
    const V u = simd::pselect(near, simd::padd(y, one), y);
    const V log_u = simd::plog(u);
    const V corrected = simd::pselect(simd::pcmp_eq(u, one), y, simd::pmul(y, simd::pdiv(log_u, simd::psub(u, one))));
    V out = simd::pselect(near, corrected, log_u);
    const V zero = simd::pset1<V>(T(0));
    const V tiny = simd::pandnot(simd::pcmp_lt(y, simd::pset1<V>(std::numeric_limits<T>::min())), simd::por(near, simd::pcmp_eq(p, zero)));
    if (simd::predux_any(tiny)) out = simd::pselect(tiny, simd::psub(simd::log_any(p), simd::log_any(m)), out);
    return out;
  }
}

/// A sample's two normalised distributions at one class: p = e^dz / S_z, q = e^du / S_u.
/// p - q at a class that is the max of both is 1 / S_z - 1 / S_u: formed from the tails of a sample
/// read with cross_sum::none, (n_u - n_z + tail_u - tail_z) / (S_z S_u), not from p and q rounded
/// near 1 (their difference would be the rounding error where both distributions are sharp).
template <class T>
struct two_probabilities {
  T max_s = 0, max_t = 0, inv_x = 1, inv_y = 1, inv_sum_z = 0, inv_sum_u = 0, difference_at_max = 0;
  two_probabilities() = default;
  two_probabilities(const two_softmax_sample<T>& s, T ix, T iy)
      : max_s(s.max_s), max_t(s.max_t), inv_x(ix), inv_y(iy), inv_sum_z(T(1) / s.sum_z), inv_sum_u(T(1) / s.sum_u) {
    const double sz = double(s.at_max_z) + double(s.tail_z), su = double(s.at_max_u) + double(s.tail_u);
    difference_at_max =
        static_cast<T>((double(s.at_max_u) - double(s.at_max_z) + (double(s.tail_u) - double(s.tail_z))) / (sz * su));
  }
  /// p - q, from the tails where a class is the max of both.
  template <class V>
  V difference(const V& a, const V& b, const V& p, const V& q) const {
    const V zero = simd::pset1<V>(T(0));
    const V at_max = simd::pand(simd::pcmp_eq(dz(a), zero), simd::pcmp_eq(du(b), zero));
    return simd::pselect(at_max, simd::pset1<V>(difference_at_max), simd::psub(p, q));
  }
  template <class V>
  V dz(const V& a) const {
    return simd::pmul(simd::psub(a, simd::pset1<V>(max_s)), simd::pset1<V>(inv_x));
  }
  template <class V>
  V du(const V& b) const {
    return simd::pmul(simd::psub(b, simd::pset1<V>(max_t)), simd::pset1<V>(inv_y));
  }
  // Materialised: p - q is exactly 0 where the two distributions agree (D(P, P) has a 0 gradient).
  template <class V>
  V p(const V& a) const {
    return simd::materialized(simd::pmul(simd::exp_nonpositive(dz(a)), simd::pset1<V>(inv_sum_z)));
  }
  template <class V>
  V q(const V& b) const {
    return simd::materialized(simd::pmul(simd::exp_nonpositive(du(b)), simd::pset1<V>(inv_sum_u)));
  }
};

/// The second read of jsd: sum_k p log(p / m) and sum_k q log(q / m) (0 log 0 = 0), and the first
/// sum without the class at p's max. The gradient at that class, beta p (g - sum_i p_i g_i) with
/// g = log(p / m), cancels where p is near 1 there; it is formed as g (1 - p) - sum_{i below} p_i g_i,
/// 1 - p being p's tail (two_softmax.hpp), a difference of two terms each as small as the result.
template <class T>
struct jsd_sums {
  static constexpr int sums = 3;
  two_probabilities<T> pq;
  T beta = T(0.5);
  template <class V>
  void operator()(const V& a, const V& b, V* acc) const {
    const V zero = simd::pset1<V>(T(0));
    const V p = pq.p(a), q = pq.q(b), d = pq.difference(a, b, p, q);
    const V tp = simd::pselect(simd::pcmp_eq(p, zero), zero, simd::pmul(p, log_to_weighted_mixture(p, q, d, beta)));
    const V tq =
        simd::pselect(simd::pcmp_eq(q, zero), zero, simd::pmul(q, log_to_weighted_mixture(q, p, simd::pnegate(d), T(1) - beta)));
    acc[0] = simd::padd(acc[0], tp);
    acc[1] = simd::padd(acc[1], tq);
    acc[2] = simd::padd(acc[2], simd::pand(simd::pcmp_lt(pq.dz(a), zero), tp));
  }
};

/// The second read of tvd: sum_k |p - q|, and p's mass where p > q, p < q and p = q. The gradient
/// p_k (sign_k - sum_i sign_i p_i) / 2 is formed from them as p_k sum_i (sign_k - sign_i) p_i / 2
/// (sum_i p_i = 1), a sum of same-signed terms: with sign_i - sign_k taken apart, no cancellation
/// where one class holds nearly all of p's mass.
template <class T>
struct tvd_sums {
  static constexpr int sums = 4;
  two_probabilities<T> pq;
  template <class V>
  void operator()(const V& a, const V& b, V* acc) const {
    const V zero = simd::pset1<V>(T(0));
    const V p = pq.p(a), d = pq.difference(a, b, p, pq.q(b));
    acc[0] = simd::padd(acc[0], simd::pabs(d));
    acc[1] = simd::padd(acc[1], simd::pand(simd::pcmp_lt(zero, d), p));
    acc[2] = simd::padd(acc[2], simd::pand(simd::pcmp_lt(d, zero), p));
    acc[3] = simd::padd(acc[3], simd::pand(simd::pcmp_eq(d, zero), p));
  }
};

/// d (c D) / d a_k of one kind, c the sample's upstream over T_a (and the T^2 factor).
template <class T, divergence_role Kind>
struct divergence_grad {
  two_probabilities<T> pq;
  T c = 0, beta = T(0.5), divergence = 0, log_sums = 0;  // log_sums: log S_u - log S_z (kl_p_q)
  T second = 0;                                           // KL(P || M) (jsd)
  T second_below = 0, tail_fraction = 0;                  // jsd: its part below p's max, and 1 - p there (or NaN: ties)
  T above = 0, below = 0, level = 0;                      // tvd: sum_i (sign_k - sign_i) p_i for sign_k = 1, -1, 0
  template <class V>
  V operator()(const V& a, const V& b, const V&, V& mass) const {
    const V zero = simd::pset1<V>(T(0));
    mass = zero;
    const V p = pq.p(a);
    if constexpr (Kind == divergence_role::kl_q_p) {
      return simd::pmul(simd::pset1<V>(c), simd::psub(p, pq.q(b)));
    } else if constexpr (Kind == divergence_role::kl_p_q) {
      // log p - log q = dz - du + log S_u - log S_z; nothing where p = 0 (0 * -inf).
      const V log_ratio =
          simd::padd(simd::psub(simd::materialized(pq.dz(a)), simd::materialized(pq.du(b))), simd::pset1<V>(log_sums));
      const V g = simd::pmul(simd::pmul(simd::pset1<V>(c), p), simd::psub(log_ratio, simd::pset1<V>(divergence)));
      return simd::pselect(simd::pcmp_eq(p, zero), zero, g);
    } else if constexpr (Kind == divergence_role::jsd) {
      const V q = pq.q(b);
      const V log_pm = log_to_weighted_mixture(p, q, pq.difference(a, b, p, q), beta);
      V centred = simd::psub(log_pm, simd::pset1<V>(second));
      if (tail_fraction == tail_fraction) {
        const V at_max = simd::pcmp_eq(pq.dz(a), zero);
        centred = simd::pselect(at_max, simd::psub(simd::pmul(log_pm, simd::pset1<V>(tail_fraction)), simd::pset1<V>(second_below)),
                                centred);
      }
      const V g = simd::pmul(simd::pmul(simd::pset1<V>(c * beta), p), centred);
      return simd::pselect(simd::pcmp_eq(p, zero), zero, g);
    } else {
      const V d = pq.difference(a, b, p, pq.q(b));
      const V s = simd::pselect(simd::pcmp_lt(zero, d), simd::pset1<V>(above),
                                simd::pselect(simd::pcmp_lt(d, zero), simd::pset1<V>(below), simd::pset1<V>(level)));
      return simd::pmul(simd::pmul(simd::pset1<V>(c * T(0.5)), p), s);
    }
  }
};

/// No hard-label term (the divergences alone).
struct no_hard_label {};

/// Distillation's cross-entropy on hard labels, on a's raw logits (T = 1), in the divergence's
/// sweep: target_at(j) the class of a kept sample, scale(j) the upstream of its CE_j, ce[j] the
/// per-sample cross-entropy written by the sweep (0 where skipped).
template <class T, class TargetAt, class Scale>
struct hard_label {
  TargetAt target_at;
  Scale scale;
  T* ce;
};

/// A divergence's gradient plus hard (p^raw_k - onehot_k), hard = hard_factor / S_raw: the raw
/// exp e^(a_k - max a) is the mass the write pass sums over the non-target classes.
template <class T, class Soft>
struct with_hard_label {
  Soft soft;
  T max_s = 0, hard = 0, hard_factor = 0, sum_raw = 1;
  template <class V>
  V operator()(const V& a, const V& b, const V& w, V& mass) const {
    V g = soft(a, b, w, mass);
    mass = simd::exp_nonpositive(simd::psub(a, simd::pset1<V>(max_s)));
    return simd::padd(g, simd::pmul(mass, simd::pset1<V>(hard)));
  }
  /// Below p^raw_t = 1/2 the target's own formula hard e_t - hard_factor does not cancel; above,
  /// -hard sum_{k != t} e_k does not.
  bool from_others(T a_t) const { return !(T(2) * simd::exp_nonpositive(a_t - max_s) < sum_raw); }
  T at_target(T a_t, T b_t, T w, double others) const {
    T unused = 0;
    const T g = soft(a_t, b_t, w, unused);
    if (!from_others(a_t)) return g + (hard * simd::exp_nonpositive(a_t - max_s) - hard_factor);
    return g - hard * static_cast<T>(others);
  }
};

/// A divergence as a sweep policy: per sample loss[j] (0 where skipped), and when grad the write
/// pass writes scale(j) / T_a times its gradient w.r.t. a; with a hard_label also CE_j and its
/// gradient times the label's scale(j), in the same read and write.
template <class S, divergence_role Kind, class Skip, class Scale, class Hard = no_hard_label>
class divergence_policy {
 public:
  using T = compute_t<S>;
  static constexpr bool hard = !std::is_same_v<Hard, no_hard_label>;
  using stats_type = two_softmax_stats<T, hard, cross_of(Kind)>;
  using sample = two_softmax_sample<T>;
  using soft_writer = divergence_grad<T, Kind>;
  using writer_type = std::conditional_t<hard, with_hard_label<T, soft_writer>, soft_writer>;
  static constexpr bool has_lane_blocks = false;

  divergence_policy(T inverse_temperature_x, T inverse_temperature_y, T beta, Skip skip, T* losses, Scale scale, bool grad,
                    Hard hard_term = {})
      : beta_(beta), skip_(skip), losses_(losses), scale_(scale), grad_(grad), hard_(hard_term) {
    stats_.inverse_temperature_x = inverse_temperature_x;
    stats_.inverse_temperature_y = inverse_temperature_y;
  }
  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index j) const { return skip_(j); }
  void skipped(Index j) const {
    losses_[j] = T(0);
    if constexpr (hard) hard_.ce[j] = T(0);
  }

  bool defined(const sample& s) const { return s.defined && std::isfinite(s.max_s) && std::isfinite(s.max_t); }

  void second_read(Index, sample& s, const engine::row<S>& x, const engine::row<S>* y, Index n) const {
    if constexpr (Kind == divergence_role::jsd || Kind == divergence_role::tvd) {
      if (!defined(s)) return;
      const two_probabilities<T> pq(s, stats_.inverse_temperature_x, stats_.inverse_temperature_y);
      if constexpr (Kind == divergence_role::jsd) {
        const auto sums = engine::sum_range(jsd_sums<T>{pq, beta_}, x, y, 0, n, transform_x(), transform_y());
        for (int k = 0; k < 3; ++k) s.second[k] = sums[std::size_t(k)];
      } else {
        const auto sums = engine::sum_range(tvd_sums<T>{pq}, x, y, 0, n, transform_x(), transform_y());
        for (int k = 0; k < 4; ++k) s.second[k] = sums[std::size_t(k)];
      }
    } else {
      (void)s, (void)x, (void)y, (void)n;
    }
  }

  T divergence_of(const sample& s) const {
    if constexpr (Kind == divergence_role::kl_q_p) return forward_kl(s);
    if constexpr (Kind == divergence_role::kl_p_q) return reverse_kl(s);
    if (!defined(s)) return std::numeric_limits<T>::quiet_NaN();
    if constexpr (Kind == divergence_role::jsd) return static_cast<T>(double(beta_) * s.second[0] + (1 - double(beta_)) * s.second[1]);
    return static_cast<T>(0.5 * s.second[0]);
  }

  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    losses_[j] = divergence_of(s);
    if constexpr (hard) {
      // The raw log-sum-exp, max a + log S_raw, less the target's logit ((a_t - max) first).
      const Index t = hard_.target_at(j);
      hard_.ce[j] = t < 0 ? T(0)
                          : s.defined && std::isfinite(s.max_s) ? std::log(s.sum_raw) - (static_cast<T>(*x.at(t)) - s.max_s)
                                                                : std::numeric_limits<T>::quiet_NaN();
    } else {
      (void)x;
    }
  }

  bool writes() const { return grad_; }
  engine::sample_writer<writer_type> writer(Index j, const sample& s) const {
    const engine::sample_writer<soft_writer> soft = soft_writer_of(j, s);
    if constexpr (hard) {
      // d CE / d a = p^raw - onehot, times the label's upstream.
      const Index t = hard_.target_at(j);
      with_hard_label<T, soft_writer> g{soft.w};
      g.max_s = s.max_s;
      g.sum_raw = s.sum_raw;
      g.hard_factor = t >= 0 ? static_cast<T>(hard_.scale(j)) : T(0);
      g.hard = g.hard_factor != T(0) ? g.hard_factor / s.sum_raw : T(0);
      return {g, soft.defined, g.hard != T(0) ? t : Index(-1)};
    } else {
      return soft;
    }
  }

 private:
  engine::sample_writer<soft_writer> soft_writer_of(Index j, const sample& s) const {
    divergence_grad<T, Kind> g;
    const bool ok = defined(s);
    if (ok) {
      g.pq = two_probabilities<T>(s, stats_.inverse_temperature_x, stats_.inverse_temperature_y);
      g.c = scale_(j) * stats_.inverse_temperature_x;
      g.beta = beta_;
      g.divergence = divergence_of(s);
      g.log_sums = std::log(s.sum_u) - std::log(s.sum_z);
      g.second = static_cast<T>(s.second[0]);
      g.second_below = static_cast<T>(s.second[2]);
      // One class at the max (ties: the plain form, their p is at most 1/2).
      g.tail_fraction = s.at_max_z == T(1) ? s.tail_z / s.sum_z : std::numeric_limits<T>::quiet_NaN();
      // sum_i (sign_k - sign_i) p_i: sign_k = 1 takes 1 from the level classes, 2 from those below.
      g.above = static_cast<T>(s.second[3] + 2 * s.second[2]);
      g.below = static_cast<T>(-(s.second[3] + 2 * s.second[1]));
      g.level = static_cast<T>(s.second[2] - s.second[1]);
    }
    return {g, ok, Index(-1)};
  }

  stats_type stats_;
  T beta_;
  Skip skip_;
  T* losses_;
  Scale scale_;
  bool grad_;
  Hard hard_;
};

}  // namespace xent::detail

#endif
