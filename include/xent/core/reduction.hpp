#ifndef XENT_CORE_REDUCTION_HPP
#define XENT_CORE_REDUCTION_HPP

// What the losses share: torch's reduction names. Each loss has its own small options struct with
// torch's field names and defaults (e.g. cross_entropy_options{weight, ignore_index = -100,
// reduction = mean, label_smoothing = 0}), built on these.

#include "error.hpp"

#include <Eigen/Core>

#include <optional>
#include <string>

namespace xent {

/// A per-sample keep/ignore flag (the options' `mask`): false leaves the sample out, as a target
/// equal to ignore_index does. Build one from any 0/1 buffer with `(m.array() != 0)`.
using sample_mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

/// torch's `reduction`: none (one loss per sample), mean (torch's per-loss definition, e.g. the
/// weighted mean for cross_entropy), sum. kl_div adds batchmean. xent adds two for sequence-shaped
/// input (the options' sequence_lengths; docs/losses.md "Sequences"): sequence_mean (each
/// sequence's mean over its tokens, then the mean over the sequences) and per_sequence (each
/// sequence's mean over its tokens: one loss per sequence).
enum class reduction { none, mean, sum, batchmean, sequence_mean, per_sequence };

/// How label smoothing spreads its mass eps. uniform (torch's): the target becomes
/// (1 - eps) onehot + eps / C, every class, the target's own included, gets eps / C. other_classes
/// (Megatron-LM / NeMo's, the textbooks' [0.9, 0.05, 0.05]): the target keeps 1 - eps and each other
/// class gets eps / (C - 1). Class-index targets only; other_classes needs C >= 2.
enum class label_smoothing_kind { uniform, other_classes };

/// torch's name for the reduction, for messages.
inline const char* to_string(reduction r) noexcept {
  switch (r) {
    case reduction::none: return "none";
    case reduction::mean: return "mean";
    case reduction::sum: return "sum";
    case reduction::batchmean: return "batchmean";
    case reduction::sequence_mean: return "sequence_mean";
    case reduction::per_sequence: return "per_sequence";
  }
  return "?";
}

namespace detail {

/// A sequence reduction (sequence_mean, per_sequence): the options' sequence_lengths apply.
inline bool is_sequence_reduction(reduction r) noexcept {
  return r == reduction::sequence_mean || r == reduction::per_sequence;
}

/// Every loss checks its reduction here: a value outside the enum (a cast integer) would otherwise
/// fall through to a silent sum; batchmean is kl_div's only; the sequence reductions need a loss
/// with a per-sample axis that takes sequence_lengths (sequences_allowed).
inline void check_reduction(const char* function, reduction r, bool batchmean_allowed, bool sequences_allowed = false) {
  const int code = static_cast<int>(r);
  if (code < static_cast<int>(reduction::none) || code > static_cast<int>(reduction::per_sequence))
    throw_invalid(function, "reduction", "must be none, mean, sum or batchmean (or sequence_mean, per_sequence)", code);
  if (r == reduction::batchmean && !batchmean_allowed)
    throw_invalid(function, "reduction", "must be none, mean or sum (batchmean is kl_div's only)", to_string(r));
  if (is_sequence_reduction(r) && !sequences_allowed)
    throw_invalid(function, "reduction",
                  "must not be a sequence reduction: this function has no per-sample sequence_lengths", to_string(r));
}

/// The torch-form smoothing eps' that gives the kind's target: other_classes is torch's uniform
/// smoothing with eps' = eps C / (C - 1) (then eps' / C = eps / (C - 1) and 1 - eps' + eps' / C = 1 - eps).
inline double torch_smoothing_of(const char* function, double eps, label_smoothing_kind kind, long long classes) {
  const int code = static_cast<int>(kind);
  if (code < 0 || code > 1) throw_invalid(function, "label_smoothing_kind", "must be uniform or other_classes", code);
  if (kind == label_smoothing_kind::uniform || eps == 0) return eps;
  if (classes < 2)
    throw_invalid(function, "label_smoothing_kind", "other_classes needs at least 2 classes (eps / (C - 1))",
                  "C = " + std::to_string(classes));
  return eps * double(classes) / double(classes - 1);
}

}  // namespace detail
}  // namespace xent

#endif
