// Calibration figures of eval_accumulator and fit_temperature against torchmetrics' formulas (L1,
// L2, max norms) and scikit-learn (calibration_curve's bins, brier_score_loss), numpy float64
// (tests/reference/calibration_cases.txt, tests/reference/gen_calibration_reference.py): ECE, RMS
// calibration error, MCE, classwise ECE, Murphy's Brier decomposition, NLL's split into
// calibration and refinement. Then the classwise state (size, layout, merging as element-wise
// addition, weights of 1 bit for bit), the identity with bin-constant forecasts, and misuse.
//
// Budgets. An error is |got - reference| / max(|reference|, 1).
//   double logits: 1e-12     float logits: 16 float epsilons (1.9e-6). No probability of a case
//   lies within 2e-6 of a bin edge (asserted by the generator), so float rounding moves no sample
//   across bins.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::row_matrix;
using xent_test::vector;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("calibration_cases.txt"); }

template <class T>
double budget() {
  return std::is_same_v<T, float> ? 16 * double(std::numeric_limits<float>::epsilon()) : 1e-12;
}

double relative_error(double got, long double ref) { return xent_test::error_of(got, ref, std::max<long double>(std::fabs(ref), 1)); }

template <class T>
matrix<T> logits_of(const xent_test::reference_case& c) {
  return xent_test::as_matrix<float>(c["logits"], c.classes, Eigen::Index(c["N"][0])).template cast<T>();
}

index_vector targets_of(const xent_test::reference_case& c) {
  const auto& t = c["target"];
  index_vector v(Eigen::Index(t.size()));
  for (std::size_t j = 0; j < t.size(); ++j) v(Eigen::Index(j)) = std::int64_t(t[j]);
  return v;
}

xent::eval_options options_of(const xent_test::reference_case& c) {
  xent::eval_options o;
  o.bins = int(c["bins"][0]);
  o.temperature = double(c["temperature"][0]);
  o.ignore_index = long(c["ignore_index"][0]);
  o.classwise_classes = c.classes;
  o.num_threads = 1;
  return o;
}

/// The case's report, its logits as T, read with the classes down the columns (dim 0) or along the
/// rows of a row-major copy (dim 1, the same memory order).
template <class T>
xent::eval_report report_of(const xent_test::reference_case& c, int dim) {
  xent::eval_options o = options_of(c);
  o.dim = dim;
  xent::eval_accumulator acc(o);
  const matrix<T> x = logits_of<T>(c);
  const index_vector t = targets_of(c);
  const auto update = [&](const auto& logits) {
    if (c.has("weight")) {
      vector<double> w(t.size());
      for (Eigen::Index j = 0; j < w.size(); ++j) w(j) = double(c["weight"][std::size_t(j)]);
      acc.update(logits, t, w);
    } else {
      acc.update(logits, t);
    }
  };
  if (dim == 0) {
    update(x);
  } else {
    const row_matrix<T> rows = x.transpose();
    update(rows);
  }
  return acc.report();
}

}  // namespace

TEMPLATE_TEST_CASE("calibration figures match torchmetrics' and scikit-learn's formulas", "[metrics][calibration]", float, double) {
  using T = TestType;
  double worst = 0;
  for (const auto& c : cases()) {
    for (const int dim : {0, 1}) {
      INFO(c.name << " dim " << dim);
      const xent::eval_report r = report_of<T>(c, dim);
      const std::pair<const char*, double> got[] = {
          {"ece", r.ece},
          {"rmsce", r.rmsce},
          {"mce", r.mce},
          {"classwise_ece", r.classwise_ece},
          {"brier", r.brier},
          {"brier_reliability", r.brier_reliability},
          {"brier_resolution", r.brier_resolution},
          {"brier_uncertainty", r.brier_uncertainty},
          {"brier_within_bin", r.brier_within_bin},
      };
      for (const auto& [key, value] : got) {
        INFO(key << " = " << value << ", reference " << double(c[key][0]));
        const double e = relative_error(value, c[key][0]);
        CHECK(e <= budget<T>());
        worst = std::max(worst, e);
      }
      // The norms' order: L1 <= L2 (Jensen) <= max.
      CHECK(r.ece <= r.rmsce * (1 + 1e-12));
      CHECK(r.rmsce <= r.mce * (1 + 1e-12));
    }
  }
  std::printf("calibration figures, %s logits: worst relative error %.3g\n", std::is_same_v<T, float> ? "float" : "double", worst);
}

TEMPLATE_TEST_CASE("bin-constant forecasts: Murphy's decomposition is exact", "[metrics][calibration]", float, double) {
  using T = TestType;
  const auto& all = cases();
  const auto it = std::find_if(all.begin(), all.end(), [](const auto& c) { return c.name == "bin_constant_c3"; });
  REQUIRE(it != all.end());
  const xent::eval_report r = report_of<T>(*it, 0);
  // brier comes from the kernel's sums (in float for float logits), the bins' p_k in double: with
  // float logits the two agree to the float budget, with double logits to rounding.
  const double tol = std::is_same_v<T, float> ? budget<T>() : 1e-14;
  CHECK(std::fabs(r.brier_within_bin) <= tol);
  CHECK(std::fabs(r.brier_reliability - r.brier_resolution + r.brier_uncertainty - r.brier) <= tol);
  // Elsewhere the rest is not 0: the decomposition over bins is not an identity by itself.
  for (const auto& c : all) {
    if (c.name == "bin_constant_c3") continue;
    INFO(c.name);
    CHECK(std::fabs(report_of<T>(c, 0).brier_within_bin) > 1e-4);
  }
}

TEMPLATE_TEST_CASE("fit_temperature splits the NLL into calibration and refinement", "[metrics][calibration][temperature]", float, double) {
  using T = TestType;
  int fitted = 0;
  for (const auto& c : cases()) {
    if (!c.has("fitted_temperature")) continue;
    INFO(c.name);
    ++fitted;
    xent::temperature_options o;
    o.num_threads = 1;
    o.ignore_index = long(c["ignore_index"][0]);
    o.bins = int(c["bins"][0]);
    const bool weighted = c.has("weight");
    vector<double> w = vector<double>::Ones(targets_of(c).size());
    if (weighted)
      for (Eigen::Index j = 0; j < w.size(); ++j) w(j) = double(c["weight"][std::size_t(j)]);
    const matrix<T> x = logits_of<T>(c);
    const index_vector t = targets_of(c);
    const xent::temperature_fit fit = weighted ? xent::fit_temperature(x, t, w, o) : xent::fit_temperature(x, t, o);
    CHECK(fit.converged);
    CHECK(relative_error(fit.temperature, c["fitted_temperature"][0]) <= 1e-4);
    // At the optimum the NLL is flat in T: a T off by 1e-5 moves it by ~1e-10.
    const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-9;
    if (weighted) {
      // Weighted: the streaming fit over two weighted halves is the in-memory one; the ECE before
      // is the weighted report's; weights of 1 are the unweighted fit, bit for bit.
      const Eigen::Index half = t.size() / 2, rest = t.size() - half;
      const xent::temperature_fit streamed = xent::fit_temperature_with(
          [&](double temperature) {
            xent::temperature_sums a, b;
            xent::add_temperature_sums(x.leftCols(half), t.head(half), w.head(half), temperature, o, a);
            xent::add_temperature_sums(x.rightCols(rest), t.tail(rest), w.tail(rest), temperature, o, b);
            return a.merge(b);
          },
          o);
      CHECK(streamed.temperature == Approx(fit.temperature).epsilon(1e-12));
      CHECK(fit.ece_before == Approx(report_of<T>(c, 0).ece).epsilon(1e-15));
      const xent::temperature_fit plain = xent::fit_temperature(x, t, o), ones = xent::fit_temperature(x, t, vector<double>::Ones(t.size()), o);
      CHECK(ones.temperature == plain.temperature);
      CHECK(ones.nll_after == plain.nll_after);
      CHECK(std::fabs(plain.temperature - fit.temperature) > 0.05);  // the weights matter
    }
    CHECK(relative_error(fit.nll_before, c["nll_before"][0]) <= tol);
    CHECK(relative_error(fit.nll_refinement, c["nll_refinement"][0]) <= tol);
    CHECK(relative_error(fit.nll_calibration, c["nll_calibration"][0]) <= tol);
    CHECK(fit.nll_calibration > 0.1);  // every case is far from calibrated
    CHECK(fit.nll_calibration + fit.nll_refinement == Approx(fit.nll_before).epsilon(1e-15));
  }
  CHECK(fitted == 3);
}

TEST_CASE("classwise state: size, layout, merging, weights of 1", "[metrics][calibration]") {
  std::mt19937_64 gen(14002);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const Eigen::Index C = 6, N = 90;
  matrix<float> x(C, N);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(gen);
  index_vector t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = std::int64_t(gen() % std::uint64_t(C));
  t(5) = -100;
  xent::eval_options o;
  o.bins = 7;
  o.num_threads = 1;

  const xent::eval_accumulator plain(o);
  CHECK(plain.state_size() == xent::eval_accumulator::fields + xent::eval_accumulator::bin_fields * 7);
  o.classwise_classes = C;
  xent::eval_accumulator whole(o), a(o), b(o), ones(o);
  REQUIRE(whole.state_size() == xent::eval_accumulator::fields + xent::eval_accumulator::bin_fields * 7 + 3 * std::size_t(C) * 7);
  whole.update(x, t);
  a.update(x.leftCols(40), t.head(40));
  b.update(x.rightCols(N - 40), t.tail(N - 40));

  // Layout: each class's weights over its bins add up to the evaluated samples; its hits to the
  // count of that target.
  for (Eigen::Index k = 0; k < C; ++k) {
    double weight = 0, hits = 0;
    for (std::size_t bin = 0; bin < 7; ++bin) {
      weight += whole.data()[whole.classwise_offset(std::size_t(k), bin)];
      hits += whole.data()[whole.classwise_offset(std::size_t(k), bin) + 2];
    }
    CHECK(weight == N - 1);
    CHECK(hits == double((t.array() == k).count()));
  }
  CHECK(whole.classwise_offset(0, 0) == xent::eval_accumulator::bin_offset(7));
  CHECK(whole.classwise_offset(std::size_t(C) - 1, 6) + 3 == whole.state_size());

  // Merging is element-wise addition: the flat sum is merge() bit for bit, and equals one pass.
  xent::eval_accumulator summed(o);
  for (std::size_t i = 0; i < summed.state_size(); ++i) summed.data()[i] = a.data()[i] + b.data()[i];
  const xent::eval_accumulator merged = xent::merge(a, b);
  CHECK(std::equal(merged.data(), merged.data() + merged.state_size(), summed.data()));
  const xent::eval_report rw = whole.report(), rm = merged.report();
  CHECK(rm.classwise_ece == Approx(rw.classwise_ece).epsilon(1e-13));
  CHECK(rm.brier_reliability == Approx(rw.brier_reliability).epsilon(1e-13));
  CHECK(rm.brier_resolution == Approx(rw.brier_resolution).epsilon(1e-13));
  CHECK(rm.brier_uncertainty == Approx(rw.brier_uncertainty).epsilon(1e-13));

  // Weights of 1 are the unweighted state, bit for bit, the classwise part included.
  ones.update(x, t, vector<float>::Ones(N));
  CHECK(std::equal(ones.data(), ones.data() + ones.state_size(), whole.data()));

  // Without classwise_classes its figures are NaN, the others unchanged.
  xent::eval_options off = o;
  off.classwise_classes = 0;
  xent::eval_accumulator without(off);
  without.update(x, t);
  const xent::eval_report r0 = without.report();
  CHECK(std::isnan(r0.classwise_ece));
  CHECK(std::isnan(r0.brier_reliability));
  CHECK(std::isnan(r0.brier_within_bin));
  CHECK(r0.rmsce == rw.rmsce);
  CHECK(r0.ece == rw.ece);
  CHECK(std::equal(without.data(), without.data() + without.state_size(), whole.data()));
}

TEST_CASE("masked classes have probability 0 in the classwise bins", "[metrics][calibration]") {
  // C = 4 with class 3 always masked: its p is 0 (bin 0), never the target, so it adds nothing to
  // the classwise ECE but a quarter of the mean's denominator.
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  matrix<float> x(4, 3);
  x.col(0) = vector<float>::LinSpaced(4, 0.0f, 1.5f);
  x.col(1) = vector<float>::LinSpaced(4, 1.0f, -0.5f);
  x.col(2) = vector<float>::LinSpaced(4, 0.3f, 0.9f);
  x.row(3).setConstant(ninf);
  index_vector t(3);
  t(0) = 0;
  t(1) = 1;
  t(2) = 2;
  xent::eval_options o;
  o.classwise_classes = 4;
  o.bins = 5;
  xent::eval_accumulator acc(o);
  acc.update(x, t);
  CHECK(acc.data()[acc.classwise_offset(3, 0)] == 3);
  CHECK(acc.data()[acc.classwise_offset(3, 0) + 1] == 0);
  CHECK(acc.data()[acc.classwise_offset(3, 0) + 2] == 0);
  CHECK(std::isfinite(acc.report().classwise_ece));
}

TEST_CASE("classwise misuse is a named error", "[metrics][calibration][misuse]") {
  const matrix<float> x = matrix<float>::Zero(3, 4);
  const index_vector t = index_vector::Zero(4);
  xent::eval_options bad;
  bad.classwise_classes = -1;
  xent::eval_options five;
  five.classwise_classes = 5;
  xent::eval_options three;
  three.classwise_classes = 3;
  const xent_test::misuse table[] = {
      {"negative classwise_classes", [&] { xent::eval_accumulator a(bad); }, "eval_accumulator", "classwise_classes", "-1"},
      {"logits of another class count", [&] { xent::eval_accumulator a(five); a.update(x, t); }, "eval_accumulator::update", "logits",
       "classwise_classes (5)", "got 3"},
      {"merge with another classwise_classes",
       [&] {
         xent::eval_accumulator a(three);
         a.merge(xent::eval_accumulator());
       },
       "eval_accumulator::merge", "other", "classwise_classes (3)", "got 0"},
  };
  CHECK(xent_test::check_misuse(table) == 3);
}

TEMPLATE_TEST_CASE("equal-mass bins match the exact sample-quantile split", "[metrics][calibration][quantile]", float, double) {
  using T = TestType;
  int seen = 0;
  for (const auto& c : cases()) {
    if (!c.has("quantile_ece")) continue;
    ++seen;
    for (const int dim : {0, 1}) {
      INFO(c.name << " dim " << dim);
      xent::eval_options o = options_of(c);
      o.strategy = xent::bin_strategy::quantile;
      o.dim = dim;
      xent::eval_accumulator whole(o), a(o), b(o);
      const matrix<T> x = logits_of<T>(c);
      const row_matrix<T> rows = x.transpose();
      const index_vector t = targets_of(c);
      vector<double> w = vector<double>::Ones(t.size());
      if (c.has("weight"))
        for (Eigen::Index j = 0; j < w.size(); ++j) w(j) = double(c["weight"][std::size_t(j)]);
      const Eigen::Index half = t.size() / 2, rest = t.size() - half;
      if (dim == 0) {
        whole.update(x, t, w);
        a.update(x.leftCols(half), t.head(half), w.head(half));
        b.update(x.rightCols(rest), t.tail(rest), w.tail(rest));
      } else {
        whole.update(rows, t, w);
        a.update(rows.topRows(half), t.head(half), w.head(half));
        b.update(rows.bottomRows(rest), t.tail(rest), w.tail(rest));
      }
      const xent::eval_report r = whole.report();
      CHECK(relative_error(r.ece, c["quantile_ece"][0]) <= budget<T>());
      CHECK(relative_error(r.rmsce, c["quantile_rmsce"][0]) <= budget<T>());
      CHECK(relative_error(r.mce, c["quantile_mce"][0]) <= budget<T>());
      const auto& qw = c["quantile_weight"];
      REQUIRE(r.bins.size() == qw.size());
      for (std::size_t bin = 0; bin < qw.size(); ++bin) {
        INFO("bin " << bin);
        CHECK(relative_error(r.bins[bin].weight, qw[bin]) <= 1e-13);
        CHECK(r.bins[bin].lower < r.bins[bin].upper);
        if (bin > 0) CHECK(r.bins[bin].lower == r.bins[bin - 1].upper);
        CHECK((r.bins[bin].confidence > r.bins[bin].lower && r.bins[bin].confidence <= r.bins[bin].upper));
      }
      CHECK(r.bins.front().lower == 0);
      CHECK(r.bins.back().upper == 1);
      // The uniform figures of the same data differ: the test tells the two strategies apart.
      CHECK(std::fabs(r.ece - double(c["ece"][0])) > 1e-3);
      // Merging two halves: the fine cells are counts and sums, so the split is the same and the
      // figures agree to the rounding of the sums' order (the counts exactly).
      const xent::eval_accumulator m = xent::merge(a, b);
      REQUIRE(m.state_size() == whole.state_size());
      for (std::size_t i = 0; i < xent::eval_accumulator::quantile_cells; ++i)
        CHECK(m.data()[m.quantile_offset(i)] == whole.data()[whole.quantile_offset(i)]);
      const xent::eval_report rm = m.report();
      CHECK(rm.ece == Approx(r.ece).epsilon(1e-13));
      CHECK(rm.rmsce == Approx(r.rmsce).epsilon(1e-13));
      CHECK(rm.mce == Approx(r.mce).epsilon(1e-13));
      for (std::size_t bin = 0; bin < r.bins.size(); ++bin) CHECK(rm.bins[bin].count == r.bins[bin].count);
    }
  }
  CHECK(seen == 2);
}

TEST_CASE("equal-mass bins: state layout, ties kept whole, misuse", "[metrics][calibration][quantile]") {
  xent::eval_options o;
  o.bins = 4;
  o.num_threads = 1;
  o.classwise_classes = 3;
  xent::eval_options q = o;
  q.strategy = xent::bin_strategy::quantile;
  const xent::eval_accumulator u(o);
  xent::eval_accumulator acc(q);
  CHECK(acc.state_size() == u.state_size() + xent::eval_accumulator::bin_fields * xent::eval_accumulator::quantile_cells);
  CHECK(acc.quantile_offset(0) == u.state_size());
  // The fine cells are monotone in the confidence and span it.
  CHECK(xent::detail::quantile_cell(1e-9) == 0);
  CHECK(xent::detail::quantile_cell(1.0) == xent::eval_accumulator::quantile_cells - 1);
  CHECK(xent::detail::quantile_cell(0.5) == xent::eval_accumulator::quantile_cells / 2);
  CHECK(xent::detail::quantile_cell(0.5 - 1e-6) == xent::eval_accumulator::quantile_cells / 2 - 1);
  CHECK(xent::detail::quantile_cell_edge(xent::eval_accumulator::quantile_cells / 2) == 0.5);
  CHECK(xent::detail::quantile_cell(std::numeric_limits<double>::quiet_NaN()) == 0);

  // Two forecast rows only (50 samples each): each row's samples share a cell, which goes whole to
  // one bin (bins 0 and 2 of 4), and the ECE is the two groups' weighted gap.
  const Eigen::Index N = 100;
  matrix<double> x(3, N);
  index_vector t(N);
  const double first[3] = {0.7, 0.2, 0.1}, second[3] = {0.2, 0.3, 0.5};
  for (Eigen::Index j = 0; j < N; ++j) {
    const double* p = j < 50 ? first : second;
    for (Eigen::Index k = 0; k < 3; ++k) x(k, j) = std::log(p[k]);
    t(j) = j < 50 ? j % 2 : 2;  // conf 0.7 (class 0): accuracy 0.5; conf 0.5 (class 2): accuracy 1
  }
  acc.update(x, t);
  const xent::eval_report r = acc.report();
  std::int64_t nonempty = 0, total = 0;
  for (const auto& bin : r.bins) {
    nonempty += bin.count > 0;
    total += bin.count;
  }
  CHECK(nonempty == 2);
  CHECK(r.bins[0].count == 50);
  CHECK(r.bins[2].count == 50);
  CHECK(total == N);
  CHECK(r.ece == Approx(0.5 * 0.2 + 0.5 * 0.5).epsilon(1e-12));
  CHECK(r.mce == Approx(0.5).epsilon(1e-12));

  const xent_test::misuse table[] = {
      {"merge with another strategy",
       [&] {
         xent::eval_accumulator a(q);
         a.merge(xent::eval_accumulator(o));
       },
       "eval_accumulator::merge", "other", "strategy (quantile)", "got uniform"},
  };
  CHECK(xent_test::check_misuse(table) == 1);
}

// ---- binary / multi-label evaluation against torch's losses, scikit-learn's metrics and
// calibration_curve (tests/reference/binary_eval_cases.txt, gen_calibration_reference.py --binary).

namespace {

const std::vector<xent_test::reference_case>& binary_cases() { return xent_test::cached_reference("binary_eval_cases.txt"); }

xent::binary_eval_options binary_options_of(const xent_test::reference_case& c) {
  xent::binary_eval_options o;
  o.bins = int(c["bins"][0]);
  o.threshold = double(c["threshold"][0]);
  o.probabilities = c["probabilities"][0] != 0;
  return o;
}

/// The case's inputs as T, [N, L] row-major (the file's C order). Logits are float32 values
/// (rounded to float first, then widened), probabilities float64.
template <class T>
row_matrix<T> binary_inputs(const xent_test::reference_case& c) {
  const Eigen::Index n = Eigen::Index(c["N"][0]), l = c.classes;
  const bool probabilities = c["probabilities"][0] != 0;
  row_matrix<T> x(n, l);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const long double v = c["logits"][std::size_t(i)];
    x.data()[i] = probabilities ? T(v) : T(float(v));
  }
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("binary evaluation matches torch and scikit-learn", "[metrics][calibration][binary]", float, double) {
  using T = TestType;
  int seen = 0;
  double worst = 0;
  for (const auto& c : binary_cases()) {
    const bool probabilities = c["probabilities"][0] != 0;
    if (probabilities && std::is_same_v<T, float>) continue;  // the probabilities are float64 data
    INFO(c.name);
    ++seen;
    const row_matrix<T> x = binary_inputs<T>(c);
    row_matrix<std::int64_t> y(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = std::int64_t(c["target"][std::size_t(i)]);
    xent::binary_eval_accumulator acc(binary_options_of(c)), halves(binary_options_of(c)), second(binary_options_of(c));
    const Eigen::Index half = x.rows() / 2;
    if (c.has("weight")) {
      // Per-sample weights: a vector of N (L = 1).
      REQUIRE(c.classes == 1);
      vector<double> w(x.rows());
      for (Eigen::Index j = 0; j < w.size(); ++j) w(j) = double(c["weight"][std::size_t(j)]);
      const vector<T> xv = x.col(0);
      const index_vector yv = y.col(0);
      acc.update(xv, yv, w);
      halves.update(xv.head(half), yv.head(half), w.head(half));
      second.update(xv.tail(x.rows() - half), yv.tail(x.rows() - half), w.tail(x.rows() - half));
    } else {
      acc.update(x, y);
      halves.update(x.topRows(half), y.topRows(half));
      second.update(x.bottomRows(x.rows() - half), y.bottomRows(x.rows() - half));
      // The same entries as a column-major [L, N] matrix (dim 0's layout): the same predictions.
      const matrix<T> xt = x.transpose();
      const matrix<std::int64_t> yt = y.transpose();
      xent::binary_eval_accumulator cm(binary_options_of(c));
      cm.update(xt, yt);
      CHECK(std::equal(cm.data(), cm.data() + cm.state_size(), acc.data()));
    }
    const xent::binary_eval_report r = acc.report();
    CHECK(r.samples == std::int64_t(c["samples"][0]));
    CHECK(r.ignored == std::int64_t(c["ignored"][0]));
    CHECK(relative_error(r.weight, c["total_weight"][0]) <= 1e-14);
    const std::pair<const char*, double> got[] = {{"bce", r.bce},
                                                  {"bce_stderr", r.bce_stderr},
                                                  {"accuracy", r.accuracy},
                                                  {"brier", r.brier},
                                                  {"mean_probability", r.mean_probability},
                                                  {"base_rate", r.base_rate},
                                                  {"ece", r.ece},
                                                  {"rmsce", r.rmsce},
                                                  {"mce", r.mce}};
    for (const auto& [key, value] : got) {
      INFO(key << " = " << value << ", reference " << double(c[key][0]));
      const double e = relative_error(value, c[key][0]);
      CHECK(e <= budget<T>());
      worst = std::max(worst, e);
    }
    const auto& bw = c["bin_weight"];
    REQUIRE(r.bins.size() == bw.size());
    for (std::size_t b = 0; b < bw.size(); ++b) CHECK(relative_error(r.bins[b].weight, bw[b]) <= 1e-13);
    // Merging two halves is one pass, to the order of the sums.
    const xent::binary_eval_report rm = xent::merge(halves, second).report();
    CHECK(rm.samples == r.samples);
    CHECK(rm.bce == Approx(r.bce).epsilon(1e-13));
    CHECK(rm.ece == Approx(r.ece).epsilon(1e-13));
    CHECK(rm.accuracy == Approx(r.accuracy).epsilon(1e-13));
  }
  CHECK(seen == (std::is_same_v<T, float> ? 3 : 4));
  std::printf("binary evaluation, %s inputs: worst relative error %.3g\n", std::is_same_v<T, float> ? "float" : "double", worst);
}

TEST_CASE("binary evaluation: identities, float targets, non-finite logits, misuse", "[metrics][calibration][binary]") {
  // A logit of 0: p = 1/2, BCE ln 2 for either target, accuracy at 0.5 counts it negative.
  vector<double> x(4);
  x << 0, 0, 40, -40;
  vector<float> y(4);  // real 0/1 targets are accepted as integers are
  y << 1, 0, 1, 0;
  const xent::binary_eval_report r = xent::evaluate_binary(x, y);
  CHECK(r.bce == Approx((2 * std::log(2.0) + 2 * std::log1p(std::exp(-40.0))) / 4).epsilon(1e-15));
  CHECK(r.accuracy == 0.75);
  CHECK(r.brier == Approx(0.125).epsilon(1e-12));
  // As the softmax over [0, x]: the same BCE as cross_entropy over two classes.
  const xent::binary_eval_report two = xent::evaluate_binary(vector<double>::Constant(1, 1.3), index_vector::Ones(1));
  CHECK(two.bce == Approx(std::log1p(std::exp(-1.3))).epsilon(1e-15));

  // NaN logits poison the report as torch does, or are skipped and counted.
  vector<double> bad = x;
  bad(1) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(xent::evaluate_binary(bad, y).bce));
  xent::binary_eval_options skip;
  skip.skip_nonfinite = true;
  const xent::binary_eval_report rs = xent::evaluate_binary(bad, y, skip);
  CHECK(rs.nonfinite_samples == 1);
  CHECK(rs.samples == 3);
  CHECK(std::isfinite(rs.bce));

  xent::binary_eval_options probs;
  probs.probabilities = true;
  xent::binary_eval_options ten;
  ten.bins = 10;
  vector<double> out_of_range(2);
  out_of_range << 0.5, 1.5;
  index_vector two_targets(2);
  two_targets << 1, 2;
  xent::binary_eval_options bad_threshold;
  bad_threshold.threshold = 1;
  const xent_test::misuse table[] = {
      {"a target of 2", [&] { xent::evaluate_binary(x.head(2), two_targets); }, "binary_eval_accumulator::update", "targets[1]",
       "0, 1 or ignore_index", "got 2"},
      {"a probability above 1", [&] { xent::evaluate_binary(out_of_range, index_vector::Ones(2), probs); }, "binary_eval_accumulator::update",
       "probabilities[1]", "[0, 1]", "1.5"},
      {"targets of another size", [&] { xent::evaluate_binary(x, index_vector::Ones(3)); }, "binary_eval_accumulator::update", "targets",
       "one entry per prediction (4)", "got 3"},
      {"a threshold of 1", [&] { xent::binary_eval_accumulator a(bad_threshold); }, "binary_eval_accumulator", "threshold", "[0, 1)", "1"},
      {"merge with other bins",
       [&] {
         xent::binary_eval_accumulator a(ten);
         a.merge(xent::binary_eval_accumulator());
       },
       "binary_eval_accumulator::merge", "other", "same bins (10)", "got 15"},
      {"a negative weight",
       [&] {
         xent::binary_eval_accumulator a;
         a.update(x, y, vector<double>::Constant(4, -1));
       },
       "binary_eval_accumulator::update", "weights[0]", "finite and >= 0", "-1"},
  };
  CHECK(xent_test::check_misuse(table) == 6);
}
