#ifndef XENT_DETAIL_LOSSES_SOFTMAX_HPP
#define XENT_DETAIL_LOSSES_SOFTMAX_HPP

// log-sum-exp, softmax and log_softmax on the sweep driver: one read of a chunk gives its
// log-sum-exp partial; softmax and log_softmax write each output once in the write pass. Both keep
// x - max as the first step (exact when x is near max), so the dominant class's log-probability
// keeps its small digits. The scalar reference the tests hold this to: tests/reference.hpp.

#include "../../core/lse_partial.hpp"
#include "../engine/sweep.hpp"

#include <cmath>
#include <limits>

namespace xent::detail {

/// The chunk statistics of the log-sum-exp alone.
template <class T>
struct lse_stats {
  static constexpr int sums = 1;
  static constexpr bool uses_y = false, uses_w = false, max_of_y = false, exp_of_x = true;
  using sample = lse_partial<T>;

  template <class V>
  void accumulate(V*, const V&, const V&, const V&, const V&, const V&, const V&) const {}
  /// NaN decides; +inf decides unless a NaN comes (merge sees to that); all -inf adds nothing.
  void nonfinite(engine::chunk_stats<T, 1>& c, const T*, const T*, const T*, Index) const {
    c.sum[0] = std::isnan(c.max) ? c.max : c.max == std::numeric_limits<T>::infinity() ? T(1) : T(0);
  }
  void fold(sample& s, const engine::chunk_stats<T, 1>& c, Index) const {
    const lse_partial<T> p{c.max, c.sum[0]};
    // merge with the identity is exact, and skipping it saves an exp per sample at small C.
    s = s.max == -std::numeric_limits<T>::infinity() ? p : merge(s, p);
  }
};

/// What the write pass of softmax / log_softmax writes at one class, from the sample's partial.
/// torch returns NaN for every entry of a sample whose log-sum-exp is not finite (all -inf, a +inf,
/// a NaN): the writer is then not defined.
template <class T, bool Log>
struct normalizer {
  T max = 0, inv_sum = 0, log_sum = 0;
  explicit normalizer(const lse_partial<T>& p) : max(p.max), inv_sum(T(1) / p.sum), log_sum(std::log(p.sum)) {}
  template <class V>
  V operator()(const V& x, const V&, const V&, V&) const {
    const V d = simd::psub(x, simd::pset1<V>(max));
    if constexpr (Log)
      return simd::psub(d, simd::pset1<V>(log_sum));
    else
      return simd::pmul(simd::exp_nonpositive(d), simd::pset1<V>(inv_sum));
  }
};

/// logsumexp (partials out), softmax (Write, Log = false) or log_softmax (Write, Log = true) as a
/// sweep policy.
template <class S, bool Write, bool Log>
class normalize_policy {
 public:
  using T = compute_t<S>;
  using stats_type = lse_stats<T>;
  using sample = lse_partial<T>;
  static constexpr bool has_lane_blocks = false;

  explicit normalize_policy(lse_partial<T>* partials) : partials_(partials) {}
  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index) const { return false; }
  void skipped(Index) const {}
  void finish(Index j, const sample& s, const engine::row<S>&) const {
    if (partials_) partials_[j] = s;
  }
  bool writes() const { return Write; }
  engine::sample_writer<normalizer<T, Log>> writer(Index, const sample& s) const {
    return {normalizer<T, Log>(s), std::isfinite(s.max), -1};
  }

 private:
  stats_type stats_;
  lse_partial<T>* partials_;
};

/// The log-sum-exp partial of every sample of v into partials (one per sample).
template <class S>
void lse_partials(const samples_view<const S>& v, lse_partial<compute_t<S>>* partials, int threads) {
  engine::sweep(normalize_policy<S, false, false>(partials), engine::sweep_views<S>{v, nullptr, nullptr}, threads);
}

/// The partial of n contiguous values (a tile column of the linear cross-entropy).
template <class T>
lse_partial<T> lse_partial_contiguous(const T* x, Index n) {
  return engine::summarize_sample(normalize_policy<T, false, false>(nullptr), 0, engine::row<T>{x, 1},
                                  static_cast<const engine::row<T>*>(nullptr), n, static_cast<const T*>(nullptr));
}

/// softmax (Log = false) or log_softmax (Log = true) of every sample of `in` into `out` (same
/// shape and class axis; out may be in's memory).
template <bool Log, class S>
void normalize_samples(const samples_view<const S>& in, const samples_view<S>& out, int threads) {
  engine::sweep(normalize_policy<S, true, Log>(nullptr), engine::sweep_views<S>{in, nullptr, &out}, threads);
}

}  // namespace xent::detail

#endif
