#ifndef XENT_LOSSES_LOGIT_DIVERGENCE_HPP
#define XENT_LOSSES_LOGIT_DIVERGENCE_HPP

// Divergences between a student's and a teacher's distributions given as logits, P =
// softmax(s / T_s) and Q = softmax(t / T_t): forward KL(Q || P) (distillation's), reverse
// KL(P || Q) (RLHF's KL to a reference policy), the generalised Jensen-Shannon divergence with
// weight beta (Liger-Kernel's LigerJSD), and the total variation distance; per sample, reduced, with
// the gradient w.r.t. the student (and, on request, the teacher) logits. One read of each logit set
// per sample for the KLs, two (the second from cache) for JSD and TVD; no N x C temporaries:
// detail/losses/logit_divergence.hpp on the sweep driver. docs/losses.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/logit_divergence.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>
#include <type_traits>

namespace xent {

/// Which divergence between the student's P and the teacher's Q.
enum class divergence_kind {
  forward_kl,  ///< KL(Q || P) = sum Q log(Q / P): torch's kl_div(log_softmax(s), log_softmax(t), log_target=True)
  reverse_kl,  ///< KL(P || Q) = sum P log(P / Q)
  jsd,         ///< beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q; beta 0 and 1 are the KLs
  tvd          ///< sum |P - Q| / 2
};

/// The kind's name, as written in the code ("forward_kl", ...).
inline const char* to_string(divergence_kind k) {
  switch (k) {
    case divergence_kind::forward_kl: return "forward_kl";
    case divergence_kind::reverse_kl: return "reverse_kl";
    case divergence_kind::jsd: return "jsd";
    case divergence_kind::tvd: return "tvd";
  }
  return "unknown";
}

/// Options of divergence.
struct divergence_options {
  divergence_kind kind = divergence_kind::forward_kl;  ///< Which divergence (forward KL, distillation's, by default).
  /// jsd's weight of the student, in [0, 1]. As Liger-Kernel defines it, beta = 0 is forward KL and
  /// beta = 1 reverse KL (the mixture's divergence itself tends to 0 there: the ends are special).
  double beta = 0.5;
  /// T_s > 0: the student's logits are divided by it (and the teacher's, unless teacher_temperature is set).
  double temperature = 1;
  /// T_t: the teacher's own temperature; 0 means the same as temperature.
  double teacher_temperature = 0;
  /// Multiply the divergence (and so its gradients) by T_s^2, Hinton's scaling of a distillation term.
  bool scale_by_temperature_squared = false;
  /// With targets: samples whose target is ignore_index are left out (0 loss, 0 gradient, not counted).
  long ignore_index = -100;
  /// batchmean (the sum over the samples / the kept samples), sum, mean (the sum / (kept x C), as
  /// torch's kl_div 'mean' over every element), or none (one divergence per sample).
  xent::reduction reduction = xent::reduction::batchmean;
  int dim = 0;          ///< The class axis: 0 = classes down each column (C x N).
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// Per-sample weights, mask and normalizer, as cross_entropy_options (docs/losses.md).
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: the reductions divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

namespace detail {

template <class S, class Te>
Index check_divergence(const char* fn, const Eigen::DenseBase<S>& s, const Eigen::DenseBase<Te>& t,
                       const divergence_options& o) {
  check_logit_type<S>();
  static_assert(std::is_same_v<typename S::Scalar, typename Te::Scalar>, "teacher logits must have the student's scalar type");
  using T = compute_t<typename S::Scalar>;
  check_dim(fn, o.dim);
  check_num_threads(fn, o.num_threads);
  const int k = static_cast<int>(o.kind);
  if (k < 0 || k > 3) throw_invalid(fn, "kind", "must be forward_kl, reverse_kl, jsd or tvd", k);
  if (!(o.beta >= 0 && o.beta <= 1)) throw_invalid(fn, "beta", "must be in [0, 1]", o.beta);
  auto check_temperature = [&](const char* name, double temperature) {
    if (!(temperature > 0 && std::isfinite(temperature))) throw_invalid(fn, name, "must be finite and > 0", temperature);
    if (!(1 / temperature <= double(std::numeric_limits<T>::max())))
      throw_invalid(fn, name,
                    "must be large enough that 1 / temperature is finite in the logits' compute type (at least " +
                        std::to_string(1 / double(std::numeric_limits<T>::max())) + ")",
                    temperature);
  };
  check_temperature("temperature", o.temperature);
  if (o.teacher_temperature != 0) check_temperature("teacher_temperature", o.teacher_temperature);
  const int r = static_cast<int>(o.reduction);
  if (r < 0 || r > 3) {
    if constexpr (has_sequence_lengths_v<std::decay_t<decltype(o)>>) {
      if (!is_sequence_reduction(o.reduction))
        throw_invalid(fn, "reduction", "must be none, mean, sum or batchmean (or sequence_mean, per_sequence)", r);
    } else {
      throw_invalid(fn, "reduction", "must be none, mean, sum or batchmean", r);
    }
  }
  check_not_empty(fn, "student_logits", s);
  check_same_shape(fn, "teacher_logits", t, "student_logits", s);
  return o.dim == 0 ? s.cols() : s.rows();
}

/// The policy's role of the divergence, with the student (a) or the teacher (a) differentiated.
inline divergence_role role_of(const divergence_options& o, bool teacher_differentiated, double& beta) {
  divergence_kind k = o.kind;
  beta = o.beta;
  if (k == divergence_kind::jsd && beta == 0) k = divergence_kind::forward_kl;
  if (k == divergence_kind::jsd && beta == 1) k = divergence_kind::reverse_kl;
  if (teacher_differentiated) {
    if (k == divergence_kind::forward_kl) return divergence_role::kl_p_q;
    if (k == divergence_kind::reverse_kl) return divergence_role::kl_q_p;
    beta = 1 - beta;
  } else {
    if (k == divergence_kind::forward_kl) return divergence_role::kl_q_p;
    if (k == divergence_kind::reverse_kl) return divergence_role::kl_p_q;
  }
  return k == divergence_kind::jsd ? divergence_role::jsd : divergence_role::tvd;
}

/// One sweep with a differentiated (x) and b the other; losses per sample, and when out is given
/// scale(j) times d D_j / d a written into it (with a hard_label, its cross-entropy too: distillation).
template <class Sc, class Skip, class Scale, class Hard = no_hard_label>
void divergence_sweep(divergence_role role, double beta, const samples_view<const Sc>& a, const samples_view<const Sc>& b,
                      double temperature_a, double temperature_b, const Skip& skip, compute_t<Sc>* losses, const Scale& scale,
                      const samples_view<Sc>* out, int threads, const Hard& hard = {}) {
  using T = compute_t<Sc>;
  auto run = [&](auto role_c) {
    constexpr divergence_role R = decltype(role_c)::value;
    const divergence_policy<Sc, R, Skip, Scale, Hard> policy(static_cast<T>(1 / temperature_a), static_cast<T>(1 / temperature_b),
                                                             static_cast<T>(beta), skip, losses, scale, out != nullptr, hard);
    engine::sweep(policy, engine::sweep_views<Sc>{a, &b, out}, threads);
  };
  using R = divergence_role;
  switch (role) {
    case R::kl_q_p: return run(std::integral_constant<R, R::kl_q_p>{});
    case R::kl_p_q: return run(std::integral_constant<R, R::kl_p_q>{});
    case R::jsd: return run(std::integral_constant<R, R::jsd>{});
    case R::tvd: return run(std::integral_constant<R, R::tvd>{});
  }
}

/// The upstream of each sample's divergence: grad_out (a number for the reductions, one per sample
/// for none) over the reduction's denominator, times the T_s^2 factor.
template <class T, class G>
auto divergence_upstream(const char* fn, const divergence_options& o, Index samples, double denominator, double factor,
                         const G& grad_out, const sample_selection& selection) {
  return upstream_of<T>(fn, o.reduction, samples, factor, selection.divisor(o.reduction, denominator), grad_out, selection);
}

/// A buffer that is not there (the overloads without a teacher gradient).
using no_grad_buffer = Eigen::Matrix<float, 0, 0>;

/// Whether sample j is left out: masked, or its target (when there are targets; Y is void
/// without them) is ignore_index.
template <class Y>
auto left_out_of(const Y* targets, long ignore_index, const bool* mask) {
  return [targets, ignore_index, mask](Index j) {
    if (mask && !mask[j]) return true;
    if constexpr (std::is_same_v<Y, void>) {
      (void)targets, (void)ignore_index;
      return false;
    } else {
      return static_cast<long>(targets->derived().coeff(j)) == ignore_index;
    }
  };
}

/// Every divergence call: the checks, the sweeps and the reduction. targets: null, or the index
/// targets whose ignore_index samples are left out; grad_out: null (no gradient), else the
/// upstream; gs, gt: the gradient buffers (an empty one is not wanted).
template <class S, class Te, class Y, class G, class Gs, class Gt>
loss_result<compute_t<typename S::Scalar>> divergence_call(const char* fn, const Eigen::DenseBase<S>& s,
                                                           const Eigen::DenseBase<Te>& t, const Y* targets,
                                                           const divergence_options& o, const G* grad_out,
                                                           const Eigen::DenseBase<Gs>* gs, const Eigen::DenseBase<Gt>* gt) {
  using Sc = typename S::Scalar;
  using T = compute_t<Sc>;
  const Index samples = check_divergence(fn, s, t, o);
  const Index classes = o.dim == 0 ? s.rows() : s.cols();
  constexpr bool has_teacher_buffer = !std::is_same_v<Gt, no_grad_buffer>;
  sample_selection selection = selection_of(fn, o, samples);
  double kept = kept_weight(selection, samples);
  if constexpr (!std::is_same_v<Y, void>) {
    kept = check_index_targets(fn, *targets, samples, classes, o.ignore_index, Eigen::VectorXd(), selection);
    plan_index_sequences(selection, o.reduction, *targets, o.ignore_index, Eigen::VectorXd());
  } else {
    plan_kept_sequences(selection, o.reduction, samples);
  }
  const double denominator = o.reduction == reduction::mean ? kept * double(classes) : kept;
  const bool want_s = grad_out && gs && gs->size() != 0, want_t = has_teacher_buffer && grad_out && gt && gt->size() != 0;
  if (want_s) check_no_overlap(fn, "grad_student_out", *gs, "teacher_logits", t, false);
  if constexpr (has_teacher_buffer) {
    if (want_t) {
      check_no_overlap(fn, "grad_teacher_out", *gt, "student_logits", s, false);
      if (want_s) check_no_overlap(fn, "grad_teacher_out", *gt, "grad_student_out", *gs, false);
    }
  }
  const double ts = o.temperature, tt = o.teacher_temperature != 0 ? o.teacher_temperature : o.temperature;
  const double factor = o.scale_by_temperature_squared ? ts * ts : 1.0;
  const auto skip = left_out_of(targets, o.ignore_index, selection.mask);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(samples), scratch;
  auto no_scale = [](Index) { return T(0); };
  with_view(s, o.dim, [&](const samples_view<const Sc>& vs) {
    with_view(t, o.dim, [&](const samples_view<const Sc>& vt) {
      auto student_pass = [&](const samples_view<Sc>* out) {
        double beta;
        const divergence_role role = role_of(o, false, beta);
        if constexpr (std::is_same_v<G, void>) {
          divergence_sweep(role, beta, vs, vt, ts, tt, skip, losses.data(), no_scale, out, o.num_threads);
        } else {
          if (!out) return divergence_sweep(role, beta, vs, vt, ts, tt, skip, losses.data(), no_scale, out, o.num_threads);
          const auto up = divergence_upstream<T>(fn, o, samples, denominator, factor, *grad_out, selection);
          divergence_sweep(role, beta, vs, vt, ts, tt, skip, losses.data(), up, out, o.num_threads);
        }
      };
      auto teacher_pass = [&](const samples_view<Sc>& out) {
        if constexpr (!std::is_same_v<G, void>) {
          double beta;
          const divergence_role role = role_of(o, true, beta);
          scratch.resize(samples);
          const auto up = divergence_upstream<T>(fn, o, samples, denominator, factor, *grad_out, selection);
          divergence_sweep(role, beta, vt, vs, tt, ts, skip, scratch.data(), up, &out, o.num_threads);
        } else {
          (void)out;
        }
      };
      if constexpr (std::is_same_v<G, void>) {
        student_pass(nullptr);
      } else {
        // The teacher's gradient first when both are wanted (neither may then alias an input); when
        // only the teacher's is, after the student's read (it may then be the teacher's storage).
        auto with_teacher = [&](auto&& then) {
          if constexpr (has_teacher_buffer) {
            with_out_view(fn, "grad_teacher_out", t, *gt, o.dim, [&](const samples_view<Sc>& g) {
              if (want_s) teacher_pass(g);
              then();
              if (!want_s) teacher_pass(g);
            }, !want_s);
          } else {
            then();
          }
        };
        auto with_student = [&] {
          if (want_s)
            with_out_view(fn, "grad_student_out", s, *gs, o.dim, [&](const samples_view<Sc>& g) { student_pass(&g); }, !want_t);
          else
            student_pass(nullptr);
        };
        if (want_t)
          with_teacher(with_student);
        else
          with_student();
      }
    });
  });
  if (o.scale_by_temperature_squared) losses *= static_cast<T>(factor);
  if (o.reduction == reduction::none) return reduce_losses(o.reduction, std::move(losses), kept, selection);
  return reduce_losses(o.reduction, std::move(losses), denominator, selection);
}

}  // namespace detail

/// The divergence between softmax(student_logits / T_s) and softmax(teacher_logits / T_t) per
/// sample, reduced by opts.reduction (batchmean by default). Both logit sets have the same shape
/// (C x N for dim = 0), any floating type (bf16 and half widened to float). -inf logits are masked
/// classes: forward KL is +inf where the teacher has mass on a class the student masks; a sample
/// with NaN or +inf logits, or every class of one set masked, is NaN.
/// \throws xent::invalid_argument for mismatched or empty shapes, beta outside [0, 1], a temperature
/// <= 0 or whose inverse overflows the type, a bad kind, reduction or dim.
template <class S, class Te>
loss_result<detail::compute_t<typename S::Scalar>> divergence(const Eigen::DenseBase<S>& student_logits,
                                                              const Eigen::DenseBase<Te>& teacher_logits,
                                                              const divergence_options& opts = {}) {
  return detail::divergence_call<S, Te, void, void, detail::no_grad_buffer, detail::no_grad_buffer>(
      "divergence", student_logits, teacher_logits, nullptr, opts, nullptr, nullptr, nullptr);
}

/// The divergence over the samples whose target (one class index per sample) is not
/// opts.ignore_index: the others add 0 and are not counted by batchmean and mean.
template <class S, class Te, class Y>
loss_result<detail::compute_t<typename S::Scalar>> divergence(const Eigen::DenseBase<S>& student_logits,
                                                              const Eigen::DenseBase<Te>& teacher_logits,
                                                              const Eigen::DenseBase<Y>& targets, const divergence_options& opts) {
  return detail::divergence_call<S, Te, Eigen::DenseBase<Y>, void, detail::no_grad_buffer, detail::no_grad_buffer>(
      "divergence", student_logits, teacher_logits, &targets, opts, nullptr, nullptr, nullptr);
}

/// divergence and its gradient w.r.t. the student logits in one call, into grad_student_out (for
/// none, the gradient of the sum of the per-sample divergences). It may be the student logits' own
/// storage (in place).
template <class S, class Te, class Gs>
loss_result<detail::compute_t<typename S::Scalar>> divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                        const Eigen::DenseBase<Te>& teacher_logits,
                                                                        const divergence_options& opts,
                                                                        const Eigen::DenseBase<Gs>& grad_student_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::divergence_call<S, Te, void, decltype(ones), Gs, detail::no_grad_buffer>(
        "divergence_with_grad", student_logits, teacher_logits, nullptr, opts, &ones, &grad_student_out, nullptr);
  return detail::divergence_call<S, Te, void, double, Gs, detail::no_grad_buffer>(
      "divergence_with_grad", student_logits, teacher_logits, nullptr, opts, &one, &grad_student_out, nullptr);
}

/// divergence and its gradients w.r.t. both logit sets (an empty 0 x 0 buffer skips one). With both,
/// neither buffer may share memory with an input; with the teacher's alone, it may be the teacher
/// logits' storage.
template <class S, class Te, class Gs, class Gt>
loss_result<detail::compute_t<typename S::Scalar>> divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                        const Eigen::DenseBase<Te>& teacher_logits,
                                                                        const divergence_options& opts,
                                                                        const Eigen::DenseBase<Gs>& grad_student_out,
                                                                        const Eigen::DenseBase<Gt>& grad_teacher_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::divergence_call<S, Te, void, decltype(ones), Gs, Gt>("divergence_with_grad", student_logits, teacher_logits,
                                                                         nullptr, opts, &ones, &grad_student_out, &grad_teacher_out);
  return detail::divergence_call<S, Te, void, double, Gs, Gt>("divergence_with_grad", student_logits, teacher_logits, nullptr,
                                                               opts, &one, &grad_student_out, &grad_teacher_out);
}

/// divergence (with ignored targets) and its gradient w.r.t. the student logits in one call.
template <class S, class Te, class Y, class Gs>
loss_result<detail::compute_t<typename S::Scalar>> divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                        const Eigen::DenseBase<Te>& teacher_logits,
                                                                        const Eigen::DenseBase<Y>& targets,
                                                                        const divergence_options& opts,
                                                                        const Eigen::DenseBase<Gs>& grad_student_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::divergence_call<S, Te, Eigen::DenseBase<Y>, decltype(ones), Gs, detail::no_grad_buffer>(
        "divergence_with_grad", student_logits, teacher_logits, &targets, opts, &ones, &grad_student_out, nullptr);
  return detail::divergence_call<S, Te, Eigen::DenseBase<Y>, double, Gs, detail::no_grad_buffer>(
      "divergence_with_grad", student_logits, teacher_logits, &targets, opts, &one, &grad_student_out, nullptr);
}

/// The gradient of divergence w.r.t. the student logits (and the teacher's, unless grad_teacher_out
/// is empty) times grad_out: a number for batchmean, mean and sum, one per sample for none.
template <class S, class Te, class G, class Gs, class Gt = detail::no_grad_buffer>
void divergence_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                         const G& grad_out, const divergence_options& opts, const Eigen::DenseBase<Gs>& grad_student_out,
                         const Eigen::DenseBase<Gt>& grad_teacher_out = detail::no_grad_buffer()) {
  detail::divergence_call<S, Te, void, G, Gs, Gt>("divergence_backward", student_logits, teacher_logits, nullptr, opts, &grad_out,
                                                  &grad_student_out, &grad_teacher_out);
}

/// divergence_backward over the samples whose target is not opts.ignore_index (the others' gradient is 0).
template <class S, class Te, class Y, class G, class Gs, class Gt = detail::no_grad_buffer>
void divergence_backward(const Eigen::DenseBase<S>& student_logits, const Eigen::DenseBase<Te>& teacher_logits,
                         const Eigen::DenseBase<Y>& targets, const G& grad_out, const divergence_options& opts,
                         const Eigen::DenseBase<Gs>& grad_student_out,
                         const Eigen::DenseBase<Gt>& grad_teacher_out = detail::no_grad_buffer()) {
  detail::divergence_call<S, Te, Eigen::DenseBase<Y>, G, Gs, Gt>("divergence_backward", student_logits, teacher_logits, &targets,
                                                                 opts, &grad_out, &grad_student_out, &grad_teacher_out);
}

}  // namespace xent

#endif
