#ifndef XENT_DETAIL_ENGINE_CHECKS_HPP
#define XENT_DETAIL_ENGINE_CHECKS_HPP

// The argument checks every loss shares (docs/errors.md): shapes, broadcasts, thread counts, value ranges and
// outputs that must not overlap an input. Each throws xent::invalid_argument naming the function,
// the argument, what was expected and what was got.

#include "../../core/error.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace xent::detail {

template <class A, class B>
void check_same_shape(const char* function, const char* argument, const Eigen::DenseBase<A>& a, const char* reference,
                      const Eigen::DenseBase<B>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    throw_invalid(function, argument, std::string("must have the shape of ") + reference + " (" +
                                          shape_string(b.rows(), b.cols()) + ")",
                  shape_string(a.rows(), a.cols()));
}

inline void check_num_threads(const char* function, int num_threads) {
  if (num_threads < 0) throw_invalid(function, "num_threads", "must be >= 0 (0 = OpenMP's default)", num_threads);
}

/// The bytes an object's elements span, from its first to its last element.
struct byte_range {
  std::uintptr_t begin = 0, end = 0;  // [begin, end)
  bool empty() const noexcept { return begin == end; }
  bool overlaps(const byte_range& o) const noexcept { return !empty() && !o.empty() && begin < o.end && o.begin < end; }
};

template <class T>
byte_range range_of(const T* data, Index rows, Index cols, Index row_stride, Index col_stride) {
  if (data == nullptr || rows == 0 || cols == 0) return {};
  const auto at = [&](Index i, Index j) { return reinterpret_cast<std::uintptr_t>(data + i * row_stride + j * col_stride); };
  // Strides may be negative (a reversed Map); the extremes are at the corners.
  std::uintptr_t lo = at(0, 0), hi = lo;
  for (const std::uintptr_t c : {at(rows - 1, 0), at(0, cols - 1), at(rows - 1, cols - 1)}) {
    lo = c < lo ? c : lo;
    hi = c > hi ? c : hi;
  }
  return {lo, hi + sizeof(T)};
}

template <class Derived>
byte_range range_of(const Eigen::DenseBase<Derived>& x) {
  if constexpr (has_direct_access<Derived>) {
    const Derived& d = x.derived();
    return range_of(d.data(), d.rows(), d.cols(), d.rowStride(), d.colStride());
  } else {
    return {};  // evaluated into a temporary of its own: nothing to overlap
  }
}

/// Same memory, same strides, same shape: an output that is exactly the input (in place).
template <class Out, class In>
bool same_storage(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<In>& in) {
  if constexpr (has_direct_access<Out> && has_direct_access<In>) {
    const auto& o = out.derived();
    const auto& i = in.derived();
    return static_cast<const void*>(o.data()) == static_cast<const void*>(i.data()) && o.rows() == i.rows() &&
           o.cols() == i.cols() && o.rowStride() == i.rowStride() && o.colStride() == i.colStride();
  } else {
    return false;
  }
}

/// An output must not share memory with an input: a shifted Map over the same buffer would read
/// values the call has already overwritten. in_place_ok: the output may be exactly this input
/// (the loss documents its in-place mode).
template <class Out, class In>
void check_no_overlap(const char* function, const char* out_name, const Eigen::DenseBase<Out>& out, const char* in_name,
                      const Eigen::DenseBase<In>& in, bool in_place_ok) {
  if (!range_of(out).overlaps(range_of(in))) return;
  if (in_place_ok && same_storage(out, in)) return;
  throw_invalid(function, out_name,
                std::string("must not overlap ") + in_name +
                    (in_place_ok ? " (it may be exactly " + std::string(in_name) + ", in place)" : std::string()),
                "memory shared with " + std::string(in_name));
}

/// (row, col) of the input for class k of sample j.
inline Index row_of(int dim, Index j, Index k) { return dim == 0 ? k : j; }
inline Index col_of(int dim, Index j, Index k) { return dim == 0 ? j : k; }


/// Class k of sample j.
template <class T>
T at(const samples_view<const T>& v, Index j, Index k) {
  return v.sample(j)[k * v.class_stride];
}

/// Throws unless every entry is finite and in [lo, hi]; the message names the first bad entry by its
/// (row, col) in the caller's matrix, e.g. "p(3, 1) = -0.2".
template <class T>
void check_range(const char* function, const char* argument, const samples_view<const T>& v, int dim, T lo, T hi,
                 const char* expected) {
  for (Index j = 0; j < v.samples; ++j)
    for (Index k = 0; k < v.classes; ++k) {
      const T x = at(v, j, k);
      if (!(std::isfinite(x) && x >= lo && x <= hi)) {
        std::ostringstream got;
        got << argument << '(' << row_of(dim, j, k) << ", " << col_of(dim, j, k) << ") = " << x;
        throw_invalid(function, argument, expected, got.str());
      }
    }
}

}  // namespace xent::detail

#endif
