#ifndef XENT_CORE_SPATIAL_HPP
#define XENT_CORE_SPATIAL_HPP

// torch's K-dimensional layout [N, C, d1, d2, ...] (segmentation, per-pixel losses) over a
// caller's buffer, without a copy: N blocks of C classes, each class a run of D = d1 * d2 * ...
// consecutive values (class stride D, sample stride 1 inside a block). docs/losses.md, "The
// spatial layout".

#include "error.hpp"

#include <Eigen/Core>

#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>

namespace xent {

/// A read-only (T const) or writable view of an [N, C, D] row-major buffer: sample j of its N * D
/// samples is (n = j / D, d = j % D), and class c of it is data[n * C * D + c * D + d]. Targets and
/// per-sample losses of a spatial call have N * D entries in (n, d) order, as torch's [N, d1, ...]
/// flattens. Built by xent::spatial, which checks its sizes.
template <class T>
struct spatial_view {
  T* data = nullptr;         ///< the buffer: n * C * D + c * D + d
  Eigen::Index batch = 0;    ///< N
  Eigen::Index classes = 0;  ///< C
  Eigen::Index spatial = 0;  ///< D = d1 * d2 * ...

  /// N * D: the samples (pixels) of the view.
  Eigen::Index samples() const { return batch * spatial; }
  /// N * C * D: the values it spans.
  Eigen::Index size() const { return batch * classes * spatial; }
  /// Class c of sample (n, d).
  T& at(Eigen::Index n, Eigen::Index c, Eigen::Index d) const { return data[(n * classes + c) * spatial + d]; }
  /// The same view, read-only.
  operator spatial_view<const T>() const { return {data, batch, classes, spatial}; }
};

namespace detail {

/// The checks of a spatial view's sizes: a non-null buffer, positive sizes, N * C * D within Index.
/// fn and what: the function and the view's name in it ("spatial" and "", or "cross_entropy" and
/// "logits"), prefixed to the argument at fault.
inline void check_spatial_sizes(const void* data, Eigen::Index N, Eigen::Index C, Eigen::Index D,
                                const char* fn = "spatial", const std::string& what = "") {
  const std::string of = what.empty() ? "" : what + ".";
  if (!data) throw_invalid(fn, of + "data", "must not be null", "a null pointer");
  if (N <= 0) throw_invalid(fn, of + "N", "must be > 0", N);
  if (C <= 0) throw_invalid(fn, of + "C", "must be > 0", C);
  if (D <= 0) throw_invalid(fn, of + "D", "must be > 0 (the product of the spatial sizes)", D);
  constexpr Eigen::Index max = std::numeric_limits<Eigen::Index>::max();
  if (N > max / C || N * C > max / D)
    throw_invalid(fn, of + "N * C * D", "must fit in Eigen::Index",
                  std::to_string(N) + " * " + std::to_string(C) + " * " + std::to_string(D));
}

/// D = d1 * d2 * ...: each size > 0, the product within Index.
inline Eigen::Index spatial_product(std::initializer_list<Eigen::Index> dims) {
  constexpr const char* fn = "spatial";
  if (dims.size() == 0) throw_invalid(fn, "dims", "must name at least one spatial size", "none");
  Eigen::Index D = 1, i = 0;
  for (const Eigen::Index d : dims) {
    if (d <= 0) throw_invalid(fn, "dims[" + std::to_string(i) + "]", "must be > 0", d);
    if (D > std::numeric_limits<Eigen::Index>::max() / d)
      throw_invalid(fn, "dims", "must have a product that fits in Eigen::Index", "an overflow at dims[" + std::to_string(i) + "]");
    D *= d;
    ++i;
  }
  return D;
}

}  // namespace detail

/// The view of an [N, C, D] buffer (D = d1 * d2 * ...); const T gives a read-only view.
/// \throws xent::invalid_argument for a null pointer, a size <= 0 or N * C * D beyond Eigen::Index.
template <class T>
spatial_view<T> spatial(T* data, Eigen::Index N, Eigen::Index C, Eigen::Index D) {
  detail::check_spatial_sizes(data, N, C, D);
  return {data, N, C, D};
}

/// The view of an [N, C, d1, d2, ...] buffer: spatial(data, N, C, d1 * d2 * ...).
template <class T>
spatial_view<T> spatial(T* data, Eigen::Index N, Eigen::Index C, std::initializer_list<Eigen::Index> dims) {
  return spatial(data, N, C, detail::spatial_product(dims));
}

namespace detail {

/// The checks of an Eigen buffer behind a spatial view: contiguous, exactly N * C * D values.
template <class Derived>
void check_spatial_buffer(const Eigen::DenseBase<Derived>& buffer, Eigen::Index N, Eigen::Index C, Eigen::Index D) {
  static_assert((int(Derived::Flags) & Eigen::DirectAccessBit) != 0, "xent::spatial needs an object with storage of its own");
  const Derived& b = buffer.derived();
  check_spatial_sizes(b.data(), N, C, D);
  if (b.innerStride() != 1 || (b.rows() > 1 && b.cols() > 1 && b.outerStride() != b.innerSize()))
    throw_invalid("spatial", "buffer", "must be contiguous (inner stride 1, no gap between columns)",
                  "inner stride " + std::to_string(b.innerStride()) + ", outer stride " + std::to_string(b.outerStride()));
  if (b.size() != N * C * D)
    throw_invalid("spatial", "buffer",
                  "must hold N * C * D = " + std::to_string(N) + " * " + std::to_string(C) + " * " + std::to_string(D) +
                      " = " + std::to_string(N * C * D) + " values",
                  b.size());
}

}  // namespace detail

/// The view of a contiguous Eigen object (a Matrix, an Array, a Map without strides) holding
/// exactly N * C * D values in torch's [N, C, d1, ...] order.
/// \throws xent::invalid_argument when its size is not N * C * D or it is not contiguous, and as
/// the pointer overload.
template <class Derived>
auto spatial(Eigen::DenseBase<Derived>& buffer, Eigen::Index N, Eigen::Index C, Eigen::Index D) {
  detail::check_spatial_buffer(buffer, N, C, D);
  return spatial(buffer.derived().data(), N, C, D);
}

/// The read-only view of a const (or temporary) contiguous Eigen object; see the writable overload.
template <class Derived>
auto spatial(const Eigen::DenseBase<Derived>& buffer, Eigen::Index N, Eigen::Index C, Eigen::Index D) {
  detail::check_spatial_buffer(buffer, N, C, D);
  using S = std::remove_const_t<std::remove_pointer_t<decltype(buffer.derived().data())>>;
  return spatial(static_cast<const S*>(buffer.derived().data()), N, C, D);
}

}  // namespace xent

#endif
