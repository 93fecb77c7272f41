#ifndef XENT_METRICS_EVALUATION_HPP
#define XENT_METRICS_EVALUATION_HPP

// Streaming, mergeable evaluation of a classifier or language model from its logits: NLL in nats and
// bits, perplexity, bits per character / byte / dimension, top-1 and top-k accuracy, the Brier score
// and the expected calibration error with a reliability diagram. docs/metrics.md is the reference.

#include "../core/error.hpp"
#include "../detail/engine/checks.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/losses/eval.hpp"
#include "../logsumexp.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace xent {

/// How eval_accumulator cuts the confidence axis into the bins of the ECE, MCE, RMS calibration
/// error and the reliability diagram (scikit-learn's calibration_curve strategy names).
enum class bin_strategy {
  uniform,  ///< equal-width bins: bin b holds the confidences in (b / bins, (b + 1) / bins]
  /// Equal-mass (adaptive) bins: about the same weight of samples in each bin, formed at report
  /// time from a fixed fine histogram of the confidences (eval_accumulator::quantile_cells), so
  /// that the state stays a mergeable sum of fixed size. docs/metrics.md gives the resolution.
  quantile
};

/// Options of eval_accumulator. The defaults match torch's cross_entropy (ignore_index = -100) and
/// the usual calibration literature (15 equal-width bins, Guo et al. 2017).
struct eval_options {
  /// Samples whose target equals this are left out of every metric (and counted as ignored).
  long ignore_index = -100;
  /// k of the top-k accuracy (top-1 is always reported).
  int top_k = 5;
  /// Number of confidence bins of the ECE and the reliability diagram.
  int bins = 15;
  /// Equal-width (the default) or equal-mass confidence bins of the top-label ECE, MCE, RMS
  /// calibration error and the reliability diagram. The classwise bins stay equal-width.
  bin_strategy strategy = bin_strategy::uniform;
  /// The probabilities are softmax(logits / temperature): 1 evaluates the logits as given,
  /// fit_temperature's result evaluates the calibrated model. 1 / temperature must be finite in the
  /// logits' type (temperature >= 2.9e-39 for float logits).
  double temperature = 1;
  /// A sample with a NaN or +inf logit, or with every logit -inf, has no distribution. false (the
  /// default, as torch): the report's metrics are NaN when any such sample was seen. true: such
  /// samples are left out. Either way they are counted (nonfinite_samples, nonfinite_logits).
  bool skip_nonfinite = false;
  /// true (the default, as xent's other functions): a -inf logit is a masked class of probability
  /// 0. false: a sample with a -inf logit is non-finite too.
  bool neg_inf_is_mask = true;
  /// The class axis, as in cross_entropy: 0 = classes down each column (C x N, a torch [N, C]
  /// buffer), 1 = classes along each row.
  int dim = 0;
  /// Threads of each update(): 0, OpenMP's default; 1, serial. The state does not depend on it
  /// (and merge() ignores it). A caller that runs its own workers passes 1.
  int num_threads = 0;
  /// 0 (the default): no per-class state. C > 0: the accumulator also bins every class's
  /// probability p_k against [target = k] (C x bins x 3 more doubles of state), for the classwise
  /// ECE and the Brier score's decomposition; every update must then have C classes. It costs one
  /// more pass over each sample's logits (an exp per logit, in double).
  long classwise_classes = 0;
};

/// Sizes of the evaluated text or data, for the per-unit figures of the report. 0 = not given.
struct eval_units {
  double characters = 0;  ///< characters of the text: bits_per_character = total bits / characters
  double bytes = 0;       ///< bytes of the text (e.g. UTF-8): bits_per_byte = total bits / bytes
  double dimensions = 0;  ///< dimensions of the data; 0 = one per evaluated sample (each sample one dimension)
};

/// One bin of the reliability diagram: the samples whose confidence is in (lower, upper] (the first
/// bin also holds 0). confidence and accuracy are the bin's means, NaN for an empty bin.
struct reliability_bin {
  /// The bin's confidence interval (lower, upper]: (b / bins, (b + 1) / bins] for bin b.
  ///@{
  double lower = 0, upper = 0;
  ///@}
  /// Evaluated samples whose confidence (max_k p_k) falls in the bin.
  std::int64_t count = 0;
  /// Their summed weights (update's weights; count when none were given): the bin's share of the ECE.
  double weight = 0;
  /// Weighted mean confidence and top-1 accuracy of those samples (NaN when weight is 0).
  ///@{
  double confidence = 0, accuracy = 0;
  ///@}
};

/// What eval_accumulator::report returns. Means are over the evaluated samples, weighted by update's
/// weights when given (each sample weight 1 otherwise); every metric is NaN when no sample was
/// evaluated, or when a non-finite sample was seen and skip_nonfinite is false.
struct eval_report {
  std::int64_t samples = 0;            ///< evaluated: not ignored, not masked out, not of weight 0, not skipped as non-finite
  std::int64_t ignored = 0;            ///< target == ignore_index, masked out by update's mask, or of weight 0
  /// Summed weights of the evaluated samples: the denominator of every mean (samples without weights).
  double weight = 0;
  std::int64_t nonfinite_samples = 0;  ///< samples without a distribution (see eval_options::skip_nonfinite)
  std::int64_t nonfinite_logits = 0;   ///< NaN and +-inf logits in those samples
  /// The temperature the probabilities were taken at (eval_options::temperature).
  double temperature = 1;
  double nll = 0;                 ///< mean negative log-likelihood, nats per sample (token)
  /// Standard error of that mean: sample standard deviation / sqrt(samples); with weights, as
  /// frequency weights (a weight-w sample counts as w copies; ddof 1 on the summed weight).
  double nll_stderr = 0;
  double bits_per_token = 0;      ///< nll / ln 2
  double perplexity = 0;          ///< exp(nll)
  double perplexity_stderr = 0;   ///< perplexity * nll_stderr (delta method)
  /// Summed NLL over the evaluated samples, in nats and in bits (the numerators of the per-unit rates).
  ///@{
  double total_nats = 0, total_bits = 0;
  ///@}
  double bits_per_character = 0;  ///< NaN unless eval_units::characters was given
  double bits_per_byte = 0;       ///< NaN unless eval_units::bytes was given
  double bits_per_dimension = 0;  ///< total bits / eval_units::dimensions (default: one per sample)
  double accuracy = 0;            ///< top-1: the first-index argmax equals the target
  /// The k of top_k_accuracy (eval_options::top_k).
  int top_k = 0;
  double top_k_accuracy = 0;      ///< the target is among the k first of a stable descending sort
  double brier = 0;               ///< mean of sum_k (p_k - [k = target])^2, in [0, 2]
  double mean_confidence = 0;     ///< mean of max_k p_k
  double ece = 0;                 ///< sum_b (n_b / n) |accuracy_b - confidence_b| (the L1 calibration error)
  double mce = 0;                 ///< max over non-empty bins of |accuracy_b - confidence_b| (the max norm)
  /// sqrt(sum_b (n_b / n) (accuracy_b - confidence_b)^2): the RMS (L2) calibration error over the same bins.
  double rmsce = 0;
  /// (1 / C) sum_k sum_b (n_kb / n) |mean_kb [target = k] - mean_kb p_k|, the bins taken over p_k
  /// (eval_options::classwise_classes; NaN without it).
  double classwise_ece = 0;
  /// Murphy's decomposition of `brier` over the classwise bins (NaN without classwise_classes):
  /// brier = reliability - resolution + uncertainty + within_bin. reliability = sum_k sum_b
  /// (n_kb / n) (conf_kb - acc_kb)^2, resolution = sum_k sum_b (n_kb / n) (acc_kb - base_k)^2,
  /// uncertainty = sum_k base_k (1 - base_k) with base_k the frequency of class k. within_bin is
  /// the rest (the p_k's spread inside their bins): 0 exactly when each bin's p_k are all equal.
  ///@{
  double brier_reliability = 0, brier_resolution = 0, brier_uncertainty = 0, brier_within_bin = 0;
  ///@}
  /// The reliability diagram: eval_options::bins bins of confidence, from 0 to 1, equal-width or
  /// equal-mass (eval_options::strategy; then each bin's lower and upper are the edges of the fine
  /// histogram cells it groups, and a bin may be empty when one cell holds more than its share).
  std::vector<reliability_bin> bins;
};

/// Streaming evaluation: update() it batch by batch with logits and class-index targets, merge()
/// accumulators of threads, shards or ranks, and report() at the end.
///
/// One pass over each sample's logits (the engine's sweep, detail/losses/eval.hpp: threads over the
/// samples, or over one sample's chunks when there are few) yields every metric; per sample, in
/// order, the state grows by a few additions in double.
///
/// The state is a flat array of state_size() doubles, every entry a plain sum, so that merging is
/// element-wise addition: exact for the counts (integers in double, exact up to 2^53) and
/// order-independent up to floating-point addition for the rest. Over MPI that is one collective:
///   MPI_Allreduce(MPI_IN_PLACE, acc.data(), int(acc.state_size()), MPI_DOUBLE, MPI_SUM, comm);
/// (or xent::parallel::allreduce_sum(acc, comm)) with the same options on every rank. The layout
/// (docs/metrics.md): the entries named by `field`, then for each bin b the four entries (count, sum
/// of confidences, correct count, sum of weights) at bin_offset(b). With update's weights every sum
/// but the counts (samples, ignored, nonfinite_*, the bins' counts) is a weighted sum; without, each
/// weight is 1 and w * x is x, so the unweighted state is the same bits as before.
class eval_accumulator {
 public:
  /// The named entries of the state, by index into data(): plain sums over the samples seen.
  enum field : std::size_t {
    samples,            ///< evaluated samples
    ignored,            ///< ignore_index or masked out
    nonfinite_samples,  ///< samples without a distribution (never in the sums below)
    nonfinite_logits,   ///< NaN / +-inf logits of those samples
    nll_sum,            ///< sum of per-sample NLL (nats)
    nll_sq_sum,         ///< sum of squared per-sample NLL
    correct,            ///< top-1 hits
    top_k_correct,      ///< top-k hits
    brier_sum,          ///< sum of per-sample Brier scores
    confidence_sum,     ///< sum of max_k p_k
    weight_sum,         ///< sum of the evaluated samples' weights (= samples without weights)
    fields              ///< number of named entries; the bins follow
  };
  /// Entries per bin: count, confidence sum, correct count, weight sum.
  static constexpr std::size_t bin_fields = 4;
  /// Entries per class and bin with eval_options::classwise_classes: weight sum, sum of p_k, weight of [target = k].
  static constexpr std::size_t classwise_fields = 3;
  /// Cells of the fine confidence histogram kept with bin_strategy::quantile (bin_fields entries
  /// each, 128 KiB of state): equal-width in logit(confidence) = ln(p / (1 - p)) over
  /// [-quantile_logit_range, quantile_logit_range], the first and last cells also holding what lies
  /// beyond. The equal-mass bins are formed from whole cells, so a cell's samples never straddle
  /// two bins: the bins are those of the exact sample quantiles whenever no cell holds samples on
  /// both sides of a quantile.
  static constexpr std::size_t quantile_cells = 4096;
  /// Half the logit range of the fine histogram: the cells are 2 * 16 / 4096 = 1 / 128 wide in
  /// logit, i.e. a relative resolution of 0.8 % in the odds p / (1 - p) for confidences from
  /// 1.1e-7 to 1 - 1.1e-7.
  static constexpr double quantile_logit_range = 16;

  /// \throws xent::invalid_argument unless bins >= 1, top_k >= 1, 0 < temperature < inf, dim is 0
  ///   or 1, num_threads >= 0, strategy one of bin_strategy's values.
  explicit eval_accumulator(const eval_options& opts = {}) : opts_(opts) {
    constexpr const char* fn = "eval_accumulator";
    if (opts.bins < 1) detail::throw_invalid(fn, "bins", "must be at least 1", opts.bins);
    if (opts.top_k < 1) detail::throw_invalid(fn, "top_k", "must be at least 1", opts.top_k);
    if (!(opts.temperature > 0 && opts.temperature < std::numeric_limits<double>::infinity()))
      detail::throw_invalid(fn, "temperature", "must be positive and finite", opts.temperature);
    detail::check_dim(fn, opts.dim);
    detail::check_num_threads(fn, opts.num_threads);
    if (opts.classwise_classes < 0)
      detail::throw_invalid(fn, "classwise_classes", "must be 0 (off) or the class count", opts.classwise_classes);
    if (opts.strategy != bin_strategy::uniform && opts.strategy != bin_strategy::quantile)
      detail::throw_invalid(fn, "strategy", "must be bin_strategy::uniform or bin_strategy::quantile", int(opts.strategy));
    state_.assign(own_size(), 0.0);
  }

  /// Adds a batch: logits C x N (dim = 0, a torch [N, C] buffer read in place) or N x C (dim = 1),
  /// float or double; targets one signed integer per sample, in [0, C) or equal to ignore_index.
  /// \throws xent::invalid_argument (before reading any logit) for empty logits, a targets length
  /// other than N, a target out of range, or a temperature whose inverse overflows the logits' type.
  template <class Derived, class TDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets) {
    add(logits, targets, [](Eigen::Index) { return true; }, [](Eigen::Index) { return 1.0; }, no_sink{});
  }

  /// The same, with a mask or with per-sample weights, one entry per sample, told apart by the
  /// entries' type.
  ///
  /// An integer or bool `mask_or_weights` is a mask: sample j is evaluated only when it is non-zero.
  ///
  /// A float or double one holds weights, each finite and >= 0: every sum of the state and every
  /// mean of the report is weighted, as frequency weights (an integer weight w counts the sample w
  /// times; weight 0 leaves it out as the mask does: counted as ignored, its target not checked).
  /// Weights of 1 give the same state, bit for bit, as update(logits, targets) (so a 0/1 float
  /// vector is the same as that mask).
  /// \throws xent::invalid_argument (before reading any logit) as update(logits, targets), and for
  ///   a mask or weights length other than N or a weight that is negative, infinite or NaN.
  template <class Derived, class TDerived, class MDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
              const Eigen::DenseBase<MDerived>& mask_or_weights) {
    using M = typename MDerived::Scalar;
    const Eigen::Index samples = opts_.dim == 0 ? logits.cols() : logits.rows();
    const auto& m = mask_or_weights.derived();
    if constexpr (std::is_floating_point_v<M>) {
      check_weights(m, samples);
      add(logits, targets, [&m](Eigen::Index j) { return m.coeff(j) != M(0); }, [&m](Eigen::Index j) { return double(m.coeff(j)); },
          no_sink{});
    } else {
      if (m.size() != samples)
        detail::throw_invalid("eval_accumulator::update", "mask", "must have one entry per sample (" + std::to_string(samples) + ")",
                              m.size());
      add(logits, targets, [&m](Eigen::Index j) { return m.coeff(j) != M(0); }, [](Eigen::Index) { return 1.0; }, no_sink{});
    }
  }

  /// Adds other's state to this one, as if this accumulator had seen other's batches too.
  /// \throws xent::invalid_argument if the two differ in bins, top_k, temperature, neg_inf_is_mask,
  ///   classwise_classes or strategy.
  eval_accumulator& merge(const eval_accumulator& other) {
    check_compatible(other);
    for (std::size_t i = 0; i < own_size(); ++i) state_[i] += other.state_[i];
    return *this;
  }

  /// The metrics of everything added so far.
  eval_report report(const eval_units& units = {}) const;

  /// Forgets every sample (keeps the options).
  void reset() { std::fill(state_.begin(), state_.begin() + std::ptrdiff_t(own_size()), 0.0); }

  /// The options this accumulator was made with (merge() requires compatible ones).
  const eval_options& options() const noexcept { return opts_; }

  /// The state as a flat array of doubles (layout above), for sending, reducing or saving it.
  /// data() and size() make the accumulator a contiguous range: xent::parallel::allreduce_sum(acc,
  /// comm) (<xent/parallel/mpi.hpp>) sums it over the ranks in one MPI_Allreduce.
  std::size_t state_size() const noexcept { return own_size(); }
  /// state_size(), under the name a contiguous range has.
  std::size_t size() const noexcept { return own_size(); }
  /// The state_size() doubles of the state, writable: what an in-place MPI_Allreduce sums into.
  double* data() noexcept { return state_.data(); }
  /// The state_size() doubles of the state, for sending or saving them.
  const double* data() const noexcept { return state_.data(); }
  /// One named entry of the state, e.g. acc[eval_accumulator::samples].
  double operator[](field f) const noexcept { return state_[f]; }
  /// Index of bin b's (count, confidence sum, correct count) in data().
  static constexpr std::size_t bin_offset(std::size_t b) noexcept { return fields + bin_fields * b; }
  /// Index of class k's bin b (weight sum, p_k sum, weight of [target = k]) in data(), with
  /// eval_options::classwise_classes: after the confidence bins, class by class.
  std::size_t classwise_offset(std::size_t k, std::size_t b) const noexcept {
    return bin_offset(std::size_t(opts_.bins)) + classwise_fields * (k * std::size_t(opts_.bins) + b);
  }
  /// Index of fine cell i's (count, confidence sum, correct count, weight sum) in data(), with
  /// bin_strategy::quantile: after the classwise entries.
  std::size_t quantile_offset(std::size_t i) const noexcept {
    return classwise_offset(std::size_t(opts_.classwise_classes), 0) + bin_fields * i;
  }

 private:
  friend class sequence_accumulator;

  // A sequence_accumulator keeps its per-sequence sums after these entries in the same vector, so
  // that its whole state is one contiguous range (one MPI_Allreduce) and this one's is its prefix.
  std::size_t own_size() const noexcept {
    return fields + bin_fields * std::size_t(opts_.bins) + classwise_fields * std::size_t(opts_.classwise_classes) * std::size_t(opts_.bins) +
           (opts_.strategy == bin_strategy::quantile ? bin_fields * quantile_cells : 0);
  }

  /// add()'s per-sample hook when nothing but the state is wanted.
  struct no_sink {
    void operator()(Eigen::Index, double, double) const noexcept {}
  };

  /// sink(j, weight, nll) is called, in order of j, for every sample that reaches the metrics, with
  /// nll NaN for a non-finite sample that poisons the report (skip_nonfinite false).
  template <class Derived, class TDerived, class Included, class Weight, class Sink>
  void add(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, Included&& included, Weight&& weight,
           Sink&& sink);

  template <class WDerived>
  static void check_weights(const Eigen::DenseBase<WDerived>& weights, Eigen::Index samples) {
    constexpr const char* fn = "eval_accumulator::update";
    static_assert(std::is_floating_point_v<typename WDerived::Scalar>, "weights must be float or double");
    if (weights.size() != samples)
      detail::throw_invalid(fn, "weights", "must have one entry per sample (" + std::to_string(samples) + ")", weights.size());
    for (Eigen::Index j = 0; j < samples; ++j) {
      const double w = double(weights.derived().coeff(j));
      if (!(w >= 0 && w < std::numeric_limits<double>::infinity()))
        detail::throw_invalid(fn, "weights[" + std::to_string(j) + "]", "must be finite and >= 0", w);
    }
  }

  void check_compatible(const eval_accumulator& other) const {
    constexpr const char* fn = "eval_accumulator::merge";
    const eval_options& o = other.opts_;
    if (o.bins != opts_.bins) detail::throw_invalid(fn, "other", "must have the same bins (" + std::to_string(opts_.bins) + ")", o.bins);
    if (o.top_k != opts_.top_k)
      detail::throw_invalid(fn, "other", "must have the same top_k (" + std::to_string(opts_.top_k) + ")", o.top_k);
    if (o.temperature != opts_.temperature)
      detail::throw_invalid(fn, "other", "must have the same temperature (" + std::to_string(opts_.temperature) + ")", o.temperature);
    if (o.neg_inf_is_mask != opts_.neg_inf_is_mask)
      detail::throw_invalid(fn, "other", std::string("must have the same neg_inf_is_mask (") + (opts_.neg_inf_is_mask ? "true" : "false") + ")",
                            o.neg_inf_is_mask ? "true" : "false");
    if (o.classwise_classes != opts_.classwise_classes)
      detail::throw_invalid(fn, "other", "must have the same classwise_classes (" + std::to_string(opts_.classwise_classes) + ")",
                            o.classwise_classes);
    if (o.strategy != opts_.strategy)
      detail::throw_invalid(fn, "other", std::string("must have the same strategy (") + (opts_.strategy == bin_strategy::quantile ? "quantile" : "uniform") + ")",
                            o.strategy == bin_strategy::quantile ? "quantile" : "uniform");
  }

  eval_options opts_;
  std::vector<double> state_;
};

/// a merged with b (see eval_accumulator::merge).
inline eval_accumulator merge(eval_accumulator a, const eval_accumulator& b) { return a.merge(b); }

namespace detail {

/// The metrics of one sample, in double, from the kernel's sums.
struct eval_terms {
  double nll, confidence, brier;
};

template <class S>
eval_terms eval_terms_of(const eval_sample<S>& s, double beta) {
  const double sum = double(s.sum);
  const double log_sum = std::log(sum);
  // (max - target) first: exact for the dominant class, so a confident correct sample keeps its digits.
  const double nll = beta * (double(s.max) - double(s.target)) + log_sum;
  const double p_target = std::exp(-nll);
  const double sum_p2 = double(s.sum_sq) / (sum * sum);
  // sum_k (p_k - y_k)^2 = sum_k p_k^2 - 2 p_t + 1; >= 0 exactly, so rounding below 0 is clamped.
  return {nll, 1.0 / sum, std::max(0.0, sum_p2 - 2 * p_target + 1)};
}

/// cross_entropy's target check, except that samples the mask leaves out are not checked (padding
/// often carries any value there).
template <class TDerived, class Included>
void check_eval_targets(const char* fn, const Eigen::DenseBase<TDerived>& targets, Eigen::Index samples, Eigen::Index classes,
                        long ignore_index, Included&& included) {
  static_assert(std::is_integral_v<typename TDerived::Scalar> && std::is_signed_v<typename TDerived::Scalar>,
                "class-index targets must be signed integers (int32 or int64)");
  if (targets.size() != samples)
    throw_invalid(fn, "targets", "must have one entry per sample (" + std::to_string(samples) + ")", targets.size());
  for (Eigen::Index j = 0; j < samples; ++j) {
    const long t = static_cast<long>(targets.derived().coeff(j));
    if (t == ignore_index || !included(j)) continue;
    if (t < 0 || t >= classes)
      throw_invalid(fn, "target[" + std::to_string(j) + "]",
                    "must be in [0, " + std::to_string(classes) + ") or ignore_index (" + std::to_string(ignore_index) + ")", t);
  }
}

/// The kernels scale the logits by 1 / temperature in the logits' own type T: an inverse beyond T's
/// range would be +inf there (converting it is undefined behaviour) and turn every metric into NaN.
template <class T>
void check_inverse_temperature(const char* fn, const char* argument, double temperature) {
  constexpr double largest = double(std::numeric_limits<T>::max());
  if (!(1 / temperature <= largest)) {
    std::ostringstream expected;
    expected << "must be at least " << 1 / largest << " so that 1 / " << argument << " is finite in "
             << (std::is_same_v<T, float> ? "float" : "double") << " (the logits' type)";
    throw_invalid(fn, argument, expected.str(), temperature);
  }
}

/// The bin of a confidence in (0, 1]: bin b holds (b / B, (b + 1) / B].
inline std::size_t confidence_bin(double confidence, int bins) {
  const double b = std::ceil(confidence * bins) - 1;
  return b <= 0 ? 0 : b >= bins - 1 ? std::size_t(bins - 1) : std::size_t(b);
}

/// The fine histogram cell of a confidence in (0, 1] (bin_strategy::quantile): equal-width in
/// logit(confidence), the tails folded into the end cells. Monotone in the confidence.
inline std::size_t quantile_cell(double confidence) {
  constexpr double range = eval_accumulator::quantile_logit_range;
  constexpr double cells = double(eval_accumulator::quantile_cells);
  const double logit = std::log(confidence) - std::log1p(-confidence);  // +inf at 1
  const double c = std::floor((logit + range) * (cells / (2 * range)));
  // !(c > 0) also takes a NaN to cell 0: converting it to size_t would be undefined.
  return !(c > 0) ? 0 : c >= cells - 1 ? eval_accumulator::quantile_cells - 1 : std::size_t(c);
}

/// The confidence at the lower edge of fine cell i (0 for the first).
inline double quantile_cell_edge(std::size_t i) {
  constexpr double range = eval_accumulator::quantile_logit_range;
  if (i == 0) return 0;
  if (i >= eval_accumulator::quantile_cells) return 1;
  const double logit = double(i) * (2 * range / double(eval_accumulator::quantile_cells)) - range;
  return 1 / (1 + std::exp(-logit));
}

}  // namespace detail

template <class Derived, class TDerived, class Included, class Weight, class Sink>
void eval_accumulator::add(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets, Included&& included,
                           Weight&& weight, Sink&& sink) {
  using T = typename Derived::Scalar;
  constexpr const char* fn = "eval_accumulator::update";
  detail::check_real<Derived>();
  detail::check_not_empty(fn, "logits", logits);
  const Eigen::Index samples_in = opts_.dim == 0 ? logits.cols() : logits.rows();
  const Eigen::Index classes = opts_.dim == 0 ? logits.rows() : logits.cols();
  if (opts_.classwise_classes > 0 && classes != opts_.classwise_classes)
    detail::throw_invalid(fn, "logits", "must have classwise_classes (" + std::to_string(opts_.classwise_classes) + ") classes", classes);
  detail::check_eval_targets(fn, targets, samples_in, classes, opts_.ignore_index, included);

  detail::check_inverse_temperature<T>(fn, "temperature", opts_.temperature);
  const double beta = 1.0 / opts_.temperature;
  const auto beta_t = static_cast<detail::compute_t<T>>(beta);
  const int bins = opts_.bins;
  // This batch's sums first, then one addition each into the state: the state's sums then grow
  // by batch totals (a two-level sum), which keeps long streams accurate.
  double n = 0, ign = 0, bad = 0, bad_logits = 0, nll = 0, nll_sq = 0, hit = 0, hit_k = 0, brier = 0, conf = 0, wsum = 0;
  const auto& tg = targets.derived();
  auto target_at = [&](Eigen::Index j) -> Eigen::Index {
    const long t = static_cast<long>(tg.coeff(j));
    return t == opts_.ignore_index || !included(j) ? -1 : Eigen::Index(t);
  };
  std::vector<detail::eval_sample<detail::compute_t<T>>> swept(static_cast<std::size_t>(samples_in));
  detail::with_view(logits, opts_.dim, [&](const detail::samples_view<const T>& v) {
    detail::eval_samples(v, target_at, beta_t, Eigen::Index(opts_.top_k), swept.data(), opts_.num_threads);
    for (Eigen::Index j = 0; j < v.samples; ++j) {
      if (target_at(j) < 0) {
        ign += 1;
        continue;
      }
      const auto& s = swept[std::size_t(j)];
      bool defined = s.defined;
      if (defined && s.neg_inf && !opts_.neg_inf_is_mask)
        defined = detail::count_nonfinite(v.sample(j), v.classes, v.class_stride) == 0;  // rules out an overflow of x - max
      const double w = weight(j);
      if (!defined) {
        bad += 1;
        bad_logits += double(detail::count_nonfinite(v.sample(j), v.classes, v.class_stride));
        if (!opts_.skip_nonfinite) sink(j, w, std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      const detail::eval_terms e = detail::eval_terms_of(s, beta);
      sink(j, w, e.nll);
      // Weight 1 (no weights): every w * x below is x exactly, the same bits as the unweighted sums,
      // also where the compiler fuses a product into the sum (FMA): (w l) l, never w (l l), whose
      // rounded l l would differ from a fused l * l + sum.
      const double is_hit = s.rank == 0 ? w : 0;
      n += 1;
      wsum += w;
      nll += w * e.nll;
      nll_sq += (w * e.nll) * e.nll;
      hit += is_hit;
      hit_k += s.rank < opts_.top_k ? w : 0;
      brier += w * e.brier;
      conf += w * e.confidence;
      double* bin = state_.data() + bin_offset(detail::confidence_bin(e.confidence, bins));
      bin[0] += 1;
      bin[1] += w * e.confidence;
      bin[2] += is_hit;
      bin[3] += w;
      if (opts_.strategy == bin_strategy::quantile) {
        double* cell = state_.data() + quantile_offset(detail::quantile_cell(e.confidence));
        cell[0] += 1;
        cell[1] += w * e.confidence;
        cell[2] += is_hit;
        cell[3] += w;
      }
      if (opts_.classwise_classes > 0) {
        // p_k from the sweep's max and sum, in double; a masked class (-inf) has p_k = 0, bin 0.
        const T* x = v.sample(j);
        const double mx = double(s.max), inv_sum = 1 / double(s.sum);
        const Eigen::Index t = target_at(j);
        for (Eigen::Index k = 0; k < v.classes; ++k) {
          const double p = std::exp(beta * (double(x[k * v.class_stride]) - mx)) * inv_sum;
          double* cb = state_.data() + classwise_offset(std::size_t(k), detail::confidence_bin(p, bins));
          cb[0] += w;
          cb[1] += w * p;
          cb[2] += k == t ? w : 0;
        }
      }
    }
  });
  state_[samples] += n;
  state_[ignored] += ign;
  state_[nonfinite_samples] += bad;
  state_[nonfinite_logits] += bad_logits;
  state_[nll_sum] += nll;
  state_[nll_sq_sum] += nll_sq;
  state_[correct] += hit;
  state_[top_k_correct] += hit_k;
  state_[brier_sum] += brier;
  state_[confidence_sum] += conf;
  state_[weight_sum] += wsum;
}

inline eval_report eval_accumulator::report(const eval_units& units) const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const double ln2 = std::log(2.0);
  // Every mean is over the summed weight (the sample count when no weights were given).
  const double n = state_[weight_sum];
  eval_report r;
  r.samples = std::int64_t(state_[samples]);
  r.weight = n;
  r.ignored = std::int64_t(state_[ignored]);
  r.nonfinite_samples = std::int64_t(state_[nonfinite_samples]);
  r.nonfinite_logits = std::int64_t(state_[nonfinite_logits]);
  r.temperature = opts_.temperature;
  r.top_k = opts_.top_k;
  // As torch: a sample without a distribution makes every mean NaN unless it is skipped.
  const bool poisoned = r.nonfinite_samples > 0 && !opts_.skip_nonfinite;
  const auto mean = [&](double sum) { return poisoned ? nan : sum / n; };  // 0 / 0 = NaN when n = 0

  r.nll = mean(state_[nll_sum]);
  const double variance = n > 1 ? (state_[nll_sq_sum] - state_[nll_sum] * (state_[nll_sum] / n)) / (n - 1) : nan;
  r.nll_stderr = poisoned ? nan : std::sqrt(std::max(0.0, variance) / n);
  if (std::isnan(variance)) r.nll_stderr = nan;
  r.bits_per_token = r.nll / ln2;
  r.perplexity = std::exp(r.nll);
  r.perplexity_stderr = r.perplexity * r.nll_stderr;
  r.total_nats = poisoned ? nan : state_[nll_sum];
  r.total_bits = r.total_nats / ln2;
  r.bits_per_character = units.characters > 0 ? r.total_bits / units.characters : nan;
  r.bits_per_byte = units.bytes > 0 ? r.total_bits / units.bytes : nan;
  r.bits_per_dimension = r.total_bits / (units.dimensions > 0 ? units.dimensions : n);
  r.accuracy = mean(state_[correct]);
  r.top_k_accuracy = mean(state_[top_k_correct]);
  r.brier = mean(state_[brier_sum]);
  r.mean_confidence = mean(state_[confidence_sum]);

  r.bins.resize(std::size_t(opts_.bins));
  // Each bin's (count, confidence sum, correct sum, weight): the state's equal-width bins, or the
  // fine cells grouped into equal-mass bins.
  std::vector<double> sums(bin_fields * r.bins.size(), 0.0);
  if (opts_.strategy == bin_strategy::uniform) {
    std::copy(state_.begin() + std::ptrdiff_t(bin_offset(0)), state_.begin() + std::ptrdiff_t(bin_offset(r.bins.size())), sums.begin());
    for (std::size_t b = 0; b < r.bins.size(); ++b) {
      r.bins[b].lower = double(b) / opts_.bins;
      r.bins[b].upper = double(b + 1) / opts_.bins;
    }
  } else {
    // A cell goes whole to the bin of the weight before it: with one sample per cell, the sample of
    // rank i (by confidence, weight 1 each) lands in bin floor(i * bins / n), the exact quantile
    // split.
    std::vector<bool> started(r.bins.size(), false);
    double before = 0;
    for (std::size_t i = 0; i < quantile_cells; ++i) {
      const double* c = state_.data() + quantile_offset(i);
      if (!(c[3] > 0)) continue;
      const std::size_t b = std::min(r.bins.size() - 1, std::size_t(std::floor(before * double(opts_.bins) / n)));
      for (std::size_t f = 0; f < bin_fields; ++f) sums[bin_fields * b + f] += c[f];
      started[b] = true;
      r.bins[b].upper = detail::quantile_cell_edge(i + 1);
      before += c[3];
    }
    // Contiguous bins: each starts where the previous one's last cell ends (taking the empty cells
    // between), an empty bin (a cell held more than its share) is that point alone, the last ends at 1.
    double edge = 0;
    for (std::size_t b = 0; b < r.bins.size(); ++b) {
      r.bins[b].lower = edge;
      if (!started[b]) r.bins[b].upper = edge;
      edge = r.bins[b].upper;
    }
    r.bins.back().upper = 1;
  }
  double ece = 0, mce = 0, squared = 0;
  for (std::size_t b = 0; b < r.bins.size(); ++b) {
    const double* s = sums.data() + bin_fields * b;
    reliability_bin& out = r.bins[b];
    out.count = std::int64_t(s[0]);
    out.weight = s[3];
    out.confidence = s[3] > 0 ? s[1] / s[3] : nan;
    out.accuracy = s[3] > 0 ? s[2] / s[3] : nan;
    if (s[3] > 0) {
      const double gap = std::fabs(out.accuracy - out.confidence);
      ece += s[3] / n * gap;
      squared += s[3] / n * gap * gap;
      mce = std::max(mce, gap);
    }
  }
  const bool undefined = poisoned || n == 0;
  r.ece = undefined ? nan : ece;
  r.mce = undefined ? nan : mce;
  r.rmsce = undefined ? nan : std::sqrt(squared);

  r.classwise_ece = r.brier_reliability = r.brier_resolution = r.brier_uncertainty = r.brier_within_bin = nan;
  if (opts_.classwise_classes > 0 && !undefined) {
    double l1 = 0, reliability = 0, resolution = 0, uncertainty = 0;
    for (std::size_t k = 0; k < std::size_t(opts_.classwise_classes); ++k) {
      double base = 0;  // the weight of class k, over n
      for (std::size_t b = 0; b < r.bins.size(); ++b) base += state_[classwise_offset(k, b) + 2];
      base /= n;
      uncertainty += base * (1 - base);
      for (std::size_t b = 0; b < r.bins.size(); ++b) {
        const double* s = state_.data() + classwise_offset(k, b);
        if (!(s[0] > 0)) continue;
        const double conf = s[1] / s[0], acc = s[2] / s[0];
        l1 += std::fabs(s[2] - s[1]) / n;
        reliability += s[0] / n * (conf - acc) * (conf - acc);
        resolution += s[0] / n * (acc - base) * (acc - base);
      }
    }
    r.classwise_ece = l1 / double(opts_.classwise_classes);
    r.brier_reliability = reliability;
    r.brier_resolution = resolution;
    r.brier_uncertainty = uncertainty;
    r.brier_within_bin = r.brier - (reliability - resolution + uncertainty);
  }
  return r;
}

/// The report of one batch: eval_accumulator(opts), update(logits, targets), report(units).
template <class Derived, class TDerived>
eval_report evaluate(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                     const eval_options& opts = {}, const eval_units& units = {}) {
  eval_accumulator acc(opts);
  acc.update(logits, targets);
  return acc.report(units);
}

}  // namespace xent

#endif
