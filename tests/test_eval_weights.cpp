// Per-sample weights in eval_accumulator (include/xent/metrics/evaluation.hpp) against numpy / torch
// 1.13 float64 weighted formulas (tests/reference/eval_weights_cases.txt, written by
// tests/reference/gen_eval_weights_reference.py), and the identities: weights of 1 are the
// unweighted state bit for bit, an integer weight is the sample repeated, weight 0 leaves it out.
//
// Budgets as tests/test_metrics.cpp: |got - reference| / max(|reference|, 1) within 1e-12 (double
// logits) or 16 float epsilons (float logits); counts exact.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
using index_vector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

const std::vector<xent_test::reference_case>& cases() {
  static const auto all = xent_test::read_reference(xent_test::reference_path("eval_weights_cases.txt"));
  return all;
}

template <class T>
double budget() {
  return std::is_same_v<T, float> ? 16 * double(std::numeric_limits<float>::epsilon()) : 1e-12;
}

double relative_error(double got, double ref) {
  if (std::isnan(ref)) return std::isnan(got) ? 0 : std::numeric_limits<double>::infinity();
  return double(xent_test::error_of(got, ref, std::max<long double>(std::fabs(ref), 1)));
}

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

Eigen::VectorXd weights_of(const xent_test::reference_case& c) {
  const auto& w = c["weights"];
  Eigen::VectorXd v(Eigen::Index(w.size()));
  // float32 decimals: read as float, then widened (the generator weighs with the float32 values).
  for (std::size_t j = 0; j < w.size(); ++j) v(Eigen::Index(j)) = double(float(w[j]));
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

/// Every field of two reports the same bits (NaN equal to NaN).
void check_same_report(const xent::eval_report& a, const xent::eval_report& b) {
  const auto same = [](double x, double y) { return (std::isnan(x) && std::isnan(y)) || x == y; };
  CHECK(a.samples == b.samples);
  CHECK(a.ignored == b.ignored);
  CHECK(same(a.weight, b.weight));
  const double pairs[][2] = {{a.nll, b.nll},       {a.nll_stderr, b.nll_stderr},     {a.perplexity, b.perplexity},
                             {a.total_nats, b.total_nats}, {a.accuracy, b.accuracy}, {a.top_k_accuracy, b.top_k_accuracy},
                             {a.brier, b.brier},   {a.mean_confidence, b.mean_confidence}, {a.ece, b.ece},
                             {a.mce, b.mce},       {a.bits_per_dimension, b.bits_per_dimension}};
  for (const auto& p : pairs) CHECK(same(p[0], p[1]));
  REQUIRE(a.bins.size() == b.bins.size());
  for (std::size_t k = 0; k < a.bins.size(); ++k) {
    CHECK(a.bins[k].count == b.bins[k].count);
    CHECK(same(a.bins[k].weight, b.bins[k].weight));
    CHECK(same(a.bins[k].confidence, b.bins[k].confidence));
    CHECK(same(a.bins[k].accuracy, b.bins[k].accuracy));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("weighted metrics match numpy / torch's weighted formulas", "[metrics][weights][reference]", float, double) {
  using T = TestType;
  double worst = 0;
  for (const auto& c : cases()) {
    INFO("case " << c.name);
    const matrix<T> x = logits_of<T>(c);
    const index_vector t = targets_of(c);
    const Eigen::VectorXd w = weights_of(c);
    xent::eval_accumulator acc(options_of(c));
    // float weights too: the same values (the file's weights are float32).
    const Eigen::Index half = x.cols() / 2;
    acc.update(x.leftCols(half), t.head(half), w.head(half));
    acc.update(x.rightCols(x.cols() - half), t.tail(x.cols() - half), w.tail(x.cols() - half).template cast<float>());
    const xent::eval_report r = acc.report();
    CHECK(r.samples == std::int64_t(c["samples"][0]));
    CHECK(r.ignored == std::int64_t(c["ignored"][0]));
    const std::pair<const char*, double> scalars[] = {
        {"weight", r.weight},     {"nll", r.nll},       {"nll_stderr", r.nll_stderr}, {"perplexity", r.perplexity},
        {"accuracy", r.accuracy}, {"top_k_accuracy", r.top_k_accuracy}, {"brier", r.brier},
        {"mean_confidence", r.mean_confidence}, {"ece", r.ece}, {"mce", r.mce}};
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
      CHECK(relative_error(r.bins[b].weight, double(c["bin_weight"][b])) <= 1e-13);
      CHECK(relative_error(r.bins[b].confidence, double(c["bin_confidence"][b])) <= budget<T>());
      CHECK(relative_error(r.bins[b].accuracy, double(c["bin_accuracy"][b])) <= budget<T>());
    }
    CHECK(r.total_nats == Approx(r.nll * r.weight).epsilon(1e-13));
    CHECK(r.bits_per_dimension == Approx(r.bits_per_token).epsilon(1e-14));
  }
  std::cout << "weighted metrics, " << (std::is_same_v<T, float> ? "float" : "double") << ": worst error "
            << worst / std::numeric_limits<T>::epsilon() << " eps\n";
}

TEST_CASE("weights of 1 give the unweighted state bit for bit, in every layout and thread count", "[metrics][weights]") {
  for (const Eigen::Index C : {10, 5000}) {
    const Eigen::Index N = C == 10 ? 500 : 20;
    matrix<float> x = xent_test::random_logits<float>(C, N, 3);
    x(2, 1) = -std::numeric_limits<float>::infinity();
    index_vector t(N);
    for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 9 == 4 ? -100 : (j * 31) % C;
    for (const int threads : {1, 2}) {
      xent::eval_options o;
      o.num_threads = threads;
      o.top_k = 3;
      xent::eval_accumulator plain(o), weighted(o);
      plain.update(x, t);
      weighted.update(x, t, Eigen::VectorXf::Ones(N));
      INFO("C = " << C << ", threads " << threads);
      REQUIRE(plain.state_size() == weighted.state_size());
      for (std::size_t i = 0; i < plain.state_size(); ++i) CHECK(plain.data()[i] == weighted.data()[i]);
      check_same_report(plain.report(), weighted.report());
      CHECK(plain[xent::eval_accumulator::weight_sum] == plain[xent::eval_accumulator::samples]);
      // dim = 1 (classes along the rows), weighted: the same state again.
      xent::eval_options rows = o;
      rows.dim = 1;
      xent::eval_accumulator by_rows(rows);
      const matrix<float> xt = x.transpose();
      by_rows.update(xt, t, Eigen::VectorXd::Ones(N));
      for (std::size_t i = 0; i < plain.state_size(); ++i) CHECK(plain.data()[i] == by_rows.data()[i]);
    }
  }
}

TEMPLATE_TEST_CASE("an integer weight is the sample repeated, weight 0 the sample left out", "[metrics][weights][identity]", float,
                   double) {
  using T = TestType;
  const Eigen::Index C = 23, N = 300;
  const matrix<T> x = xent_test::random_logits<T>(C, N, 3);
  index_vector t(N);
  std::uniform_int_distribution<int> cls(0, int(C) - 1), times(0, 3);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 13 == 0 ? -100 : cls(xent_test::rng());
  Eigen::VectorXd w(N);
  std::vector<Eigen::Index> repeated;
  for (Eigen::Index j = 0; j < N; ++j) w(j) = times(xent_test::rng());
  w(1) = 0;  // and a target out of range there: never checked, as for a masked-out sample
  for (Eigen::Index j = 0; j < N; ++j)
    for (int k = 0; k < int(w(j)); ++k) repeated.push_back(j);
  index_vector t_bad = t;
  t_bad(1) = 1000;
  const Eigen::Index M = Eigen::Index(repeated.size());
  matrix<T> xr(C, M);
  index_vector tr(M);
  for (Eigen::Index i = 0; i < M; ++i) {
    xr.col(i) = x.col(repeated[std::size_t(i)]);
    tr(i) = t(repeated[std::size_t(i)]);
  }
  xent::eval_options o;
  o.bins = 10;
  o.top_k = 4;
  xent::eval_accumulator weighted(o), copies(o);
  weighted.update(x, t_bad, w);
  copies.update(xr, tr);
  const xent::eval_report a = weighted.report(), b = copies.report();
  CHECK(a.weight == double(b.samples));
  // Sums of w x against x added w times: equal up to the rounding of the sums.
  const std::pair<double, double> pairs[] = {{a.nll, b.nll},           {a.nll_stderr, b.nll_stderr}, {a.perplexity, b.perplexity},
                                             {a.accuracy, b.accuracy}, {a.top_k_accuracy, b.top_k_accuracy},
                                             {a.brier, b.brier},       {a.mean_confidence, b.mean_confidence},
                                             {a.ece, b.ece},           {a.mce, b.mce}};
  for (const auto& [got, want] : pairs) CHECK(got == Approx(want).epsilon(1e-12));
  for (std::size_t k = 0; k < a.bins.size(); ++k) {
    CHECK(a.bins[k].weight == double(b.bins[k].count));
    if (b.bins[k].count > 0) CHECK(a.bins[k].confidence == Approx(b.bins[k].confidence).epsilon(1e-12));
  }

  SECTION("weight 0 is the same report as the mask leaving the sample out") {
    Eigen::VectorXd ones_or_zero = (w.array() > 0).template cast<double>();
    index_vector mask = (w.array() > 0).template cast<std::int64_t>();
    xent::eval_accumulator zeroed(o), masked(o);
    zeroed.update(x, t_bad, ones_or_zero);
    masked.update(x, t_bad, mask);
    check_same_report(zeroed.report(), masked.report());
    for (std::size_t i = 0; i < zeroed.state_size(); ++i) CHECK(zeroed.data()[i] == masked.data()[i]);
  }

  SECTION("a non-finite sample of weight 0 does not poison the report") {
    matrix<T> y = x;
    y(0, 5) = std::numeric_limits<T>::quiet_NaN();
    Eigen::VectorXd w5 = Eigen::VectorXd::Ones(N);
    w5(5) = 0;
    xent::eval_accumulator acc(o);
    acc.update(y, t, w5);
    CHECK(acc.report().nonfinite_samples == 0);
    CHECK(std::isfinite(acc.report().nll));
  }
}

TEST_CASE("weighted merges are order-independent and the flat state carries the weights", "[metrics][weights][merge]") {
  const Eigen::Index C = 31, N = 600;
  const matrix<double> x = xent_test::random_logits<double>(C, N, 3);
  index_vector t(N);
  Eigen::VectorXd w(N);
  std::uniform_real_distribution<double> u(0, 2);
  for (Eigen::Index j = 0; j < N; ++j) {
    t(j) = (j * 7) % C;
    w(j) = j % 10 == 0 ? 0 : u(xent_test::rng());
  }
  xent::eval_options o;
  o.bins = 8;
  xent::eval_accumulator whole(o), a(o), b(o);
  whole.update(x, t, w);
  a.update(x.leftCols(250), t.head(250), w.head(250));
  b.update(x.rightCols(350), t.tail(350), w.tail(350));
  const xent::eval_accumulator ab = xent::merge(a, b), ba = xent::merge(b, a);
  REQUIRE(ab.state_size() == xent::eval_accumulator::fields + xent::eval_accumulator::bin_fields * 8);
  CHECK(std::equal(ab.data(), ab.data() + ab.state_size(), ba.data()));
  const xent::eval_report r = ab.report(), one = whole.report();
  CHECK(r.samples == one.samples);
  CHECK(r.samples == N - N / 10);
  CHECK(r.ignored == N / 10);
  CHECK(r.weight == Approx(w.sum()).epsilon(1e-14));
  CHECK(r.nll == Approx(one.nll).epsilon(1e-13));
  CHECK(r.ece == Approx(one.ece).epsilon(1e-12));
  CHECK(ab.data()[xent::eval_accumulator::bin_offset(2) + 3] == Approx(r.bins[2].weight));
}

TEST_CASE("bad weights are named errors, before any logit is read", "[metrics][weights][misuse]") {
  const matrix<float> x = matrix<float>::Zero(4, 3);
  const index_vector t = index_vector::Zero(3);
  xent::eval_accumulator acc;
  const auto with = [&](std::vector<double> v) {
    return [&acc, &x, &t, v] { acc.update(x, t, Eigen::Map<const Eigen::VectorXd>(v.data(), Eigen::Index(v.size()))); };
  };
  constexpr double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const xent_test::misuse table[] = {
      {"too few weights", with({1, 1}), "eval_accumulator::update", "weights", "one entry per sample (3)", "got 2"},
      {"too many weights", with({1, 1, 1, 1}), "eval_accumulator::update", "weights", "one entry per sample (3)", "got 4"},
      {"a negative weight", with({1, -0.5, 1}), "eval_accumulator::update", "weights[1]", "finite and >= 0", "-0.5"},
      {"a NaN weight", with({1, 1, nan}), "eval_accumulator::update", "weights[2]", "finite and >= 0", "nan"},
      {"an infinite weight", with({inf, 1, 1}), "eval_accumulator::update", "weights[0]", "finite and >= 0", "inf"},
  };
  CHECK(xent_test::check_misuse(table) == 5);
  CHECK(acc[xent::eval_accumulator::samples] == 0);
  CHECK(acc[xent::eval_accumulator::ignored] == 0);
}

// ---- sequence_accumulator (include/xent/metrics/sequences.hpp) ----

namespace {

std::vector<std::int64_t> lengths_of(const xent_test::reference_case& c) {
  std::vector<std::int64_t> out;
  for (const long double v : c["sequence_lengths"]) out.push_back(std::int64_t(v));
  return out;
}

xent::sequence_accumulator sequences_of(const xent_test::reference_case& c) {
  const xent::eval_options o = options_of(c);
  return c.has("sequence_length") ? xent::sequence_accumulator(std::int64_t(c["sequence_length"][0]), o)
                                  : xent::sequence_accumulator(lengths_of(c), o);
}

}  // namespace

TEMPLATE_TEST_CASE("per-sequence perplexity matches numpy, in batches that cut sequences anywhere", "[metrics][sequences][reference]",
                   float, double) {
  using T = TestType;
  double worst = 0;
  for (const auto& c : cases()) {
    if (!c.has("sequences")) continue;
    INFO("case " << c.name);
    const matrix<T> x = logits_of<T>(c);
    const index_vector t = targets_of(c);
    const Eigen::VectorXd w = weights_of(c);
    const Eigen::Index N = x.cols();
    // Pieces of 1 to 7 tokens at their positions, added in a shuffled order into three accumulators.
    std::vector<std::pair<Eigen::Index, Eigen::Index>> pieces;
    for (Eigen::Index at = 0, k = 0; at < N; ++k) {
      const Eigen::Index n = std::min<Eigen::Index>(N - at, 1 + (k * 5) % 7);
      pieces.emplace_back(at, n);
      at += n;
    }
    std::shuffle(pieces.begin(), pieces.end(), xent_test::rng());
    std::vector<xent::sequence_accumulator> parts(3, sequences_of(c));
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const auto [at, n] = pieces[i];
      parts[i % 3].update_at(at, x.middleCols(at, n), t.segment(at, n), w.segment(at, n));
    }
    xent::sequence_accumulator acc = xent::merge(xent::merge(parts[2], parts[0]), parts[1]);
    xent::sequence_accumulator whole = sequences_of(c);
    whole.update(x, t, w);
    const xent::sequence_report r = acc.report(), one = whole.report();
    CHECK(r.sequences == std::int64_t(c["sequences"][0]));
    CHECK(r.empty_sequences == std::int64_t(c["empty_sequences"][0]));
    CHECK(r.worst_sequence == std::int64_t(c["sequence_worst"][0]));
    const std::pair<const char*, double> scalars[] = {{"sequence_mean", r.mean_perplexity},
                                                      {"sequence_median", r.median_perplexity},
                                                      {"sequence_max", r.max_perplexity},
                                                      {"sequence_min", r.min_perplexity}};
    for (const auto& [key, got] : scalars) {
      const double e = relative_error(got, double(c[key][0]));
      INFO(key << ": got " << got << ", reference " << double(c[key][0]));
      CHECK(e <= budget<T>());
      worst = std::max(worst, e);
    }
    const std::vector<double> nll = acc.sequence_nll();
    REQUIRE(nll.size() == c["sequence_perplexity"].size());
    for (std::size_t s = 0; s < nll.size(); ++s) CHECK(relative_error(std::exp(nll[s]), double(c["sequence_perplexity"][s])) <= budget<T>());
    // The one-pass accumulator agrees, and the token-pooled report is eval_accumulator's.
    CHECK(one.mean_perplexity == Approx(r.mean_perplexity).epsilon(1e-13));
    CHECK(one.median_perplexity == Approx(r.median_perplexity).epsilon(1e-13));
    CHECK(relative_error(acc.tokens().report().nll, double(c["nll"][0])) <= budget<T>());
    CHECK(acc.tokens_seen() == N);
  }
  std::cout << "per-sequence perplexity, " << (std::is_same_v<T, float> ? "float" : "double") << ": worst error "
            << worst / std::numeric_limits<T>::epsilon() << " eps\n";
}

TEST_CASE("sequences: closed forms, merge order and the unweighted update", "[metrics][sequences]") {
  // Uniform logits over C classes: every sequence has perplexity C exactly (up to a few ulp).
  const Eigen::Index C = 8, T = 4;
  const matrix<double> u = matrix<double>::Zero(C, 12);
  const index_vector t = index_vector::Constant(12, 3);
  xent::sequence_accumulator acc(T);
  acc.update(u, t);
  xent::sequence_report r = acc.report();
  CHECK(r.sequences == 3);
  CHECK(r.mean_perplexity == Approx(8).epsilon(1e-14));
  CHECK(r.max_perplexity == Approx(8).epsilon(1e-14));

  // One sequence made worse: it is the worst, the median stays, the mean moves by (ppl - C) / 3.
  matrix<double> x = u;
  x(0, 5) = 5;  // target 3: sequence 1 (positions 4..7) loses probability
  xent::sequence_accumulator b(T);
  b.update(x, t);
  r = b.report();
  const double p = 1 / (std::exp(5.0) + 7);
  const double ppl1 = std::exp(-(3 * std::log(1.0 / 8) + std::log(p)) / 4);
  CHECK(r.worst_sequence == 1);
  CHECK(r.max_perplexity == Approx(ppl1).epsilon(1e-13));
  CHECK(r.median_perplexity == Approx(8).epsilon(1e-14));
  CHECK(r.min_perplexity == Approx(8).epsilon(1e-14));
  CHECK(r.mean_perplexity == Approx((16 + ppl1) / 3).epsilon(1e-13));

  SECTION("merging in either order gives the same bits") {
    const matrix<double> y = xent_test::random_logits<double>(C, 40, 3);
    index_vector ty(40);
    for (Eigen::Index j = 0; j < 40; ++j) ty(j) = (j * 3) % C;
    xent::sequence_accumulator p(5), q(5);
    p.update_at(0, y.leftCols(17), ty.head(17));
    q.update_at(17, y.rightCols(23), ty.tail(23));
    const xent::sequence_report pq = xent::merge(p, q).report(), qp = xent::merge(q, p).report();
    CHECK(pq.mean_perplexity == qp.mean_perplexity);
    CHECK(pq.median_perplexity == qp.median_perplexity);
    CHECK(pq.sequences == 8);
    // Weights of 1: the same bits as no weights.
    xent::sequence_accumulator plain(5), ones(5);
    plain.update(y, ty);
    ones.update(y, ty, Eigen::VectorXd::Ones(40));
    CHECK(plain.report().mean_perplexity == ones.report().mean_perplexity);
    CHECK(plain.sequence_nll() == ones.sequence_nll());
  }

  SECTION("a non-finite token makes every statistic NaN unless skipped; an all-ignored sequence is empty") {
    matrix<double> z = u;
    z(0, 1) = std::numeric_limits<double>::quiet_NaN();
    index_vector tz = t;
    tz.segment(8, 4).setConstant(-100);
    xent::eval_options o;
    xent::sequence_accumulator poisoned(T, o);
    poisoned.update(z, tz);
    CHECK(std::isnan(poisoned.report().mean_perplexity));
    o.skip_nonfinite = true;
    xent::sequence_accumulator skipped(T, o);
    skipped.update(z, tz);
    const xent::sequence_report s = skipped.report();
    CHECK(s.sequences == 2);
    CHECK(s.empty_sequences == 1);
    CHECK(s.mean_perplexity == Approx(8).epsilon(1e-14));
  }
}

TEST_CASE("sequences: the flat state is the token state then the per-sequence sums and its sum is merge", "[metrics][sequences][merge]") {
  const Eigen::Index C = 6, N = 40;
  const matrix<double> y = xent_test::random_logits<double>(C, N, 11);
  index_vector t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 5) % C;
  Eigen::VectorXd w(N);
  for (Eigen::Index j = 0; j < N; ++j) w(j) = 0.25 * double(j % 5);
  xent::sequence_accumulator p(5), q(5);
  p.update_at(0, y.leftCols(17), t.head(17), w.head(17));
  q.update_at(17, y.rightCols(23), t.tail(23), w.tail(23));
  const std::size_t own = p.tokens().size();
  CHECK(own == xent::eval_accumulator::bin_offset(std::size_t(p.tokens().options().bins)));
  CHECK(p.size() == own + 2 * 4);  // 17 tokens reach 4 sequences of 5
  CHECK(q.size() == own + 2 * 8);
  CHECK(p.data() == p.tokens().data());  // tokens()'s state is the prefix

  // Sequence 0 lies in p alone: its two sums follow the eval entries, (sum w l, sum w).
  double wl = 0, ws = 0;
  for (Eigen::Index j = 0; j < 5; ++j) {
    const double l = std::log(y.col(j).array().exp().sum()) - y(t(j), j);  // -log softmax, directly
    wl += w(j) * l;
    ws += w(j);
  }
  CHECK(p.data()[own] == Approx(wl).epsilon(1e-14));
  CHECK(p.data()[own + 1] == ws);

  // extend_to: both as long as the stream, then the element-wise sum is merge(), bit for bit.
  p.extend_to(N);
  q.extend_to(N);
  REQUIRE(p.size() == q.size());
  CHECK(p.size() == own + 2 * 8);
  xent::sequence_accumulator summed = p;
  for (std::size_t i = 0; i < summed.size(); ++i) summed.data()[i] += q.data()[i];
  const xent::sequence_accumulator merged = xent::merge(p, q);
  CHECK(summed.sequence_nll() == merged.sequence_nll());
  CHECK(summed.report().mean_perplexity == merged.report().mean_perplexity);
  CHECK(summed.tokens().report().nll == merged.tokens().report().nll);

  // Sequences no token reached count as empty, in the report and the flat state alike.
  xent::sequence_accumulator longer = merged;
  longer.extend_to(N + 10);
  CHECK(longer.size() == merged.size() + 4);
  CHECK(longer.report().sequences == merged.report().sequences);
  CHECK(longer.report().empty_sequences == merged.report().empty_sequences + 2);
  CHECK(longer.tokens_seen() == N + 10);
  longer.extend_to(5);  // shorter: nothing changes
  CHECK(longer.tokens_seen() == N + 10);

  // With lengths the state has every sequence from the start.
  const xent::sequence_accumulator given(std::vector<std::int64_t>{3, 4, 5});
  CHECK(given.size() == own + 2 * 3);
}

TEST_CASE("sequences: bad lengths and partial sequences are named errors", "[metrics][sequences][misuse]") {
  const matrix<float> x = matrix<float>::Zero(3, 6);
  const index_vector t = index_vector::Zero(6);
  xent::sequence_accumulator four(4), lengths(std::vector<std::int64_t>{2, 3});
  xent::sequence_accumulator partial(4);
  partial.update_at(0, x, t);  // 6 tokens: a sequence and a half
  const xent_test::misuse table[] = {
      {"sequence_length 0", [] { xent::sequence_accumulator a(0); }, "sequence_accumulator", "sequence_length", "at least 1", "got 0"},
      {"no lengths", [] { xent::sequence_accumulator a(std::vector<std::int64_t>{}); }, "sequence_accumulator", "lengths", "at least one"},
      {"a length 0", [] { xent::sequence_accumulator a(std::vector<std::int64_t>{3, 0}); }, "sequence_accumulator", "lengths[1]",
       "at least 1"},
      {"N not a multiple of T", [&] { four.update(x, t); }, "sequence_accumulator::update", "logits", "multiple of sequence_length (4)",
       "got 6"},
      {"tokens beyond the lengths", [&] { lengths.update(x, t); }, "sequence_accumulator::update", "logits", "total length (5)", "got 6"},
      {"a negative position", [&] { four.update_at(-1, x, t); }, "sequence_accumulator::update", "first", ">= 0", "got -1"},
      {"a report of a partial sequence", [&] { (void)partial.report(); }, "sequence_accumulator::report", "sequence_length",
       "tokens seen (6)", "got 4"},
      {"merging other lengths", [&] { four.merge(lengths); }, "sequence_accumulator::merge", "other", "same sequence_length (4)"},
      {"a bad weight", [&] { four.update(x.leftCols(4), t.head(4), Eigen::VectorXd::Constant(4, -1)); }, "eval_accumulator::update",
       "weights[0]", "finite and >= 0"},
      {"extend_to a negative length", [&] { four.extend_to(-2); }, "sequence_accumulator::extend_to", "tokens", ">= 0", "got -2"},
      {"extend_to past the lengths", [&] { lengths.extend_to(6); }, "sequence_accumulator::extend_to", "tokens", "total length (5)", "got 6"},
  };
  CHECK(xent_test::check_misuse(table) == 11);
  CHECK(four.tokens_seen() == 0);
}
