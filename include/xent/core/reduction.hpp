#ifndef XENT_CORE_REDUCTION_HPP
#define XENT_CORE_REDUCTION_HPP

// What the losses share: torch's reduction names. Each loss has its own small options struct with
// torch's field names and defaults (e.g. cross_entropy_options{weight, ignore_index = -100,
// reduction = mean, label_smoothing = 0}), built on these.

#include "error.hpp"

#include <Eigen/Core>

#include <optional>

namespace xent {

/// A per-sample keep/ignore flag (the options' `mask`): false leaves the sample out, as a target
/// equal to ignore_index does. Build one from any 0/1 buffer with `(m.array() != 0)`.
using sample_mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

/// torch's `reduction`: none (one loss per sample), mean (torch's per-loss definition, e.g. the
/// weighted mean for cross_entropy), sum. kl_div adds batchmean.
enum class reduction { none, mean, sum, batchmean };

/// torch's name for the reduction, for messages.
inline const char* to_string(reduction r) noexcept {
  switch (r) {
    case reduction::none: return "none";
    case reduction::mean: return "mean";
    case reduction::sum: return "sum";
    case reduction::batchmean: return "batchmean";
  }
  return "?";
}

namespace detail {

/// Every loss checks its reduction here: a value outside the enum (a cast integer) would otherwise
/// fall through to a silent sum; batchmean is kl_div's only.
inline void check_reduction(const char* function, reduction r, bool batchmean_allowed) {
  const int code = static_cast<int>(r);
  if (code < static_cast<int>(reduction::none) || code > static_cast<int>(reduction::batchmean))
    throw_invalid(function, "reduction", "must be none, mean, sum or batchmean", code);
  if (r == reduction::batchmean && !batchmean_allowed)
    throw_invalid(function, "reduction", "must be none, mean or sum (batchmean is kl_div's only)", to_string(r));
}

}  // namespace detail
}  // namespace xent

#endif
