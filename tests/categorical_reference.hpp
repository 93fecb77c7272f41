#ifndef XENT_TESTS_CATEGORICAL_REFERENCE_HPP
#define XENT_TESTS_CATEGORICAL_REFERENCE_HPP

// The scalar reference path of class-index cross_entropy (test oracle, not installed): long double,
// torch's per-sample formulas written out, log_softmax from the two-pass compensated log-sum-exp of
// reference.hpp. Slow and plain on purpose; tests/test_fused.cpp holds the fused kernel to it.

#include "reference.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <vector>

namespace xent_test::reference {

/// The loss of one sample (C logits `stride` apart) at class-index target t (not ignored):
///   (1 - eps) (-w_t lp_t) + eps / C sum_k (-w_k lp_k)     (the second term only when eps > 0),
/// lp = log_softmax(x); weight empty = every class weighs 1.
template <class T>
long double index_ce(const T* x, Eigen::Index C, Eigen::Index stride, Eigen::Index t, const Eigen::VectorXd& weight,
                     long double eps) {
  const long double lse = logsumexp(x, C, stride);
  auto w = [&](Eigen::Index k) { return weight.size() ? (long double)weight(k) : 1.0L; };
  auto lp = [&](Eigen::Index k) { return log_softmax_at(x, k, stride, lse); };
  const long double nll = -w(t) * lp(t);
  if (eps == 0) return nll;
  long double smooth = 0;
  for (Eigen::Index k = 0; k < C; ++k) smooth -= w(k) * lp(k);
  return (1 - eps) * nll + eps / (long double)C * smooth;
}

/// c * d loss / d x of the same sample into out (C entries): c (p_k Q - q_k), with
/// q_k = eps / C w_k + [k = t] (1 - eps) w_t and Q = sum_k q_k.
template <class T>
void index_ce_grad(const T* x, Eigen::Index C, Eigen::Index stride, Eigen::Index t, const Eigen::VectorXd& weight,
                   long double eps, long double c, long double* out) {
  const long double lse = logsumexp(x, C, stride);
  auto w = [&](Eigen::Index k) { return weight.size() ? (long double)weight(k) : 1.0L; };
  long double W = 0;
  for (Eigen::Index k = 0; k < C; ++k) W += w(k);
  const long double Q = (1 - eps) * w(t) + eps / (long double)C * W;
  for (Eigen::Index k = 0; k < C; ++k) {
    const long double q = eps / (long double)C * w(k) + (k == t ? (1 - eps) * w(t) : 0.0L);
    out[k] = c * (softmax_at(x, k, stride, lse) * Q - q);
  }
}

}  // namespace xent_test::reference

#endif
