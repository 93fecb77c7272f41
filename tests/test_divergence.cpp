// The information measures (xent/measures/divergence.hpp): torch 1.13 compositions
// (tests/reference/binary_cases.txt), the identities between the measures, exact special values,
// and misuse.

#include "binary_reference.hpp"
#include "misuse.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <string>

namespace {

using namespace xent_test;
using Eigen::Index;

template <class T>
dense<T> run_measure(const binary_case& c, int dim, const dense<T>& p) {
  xent::measure_options o;
  o.dim = dim;
  if (c["base"][0] != 0) o.base = double(c["base"][0]);
  if (c.tag == "entropy") return xent::entropy(p, o);
  if (c.tag == "entropy_from_logits") return xent::entropy_from_logits(p, o);
  const dense<T> q = as_dim_matrix<T>(c["target"], c.n(), c.c(), dim);
  if (c.tag == "cross_entropy_between") return xent::cross_entropy_between(p, q, o);
  if (c.tag == "kl_divergence") return xent::kl_divergence(p, q, o);
  REQUIRE(c.tag == "js_divergence");
  return xent::js_divergence(p, q, o);
}

template <class T>
tally check_measure_cases(tolerance tol) {
  tally t;
  for (const auto& c : binary_cases()) {
    if (c.has("grad")) continue;  // the losses' cases (test_binary.cpp, test_kl_div.cpp)
    ++t.cases;
    for (int dim = 0; dim < 2; ++dim) {
      const dense<T> x = as_dim_matrix<T>(c["input"], c.n(), c.c(), dim);
      const dense<T> value = run_measure<T>(c, dim, x);
      compare("value", value, as_dim_matrix<T>(c["value"], c.n(), 1, 1), tol, t.worst_value, t,
              c.name + " dim " + std::to_string(dim));
    }
  }
  return t;
}

}  // namespace

TEST_CASE("the measures match torch 1.13 in double", "[measures][reference][torch]") {
  const tolerance tol{1e-12, 1e-14};
  const tally t = check_measure_cases<double>(tol);
  CHECK(t.cases == 46);
  std::cout << "measures vs torch, double: " << t.cases << " cases (x2 class axes), " << t.values
            << " values; worst relative error (floor " << tol.abs / tol.rel << "): " << t.worst_value << "\n";
}

TEST_CASE("the measures match torch 1.13 in float", "[measures][reference][torch]") {
  const tolerance tol{2e-6, 2e-6};
  const tally t = check_measure_cases<float>(tol);
  std::cout << "measures vs torch, float: " << t.cases << " cases, " << t.values << " values; worst relative error (floor 1): "
            << t.worst_value << "\n";
}

// ---------------------------------------------------------------------------------------------
// Identities between the measures, on random normalised distributions (double).

TEST_CASE("information identities hold", "[measures]") {
  for (int trial = 0; trial < 20; ++trial) {
    const Index C = 2 + trial, N = 6;
    Eigen::MatrixXd p = xent::softmax(random_logits<double>(C, N, 2));
    const Eigen::MatrixXd q = xent::softmax(random_logits<double>(C, N, 2));
    p(0, 0) = 0;  // a zero: 0 log 0 = 0
    p.col(0) /= p.col(0).sum();
    const Eigen::VectorXd h = xent::entropy(p), hpq = xent::cross_entropy_between(p, q), kl = xent::kl_divergence(p, q),
                          js = xent::js_divergence(p, q), js_bits = xent::js_divergence(p, q, {0, xent::bits}),
                          h_bits = xent::entropy(p, {0, 2.0});
    for (Index j = 0; j < N; ++j) {
      INFO("C " << C << " sample " << j);
      CHECK(hpq(j) == Approx(h(j) + kl(j)).epsilon(1e-12));
      CHECK(kl(j) >= 0);
      CHECK(js(j) >= 0);
      CHECK(js(j) <= std::log(2.0) + 1e-15);
      CHECK(js_bits(j) <= 1 + 1e-15);
      CHECK(h_bits(j) == Approx(h(j) / std::log(2.0)).epsilon(1e-14));
      CHECK(xent::entropy(p, {0, 10.0})(j) == Approx(h(j) / std::log(10.0)).epsilon(1e-14));
    }
    // The entropy of softmax(x) from logits equals the entropy of the probabilities.
    const Eigen::MatrixXd x = random_logits<double>(C, N, 3);
    const Eigen::VectorXd hx = xent::entropy_from_logits(x), hs = xent::entropy(xent::softmax(x));
    for (Index j = 0; j < N; ++j) CHECK(hx(j) == Approx(hs(j)).epsilon(1e-12).margin(1e-15));
  }
  // Exact special values: a point mass has no entropy; disjoint supports have JS = ln 2 and infinite KL.
  const Eigen::Vector2d a(1, 0), b(0, 1);
  CHECK(xent::entropy(a)(0) == 0);
  CHECK(xent::js_divergence(a, b)(0) == Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(xent::js_divergence(a, b, {0, xent::bits})(0) == Approx(1).epsilon(1e-15));
  CHECK(std::isinf(xent::kl_divergence(a, b)(0)));
  CHECK(xent::entropy(Eigen::Vector4d::Constant(0.25))(0) == Approx(std::log(4.0)).epsilon(1e-15));
}

// ---------------------------------------------------------------------------------------------
// The engine's sums against a long double scalar reference, per term (float: ulp budgets at
// adversarial points; any size: a 10^7-class sample as accurate as a short one).

namespace {

long double ld_xlogy(long double x, long double y) { return x == 0 ? 0.0L : x * std::log(y); }

/// The measure of one sample, in long double, the definition written out.
template <class T>
long double reference_measure(const std::string& m, const T* p, const T* q, Index n) {
  long double s = 0;
  for (Index k = 0; k < n; ++k) {
    const long double a = p[k], b = q[k], mid = (a + b) / 2;
    if (m == "entropy") s -= ld_xlogy(a, a);
    if (m == "cross_entropy_between") s -= ld_xlogy(a, b);
    // Close to each other, log1p of a - b (exact in long double for float and double inputs) over
    // b keeps the log ratio exact to long double's precision; far apart, the two logs are.
    if (m == "kl_divergence")
      s += a == 0 ? 0.0L : (2 * a >= b && 2 * b >= a) ? a * std::log1p((a - b) / b) : a * (std::log(a) - std::log(b));
    if (m == "js_divergence") s += (ld_xlogy(a, a / mid) + ld_xlogy(b, b / mid)) / 2;
  }
  return s;
}

template <class P>
Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1> measure_by_name(const std::string& m, const P& p, const P& q,
                                                                     const xent::measure_options& o = {}) {
  if (m == "entropy") return xent::entropy(p, o);
  if (m == "cross_entropy_between") return xent::cross_entropy_between(p, q, o);
  if (m == "kl_divergence") return xent::kl_divergence(p, q, o);
  return xent::js_divergence(p, q, o);
}

const char* const measure_names[] = {"entropy", "cross_entropy_between", "kl_divergence", "js_divergence"};

}  // namespace

TEST_CASE("each measure's term is within 4 ulp at adversarial points, float and double", "[measures][accuracy]") {
  // One class per sample: the measure is one term, so its error is the term's own. p and q over
  // 0, denormals, 1e-30 .. 1, values above 1 (taken as given) and pairs close to each other.
  const float points[] = {0.0f, 1e-45f, 3e-42f, 1e-38f, 1e-30f, 1e-12f, 1e-6f, 0.01f, 0.25f, 0.49999997f, 0.5f,
                          0.75f, 0.99999994f, 1.0f, 1.0000001f, 3.0f, 1e20f};
  double worst_float = 0, worst_double = 0;
  for (const char* m : measure_names) {
    for (const float a : points)
      for (const float b : points) {
        const long double exact_f = reference_measure<float>(m, &a, &b, 1);
        if (!std::isfinite(double(exact_f))) continue;
        Eigen::Matrix<float, 1, 1> pf, qf;
        pf << a;
        qf << b;
        const float got_f = measure_by_name(m, Eigen::MatrixXf(pf), Eigen::MatrixXf(qf))(0);
        // The ulp at the term's magnitude, or at the smallest normal number where the term is a
        // denormal. JS's term is a difference of its two parts, p log(p / m) and q log(q / m) (of
        // opposite signs): its budget is in ulps of their magnitudes' mean, as kl_div's is.
        const long double mid = (static_cast<long double>(a) + b) / 2;
        const long double js_scale = std::string(m) == "js_divergence"
                                         ? (std::fabs(ld_xlogy(a, a / mid)) + std::fabs(ld_xlogy(b, b / mid))) / 2
                                         : 0.0L;
        const double e_f = ulps(got_f, exact_f, std::max<long double>(js_scale, std::numeric_limits<float>::min()));
        INFO(m << " p = " << a << " q = " << b << " got " << got_f << " exact " << double(exact_f));
        CHECK(e_f <= 4);
        worst_float = std::max(worst_float, e_f);
        const double ad = a, bd = b;
        const long double exact_d = reference_measure<double>(m, &ad, &bd, 1);
        Eigen::MatrixXd pd(1, 1), qd(1, 1);
        pd << ad;
        qd << bd;
        const double e_d = ulps(measure_by_name(m, pd, qd)(0), exact_d, std::max<long double>(js_scale, std::numeric_limits<double>::min()));
        CHECK(e_d <= 4);
        worst_double = std::max(worst_double, e_d);
      }
  }
  std::cout << "measures, one term at adversarial points: worst " << worst_float << " ulp (float), " << worst_double
            << " ulp (double)\n";
}

TEST_CASE("a measure over 10^7 float classes is as accurate as over 10", "[measures][accuracy]") {
  // Two samples of 5e6 classes each: the sum of 10^7 terms within 1e-6 relative of the exact one.
  const Index C = 5000000, N = 2;
  Eigen::MatrixXf p(C, N), q(C, N);
  std::mt19937_64 g(7);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (Index i = 0; i < p.size(); ++i) p(i) = u(g) / float(C), q(i) = u(g) / float(C);
  double worst = 0;
  for (const char* m : measure_names) {
    const Eigen::VectorXf got = measure_by_name(m, p, q);
    for (Index j = 0; j < N; ++j) {
      const long double exact = reference_measure<float>(m, p.col(j).data(), q.col(j).data(), C);
      const double rel = double(std::fabs(got(j) - exact) / std::fabs(exact));
      INFO(m << " sample " << j << " got " << got(j) << " exact " << double(exact));
      CHECK(rel < 1e-6);
      worst = std::max(worst, rel);
    }
  }
  std::cout << "measures over 5e6 float classes per sample: worst relative error " << worst << "\n";
}

TEST_CASE("the measures' gradients match finite differences and their closed forms", "[measures][gradient]") {
  const Index C = 23, N = 4;
  for (int dim = 0; dim < 2; ++dim)
    for (const double base : {xent::nats, xent::bits}) {
      Eigen::MatrixXd p = xent::softmax(random_logits<double>(C, N, 2)), q = xent::softmax(random_logits<double>(C, N, 2));
      p(2, 1) = 0;  // a zero in p: d/dq = 0 there, and the terms stay 0
      if (dim == 1) p.transposeInPlace(), q.transposeInPlace();
      const xent::measure_options o{dim, base, 1};
      const Eigen::VectorXd w = Eigen::VectorXd::LinSpaced(N, 0.5, 2.0);  // one upstream value per sample
      for (const char* m : measure_names) {
        const std::string name = m;
        Eigen::MatrixXd gp(p.rows(), p.cols()), gq(p.rows(), p.cols());
        gq.setConstant(7);
        if (name == "entropy") {
          xent::entropy_backward(p, w, o, gp);
        } else if (name == "cross_entropy_between") {
          xent::cross_entropy_between_backward(p, q, w, o, gp, gq);
        } else if (name == "kl_divergence") {
          xent::kl_divergence_backward(p, q, w, o, gp, gq);
        } else {
          xent::js_divergence_backward(p, q, w, o, gp, gq);
        }
        auto objective = [&](const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) { return w.dot(measure_by_name(name, a, b, o)); };
        for (Index i = 0; i < p.size(); ++i) {
          if (p(i) == 0) continue;  // the derivative w.r.t. p is infinite there (d/dp p log p at 0)
          INFO(name << " dim " << dim << " base " << base << " element " << i);
          for (int which = 0; which < (name == "entropy" ? 1 : 2); ++which) {
            // A step relative to the entry: the terms' third derivatives grow as 1 / p^2.
            const double eps = 1e-4 * (which == 0 ? p(i) : q(i));
            Eigen::MatrixXd up = p, down = p, bu = q, bd = q;
            (which == 0 ? up : bu)(i) += eps;
            (which == 0 ? down : bd)(i) -= eps;
            const double fd = (objective(up, bu) - objective(down, bd)) / (2 * eps);
            CHECK((which == 0 ? gp : gq)(i) == Approx(fd).epsilon(1e-5).margin(1e-8));
          }
        }
        if (name != "entropy") {  // where p = 0: d/dq = 0 exactly
          const Index zero = dim == 0 ? 2 + 1 * C : 1 + 2 * N;
          CHECK(p(zero) == 0);
          if (name != "js_divergence") CHECK(gq(zero) == 0);
        }
        // with_grad: the same gradient for an upstream of 1, and the forward's values.
        Eigen::MatrixXd gp1(p.rows(), p.cols()), gq1(p.rows(), p.cols()), gp_ref(p.rows(), p.cols()), gq_ref(p.rows(), p.cols());
        Eigen::VectorXd values;
        if (name == "entropy") {
          values = xent::entropy_with_grad(p, o, gp1);
          xent::entropy_backward(p, 1.0, o, gp_ref);
        } else if (name == "cross_entropy_between") {
          values = xent::cross_entropy_between_with_grad(p, q, o, gp1, gq1);
          xent::cross_entropy_between_backward(p, q, 1.0, o, gp_ref, gq_ref);
        } else if (name == "kl_divergence") {
          values = xent::kl_divergence_with_grad(p, q, o, gp1, gq1);
          xent::kl_divergence_backward(p, q, 1.0, o, gp_ref, gq_ref);
        } else {
          values = xent::js_divergence_with_grad(p, q, o, gp1, gq1);
          xent::js_divergence_backward(p, q, 1.0, o, gp_ref, gq_ref);
        }
        CHECK(values == measure_by_name(name, p, q, o));
        CHECK(gp1 == gp_ref);
        if (name != "entropy") CHECK(gq1 == gq_ref);
      }
    }
}

TEST_CASE("the measures' gradients in float are within a few ulp of their closed forms", "[measures][gradient][accuracy]") {
  const Index C = 50, N = 8;
  const Eigen::MatrixXf p = xent::softmax(random_logits<float>(C, N, 4)), q = xent::softmax(random_logits<float>(C, N, 4));
  Eigen::MatrixXf gp(C, N), gq(C, N);
  double worst = 0;
  for (const char* m : measure_names) {
    const std::string name = m;
    if (name == "entropy") xent::entropy_backward(p, 1.0f, {}, gp);
    if (name == "cross_entropy_between") xent::cross_entropy_between_backward(p, q, 1.0f, {}, gp, gq);
    if (name == "kl_divergence") xent::kl_divergence_backward(p, q, 1.0f, {}, gp, gq);
    if (name == "js_divergence") xent::js_divergence_backward(p, q, 1.0f, {}, gp, gq);
    for (Index i = 0; i < p.size(); ++i) {
      const long double a = p(i), b = q(i), mid = (a + b) / 2;
      long double dp = 0, dq = 0;
      if (name == "entropy") dp = -(std::log(a) + 1);
      if (name == "cross_entropy_between") dp = -std::log(b), dq = -a / b;
      if (name == "kl_divergence") dp = std::log(a) - std::log(b) + 1, dq = -a / b;
      if (name == "js_divergence") dp = std::log(a / mid) / 2, dq = std::log(b / mid) / 2;
      // The logs of a ratio near 1 are held to the ulp of 1 (the ratio's own rounding).
      const double ep = ulps(gp(i), dp, 1), eq = name == "entropy" ? 0 : ulps(gq(i), dq, name == "js_divergence" ? 1 : 0);
      INFO(name << " element " << i << " p " << p(i) << " q " << q(i));
      CHECK(ep <= 4);
      CHECK(eq <= 4);
      worst = std::max({worst, ep, eq});
    }
  }
  std::cout << "measures' gradients, float: worst " << worst << " ulp\n";
}

TEST_CASE("the measures are the same bits for any thread count, and take strided and expression inputs", "[measures][threads]") {
  const Index C = 70000, N = 3;  // few samples, many classes: the threads share each sample's chunks
  const Eigen::MatrixXf p = xent::softmax(random_logits<float>(C, N, 3)), q = xent::softmax(random_logits<float>(C, N, 3));
  for (const char* m : measure_names) {
    INFO(m);
    xent::measure_options one, two;
    one.num_threads = 1;
    two.num_threads = 2;
    const Eigen::VectorXf a = measure_by_name(m, p, q, one), b = measure_by_name(m, p, q, two);
    CHECK(a == b);
    // The class axis along the rows of a row-major copy: the same values up to the summation order.
    xent::measure_options rows = one;
    rows.dim = 1;
    const Eigen::MatrixXf pt = p.transpose(), qt = q.transpose();
    const Eigen::VectorXf c = measure_by_name(m, pt, qt, rows);
    for (Index j = 0; j < N; ++j) CHECK(c(j) == Approx(a(j)).epsilon(1e-5));
  }
  // An expression (evaluated once) and a Map with an outer stride.
  Eigen::MatrixXd big = xent::softmax(random_logits<double>(9, 4, 2));
  const Eigen::VectorXd direct = xent::entropy(Eigen::MatrixXd(big.topRows(9)));
  CHECK(xent::entropy(big * 1.0)(0) == Approx(direct(0)).epsilon(1e-15));
}

TEST_CASE("empty gradient buffers are skipped and entropy's gradient may be written in place", "[measures][gradient]") {
  const Eigen::MatrixXd p = xent::softmax(random_logits<double>(6, 3, 2)), q = xent::softmax(random_logits<double>(6, 3, 2));
  Eigen::MatrixXd gp(6, 3), gq(6, 3), none;
  xent::kl_divergence_with_grad(p, q, {}, gp, gq);
  Eigen::MatrixXd only_q(6, 3);
  xent::kl_divergence_with_grad(p, q, {}, none, only_q);
  CHECK(only_q == gq);
  Eigen::MatrixXd in_place = p, g(6, 3);
  xent::entropy_backward(p, 2.0, {}, g);
  xent::entropy_backward(in_place, 2.0, {}, in_place);
  CHECK(in_place == g);
  // Exact values: H(p)'s gradient at a uniform p is -(log(1/C) + 1) = log C - 1.
  Eigen::MatrixXd u = Eigen::MatrixXd::Constant(4, 1, 0.25), gu(4, 1);
  xent::entropy_backward(u, 1.0, {}, gu);
  CHECK(gu(0) == Approx(std::log(4.0) - 1).epsilon(1e-15));
  // The entropy of logits: backward with a per-sample upstream is the with_grad gradient scaled per sample.
  const Eigen::MatrixXd x = random_logits<double>(6, 3, 2);
  Eigen::MatrixXd gx1(6, 3), gxw(6, 3);
  (void)xent::entropy_from_logits_with_grad(x, {}, gx1);
  xent::entropy_from_logits_backward(x, Eigen::Vector3d(1, 2, -3), {}, gxw);
  for (Index j = 0; j < 3; ++j) CHECK(gxw.col(j).isApprox(gx1.col(j) * double(j == 0 ? 1 : j == 1 ? 2 : -3), 1e-15));
}

TEST_CASE("entropy_from_logits: masked classes add nothing, in the packet loop too", "[measures][masks]") {
  // Regression: the packet exp of a sum clamps -inf to a tiny nonzero e, and e times the held
  // -inf difference added a term of order 1 to the moment where C reached the packet loop.
  auto check = [](auto zero) {
    using T = decltype(zero);
    for (Index C : {9, 64, 300, 5000}) {
      dense<T> x = random_logits<T>(C, 2, 3);
      std::vector<T> live;
      for (Index k = 0; k < C; ++k) {
        if (k % 3 == 1) x(k, 0) = -std::numeric_limits<T>::infinity();
        else live.push_back(x(k, 0));
      }
      const Eigen::Map<const dense<T>> compact(live.data(), Index(live.size()), 1);
      const T masked = xent::entropy_from_logits(x)(0), plain = xent::entropy_from_logits(compact)(0);
      INFO("C " << C << ": " << masked << " vs " << plain);
      CHECK(std::fabs(masked - plain) <= 8 * std::numeric_limits<T>::epsilon() * std::max(T(1), plain));
    }
  };
  check(0.0f);
  check(0.0);
}

// ---------------------------------------------------------------------------------------------
// Reductions: the reduced forms against the per-sample values they reduce.

namespace {

/// Checks one measure's reduced forms, given its per-sample values, unreduced backward and the
/// reduced forward, with_grad and backward (the pair measures through their q-gradients too).
template <class T, class Values, class Backward, class Reduced, class WithGrad, class ReducedBackward>
void check_reductions(const char* name, Index C, Index N, Values&& values, Backward&& backward, Reduced&& reduced,
                      WithGrad&& with_grad, ReducedBackward&& reduced_backward) {
  INFO(name);
  const Eigen::Matrix<T, Eigen::Dynamic, 1> v = values();
  long double exact = 0;
  for (Index j = 0; j < N; ++j) exact += v(j);
  const auto none = reduced(xent::reduction::none);
  CHECK(none.per_sample() == v);
  CHECK(none.denominator() == double(N));
  const T sum = reduced(xent::reduction::sum).value(), mean = reduced(xent::reduction::mean).value();
  CHECK(xent_test::ulps(sum, exact) <= 1);
  CHECK(xent_test::ulps(mean, exact / N) <= 1);
  CHECK(reduced(xent::reduction::mean).denominator() == double(N));

  // A number under mean is divided by N: the same bits as the per-sample form with g / N.
  const T g = T(-0.75);
  dense<T> expected(C, N), got(C, N);
  backward(T(double(g) / double(N)), expected);
  reduced_backward(g, xent::reduction::mean, got);
  CHECK(got == expected);
  backward(g, expected);
  reduced_backward(g, xent::reduction::sum, got);
  CHECK(got == expected);
  const Eigen::Matrix<T, Eigen::Dynamic, 1> per = Eigen::Matrix<T, Eigen::Dynamic, 1>::LinSpaced(N, -1, 2);
  backward(per, expected);
  reduced_backward(per, xent::reduction::none, got);
  CHECK(got == expected);
  // with_grad differentiates what it returns: the mean's gradient is the sum's over N.
  backward(T(1.0 / double(N)), expected);
  const auto wm = with_grad(xent::reduction::mean, got);
  CHECK(got == expected);
  CHECK(wm.value() == mean);
  backward(T(1), expected);
  const auto ws = with_grad(xent::reduction::sum, got);
  CHECK(got == expected);
  CHECK(ws.value() == sum);
}

template <class T>
void check_all_reductions() {
  const Index C = 7, N = 13;
  const dense<T> p = xent::softmax(random_logits<T>(C, N, 2)), q = xent::softmax(random_logits<T>(C, N, 2));
  const dense<T> x = random_logits<T>(C, N, 3);
  const xent::measure_options o{0, xent::bits};  // a base other than e: the reduced forms keep its scale
  using R = xent::reduction;
  check_reductions<T>(
      "entropy", C, N, [&] { return xent::entropy(p, o); },
      [&](const auto& g, dense<T>& out) { xent::entropy_backward(p, g, o, out); },
      [&](R r) { return xent::entropy(p, o, r); }, [&](R r, dense<T>& out) { return xent::entropy_with_grad(p, o, r, out); },
      [&](const auto& g, R r, dense<T>& out) { xent::entropy_backward(p, g, o, r, out); });
  check_reductions<T>(
      "entropy_from_logits", C, N, [&] { return xent::entropy_from_logits(x, o); },
      [&](const auto& g, dense<T>& out) { xent::entropy_from_logits_backward(x, g, o, out); },
      [&](R r) { return xent::entropy_from_logits(x, o, r); },
      [&](R r, dense<T>& out) { return xent::entropy_from_logits_with_grad(x, o, r, out); },
      [&](const auto& g, R r, dense<T>& out) { xent::entropy_from_logits_backward(x, g, o, r, out); });
  const dense<T> none;
  // The pairs: the gradient w.r.t. q (grad_p not wanted), and w.r.t. p below for kl.
#define XENT_PAIR(NAME)                                                                                              \
  check_reductions<T>(                                                                                               \
      #NAME, C, N, [&] { return xent::NAME(p, q, o); },                                                              \
      [&](const auto& g, dense<T>& out) { xent::NAME##_backward(p, q, g, o, none, out); },                            \
      [&](R r) { return xent::NAME(p, q, o, r); },                                                                   \
      [&](R r, dense<T>& out) { return xent::NAME##_with_grad(p, q, o, r, none, out); },                              \
      [&](const auto& g, R r, dense<T>& out) { xent::NAME##_backward(p, q, g, o, r, none, out); });
  XENT_PAIR(cross_entropy_between)
  XENT_PAIR(kl_divergence)
  XENT_PAIR(js_divergence)
#undef XENT_PAIR
  check_reductions<T>(
      "kl_divergence w.r.t. p", C, N, [&] { return xent::kl_divergence(p, q, o); },
      [&](const auto& g, dense<T>& out) { xent::kl_divergence_backward(p, q, g, o, out, none); },
      [&](R r) { return xent::kl_divergence(p, q, o, r); },
      [&](R r, dense<T>& out) { return xent::kl_divergence_with_grad(p, q, o, r, out, none); },
      [&](const auto& g, R r, dense<T>& out) { xent::kl_divergence_backward(p, q, g, o, r, out, none); });
}

}  // namespace

TEST_CASE("the measures' reductions are the per-sample values reduced, and their gradients follow", "[measures][reduction]") {
  check_all_reductions<double>();
  check_all_reductions<float>();
}

// ---------------------------------------------------------------------------------------------
// Misuse: xent::invalid_argument naming function, argument, expectation and value.

TEST_CASE("bad input to the measures throws a message naming it", "[measures][errors]") {
  Eigen::MatrixXd p(3, 2);
  p << 0.2, 0.5, 0.3, 0.5, 0.5, 0.0;
  const Eigen::MatrixXd empty(0, 2);
  Eigen::MatrixXd bad_p = p;
  bad_p(2, 1) = -0.2;
  Eigen::MatrixXd nan_p = p;
  nan_p(1, 0) = std::nan("");
  const misuse cases[] = {
      {"negative p in entropy", [&] { (void)xent::entropy(bad_p); }, "entropy", "p", "p(2, 1) = -0.2"},
      {"NaN p in entropy", [&] { (void)xent::entropy(nan_p); }, "entropy", "p", "p(1, 0) = nan"},
      {"negative q", [&] { (void)xent::kl_divergence(p, bad_p); }, "kl_divergence", "q", "q(2, 1) = -0.2"},
      {"empty p", [&] { (void)xent::js_divergence(empty, empty); }, "js_divergence", "p", "must not be empty"},
      {"base 1", [&] { (void)xent::entropy(p, {0, 1.0}); }, "entropy", "base", "> 0 and != 1, but got 1"},
      {"base -2", [&] { (void)xent::cross_entropy_between(p, p, {0, -2.0}); }, "cross_entropy_between", "base", "but got -2"},
      {"base inf", [&] { (void)xent::entropy_from_logits(p, {0, HUGE_VAL}); }, "entropy_from_logits", "base", "but got inf"},
      {"dim -1 measure", [&] { (void)xent::entropy(p, {-1}); }, "entropy", "dim", "but got -1"},
      {"+inf p", [&] { Eigen::MatrixXd a = p; a(0, 1) = HUGE_VAL; (void)xent::js_divergence(a, p); }, "js_divergence", "p", "p(0, 1) = inf"},
      {"negative num_threads", [&] { (void)xent::entropy(p, {0, xent::nats, -1}); }, "entropy", "num_threads", "but got -1"},
      {"grad_p shape", [&] { Eigen::MatrixXd g(2, 2); xent::entropy_backward(p, 1.0, {}, g); }, "entropy_backward", "grad_p", "3 x 2"},
      {"grad_out length", [&] { Eigen::MatrixXd g(3, 2); xent::entropy_backward(p, Eigen::Vector3d(1, 1, 1), {}, g); },
       "entropy_backward", "grad_out", "one value per sample (2)"},
      {"grad_q overlaps q", [&] { Eigen::MatrixXd q = p, g(3, 2); xent::kl_divergence_with_grad(p, q, {}, g, q); },
       "kl_divergence_with_grad", "grad_q", "must not overlap q"},
      {"grad_p is p for a pair", [&] { Eigen::MatrixXd a = p, g(3, 2); xent::js_divergence_with_grad(a, p, {}, a, g); },
       "js_divergence_with_grad", "grad_p", "must not overlap p"},
      {"grad_q overlaps grad_p", [&] { Eigen::MatrixXd g(3, 2); xent::cross_entropy_between_backward(p, p, 1.0, {}, g, g); },
       "cross_entropy_between_backward", "grad_q", "must not overlap grad_p"},
      {"a gradient's bad q", [&] { Eigen::MatrixXd g(3, 2), h(3, 2); xent::kl_divergence_with_grad(p, bad_p, {}, g, h); },
       "kl_divergence_with_grad", "q", "q(2, 1) = -0.2"},
      {"entropy_from_logits grad_out", [&] { Eigen::MatrixXd g(3, 2); xent::entropy_from_logits_backward(p, Eigen::Vector4d::Ones(), {}, g); },
       "entropy_from_logits_backward", "grad_out", "one value per sample (2)"},
      {"batchmean measure", [&] { (void)xent::kl_divergence(p, p, {}, xent::reduction::batchmean); }, "kl_divergence",
       "reduction", "batchmean is kl_div's only"},
      {"cast reduction", [&] { (void)xent::entropy(p, {}, static_cast<xent::reduction>(7)); }, "entropy", "reduction",
       "but got 7"},
      {"vector grad_out under mean", [&] { Eigen::MatrixXd g(3, 2); xent::js_divergence_backward(p, p, Eigen::Vector2d(1, 1), {}, xent::reduction::mean, g, g); },
       "js_divergence_backward", "grad_out", "must be a number for reduction mean"},
      {"reduced with_grad shape", [&] { Eigen::MatrixXd g(2, 2); (void)xent::entropy_from_logits_with_grad(p, {}, xent::reduction::sum, g); },
       "entropy_from_logits_with_grad", "grad_out", "3 x 2"},
      {"reduced backward bad reduction", [&] { Eigen::MatrixXd g(3, 2); xent::cross_entropy_between_backward(p, p, 1.0, {}, xent::reduction::batchmean, g, Eigen::MatrixXd()); },
       "cross_entropy_between_backward", "reduction", "batchmean"},
  };
  check_misuse(cases);
}
