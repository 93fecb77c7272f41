#ifndef XENT_DETAIL_ENGINE_VIEW_HPP
#define XENT_DETAIL_ENGINE_VIEW_HPP

// How a 2-D Eigen object is seen by the kernels: `samples` runs of `classes` values each, with the
// strides between classes and between samples, read from the object's own storage (no copy).

#include "../../core/error.hpp"

#include <Eigen/Core>

#include <sstream>
#include <string>
#include <type_traits>

namespace xent::detail {

using Eigen::Index;

template <class T>
struct samples_view {
  T* data;
  Index samples;
  Index classes;
  Index class_stride;
  Index sample_stride;

  T* sample(Index j) const { return data + j * sample_stride; }
  bool classes_contiguous() const { return class_stride == 1 || classes == 1; }
};

template <class Derived>
inline constexpr bool has_direct_access = (int(Derived::Flags) & Eigen::DirectAccessBit) != 0;

inline void check_dim(const char* function, int dim) {
  if (dim != 0 && dim != 1) throw_invalid(function, "dim", "must be 0 (classes down each column) or 1 (classes along each row)", dim);
}

inline std::string shape_string(Index rows, Index cols) {
  std::ostringstream s;
  s << rows << " x " << cols;
  return s.str();
}

template <class Derived>
void check_not_empty(const char* function, const char* argument, const Eigen::DenseBase<Derived>& x) {
  if (x.size() == 0) throw_invalid(function, argument, "must not be empty", shape_string(x.rows(), x.cols()));
}

/// The view of a directly accessible object; dim names the axis that holds the classes, as torch's
/// dim does for a 2-D tensor of the same shape.
template <class Derived>
auto view_of(Derived& x, int dim) {
  using T = std::remove_pointer_t<decltype(x.data())>;
  const Index rs = x.rowStride(), cs = x.colStride();
  if (dim == 0) return samples_view<T>{x.data(), x.cols(), x.rows(), rs, cs};
  return samples_view<T>{x.data(), x.rows(), x.cols(), cs, rs};
}

/// Calls f with x itself when it has storage of its own (Map, Block, Matrix), otherwise with the
/// matrix of its evaluation: a lazy expression is evaluated exactly once.
template <class Derived, class F>
decltype(auto) with_storage(const Eigen::DenseBase<Derived>& x, F&& f) {
  if constexpr (has_direct_access<Derived>) {
    return f(x.derived());
  } else {
    const typename Derived::PlainObject evaluated = x;
    return f(evaluated);
  }
}

/// Calls f with a read-only view of x: x's own storage when it has one (Map, Block, Matrix),
/// otherwise (a lazy expression) the storage of its evaluation.
template <class Derived, class F>
decltype(auto) with_view(const Eigen::DenseBase<Derived>& x, int dim, F&& f) {
  if constexpr (has_direct_access<Derived>) {
    return f(view_of(x.derived(), dim));
  } else {
    const typename Derived::PlainObject evaluated = x;
    return f(view_of(evaluated, dim));
  }
}

}  // namespace xent::detail

#endif
