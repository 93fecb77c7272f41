#ifndef XENT_LOSSES_CROSS_ENTROPY_HPP
#define XENT_LOSSES_CROSS_ENTROPY_HPP

// cross_entropy and nll_loss with torch.nn.functional's semantics (torch 1.13,
// aten/src/ATen/native/LossNLL.cpp): forward, forward + gradient, backward. The formula is
// detail/losses/cross_entropy.hpp, run by the sweep driver for every layout and input type.
// docs/losses.md is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/cross_entropy.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent {

/// Options of nll_loss: torch's names and defaults (torch::nn::functional::NLLLossFuncOptions),
/// plus the class axis `dim` (see logsumexp.hpp).
struct nll_loss_options {
  /// One weight per class; empty means every class weighs 1.
  Eigen::VectorXd weight;
  /// Samples whose target equals this contribute nothing (not to the mean's denominator either).
  long ignore_index = -100;
  /// none (one loss per sample), mean (divided by the summed weights of the kept samples) or sum.
  xent::reduction reduction = xent::reduction::mean;
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  /// 0: OpenMP's default; 1: serial. Results do not depend on it.
  int num_threads = 0;
  /// Per-sample weights, mask and normalizer (xent's, docs/losses.md "Sample weights and masks"):
  /// each kept sample's loss times sample_weight[j]; mask[j] false leaves sample j out.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  /// Given: mean and sum divide the weighted sum by it (a global token count, for micro-batches).
  std::optional<double> normalizer = std::nullopt;
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

/// Options of cross_entropy: torch's names and defaults (torch::nn::functional::CrossEntropyFuncOptions),
/// plus the class axis `dim`.
struct cross_entropy_options {
  /// One weight per class; empty means every class weighs 1.
  Eigen::VectorXd weight;
  /// Class-index targets only (torch rejects it for probability targets, and so do we).
  long ignore_index = -100;
  /// none (one loss per sample), mean (divided by the summed weights of the kept samples; with
  /// probability targets, by the sample count) or sum.
  xent::reduction reduction = xent::reduction::mean;
  /// In [0, 1]: the target becomes (1 - label_smoothing) * target + label_smoothing / C.
  double label_smoothing = 0;
  /// uniform (torch's eps / C to every class) or other_classes (eps / (C - 1) to each class but the
  /// target, which keeps 1 - eps; class-index targets only).
  xent::label_smoothing_kind label_smoothing_kind = xent::label_smoothing_kind::uniform;
  /// Classes given no smoothing mass (padding, special tokens; xent's, class-index targets only):
  /// with E of them, uniform gives eps / (C - E) to each other class, other_classes eps / (C - E - 1)
  /// to each other non-target class; a sample whose target is excluded gets no smoothing (its plain
  /// weighted NLL). docs/losses.md "Label smoothing".
  Eigen::VectorXi label_smoothing_excluded{};
  /// Probability targets: a zero target on a -inf (masked) logit contributes 0 (Optax's
  /// safe_softmax_cross_entropy) instead of torch's 0 * -inf = NaN.
  bool safe = false;
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  /// xent extensions for large vocabularies (not in torch; docs/differences-from-torch.md), class-index
  /// targets only:
  /// softcap > 0 replaces each logit x by softcap * tanh(x / softcap) first (Gemma 2); 0 = off.
  double softcap = 0;
  /// z_loss > 0 adds z_loss * lse^2 to each non-ignored sample's loss (PaLM), lse its log-sum-exp.
  double z_loss = 0;
  /// Keep each sample's log-sum-exp (of the soft-capped logits) in the result: loss_result::lse().
  bool return_lse = false;
  /// Threads for one call: 0 takes OpenMP's default (omp_get_max_threads(), OMP_NUM_THREADS), 1 runs
  /// serially. Without OpenMP every call is serial. Results do not depend on it (docs/fused.md).
  int num_threads = 0;
  /// Per-sample weights, mask and normalizer (xent's, docs/losses.md "Sample weights and masks"):
  /// each kept sample's loss times sample_weight[j]; mask[j] false leaves sample j out.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  /// Given: mean and sum divide the weighted sum by it (a global token count, for micro-batches).
  std::optional<double> normalizer = std::nullopt;
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

/// Options of poly1_cross_entropy: cross_entropy's, and Poly-1's epsilon (Optax's default).
struct poly1_cross_entropy_options : cross_entropy_options {
  /// The weight of the first polynomial term, 1 - P; finite (negative values are allowed, as in the paper).
  double epsilon = 2.0;
};

namespace detail {

/// The checks of label_smoothing_excluded against C classes: indices in [0, C), each once, and at
/// least one class (two for other_classes) left to take the mass.
inline void check_smoothing_excluded(const char* fn, const cross_entropy_options& o, Eigen::Index classes) {
  const Eigen::VectorXi& ex = o.label_smoothing_excluded;
  if (ex.size() == 0) return;
  std::vector<unsigned char> seen(std::size_t(classes), 0);
  for (Eigen::Index i = 0; i < ex.size(); ++i) {
    if (ex(i) < 0 || ex(i) >= classes)
      throw_invalid(fn, "label_smoothing_excluded",
                    "must hold class indices in [0, " + std::to_string(classes) + ")",
                    "entry " + std::to_string(i) + " = " + std::to_string(ex(i)));
    if (seen[std::size_t(ex(i))]++)
      throw_invalid(fn, "label_smoothing_excluded", "must name each class at most once",
                    "class " + std::to_string(ex(i)) + " twice");
  }
  if (o.label_smoothing == 0) return;
  const Eigen::Index left = classes - ex.size();
  const Eigen::Index needed = o.label_smoothing_kind == label_smoothing_kind::other_classes ? 2 : 1;
  if (left < needed)
    throw_invalid(fn, "label_smoothing_excluded",
                  std::string("must leave at least ") + std::to_string(needed) + " class" + (needed > 1 ? "es" : "") +
                      " to take the smoothing mass",
                  std::to_string(ex.size()) + " of " + std::to_string(classes) + " excluded");
}

/// The checks of the options only class-index cross_entropy has.
inline void check_index_only_options(const char* fn, const cross_entropy_options& o) {
  check_num_threads(fn, o.num_threads);
  if (!(o.softcap >= 0 && std::isfinite(o.softcap))) throw_invalid(fn, "softcap", "must be finite and >= 0 (0 = off)", o.softcap);
  if (!(o.z_loss >= 0 && std::isfinite(o.z_loss))) throw_invalid(fn, "z_loss", "must be finite and >= 0 (0 = off)", o.z_loss);
}

/// Every check of a class-index cross_entropy call.
template <class Derived, class TDerived>
checked_call check_index_cross_entropy(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                          const Eigen::DenseBase<TDerived>& targets,
                                                          const cross_entropy_options& opts) {
  const Eigen::Index samples = check_categorical(fn, "logits", logits, opts, opts.label_smoothing);
  check_index_only_options(fn, opts);
  const Eigen::Index classes = opts.dim == 0 ? logits.rows() : logits.cols();
  (void)torch_smoothing_of(fn, opts.label_smoothing, opts.label_smoothing_kind, classes);
  check_smoothing_excluded(fn, opts, classes);
  sample_selection selection = selection_of(fn, opts, samples);
  const double denominator = check_index_targets(fn, targets, samples, classes, opts.ignore_index, opts.weight, selection);
  plan_index_sequences(selection, opts.reduction, targets, opts.ignore_index, opts.weight);
  return {samples, denominator, selection};
}

template <class Derived, class YDerived>
void check_prob_targets(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<YDerived>& y,
                        const cross_entropy_options& opts) {
  check_num_threads(fn, opts.num_threads);
  if (opts.softcap != 0 || opts.z_loss != 0 || opts.return_lse)
    throw_invalid(fn, "targets", "must be class indices for softcap, z_loss or return_lse", "probability targets");
  if (opts.label_smoothing_excluded.size() != 0)
    throw_invalid(fn, "label_smoothing_excluded", "must be empty with probability targets (it needs a target class)",
                  std::to_string(opts.label_smoothing_excluded.size()) + " classes");
  static_assert(std::is_same_v<typename Derived::Scalar, typename YDerived::Scalar>,
                "probability targets must have the logits' scalar type");
  check_same_shape(fn, "targets", y, "logits", x);
  if (opts.ignore_index != -100)
    throw_invalid(fn, "ignore_index", "is not supported with probability targets and must stay -100", opts.ignore_index);
  if (opts.label_smoothing_kind != label_smoothing_kind::uniform)
    throw_invalid(fn, "label_smoothing_kind", "must be uniform with probability targets (other_classes needs a target class)",
                  static_cast<int>(opts.label_smoothing_kind));
}

/// Every check of a probability-target cross_entropy call; the mean's denominator is the kept
/// samples' summed weights (the sample count by default, as torch).
template <class Derived, class YDerived>
checked_call check_prob_cross_entropy(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                      const Eigen::DenseBase<YDerived>& targets, const cross_entropy_options& opts) {
  const Eigen::Index samples = check_categorical(fn, "logits", logits, opts, opts.label_smoothing);
  check_prob_targets(fn, logits, targets, opts);
  sample_selection selection = selection_of(fn, opts, samples);
  const double denominator = kept_weight(selection, samples);
  plan_kept_sequences(selection, opts.reduction, samples);
  return {samples, denominator, selection};
}

/// The fused kernel's setup of a class-index cross_entropy call over `classes` classes, with the
/// buffers its pointers point into (not copyable: the setup points into them).
template <class T>
struct index_ce_setup {
  std::vector<T> weight;
  std::vector<unsigned char> excluded;
  std::vector<T> smooth_weight;
  fused_setup<T> st;

  index_ce_setup(const cross_entropy_options& opts, Index classes, double poly) : weight(weights_in<T>(opts.weight)) {
    st.weight = weight.empty() ? nullptr : weight.data();
    st.smoothing = static_cast<T>(torch_smoothing_of("cross_entropy", opts.label_smoothing, opts.label_smoothing_kind, classes));
    st.weight_total = weight.empty() ? static_cast<T>(classes) : static_cast<T>(opts.weight.sum());
    st.classes = classes;
    if (opts.label_smoothing_excluded.size() != 0 && opts.label_smoothing != 0) {
      // The kind's eps' over the C - E classes that take the mass (torch_smoothing_of with C - E), and
      // the smoothing term's weights w_k s_k, summed in double as the plain weight_total is.
      excluded.assign(std::size_t(classes), 0);
      for (Eigen::Index i = 0; i < opts.label_smoothing_excluded.size(); ++i) excluded[std::size_t(opts.label_smoothing_excluded(i))] = 1;
      const Index left = classes - opts.label_smoothing_excluded.size();
      st.smoothing = static_cast<T>(torch_smoothing_of("cross_entropy", opts.label_smoothing, opts.label_smoothing_kind, left));
      smooth_weight.resize(std::size_t(classes));
      double total = 0;
      for (Index k = 0; k < classes; ++k) {
        const double w = excluded[std::size_t(k)] ? 0.0 : weight.empty() ? 1.0 : opts.weight(k);
        smooth_weight[std::size_t(k)] = static_cast<T>(w);
        total += w;
      }
      st.weight_total = static_cast<T>(total);
      st.smooth_weight = smooth_weight.data();
      st.excluded = excluded.data();
      st.smooth_classes = left;
    }
    st.softcap = static_cast<T>(opts.softcap);
    st.z_loss = static_cast<T>(opts.z_loss);
    st.poly = static_cast<T>(poly);
  }
  index_ce_setup(const index_ce_setup&) = delete;
  index_ce_setup& operator=(const index_ce_setup&) = delete;
};

/// The losses of class-index cross_entropy, one per sample (0 when ignored), and when grad is given
/// the gradient times scale(j) written into it: the fused kernel, for every layout and type.
template <class S, class TDerived, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> index_cross_entropy(const samples_view<const S>& v,
                                                                   const Eigen::DenseBase<TDerived>& targets,
                                                                   const cross_entropy_options& opts, Scale&& scale,
                                                                   const samples_view<S>* grad,
                                                                   Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1>* lse = nullptr,
                                                                   double poly = 0) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(v.samples);
  if (lse) lse->resize(v.samples);
  const index_ce_setup<T> setup(opts, v.classes, poly);
  fused_cross_entropy_dispatch(v, setup.st, opts.num_threads, index_targets(targets, opts.ignore_index, selection_in(opts).mask),
                               losses.data(),
                               lse ? lse->data() : nullptr, scale, grad);
  return losses;
}

/// The losses of probability-target cross_entropy, one per sample, and when grad is given the
/// gradient times scale(j) written into it.
template <class S, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> prob_cross_entropy(const samples_view<const S>& v,
                                                                  const samples_view<const S>& y,
                                                                  const cross_entropy_options& opts, Scale&& scale,
                                                                  const samples_view<S>* grad, double poly = 0) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(v.samples);
  const std::vector<T> weight = weights_in<T>(opts.weight);
  auto run = [&](auto weighted, auto with_poly) {
    const prob_ce_policy<S, std::decay_t<Scale>, decltype(weighted)::value, decltype(with_poly)::value> policy(
        weight.empty() ? nullptr : weight.data(), static_cast<T>(opts.label_smoothing), v.classes, losses.data(), scale,
        grad != nullptr, selection_in(opts).mask, static_cast<T>(poly), opts.safe);
    engine::sweep(policy, engine::sweep_views<S>{v, &y, grad}, opts.num_threads);
  };
  auto with_weights = [&](auto with_poly) {
    if (weight.empty())
      run(std::false_type{}, with_poly);
    else
      run(std::true_type{}, with_poly);
  };
  if (poly == 0)
    with_weights(std::false_type{});
  else
    with_weights(std::true_type{});
  return losses;
}

}  // namespace detail

namespace detail {

inline double poly_of(const cross_entropy_options&) { return 0; }
inline double poly_of(const poly1_cross_entropy_options& o) { return o.epsilon; }

/// The checks of Poly-1's own option.
inline void check_poly(const char* fn, const cross_entropy_options&) { (void)fn; }
inline void check_poly(const char* fn, const poly1_cross_entropy_options& o) {
  if (!std::isfinite(o.epsilon)) throw_invalid(fn, "epsilon", "must be finite", o.epsilon);
  // P of a target smoothed over only some classes needs a sum the fused read does not gather.
  if (o.label_smoothing_excluded.size() != 0)
    throw_invalid(fn, "label_smoothing_excluded", "must be empty for poly1_cross_entropy",
                  std::to_string(o.label_smoothing_excluded.size()) + " classes");
}

// The six entry points of cross_entropy and poly1_cross_entropy (one body each, the loss chosen by
// the options' type).

template <class Options, class Derived, class TDerived>
loss_result<compute_t<typename Derived::Scalar>> index_forward(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                               const Eigen::DenseBase<TDerived>& targets, const Options& opts) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_index_cross_entropy(fn, logits, targets, opts);
  return with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
    Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
    auto result = reduce_losses(opts.reduction,
                                index_cross_entropy(v, targets, opts, [](Eigen::Index) { return T(0); },
                                                    static_cast<const samples_view<S>*>(nullptr),
                                                    opts.return_lse ? &lse : nullptr, poly_of(opts)),
                                checked.denominator, checked.selection);
    return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
  });
}

template <class Options, class Derived, class YDerived>
loss_result<compute_t<typename Derived::Scalar>> prob_forward(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                              const Eigen::DenseBase<YDerived>& targets, const Options& opts) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_prob_cross_entropy(fn, logits, targets, opts);
  return with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
    return with_view(targets, opts.dim, [&](const samples_view<const S>& y) {
      return reduce_losses(opts.reduction,
                           prob_cross_entropy(v, y, opts, [](Eigen::Index) { return T(0); },
                                              static_cast<const samples_view<S>*>(nullptr), poly_of(opts)),
                           checked.denominator, checked.selection);
    });
  });
}

template <class Options, class Derived, class TDerived, class G, class OutDerived>
void index_backward(const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                    const G& grad_out, const Options& opts, const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_index_cross_entropy(fn, logits, targets, opts);
  const auto scale = grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const samples_view<S>& out) {
    with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
      index_cross_entropy(v, targets, opts, scale, &out, nullptr, poly_of(opts));
    });
  });
}

template <class Options, class Derived, class TDerived, class OutDerived>
loss_result<compute_t<typename Derived::Scalar>> index_with_grad(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                                 const Eigen::DenseBase<TDerived>& targets, const Options& opts,
                                                                 const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_index_cross_entropy(fn, logits, targets, opts);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses, lse;
  with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const samples_view<S>& out) {
    with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
      losses = index_cross_entropy(v, targets, opts, seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                   &out, opts.return_lse ? &lse : nullptr, poly_of(opts));
    });
  });
  auto result = reduce_losses(opts.reduction, std::move(losses), checked.denominator, checked.selection);
  return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
}

template <class Options, class Derived, class YDerived, class G, class OutDerived>
void prob_backward(const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets,
                   const G& grad_out, const Options& opts, const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_prob_cross_entropy(fn, logits, targets, opts);
  check_no_overlap(fn, "grad_logits_out", grad_logits_out, "targets", targets, false);
  const auto scale = grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const samples_view<S>& out) {
    with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
      with_view(targets, opts.dim, [&](const samples_view<const S>& y) {
        prob_cross_entropy(v, y, opts, scale, &out, poly_of(opts));
      });
    });
  });
}

template <class Options, class Derived, class YDerived, class OutDerived>
loss_result<compute_t<typename Derived::Scalar>> prob_with_grad(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                                const Eigen::DenseBase<YDerived>& targets, const Options& opts,
                                                                const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using S = typename Derived::Scalar;
  using T = compute_t<S>;
  check_poly(fn, opts);
  const auto checked = check_prob_cross_entropy(fn, logits, targets, opts);
  check_no_overlap(fn, "grad_logits_out", grad_logits_out, "targets", targets, false);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses;
  with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const samples_view<S>& out) {
    with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
      with_view(targets, opts.dim, [&](const samples_view<const S>& y) {
        losses = prob_cross_entropy(v, y, opts, seed_scale<T>(opts.reduction, checked.denominator, checked.selection), &out,
                                    poly_of(opts));
      });
    });
  });
  return reduce_losses(opts.reduction, std::move(losses), checked.denominator, checked.selection);
}

}  // namespace detail

/// Cross-entropy of logits against class-index targets, torch.nn.functional.cross_entropy.
///
/// logits: C x N (dim = 0, the default; a torch [N, C] buffer) or N x C (dim = 1), float, double,
/// bf16 or half (widened to float). targets: one integer (int32 or int64) per sample, in [0, C) or
/// equal to ignore_index.
/// Per sample: (1 - eps) * (-w[t] * log_softmax(x)[t]) + eps / C * sum_k (-w[k] * log_softmax(x)[k]),
/// 0 for an ignored sample. mean divides the sum by the sum of w[t] over the non-ignored samples
/// (their count when unweighted): every target ignored gives NaN, as torch.
/// \returns loss_result: value() for mean/sum, per_sample() for none.
/// \throws xent::invalid_argument on misuse (docs/losses.md lists the checks).
template <class Derived, class TDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<typename Derived::Scalar>> cross_entropy(const Eigen::DenseBase<Derived>& logits,
                                                                       const Eigen::DenseBase<TDerived>& targets,
                                                                       const cross_entropy_options& opts = {}) {
  return detail::index_forward("cross_entropy", logits, targets, opts);
}

/// Cross-entropy of logits against probability targets (same shape and class axis as logits):
/// per sample -sum_k log_softmax(x)_k * ((1 - eps) y_k + eps / C) * w_k; mean divides by the sample
/// count (not by weights), as torch. As torch, a zero probability on a -inf logit gives NaN.
template <class Derived, class YDerived,
          std::enable_if_t<!std::is_integral_v<typename YDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<typename Derived::Scalar>> cross_entropy(const Eigen::DenseBase<Derived>& logits,
                                                                       const Eigen::DenseBase<YDerived>& targets,
                                                                       const cross_entropy_options& opts = {}) {
  return detail::prob_forward("cross_entropy", logits, targets, opts);
}

/// Gradient of cross_entropy (class-index targets) with respect to the logits, times grad_out,
/// written into grad_logits_out (the logits' shape; a Map over the caller's buffer is written in place).
/// grad_out: a number for reduction mean/sum, a vector with one entry per sample for none.
/// Ignored samples get a zero gradient.
template <class Derived, class TDerived, class G, class OutDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
void cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                            const G& grad_out, const cross_entropy_options& opts,
                            const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  detail::index_backward("cross_entropy_backward", logits, targets, grad_out, opts, grad_logits_out);
}

/// Forward and gradient in one call (class-index targets): returns what cross_entropy returns and
/// writes d loss / d logits into grad_logits_out, with grad_out = 1 (for reduction none: the
/// gradient of the sum of the per-sample losses). One read of the logits for the loss, one more
/// (from cache when a sample fits in L2) that writes the gradient; no other N x C buffer.
/// grad_logits_out may be the logits' own storage: see cross_entropy_with_grad_in_place.
template <class Derived, class TDerived, class OutDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<typename Derived::Scalar>> cross_entropy_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, const cross_entropy_options& opts,
    const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  return detail::index_with_grad("cross_entropy_with_grad", logits, targets, opts, grad_logits_out);
}

/// cross_entropy_with_grad that overwrites the logits with their gradient: no N x C buffer beyond
/// the caller's own. The logits are lost; by explicit opt-in only.
template <class Derived, class TDerived, std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<typename Derived::Scalar>> cross_entropy_with_grad_in_place(
    const Eigen::DenseBase<Derived>& logits_to_overwrite, const Eigen::DenseBase<TDerived>& targets,
    const cross_entropy_options& opts = {}) {
  static_assert(detail::has_direct_access<Derived>, "in place needs the logits' own storage (a Matrix, Map or Block)");
  return cross_entropy_with_grad(logits_to_overwrite, targets, opts, logits_to_overwrite);
}

/// Gradient of cross_entropy with probability targets with respect to the logits, times grad_out;
/// see the class-index overload. (No gradient is computed for the targets.)
template <class Derived, class YDerived, class G, class OutDerived,
          std::enable_if_t<!std::is_integral_v<typename YDerived::Scalar>, int> = 0>
void cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets,
                            const G& grad_out, const cross_entropy_options& opts,
                            const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  detail::prob_backward("cross_entropy_backward", logits, targets, grad_out, opts, grad_logits_out);
}

/// Forward and gradient in one call (probability targets), as the class-index overload: the
/// logits and the targets are each read once for the loss and once more for the gradient.
template <class Derived, class YDerived, class OutDerived,
          std::enable_if_t<!std::is_integral_v<typename YDerived::Scalar>, int> = 0>
loss_result<detail::compute_t<typename Derived::Scalar>> cross_entropy_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets, const cross_entropy_options& opts,
    const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  return detail::prob_with_grad("cross_entropy_with_grad", logits, targets, opts, grad_logits_out);
}

/// Poly-1 cross-entropy (Leng et al. 2022, "PolyLoss"; Optax's poly_loss_cross_entropy):
/// cross_entropy + epsilon * (1 - P) per sample, P the probability softmax(x) gives the target
/// distribution: sum_k y~_k p_k with y~ the (label-smoothed, unweighted) target, p_t for a class
/// index without smoothing. Class-index targets (on the fused kernel) or probability targets (a
/// second read from cache for P); every cross_entropy option applies. \returns loss_result as
/// cross_entropy. \throws xent::invalid_argument as cross_entropy, and for a non-finite epsilon.
template <class Derived, class YDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> poly1_cross_entropy(const Eigen::DenseBase<Derived>& logits,
                                                                             const Eigen::DenseBase<YDerived>& targets,
                                                                             const poly1_cross_entropy_options& opts = {}) {
  if constexpr (std::is_integral_v<typename YDerived::Scalar>)
    return detail::index_forward("poly1_cross_entropy", logits, targets, opts);
  else
    return detail::prob_forward("poly1_cross_entropy", logits, targets, opts);
}

/// poly1_cross_entropy and its gradient w.r.t. the logits in one call (grad_out = 1; for none, of
/// the sum of the per-sample losses), into grad_logits_out (the logits' shape).
template <class Derived, class YDerived, class OutDerived>
loss_result<detail::compute_t<typename Derived::Scalar>> poly1_cross_entropy_with_grad(
    const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets,
    const poly1_cross_entropy_options& opts, const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  if constexpr (std::is_integral_v<typename YDerived::Scalar>)
    return detail::index_with_grad("poly1_cross_entropy_with_grad", logits, targets, opts, grad_logits_out);
  else
    return detail::prob_with_grad("poly1_cross_entropy_with_grad", logits, targets, opts, grad_logits_out);
}

/// The gradient of poly1_cross_entropy w.r.t. the logits, times grad_out (a number for mean/sum,
/// one per sample for none), into grad_logits_out.
template <class Derived, class YDerived, class G, class OutDerived>
void poly1_cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets,
                                  const G& grad_out, const poly1_cross_entropy_options& opts,
                                  const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  if constexpr (std::is_integral_v<typename YDerived::Scalar>)
    detail::index_backward("poly1_cross_entropy_backward", logits, targets, grad_out, opts, grad_logits_out);
  else
    detail::prob_backward("poly1_cross_entropy_backward", logits, targets, grad_out, opts, grad_logits_out);
}

namespace detail {

/// The checks of an nll_loss call.
template <class Derived, class TDerived>
checked_call check_nll(const char* fn, const Eigen::DenseBase<Derived>& log_probs,
                                          const Eigen::DenseBase<TDerived>& targets, const nll_loss_options& opts) {
  check_real<Derived>();
  check_num_threads(fn, opts.num_threads);
  const Eigen::Index samples = check_categorical(fn, "log_probs", log_probs, opts, 0.0);
  const Eigen::Index classes = opts.dim == 0 ? log_probs.rows() : log_probs.cols();
  sample_selection selection = selection_of(fn, opts, samples);
  const double denominator = check_index_targets(fn, targets, samples, classes, opts.ignore_index, opts.weight, selection);
  plan_index_sequences(selection, opts.reduction, targets, opts.ignore_index, opts.weight);
  return {samples, denominator, selection};
}

/// nll_loss reads one entry per sample and writes one per sample: -w[t] * log_probs[t] (0 when
/// ignored), and with a gradient -w[t] * scale(j) at the target, 0 elsewhere.
template <class T, class TDerived, class Scale>
Eigen::Matrix<T, Eigen::Dynamic, 1> nll_losses(const samples_view<const T>& v, const Eigen::DenseBase<TDerived>& targets,
                                               const nll_loss_options& opts, Scale&& scale, const samples_view<T>* grad) {
  const auto target_at = index_targets(targets, opts.ignore_index, selection_in(opts).mask);
  const std::vector<T> weight = weights_in<T>(opts.weight);
  auto w = [&](Index t) { return weight.empty() ? T(1) : weight[std::size_t(t)]; };
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(v.samples);
  parallel_for(v.samples, thread_count(opts.num_threads, v.samples * v.classes), [&](Index j) {
    const Index t = target_at(j);
    losses(j) = t < 0 ? T(0) : -w(t) * v.sample(j)[t * v.class_stride];  // read before the write (in place)
    if (!grad) return;
    T* g = grad->sample(j);
    for (Index k = 0; k < v.classes; ++k) g[k * grad->class_stride] = T(0);
    if (t >= 0) g[t * grad->class_stride] = -w(t) * scale(j);
  });
  return losses;
}

}  // namespace detail

/// Negative log-likelihood of log-probabilities (same layout as cross_entropy's logits) at
/// class-index targets, torch.nn.functional.nll_loss: per sample -w[t] * log_probs[t], 0 when
/// ignored; mean divides by the sum of w[t] over the non-ignored samples (NaN when all are ignored).
/// The input is used as given: it is not checked to be normalised.
template <class Derived, class TDerived>
loss_result<typename Derived::Scalar> nll_loss(const Eigen::DenseBase<Derived>& log_probs,
                                               const Eigen::DenseBase<TDerived>& targets,
                                               const nll_loss_options& opts = {}) {
  using T = typename Derived::Scalar;
  const auto checked = detail::check_nll("nll_loss", log_probs, targets, opts);
  return detail::with_view(log_probs, opts.dim, [&](const detail::samples_view<const T>& v) {
    return detail::reduce_losses(opts.reduction,
                                 detail::nll_losses(v, targets, opts, [](Eigen::Index) { return T(0); },
                                                    static_cast<const detail::samples_view<T>*>(nullptr)),
                                 checked.denominator, checked.selection);
  });
}

/// nll_loss and its gradient w.r.t. log_probs in one call, into grad_log_probs_out (for none, the
/// gradient of the sum of the per-sample losses). It may be log_probs' own storage.
template <class Derived, class TDerived, class OutDerived>
loss_result<typename Derived::Scalar> nll_loss_with_grad(const Eigen::DenseBase<Derived>& log_probs,
                                                         const Eigen::DenseBase<TDerived>& targets,
                                                         const nll_loss_options& opts,
                                                         const Eigen::DenseBase<OutDerived>& grad_log_probs_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "nll_loss_with_grad";
  const auto checked = detail::check_nll(fn, log_probs, targets, opts);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses;
  detail::with_out_view(fn, "grad_log_probs_out", log_probs, grad_log_probs_out, opts.dim, [&](const detail::samples_view<T>& out) {
    detail::with_view(log_probs, opts.dim, [&](const detail::samples_view<const T>& v) {
      losses = detail::nll_losses(v, targets, opts, detail::seed_scale<T>(opts.reduction, checked.denominator, checked.selection),
                                  &out);
    });
  });
  return detail::reduce_losses(opts.reduction, std::move(losses), checked.denominator, checked.selection);
}

/// Gradient of nll_loss with respect to log_probs, times grad_out (a number for mean/sum, one per
/// sample for none), into grad_log_probs_out: -w[t] * scale at each target, 0 elsewhere.
template <class Derived, class TDerived, class G, class OutDerived>
void nll_loss_backward(const Eigen::DenseBase<Derived>& log_probs, const Eigen::DenseBase<TDerived>& targets,
                       const G& grad_out, const nll_loss_options& opts,
                       const Eigen::DenseBase<OutDerived>& grad_log_probs_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "nll_loss_backward";
  const auto checked = detail::check_nll(fn, log_probs, targets, opts);
  const auto scale =
      detail::grad_scale_of<T>(fn, opts.reduction, checked.samples, checked.denominator, grad_out, checked.selection);
  detail::with_out_view(fn, "grad_log_probs_out", log_probs, grad_log_probs_out, opts.dim, [&](const detail::samples_view<T>& out) {
    detail::with_view(log_probs, opts.dim, [&](const detail::samples_view<const T>& v) {
      detail::nll_losses(v, targets, opts, scale, &out);
    });
  });
}

}  // namespace xent

#endif
