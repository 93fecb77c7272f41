#ifndef XENT_LOSSES_CROSS_ENTROPY_HPP
#define XENT_LOSSES_CROSS_ENTROPY_HPP

// cross_entropy and nll_loss with torch.nn.functional's semantics (torch 1.13,
// aten/src/ATen/native/LossNLL.cpp), forward and backward. docs/losses.md is the reference.

#include "../detail/categorical_kernel.hpp"
#include "../detail/ce_kernel.hpp"
#include "../detail/engine/view.hpp"
#include "../core/error.hpp"
#include "../logsumexp.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

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
  /// The class axis: 0 = classes down each column (C x N), 1 = along each row (N x C).
  int dim = 0;
  /// xent extensions for large vocabularies (not in torch; docs/differences-from-torch.md), class-index
  /// targets on a contiguous class axis only:
  /// softcap > 0 replaces each logit x by softcap * tanh(x / softcap) first (Gemma 2); 0 = off.
  double softcap = 0;
  /// z_loss > 0 adds z_loss * lse^2 to each non-ignored sample's loss (PaLM), lse its log-sum-exp.
  double z_loss = 0;
  /// Keep each sample's log-sum-exp (of the soft-capped logits) in the result: loss_result::lse().
  bool return_lse = false;
  /// Threads for one call: 0 takes OpenMP's default (omp_get_max_threads(), OMP_NUM_THREADS), 1 runs
  /// serially. Without OpenMP every call is serial. Results do not depend on it (docs/fused.md).
  int num_threads = 0;
};

namespace detail {

/// The checks every categorical loss shares; returns the sample count.
template <class Derived, class Options>
Eigen::Index check_categorical(const char* fn, const char* x_name, const Eigen::DenseBase<Derived>& x, const Options& o,
                        double smoothing) {
  if constexpr (!std::is_same_v<typename Derived::Scalar, Eigen::bfloat16>) check_real<Derived>();
  check_dim(fn, o.dim);
  check_reduction(fn, o.reduction, false);
  if (!(smoothing >= 0 && smoothing <= 1)) throw_invalid(fn, "label_smoothing", "must be in [0, 1]", smoothing);
  check_not_empty(fn, x_name, x);
  const Eigen::Index classes = o.dim == 0 ? x.rows() : x.cols();
  if (o.weight.size() != 0 && o.weight.size() != classes)
    throw_invalid(fn, "weight", "must be empty or have one entry per class (" + std::to_string(classes) + ")",
                  o.weight.size());
  return o.dim == 0 ? x.cols() : x.rows();
}

/// Checks class-index targets and returns the weighted mean's denominator: the sum of the weights
/// of the non-ignored targets (their count when unweighted), as torch's nll_loss.
template <class TDerived>
double check_index_targets(const char* fn, const Eigen::DenseBase<TDerived>& targets, Eigen::Index samples, Eigen::Index classes,
                           long ignore_index, const Eigen::VectorXd& weight) {
  // Signed, as torch's int64 targets: an unsigned 2^64 - 100 would wrap to the default ignore_index
  // and be skipped without a word.
  static_assert(std::is_integral_v<typename TDerived::Scalar> && std::is_signed_v<typename TDerived::Scalar>,
                "class-index targets must be signed integers (int32 or int64)");
  if (targets.size() != samples)
    throw_invalid(fn, "targets", "must have one entry per sample (" + std::to_string(samples) + ")", targets.size());
  double total = 0;
  for (Eigen::Index j = 0; j < samples; ++j) {
    const long t = static_cast<long>(targets.derived().coeff(j));
    if (t == ignore_index) continue;
    if (t < 0 || t >= classes)
      throw_invalid(fn, "target[" + std::to_string(j) + "]",
                    "must be in [0, " + std::to_string(classes) + ") or ignore_index (" + std::to_string(ignore_index) + ")", t);
    total += weight.size() ? weight(t) : 1.0;
  }
  return total;
}

template <class T>
categorical_setup<T> setup_of(const Eigen::VectorXd& weight, Eigen::Index classes, double smoothing) {
  categorical_setup<T> s;
  s.weight.w = weight.size() ? weight.data() : nullptr;
  s.smoothing = static_cast<T>(smoothing);
  s.weight_total = weight.size() ? static_cast<T>(weight.sum()) : static_cast<T>(classes);
  return s;
}

/// Applies the reduction to loss_of(j) (0 for an ignored sample). The sum is kept in double.
template <class T, class F>
loss_result<T> reduce(reduction r, Eigen::Index samples, double denominator, F&& loss_of) {
  if (r == reduction::none) {
    typename loss_result<T>::vector v(samples);
    for (Eigen::Index j = 0; j < samples; ++j) v(j) = loss_of(j);
    return loss_result<T>::per_sample_losses(std::move(v), denominator);
  }
  double total = 0;
  for (Eigen::Index j = 0; j < samples; ++j) total += static_cast<double>(loss_of(j));
  // mean with every target ignored: 0 / 0 = NaN, as torch.
  return loss_result<T>::reduced(r, static_cast<T>(r == reduction::mean ? total / denominator : total), denominator);
}

/// The upstream gradient of each sample's loss: grad_out for sum, grad_out / denominator for mean,
/// grad_out[j] for none. A scalar grad_out goes with mean/sum, a vector with none.
template <class T, class G>
auto grad_scale_of(const char* fn, reduction r, Eigen::Index samples, double denominator, const G& grad_out) {
  if constexpr (std::is_arithmetic_v<G>) {
    if (r == reduction::none)
      throw_invalid(fn, "grad_out", "must have one entry per sample for reduction none (a vector), not a scalar", grad_out);
    const T c = static_cast<T>(r == reduction::mean ? double(grad_out) / denominator : double(grad_out));
    return [c](Eigen::Index) { return c; };
  } else {
    if (r != reduction::none)
      throw_invalid(fn, "grad_out", std::string("must be a scalar for reduction ") + to_string(r) + ", not a vector of size",
                    grad_out.size());
    if (grad_out.size() != samples)
      throw_invalid(fn, "grad_out", "must have one entry per sample (" + std::to_string(samples) + ")", grad_out.size());
    return [&grad_out](Eigen::Index j) { return static_cast<T>(grad_out.derived().coeff(j)); };
  }
}

/// Calls f with a writable view of out (checked to have x's shape), through a temporary when out
/// has no storage of its own.
template <class Derived, class OutDerived, class F>
void with_out_view(const char* fn, const char* out_name, const Eigen::DenseBase<Derived>& x,
                   const Eigen::DenseBase<OutDerived>& out, int dim, F&& f) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename OutDerived::Scalar>,
                "the gradient buffer must have the input's scalar type");
  if (out.rows() != x.rows() || out.cols() != x.cols())
    throw_invalid(fn, out_name, "must have the shape of the input (" + shape_string(x.rows(), x.cols()) + ")",
                  shape_string(out.rows(), out.cols()));
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  auto& result = const_cast<OutDerived&>(out.derived());
  if constexpr (has_direct_access<OutDerived>) {
    f(view_of(result, dim));
  } else {
    typename OutDerived::PlainObject evaluated(x.rows(), x.cols());
    f(view_of(evaluated, dim));
    result = evaluated;
  }
}

/// The forward of a class-index loss: sample_loss(v, j, target) for each sample whose target is not
/// ignore_index (an ignored sample adds 0 and its logits are never read), reduced as torch does with
/// the given mean denominator.
template <class Derived, class TDerived, class SampleLoss>
auto index_target_forward(const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<TDerived>& targets, long ignore_index,
                          int dim, reduction r, Index samples, double denominator, SampleLoss&& sample_loss) {
  using T = typename Derived::Scalar;
  return with_view(x, dim, [&](const samples_view<const T>& v) {
    return reduce<T>(r, samples, denominator, [&](Index j) {
      const long t = static_cast<long>(targets.derived().coeff(j));
      return t == ignore_index ? T(0) : T(sample_loss(v, j, Index(t)));
    });
  });
}

/// The backward of a class-index loss, sample by sample, into grad_logits_out: an ignored sample
/// gets a zero gradient (its logits are never read), any other sample_grad(v, j, target, out).
template <class Derived, class TDerived, class OutDerived, class SampleGrad>
void index_target_backward(const char* fn, const Eigen::DenseBase<Derived>& logits,
                           const Eigen::DenseBase<TDerived>& targets, long ignore_index, int dim,
                           const Eigen::DenseBase<OutDerived>& grad_logits_out, SampleGrad&& sample_grad) {
  using T = typename Derived::Scalar;
  with_out_view(fn, "grad_logits_out", logits, grad_logits_out, dim, [&](const samples_view<T>& out) {
    with_view(logits, dim, [&](const samples_view<const T>& v) {
      for (Index j = 0; j < v.samples; ++j) {
        const long t = static_cast<long>(targets.derived().coeff(j));
        if (t == ignore_index)
          zero_sample(out, j);
        else
          sample_grad(v, j, Index(t), out);
      }
    });
  });
}

/// The losses of class-index cross_entropy, one per sample (0 when ignored), and when grad is given
/// the gradient times scale(j) written into it. Contiguous classes run the fused kernel
/// (ce_kernel.hpp); a strided class axis the scalar reference path.
template <class S, class TDerived, class Scale>
Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1> index_cross_entropy(const char* fn, const samples_view<const S>& v,
                                                                   const Eigen::DenseBase<TDerived>& targets,
                                                                   const cross_entropy_options& opts, Scale&& scale,
                                                                   const samples_view<S>* grad,
                                                                   Eigen::Matrix<compute_t<S>, Eigen::Dynamic, 1>* lse = nullptr) {
  using T = compute_t<S>;
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(v.samples);
  if (lse) lse->resize(v.samples);
  const long ignore = opts.ignore_index;
  auto target_at = [&targets, ignore](Index j) -> Index {
    const long t = static_cast<long>(targets.derived().coeff(j));
    return t == ignore ? Index(-1) : Index(t);
  };
  if (v.classes_contiguous() && (!grad || grad->classes_contiguous())) {
    std::vector<T> weight(static_cast<size_t>(opts.weight.size()));
    for (size_t k = 0; k < weight.size(); ++k) weight[k] = static_cast<T>(opts.weight(Index(k)));
    fused_setup<T> st;
    st.weight = weight.empty() ? nullptr : weight.data();
    st.smoothing = static_cast<T>(opts.label_smoothing);
    st.weight_total = weight.empty() ? static_cast<T>(v.classes) : static_cast<T>(opts.weight.sum());
    st.classes = v.classes;
    st.softcap = static_cast<T>(opts.softcap);
    st.z_loss = static_cast<T>(opts.z_loss);
    fused_cross_entropy_dispatch(v, st, opts.num_threads, target_at, losses.data(), lse ? lse->data() : nullptr, scale, grad);
    return losses;
  }
  if (opts.softcap != 0 || opts.z_loss != 0 || lse)
    throw_invalid(fn, "logits", "need a contiguous class axis (dim = 0 on column-major storage) for softcap, z_loss or return_lse",
                  "a strided class axis");
  if constexpr (!std::is_same_v<S, T>) {
    throw_invalid(fn, "logits", "bf16 logits need a contiguous class axis (dim = 0 on column-major storage)",
                  "a strided class axis");
  } else {
    const auto setup = setup_of<T>(opts.weight, v.classes, opts.label_smoothing);
    for (Index j = 0; j < v.samples; ++j) {
      const Index t = target_at(j);
      losses(j) = t < 0 ? T(0) : index_target_loss(v, j, t, setup);
    }
    if (grad)
      for (Index j = 0; j < v.samples; ++j) {
        const Index t = target_at(j);
        if (t < 0)
          zero_sample(*grad, j);
        else
          index_target_grad(v, j, t, setup, scale(j), *grad);
      }
  }
  return losses;
}

/// Reduces per-sample losses as torch: in order and in double, so the result does not depend on the
/// thread count.
template <class T>
loss_result<T> reduce_losses(reduction r, Eigen::Matrix<T, Eigen::Dynamic, 1>&& losses, double denominator) {
  if (r == reduction::none) return loss_result<T>::per_sample_losses(std::move(losses), denominator);
  double total = 0;
  for (Eigen::Index j = 0; j < losses.size(); ++j) total += static_cast<double>(losses(j));
  return loss_result<T>::reduced(r, static_cast<T>(r == reduction::mean ? total / denominator : total), denominator);
}

/// The checks of the options only class-index cross_entropy has.
inline void check_index_only_options(const char* fn, const cross_entropy_options& o) {
  if (o.num_threads < 0) throw_invalid(fn, "num_threads", "must be >= 0 (0 = OpenMP's default)", o.num_threads);
  if (!(o.softcap >= 0 && std::isfinite(o.softcap))) throw_invalid(fn, "softcap", "must be finite and >= 0 (0 = off)", o.softcap);
  if (!(o.z_loss >= 0 && std::isfinite(o.z_loss))) throw_invalid(fn, "z_loss", "must be finite and >= 0 (0 = off)", o.z_loss);
}

/// Every check of a class-index cross_entropy call; returns the sample count and the mean's
/// denominator (the summed weights of the non-ignored targets).
template <class Derived, class TDerived>
std::pair<Eigen::Index, double> check_index_cross_entropy(const char* fn, const Eigen::DenseBase<Derived>& logits,
                                                          const Eigen::DenseBase<TDerived>& targets,
                                                          const cross_entropy_options& opts) {
  const Eigen::Index samples = check_categorical(fn, "logits", logits, opts, opts.label_smoothing);
  check_index_only_options(fn, opts);
  const Eigen::Index classes = opts.dim == 0 ? logits.rows() : logits.cols();
  return {samples, check_index_targets(fn, targets, samples, classes, opts.ignore_index, opts.weight)};
}

template <class Derived, class YDerived>
void check_prob_targets(const char* fn, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<YDerived>& y,
                        const cross_entropy_options& opts) {
  const long ignore_index = opts.ignore_index;
  if (opts.softcap != 0 || opts.z_loss != 0 || opts.return_lse)
    throw_invalid(fn, "targets", "must be class indices for softcap, z_loss or return_lse", "probability targets");
  static_assert(std::is_same_v<typename Derived::Scalar, typename YDerived::Scalar>,
                "probability targets must have the logits' scalar type");
  if (y.rows() != x.rows() || y.cols() != x.cols())
    throw_invalid(fn, "targets", "must have the shape of logits (" + shape_string(x.rows(), x.cols()) + ")",
                  shape_string(y.rows(), y.cols()));
  if (ignore_index != -100)
    throw_invalid(fn, "ignore_index", "is not supported with probability targets and must stay -100", ignore_index);
}

}  // namespace detail

/// Cross-entropy of logits against class-index targets, torch.nn.functional.cross_entropy.
///
/// logits: C x N (dim = 0, the default; a torch [N, C] buffer) or N x C (dim = 1), float or double.
/// targets: one integer (int32 or int64) per sample, in [0, C) or equal to ignore_index.
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
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "cross_entropy";
  const auto checked = detail::check_index_cross_entropy(fn, logits, targets, opts);
  const double denominator = checked.second;
  return detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
    auto no_gradient = [](Eigen::Index) { return T(0); };
    Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
    auto result = detail::reduce_losses(
        opts.reduction,
        detail::index_cross_entropy(fn, v, targets, opts, no_gradient, static_cast<const detail::samples_view<S>*>(nullptr),
                                    opts.return_lse ? &lse : nullptr),
        denominator);
    return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
  });
}

/// Cross-entropy of logits against probability targets (same shape and class axis as logits):
/// per sample -sum_k log_softmax(x)_k * ((1 - eps) y_k + eps / C) * w_k; mean divides by the sample
/// count (not by weights), as torch. As torch, a zero probability on a -inf logit gives NaN.
template <class Derived, class YDerived,
          std::enable_if_t<!std::is_integral_v<typename YDerived::Scalar>, int> = 0>
loss_result<typename Derived::Scalar> cross_entropy(const Eigen::DenseBase<Derived>& logits,
                                                    const Eigen::DenseBase<YDerived>& targets,
                                                    const cross_entropy_options& opts = {}) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "cross_entropy";
  const Eigen::Index samples = detail::check_categorical(fn, "logits", logits, opts, opts.label_smoothing);
  detail::check_prob_targets(fn, logits, targets, opts);
  const Eigen::Index classes = opts.dim == 0 ? logits.rows() : logits.cols();
  const auto setup = detail::setup_of<T>(opts.weight, classes, opts.label_smoothing);
  return detail::with_view(logits, opts.dim, [&](const detail::samples_view<const T>& v) {
    return detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& y) {
      return detail::reduce<T>(opts.reduction, samples, double(samples),
                               [&](Eigen::Index j) { return detail::prob_target_loss(v, y, j, setup); });
    });
  });
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
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "cross_entropy_backward";
  const auto checked = detail::check_index_cross_entropy(fn, logits, targets, opts);
  const Eigen::Index samples = checked.first;
  const double denominator = checked.second;
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, samples, denominator, grad_out);
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
      detail::index_cross_entropy(fn, v, targets, opts, scale, &out);
    });
  });
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
  using S = typename Derived::Scalar;
  using T = detail::compute_t<S>;
  constexpr const char* fn = "cross_entropy_with_grad";
  const auto checked = detail::check_index_cross_entropy(fn, logits, targets, opts);
  const double denominator = checked.second;
  const T c = opts.reduction == reduction::mean ? static_cast<T>(1.0 / denominator) : T(1);
  auto scale = [c](Eigen::Index) { return c; };
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses, lse;
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<S>& out) {
    detail::with_view(logits, opts.dim, [&](const detail::samples_view<const S>& v) {
      losses = detail::index_cross_entropy(fn, v, targets, opts, scale, &out, opts.return_lse ? &lse : nullptr);
    });
  });
  auto result = detail::reduce_losses(opts.reduction, std::move(losses), denominator);
  return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
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

/// Gradient of cross_entropy with probability targets with respect to the logits; see the
/// class-index overload. (No gradient is computed for the targets.)
template <class Derived, class YDerived, class G, class OutDerived,
          std::enable_if_t<!std::is_integral_v<typename YDerived::Scalar>, int> = 0>
void cross_entropy_backward(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<YDerived>& targets,
                            const G& grad_out, const cross_entropy_options& opts,
                            const Eigen::DenseBase<OutDerived>& grad_logits_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "cross_entropy_backward";
  const Eigen::Index samples = detail::check_categorical(fn, "logits", logits, opts, opts.label_smoothing);
  detail::check_prob_targets(fn, logits, targets, opts);
  const Eigen::Index classes = opts.dim == 0 ? logits.rows() : logits.cols();
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, samples, double(samples), grad_out);
  const auto setup = detail::setup_of<T>(opts.weight, classes, opts.label_smoothing);
  detail::with_out_view(fn, "grad_logits_out", logits, grad_logits_out, opts.dim, [&](const detail::samples_view<T>& out) {
    detail::with_view(logits, opts.dim, [&](const detail::samples_view<const T>& v) {
      detail::with_view(targets, opts.dim, [&](const detail::samples_view<const T>& y) {
        for (Eigen::Index j = 0; j < samples; ++j) detail::prob_target_grad(v, y, j, setup, scale(j), out);
      });
    });
  });
}

/// Negative log-likelihood of log-probabilities (same layout as cross_entropy's logits) at
/// class-index targets, torch.nn.functional.nll_loss: per sample -w[t] * log_probs[t], 0 when
/// ignored; mean divides by the sum of w[t] over the non-ignored samples (NaN when all are ignored).
/// The input is used as given: it is not checked to be normalised.
template <class Derived, class TDerived>
loss_result<typename Derived::Scalar> nll_loss(const Eigen::DenseBase<Derived>& log_probs,
                                               const Eigen::DenseBase<TDerived>& targets,
                                               const nll_loss_options& opts = {}) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "nll_loss";
  const Eigen::Index samples = detail::check_categorical(fn, "log_probs", log_probs, opts, 0.0);
  const Eigen::Index classes = opts.dim == 0 ? log_probs.rows() : log_probs.cols();
  const double denominator = detail::check_index_targets(fn, targets, samples, classes, opts.ignore_index, opts.weight);
  const detail::class_weights<T> w{opts.weight.size() ? opts.weight.data() : nullptr};
  return detail::index_target_forward(log_probs, targets, opts.ignore_index, opts.dim, opts.reduction, samples, denominator,
                                      [&](const auto& v, Eigen::Index j, Eigen::Index t) {
                                        return -w[t] * v.sample(j)[t * v.class_stride];
                                      });
}

/// Gradient of nll_loss with respect to log_probs, times grad_out (a number for mean/sum, one per
/// sample for none), into grad_log_probs_out: -w[t] * scale at each target, 0 elsewhere.
template <class Derived, class TDerived, class G, class OutDerived>
void nll_loss_backward(const Eigen::DenseBase<Derived>& log_probs, const Eigen::DenseBase<TDerived>& targets,
                       const G& grad_out, const nll_loss_options& opts,
                       const Eigen::DenseBase<OutDerived>& grad_log_probs_out) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "nll_loss_backward";
  const Eigen::Index samples = detail::check_categorical(fn, "log_probs", log_probs, opts, 0.0);
  const Eigen::Index classes = opts.dim == 0 ? log_probs.rows() : log_probs.cols();
  const double denominator = detail::check_index_targets(fn, targets, samples, classes, opts.ignore_index, opts.weight);
  const auto scale = detail::grad_scale_of<T>(fn, opts.reduction, samples, denominator, grad_out);
  const detail::class_weights<T> w{opts.weight.size() ? opts.weight.data() : nullptr};
  detail::with_out_view(fn, "grad_log_probs_out", log_probs, grad_log_probs_out, opts.dim, [&](const detail::samples_view<T>& out) {
    for (Eigen::Index j = 0; j < samples; ++j) {
      detail::zero_sample(out, j);
      const long t = static_cast<long>(targets.derived().coeff(j));
      if (t != opts.ignore_index) out.sample(j)[t * out.class_stride] = -w[t] * scale(j);
    }
  });
}

}  // namespace xent

#endif
