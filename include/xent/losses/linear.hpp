#ifndef XENT_LOSSES_LINEAR_HPP
#define XENT_LOSSES_LINEAR_HPP

// Fused linear cross-entropy: the cross-entropy of the logits W^T h + b of a classifier layer,
// computed without the N x V logits (Liger's FusedLinearCrossEntropy, Apple's Cut Cross-Entropy,
// on the CPU with Eigen's GEMM). With z-loss (PaLM) and logit soft-capping (Gemma 2).
// docs/losses.md ("Linear cross-entropy") is the reference.

#include "../detail/engine/view.hpp"
#include "../detail/linear_kernel.hpp"
#include "../core/error.hpp"
#include "cross_entropy.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// How the classifier weight is stored. D = hidden size (hidden.rows()), V = classes.
enum class weight_layout {
  /// From the shapes: D x V if weight.rows() == D, V x D if weight.cols() == D; a square weight
  /// (V == D) is ambiguous and must be named.
  deduce,
  /// D x V: class k's weights are column k. torch nn.Linear(D, V).weight ([V, D] row-major) seen
  /// by Eigen's column-major Map, so a torch checkpoint is read in place.
  hidden_by_vocab,
  /// V x D: class k's weights are row k (e.g. a row-major Eigen matrix of torch's [V, D]).
  vocab_by_hidden,
};

/// Options of linear_cross_entropy: torch's cross_entropy names and defaults, Liger's z-loss and
/// soft-cap, and the blocking.
struct linear_cross_entropy_options {
  /// Samples whose target equals this contribute nothing (not to the mean's denominator either),
  /// and cost nothing: they are left out of the GEMMs.
  long ignore_index = -100;
  /// none (one loss per sample), mean (over the kept samples) or sum.
  xent::reduction reduction = xent::reduction::mean;
  /// In [0, 1]: torch's label smoothing, the target becomes (1 - eps) onehot + eps / V.
  double label_smoothing = 0;
  /// uniform (torch's) or other_classes (eps / (C - 1) to the non-target classes), as cross_entropy_options.
  xent::label_smoothing_kind label_smoothing_kind = xent::label_smoothing_kind::uniform;
  /// s >= 0: adds s * lse^2 to each sample's loss (PaLM's z-loss; Liger's lse_square_scale).
  double z_loss = 0;
  /// c >= 0: the logits become c * tanh(x / c) before everything else (Gemma 2); 0 turns it off.
  double softcap = 0;
  /// Also return each sample's log-sum-exp (of the soft-capped logits).
  bool return_lse = false;
  /// How `weight` is stored: D x V or V x D, deduced from the shapes by default.
  xent::weight_layout weight_layout = xent::weight_layout::deduce;
  /// Classes per tile; 0 chooses it so that a tile of block x sample_block accumulators fills the L2
  /// cache (Eigen::l2CacheSize(); 512 for the forward's float tiles with a 2 MiB L2), in [64, 4096].
  Eigen::Index block = 0;
  /// Samples per GEMM; 0 chooses 1024 for the forward and 512 for training (fewer if there are fewer
  /// samples; training halves it, down to 64, until the kept block fits max_block_bytes).
  Eigen::Index sample_block = 0;
  /// Training only: the logits of one sample block over the whole vocabulary are kept between the
  /// log-sum-exp pass and the gradient pass when they fit in this many bytes (3 GEMMs in all);
  /// otherwise each tile is recomputed (4 GEMMs, memory one tile per thread).
  std::size_t max_block_bytes = std::size_t(256) << 20;
  /// Threads splitting the vocabulary tiles of each block: 0 = OpenMP's default
  /// (omp_get_max_threads(); 1 when xent is compiled without OpenMP), 1 = serial (Eigen's GEMMs
  /// included), T > 1 = an OpenMP team of T (std::threads without OpenMP), each GEMM on one thread.
  int num_threads = 0;
  /// Per-sample weights, mask and normalizer, as cross_entropy_options (docs/losses.md). A sample
  /// masked or of weight 0 is left out of the GEMMs, as an ignored one (its lse is NaN).
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

/// What linear_cross_entropy returns: the loss as cross_entropy's loss_result, and with
/// return_lse each sample's log-sum-exp (NaN for an ignored sample, which is never computed).
template <class T>
struct linear_cross_entropy_result {
  /// The loss, reduced as the options say (value(), or per_sample() for none).
  loss_result<T> loss;
  /// With return_lse, each sample's log-sum-exp (NaN for an ignored one); empty otherwise.
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
};

namespace detail {

struct linear_shapes {
  Index hidden_size, classes, samples;
  bool v_by_d;
};

template <class HDerived, class WDerived>
linear_shapes check_linear(const char* fn, const Eigen::DenseBase<HDerived>& hidden,
                           const Eigen::DenseBase<WDerived>& weight, const linear_cross_entropy_options& o) {
  using S = typename HDerived::Scalar;
  static_assert(is_linear_scalar<S>, "hidden must hold float, double, Eigen::bfloat16 or Eigen::half");
  static_assert(std::is_same_v<S, typename WDerived::Scalar>, "weight must have hidden's scalar type");
  check_reduction(fn, o.reduction, false, true);
  if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1))
    throw_invalid(fn, "label_smoothing", "must be in [0, 1]", o.label_smoothing);
  if (!(o.z_loss >= 0 && std::isfinite(o.z_loss))) throw_invalid(fn, "z_loss", "must be finite and >= 0", o.z_loss);
  if (!(o.softcap >= 0 && std::isfinite(o.softcap)))
    throw_invalid(fn, "softcap", "must be finite and >= 0 (0 turns it off)", o.softcap);
  if (o.block < 0) throw_invalid(fn, "block", "must be >= 0 (0 chooses it)", o.block);
  if (o.sample_block < 0) throw_invalid(fn, "sample_block", "must be >= 0 (0 chooses it)", o.sample_block);
  if (o.num_threads < 0) throw_invalid(fn, "num_threads", "must be >= 0 (0 = OpenMP's default)", o.num_threads);
  const int layout = static_cast<int>(o.weight_layout);
  if (layout < 0 || layout > 2)
    throw_invalid(fn, "weight_layout", "must be deduce, hidden_by_vocab or vocab_by_hidden", layout);
  check_not_empty(fn, "hidden", hidden);
  check_not_empty(fn, "weight", weight);
  const Index D = hidden.rows(), N = hidden.cols();
  const std::string d = std::to_string(D);
  bool v_by_d = false;
  switch (o.weight_layout) {
    case weight_layout::deduce:
      if (weight.rows() == D && weight.cols() == D)
        throw_invalid(fn, "weight_layout", "must be hidden_by_vocab or vocab_by_hidden when weight is square (" +
                                               shape_string(D, D) + "), as its shape cannot tell", "deduce");
      if (weight.rows() != D && weight.cols() != D)
        throw_invalid(fn, "weight", "must be D x V or V x D with D = hidden.rows() = " + d,
                      shape_string(weight.rows(), weight.cols()));
      v_by_d = weight.rows() != D;
      break;
    case weight_layout::hidden_by_vocab:
      if (weight.rows() != D)
        throw_invalid(fn, "weight", "must be D x V (hidden_by_vocab) with D = hidden.rows() = " + d,
                      shape_string(weight.rows(), weight.cols()));
      break;
    case weight_layout::vocab_by_hidden:
      if (weight.cols() != D)
        throw_invalid(fn, "weight", "must be V x D (vocab_by_hidden) with D = hidden.rows() = " + d,
                      shape_string(weight.rows(), weight.cols()));
      v_by_d = true;
      break;
  }
  const Index V = v_by_d ? weight.rows() : weight.cols();
  (void)torch_smoothing_of(fn, o.label_smoothing, o.label_smoothing_kind, V);
  return {D, V, N, v_by_d};
}

/// bias and grad_bias_out: a row or column vector of V entries.
template <class BDerived>
void check_class_vector(const char* fn, const char* name, const Eigen::DenseBase<BDerived>& bias, Index classes) {
  if (bias.size() != classes || (bias.rows() != 1 && bias.cols() != 1))
    throw_invalid(fn, name, "must be a vector with one entry per class (" + std::to_string(classes) + ")",
                  shape_string(bias.rows(), bias.cols()));
}

template <class S, class BDerived>
void check_linear_bias(const char* fn, const Eigen::DenseBase<BDerived>& bias, Index classes) {
  static_assert(std::is_same_v<S, typename BDerived::Scalar>, "bias must have hidden's scalar type");
  check_class_vector(fn, "bias", bias, classes);
}

template <class T, class OutDerived>
OutDerived& checked_output(const char* fn, const char* name, const Eigen::DenseBase<OutDerived>& out, Index rows,
                           Index cols, const char* what) {
  static_assert(std::is_same_v<T, typename OutDerived::Scalar>,
                "gradient buffers hold the accumulation type: float for float, bfloat16 and half inputs, double for double");
  if (out.rows() != rows || out.cols() != cols)
    throw_invalid(fn, name, std::string("must be ") + what + " (" + shape_string(rows, cols) + ")",
                  shape_string(out.rows(), out.cols()));
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  return const_cast<OutDerived&>(out.derived());
}

/// The gradient outputs of one training call; forward-only calls pass none.
template <class Scale, class GradHidden, class GradWeight>
struct linear_grad_sink {
  Scale scale;  // upstream gradient of sample j's loss
  GradHidden& hidden;
  GradWeight& weight;
  Eigen::Matrix<accumulation_t<typename GradHidden::Scalar>, Eigen::Dynamic, 1>* bias;  // or null
};

/// Plans the blocking (docs/losses.md, "Linear cross-entropy": blocking).
template <class T>
linear_plan plan_linear(const linear_shapes& s, Index kept, const linear_cross_entropy_options& o, bool training) {
  linear_plan p;
  p.hidden_size = s.hidden_size;
  p.classes = s.classes;
  p.weight_v_by_d = s.v_by_d;
#ifdef _OPENMP
  p.threads = o.num_threads > 0 ? o.num_threads : omp_get_max_threads();
#else
  p.threads = o.num_threads > 0 ? o.num_threads : 1;
#endif
  const Index samples = std::max<Index>(kept, 1);
  const auto vocab_block_for = [&](Index nb) {
    if (o.block > 0) return std::min(o.block, s.classes);
    // The tile of accumulators fills L2: large tiles repack the weight and the hidden block less often.
    const Index fit = Index(Eigen::l2CacheSize()) / (nb * Index(sizeof(T)));
    return std::min(s.classes, std::clamp<Index>(fit / 16 * 16, 64, 4096));
  };
  // Every sample block repacks the whole weight for the GEMMs: the larger the block, the closer to
  // one bare GEMM (1024 samples: 0.93-0.97 of it in CPU time at N = D = 2048, V = 32000; 256: 1.08).
  // Training keeps a block's logits, so it starts at 512 (64 MiB at V = 32000).
  Index nb = std::min(o.sample_block > 0 ? o.sample_block : Index(training ? 512 : 1024), samples);
  const auto block_bytes = [&](Index n) { return double(s.classes) * double(n) * double(sizeof(T)); };
  if (training) {
    // A smaller sample block that keeps the block's logits beats recomputing them (a fourth
    // GEMM), down to 64 samples, below which the GEMMs lose too much.
    if (o.sample_block == 0)
      while (nb > 64 && block_bytes(nb) > double(o.max_block_bytes)) nb = std::max<Index>(64, nb / 2);
    p.keep_block = block_bytes(nb) <= double(o.max_block_bytes);
  }
  p.sample_block = nb;
  p.vocab_block = vocab_block_for(nb);
  p.tiles = (s.classes + p.vocab_block - 1) / p.vocab_block;
  // No more workers than tiles; the count alone decides the results' bits (see fork_join).
  p.threads = int(std::min<Index>(p.threads, p.tiles));
  // Eigen's GEMM reads its cache sizes from function-local statics set on first use: set them
  // here, before the workers race to.
  if (p.threads > 1) Eigen::initParallel();
  return p;
}

/// Forward (and, with a sink, backward) over the kept samples, block after block.
template <class HDerived, class WDerived, class TDerived, class Sink>
linear_cross_entropy_result<accumulation_t<typename HDerived::Scalar>> linear_run(
    const linear_shapes& s, const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::Matrix<accumulation_t<typename HDerived::Scalar>, Eigen::Dynamic, 1>* bias,
    const Eigen::DenseBase<TDerived>& targets, double denominator, const linear_cross_entropy_options& o, Sink* sink) {
  using T = accumulation_t<typename HDerived::Scalar>;
  constexpr bool training = !std::is_same_v<Sink, std::nullptr_t>;
  // The checked options' selection, with its sequence plan (a token of zero effective weight, as one
  // of zero sample weight, stays out of the GEMMs).
  sample_selection selection = selection_in(o);
  plan_index_sequences(selection, o.reduction, targets, o.ignore_index, Eigen::VectorXd());
  std::vector<Index> active, target;
  for (Index j = 0; j < s.samples; ++j) {
    if (!selection.kept(j) || selection.weight_at(j) == 0) continue;  // it costs nothing: out of the GEMMs
    const long t = static_cast<long>(targets.derived().coeff(j));
    if (t == o.ignore_index) continue;
    active.push_back(j);
    target.push_back(Index(t));
  }
  const Index kept = Index(active.size());
  const linear_plan plan = plan_linear<T>(s, kept, o, training);
  linear_loss_params<T> params;
  params.smoothing = T(torch_smoothing_of("linear_cross_entropy", o.label_smoothing, o.label_smoothing_kind, s.classes));
  params.z_loss = T(o.z_loss);
  params.softcap = T(o.softcap);

  std::vector<T> per_sample(std::size_t(s.samples), T(0));
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
  if (o.return_lse) lse.setConstant(s.samples, std::numeric_limits<T>::quiet_NaN());

  const serial_gemm_scope serial(plan.threads == 1);
  auto go = [&](auto v_by_d) {
    linear_ce_kernel<T, decltype(v_by_d)::value, WDerived, HDerived> kernel(plan, params, weight.derived(), hidden.derived(),
                                                                           bias, active, target, training);
    for (Index first = 0; first < kept; first += plan.sample_block) {
      const Index count = std::min(plan.sample_block, kept - first);
      kernel.forward_block(first, count);
      if constexpr (training) {
        auto scale = [&](std::size_t k) { return sink->scale(active[k]); };
        kernel.backward_block(first, count, scale, first == 0, sink->hidden, sink->weight, sink->bias);
      }
      for (Index k = first; k < first + count; ++k) {
        per_sample[std::size_t(active[std::size_t(k)])] = kernel.loss(std::size_t(k));
        if (o.return_lse) lse(active[std::size_t(k)]) = kernel.lse(std::size_t(k));
      }
    }
  };
  if constexpr (training) {
    sink->hidden.setZero();  // ignored samples' columns; the kernel writes the others
    if (kept == 0) {
      sink->weight.setZero();
      if (sink->bias) sink->bias->setZero();
    }
  }
  if (s.v_by_d)
    go(std::true_type{});
  else
    go(std::false_type{});
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(per_sample.data(), s.samples);
  return {reduce_losses(o.reduction, std::move(losses), denominator, selection), std::move(lse)};
}

template <class T, class BDerived>
Eigen::Matrix<T, Eigen::Dynamic, 1> bias_in(const Eigen::DenseBase<BDerived>& bias) {
  Eigen::Matrix<T, Eigen::Dynamic, 1> b(bias.size());
  for (Index k = 0; k < bias.size(); ++k) b(k) = static_cast<T>(bias.derived().coeff(k));
  return b;
}

template <class HDerived, class WDerived, class BDerived, class TDerived, class G, class GHDerived, class GWDerived,
          class GBDerived>
linear_cross_entropy_result<accumulation_t<typename HDerived::Scalar>> linear_train(
    const char* fn, const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<BDerived>* bias, const Eigen::DenseBase<TDerived>& targets, const G& grad_out,
    const linear_cross_entropy_options& opts, const Eigen::DenseBase<GHDerived>& grad_hidden_out,
    const Eigen::DenseBase<GWDerived>& grad_weight_out, const Eigen::DenseBase<GBDerived>* grad_bias_out) {
  using T = accumulation_t<typename HDerived::Scalar>;
  const linear_shapes s = check_linear(fn, hidden, weight, opts);
  if (bias) check_linear_bias<typename HDerived::Scalar>(fn, *bias, s.classes);
  sample_selection selection = selection_of(fn, opts, s.samples);
  const double denominator =
      check_index_targets(fn, targets, s.samples, s.classes, opts.ignore_index, Eigen::VectorXd(), selection);
  plan_index_sequences(selection, opts.reduction, targets, opts.ignore_index, Eigen::VectorXd());
  auto scale = grad_scale_of<T>(fn, opts.reduction, s.samples, denominator, grad_out, selection);
  auto& gh = checked_output<T>(fn, "grad_hidden_out", grad_hidden_out, s.hidden_size, s.samples, "hidden's shape");
  auto& gw = checked_output<T>(fn, "grad_weight_out", grad_weight_out, weight.rows(), weight.cols(), "weight's shape");
  Eigen::Matrix<T, Eigen::Dynamic, 1> gb, b;
  if (grad_bias_out) {
    static_assert(std::is_same_v<T, typename GBDerived::Scalar>, "gradient buffers hold the accumulation type");
    check_class_vector(fn, "grad_bias_out", *grad_bias_out, s.classes);
    gb.resize(s.classes);
    b = bias_in<T>(*bias);
  }
  linear_grad_sink<decltype(scale), std::remove_reference_t<decltype(gh)>, std::remove_reference_t<decltype(gw)>> sink{
      scale, gh, gw, grad_bias_out ? &gb : nullptr};
  auto result = linear_run(s, hidden, weight, bias ? &b : nullptr, targets, denominator, opts, &sink);
  if (grad_bias_out) {
    auto& out = const_cast<GBDerived&>(grad_bias_out->derived());
    for (Index k = 0; k < s.classes; ++k) out.coeffRef(k) = gb(k);
  }
  return result;
}

}  // namespace detail

/// Cross-entropy of the logits z = weight^T hidden (D x V weight; or weight * hidden for V x D),
/// without the N x V logits: torch's
///   F.cross_entropy(softcap(hidden.T @ W.T), targets, ignore_index, reduction, label_smoothing)
/// plus z_loss * lse^2 per non-ignored sample, with softcap(x) = c tanh(x / c) when c > 0.
///
/// hidden: D x N (one sample per column: a torch [N, D] buffer read in place), float, double,
/// Eigen::bfloat16 or Eigen::half (the last two computed in float). weight: D x V or V x D
/// (opts.weight_layout), hidden's scalar type. targets: N signed integers in [0, V) or ignore_index.
/// mean divides by the number of non-ignored samples (NaN if there is none, as torch).
/// \returns loss (value() for mean/sum, per_sample() for none) and, with return_lse, lse.
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class HDerived, class WDerived, class TDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
linear_cross_entropy_result<detail::accumulation_t<typename HDerived::Scalar>> linear_cross_entropy(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<TDerived>& targets, const linear_cross_entropy_options& opts = {}) {
  constexpr const char* fn = "linear_cross_entropy";
  const detail::linear_shapes s = detail::check_linear(fn, hidden, weight, opts);
  const double denominator = detail::check_index_targets(fn, targets, s.samples, s.classes, opts.ignore_index,
                                                         Eigen::VectorXd(), detail::selection_of(fn, opts, s.samples));
  return detail::linear_run<HDerived, WDerived, TDerived, std::nullptr_t>(s, hidden, weight, nullptr, targets,
                                                                         denominator, opts, nullptr);
}

/// linear_cross_entropy with a bias: z = weight^T hidden + bias (bias: V entries, hidden's type).
template <class HDerived, class WDerived, class BDerived, class TDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> &&
                               !std::is_integral_v<typename BDerived::Scalar>, int> = 0>
linear_cross_entropy_result<detail::accumulation_t<typename HDerived::Scalar>> linear_cross_entropy(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<BDerived>& bias, const Eigen::DenseBase<TDerived>& targets,
    const linear_cross_entropy_options& opts = {}) {
  using T = detail::accumulation_t<typename HDerived::Scalar>;
  constexpr const char* fn = "linear_cross_entropy";
  const detail::linear_shapes s = detail::check_linear(fn, hidden, weight, opts);
  detail::check_linear_bias<typename HDerived::Scalar>(fn, bias, s.classes);
  const double denominator = detail::check_index_targets(fn, targets, s.samples, s.classes, opts.ignore_index,
                                                         Eigen::VectorXd(), detail::selection_of(fn, opts, s.samples));
  const Eigen::Matrix<T, Eigen::Dynamic, 1> b = detail::bias_in<T>(bias);
  return detail::linear_run<HDerived, WDerived, TDerived, std::nullptr_t>(s, hidden, weight, &b, targets, denominator,
                                                                         opts, nullptr);
}

/// The loss and its gradients in one pass (three GEMMs when a block's logits fit max_block_bytes):
/// returns what linear_cross_entropy returns and writes the gradient of grad_out * loss (grad_out:
/// a number for mean/sum, one per sample for none) into grad_hidden_out (D x N) and grad_weight_out
/// (weight's shape and layout). Gradients are in the accumulation type (float for bfloat16/half
/// inputs) and accumulate across blocks in it. Ignored samples get zero columns in grad_hidden_out.
template <class HDerived, class WDerived, class TDerived, class G, class GHDerived, class GWDerived>
linear_cross_entropy_result<detail::accumulation_t<typename HDerived::Scalar>> linear_cross_entropy_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<TDerived>& targets, const G& grad_out, const linear_cross_entropy_options& opts,
    const Eigen::DenseBase<GHDerived>& grad_hidden_out, const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  return detail::linear_train<HDerived, WDerived, HDerived, TDerived, G, GHDerived, GWDerived, GHDerived>(
      "linear_cross_entropy_with_grad", hidden, weight, nullptr, targets, grad_out, opts, grad_hidden_out,
      grad_weight_out, nullptr);
}

/// linear_cross_entropy_with_grad with a bias, also writing grad_bias_out (V entries).
template <class HDerived, class WDerived, class BDerived, class TDerived, class G, class GHDerived, class GWDerived,
          class GBDerived>
linear_cross_entropy_result<detail::accumulation_t<typename HDerived::Scalar>> linear_cross_entropy_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<BDerived>& bias, const Eigen::DenseBase<TDerived>& targets, const G& grad_out,
    const linear_cross_entropy_options& opts, const Eigen::DenseBase<GHDerived>& grad_hidden_out,
    const Eigen::DenseBase<GWDerived>& grad_weight_out, const Eigen::DenseBase<GBDerived>& grad_bias_out) {
  return detail::linear_train("linear_cross_entropy_with_grad", hidden, weight, &bias, targets, grad_out, opts,
                              grad_hidden_out, grad_weight_out, &grad_bias_out);
}

/// The gradients of linear_cross_entropy (as linear_cross_entropy_with_grad, without the loss), for
/// a separate backward step. It recomputes the log-sum-exp, so forward + backward costs one GEMM
/// more than linear_cross_entropy_with_grad.
template <class HDerived, class WDerived, class TDerived, class G, class GHDerived, class GWDerived>
void linear_cross_entropy_backward(const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
                                   const Eigen::DenseBase<TDerived>& targets, const G& grad_out,
                                   const linear_cross_entropy_options& opts,
                                   const Eigen::DenseBase<GHDerived>& grad_hidden_out,
                                   const Eigen::DenseBase<GWDerived>& grad_weight_out) {
  linear_cross_entropy_options o = opts;
  o.return_lse = false;
  detail::linear_train<HDerived, WDerived, HDerived, TDerived, G, GHDerived, GWDerived, GHDerived>(
      "linear_cross_entropy_backward", hidden, weight, nullptr, targets, grad_out, o, grad_hidden_out,
      grad_weight_out, nullptr);
}

/// linear_cross_entropy_backward with a bias, also writing grad_bias_out.
template <class HDerived, class WDerived, class BDerived, class TDerived, class G, class GHDerived, class GWDerived,
          class GBDerived>
void linear_cross_entropy_backward(const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
                                   const Eigen::DenseBase<BDerived>& bias, const Eigen::DenseBase<TDerived>& targets,
                                   const G& grad_out, const linear_cross_entropy_options& opts,
                                   const Eigen::DenseBase<GHDerived>& grad_hidden_out,
                                   const Eigen::DenseBase<GWDerived>& grad_weight_out,
                                   const Eigen::DenseBase<GBDerived>& grad_bias_out) {
  linear_cross_entropy_options o = opts;
  o.return_lse = false;
  detail::linear_train("linear_cross_entropy_backward", hidden, weight, &bias, targets, grad_out, o, grad_hidden_out,
                       grad_weight_out, &grad_bias_out);
}

}  // namespace xent

#endif
