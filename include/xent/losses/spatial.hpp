#ifndef XENT_LOSSES_SPATIAL_HPP
#define XENT_LOSSES_SPATIAL_HPP

// cross_entropy, nll_loss, softmax_focal_loss, softmax_into and log_softmax_into over torch's [N, C, d1, d2, ...]
// layout (segmentation, per-pixel losses): the logits are a spatial_view of the caller's buffer (core/spatial.hpp), read in place;
// probability targets are a second view of the same shape; class-index targets, grad_out for
// reduction none and the per-sample losses have N * D entries in (n, d) order, as torch's
// [N, d1, ...] flattens. Semantics and options as the matrix overloads
// (losses/cross_entropy.hpp); docs/losses.md, "The spatial layout".

#include "../core/spatial.hpp"
#include "../detail/losses/spatial.hpp"
#include "cross_entropy.hpp"
#include "focal.hpp"

#include <Eigen/Core>

#include <string>
#include <type_traits>
#include <vector>

namespace xent {
namespace detail {

/// A stand-in of the view's shape for the matrix overloads' checks: C x (N * D), never read.
template <class S>
auto spatial_shape(const spatial_view<const S>& v) {
  return Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>::Zero(v.classes, v.samples());
}

/// The checks of a spatial view argument (a default-constructed view has a null buffer).
template <class S>
void check_spatial_argument(const char* fn, const char* name, const spatial_view<S>& v) {
  check_spatial_sizes(v.data, v.batch, v.classes, v.spatial, fn, name);
}

/// The class axis of a spatial view is fixed (torch's dim 1 of [N, C, d1, ...]).
inline void check_spatial_dim(const char* fn, int dim) {
  if (dim != 0) throw_invalid(fn, "dim", "must be 0 (the default) with a spatial view: its class axis is fixed", dim);
}

/// An output view: the logits' shape, and either exactly their memory (in place) or apart from it.
template <class S>
void check_spatial_out(const char* fn, const char* name, const spatial_view<S>& out, const spatial_view<const S>& x) {
  check_spatial_argument(fn, name, out);
  if (out.batch != x.batch || out.classes != x.classes || out.spatial != x.spatial)
    throw_invalid(fn, name,
                  "must have the logits' shape [" + std::to_string(x.batch) + ", " + std::to_string(x.classes) + ", " +
                      std::to_string(x.spatial) + "]",
                  "[" + std::to_string(out.batch) + ", " + std::to_string(out.classes) + ", " + std::to_string(out.spatial) + "]");
  const S* o = out.data;
  if (o != x.data && o < x.data + x.size() && x.data < o + out.size())
    throw_invalid(fn, name, "must be the logits' own memory exactly or not overlap it", "a partial overlap");
}

template <class S, class TDerived, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> spatial_index_losses(const spatial_view<const S>& x,
                                                                    const Eigen::DenseBase<TDerived>& targets,
                                                                    const cross_entropy_options& opts, const Scale& scale,
                                                                    const spatial_view<S>* grad,
                                                                    Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1>* lse) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(x.samples());
  if (lse) lse->resize(x.samples());
  const index_ce_setup<T> setup(opts, x.classes, 0.0);
  spatial_cross_entropy(x, setup.st, opts.num_threads, index_targets(targets, opts.ignore_index, selection_in(opts).mask),
                        losses.data(), lse ? lse->data() : nullptr, scale, grad);
  return losses;
}

template <class S, class TDerived>
checked_call check_spatial_cross_entropy(const char* fn, const spatial_view<const S>& x,
                                         const Eigen::DenseBase<TDerived>& targets, const cross_entropy_options& opts) {
  check_spatial_argument(fn, "logits", x);
  check_spatial_dim(fn, opts.dim);
  return check_index_cross_entropy(fn, spatial_shape(x), targets, opts);
}

template <class S, class TDerived>
checked_call check_spatial_nll(const char* fn, const spatial_view<const S>& x, const Eigen::DenseBase<TDerived>& targets,
                               const nll_loss_options& opts) {
  check_spatial_argument(fn, "log_probs", x);
  check_spatial_dim(fn, opts.dim);
  return check_nll(fn, spatial_shape(x), targets, opts);
}

/// nll_loss of a spatial view: -w[t] * log_probs[t] per sample (0 when ignored), with a gradient
/// -w[t] * scale(j) at the target and 0 elsewhere.
template <class T, class TDerived, class Scale>
Eigen::Matrix<T, Eigen::Dynamic, 1> spatial_nll_losses(const spatial_view<const T>& x, const Eigen::DenseBase<TDerived>& targets,
                                                       const nll_loss_options& opts, const Scale& scale,
                                                       const spatial_view<T>* grad) {
  const auto target_at = index_targets(targets, opts.ignore_index, selection_in(opts).mask);
  const std::vector<T> weight = weights_in<T>(opts.weight);
  const Index C = x.classes, D = x.spatial;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(x.samples());
  parallel_for(x.batch, thread_count(opts.num_threads, x.size()), [&](Index n) {
    const Index j0 = n * D;
    for (Index d = 0; d < D; ++d) {
      const Index t = target_at(j0 + d);
      losses(j0 + d) = t < 0 ? T(0) : -(weight.empty() ? T(1) : weight[std::size_t(t)]) * x.at(n, t, d);
    }
    if (!grad) return;
    // After every read of the block: the gradient may be the input's memory.
    for (Index k = 0; k < C * D; ++k) grad->data[n * C * D + k] = T(0);
    for (Index d = 0; d < D; ++d) {
      const Index t = target_at(j0 + d);
      if (t >= 0) grad->at(n, t, d) = -(weight.empty() ? T(1) : weight[std::size_t(t)]) * scale(j0 + d);
    }
  });
  return losses;
}

/// Probability targets: a spatial view of the logits' shape, apart from an output's memory.
template <class S>
void check_spatial_targets(const char* fn, const spatial_view<const S>& y, const spatial_view<const S>& x) {
  check_spatial_argument(fn, "targets", y);
  if (y.batch != x.batch || y.classes != x.classes || y.spatial != x.spatial)
    throw_invalid(fn, "targets",
                  "must have the logits' shape [" + std::to_string(x.batch) + ", " + std::to_string(x.classes) + ", " +
                      std::to_string(x.spatial) + "] (probability targets)",
                  "[" + std::to_string(y.batch) + ", " + std::to_string(y.classes) + ", " + std::to_string(y.spatial) + "]");
}

/// An output must not share memory with the targets (it may be the logits' own, check_spatial_out).
template <class S>
void check_spatial_out_targets(const char* fn, const char* name, const spatial_view<S>& out, const spatial_view<const S>& y) {
  const S* o = out.data;
  if (o < y.data + y.size() && y.data < o + out.size())
    throw_invalid(fn, name, "must not overlap targets", "memory shared with targets");
}

template <class S>
checked_call check_spatial_prob_cross_entropy(const char* fn, const spatial_view<const S>& x, const spatial_view<const S>& y,
                                              const cross_entropy_options& opts) {
  check_spatial_argument(fn, "logits", x);
  check_spatial_targets(fn, y, x);
  check_spatial_dim(fn, opts.dim);
  return check_prob_cross_entropy(fn, spatial_shape(x), spatial_shape(y), opts);
}

template <class S, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> spatial_prob_losses(const spatial_view<const S>& x, const spatial_view<const S>& y,
                                                                   const cross_entropy_options& opts, const Scale& scale,
                                                                   const spatial_view<S>* grad) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(x.samples());
  const std::vector<T> weight = weights_in<T>(opts.weight);
  spatial_prob_cross_entropy(x, y, weight.empty() ? nullptr : weight.data(), static_cast<T>(opts.label_smoothing), opts.safe,
                             selection_in(opts).mask, opts.num_threads, losses.data(), scale, grad);
  return losses;
}

/// softmax_focal_loss of a spatial view: losses (N * D, (n, d) order; 0 when ignored) and with
/// grad (the logits' shape, possibly their memory) the gradient times scale(j). alpha: one per
/// class or empty; eps: label smoothing, whose every-class form (smoothed_focal_losses) runs
/// through the driver's per-sample loop on views of the same memory, as bf16 / half and the
/// ragged ends do (target_probability_sweep).
template <class S, class TargetAt, class ScaleAt>
void spatial_softmax_focal(const spatial_view<const S>& x, const std::vector<compute_t<S>>& alpha, double gamma, double eps,
                           int requested_threads, const TargetAt& target_at, compute_t<S>* losses, const ScaleAt& scale,
                           const spatial_view<S>* grad) {
  using T = compute_t<S>;
  const Index C = x.classes, D = x.spatial;
  const focal_formula<T> f{&alpha, static_cast<T>(gamma)};
  const std::vector<double> alpha_d(alpha.begin(), alpha.end());
  auto through_driver = [&](Index n, Index d0, Index len, int threads) {
    const Index offset = n * D + d0;
    const samples_view<const S> v = D == 1 ? samples_view<const S>{x.data + n * C, len, C, 1, C} : spatial_block(x, n, d0, len);
    const samples_view<S> gv = !grad ? samples_view<S>{}
                               : D == 1 ? samples_view<S>{grad->data + n * C, len, C, 1, C}
                                        : spatial_block(*grad, n, d0, len);
    auto local_target = [&](Index j) { return target_at(offset + j); };
    auto local_scale = [&](Index j) { return scale(offset + j); };
    if (eps != 0)
      smoothed_focal_losses(v, alpha_d, gamma, eps, local_target, losses + offset, local_scale, grad ? &gv : nullptr, threads);
    else
      target_probability_sweep(v, f, local_target, losses + offset, local_scale, grad ? &gv : nullptr, threads);
  };
  // D = 1 is an [N, C] matrix, classes contiguous: the driver's own layout.
  if (D == 1) {
    through_driver(0, 0, x.batch, requested_threads);
    return;
  }
  spatial_packets(
      x, requested_threads, eps == 0,
      [&](const auto* xp, Index j0, Index offset) {
        return spatial_focal_lanes(xp, C, D, j0, f, target_at, losses, scale, grad ? grad->data + offset : nullptr);
      },
      through_driver);
}

template <class S, class TDerived>
checked_call check_spatial_focal(const char* fn, const spatial_view<const S>& x, const Eigen::DenseBase<TDerived>& targets,
                                 const softmax_focal_loss_options& opts) {
  check_spatial_argument(fn, "logits", x);
  check_spatial_dim(fn, opts.dim);
  return check_softmax_focal(fn, spatial_shape(x), targets, opts);
}

template <class S, class TDerived, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> spatial_focal_losses(const spatial_view<const S>& x,
                                                                    const Eigen::DenseBase<TDerived>& targets,
                                                                    const softmax_focal_loss_options& opts, const Scale& scale,
                                                                    const spatial_view<S>* grad) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(x.samples());
  spatial_softmax_focal(x, weights_in<T>(opts.alpha), opts.gamma, opts.label_smoothing, opts.num_threads,
                        index_targets(targets, opts.ignore_index, selection_in(opts).mask), losses.data(), scale, grad);
  return losses;
}

template <bool Log, class S, class G>
void spatial_normalize_into(const char* fn, const spatial_view<S>& logits, const spatial_view<G>& out, int dim, int num_threads) {
  using R = std::remove_const_t<S>;
  static_assert(std::is_same_v<R, G>, "out must have x's scalar type");
  check_real<Eigen::Matrix<R, Eigen::Dynamic, Eigen::Dynamic>>();
  const spatial_view<const R> x = logits;
  check_spatial_argument(fn, "x", x);
  check_spatial_dim(fn, dim);
  check_num_threads(fn, num_threads);
  check_spatial_out(fn, "out", out, x);
  spatial_normalize<Log>(x, out, num_threads);
}

}  // namespace detail

/// Cross-entropy over torch's [N, C, d1, ...] layout with class-index targets:
/// torch.nn.functional.cross_entropy on an [N, C, d1, ...] tensor, every option of the matrix
/// overload (dim must stay 0). logits: xent::spatial(ptr, N, C, D), float, double, bf16 or half.
/// targets: N * D integers in (n, d) order. Per-sample losses (reduction none): N * D, same order.
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class S, class TDerived, std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<std::remove_const_t<S>>> cross_entropy(const spatial_view<S>& logits,
                                                                     const Eigen::DenseBase<TDerived>& targets,
                                                                     const cross_entropy_options& opts = {}) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  constexpr const char* fn = "cross_entropy";
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_cross_entropy(fn, x, targets, opts);
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
  auto result = detail::reduce_losses(
      opts.reduction,
      detail::spatial_index_losses(x, targets, opts, [](Eigen::Index) { return T(0); },
                                   static_cast<const spatial_view<R>*>(nullptr), opts.return_lse ? &lse : nullptr),
      checked.denominator, checked.selection);
  return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
}

/// Forward and gradient in one call over the spatial layout: returns what cross_entropy returns
/// and writes d loss / d logits into grad_logits_out (a writable spatial view of the logits' shape;
/// it may be the logits' own memory, not a part of it).
template <class S, class TDerived, class G,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_const_v<G>, int> = 0>
loss_result<detail::compute_t<G>> cross_entropy_with_grad(const spatial_view<S>& logits, const Eigen::DenseBase<TDerived>& targets,
                                                          const cross_entropy_options& opts,
                                                          const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "cross_entropy_with_grad";
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_cross_entropy(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
  auto result = detail::reduce_losses(
      opts.reduction,
      detail::spatial_index_losses(x, targets, opts, detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                   &grad_logits_out, opts.return_lse ? &lse : nullptr),
      checked.denominator, checked.selection);
  return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
}

/// Gradient of the spatial cross_entropy with respect to the logits, times grad_out (a number for
/// mean/sum, N * D entries for none), written into grad_logits_out.
template <class S, class TDerived, class GradOut, class G,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_const_v<G>, int> = 0>
void cross_entropy_backward(const spatial_view<S>& logits, const Eigen::DenseBase<TDerived>& targets, const GradOut& grad_out,
                            const cross_entropy_options& opts, const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "cross_entropy_backward";
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_cross_entropy(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  (void)detail::spatial_index_losses(x, targets, opts, scale, &grad_logits_out, nullptr);
}

/// Cross-entropy over torch's [N, C, d1, ...] layout with probability targets: torch's
/// F.cross_entropy with float targets of the logits' shape [N, C, d1, ...]. targets: a spatial view
/// of that shape and scalar type; per sample -sum_k log_softmax(x)_k ((1 - eps) y_k + eps / C) w_k,
/// mean over the sample count (N * D), as the matrix overload. Options as the matrix overload
/// (dim must stay 0; no ignore_index, softcap, z-loss, return_lse or excluded classes).
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class S, class Y>
loss_result<detail::compute_t<std::remove_const_t<S>>> cross_entropy(const spatial_view<S>& logits, const spatial_view<Y>& targets,
                                                                     const cross_entropy_options& opts = {}) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, std::remove_const_t<Y>>, "probability targets must have the logits' scalar type");
  const spatial_view<const R> x = logits, y = targets;
  const auto checked = detail::check_spatial_prob_cross_entropy("cross_entropy", x, y, opts);
  return detail::reduce_losses(opts.reduction,
                               detail::spatial_prob_losses(x, y, opts, [](Eigen::Index) { return T(0); },
                                                           static_cast<const spatial_view<R>*>(nullptr)),
                               checked.denominator, checked.selection);
}

/// Forward and gradient in one call over the spatial layout with probability targets: returns
/// what cross_entropy returns and writes d loss / d logits into grad_logits_out (the logits' shape;
/// it may be the logits' own memory, never the targets').
template <class S, class Y, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
loss_result<detail::compute_t<G>> cross_entropy_with_grad(const spatial_view<S>& logits, const spatial_view<Y>& targets,
                                                          const cross_entropy_options& opts,
                                                          const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, std::remove_const_t<Y>>, "probability targets must have the logits' scalar type");
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "cross_entropy_with_grad";
  const spatial_view<const R> x = logits, y = targets;
  const auto checked = detail::check_spatial_prob_cross_entropy(fn, x, y, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  detail::check_spatial_out_targets(fn, "grad_logits_out", grad_logits_out, y);
  return detail::reduce_losses(
      opts.reduction,
      detail::spatial_prob_losses(x, y, opts, detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                  &grad_logits_out),
      checked.denominator, checked.selection);
}

/// Gradient of the spatial cross_entropy with probability targets with respect to the logits,
/// times grad_out (a number for mean/sum, N * D entries for none), into grad_logits_out.
template <class S, class Y, class GradOut, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
void cross_entropy_backward(const spatial_view<S>& logits, const spatial_view<Y>& targets, const GradOut& grad_out,
                            const cross_entropy_options& opts, const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, std::remove_const_t<Y>>, "probability targets must have the logits' scalar type");
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "cross_entropy_backward";
  const spatial_view<const R> x = logits, y = targets;
  const auto checked = detail::check_spatial_prob_cross_entropy(fn, x, y, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  detail::check_spatial_out_targets(fn, "grad_logits_out", grad_logits_out, y);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  (void)detail::spatial_prob_losses(x, y, opts, scale, &grad_logits_out);
}

/// softmax_focal_loss over torch's [N, C, d1, ...] layout: per pixel -alpha[y] (1 - p_y)^gamma log p_y,
/// p = softmax over the class axis, every option of the matrix overload (losses/focal.hpp; dim must
/// stay 0). logits: xent::spatial(ptr, N, C, D), float, double, bf16 or half. targets: N * D class
/// indices in (n, d) order; per-sample losses (reduction none): N * D, same order.
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class S, class TDerived, std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<std::remove_const_t<S>>> softmax_focal_loss(const spatial_view<S>& logits,
                                                                          const Eigen::DenseBase<TDerived>& targets,
                                                                          const softmax_focal_loss_options& opts = {}) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_focal("softmax_focal_loss", x, targets, opts);
  return detail::reduce_losses(opts.reduction,
                               detail::spatial_focal_losses(x, targets, opts, [](Eigen::Index) { return T(0); },
                                                            static_cast<const spatial_view<R>*>(nullptr)),
                               checked.denominator, checked.selection);
}

/// The spatial softmax_focal_loss and its gradient in one call, into grad_logits_out (a writable
/// view of the logits' shape; it may be the logits' own memory, not a part of it). For none, the
/// gradient of the sum of the per-pixel losses.
template <class S, class TDerived, class G,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_const_v<G>, int> = 0>
loss_result<detail::compute_t<G>> softmax_focal_loss_with_grad(const spatial_view<S>& logits,
                                                               const Eigen::DenseBase<TDerived>& targets,
                                                               const softmax_focal_loss_options& opts,
                                                               const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "softmax_focal_loss_with_grad";
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_focal(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  return detail::reduce_losses(
      opts.reduction,
      detail::spatial_focal_losses(x, targets, opts, detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                   &grad_logits_out),
      checked.denominator, checked.selection);
}

/// Gradient of the spatial softmax_focal_loss with respect to the logits, times grad_out (a number
/// for mean/sum, N * D entries for none), into grad_logits_out. Ignored pixels get 0.
template <class S, class TDerived, class GradOut, class G,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_const_v<G>, int> = 0>
void softmax_focal_loss_backward(const spatial_view<S>& logits, const Eigen::DenseBase<TDerived>& targets,
                                 const GradOut& grad_out, const softmax_focal_loss_options& opts,
                                 const spatial_view<G>& grad_logits_out) {
  using R = std::remove_const_t<S>;
  using T = detail::compute_t<R>;
  static_assert(std::is_same_v<R, G>, "the gradient buffer must have the logits' scalar type");
  constexpr const char* fn = "softmax_focal_loss_backward";
  const spatial_view<const R> x = logits;
  const auto checked = detail::check_spatial_focal(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_logits_out", grad_logits_out, x);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  (void)detail::spatial_focal_losses(x, targets, opts, scale, &grad_logits_out);
}

/// softmax over the class axis of an [N, C, D] spatial view, torch's F.softmax(x, dim=1) on
/// [N, C, d1, ...], into out (a writable view of x's shape and scalar type: x's own memory, in
/// place, or apart from it). As the matrix softmax_into: masked (-inf) logits give exactly 0, a
/// pixel whose log-sum-exp is not finite is all NaN. dim must stay 0 (the view's class axis).
/// \throws xent::invalid_argument for a default view, a dim other than 0, num_threads < 0, or an
/// out of another shape or partly overlapping x.
template <class S, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
void softmax_into(const spatial_view<S>& x, const spatial_view<G>& out, int dim = 0, int num_threads = 0) {
  detail::spatial_normalize_into<false>("softmax_into", x, out, dim, num_threads);
}

/// log_softmax over the class axis of a spatial view, (x - max) - log(sum exp(x - max)) per pixel,
/// into out; masked (-inf) logits give -inf. See softmax_into.
template <class S, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
void log_softmax_into(const spatial_view<S>& x, const spatial_view<G>& out, int dim = 0, int num_threads = 0) {
  detail::spatial_normalize_into<true>("log_softmax_into", x, out, dim, num_threads);
}

/// nll_loss over the spatial layout: log_probs an [N, C, D] spatial view (float or double),
/// targets N * D class indices in (n, d) order; torch.nn.functional.nll_loss on [N, C, d1, ...].
template <class S, class TDerived>
loss_result<std::remove_const_t<S>> nll_loss(const spatial_view<S>& log_probs, const Eigen::DenseBase<TDerived>& targets,
                                             const nll_loss_options& opts = {}) {
  using T = std::remove_const_t<S>;
  const spatial_view<const T> x = log_probs;
  const auto checked = detail::check_spatial_nll("nll_loss", x, targets, opts);
  return detail::reduce_losses(opts.reduction,
                               detail::spatial_nll_losses(x, targets, opts, [](Eigen::Index) { return T(0); },
                                                          static_cast<const spatial_view<T>*>(nullptr)),
                               checked.denominator, checked.selection);
}

/// nll_loss and its gradient in one call over the spatial layout (grad may be log_probs' memory).
template <class S, class TDerived, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
loss_result<G> nll_loss_with_grad(const spatial_view<S>& log_probs, const Eigen::DenseBase<TDerived>& targets,
                                  const nll_loss_options& opts, const spatial_view<G>& grad_log_probs_out) {
  using T = std::remove_const_t<S>;
  static_assert(std::is_same_v<T, G>, "the gradient buffer must have the input's scalar type");
  constexpr const char* fn = "nll_loss_with_grad";
  const spatial_view<const T> x = log_probs;
  const auto checked = detail::check_spatial_nll(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_log_probs_out", grad_log_probs_out, x);
  return detail::reduce_losses(
      opts.reduction,
      detail::spatial_nll_losses(x, targets, opts, detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                 &grad_log_probs_out),
      checked.denominator, checked.selection);
}

/// Gradient of the spatial nll_loss, times grad_out (a number for mean/sum, N * D entries for none).
template <class S, class TDerived, class GradOut, class G, std::enable_if_t<!std::is_const_v<G>, int> = 0>
void nll_loss_backward(const spatial_view<S>& log_probs, const Eigen::DenseBase<TDerived>& targets, const GradOut& grad_out,
                       const nll_loss_options& opts, const spatial_view<G>& grad_log_probs_out) {
  using T = std::remove_const_t<S>;
  static_assert(std::is_same_v<T, G>, "the gradient buffer must have the input's scalar type");
  constexpr const char* fn = "nll_loss_backward";
  const spatial_view<const T> x = log_probs;
  const auto checked = detail::check_spatial_nll(fn, x, targets, opts);
  detail::check_spatial_out(fn, "grad_log_probs_out", grad_log_probs_out, x);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  (void)detail::spatial_nll_losses(x, targets, opts, scale, &grad_log_probs_out);
}

}  // namespace xent

#endif
