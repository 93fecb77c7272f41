#ifndef XENT_METRICS_COMPARE_HPP
#define XENT_METRICS_COMPARE_HPP

// Streaming, mergeable comparison of two models on the same tokens (a quantised or pruned model,
// "test", against its original, "base"): KL(base || test) per token with its mean, standard error
// and percentiles; the change Δp of the target token's probability; how often the two agree on the
// top token; and ln(PPL_test / PPL_base) with its standard error from the covariance of the two
// NLLs. The statistics of llama.cpp's `perplexity --kl-divergence`, without its base-logits file.
// docs/metrics.md ("Comparing two models") is the reference.

#include "../core/error.hpp"
#include "../detail/engine/checks.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/engine/view.hpp"
#include "../detail/losses/compare.hpp"

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

/// Options of compare_accumulator.
struct compare_options {
  /// Samples whose target equals this are left out of every metric (and counted as ignored).
  long ignore_index = -100;
  /// A sample where either model has a NaN or +inf logit, or all its logits -inf, has no
  /// distribution. false (the default): the report's metrics are NaN once one is seen. true: such
  /// samples are left out. Either way they are counted (nonfinite_samples). A -inf logit elsewhere
  /// is a masked class of probability 0.
  bool skip_nonfinite = false;
  /// Keep each token's KL and Δp (a float each: 4 bytes per token per value) for the percentiles
  /// and the histograms. false: O(1) state; the percentiles are NaN.
  bool percentiles = true;
  /// The class axis, as in cross_entropy: 0 = classes down each column (C x N, a torch [N, C]
  /// buffer), 1 = classes along each row.
  int dim = 0;
  /// Threads of each update(): 0, OpenMP's default; 1, serial. The state does not depend on it
  /// (and merge() ignores it). A caller that runs its own workers passes 1.
  int num_threads = 0;
};

/// The fractions at which compare_report gives the percentiles of KL and Δp (those
/// llama.cpp prints, and the quartiles): 0 (the minimum), 0.1 %, 1 %, 5 %, 10 %, 25 %, the median, 75 %,
/// 90 %, 95 %, 99 %, 99.9 % and 1 (the maximum).
inline constexpr double compare_fractions[] = {0, 0.001, 0.01, 0.05, 0.10, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99, 0.999, 1};
/// The number of compare_fractions (and of entries in compare_report's kl_quantiles and delta_p_quantiles).
inline constexpr std::size_t compare_fraction_count = sizeof(compare_fractions) / sizeof(compare_fractions[0]);

/// What compare_accumulator::report returns. Means are over the compared samples (the target
/// statistics over those with a target); NaN when there are none, or when a non-finite sample was
/// seen and skip_nonfinite is false. Standard errors need two samples (NaN otherwise).
struct compare_report {
  std::int64_t samples = 0;            ///< compared: not ignored, not skipped as non-finite
  std::int64_t ignored = 0;            ///< target == ignore_index
  std::int64_t nonfinite_samples = 0;  ///< samples without a distribution in either model
  std::int64_t targeted = 0;           ///< compared samples that had a target (Δp, NLL, perplexity)

  double kl = 0;          ///< mean KL(base || test), nats per token
  double kl_stderr = 0;   ///< its standard error: sample standard deviation / sqrt(samples)
  double kl_max = 0;      ///< largest KL of a token (kept without percentiles too)
  /// Percentiles of the per-token KL (numpy's default "linear"), NaN without
  /// compare_options::percentiles.
  ///@{
  double kl_median = 0, kl_p90 = 0, kl_p95 = 0, kl_p99 = 0, kl_p999 = 0;
  ///@}
  /// KL at each of compare_fractions.
  std::vector<double> kl_quantiles;

  double same_top = 0;         ///< fraction of samples whose first-index argmax agrees
  double same_top_stderr = 0;  ///< sqrt(p (1 - p) / (samples - 1)), as llama.cpp

  /// Mean NLL of the target under base, and its standard error.
  ///@{
  double nll_base = 0, nll_base_stderr = 0;
  ///@}
  /// Mean NLL of the target under test, and its standard error.
  ///@{
  double nll_test = 0, nll_test_stderr = 0;
  ///@}
  /// exp(nll_base), and exp(nll_base) * nll_base_stderr (the delta method).
  ///@{
  double ppl_base = 0, ppl_base_stderr = 0;
  ///@}
  /// exp(nll_test), and its standard error likewise.
  ///@{
  double ppl_test = 0, ppl_test_stderr = 0;
  ///@}
  double nll_correlation = 0;  ///< Pearson correlation of the per-token NLLs of the two models
  /// ln(PPL_test / PPL_base) = nll_test - nll_base, and its standard error
  /// sqrt(se_test^2 + se_base^2 - 2 cov(mean_test, mean_base)): the standard error of the mean of the
  /// per-token differences.
  ///@{
  double log_ppl_ratio = 0, log_ppl_ratio_stderr = 0;
  ///@}
  /// PPL_test / PPL_base = exp(log_ppl_ratio), and that times log_ppl_ratio_stderr.
  ///@{
  double ppl_ratio = 0, ppl_ratio_stderr = 0;
  ///@}
  /// PPL_test - PPL_base, and its standard error (the delta method, as llama.cpp).
  ///@{
  double ppl_diff = 0, ppl_diff_stderr = 0;
  ///@}

  /// Mean Δp = p_test(target) - p_base(target), and its standard error.
  ///@{
  double delta_p = 0, delta_p_stderr = 0;
  ///@}
  double delta_p_rms = 0;                  ///< sqrt(mean Δp^2)
  double delta_p_rms_stderr = 0;           ///< (1 / (2 rms)) * the standard error of mean Δp^2, as llama.cpp
  double delta_p_max_abs = 0;              ///< largest |Δp| (kept without percentiles too)
  /// Percentiles of Δp, as kl_median ...
  ///@{
  double delta_p_median = 0, delta_p_p90 = 0, delta_p_p95 = 0, delta_p_p99 = 0, delta_p_p999 = 0;
  ///@}
  /// Δp at each of compare_fractions.
  std::vector<double> delta_p_quantiles;
};

/// The q-quantile (0 <= q <= 1) of n sorted values as numpy's default (method "linear"): at
/// h = (n - 1) q, between the values at floor(h) and floor(h) + 1, interpolated as numpy does.
/// NaN for n = 0; next to an infinite value, that value (numpy: NaN, from 0 * inf).
template <class T>
double sorted_quantile(const T* sorted, std::size_t n, double q) {
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  const double h = double(n - 1) * q;
  const double lo = std::floor(h);
  const std::size_t i = std::min(std::size_t(lo), n - 1), k = std::min(i + 1, n - 1);
  const double g = h - lo, a = double(sorted[i]), b = double(sorted[k]);
  // At a value itself, or next to an infinite one (a KL of +inf), the value or the limit; numpy's
  // formula gives NaN there (0 * inf, inf - inf).
  if (g == 0 || a == b || std::isinf(a)) return a;
  if (std::isinf(b)) return b;
  const double d = b - a;
  // numpy's _lerp: a + d g below g = 1/2, b - d (1 - g) from there (exact at both ends).
  return g >= 0.5 ? b - d * (1 - g) : a + d * g;
}

/// Streaming comparison: update() it batch by batch with the two models' logits for the same
/// tokens (and, for Δp and the perplexities, the targets), merge() accumulators of threads or
/// shards, and report() at the end.
///
/// One read of both inputs per sample (the engine's sweep, detail/losses/compare.hpp) yields
/// everything. The state is a flat array of state_size() doubles: sums, except the two maxima
/// (kl_max_abs, delta_p_max_abs), which merge by max. With compare_options::percentiles, each
/// compared token's KL and (with a target) Δp are also kept as floats, 4 bytes each: merge()
/// appends them, report() sorts them in place (their order is not part of the state).
class compare_accumulator {
 public:
  /// The entries of the state, by index into data().
  enum field : std::size_t {
    samples,            ///< compared samples
    ignored,            ///< ignore_index
    nonfinite_samples,  ///< samples without a distribution (never in the sums below)
    targeted,           ///< compared samples with a target
    same_top_count,     ///< samples whose first-index argmaxes agree
    kl_sum,             ///< sum of per-token KL(base || test)
    kl_sq_sum,          ///< sum of squared KL
    kl_max_abs,         ///< largest KL (merged by max)
    nll_base_sum,       ///< sum of the base NLL of the target
    nll_base_sq_sum,    ///< its squares
    nll_test_sum,       ///< sum of the test NLL of the target
    nll_test_sq_sum,    ///< its squares
    nll_cross_sum,      ///< sum of nll_base * nll_test
    nll_diff_sum,       ///< sum of nll_test - nll_base
    nll_diff_sq_sum,    ///< its squares
    delta_p_sum,        ///< sum of Δp
    delta_p_sq_sum,     ///< sum of Δp^2
    delta_p_4_sum,      ///< sum of Δp^4
    delta_p_max_abs,    ///< largest |Δp| (merged by max)
    fields              ///< number of entries
  };

  /// \throws xent::invalid_argument unless dim is 0 or 1 and num_threads >= 0.
  explicit compare_accumulator(const compare_options& opts = {}) : opts_(opts) {
    constexpr const char* fn = "compare_accumulator";
    detail::check_dim(fn, opts.dim);
    detail::check_num_threads(fn, opts.num_threads);
    state_.assign(fields, 0.0);
  }

  /// Adds a batch without targets: KL and top-1 agreement only. base and test: logits of the same
  /// shape and scalar type (float or double), C x N (dim = 0) or N x C (dim = 1).
  /// \throws xent::invalid_argument (before reading any logit) for empty logits or shapes that differ.
  template <class BDerived, class TDerived>
  void update(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test) {
    add(base, test, static_cast<const Eigen::Matrix<long, Eigen::Dynamic, 1>*>(nullptr), no_tokens());
  }

  /// Adds a batch with one target (a signed integer in [0, C), or ignore_index) per sample.
  /// \throws xent::invalid_argument also for a targets length other than N or a target out of range.
  template <class BDerived, class TDerived, class IDerived>
  void update(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test,
              const Eigen::DenseBase<IDerived>& targets) {
    add(base, test, &targets.derived(), no_tokens());
  }

  /// The same, and each sample's figures written into column j of per_token (a float or double
  /// matrix of token_columns rows and N columns): KL, Δp, base NLL, test NLL, same top (1 or 0).
  /// Samples left out (ignored, non-finite) get NaN; Δp and the NLLs are NaN without a target.
  template <class BDerived, class TDerived, class IDerived, class ODerived>
  void update(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test,
              const Eigen::DenseBase<IDerived>& targets, Eigen::DenseBase<ODerived>& per_token) {
    check_tokens(base, per_token);
    add(base, test, &targets.derived(), token_writer(per_token));
  }

  /// The same without targets (nullptr in their place): KL and same top per sample, the rest NaN.
  template <class BDerived, class TDerived, class ODerived>
  void update(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test, std::nullptr_t,
              Eigen::DenseBase<ODerived>& per_token) {
    check_tokens(base, per_token);
    add(base, test, static_cast<const Eigen::Matrix<long, Eigen::Dynamic, 1>*>(nullptr), token_writer(per_token));
  }

  /// Rows of update()'s per_token: KL, Δp, base NLL, test NLL, same top.
  static constexpr std::size_t token_columns = 5;

  /// Adds other's state to this one, as if this accumulator had seen other's batches too.
  /// \throws xent::invalid_argument if the two differ in percentiles or skip_nonfinite.
  compare_accumulator& merge(const compare_accumulator& other) {
    constexpr const char* fn = "compare_accumulator::merge";
    if (other.opts_.percentiles != opts_.percentiles)
      detail::throw_invalid(fn, "other", std::string("must have the same percentiles (") + (opts_.percentiles ? "true" : "false") + ")",
                            other.opts_.percentiles ? "true" : "false");
    if (other.opts_.skip_nonfinite != opts_.skip_nonfinite)
      detail::throw_invalid(fn, "other", std::string("must have the same skip_nonfinite (") + (opts_.skip_nonfinite ? "true" : "false") + ")",
                            other.opts_.skip_nonfinite ? "true" : "false");
    for (std::size_t i = 0; i < fields; ++i)
      state_[i] = is_max(field(i)) ? std::max(state_[i], other.state_[i]) : state_[i] + other.state_[i];
    kl_values_.insert(kl_values_.end(), other.kl_values_.begin(), other.kl_values_.end());
    delta_p_values_.insert(delta_p_values_.end(), other.delta_p_values_.begin(), other.delta_p_values_.end());
    return *this;
  }

  /// The metrics of everything added so far (sorts the kept values in place).
  compare_report report() const;

  /// Forgets every sample (keeps the options).
  void reset() {
    std::fill(state_.begin(), state_.end(), 0.0);
    kl_values_.clear();
    delta_p_values_.clear();
  }

  /// The options this accumulator was made with.
  const compare_options& options() const noexcept { return opts_; }
  /// The number of doubles of the state of sums and maxima (layout: `field`).
  std::size_t state_size() const noexcept { return state_.size(); }
  /// The state_size() doubles of the state, writable (the kept values are not part of it).
  double* data() noexcept { return state_.data(); }
  /// The state_size() doubles of the state, for sending or saving them.
  const double* data() const noexcept { return state_.data(); }
  /// One entry of the state, e.g. acc[compare_accumulator::samples].
  double operator[](field f) const noexcept { return state_[f]; }
  /// Whether an entry merges by max rather than by addition.
  static constexpr bool is_max(field f) noexcept { return f == kl_max_abs || f == delta_p_max_abs; }
  /// The kept per-token KL values (with compare_options::percentiles), in no particular order.
  const std::vector<float>& kl_values() const noexcept { return kl_values_; }
  /// The kept per-token Δp values of the samples with a target, in no particular order.
  const std::vector<float>& delta_p_values() const noexcept { return delta_p_values_; }

 private:
  struct no_tokens {
    void operator()(Eigen::Index, const double*) const {}
  };

  template <class BDerived, class ODerived>
  void check_tokens(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<ODerived>& per_token) const {
    const Eigen::Index n = opts_.dim == 0 ? base.cols() : base.rows();
    if (per_token.rows() != Eigen::Index(token_columns) || per_token.cols() != n)
      detail::throw_invalid("compare_accumulator::update", "per_token", "must be " + std::to_string(token_columns) + " x N (" + std::to_string(n) + ")",
                            detail::shape_string(per_token.rows(), per_token.cols()));
  }
  template <class ODerived>
  static auto token_writer(Eigen::DenseBase<ODerived>& per_token) {
    return [&per_token](Eigen::Index j, const double* v) {
      for (Eigen::Index i = 0; i < Eigen::Index(token_columns); ++i)
        per_token.derived().coeffRef(i, j) = static_cast<typename ODerived::Scalar>(v[i]);
    };
  }

  template <class BDerived, class TDerived, class Targets, class Tokens>
  void add(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test, const Targets* targets, Tokens&& tokens);

  compare_options opts_;
  std::vector<double> state_;
  mutable std::vector<float> kl_values_, delta_p_values_;
};

/// a merged with b (see compare_accumulator::merge).
inline compare_accumulator merge(compare_accumulator a, const compare_accumulator& b) { return a.merge(b); }

template <class BDerived, class TDerived, class Targets, class Tokens>
void compare_accumulator::add(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test, const Targets* targets,
                              Tokens&& tokens) {
  using T = typename BDerived::Scalar;
  constexpr const char* fn = "compare_accumulator::update";
  static_assert(std::is_same_v<T, typename TDerived::Scalar>, "base and test logits must have the same scalar type");
  detail::check_real<BDerived>();
  detail::check_not_empty(fn, "base", base);
  detail::check_same_shape(fn, "test", test, "base", base);
  const Eigen::Index n_in = opts_.dim == 0 ? base.cols() : base.rows();
  const Eigen::Index classes = opts_.dim == 0 ? base.rows() : base.cols();
  if (targets) {
    static_assert(std::is_integral_v<typename Targets::Scalar> && std::is_signed_v<typename Targets::Scalar>,
                  "class-index targets must be signed integers (int32 or int64)");
    if (targets->size() != n_in)
      detail::throw_invalid(fn, "targets", "must have one entry per sample (" + std::to_string(n_in) + ")", targets->size());
    for (Eigen::Index j = 0; j < n_in; ++j) {
      const long t = static_cast<long>(targets->coeff(j));
      if (t != opts_.ignore_index && (t < 0 || t >= classes))
        detail::throw_invalid(fn, "target[" + std::to_string(j) + "]",
                              "must be in [0, " + std::to_string(classes) + ") or ignore_index (" + std::to_string(opts_.ignore_index) + ")", t);
    }
  }
  auto target_at = [&](Eigen::Index j) -> Eigen::Index {
    if (!targets) return -1;
    const long t = static_cast<long>(targets->coeff(j));
    return t == opts_.ignore_index ? -2 : Eigen::Index(t);
  };
  std::vector<detail::compare_result> swept(static_cast<std::size_t>(n_in));
  // This batch's sums first, then one addition each into the state (a two-level sum).
  double s[fields] = {};
  detail::with_view(base, opts_.dim, [&](const detail::samples_view<const T>& vb) {
    detail::with_view(test, opts_.dim, [&](const detail::samples_view<const T>& vt) {
      detail::compare_samples(vb, vt, target_at, swept.data(), opts_.num_threads);
    });
  });
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  for (Eigen::Index j = 0; j < n_in; ++j) {
    double token[token_columns] = {nan, nan, nan, nan, nan};
    const Eigen::Index t = target_at(j);
    const detail::compare_result& r = swept[std::size_t(j)];
    if (t == -2) {
      s[ignored] += 1;
    } else if (!r.defined) {
      s[nonfinite_samples] += 1;
    } else {
      s[samples] += 1;
      s[same_top_count] += r.same_top ? 1 : 0;
      s[kl_sum] += r.kl;
      s[kl_sq_sum] += r.kl * r.kl;
      s[kl_max_abs] = std::max(s[kl_max_abs], r.kl);
      token[0] = r.kl;
      token[4] = r.same_top ? 1 : 0;
      if (opts_.percentiles) kl_values_.push_back(float(r.kl));
      if (t >= 0) {
        const double dp = std::exp(-r.nll_test) - std::exp(-r.nll_base), d = r.nll_test - r.nll_base;
        s[targeted] += 1;
        s[nll_base_sum] += r.nll_base;
        s[nll_base_sq_sum] += r.nll_base * r.nll_base;
        s[nll_test_sum] += r.nll_test;
        s[nll_test_sq_sum] += r.nll_test * r.nll_test;
        s[nll_cross_sum] += r.nll_base * r.nll_test;
        s[nll_diff_sum] += d;
        s[nll_diff_sq_sum] += d * d;
        s[delta_p_sum] += dp;
        s[delta_p_sq_sum] += dp * dp;
        s[delta_p_4_sum] += dp * dp * dp * dp;
        s[delta_p_max_abs] = std::max(s[delta_p_max_abs], std::fabs(dp));
        token[1] = dp;
        token[2] = r.nll_base;
        token[3] = r.nll_test;
        if (opts_.percentiles) delta_p_values_.push_back(float(dp));
      }
    }
    tokens(j, token);
  }
  for (std::size_t i = 0; i < fields; ++i)
    state_[i] = is_max(field(i)) ? std::max(state_[i], s[i]) : state_[i] + s[i];
}

namespace detail {

/// Mean and standard error of the mean from a sum and a sum of squares over n values.
inline void mean_and_stderr(double sum, double sq, double n, double& mean, double& stderr_out) {
  mean = sum / n;
  const double variance = n > 1 ? (sq - sum * (sum / n)) / (n - 1) : std::numeric_limits<double>::quiet_NaN();
  stderr_out = std::isnan(variance) ? variance : std::sqrt(std::max(0.0, variance) / n);
}

}  // namespace detail

inline compare_report compare_accumulator::report() const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const double* st = state_.data();
  compare_report r;
  r.samples = std::int64_t(st[samples]);
  r.ignored = std::int64_t(st[ignored]);
  r.nonfinite_samples = std::int64_t(st[nonfinite_samples]);
  r.targeted = std::int64_t(st[targeted]);
  const bool poisoned = r.nonfinite_samples > 0 && !opts_.skip_nonfinite;
  const double n = st[samples], nt = st[targeted];

  detail::mean_and_stderr(st[kl_sum], st[kl_sq_sum], n, r.kl, r.kl_stderr);
  r.kl_max = n > 0 ? st[kl_max_abs] : nan;
  r.same_top = st[same_top_count] / n;
  r.same_top_stderr = n > 1 ? std::sqrt(r.same_top * (1 - r.same_top) / (n - 1)) : nan;

  detail::mean_and_stderr(st[nll_base_sum], st[nll_base_sq_sum], nt, r.nll_base, r.nll_base_stderr);
  detail::mean_and_stderr(st[nll_test_sum], st[nll_test_sq_sum], nt, r.nll_test, r.nll_test_stderr);
  r.ppl_base = std::exp(r.nll_base);
  r.ppl_base_stderr = r.ppl_base * r.nll_base_stderr;
  r.ppl_test = std::exp(r.nll_test);
  r.ppl_test_stderr = r.ppl_test * r.nll_test_stderr;
  // The covariance of the two means: sample covariance / n (llama.cpp's `covariance`).
  const double cov = nt > 1 ? (st[nll_cross_sum] - st[nll_base_sum] * (st[nll_test_sum] / nt)) / (nt - 1) / nt : nan;
  r.nll_correlation = cov / (r.nll_base_stderr * r.nll_test_stderr);
  // Var(mean_test - mean_base) = se_test^2 + se_base^2 - 2 cov: the same number as the standard
  // error of the per-token differences, formed from their own sums, which keeps its digits when the
  // two NLLs are strongly correlated (a close quantisation), where the three-term form cancels.
  double mean_diff = 0;
  detail::mean_and_stderr(st[nll_diff_sum], st[nll_diff_sq_sum], nt, mean_diff, r.log_ppl_ratio_stderr);
  r.log_ppl_ratio = r.nll_test - r.nll_base;
  r.ppl_ratio = std::exp(r.log_ppl_ratio);
  r.ppl_ratio_stderr = r.ppl_ratio * r.log_ppl_ratio_stderr;
  r.ppl_diff = r.ppl_test - r.ppl_base;
  const double ppl_diff_variance =
      r.ppl_test_stderr * r.ppl_test_stderr + r.ppl_base_stderr * r.ppl_base_stderr - 2 * r.ppl_test * r.ppl_base * cov;
  r.ppl_diff_stderr = std::isnan(ppl_diff_variance) ? ppl_diff_variance : std::sqrt(std::max(0.0, ppl_diff_variance));

  detail::mean_and_stderr(st[delta_p_sum], st[delta_p_sq_sum], nt, r.delta_p, r.delta_p_stderr);
  double mse = 0, mse_stderr = 0;
  detail::mean_and_stderr(st[delta_p_sq_sum], st[delta_p_4_sum], nt, mse, mse_stderr);
  r.delta_p_rms = std::sqrt(mse);
  r.delta_p_rms_stderr = 0.5 / r.delta_p_rms * mse_stderr;
  r.delta_p_max_abs = nt > 0 ? st[delta_p_max_abs] : nan;

  const auto quantiles = [&](std::vector<float>& values, std::vector<double>& out) {
    out.assign(compare_fraction_count, nan);
    if (!opts_.percentiles) return;
    std::sort(values.begin(), values.end());
    for (std::size_t i = 0; i < compare_fraction_count; ++i) out[i] = sorted_quantile(values.data(), values.size(), compare_fractions[i]);
  };
  quantiles(kl_values_, r.kl_quantiles);
  quantiles(delta_p_values_, r.delta_p_quantiles);
  // compare_fractions: ..., 0.5 at 6, 0.90 at 8, 0.95 at 9, 0.99 at 10, 0.999 at 11.
  r.kl_median = r.kl_quantiles[6], r.kl_p90 = r.kl_quantiles[8], r.kl_p95 = r.kl_quantiles[9];
  r.kl_p99 = r.kl_quantiles[10], r.kl_p999 = r.kl_quantiles[11];
  r.delta_p_median = r.delta_p_quantiles[6], r.delta_p_p90 = r.delta_p_quantiles[8], r.delta_p_p95 = r.delta_p_quantiles[9];
  r.delta_p_p99 = r.delta_p_quantiles[10], r.delta_p_p999 = r.delta_p_quantiles[11];

  if (poisoned) {
    for (double* v : {&r.kl, &r.kl_stderr, &r.kl_max, &r.kl_median, &r.kl_p90, &r.kl_p95, &r.kl_p99, &r.kl_p999, &r.same_top,
                      &r.same_top_stderr, &r.nll_base, &r.nll_base_stderr, &r.nll_test, &r.nll_test_stderr, &r.ppl_base,
                      &r.ppl_base_stderr, &r.ppl_test, &r.ppl_test_stderr, &r.nll_correlation, &r.log_ppl_ratio,
                      &r.log_ppl_ratio_stderr, &r.ppl_ratio, &r.ppl_ratio_stderr, &r.ppl_diff, &r.ppl_diff_stderr, &r.delta_p,
                      &r.delta_p_stderr, &r.delta_p_rms, &r.delta_p_rms_stderr, &r.delta_p_max_abs, &r.delta_p_median,
                      &r.delta_p_p90, &r.delta_p_p95, &r.delta_p_p99, &r.delta_p_p999})
      *v = nan;
    std::fill(r.kl_quantiles.begin(), r.kl_quantiles.end(), nan);
    std::fill(r.delta_p_quantiles.begin(), r.delta_p_quantiles.end(), nan);
  }
  return r;
}

/// The report of one batch: compare_accumulator(opts), update(base, test, targets), report().
template <class BDerived, class TDerived, class IDerived>
compare_report compare(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test,
                       const Eigen::DenseBase<IDerived>& targets, const compare_options& opts = {}) {
  compare_accumulator acc(opts);
  acc.update(base, test, targets);
  return acc.report();
}

/// The same without targets: KL and top-1 agreement (the target statistics are NaN).
template <class BDerived, class TDerived>
compare_report compare(const Eigen::DenseBase<BDerived>& base, const Eigen::DenseBase<TDerived>& test, const compare_options& opts = {}) {
  compare_accumulator acc(opts);
  acc.update(base, test);
  return acc.report();
}

}  // namespace xent

#endif
