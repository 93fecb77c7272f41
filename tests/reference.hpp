#ifndef XENT_TESTS_REFERENCE_HPP
#define XENT_TESTS_REFERENCE_HPP

// The scalar reference path of the normalisers (test oracle, not installed): long double, two passes, compensated sum. Slow and plain on purpose;
// the tests hold every fast kernel to it.

#include <Eigen/Core>

#include <cmath>
#include <limits>

namespace xent_test::reference {

/// log-sum-exp of n values x[0], x[stride], ... with torch's special values (NaN; +inf; all -inf).
template <class T>
long double logsumexp(const T* x, Eigen::Index n, Eigen::Index stride = 1) {
  constexpr long double inf = std::numeric_limits<long double>::infinity();
  long double m = -inf;
  for (Eigen::Index i = 0; i < n; ++i) {
    const long double v = x[i * stride];
    if (std::isnan(v)) return std::numeric_limits<long double>::quiet_NaN();
    if (v > m) m = v;
  }
  if (m == inf || m == -inf) return m;
  long double sum = 0, compensation = 0;  // Kahan: C up to 2^20 stays well inside long double's 64 bits
  for (Eigen::Index i = 0; i < n; ++i) {
    const long double term = std::exp(static_cast<long double>(x[i * stride]) - m) - compensation;
    const long double next = sum + term;
    compensation = (next - sum) - term;
    sum = next;
  }
  return m + std::log(sum);
}

/// log_softmax[i] = x[i] - lse, with torch's NaN for every entry when lse is not finite.
template <class T>
long double log_softmax_at(const T* x, Eigen::Index i, Eigen::Index stride, long double lse) {
  if (!std::isfinite(lse)) return std::numeric_limits<long double>::quiet_NaN();
  return static_cast<long double>(x[i * stride]) - lse;
}

template <class T>
long double softmax_at(const T* x, Eigen::Index i, Eigen::Index stride, long double lse) {
  return std::exp(log_softmax_at(x, i, stride, lse));
}

}  // namespace xent_test::reference

#endif
