#ifndef XENT_LOSSES_GCE_HPP
#define XENT_LOSSES_GCE_HPP

// Generalized cross-entropy (Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep
// Neural Networks with Noisy Labels"): per sample (1 - p_y^q) / q, p = softmax(logits), q in (0, 1].
// q -> 0 gives cross_entropy, q = 1 the mean absolute error 1 - p_y. The formula is
// detail/losses/target_probability.hpp on the sweep driver. docs/losses.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/target_probability.hpp"
#include "focal.hpp"

#include <Eigen/Core>

#include <cmath>
#include <optional>

namespace xent {

/// Options of generalized_cross_entropy.
struct generalized_cross_entropy_options {
  /// In (0, 1]; the paper's default 0.7.
  double q = 0.7;
  /// Samples whose target equals this contribute nothing (not to the mean's denominator either).
  long ignore_index = -100;
  /// mean divides by the number of non-ignored samples (NaN when all are ignored).
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

template <class Derived, class TDerived>
checked_call check_gce(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<TDerived>& targets,
                       const generalized_cross_entropy_options& o) {
  if (!(o.q > 0 && o.q <= 1)) throw_invalid(fn, "q", "must be in (0, 1]", o.q);
  check_num_threads(fn, o.num_threads);
  const Index samples = check_categorical(fn, "logits", x, categorical_check_view{no_weight(), o.reduction, o.dim}, 0.0);
  sample_selection selection = selection_of(fn, o, samples);
  const double denominator =
      check_index_targets(fn, targets, samples, o.dim == 0 ? x.rows() : x.cols(), o.ignore_index, no_weight(), selection);
  plan_index_sequences(selection, o.reduction, targets, o.ignore_index, no_weight());
  return {samples, denominator, selection};
}

template <class Derived, class TDerived, class Scale>
Eigen::Matrix<compute_t<typename Derived::Scalar>, Eigen::Dynamic, 1> gce_losses(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
    const generalized_cross_entropy_options& o, Scale&& scale, const samples_view<typename Derived::Scalar>* grad) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(o.dim == 0 ? logits.cols() : logits.rows());
  with_view(logits, o.dim, [&](const samples_view<const S>& v) {
    target_probability_sweep(v, gce_formula<T>{static_cast<T>(o.q)}, index_targets(targets, o.ignore_index, selection_in(o).mask), losses.data(),
                             scale, grad, o.num_threads);
  });
  return losses;
}

}  // namespace detail

/// Generalized cross-entropy of logits (C x N for dim = 0) at class-index targets: per sample
/// (1 - p_y^q) / q, 0 for an ignored sample. \returns loss_result as cross_entropy.
/// \throws xent::invalid_argument for q outside (0, 1] and cross_entropy's misuse (empty logits, bad dim,
///   targets out of range or of the wrong count, reduction batchmean).
template <class Derived, class TDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> generalized_cross_entropy(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
    const generalized_cross_entropy_options& opts = {}) {
  using T = detail::compute_t<typename Derived::Scalar>;
  const auto checked = detail::check_gce("generalized_cross_entropy", logits, targets, opts);
  return detail::reduce_losses(opts.reduction,
                               detail::gce_losses(logits, targets, opts, [](Eigen::Index) { return T(0); },
                                                  static_cast<const detail::samples_view<typename Derived::Scalar>*>(nullptr)),
                               checked.denominator, checked.selection);
}

/// generalized_cross_entropy and its gradient w.r.t. the logits in one call, into grad_logits_out
/// (for none, the gradient of the sum of the per-sample losses). It may be the logits' own storage.
template <class Derived, class TDerived, class OutDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> generalized_cross_entropy_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
    const generalized_cross_entropy_options& opts, const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "generalized_cross_entropy_with_grad";
  const auto checked = detail::check_gce(fn, logits, targets, opts);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses;
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    losses = detail::gce_losses(logits, targets, opts,
                                detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection), &out);
  });
  return detail::reduce_losses(opts.reduction, std::move(losses), checked.denominator, checked.selection);
}

/// Gradient of generalized_cross_entropy w.r.t. the logits, times grad_out (a number for mean/sum,
/// one per sample for none), into grad_logits_out. Ignored samples get 0.
template <class Derived, class TDerived, class G, class OutDerived>
void generalized_cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                        const G& grad_out, const generalized_cross_entropy_options& opts,
                                        const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "generalized_cross_entropy_backward";
  const auto checked = detail::check_gce(fn, logits, targets, opts);
  const auto scale =
      detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    detail::gce_losses(logits, targets, opts, scale, &out);
  });
}

}  // namespace xent

#endif
