#ifndef XENT_PARALLEL_LINEAR_HPP
#define XENT_PARALLEL_LINEAR_HPP

// Vocabulary-parallel linear cross-entropy: each rank of a communicator holds a shard of the
// classifier weight (the classes [shard.begin, shard.begin + shard.size)) and the whole hidden
// state; the loss of z = W^T h is that of xent::linear_cross_entropy on the whole weight, from the
// same single collective as vocab_parallel_cross_entropy (docs/parallel.md).
//
// A rank never holds more than its shard's logits of one sample block: it folds each block's
// logits into the per-sample records (lse partial, target logit, smoothing sums) of
// parallel/detail/vocab_record.hpp, merges the records of every rank in one MPI_Allreduce, and
// reads its gradient back from the merged records, block by block. So the options, the formulas
// and the special values are vocab_parallel_cross_entropy's, and through it cross_entropy's.
//
// Training costs three GEMMs on the rank's shard when the shard's logits of every kept sample fit
// opts.max_block_bytes (they are kept between the collective and the gradient), four otherwise
// (each block's logits are recomputed after the collective).

#include "../losses/linear.hpp"
#include "mpi.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>

namespace xent::parallel {

namespace detail {

/// The cross_entropy_options that linear_cross_entropy_options stand for (no class weights: the
/// linear loss has none).
inline cross_entropy_options cross_entropy_options_of(const linear_cross_entropy_options& o) {
  cross_entropy_options ce;
  ce.ignore_index = o.ignore_index;
  ce.reduction = o.reduction;
  ce.label_smoothing = o.label_smoothing;
  ce.label_smoothing_kind = o.label_smoothing_kind;
  ce.z_loss = o.z_loss;
  ce.softcap = o.softcap;
  ce.return_lse = o.return_lse;
  ce.num_threads = o.num_threads;
  ce.sample_weight = o.sample_weight;
  ce.mask = o.mask;
  ce.normalizer = o.normalizer;
  return ce;
}

/// The shapes of a rank's linear layer: hidden D x N, weight D x shard.size or shard.size x D.
/// Unlike linear_cross_entropy, a shard may be empty.
template <class HDerived, class WDerived>
bool check_local_linear(const char* fn, const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
                        Eigen::Index samples, const vocab_shard& shard, const linear_cross_entropy_options& o) {
  using xent::detail::shape_string;
  using xent::detail::throw_invalid;
  if (o.sample_block < 0) throw_invalid(fn, "sample_block", "must be >= 0 (0 chooses it)", o.sample_block);
  const int layout = static_cast<int>(o.weight_layout);
  if (layout < 0 || layout > 2) throw_invalid(fn, "weight_layout", "must be deduce, hidden_by_vocab or vocab_by_hidden", layout);
  xent::detail::check_not_empty(fn, "hidden", hidden);
  if (hidden.cols() != samples)
    throw_invalid(fn, "hidden", "must have one column per target (" + std::to_string(samples) + ")",
                  shape_string(hidden.rows(), hidden.cols()));
  const Eigen::Index D = hidden.rows(), V = shard.size;
  const std::string dv = shape_string(D, V), vd = shape_string(V, D);
  bool v_by_d = false;
  switch (o.weight_layout) {
    case weight_layout::deduce:
      if (D == V)
        throw_invalid(fn, "weight_layout", "must be hidden_by_vocab or vocab_by_hidden when the shard's weight is square (" + dv +
                                               "), as its shape cannot tell", "deduce");
      if (weight.rows() == D && weight.cols() == V) break;
      if (weight.rows() == V && weight.cols() == D) { v_by_d = true; break; }
      throw_invalid(fn, "local_weight", "must be D x shard.size (" + dv + ") or shard.size x D (" + vd + ")",
                    shape_string(weight.rows(), weight.cols()));
    case weight_layout::hidden_by_vocab:
      if (weight.rows() != D || weight.cols() != V)
        throw_invalid(fn, "local_weight", "must be D x shard.size (" + dv + ", hidden_by_vocab)", shape_string(weight.rows(), weight.cols()));
      break;
    case weight_layout::vocab_by_hidden:
      if (weight.rows() != V || weight.cols() != D)
        throw_invalid(fn, "local_weight", "must be shard.size x D (" + vd + ", vocab_by_hidden)", shape_string(weight.rows(), weight.cols()));
      v_by_d = true;
      break;
  }
  return v_by_d;
}

/// Where the gradients go; forward-only calls pass none.
template <class GradHidden, class GradWeight, class GradBias>
struct local_linear_grads {
  GradHidden* hidden;
  GradWeight* weight;
  GradBias* bias;  // or null
};

/// Both public functions (with and without bias): checks, the records of the rank's shard block
/// by block, the one collective, the loss and (with grads) the gradients.
template <class HDerived, class WDerived, class BDerived, class TDerived, class Grads>
linear_cross_entropy_result<xent::detail::accumulation_t<typename HDerived::Scalar>> vocab_parallel_linear(
    const char* fn, const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& weight,
    const Eigen::DenseBase<BDerived>* bias, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
    const linear_cross_entropy_options& opts, MPI_Comm comm, const Grads* grads) {
  using S = typename HDerived::Scalar;
  using T = xent::detail::accumulation_t<S>;
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using xent::detail::Index;
  static_assert(xent::detail::is_linear_scalar<S>, "hidden must hold float, double, Eigen::bfloat16 or Eigen::half");
  static_assert(std::is_same_v<S, typename WDerived::Scalar>, "local_weight must have hidden's scalar type");
  static_assert(std::is_same_v<S, typename BDerived::Scalar>, "local_bias must have hidden's scalar type");
  static_assert(std::is_integral_v<typename TDerived::Scalar> && std::is_signed_v<typename TDerived::Scalar>,
                "class-index targets must be signed integers (int32 or int64)");
  constexpr bool training = !std::is_same_v<Grads, std::nullptr_t>;
  check_communicator(fn, comm);

  const Eigen::Index samples = targets.size();
  const Eigen::Index count = samples < Eigen::Index(INT_MAX) ? samples + 1 : 1;
  const cross_entropy_options ce = cross_entropy_options_of(opts);
  std::exception_ptr local_error;
  xent::detail::checked_call checked{samples, 0.0, {}};
  std::vector<T> no_weights;
  shard_setup<T> setup;
  bool v_by_d = false;
  try {
    checked = check_call(fn, targets, shard, ce);
    v_by_d = check_local_linear(fn, hidden, weight, samples, shard, opts);
    if (bias) xent::detail::check_class_vector(fn, "local_bias", *bias, shard.size);
    if constexpr (training) {
      using xent::detail::shape_string;
      static_assert(std::is_same_v<T, typename std::remove_pointer_t<decltype(grads->hidden)>::Scalar> &&
                        std::is_same_v<T, typename std::remove_pointer_t<decltype(grads->weight)>::Scalar>,
                    "gradient buffers hold the accumulation type: float for float, bfloat16 and half inputs, double for double");
      if (grads->hidden->rows() != hidden.rows() || grads->hidden->cols() != samples)
        xent::detail::throw_invalid(fn, "grad_hidden_out", "must have hidden's shape (" + shape_string(hidden.rows(), samples) + ")",
                                    shape_string(grads->hidden->rows(), grads->hidden->cols()));
      if (grads->weight->rows() != weight.rows() || grads->weight->cols() != weight.cols())
        xent::detail::throw_invalid(fn, "grad_local_weight_out",
                                    "must have local_weight's shape (" + shape_string(weight.rows(), weight.cols()) + ")",
                                    shape_string(grads->weight->rows(), grads->weight->cols()));
      if (grads->bias) xent::detail::check_class_vector(fn, "grad_local_bias_out", *grads->bias, shard.size);
    }
    setup = shard_setup_of(ce, shard, no_weights);
  } catch (...) {
    local_error = std::current_exception();
  }
  const xent::detail::sample_selection& selection = checked.selection;
  const auto kept_target = xent::detail::index_targets(targets, opts.ignore_index, selection.mask);
  // A sample of weight 0 leaves the GEMMs, as in linear_cross_entropy: its record stays the identity.
  const auto target_at = [&](Eigen::Index j) -> Index {
    const Index t = kept_target(j);
    return t >= 0 && selection.weight_at(j) == 0 ? -1 : t;
  };
  std::vector<Index> active;  // the samples in the GEMMs, in order
  if (!local_error)
    for (Eigen::Index j = 0; j < samples; ++j)
      if (target_at(j) >= 0) active.push_back(j);
  const Index kept = Index(active.size()), V = shard.size, D = hidden.rows();
  const int threads = xent::detail::thread_count(opts.num_threads, std::max<Index>(kept, 1) * std::max<Index>(V, 1));
  const xent::detail::serial_gemm_scope serial(opts.num_threads == 1);

  // The shard's weight (and bias) in the accumulation type, read in place when it already is.
  constexpr bool converts = !std::is_same_v<S, T> || !xent::detail::has_direct_access<WDerived>;
  matrix converted;
  if constexpr (converts)
    if (!local_error) converted = weight.derived().template cast<T>();
  const auto& w = [&]() -> decltype(auto) {
    if constexpr (converts) return (converted);
    else return (weight.derived());
  }();
  Eigen::Matrix<T, Eigen::Dynamic, 1> b;
  if (bias && !local_error) b = xent::detail::bias_in<T>(*bias);

  // Blocks of kept samples: the block's hidden states in T, and its V x n logits (kept for the
  // gradient when every block's fit max_block_bytes).
  const Index block = std::max<Index>(1, std::min<Index>(opts.sample_block > 0 ? opts.sample_block : 512, std::max<Index>(kept, 1)));
  const bool keep = training && double(V) * double(kept) * double(sizeof(T)) <= double(opts.max_block_bytes);
  matrix kept_logits(keep ? V : 0, keep ? kept : 0), scratch(keep ? 0 : V, keep ? 0 : block), h(D, block);
  const auto gather = [&](Index first, Index n) {
    for (Index i = 0; i < n; ++i) h.col(i) = hidden.derived().col(active[std::size_t(first + i)]).template cast<T>();
  };
  const auto logits_of = [&](Index first, Index n) -> Eigen::Map<matrix> {
    T* data = keep ? kept_logits.data() + first * V : scratch.data();
    Eigen::Map<matrix> z(data, V, n);
    gather(first, n);
    if (v_by_d) z.noalias() = w * h.leftCols(n);
    else z.noalias() = w.transpose() * h.leftCols(n);
    if (bias) z.colwise() += b;
    return z;
  };
  const auto block_targets = [&](Index first) {
    return [&, first](Index i) { return target_at(active[std::size_t(first + i)]); };
  };

  std::vector<vocab_record<T>> records(std::size_t(count), vocab_record<T>::identity());
  std::vector<vocab_record<T>> block_records(static_cast<std::size_t>(block));
  for (Index first = 0; first < kept; first += block) {
    const Index n = std::min(block, kept - first);
    Eigen::Map<matrix> z = logits_of(first, n);
    const xent::detail::samples_view<const T> v{z.data(), n, V, 1, V};
    fill_records(v, block_targets(first), setup, threads, block_records.data());
    for (Index i = 0; i < n; ++i) records[std::size_t(active[std::size_t(first + i)])] = block_records[std::size_t(i)];
  }
  exchange_records(fn, records, local_error, target_at, shard, comm);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses, lse;
  losses_of(records, target_at, setup, opts.return_lse, losses, lse);

  if constexpr (training) {
    auto& gh = *grads->hidden;
    auto& gw = *grads->weight;
    gh.setZero();  // this rank's share; the left-out samples' columns stay 0
    gw.setZero();
    if (grads->bias) grads->bias->setZero();
    const auto c = xent::detail::seed_scale<T>(opts.reduction, checked.denominator, selection);
    for (Index first = 0; first < kept; first += block) {
      const Index n = std::min(block, kept - first);
      Eigen::Map<matrix> z = keep ? Eigen::Map<matrix>(kept_logits.data() + first * V, V, n) : logits_of(first, n);
      if (keep) gather(first, n);
      for (Index i = 0; i < n; ++i) block_records[std::size_t(i)] = records[std::size_t(active[std::size_t(first + i)])];
      const xent::detail::samples_view<const T> v{z.data(), n, V, 1, V};
      const xent::detail::samples_view<T> out{z.data(), n, V, 1, V};
      // z becomes dloss/dz in place.
      write_gradients(v, out, block_targets(first), block_records.data(), setup,
                      [&](Index i) { return c(active[std::size_t(first + i)]); }, threads);
      matrix gh_block(D, n);
      if (v_by_d) {
        gh_block.noalias() = w.transpose() * z;
        gw.noalias() += z * h.leftCols(n).transpose();
      } else {
        gh_block.noalias() = w * z;
        gw.noalias() += h.leftCols(n) * z.transpose();
      }
      if (grads->bias)
        for (Index k = 0; k < V; ++k) grads->bias->coeffRef(k) += z.row(k).sum();
      for (Index i = 0; i < n; ++i) gh.col(active[std::size_t(first + i)]) = gh_block.col(i);
    }
  }
  return {xent::detail::reduce_losses(opts.reduction, std::move(losses), checked.denominator, selection), std::move(lse)};
}

}  // namespace detail

/// xent::linear_cross_entropy over a classifier weight sharded by class across the ranks of comm,
/// in one MPI_Allreduce: the loss of z = W^T h (+ b) on the whole vocabulary.
///
/// hidden: D x N, the same on every rank (float, double, Eigen::bfloat16 or Eigen::half; the last
/// two computed in float). local_weight: the rank's classes of the weight, D x shard.size or
/// shard.size x D (opts.weight_layout; deduced from the shapes unless square), hidden's type.
/// targets: the N global class indices, the same on every rank, in [0, C) or ignore_index.
/// opts: as linear_cross_entropy's (reduction, ignore_index, label_smoothing of both kinds, z_loss,
/// softcap, return_lse, sample_weight, mask, normalizer, sample_block, max_block_bytes, num_threads
/// for the rank's own work; `block` is not used: a rank's shard is one tile).
/// Collective: every rank of comm calls it with the same hidden, targets, opts and shard.classes.
/// \returns the same result on every rank (bit for bit), within a few ulp of linear_cross_entropy
///          on the whole weight (docs/parallel.md).
/// \throws xent::invalid_argument on every rank when any rank's arguments are wrong (as
///         vocab_parallel_cross_entropy); mpi_error if MPI reports an error.
template <class HDerived, class WDerived, class TDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
linear_cross_entropy_result<xent::detail::accumulation_t<typename HDerived::Scalar>> vocab_parallel_linear_cross_entropy(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& local_weight,
    const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard, const linear_cross_entropy_options& opts,
    MPI_Comm comm) {
  return detail::vocab_parallel_linear<HDerived, WDerived, HDerived, TDerived, std::nullptr_t>(
      "vocab_parallel_linear_cross_entropy", hidden, local_weight, nullptr, targets, shard, opts, comm, nullptr);
}

/// vocab_parallel_linear_cross_entropy with the rank's shard of a bias (shard.size entries).
template <class HDerived, class WDerived, class BDerived, class TDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_integral_v<typename BDerived::Scalar>, int> = 0>
linear_cross_entropy_result<xent::detail::accumulation_t<typename HDerived::Scalar>> vocab_parallel_linear_cross_entropy(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& local_weight,
    const Eigen::DenseBase<BDerived>& local_bias, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
    const linear_cross_entropy_options& opts, MPI_Comm comm) {
  return detail::vocab_parallel_linear<HDerived, WDerived, BDerived, TDerived, std::nullptr_t>(
      "vocab_parallel_linear_cross_entropy", hidden, local_weight, &local_bias, targets, shard, opts, comm, nullptr);
}

/// vocab_parallel_linear_cross_entropy and the gradient of the returned loss (grad_out = 1; for
/// reduction none, of the sum of the per-sample losses), in the accumulation type:
/// grad_local_weight_out (local_weight's shape) is the rank's shard of the weight's gradient;
/// grad_hidden_out (D x N) is the rank's SHARE of the hidden state's gradient, W_shard dz: the
/// gradient is its sum over the ranks. That sum is left to the caller (allreduce_sum(grad_hidden_out,
/// comm), or the collective that reduces the rest of the model's gradients, as Megatron's
/// column-parallel layer does), so the call itself keeps to the one collective of the forward.
template <class HDerived, class WDerived, class TDerived, class GHDerived, class GWDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
linear_cross_entropy_result<xent::detail::accumulation_t<typename HDerived::Scalar>> vocab_parallel_linear_cross_entropy_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& local_weight,
    const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard, const linear_cross_entropy_options& opts,
    MPI_Comm comm, const Eigen::DenseBase<GHDerived>& grad_hidden_out, const Eigen::DenseBase<GWDerived>& grad_local_weight_out) {
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  const detail::local_linear_grads<GHDerived, GWDerived, GHDerived> grads{
      &const_cast<GHDerived&>(grad_hidden_out.derived()), &const_cast<GWDerived&>(grad_local_weight_out.derived()), nullptr};
  return detail::vocab_parallel_linear<HDerived, WDerived, HDerived, TDerived>(
      "vocab_parallel_linear_cross_entropy_with_grad", hidden, local_weight, nullptr, targets, shard, opts, comm, &grads);
}

/// vocab_parallel_linear_cross_entropy_with_grad with the rank's shard of a bias, also writing
/// its gradient into grad_local_bias_out (shard.size entries).
template <class HDerived, class WDerived, class BDerived, class TDerived, class GHDerived, class GWDerived, class GBDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar> && !std::is_integral_v<typename BDerived::Scalar>, int> = 0>
linear_cross_entropy_result<xent::detail::accumulation_t<typename HDerived::Scalar>> vocab_parallel_linear_cross_entropy_with_grad(
    const Eigen::DenseBase<HDerived>& hidden, const Eigen::DenseBase<WDerived>& local_weight,
    const Eigen::DenseBase<BDerived>& local_bias, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
    const linear_cross_entropy_options& opts, MPI_Comm comm, const Eigen::DenseBase<GHDerived>& grad_hidden_out,
    const Eigen::DenseBase<GWDerived>& grad_local_weight_out, const Eigen::DenseBase<GBDerived>& grad_local_bias_out) {
  const detail::local_linear_grads<GHDerived, GWDerived, GBDerived> grads{
      &const_cast<GHDerived&>(grad_hidden_out.derived()), &const_cast<GWDerived&>(grad_local_weight_out.derived()),
      &const_cast<GBDerived&>(grad_local_bias_out.derived())};
  return detail::vocab_parallel_linear<HDerived, WDerived, BDerived, TDerived>(
      "vocab_parallel_linear_cross_entropy_with_grad", hidden, local_weight, &local_bias, targets, shard, opts, comm, &grads);
}

}  // namespace xent::parallel

#endif
