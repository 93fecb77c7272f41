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
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent::detail {

/// The per-sample weighting of one call, from the options' sample_weight, mask and normalizer
/// (checked once by selection_of): which samples are kept, what each weighs, and what a reduced
/// loss divides its weighted sum by. Every per-sample loss reads it the same way:
///   value(mean, batchmean) = sum_j w_j l_j / (normalizer or the denominator),
///   value(sum) = sum_j w_j l_j / (normalizer or 1),  none: w_j l_j per sample.
/// The sequences of a call with a sequence reduction (docs/losses.md "Sequences"): B sequences
/// of consecutive samples (tokens). With D_s = sum over the kept tokens j of sequence s of a_j
/// times the loss's own denominator weight (cw[target_j] for cross_entropy and nll_loss, else 1),
/// and B' the sequences with D_s > 0, every token gets the effective weight
///   per_sequence:  a_j / D_s,          sequence_mean:  a_j / (B' D_s)      (0 when D_s = 0)
/// so that the loss is a weighted sum, and its gradient the weighted sum's, with no per-loss code.
struct sequence_plan {
  std::vector<Index> start;          // B + 1 offsets: sequence s is [start[s], start[s + 1])
  std::vector<Index> sequence_of;    // each token's sequence
  std::vector<double> denominator;   // D_s
  std::vector<double> weight;        // each token's effective weight
  Index kept_sequences = 0;          // B'
  Index count() const { return Index(start.size()) - 1; }
};

struct sample_selection {
  const double* weight = nullptr;  // one per sample; null: each weighs 1
  const bool* mask = nullptr;      // one per sample; null: all kept
  std::optional<double> normalizer = std::nullopt;
  /// The options' sequence_lengths when the reduction is a sequence reduction (else null), and,
  /// once the loss has its denominators, the plan they give (weight then points into it).
  const std::vector<Index>* sequence_lengths = nullptr;
  std::shared_ptr<const sequence_plan> sequences = nullptr;

  bool kept(Index j) const { return !mask || mask[j]; }
  double weight_at(Index j) const { return weight ? weight[j] : 1.0; }
  /// What the reduced weighted sum is divided by (1 for the sequence reductions: their weights
  /// hold the division).
  double divisor(reduction r, double denominator) const {
    if (is_sequence_reduction(r)) return 1.0;
    if (normalizer) return *normalizer;
    return r == reduction::mean || r == reduction::batchmean ? denominator : 1.0;
  }
};

/// Whether an options struct has sequence_lengths (the losses with a per-sample axis).
template <class Options, class = void>
struct has_sequence_lengths : std::false_type {};
template <class Options>
struct has_sequence_lengths<Options, std::void_t<decltype(std::declval<const Options&>().sequence_lengths)>>
    : std::true_type {};
template <class Options>
inline constexpr bool has_sequence_lengths_v = has_sequence_lengths<Options>::value;

/// The selection of the options, unchecked (what the kernels rebuild from options already checked).
template <class Options>
sample_selection selection_in(const Options& o) {
  sample_selection s{o.sample_weight.size() ? o.sample_weight.data() : nullptr, o.mask.size() ? o.mask.data() : nullptr,
                     o.normalizer};
  if constexpr (has_sequence_lengths_v<Options>)
    if (is_sequence_reduction(o.reduction)) s.sequence_lengths = &o.sequence_lengths;
  return s;
}

/// Checks sequence_lengths against N samples: empty without a sequence reduction; with one, either
/// one length T > 0 that divides N (B = N / T sequences of T tokens) or B > 1 lengths >= 0 that sum
/// to N (ragged sequences, in sample order).
inline void check_sequence_lengths(const char* fn, const std::vector<Index>& lengths, reduction r, Index samples) {
  if (!is_sequence_reduction(r)) {
    if (!lengths.empty())
      throw_invalid(fn, "sequence_lengths", "must be empty unless the reduction is sequence_mean or per_sequence",
                    std::string("reduction ") + to_string(r));
    return;
  }
  if (lengths.empty())
    throw_invalid(fn, "sequence_lengths",
                  std::string("must be given for reduction ") + to_string(r) + " (one length T, or one length per sequence)",
                  "empty");
  if (lengths.size() == 1) {
    const Index t = lengths[0];
    if (t <= 0) throw_invalid(fn, "sequence_lengths", "must hold a sequence length > 0", t);
    if (samples % t != 0)
      throw_invalid(fn, "sequence_lengths",
                    "must hold a sequence length that divides the sample count (" + std::to_string(samples) + ")", t);
    return;
  }
  long long total = 0;
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] < 0)
      throw_invalid(fn, "sequence_lengths[" + std::to_string(s) + "]", "must be >= 0", lengths[s]);
    total += lengths[s];
  }
  if (total != samples)
    throw_invalid(fn, "sequence_lengths",
                  "must sum to the sample count (" + std::to_string(samples) + ")", "a sum of " + std::to_string(total));
}

/// Builds the sequence plan of a selection with sequence_lengths (else does nothing): token j's
/// denominator weight is contribution(j) (0 for a token not kept), D_s their sum over the sequence.
template <class F>
void plan_sequences(sample_selection& s, reduction r, Index samples, F&& contribution) {
  if (!s.sequence_lengths || !is_sequence_reduction(r)) return;
  auto plan = std::make_shared<sequence_plan>();
  const std::vector<Index>& lengths = *s.sequence_lengths;
  const Index uniform = lengths.size() == 1 ? lengths[0] : 0;
  const Index count = uniform ? samples / uniform : Index(lengths.size());
  plan->start.resize(std::size_t(count) + 1);
  plan->start[0] = 0;
  for (Index q = 0; q < count; ++q) plan->start[std::size_t(q) + 1] = plan->start[std::size_t(q)] + (uniform ? uniform : lengths[std::size_t(q)]);
  plan->sequence_of.resize(std::size_t(samples));
  plan->denominator.assign(std::size_t(count), 0.0);
  plan->weight.assign(std::size_t(samples), 0.0);
  for (Index q = 0; q < count; ++q) {
    engine::exact_sum d;
    for (Index j = plan->start[std::size_t(q)]; j < plan->start[std::size_t(q) + 1]; ++j) {
      plan->sequence_of[std::size_t(j)] = q;
      if (s.kept(j)) d.add(contribution(j));
    }
    plan->denominator[std::size_t(q)] = d.value();
    if (d.value() > 0) ++plan->kept_sequences;
  }
  const double per_sequence = r == reduction::sequence_mean && plan->kept_sequences ? 1.0 / double(plan->kept_sequences) : 1.0;
  for (Index j = 0; j < samples; ++j) {
    const double d = plan->denominator[std::size_t(plan->sequence_of[std::size_t(j)])];
    if (s.kept(j) && d > 0) plan->weight[std::size_t(j)] = s.weight_at(j) / d * per_sequence;
  }
  s.weight = plan->weight.data();
  s.sequences = std::move(plan);
}

/// plan_sequences with each kept token weighing its sample weight (the losses without class weights
/// or class-index targets).
inline void plan_kept_sequences(sample_selection& s, reduction r, Index samples) {
  plan_sequences(s, r, samples, [&s](Index j) { return s.weight_at(j); });
}

/// Checks a sample_weight (empty or one finite weight >= 0 per sample), mask (empty or one flag
/// per sample) and normalizer (absent, or finite and > 0 with a reduced loss).
inline void check_selection(const char* fn, const Eigen::VectorXd& sample_weight, const sample_mask& mask,
                            const std::optional<double>& normalizer, reduction r, Index samples) {
  const std::string per_sample = "must be empty or have one entry per sample (" + std::to_string(samples) + ")";
  if (sample_weight.size() != 0 && sample_weight.size() != samples)
    throw_invalid(fn, "sample_weight", per_sample, sample_weight.size());
  // One branch-free pass over the weights (GCC -O3 and Clang -O2 vectorise it), and only when it
  // fails the pass that names the first bad weight: a test and a branch per weight were 2 % of a
  // C = 10 forward.
  const double largest = std::numeric_limits<double>::max();
  const double* w = sample_weight.data();
  long bad = 0;
  for (Index j = 0; j < sample_weight.size(); ++j) bad |= long(w[j] < 0) | long(w[j] > largest) | long(w[j] != w[j]);
  if (bad)
    for (Index j = 0; j < sample_weight.size(); ++j)
      if (!(sample_weight(j) >= 0 && std::isfinite(sample_weight(j))))
        throw_invalid(fn, "sample_weight[" + std::to_string(j) + "]", "must be finite and >= 0", sample_weight(j));
  if (mask.size() != 0 && mask.size() != samples) throw_invalid(fn, "mask", per_sample, mask.size());
  if (normalizer) {
    if (!(*normalizer > 0 && std::isfinite(*normalizer)))
      throw_invalid(fn, "normalizer", "must be finite and > 0 when given", *normalizer);
    if (r == reduction::none || is_sequence_reduction(r))
      throw_invalid(fn, "normalizer", "divides a reduced loss and needs reduction mean, sum or batchmean",
                    std::string("reduction ") + to_string(r));
  }
}

/// The options' selection, checked (check_selection, check_sequence_lengths).
template <class Options>
sample_selection selection_of(const char* fn, const Options& o, Index samples) {
  check_selection(fn, o.sample_weight, o.mask, o.normalizer, o.reduction, samples);
  if constexpr (has_sequence_lengths_v<Options>) check_sequence_lengths(fn, o.sequence_lengths, o.reduction, samples);
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
