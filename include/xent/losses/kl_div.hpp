#ifndef XENT_LOSSES_KL_DIV_HPP
#define XENT_LOSSES_KL_DIV_HPP

// torch.nn.functional.kl_div: the pointwise Kullback-Leibler term of log-probabilities against a
// target, reduced as torch does (batchmean included). The formula is detail/losses/kl_div.hpp, run
// by the elementwise driver. docs/measures.md is the reference.

#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/losses/kl_div.hpp"
#include "binary.hpp"

#include <Eigen/Core>

#include <optional>
#include <vector>

namespace xent {

/// Options of kl_div, with torch's names and defaults.
struct kl_div_options {
  xent::reduction reduction = xent::reduction::mean;  ///< none, mean (over all elements), sum, batchmean (sum / samples)
  bool log_target = false;                            ///< the target holds log-probabilities
  int dim = 0;                                        ///< the class axis; batchmean divides by the other one's length
  int num_threads = 0;                                ///< 0: OpenMP's default; 1: serial. Results do not depend on it.  /// Per-sample weights, mask and normalizer (docs/losses.md, "Sample weights and masks"); a
  /// sample is the run of C entries along dim. mean divides by C times the kept samples' weight,
  /// batchmean by their weight.
  Eigen::VectorXd sample_weight{};
  sample_mask mask{};  ///< one flag per sample (false: left out, as ignore_index); empty: all kept
  std::optional<double> normalizer = std::nullopt;  ///< given: mean and sum divide the weighted sum by it
  /// Sequence-shaped input for reduction sequence_mean / per_sequence (docs/losses.md "Sequences"):
  /// one length T (B = N / T sequences of T consecutive samples) or B lengths summing to N.
  std::vector<Eigen::Index> sequence_lengths{};
};

namespace detail {

template <class T>
engine::elementwise_args<T> args_of(const char* fn, const kl_div_options& o) {
  engine::elementwise_args<T> a{fn, "input", "target"};
  a.r = o.reduction;
  a.dim = o.dim;
  a.num_threads = o.num_threads;
  a.batchmean_allowed = true;
  engine::with_selection(a, o);
  return a;
}

/// f(formula) with the formula of the options' log_target.
template <class F>
decltype(auto) with_kl_div_formula(const kl_div_options& o, F&& f) {
  if (o.log_target) return f(losses::kl_div_log_target{});
  return f(losses::kl_div_probability_target{});
}

}  // namespace detail

/// torch.nn.functional.kl_div(input, target, reduction, log_target): input holds log-probabilities;
/// elementwise target (log target - input) with 0 log 0 = 0 (torch.xlogy), or exp(target) (target -
/// input) when log_target. Reductions: none (elementwise()), sum, mean (over all elements, torch's
/// default), batchmean (sum / samples, the KL divergence per sample).
/// \throws xent::invalid_argument if input is empty, target's shape differs, a (non-log) target is
///   negative or not finite, or dim is not 0/1.
template <class I, class Tg>
loss_result<typename I::Scalar> kl_div(const Eigen::DenseBase<I>& input, const Eigen::DenseBase<Tg>& target,
                                       const kl_div_options& opts = {}) {
  const auto a = detail::args_of<typename I::Scalar>("kl_div", opts);
  return detail::with_kl_div_formula(opts, [&](const auto& f) { return detail::elementwise_forward(f, a, input, target); });
}

/// kl_div and its gradient w.r.t. input in one pass, into grad_input_out (the input's shape; it may
/// be the input itself). For reduction none, the gradient of the sum of the elementwise terms.
template <class I, class Tg, class Out>
loss_result<typename I::Scalar> kl_div_with_grad(const Eigen::DenseBase<I>& input, const Eigen::DenseBase<Tg>& target,
                                                 const kl_div_options& opts, const Eigen::DenseBase<Out>& grad_input_out) {
  const auto a = detail::args_of<typename I::Scalar>("kl_div_with_grad", opts);
  return detail::with_kl_div_formula(
      opts, [&](const auto& f) { return detail::elementwise_with_grad(f, a, "grad_input_out", input, target, grad_input_out); });
}

/// The gradient of kl_div w.r.t. input, times grad_out (a number for mean, sum and batchmean, the
/// input's shape for none), into grad_input_out: -target (or -exp(target) when log_target), divided
/// by numel for mean and by the samples for batchmean.
template <class I, class Tg, class G, class Out>
void kl_div_backward(const Eigen::DenseBase<I>& input, const Eigen::DenseBase<Tg>& target, const G& grad_out,
                     const kl_div_options& opts, const Eigen::DenseBase<Out>& grad_input_out) {
  const auto a = detail::args_of<typename I::Scalar>("kl_div_backward", opts);
  detail::with_kl_div_formula(opts, [&](const auto& f) {
    detail::elementwise_backward(f, a, "grad_input_out", input, target, grad_out, grad_input_out);
  });
}

}  // namespace xent

#endif
