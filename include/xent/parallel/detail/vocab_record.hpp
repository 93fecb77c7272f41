#ifndef XENT_PARALLEL_DETAIL_VOCAB_RECORD_HPP
#define XENT_PARALLEL_DETAIL_VOCAB_RECORD_HPP

// What one rank contributes per sample to the single collective of vocab_parallel_cross_entropy,
// how two contributions combine, and what a combined record gives: the sample's loss and its
// gradient on the rank's own classes. Free of MPI on purpose: the MPI op (mpi_support.hpp) is a
// loop over merge(), so the arithmetic can be read, and tested, on its own.
//
// The loss and gradient formulas are those of the single-process kernel (detail/categorical_kernel.hpp),
// evaluated from the merged record instead of from the whole column: the same sample_normalizer,
// the same expressions, so special values (-inf masks, +inf, NaN) come out exactly as there.

#include "../../detail/categorical_kernel.hpp"
#include "../../detail/layout.hpp"
#include "../../detail/lse_kernel.hpp"
#include "../../kernels/lse_partial.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace xent::parallel::detail {

using xent::detail::Index;
using xent::detail::samples_view;

/// One sample's share of the vocabulary, folded: five T and one count (docs/parallel.md, "The record").
template <class T>
struct vocab_record {
  /// lse_partial over the classes folded in: their max and the sum of exp(x - max).
  T max;
  T sum;
  /// The target's logit from the rank that holds the target, +0 from every other: the merged value
  /// is the logit itself (x + 0 is exact, -inf and NaN included).
  T target_logit;
  /// Label smoothing only: sum_k w_k (x_k - max) and sum_k w_k over the classes folded in. While max
  /// is not finite (all masked, or nothing folded in) smooth holds sum_k w_k x_k unshifted, so that a
  /// -inf (or 0 * -inf = NaN) carries into the total exactly as in the single-process sum.
  T smooth;
  T smooth_weight;
  /// How many ranks hold the target: 1 once merged when the shards tile [0, C).
  std::int64_t holders;

  static constexpr vocab_record identity() noexcept {
    return {-std::numeric_limits<T>::infinity(), T(0), T(0), T(0), T(0), 0};
  }
  lse_partial<T> lse() const noexcept { return {max, sum}; }
};

// Standard layout is what lets MPI describe the record by offsetof (mpi_support.hpp).
static_assert(std::is_standard_layout_v<vocab_record<float>> && std::is_trivially_copyable_v<vocab_record<float>>);
static_assert(std::is_standard_layout_v<vocab_record<double>> && std::is_trivially_copyable_v<vocab_record<double>>);

/// r.smooth re-expressed relative to `max` (>= r.max). Records without a finite max hold their sum
/// unshifted (see vocab_record::smooth); a non-finite merged max makes the loss NaN whatever this is.
template <class T>
T smooth_relative_to(const vocab_record<T>& r, T max) noexcept {
  if (r.max == max || !std::isfinite(r.max)) return r.smooth;
  return r.smooth + r.smooth_weight * (r.max - max);
}

/// Combines the records of two disjoint sets of classes of one sample. Commutative to the bit (the
/// log-sum-exp part is xent::merge, which orders its operands; every other field is a sum of two
/// terms each computed from one operand), so every rank ends with the same bits whatever order the
/// MPI implementation folds them in.
template <class T>
vocab_record<T> merge(const vocab_record<T>& a, const vocab_record<T>& b) noexcept {
  const lse_partial<T> lse = xent::merge(a.lse(), b.lse());
  return {lse.max,
          lse.sum,
          a.target_logit + b.target_logit,
          smooth_relative_to(a, lse.max) + smooth_relative_to(b, lse.max),
          a.smooth_weight + b.smooth_weight,
          a.holders + b.holders};
}

/// What the local part of one call needs to know, besides the logits.
template <class T>
struct shard_setup {
  Index begin = 0;        // global index of the rank's first class
  Index classes = 0;      // C, the whole vocabulary
  xent::detail::categorical_setup<T> loss;  // weights indexed by global class, smoothing, sum of weights
  const double* weight = nullptr;           // the global weight vector (null: every class weighs 1)
  double shard_weight = 0;                  // sum of the weights of the rank's classes
};

/// The record of sample j over the rank's classes (the samples_view's classes), for a target t
/// (global index) that is not ignored.
template <class T>
vocab_record<T> local_record(const samples_view<const T>& v, Index j, Index t, const shard_setup<T>& s) {
  const lse_partial<T> p = xent::detail::lse_partial_of_sample(v, j);
  vocab_record<T> r{p.max, p.sum, T(0), T(0), T(0), 0};
  const T* x = v.sample(j);
  const Index local_t = t - s.begin;
  if (local_t >= 0 && local_t < v.classes) {
    r.target_logit = x[local_t * v.class_stride];
    r.holders = 1;
  }
  if (s.loss.smoothing != 0) {
    // In double: the shard's sum is then far below the single-process kernel's own rounding, so
    // the two results differ by that rounding only.
    const double shift = std::isfinite(p.max) ? double(p.max) : 0.0;
    double acc = 0;
    for (Index k = 0; k < v.classes; ++k) {
      const double w = s.weight ? s.weight[s.begin + k] : 1.0;
      acc += w * (double(x[k * v.class_stride]) - shift);
    }
    r.smooth = static_cast<T>(acc);
    r.smooth_weight = static_cast<T>(s.shard_weight);
  }
  return r;
}

/// The loss of a sample (target t, not ignored) from its merged record: index_target_loss's formula,
///   (1 - eps) * (-w_t * lp_t) + eps / C * sum_k (-w_k * lp_k),  sum_k -w_k lp_k = W log(sum) - smooth.
template <class T>
T record_loss(const vocab_record<T>& r, Index t, const shard_setup<T>& s) {
  const xent::detail::sample_normalizer<T> n(r.lse());
  const T nll = -s.loss.weight[t] * n.log_prob(r.target_logit);
  if (s.loss.smoothing == 0) return nll;
  const T smooth = n.defined ? s.loss.weight_total * n.log_sum - r.smooth : std::numeric_limits<T>::quiet_NaN();
  return (1 - s.loss.smoothing) * nll + s.loss.smoothing / T(s.classes) * smooth;
}

/// c * d loss_j / d x on the rank's classes, from the merged record: index_target_grad's formula,
/// p_k * c * Q - c * q_k, with k running over the rank's classes. Reads x before writing out at the
/// same position, so out may be the logits themselves.
template <class T>
void record_grad(const vocab_record<T>& r, const samples_view<const T>& v, Index j, Index t, const shard_setup<T>& s, T c,
                 const samples_view<T>& out) {
  const xent::detail::sample_normalizer<T> n(r.lse());
  const T* x = v.sample(j);
  T* g = out.sample(j);
  const T eps_c = s.loss.smoothing / T(s.classes);
  const T q_target = (1 - s.loss.smoothing) * s.loss.weight[t];
  const T cQ = c * (q_target + eps_c * s.loss.weight_total);
  for (Index k = 0; k < v.classes; ++k) {
    const Index global = s.begin + k;
    const T q = eps_c * s.loss.weight[global] + (global == t ? q_target : T(0));
    g[k * out.class_stride] = n.prob(x[k * v.class_stride]) * cQ - c * q;
  }
}

}  // namespace xent::parallel::detail

#endif
