#ifndef XENT_DETAIL_POINTWISE_HPP
#define XENT_DETAIL_POINTWISE_HPP

// What the elementwise losses (binary_cross_entropy*, kl_div) and the per-sample measures share:
// argument checks, torch's broadcast of a per-class tensor over [N, C], torch's xlogy, and a
// compensated sum (terms of kl_div have both signs, so plain summation could lose digits to cancellation).

#include "../core/error.hpp"
#include "../core/reduction.hpp"
#include "engine/checks.hpp"
#include "engine/view.hpp"

#include <Eigen/Core>

#include <cmath>
#include <sstream>
#include <string>

namespace xent::detail {

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

/// A tensor broadcast like torch broadcasts it against the input [N, C]: empty (absent, reads as 1),
/// one entry per class (a vector of C entries), or the input's own shape (elementwise).
template <class T>
class class_broadcast {
 public:
  template <class Input>
  class_broadcast(const char* function, const char* argument, const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& w,
                  const Eigen::DenseBase<Input>& input, int dim)
      : w_(w), dim_(dim) {
    const Index classes = dim == 0 ? input.rows() : input.cols();
    if (w.size() == 0) return;
    if (w.rows() == input.rows() && w.cols() == input.cols()) {
      mode_ = elementwise;
    } else if (w.size() == classes && (w.rows() == 1 || w.cols() == 1)) {
      mode_ = per_class;
    } else {
      throw_invalid(function, argument,
                    "must have one entry per class (" + std::to_string(classes) + ") or the shape of the input (" +
                        shape_string(input.rows(), input.cols()) + ")",
                    shape_string(w.rows(), w.cols()));
    }
  }
  bool present() const { return mode_ != absent; }
  /// The value for class k of sample j.
  T operator()(Index j, Index k) const {
    switch (mode_) {
      case absent: return T(1);
      case per_class: return w_(k);
      case elementwise: return w_(row_of(dim_, j, k), col_of(dim_, j, k));
    }
    return T(1);
  }

 private:
  enum mode_t { absent, per_class, elementwise };
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& w_;
  int dim_;
  mode_t mode_ = absent;
};

/// torch.xlogy: 0 where x == 0 (so 0 * log 0 = 0), NaN where y is NaN, else x * log(y).
template <class T>
T xlogy(T x, T y) {
  if (std::isnan(y)) return y;
  return x == T(0) ? T(0) : x * std::log(y);
}

/// Neumaier's compensated sum: a few ulp of the sum of |terms| whatever the count and signs.
template <class T>
struct compensated_sum {
  T sum = 0, compensation = 0;
  void add(T v) {
    const T t = sum + v;
    if (std::isfinite(t)) compensation += std::fabs(sum) >= std::fabs(v) ? (sum - t) + v : (v - t) + sum;
    sum = t;
  }
  T value() const { return std::isfinite(sum) ? sum + compensation : sum; }
};

/// Applies torch's reduction to the elementwise values f(j, k), j over samples, k over classes.
/// none: the matrix of values (the input's shape); mean: the sum / numel; sum; batchmean: the sum / samples.
/// mean and sum come back as a 1 x 1 matrix, as torch returns a 0-d tensor.
template <class T, class F>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> reduce_elementwise(Index rows, Index cols, int dim, reduction r, F&& f) {
  const Index samples = dim == 0 ? cols : rows, classes = dim == 0 ? rows : cols;
  if (r == reduction::none) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> out(rows, cols);
    for (Index j = 0; j < samples; ++j)
      for (Index k = 0; k < classes; ++k) out(row_of(dim, j, k), col_of(dim, j, k)) = f(j, k);
    return out;
  }
  compensated_sum<T> s;
  for (Index j = 0; j < samples; ++j)
    for (Index k = 0; k < classes; ++k) s.add(f(j, k));
  T total = s.value();
  if (r == reduction::mean) total /= T(rows * cols);
  if (r == reduction::batchmean) total /= T(samples);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> out(1, 1);
  out(0, 0) = total;
  return out;
}

/// The factor d(reduced)/d(element) of a reduction: 1 for none and sum, 1/numel for mean, 1/samples for batchmean.
template <class T>
T reduction_scale(Index rows, Index cols, int dim, reduction r) {
  if (r == reduction::mean) return T(1) / T(rows * cols);
  if (r == reduction::batchmean) return T(1) / T(dim == 0 ? cols : rows);
  return T(1);
}

/// Writes f(j, k) * (grad_out for that element) into `out` (any writable Eigen object of the input's shape).
/// grad_out is either a 1 x 1 object (broadcast, for mean/sum or a scalar seed) or the input's shape (none).
template <class T, class G, class OutDerived, class F>
void write_gradient(const char* function, const Eigen::DenseBase<G>& grad_out, const Eigen::DenseBase<OutDerived>& out,
                    Index rows, Index cols, int dim, reduction r, F&& f) {
  const bool scalar_seed = grad_out.rows() == 1 && grad_out.cols() == 1;
  if (!scalar_seed && (r != reduction::none || grad_out.rows() != rows || grad_out.cols() != cols))
    throw_invalid(function, "grad_out",
                  r == reduction::none ? "must be 1 x 1 or have the shape of the input (" + shape_string(rows, cols) + ")"
                                       : std::string("must be 1 x 1 for reduction ") + to_string(r),
                  shape_string(grad_out.rows(), grad_out.cols()));
  if (out.rows() != rows || out.cols() != cols)
    throw_invalid(function, "grad_input", "must have the shape of the input (" + shape_string(rows, cols) + ")",
                  shape_string(out.rows(), out.cols()));
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  auto& result = const_cast<OutDerived&>(out.derived());
  const T scale = reduction_scale<T>(rows, cols, dim, r);
  const Index samples = dim == 0 ? cols : rows, classes = dim == 0 ? rows : cols;
  for (Index j = 0; j < samples; ++j)
    for (Index k = 0; k < classes; ++k) {
      const Index rr = row_of(dim, j, k), cc = col_of(dim, j, k);
      const T g = scalar_seed ? T(grad_out.derived().coeff(0, 0)) : T(grad_out.derived().coeff(rr, cc));
      result(rr, cc) = f(j, k) * g * scale;
    }
}

}  // namespace xent::detail

#endif
