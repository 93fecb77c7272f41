#ifndef XENT_LOSSES_SAMPLE_WEIGHTING_HPP
#define XENT_LOSSES_SAMPLE_WEIGHTING_HPP

// The mean's denominator of a per-sample loss without its logits: what a training loop adds up over
// its micro-batches (or allreduce_sum over its ranks) before the first forward, and passes back as
// every call's normalizer, so that the pieces sum to the whole batch's mean (docs/losses.md,
// "Sample weights and masks").

#include "../core/error.hpp"
#include "../detail/engine/per_sample.hpp"

#include <Eigen/Core>

#include <limits>
#include <type_traits>

namespace xent {

namespace detail {

template <class Options, class = void>
struct has_class_weight : std::false_type {};
template <class Options>
struct has_class_weight<Options, std::void_t<decltype(std::declval<const Options&>().weight)>> : std::true_type {};

}  // namespace detail

/// The denominator a call with these class-index targets and options reports as
/// loss_result::denominator(): the sum over the kept samples (mask true, target not ignore_index) of
/// the sample weight times the target's class weight (for options with class weights: cross_entropy,
/// nll_loss), computed from the targets alone.
/// \throws xent::invalid_argument for a bad sample_weight or mask, or a kept target that is negative
///   or beyond the class weights (the loss itself checks the targets against the class count).
template <class TDerived, class Options>
double mean_denominator(const Eigen::DenseBase<TDerived>& targets, const Options& opts) {
  constexpr const char* fn = "mean_denominator";
  const Eigen::Index samples = targets.size();
  const detail::sample_selection selection = detail::selection_of(fn, opts, samples);
  Eigen::VectorXd no_weight;
  const Eigen::VectorXd* weight = &no_weight;
  if constexpr (detail::has_class_weight<Options>::value) weight = &opts.weight;
  // Without class weights any non-negative class is as good as another here.
  const Eigen::Index classes = weight->size() ? weight->size() : Eigen::Index(std::numeric_limits<long>::max());
  return detail::check_index_targets(fn, targets, samples, classes, opts.ignore_index, *weight, selection);
}

}  // namespace xent

#endif
