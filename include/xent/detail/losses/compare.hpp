#ifndef XENT_DETAIL_LOSSES_COMPARE_HPP
#define XENT_DETAIL_LOSSES_COMPARE_HPP

// Two models' logits for the same tokens -> what the comparison metrics need (metrics/compare.hpp),
// as a sweep policy over x = the test model's logits and y = the base model's. One read of each
// chunk of both gives, relative to each input's max (the two-softmax statistics at T = 1,
// detail/losses/two_softmax.hpp):
//   S_test = sum_k e^(x_k - max x),  S_base = sum_k e^(y_k - max y),
//   f = sum_k e^(y_k - max y) ((y_k - max y) - (x_k - max x)),
// so that KL(base || test) = f / S_base - log S_base + log S_test: both log-sum-exps, -inf masks
// handled (a masked base class adds nothing, base mass on a masked test class makes KL +inf), and
// equal logits give f = 0 and S_test = S_base bit for bit: KL exactly 0. Each sample also records
// the first chunk that holds each input's max; its first-index argmax (top-1 agreement) is found in
// that chunk alone once the sweep has folded the sample, a second read of one chunk per input.

#include "../engine/sweep.hpp"
#include "../engine/view.hpp"
#include "two_softmax.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent::detail {

/// One sample's folded statistics: the two-softmax sums (x = test, y = base), and where
/// each input's max first occurs: the start and length of the first chunk whose max is the sample's.
template <class T>
struct compare_sample {
  two_softmax_sample<T> d;
  Index folded = 0;  // classes folded so far
  Index test_top_start = -1, test_top_len = 0, base_top_start = -1, base_top_len = 0;
};

/// What one sample of a comparison gives: `defined` is false when either input has a NaN or +inf
/// logit, or all its logits -inf (no distribution); nll_* are NaN without a target.
struct compare_result {
  bool defined = false;
  bool same_top = false;  // first-index argmax of base == first-index argmax of test
  double kl = 0;          // KL(base || test) in nats, >= 0
  double nll_base = 0, nll_test = 0;
};

namespace losses {

template <class T>
struct compare_stats : two_softmax_stats<T, false, cross_sum::forward> {
  using sample = compare_sample<T>;
  void fold(sample& s, const engine::chunk_stats<T, two_softmax_stats<T, false, cross_sum::forward>::sums>& c, Index len) const {
    // Strictly greater: a later chunk with an equal max does not hold the first maximum.
    if (c.max > s.d.max_s) s.test_top_start = s.folded, s.test_top_len = len;
    if (c.max_y > s.d.max_t) s.base_top_start = s.folded, s.base_top_len = len;
    s.folded += len;
    two_softmax_stats<T, false, cross_sum::forward>::fold(s.d, c, len);
  }
};

/// The first k in [start, start + len) of a row whose value is m.
template <class S, class T>
Index first_at(const S* x, Index stride, Index start, Index len, T m) {
  for (Index k = start; k < start + len; ++k)
    if (static_cast<T>(x[k * stride]) == m) return k;
  return -1;
}

/// The comparison of every sample: out[j] for sample j; target(j) its class, -1 for none (then the
/// NLLs are NaN), -2 for a sample left out (never read).
template <class S, class TargetAt>
class compare_policy : public engine::read_only_policy<compute_t<S>> {
 public:
  using T = compute_t<S>;
  using stats_type = compare_stats<T>;
  using sample = compare_sample<T>;

  compare_policy(const samples_view<const S>& test, const samples_view<const S>& base, compare_result* out, TargetAt target)
      : test_(test), base_(base), out_(out), target_(target) {
    stats_.inverse_temperature_x = stats_.inverse_temperature_y = T(1);
  }
  const stats_type& stats() const { return stats_; }
  bool skip(Index j) const { return target_(j) == -2; }
  void skipped(Index j) const { out_[j] = compare_result{}; }
  void finish(Index j, const sample& s, const engine::row<S>&) const {
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    compare_result& r = out_[j];
    r = compare_result{};
    const two_softmax_sample<T>& d = s.d;
    r.defined = d.defined && d.max_s != neg_inf && d.max_t != neg_inf && std::isfinite(d.max_s) && std::isfinite(d.max_t);
    if (!r.defined) return;
    const double st = double(d.sum_z), sb = double(d.sum_u);
    // f / S_base is E_base[(y - max y) - (x - max x)]; the logs in double. Rounding can leave a
    // KL of a few ulp below 0 where the two distributions (nearly) agree: clamped.
    const double kl = double(d.cross) / sb - std::log(sb) + std::log(st);
    r.kl = std::isnan(kl) ? kl : std::max(0.0, kl);
    const S* x = test_.sample(j);
    const S* y = base_.sample(j);
    const Index top_test = first_at(x, test_.class_stride, s.test_top_start, s.test_top_len, d.max_s);
    const Index top_base = first_at(y, base_.class_stride, s.base_top_start, s.base_top_len, d.max_t);
    r.same_top = top_test == top_base && top_test >= 0;
    const Index t = target_(j);
    if (t >= 0) {
      // (max - target) first: exact for the dominant class, as the evaluation metrics do.
      r.nll_test = std::log(st) + (double(d.max_s) - double(static_cast<T>(x[t * test_.class_stride])));
      r.nll_base = std::log(sb) + (double(d.max_t) - double(static_cast<T>(y[t * base_.class_stride])));
    } else {
      r.nll_test = r.nll_base = std::numeric_limits<double>::quiet_NaN();
    }
  }

 private:
  stats_type stats_;
  samples_view<const S> test_, base_;
  compare_result* out_;
  TargetAt target_;
};

}  // namespace losses

/// The comparison of every sample of base and test (same shape; out: one per sample).
template <class S, class TargetAt>
void compare_samples(const samples_view<const S>& base, const samples_view<const S>& test, TargetAt target, compare_result* out,
                     int num_threads) {
  const losses::compare_policy<S, TargetAt> policy(test, base, out, target);
  engine::sweep(policy, engine::sweep_views<S>{test, &base, nullptr}, num_threads);
}

}  // namespace xent::detail

#endif
