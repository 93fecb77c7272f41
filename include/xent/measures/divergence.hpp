#ifndef XENT_MEASURES_DIVERGENCE_HPP
#define XENT_MEASURES_DIVERGENCE_HPP

// Information measures between discrete distributions, per sample along the class axis (`dim`, see
// logsumexp.hpp), in any log base. (torch's kl_div loss is in losses/kl_div.hpp.)
// 0 log 0 = 0 throughout (torch.xlogy), so zeros in a distribution are fine.

#include "../detail/engine/view.hpp"
#include "../detail/pointwise.hpp"
#include "../core/error.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/softmax_moments.hpp"
#include "../softmax.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>

namespace xent {

/// e, the default base: results in nats.
inline constexpr double nats = 2.718281828459045;
/// Base 2: results in bits.
inline constexpr double bits = 2;

/// Options of the per-sample measures.
struct measure_options {
  int dim = 0;          ///< the class axis
  double base = nats;   ///< the log base: e (nats, default), 2 (bits), any base > 0 and != 1
};

namespace detail {

/// 1 / ln(base); exactly 1 for the default, so nats involve no rescaling at all.
inline double inverse_log_base(const char* function, double base) {
  if (!(std::isfinite(base) && base > 0 && base != 1))
    throw_invalid(function, "base", "must be finite, > 0 and != 1", base);
  return base == nats ? 1.0 : 1.0 / std::log(base);
}

template <class T>
constexpr T inf = std::numeric_limits<T>::infinity();

constexpr const char* probabilities_expected = "must hold probabilities (finite and >= 0)";

/// f(j) for every sample j of p, scaled to the base; p is checked to hold probabilities.
template <class P, class F>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> per_sample(const char* function, const char* argument,
                                                                 const Eigen::DenseBase<P>& p, const measure_options& opts,
                                                                 bool check_probabilities, F&& f) {
  using T = typename P::Scalar;
  check_dim(function, opts.dim);
  check_not_empty(function, argument, p);
  const T scale = T(inverse_log_base(function, opts.base));
  return with_view(p, opts.dim, [&](const samples_view<const T>& v) {
    if (check_probabilities) check_range<T>(function, argument, v, opts.dim, 0, inf<T>, probabilities_expected);
    Eigen::Matrix<T, Eigen::Dynamic, 1> out(v.samples);
    for (Index j = 0; j < v.samples; ++j) out(j) = f(v, j) * scale;
    return out;
  });
}

/// As per_sample, for two distributions of the same shape.
template <class P, class Q, class F>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> per_sample_pair(const char* function, const Eigen::DenseBase<P>& p,
                                                                      const Eigen::DenseBase<Q>& q,
                                                                      const measure_options& opts, F&& f) {
  using T = typename P::Scalar;
  check_dim(function, opts.dim);
  check_not_empty(function, "p", p);
  check_same_shape(function, "q", q, "p", p);
  return with_view(q, opts.dim, [&](const samples_view<const T>& vq) {
    check_range<T>(function, "q", vq, opts.dim, 0, inf<T>, probabilities_expected);
    return per_sample(function, "p", p, opts, true, [&](const samples_view<const T>& vp, Index j) { return f(vp, vq, j); });
  });
}

template <class T, class F>
T sum_classes(Index classes, F&& f) {
  compensated_sum<T> s;
  for (Index k = 0; k < classes; ++k) s.add(f(k));
  return s.value();
}

/// Sum over k of p_k log(p_k / q_k), one p log(p/q) per term: no cancellation between H(p, q) and H(p).
template <class T>
T kl_of_sample(const samples_view<const T>& p, const samples_view<const T>& q, Index j) {
  return sum_classes<T>(p.classes, [&](Index k) {
    const T pk = at(p, j, k), qk = at(q, j, k);
    return pk == T(0) ? T(0) : pk * std::log(pk / qk);
  });
}

}  // namespace detail

/// Shannon entropy H(p) = -sum_k p_k log p_k of every sample (0 log 0 = 0), in the base of opts.
/// p is taken as given (no normalisation check).
/// \throws xent::invalid_argument if p is empty, has a negative or non-finite entry, dim is not 0/1, or base is bad.
template <class P>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> entropy(const Eigen::DenseBase<P>& p, const measure_options& opts = {}) {
  using T = typename P::Scalar;
  return detail::per_sample("entropy", "p", p, opts, true, [](const detail::samples_view<const T>& v, Eigen::Index j) {
    return -detail::sum_classes<T>(v.classes, [&](Eigen::Index k) { const T x = detail::at(v, j, k); return detail::xlogy(x, x); });
  });
}

/// The entropy of softmax(x) per sample, from logits: log S - sum_k e_k (x_k - max) / S with
/// e_k = exp(x_k - max), S = sum_k e_k, in one read of x (no probability is rounded to 0 before
/// its log is taken). Masked (-inf) logits contribute 0; a sample whose log-sum-exp is not finite
/// gives NaN. \throws xent::invalid_argument if x is empty, dim is not 0/1, or base is bad.
template <class X>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, 1> entropy_from_logits(const Eigen::DenseBase<X>& x,
                                                                         const measure_options& opts = {}) {
  using T = typename X::Scalar;
  constexpr const char* fn = "entropy_from_logits";
  detail::check_real<X>();
  detail::check_dim(fn, opts.dim);
  detail::check_not_empty(fn, "x", x);
  const T scale = T(detail::inverse_log_base(fn, opts.base));
  Eigen::Matrix<T, Eigen::Dynamic, 1> h(opts.dim == 0 ? x.cols() : x.rows());
  auto none = [](Eigen::Index) { return T(0); };
  detail::with_view(x, opts.dim, [&](const detail::samples_view<const T>& v) {
    const detail::moment_policy<T, true, decltype(none)> policy(h.data(), none, false);
    detail::engine::sweep(policy, detail::engine::sweep_views<T>{v, nullptr, nullptr}, 0);
  });
  if (scale != T(1)) h *= scale;
  return h;
}

/// entropy_from_logits and its gradient: returns H per sample (in the base of opts) and writes
/// d (sum_j H_j) / d x = -p (log p + H) (scaled to the base) into grad_out (x's shape; it may be x).
template <class X, class Out>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, 1> entropy_from_logits_with_grad(const Eigen::DenseBase<X>& x,
                                                                                   const measure_options& opts,
                                                                                   const Eigen::DenseBase<Out>& grad_out) {
  using T = typename X::Scalar;
  constexpr const char* fn = "entropy_from_logits_with_grad";
  detail::check_real<X>();
  detail::check_dim(fn, opts.dim);
  detail::check_not_empty(fn, "x", x);
  const T scale = T(detail::inverse_log_base(fn, opts.base));
  Eigen::Matrix<T, Eigen::Dynamic, 1> h(opts.dim == 0 ? x.cols() : x.rows());
  auto c = [scale](Eigen::Index) { return scale; };
  detail::with_out_view(fn, "grad_out", x, grad_out, opts.dim, [&](const detail::samples_view<T>& g) {
    detail::with_view(x, opts.dim, [&](const detail::samples_view<const T>& v) {
      const detail::moment_policy<T, true, decltype(c)> policy(h.data(), c, true);
      detail::engine::sweep(policy, detail::engine::sweep_views<T>{v, nullptr, &g}, 0);
    });
  });
  if (scale != T(1)) h *= scale;
  return h;
}

/// Cross-entropy between distributions H(p, q) = -sum_k p_k log q_k per sample (0 log q = 0 for any q;
/// +inf where p_k > 0 = q_k). Named so as not to clash with the categorical loss xent::cross_entropy.
/// \throws xent::invalid_argument if p or q is empty, their shapes differ, an entry is negative or not
///   finite, dim is not 0/1, or base is bad.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> cross_entropy_between(const Eigen::DenseBase<P>& p,
                                                                           const Eigen::DenseBase<Q>& q,
                                                                           const measure_options& opts = {}) {
  using T = typename P::Scalar;
  return detail::per_sample_pair("cross_entropy_between", p, q, opts,
                                 [](const detail::samples_view<const T>& vp, const detail::samples_view<const T>& vq,
                                    Eigen::Index j) {
                                   return -detail::sum_classes<T>(vp.classes, [&](Eigen::Index k) {
                                     return detail::xlogy(detail::at(vp, j, k), detail::at(vq, j, k));
                                   });
                                 });
}

/// Kullback-Leibler divergence KL(p || q) = sum_k p_k log(p_k / q_k) per sample (+inf where p_k > 0 = q_k).
/// For normalised p and q it is >= 0 and H(p, q) = H(p) + KL(p || q). Errors as cross_entropy_between.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> kl_divergence(const Eigen::DenseBase<P>& p,
                                                                   const Eigen::DenseBase<Q>& q,
                                                                   const measure_options& opts = {}) {
  using T = typename P::Scalar;
  return detail::per_sample_pair("kl_divergence", p, q, opts,
                                 [](const detail::samples_view<const T>& vp, const detail::samples_view<const T>& vq,
                                    Eigen::Index j) { return detail::kl_of_sample(vp, vq, j); });
}

/// Jensen-Shannon divergence JS(p, q) = (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2, per sample.
/// Always finite; for normalised p and q, 0 <= JS <= ln 2 (1 bit). Errors as cross_entropy_between.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> js_divergence(const Eigen::DenseBase<P>& p,
                                                                   const Eigen::DenseBase<Q>& q,
                                                                   const measure_options& opts = {}) {
  using T = typename P::Scalar;
  return detail::per_sample_pair(
      "js_divergence", p, q, opts,
      [](const detail::samples_view<const T>& vp, const detail::samples_view<const T>& vq, Eigen::Index j) {
        return detail::sum_classes<T>(vp.classes, [&](Eigen::Index k) {
          const T pk = detail::at(vp, j, k), qk = detail::at(vq, j, k), m = (pk + qk) / T(2);
          // p / m <= 2: each log is finite wherever its factor is nonzero.
          return ((pk == T(0) ? T(0) : pk * std::log(pk / m)) + (qk == T(0) ? T(0) : qk * std::log(qk / m))) / T(2);
        });
      });
}

}  // namespace xent

#endif
