#ifndef XENT_LOSSES_FOCAL_HPP
#define XENT_LOSSES_FOCAL_HPP

// Focal losses (Lin et al. 2017), forward and backward, on top of the binary and categorical kernels:
//   sigmoid_focal_loss: torchvision.ops.sigmoid_focal_loss (elementwise, multi-label);
//   softmax_focal_loss: the multi-class form -alpha_y (1 - p_y)^gamma log p_y.
// docs/losses.md is the reference.

#include "../detail/engine/view.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/target_probability.hpp"
#include "../core/error.hpp"
#include "../detail/losses/binary.hpp"
#include "binary.hpp"
#include "cross_entropy.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace xent {

/// Options of sigmoid_focal_loss, with torchvision.ops.sigmoid_focal_loss's names and defaults.
struct sigmoid_focal_loss_options {
  /// Weight of the positive term in [0, 1] (1 - alpha for the negative term); negative disables it.
  double alpha = 0.25;
  /// Focusing exponent, >= 0; 0 gives binary_cross_entropy_with_logits (times alpha_t).
  double gamma = 2;
  /// torchvision's default is none; mean averages over every element.
  xent::reduction reduction = xent::reduction::none;
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// The class axis, for sample_weight and mask only (0: a sample is a column of C entries).
  int dim = 0;
  /// Keras's label smoothing, in [0, 1]: each target becomes t (1 - eps) + eps / 2 before the loss
  /// (p_t and alpha_t included, as Keras's BinaryFocalCrossentropy); not in torchvision.
  double label_smoothing = 0;
  /// Per-sample weights, mask and normalizer (docs/losses.md, "Sample weights and masks"); a
  /// sample is the run of C entries along dim. mean divides by C times the kept samples' weight.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

/// Options of softmax_focal_loss.
struct softmax_focal_loss_options {
  /// One alpha per class; empty means 1 for every class.
  Eigen::VectorXd alpha;
  /// Focusing exponent, >= 0; 0 (with alpha empty) gives cross_entropy.
  double gamma = 2;
  /// In [0, 1]: the target becomes q = (1 - eps) onehot + eps / C and the loss
  /// -sum_k alpha_k q_k (1 - p_k)^gamma log p_k (Keras's categorical_focal_crossentropy smooths so).
  double label_smoothing = 0;
  /// Samples whose target equals this contribute nothing (not to the mean's denominator either).
  long ignore_index = -100;
  /// mean divides by the number of non-ignored samples (alpha is a focusing factor, not a weight
  /// of the denominator); every sample ignored gives NaN.
  xent::reduction reduction = xent::reduction::mean;
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// Per-sample weights, mask and normalizer, as cross_entropy_options (docs/losses.md).
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

namespace detail {

inline void check_gamma(const char* fn, double gamma) {
  if (!(gamma >= 0 && std::isfinite(gamma))) throw_invalid(fn, "gamma", "must be finite and >= 0", gamma);
}

/// The sigmoid focal formula of the options, checked.
inline losses::sigmoid_focal sigmoid_focal_of(const char* fn, const sigmoid_focal_loss_options& o) {
  check_gamma(fn, o.gamma);
  if (!(o.alpha <= 1)) throw_invalid(fn, "alpha", "must be <= 1 (negative disables it)", o.alpha);
  return {o.alpha, o.gamma};
}

template <class T>
engine::elementwise_args<T> args_of(const char* fn, const sigmoid_focal_loss_options& o) {
  engine::elementwise_args<T> a{fn, "logits", "targets"};
  a.r = o.reduction;
  a.num_threads = o.num_threads;
  a.dim = o.dim;
  engine::with_selection(a, o);
  a.label_smoothing = o.label_smoothing;
  return a;
}

/// What check_categorical reads, with alpha checked separately (its message names "alpha").
struct categorical_check_view {
  const Eigen::VectorXd& weight;
  xent::reduction reduction;
  int dim;
  static constexpr bool sequence_lengths = true;  // only its presence is read: the loss takes sequences
};

inline const Eigen::VectorXd& no_weight() {
  static const Eigen::VectorXd empty;
  return empty;
}

/// Checks softmax_focal_loss's arguments; the mean's denominator is the kept samples' weight
/// (their count when unweighted).
template <class Derived, class TDerived>
checked_call check_softmax_focal(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<TDerived>& targets,
                                 const softmax_focal_loss_options& o) {
  check_gamma(fn, o.gamma);
  check_num_threads(fn, o.num_threads);
  const Index samples =
      check_categorical(fn, "logits", x, categorical_check_view{no_weight(), o.reduction, o.dim}, o.label_smoothing);
  const Index classes = o.dim == 0 ? x.rows() : x.cols();
  if (o.alpha.size() != 0 && o.alpha.size() != classes)
    throw_invalid(fn, "alpha", "must be empty or have one entry per class (" + std::to_string(classes) + ")",
                  o.alpha.size());
  sample_selection selection = selection_of(fn, o, samples);
  const double denominator = check_index_targets(fn, targets, samples, classes, o.ignore_index, no_weight(), selection);
  plan_index_sequences(selection, o.reduction, targets, o.ignore_index, no_weight());
  return {samples, denominator, selection};
}

/// softmax_focal_loss with label smoothing, one sample at a time in double (every class's p_k
/// enters, so the target-probability sweep does not apply). With q_k = (1 - eps) [k = t] + eps / C,
/// c_k = alpha_k q_k, f(p) = -(1 - p)^gamma log p and h(p) = p f'(p):
///   loss = sum_k c_k f(p_k),   d loss / d x_j = c_j h(p_j) - p_j sum_k c_k h(p_k),
/// the target's entry as c_t h_t (1 - p_t) - p_t sum_{k != t} c_k h_k (no cancellation near p_t = 1).
/// 1 - p as -expm1(log p); h's gamma (1 - p)^(gamma - 1) p log p term is 0 at 1 - p = 0.
template <class S, class TargetAt, class Scale>
void smoothed_focal_losses(const samples_view<const S>& v, const std::vector<double>& alpha, double gamma, double eps,
                           TargetAt&& target_at, compute_t<S>* losses, Scale&& scale, const samples_view<S>* grad,
                           int threads) {
  using T = compute_t<S>;
  const Index C = v.classes;
  parallel_for(v.samples, thread_count(threads, v.samples * C * 8), [&](Index j) {
    const Index t = target_at(j);
    if (t < 0) {  // ignored or masked: never read
      losses[j] = T(0);
      if (grad)
        for (Index k = 0; k < C; ++k) grad->sample(j)[k * grad->class_stride] = S(0);
      return;
    }
    const S* x = v.sample(j);
    auto z = [&](Index k) { return double(static_cast<T>(x[k * v.class_stride])); };
    double m = -std::numeric_limits<double>::infinity();
    for (Index k = 0; k < C; ++k) m = std::max(m, z(k));
    if (!std::isfinite(m)) {  // NaN or +inf somewhere, or every logit -inf: undefined, as the sweep
      losses[j] = std::numeric_limits<T>::quiet_NaN();
      if (grad)
        for (Index k = 0; k < C; ++k) grad->sample(j)[k * grad->class_stride] = S(std::numeric_limits<T>::quiet_NaN());
      return;
    }
    double sum = 0;
    for (Index k = 0; k < C; ++k) sum += std::exp(z(k) - m);
    const double log_sum = std::log(sum), spread = eps / double(C);
    auto c_of = [&](Index k) { return (alpha.empty() ? 1.0 : alpha[std::size_t(k)]) * ((k == t ? 1 - eps : 0.0) + spread); };
    auto h_of = [&](double lp, double om) {
      double focus = 0;  // gamma (1 - p)^(gamma - 1), times the vanishing p log p at 1 - p = 0
      if (gamma != 0 && om > 0) focus = gamma * std::pow(om, gamma - 1);
      else if (gamma == 1) focus = 1;
      return focus * std::exp(lp) * lp - std::pow(om, gamma);
    };
    engine::exact_sum loss;
    double h_target = 0, h_rest = 0;
    for (Index k = 0; k < C; ++k) {
      const double lp = (z(k) - m) - log_sum, om = -std::expm1(lp), c = c_of(k);
      if (c == 0) continue;
      loss.add(-c * std::pow(om, gamma) * lp);
      if (!grad) continue;
      (k == t ? h_target : h_rest) += c * h_of(lp, om);
    }
    losses[j] = static_cast<T>(loss.value());
    if (!grad) return;
    const double up = double(scale(j));
    S* g = grad->sample(j);
    double target_g = 0;
    for (Index k = 0; k < C; ++k) {  // x is read before g is written (g may be x)
      const double lp = (z(k) - m) - log_sum, p = std::exp(lp);
      if (k == t) {
        target_g = up * (h_target * -std::expm1(lp) - p * h_rest);
        continue;
      }
      const double c = c_of(k);
      g[k * grad->class_stride] = S(static_cast<T>(up * ((c == 0 ? 0.0 : c * h_of(lp, -std::expm1(lp))) - p * (h_target + h_rest))));
    }
    g[t * grad->class_stride] = S(static_cast<T>(target_g));
  });
}

/// Runs softmax_focal_loss over the logits: per-sample losses, and the gradient times scale(j)
/// into grad when given.
template <class Derived, class TDerived, class Scale>
Eigen::Matrix<compute_t<typename Derived::Scalar>, Eigen::Dynamic, 1> softmax_focal_losses(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, const softmax_focal_loss_options& o,
    Scale&& scale, const samples_view<typename Derived::Scalar>* grad) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(o.dim == 0 ? logits.cols() : logits.rows());
  const std::vector<T> alpha = weights_in<T>(o.alpha);
  with_view(logits, o.dim, [&](const samples_view<const S>& v) {
    const auto target_at = index_targets(targets, o.ignore_index, selection_in(o).mask);
    if (o.label_smoothing != 0) {
      const std::vector<double> alpha_d(o.alpha.data(), o.alpha.data() + o.alpha.size());
      smoothed_focal_losses(v, alpha_d, o.gamma, o.label_smoothing, target_at, losses.data(), scale, grad, o.num_threads);
      return;
    }
    target_probability_sweep(v, focal_formula<T>{&alpha, static_cast<T>(o.gamma)}, target_at, losses.data(), scale, grad,
                             o.num_threads);
  });
  return losses;
}

}  // namespace detail

/// torchvision.ops.sigmoid_focal_loss: per element
///   alpha_t * BCEWithLogits(x, t) * (1 - p_t)^gamma,  p = sigmoid(x), p_t = p t + (1 - p)(1 - t),
///   alpha_t = alpha t + (1 - alpha)(1 - t) (1 when alpha < 0),
/// with 1 - p_t formed without cancellation (detail/losses/binary.hpp).
/// \returns loss_result: elementwise() for reduction none (torchvision's default), value() for mean
///   (over all elements) and sum.
/// \throws xent::invalid_argument for empty logits, targets of another shape or outside [0, 1], gamma < 0,
///   alpha > 1, reduction batchmean.
template <class X, class Tg>
loss_result<typename X::Scalar> sigmoid_focal_loss(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets,
                                                   const sigmoid_focal_loss_options& opts = {}) {
  constexpr const char* fn = "sigmoid_focal_loss";
  return detail::elementwise_forward(detail::sigmoid_focal_of(fn, opts), detail::args_of<typename X::Scalar>(fn, opts),
                                     logits, targets);
}

/// sigmoid_focal_loss and its gradient w.r.t. the logits in one pass, into grad_logits_out (the
/// logits' shape; it may be the logits themselves). For reduction none, the gradient of the sum.
template <class X, class Tg, class Out>
loss_result<typename X::Scalar> sigmoid_focal_loss_with_grad(const Eigen::DenseBase<X>& logits,
                                                             const Eigen::DenseBase<Tg>& targets,
                                                             const sigmoid_focal_loss_options& opts,
                                                             const Eigen::DenseBase<Out>& grad_logits_out) {
  constexpr const char* fn = "sigmoid_focal_loss_with_grad";
  return detail::elementwise_with_grad(detail::sigmoid_focal_of(fn, opts), detail::args_of<typename X::Scalar>(fn, opts),
                                       "grad_logits_out", logits, targets, grad_logits_out);
}

/// Gradient of sigmoid_focal_loss w.r.t. the logits, times grad_out (a number for mean and sum, the
/// logits' shape for none), into grad_logits_out.
template <class X, class Tg, class G, class Out>
void sigmoid_focal_loss_backward(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets, const G& grad_out,
                                 const sigmoid_focal_loss_options& opts, const Eigen::DenseBase<Out>& grad_logits_out) {
  constexpr const char* fn = "sigmoid_focal_loss_backward";
  detail::elementwise_backward(detail::sigmoid_focal_of(fn, opts), detail::args_of<typename X::Scalar>(fn, opts),
                               "grad_logits_out", logits, targets, grad_out, grad_logits_out);
}

/// Multi-class focal loss of logits (C x N for dim = 0) at class-index targets: per sample
///   -alpha[y] (1 - p_y)^gamma log p_y,  p = softmax(x),
/// 0 for an ignored sample. mean divides by the number of non-ignored samples.
/// \returns loss_result as cross_entropy. \throws xent::invalid_argument on misuse (docs/losses.md).
template <class Derived, class TDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> softmax_focal_loss(const Eigen::DenseBase<Derived>& logits,
                                                                            const Eigen::DenseBase<TDerived>& targets,
                                                                            const softmax_focal_loss_options& opts = {}) {
  using T = detail::compute_t<typename Derived::Scalar>;
  const auto checked = detail::check_softmax_focal("softmax_focal_loss", logits, targets, opts);
  return detail::reduce_losses(opts.reduction,
                               detail::softmax_focal_losses(logits, targets, opts, [](Eigen::Index) { return T(0); },
                                                            static_cast<const detail::samples_view<typename Derived::Scalar>*>(nullptr)),
                               checked.denominator, checked.selection);
}

/// softmax_focal_loss and its gradient w.r.t. the logits in one call, into grad_logits_out (for
/// none, the gradient of the sum of the per-sample losses). It may be the logits' own storage.
template <class Derived, class TDerived, class OutDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> softmax_focal_loss_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, const softmax_focal_loss_options& opts,
    const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "softmax_focal_loss_with_grad";
  const auto checked = detail::check_softmax_focal(fn, logits, targets, opts);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses;
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    losses = detail::softmax_focal_losses(logits, targets, opts,
                                          detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection), &out);
  });
  return detail::reduce_losses(opts.reduction, std::move(losses), checked.denominator, checked.selection);
}

/// Gradient of softmax_focal_loss w.r.t. the logits, times grad_out (a number for mean/sum, one per
/// sample for none), into grad_logits_out. Ignored samples get 0.
template <class Derived, class TDerived, class G, class OutDerived>
void softmax_focal_loss_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                 const G& grad_out, const softmax_focal_loss_options& opts,
                                 const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "softmax_focal_loss_backward";
  const auto checked = detail::check_softmax_focal(fn, logits, targets, opts);
  const auto scale =
      detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    detail::softmax_focal_losses(logits, targets, opts, scale, &out);
  });
}

}  // namespace xent

#endif
