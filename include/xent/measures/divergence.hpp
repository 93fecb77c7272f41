#ifndef XENT_MEASURES_DIVERGENCE_HPP
#define XENT_MEASURES_DIVERGENCE_HPP

// Information measures between discrete distributions, per sample along the class axis (`dim`, see
// logsumexp.hpp), in any log base, with their gradients. (torch's kl_div loss is in losses/kl_div.hpp.)
// 0 log 0 = 0 throughout (torch.xlogy), so zeros in a distribution are fine. Each measure is one
// sweep (the per-sample sums, the probability check in the same read); its gradients are one
// elementwise pass each (they need no per-sample statistic): detail/losses/measures.hpp.
// Each measure also takes a reduction after its options (none, mean over the samples, sum),
// returning a loss_result reduced by the one reduction policy (engine/reduce.hpp); without it the
// per-sample vector, as before.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/checks.hpp"
#include "../detail/engine/elementwise.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/losses/measures.hpp"
#include "../detail/losses/softmax_moments.hpp"
#include "../softmax.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent {

/// e, the default base: results in nats.
inline constexpr double nats = 2.718281828459045;
/// Base 2: results in bits.
inline constexpr double bits = 2;

/// Options of the per-sample measures.
struct measure_options {
  int dim = 0;          ///< the class axis
  double base = nats;   ///< the log base: e (nats, default), 2 (bits), any base > 0 and != 1
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
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

template <class P, class Q>
void check_measure_inputs(const char* function, const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                          const measure_options& opts, bool two) {
  using T = typename P::Scalar;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "the measures take float or double");
  static_assert(std::is_same_v<typename Q::Scalar, T>, "p and q must have one scalar type");
  check_dim(function, opts.dim);
  check_num_threads(function, opts.num_threads);
  check_not_empty(function, "p", p);
  if (two) check_same_shape(function, "q", q, "p", p);
  (void)inverse_log_base(function, opts.base);
}

/// Measure M of every sample of p (and q): one sweep, the probability check folded into its read;
/// a failed check is then located and reported by the first bad entry, e.g. "p(3, 1) = -0.2".
template <losses::measure M, class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> measure_values(const char* function, const Eigen::DenseBase<P>& p,
                                                                    const Eigen::DenseBase<Q>& q,
                                                                    const measure_options& opts) {
  using T = typename P::Scalar;
  constexpr bool two = M != losses::measure::entropy;
  check_measure_inputs(function, p, q, opts, two);
  const double scale = inverse_log_base(function, opts.base);
  return with_view(p, opts.dim, [&](const samples_view<const T>& vp) {
    return with_view(q, opts.dim, [&](const samples_view<const T>& vq) {
      Eigen::Matrix<T, Eigen::Dynamic, 1> values(vp.samples);
      std::vector<char> invalid(std::size_t(vp.samples), 0);
      const losses::measure_policy<T, M> policy(values.data(), invalid.data(), scale);
      engine::sweep(policy, engine::sweep_views<T>{vp, two ? &vq : nullptr, nullptr}, opts.num_threads);
      if (std::find(invalid.begin(), invalid.end(), char(1)) != invalid.end()) {
        check_range<T>(function, "p", vp, opts.dim, 0, inf<T>, losses::probabilities_expected);
        if (two) check_range<T>(function, "q", vq, opts.dim, 0, inf<T>, losses::probabilities_expected);
        throw_invalid(function, "p", losses::probabilities_expected, "an entry that is not");  // not reached
      }
      return values;
    });
  });
}

/// The upstream gradient of a measure: a number for every sample, or one per sample.
template <class T, class G>
struct measure_upstream {
  T scale = 1;
  Eigen::Matrix<T, Eigen::Dynamic, 1> per_sample;  // empty: scale alone
};

template <class T, class G>
measure_upstream<T, G> measure_upstream_of(const char* function, const G& grad_out, Index samples) {
  measure_upstream<T, G> u;
  if constexpr (std::is_arithmetic_v<G>) {
    u.scale = T(grad_out);
  } else {
    static_assert(std::is_same_v<typename G::Scalar, T>, "grad_out must have the inputs' scalar type");
    if (grad_out.size() == 1) {
      u.scale = T(grad_out.derived().coeff(0));
    } else if (grad_out.size() == samples && (grad_out.rows() == 1 || grad_out.cols() == 1)) {
      u.per_sample = grad_out.derived().template cast<T>();
    } else {
      throw_invalid(function, "grad_out",
                    "must be a number or hold one value per sample (" + std::to_string(samples) + ")",
                    shape_string(grad_out.rows(), grad_out.cols()));
    }
  }
  return u;
}

/// d (sum_j g_j M_j) / d x into out, for x = p (WrtP) or q, by the elementwise driver; out may be
/// empty (0 x 0): not wanted. scale: 1 / ln(base).
template <losses::measure M, bool WrtP, class T, class G, class P, class Q, class Out>
void measure_gradient(const char* function, const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                      const measure_upstream<T, G>& up, const measure_options& opts, const Eigen::DenseBase<Out>& out) {
  static_assert(std::is_same_v<typename Out::Scalar, T>, "a gradient buffer must have the inputs' scalar type");
  if (out.size() == 0) return;
  engine::elementwise_args<T> a{function, WrtP ? "p" : "q", WrtP ? "q" : "p"};
  a.r = reduction::sum;
  a.dim = opts.dim;
  a.num_threads = opts.num_threads;
  engine::upstream<T, G> u;
  u.scale = up.scale * T(inverse_log_base(function, opts.base));
  if (up.per_sample.size() != 0)
    u.per_element = opts.dim == 0 ? engine::operand<const T>{up.per_sample.data(), 0, 1}
                                  : engine::operand<const T>{up.per_sample.data(), 1, 0};
  const losses::measure_derivative<M, WrtP> f;
  if constexpr (WrtP) {
    (void)engine::elementwise(f, a, p, M == losses::measure::entropy ? p : q, false, &u, &out);
  } else {
    (void)engine::elementwise(f, a, q, p, false, &u, &out);
  }
}

/// The gradient buffers of a measure: each the inputs' shape (or empty: not wanted), overlapping
/// neither input nor each other; for entropy, grad_p may be p itself (in place).
template <class P, class Q, class GP, class GQ>
void check_measure_gradients(const char* function, const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                             const Eigen::DenseBase<GP>& grad_p, const Eigen::DenseBase<GQ>* grad_q) {
  auto check = [&](const char* name, const auto& g) {
    if (g.size() == 0) return;
    if (g.rows() != p.rows() || g.cols() != p.cols())
      throw_invalid(function, name,
                    "must have the shape of p (" + shape_string(p.rows(), p.cols()) + ") or be empty (not wanted)",
                    shape_string(g.rows(), g.cols()));
    check_no_overlap(function, name, g, "p", p, grad_q == nullptr);
    if (grad_q) check_no_overlap(function, name, g, "q", q, false);
  };
  check("grad_p", grad_p);
  if (grad_q) {
    check("grad_q", *grad_q);
    check_no_overlap(function, "grad_q", *grad_q, "grad_p", grad_p, false);
  }
}

/// A measure's gradients into grad_p (and grad_q), times the upstream grad_out; the values too when
/// `values` is not null. Every check before any work.
template <losses::measure M, class P, class Q, class G, class GP, class GQ>
void measure_backward(const char* function, const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                      const G& grad_out, const measure_options& opts, const Eigen::DenseBase<GP>& grad_p,
                      const Eigen::DenseBase<GQ>* grad_q,
                      Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1>* values) {
  using T = typename P::Scalar;
  constexpr bool two = M != losses::measure::entropy;
  check_measure_inputs(function, p, q, opts, two);
  check_measure_gradients(function, p, q, grad_p, grad_q);
  const auto up = measure_upstream_of<T>(function, grad_out, opts.dim == 0 ? p.cols() : p.rows());
  if (values) *values = measure_values<M>(function, p, q, opts);
  if constexpr (two) measure_gradient<M, false>(function, p, q, up, opts, *grad_q);
  measure_gradient<M, true>(function, p, q, up, opts, grad_p);
}

/// The sample count of a measure's input.
template <class P>
Index measure_samples(const Eigen::DenseBase<P>& p, const measure_options& opts) {
  return opts.dim == 0 ? p.cols() : p.rows();
}

/// Per-sample values reduced as the options' reduction says (denominator: the sample count).
template <class T>
loss_result<T> reduce_measure(reduction r, Eigen::Matrix<T, Eigen::Dynamic, 1>&& values) {
  const double samples = double(values.size());
  return reduce_losses(r, std::move(values), samples);
}

/// f(g) with the per-sample upstream gradient of a reduced measure: a number under mean (divided by
/// the samples) or sum, a number or a vector of one value per sample under none.
template <class T, class G, class F>
void with_reduced_upstream(const char* function, reduction r, Index samples, const G& grad_out, F&& f) {
  check_reduction(function, r, false);
  if constexpr (std::is_arithmetic_v<G>) {
    f(r == reduction::mean ? T(double(grad_out) / double(samples)) : T(grad_out));
  } else {
    if (r != reduction::none)
      throw_invalid(function, "grad_out", std::string("must be a number for reduction ") + to_string(r) + ", not a vector of size",
                    grad_out.size());
    f(grad_out);
  }
}

/// What a reduced _with_grad differentiates: the mean (1 / samples per sample) or the sum.
template <class T>
T reduced_seed(reduction r, Index samples) {
  return r == reduction::mean ? T(1.0 / double(samples)) : T(1);
}

}  // namespace detail

/// Shannon entropy H(p) = -sum_k p_k log p_k of every sample (0 log 0 = 0), in the base of opts.
/// p is taken as given (no normalisation check).
/// \throws xent::invalid_argument if p is empty, has a negative or non-finite entry, dim is not 0/1, or base is bad.
template <class P>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> entropy(const Eigen::DenseBase<P>& p,
                                                             const measure_options& opts = {}) {
  return detail::measure_values<detail::losses::measure::entropy>("entropy", p, p, opts);
}

/// entropy and its gradient d (sum_j H_j) / d p = -(log p + 1) (scaled to the base; +inf where
/// p = 0) into grad_p (p's shape; it may be p itself, in place).
template <class P, class GP>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> entropy_with_grad(const Eigen::DenseBase<P>& p,
                                                                       const measure_options& opts,
                                                                       const Eigen::DenseBase<GP>& grad_p) {
  Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> h;
  detail::measure_backward<detail::losses::measure::entropy>("entropy_with_grad", p, p, typename P::Scalar(1), opts,
                                                             grad_p, static_cast<const Eigen::DenseBase<GP>*>(nullptr),
                                                             &h);
  return h;
}

/// The gradient of sum_j grad_out_j H_j w.r.t. p into grad_p; grad_out is a number (the same for
/// every sample) or a vector of one value per sample.
template <class P, class G, class GP>
void entropy_backward(const Eigen::DenseBase<P>& p, const G& grad_out, const measure_options& opts,
                      const Eigen::DenseBase<GP>& grad_p) {
  detail::measure_backward<detail::losses::measure::entropy>(
      "entropy_backward", p, p, grad_out, opts, grad_p, static_cast<const Eigen::DenseBase<GP>*>(nullptr), nullptr);
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
  detail::check_num_threads(fn, opts.num_threads);
  detail::check_not_empty(fn, "x", x);
  const T scale = T(detail::inverse_log_base(fn, opts.base));
  Eigen::Matrix<T, Eigen::Dynamic, 1> h(opts.dim == 0 ? x.cols() : x.rows());
  auto none = [](Eigen::Index) { return T(0); };
  detail::with_view(x, opts.dim, [&](const detail::samples_view<const T>& v) {
    const detail::moment_policy<T, true, decltype(none)> policy(h.data(), none, false);
    detail::engine::sweep(policy, detail::engine::sweep_views<T>{v, nullptr, nullptr}, opts.num_threads);
  });
  if (scale != T(1)) h *= scale;
  return h;
}

namespace detail {

/// H of every sample of the logits x (in the base of opts) and, in the same sweep, the gradient of
/// coefficient * sum_j H_j into grad_out.
template <class X, class Out>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, 1> entropy_from_logits_and_grad(const char* fn, const Eigen::DenseBase<X>& x,
                                                                                 const measure_options& opts,
                                                                                 typename X::Scalar coefficient,
                                                                                 const Eigen::DenseBase<Out>& grad_out) {
  using T = typename X::Scalar;
  check_real<X>();
  check_dim(fn, opts.dim);
  check_num_threads(fn, opts.num_threads);
  check_not_empty(fn, "x", x);
  const T scale = T(inverse_log_base(fn, opts.base));
  Eigen::Matrix<T, Eigen::Dynamic, 1> h(opts.dim == 0 ? x.cols() : x.rows());
  auto c = [k = scale * coefficient](Eigen::Index) { return k; };
  with_out_view(fn, "grad_out", x, grad_out, opts.dim, [&](const samples_view<T>& g) {
    with_view(x, opts.dim, [&](const samples_view<const T>& v) {
      const moment_policy<T, true, decltype(c)> policy(h.data(), c, true);
      engine::sweep(policy, engine::sweep_views<T>{v, nullptr, &g}, opts.num_threads);
    });
  });
  if (scale != T(1)) h *= scale;
  return h;
}

}  // namespace detail

/// entropy_from_logits and its gradient: returns H per sample (in the base of opts) and writes
/// d (sum_j H_j) / d x = -p (log p + H) (scaled to the base) into grad_out (x's shape; it may be x).
template <class X, class Out>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, 1> entropy_from_logits_with_grad(
    const Eigen::DenseBase<X>& x, const measure_options& opts, const Eigen::DenseBase<Out>& grad_out) {
  return detail::entropy_from_logits_and_grad("entropy_from_logits_with_grad", x, opts, typename X::Scalar(1), grad_out);
}

/// The gradient of sum_j grad_out_j H_j, H_j the entropy of softmax of sample j, w.r.t. the logits
/// x into grad_x (x's shape; it may be x); grad_out is a number or a vector of one value per sample.
template <class X, class G, class Out>
void entropy_from_logits_backward(const Eigen::DenseBase<X>& x, const G& grad_out, const measure_options& opts,
                                  const Eigen::DenseBase<Out>& grad_x) {
  using T = typename X::Scalar;
  constexpr const char* fn = "entropy_from_logits_backward";
  detail::check_real<X>();
  detail::check_dim(fn, opts.dim);
  detail::check_num_threads(fn, opts.num_threads);
  detail::check_not_empty(fn, "x", x);
  using CT = detail::compute_t<T>;
  const CT scale = CT(detail::inverse_log_base(fn, opts.base));
  const Eigen::Index samples = opts.dim == 0 ? x.cols() : x.rows();
  const auto up = detail::measure_upstream_of<CT>(fn, grad_out, samples);
  auto c = [&](Eigen::Index j) { return scale * up.scale * (up.per_sample.size() ? up.per_sample(j) : CT(1)); };
  detail::with_out_view(fn, "grad_x", x, grad_x, opts.dim, [&](const detail::samples_view<T>& g) {
    detail::with_view(x, opts.dim, [&](const detail::samples_view<const T>& v) {
      const detail::moment_policy<T, true, decltype(c)> policy(nullptr, c, true);
      detail::engine::sweep(policy, detail::engine::sweep_views<T>{v, nullptr, &g}, opts.num_threads);
    });
  });
}

/// Cross-entropy between distributions H(p, q) = -sum_k p_k log q_k per sample (0 log q = 0 for any q;
/// +inf where p_k > 0 = q_k). Named so as not to clash with the categorical loss xent::cross_entropy.
/// \throws xent::invalid_argument if p or q is empty, their shapes differ, an entry is negative or not
///   finite, dim is not 0/1, or base is bad.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> cross_entropy_between(const Eigen::DenseBase<P>& p,
                                                                           const Eigen::DenseBase<Q>& q,
                                                                           const measure_options& opts = {}) {
  return detail::measure_values<detail::losses::measure::cross_entropy>("cross_entropy_between", p, q, opts);
}

/// cross_entropy_between and its gradients: d (sum_j M_j) / d p into grad_p and / d q into grad_q (-log q and -p / q, 0
/// where p = 0), scaled to the base. Either buffer may be empty (0 x 0) when that gradient is not wanted; neither may
/// overlap p, q or the other.
template <class P, class Q, class GP, class GQ>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> cross_entropy_between_with_grad(
    const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const measure_options& opts,
    const Eigen::DenseBase<GP>& grad_p, const Eigen::DenseBase<GQ>& grad_q) {
  Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::cross_entropy>(
      "cross_entropy_between_with_grad", p, q, typename P::Scalar(1), opts, grad_p, &grad_q, &values);
  return values;
}

/// The gradients of sum_j grad_out_j M_j (M = cross_entropy_between) w.r.t. p and q; grad_out is a number or a
/// vector of one value per sample. Buffers as cross_entropy_between_with_grad.
template <class P, class Q, class G, class GP, class GQ>
void cross_entropy_between_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                                    const measure_options& opts, const Eigen::DenseBase<GP>& grad_p,
                                    const Eigen::DenseBase<GQ>& grad_q) {
  detail::measure_backward<detail::losses::measure::cross_entropy>("cross_entropy_between_backward", p, q, grad_out,
                                                                   opts, grad_p, &grad_q, nullptr);
}

/// Kullback-Leibler divergence KL(p || q) = sum_k p_k log(p_k / q_k) per sample (+inf where p_k > 0 = q_k).
/// For normalised p and q it is >= 0 and H(p, q) = H(p) + KL(p || q). Errors as cross_entropy_between.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> kl_divergence(const Eigen::DenseBase<P>& p,
                                                                   const Eigen::DenseBase<Q>& q,
                                                                   const measure_options& opts = {}) {
  return detail::measure_values<detail::losses::measure::kl>("kl_divergence", p, q, opts);
}

/// kl_divergence and its gradients: d (sum_j M_j) / d p into grad_p and / d q into grad_q (log(p / q) + 1 and -p / q),
/// scaled to the base. Either buffer may be empty (0 x 0) when that gradient is not wanted; neither may
/// overlap p, q or the other.
template <class P, class Q, class GP, class GQ>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> kl_divergence_with_grad(const Eigen::DenseBase<P>& p,
                                                                             const Eigen::DenseBase<Q>& q,
                                                                             const measure_options& opts,
                                                                             const Eigen::DenseBase<GP>& grad_p,
                                                                             const Eigen::DenseBase<GQ>& grad_q) {
  Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::kl>("kl_divergence_with_grad", p, q, typename P::Scalar(1), opts,
                                                        grad_p, &grad_q, &values);
  return values;
}

/// The gradients of sum_j grad_out_j M_j (M = kl_divergence) w.r.t. p and q; grad_out is a number or a
/// vector of one value per sample. Buffers as kl_divergence_with_grad.
template <class P, class Q, class G, class GP, class GQ>
void kl_divergence_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                            const measure_options& opts, const Eigen::DenseBase<GP>& grad_p,
                            const Eigen::DenseBase<GQ>& grad_q) {
  detail::measure_backward<detail::losses::measure::kl>("kl_divergence_backward", p, q, grad_out, opts, grad_p, &grad_q,
                                                        nullptr);
}

/// Jensen-Shannon divergence JS(p, q) = (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2, per sample.
/// Always finite; for normalised p and q, 0 <= JS <= ln 2 (1 bit). Errors as cross_entropy_between.
template <class P, class Q>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> js_divergence(const Eigen::DenseBase<P>& p,
                                                                   const Eigen::DenseBase<Q>& q,
                                                                   const measure_options& opts = {}) {
  return detail::measure_values<detail::losses::measure::js>("js_divergence", p, q, opts);
}

/// js_divergence and its gradients: d (sum_j M_j) / d p into grad_p and / d q into grad_q (log(p / m) / 2 and log(q /
/// m) / 2), scaled to the base. Either buffer may be empty (0 x 0) when that gradient is not wanted; neither may
/// overlap p, q or the other.
template <class P, class Q, class GP, class GQ>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> js_divergence_with_grad(const Eigen::DenseBase<P>& p,
                                                                             const Eigen::DenseBase<Q>& q,
                                                                             const measure_options& opts,
                                                                             const Eigen::DenseBase<GP>& grad_p,
                                                                             const Eigen::DenseBase<GQ>& grad_q) {
  Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::js>("js_divergence_with_grad", p, q, typename P::Scalar(1), opts,
                                                        grad_p, &grad_q, &values);
  return values;
}

/// The gradients of sum_j grad_out_j M_j (M = js_divergence) w.r.t. p and q; grad_out is a number or a
/// vector of one value per sample. Buffers as js_divergence_with_grad.
template <class P, class Q, class G, class GP, class GQ>
void js_divergence_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                            const measure_options& opts, const Eigen::DenseBase<GP>& grad_p,
                            const Eigen::DenseBase<GQ>& grad_q) {
  detail::measure_backward<detail::losses::measure::js>("js_divergence_backward", p, q, grad_out, opts, grad_p, &grad_q,
                                                        nullptr);
}

// ---- Reduced forms: the reduction after the options; loss_result as every loss returns.

/// entropy reduced over the samples: none (per_sample(), as entropy(p, opts)), mean or sum
/// (value(); denominator() is the sample count).
/// \throws xent::invalid_argument as entropy, and if r is batchmean or not a reduction.
template <class P>
loss_result<typename P::Scalar> entropy(const Eigen::DenseBase<P>& p, const measure_options& opts, xent::reduction r) {
  detail::check_reduction("entropy", r, false);
  return detail::reduce_measure(r, detail::measure_values<detail::losses::measure::entropy>("entropy", p, p, opts));
}

/// entropy reduced by r, and the gradient of what it returns (the mean, the sum, or for none the
/// sum over the samples) into grad_p.
template <class P, class GP>
loss_result<typename P::Scalar> entropy_with_grad(const Eigen::DenseBase<P>& p, const measure_options& opts,
                                                   xent::reduction r, const Eigen::DenseBase<GP>& grad_p) {
  using T = typename P::Scalar;
  constexpr const char* fn = "entropy_with_grad";
  detail::check_reduction(fn, r, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> h;
  detail::measure_backward<detail::losses::measure::entropy>(fn, p, p, detail::reduced_seed<T>(r, detail::measure_samples(p, opts)),
                                                             opts, grad_p, static_cast<const Eigen::DenseBase<GP>*>(nullptr), &h);
  return detail::reduce_measure(r, std::move(h));
}

/// The gradient of grad_out times entropy reduced by r: grad_out a number (under mean divided by the
/// samples), or for none also a vector of one value per sample.
template <class P, class G, class GP>
void entropy_backward(const Eigen::DenseBase<P>& p, const G& grad_out, const measure_options& opts, xent::reduction r,
                      const Eigen::DenseBase<GP>& grad_p) {
  constexpr const char* fn = "entropy_backward";
  detail::with_reduced_upstream<typename P::Scalar>(fn, r, detail::measure_samples(p, opts), grad_out, [&](const auto& g) {
    detail::measure_backward<detail::losses::measure::entropy>(fn, p, p, g, opts, grad_p,
                                                               static_cast<const Eigen::DenseBase<GP>*>(nullptr), nullptr);
  });
}

/// entropy_from_logits reduced over the samples (none, mean or sum), as entropy(p, opts, r).
template <class X>
loss_result<typename X::Scalar> entropy_from_logits(const Eigen::DenseBase<X>& x, const measure_options& opts,
                                                     xent::reduction r) {
  detail::check_reduction("entropy_from_logits", r, false);
  return detail::reduce_measure(r, entropy_from_logits(x, opts));
}

/// entropy_from_logits reduced by r, and in the same sweep the gradient of what it returns into
/// grad_out (x's shape; it may be x).
template <class X, class Out>
loss_result<typename X::Scalar> entropy_from_logits_with_grad(const Eigen::DenseBase<X>& x, const measure_options& opts,
                                                               xent::reduction r, const Eigen::DenseBase<Out>& grad_out) {
  using T = typename X::Scalar;
  constexpr const char* fn = "entropy_from_logits_with_grad";
  detail::check_reduction(fn, r, false);
  return detail::reduce_measure(
      r, detail::entropy_from_logits_and_grad(fn, x, opts, detail::reduced_seed<T>(r, detail::measure_samples(x, opts)), grad_out));
}

/// The gradient of grad_out times entropy_from_logits reduced by r into grad_x; grad_out as
/// entropy_backward's reduced form.
template <class X, class G, class Out>
void entropy_from_logits_backward(const Eigen::DenseBase<X>& x, const G& grad_out, const measure_options& opts,
                                  xent::reduction r, const Eigen::DenseBase<Out>& grad_x) {
  using T = detail::compute_t<typename X::Scalar>;
  detail::with_reduced_upstream<T>("entropy_from_logits_backward", r, detail::measure_samples(x, opts), grad_out,
                                   [&](const auto& g) { entropy_from_logits_backward(x, g, opts, grad_x); });
}

/// cross_entropy_between reduced over the samples: none (per_sample()), mean or sum (value(); denominator() is the
/// sample count). \throws xent::invalid_argument as cross_entropy_between, and if r is batchmean or not a reduction.
template <class P, class Q>
loss_result<typename P::Scalar> cross_entropy_between(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                        const measure_options& opts, xent::reduction r) {
  detail::check_reduction("cross_entropy_between", r, false);
  return detail::reduce_measure(r, detail::measure_values<detail::losses::measure::cross_entropy>("cross_entropy_between", p, q, opts));
}

/// cross_entropy_between reduced by r, and the gradients of what it returns (the mean, the sum, or for none the sum
/// over the samples) into grad_p and grad_q (either may be empty: not wanted).
template <class P, class Q, class GP, class GQ>
loss_result<typename P::Scalar> cross_entropy_between_with_grad(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                                  const measure_options& opts, xent::reduction r,
                                                  const Eigen::DenseBase<GP>& grad_p, const Eigen::DenseBase<GQ>& grad_q) {
  using T = typename P::Scalar;
  constexpr const char* fn = "cross_entropy_between_with_grad";
  detail::check_reduction(fn, r, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::cross_entropy>(fn, p, q, detail::reduced_seed<T>(r, detail::measure_samples(p, opts)),
                                                          opts, grad_p, &grad_q, &values);
  return detail::reduce_measure(r, std::move(values));
}

/// The gradients of grad_out times cross_entropy_between reduced by r: grad_out a number (under mean divided by the
/// samples), or for none also a vector of one value per sample.
template <class P, class Q, class G, class GP, class GQ>
void cross_entropy_between_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                     const measure_options& opts, xent::reduction r, const Eigen::DenseBase<GP>& grad_p,
                     const Eigen::DenseBase<GQ>& grad_q) {
  constexpr const char* fn = "cross_entropy_between_backward";
  detail::with_reduced_upstream<typename P::Scalar>(fn, r, detail::measure_samples(p, opts), grad_out, [&](const auto& g) {
    detail::measure_backward<detail::losses::measure::cross_entropy>(fn, p, q, g, opts, grad_p, &grad_q, nullptr);
  });
}

/// kl_divergence reduced over the samples: none (per_sample()), mean or sum (value(); denominator() is the
/// sample count). \throws xent::invalid_argument as kl_divergence, and if r is batchmean or not a reduction.
template <class P, class Q>
loss_result<typename P::Scalar> kl_divergence(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                        const measure_options& opts, xent::reduction r) {
  detail::check_reduction("kl_divergence", r, false);
  return detail::reduce_measure(r, detail::measure_values<detail::losses::measure::kl>("kl_divergence", p, q, opts));
}

/// kl_divergence reduced by r, and the gradients of what it returns (the mean, the sum, or for none the sum
/// over the samples) into grad_p and grad_q (either may be empty: not wanted).
template <class P, class Q, class GP, class GQ>
loss_result<typename P::Scalar> kl_divergence_with_grad(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                                  const measure_options& opts, xent::reduction r,
                                                  const Eigen::DenseBase<GP>& grad_p, const Eigen::DenseBase<GQ>& grad_q) {
  using T = typename P::Scalar;
  constexpr const char* fn = "kl_divergence_with_grad";
  detail::check_reduction(fn, r, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::kl>(fn, p, q, detail::reduced_seed<T>(r, detail::measure_samples(p, opts)),
                                                          opts, grad_p, &grad_q, &values);
  return detail::reduce_measure(r, std::move(values));
}

/// The gradients of grad_out times kl_divergence reduced by r: grad_out a number (under mean divided by the
/// samples), or for none also a vector of one value per sample.
template <class P, class Q, class G, class GP, class GQ>
void kl_divergence_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                     const measure_options& opts, xent::reduction r, const Eigen::DenseBase<GP>& grad_p,
                     const Eigen::DenseBase<GQ>& grad_q) {
  constexpr const char* fn = "kl_divergence_backward";
  detail::with_reduced_upstream<typename P::Scalar>(fn, r, detail::measure_samples(p, opts), grad_out, [&](const auto& g) {
    detail::measure_backward<detail::losses::measure::kl>(fn, p, q, g, opts, grad_p, &grad_q, nullptr);
  });
}

/// js_divergence reduced over the samples: none (per_sample()), mean or sum (value(); denominator() is the
/// sample count). \throws xent::invalid_argument as js_divergence, and if r is batchmean or not a reduction.
template <class P, class Q>
loss_result<typename P::Scalar> js_divergence(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                        const measure_options& opts, xent::reduction r) {
  detail::check_reduction("js_divergence", r, false);
  return detail::reduce_measure(r, detail::measure_values<detail::losses::measure::js>("js_divergence", p, q, opts));
}

/// js_divergence reduced by r, and the gradients of what it returns (the mean, the sum, or for none the sum
/// over the samples) into grad_p and grad_q (either may be empty: not wanted).
template <class P, class Q, class GP, class GQ>
loss_result<typename P::Scalar> js_divergence_with_grad(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q,
                                                  const measure_options& opts, xent::reduction r,
                                                  const Eigen::DenseBase<GP>& grad_p, const Eigen::DenseBase<GQ>& grad_q) {
  using T = typename P::Scalar;
  constexpr const char* fn = "js_divergence_with_grad";
  detail::check_reduction(fn, r, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> values;
  detail::measure_backward<detail::losses::measure::js>(fn, p, q, detail::reduced_seed<T>(r, detail::measure_samples(p, opts)),
                                                          opts, grad_p, &grad_q, &values);
  return detail::reduce_measure(r, std::move(values));
}

/// The gradients of grad_out times js_divergence reduced by r: grad_out a number (under mean divided by the
/// samples), or for none also a vector of one value per sample.
template <class P, class Q, class G, class GP, class GQ>
void js_divergence_backward(const Eigen::DenseBase<P>& p, const Eigen::DenseBase<Q>& q, const G& grad_out,
                     const measure_options& opts, xent::reduction r, const Eigen::DenseBase<GP>& grad_p,
                     const Eigen::DenseBase<GQ>& grad_q) {
  constexpr const char* fn = "js_divergence_backward";
  detail::with_reduced_upstream<typename P::Scalar>(fn, r, detail::measure_samples(p, opts), grad_out, [&](const auto& g) {
    detail::measure_backward<detail::losses::measure::js>(fn, p, q, g, opts, grad_p, &grad_q, nullptr);
  });
}

}  // namespace xent

#endif
