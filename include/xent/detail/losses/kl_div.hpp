#ifndef XENT_DETAIL_LOSSES_KL_DIV_HPP
#define XENT_DETAIL_LOSSES_KL_DIV_HPP

// torch.nn.functional.kl_div's pointwise term, for the elementwise driver. x is the input
// (log-probabilities), t the target.

#include "../simd/math.hpp"

namespace xent::detail::losses {

/// log_target = false: t (log t - x), 0 where t = 0 (torch's xlogy(t, t) - t x; as torch, a
/// -inf input under a zero target gives 0 * -inf = NaN). d / d x = -t. The error is a few ulp of
/// |t log t| + |t x|: where x is close to log t the term is a small difference of its two parts.
/// Targets must be finite and >= 0.
struct kl_div_probability_target {
  static constexpr double pad_x = 0, pad_t = 0.5;
  static constexpr bool x_checked = false;
  static constexpr const char* x_expected = "";
  static constexpr const char* t_expected = "must hold probabilities (finite and >= 0)";

  template <class V>
  V loss(const V& x, const V& t, const V&) const {
    using T = simd::scalar_of<V>;
    const V zero = simd::pset1<V>(T(0));
    const V at_zero = simd::psub(zero, simd::pmul(t, x));  // xlogy(0, 0) - 0 x
    return simd::pselect(simd::pcmp_eq(t, zero), at_zero, simd::pmul(t, simd::psub(simd::log_any(t), x)));
  }
  template <class V>
  V grad(const V&, const V& t, const V&) const {
    return simd::pnegate(t);
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    g = grad(x, t, e);
    return loss(x, t, e);
  }
  template <class V>
  V invalid(const V&, const V& t) const {  // t < 0, +inf or NaN
    using T = simd::scalar_of<V>;
    return simd::por(simd::pcmp_lt_or_nan(t, simd::pset1<V>(T(0))),
                     simd::pcmp_eq(t, simd::pset1<V>(std::numeric_limits<T>::infinity())));
  }
};

/// log_target = true: exp(t) (t - x), d / d x = -exp(t). Targets are not checked (as torch).
/// The loss is formed as (exp(t / 2) (t - x)) exp(t / 2): exp(t) alone may be below the smallest
/// normal number (t < -87.3 in float) while the product is not (t = -88, x = -1e30: 6e-9).
struct kl_div_log_target {
  static constexpr double pad_x = 0, pad_t = 0;
  static constexpr bool x_checked = false;
  static constexpr const char* x_expected = "";
  static constexpr const char* t_expected = "";

  template <class V>
  static V half_exp(const V& t) {
    using T = simd::scalar_of<V>;
    return simd::exp_any(simd::pmul(t, simd::pset1<V>(T(0.5))));
  }
  template <class V>
  V loss(const V& x, const V& t, const V&) const {
    const V h = half_exp(t);
    return simd::pmul(simd::pmul(h, simd::psub(t, x)), h);
  }
  template <class V>
  V grad(const V&, const V& t, const V&) const {
    return simd::pnegate(simd::exp_any(t));
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    g = grad(x, t, e);
    return loss(x, t, e);
  }
  template <class V>
  V invalid(const V&, const V&) const {
    return simd::pset1<V>(simd::scalar_of<V>(0));
  }
};

}  // namespace xent::detail::losses

#endif
