#ifndef XENT_LOSSES_BINARY_HPP
#define XENT_LOSSES_BINARY_HPP

// Binary (and multi-label) cross-entropy with torch 1.13's definitions (aten/src/ATen/native/Loss.cpp).
// Every entry of the input is an independent Bernoulli prediction; the class axis (`dim`, see
// logsumexp.hpp) only says how a per-class weight / pos_weight broadcasts, as torch broadcasts a
// [C] tensor over [N, C]. The formulas are detail/losses/binary.hpp, run by the elementwise driver;
// docs/binary.md is the reference.

#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/elementwise.hpp"
#include "../detail/losses/binary.hpp"

#include <Eigen/Core>

#include <optional>
#include <vector>

namespace xent {

/// Options of binary_cross_entropy, with torch's names and defaults.
template <class T>
struct binary_cross_entropy_options {
  /// Rescales each element's loss: empty (none), one entry per class, or the input's shape.
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weight;
  xent::reduction reduction = xent::reduction::mean;  ///< none, mean (over all elements) or sum
  int dim = 0;                                        ///< the class axis, for a per-class weight
  int num_threads = 0;  ///< 0: OpenMP's default; 1: serial. Results do not depend on it.
  /// Keras's label smoothing, in [0, 1]: each target becomes t (1 - eps) + eps / 2 (not in torch).
  double label_smoothing = 0;
  /// Per-sample weights, mask and normalizer (docs/losses.md, "Sample weights and masks"); a
  /// sample is the run of C entries along dim. mean divides by C times the kept samples' weight.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

/// Options of binary_cross_entropy_with_logits, with torch's names and defaults.
template <class T>
struct binary_cross_entropy_with_logits_options {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> weight;      ///< as binary_cross_entropy_options::weight
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> pos_weight;  ///< weight of the positive term; same broadcast
  /// none, mean (over all elements) or sum, as binary_cross_entropy_options::reduction.
  xent::reduction reduction = xent::reduction::mean;
  /// The class axis, for a per-class weight or pos_weight.
  int dim = 0;
  /// 0: OpenMP's default; 1: serial. Results do not depend on it.
  int num_threads = 0;
  /// Keras's label smoothing, in [0, 1]: each target becomes t (1 - eps) + eps / 2 (not in torch).
  double label_smoothing = 0;
  /// Per-sample weights, mask and normalizer (docs/losses.md, "Sample weights and masks"); a
  /// sample is the run of C entries along dim. mean divides by C times the kept samples' weight.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

namespace detail {

template <class T>
engine::elementwise_args<T> args_of(const char* fn, const binary_cross_entropy_options<T>& o) {
  engine::elementwise_args<T> a{fn, "probs", "targets"};
  a.r = o.reduction;
  a.dim = o.dim;
  a.num_threads = o.num_threads;
  a.weight = &o.weight;
  engine::with_selection(a, o);
  a.label_smoothing = o.label_smoothing;
  return a;
}

template <class T>
engine::elementwise_args<T> args_of(const char* fn, const binary_cross_entropy_with_logits_options<T>& o) {
  engine::elementwise_args<T> a{fn, "logits", "targets"};
  a.r = o.reduction;
  a.dim = o.dim;
  a.num_threads = o.num_threads;
  a.weight = &o.weight;
  a.extra = &o.pos_weight;
  a.extra_name = "pos_weight";
  engine::with_selection(a, o);
  a.label_smoothing = o.label_smoothing;
  return a;
}

/// f(formula), the formula label-smoothed when the call asks for it.
template <class F, class T, class Run>
decltype(auto) with_smoothing(const F& f, const engine::elementwise_args<T>& a, Run&& run) {
  if constexpr (losses::is_label_smoothable<F>) {
    if (a.label_smoothing != 0) return run(losses::label_smoothed<F>(f, a.label_smoothing));
  }
  return run(f);
}

/// The three entry points of an elementwise loss, in one place: forward, forward + gradient, backward.
template <class F, class T, class X, class Tg>
loss_result<T> elementwise_forward(const F& f, const engine::elementwise_args<T>& a, const Eigen::DenseBase<X>& x,
                                   const Eigen::DenseBase<Tg>& t) {
  engine::check_elementwise(a, x, t);
  return with_smoothing(f, a, [&](const auto& g) { return engine::elementwise(g, a, x, t, true); });
}

template <class F, class T, class X, class Tg, class Out>
loss_result<T> elementwise_with_grad(const F& f, const engine::elementwise_args<T>& a, const char* out_name,
                                     const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Tg>& t,
                                     const Eigen::DenseBase<Out>& grad) {
  engine::check_elementwise(a, x, t);
  engine::check_gradient_buffer(a, out_name, x, t, grad);
  // The gradient of what is returned: of the mean (sum, batchmean), or of the sum of the losses for none.
  const reduction r = a.r == reduction::none ? reduction::sum : a.r;
  const auto plan = engine::elementwise_sequences(a, a.dim == 0 ? x.cols() : x.rows());
  const auto up = engine::upstream_of<T>(a.function, T(1), r, x.rows(), x.cols(),
                                         engine::elementwise_divisor(a, r, engine::elementwise_denominator(a, x.rows(), x.cols())),
                                         plan.get(), a.dim);
  return with_smoothing(f, a, [&](const auto& g) { return engine::elementwise(g, a, x, t, true, &up, &grad); });
}

template <class F, class T, class X, class Tg, class G, class Out>
void elementwise_backward(const F& f, const engine::elementwise_args<T>& a, const char* out_name,
                          const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Tg>& t, const G& grad_out,
                          const Eigen::DenseBase<Out>& grad) {
  engine::check_elementwise(a, x, t);
  engine::check_gradient_buffer(a, out_name, x, t, grad);
  if constexpr (!std::is_arithmetic_v<G>) check_no_overlap(a.function, out_name, grad, "grad_out", grad_out, false);
  const auto plan = engine::elementwise_sequences(a, a.dim == 0 ? x.cols() : x.rows());
  const auto up = engine::upstream_of<T>(a.function, grad_out, a.r, x.rows(), x.cols(),
                                         engine::elementwise_divisor(a, a.r, engine::elementwise_denominator(a, x.rows(), x.cols())),
                                         plan.get(), a.dim);
  with_smoothing(f, a, [&](const auto& g) { engine::elementwise(g, a, x, t, false, &up, &grad); });
}

}  // namespace detail

/// torch.nn.functional.binary_cross_entropy: -w (t log p + (1 - t) log(1 - p)), each log clamped at
/// -100 as in torch, p and t of the same shape (C x N for dim = 0, any layout).
/// \returns loss_result: value() for mean (over all elements) and sum, elementwise() for none.
/// \throws xent::invalid_argument if the input is empty, targets' shape differs, a probability or
///   target is outside [0, 1] or not finite, the weight has the wrong shape, dim is not 0/1, or
///   reduction is batchmean.
template <class P, class Tg>
loss_result<typename P::Scalar> binary_cross_entropy(const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Tg>& targets,
                                                     const binary_cross_entropy_options<typename P::Scalar>& opts = {}) {
  return detail::elementwise_forward(detail::losses::bce{}, detail::args_of("binary_cross_entropy", opts), probs, targets);
}

/// binary_cross_entropy and its gradient w.r.t. probs in one pass: returns what
/// binary_cross_entropy returns and writes d loss / d probs into grad_probs_out (for reduction none,
/// the gradient of the sum of the losses). grad_probs_out: the input's shape; it may be probs itself.
template <class P, class Tg, class Out>
loss_result<typename P::Scalar> binary_cross_entropy_with_grad(const Eigen::DenseBase<P>& probs,
                                                               const Eigen::DenseBase<Tg>& targets,
                                                               const binary_cross_entropy_options<typename P::Scalar>& opts,
                                                               const Eigen::DenseBase<Out>& grad_probs_out) {
  return detail::elementwise_with_grad(detail::losses::bce{}, detail::args_of("binary_cross_entropy_with_grad", opts),
                                       "grad_probs_out", probs, targets, grad_probs_out);
}

/// The gradient of binary_cross_entropy w.r.t. probs, times grad_out (a number for mean and sum,
/// the input's shape for none), into grad_probs_out. torch's formula:
/// grad_out w (p - t) / max(p (1 - p), 1e-12), divided by numel for mean.
template <class P, class Tg, class G, class Out>
void binary_cross_entropy_backward(const Eigen::DenseBase<P>& probs, const Eigen::DenseBase<Tg>& targets, const G& grad_out,
                                   const binary_cross_entropy_options<typename P::Scalar>& opts,
                                   const Eigen::DenseBase<Out>& grad_probs_out) {
  detail::elementwise_backward(detail::losses::bce{}, detail::args_of("binary_cross_entropy_backward", opts),
                               "grad_probs_out", probs, targets, grad_out, grad_probs_out);
}

/// torch.nn.functional.binary_cross_entropy_with_logits:
///   w ((1 - t) softplus(x) + pos_weight t softplus(-x)),
/// torch's function, computed without cancellation for every finite x (+-1e30 included): within a
/// few ulp of the exact value over the whole range (tests/test_binary.cpp). weight and pos_weight
/// broadcast per class (one entry per class along `dim`) or elementwise (the input's shape).
/// Targets are probabilities (multi-label: C independent sigmoids per sample).
/// \returns loss_result as binary_cross_entropy.
/// \throws xent::invalid_argument as binary_cross_entropy (targets in [0, 1]; logits are not checked:
///   NaN and +-inf propagate), and for a pos_weight of the wrong shape.
template <class X, class Tg>
loss_result<typename X::Scalar> binary_cross_entropy_with_logits(
    const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets,
    const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts = {}) {
  return detail::elementwise_forward(detail::losses::bce_with_logits{},
                                     detail::args_of("binary_cross_entropy_with_logits", opts), logits, targets);
}

/// binary_cross_entropy_with_logits and its gradient w.r.t. the logits in one pass, into
/// grad_logits_out (the input's shape; it may be the logits themselves).
template <class X, class Tg, class Out>
loss_result<typename X::Scalar> binary_cross_entropy_with_logits_with_grad(
    const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets,
    const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts, const Eigen::DenseBase<Out>& grad_logits_out) {
  return detail::elementwise_with_grad(detail::losses::bce_with_logits{},
                                       detail::args_of("binary_cross_entropy_with_logits_with_grad", opts),
                                       "grad_logits_out", logits, targets, grad_logits_out);
}

/// The gradient of binary_cross_entropy_with_logits w.r.t. the logits, times grad_out (a number for
/// mean and sum, the input's shape for none), into grad_logits_out:
/// grad_out w ((1 - t) sigmoid(x) - pos_weight t sigmoid(-x)), divided by numel for mean.
template <class X, class Tg, class G, class Out>
void binary_cross_entropy_with_logits_backward(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<Tg>& targets,
                                               const G& grad_out,
                                               const binary_cross_entropy_with_logits_options<typename X::Scalar>& opts,
                                               const Eigen::DenseBase<Out>& grad_logits_out) {
  detail::elementwise_backward(detail::losses::bce_with_logits{},
                               detail::args_of("binary_cross_entropy_with_logits_backward", opts), "grad_logits_out",
                               logits, targets, grad_out, grad_logits_out);
}

}  // namespace xent

#endif
