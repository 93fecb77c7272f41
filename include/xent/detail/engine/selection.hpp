#ifndef XENT_DETAIL_ENGINE_SELECTION_HPP
#define XENT_DETAIL_ENGINE_SELECTION_HPP

// Per-sample weights, masks and the external normalizer (the options' sample_weight, mask and
// normalizer; docs/losses.md, "Sample weights and masks"): their checks and the one rule by which
// every loss, per-sample or elementwise, divides its weighted sum.

#include "../../core/error.hpp"
#include "../../core/reduction.hpp"
#include "reduce.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <cmath>
#include <optional>
#include <string>

namespace xent::detail {

/// The per-sample weighting of one call, from the options' sample_weight, mask and normalizer
/// (checked once by selection_of): which samples are kept, what each weighs, and what a reduced
/// loss divides its weighted sum by. Every per-sample loss reads it the same way:
///   value(mean, batchmean) = sum_j w_j l_j / (normalizer or the denominator),
///   value(sum) = sum_j w_j l_j / (normalizer or 1),  none: w_j l_j per sample.
struct sample_selection {
  const double* weight = nullptr;  // one per sample; null: each weighs 1
  const bool* mask = nullptr;      // one per sample; null: all kept
  std::optional<double> normalizer = std::nullopt;

  bool kept(Index j) const { return !mask || mask[j]; }
  double weight_at(Index j) const { return weight ? weight[j] : 1.0; }
  /// What the reduced weighted sum is divided by.
  double divisor(reduction r, double denominator) const {
    if (normalizer) return *normalizer;
    return r == reduction::mean || r == reduction::batchmean ? denominator : 1.0;
  }
};

/// The selection of the options, unchecked (what the kernels rebuild from options already checked).
template <class Options>
sample_selection selection_in(const Options& o) {
  return {o.sample_weight.size() ? o.sample_weight.data() : nullptr, o.mask.size() ? o.mask.data() : nullptr, o.normalizer};
}

/// Checks a sample_weight (empty or one finite weight >= 0 per sample), mask (empty or one flag
/// per sample) and normalizer (absent, or finite and > 0 with a reduced loss).
inline void check_selection(const char* fn, const Eigen::VectorXd& sample_weight, const sample_mask& mask,
                            const std::optional<double>& normalizer, reduction r, Index samples) {
  const std::string per_sample = "must be empty or have one entry per sample (" + std::to_string(samples) + ")";
  if (sample_weight.size() != 0 && sample_weight.size() != samples)
    throw_invalid(fn, "sample_weight", per_sample, sample_weight.size());
  for (Index j = 0; j < sample_weight.size(); ++j)
    if (!(sample_weight(j) >= 0 && std::isfinite(sample_weight(j))))
      throw_invalid(fn, "sample_weight[" + std::to_string(j) + "]", "must be finite and >= 0", sample_weight(j));
  if (mask.size() != 0 && mask.size() != samples) throw_invalid(fn, "mask", per_sample, mask.size());
  if (normalizer) {
    if (!(*normalizer > 0 && std::isfinite(*normalizer)))
      throw_invalid(fn, "normalizer", "must be finite and > 0 when given", *normalizer);
    if (r == reduction::none)
      throw_invalid(fn, "normalizer", "divides a reduced loss and needs reduction mean, sum or batchmean", "reduction none");
  }
}

/// The options' selection, checked (check_selection).
template <class Options>
sample_selection selection_of(const char* fn, const Options& o, Index samples) {
  check_selection(fn, o.sample_weight, o.mask, o.normalizer, o.reduction, samples);
  return selection_in(o);
}

/// The summed weights of the kept samples (the denominator of a loss without class-index targets).
inline double kept_weight(const sample_selection& selection, Index samples) {
  if (!selection.weight && !selection.mask) return double(samples);
  engine::exact_sum total;
  for (Index j = 0; j < samples; ++j)
    if (selection.kept(j)) total.add(selection.weight_at(j));
  return total.value();
}

}  // namespace xent::detail

#endif
