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

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
using index_vector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;
using Eigen::Index;

const std::vector<xent_test::reference_case>& cases() {
  static const auto all = xent_test::read_reference(xent_test::reference_path("policy_stats_cases.txt"));
  return all;
}

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
  CHECK(w.cases == 38);
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
