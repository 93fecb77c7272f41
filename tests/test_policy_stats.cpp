// xent::target_log_prob_and_entropy (losses/policy.hpp): the target's log-probability and the
// entropy in one read, and their gradient. Values and gradients against torch 1.13 float64
// compositions (tests/reference/policy_stats_cases.txt, from
// tests/reference/gen_policy_stats_reference.py); central finite differences; the one-pass claim
// (the same numbers as entropy_from_logits and -cross_entropy called apart); reductions; threads,
// layouts, bf16 and in place; misuse.
//
// Budgets, relative to the inputs' conditioning K = max(1, max |x| / T over the logits below 1e6 in
// magnitude; +-1e30 make one-hot samples, not wide exponents): exp(z - max) of a z rounded to the
// type has a relative error up to |z - max| ulps, in torch as here. A value's error is
// |got - torch| / max(|torch|, K); a gradient's |got - torch| / (K max |torch entry| of the case).

#include "misuse.hpp"
#include "support.hpp"

#include <xent/losses/cross_entropy.hpp>
#include <xent/losses/policy.hpp>
#include <xent/measures/divergence.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <iostream>
#include <limits>
#include <string>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;
using Eigen::Index;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("policy_stats_cases.txt"); }

/// A torch [N, C] row-major list as the matrix of class axis dim: C x N (dim 0) or N x C (dim 1).
template <class T>
matrix<T> logits_of(const std::vector<long double>& v, Index n, Index c, int dim) {
  const matrix<T> m = xent_test::as_matrix<T>(v, c, n);
  return dim == 0 ? m : matrix<T>(m.transpose());
}

template <class T>
vector<T> vector_of(const std::vector<long double>& v) {
  vector<T> out(Index(v.size()));
  for (Index i = 0; i < out.size(); ++i) out(i) = T(v[std::size_t(i)]);
  return out;
}

index_vector targets_of(const xent_test::reference_case& c) {
  index_vector t(Index(c["target"].size()));
  for (Index j = 0; j < t.size(); ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
  return t;
}

double conditioning(const xent_test::reference_case& c) {
  long double largest = 0;
  for (long double v : c["logits"])
    if (std::fabs(v) < 1e6L) largest = std::max(largest, std::fabs(v));
  return std::max(1.0, double(largest / c["T"][0]));
}

struct worst {
  double log_prob = 0, entropy = 0, grad = 0;
  int cases = 0;
};

template <class T>
worst against_torch() {
  worst w;
  for (const auto& c : cases()) {
    ++w.cases;
    const Index n = Index(c["N"][0]), C = c.classes;
    const double k = conditioning(c);
    const index_vector t = targets_of(c);
    const vector<T> a = vector_of<T>(c["grad_log_prob"]), b = vector_of<T>(c["grad_entropy"]);
    long double grad_scale = std::numeric_limits<long double>::min();
    for (long double v : c["grad"])
      if (std::isfinite(double(v))) grad_scale = std::max(grad_scale, std::fabs(v));
    for (int dim = 0; dim < 2; ++dim) {
      INFO(c.name << " dim " << dim);
      xent::log_prob_entropy_options o;
      o.temperature = double(c["T"][0]);
      o.dim = dim;
      const matrix<T> x = logits_of<T>(c["logits"], n, C, dim);
      const auto r = xent::target_log_prob_and_entropy(x, t, o);
      REQUIRE(r.log_prob.per_sample().size() == n);
      for (Index j = 0; j < n; ++j) {
        const long double lp = c["log_prob"][std::size_t(j)], h = c["entropy"][std::size_t(j)];
        const double e_lp = xent_test::error_of(double(r.log_prob.per_sample()(j)), lp, std::max<long double>(std::fabs(lp), k));
        const double e_h = xent_test::error_of(double(r.entropy.per_sample()(j)), h, std::max<long double>(std::fabs(h), k));
        INFO("sample " << j << ": log p " << r.log_prob.per_sample()(j) << " vs " << double(lp) << ", H "
                       << r.entropy.per_sample()(j) << " vs " << double(h));
        CHECK(std::isfinite(e_lp));
        CHECK(std::isfinite(e_h));
        w.log_prob = std::max(w.log_prob, e_lp);
        w.entropy = std::max(w.entropy, e_h);
      }
      matrix<T> g(x.rows(), x.cols());
      xent::target_log_prob_and_entropy_backward(x, t, a, b, o, g);
      const matrix<T> ref = logits_of<T>(c["grad"], n, C, dim);  // only for its layout; compared in long double below
      (void)ref;
      for (Index j = 0; j < n; ++j)
        for (Index kk = 0; kk < C; ++kk) {
          const long double r_g = c["grad"][std::size_t(j * C + kk)];
          const T got = dim == 0 ? g(kk, j) : g(j, kk);
          const double e = xent_test::error_of(double(got), r_g, grad_scale * k);
          INFO("grad sample " << j << " class " << kk << ": " << got << " vs " << double(r_g));
          CHECK(std::isfinite(e));
          w.grad = std::max(w.grad, e);
        }
    }
  }
  return w;
}

/// sum_j (a_j log p_j + b_j H_j) in double, for finite differences.
double objective(const Eigen::MatrixXd& x, const index_vector& t, const Eigen::VectorXd& a, const Eigen::VectorXd& b,
                 const xent::log_prob_entropy_options& o) {
  const auto r = xent::target_log_prob_and_entropy(x, t, o);
  return a.dot(r.log_prob.per_sample()) + b.dot(r.entropy.per_sample());
}

}  // namespace

TEST_CASE("target_log_prob_and_entropy matches torch 1.13 in double", "[policy][reference][torch]") {
  const worst w = against_torch<double>();
  CHECK(w.cases == 41);
  std::cout << "target_log_prob_and_entropy vs torch, double: " << w.cases
            << " cases (x2 class axes); worst error / (epsilon K): log p " << w.log_prob / 0x1p-52 << ", H "
            << w.entropy / 0x1p-52 << ", gradient " << w.grad / 0x1p-52 << "\n";
  CHECK(w.log_prob <= 4 * 0x1p-52);
  CHECK(w.entropy <= 4 * 0x1p-52);
  CHECK(w.grad <= 4 * 0x1p-52);
}

TEST_CASE("target_log_prob_and_entropy matches torch 1.13 in float", "[policy][reference][torch]") {
  const worst w = against_torch<float>();
  std::cout << "target_log_prob_and_entropy vs torch, float: worst error / (epsilon K): log p " << w.log_prob / 0x1p-23
            << ", H " << w.entropy / 0x1p-23 << ", gradient " << w.grad / 0x1p-23 << "\n";
  CHECK(w.log_prob <= 4 * 0x1p-23);
  CHECK(w.entropy <= 4 * 0x1p-23);
  CHECK(w.grad <= 4 * 0x1p-23);
}

TEST_CASE("target_log_prob_and_entropy's gradient matches central differences in double", "[policy][gradient]") {
  for (double temperature : {1.0, 0.3, 4.0}) {
    for (Index C : {3, 40}) {
      const Index N = 5;
      Eigen::MatrixXd x = xent_test::random_logits<double>(C, N, 2);
      index_vector t(N);
      for (Index j = 0; j < N; ++j) t(j) = (3 * j + 1) % C;
      t(2) = -100;
      const Eigen::VectorXd a = Eigen::VectorXd::LinSpaced(N, -1.5, 0.7), b = Eigen::VectorXd::LinSpaced(N, 0.9, -0.4);
      xent::log_prob_entropy_options o;
      o.temperature = temperature;
      Eigen::MatrixXd g(C, N);
      xent::target_log_prob_and_entropy_backward(x, t, a, b, o, g);
      double worst = 0;
      for (Index i = 0; i < x.size(); ++i) {
        const double fd = xent_test::central_difference(x, i, [&](const Eigen::MatrixXd& y) { return objective(y, t, a, b, o); });
        worst = std::max(worst, std::fabs(fd - g.data()[i]) / std::max(1.0, std::fabs(fd)));
      }
      INFO("T " << temperature << " C " << C);
      CHECK(worst < 1e-7);
      CHECK(g.col(2).isZero(0));  // ignored: exactly 0
    }
  }
}

TEST_CASE("one pass gives what entropy_from_logits and -cross_entropy give apart", "[policy][fused]") {
  // The statistics are the same sums in the same order: the values agree to a few ulp (cross_entropy
  // takes C <= 16 in SIMD lanes, whose log may differ by an ulp), the gradient to a few ulp of its scale.
  for (Index C : {5, 33, 5000}) {
    for (float temperature : {1.0f, 0.25f}) {
      const Index N = 7;
      const Eigen::MatrixXf x = xent_test::random_logits<float>(C, N, 3);
      index_vector t(N);
      for (Index j = 0; j < N; ++j) t(j) = (7 * j + 2) % C;
      xent::log_prob_entropy_options o;
      o.temperature = temperature;
      const Eigen::MatrixXf z = x * static_cast<float>(1.0 / temperature);  // the kernel's z = x * (1 / T)
      const auto r = xent::target_log_prob_and_entropy(x, t, o);
      const Eigen::VectorXf h = xent::entropy_from_logits(z);
      xent::cross_entropy_options ce;
      ce.reduction = xent::reduction::none;
      const Eigen::VectorXf nll = xent::cross_entropy(z, t, ce).per_sample();
      INFO("C " << C << " T " << temperature);
      for (Index j = 0; j < N; ++j) {
        CHECK(xent_test::ulps(r.entropy.per_sample()(j), h(j), 1) <= 2);
        CHECK(xent_test::ulps(r.log_prob.per_sample()(j), -(long double)nll(j), 1) <= 2);
      }
      // d/dx of a log p + b H = (a (onehot - p) - b p (log p + H)) / T: -a ce's gradient + b entropy's, over T.
      const Eigen::VectorXf a = Eigen::VectorXf::LinSpaced(N, -1, 1), b = Eigen::VectorXf::LinSpaced(N, 0.5, -2);
      Eigen::MatrixXf g(C, N), g_ce(C, N), g_h(C, N);
      xent::target_log_prob_and_entropy_backward(x, t, a, b, o, g);
      xent::cross_entropy_backward(z, t, Eigen::VectorXf(-a), ce, g_ce);
      xent::entropy_from_logits_backward(z, b, {}, g_h);
      const Eigen::MatrixXf apart = (g_ce + g_h) * static_cast<float>(1.0 / temperature);
      CHECK((g - apart).cwiseAbs().maxCoeff() <= 8 * 0x1p-23 * apart.cwiseAbs().maxCoeff());
    }
  }
}

TEST_CASE("a confident sample keeps its gradient's digits", "[policy][gradient][accuracy]") {
  // p_t = 1 - 2e-13: 1 - p_t formed as 1 - p would keep 1 digit in double (and none in float); from
  // the other classes' mass it keeps all of them. Exact: d log p_t / d x_t = 1 - p_t = 4 e^-30 / S.
  Eigen::MatrixXd x = Eigen::MatrixXd::Zero(5, 1);
  x(2, 0) = 30;
  const index_vector t = index_vector::Constant(1, 2);
  Eigen::MatrixXd g(5, 1);
  xent::target_log_prob_and_entropy_backward(x, t, 1.0, 0.0, xent::log_prob_entropy_options{}, g);
  const long double e = std::exp(-30.0L), exact = 4 * e / (1 + 4 * e);
  CHECK(xent_test::ulps(g(2, 0), exact) <= 4);
  Eigen::MatrixXf xf = x.cast<float>(), gf(5, 1);
  xent::target_log_prob_and_entropy_backward(xf, t, 1.0f, 0.0f, xent::log_prob_entropy_options{}, gf);
  CHECK(xent_test::ulps(gf(2, 0), exact) <= 8);
  // The values: log p = -log S and H = log S + 30 * 4e / S carry S = 1 + 4e's rounding (an ulp of
  // 1 absolute: S has no more digits of 4e, here or in torch), and no more.
  const long double h = std::log1p(4 * e) + 30 * 4 * e / (1 + 4 * e), lp = -std::log1p(4 * e);
  const auto rd = xent::target_log_prob_and_entropy(x, t);
  CHECK(std::fabs(rd.entropy.per_sample()(0) - h) <= 0x1p-52L);
  CHECK(std::fabs(rd.log_prob.per_sample()(0) - lp) <= 0x1p-52L);
  const auto rf = xent::target_log_prob_and_entropy(xf, t);
  CHECK(std::fabs(rf.entropy.per_sample()(0) - h) <= 0x1p-23L);
  CHECK(std::fabs(rf.log_prob.per_sample()(0) - lp) <= 0x1p-23L);
}

TEST_CASE("target_log_prob_and_entropy's reductions follow the per-sample values", "[policy][reduction]") {
  const Index C = 11, N = 9;
  const Eigen::MatrixXf x = xent_test::random_logits<float>(C, N, 2);
  index_vector t(N);
  for (Index j = 0; j < N; ++j) t(j) = (5 * j) % C;
  t(3) = -100;
  t(6) = -100;
  xent::log_prob_entropy_options o;
  o.temperature = 0.7;
  const auto none = xent::target_log_prob_and_entropy(x, t, o);
  CHECK(none.log_prob.per_sample()(3) == 0);
  CHECK(none.entropy.per_sample()(6) == 0);
  CHECK(none.log_prob.denominator() == 7);
  long double lp = 0, h = 0;
  for (Index j = 0; j < N; ++j) lp += none.log_prob.per_sample()(j), h += none.entropy.per_sample()(j);
  o.reduction = xent::reduction::sum;
  const auto sum = xent::target_log_prob_and_entropy(x, t, o);
  CHECK(xent_test::ulps(sum.log_prob.value(), lp) <= 1);  // compensated in double, then rounded once
  CHECK(xent_test::ulps(sum.entropy.value(), h) <= 1);
  o.reduction = xent::reduction::mean;
  const auto mean = xent::target_log_prob_and_entropy(x, t, o);
  CHECK(xent_test::ulps(mean.log_prob.value(), lp / 7) <= 1);
  CHECK(xent_test::ulps(mean.entropy.value(), h / 7) <= 1);
  CHECK(mean.entropy.denominator() == 7);

  // Under mean a number is divided by the kept samples: the same bits as none with that per sample.
  Eigen::MatrixXf g_mean(C, N), g_none(C, N), g_with(C, N);
  xent::target_log_prob_and_entropy_backward(x, t, -1.0, -0.01, o, g_mean);
  auto none_o = o;
  none_o.reduction = xent::reduction::none;
  xent::target_log_prob_and_entropy_backward(x, t, Eigen::VectorXf::Constant(N, float(-1.0 / 7)), float(-0.01 / 7), none_o,
                                             g_none);
  CHECK(g_mean == g_none);
  const auto with = xent::target_log_prob_and_entropy_with_grad(x, t, o, -1.0, -0.01, g_with);
  CHECK(g_with == g_mean);
  CHECK(with.log_prob.value() == mean.log_prob.value());
  CHECK(with.entropy.value() == mean.entropy.value());

  // Every sample ignored: mean is 0 / 0 = NaN, as torch's.
  const auto all_ignored = xent::target_log_prob_and_entropy(x, index_vector::Constant(N, -100), o);
  CHECK(std::isnan(all_ignored.log_prob.value()));
  CHECK(all_ignored.log_prob.denominator() == 0);
}

TEST_CASE("target_log_prob_and_entropy: same bits for any thread count, layout, bf16 widening and in place",
          "[policy][threads]") {
  // Few samples, many classes (above 2^16 logits, where a second thread is taken): the threads split
  // each sample's chunks.
  const Index C = 40000, N = 3;
  const Eigen::MatrixXf x = xent_test::random_logits<float>(C, N, 4);
  index_vector t(N);
  t << 5, 39999, 17;
  const Eigen::VectorXf a(Eigen::Vector3f(-1, 0.5, 2)), b(Eigen::Vector3f(0.1f, -0.2f, 0.3f));
  xent::log_prob_entropy_options o;
  o.temperature = 1.5;
  o.num_threads = 1;
  const auto one = xent::target_log_prob_and_entropy(x, t, o);
  Eigen::MatrixXf g1(C, N);
  xent::target_log_prob_and_entropy_backward(x, t, a, b, o, g1);
  o.num_threads = 2;
  const auto two = xent::target_log_prob_and_entropy(x, t, o);
  Eigen::MatrixXf g2(C, N);
  xent::target_log_prob_and_entropy_backward(x, t, a, b, o, g2);
  CHECK(one.log_prob.per_sample() == two.log_prob.per_sample());
  CHECK(one.entropy.per_sample() == two.entropy.per_sample());
  CHECK(g1 == g2);

  // N x C (dim 1), strided through the class axis.
  auto o1 = o;
  o1.dim = 1;
  const Eigen::MatrixXf xt = x.transpose();
  const auto rows = xent::target_log_prob_and_entropy(xt, t, o1);
  Eigen::MatrixXf gt(N, C);
  xent::target_log_prob_and_entropy_backward(xt, t, a, b, o1, gt);
  CHECK(rows.log_prob.per_sample() == one.log_prob.per_sample());
  CHECK(rows.entropy.per_sample() == one.entropy.per_sample());
  CHECK(gt.transpose() == g1);

  // In place: the gradient over the logits' own storage.
  Eigen::MatrixXf y = x;
  const auto in_place = xent::target_log_prob_and_entropy_with_grad(y, t, o, 1.0, 1.0, y);
  Eigen::MatrixXf g_ones(C, N);
  xent::target_log_prob_and_entropy_backward(x, t, 1.0f, 1.0f, o, g_ones);
  CHECK(y == g_ones);
  CHECK(in_place.entropy.per_sample() == one.entropy.per_sample());

  // bf16 logits are widened to float: the float results of the same values.
  const Eigen::Matrix<Eigen::bfloat16, Eigen::Dynamic, Eigen::Dynamic> xb = x.cast<Eigen::bfloat16>();
  const Eigen::MatrixXf xw = xb.cast<float>();
  const auto rb = xent::target_log_prob_and_entropy(xb, t, o);
  const auto rw = xent::target_log_prob_and_entropy(xw, t, o);
  CHECK(rb.log_prob.per_sample() == rw.log_prob.per_sample());
  CHECK(rb.entropy.per_sample() == rw.entropy.per_sample());
  const Eigen::Matrix<Eigen::half, Eigen::Dynamic, Eigen::Dynamic> xh = x.cast<Eigen::half>();
  const auto rh = xent::target_log_prob_and_entropy(xh, t, o);
  const auto rhw = xent::target_log_prob_and_entropy(Eigen::MatrixXf(xh.cast<float>()), t, o);
  CHECK(rh.log_prob.per_sample() == rhw.log_prob.per_sample());
  CHECK(rh.entropy.per_sample() == rhw.entropy.per_sample());
  Eigen::Matrix<Eigen::half, Eigen::Dynamic, Eigen::Dynamic> gh(C, N);
  Eigen::MatrixXf ghw(C, N);
  xent::target_log_prob_and_entropy_backward(xh, t, a, b, o, gh);
  xent::target_log_prob_and_entropy_backward(Eigen::MatrixXf(xh.cast<float>()), t, a, b, o, ghw);
  CHECK(gh.cast<float>() == ghw.cast<Eigen::half>().cast<float>());  // formed in float, narrowed once
}

TEST_CASE("bad input to target_log_prob_and_entropy throws a message naming it", "[policy][errors]") {
  const Eigen::MatrixXf x = Eigen::MatrixXf::Random(4, 3);
  const index_vector t = index_vector::Constant(3, 1);
  index_vector out_of_range = t;
  out_of_range(2) = 4;
  auto with = [](auto f) {
    xent::log_prob_entropy_options o;
    f(o);
    return o;
  };
  const auto t0 = with([](auto& o) { o.temperature = 0; });
  const auto tnan = with([](auto& o) { o.temperature = std::nan(""); });
  const auto tinf = with([](auto& o) { o.temperature = HUGE_VAL; });
  const auto batchmean = with([](auto& o) { o.reduction = xent::reduction::batchmean; });
  const auto cast = with([](auto& o) { o.reduction = static_cast<xent::reduction>(9); });
  const auto dim2 = with([](auto& o) { o.dim = 2; });
  const auto threads = with([](auto& o) { o.num_threads = -1; });
  const auto mean = with([](auto& o) { o.reduction = xent::reduction::mean; });
  const xent::log_prob_entropy_options none;
  Eigen::MatrixXf g(4, 3), wrong(3, 4);
  const Eigen::VectorXf three = Eigen::VectorXf::Ones(3), four = Eigen::VectorXf::Ones(4);
  using xent_test::misuse;
  const misuse cases[] = {
      {"targets length", [&] { (void)xent::target_log_prob_and_entropy(x, index_vector::Zero(4)); },
       "target_log_prob_and_entropy", "targets", "one entry per sample (3)", "but got 4"},
      {"target out of range", [&] { (void)xent::target_log_prob_and_entropy(x, out_of_range); }, "target_log_prob_and_entropy",
       "target[2]", "[0, 4)", "but got 4"},
      {"temperature 0", [&] { (void)xent::target_log_prob_and_entropy(x, t, t0); }, "target_log_prob_and_entropy",
       "temperature", "finite and > 0", "but got 0"},
      {"temperature nan", [&] { (void)xent::target_log_prob_and_entropy(x, t, tnan); }, "target_log_prob_and_entropy",
       "temperature", "but got nan"},
      {"temperature inf", [&] { xent::target_log_prob_and_entropy_backward(x, t, 1.0, 1.0, tinf, g); },
       "target_log_prob_and_entropy_backward", "temperature", "but got inf"},
      {"batchmean", [&] { (void)xent::target_log_prob_and_entropy(x, t, batchmean); }, "target_log_prob_and_entropy",
       "reduction", "batchmean is kl_div's only"},
      {"cast reduction", [&] { (void)xent::target_log_prob_and_entropy_with_grad(x, t, cast, 1, 1, g); },
       "target_log_prob_and_entropy_with_grad", "reduction", "but got 9"},
      {"dim 2", [&] { (void)xent::target_log_prob_and_entropy(x, t, dim2); }, "target_log_prob_and_entropy", "dim", "but got 2"},
      {"num_threads", [&] { (void)xent::target_log_prob_and_entropy(x, t, threads); }, "target_log_prob_and_entropy",
       "num_threads", "but got -1"},
      {"empty logits", [&] { (void)xent::target_log_prob_and_entropy(Eigen::MatrixXf(0, 3), t); },
       "target_log_prob_and_entropy", "logits", "must not be empty"},
      {"grad_x shape", [&] { xent::target_log_prob_and_entropy_backward(x, t, three, three, none, wrong); },
       "target_log_prob_and_entropy_backward", "grad_x", "4 x 3", "3 x 4"},
      {"with_grad grad_x shape", [&] { (void)xent::target_log_prob_and_entropy_with_grad(x, t, none, 1, 1, wrong); },
       "target_log_prob_and_entropy_with_grad", "grad_x", "4 x 3"},
      {"grad_log_prob length", [&] { xent::target_log_prob_and_entropy_backward(x, t, four, 1.0f, none, g); },
       "target_log_prob_and_entropy_backward", "grad_log_prob", "one entry per sample (3)"},
      {"grad_entropy length", [&] { xent::target_log_prob_and_entropy_backward(x, t, three, four, none, g); },
       "target_log_prob_and_entropy_backward", "grad_entropy", "one entry per sample (3)"},
      {"vector under mean", [&] { xent::target_log_prob_and_entropy_backward(x, t, 1.0f, three, mean, g); },
       "target_log_prob_and_entropy_backward", "grad_entropy", "must be a number for reduction mean"},
      {"backward target out of range", [&] { xent::target_log_prob_and_entropy_backward(x, out_of_range, 1, 1, none, g); },
       "target_log_prob_and_entropy_backward", "target[2]", "[0, 4)"},
  };
  CHECK(xent_test::check_misuse(cases) == int(sizeof(cases) / sizeof(cases[0])));
}
