#ifndef XENT_CORE_LSE_PARTIAL_HPP
#define XENT_CORE_LSE_PARTIAL_HPP

#include <cmath>
#include <limits>

namespace xent {

/// A mergeable partial log-sum-exp: the running max of the logits seen and the sum of
/// exp(x - max) over them, so that logsumexp = max + log(sum).
///
/// merge() is commutative and associative (exactly for the special values, up to rounding for the
/// sum) and identity() is its neutral element, so chunks of one sample, threads and MPI ranks can
/// each fold their share and combine the results in any order. The type is a plain aggregate of
/// two T (standard layout, trivially copyable) so it can be sent as two numbers over MPI.
///
/// Special values follow torch.logsumexp: any NaN gives NaN; else any +inf gives +inf; an empty or
/// all -inf set gives -inf.
template <class T>
struct lse_partial {
  /// The largest logit seen: -inf for none (a default-constructed partial is the identity), NaN once
  /// a NaN was seen.
  T max = -std::numeric_limits<T>::infinity();
  /// sum of exp(x - max) over the logits seen; 0 for none.
  T sum = 0;

  /// The partial of no logit, {-inf, 0}: merge(identity(), p) is p, and its value() is -inf.
  static constexpr lse_partial identity() noexcept { return {-std::numeric_limits<T>::infinity(), T(0)}; }

  /// max + log(sum); -inf for the identity.
  T value() const noexcept {
    if (max == std::numeric_limits<T>::infinity()) return max;
    return max + std::log(sum);
  }
};

/// Combines two partials as if their logits had been folded together.
template <class T>
lse_partial<T> merge(const lse_partial<T>& a, const lse_partial<T>& b) noexcept {
  constexpr T inf = std::numeric_limits<T>::infinity();
  if (std::isnan(a.max) || std::isnan(b.max)) return {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::quiet_NaN()};
  // Put the operands in a canonical order so that merge(a, b) and merge(b, a) are the same bits even
  // when the compiler fuses the sum below into an (asymmetric) fused multiply-add.
  const bool swap = a.max < b.max || (a.max == b.max && a.sum < b.sum);
  const lse_partial<T>& hi = swap ? b : a;
  const lse_partial<T>& lo = swap ? a : b;
  if (hi.max == -inf) return lse_partial<T>::identity();
  if (hi.max == inf) return {inf, T(1)};
  // exp(-inf - max) = 0 takes care of an identity on the low side.
  return {hi.max, hi.sum + lo.sum * std::exp(lo.max - hi.max)};
}

}  // namespace xent

#endif
