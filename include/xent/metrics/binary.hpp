#ifndef XENT_METRICS_BINARY_HPP
#define XENT_METRICS_BINARY_HPP

// Streaming, mergeable evaluation of a binary or multi-label (sigmoid) model from one logit (or
// probability) per prediction and 0/1 targets: binary cross-entropy, accuracy at a threshold, the
// Brier score and the positive-class calibration (ECE, MCE, RMS error over the bins of p, the
// reliability curve of scikit-learn's calibration_curve). docs/metrics.md is the reference.

#include "../core/error.hpp"
#include "evaluation.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// Options of binary_eval_accumulator.
struct binary_eval_options {
  /// Predictions whose target equals this are left out of every metric (counted as ignored).
  long ignore_index = -100;
  /// accuracy counts a prediction as positive when p > threshold (torchmetrics' binary_accuracy).
  double threshold = 0.5;
  /// Number of equal-width bins of p (the positive-class probability), from 0 to 1.
  int bins = 15;
  /// false (the default): the inputs are logits, p = sigmoid(x), and the loss is torch's
  /// binary_cross_entropy_with_logits. true: the inputs are probabilities in [0, 1], and the loss
  /// is torch's binary_cross_entropy (each log clamped at -100).
  bool probabilities = false;
  /// false (the default, as torch): a NaN or infinite logit makes the report's metrics NaN. true:
  /// such predictions are left out. Either way they are counted (nonfinite_samples).
  bool skip_nonfinite = false;
};

/// What binary_eval_accumulator::report returns. Means are over the evaluated predictions,
/// weighted by update's weights when given; NaN when none was evaluated, or when a non-finite one
/// was seen and skip_nonfinite is false.
struct binary_eval_report {
  std::int64_t samples = 0;            ///< evaluated predictions (each entry of [N] or [N, L] inputs)
  std::int64_t ignored = 0;            ///< target == ignore_index, or of weight 0
  std::int64_t nonfinite_samples = 0;  ///< NaN / infinite logits (see binary_eval_options::skip_nonfinite)
  double weight = 0;                   ///< summed weights of the evaluated predictions
  double bce = 0;                      ///< mean binary cross-entropy, nats per prediction
  double bce_stderr = 0;               ///< its standard error (as eval_report::nll_stderr)
  double accuracy = 0;                 ///< share of predictions with [p > threshold] = target
  double brier = 0;                    ///< mean of (p - target)^2, in [0, 1] (scikit-learn's brier_score_loss)
  double mean_probability = 0;         ///< mean of p
  double base_rate = 0;                ///< share of positive targets
  double ece = 0;                      ///< sum_b (n_b / n) |positives_b - p_b| over the bins of p (L1)
  double mce = 0;                      ///< max over non-empty bins of |positives_b - p_b| (max norm)
  double rmsce = 0;                    ///< sqrt(sum_b (n_b / n) (positives_b - p_b)^2) (L2)
  /// The positive-class reliability curve: bins of p; a bin's confidence is its mean p, its
  /// accuracy the share of positive targets (calibration_curve's prob_pred and prob_true).
  std::vector<reliability_bin> bins;
};

/// Streaming binary evaluation: update() with logits (or probabilities) and 0/1 targets of the same
/// shape, merge() accumulators of threads, shards or ranks, report() at the end. As
/// eval_accumulator, the state is a flat array of doubles, each a plain sum, merged by addition.
class binary_eval_accumulator {
 public:
  /// The named entries of the state, by index into data().
  enum field : std::size_t {
    samples,            ///< evaluated predictions
    ignored,            ///< ignore_index or weight 0
    nonfinite_samples,  ///< NaN / infinite logits (never in the sums below)
    weight_sum,         ///< sum of the evaluated weights
    bce_sum,            ///< sum of the losses
    bce_sq_sum,         ///< sum of the squared losses
    correct,            ///< weight of the predictions right at the threshold
    brier_sum,          ///< sum of (p - target)^2
    probability_sum,    ///< sum of p
    positive_sum,       ///< weight of positive targets
    fields              ///< number of named entries; the bins follow
  };
  /// Entries per bin: count, weight sum, sum of p, weight of positive targets.
  static constexpr std::size_t bin_fields = 4;

  /// \throws xent::invalid_argument unless bins >= 1 and 0 <= threshold < 1.
  explicit binary_eval_accumulator(const binary_eval_options& opts = {}) : opts_(opts) {
    constexpr const char* fn = "binary_eval_accumulator";
    if (opts.bins < 1) detail::throw_invalid(fn, "bins", "must be at least 1", opts.bins);
    if (!(opts.threshold >= 0 && opts.threshold < 1)) detail::throw_invalid(fn, "threshold", "must be in [0, 1)", opts.threshold);
    state_.assign(fields + bin_fields * std::size_t(opts.bins), 0.0);
  }

  /// Adds a batch: logits (or probabilities) and targets of the same size, any shape (an [N] vector
  /// or an [N, L] multi-label matrix; entries are paired in storage order, each one prediction).
  /// Targets are integers or reals, each 0, 1 or ignore_index.
  /// \throws xent::invalid_argument (before adding anything) for empty inputs, sizes that differ, a
  /// target other than 0, 1 or ignore_index, or (probabilities) a p outside [0, 1].
  template <class Derived, class TDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets) {
    add(logits, targets, [](Eigen::Index) { return 1.0; });
  }

  /// The same with a weight per prediction (the same size), each finite and >= 0, as frequency
  /// weights (weight 0 leaves the prediction out, counted as ignored, its target not checked).
  /// \throws xent::invalid_argument as update(logits, targets), and for weights of another size or
  ///   a weight that is negative, infinite or NaN.
  template <class Derived, class TDerived, class WDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, const Eigen::DenseBase<WDerived>& weights) {
    constexpr const char* fn = "binary_eval_accumulator::update";
    static_assert(std::is_floating_point_v<typename WDerived::Scalar>, "weights must be float or double");
    if (weights.size() != logits.size())
      detail::throw_invalid(fn, "weights", "must have one entry per prediction (" + std::to_string(logits.size()) + ")", weights.size());
    const auto& w = weights.derived();
    for (Eigen::Index j = 0; j < w.size(); ++j) {
      const double x = double(entry(w, j));
      if (!(x >= 0 && x < std::numeric_limits<double>::infinity()))
        detail::throw_invalid(fn, "weights[" + std::to_string(j) + "]", "must be finite and >= 0", x);
    }
    add(logits, targets, [&w](Eigen::Index j) { return double(entry(w, j)); });
  }

  /// Adds other's state to this one.
  /// \throws xent::invalid_argument if the two differ in bins, threshold or probabilities.
  binary_eval_accumulator& merge(const binary_eval_accumulator& other) {
    constexpr const char* fn = "binary_eval_accumulator::merge";
    const binary_eval_options& o = other.opts_;
    if (o.bins != opts_.bins) detail::throw_invalid(fn, "other", "must have the same bins (" + std::to_string(opts_.bins) + ")", o.bins);
    if (o.threshold != opts_.threshold)
      detail::throw_invalid(fn, "other", "must have the same threshold (" + std::to_string(opts_.threshold) + ")", o.threshold);
    if (o.probabilities != opts_.probabilities)
      detail::throw_invalid(fn, "other", std::string("must have the same probabilities (") + (opts_.probabilities ? "true" : "false") + ")",
                            o.probabilities ? "true" : "false");
    for (std::size_t i = 0; i < state_.size(); ++i) state_[i] += other.state_[i];
    return *this;
  }

  /// The metrics of everything added so far.
  binary_eval_report report() const;

  /// Forgets every prediction (keeps the options).
  void reset() { std::fill(state_.begin(), state_.end(), 0.0); }
  /// The options this accumulator was made with.
  const binary_eval_options& options() const noexcept { return opts_; }
  /// The number of doubles of the state.
  std::size_t state_size() const noexcept { return state_.size(); }
  /// state_size(), under the name a contiguous range has (xent::parallel::allreduce_sum).
  std::size_t size() const noexcept { return state_.size(); }
  /// The state, writable: what an in-place MPI_Allreduce sums into.
  double* data() noexcept { return state_.data(); }
  /// The state, for sending or saving it.
  const double* data() const noexcept { return state_.data(); }
  /// One named entry of the state.
  double operator[](field f) const noexcept { return state_[f]; }
  /// Index of bin b's (count, weight sum, p sum, positive weight) in data().
  static constexpr std::size_t bin_offset(std::size_t b) noexcept { return fields + bin_fields * b; }

 private:
  /// Entry j of a dense expression in storage order (a matrix of either layout, or a vector).
  template <class D>
  static typename D::Scalar entry(const D& d, Eigen::Index j) {
    if constexpr (D::IsVectorAtCompileTime) {
      return d.coeff(j);
    } else {
      const Eigen::Index outer = D::IsRowMajor ? d.cols() : d.rows();
      return D::IsRowMajor ? d.coeff(j / outer, j % outer) : d.coeff(j % outer, j / outer);
    }
  }

  template <class Derived, class TDerived, class Weight>
  void add(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, Weight&& weight);

  binary_eval_options opts_;
  std::vector<double> state_;
};

/// a merged with b (see binary_eval_accumulator::merge).
inline binary_eval_accumulator merge(binary_eval_accumulator a, const binary_eval_accumulator& b) { return a.merge(b); }

template <class Derived, class TDerived, class Weight>
void binary_eval_accumulator::add(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, Weight&& weight) {
  constexpr const char* fn = "binary_eval_accumulator::update";
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "logits must be float or double");
  detail::check_not_empty(fn, "logits", logits);
  const Eigen::Index n = logits.size();
  if (targets.size() != n) detail::throw_invalid(fn, "targets", "must have one entry per prediction (" + std::to_string(n) + ")", targets.size());
  const auto& x = logits.derived();
  const auto& y = targets.derived();
  const double ignore = double(opts_.ignore_index);
  // Every check before anything is added: a refused batch leaves the state as it was.
  for (Eigen::Index j = 0; j < n; ++j) {
    const double t = double(entry(y, j));
    if (weight(j) == 0 || t == ignore) continue;
    if (t != 0 && t != 1)
      detail::throw_invalid(fn, "targets[" + std::to_string(j) + "]", "must be 0, 1 or ignore_index (" + std::to_string(opts_.ignore_index) + ")", t);
    const double v = double(entry(x, j));
    if (opts_.probabilities && !(v >= 0 && v <= 1) && !std::isnan(v))
      detail::throw_invalid(fn, "probabilities[" + std::to_string(j) + "]", "must be in [0, 1]", v);
  }
  // The batch's sums first, then one addition each into the state (as eval_accumulator).
  double cnt = 0, ign = 0, bad = 0, wsum = 0, bce = 0, bce_sq = 0, hit = 0, brier = 0, psum = 0, pos = 0;
  const int bins = opts_.bins;
  for (Eigen::Index j = 0; j < n; ++j) {
    const double w = weight(j);
    const double t = double(entry(y, j));
    if (w == 0 || t == ignore) {
      ign += 1;
      continue;
    }
    const double v = double(entry(x, j));
    if (!std::isfinite(v)) {
      bad += 1;
      continue;
    }
    double p, loss;
    if (opts_.probabilities) {
      p = v;
      // torch's binary_cross_entropy: each log clamped at -100, so p = 0 or 1 gives a finite loss.
      loss = -(t * std::max(std::log(p), -100.0) + (1 - t) * std::max(std::log1p(-p), -100.0));
    } else {
      // binary_cross_entropy_with_logits: max(x, 0) - x t + log1p(exp(-|x|)); p = sigmoid(x) from
      // the side that does not overflow.
      const double e = std::exp(-std::fabs(v));
      p = v >= 0 ? 1 / (1 + e) : e / (1 + e);
      loss = std::max(v, 0.0) - v * t + std::log1p(e);
    }
    const double positive = t == 1 ? w : 0;
    cnt += 1;
    wsum += w;
    bce += w * loss;
    bce_sq += (w * loss) * loss;
    hit += (p > opts_.threshold) == (t == 1) ? w : 0;
    brier += w * (p - t) * (p - t);
    psum += w * p;
    pos += positive;
    // (b / B, (b + 1) / B] as eval_accumulator's bins, p = 0 in the first.
    double* bin = state_.data() + bin_offset(p > 0 ? detail::confidence_bin(p, bins) : 0);
    bin[0] += 1;
    bin[1] += w;
    bin[2] += w * p;
    bin[3] += positive;
  }
  state_[samples] += cnt;
  state_[ignored] += ign;
  state_[nonfinite_samples] += bad;
  state_[weight_sum] += wsum;
  state_[bce_sum] += bce;
  state_[bce_sq_sum] += bce_sq;
  state_[correct] += hit;
  state_[brier_sum] += brier;
  state_[probability_sum] += psum;
  state_[positive_sum] += pos;
}

inline binary_eval_report binary_eval_accumulator::report() const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const double n = state_[weight_sum];
  binary_eval_report r;
  r.samples = std::int64_t(state_[samples]);
  r.ignored = std::int64_t(state_[ignored]);
  r.nonfinite_samples = std::int64_t(state_[nonfinite_samples]);
  r.weight = n;
  const bool undefined = (r.nonfinite_samples > 0 && !opts_.skip_nonfinite) || n == 0;
  const auto mean = [&](double sum) { return undefined ? nan : sum / n; };
  r.bce = mean(state_[bce_sum]);
  const double variance = n > 1 ? (state_[bce_sq_sum] - state_[bce_sum] * (state_[bce_sum] / n)) / (n - 1) : nan;
  r.bce_stderr = undefined || std::isnan(variance) ? nan : std::sqrt(std::max(0.0, variance) / n);
  r.accuracy = mean(state_[correct]);
  r.brier = mean(state_[brier_sum]);
  r.mean_probability = mean(state_[probability_sum]);
  r.base_rate = mean(state_[positive_sum]);
  r.bins.resize(std::size_t(opts_.bins));
  double ece = 0, mce = 0, squared = 0;
  for (std::size_t b = 0; b < r.bins.size(); ++b) {
    const double* s = state_.data() + bin_offset(b);
    reliability_bin& out = r.bins[b];
    out.lower = double(b) / opts_.bins;
    out.upper = double(b + 1) / opts_.bins;
    out.count = std::int64_t(s[0]);
    out.weight = s[1];
    out.confidence = s[1] > 0 ? s[2] / s[1] : nan;
    out.accuracy = s[1] > 0 ? s[3] / s[1] : nan;
    if (s[1] > 0) {
      const double gap = std::fabs(out.accuracy - out.confidence);
      ece += s[1] / n * gap;
      squared += s[1] / n * gap * gap;
      mce = std::max(mce, gap);
    }
  }
  r.ece = undefined ? nan : ece;
  r.mce = undefined ? nan : mce;
  r.rmsce = undefined ? nan : std::sqrt(squared);
  return r;
}

/// The report of one batch: binary_eval_accumulator(opts), update(logits, targets), report().
template <class Derived, class TDerived>
binary_eval_report evaluate_binary(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                                   const binary_eval_options& opts = {}) {
  binary_eval_accumulator acc(opts);
  acc.update(logits, targets);
  return acc.report();
}

}  // namespace xent

#endif
