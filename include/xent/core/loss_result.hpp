#ifndef XENT_CORE_LOSS_RESULT_HPP
#define XENT_CORE_LOSS_RESULT_HPP

// What every loss returns: the reduced value, or the unreduced losses (one per sample for the
// categorical losses, the input's shape for the elementwise ones), the mean's denominator and,
// where a loss computes it, each sample's log-sum-exp.

#include "error.hpp"
#include "reduction.hpp"

#include <Eigen/Core>

#include <limits>
#include <utility>

namespace xent {

/// A loss's result. Asking for a form the reduction did not produce throws, so a mismatch between
/// the options and the reading code cannot go unnoticed.
template <class T>
class loss_result {
 public:
  /// One entry per sample: per_sample() and lse().
  using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  /// The input's shape: elementwise().
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

  /// reduction mean, sum or batchmean: value() returns `value`, denominator() `denominator`.
  static loss_result reduced(xent::reduction r, T value, double denominator) {
    loss_result out(r, denominator);
    out.value_ = value;
    return out;
  }
  /// reduction none of a categorical loss: one loss per sample.
  static loss_result per_sample_losses(vector losses, double denominator) {
    loss_result out(xent::reduction::none, denominator);
    out.per_sample_ = std::move(losses);
    out.shape_ = unreduced_shape::per_sample;
    return out;
  }
  /// reduction per_sequence: one loss per sequence (each sequence's weighted mean over its tokens).
  static loss_result per_sequence_losses(vector losses, double denominator) {
    loss_result out(xent::reduction::per_sequence, denominator);
    out.per_sample_ = std::move(losses);
    out.shape_ = unreduced_shape::per_sequence;
    return out;
  }
  /// reduction none of an elementwise loss: the input's shape.
  static loss_result elementwise_losses(matrix losses, double denominator) {
    loss_result out(xent::reduction::none, denominator);
    out.elementwise_ = std::move(losses);
    out.shape_ = unreduced_shape::elementwise;
    return out;
  }

  /// The reduction that produced this result (the options' reduction).
  xent::reduction reduction() const noexcept { return reduction_; }

  /// The reduced loss. \throws xent::invalid_argument for reduction::none.
  T value() const {
    if (reduction_ == xent::reduction::none || reduction_ == xent::reduction::per_sequence)
      detail::throw_invalid("loss_result::value", "reduction",
                            "must be mean, sum or batchmean (or sequence_mean) for a scalar loss", to_string(reduction_));
    return value_;
  }
  /// One loss per sample (reduction none of a categorical loss: cross_entropy, nll_loss, the focal
  /// and distillation losses, ...). \throws xent::invalid_argument otherwise.
  const vector& per_sample() const {
    if (shape_ != unreduced_shape::per_sample)
      detail::throw_invalid("loss_result::per_sample", "reduction",
                            "must be none of a per-sample loss (an elementwise loss's are elementwise())",
                            reduction_ == xent::reduction::none ? "none of an elementwise loss" : to_string(reduction_));
    return per_sample_;
  }
  /// One loss per sequence (reduction per_sequence; NaN for a sequence with no kept token).
  /// \throws xent::invalid_argument otherwise.
  const vector& per_sequence() const {
    if (shape_ != unreduced_shape::per_sequence)
      detail::throw_invalid("loss_result::per_sequence", "reduction", "must be per_sequence", to_string(reduction_));
    return per_sample_;
  }
  /// The losses in the input's shape (reduction none of an elementwise loss: binary_cross_entropy,
  /// binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss). \throws xent::invalid_argument otherwise.
  const matrix& elementwise() const {
    if (shape_ != unreduced_shape::elementwise)
      detail::throw_invalid("loss_result::elementwise", "reduction",
                            "must be none of an elementwise loss (a per-sample loss's are per_sample())",
                            reduction_ == xent::reduction::none ? "none of a per-sample loss" : to_string(reduction_));
    return elementwise_;
  }
  /// What reduction::mean divides the sum by (for every reduction, so that a caller can combine
  /// micro-batches or ranks exactly): cross_entropy and nll_loss the summed weights of the kept
  /// samples, the other categorical losses the kept samples, the elementwise losses the element
  /// count (batchmean: the samples); sequence_mean and per_sequence: the sequences with a kept
  /// token (B', what sequence_mean divides by). NaN-free: 0 when every sample was ignored.
  double denominator() const noexcept { return denominator_; }

  /// Each sample's log-sum-exp (NaN for an ignored sample), when the options asked for it
  /// (return_lse). \throws xent::invalid_argument otherwise.
  const vector& lse() const {
    if (!has_lse_) detail::throw_invalid("loss_result::lse", "return_lse", "must be true in the options", "false");
    return lse_;
  }
  /// Attaches each sample's log-sum-exp, which lse() then returns (how the losses fill return_lse).
  loss_result&& with_lse(vector lse) && {
    lse_ = std::move(lse);
    has_lse_ = true;
    return std::move(*this);
  }

 private:
  enum class unreduced_shape { none, per_sample, elementwise, per_sequence };
  loss_result(xent::reduction r, double denominator) : reduction_(r), denominator_(denominator) {}

  xent::reduction reduction_;
  double denominator_;
  T value_ = std::numeric_limits<T>::quiet_NaN();
  unreduced_shape shape_ = unreduced_shape::none;
  vector per_sample_;
  matrix elementwise_;
  vector lse_;
  bool has_lse_ = false;
};

}  // namespace xent

#endif
