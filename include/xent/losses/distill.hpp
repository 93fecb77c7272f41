#ifndef XENT_LOSSES_DISTILL_HPP
#define XENT_LOSSES_DISTILL_HPP

// Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), as the
// common torch recipe
//   soft = F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean') * T * T
//   loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, y)      (mixed form, with hard labels y)
// generalised to every divergence of losses/logit_divergence.hpp (forward and reverse KL, JSD(beta),
// TVD), a teacher temperature of its own, sample weights and masks. It runs on divergence's sweep
// policy with the hard-label cross-entropy folded in: one read of each logit set per sample (two
// for JSD and TVD), one write of the gradient, no N x C temporaries. docs/losses.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "logit_divergence.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

namespace xent {

/// Options of distillation_loss.
struct distillation_options {
  /// The soft term's divergence between the student's P and the teacher's Q (divergence_kind):
  /// forward KL(Q || P), Hinton's, by default.
  divergence_kind kind = divergence_kind::forward_kl;
  /// jsd's weight of the student, in [0, 1] (divergence_options::beta).
  double beta = 0.5;
  /// T > 0: the student's logits are divided by it (and the teacher's, unless teacher_temperature is set).
  double temperature = 1;
  /// The teacher's own temperature; 0 means the same as temperature.
  double teacher_temperature = 0;
  /// Multiply the soft term (and its gradient) by temperature^2, Hinton's scaling: gradients of the
  /// size of T = 1's.
  bool scale_by_temperature_squared = true;
  /// Weight of the soft (teacher) term; the hard-label cross-entropy (at T = 1) gets 1 - alpha. In
  /// [0, 1]. Must stay 1 for the overloads without hard targets.
  double alpha = 1;
  /// Samples whose hard target is ignore_index are left out of both terms (0 loss, 0 gradient, not
  /// counted by batchmean).
  long ignore_index = -100;
  /// batchmean (the weighted sum over the kept samples / their weight: the recipe's), sum, or none
  /// (one loss per sample). mean (over samples x classes, kl_div's) is not a distillation loss.
  xent::reduction reduction = xent::reduction::batchmean;
  /// The class axis, as everywhere: 0 = classes down each column (C x N).
  int dim = 0;
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// Per-sample weights, mask and normalizer, as cross_entropy_options (docs/losses.md); they
  /// weigh both terms.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out of both terms, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: the reductions divide the weighted sum by it
};

namespace detail {

/// The divergence options of a distillation call's soft term (the scalar ones: what
/// check_divergence and role_of read).
inline divergence_options soft_term_of(const distillation_options& o) {
  divergence_options d;
  d.kind = o.kind;
  d.beta = o.beta;
  d.temperature = o.temperature;
  d.teacher_temperature = o.teacher_temperature;
  d.scale_by_temperature_squared = o.scale_by_temperature_squared;
  d.ignore_index = o.ignore_index;
  d.reduction = o.reduction;
  d.dim = o.dim;
  d.num_threads = o.num_threads;
  return d;
}

template <class S, class Te>
Index check_distill(const char* fn, const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t,
                    const distillation_options& o, bool has_targets) {
  const int r = static_cast<int>(o.reduction);
  if (o.reduction != reduction::none && o.reduction != reduction::sum && o.reduction != reduction::batchmean)
    throw_invalid(fn, "reduction", "must be batchmean, sum or none (mean over samples x classes is kl_div's)",
                  r >= 0 && r <= 3 ? std::string(to_string(o.reduction)) : std::to_string(r));
  const Index samples = check_divergence(fn, s, t, soft_term_of(o));
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw_invalid(fn, "alpha", "must be in [0, 1]", o.alpha);
  if (!has_targets && o.alpha != 1)
    throw_invalid(fn, "alpha", "must be 1 without hard targets (pass targets to mix in cross-entropy)", o.alpha);
  return samples;
}

/// Every distillation call: the checks, one sweep, the reduction. targets: null or the hard labels;
/// grad_out: null (no gradient) or the upstream; gs: the student's gradient buffer when grad_out is
/// given.
template <class S, class Te, class Y, class G, class Gs>
loss_result<compute_t<typename S::Scalar>> distill_call(const char* fn, const Eigen::DenseBase<S>& s,
                                                        const Eigen::DenseBase<Te>& t, const Y* targets,
                                                        const distillation_options& o, const G* grad_out,
                                                        const Eigen::DenseBase<Gs>* gs) {
  using Sc = typename S::Scalar;
  using T = compute_t<Sc>;
  constexpr bool has_targets = !std::is_same_v<Y, void>;
  const Index samples = check_distill(fn, s, t, o, has_targets);
  const Index classes = o.dim == 0 ? s.rows() : s.cols();
  const sample_selection selection = selection_of(fn, o, samples);
  double kept = kept_weight(selection, samples);
  if constexpr (has_targets)
    kept = check_index_targets(fn, *targets, samples, classes, o.ignore_index, Eigen::VectorXd(), selection);
  if (gs) check_no_overlap(fn, "grad_student_out", *gs, "teacher_logits", t, false);
  const divergence_options d = soft_term_of(o);
  double beta;
  const divergence_role role = role_of(d, false, beta);
  const double ts = o.temperature, tt = o.teacher_temperature != 0 ? o.teacher_temperature : o.temperature;
  const double factor = o.scale_by_temperature_squared ? ts * ts : 1.0;
  // alpha = 1 needs no cross-entropy: the sweep without it (no raw exp-sum) even with targets.
  const bool mixed = has_targets && o.alpha != 1;
  auto skip = [targets, ignore = o.ignore_index, mask = selection.mask](Index j) {
    if (mask && !mask[j]) return true;
    if constexpr (!has_targets) {
      (void)targets, (void)ignore;
      return false;
    } else {
      return static_cast<long>(targets->derived().coeff(j)) == ignore;
    }
  };
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(samples), ce(mixed ? samples : 0);
  auto no_scale = [](Index) { return T(0); };
  with_view(s, o.dim, [&](const samples_view<const Sc>& vs) {
    with_view(t, o.dim, [&](const samples_view<const Sc>& vt) {
      auto sweep = [&](const auto& soft_scale, const auto& hard_scale, const samples_view<Sc>* out) {
        if constexpr (has_targets) {
          if (mixed) {
            const auto target_at = index_targets(*targets, o.ignore_index, selection.mask);
            using label = hard_label<T, std::decay_t<decltype(target_at)>, std::decay_t<decltype(hard_scale)>>;
            return divergence_sweep(role, beta, vs, vt, ts, tt, skip, losses.data(), soft_scale, out, o.num_threads,
                                    label{target_at, hard_scale, ce.data()});
          }
        }
        (void)hard_scale;
        divergence_sweep(role, beta, vs, vt, ts, tt, skip, losses.data(), soft_scale, out, o.num_threads);
      };
      if constexpr (std::is_same_v<G, void>) {
        sweep(no_scale, no_scale, nullptr);
      } else {
        // Each term's upstream: grad_out over the reduction's divisor, times its weight (and T^2).
        const double divisor = selection.divisor(o.reduction, kept);
        const auto soft = upstream_of<T>(fn, o.reduction, samples, o.alpha * factor, divisor, *grad_out, selection);
        const auto hard = upstream_of<T>(fn, o.reduction, samples, 1 - o.alpha, divisor, *grad_out, selection);
        with_out_view(fn, "grad_student_out", s, *gs, o.dim, [&](const samples_view<Sc>& g) { sweep(soft, hard, &g); });
      }
    });
  });
  if (mixed)
    losses = static_cast<T>(o.alpha * factor) * losses + static_cast<T>(1 - o.alpha) * ce;
  else if (factor != 1)
    losses *= static_cast<T>(factor);
  return reduce_losses(o.reduction, std::move(losses), kept, selection);
}

}  // namespace detail

/// The soft distillation loss: per sample T^2 D(P, Q) between P = softmax(s / T) and Q =
/// softmax(t / T_t) (D = opts.kind, forward KL(Q || P) by default; T^2 unless
/// scale_by_temperature_squared is off), reduced by opts.reduction (batchmean by default). student
/// and teacher logits have the same shape (C x N for dim = 0). \throws xent::invalid_argument if a
/// temperature is <= 0 (or its inverse overflows), beta is outside [0, 1], the shapes differ, the
/// input is empty, dim is not 0/1, the reduction is mean, sample_weight or mask have the wrong
/// length, or opts.alpha != 1 (mixing needs hard targets).
template <class S, class Te>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss(const Eigen::DenseBase<S>& student_logits,
                                                                     const Eigen::DenseBase<Te>& teacher_logits,
                                                                     const distillation_options& opts = {}) {
  return detail::distill_call<S, Te, void, void, S>("distillation_loss", student_logits, teacher_logits, nullptr, opts, nullptr,
                                                    nullptr);
}

/// The mixed loss: alpha * soft + (1 - alpha) * cross_entropy(s, targets) (the cross-entropy at
/// temperature 1), both over the samples whose target is not opts.ignore_index (and the mask keeps).
template <class S, class Te, class Y>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss(const Eigen::DenseBase<S>& student_logits,
                                                                     const Eigen::DenseBase<Te>& teacher_logits,
                                                                     const Eigen::DenseBase<Y>& targets,
                                                                     const distillation_options& opts) {
  return detail::distill_call<S, Te, Eigen::DenseBase<Y>, void, S>("distillation_loss", student_logits, teacher_logits, &targets,
                                                                   opts, nullptr, nullptr);
}

/// distillation_loss (soft form) and its gradient w.r.t. the student logits in one call, into
/// grad_student_out (for none, the gradient of the sum of the per-sample losses). It may be the
/// student logits' own storage.
template <class S, class Te, class Out>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                               const Eigen::DenseBase<Te>& teacher_logits,
                                                                               const distillation_options& opts,
                                                                               const Eigen::DenseBase<Out>& grad_student_out) {
  using T = detail::compute_t<typename S::Scalar>;
  constexpr const char* fn = "distillation_loss_with_grad";
  if (opts.reduction == reduction::none) {
    const detail::ones_of<T> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
    return detail::distill_call<S, Te, void, detail::ones_of<T>, Out>(fn, student_logits, teacher_logits, nullptr, opts, &ones,
                                                                      &grad_student_out);
  }
  const double one = 1;
  return detail::distill_call<S, Te, void, double, Out>(fn, student_logits, teacher_logits, nullptr, opts, &one, &grad_student_out);
}

/// The mixed distillation_loss and its gradient w.r.t. the student logits in one call.
template <class S, class Te, class Y, class Out>
loss_result<detail::compute_t<typename S::Scalar>> distillation_loss_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                               const Eigen::DenseBase<Te>& teacher_logits,
                                                                               const Eigen::DenseBase<Y>& targets,
                                                                               const distillation_options& opts,
                                                                               const Eigen::DenseBase<Out>& grad_student_out) {
  using T = detail::compute_t<typename S::Scalar>;
  constexpr const char* fn = "distillation_loss_with_grad";
  if (opts.reduction == reduction::none) {
    const detail::ones_of<T> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
    return detail::distill_call<S, Te, Eigen::DenseBase<Y>, detail::ones_of<T>, Out>(fn, student_logits, teacher_logits, &targets,
                                                                                     opts, &ones, &grad_student_out);
  }
  const double one = 1;
  return detail::distill_call<S, Te, Eigen::DenseBase<Y>, double, Out>(fn, student_logits, teacher_logits, &targets, opts, &one,
                                                                       &grad_student_out);
}

/// Gradient of distillation_loss (soft form) w.r.t. the student logits, times grad_out (a number
/// for batchmean and sum, one per sample for none), into grad_student_out; for forward KL
///   grad_out * T * (softmax(s / T) - softmax(t / T_t)) (times the sample weight, over the kept weight for batchmean).
template <class S, class Te, class G, class Out>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                const G& grad_out, const distillation_options& opts,
                                const Eigen::DenseBase<Out>& grad_student_out) {
  detail::distill_call<S, Te, void, G, Out>("distillation_loss_backward", student_logits, teacher_logits, nullptr, opts, &grad_out,
                                            &grad_student_out);
}

/// Gradient of the mixed distillation_loss w.r.t. the student logits, times grad_out.
template <class S, class Te, class Y, class G, class Out>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                const Eigen::DenseBase<Y>& targets, const G& grad_out, const distillation_options& opts,
                                const Eigen::DenseBase<Out>& grad_student_out) {
  detail::distill_call<S, Te, Eigen::DenseBase<Y>, G, Out>("distillation_loss_backward", student_logits, teacher_logits, &targets,
                                                           opts, &grad_out, &grad_student_out);
}

}  // namespace xent

#endif
