#ifndef XENT_SOFTMAX_HPP
#define XENT_SOFTMAX_HPP

// softmax and log_softmax over the classes of every sample: the sweep driver with the log-sum-exp
// statistics and a write pass (detail/losses/softmax.hpp).

#include "detail/engine/checks.hpp"
#include "detail/engine/view.hpp"
#include "detail/losses/softmax.hpp"
#include "logsumexp.hpp"

#include <Eigen/Core>

namespace xent {

namespace detail {
template <bool Log, class Derived, class OutDerived>
void normalize_into(const char* function, const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<OutDerived>& out,
                    int dim, int num_threads) {
  check_real<Derived>();
  check_dim(function, dim);
  check_num_threads(function, num_threads);
  check_not_empty(function, "x", x);
  if (out.rows() != x.rows() || out.cols() != x.cols())
    throw_invalid(function, "out", "must have the shape of x (" + shape_string(x.rows(), x.cols()) + ")",
                  shape_string(out.rows(), out.cols()));
  check_no_overlap(function, "out", out, "x", x, true);
  using T = typename Derived::Scalar;
  auto& result = const_cast<OutDerived&>(out.derived());
  with_view(x, dim, [&](const samples_view<const T>& in) {
    if constexpr (has_direct_access<OutDerived>) {
      normalize_samples<Log>(in, view_of(result, dim), num_threads);
    } else {
      typename OutDerived::PlainObject evaluated(x.rows(), x.cols());
      normalize_samples<Log>(in, view_of(evaluated, dim), num_threads);
      result = evaluated;
    }
  });
}
}  // namespace detail

/// softmax over the classes of every sample (see the class axis in logsumexp.hpp), into `out`,
/// which may be x itself (in place) or a Map over the caller's buffer (any other overlap with x
/// throws).
///
/// Masked (-inf) logits give exactly 0; probabilities below the smallest normal number are flushed
/// to 0. A sample whose log-sum-exp is not finite (all -inf, any +inf, any NaN) is all NaN, as in torch.
/// \throws xent::invalid_argument if x is empty, dim is not 0 or 1, or out's shape differs from x's.
template <class Derived, class OutDerived>
void softmax_into(const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<OutDerived>& out, int dim = 0,
                  int num_threads = 0) {
  detail::normalize_into<false>("softmax_into", x, out, dim, num_threads);
}

/// softmax over the classes of every sample; see softmax_into.
template <class Derived>
typename Derived::PlainObject softmax(const Eigen::DenseBase<Derived>& x, int dim = 0, int num_threads = 0) {
  typename Derived::PlainObject out(x.rows(), x.cols());
  detail::normalize_into<false>("softmax", x, out, dim, num_threads);
  return out;
}

/// log_softmax over the classes of every sample, computed as (x - max) - log(sum exp(x - max)),
/// into `out` (x itself is allowed). Masked (-inf) logits give -inf; a sample whose log-sum-exp is
/// not finite is all NaN, as in torch.
/// \throws xent::invalid_argument as softmax_into.
template <class Derived, class OutDerived>
void log_softmax_into(const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<OutDerived>& out, int dim = 0,
                      int num_threads = 0) {
  detail::normalize_into<true>("log_softmax_into", x, out, dim, num_threads);
}

/// log_softmax over the classes of every sample; see log_softmax_into.
template <class Derived>
typename Derived::PlainObject log_softmax(const Eigen::DenseBase<Derived>& x, int dim = 0, int num_threads = 0) {
  typename Derived::PlainObject out(x.rows(), x.cols());
  detail::normalize_into<true>("log_softmax", x, out, dim, num_threads);
  return out;
}

}  // namespace xent

#endif
