#ifndef XENT_LOSSES_GCE_HPP
#define XENT_LOSSES_GCE_HPP

// Generalized cross-entropy (Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep
// Neural Networks with Noisy Labels"): per sample (1 - p_y^q) / q, p = softmax(logits), q in (0, 1].
// q -> 0 gives cross_entropy, q = 1 the mean absolute error 1 - p_y. docs/losses.md is the reference.

#include "../detail/categorical_kernel.hpp"
#include "../core/error.hpp"
#include "cross_entropy.hpp"
#include "focal.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <cmath>

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
};

namespace detail {

template <class Derived, class TDerived>
double check_gce(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<TDerived>& targets,
                 const generalized_cross_entropy_options& o, Eigen::Index& samples) {
  if (!(o.q > 0 && o.q <= 1)) throw_invalid(fn, "q", "must be in (0, 1]", o.q);
  samples = check_categorical(fn, "logits", x, categorical_check_view{no_weight(), o.reduction, o.dim}, 0.0);
  return check_index_targets(fn, targets, samples, o.dim == 0 ? x.rows() : x.cols(), o.ignore_index, no_weight());
}

/// p_y^q = exp(q log p_y) and the loss -expm1(q log p_y) / q: no cancellation as q -> 0.
template <class T>
T gce_sample_loss(const samples_view<const T>& v, Index j, Index t, T q) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  return -std::expm1(q * n.log_prob(v.sample(j)[t * v.class_stride])) / q;
}

/// c * d loss_j / d x_k = c p_y^q (p_k - [k == t]).
template <class T>
void gce_sample_grad(const samples_view<const T>& v, Index j, Index t, T q, T c, const samples_view<T>& out) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  T* g = out.sample(j);
  const T f = c * std::exp(q * n.log_prob(x[t * v.class_stride]));
  for (Index k = 0; k < v.classes; ++k) g[k * out.class_stride] = f * (n.prob(x[k * v.class_stride]) - (k == t ? T(1) : T(0)));
}

}  // namespace detail

/// Generalized cross-entropy of logits (C x N for dim = 0) at class-index targets: per sample
/// (1 - p_y^q) / q, 0 for an ignored sample. \returns loss_result as cross_entropy.
/// \throws xent::invalid_argument for q outside (0, 1] and cross_entropy's misuse (empty logits, bad dim,
///   targets out of range or of the wrong count, reduction batchmean).
template <class Derived, class TDerived>
loss_result<typename Derived::Scalar> generalized_cross_entropy(const Eigen::DenseBase<Derived>& logits,
                                                                const Eigen::DenseBase<TDerived>& targets,
                                                                const generalized_cross_entropy_options& opts = {}) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "generalized_cross_entropy";
  Eigen::Index samples = 0;
  const double denominator = detail::check_gce(fn, logits, targets, opts, samples);
  const T q = static_cast<T>(opts.q);
  return detail::index_target_forward(logits, targets, opts.ignore_index, opts.dim, opts.reduction, samples, denominator,
                                      [&](const auto& v, Eigen::Index j, Eigen::Index t) {
                                        return detail::gce_sample_loss(v, j, t, q);
                                      });
}

/// Gradient of generalized_cross_entropy w.r.t. the logits, times grad_out (a number for mean/sum,
/// one per sample for none), into grad_logits_out. Ignored samples get 0.
template <class Derived, class TDerived, class G, class OutDerived>
void generalized_cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                        const G& grad_out, const generalized_cross_entropy_options& opts,
                                        const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "generalized_cross_entropy_backward";
  Eigen::Index samples = 0;
  const double denominator = detail::check_gce(fn, logits, targets, opts, samples);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, samples, denominator, grad_out);
  const T q = static_cast<T>(opts.q);
  detail::index_target_backward(fn, logits, targets, opts.ignore_index, opts.dim, grad_logits_out,
                                [&](const auto& v, Eigen::Index j, Eigen::Index t, const auto& out) {
                                  detail::gce_sample_grad(v, j, t, q, scale(j), out);
                                });
}

}  // namespace xent

#endif
