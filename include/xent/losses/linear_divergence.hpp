#ifndef XENT_LOSSES_LINEAR_DIVERGENCE_HPP
#define XENT_LOSSES_LINEAR_DIVERGENCE_HPP

// Fused linear distillation: the divergence between the teacher's softmax(t / T_t) and the
// student's softmax(W^T h / T_s), with the gradients w.r.t. h and W, without the N x V student
// logits (tiled as linear_cross_entropy; detail/linear_divergence_kernel.hpp). Forward and reverse
// KL, generalised JSD(beta) and TVD, against the teacher's logits or a top-k teacher (its k
// classes plus a lumped tail, as topk_divergence). docs/losses.md ("Linear divergence") is the reference.

#include "../core/error.hpp"
#include "../core/reduction.hpp"
#include "../detail/linear_divergence_kernel.hpp"
#include "linear.hpp"
#include "logit_divergence.hpp"
#include "topk_divergence.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// Options of linear_divergence: divergence_options' names and defaults for the divergence,
/// linear_cross_entropy_options' for the weight and the blocking.
struct linear_divergence_options {
  /// forward_kl (distillation's KL(Q || P), the default), reverse_kl (KL(P || Q)), jsd or tvd (as
  /// divergence's; these two read the tiles twice, from the kept block of logits when it fits
  /// max_block_bytes, forward included, else recomputed by one more GEMM).
  divergence_kind kind = divergence_kind::forward_kl;
  /// jsd's weight of the student, in [0, 1]; 0 and 1 are forward and reverse KL, as divergence's.
  double beta = 0.5;
  /// T_s > 0: the student's logits are divided by it (and the teacher's, unless teacher_temperature is set).
  double temperature = 1;
  /// T_t: the teacher's own temperature; 0 means the same as temperature.
  double teacher_temperature = 0;
  /// Multiply the divergence (and so its gradients) by T_s^2, Hinton's scaling of a distillation term.
  bool scale_by_temperature_squared = false;
  /// batchmean (sum / kept samples), sum, mean (sum / (kept x V)) or none, as divergence.
  xent::reduction reduction = xent::reduction::batchmean;
  /// How `weight` is stored: D x V or V x D, deduced from the shapes by default.
  xent::weight_layout weight_layout = xent::weight_layout::deduce;
  /// Classes per tile, as linear_cross_entropy_options (0 chooses).
  Eigen::Index block = 0;
  /// Samples per GEMM, as linear_cross_entropy_options (0 chooses).
  Eigen::Index sample_block = 0;
  /// The logits of one sample block are kept between passes when they fit in this many bytes.
  std::size_t max_block_bytes = std::size_t(256) << 20;
  /// Threads splitting the vocabulary tiles, as linear_cross_entropy_options (0: OpenMP's default).
  int num_threads = 0;
  /// Per-sample weights, as divergence_options. A sample of weight 0 is left out of the GEMMs
  /// (0 loss, 0 gradient, not counted).
  Eigen::VectorXd sample_weight{};
  /// One flag per sample (false: left out of the GEMMs, as a weight of 0); empty: all kept.
  sample_mask mask{};
  /// Given: mean, sum and batchmean divide the weighted sum by it.
  std::optional<double> normalizer = std::nullopt;
};

namespace detail {

inline linear_cross_entropy_options linear_options_of(const linear_divergence_options& o) {
  linear_cross_entropy_options l;
  l.reduction = reduction::sum;  // checked on its own: batchmean is allowed here
  l.weight_layout = o.weight_layout;
  l.block = o.block;
  l.sample_block = o.sample_block;
  l.max_block_bytes = o.max_block_bytes;
  l.num_threads = o.num_threads;
  return l;
}

/// The checks of the options and of hidden and weight, shared by both teachers.
template <class HDerived, class WDerived>
linear_shapes check_linear_divergence(const char* fn, const Eigen::DenseBase<HDerived>& hidden,
                                      const Eigen::DenseBase<WDerived>& weight, const linear_divergence_options& o) {
  using T = accumulation_t<typename HDerived::Scalar>;
  const int k = static_cast<int>(o.kind);
  if (k < 0 || k > 3) throw_invalid(fn, "kind", "must be forward_kl, reverse_kl, jsd or tvd", k);
  if (!(o.beta >= 0 && o.beta <= 1)) throw_invalid(fn, "beta", "must be in [0, 1]", o.beta);
  auto check_temperature = [&](const char* name, double temperature) {
    if (!(temperature > 0 && std::isfinite(temperature))) throw_invalid(fn, name, "must be finite and > 0", temperature);
    if (!(1 / temperature <= double(std::numeric_limits<T>::max())))
      throw_invalid(fn, name, "must be large enough that 1 / temperature is finite in the accumulation type", temperature);
  };
  check_temperature("temperature", o.temperature);
  if (o.teacher_temperature != 0) check_temperature("teacher_temperature", o.teacher_temperature);
  check_reduction(fn, o.reduction, true);
  return check_linear(fn, hidden, weight, linear_options_of(o));
}

template <class HDerived, class WDerived, class TeDerived>
linear_shapes check_linear_divergence(const char* fn, const Eigen::DenseBase<HDerived>& hidden,
                                      const Eigen::DenseBase<WDerived>& weight, const Eigen::DenseBase<TeDerived>& teacher,
                                      const linear_divergence_options& o) {
  static_assert(is_linear_scalar<typename TeDerived::Scalar>,
                "teacher_logits must hold float, double, Eigen::bfloat16 or Eigen::half");
  const linear_shapes s = check_linear_divergence(fn, hidden, weight, o);
  check_not_empty(fn, "teacher_logits", teacher);
  if (teacher.rows() != s.classes || teacher.cols() != s.samples)
    throw_invalid(fn, "teacher_logits", "must be V x N (" + shape_string(s.classes, s.samples) + ") for hidden " +
                                            shape_string(s.hidden_size, s.samples) + " and " +
                                            std::to_string(s.classes) + " classes",
                  shape_string(teacher.rows(), teacher.cols()));
  return s;
}

/// Forward (and, with grad_out, backward) over the kept samples, block after block, with the
/// kernel make(v_by_d, plan, active, training) builds (keep: the forward wants the block's logits
/// kept as training does).
template <class T, class WDerived, class G, class GH, class GW, class Make>
loss_result<T> linear_divergence_run(const char* fn, const linear_shapes& s, const Eigen::DenseBase<WDerived>& weight,
                                     const linear_divergence_options& o, const G* grad_out, GH* grad_hidden_out,
                                     GW* grad_weight_out, bool keep, const Make& make) {
  constexpr bool training = !std::is_same_v<G, void>;
  const sample_selection selection = selection_of(fn, o, s.samples);
  const double kept_w = kept_weight(selection, s.samples);
  const double denominator = o.reduction == reduction::mean ? kept_w * double(s.classes) : kept_w;
  const double factor = o.scale_by_temperature_squared ? o.temperature * o.temperature : 1.0;
  std::vector<Index> active;
  for (Index j = 0; j < s.samples; ++j)
    if (selection.kept(j) && selection.weight_at(j) != 0) active.push_back(j);
  const Index kept = Index(active.size());
  const linear_plan plan = plan_linear<T>(s, kept, linear_options_of(o), training || keep);

  Eigen::Matrix<T, Eigen::Dynamic, 1> losses = Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(s.samples);
  auto run = [&](auto v_by_d, auto& gh, auto& gw, const auto* scale) {
    auto kernel = make(v_by_d, plan, active, training);
    for (Index first = 0; first < kept; first += plan.sample_block) {
      const Index count = std::min(plan.sample_block, kept - first);
      kernel.forward_block(first, count);
      if constexpr (training) {
        auto at = [&](std::size_t k) { return (*scale)(active[k]); };
        kernel.backward_block(first, count, at, first == 0, gh, gw);
      } else {
        (void)gh, (void)gw, (void)scale;
      }
      for (Index k = first; k < first + count; ++k) losses(active[std::size_t(k)]) = kernel.loss(std::size_t(k));
    }
  };
  const serial_gemm_scope serial(plan.threads == 1);
  if constexpr (training) {
    auto& gh = checked_output<T>(fn, "grad_hidden_out", *grad_hidden_out, s.hidden_size, s.samples, "hidden's shape");
    auto& gw = checked_output<T>(fn, "grad_weight_out", *grad_weight_out, weight.rows(), weight.cols(), "weight's shape");
    const auto scale = upstream_of<T>(fn, o.reduction, s.samples, factor, selection.divisor(o.reduction, denominator),
                                      *grad_out, selection);
    gh.setZero();  // left-out samples' columns; the kernel writes the others
    if (kept == 0) gw.setZero();
    if (s.v_by_d)
      run(std::true_type{}, gh, gw, &scale);
    else
      run(std::false_type{}, gh, gw, &scale);
  } else {
    int none = 0;
    const int* no_scale = nullptr;
    if (s.v_by_d)
      run(std::true_type{}, none, none, no_scale);
    else
      run(std::false_type{}, none, none, no_scale);
  }
  if (o.scale_by_temperature_squared) losses *= static_cast<T>(factor);
  if (o.reduction == reduction::none) return reduce_losses(o.reduction, std::move(losses), kept_w, selection);
  return reduce_losses(o.reduction, std::move(losses), denominator, selection);
}

/// Against teacher logits.
template <class HDerived, class WDerived, class TeDerived, class G, class GH, class GW>
loss_result<accumulation_t<typename HDerived::Scalar>> linear_divergence_call(
    const char* fn, const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<TeDerived>& teacher, const linear_divergence_options& o, const G* grad_out, GH* grad_hidden_out,
    GW* grad_weight_out) {
  using T = accumulation_t<typename HDerived::Scalar>;
  const linear_shapes s = check_linear_divergence(fn, hidden, weight, teacher, o);
  // JSD and TVD read each tile twice: the forward keeps the block's logits too when they fit
  // max_block_bytes, rather than recompute them with a second GEMM.
  const bool two_pass = (o.kind == divergence_kind::jsd && o.beta != 0 && o.beta != 1) || o.kind == divergence_kind::tvd;
  linear_divergence_params<T> params;
  divergence_kind kind = o.kind;
  if (kind == divergence_kind::jsd && o.beta == 0) kind = divergence_kind::forward_kl;
  if (kind == divergence_kind::jsd && o.beta == 1) kind = divergence_kind::reverse_kl;
  params.kind = kind == divergence_kind::forward_kl   ? linear_kl::forward
                : kind == divergence_kind::reverse_kl ? linear_kl::reverse
                : kind == divergence_kind::jsd        ? linear_kl::jsd
                                                      : linear_kl::tvd;
  params.beta = static_cast<T>(o.beta);
  params.inv_student = static_cast<T>(1 / o.temperature);
  params.inv_teacher = static_cast<T>(1 / (o.teacher_temperature != 0 ? o.teacher_temperature : o.temperature));
  return linear_divergence_run<T>(
      fn, s, weight, o, grad_out, grad_hidden_out, grad_weight_out, two_pass,
      [&](auto v_by_d, const linear_plan& plan, const std::vector<Index>& active, bool training) {
        return linear_divergence_kernel<T, decltype(v_by_d)::value, WDerived, HDerived, TeDerived>(
            plan, params, weight.derived(), hidden.derived(), teacher.derived(), active, training);
      });
}

/// Against a top-k teacher (k x N, as topk_divergence's for dim = 0).
template <class HDerived, class WDerived, class I, class V, class G, class GH, class GW>
loss_result<accumulation_t<typename HDerived::Scalar>> linear_topk_call(const char* fn, const Eigen::DenseBase<HDerived>& hidden,
                                                                        const Eigen::DenseBase<WDerived>& weight,
                                                                        const topk_teacher<I, V>& teacher,
                                                                        const linear_divergence_options& o, const G* grad_out,
                                                                        GH* grad_hidden_out, GW* grad_weight_out) {
  using T = accumulation_t<typename HDerived::Scalar>;
  static_assert(std::is_integral_v<I> && std::is_signed_v<I>, "teacher indices must be signed integers");
  static_assert(std::is_floating_point_v<V>, "teacher values must be float or double");
  const linear_shapes s = check_linear_divergence(fn, hidden, weight, o);
  const Index k = check_topk_teacher(fn, teacher, s.classes, s.samples, 0);
  const topk_form form = topk_form_of(fn, teacher, k, s.classes, o.kind, o.beta, o.temperature, o.teacher_temperature);
  const T inv_student = static_cast<T>(1 / o.temperature);
  return linear_divergence_run<T>(
      fn, s, weight, o, grad_out, grad_hidden_out, grad_weight_out, false,
      [&](auto v_by_d, const linear_plan& plan, const std::vector<Index>& active, bool training) {
        return linear_topk_kernel<T, decltype(v_by_d)::value, WDerived, HDerived, I, V>(
            plan, form, inv_student, weight.derived(), hidden.derived(), teacher, active, training);
      });
}

}  // namespace detail

/// The divergence (opts.kind: forward or reverse KL, JSD(beta), TVD) between the teacher's softmax(teacher_logits
/// / T_t) and the student's softmax(z / T_s), z = weight^T hidden (D x V weight; weight * hidden
/// for V x D), without the N x V student logits: xent::divergence(z, teacher_logits) with
/// divergence_options' meaning of every option. hidden: D x N (float, double, bfloat16 or half;
/// the last two computed in float), weight as linear_cross_entropy's, teacher_logits: V x N, any
/// of those types.
/// \returns the loss (value() for the reductions, per_sample() for none).
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class HDerived, class WDerived, class TeDerived>
loss_result<detail::accumulation_t<typename HDerived::Scalar>> linear_divergence(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<TeDerived>& teacher_logits, const linear_divergence_options& opts = {}) {
  return detail::linear_divergence_call<HDerived, WDerived, TeDerived, void, int, int>(
      "linear_divergence", hidden, weight, teacher_logits, opts, nullptr, nullptr, nullptr);
}

/// The loss and the gradients of grad_out * loss (grad_out: a number for the reductions, one per
/// sample for none) into grad_hidden_out (D x N; 0 for left-out samples) and grad_weight_out
/// (weight's shape and layout), in the accumulation type. Three GEMMs when a block's logits fit
/// opts.max_block_bytes, four otherwise.
template <class HDerived, class WDerived, class TeDerived, class G, class GHDerived, class GWDerived>
loss_result<detail::accumulation_t<typename HDerived::Scalar>> linear_divergence_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<TeDerived>& teacher_logits, const G& grad_out, const linear_divergence_options& opts,
    const Eigen::DenseBase<GHDerived>& grad_hidden_out, const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  return detail::linear_divergence_call("linear_divergence_with_grad", hidden, weight, teacher_logits, opts, &grad_out,
                                        &grad_hidden_out, &grad_weight_out);
}

/// The gradients of linear_divergence (as linear_divergence_with_grad, without the loss), for a
/// separate backward step.
template <class HDerived, class WDerived, class TeDerived, class G, class GHDerived, class GWDerived>
void linear_divergence_backward(const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
                                const Eigen::DenseBase<TeDerived>& teacher_logits, const G& grad_out,
                                const linear_divergence_options& opts, const Eigen::DenseBase<GHDerived>& grad_hidden_out,
                                const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  detail::linear_divergence_call("linear_divergence_backward", hidden, weight, teacher_logits, opts, &grad_out,
                                 &grad_hidden_out, &grad_weight_out);
}


/// linear_divergence against a top-k teacher: topk_divergence(z, teacher, d) on z = weight^T
/// hidden with d holding opts' divergence options (the student lumped onto the teacher's k classes
/// plus one tail class), without the N x V logits. teacher: k x N indices and values (as
/// topk_divergence's for dim = 0), float or double values.
/// \returns the loss (value() for the reductions, per_sample() for none).
/// \throws xent::invalid_argument as linear_divergence, and as topk_divergence for the teacher
/// (indices out of [0, V) or repeated, k > V, shapes, lse, a teacher temperature other than 1 with a
/// known tail).
template <class HDerived, class WDerived, class I, class V>
loss_result<detail::accumulation_t<typename HDerived::Scalar>> linear_divergence(const Eigen::DenseBase<HDerived>& hidden,
                                                                                 const Eigen::DenseBase<WDerived>& weight,
                                                                                 const topk_teacher<I, V>& teacher,
                                                                                 const linear_divergence_options& opts = {}) {
  return detail::linear_topk_call<HDerived, WDerived, I, V, void, int, int>("linear_divergence", hidden, weight, teacher, opts,
                                                                             nullptr, nullptr, nullptr);
}

/// linear_divergence_with_grad against a top-k teacher: three GEMMs when a block's logits fit
/// opts.max_block_bytes, four otherwise.
template <class HDerived, class WDerived, class I, class V, class G, class GHDerived, class GWDerived>
loss_result<detail::accumulation_t<typename HDerived::Scalar>> linear_divergence_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight, const topk_teacher<I, V>& teacher,
    const G& grad_out, const linear_divergence_options& opts, const Eigen::DenseBase<GHDerived>& grad_hidden_out,
    const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  return detail::linear_topk_call("linear_divergence_with_grad", hidden, weight, teacher, opts, &grad_out, &grad_hidden_out,
                                  &grad_weight_out);
}

/// linear_divergence_backward against a top-k teacher.
template <class HDerived, class WDerived, class I, class V, class G, class GHDerived, class GWDerived>
void linear_divergence_backward(const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
                                const topk_teacher<I, V>& teacher, const G& grad_out, const linear_divergence_options& opts,
                                const Eigen::DenseBase<GHDerived>& grad_hidden_out,
                                const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  detail::linear_topk_call("linear_divergence_backward", hidden, weight, teacher, opts, &grad_out, &grad_hidden_out,
                           &grad_weight_out);
}

}  // namespace xent

#endif
