#ifndef XENT_PARALLEL_MPI_HPP
#define XENT_PARALLEL_MPI_HPP

// xent over MPI (docs/parallel.md):
//  - vocab_parallel_cross_entropy(_with_grad): each rank holds a shard of the classes; one
//    MPI_Allreduce per call gives every rank the loss and what it needs for its shard's gradient;
//  - allreduce_sum: data-parallel evaluation accumulators summed over the ranks in one collective.
// Not part of <xent/xent.hpp>, so that the core needs no MPI: include this header and link
// xent::mpi (CMake: find_package(xent CONFIG REQUIRED COMPONENTS mpi)).

#include "../core/error.hpp"
#include "../logsumexp.hpp"
#include "../losses/cross_entropy.hpp"
#include "../core/reduction.hpp"
#include "detail/mpi_support.hpp"
#include "detail/vocab_record.hpp"

#include <mpi.h>

#include <Eigen/Core>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <exception>
#include <iterator>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent::parallel {

/// The classes one rank holds: global indices [begin, begin + size) of a vocabulary of `classes`.
/// Across the ranks of a communicator the shards must tile [0, classes): no gap, no overlap, in any
/// rank order; a shard may be empty.
struct vocab_shard {
  /// Global index of this rank's first class.
  Eigen::Index begin = 0;
  /// Number of classes this rank holds (its local logits' class count); 0 for an empty shard.
  Eigen::Index size = 0;
  /// The whole vocabulary's class count C, the same on every rank.
  Eigen::Index classes = 0;
};

/// The balanced split: rank r of `ranks` holds floor(C / ranks) classes, one more for the first
/// C % ranks ranks, in rank order. (Megatron instead pads the vocabulary to a multiple of the ranks.)
/// With fewer classes than ranks the last ranks hold none.
inline vocab_shard even_shard(Eigen::Index classes, int rank, int ranks) {
  constexpr const char* fn = "even_shard";
  if (classes < 1) xent::detail::throw_invalid(fn, "classes", "must be at least 1", classes);
  if (ranks < 1) xent::detail::throw_invalid(fn, "ranks", "must be at least 1", ranks);
  if (rank < 0 || rank >= ranks)
    xent::detail::throw_invalid(fn, "rank", "must be in [0, ranks) = [0, " + std::to_string(ranks) + ")", rank);
  const Eigen::Index base = classes / ranks, extra = classes % ranks;
  return {rank * base + std::min<Eigen::Index>(rank, extra), base + (rank < extra ? 1 : 0), classes};
}

/// even_shard for the calling rank of comm (no communication).
inline vocab_shard even_shard(Eigen::Index classes, MPI_Comm comm) {
  detail::check_communicator("even_shard", comm);
  int rank = 0, ranks = 0;
  detail::check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  detail::check_mpi(MPI_Comm_size(comm, &ranks), "MPI_Comm_size");
  return even_shard(classes, rank, ranks);
}

namespace detail {

/// The checks of validate_shards on the gathered (begin, size, classes) of every rank; the same
/// table on every rank gives the same verdict on every rank.
inline void check_shard_table(const char* fn, const std::vector<long long>& table) {
  using xent::detail::throw_invalid;
  const std::size_t ranks = table.size() / 3;
  auto range = [](long long b, long long s) { return "[" + std::to_string(b) + ", " + std::to_string(b + s) + ")"; };
  const long long classes = table[2];
  if (classes < 1) throw_invalid(fn, "shard.classes", "must be at least 1", classes);
  std::vector<std::size_t> order;
  for (std::size_t r = 0; r < ranks; ++r) {
    const long long b = table[3 * r], s = table[3 * r + 1], c = table[3 * r + 2];
    if (c != classes)
      throw_invalid(fn, "shard.classes", "must be the same on every rank (" + std::to_string(classes) + " on rank 0)",
                    std::to_string(c) + " on rank " + std::to_string(r));
    if (b < 0 || s < 0 || b > classes - s)
      throw_invalid(fn, "shard", "must lie in [0, classes) = [0, " + std::to_string(classes) + ")",
                    range(b, s) + " on rank " + std::to_string(r));
    if (s > 0) order.push_back(r);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return table[3 * a] < table[3 * b]; });
  const std::string tile = "ranges must tile [0, " + std::to_string(classes) + ") with no gap and no overlap";
  long long next = 0;
  std::size_t previous = ranks;
  for (std::size_t r : order) {
    const long long b = table[3 * r], s = table[3 * r + 1];
    if (b > next) throw_invalid(fn, "shard", tile, "classes " + range(next, b - next) + " held by no rank");
    if (b < next)
      throw_invalid(fn, "shard", tile,
                    "classes " + range(b, std::min(next, b + s) - b) + " held by rank " + std::to_string(previous) +
                        " and rank " + std::to_string(r));
    next = b + s;
    previous = r;
  }
  if (next < classes) throw_invalid(fn, "shard", tile, "classes " + range(next, classes - next) + " held by no rank");
}

struct no_gradient {};

/// The checks of a rank's options, shard and targets, before the collective (the logits' or the
/// linear layer's shapes are the caller's); returns the mean's denominator (the summed weights of
/// the kept targets) and the sample weighting.
/// sequences: the sequence reductions are taken (their per-token weights come from the targets,
/// the options and sequence_lengths, the same on every rank: no collective of their own).
template <class TDerived>
xent::detail::checked_call check_call(const char* fn, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
                                      const cross_entropy_options& opts, bool sequences = false) {
  using xent::detail::throw_invalid;
  const Eigen::Index samples = targets.size();
  xent::detail::check_dim(fn, opts.dim);
  xent::detail::check_reduction(fn, opts.reduction, false, sequences);
  xent::detail::check_index_only_options(fn, opts);
  if (!(opts.label_smoothing >= 0 && opts.label_smoothing <= 1))
    throw_invalid(fn, "label_smoothing", "must be in [0, 1]", opts.label_smoothing);
  if (shard.classes < 1) throw_invalid(fn, "shard.classes", "must be at least 1", shard.classes);
  (void)xent::detail::torch_smoothing_of(fn, opts.label_smoothing, opts.label_smoothing_kind, shard.classes);
  if (opts.label_smoothing_excluded.size() != 0)
    throw_invalid(fn, "label_smoothing_excluded", "must be empty (not supported vocabulary-parallel)",
                  std::to_string(opts.label_smoothing_excluded.size()) + " classes");
  if (shard.begin < 0 || shard.size < 0 || shard.begin > shard.classes - shard.size)
    throw_invalid(fn, "shard", "must lie in [0, classes) = [0, " + std::to_string(shard.classes) + ")",
                  "[" + std::to_string(shard.begin) + ", " + std::to_string(shard.begin + shard.size) + ")");
  if (samples == 0) throw_invalid(fn, "targets", "must hold at least one sample", "none");
  if (samples >= Eigen::Index(INT_MAX)) throw_invalid(fn, "targets", "must hold fewer than INT_MAX samples (one MPI count)", samples);
  if (opts.weight.size() != 0 && opts.weight.size() != shard.classes)
    throw_invalid(fn, "weight",
                  "must be empty or have one entry per class of the whole vocabulary (" + std::to_string(shard.classes) + ")",
                  opts.weight.size());
  xent::detail::sample_selection selection = xent::detail::selection_of(fn, opts, samples);
  const double denominator =
      xent::detail::check_index_targets(fn, targets, samples, shard.classes, opts.ignore_index, opts.weight, selection);
  xent::detail::plan_index_sequences(selection, opts.reduction, targets, opts.ignore_index, opts.weight);
  return {samples, denominator, selection};
}

/// check_call and the shapes of the rank's logits (and gradient buffer).
template <class Derived, class TDerived, class Out>
xent::detail::checked_call check_arguments(const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                       const vocab_shard& shard, const cross_entropy_options& opts, const Out& grad_out) {
  using xent::detail::shape_string;
  using xent::detail::throw_invalid;
  const xent::detail::checked_call checked = check_call(fn, targets, shard, opts, true);
  const Eigen::Index samples = checked.samples;
  const Eigen::Index rows = opts.dim == 0 ? shard.size : samples, cols = opts.dim == 0 ? samples : shard.size;
  if (logits.rows() != rows || logits.cols() != cols)
    throw_invalid(fn, "local_logits",
                  std::string("must be ") + (opts.dim == 0 ? "shard.size x samples" : "samples x shard.size") + " (" +
                      shape_string(rows, cols) + ")",
                  shape_string(logits.rows(), logits.cols()));
  if constexpr (!std::is_same_v<Out, no_gradient>) {
    static_assert(std::is_same_v<typename Derived::Scalar, typename Out::Scalar>,
                  "the gradient buffer must have the logits' scalar type");
    if (grad_out.rows() != logits.rows() || grad_out.cols() != logits.cols())
      throw_invalid(fn, "grad_local_out", "must have the shape of local_logits (" + shape_string(logits.rows(), logits.cols()) + ")",
                    shape_string(grad_out.rows(), grad_out.cols()));
  }
  return checked;
}

/// The kernels' view of one call, as cross_entropy sets up its own; `weights` receives the
/// vocabulary's weights in the compute type, and the setup points into it.
template <class T>
shard_setup<T> shard_setup_of(const cross_entropy_options& opts, const vocab_shard& shard, std::vector<T>& weights) {
  weights.resize(std::size_t(opts.weight.size()));
  for (std::size_t k = 0; k < weights.size(); ++k) weights[k] = static_cast<T>(opts.weight(Eigen::Index(k)));
  shard_setup<T> setup;
  setup.global.weight = weights.empty() ? nullptr : weights.data();
  setup.global.smoothing =
      static_cast<T>(xent::detail::torch_smoothing_of("vocab_parallel_cross_entropy", opts.label_smoothing,
                                                      opts.label_smoothing_kind, shard.classes));
  setup.global.weight_total = weights.empty() ? static_cast<T>(shard.classes) : static_cast<T>(opts.weight.sum());
  setup.global.classes = shard.classes;
  setup.global.softcap = static_cast<T>(opts.softcap);
  setup.global.z_loss = static_cast<T>(opts.z_loss);
  setup.local = setup.global;
  if (setup.local.weight) setup.local.weight += shard.begin;
  setup.begin = shard.begin;
  return setup;
}

/// The checks only the merged records can answer; every rank holds the same records, so every rank
/// gives the same verdict.
template <class T, class TargetAt>
void check_merged(const char* fn, const std::vector<vocab_record<T>>& records, TargetAt&& target_at, const vocab_shard& shard) {
  using xent::detail::throw_invalid;
  const vocab_record<T>& status = records.back();
  if (status.target_logit != T(0))
    throw_invalid(fn, "comm", "must have every rank accept its arguments",
                  std::to_string(static_cast<long long>(status.target_logit)) +
                      " rank(s) rejecting theirs (the error on those ranks says why)");
  if (status.holders != shard.classes)
    throw_invalid(fn, "shard", "sizes summed over the ranks must equal classes (" + std::to_string(shard.classes) + ")",
                  status.holders);
  for (std::size_t j = 0; j + 1 < records.size(); ++j) {
    const Index t = target_at(Index(j));
    if (t >= 0 && records[j].holders != 1)
      throw_invalid(fn, "shard", "ranges must tile [0, " + std::to_string(shard.classes) + ") with no gap and no overlap",
                    "target[" + std::to_string(j) + "] = " + std::to_string(t) + " held by " +
                        std::to_string(records[j].holders) + " ranks");
  }
}

/// The one collective: every rank's records of every sample merged, then the checks only the
/// merged records can answer. The status record that ends `records` says how many classes each
/// rank holds or, from a rank whose own checks failed (local_error), that it rejected them; that
/// rank then throws its own error, every other one an error naming the failure elsewhere.
template <class T, class TargetAt>
void exchange_records(const char* fn, std::vector<vocab_record<T>>& records, const std::exception_ptr& local_error,
                      TargetAt&& target_at, const vocab_shard& shard, MPI_Comm comm) {
  if (!local_error)
    records.back().holders = shard.size;  // summed: must give the vocabulary size
  else
    records.back().target_logit = T(1);  // summed: the number of ranks that rejected their arguments
  {
    const scoped_datatype type = record_datatype<T>();
    const scoped_op op = record_merge_op<T>();
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, records.data(), int(records.size()), type.get(), op.get(), comm), "MPI_Allreduce");
  }
  if (local_error) std::rethrow_exception(local_error);
  check_merged(fn, records, target_at, shard);
}

/// Each sample's loss (0 for a left-out one) and, with return_lse, its log-sum-exp over the whole
/// vocabulary (NaN for a left-out sample, as cross_entropy's) from the merged records.
template <class T, class TargetAt>
void losses_of(const std::vector<vocab_record<T>>& records, TargetAt&& target_at, const shard_setup<T>& setup,
               bool return_lse, Eigen::Matrix<T, Eigen::Dynamic, 1>& losses, Eigen::Matrix<T, Eigen::Dynamic, 1>& lse) {
  const Eigen::Index samples = Eigen::Index(records.size()) - 1;
  losses.resize(samples);
  lse.resize(return_lse ? samples : 0);
  for (Eigen::Index j = 0; j < samples; ++j) {
    const Index t = target_at(j);
    losses(j) = t < 0 ? T(0) : record_loss(records[std::size_t(j)], t, setup);
    if (return_lse) lse(j) = t < 0 ? std::numeric_limits<T>::quiet_NaN() : records[std::size_t(j)].lse().value();
  }
}

/// Both public functions: checks, the local records, the one collective, the loss and (unless
/// Out is no_gradient) the gradient of the rank's shard.
///
/// No rank may throw before the collective on its own: the others would wait in MPI_Allreduce for
/// ever. So a rank whose arguments fail a check still takes part, with identity records and a
/// "rejected" mark in the status record that ends the array; after the collective it throws its own
/// error and every other rank throws one that names the failure elsewhere.
template <class Derived, class TDerived, class Out>
loss_result<xent::detail::compute_t<typename Derived::Scalar>> vocab_parallel(
    const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
    const vocab_shard& shard, const cross_entropy_options& opts, MPI_Comm comm, const Out& grad_out) {
  using S = typename Derived::Scalar;
  using T = xent::detail::compute_t<S>;
  if constexpr (!std::is_same_v<S, Eigen::bfloat16>) xent::detail::check_real<Derived>();
  static_assert(std::is_integral_v<typename TDerived::Scalar> && std::is_signed_v<typename TDerived::Scalar>,
                "class-index targets must be signed integers (int32 or int64)");
  check_communicator(fn, comm);

  const Eigen::Index samples = targets.size();
  // Every rank must pass the same count; the targets are the same everywhere, so this one is.
  const Eigen::Index count = samples < Eigen::Index(INT_MAX) ? samples + 1 : 1;
  std::exception_ptr local_error;
  xent::detail::checked_call checked{samples, 0.0, {}};
  std::vector<T> weights;
  shard_setup<T> setup;
  try {
    checked = check_arguments(fn, logits, targets, shard, opts, grad_out);
    setup = shard_setup_of(opts, shard, weights);
  } catch (...) {
    local_error = std::current_exception();
  }
  const double denominator = checked.denominator;
  // The mask only once it is checked (a rank whose arguments fail reads no target).
  const auto target_at = xent::detail::index_targets(targets, opts.ignore_index, checked.selection.mask);
  const int threads = xent::detail::thread_count(opts.num_threads, samples * shard.size);

  std::vector<vocab_record<T>> records(std::size_t(count), vocab_record<T>::identity());
  if (!local_error)
    xent::detail::with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
      fill_records(v, target_at, setup, threads, records.data());
    });
  exchange_records(fn, records, local_error, target_at, shard, comm);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses, lse;
  losses_of(records, target_at, setup, opts.return_lse, losses, lse);
  if constexpr (!std::is_same_v<Out, no_gradient>) {
    // grad_out = 1: the single-process scale (1 / denominator for mean, times the sample weights),
    // rounded the same way.
    const auto c = xent::detail::seed_scale<T>(opts.reduction, denominator, checked.selection);
    xent::detail::with_out_view(fn, "grad_local_out", logits, grad_out, opts.dim, [&](const samples_view<S>& out) {
      xent::detail::with_view(logits, opts.dim, [&](const samples_view<const S>& v) {
        write_gradients(v, out, target_at, records.data(), setup, c, threads);
      });
    });
  }
  auto result = xent::detail::reduce_losses(opts.reduction, std::move(losses), denominator, checked.selection);
  return opts.return_lse ? std::move(result).with_lse(std::move(lse)) : result;
}

}  // namespace detail

/// Checks, in one MPI_Allgather, that the ranks' shards tile [0, classes) with no gap and no
/// overlap and agree on `classes`. Collective: every rank of comm calls it, and every rank throws
/// the same xent::invalid_argument when the layout is wrong. vocab_parallel_cross_entropy itself
/// checks only what its one collective can see (docs/parallel.md): call this once when the shards
/// are set up.
inline void validate_shards(const vocab_shard& shard, MPI_Comm comm) {
  constexpr const char* fn = "validate_shards";
  detail::check_communicator(fn, comm);
  int ranks = 0;
  detail::check_mpi(MPI_Comm_size(comm, &ranks), "MPI_Comm_size");
  const long long mine[3] = {static_cast<long long>(shard.begin), static_cast<long long>(shard.size),
                             static_cast<long long>(shard.classes)};
  std::vector<long long> table(3 * std::size_t(ranks));
  detail::check_mpi(MPI_Allgather(mine, 3, MPI_LONG_LONG, table.data(), 3, MPI_LONG_LONG, comm), "MPI_Allgather");
  detail::check_shard_table(fn, table);
}

/// torch.nn.functional.cross_entropy (class-index targets) over a vocabulary sharded across the
/// ranks of comm, in one MPI_Allreduce.
///
/// local_logits: the rank's classes of every sample, shard.size x N (dim = 0, the default: rows
/// [shard.begin, shard.begin + shard.size) of the C x N logits) or N x shard.size (dim = 1); float,
/// double or Eigen::bfloat16 (computed in float, as cross_entropy does).
/// targets: the N global class indices, the same on every rank, in [0, C) or ignore_index.
/// opts: as cross_entropy's: reduction (none, mean, sum), ignore_index, label_smoothing (both kinds),
/// weight as the whole vocabulary's C weights on every rank, softcap, z_loss, return_lse (each
/// sample's log-sum-exp over the whole vocabulary, of the softcapped logits), sample_weight, mask,
/// normalizer, num_threads for the rank's own work.
/// Collective: every rank of comm calls it with the same targets, opts and shard.classes.
/// \returns the same loss_result on every rank (bit for bit), within 4 ulp of xent::cross_entropy
///          on the whole logits (docs/parallel.md).
/// \throws xent::invalid_argument on every rank when any rank's arguments are wrong, when the shard
///         sizes do not add up to C or a target is held by no rank or by several; mpi_error if MPI
///         reports an error (with an error handler that returns).
template <class Derived, class TDerived, std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<xent::detail::compute_t<typename Derived::Scalar>> vocab_parallel_cross_entropy(
    const Eigen::DenseBase<Derived>& local_logits, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
    const cross_entropy_options& opts, MPI_Comm comm) {
  return detail::vocab_parallel("vocab_parallel_cross_entropy", local_logits, targets, shard, opts, comm,
                                detail::no_gradient{});
}

/// vocab_parallel_cross_entropy, and the gradient of the returned loss (grad_out = 1; for reduction
/// none, of the sum of the per-sample losses) with respect to the rank's own logits, written into
/// grad_local_out (local_logits' shape; it may be local_logits itself). No second collective: the
/// merged records of the forward are all the gradient needs.
template <class Derived, class TDerived, class OutDerived,
          std::enable_if_t<std::is_integral_v<typename TDerived::Scalar>, int> = 0>
loss_result<xent::detail::compute_t<typename Derived::Scalar>> vocab_parallel_cross_entropy_with_grad(
    const Eigen::DenseBase<Derived>& local_logits, const Eigen::DenseBase<TDerived>& targets, const vocab_shard& shard,
    const cross_entropy_options& opts, MPI_Comm comm, const Eigen::DenseBase<OutDerived>& grad_local_out) {
  return detail::vocab_parallel("vocab_parallel_cross_entropy_with_grad", local_logits, targets, shard, opts, comm,
                                grad_local_out.derived());
}

/// Sums `count` numbers elementwise over the ranks of comm, in place, in one MPI_Allreduce
/// (MPI_SUM): data-parallel evaluation accumulators (NLL sum, token count, ...). T is any
/// arithmetic type with a predefined MPI datatype (double, float, int64_t, ...).
/// Collective: every rank calls it with the same count.
template <class T>
void allreduce_sum(T* values, std::size_t count, MPI_Comm comm) {
  constexpr const char* fn = "allreduce_sum";
  detail::check_communicator(fn, comm);
  if (count > std::size_t(INT_MAX)) xent::detail::throw_invalid(fn, "count", "must be at most INT_MAX (one MPI count)", count);
  detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, values, int(count), detail::mpi_type_of<T>(), MPI_SUM, comm),
                    "MPI_Allreduce");
}

/// allreduce_sum over a contiguous container (std::vector, std::array, a struct with data() and
/// size() over its flat array of accumulators).
template <class Container,
          std::enable_if_t<!std::is_base_of_v<Eigen::EigenBase<Container>, Container>, int> = 0,
          class = decltype(std::data(std::declval<Container&>()), std::size(std::declval<Container&>()))>
void allreduce_sum(Container& values, MPI_Comm comm) {
  allreduce_sum(std::data(values), static_cast<std::size_t>(std::size(values)), comm);
}

/// allreduce_sum over an Eigen vector or matrix (in place; a non-contiguous block goes through a copy).
template <class Derived>
void allreduce_sum(const Eigen::DenseBase<Derived>& values, MPI_Comm comm) {
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  auto& v = const_cast<Derived&>(values.derived());
  if constexpr (xent::detail::has_direct_access<Derived>) {
    if (v.innerStride() == 1 && (v.outerStride() == v.innerSize() || v.outerSize() <= 1)) {
      allreduce_sum(v.data(), static_cast<std::size_t>(v.size()), comm);
      return;
    }
  }
  typename Derived::PlainObject copy = v;
  allreduce_sum(copy.data(), static_cast<std::size_t>(copy.size()), comm);
  v = copy;
}

}  // namespace xent::parallel

#endif
