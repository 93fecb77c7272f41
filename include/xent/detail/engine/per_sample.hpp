#ifndef XENT_DETAIL_ENGINE_PER_SAMPLE_HPP
#define XENT_DETAIL_ENGINE_PER_SAMPLE_HPP

// The front end of every per-sample loss (cross_entropy, nll_loss, the focal and generalised
// losses, distillation): the checks they share, class-index targets, the upstream gradient of each
// sample, the output views, and the reduction of the per-sample losses (reduce.hpp's policy: in
// sample order, compensated, in double, so the result does not depend on the thread count).

#include "../../core/error.hpp"
#include "../../core/loss_result.hpp"
#include "../../core/reduction.hpp"
#include "checks.hpp"
#include "reduce.hpp"
#include "selection.hpp"
#include "sweep.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace xent::detail {

template <class Derived>
void check_real() {
  static_assert(std::is_same_v<typename Derived::Scalar, float> || std::is_same_v<typename Derived::Scalar, double>,
                "xent kernels take float or double logits");
}

/// float, double, or a type the kernels widen to float (bf16, half).
template <class Derived>
void check_logit_type() {
  using S = typename Derived::Scalar;
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, double> || std::is_same_v<S, Eigen::bfloat16> ||
                    std::is_same_v<S, Eigen::half>,
                "xent's per-sample losses take float, double, Eigen::bfloat16 or Eigen::half logits");
}

/// The checks every categorical loss shares; returns the sample count.
template <class Derived, class Options>
Eigen::Index check_categorical(const char* fn, const char* x_name, const Eigen::DenseBase<Derived>& x, const Options& o,
                               double smoothing) {
  check_logit_type<Derived>();
  check_dim(fn, o.dim);
  check_reduction(fn, o.reduction, false, has_sequence_lengths_v<Options>);
  if (!(smoothing >= 0 && smoothing <= 1)) throw_invalid(fn, "label_smoothing", "must be in [0, 1]", smoothing);
  check_not_empty(fn, x_name, x);
  const Eigen::Index classes = o.dim == 0 ? x.rows() : x.cols();
  if (o.weight.size() != 0 && o.weight.size() != classes)
    throw_invalid(fn, "weight", "must be empty or have one entry per class (" + std::to_string(classes) + ")",
                  o.weight.size());
  return o.dim == 0 ? x.cols() : x.rows();
}

/// What the checks of a per-sample call return: the sample count, the mean's denominator and the
/// call's sample weighting.
struct checked_call {
  Eigen::Index samples;
  double denominator;
  sample_selection selection;
};

/// The error of a class-index target out of range (out of line: only its test is in the loop).
[[noreturn]] inline void throw_bad_target(const char* fn, Eigen::Index j, long t, Eigen::Index classes, long ignore_index) {
  throw_invalid(fn, "target[" + std::to_string(j) + "]",
                "must be in [0, " + std::to_string(classes) + ") or ignore_index (" + std::to_string(ignore_index) + ")", t);
}

/// Checks class-index targets and returns the weighted mean's denominator: the sum, over the kept
/// samples (not masked, target not ignore_index), of the sample weight times the target's class
/// weight (their count when unweighted), as torch's nll_loss. A masked sample's target is not read.
template <class TDerived>
double check_index_targets(const char* fn, const Eigen::DenseBase<TDerived>& targets, Eigen::Index samples, Eigen::Index classes,
                           long ignore_index, const Eigen::VectorXd& weight, const sample_selection& selection = {}) {
  // Signed, as torch's int64 targets: an unsigned 2^64 - 100 would wrap to the default ignore_index
  // and be skipped without a word.
  static_assert(std::is_integral_v<typename TDerived::Scalar> && std::is_signed_v<typename TDerived::Scalar>,
                "class-index targets must be signed integers (int32 or int64)");
  if (targets.size() != samples)
    throw_invalid(fn, "targets", "must have one entry per sample (" + std::to_string(samples) + ")", targets.size());
  // The pointers by value (through references they were reloaded for every sample), the targets'
  // too when they have storage (a vector's inner stride is the step between its entries); the
  // range test inline and its message out of line (the OpenMP build called a lambda holding both
  // for every target: 21 % of a C = 10 forward's profile).
  const bool* mask = selection.mask;
  const double* sample_weight = selection.weight;
  const double* class_weight = weight.size() ? weight.data() : nullptr;
  const auto denominator = [=](auto target_at) {
    if (!class_weight && !sample_weight) {
      // Unweighted: the denominator is a count, exact in an integer (and the same double as the
      // compensated sum of ones), without a chain of dependent double additions per target.
      long long kept = 0;
      for (Eigen::Index j = 0; j < samples; ++j) {
        if (mask && !mask[j]) continue;
        const long t = target_at(j);
        if (t == ignore_index) continue;
        if (t < 0 || t >= classes) throw_bad_target(fn, j, t, classes, ignore_index);
        ++kept;
      }
      return double(kept);
    }
    // A sample left out adds 0, which leaves a compensated sum as it was.
    return engine::ordered_sum_of(samples, [=](Eigen::Index j) {
      if (mask && !mask[j]) return 0.0;
      const long t = target_at(j);
      if (t == ignore_index) return 0.0;
      if (t < 0 || t >= classes) throw_bad_target(fn, j, t, classes, ignore_index);
      return (class_weight ? class_weight[t] : 1.0) * (sample_weight ? sample_weight[j] : 1.0);
    });
  };
  if constexpr (has_direct_access<TDerived>) {
    const auto* data = targets.derived().data();
    const Eigen::Index step = targets.derived().innerStride();
    return denominator([data, step](Eigen::Index j) { return static_cast<long>(data[j * step]); });
  } else {
    const auto& t_of = targets.derived();
    return denominator([&t_of](Eigen::Index j) { return static_cast<long>(t_of.coeff(j)); });
  }
}

/// The sequence plan of a call with class-index targets: token j weighs a_j cw[target_j] in its
/// sequence's denominator (0 when ignored), as in torch's mean (check_index_targets has checked them).
template <class TDerived>
void plan_index_sequences(sample_selection& s, reduction r, const Eigen::DenseBase<TDerived>& targets, long ignore_index,
                          const Eigen::VectorXd& weight) {
  plan_sequences(s, r, targets.size(), [&](Eigen::Index j) {
    const long t = static_cast<long>(targets.derived().coeff(j));
    if (t == ignore_index) return 0.0;
    return (weight.size() ? weight(t) : 1.0) * s.weight_at(j);
  });
}

/// The class of sample j, or -1 when its target is ignore_index or the mask leaves it out (its
/// logits are never read).
template <class TDerived>
auto index_targets(const Eigen::DenseBase<TDerived>& targets, long ignore_index, const bool* mask = nullptr) {
  return [&targets, ignore_index, mask](Index j) -> Index {
    if (mask && !mask[j]) return Index(-1);
    const long t = static_cast<long>(targets.derived().coeff(j));
    return t == ignore_index ? Index(-1) : Index(t);
  };
}

/// The class weights in the compute type (empty when unweighted).
template <class T>
std::vector<T> weights_in(const Eigen::VectorXd& weight) {
  std::vector<T> w(static_cast<std::size_t>(weight.size()));
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = static_cast<T>(weight(Index(k)));
  return w;
}

/// Reduces per-sample losses as torch (mean: the weighted sum over the denominator; every sample
/// ignored gives 0 / 0 = NaN, as torch), by the one policy: in order, compensated, in double. The
/// sample weights multiply each loss (in double for the sum); see sample_selection for the divisor.
template <class T>
loss_result<T> reduce_losses(reduction r, Eigen::Matrix<T, Eigen::Dynamic, 1>&& losses, double denominator,
                             const sample_selection& selection = {}) {
  if (r == reduction::none) {
    if (selection.weight)
      for (Index j = 0; j < losses.size(); ++j) losses(j) = static_cast<T>(double(losses(j)) * selection.weight[j]);
    return loss_result<T>::per_sample_losses(std::move(losses), denominator);
  }
  if (const sequence_plan* plan = selection.sequences.get()) {
    // The weights hold the division: each sequence's sum (per_sequence) or all of them (sequence_mean).
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const Index count = plan->count();
    Eigen::Matrix<T, Eigen::Dynamic, 1> per(count);
    engine::exact_sum all;
    for (Index q = 0; q < count; ++q) {
      engine::exact_sum s;
      for (Index j = plan->start[std::size_t(q)]; j < plan->start[std::size_t(q) + 1]; ++j)
        if (selection.kept(j) && plan->weight[std::size_t(j)] != 0) s.add(double(losses(j)) * plan->weight[std::size_t(j)]);
      per(q) = static_cast<T>(plan->denominator[std::size_t(q)] > 0 ? s.value() : nan);
      if (plan->denominator[std::size_t(q)] > 0) all.add(s.value());
    }
    const double kept = double(plan->kept_sequences);
    if (r == reduction::per_sequence) return loss_result<T>::per_sequence_losses(std::move(per), kept);
    return loss_result<T>::reduced(r, static_cast<T>(plan->kept_sequences ? all.value() : nan), kept);
  }
  double total;
  if (selection.weight) {
    // A masked sample's loss is 0 but its weight need not be: it adds 0 rather than trust 0 * w.
    const T* l = losses.data();
    const double* w = selection.weight;
    const bool* mask = selection.mask;
    total = mask ? engine::ordered_sum_of(losses.size(), [l, w, mask](Index j) { return mask[j] ? double(l[j]) * w[j] : 0.0; })
                 : engine::ordered_sum_of(losses.size(), [l, w](Index j) { return double(l[j]) * w[j]; });
  } else {
    total = engine::ordered_sum(losses.data(), losses.size());
  }
  return loss_result<T>::reduced(r, static_cast<T>(total / selection.divisor(r, denominator)), denominator);
}

/// An upstream gradient per sample times the sample's weight.
template <class T, class Base>
struct weighted_upstream {
  Base base;
  const double* weight;
  T operator()(Eigen::Index j) const { return weight ? base(j) * static_cast<T>(weight[j]) : base(j); }
};

/// The upstream gradient of each sample's loss: grad_out * factor / divisor for a reduced loss
/// (grad_out a number), grad_out[j] * factor for none (one entry per sample); per_sequence: one
/// entry per sequence, or a number for all of them (what the _with_grad calls seed); times the
/// sample's (sequence_plan's effective) weight.
template <class T, class G>
auto upstream_of(const char* fn, reduction r, Eigen::Index samples, double factor, double divisor, const G& grad_out,
                 const sample_selection& selection = {}) {
  if constexpr (std::is_arithmetic_v<G>) {
    if (r == reduction::none)
      throw_invalid(fn, "grad_out", "must have one entry per sample for reduction none (a vector), not a scalar", grad_out);
    const T c = static_cast<T>(double(grad_out) * factor / divisor);
    auto base = [c](Eigen::Index) { return c; };
    return weighted_upstream<T, decltype(base)>{base, selection.weight};
  } else {
    // per_sequence: one entry per sequence, each token's upstream its sequence's.
    const sequence_plan* plan = r == reduction::per_sequence ? selection.sequences.get() : nullptr;
    if (plan) {
      if (grad_out.size() != plan->count())
        throw_invalid(fn, "grad_out", "must have one entry per sequence (" + std::to_string(plan->count()) + ") for reduction per_sequence",
                      grad_out.size());
    } else {
      if (r != reduction::none)
        throw_invalid(fn, "grad_out", std::string("must be a scalar for reduction ") + to_string(r) + ", not a vector of size",
                      grad_out.size());
      if (grad_out.size() != samples)
        throw_invalid(fn, "grad_out", "must have one entry per sample (" + std::to_string(samples) + ")", grad_out.size());
    }
    const T f = static_cast<T>(factor);
    auto base = [&grad_out, f, seq = plan ? plan->sequence_of.data() : nullptr](Eigen::Index j) {
      return f * static_cast<T>(grad_out.derived().coeff(seq ? seq[j] : j));
    };
    return weighted_upstream<T, decltype(base)>{base, selection.weight};
  }
}

/// The upstream gradient of each sample's loss: grad_out for sum, grad_out / denominator for mean,
/// grad_out[j] for none (each times the sample weight, over the normalizer when given). A number
/// goes with mean/sum, a vector with none.
template <class T, class G>
auto grad_scale_of(const char* fn, reduction r, Eigen::Index samples, double denominator, const G& grad_out,
                   const sample_selection& selection = {}) {
  return upstream_of<T>(fn, r, samples, 1.0, selection.divisor(r, denominator), grad_out, selection);
}

/// The gradient of what a _with_grad call returns: of the reduced loss, or of the sum of the
/// per-sample losses for none.
template <class T>
auto seed_scale(reduction r, double denominator, const sample_selection& selection = {}) {
  const T c = r == reduction::none ? T(1) : static_cast<T>(1.0 / selection.divisor(r, denominator));
  auto base = [c](Eigen::Index) { return c; };
  return weighted_upstream<T, decltype(base)>{base, selection.weight};
}

/// The seed of a _with_grad call: 1 for a reduced loss, a vector of ones for none.
template <class T>
struct ones_of {
  Eigen::Index n;
  Eigen::Index size() const { return n; }
  const ones_of& derived() const { return *this; }
  T coeff(Eigen::Index) const { return T(1); }
};

/// Calls f with a writable view of out (checked to have x's shape and not to overlap the other
/// inputs), through a temporary when out has no storage of its own. in_place_ok: out may be
/// exactly x's storage (the loss documents its in-place mode).
template <class Derived, class OutDerived, class F>
void with_out_view(const char* fn, const char* out_name, const Eigen::DenseBase<Derived>& x,
                   const Eigen::DenseBase<OutDerived>& out, int dim, F&& f, bool in_place_ok = true) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename OutDerived::Scalar>,
                "the gradient buffer must have the input's scalar type");
  if (out.rows() != x.rows() || out.cols() != x.cols())
    throw_invalid(fn, out_name, "must have the shape of the input (" + shape_string(x.rows(), x.cols()) + ")",
                  shape_string(out.rows(), out.cols()));
  check_no_overlap(fn, out_name, out, "the input", x, in_place_ok);
  // Eigen's documented way to write into an output argument that may be a temporary Map or Block.
  auto& result = const_cast<OutDerived&>(out.derived());
  if constexpr (has_direct_access<OutDerived>) {
    f(view_of(result, dim));
  } else {
    typename OutDerived::PlainObject evaluated(x.rows(), x.cols());
    f(view_of(evaluated, dim));
    result = evaluated;
  }
}

}  // namespace xent::detail

#endif
