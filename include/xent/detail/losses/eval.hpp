#ifndef XENT_DETAIL_LOSSES_EVAL_HPP
#define XENT_DETAIL_LOSSES_EVAL_HPP

// One sample's logits -> everything the evaluation metrics need (metrics/evaluation.hpp), as a
// sweep policy: per chunk, the sweep's max pass, then one fused pass summing exp(beta (x - max)),
// its square and x - max; while the chunk is in L1, a count of the logits ranked above the target.
// The count only runs where it can change the answer: on chunks whose max reaches the target's
// logit, and until the rank reaches the cap (top-k needs no more than "rank >= k"). As in
// temperature.hpp, x - max is formed from the raw logits before beta multiplies it, so ranks are
// taken on the logits themselves (no ties made by rounding beta x).
// The scalar reference the tests hold this to: tests/eval_reference.hpp.

#include "../engine/sweep.hpp"
#include "../engine/view.hpp"
#include "../simd/math.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace xent::detail {

/// What the metrics need from one sample (beta = 1 / temperature):
///   max     the largest logit
///   sum     sum_k exp(beta (x_k - max))          (so p_k = exp(beta (x_k - max)) / sum)
///   sum_sq  sum_k exp(2 beta (x_k - max))        (so sum_k p_k^2 = sum_sq / sum^2)
///   target  the target's logit
///   rank    the target's position in a stable descending sort of the logits,
///           #{k : x_k > x_t} + #{k < t : x_k = x_t}, capped at rank_cap (rank < cap is exact);
///           0 exactly when argmax (first index) = t
/// `defined` is false when the sample has a NaN or +inf logit, or all its logits are -inf: there is
/// no distribution then (torch gives NaN) and the other fields are meaningless. `neg_inf` is true
/// when some logit may be -inf (a mask); it is also set when x - max overflowed, so a caller that
/// must tell masks apart counts them exactly (count_nonfinite).
template <class T>
struct eval_sample {
  T max = -std::numeric_limits<T>::infinity();
  double sum = 0;
  double sum_sq = 0;
  T target = 0;
  Index rank = 0;
  bool defined = true;
  bool neg_inf = false;
  Index target_class = 0;  // the count's context: the target's class and the rank's cap
  Index rank_cap = 0;
};

/// Number of NaN and +-inf values among n values `stride` apart.
template <class T>
Index count_nonfinite(const T* x, Index n, Index stride) {
  Index c = 0;
  for (Index i = 0; i < n; ++i) c += std::isfinite(static_cast<compute_t<T>>(x[i * stride])) ? 0 : 1;
  return c;
}

// Counters as wide as T, so that the compiler vectorises the compare-and-count loops below on the
// packet's lanes (chunks are far shorter than 2^31).
template <class T>
using lane_count = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;

/// #{i : x_i > t} over n contiguous values (a loop the compiler vectorises).
template <class T>
Index count_above(const T* x, Index n, T t) {
  lane_count<T> c = 0;
  for (Index i = 0; i < n; ++i) c += x[i] > t ? 1 : 0;
  return Index(c);
}

/// #{i : x_i >= t} over n contiguous values.
template <class T>
Index count_at_or_above(const T* x, Index n, T t) {
  lane_count<T> c = 0;
  for (Index i = 0; i < n; ++i) c += x[i] >= t ? 1 : 0;
  return Index(c);
}

/// The target's stable descending rank restricted to classes [start, start + n) of a sample whose
/// target is class t: classes before t count when >= x_t (ties go to the lower index), after t when >.
template <class T>
Index rank_part(const T* chunk, Index start, Index n, Index t, T xt) {
  const Index before = std::clamp(t - start, Index(0), n);           // classes of the chunk below t
  const Index after_begin = std::clamp(t + 1 - start, Index(0), n);  // first class of the chunk above t
  return count_at_or_above(chunk, before, xt) + count_above(chunk + after_begin, n - after_begin, xt);
}

namespace losses {

/// sum[1] = sum exp(beta d), sum[2] = its squares, sum[3] = sum d (-inf when some x is -inf, or
/// x - max overflowed), d = x - max. The exp is the sums-only one (exp_for_sum): a term under
/// e^-87.3 may come out as that bound, invisible next to the max's own 1 in the sum, and squared
/// to 0 in the sum of squares.
template <class T>
struct eval_stats {
  static constexpr int sums = 4;  // sum[0], the sweep's exp-sum at beta = 1, is not formed
  static constexpr bool uses_y = false, uses_w = false, max_of_y = false, exp_of_x = false;
  using sample = eval_sample<T>;
  T beta = 1;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V&, const V&, const V&, const V&) const {
    const V e = simd::exp_for_sum(simd::pmul(d, simd::pset1<V>(beta)));
    acc[0] = simd::padd(acc[0], e);
    acc[1] = simd::padd(acc[1], simd::pmul(e, e));
    acc[2] = simd::padd(acc[2], d);
  }
  void nonfinite(engine::chunk_stats<T, 4>& c, const T*, const T*, const T*, Index) const {
    c.sum[1] = c.sum[2] = c.sum[3] = T(0);  // fold reads the max: NaN / +inf, or all masked
  }
  void fold(sample& s, const engine::chunk_stats<T, 4>& c, Index) const {
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    if (!(c.max < std::numeric_limits<T>::infinity())) {  // NaN or +inf: no distribution
      s.defined = false;
      return;
    }
    if (c.max == neg_inf) {  // every class of the chunk masked
      s.neg_inf = true;
      return;
    }
    s.neg_inf = s.neg_inf || c.sum[3] == neg_inf;
    const double cs = c.sum[1], cq = c.sum[2];
    if (s.max == neg_inf) {  // the first chunk with a finite max needs no rescale
      s.max = c.max;
      s.sum = cs;
      s.sum_sq = cq;
    } else if (c.max > s.max) {
      const double f = std::exp(double(beta) * (double(s.max) - double(c.max)));
      s.sum = s.sum * f + cs;
      s.sum_sq = s.sum_sq * (f * f) + cq;
      s.max = c.max;
    } else {
      const double f = std::exp(double(beta) * (double(c.max) - double(s.max)));
      s.sum += cs * f;
      s.sum_sq += cq * (f * f);
    }
  }
  /// The rank's count, on chunks whose max reaches the target's logit, until the cap.
  void chunk_values(sample& s, const engine::chunk_stats<T, 4>& c, const T* z, Index start, Index len) const {
    if (s.rank < s.rank_cap && !(c.max < s.target))
      s.rank = std::min(s.rank_cap, s.rank + rank_part(z, start, len, s.target_class, s.target));
  }
};

/// The evaluation sums of every sample: out[j] for sample j; target(j) its class, or -1 for a
/// sample left out (never read).
template <class S, class TargetAt>
class eval_policy : public engine::read_only_policy<compute_t<S>> {
 public:
  using T = compute_t<S>;
  using stats_type = eval_stats<T>;
  using sample = eval_sample<T>;

  eval_policy(const samples_view<const S>& v, eval_sample<T>* out, TargetAt target, T beta, Index rank_cap)
      : v_(v), out_(out), target_(target), rank_cap_(rank_cap) {
    stats_.beta = beta;
  }
  const stats_type& stats() const { return stats_; }
  bool skip(Index j) const { return target_(j) < 0; }
  void skipped(Index j) const { out_[j] = sample{}; }
  sample start_sample(Index j) const {
    sample s;
    s.target_class = target_(j);
    s.target = static_cast<T>(v_.sample(j)[s.target_class * v_.class_stride]);
    s.rank_cap = rank_cap_;
    return s;
  }
  void finish(Index j, const sample& s, const engine::row<S>&) const {
    out_[j] = s;
    out_[j].defined = s.defined && s.max != -std::numeric_limits<T>::infinity();
  }

 private:
  stats_type stats_;
  samples_view<const S> v_;
  eval_sample<T>* out_;
  TargetAt target_;
  Index rank_cap_;
};

}  // namespace losses

/// The evaluation sums of every sample of v (out: one per sample) at inverse temperature beta > 0.
template <class S, class TargetAt>
void eval_samples(const samples_view<const S>& v, TargetAt target, compute_t<S> beta, Index rank_cap,
                  eval_sample<compute_t<S>>* out, int num_threads) {
  const losses::eval_policy<S, TargetAt> policy(v, out, target, beta, rank_cap);
  engine::sweep(policy, engine::sweep_views<S>{v, nullptr, nullptr}, num_threads);
}

/// One sample of n logits `stride` apart with target class t (0 <= t < n).
template <class S>
eval_sample<compute_t<S>> eval_sample_of(const S* x, Index n, Index stride, Index t, compute_t<S> beta, Index rank_cap) {
  eval_sample<compute_t<S>> out;
  const samples_view<const S> v{x, 1, n, stride, n * stride};
  eval_samples(v, [t](Index) { return t; }, beta, rank_cap, &out, 1);
  return out;
}

}  // namespace xent::detail

#endif
