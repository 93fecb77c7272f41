#ifndef XENT_PARALLEL_DETAIL_VOCAB_RECORD_HPP
#define XENT_PARALLEL_DETAIL_VOCAB_RECORD_HPP

// What one rank contributes per sample to the single collective of vocab_parallel_cross_entropy,
// how two contributions combine, and what a combined record gives: the sample's loss and its
// gradient on the rank's own classes. Free of MPI on purpose: the MPI op (mpi_support.hpp) is a
// loop over merge(), so the arithmetic can be read, and tested, on its own.
//
// Both ends are the single-process fused kernel's (detail/losses/cross_entropy.hpp): a rank summarizes its
// classes of a sample with summarize_logits, as cross_entropy summarizes a whole sample, and the
// merged record is read back as a sample_summary by fused_loss and fused_grad. So the formulas,
// the special values (-inf masks, +inf, NaN) and bf16's widening are those of cross_entropy.

#include "../../core/lse_partial.hpp"
#include "../../detail/engine/threads.hpp"
#include "../../detail/engine/view.hpp"
#include "../../detail/losses/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

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

/// What the record functions know of one call. T is the compute type (float for bf16 logits).
template <class T>
struct shard_setup {
  xent::detail::fused_setup<T> global;  // the whole vocabulary: weights by global class, classes = C
  xent::detail::fused_setup<T> local;   // the same, weights from the shard's first class on
  Index begin = 0;                      // global index of the shard's first class
};

/// The record of one sample from the rank's n contiguous logits x, for a target (not ignored) at
/// t_local in the shard, or outside [0, n) when another rank holds it.
template <xent::detail::chunk_sums Sums, class S>
vocab_record<xent::detail::compute_t<S>> local_record(const S* x, Index n, Index t_local,
                                                       const shard_setup<xent::detail::compute_t<S>>& s) {
  using T = xent::detail::compute_t<S>;
  xent::detail::fused_setup<T> shard_only = s.local;
  shard_only.classes = n;  // the kernel reads the shard's n logits
  const xent::detail::sample_summary<T> summary = xent::detail::summarize_logits<Sums>(x, n, shard_only);
  vocab_record<T> r{summary.partial.max, summary.partial.sum, T(0), T(0), T(0), 0};
  if (t_local >= 0 && t_local < n) {
    r.target_logit = static_cast<T>(x[t_local]);
    r.holders = 1;
  }
  if constexpr (Sums != xent::detail::chunk_sums::none) {
    constexpr bool weighted = Sums == xent::detail::chunk_sums::weighted_logits;
    const T sum = weighted ? summary.weighted_sum : summary.logit_sum;
    r.smooth_weight = weighted ? summary.weight_sum : static_cast<T>(n);
    // The summary's sums are relative to its first chunk's max; the record's to the record's max.
    r.smooth = std::isfinite(r.max) ? sum + r.smooth_weight * (summary.ref - r.max) : sum;
  }
  return r;
}

/// A merged record as the summary fused_loss and fused_grad read: sums relative to its max.
template <class T>
xent::detail::sample_summary<T> summary_of(const vocab_record<T>& r) {
  xent::detail::sample_summary<T> s;
  s.partial = r.lse();
  s.ref = std::isfinite(r.max) ? r.max : T(0);
  s.logit_sum = r.smooth;
  s.weighted_sum = r.smooth;
  s.weight_sum = r.smooth_weight;
  s.empty = false;
  return s;
}

/// The loss of a sample (global target t, not ignored) from its merged record. The record carries
/// the target's raw logit (summed exactly across ranks); the loss reads it softcapped, as the
/// summaries are.
template <class T>
T record_loss(const vocab_record<T>& r, Index t, const shard_setup<T>& s) {
  return xent::detail::fused_loss(summary_of(r), xent::detail::engine::value_of(r.target_logit, s.global.transform()), t,
                                  s.global);
}

/// c * d loss / d x over the rank's n contiguous classes of a sample (global target t, not
/// ignored), from its merged record, into g; g may be x.
template <class S>
void record_grad(const vocab_record<xent::detail::compute_t<S>>& r, const S* x, S* g, Index n, Index t,
                 const shard_setup<xent::detail::compute_t<S>>& s, xent::detail::compute_t<S> c) {
  const xent::detail::fused_grad<xent::detail::compute_t<S>> k(summary_of(r), t, s.global, c);
  xent::detail::fused_grad_range(x, g, n, k, s.local);
  const Index t_local = t - s.begin;
  if (t_local >= 0 && t_local < n) xent::detail::fused_grad_target(g, t_local, r.target_logit, k, s.local);
}

/// The records of every sample whose target_at(j) is not -1 (ignored samples keep the identity).
/// A strided class axis goes through a contiguous copy of each sample, on one thread.
template <xent::detail::chunk_sums Sums, class S, class TargetAt>
void fill_records(const samples_view<const S>& v, TargetAt&& target_at, const shard_setup<xent::detail::compute_t<S>>& s,
                  int threads, vocab_record<xent::detail::compute_t<S>>* records) {
  if (v.classes_contiguous()) {
    xent::detail::parallel_for(v.samples, threads, [&](Index j) {
      const Index t = target_at(j);
      if (t >= 0) records[j] = local_record<Sums>(v.sample(j), v.classes, t - s.begin, s);
    });
    return;
  }
  std::vector<S> scratch(static_cast<std::size_t>(v.classes));
  for (Index j = 0; j < v.samples; ++j) {
    const Index t = target_at(j);
    if (t < 0) continue;
    for (Index k = 0; k < v.classes; ++k) scratch[std::size_t(k)] = v.sample(j)[k * v.class_stride];
    records[j] = local_record<Sums>(scratch.data(), v.classes, t - s.begin, s);
  }
}

template <class S, class TargetAt>
void fill_records(const samples_view<const S>& v, TargetAt&& target_at, const shard_setup<xent::detail::compute_t<S>>& s,
                  int threads, vocab_record<xent::detail::compute_t<S>>* records) {
  using xent::detail::chunk_sums;
  switch (s.global.sums()) {
    case chunk_sums::none: return fill_records<chunk_sums::none>(v, target_at, s, threads, records);
    case chunk_sums::logits: return fill_records<chunk_sums::logits>(v, target_at, s, threads, records);
    case chunk_sums::weighted_logits: return fill_records<chunk_sums::weighted_logits>(v, target_at, s, threads, records);
    case chunk_sums::targets: return;  // class-index targets only
  }
}

/// c(j) * the gradient of every sample j on the rank's classes into out (zeros for an ignored
/// sample); out may be the logits' own storage. A strided class axis goes through a contiguous copy.
template <class S, class TargetAt, class Scale>
void write_gradients(const samples_view<const S>& v, const samples_view<S>& out, TargetAt&& target_at,
                     const vocab_record<xent::detail::compute_t<S>>* records, const shard_setup<xent::detail::compute_t<S>>& s,
                     Scale&& c, int threads) {
  if (v.classes_contiguous() && out.classes_contiguous()) {
    xent::detail::parallel_for(v.samples, threads, [&](Index j) {
      const Index t = target_at(j);
      if (t < 0)
        std::fill(out.sample(j), out.sample(j) + out.classes, S(0));
      else
        record_grad(records[j], v.sample(j), out.sample(j), v.classes, t, s, c(j));
    });
    return;
  }
  std::vector<S> scratch(static_cast<std::size_t>(v.classes));
  for (Index j = 0; j < v.samples; ++j) {
    const Index t = target_at(j);
    if (t < 0) {
      for (Index k = 0; k < out.classes; ++k) out.sample(j)[k * out.class_stride] = S(0);
      continue;
    }
    for (Index k = 0; k < v.classes; ++k) scratch[std::size_t(k)] = v.sample(j)[k * v.class_stride];
    record_grad(records[j], scratch.data(), scratch.data(), v.classes, t, s, c(j));
    for (Index k = 0; k < v.classes; ++k) out.sample(j)[k * out.class_stride] = scratch[std::size_t(k)];
  }
}

}  // namespace xent::parallel::detail

#endif
