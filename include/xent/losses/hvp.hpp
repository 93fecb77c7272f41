#ifndef XENT_LOSSES_HVP_HPP
#define XENT_LOSSES_HVP_HPP

// Hessian-vector product of cross-entropy w.r.t. the logits: the Hessian of -log softmax(x)_y (any y,
// and of any probability-target cross-entropy with targets summing to 1) is diag(p) - p p^T, so
//   (diag(p) - p p^T) v = p * (v - <p, v>)   per sample,
// computed in O(C) without forming the C x C matrix.

#include "../detail/categorical_kernel.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/pointwise.hpp"
#include "../core/error.hpp"
#include "cross_entropy.hpp"

#include <Eigen/Core>

#include <type_traits>

namespace xent {

/// (diag(p) - p p^T) v for every sample, p = softmax(logits) along the class axis dim, into out (the
/// logits' shape; may be a Map over the caller's buffer). Each output sample sums to 0 (up to rounding).
/// \throws xent::invalid_argument if logits are empty, dim is not 0/1, or v or out differ from the logits' shape.
template <class X, class V, class OutDerived>
void softmax_hvp_into(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<V>& v,
                      const Eigen::DenseBase<OutDerived>& out, int dim = 0) {
  using T = typename X::Scalar;
  constexpr const char* fn = "softmax_hvp";
  detail::check_real<X>();
  detail::check_dim(fn, dim);
  detail::check_not_empty(fn, "logits", logits);
  static_assert(std::is_same_v<T, typename V::Scalar>, "v must have the logits' scalar type");
  detail::check_same_shape(fn, "v", v, "logits", logits);
  detail::with_out_view(fn, "out", logits, out, dim, [&](const detail::samples_view<T>& o) {
    detail::with_view(logits, dim, [&](const detail::samples_view<const T>& x) {
      detail::with_view(v, dim, [&](const detail::samples_view<const T>& w) {
        for (Eigen::Index j = 0; j < x.samples; ++j) {
          const detail::sample_normalizer<T> n(detail::lse_partial_of_sample(x, j));
          const T* xj = x.sample(j);
          const T* vj = w.sample(j);
          T* oj = o.sample(j);
          T pv = 0;
          for (Eigen::Index k = 0; k < x.classes; ++k) pv += n.prob(xj[k * x.class_stride]) * vj[k * w.class_stride];
          for (Eigen::Index k = 0; k < x.classes; ++k)
            oj[k * o.class_stride] = n.prob(xj[k * x.class_stride]) * (vj[k * w.class_stride] - pv);
        }
      });
    });
  });
}

/// softmax_hvp_into returning a new matrix.
template <class X, class V>
typename X::PlainObject softmax_hvp(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<V>& v, int dim = 0) {
  typename X::PlainObject out(logits.rows(), logits.cols());
  softmax_hvp_into(logits, v, out, dim);
  return out;
}

}  // namespace xent

#endif
