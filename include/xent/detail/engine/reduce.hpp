#ifndef XENT_DETAIL_ENGINE_REDUCE_HPP
#define XENT_DETAIL_ENGINE_REDUCE_HPP

// The one reduction policy of every xent loss (docs/kernels.md, "Reductions"):
//  - the work is cut into blocks whose size does not depend on the thread count;
//  - inside a block, terms are added in packets of the compute type, in chains of at most
//    `chain_terms` terms each; every finished chain is widened to double and added, with
//    Neumaier's compensation, to the block's total;
//  - block totals (and per-sample losses) are combined in block (sample) order, compensated, in double.
// The error is then independent of the element count: a few ulp of the compute type relative to
// the sum of |terms| from the chains, plus about one ulp of double from the rest; and the result
// is the same bits for any thread count.

#include "view.hpp"

#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace xent::detail::engine {

using Eigen::Index;

/// Terms a packet chain adds before it is folded into double.
inline constexpr int chain_terms = 8;

/// A sum in double with Neumaier's compensation: the lost low parts of every addition are kept
/// and added back once, so that n terms cost about one rounding, not n.
struct exact_sum {
  double sum = 0;
  double compensation = 0;

  void add(double x) noexcept {
    const double t = sum + x;
    // The larger operand is exact in t; what the smaller lost is recovered. An infinite or NaN
    // sum is the answer as it stands (its compensation would only turn it into NaN).
    if (std::isfinite(t)) compensation += std::fabs(sum) >= std::fabs(x) ? (sum - t) + x : (x - t) + sum;
    sum = t;
  }
  void add(const exact_sum& o) noexcept {
    add(o.sum);
    add(o.compensation);
  }
  double value() const noexcept { return std::isfinite(sum) ? sum + compensation : sum; }
};

/// Sum of n values, compensated (per-sample losses, block totals): term i goes to chain i % 4,
/// and the four chains are merged in chain order. The order depends on n alone, so the result is
/// the same bits for any thread count; four independent chains run about four times as fast as
/// one (each addition waits for the previous one of its chain only: a million losses in 0.3 ms,
/// not 1.3).
template <class T>
double ordered_sum(const T* x, Index n) {
  constexpr Index chains = 4;
  exact_sum s[chains];
  Index i = 0;
  for (; i + chains <= n; i += chains)
    for (Index c = 0; c < chains; ++c) s[c].add(double(x[i + c]));
  for (Index c = 0; i < n; ++i, ++c) s[c].add(double(x[i]));
  for (Index c = 1; c < chains; ++c) s[0].add(s[c]);
  return s[0].value();
}

/// ordered_sum of term(0), ..., term(n - 1) (called once each, in that order), its four chains
/// as the four lanes of one packet of doubles: the weighted sums of a call (sum_j w_j l_j and the
/// mean's sum_j w_j), where exact_sum's scalar adds, about ten operations and a branch each, cost
/// a millisecond per million samples (issue 16: an 8 ms forward at C = 10). Knuth's two-sum has no
/// branch and gives the exact rounding error that exact_sum's Neumaier branch gives: the same
/// number, so the same bits as ordered_sum of the terms (as long as no intermediate overflows:
/// terms below DBL_MAX / 2). A lane whose sum turns infinite or NaN stays so, and its compensation
/// (NaN from then on) is dropped at the end, where exact_sum stops updating it: value() is the sum.
template <class F>
double ordered_sum_of(Index n, F&& term) {
  using packet = Eigen::Array4d;
  packet sum = packet::Zero(), compensation = packet::Zero();
  Index i = 0;
  for (; i + 4 <= n; i += 4) {
    // One statement per term: a term may check its sample and throw, in sample order.
    const double x0 = term(i);
    const double x1 = term(i + 1);
    const double x2 = term(i + 2);
    const double x3 = term(i + 3);
    const packet x(x0, x1, x2, x3);
    const packet t = sum + x;
    const packet z = t - sum;
    compensation += (sum - (t - z)) + (x - z);
    sum = t;
  }
  exact_sum s[4];
  for (int c = 0; c < 4; ++c) s[c] = exact_sum{sum[c], std::isfinite(sum[c]) ? compensation[c] : 0.0};
  for (int c = 0; i < n; ++i, ++c) s[c].add(term(i));
  for (int c = 1; c < 4; ++c) s[0].add(s[c]);
  return s[0].value();
}

}  // namespace xent::detail::engine

#endif
