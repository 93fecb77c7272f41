// Evaluation metrics (include/xent/metrics/): every metric against numpy / torch 1.13 float64
// (tests/reference/metrics_cases.txt, tests/reference/gen_metrics_reference.py), the packet kernel
// against the scalar path, merging, closed forms (uniform logits, calibrated and miscalibrated
// sets), temperature scaling, non-finite logits, masks and misuse.
//
// Budgets. An error is |got - reference| / max(|reference|, 1); counts must match exactly.
//   double: 1e-12     float: 16 float epsilons (1.9e-6). The float inputs are the same float32
//   values; per sample the kernel sums exp in float (a few ulp) and takes one log, and every
//   metric is then formed and summed in double.

#include "eval_reference.hpp"
#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
using index_vector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

constexpr double infinity = std::numeric_limits<double>::infinity();
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

const std::vector<xent_test::reference_case>& cases() {
  static const auto all = xent_test::read_reference(xent_test::reference_path("metrics_cases.txt"));
  return all;
}

template <class T>
double budget() {
  return std::is_same_v<T, float> ? 16 * double(std::numeric_limits<float>::epsilon()) : 1e-12;
}

double relative_error(double got, double ref) { return xent_test::error_of(got, ref, std::max<long double>(std::fabs(ref), 1)); }

/// The case's logits as T: read as float first (the file holds float32 decimals), then widened.
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
  o.top_k = int(c["top_k"][0]);
  o.bins = int(c["bins"][0]);
  o.temperature = double(c["temperature"][0]);
  o.ignore_index = long(c["ignore_index"][0]);
  return o;
}

template <class T>
void check_report(const xent_test::reference_case& c, const xent::eval_report& r, double& worst) {
  INFO("case " << c.name);
  CHECK(r.samples == std::int64_t(c["samples"][0]));
  CHECK(r.ignored == std::int64_t(c["ignored"][0]));
  CHECK(r.nonfinite_samples == 0);
  const std::pair<const char*, double> scalars[] = {
      {"nll", r.nll},       {"nll_stderr", r.nll_stderr},         {"perplexity", r.perplexity},
      {"accuracy", r.accuracy}, {"top_k_accuracy", r.top_k_accuracy}, {"brier", r.brier},
      {"mean_confidence", r.mean_confidence}, {"ece", r.ece},     {"mce", r.mce}};
  for (const auto& [key, got] : scalars) {
    const double e = relative_error(got, double(c[key][0]));
    INFO(key << ": got " << got << ", reference " << double(c[key][0]));
    CHECK(e <= budget<T>());
    worst = std::max(worst, e);
  }
  REQUIRE(r.bins.size() == c["bin_count"].size());
  for (std::size_t b = 0; b < r.bins.size(); ++b) {
    INFO("bin " << b);
    CHECK(r.bins[b].count == std::int64_t(c["bin_count"][b]));
    CHECK(relative_error(r.bins[b].confidence, double(c["bin_confidence"][b])) <= budget<T>());
    CHECK(relative_error(r.bins[b].accuracy, double(c["bin_accuracy"][b])) <= budget<T>());
    CHECK(r.bins[b].lower == Approx(double(b) / double(r.bins.size())));
  }
  // perplexity and bits are the same number three ways.
  CHECK(r.bits_per_token == Approx(r.nll / std::log(2.0)).epsilon(1e-14));
  CHECK(r.total_bits == Approx(r.nll * double(r.samples) / std::log(2.0)).epsilon(1e-12));
}

}  // namespace

TEMPLATE_TEST_CASE("metrics match numpy / torch on every layout", "[metrics][reference]", float, double) {
  using T = TestType;
  double worst = 0;
  for (const auto& c : cases()) {
    const matrix<T> x = logits_of<T>(c);  // C x N, classes contiguous
    const index_vector t = targets_of(c);
    xent::eval_options o = options_of(c);
    check_report<T>(c, xent::evaluate(x, t, o), worst);
    // dim 1 over the same memory: a row-major N x C Map.
    o.dim = 1;
    const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> rows(x.data(), x.cols(), x.rows());
    check_report<T>(c, xent::evaluate(rows, t, o), worst);
    // dim 1 over a column-major N x C matrix: a strided class axis (the scalar path).
    const matrix<T> transposed = x.transpose();
    check_report<T>(c, xent::evaluate(transposed, t, o), worst);
  }
  std::cout << "metrics vs numpy/torch, " << (std::is_same_v<T, float> ? "float" : "double")
            << ": worst relative error " << worst << " (budget " << budget<T>() << ")\n";
}

TEMPLATE_TEST_CASE("fit_temperature matches scipy's minimiser and lowers the NLL", "[metrics][temperature]", float, double) {
  using T = TestType;
  for (const auto& c : cases()) {
    if (!c.has("fitted_temperature")) continue;
    INFO("case " << c.name);
    const matrix<T> x = logits_of<T>(c);
    const xent::temperature_fit fit = xent::fit_temperature(x, targets_of(c));
    CHECK(fit.converged);
    CHECK_FALSE(fit.at_bound);
    CHECK(fit.temperature == Approx(double(c["fitted_temperature"][0])).epsilon(std::is_same_v<T, float> ? 1e-5 : 1e-7));
    CHECK(relative_error(fit.nll_before, double(c["nll"][0])) <= budget<T>());
    CHECK(fit.nll_after < fit.nll_before);
    CHECK(fit.ece_after < fit.ece_before);
    CHECK(fit.iterations <= 10);
  }
}

TEMPLATE_TEST_CASE("the packet kernel matches the scalar path on every class count and special value", "[metrics][kernel]",
                   float, double) {
  using T = TestType;
  const T beta_values[] = {T(1), T(0.5), T(2.5)};
  std::map<Eigen::Index, double> worst;
  for (const Eigen::Index C : {1, 2, 7, 16, 17, 33, 1000, 4095, 4096, 4097, 8193, 20000}) {
    matrix<T> x = xent_test::random_logits<T>(C, 6, 4);
    // Sample 1: ties everywhere. 2: masks (-inf) in both chunks. 3: +-1e30. 4: a NaN late. 5: +inf.
    for (Eigen::Index k = 0; k < C; ++k) x(k, 1) = T(std::round(double(x(k, 1)) / 4));
    for (Eigen::Index k = 0; k < C; k += 3) x(k, 2) = -std::numeric_limits<T>::infinity();
    x(0, 3) = T(1e30);
    x(C - 1, 3) = T(-1e30);
    x(C - 1, 4) = std::numeric_limits<T>::quiet_NaN();
    x(C / 2, 5) = std::numeric_limits<T>::infinity();
    for (const T beta : beta_values) {
      for (Eigen::Index j = 0; j < x.cols(); ++j) {
        for (const Eigen::Index t : {Eigen::Index(0), C / 2, C - 1}) {
          if (j == 2 && t % 3 == 0) continue;  // keep the target unmasked
          INFO("C = " << C << ", sample " << j << ", target " << t << ", beta " << beta);
          const auto slow = xent_test::eval_sample_scalar(x.col(j).data(), C, 1, t, beta, C);
          const auto fast = xent::detail::eval_sample_of(x.col(j).data(), C, 1, t, beta, C);
          REQUIRE(fast.defined == slow.defined);
          if (!slow.defined) continue;
          CHECK(fast.rank == slow.rank);
          // Capped: exact below the cap, the cap above it (whichever chunks the count skipped).
          for (const Eigen::Index cap : {Eigen::Index(1), Eigen::Index(5), slow.rank, slow.rank + 1}) {
            if (cap < 1) continue;
            CHECK(xent::detail::eval_sample_of(x.col(j).data(), C, 1, t, beta, cap).rank == std::min(slow.rank, cap));
          }
          CHECK(fast.max == T(slow.max));
          CHECK(fast.target == T(slow.target));
          CHECK(fast.neg_inf == slow.neg_inf);
          const double es = std::fabs(double(fast.sum) / slow.sum - 1), eq = std::fabs(double(fast.sum_sq) / slow.sum_sq - 1);
          worst[C] = std::max({worst[C], es, eq});
        }
      }
    }
  }
  // Budget: 24 ulp of T. Measured: float 8, double 16 (C = 4095: the packet chains sum 4095 terms
  // with few lanes against a compensated double reference).
  double overall = 0;
  for (const auto& [C, e] : worst) {
    INFO("C = " << C);
    CHECK(e <= 24 * std::numeric_limits<T>::epsilon());
    overall = std::max(overall, e / std::numeric_limits<T>::epsilon());
  }
  std::cout << "eval kernel vs scalar path, " << (std::is_same_v<T, float> ? "float" : "double") << ": sums within "
            << overall << " ulp (budget 24)\n";
}

TEST_CASE("the evaluation state is the same bits for any thread count, and a strided class axis the same sums",
          "[metrics][kernel][threads]") {
  for (const Eigen::Index C : {10, 1000, 40000}) {
    const Eigen::Index N = C == 40000 ? 3 : 300;  // 3 samples of 40000: threads share each sample's chunks
    matrix<float> x = xent_test::random_logits<float>(C, N, 3);
    x(1, 0) = -std::numeric_limits<float>::infinity();
    index_vector t(N);
    for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 7 == 3 ? -100 : (j * 37) % C;
    xent::eval_options one, two, rows;
    one.num_threads = 1;
    two.num_threads = 2;
    rows = one;
    rows.dim = 1;
    xent::eval_accumulator a(one), b(two), c(rows);
    a.update(x, t);
    b.update(x, t);
    const matrix<float> xt = x.transpose();
    c.update(xt, t);
    INFO("C = " << C);
    for (std::size_t i = 0; i < a.state_size(); ++i) {
      CHECK(a.data()[i] == b.data()[i]);
      // The strided axis goes through the chunk buffer: the same code on the same values.
      CHECK(a.data()[i] == c.data()[i]);
    }
  }
}

TEST_CASE("the stable rank: ties go to the lower class index, as argmax's first maximum", "[metrics][rank]") {
  // Classes 1, 2 and 4 share the top logit.
  const Eigen::VectorXf x = (Eigen::VectorXf(5) << 0, 3, 3, 1, 3).finished();
  const auto rank = [&](Eigen::Index t) { return xent::detail::eval_sample_of(x.data(), 5, 1, t, 1.0f, 5).rank; };
  CHECK(rank(1) == 0);
  CHECK(rank(2) == 1);
  CHECK(rank(4) == 2);
  CHECK(rank(3) == 3);
  CHECK(rank(0) == 4);
}

TEMPLATE_TEST_CASE("merging accumulators over random splits equals one pass", "[metrics][merge]", float, double) {
  using T = TestType;
  const Eigen::Index C = 37, N = 1000;
  const matrix<T> x = xent_test::random_logits<T>(C, N, 3);
  index_vector t(N);
  std::uniform_int_distribution<int> cls(0, int(C) - 1);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 11 == 0 ? -100 : cls(xent_test::rng());
  xent::eval_options o;
  o.bins = 12;
  o.top_k = 4;
  xent::eval_accumulator whole(o);
  whole.update(x, t);
  const xent::eval_report one = whole.report();

  for (int trial = 0; trial < 20; ++trial) {
    // Random cut points, one accumulator per piece, merged in a random order.
    std::vector<Eigen::Index> cuts = {0, N};
    std::uniform_int_distribution<Eigen::Index> at(1, N - 1);
    for (int k = 0; k < 1 + trial % 6; ++k) cuts.push_back(at(xent_test::rng()));
    std::sort(cuts.begin(), cuts.end());
    std::vector<xent::eval_accumulator> parts;
    for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
      parts.emplace_back(o);
      const Eigen::Index n = cuts[k + 1] - cuts[k];
      if (n > 0) parts.back().update(x.middleCols(cuts[k], n), t.segment(cuts[k], n));
    }
    std::shuffle(parts.begin(), parts.end(), xent_test::rng());
    xent::eval_accumulator merged(o);
    for (const auto& p : parts) merged.merge(p);
    const xent::eval_report r = merged.report();
    CHECK(r.samples == one.samples);
    CHECK(r.ignored == one.ignored);
    CHECK(r.accuracy == one.accuracy);  // counts: exact
    CHECK(r.top_k_accuracy == one.top_k_accuracy);
    for (std::size_t b = 0; b < r.bins.size(); ++b) CHECK(r.bins[b].count == one.bins[b].count);
    CHECK(r.nll == Approx(one.nll).epsilon(1e-13));
    CHECK(r.nll_stderr == Approx(one.nll_stderr).epsilon(1e-10));
    CHECK(r.brier == Approx(one.brier).epsilon(1e-13));
    CHECK(r.ece == Approx(one.ece).epsilon(1e-12));
  }

  SECTION("merge is commutative bit for bit, and the flat state carries everything") {
    xent::eval_accumulator a(o), b(o);
    a.update(x.leftCols(300), t.head(300));
    b.update(x.rightCols(700), t.tail(700));
    const xent::eval_accumulator ab = xent::merge(a, b), ba = xent::merge(b, a);
    REQUIRE(ab.state_size() == xent::eval_accumulator::fields + xent::eval_accumulator::bin_fields * 12);
    CHECK(std::equal(ab.data(), ab.data() + ab.state_size(), ba.data()));
    // What an MPI_Allreduce does: element-wise sums of the flat arrays of equally configured accumulators.
    xent::eval_accumulator received(o);
    for (std::size_t i = 0; i < received.state_size(); ++i) received.data()[i] = a.data()[i] + b.data()[i];
    CHECK(received.report().nll == ab.report().nll);
    CHECK(received[xent::eval_accumulator::samples] == double(one.samples));
    CHECK(received.data()[xent::eval_accumulator::bin_offset(3)] == double(one.bins[3].count));
  }
}

TEMPLATE_TEST_CASE("uniform logits: perplexity C, confidence 1 / C, ties resolved to class 0", "[metrics][closed-form]", float,
                   double) {
  using T = TestType;
  for (const Eigen::Index C : {2, 10, 1000, 32000}) {
    const Eigen::Index N = 50;
    const matrix<T> x = matrix<T>::Constant(C, N, T(0.25));
    index_vector t(N);
    for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 7919) % C;
    const xent::eval_report r = xent::evaluate(x, t);
    INFO("C = " << C);
    CHECK(r.perplexity == Approx(double(C)).epsilon(budget<T>()));
    CHECK(r.nll == Approx(std::log(double(C))).epsilon(budget<T>()));
    CHECK(r.bits_per_token == Approx(std::log2(double(C))).epsilon(budget<T>()));
    CHECK(r.nll_stderr == Approx(0).margin(1e-6));
    CHECK(r.mean_confidence == Approx(1.0 / double(C)).epsilon(budget<T>()));
    CHECK(r.brier == Approx(1 - 1.0 / double(C)).epsilon(budget<T>()));
    // Every class ties: the stable rank of target t is t.
    double at_zero = 0, below_k = 0;
    for (Eigen::Index j = 0; j < N; ++j) at_zero += t(j) == 0, below_k += t(j) < 5;
    CHECK(r.accuracy == Approx(at_zero / double(N)));
    CHECK(r.top_k_accuracy == Approx(below_k / double(N)));
  }
}

TEST_CASE("bits per character, byte and dimension divide the total bits", "[metrics][units]") {
  const matrix<double> x = xent_test::random_logits<double>(8, 40);
  const index_vector t = index_vector::Constant(40, 3);
  xent::eval_accumulator acc;
  acc.update(x, t);
  const xent::eval_report plain = acc.report();
  CHECK(std::isnan(plain.bits_per_character));
  CHECK(std::isnan(plain.bits_per_byte));
  CHECK(plain.bits_per_dimension == Approx(plain.bits_per_token));
  const xent::eval_report r = acc.report({160, 200, 10});
  CHECK(r.bits_per_character == Approx(plain.total_bits / 160));
  CHECK(r.bits_per_byte == Approx(plain.total_bits / 200));
  CHECK(r.bits_per_dimension == Approx(plain.total_bits / 10));
  CHECK(r.total_nats == Approx(plain.nll * 40));
}

namespace {

/// One target per column of p, drawn from that column's probabilities.
index_vector draw_targets(const matrix<float>& p) {
  index_vector t(p.cols());
  std::uniform_real_distribution<double> u(0, 1);
  for (Eigen::Index j = 0; j < p.cols(); ++j) {
    double r = u(xent_test::rng()), acc = 0;
    Eigen::Index k = 0;
    for (; k < p.rows() - 1; ++k) {
      acc += p(k, j);
      if (r < acc) break;
    }
    t(j) = k;
  }
  return t;
}

/// C = 10 logits whose softmax puts `confidence` on class `top` and spreads the rest evenly.
void set_confidence(matrix<double>& x, Eigen::Index j, double confidence, Eigen::Index top) {
  const double rest = (1 - confidence) / double(x.rows() - 1);
  x.col(j).setConstant(std::log(rest));
  x(top, j) = std::log(confidence);
}

}  // namespace

TEST_CASE("ECE: near 0 for a calibrated set, the closed form for miscalibrated ones", "[metrics][calibration]") {
  SECTION("targets drawn from the model's own probabilities") {
    const Eigen::Index C = 10, N = 200000;
    const matrix<float> x = xent_test::random_logits<float>(C, N, 2);
    const index_vector t = draw_targets(xent::softmax(x));
    const xent::eval_report r = xent::evaluate(x, t);
    // Sampling noise: sum_b (n_b / N) sqrt(a_b (1 - a_b) / n_b) <= sqrt(B / N) / 2 ~ 0.004.
    CHECK(r.ece < 0.01);
    CHECK(r.accuracy == Approx(r.mean_confidence).margin(0.005));
  }

  SECTION("every bin with a chosen accuracy: ECE = sum_b (n_b / N) |a_b - c_b| exactly") {
    // 10 bins; bin b holds 40 samples of confidence (b + 0.5) / 10 (b >= 1: it must exceed 1 / C),
    // of which round(40 a_b) are right, a_b = min(1, c_b + 0.25) for even b, c_b^2 for odd b.
    const int B = 10, per_bin = 40;
    const Eigen::Index N = (B - 1) * per_bin;
    matrix<double> x(10, N);
    index_vector t(N);
    double expected = 0, worst_gap = 0;
    Eigen::Index j = 0;
    for (int b = 1; b < B; ++b) {
      const double c = (b + 0.5) / B;
      const double a = b % 2 == 0 ? std::min(1.0, c + 0.25) : c * c;
      const int right = int(std::lround(a * per_bin));
      for (int i = 0; i < per_bin; ++i, ++j) {
        set_confidence(x, j, c, j % 10);
        t(j) = i < right ? j % 10 : (j + 1) % 10;
      }
      const double gap = std::fabs(double(right) / per_bin - c);
      expected += double(per_bin) / double(N) * gap;
      worst_gap = std::max(worst_gap, gap);
    }
    xent::eval_options o;
    o.bins = B;
    const xent::eval_report r = xent::evaluate(x, t, o);
    CHECK(r.ece == Approx(expected).epsilon(1e-12));
    CHECK(r.mce == Approx(worst_gap).epsilon(1e-12));
    CHECK(r.bins[0].count == 0);
    CHECK(std::isnan(r.bins[0].accuracy));
    for (int b = 1; b < B; ++b) {
      CHECK(r.bins[std::size_t(b)].count == per_bin);
      CHECK(r.bins[std::size_t(b)].confidence == Approx((b + 0.5) / B).epsilon(1e-12));
    }
  }

  SECTION("confidence uniform on (1/2, 1], right with probability c^2: the binned closed form") {
    // Two classes. Over bin (l, u]: E[c] = (l + u) / 2, E[c^2] = (l^2 + l u + u^2) / 3, and the
    // bins below 1/2 are empty, so ECE -> sum over the upper half of P(bin) |E[c^2] - E[c]|.
    const int B = 10;
    const Eigen::Index N = 400000;
    matrix<double> x(2, N);
    index_vector t(N);
    std::uniform_real_distribution<double> u(0, 1);
    for (Eigen::Index j = 0; j < N; ++j) {
      const double c = 0.5 + 0.5 * (1 - u(xent_test::rng()));  // (1/2, 1]
      x(0, j) = std::log(c);
      x(1, j) = std::log1p(-c);
      t(j) = u(xent_test::rng()) < c * c ? 0 : 1;
    }
    double expected = 0;
    for (int b = B / 2; b < B; ++b) {
      const double l = double(b) / B, h = double(b + 1) / B;
      expected += (h - l) / 0.5 * std::fabs((l * l + l * h + h * h) / 3 - (l + h) / 2);
    }
    xent::eval_options o;
    o.bins = B;
    const xent::eval_report r = xent::evaluate(x, t, o);
    CHECK(r.ece == Approx(expected).margin(0.004));  // noise: about sqrt(B / N) / 2 = 0.0025
    CHECK(r.accuracy == Approx(7.0 / 12).margin(0.004));  // E[c^2] for c uniform on (1/2, 1]
  }
}

TEST_CASE("fit_temperature recovers the temperature that generated the targets", "[metrics][temperature]") {
  for (const double T0 : {0.6, 1.0, 1.7, 3.0}) {
    const Eigen::Index C = 10, N = 60000;
    const matrix<float> x = xent_test::random_logits<float>(C, N, 2.5);
    const index_vector t = draw_targets(xent::softmax(matrix<float>(x / float(T0))));
    const xent::temperature_fit fit = xent::fit_temperature(x, t);
    INFO("T0 = " << T0 << ", fitted " << fit.temperature << " in " << fit.iterations << " iterations");
    CHECK(fit.converged);
    CHECK(fit.temperature == Approx(T0).epsilon(0.03));
    CHECK(fit.ece_after < 0.01);
    CHECK(fit.nll_after <= fit.nll_before);
    // At the fitted T the evaluation agrees with the fit's own NLL.
    xent::eval_options o;
    o.temperature = fit.temperature;
    CHECK(xent::evaluate(x, t, o).nll == Approx(fit.nll_after).epsilon(1e-6));
  }

  SECTION("optima outside the interval are reported at the bound") {
    // Targets independent of the logits: the best model is uniform, T -> infinity.
    const matrix<float> x = xent_test::random_logits<float>(5, 2000, 3);
    index_vector t(2000);
    for (Eigen::Index j = 0; j < 2000; ++j) t(j) = j % 5;
    xent::temperature_options o;
    o.max_temperature = 50;
    const xent::temperature_fit fit = xent::fit_temperature(x, t, o);
    CHECK(fit.at_bound);
    CHECK(fit.temperature == Approx(50));
    // Perfectly separated: every target has the largest logit by a margin, T -> 0.
    matrix<float> y = matrix<float>::Zero(5, 100);
    for (Eigen::Index j = 0; j < 100; ++j) y(j % 5, j) = 4;
    index_vector s(100);
    for (Eigen::Index j = 0; j < 100; ++j) s(j) = j % 5;
    const xent::temperature_fit sharp = xent::fit_temperature(y, s);
    CHECK(sharp.at_bound);
    CHECK(sharp.temperature == Approx(0.01));
  }

  SECTION("the streaming form over shards gives the same fit") {
    const matrix<double> x = xent_test::random_logits<double>(20, 3000, 2);
    index_vector t(3000);
    for (Eigen::Index j = 0; j < 3000; ++j) t(j) = j % 20 == 0 ? -100 : (x.col(j).maxCoeff() > 5 ? 0 : j % 20);
    const xent::temperature_fit whole = xent::fit_temperature(x, t);
    const xent::temperature_fit sharded = xent::fit_temperature_with([&](double T) {
      xent::temperature_sums s;
      for (Eigen::Index start = 0; start < 3000; start += 700) {
        const Eigen::Index n = std::min<Eigen::Index>(700, 3000 - start);
        xent::add_temperature_sums(x.middleCols(start, n), t.segment(start, n), T, {}, s);
      }
      return s;
    });
    CHECK(sharded.temperature == Approx(whole.temperature).epsilon(1e-9));
    CHECK(sharded.nll_after == Approx(whole.nll_after).epsilon(1e-12));
    CHECK(whole.samples == 3000 - 150);
  }
}

TEST_CASE("temperature sums are exact at large C, the same bits for any thread count, and strided alike",
          "[metrics][temperature][accuracy]") {
  // Logits offset by 1000 (z = x - max must come from the raw logits) over 200000 classes: the
  // sums of one sample are 200000 float terms each.
  const Eigen::Index C = 200000, N = 5;
  matrix<float> x = xent_test::random_logits<float>(C, N, 3);
  x.array() += 1000.0f;
  x(17, 1) = -std::numeric_limits<float>::infinity();  // a mask
  index_vector t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 40503) % C;
  t(3) = -100;  // ignored
  for (const double T : {1.0, 0.4, 2.5}) {
    INFO("T = " << T);
    long double nll = 0, gradient = 0, curvature = 0;
    for (Eigen::Index j = 0; j < N; ++j) {
      if (t(j) < 0) continue;
      long double m = -INFINITY, s = 0, s1 = 0, s2 = 0;
      for (Eigen::Index k = 0; k < C; ++k) m = std::max<long double>(m, x(k, j));
      for (Eigen::Index k = 0; k < C; ++k) {
        if (std::isinf(x(k, j))) continue;
        const long double z = static_cast<long double>(x(k, j)) - m, e = std::exp(z / T);
        s += e, s1 += e * z, s2 += e * z * z;
      }
      const long double zt = static_cast<long double>(x(t(j), j)) - m;
      nll += -zt / T + std::log(s);
      gradient += s1 / s - zt;
      curvature += s2 / s - (s1 / s) * (s1 / s);
    }
    xent::temperature_options one, two, rows;
    one.num_threads = 1;
    two.num_threads = 2;
    rows.num_threads = 1;
    rows.dim = 1;
    xent::temperature_sums a, b, c;
    xent::add_temperature_sums(x, t, T, one, a);
    xent::add_temperature_sums(x, t, T, two, b);
    const matrix<float> xt = x.transpose();
    xent::add_temperature_sums(xt, t, T, rows, c);
    CHECK(a.samples == N - 1);
    CHECK(a.nll == b.nll);
    CHECK(a.gradient == b.gradient);
    CHECK(a.curvature == b.curvature);
    // float's own rounding of exp and of the chains: a few 1e-7 of the terms.
    CHECK(a.nll == Approx(double(nll)).epsilon(1e-6));
    CHECK(a.gradient == Approx(double(gradient)).epsilon(1e-6));
    CHECK(a.curvature == Approx(double(curvature)).epsilon(1e-5));
    CHECK(c.nll == Approx(a.nll).epsilon(1e-6));
    CHECK(c.gradient == Approx(a.gradient).epsilon(1e-6));
    CHECK(c.curvature == Approx(a.curvature).epsilon(1e-5));
  }
  // A masked target has no finite NLL at any temperature: counted as non-finite.
  matrix<float> masked = x.leftCols(2);
  masked(t(0), 0) = -std::numeric_limits<float>::infinity();
  xent::temperature_sums m;
  xent::add_temperature_sums(masked, t.head(2), 1.0, {}, m);
  CHECK(m.nonfinite_samples == 1);
  CHECK(m.samples == 1);
}

TEMPLATE_TEST_CASE("non-finite logits are counted, and poison the report unless skipped", "[metrics][nonfinite]", float, double) {
  using T = TestType;
  const Eigen::Index C = 40, N = 30;
  matrix<T> x = xent_test::random_logits<T>(C, N, 2);
  index_vector t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 3) % C;
  matrix<T> bad = x;
  bad(5, 2) = std::numeric_limits<T>::quiet_NaN();
  bad(7, 2) = std::numeric_limits<T>::infinity();
  bad(0, 9) = std::numeric_limits<T>::infinity();
  bad.col(11).setConstant(-std::numeric_limits<T>::infinity());  // fully masked
  bad(3, 20) = -std::numeric_limits<T>::infinity();             // a mask (not the target, 60 % 40 = 20)

  xent::eval_options o;
  const xent::eval_report poisoned = xent::evaluate(bad, t, o);
  CHECK(poisoned.nonfinite_samples == 3);
  CHECK(poisoned.nonfinite_logits == 2 + 1 + C);
  CHECK(poisoned.samples == N - 3);
  CHECK(std::isnan(poisoned.nll));
  CHECK(std::isnan(poisoned.ece));
  CHECK(std::isnan(poisoned.accuracy));

  o.skip_nonfinite = true;
  const xent::eval_report skipped = xent::evaluate(bad, t, o);
  // The same as evaluating the good samples alone (with sample 20 masked at class 3).
  Eigen::VectorXi keep = Eigen::VectorXi::Ones(N);
  keep(2) = keep(9) = keep(11) = 0;
  xent::eval_accumulator acc(o);
  acc.update(bad, t, keep);
  const xent::eval_report expected = acc.report();
  CHECK(skipped.nll == expected.nll);
  CHECK(skipped.ece == expected.ece);
  CHECK(expected.ignored == 3);
  CHECK(std::isfinite(skipped.nll));

  // -inf as non-finite too: sample 20 now counts.
  o.neg_inf_is_mask = false;
  const xent::eval_report strict = xent::evaluate(bad, t, o);
  CHECK(strict.nonfinite_samples == 4);
  CHECK(strict.nonfinite_logits == 2 + 1 + C + 1);

  // A masked target: an infinite NLL, the honest value.
  matrix<T> masked_target = x;
  masked_target(t(4), 4) = -std::numeric_limits<T>::infinity();
  const xent::eval_report r = xent::evaluate(masked_target, t);
  CHECK(r.nonfinite_samples == 0);
  CHECK(r.nll == infinity);
  CHECK(r.perplexity == infinity);

  // Overflowing x - max is not a -inf logit.
  matrix<T> huge = matrix<T>::Zero(4, 1);
  huge(0, 0) = std::numeric_limits<T>::max();
  huge(1, 0) = std::numeric_limits<T>::lowest();
  const xent::eval_report h = xent::evaluate(huge, index_vector::Zero(1), o);
  CHECK(h.nonfinite_samples == 0);
  CHECK(h.nll == Approx(0).margin(1e-12));
}

TEST_CASE("a mask leaves samples out without reading their targets", "[metrics][mask]") {
  const matrix<double> x = xent_test::random_logits<double>(6, 10);
  index_vector t = index_vector::Constant(10, 2);
  t(4) = 99;  // padding, masked out: never checked
  Eigen::Matrix<bool, Eigen::Dynamic, 1> mask = Eigen::Matrix<bool, Eigen::Dynamic, 1>::Constant(10, true);
  mask(4) = false;
  xent::eval_accumulator acc;
  acc.update(x, t, mask);
  CHECK(acc.report().samples == 9);
  CHECK(acc.report().ignored == 1);
  CHECK(acc.report().nll == Approx(xent::cross_entropy(
                                        (matrix<double>(6, 9) << x.leftCols(4), x.rightCols(5)).finished(),
                                        index_vector::Constant(9, 2))
                                        .value()));
}

TEST_CASE("metrics misuse throws xent::invalid_argument naming function and argument", "[metrics][bad-input]") {
  const matrix<double> x = xent_test::random_logits<double>(4, 3);
  const index_vector t = (index_vector(3) << 0, 1, 3).finished();
  const auto with = [](auto opts, auto&& edit) { edit(opts); return opts; };
  using eo = xent::eval_options;
  using to = xent::temperature_options;
  xent::eval_accumulator acc;
  const xent_test::misuse table[] = {
      {"bins 0", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.bins = 0; })); }, "eval_accumulator", "bins",
       "at least 1", "got 0"},
      {"num_threads -1", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.num_threads = -1; })); }, "eval_accumulator",
       "num_threads", ">= 0", "got -1"},
      {"top_k 0", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.top_k = 0; })); }, "eval_accumulator", "top_k",
       "at least 1", "got 0"},
      {"temperature 0", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.temperature = 0; })); }, "eval_accumulator",
       "temperature", "positive and finite", "got 0"},
      {"temperature NaN", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.temperature = not_a_number; })); },
       "eval_accumulator", "temperature", "positive and finite", "got nan"},
      {"dim 2", [&] { xent::eval_accumulator a(with(eo{}, [](auto& o) { o.dim = 2; })); }, "eval_accumulator", "dim",
       "must be 0", "got 2"},
      {"empty logits", [&] { acc.update(matrix<double>(0, 3), t); }, "eval_accumulator::update", "logits", "must not be empty",
       "got 0 x 3"},
      {"targets length", [&] { acc.update(x, index_vector::Zero(2)); }, "eval_accumulator::update", "targets",
       "one entry per sample (3)", "got 2"},
      {"target == C", [&] { acc.update(x, (index_vector(3) << 0, 4, 1).finished()); }, "eval_accumulator::update", "target[1]",
       "must be in [0, 4) or ignore_index (-100)", "got 4"},
      {"target -1", [&] { acc.update(x, (index_vector(3) << 0, 1, -1).finished()); }, "eval_accumulator::update", "target[2]",
       "must be in [0, 4)", "got -1"},
      {"mask length", [&] { acc.update(x, t, Eigen::VectorXi::Ones(4)); }, "eval_accumulator::update", "mask",
       "one entry per sample (3)", "got 4"},
      {"merge bins", [&] { acc.merge(xent::eval_accumulator(with(eo{}, [](auto& o) { o.bins = 10; }))); },
       "eval_accumulator::merge", "other", "same bins (15)", "got 10"},
      {"merge top_k", [&] { acc.merge(xent::eval_accumulator(with(eo{}, [](auto& o) { o.top_k = 1; }))); },
       "eval_accumulator::merge", "other", "same top_k (5)", "got 1"},
      {"fit bounds", [&] { (void)xent::fit_temperature(x, t, with(to{}, [](auto& o) { o.min_temperature = 200; })); },
       "fit_temperature", "min_temperature", "below a finite max_temperature", "got 200"},
      {"fit target", [&] { (void)xent::fit_temperature(x, (index_vector(3) << 0, 9, 1).finished()); }, "fit_temperature",
       "target[1]", "must be in [0, 4)", "got 9"},
      {"fit bins", [&] { (void)xent::fit_temperature(x, t, with(to{}, [](auto& o) { o.bins = 0; })); }, "fit_temperature",
       "bins", "at least 1", "got 0"},
      {"sums temperature", [&] { xent::temperature_sums s; xent::add_temperature_sums(x, t, -1.0, {}, s); },
       "add_temperature_sums", "temperature", "positive and finite", "got -1"},
      {"fit threads", [&] { (void)xent::fit_temperature(x, t, with(to{}, [](auto& o) { o.num_threads = -2; })); },
       "fit_temperature", "num_threads", ">= 0", "got -2"},
      {"sums threads", [&] { xent::temperature_sums s; xent::add_temperature_sums(x, t, 1.0, with(to{}, [](auto& o) { o.num_threads = -1; }), s); },
       "add_temperature_sums", "num_threads", ">= 0", "got -1"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
  CHECK(acc.report().samples == 0);  // nothing was added by the failed calls
}

TEST_CASE("a temperature whose inverse overflows the logits' type is refused by name", "[metrics][temperature][bad-input]") {
  // 1 / 1e-40 = 1e40 is beyond float's 3.4e38 but within double's range: refused for float logits
  // only. 1e-310 (subnormal) has an inverse beyond double's range too.
  const matrix<double> x = xent_test::random_logits<double>(4, 3);
  const matrix<float> xf = x.cast<float>();
  const index_vector t = (index_vector(3) << 0, 1, 3).finished();
  const auto with = [](auto opts, auto&& edit) { edit(opts); return opts; };
  using eo = xent::eval_options;
  using to = xent::temperature_options;
  const eo tiny = with(eo{}, [](auto& o) { o.temperature = 1e-40; });
  const xent_test::misuse table[] = {
      {"update, float", [&] { xent::eval_accumulator(tiny).update(xf, t); }, "eval_accumulator::update", "temperature",
       "must be at least 2.93874e-39 so that 1 / temperature is finite in float", "got 1e-40"},
      {"update, double", [&] { xent::eval_accumulator(with(eo{}, [](auto& o) { o.temperature = 1e-310; })).update(x, t); },
       "eval_accumulator::update", "temperature", "must be at least 5.56268e-309 so that 1 / temperature is finite in double",
       "got 1e-310"},
      {"evaluate, float", [&] { (void)xent::evaluate(xf, t, tiny); }, "eval_accumulator::update", "temperature", "finite in float"},
      {"sums, float", [&] { xent::temperature_sums s; xent::add_temperature_sums(xf, t, 1e-40, {}, s); }, "add_temperature_sums",
       "temperature", "finite in float", "got 1e-40"},
      {"sums, double", [&] { xent::temperature_sums s; xent::add_temperature_sums(x, t, 1e-310, {}, s); }, "add_temperature_sums",
       "temperature", "finite in double", "got 1e-310"},
      {"fit, float", [&] { (void)xent::fit_temperature(xf, t, with(to{}, [](auto& o) { o.min_temperature = 1e-40; })); },
       "fit_temperature", "min_temperature", "must be at least 2.93874e-39 so that 1 / min_temperature is finite in float",
       "got 1e-40"},
      {"fit, double", [&] { (void)xent::fit_temperature(x, t, with(to{}, [](auto& o) { o.min_temperature = 1e-310; })); },
       "fit_temperature", "min_temperature", "finite in double", "got 1e-310"},
      {"fit_with", [&] {
         (void)xent::fit_temperature_with([](double) { return xent::temperature_sums{}; },
                                          with(to{}, [](auto& o) { o.min_temperature = 1e-310; }));
       },
       "fit_temperature", "min_temperature", "finite in double", "got 1e-310"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));

  // The same 1e-40 is fine for double logits: softmax(x / T) is one-hot at the first argmax, so
  // the ranks, hence both accuracies, are those at T = 1, and every confidence is 1.
  const xent::eval_report sharp = xent::evaluate(x, t, tiny);
  const xent::eval_report plain = xent::evaluate(x, t);
  CHECK(sharp.samples == 3);
  CHECK(sharp.accuracy == plain.accuracy);
  CHECK(sharp.top_k_accuracy == plain.top_k_accuracy);
  CHECK(sharp.mean_confidence == 1);
  // And the smallest float temperature the check lets through still gives ranks, not NaN.
  const xent::eval_report edge = xent::evaluate(xf, t, with(eo{}, [](auto& o) { o.temperature = 2.93874e-39; }));
  CHECK(edge.accuracy == plain.accuracy);
  CHECK(edge.top_k_accuracy == plain.top_k_accuracy);
}
