#ifndef XENT_LOSSES_CATEGORICAL_HPP
#define XENT_LOSSES_CATEGORICAL_HPP

// Categorical cross-entropy of probabilities, Keras's from_logits=False (keras.losses.
// categorical_crossentropy and sparse_categorical_crossentropy): each sample's probabilities are
// divided by their sum, clipped to [epsilon, 1 - epsilon] (Keras's backend epsilon, 1e-7), and
//   loss_j = -sum_k y~_k log(clip(p_k / S_j)),  y~ = (1 - eps_s) y + eps_s / C (label smoothing),
// y one-hot for class-index targets; categorical_focal_cross_entropy (Keras's
// categorical_focal_crossentropy, from_logits=False) weighs each term by alpha (1 - v_k)^gamma.
// torch has no such input (its losses take logits or log-probabilities);
// this is what a Keras model's softmax output feeds. docs/losses.md, "categorical_cross_entropy".

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"

#include <Eigen/Core>

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// Options of categorical_cross_entropy: Keras's names and defaults, with xent's class axis,
/// reductions and sample weighting.
struct categorical_cross_entropy_options {
  /// Keras's backend epsilon: the normalised probabilities are clipped to [epsilon, 1 - epsilon], in (0, 0.5).
  double epsilon = 1e-7;
  /// Keras's label smoothing, in [0, 1]: the target becomes (1 - eps) y + eps / C.
  double label_smoothing = 0;
  /// Class-index targets whose value is this are left out (0 loss, 0 gradient, not counted).
  long ignore_index = -100;
  /// none, mean (over the kept samples' weights; Keras's sum_over_batch_size is sum with normalizer N) or sum.
  xent::reduction reduction = xent::reduction::mean;
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// Per-sample weights, mask and normalizer, as cross_entropy_options (docs/losses.md).
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
};

/// Options of categorical_focal_cross_entropy: categorical_cross_entropy's, and Keras's focal
/// alpha and gamma with its defaults.
struct categorical_focal_cross_entropy_options : categorical_cross_entropy_options {
  /// Keras's scalar weight of every class's term, finite.
  double alpha = 0.25;
  /// Focusing exponent, finite and >= 0; 0 with alpha 1 is categorical_cross_entropy.
  double gamma = 2;
};

namespace detail {

/// The focal weighting of categorical_losses: each term -y~_k log v_k times alpha (1 - v_k)^gamma.
struct categorical_focal {
  bool on = false;
  double alpha = 1, gamma = 0;
};

inline categorical_focal focal_of(const char* fn, const categorical_focal_cross_entropy_options& o) {
  if (!std::isfinite(o.alpha)) throw_invalid(fn, "alpha", "must be finite", o.alpha);
  if (!(o.gamma >= 0 && std::isfinite(o.gamma))) throw_invalid(fn, "gamma", "must be finite and >= 0", o.gamma);
  return {true, o.alpha, o.gamma};
}

/// The checks of a categorical_cross_entropy call: options, shapes, and every probability finite
/// and >= 0 with a positive sum per kept sample (Keras does not check; a NaN would spread silently).
template <class P, class Y>
checked_call check_categorical_probs(const char* fn, const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Y>& targets,
                                     const categorical_cross_entropy_options& o) {
  check_real<P>();
  check_dim(fn, o.dim);
  check_reduction(fn, o.reduction, false);
  check_num_threads(fn, o.num_threads);
  if (!(o.epsilon > 0 && o.epsilon < 0.5)) throw_invalid(fn, "epsilon", "must be in (0, 0.5)", o.epsilon);
  if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1))
    throw_invalid(fn, "label_smoothing", "must be in [0, 1]", o.label_smoothing);
  check_not_empty(fn, "probs", probs);
  const Index samples = o.dim == 0 ? probs.cols() : probs.rows(), classes = o.dim == 0 ? probs.rows() : probs.cols();
  const sample_selection selection = selection_of(fn, o, samples);
  double denominator;
  if constexpr (std::is_integral_v<typename Y::Scalar>) {
    denominator = check_index_targets(fn, targets, samples, classes, o.ignore_index, Eigen::VectorXd(), selection);
  } else {
    static_assert(std::is_same_v<typename P::Scalar, typename Y::Scalar>, "probability targets must have probs' scalar type");
    check_same_shape(fn, "targets", targets, "probs", probs);
    if (o.ignore_index != -100)
      throw_invalid(fn, "ignore_index", "is not supported with probability targets and must stay -100", o.ignore_index);
    denominator = kept_weight(selection, samples);
  }
  for (Index j = 0; j < samples; ++j) {
    if (!selection.kept(j)) continue;
    double sum = 0;
    for (Index k = 0; k < classes; ++k) {
      const double p = double(o.dim == 0 ? probs.derived().coeff(k, j) : probs.derived().coeff(j, k));
      if (!(p >= 0 && std::isfinite(p)))
        throw_invalid(fn, "probs", "must hold finite probabilities >= 0",
                      "probs(" + std::to_string(o.dim == 0 ? k : j) + ", " + std::to_string(o.dim == 0 ? j : k) +
                          ") = " + std::to_string(p));
      sum += p;
    }
    if (!(sum > 0)) throw_invalid(fn, "probs", "must have a positive sum in every kept sample", "sample " + std::to_string(j));
  }
  return {samples, denominator, selection};
}

/// Per-sample losses and, with grad, scale(j) times d loss_j / d probs. Per sample: S = sum p
/// (in double), u = p / S, v = clip(u, eps, 1 - eps), loss = -sum y~ log v; the gradient through
/// the clip (1 inside [eps, 1 - eps], 0 outside, as torch.clamp and tf.clip_by_value) and the
/// normalisation: d loss / d p_j = (g_j - sum_k g_k u_k) / S with g_k = -y~_k / v_k. With focal,
/// each term is -y~_k alpha (1 - v_k)^gamma log v_k and
/// g_k = y~_k alpha (gamma (1 - v_k)^(gamma - 1) log v_k - (1 - v_k)^gamma / v_k) (1 - v_k >= epsilon > 0).
template <class T, class TargetAt, class YAt, class Scale>
Eigen::Matrix<T, Eigen::Dynamic, 1> categorical_losses(const samples_view<const T>& v, const categorical_cross_entropy_options& o,
                                                       TargetAt&& target_at, YAt&& y_at, Scale&& scale,
                                                       const samples_view<T>* grad, const categorical_focal& focal = {}) {
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(v.samples);
  const Index C = v.classes;
  const double lo = o.epsilon, hi = 1 - o.epsilon, keep = 1 - o.label_smoothing, spread = o.label_smoothing / double(C);
  parallel_for(v.samples, thread_count(o.num_threads, v.samples * C), [&](Index j) {
    const Index t = target_at(j);
    if (t == -2) {  // left out: never read
      losses(j) = T(0);
      if (grad)
        for (Index k = 0; k < C; ++k) grad->sample(j)[k * grad->class_stride] = T(0);
      return;
    }
    const T* p = v.sample(j);
    double sum = 0;
    for (Index k = 0; k < C; ++k) sum += double(p[k * v.class_stride]);
    engine::exact_sum loss;
    double g_dot_u = 0;
    auto smoothed = [&](Index k) { return (t >= 0 ? (k == t ? keep : 0.0) : keep * double(y_at(j, k))) + spread; };
    // d term / d v_k, without the clip's indicator.
    auto d_term = [&](double y, double clipped) {
      if (!focal.on) return -y / clipped;
      const double om = 1 - clipped, pulled = focal.gamma == 0 ? 0.0 : focal.gamma * std::pow(om, focal.gamma - 1) * std::log(clipped);
      return y * focal.alpha * (pulled - std::pow(om, focal.gamma) / clipped);
    };
    for (Index k = 0; k < C; ++k) {
      const double y = smoothed(k);
      if (y == 0) continue;  // 0 log v = 0 (v >= eps > 0 anyway)
      const double u = double(p[k * v.class_stride]) / sum, clipped = std::min(std::max(u, lo), hi);
      if (focal.on)
        loss.add(-y * focal.alpha * std::pow(1 - clipped, focal.gamma) * std::log(clipped));
      else
        loss.add(-y * std::log(clipped));
      if (u >= lo && u <= hi) g_dot_u += d_term(y, clipped) * u;
    }
    losses(j) = static_cast<T>(loss.value());
    if (!grad) return;
    const double c = double(scale(j));
    T* g = grad->sample(j);
    for (Index k = 0; k < C; ++k) {  // p is read before g is written (g may be p)
      const double u = double(p[k * v.class_stride]) / sum, clipped = std::min(std::max(u, lo), hi);
      const double y = smoothed(k);
      const double gk = (u >= lo && u <= hi && y != 0) ? d_term(y, clipped) : 0.0;
      g[k * grad->class_stride] = static_cast<T>(c * (gk - g_dot_u) / sum);
    }
  });
  return losses;
}

/// Every entry point: the checks, the per-sample pass, the reduction. grad_out: null (forward),
/// else the upstream (a number, or one per sample for none); out: the gradient buffer.
template <class P, class Y, class G, class Out>
loss_result<typename P::Scalar> categorical_call(const char* fn, const Eigen::DenseBase<P>& probs,
                                                 const Eigen::DenseBase<Y>& targets, const categorical_cross_entropy_options& o,
                                                 const G* grad_out, const Eigen::DenseBase<Out>* out,
                                                 const categorical_focal& focal = {}) {
  using T = typename P::Scalar;
  const checked_call checked = check_categorical_probs(fn, probs, targets, o);
  const sample_selection& sel = checked.selection;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses;
  auto run = [&](const samples_view<const T>& v, const samples_view<T>* g, auto&& scale) {
    if constexpr (std::is_integral_v<typename Y::Scalar>) {
      const auto target = index_targets(targets, o.ignore_index);
      auto target_at = [&](Index j) { return !sel.kept(j) ? Index(-2) : target(j) < 0 ? Index(-2) : target(j); };
      losses = categorical_losses(v, o, target_at, [](Index, Index) { return T(0); }, scale, g, focal);
    } else {
      with_view(targets, o.dim, [&](const samples_view<const T>& y) {
        auto target_at = [&](Index j) { return sel.kept(j) ? Index(-1) : Index(-2); };
        auto y_at = [&](Index j, Index k) { return y.sample(j)[k * y.class_stride]; };
        losses = categorical_losses(v, o, target_at, y_at, scale, g, focal);
      });
    }
  };
  with_view(probs, o.dim, [&](const samples_view<const T>& v) {
    if (!out) {
      run(v, nullptr, [](Index) { return T(0); });
      return;
    }
    if constexpr (!std::is_integral_v<typename Y::Scalar>) check_no_overlap(fn, "grad_probs_out", *out, "targets", targets, false);
    with_out_view(fn, "grad_probs_out", probs, *out, o.dim, [&](const samples_view<T>& g) {
      if constexpr (std::is_same_v<G, void>) {
        run(v, &g, seed_scale<T>(o.reduction, checked.denominator, sel));
      } else {
        run(v, &g, grad_scale_of<T>(fn, o.reduction, checked.samples, checked.denominator, *grad_out, sel));
      }
    });
  });
  return reduce_losses(o.reduction, std::move(losses), checked.denominator, sel);
}

}  // namespace detail

/// Keras's categorical (probability targets) or sparse categorical (class-index targets)
/// cross-entropy of probabilities (from_logits=False): per sample -sum_k y~_k log(clip(p_k / S)),
/// S = sum_k p_k, clipped to [epsilon, 1 - epsilon]. probs: C x N (dim = 0) or N x C, float or double,
/// finite and >= 0. \returns loss_result (value() for mean/sum, per_sample() for none).
/// \throws xent::invalid_argument for a negative or non-finite probability, a sample summing to 0,
///   epsilon outside (0, 0.5), and cross_entropy's misuse.
template <class P, class Y>
loss_result<typename P::Scalar> categorical_cross_entropy(const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Y>& targets,
                                                          const categorical_cross_entropy_options& opts = {}) {
  return detail::categorical_call<P, Y, void, P>("categorical_cross_entropy", probs, targets, opts, nullptr, nullptr);
}

/// categorical_cross_entropy and its gradient w.r.t. probs in one call (grad_out = 1; for none, of
/// the sum of the per-sample losses), into grad_probs_out (probs' shape; it may be probs itself).
template <class P, class Y, class Out>
loss_result<typename P::Scalar> categorical_cross_entropy_with_grad(const Eigen::DenseBase<P>& probs,
                                                                    const Eigen::DenseBase<Y>& targets,
                                                                    const categorical_cross_entropy_options& opts,
                                                                    const Eigen::DenseBase<Out>& grad_probs_out) {
  return detail::categorical_call<P, Y, void, Out>("categorical_cross_entropy_with_grad", probs, targets, opts, nullptr,
                                                   &grad_probs_out);
}

/// The gradient of categorical_cross_entropy w.r.t. probs, times grad_out (a number for mean/sum,
/// one per sample for none), into grad_probs_out.
template <class P, class Y, class G, class Out>
void categorical_cross_entropy_backward(const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Y>& targets, const G& grad_out,
                                        const categorical_cross_entropy_options& opts,
                                        const Eigen::DenseBase<Out>& grad_probs_out) {
  (void)detail::categorical_call<P, Y, G, Out>("categorical_cross_entropy_backward", probs, targets, opts, &grad_out,
                                               &grad_probs_out);
}

/// Keras's categorical_focal_crossentropy of probabilities (from_logits=False), probability or
/// class-index targets: per sample -sum_k y~_k alpha (1 - v_k)^gamma log v_k with v = clip(p / S,
/// epsilon, 1 - epsilon) and y~ the label-smoothed target, as categorical_cross_entropy.
/// \returns loss_result as categorical_cross_entropy. \throws xent::invalid_argument as
/// categorical_cross_entropy, and for a non-finite alpha or a gamma < 0 or not finite.
template <class P, class Y>
loss_result<typename P::Scalar> categorical_focal_cross_entropy(const Eigen::DenseBase<P>& probs,
                                                                const Eigen::DenseBase<Y>& targets,
                                                                const categorical_focal_cross_entropy_options& opts = {}) {
  constexpr const char* fn = "categorical_focal_cross_entropy";
  const detail::categorical_focal focal = detail::focal_of(fn, opts);
  return detail::categorical_call<P, Y, void, P>(fn, probs, targets, opts, nullptr, nullptr, focal);
}

/// categorical_focal_cross_entropy and its gradient w.r.t. probs in one call (grad_out = 1; for
/// none, of the sum of the per-sample losses), into grad_probs_out (it may be probs itself).
template <class P, class Y, class Out>
loss_result<typename P::Scalar> categorical_focal_cross_entropy_with_grad(const Eigen::DenseBase<P>& probs,
                                                                          const Eigen::DenseBase<Y>& targets,
                                                                          const categorical_focal_cross_entropy_options& opts,
                                                                          const Eigen::DenseBase<Out>& grad_probs_out) {
  constexpr const char* fn = "categorical_focal_cross_entropy_with_grad";
  const detail::categorical_focal focal = detail::focal_of(fn, opts);
  return detail::categorical_call<P, Y, void, Out>(fn, probs, targets, opts, nullptr, &grad_probs_out, focal);
}

/// The gradient of categorical_focal_cross_entropy w.r.t. probs, times grad_out (a number for
/// mean/sum, one per sample for none), into grad_probs_out.
template <class P, class Y, class G, class Out>
void categorical_focal_cross_entropy_backward(const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Y>& targets,
                                              const G& grad_out, const categorical_focal_cross_entropy_options& opts,
                                              const Eigen::DenseBase<Out>& grad_probs_out) {
  constexpr const char* fn = "categorical_focal_cross_entropy_backward";
  const detail::categorical_focal focal = detail::focal_of(fn, opts);
  (void)detail::categorical_call<P, Y, G, Out>(fn, probs, targets, opts, &grad_out, &grad_probs_out, focal);
}

}  // namespace xent

#endif
