#ifndef XENT_LOGSUMEXP_HPP
#define XENT_LOGSUMEXP_HPP

// log-sum-exp of every sample, and its mergeable partials. The kernel is the sweep driver with the
// log-sum-exp statistics alone (detail/losses/softmax.hpp).

#include "core/lse_partial.hpp"
#include "detail/engine/checks.hpp"
#include "detail/engine/per_sample.hpp"
#include "detail/engine/view.hpp"
#include "detail/losses/softmax.hpp"

#include <Eigen/Core>

#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// \defgroup class_axis The class axis
/// Every kernel reduces over the classes of each sample. `dim` says which axis of the 2-D input
/// holds the classes, with torch's meaning for a tensor of the same shape:
///  - dim = 0 (default): classes run down each column, one sample per column (C x N). For Eigen's
///    default column-major storage this is the contiguous axis, and its memory is exactly a torch
///    row-major [N, C] tensor: `Eigen::Map<const Eigen::MatrixXf>(ptr, C, N)`.
///  - dim = 1: classes run along each row (N x C), e.g. a row-major
///    `Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(ptr, N, C)`.
/// Either class axis runs the same vectorised kernel (a strided one through a contiguous chunk
/// buffer). Objects with their own storage (Matrix, Map, Block, Ref) are read in place; a lazy
/// expression is evaluated once first. num_threads: 0 takes OpenMP's default, 1 runs serially;
/// results do not depend on it.

/// The mergeable partial of every sample: combine the partials of the same samples over disjoint
/// sets of classes (vocabulary shards, chunks) with xent::merge, then take value().
template <class Derived>
std::vector<lse_partial<typename Derived::Scalar>> logsumexp_partials(const Eigen::DenseBase<Derived>& x, int dim = 0,
                                                                      int num_threads = 0) {
  detail::check_real<Derived>();
  detail::check_dim("logsumexp_partials", dim);
  detail::check_num_threads("logsumexp_partials", num_threads);
  detail::check_not_empty("logsumexp_partials", "x", x);
  return detail::with_view(x, dim, [&](const auto& view) {
    std::vector<lse_partial<typename Derived::Scalar>> partials(static_cast<std::size_t>(view.samples));
    detail::lse_partials(view, partials.data(), num_threads);
    return partials;
  });
}

/// log(sum_k exp(x_k)) of every sample, written into `out` (one entry per sample).
///
/// Stable for every input: the max is subtracted before exp. Special values as torch.logsumexp:
/// a sample with a NaN gives NaN; else with a +inf gives +inf; all -inf gives -inf.
/// Accuracy (tests/test_logsumexp.cpp): within 4 ulp of the exact value, ulps taken at max(|lse|, 1).
/// \throws xent::invalid_argument if x is empty, dim is not 0 or 1, or out.size() != the sample count.
template <class Derived, class OutDerived>
void logsumexp_into(const Eigen::DenseBase<Derived>& x, const Eigen::DenseBase<OutDerived>& out, int dim = 0,
                    int num_threads = 0) {
  detail::check_real<Derived>();
  detail::check_dim("logsumexp_into", dim);
  detail::check_num_threads("logsumexp_into", num_threads);
  detail::check_not_empty("logsumexp_into", "x", x);
  const Eigen::Index samples = dim == 0 ? x.cols() : x.rows();
  if (out.size() != samples)
    detail::throw_invalid("logsumexp_into", "out", "must have one entry per sample (" + std::to_string(samples) + ")",
                          out.size());
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  auto& result = const_cast<OutDerived&>(out.derived());
  const auto partials = logsumexp_partials(x, dim, num_threads);
  for (Eigen::Index j = 0; j < samples; ++j) result(j) = partials[std::size_t(j)].value();
}

/// log(sum_k exp(x_k)) of every sample, as a column vector with one entry per sample.
/// See logsumexp_into for the guarantees.
template <class Derived>
Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1> logsumexp(const Eigen::DenseBase<Derived>& x, int dim = 0,
                                                                     int num_threads = 0) {
  detail::check_dim("logsumexp", dim);
  detail::check_not_empty("logsumexp", "x", x);
  Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1> out(dim == 0 ? x.cols() : x.rows());
  logsumexp_into(x, out, dim, num_threads);
  return out;
}

}  // namespace xent

#endif
