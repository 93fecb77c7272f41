#ifndef XENT_METRICS_TEMPERATURE_HPP
#define XENT_METRICS_TEMPERATURE_HPP

// Temperature scaling (Guo et al. 2017): the single T > 0 that minimises the mean NLL of
// softmax(logits / T) on held-out data. In beta = 1 / T the mean NLL is convex (a log-sum-exp of
// functions linear in beta minus a linear term), so a safeguarded Newton iteration on beta, with a
// bracket kept from the sign of the derivative, converges in a handful of passes over the data.

#include "../core/error.hpp"
#include "../detail/engine/checks.hpp"
#include "../detail/engine/sweep.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/losses/temperature.hpp"
#include "evaluation.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// Options of fit_temperature and fit_temperature_with: which samples count, the search interval
/// and stopping rule of the one-dimensional search for T, and the ECE bins reported.
struct temperature_options {
  /// Samples whose target equals this are left out.
  long ignore_index = -100;
  /// The class axis (as eval_options::dim).
  int dim = 0;
  /// The search interval of T. An optimum outside it is reported at the bound (at_bound = true):
  /// perfectly separated data drive T to 0, data no better than chance drive it to infinity.
  double min_temperature = 0.01;
  /// The upper end of that interval (finite, above min_temperature).
  double max_temperature = 100;
  /// Stop when a step changes 1 / T by at most this fraction of itself. Float logits give the
  /// derivative to about 1e-7, so much smaller tolerances only add passes.
  double tolerance = 1e-6;
  /// At most this many passes after the first (at T = 1); temperature_fit::converged is false if
  /// the tolerance was not met by then.
  int max_iterations = 60;
  /// Bins of the expected calibration error reported before and after (fit_temperature only).
  int bins = 15;
  /// As eval_options::skip_nonfinite: false gives a NaN fit when any sample has no distribution.
  bool skip_nonfinite = false;
  /// Threads of each pass over the data: 0, OpenMP's default; 1, serial. The fit does not depend on it.
  int num_threads = 0;
};

/// Sums over samples of the NLL at one temperature and of its first two derivatives in beta = 1 / T,
/// weighted by the samples' weights when given (add_temperature_sums with weights). Six packed
/// doubles, every one a plain sum: merge() adds them, so shards and ranks reduce them as the
/// evaluation state: MPI_Allreduce(MPI_IN_PLACE, &sums, 6, MPI_DOUBLE, MPI_SUM, comm).
struct temperature_sums {
  double samples = 0;            ///< samples with a distribution and a finite target logit (and a weight > 0)
  double nonfinite_samples = 0;  ///< samples left out: NaN / +inf logits, all masked, or a masked (-inf) target
  double nll = 0;                ///< sum of NLL (nats), weighted
  double gradient = 0;           ///< sum of d NLL / d beta = E_p[x] - x_target, weighted
  double curvature = 0;          ///< sum of d2 NLL / d beta2 = Var_p[x], weighted
  double weight = 0;             ///< sum of the counted samples' weights (= samples without weights): the mean's denominator

  /// Adds o's sums to these, as if these had seen o's samples too; returns *this.
  temperature_sums& merge(const temperature_sums& o) noexcept {
    samples += o.samples;
    nonfinite_samples += o.nonfinite_samples;
    nll += o.nll;
    gradient += o.gradient;
    curvature += o.curvature;
    weight += o.weight;
    return *this;
  }
};
static_assert(sizeof(temperature_sums) == 6 * sizeof(double), "temperature_sums must be six packed doubles");

/// What fit_temperature and fit_temperature_with return: the fitted temperature with the NLL (and
/// ECE) before and after. The temperature, NLL and ECE are NaN when no sample counted, or when a
/// non-finite sample was seen and skip_nonfinite is false.
struct temperature_fit {
  double temperature = std::numeric_limits<double>::quiet_NaN();  ///< the fitted T
  double nll_before = std::numeric_limits<double>::quiet_NaN();   ///< mean NLL at T = 1
  double nll_after = std::numeric_limits<double>::quiet_NaN();    ///< mean NLL at the fitted T
  /// NLL's split (nll_before = calibration + refinement): calibration = nll_before - nll_after, the
  /// NLL the fitted temperature removes (a lower bound on what any recalibration map removes);
  /// refinement = nll_after, what is left.
  ///@{
  double nll_calibration = std::numeric_limits<double>::quiet_NaN(), nll_refinement = std::numeric_limits<double>::quiet_NaN();
  ///@}
  double ece_before = std::numeric_limits<double>::quiet_NaN();   ///< ECE at T = 1 (fit_temperature only)
  double ece_after = std::numeric_limits<double>::quiet_NaN();    ///< ECE at the fitted T (fit_temperature only)
  int iterations = 0;        ///< passes over the data after the first, at T = 1
  bool converged = false;    ///< the step tolerance was met (or the optimum lies at a bound)
  bool at_bound = false;     ///< the optimum is at min_temperature or max_temperature, or beyond
  std::int64_t samples = 0;  ///< samples the fit used
  /// Samples left out for want of a distribution, as temperature_sums::nonfinite_samples.
  std::int64_t nonfinite_samples = 0;
};

namespace detail {

inline void check_temperature_options(const char* fn, const temperature_options& o) {
  check_dim(fn, o.dim);
  check_num_threads(fn, o.num_threads);
  if (!(o.min_temperature > 0 && o.min_temperature < o.max_temperature && o.max_temperature < std::numeric_limits<double>::infinity()))
    throw_invalid(fn, "min_temperature", "must be positive and below a finite max_temperature (" + std::to_string(o.max_temperature) + ")",
                  o.min_temperature);
  // The fit evaluates 1 / T up to 1 / min_temperature: in double here, and fit_temperature checks it
  // in the logits' type too. max_temperature, above min_temperature, has the smaller inverse.
  check_inverse_temperature<double>(fn, "min_temperature", o.min_temperature);
  if (!(o.tolerance > 0)) throw_invalid(fn, "tolerance", "must be positive", o.tolerance);
  if (o.max_iterations < 1) throw_invalid(fn, "max_iterations", "must be at least 1", o.max_iterations);
  if (o.bins < 1) throw_invalid(fn, "bins", "must be at least 1", o.bins);
}

template <class Derived, class TDerived, class Weight>
void add_temperature_sums(const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                          double temperature, const temperature_options& opts, temperature_sums& sums, Weight&& weight) {
  using T = typename Derived::Scalar;
  check_real<Derived>();
  check_dim(fn, opts.dim);
  check_num_threads(fn, opts.num_threads);
  check_not_empty(fn, "logits", logits);
  if (!(temperature > 0 && temperature < std::numeric_limits<double>::infinity()))
    throw_invalid(fn, "temperature", "must be positive and finite", temperature);
  check_inverse_temperature<T>(fn, "temperature", temperature);
  const Eigen::Index samples = opts.dim == 0 ? logits.cols() : logits.rows();
  const Eigen::Index classes = opts.dim == 0 ? logits.rows() : logits.cols();
  check_eval_targets(fn, targets, samples, classes, opts.ignore_index, [&](Eigen::Index j) { return weight(j) != 0; });
  using CT = detail::compute_t<T>;
  const CT beta = static_cast<CT>(1.0 / temperature);
  // One sweep (threads over samples, the sums in double per sample), then the samples' moments
  // added in order: the same bits for any thread count.
  std::vector<losses::temperature_moments> moments(static_cast<std::size_t>(samples));
  const auto& t = targets.derived();
  auto target_at = [&](Eigen::Index j) -> Eigen::Index {
    const long c = static_cast<long>(t.coeff(j));
    return c == opts.ignore_index || weight(j) == 0 ? -1 : Eigen::Index(c);
  };
  with_view(logits, opts.dim, [&](const samples_view<const T>& v) {
    const losses::temperature_policy<T, decltype(target_at)> policy(moments.data(), target_at, beta);
    engine::sweep(policy, engine::sweep_views<T>{v, nullptr, nullptr}, opts.num_threads);
  });
  temperature_sums batch;
  for (Eigen::Index j = 0; j < samples; ++j) {
    if (target_at(j) < 0) continue;
    const losses::temperature_moments& m = moments[std::size_t(j)];
    if (!m.defined) {
      batch.nonfinite_samples += 1;
      continue;
    }
    // Weight 1 (no weights): the same bits as the unweighted sums.
    const double w = weight(j);
    batch.samples += 1;
    batch.weight += w;
    batch.nll += w * m.nll;
    batch.gradient += w * m.gradient;
    batch.curvature += w * m.curvature;
  }
  sums.merge(batch);
}

template <class Derived, class TDerived>
void add_temperature_sums(const char* fn, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                          double temperature, const temperature_options& opts, temperature_sums& sums) {
  add_temperature_sums(fn, logits, targets, temperature, opts, sums, [](Eigen::Index) { return 1.0; });
}

/// The weights' checks of eval_accumulator::update, under `fn`'s name.
template <class WDerived>
void check_sample_weights(const char* fn, const Eigen::DenseBase<WDerived>& weights, Eigen::Index samples) {
  static_assert(std::is_floating_point_v<typename WDerived::Scalar>, "weights must be float or double");
  if (weights.size() != samples)
    throw_invalid(fn, "weights", "must have one entry per sample (" + std::to_string(samples) + ")", weights.size());
  for (Eigen::Index j = 0; j < samples; ++j) {
    const double w = double(weights.derived().coeff(j));
    if (!(w >= 0 && w < std::numeric_limits<double>::infinity()))
      throw_invalid(fn, "weights[" + std::to_string(j) + "]", "must be finite and >= 0", w);
  }
}

}  // namespace detail

/// Adds one batch's temperature_sums at `temperature` to `sums`: the building block of a streaming fit
/// (see fit_temperature_with). logits and targets as eval_accumulator::update.
template <class Derived, class TDerived>
void add_temperature_sums(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, double temperature,
                          const temperature_options& opts, temperature_sums& sums) {
  detail::add_temperature_sums("add_temperature_sums", logits, targets, temperature, opts, sums);
}

/// The same with per-sample weights (each finite and >= 0, one per sample, as
/// eval_accumulator::update's): the sums are weighted, so that fit_temperature_with minimises the
/// weighted mean NLL. A sample of weight 0 is left out (its target not checked). Weights of 1 give
/// the same sums, bit for bit, as the unweighted call.
/// \throws xent::invalid_argument as the unweighted call, and for weights of another length or a
///   weight that is negative, infinite or NaN.
template <class Derived, class TDerived, class WDerived>
void add_temperature_sums(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                          const Eigen::DenseBase<WDerived>& weights, double temperature, const temperature_options& opts, temperature_sums& sums) {
  constexpr const char* fn = "add_temperature_sums";
  detail::check_dim(fn, opts.dim);
  detail::check_sample_weights(fn, weights, opts.dim == 0 ? logits.cols() : logits.rows());
  const auto& w = weights.derived();
  detail::add_temperature_sums(fn, logits, targets, temperature, opts, sums, [&w](Eigen::Index j) { return double(w.coeff(j)); });
}

/// Fits T from a function that returns the temperature_sums of the whole held-out set at a given
/// temperature (one pass over the data per call: over a file, over shards merged across ranks...).
/// It is called first at T = 1, then once per iteration. ece_before / ece_after are left NaN.
template <class SumsAt>
temperature_fit fit_temperature_with(SumsAt&& sums_at, const temperature_options& opts = {}) {
  detail::check_temperature_options("fit_temperature", opts);
  temperature_fit fit;
  const double beta_min = 1 / opts.max_temperature, beta_max = 1 / opts.min_temperature;
  const temperature_sums first = sums_at(1.0);
  fit.samples = std::int64_t(first.samples);
  fit.nonfinite_samples = std::int64_t(first.nonfinite_samples);
  if (first.samples == 0 || !(first.weight > 0) || (first.nonfinite_samples > 0 && !opts.skip_nonfinite)) return fit;
  const double n = first.weight;  // the weighted mean's denominator (the sample count without weights)
  fit.nll_before = first.nll / n;

  double lo = beta_min, hi = beta_max;  // the minimiser lies in [lo, hi]
  bool lo_seen = false, hi_seen = false;  // whether the derivative was evaluated at lo / hi
  double beta = std::clamp(1.0, lo, hi);
  temperature_sums s = beta == 1.0 ? first : sums_at(1 / beta);
  double g_prev = 0;
  for (;;) {
    const double h = s.curvature / n;
    double g = s.gradient / n;
    // Every distribution one-hot to working precision (separable data far out in the tail): the
    // derivative underflowed to 0, but the optimum still lies on the side it pointed to.
    const bool flat = g == 0 && h == 0 && g_prev != 0;
    if (flat) g = std::copysign(std::numeric_limits<double>::denorm_min(), g_prev);
    if (g > 0) hi = beta, hi_seen = true;
    if (g < 0) lo = beta, lo_seen = true;
    if (g == 0 || hi - lo <= opts.tolerance * beta) {
      fit.converged = true;
      break;
    }
    const double newton = beta - g / h;  // h > 0 wherever g != 0 (a non-degenerate distribution)
    const bool newton_inside = h > 0 && newton > lo && newton < hi;
    if (newton_inside && std::fabs(newton - beta) <= opts.tolerance * beta) {
      fit.converged = true;
      break;
    }
    // Newton converges quadratically near the optimum. A derivative that keeps its sign and shrinks
    // by less than 4x while nothing is known beyond means an exponential tail (separable data: the
    // optimum is at T -> 0 or infinity), where Newton crawls by constant steps in beta: expand
    // geometrically toward the bound instead, as when Newton leaves the interval.
    const bool far_side_unseen = g < 0 ? !hi_seen : !lo_seen;
    const bool slow = g_prev != 0 && (g > 0) == (g_prev > 0) && std::fabs(g) > 0.25 * std::fabs(g_prev);
    double next;
    if (newton_inside && !(slow && far_side_unseen))
      next = newton;
    else if (far_side_unseen && flat)
      next = g < 0 ? hi : lo;  // nothing changes any more before the bound
    else if (far_side_unseen)
      next = g < 0 ? std::min(hi, newton_inside ? std::max(newton, 2 * beta) : 2 * beta)
                   : std::max(lo, newton_inside ? std::min(newton, beta / 2) : beta / 2);
    else
      next = std::sqrt(lo * hi);  // bisection in log T: the bracket may span decades
    if (std::fabs(next - beta) <= opts.tolerance * beta) {
      fit.converged = true;
      break;
    }
    if (fit.iterations == opts.max_iterations) break;
    beta = next;
    g_prev = g;
    s = sums_at(1 / beta);
    ++fit.iterations;
  }
  fit.temperature = 1 / beta;
  fit.nll_after = s.nll / n;
  fit.nll_calibration = fit.nll_before - fit.nll_after;
  fit.nll_refinement = fit.nll_after;
  const double g = s.gradient / n;
  fit.at_bound = (beta == beta_max && g <= 0) || (beta == beta_min && g >= 0);
  return fit;
}

/// Fits the temperature T that minimises the mean NLL of softmax(logits / T) against targets, and
/// reports the NLL and the ECE (opts.bins bins) before (T = 1) and after. logits and targets as
/// eval_accumulator::update; the logits are read a few times in place, never copied.
/// \throws xent::invalid_argument for bad options or input (as eval_accumulator::update).
template <class Derived, class TDerived>
temperature_fit fit_temperature(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                const temperature_options& opts = {}) {
  detail::check_temperature_options("fit_temperature", opts);
  detail::check_inverse_temperature<typename Derived::Scalar>("fit_temperature", "min_temperature", opts.min_temperature);
  temperature_fit fit = fit_temperature_with(
      [&](double temperature) {
        temperature_sums s;
        detail::add_temperature_sums("fit_temperature", logits, targets, temperature, opts, s);
        return s;
      },
      opts);
  eval_options eo;
  eo.ignore_index = opts.ignore_index;
  eo.dim = opts.dim;
  eo.bins = opts.bins;
  eo.skip_nonfinite = opts.skip_nonfinite;
  fit.ece_before = evaluate(logits, targets, eo).ece;
  if (std::isfinite(fit.temperature)) {
    eo.temperature = fit.temperature;
    fit.ece_after = evaluate(logits, targets, eo).ece;
  }
  return fit;
}

/// The same, minimising the weighted mean NLL with per-sample weights (as eval_accumulator::update's:
/// each finite and >= 0, one per sample, frequency weights); the NLL and ECE before and after are
/// weighted too.
/// \throws xent::invalid_argument as the unweighted call, and for bad weights.
template <class Derived, class TDerived, class WDerived>
temperature_fit fit_temperature(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                const Eigen::DenseBase<WDerived>& weights, const temperature_options& opts = {}) {
  detail::check_temperature_options("fit_temperature", opts);
  detail::check_inverse_temperature<typename Derived::Scalar>("fit_temperature", "min_temperature", opts.min_temperature);
  detail::check_sample_weights("fit_temperature", weights, opts.dim == 0 ? logits.cols() : logits.rows());
  const auto& w = weights.derived();
  temperature_fit fit = fit_temperature_with(
      [&](double temperature) {
        temperature_sums s;
        detail::add_temperature_sums("fit_temperature", logits, targets, temperature, opts, s, [&w](Eigen::Index j) { return double(w.coeff(j)); });
        return s;
      },
      opts);
  eval_options eo;
  eo.ignore_index = opts.ignore_index;
  eo.dim = opts.dim;
  eo.bins = opts.bins;
  eo.skip_nonfinite = opts.skip_nonfinite;
  const auto ece_at = [&](const eval_options& o) {
    eval_accumulator acc(o);
    acc.update(logits, targets, weights);
    return acc.report().ece;
  };
  fit.ece_before = ece_at(eo);
  if (std::isfinite(fit.temperature)) {
    eo.temperature = fit.temperature;
    fit.ece_after = ece_at(eo);
  }
  return fit;
}

}  // namespace xent

#endif
