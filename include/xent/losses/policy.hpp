#ifndef XENT_LOSSES_POLICY_HPP
#define XENT_LOSSES_POLICY_HPP

// What a policy-gradient step (REINFORCE, PPO, GRPO: loss = -A log p(target) - beta H) needs of
// the logits: each sample's log-probability of its target and the entropy of its softmax, from one
// read of the logits, and the gradient of any combination of the two in one more pass. The
// formula is detail/losses/policy.hpp, run by the sweep driver. docs/measures.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/policy.hpp"

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

namespace xent {

/// Options of target_log_prob_and_entropy: cross_entropy's names for what they share.
struct log_prob_entropy_options {
  /// Samples whose target equals this are not read: 0 for both values, no gradient, not counted by mean.
  long ignore_index = -100;
  /// none (one value per sample, the default), mean (over the kept samples) or sum.
  xent::reduction reduction = xent::reduction::none;
  /// T > 0: the distribution is softmax(x / T) (1: as given).
  double temperature = 1;
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  /// 0: OpenMP's default; 1: serial. Results do not depend on it.
  int num_threads = 0;
};

/// The two results of target_log_prob_and_entropy, each reduced as the options say (per_sample()
/// for none, value() for mean and sum; denominator(): the kept samples).
template <class T>
struct log_prob_entropy {
  /// log softmax(x / T)[target] of each sample (<= 0; -inf for a masked target).
  loss_result<T> log_prob;
  /// H(softmax(x / T)) of each sample, in nats.
  loss_result<T> entropy;
};

namespace detail {

/// Every check of a target_log_prob_and_entropy call; returns the sample count and the kept samples.
template <class Derived, class TDerived>
std::pair<Eigen::Index, double> check_log_prob_entropy(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                       const Eigen::DenseBase<TDerived>& targets,
                                                       const log_prob_entropy_options& o) {
  check_logit_type<Derived>();
  check_dim(fn, o.dim);
  check_reduction(fn, o.reduction, false);
  check_num_threads(fn, o.num_threads);
  if (!(std::isfinite(o.temperature) && o.temperature > 0))
    throw_invalid(fn, "temperature", "must be finite and > 0", o.temperature);
  check_not_empty(fn, "logits", logits);
  const Eigen::Index samples = o.dim == 0 ? logits.cols() : logits.rows();
  const Eigen::Index classes = o.dim == 0 ? logits.rows() : logits.cols();
  return {samples, check_index_targets(fn, targets, samples, classes, o.ignore_index, Eigen::VectorXd())};
}

/// The upstream gradient of one of the two values, per sample: a number under mean (divided by
/// the kept samples) or sum; under none, a number (the same for every sample) or one per sample.
template <class T, class G>
auto log_prob_entropy_upstream(const char* fn, const char* name, reduction r, Eigen::Index samples, double kept,
                               const G& grad) {
  if constexpr (std::is_arithmetic_v<G>) {
    const T c = static_cast<T>(r == reduction::mean ? double(grad) / kept : double(grad));
    return [c](Eigen::Index) { return c; };
  } else {
    if (r != reduction::none)
      throw_invalid(fn, name, std::string("must be a number for reduction ") + to_string(r) + ", not a vector of size",
                    grad.size());
    if (grad.size() != samples || (grad.rows() != 1 && grad.cols() != 1))
      throw_invalid(fn, name, "must be a number or a vector of one entry per sample (" + std::to_string(samples) + ")",
                    shape_string(grad.rows(), grad.cols()));
    return [&grad](Eigen::Index j) { return static_cast<T>(grad.derived().coeff(j)); };
  }
}

/// The values (when wanted) and, with grad, the gradient of sum_j (a(j) log p_j + b(j) H_j).
template <class S, class TDerived, class A, class B>
std::pair<Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1>, Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1>> run_log_prob_entropy(
    const samples_view<const S>& v, const Eigen::DenseBase<TDerived>& targets, const log_prob_entropy_options& o, A&& a,
    B&& b, const samples_view<S>* grad, bool values) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> log_probs(values ? v.samples : 0), entropies(values ? v.samples : 0);
  auto target_at = index_targets(targets, o.ignore_index);
  const log_prob_entropy_policy<S, decltype(target_at), std::decay_t<A>, std::decay_t<B>> policy(
      static_cast<T>(1.0 / o.temperature), target_at, values ? log_probs.data() : nullptr,
      values ? entropies.data() : nullptr, a, b, grad != nullptr);
  engine::sweep(policy, engine::sweep_views<S>{v, nullptr, grad}, o.num_threads);
  return {std::move(log_probs), std::move(entropies)};
}

template <class T>
log_prob_entropy<T> reduce_log_prob_entropy(reduction r,
                                            std::pair<Eigen::Matrix<T, Eigen::Dynamic, 1>, Eigen::Matrix<T, Eigen::Dynamic, 1>>&& v,
                                            double kept) {
  return {reduce_losses(r, std::move(v.first), kept), reduce_losses(r, std::move(v.second), kept)};
}

}  // namespace detail

/// Each sample's log-probability of its target, log softmax(x / T)[t], and the entropy of its
/// softmax, H(softmax(x / T)) = log S - sum_k e_k (z_k - max) / S (z = x / T, e_k = exp(z_k - max),
/// S = sum_k e_k), from one read of the logits: torch's
/// `F.log_softmax(x / T, 1).gather(1, t)` and `-(p * log p).sum(1)`, without their rounding of p.
///
/// logits: C x N (dim = 0, the default) or N x C (dim = 1), float, double, bf16 or half (widened to
/// float). targets: one signed integer per sample in [0, C) or equal to ignore_index; an ignored
/// sample is not read and gives 0 for both (as cross_entropy's loss), so that the per-sample
/// vectors sum to the sum reduction. A -inf (masked) logit contributes 0 to H; a masked target gives
/// log p = -inf; a sample whose log-sum-exp is not finite (a NaN or +inf logit, every logit -inf)
/// gives NaN for both. mean divides by the kept samples (every sample ignored: NaN, as torch).
/// \throws xent::invalid_argument if logits is empty, targets has not one entry per sample, a
///   target is outside [0, C) and not ignore_index, temperature is not finite and > 0, dim is not
///   0/1, reduction is batchmean or not a reduction, or num_threads < 0.
template <class Derived, class TDerived>
log_prob_entropy<detail::compute_t<typename Derived::Scalar>> target_log_prob_and_entropy(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
    const log_prob_entropy_options& opts = {}) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  const auto checked = detail::check_log_prob_entropy("target_log_prob_and_entropy", logits, targets, opts);
  auto zero = [](Eigen::Index) { return T(0); };
  return detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
    return detail::reduce_log_prob_entropy(
        opts.reduction,
        detail::run_log_prob_entropy(v, targets, opts, zero, zero, static_cast<const detail::samples_view<S>*>(nullptr), true),
        checked.second);
  });
}

/// The gradient w.r.t. the logits of grad_log_prob * L + grad_entropy * H, L and H the two results
/// of target_log_prob_and_entropy under opts (the reduced values, or for none each sample's), into
/// grad_x (the logits' shape; it may be the logits' own storage). Per kept sample, with p =
/// softmax(z), z = x / T, a and b its upstream gradients:
///   d / d x_k = (a ([k = t] - p_k) - b p_k (log p_k + H)) / T,
/// 0 for an ignored sample, NaN for one whose log-sum-exp is not finite. Each of grad_log_prob and
/// grad_entropy is a number (under mean divided by the kept samples) or, for reduction none only, a
/// vector of one entry per sample: an RL loss -A log p - beta H with per-token advantages A is
/// backward(x, t, -A, -beta, opts, g).
/// \throws xent::invalid_argument as target_log_prob_and_entropy, and if a gradient is a vector
///   for mean/sum or of the wrong length, or grad_x has not the logits' shape or overlaps them
///   other than exactly.
template <class Derived, class TDerived, class GL, class GH, class Out>
void target_log_prob_and_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                          const GL& grad_log_prob, const GH& grad_entropy,
                                          const log_prob_entropy_options& opts, const Eigen::DenseBase<Out>& grad_x) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "target_log_prob_and_entropy_backward";
  const auto checked = detail::check_log_prob_entropy(fn, logits, targets, opts);
  const auto a = detail::log_prob_entropy_upstream<T>(fn, "grad_log_prob", opts.reduction, checked.first, checked.second,
                                                      grad_log_prob);
  const auto b =
      detail::log_prob_entropy_upstream<T>(fn, "grad_entropy", opts.reduction, checked.first, checked.second, grad_entropy);
  detail::with_out_view(fn, "grad_x", logits, grad_x, opts.dim, [&](const detail::samples_view<S>& g) {
    detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
      (void)detail::run_log_prob_entropy(v, targets, opts, a, b, &g, false);
    });
  });
}

/// target_log_prob_and_entropy and, in the same two passes, the gradient of
/// log_prob_coefficient * L + entropy_coefficient * H (L, H its results: the reduced values, or
/// for none the sums over the samples) into grad_x (the logits' shape; it may be the logits).
/// RL: coefficients -1 and -beta give the gradient of -sum log p - beta sum H.
/// \throws xent::invalid_argument as target_log_prob_and_entropy_backward.
template <class Derived, class TDerived, class Out>
log_prob_entropy<detail::compute_t<typename Derived::Scalar>> target_log_prob_and_entropy_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, const log_prob_entropy_options& opts,
    double log_prob_coefficient, double entropy_coefficient, const Eigen::DenseBase<Out>& grad_x) {
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "target_log_prob_and_entropy_with_grad";
  const auto checked = detail::check_log_prob_entropy(fn, logits, targets, opts);
  const auto a = detail::log_prob_entropy_upstream<T>(fn, "log_prob_coefficient", opts.reduction, checked.first,
                                                      checked.second, log_prob_coefficient);
  const auto b = detail::log_prob_entropy_upstream<T>(fn, "entropy_coefficient", opts.reduction, checked.first,
                                                      checked.second, entropy_coefficient);
  std::pair<Eigen::Matrix<T, Eigen::Dynamic, 1>, Eigen::Matrix<T, Eigen::Dynamic, 1>> values;
  detail::with_out_view(fn, "grad_x", logits, grad_x, opts.dim, [&](const detail::samples_view<S>& g) {
    detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
      values = detail::run_log_prob_entropy(v, targets, opts, a, b, &g, true);
    });
  });
  return detail::reduce_log_prob_entropy(opts.reduction, std::move(values), checked.second);
}

}  // namespace xent

#endif
