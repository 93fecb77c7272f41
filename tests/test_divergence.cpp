// The information measures (xent/measures/divergence.hpp): torch 1.13 compositions
// (tests/reference/binary_cases.txt), the identities between the measures, exact special values,
// and misuse.

#include "binary_reference.hpp"
#include "misuse.hpp"

#include <catch2/catch.hpp>

#include <iostream>

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
  };
  check_misuse(cases);
}
