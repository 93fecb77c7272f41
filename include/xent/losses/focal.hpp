#ifndef XENT_LOSSES_FOCAL_HPP
#define XENT_LOSSES_FOCAL_HPP

// Focal losses (Lin et al. 2017), forward and backward, on top of the binary and categorical kernels:
//   sigmoid_focal_loss: torchvision.ops.sigmoid_focal_loss (elementwise, multi-label);
//   softmax_focal_loss: the multi-class form -alpha_y (1 - p_y)^gamma log p_y.
// docs/losses.md is the reference.

#include "../detail/categorical_kernel.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/pointwise.hpp"
#include "../core/error.hpp"
#include "binary.hpp"
#include "cross_entropy.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <cmath>
#include <string>

namespace xent {

/// Options of sigmoid_focal_loss, with torchvision.ops.sigmoid_focal_loss's names and defaults.
struct sigmoid_focal_loss_options {
  /// Weight of the positive term in [0, 1] (1 - alpha for the negative term); negative disables it.
  double alpha = 0.25;
  /// Focusing exponent, >= 0; 0 gives binary_cross_entropy_with_logits (times alpha_t).
  double gamma = 2;
  /// torchvision's default is none; mean averages over every element.
  xent::reduction reduction = xent::reduction::none;
};

/// Options of softmax_focal_loss.
struct softmax_focal_loss_options {
  /// One alpha per class; empty means 1 for every class.
  Eigen::VectorXd alpha;
  /// Focusing exponent, >= 0; 0 (with alpha empty) gives cross_entropy.
  double gamma = 2;
  long ignore_index = -100;
  /// mean divides by the number of non-ignored samples (alpha is a focusing factor, not a weight
  /// of the denominator); every sample ignored gives NaN.
  xent::reduction reduction = xent::reduction::mean;
  int dim = 0;
};

namespace detail {

inline void check_gamma(const char* fn, double gamma) {
  if (!(gamma >= 0 && std::isfinite(gamma))) throw_invalid(fn, "gamma", "must be finite and >= 0", gamma);
}

/// d/dm of m^gamma at m >= 0 (0^0 = 1, so gamma = 0 has derivative 0; m = 0 with gamma < 1 is taken as 0,
/// the one-sided limit of the product with the vanishing factor that comes with it).
template <class T>
T pow_derivative(T m, T gamma) {
  if (gamma == T(0)) return T(0);
  if (m > T(0)) return gamma * std::pow(m, gamma - T(1));
  return gamma == T(1) ? T(1) : T(0);
}

/// torchvision's sigmoid focal loss of one element (logit x, target t in [0, 1]) and its derivative.
/// 1 - p_t is computed as p (1 - t) + sigmoid(-x) t, without the cancellation of 1 - p_t.
template <class T>
struct sigmoid_focal_element {
  T alpha, gamma;
  T alpha_t(T t) const { return alpha < T(0) ? T(1) : alpha * t + (T(1) - alpha) * (T(1) - t); }
  T loss(T x, T t) const {
    const T m = sigmoid(x) * (T(1) - t) + sigmoid(-x) * t;
    return alpha_t(t) * bce_logits_element(x, t, T(1)) * std::pow(m, gamma);
  }
  T grad(T x, T t) const {
    const T p = sigmoid(x), q = sigmoid(-x);
    const T m = p * (T(1) - t) + q * t;
    // d m / d x = p q (1 - 2 t); d ce / d x = p - t.
    const T dm = p * q * (T(1) - T(2) * t);
    return alpha_t(t) * (bce_logits_element_grad(x, t, T(1)) * std::pow(m, gamma) +
                         bce_logits_element(x, t, T(1)) * pow_derivative(m, gamma) * dm);
  }
};

template <class T>
sigmoid_focal_element<T> sigmoid_focal_of(const char* fn, const sigmoid_focal_loss_options& o) {
  check_reduction(fn, o.reduction, false);
  check_gamma(fn, o.gamma);
  if (!(o.alpha <= 1)) throw_invalid(fn, "alpha", "must be <= 1 (negative disables it)", o.alpha);
  return {static_cast<T>(o.alpha), static_cast<T>(o.gamma)};
}

/// What check_categorical reads, with alpha checked separately (its message names "alpha").
struct categorical_check_view {
  const Eigen::VectorXd& weight;
  xent::reduction reduction;
  int dim;
};

inline const Eigen::VectorXd& no_weight() {
  static const Eigen::VectorXd empty;
  return empty;
}

/// Checks softmax_focal_loss's arguments; returns the mean's denominator (non-ignored count).
template <class Derived, class TDerived>
double check_softmax_focal(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<TDerived>& targets,
                           const softmax_focal_loss_options& o, Eigen::Index& samples, Eigen::Index& classes) {
  check_gamma(fn, o.gamma);
  samples = check_categorical(fn, "logits", x, categorical_check_view{no_weight(), o.reduction, o.dim}, 0.0);
  classes = o.dim == 0 ? x.rows() : x.cols();
  if (o.alpha.size() != 0 && o.alpha.size() != classes)
    throw_invalid(fn, "alpha", "must be empty or have one entry per class (" + std::to_string(classes) + ")",
                  o.alpha.size());
  return check_index_targets(fn, targets, samples, classes, o.ignore_index, no_weight());
}

/// -alpha (1 - p)^gamma log p of sample j at target t.
template <class T>
T softmax_focal_sample_loss(const samples_view<const T>& v, Index j, Index t, T alpha, T gamma) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T lp = n.log_prob(v.sample(j)[t * v.class_stride]);
  const T m = -std::expm1(lp);  // 1 - p, without cancellation
  return -alpha * std::pow(m, gamma) * lp;
}

/// c * d loss_j / d x_k = c alpha D (p_k - [k == t]), D = (1 - p)^gamma - gamma (1 - p)^(gamma - 1) p log p.
template <class T>
void softmax_focal_sample_grad(const samples_view<const T>& v, Index j, Index t, T alpha, T gamma, T c,
                               const samples_view<T>& out) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  T* g = out.sample(j);
  const T lp = n.log_prob(x[t * v.class_stride]);
  const T m = -std::expm1(lp), p = std::exp(lp);
  const T D = std::pow(m, gamma) - pow_derivative(m, gamma) * p * lp;
  const T f = c * alpha * D;
  for (Index k = 0; k < v.classes; ++k) g[k * out.class_stride] = f * (n.prob(x[k * v.class_stride]) - (k == t ? T(1) : T(0)));
}

}  // namespace detail

/// torchvision.ops.sigmoid_focal_loss: per element
///   alpha_t * BCEWithLogits(x, t) * (1 - p_t)^gamma,  p = sigmoid(x), p_t = p t + (1 - p)(1 - t),
///   alpha_t = alpha t + (1 - alpha)(1 - t) (1 when alpha < 0).
/// Returns the input's shape for reduction none (torchvision's default), else a 1 x 1 matrix (mean over all elements, or sum).
/// \throws xent::invalid_argument for empty logits, targets of another shape or outside [0, 1], gamma < 0,
///   alpha > 1, reduction batchmean.
template <class X, class Tg>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, Eigen::Dynamic> sigmoid_focal_loss(
    const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets, const sigmoid_focal_loss_options& opts = {}) {
  using T = typename X::Scalar;
  constexpr const char* fn = "sigmoid_focal_loss";
  const auto e = detail::sigmoid_focal_of<T>(fn, opts);
  detail::check_not_empty(fn, "logits", logits);
  detail::check_same_shape(fn, "targets", targets, "logits", logits);
  return detail::with_view(logits, 0, [&](const detail::samples_view<const T>& x) {
    return detail::with_view(targets, 0, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "targets", t, 0, 0, 1, "must hold probabilities in [0, 1]");
      return detail::reduce_elementwise<T>(logits.rows(), logits.cols(), 0, opts.reduction, [&](auto j, auto k) {
        return e.loss(detail::at(x, j, k), detail::at(t, j, k));
      });
    });
  });
}

/// Gradient of sigmoid_focal_loss w.r.t. the logits, times grad_out (1 x 1, or the input's shape for none),
/// into grad_input (the logits' shape; a Map over the caller's buffer is written in place).
template <class G, class X, class Tg, class Out>
void sigmoid_focal_loss_backward(const Eigen::DenseBase<G>& grad_out, const Eigen::DenseBase<X>& logits,
                                 const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                 const sigmoid_focal_loss_options& opts = {}) {
  using T = typename X::Scalar;
  constexpr const char* fn = "sigmoid_focal_loss_backward";
  const auto e = detail::sigmoid_focal_of<T>(fn, opts);
  detail::check_not_empty(fn, "logits", logits);
  detail::check_same_shape(fn, "targets", targets, "logits", logits);
  detail::with_view(logits, 0, [&](const detail::samples_view<const T>& x) {
    detail::with_view(targets, 0, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "targets", t, 0, 0, 1, "must hold probabilities in [0, 1]");
      detail::write_gradient<T>(fn, grad_out, grad_input, logits.rows(), logits.cols(), 0, opts.reduction,
                                [&](auto j, auto k) { return e.grad(detail::at(x, j, k), detail::at(t, j, k)); });
    });
  });
}

/// The scalar-seed form of sigmoid_focal_loss_backward.
template <class X, class Tg, class Out>
void sigmoid_focal_loss_backward(typename X::Scalar grad_out, const Eigen::DenseBase<X>& logits,
                                 const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                 const sigmoid_focal_loss_options& opts = {}) {
  sigmoid_focal_loss_backward(Eigen::Matrix<typename X::Scalar, 1, 1>::Constant(grad_out), logits, targets, grad_input,
                              opts);
}

/// Multi-class focal loss of logits (C x N for dim = 0) at class-index targets: per sample
///   -alpha[y] (1 - p_y)^gamma log p_y,  p = softmax(x),
/// 0 for an ignored sample. mean divides by the number of non-ignored samples.
/// \returns loss_result as cross_entropy. \throws xent::invalid_argument on misuse (docs/losses.md).
template <class Derived, class TDerived>
loss_result<typename Derived::Scalar> softmax_focal_loss(const Eigen::DenseBase<Derived>& logits,
                                                         const Eigen::DenseBase<TDerived>& targets,
                                                         const softmax_focal_loss_options& opts = {}) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "softmax_focal_loss";
  Eigen::Index samples = 0, classes = 0;
  const double denominator = detail::check_softmax_focal(fn, logits, targets, opts, samples, classes);
  const T gamma = static_cast<T>(opts.gamma);
  return detail::index_target_forward(logits, targets, opts.ignore_index, opts.dim, opts.reduction, samples, denominator,
                                      [&](const auto& v, Eigen::Index j, Eigen::Index t) {
                                        const T a = opts.alpha.size() ? static_cast<T>(opts.alpha(t)) : T(1);
                                        return detail::softmax_focal_sample_loss(v, j, t, a, gamma);
                                      });
}

/// Gradient of softmax_focal_loss w.r.t. the logits, times grad_out (a number for mean/sum, one per
/// sample for none), into grad_logits_out. Ignored samples get 0.
template <class Derived, class TDerived, class G, class OutDerived>
void softmax_focal_loss_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                 const G& grad_out, const softmax_focal_loss_options& opts,
                                 const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "softmax_focal_loss_backward";
  Eigen::Index samples = 0, classes = 0;
  const double denominator = detail::check_softmax_focal(fn, logits, targets, opts, samples, classes);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, samples, denominator, grad_out);
  const T gamma = static_cast<T>(opts.gamma);
  detail::index_target_backward(fn, logits, targets, opts.ignore_index, opts.dim, grad_logits_out,
                                [&](const auto& v, Eigen::Index j, Eigen::Index t, const auto& out) {
                                  const T a = opts.alpha.size() ? static_cast<T>(opts.alpha(t)) : T(1);
                                  detail::softmax_focal_sample_grad(v, j, t, a, gamma, scale(j), out);
                                });
}

}  // namespace xent

#endif
