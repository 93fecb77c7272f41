#ifndef XENT_DETAIL_LOSSES_MEASURES_HPP
#define XENT_DETAIL_LOSSES_MEASURES_HPP

// The information measures between distributions p and q (measures/divergence.hpp): each one term
// per class, summed per sample by the sweep (p its x, q its y), and the term's derivatives, run by
// the elementwise driver (x the input differentiated, t the other one). 0 log 0 = 0 throughout.

#include "../engine/reduce.hpp"
#include "../engine/sweep.hpp"
#include "../simd/math.hpp"

#include <cmath>
#include <limits>

namespace xent::detail::losses {

/// torch.xlogy: 0 where x = 0, x log y elsewhere.
template <class V>
V xlogy(const V& x, const V& y) {
  using T = simd::scalar_of<V>;
  const V zero = simd::pset1<V>(T(0));
  return simd::pselect(simd::pcmp_eq(x, zero), zero, simd::pmul(x, simd::log_any(y)));
}

/// Whether p / q is within [1/2, 2]: then p - q is exact (Sterbenz), and a log of the ratio is
/// taken as log1p of an exact difference over one rounding.
template <class V>
V close_ratio(const V& p, const V& q) {
  using T = simd::scalar_of<V>;
  const V half = simd::pset1<V>(T(0.5));
  return simd::pand(simd::pcmp_le(simd::pmul(half, q), p), simd::pcmp_le(simd::pmul(half, p), q));
}

/// log(p / q): log1p((p - q) / q) where the ratio is within [1/2, 2] (no cancellation when p is
/// close to q); else the log of the ratio where that is a normal number, else log p - log q (the
/// ratio over- or underflows: q = 1e-40 with p = 1 in float, or q = 0: +inf).
template <class V>
V log_ratio(const V& p, const V& q) {
  using T = simd::scalar_of<V>;
  const V r = simd::pdiv(p, q);
  const V normal = simd::pand(simd::pcmp_le(simd::pset1<V>(std::numeric_limits<T>::min()), r),
                              simd::pcmp_lt(r, simd::pset1<V>(std::numeric_limits<T>::infinity())));
  const V far = simd::pselect(normal, simd::log_any(r), simd::psub(simd::log_any(p), simd::log_any(q)));
  return simd::pselect(close_ratio(p, q), simd::log1p(simd::pdiv(simd::psub(p, q), q)), far);
}

/// log(p / m), m = (p + q) / 2: log1p((p - q) / (p + q)) where p / q is within [1/2, 2], else
/// log(2 p / (p + q)) (not near 0 there: no cancellation), log p - log(p + q) + log 2 where that
/// ratio underflows. p + q is halved first where it overflows.
template <class V>
V log_to_mixture(const V& p, const V& q) {
  using T = simd::scalar_of<V>;
  const V inf = simd::pset1<V>(std::numeric_limits<T>::infinity()), half = simd::pset1<V>(T(0.5));
  const V over = simd::pcmp_eq(simd::padd(p, q), inf);
  const V ph = simd::pselect(over, simd::pmul(p, half), p), qh = simd::pselect(over, simd::pmul(q, half), q);
  const V s = simd::padd(ph, qh);
  const V r = simd::pdiv(ph, s);
  const V ln2 = simd::pset1<V>(T(0.693147180559945309417232121458176568L));
  const V far = simd::pselect(simd::pcmp_le(simd::pset1<V>(std::numeric_limits<T>::min()), r),
                              simd::log_any(simd::padd(r, r)), simd::padd(simd::psub(simd::log_any(ph), simd::log_any(s)), ln2));
  return simd::pselect(close_ratio(p, q), simd::log1p(simd::pdiv(simd::psub(ph, qh), s)), far);
}

/// The four measures, each with its term, and its derivatives w.r.t. p and q (the term's value at
/// one class; the measure of a sample is the sum of its terms).
enum class measure { entropy, cross_entropy, kl, js };

template <measure M, class V>
V measure_term(const V& p, const V& q) {
  using T = simd::scalar_of<V>;
  const V zero = simd::pset1<V>(T(0));
  if constexpr (M == measure::entropy) return simd::pnegate(xlogy(p, p));
  if constexpr (M == measure::cross_entropy) return simd::pnegate(xlogy(p, q));
  if constexpr (M == measure::kl) return simd::pselect(simd::pcmp_eq(p, zero), zero, simd::pmul(p, log_ratio(p, q)));
  if constexpr (M == measure::js) {
    const V half = simd::pset1<V>(T(0.5));
    const V tp = simd::pselect(simd::pcmp_eq(p, zero), zero, simd::pmul(p, log_to_mixture(p, q)));
    const V tq = simd::pselect(simd::pcmp_eq(q, zero), zero, simd::pmul(q, log_to_mixture(q, p)));
    return simd::pmul(half, simd::padd(tp, tq));
  }
}

/// Finite and >= 0 (NaN, negatives and +inf are not probabilities): the mask of the others.
template <class V>
V not_probability(const V& x) {
  using T = simd::scalar_of<V>;
  return simd::por(simd::pcmp_lt_or_nan(x, simd::pset1<V>(T(0))),
                   simd::pcmp_eq(x, simd::pset1<V>(std::numeric_limits<T>::infinity())));
}

constexpr const char* probabilities_expected = "must hold probabilities (finite and >= 0)";

/// The derivative of a measure's term w.r.t. one of its distributions, as an elementwise formula:
/// x the distribution differentiated (p when WrtP, else q), t the other one.
///   entropy        d/dp = -(log p + 1)                 (+inf at p = 0)
///   cross_entropy  d/dp = -log q,        d/dq = -p / q (0 where p = 0)
///   kl             d/dp = log(p / q) + 1, d/dq = -p / q
///   js             d/dp = log(p / m) / 2, d/dq = log(q / m) / 2 (the other terms cancel)
template <measure M, bool WrtP>
struct measure_derivative {
  static constexpr double pad_x = 0.5, pad_t = 0.5;
  static constexpr bool x_checked = true;
  static constexpr const char* x_expected = probabilities_expected;
  static constexpr const char* t_expected = probabilities_expected;

  template <class V>
  V grad(const V& x, const V& t, const V&) const {
    using T = simd::scalar_of<V>;
    const V zero = simd::pset1<V>(T(0)), one = simd::pset1<V>(T(1));
    if constexpr (M == measure::entropy) return simd::pnegate(simd::padd(simd::log_any(x), one));
    if constexpr (M == measure::js) return simd::pmul(simd::pset1<V>(T(0.5)), log_to_mixture(x, t));
    if constexpr (M == measure::cross_entropy && WrtP) return simd::pnegate(simd::log_any(t));
    if constexpr (M == measure::kl && WrtP) return simd::padd(log_ratio(x, t), one);
    if constexpr ((M == measure::cross_entropy || M == measure::kl) && !WrtP)  // x = q, t = p
      return simd::pselect(simd::pcmp_eq(t, zero), zero, simd::pnegate(simd::pdiv(t, x)));
  }
  template <class V>
  V loss(const V& x, const V& t, const V&) const {
    return WrtP ? measure_term<M>(x, t) : measure_term<M>(t, x);
  }
  template <class V>
  V loss_grad(const V& x, const V& t, const V& e, V& g) const {
    g = grad(x, t, e);
    return loss(x, t, e);
  }
  template <class V>
  V invalid(const V& x, const V& t) const {
    return simd::por(not_probability(x), not_probability(t));
  }
};

/// A sample's measure: its terms' sum, and whether any entry was not a probability.
struct measure_sample {
  engine::exact_sum sum;
  bool invalid = false;
};

/// The sweep's statistics of a measure: sum[1] the terms, sum[2] the sum of min(p, 0) + min(q, 0)
/// (nonzero exactly when an entry is negative: the probability check in the same read). A chunk
/// whose max is NaN, +inf or -inf holds something that is not a probability.
template <class T, measure M>
struct measure_stats {
  static constexpr bool two = M != measure::entropy;
  static constexpr int sums = 3;
  static constexpr bool uses_y = two, uses_w = false, max_of_y = two, exp_of_x = false;
  using sample = measure_sample;

  template <class V>
  void accumulate(V* acc, const V& p, const V&, const V&, const V& q, const V&, const V&) const {
    const V zero = simd::pset1<V>(T(0));
    acc[0] = simd::padd(acc[0], measure_term<M>(p, two ? q : p));
    acc[1] = simd::padd(acc[1], simd::padd(simd::pmin(p, zero), two ? simd::pmin(q, zero) : zero));
  }
  void nonfinite(engine::chunk_stats<T, 3>& c, const T*, const T*, const T*, Index) const { c.sum[2] = T(-1); }
  void fold(sample& s, const engine::chunk_stats<T, 3>& c, Index) const {
    s.sum.add(double(c.sum[1]));
    s.invalid = s.invalid || c.sum[2] != T(0);
  }
};

/// A measure as a sweep policy: values[j] = the measure of sample j times scale; invalid[j] set
/// when sample j holds an entry that is not a probability. No write pass.
template <class T, measure M>
class measure_policy : public engine::read_only_policy<T> {
 public:
  using stats_type = measure_stats<T, M>;
  using sample = measure_sample;

  measure_policy(T* values, char* invalid, double scale) : values_(values), invalid_(invalid), scale_(scale) {}
  const stats_type& stats() const { return stats_; }
  void finish(Index j, const sample& s, const engine::row<T>&) const {
    values_[j] = T(s.sum.value() * scale_);
    invalid_[j] = s.invalid;
  }

 private:
  stats_type stats_;
  T* values_;
  char* invalid_;
  double scale_;
};

}  // namespace xent::detail::losses

#endif
