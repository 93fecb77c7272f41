#ifndef XENT_LOSSES_HVP_HPP
#define XENT_LOSSES_HVP_HPP

// Hessian-vector product of cross-entropy w.r.t. the logits: the Hessian of -log softmax(x)_y (any y,
// and of any probability-target cross-entropy with targets summing to 1) is diag(p) - p p^T, so
//   (diag(p) - p p^T) v = p * (v - <p, v>)   per sample,
// computed in O(C) without forming the C x C matrix: one read of x and v for <p, v>, one more for
// the product (detail/losses/softmax_moments.hpp on the sweep driver).

#include "../core/error.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/losses/softmax_moments.hpp"

#include <Eigen/Core>

#include <type_traits>

namespace xent {

/// (diag(p) - p p^T) v for every sample, p = softmax(logits) along the class axis dim, into out (the
/// logits' shape; may be a Map over the caller's buffer, or the logits or v themselves). Each output
/// sample sums to 0 (up to rounding).
/// \throws xent::invalid_argument if logits are empty, dim is not 0/1, or v or out differ from the logits' shape.
template <class X, class V, class OutDerived>
void softmax_hvp_into(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<V>& v,
                      const Eigen::DenseBase<OutDerived>& out, int dim = 0, int num_threads = 0) {
  using T = typename X::Scalar;
  constexpr const char* fn = "softmax_hvp";
  detail::check_real<X>();
  detail::check_dim(fn, dim);
  detail::check_num_threads(fn, num_threads);
  detail::check_not_empty(fn, "logits", logits);
  static_assert(std::is_same_v<T, typename V::Scalar>, "v must have the logits' scalar type");
  detail::check_same_shape(fn, "v", v, "logits", logits);
  detail::check_no_overlap(fn, "out", out, "v", v, true);
  auto none = [](Eigen::Index) { return T(0); };
  detail::with_out_view(fn, "out", logits, out, dim, [&](const detail::samples_view<T>& o) {
    detail::with_view(logits, dim, [&](const detail::samples_view<const T>& x) {
      detail::with_view(v, dim, [&](const detail::samples_view<const T>& w) {
        const detail::moment_policy<T, false, decltype(none)> policy(nullptr, none, true);
        detail::engine::sweep(policy, detail::engine::sweep_views<T>{x, &w, &o}, num_threads);
      });
    });
  });
}

/// softmax_hvp_into returning a new matrix.
template <class X, class V>
typename X::PlainObject softmax_hvp(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<V>& v, int dim = 0,
                                    int num_threads = 0) {
  typename X::PlainObject out(logits.rows(), logits.cols());
  softmax_hvp_into(logits, v, out, dim, num_threads);
  return out;
}

}  // namespace xent

#endif
