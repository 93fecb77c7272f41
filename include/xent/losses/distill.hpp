#ifndef XENT_LOSSES_DISTILL_HPP
#define XENT_LOSSES_DISTILL_HPP

// Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), as the
// common torch recipe
//   soft = F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean') * T * T
//   loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, y)      (mixed form, with hard labels y)
// with the gradient w.r.t. the student logits. docs/losses.md is the reference.

#include "../detail/categorical_kernel.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/pointwise.hpp"
#include "../core/error.hpp"
#include "cross_entropy.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <cmath>
#include <type_traits>

namespace xent {

/// Options of distillation_loss.
struct distillation_options {
  /// Weight of the soft (teacher) term; the hard-label cross-entropy gets 1 - alpha. In [0, 1].
  /// Must stay 1 for the overloads without hard targets.
  double alpha = 1;
  /// ignore_index of the hard-label cross-entropy (mean over the non-ignored samples, as torch).
  long ignore_index = -100;
  /// The class axis, as everywhere: 0 = classes down each column (C x N).
  int dim = 0;
};

namespace detail {

template <class S, class Te>
Index check_distill(const char* fn, const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t, double temperature,
                    const distillation_options& o, bool has_targets) {
  check_real<S>();
  static_assert(std::is_same_v<typename S::Scalar, typename Te::Scalar>, "teacher logits must have the student's scalar type");
  check_dim(fn, o.dim);
  if (!(temperature > 0 && std::isfinite(temperature))) throw_invalid(fn, "T", "must be finite and > 0", temperature);
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw_invalid(fn, "alpha", "must be in [0, 1]", o.alpha);
  if (!has_targets && o.alpha != 1)
    throw_invalid(fn, "alpha", "must be 1 without hard targets (pass targets to mix in cross-entropy)", o.alpha);
  check_not_empty(fn, "student_logits", s);
  check_same_shape(fn, "teacher_logits", t, "student_logits", s);
  return o.dim == 0 ? s.cols() : s.rows();
}

/// KL(softmax(t / T) || softmax(s / T)) of sample j, from the logits already divided by T.
/// Terms with a zero teacher probability are 0 (torch's xlogy(target, target) - target * input).
template <class T>
T distill_sample_kl(const samples_view<const T>& s, const samples_view<const T>& t, Index j) {
  const sample_normalizer<T> ns(lse_partial_of_sample(s, j)), nt(lse_partial_of_sample(t, j));
  const T* sj = s.sample(j);
  const T* tj = t.sample(j);
  T kl = 0;
  for (Index k = 0; k < s.classes; ++k) {
    const T pt = nt.prob(tj[k * t.class_stride]);
    if (pt == T(0)) continue;
    kl += pt * (nt.log_prob(tj[k * t.class_stride]) - ns.log_prob(sj[k * s.class_stride]));
  }
  return kl;
}

template <class S, class F>
decltype(auto) with_scaled(const Eigen::DenseBase<S>& x, double temperature, F&& f) {
  using T = typename S::Scalar;
  const typename S::PlainObject scaled = x.derived() / static_cast<T>(temperature);
  return f(scaled);
}

}  // namespace detail

/// The soft distillation loss: KL(softmax(t / T) || softmax(s / T)) summed over samples, divided by
/// the sample count (batchmean) and multiplied by T^2. student and teacher logits have the same shape
/// (C x N for dim = 0). \throws xent::invalid_argument if T <= 0 (or not finite), the shapes differ,
/// the input is empty, dim is not 0/1, or opts.alpha != 1 (mixing needs hard targets).
template <class S, class Te>
typename S::Scalar distillation_loss(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                     double T, const distillation_options& opts = {}) {
  using Sc = typename S::Scalar;
  constexpr const char* fn = "distillation_loss";
  const Eigen::Index samples = detail::check_distill(fn, student_logits, teacher_logits, T, opts, false);
  return detail::with_scaled(student_logits, T, [&](const auto& s) {
    return detail::with_scaled(teacher_logits, T, [&](const auto& t) {
      const auto vs = detail::view_of(s, opts.dim);
      const auto vt = detail::view_of(t, opts.dim);
      double total = 0;
      for (Eigen::Index j = 0; j < samples; ++j) total += double(detail::distill_sample_kl<Sc>(vs, vt, j));
      return static_cast<Sc>(total / double(samples) * T * T);
    });
  });
}

/// The mixed loss: alpha * distillation_loss(s, t, T) + (1 - alpha) * cross_entropy(s, targets)
/// (cross_entropy with reduction mean and opts.ignore_index, at temperature 1).
template <class S, class Te, class Y>
typename S::Scalar distillation_loss(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                     const Eigen::DenseBase<Y>& targets, double T, const distillation_options& opts) {
  using Sc = typename S::Scalar;
  constexpr const char* fn = "distillation_loss";
  detail::check_distill(fn, student_logits, teacher_logits, T, opts, true);
  distillation_options soft = opts;
  soft.alpha = 1;
  cross_entropy_options ce;
  ce.ignore_index = opts.ignore_index;
  ce.dim = opts.dim;
  const Sc hard = cross_entropy(student_logits, targets, ce).value();
  const Sc kd = distillation_loss(student_logits, teacher_logits, T, soft);
  return static_cast<Sc>(opts.alpha) * kd + static_cast<Sc>(1 - opts.alpha) * hard;
}

namespace detail {

/// grad_out * alpha * T * (softmax(s / T) - softmax(t / T)) / N into out (assigned, not added).
template <class S, class Te, class OutDerived>
void distill_soft_grad(const char* fn, const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t, double temperature,
                       double c, int dim, Index samples, const Eigen::DenseBase<OutDerived>& out) {
  using Sc = typename S::Scalar;
  const Sc f = static_cast<Sc>(c * temperature / double(samples));
  with_out_view(fn, "grad_student_out", s, out, dim, [&](const samples_view<Sc>& o) {
    with_scaled(s, temperature, [&](const auto& ss) {
      with_scaled(t, temperature, [&](const auto& ts) {
        const auto vs = view_of(ss, dim);
        const auto vt = view_of(ts, dim);
        for (Index j = 0; j < samples; ++j) {
          const sample_normalizer<Sc> ns(lse_partial_of_sample(samples_view<const Sc>(vs), j));
          const sample_normalizer<Sc> nt(lse_partial_of_sample(samples_view<const Sc>(vt), j));
          for (Index k = 0; k < vs.classes; ++k)
            o.sample(j)[k * o.class_stride] =
                f * (ns.prob(vs.sample(j)[k * vs.class_stride]) - nt.prob(vt.sample(j)[k * vt.class_stride]));
        }
        return 0;
      });
      return 0;
    });
  });
}

}  // namespace detail

/// Gradient of distillation_loss (soft form) w.r.t. the student logits, times grad_out:
///   grad_out * T * (softmax(s / T) - softmax(t / T)) / N, into grad_student_out (the logits' shape).
template <class S, class Te, class OutDerived>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                double T, typename S::Scalar grad_out, const distillation_options& opts,
                                const Eigen::DenseBase<OutDerived>& grad_student_out) {
  constexpr const char* fn = "distillation_loss_backward";
  const Eigen::Index samples = detail::check_distill(fn, student_logits, teacher_logits, T, opts, false);
  detail::distill_soft_grad(fn, student_logits, teacher_logits, T, double(grad_out), opts.dim, samples, grad_student_out);
}

/// Gradient of the mixed distillation_loss w.r.t. the student logits, times grad_out.
template <class S, class Te, class Y, class OutDerived>
void distillation_loss_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                                const Eigen::DenseBase<Y>& targets, double T, typename S::Scalar grad_out,
                                const distillation_options& opts, const Eigen::DenseBase<OutDerived>& grad_student_out) {
  using Sc = typename S::Scalar;
  constexpr const char* fn = "distillation_loss_backward";
  const Eigen::Index samples = detail::check_distill(fn, student_logits, teacher_logits, T, opts, true);
  cross_entropy_options ce;
  ce.ignore_index = opts.ignore_index;
  ce.dim = opts.dim;
  typename S::PlainObject hard(student_logits.rows(), student_logits.cols());
  cross_entropy_backward(student_logits, targets, static_cast<Sc>(1 - opts.alpha) * grad_out, ce, hard);
  typename S::PlainObject soft(student_logits.rows(), student_logits.cols());
  detail::distill_soft_grad(fn, student_logits, teacher_logits, T, opts.alpha * double(grad_out), opts.dim, samples, soft);
  detail::check_same_shape(fn, "grad_student_out", grad_student_out, "student_logits", student_logits);
  const_cast<OutDerived&>(grad_student_out.derived()) = soft + hard;
}

}  // namespace xent

#endif
