#ifndef XENT_LOSSES_DISTILL_HPP
#define XENT_LOSSES_DISTILL_HPP

// Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), as the
// common torch recipe
//   soft = F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean') * T * T
//   loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, y)      (mixed form, with hard labels y)
// with the gradient w.r.t. the student logits, in one read of each logit set (no N x C
// temporaries): detail/losses/distill.hpp on the sweep driver. docs/losses.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/distill.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <type_traits>

namespace xent {

/// Options of distillation_loss.
struct distillation_options {
  /// T > 0: both logit sets are divided by it; the soft term is multiplied by T^2 (Hinton's scaling).
  double temperature = 1;
  /// Weight of the soft (teacher) term; the hard-label cross-entropy gets 1 - alpha. In [0, 1].
  /// Must stay 1 for the overloads without hard targets.
  double alpha = 1;
  /// ignore_index of the hard-label cross-entropy (its mean is over the non-ignored samples, as torch).
  long ignore_index = -100;
  /// batchmean (the recipe's: the soft sum over the samples, the hard term's torch mean), sum, or
  /// none (one loss per sample). mean (over samples x classes, kl_div's) is not a distillation loss.
  xent::reduction reduction = xent::reduction::batchmean;
  /// The class axis, as everywhere: 0 = classes down each column (C x N).
  int dim = 0;
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
};

namespace detail {

template <class S, class Te>
Index check_distill(const char* fn, const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t,
                    const distillation_options& o, bool has_targets) {
  check_logit_type<S>();
  static_assert(std::is_same_v<typename S::Scalar, typename Te::Scalar>, "teacher logits must have the student's scalar type");
  using T = compute_t<typename S::Scalar>;
  check_dim(fn, o.dim);
  check_num_threads(fn, o.num_threads);
  if (!(o.temperature > 0 && std::isfinite(o.temperature)))
    throw_invalid(fn, "temperature", "must be finite and > 0", o.temperature);
  if (!(1 / o.temperature <= double(std::numeric_limits<T>::max())))
    throw_invalid(fn, "temperature",
                  "must be large enough that 1 / temperature is finite in the logits' compute type (at least " +
                      std::to_string(1 / double(std::numeric_limits<T>::max())) + ")",
                  o.temperature);
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw_invalid(fn, "alpha", "must be in [0, 1]", o.alpha);
  if (!has_targets && o.alpha != 1)
    throw_invalid(fn, "alpha", "must be 1 without hard targets (pass targets to mix in cross-entropy)", o.alpha);
  const int r = static_cast<int>(o.reduction);
  if (o.reduction != reduction::none && o.reduction != reduction::sum && o.reduction != reduction::batchmean)
    throw_invalid(fn, "reduction", "must be batchmean, sum or none (mean over samples x classes is kl_div's)",
                  r >= 0 && r <= 3 ? std::string(to_string(o.reduction)) : std::to_string(r));
  check_not_empty(fn, "student_logits", s);
  check_same_shape(fn, "teacher_logits", t, "student_logits", s);
  return o.dim == 0 ? s.cols() : s.rows();
}

/// The per-sample parts of a distillation call: T^2 KL_j and (hard targets) CE_j, and when grad is
/// given the gradient of soft_scale(j) T^2 KL_j + hard_scale(j) CE_j written into it.
template <bool Hard, class S, class Te, class TargetAt, class SoftScale, class HardScale>
void distill_parts(const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t, const distillation_options& o,
                   TargetAt&& target_at, Eigen::Matrix<compute_t<typename S::Scalar>, Eigen::Dynamic, 1>& kl,
                   Eigen::Matrix<compute_t<typename S::Scalar>, Eigen::Dynamic, 1>& ce, SoftScale&& soft, HardScale&& hard,
                   const samples_view<typename S::Scalar>* grad) {
  using Sc = typename S::Scalar;
  using T = compute_t<Sc>;
  const Index samples = o.dim == 0 ? s.cols() : s.rows();
  kl.resize(samples);
  ce.resize(Hard ? samples : 0);
  with_view(s, o.dim, [&](const samples_view<const Sc>& vs) {
    with_view(t, o.dim, [&](const samples_view<const Sc>& vt) {
      const distill_policy<Sc, Hard, std::decay_t<TargetAt>, std::decay_t<SoftScale>, std::decay_t<HardScale>> policy(
          static_cast<T>(o.temperature), target_at, kl.data(), Hard ? ce.data() : nullptr, soft, hard, grad != nullptr);
      engine::sweep(policy, engine::sweep_views<Sc>{vs, &vt, grad}, o.num_threads);
    });
  });
  kl *= static_cast<T>(o.temperature * o.temperature);
}

/// The reduced mix: alpha * (soft sum / N) + (1 - alpha) * (hard sum / kept) for batchmean, the
/// plain sum for sum, alpha * soft_j + (1 - alpha) * hard_j per sample for none.
template <class T>
loss_result<T> reduce_distill(const distillation_options& o, Eigen::Matrix<T, Eigen::Dynamic, 1>&& soft,
                              const Eigen::Matrix<T, Eigen::Dynamic, 1>& hard, double kept) {
  const double N = double(soft.size()), a = o.alpha;
  if (o.reduction == reduction::none) {
    if (hard.size()) soft = static_cast<T>(a) * soft + static_cast<T>(1 - a) * hard;
    return loss_result<T>::per_sample_losses(std::move(soft), N);
  }
  const double s = engine::ordered_sum(soft.data(), soft.size());
  const double h = hard.size() ? engine::ordered_sum(hard.data(), hard.size()) : 0.0;
  const double value = o.reduction == reduction::sum ? a * s + (1 - a) * h
                                                     : a * s / N + (hard.size() ? (1 - a) * h / kept : 0.0);
  return loss_result<T>::reduced(o.reduction, static_cast<T>(value), N);
}

/// The per-sample upstream of each term: grad_out times the term's weight and, for batchmean, its
/// denominator (N for the soft term, the kept samples for the hard one).
template <class T, class G>
auto term_scale(const char* fn, const distillation_options& o, Index samples, double term_weight, double denominator,
                const G& grad_out) {
  return upstream_of<T>(fn, o.reduction, samples, term_weight, o.reduction == reduction::batchmean ? denominator : 1.0, grad_out);
}

}  // namespace detail

/// The soft distillation loss: T^2 KL(softmax(t / T) || softmax(s / T)) per sample, reduced by
/// opts.reduction (batchmean by default). student and teacher logits have the same shape (C x N for
/// dim = 0). \throws xent::invalid_argument if T <= 0 (or 1 / T overflows), the shapes differ, the
/// input is empty, dim is not 0/1, the reduction is mean, or opts.alpha != 1 (mixing needs hard targets).
template <class S, class Te>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss(const Eigen::DenseBase<S>& student_logits,
                                                                     const Eigen::DenseBase<Te>& teacher_logits,
                                                                     const distillation_options& opts = {}) {
  using T = detail::compute_t<typename S::Scalar>;
  detail::check_distill("distillation_loss", student_logits, teacher_logits, opts, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> kl, ce;
  auto none = [](Eigen::Index) { return T(0); };
  detail::distill_parts<false>(student_logits, teacher_logits, opts, [](Eigen::Index) { return Eigen::Index(-1); }, kl, ce,
                               none, none, static_cast<const detail::samples_view<typename S::Scalar>*>(nullptr));
  return detail::reduce_distill(opts, std::move(kl), ce, 0.0);
}

/// The mixed loss: alpha * soft + (1 - alpha) * cross_entropy(s, targets) (the cross-entropy at
/// temperature 1, its mean over the samples whose target is not opts.ignore_index).
template <class S, class Te, class Y>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss(const Eigen::DenseBase<S>& student_logits,
                                                                     const Eigen::DenseBase<Te>& teacher_logits,
                                                                     const Eigen::DenseBase<Y>& targets,
                                                                     const distillation_options& opts) {
  using T = detail::compute_t<typename S::Scalar>;
  constexpr const char* fn = "distillation_loss";
  const Eigen::Index samples = detail::check_distill(fn, student_logits, teacher_logits, opts, true);
  const double kept = detail::check_index_targets(fn, targets, samples, opts.dim == 0 ? student_logits.rows() : student_logits.cols(),
                                                  opts.ignore_index, Eigen::VectorXd());
  Eigen::Matrix<T, Eigen::Dynamic, 1> kl, ce;
  auto none = [](Eigen::Index) { return T(0); };
  detail::distill_parts<true>(student_logits, teacher_logits, opts, detail::index_targets(targets, opts.ignore_index), kl, ce,
                              none, none, static_cast<const detail::samples_view<typename S::Scalar>*>(nullptr));
  return detail::reduce_distill(opts, std::move(kl), ce, kept);
}

namespace detail {

template <bool Hard, class S, class Te, class Y, class G, class Out>
loss_result<compute_t<typename S::Scalar>> distill_gradient(const char* fn, const Eigen::DenseBase<S>& s,
                                                            const Eigen::DenseBase<Te>& t, const Y* targets, const G& grad_out,
                                                            const distillation_options& o, const Eigen::DenseBase<Out>& out) {
  using Sc = typename S::Scalar;
  using T = compute_t<Sc>;
  const Index samples = check_distill(fn, s, t, o, Hard);
  double kept = 0;
  if constexpr (Hard) kept = check_index_targets(fn, *targets, samples, o.dim == 0 ? s.rows() : s.cols(), o.ignore_index, Eigen::VectorXd());
  check_no_overlap(fn, "grad_student_out", out, "teacher_logits", t, false);
  const auto soft = term_scale<T>(fn, o, samples, o.alpha, double(samples), grad_out);
  const auto hard = term_scale<T>(fn, o, samples, 1 - o.alpha, kept, grad_out);
  Eigen::Matrix<T, Eigen::Dynamic, 1> kl, ce;
  with_out_view(fn, "grad_student_out", s, out, o.dim, [&](const samples_view<Sc>& g) {
    if constexpr (Hard)
      distill_parts<true>(s, t, o, index_targets(*targets, o.ignore_index), kl, ce, soft, hard, &g);
    else
      distill_parts<false>(s, t, o, [](Index) { return Index(-1); }, kl, ce, soft, hard, &g);
  });
  return reduce_distill(o, std::move(kl), ce, kept);
}

}  // namespace detail

/// distillation_loss (soft form) and its gradient w.r.t. the student logits in one call, into
/// grad_student_out (for none, the gradient of the sum of the per-sample losses). It may be the
/// student logits' own storage.
template <class S, class Te, class Out>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                               const Eigen::DenseBase<Te>& teacher_logits,
                                                                               const distillation_options& opts,
                                                                               const Eigen::DenseBase<Out>& grad_student_out) {
  using T = detail::compute_t<typename S::Scalar>;
  const Eigen::Index samples = opts.dim == 0 ? student_logits.cols() : student_logits.rows();
  if (opts.reduction == reduction::none)
    return detail::distill_gradient<false>("distillation_loss_with_grad", student_logits, teacher_logits,
                                           static_cast<const Eigen::VectorXi*>(nullptr), detail::ones_of<T>{samples}, opts,
                                           grad_student_out);
  return detail::distill_gradient<false>("distillation_loss_with_grad", student_logits, teacher_logits,
                                         static_cast<const Eigen::VectorXi*>(nullptr), 1.0, opts, grad_student_out);
}

/// The mixed distillation_loss and its gradient w.r.t. the student logits in one call.
template <class S, class Te, class Y, class Out>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                               const Eigen::DenseBase<Te>& teacher_logits,
                                                                               const Eigen::DenseBase<Y>& targets,
                                                                               const distillation_options& opts,
                                                                               const Eigen::DenseBase<Out>& grad_student_out) {
  using T = detail::compute_t<typename S::Scalar>;
  const Eigen::Index samples = opts.dim == 0 ? student_logits.cols() : student_logits.rows();
  if (opts.reduction == reduction::none)
    return detail::distill_gradient<true>("distillation_loss_with_grad", student_logits, teacher_logits, &targets,
                                          detail::ones_of<T>{samples}, opts, grad_student_out);
  return detail::distill_gradient<true>("distillation_loss_with_grad", student_logits, teacher_logits, &targets, 1.0, opts,
                                        grad_student_out);
}

/// Gradient of distillation_loss (soft form) w.r.t. the student logits, times grad_out (a number
/// for batchmean and sum, one per sample for none), into grad_student_out:
///   grad_out * T * (softmax(s / T) - softmax(t / T)) (/ N for batchmean).
template <class S, class Te, class G, class Out>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                const G& grad_out, const distillation_options& opts,
                                const Eigen::DenseBase<Out>& grad_student_out) {
  detail::distill_gradient<false>("distillation_loss_backward", student_logits, teacher_logits,
                                  static_cast<const Eigen::VectorXi*>(nullptr), grad_out, opts, grad_student_out);
}

/// Gradient of the mixed distillation_loss w.r.t. the student logits, times grad_out.
template <class S, class Te, class Y, class G, class Out>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                const Eigen::DenseBase<Y>& targets, const G& grad_out, const distillation_options& opts,
                                const Eigen::DenseBase<Out>& grad_student_out) {
  detail::distill_gradient<true>("distillation_loss_backward", student_logits, teacher_logits, &targets, grad_out, opts,
                                 grad_student_out);
}

}  // namespace xent

#endif
