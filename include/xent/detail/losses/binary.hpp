#ifndef XENT_DETAIL_LOSSES_BINARY_HPP
#define XENT_DETAIL_LOSSES_BINARY_HPP

// The elementwise formulas of the binary losses, for the elementwise driver (engine/elementwise.hpp):
// each gives loss(x, t, e), d loss / d x and the mask of inputs torch's definition does not accept,
// as templates over V (a packet, or a scalar). x is the first input (a logit, or a probability for
// binary_cross_entropy), t the target, e the extra per-element input (pos_weight), or 1.
// Accuracy against mpmath: tests/test_binary.cpp states the budgets.

#include "../simd/math.hpp"

#include <cmath>
#include <type_traits>

namespace xent::detail::losses {

template <class V>
V outside_unit_interval(const V& t) {  // t < 0, t > 1 or NaN
  using T = simd::scalar_of<V>;
  return simd::por(simd::pcmp_lt_or_nan(t, simd::pset1<V>(T(0))), simd::pcmp_lt_or_nan(simd::pset1<V>(T(1)), t));
}

/// torch.nn.functional.binary_cross_entropy_with_logits, one element, e = pos_weight:
///   loss = (1 - t) softplus(x) + e t softplus(-x)
///   d loss / d x = (1 - t) sigmoid(x) - e t sigmoid(-x)
/// torch writes the loss (1 - t) x + (1 + (e - 1) t) softplus(-x), the same function, which cancels
/// for t = 0 and x << 0 (x + softplus(-x), 2 % off in float at x = -11); here both terms are >= 0
/// and each is formed without cancellation, for every finite x. Targets must be in [0, 1].
struct bce_with_logits {
  static constexpr bool label_smoothable = true;  // Keras's label_smoothing applies (label_smoothed)
  static constexpr double pad_x = 0, pad_t = 0.5;
  static constexpr bool x_checked = false;
  static constexpr const char* x_expected = "";
  static constexpr const char* t_expected = "must hold probabilities in [0, 1]";

  template <class V>
  static V loss_of(const simd::softplus_parts<V>& s, const V& t, const V& e) {
    using T = simd::scalar_of<V>;
    const V one_minus_t = simd::psub(simd::pset1<V>(T(1)), t);
    return simd::padd(simd::pmul(one_minus_t, s.softplus()), simd::pmul(simd::pmul(e, t), s.softplus_neg()));
  }
  template <class V>
  static V grad_of(const simd::softplus_parts<V>& s, const V& t, const V& e) {
    using T = simd::scalar_of<V>;
    const V one_minus_t = simd::psub(simd::pset1<V>(T(1)), t);
    return simd::psub(simd::pmul(one_minus_t, s.sigmoid()), simd::pmul(simd::pmul(e, t), s.sigmoid_neg()));
  }
  template <class V>
  V loss(const V& x, const V& t, const V& e) const {
    return loss_of(simd::softplus_parts<V>(x), t, e);
  }
  template <class V>
  V grad(const V& x, const V& t, const V& e) const {
    return grad_of(simd::softplus_parts<V>(x), t, e);
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    const simd::softplus_parts<V> s(x);
    g = grad_of(s, t, e);
    return loss_of(s, t, e);
  }
  template <class V>
  V invalid(const V&, const V& t) const {
    return outside_unit_interval(t);
  }
};

/// torch.nn.functional.binary_cross_entropy, one element (p the probability):
///   loss = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100))
///   d loss / d p = (p - t) / max(p (1 - p), 1e-12)
/// torch's clamps (Loss.cpp): each log is held at -100, so p = 0 and p = 1 give finite losses, and
/// its EPSILON is the float 1e-12 also in double. log(1 - p) as log1p(-p), exact for tiny p.
struct bce {
  static constexpr bool label_smoothable = true;  // Keras's label_smoothing applies (label_smoothed)
  static constexpr double pad_x = 0.5, pad_t = 0.5;
  static constexpr bool x_checked = true;
  static constexpr const char* x_expected = "must hold probabilities in [0, 1]";
  static constexpr const char* t_expected = "must hold probabilities in [0, 1]";

  template <class V>
  V loss(const V& p, const V& t, const V&) const {
    using T = simd::scalar_of<V>;
    const V floor = simd::pset1<V>(T(-100));
    const V log_p = simd::pmax(simd::log_any(p), floor);
    const V log_q = simd::pmax(simd::log1p(simd::pnegate(p)), floor);
    return simd::pnegate(simd::padd(simd::pmul(t, log_p), simd::pmul(simd::psub(simd::pset1<V>(T(1)), t), log_q)));
  }
  template <class V>
  V grad(const V& p, const V& t, const V&) const {
    using T = simd::scalar_of<V>;
    const V pq = simd::pmul(p, simd::psub(simd::pset1<V>(T(1)), p));
    return simd::pdiv(simd::psub(p, t), simd::pmax(pq, simd::pset1<V>(T(1e-12f))));
  }
  template <class V>
  V loss_grad(const V& p, const V& t, const V& e, V& g) const {
    g = grad(p, t, e);
    return loss(p, t, e);
  }
  template <class V>
  V invalid(const V& p, const V& t) const {
    return simd::por(outside_unit_interval(p), outside_unit_interval(t));
  }
};

/// torchvision.ops.sigmoid_focal_loss, one element: with p = sigmoid(x) and m = 1 - p_t =
/// (1 - t) p + t (1 - p),
///   loss = a_t BCEWithLogits(x, t) m^gamma,  a_t = alpha t + (1 - alpha)(1 - t) (1 when alpha < 0)
///   d loss / d x = a_t (dce m^gamma + ce gamma m^(gamma - 1) dm),
///   dce = (1 - t) p - t (1 - p),  dm = p (1 - p) (1 - 2 t).
/// m is formed from sigmoid(x) and sigmoid(-x), without the cancellation of 1 - p_t (torchvision's
/// loses m entirely where p_t rounds to 1); where m is 0 the second term's limit is 0.
struct sigmoid_focal {
  static constexpr bool label_smoothable = true;  // Keras's label_smoothing applies (label_smoothed)
  double alpha = 0.25, gamma = 2;
  static constexpr double pad_x = 0, pad_t = 0.5;
  static constexpr bool x_checked = false;
  static constexpr const char* x_expected = "";
  static constexpr const char* t_expected = "must hold probabilities in [0, 1]";

  template <class V>
  V alpha_t(const V& t) const {
    using T = simd::scalar_of<V>;
    if (alpha < 0) return simd::pset1<V>(T(1));
    const T a = T(alpha);
    return simd::padd(simd::pset1<V>(T(1) - a), simd::pmul(simd::pset1<V>(T(2) * a - T(1)), t));
  }
  template <class V>
  V loss(const V& x, const V& t, const V& e) const {
    V g;
    return value(x, t, e, g, false);
  }
  template <class V>
  V grad(const V& x, const V& t, const V& e) const {
    V g;
    value(x, t, e, g, true);
    return g;
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    return value(x, t, e, g, true);
  }
  template <class V>
  V invalid(const V&, const V& t) const {
    return outside_unit_interval(t);
  }

 private:
  template <class V>
  V value(const V& x, const V& t, const V& e, V& g, bool with_grad) const {
    using T = simd::scalar_of<V>;
    const simd::softplus_parts<V> s(x);
    const V one = simd::pset1<V>(T(1)), zero = simd::pset1<V>(T(0));
    const V one_minus_t = simd::psub(one, t);
    const V p = s.sigmoid(), q = s.sigmoid_neg();
    const V m = simd::padd(simd::pmul(one_minus_t, p), simd::pmul(t, q));
    const V mg = simd::pow_unit(m, T(gamma));
    const V ce = bce_with_logits::loss_of(s, t, e);
    const V at = alpha_t(t);
    if (with_grad) {
      const V dce = bce_with_logits::grad_of(s, t, e);
      const V dm = simd::pmul(simd::pmul(p, q), simd::psub(one, simd::padd(t, t)));
      // gamma m^(gamma - 1) dm as gamma (m^gamma / m) dm; 0 where m is 0 (its limit, for any gamma).
      const V focus = simd::pandnot(simd::pmul(simd::pmul(simd::pset1<V>(T(gamma)), simd::pdiv(mg, m)), dm),
                                    simd::pcmp_eq(m, zero));
      g = simd::pmul(at, simd::padd(simd::pmul(dce, mg), simd::pmul(ce, focus)));
    }
    return simd::pmul(at, simd::pmul(ce, mg));
  }
};

template <class F, class = void>
inline constexpr bool is_label_smoothable = false;
template <class F>
inline constexpr bool is_label_smoothable<F, std::enable_if_t<F::label_smoothable>> = true;

/// A binary formula whose targets are label-smoothed first, as Keras's binary losses:
/// t -> t (1 - eps) + eps / 2, everywhere the formula reads t (sigmoid_focal's p_t and alpha_t too).
/// The check reads the caller's t, which must be in [0, 1] before smoothing.
template <class F>
struct label_smoothed : F {
  double smoothing = 0;
  label_smoothed() = default;
  label_smoothed(const F& f, double eps) : F(f), smoothing(eps) {}

  template <class V>
  V smoothed(const V& t) const {
    using T = simd::scalar_of<V>;
    return simd::pmadd(t, simd::pset1<V>(T(1 - smoothing)), simd::pset1<V>(T(smoothing / 2)));
  }
  template <class V>
  V loss(const V& x, const V& t, const V& e) const {
    return F::loss(x, smoothed(t), e);
  }
  template <class V>
  V grad(const V& x, const V& t, const V& e) const {
    return F::grad(x, smoothed(t), e);
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    return F::loss_grad(x, smoothed(t), e, g);
  }
};

}  // namespace xent::detail::losses

#endif
