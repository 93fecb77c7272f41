#ifndef XENT_LOSSES_BINARY_HPP
#define XENT_LOSSES_BINARY_HPP

// Binary (and multi-label) cross-entropy with torch 1.13's formulas (aten/src/ATen/native/Loss.cpp).
// Every entry of the input is an independent Bernoulli prediction; the class axis (`dim`, see
// logsumexp.hpp) only says how a per-class weight / pos_weight broadcasts, as torch broadcasts a
// [C] tensor over [N, C].

#include "../detail/engine/view.hpp"
#include "../detail/pointwise.hpp"
#include "../core/error.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>

namespace xent {

/// Options of binary_cross_entropy, with torch's names and defaults.
template <class T>
struct binary_cross_entropy_options {
  /// Rescales each element's loss: empty (none), one entry per class, or the input's shape.
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weight;
  xent::reduction reduction = xent::reduction::mean;  ///< none, mean (over all elements) or sum
  int dim = 0;                                        ///< the class axis, for a per-class weight
};

/// Options of binary_cross_entropy_with_logits, with torch's names and defaults.
template <class T>
struct binary_cross_entropy_with_logits_options {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weight;      ///< as binary_cross_entropy_options::weight
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> pos_weight;  ///< weight of the positive term; same broadcast
  xent::reduction reduction = xent::reduction::mean;
  int dim = 0;
};

namespace detail {

template <class T>
void check_binary_common(const char* function, reduction r, int dim) {
  check_dim(function, dim);
  check_reduction(function, r, false);
}

/// torch's clamp: each log is held at >= -100, so probabilities exactly 0 and 1 give a finite loss.
template <class T>
T bce_element(T p, T t) {
  return (t - T(1)) * std::max(T(std::log1p(-p)), T(-100)) - t * std::max(T(std::log(p)), T(-100));
}

/// torch's backward: (p - t) / max(p (1 - p), 1e-12), the 1e-12 keeping p = 0 and p = 1 finite.
/// torch's EPSILON is a float constant (Loss.cpp), so in double it is float(1e-12) = 9.99999996e-13;
/// the same constant here keeps the clamped gradients equal to torch's to the last bit.
template <class T>
T bce_element_grad(T p, T t) {
  constexpr float epsilon = 1e-12f;
  return (p - t) / std::max((T(1) - p) * p, T(epsilon));
}

/// softplus(-x) = -log(sigmoid(x)) = max(-x, 0) + log1p(exp(-|x|)): no overflow for any x, and
/// log1p keeps the digits torch's log(exp(-m) + exp(-x - m)) loses for large positive x.
template <class T>
T softplus_neg(T x) {
  return std::max(-x, T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

template <class T>
T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T>
T bce_logits_element(T x, T t, T pos_weight) {
  // torch: (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x).
  return (T(1) - t) * x + ((pos_weight - T(1)) * t + T(1)) * softplus_neg(x);
}

template <class T>
T bce_logits_element_grad(T x, T t, T pos_weight) {
  // torch's form: (pos_weight t + 1 - t) sigmoid(x) - pos_weight t.
  const T pt = pos_weight * t;
  return (pt + T(1) - t) * sigmoid(x) - pt;
}

}  // namespace detail

/// torch.nn.functional.binary_cross_entropy: -w (t log p + (1 - t) log(1 - p)), each log clamped at
/// -100 as in torch. Returns the input's shape for reduction none, else a 1 x 1 matrix (`.value()`).
/// \throws xent::invalid_argument if the input is empty, targets' shape differs, a probability or
///   target is outside [0, 1] or not finite, the weight has the wrong shape, dim is not 0/1, or reduction is batchmean.
template <class P, class Tg>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, Eigen::Dynamic> binary_cross_entropy(
    const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Tg>& targets,
    const binary_cross_entropy_options<typename P::Scalar>& opts = {}) {
  using T = typename P::Scalar;
  constexpr const char* fn = "binary_cross_entropy";
  detail::check_binary_common<T>(fn, opts.reduction, opts.dim);
  detail::check_not_empty(fn, "probs", probs);
  detail::check_same_shape(fn, "targets", targets, "probs", probs);
  const detail::class_broadcast<T> w(fn, "weight", opts.weight, probs, opts.dim);
  return detail::with_view(probs, opts.dim, [&](const detail::samples_view<const T>& p) {
    return detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "probs", p, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      detail::check_range<T>(fn, "targets", t, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      return detail::reduce_elementwise<T>(probs.rows(), probs.cols(), opts.dim, opts.reduction, [&](auto j, auto k) {
        return w(j, k) * detail::bce_element(detail::at(p, j, k), detail::at(t, j, k));
      });
    });
  });
}

/// The gradient of binary_cross_entropy w.r.t. probs, times grad_out, written into grad_input (the
/// input's shape; a Map over the caller's buffer works). grad_out is 1 x 1 (the seed of a mean/sum, or
/// broadcast for none) or, for reduction none, the input's shape. Formula as torch's backward:
/// grad_out w (p - t) / max(p (1 - p), 1e-12), divided by numel for mean.
template <class G, class P, class Tg, class Out>
void binary_cross_entropy_backward(const Eigen::DenseBase<G>& grad_out, const Eigen::DenseBase<P>& probs,
                                   const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                   const binary_cross_entropy_options<typename P::Scalar>& opts = {}) {
  using T = typename P::Scalar;
  constexpr const char* fn = "binary_cross_entropy_backward";
  detail::check_binary_common<T>(fn, opts.reduction, opts.dim);
  detail::check_not_empty(fn, "probs", probs);
  detail::check_same_shape(fn, "targets", targets, "probs", probs);
  const detail::class_broadcast<T> w(fn, "weight", opts.weight, probs, opts.dim);
  detail::with_view(probs, opts.dim, [&](const detail::samples_view<const T>& p) {
    detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "probs", p, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      detail::check_range<T>(fn, "targets", t, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      detail::write_gradient<T>(fn, grad_out, grad_input, probs.rows(), probs.cols(), opts.dim, opts.reduction,
                                [&](auto j, auto k) {
                                  return w(j, k) * detail::bce_element_grad(detail::at(p, j, k), detail::at(t, j, k));
                                });
    });
  });
}

/// The scalar-seed form: grad_out broadcast to every element (e.g. 1 for the gradient of a mean or sum).
template <class P, class Tg, class Out>
void binary_cross_entropy_backward(typename P::Scalar grad_out, const Eigen::DenseBase<P>& probs,
                                   const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                   const binary_cross_entropy_options<typename P::Scalar>& opts = {}) {
  binary_cross_entropy_backward(Eigen::Matrix<typename P::Scalar, 1, 1>::Constant(grad_out), probs, targets, grad_input,
                                opts);
}

/// torch.nn.functional.binary_cross_entropy_with_logits:
///   w ((1 - t) x + (1 + (pos_weight - 1) t) log(1 + exp(-x))),
/// computed stably for every finite x (±1e30 included). weight and pos_weight broadcast per class
/// (one entry per class along `dim`) or elementwise (the input's shape). Targets are probabilities
/// (multi-label: C independent sigmoids per sample). Returns as binary_cross_entropy.
/// \throws xent::invalid_argument as binary_cross_entropy (targets in [0, 1]; logits are not checked:
///   NaN and ±inf propagate), and for a pos_weight of the wrong shape.
template <class X, class Tg>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, Eigen::Dynamic> binary_cross_entropy_with_logits(
    const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets,
    const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts = {}) {
  using T = typename X::Scalar;
  constexpr const char* fn = "binary_cross_entropy_with_logits";
  detail::check_binary_common<T>(fn, opts.reduction, opts.dim);
  detail::check_not_empty(fn, "logits", logits);
  detail::check_same_shape(fn, "targets", targets, "logits", logits);
  const detail::class_broadcast<T> w(fn, "weight", opts.weight, logits, opts.dim);
  const detail::class_broadcast<T> pw(fn, "pos_weight", opts.pos_weight, logits, opts.dim);
  return detail::with_view(logits, opts.dim, [&](const detail::samples_view<const T>& x) {
    return detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "targets", t, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      return detail::reduce_elementwise<T>(logits.rows(), logits.cols(), opts.dim, opts.reduction, [&](auto j, auto k) {
        return w(j, k) * detail::bce_logits_element(detail::at(x, j, k), detail::at(t, j, k), pw(j, k));
      });
    });
  });
}

/// The gradient of binary_cross_entropy_with_logits w.r.t. the logits, times grad_out, into grad_input;
/// grad_out as in binary_cross_entropy_backward. Formula as torch's:
/// grad_out w ((pos_weight t + 1 - t) sigmoid(x) - pos_weight t), divided by numel for mean.
template <class G, class X, class Tg, class Out>
void binary_cross_entropy_with_logits_backward(const Eigen::DenseBase<G>& grad_out, const Eigen::DenseBase<X>& logits,
                                               const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                               const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts = {}) {
  using T = typename X::Scalar;
  constexpr const char* fn = "binary_cross_entropy_with_logits_backward";
  detail::check_binary_common<T>(fn, opts.reduction, opts.dim);
  detail::check_not_empty(fn, "logits", logits);
  detail::check_same_shape(fn, "targets", targets, "logits", logits);
  const detail::class_broadcast<T> w(fn, "weight", opts.weight, logits, opts.dim);
  const detail::class_broadcast<T> pw(fn, "pos_weight", opts.pos_weight, logits, opts.dim);
  detail::with_view(logits, opts.dim, [&](const detail::samples_view<const T>& x) {
    detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& t) {
      detail::check_range<T>(fn, "targets", t, opts.dim, 0, 1, "must hold probabilities in [0, 1]");
      detail::write_gradient<T>(fn, grad_out, grad_input, logits.rows(), logits.cols(), opts.dim, opts.reduction,
                                [&](auto j, auto k) {
                                  return w(j, k) * detail::bce_logits_element_grad(detail::at(x, j, k),
                                                                                   detail::at(t, j, k), pw(j, k));
                                });
    });
  });
}

/// The scalar-seed form of binary_cross_entropy_with_logits_backward.
template <class X, class Tg, class Out>
void binary_cross_entropy_with_logits_backward(typename X::Scalar grad_out, const Eigen::DenseBase<X>& logits,
                                               const Eigen::DenseBase<Tg>& targets, const Eigen::DenseBase<Out>& grad_input,
                                               const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts = {}) {
  binary_cross_entropy_with_logits_backward(Eigen::Matrix<typename X::Scalar, 1, 1>::Constant(grad_out), logits, targets,
                                            grad_input, opts);
}

}  // namespace xent

#endif
