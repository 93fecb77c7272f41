#ifndef XENT_TESTS_EVAL_REFERENCE_HPP
#define XENT_TESTS_EVAL_REFERENCE_HPP

// The scalar reference of the evaluation kernel (include/xent/detail/losses/eval.hpp).

#include <xent/metrics/evaluation.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace xent_test {

using Eigen::Index;

/// The evaluation sums of one sample of n logits `stride` apart: plain scalar loops with compensated
/// sums in double, the reference the tests hold the engine's eval policy to.
template <class T>
xent::detail::eval_sample<double> eval_sample_scalar(const T* x, Index n, Index stride, Index t, T beta, Index rank_cap) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  xent::detail::eval_sample<double> r;
  r.target = double(x[t * stride]);
  for (Index k = 0; k < n; ++k) {
    const double v = double(x[k * stride]);
    if (std::isnan(v) || v == inf) {
      r.defined = false;
      return r;
    }
    r.neg_inf = r.neg_inf || v == -inf;
    r.max = std::max(r.max, v);
    r.rank += (v > r.target || (k < t && v == r.target)) ? 1 : 0;
  }
  r.rank = std::min(r.rank, rank_cap);
  if (r.max == -inf) {
    r.defined = false;
    return r;
  }
  // Compensated (Kahan) sums: one scalar chain would otherwise lose up to n ulp.
  double cs = 0, cq = 0;
  const auto add = [](double& sum, double& c, double term) {
    const double y = term - c, next = sum + y;
    c = (next - sum) - y;
    sum = next;
  };
  for (Index k = 0; k < n; ++k) {
    const double e = std::exp(double(beta) * (double(x[k * stride]) - r.max));
    add(r.sum, cs, e);
    add(r.sum_sq, cq, e * e);
  }
  return r;
}

}  // namespace xent_test

#endif
