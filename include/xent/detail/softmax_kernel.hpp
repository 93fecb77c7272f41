#ifndef XENT_DETAIL_SOFTMAX_KERNEL_HPP
#define XENT_DETAIL_SOFTMAX_KERNEL_HPP

// softmax and log_softmax of one sample, given the sample's log-sum-exp partial: a second pass that
// writes each output once. Both keep x - max as the first step (exact when x is near max), so the
// dominant class's log-probability keeps its small digits.

#include "lse_kernel.hpp"

#include <cmath>
#include <limits>

namespace xent::detail {

/// torch returns NaN for every entry of a sample whose log-sum-exp is not finite
/// (all -inf, a +inf, a NaN).
template <class T>
bool softmax_defined(const lse_partial<T>& p) {
  return std::isfinite(p.max);
}

struct softmax_op {
  template <class T>
  static T at(T x, T max, T inv_sum, T /*log_sum*/) {
    return simd::exp_nonpositive_scalar(x - max) * inv_sum;
  }
  template <class P>
  static P packet(const P& x, const P& max, const P& inv_sum, const P& /*log_sum*/) {
    return simd::pmul(simd::exp_nonpositive(simd::psub(x, max)), inv_sum);
  }
};

struct log_softmax_op {
  template <class T>
  static T at(T x, T max, T /*inv_sum*/, T log_sum) {
    return (x - max) - log_sum;
  }
  template <class P>
  static P packet(const P& x, const P& max, const P& /*inv_sum*/, const P& log_sum) {
    return simd::psub(simd::psub(x, max), log_sum);
  }
};

/// Writes op(x) for every class of every sample of `in` into `out` (same shape and class axis).
template <class Op, class T>
void normalize_samples(const samples_view<const T>& in, const samples_view<T>& out) {
  for (Index j = 0; j < in.samples; ++j) {
    const lse_partial<T> p = lse_partial_of_sample(in, j);
    const T* x = in.sample(j);
    T* y = out.sample(j);
    const Index n = in.classes;
    if (!softmax_defined(p)) {
      for (Index k = 0; k < n; ++k) y[k * out.class_stride] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    const T inv_sum = T(1) / p.sum, log_sum = std::log(p.sum);
    Index k = 0;
    if constexpr (simd::has_packet_exp<T>) {
      if (in.classes_contiguous() && out.classes_contiguous()) {
        using P = simd::packet<T>;
        constexpr Index ps = simd::packet_size<T>;
        const P vmax = simd::pset1<P>(p.max), vinv = simd::pset1<P>(inv_sum), vlog = simd::pset1<P>(log_sum);
        for (; k + ps <= n; k += ps) simd::store(y + k, Op::packet(simd::load<P>(x + k), vmax, vinv, vlog));
      }
    }
    for (; k < n; ++k) y[k * out.class_stride] = Op::at(x[k * in.class_stride], p.max, inv_sum, log_sum);
  }
}

}  // namespace xent::detail

#endif
