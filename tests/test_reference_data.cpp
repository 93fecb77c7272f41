// log-sum-exp, log_softmax and softmax against the committed reference data
// (tests/reference/lse_cases.txt: exact values from mpmath, and torch 1.13's float32/float64 outputs).
//
// Budgets, for float and double alike:
//   logsumexp    4 ulp, the ulp taken at max(|lse|, 1)   (absolute near 0, where lse cancels)
//   log_softmax  4 ulp, taken at max(|y|, 1)
//   softmax      6 + |ln p| ulp, taken at p (see xent_test::probability_within_budget); below twice the
//                smallest normal number, 0 is accepted (the kernels flush there, docs/kernels.md).
// Against torch the same budgets are doubled (both sides round). Special values must match exactly.

#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <iostream>

namespace {

using xent_test::ulps;

struct worst_error {
  double lse = 0, log_softmax = 0, softmax = 0;
  std::size_t checked = 0;
};

template <class T>
void check_against(const xent_test::reference_case& c, const std::string& prefix, double budget_factor,
                   worst_error& worst) {
  const auto x = c.x<T>();
  const Eigen::Matrix<T, Eigen::Dynamic, 1> lse = xent::logsumexp(x);
  REQUIRE(lse.size() == 1);
  const double e = ulps(lse(0), c[prefix + "lse"][0], 1);
  worst.lse = std::max(worst.lse, e);
  ++worst.checked;
  INFO(c.name << " " << prefix << "lse: got " << lse(0) << ", expected " << double(c[prefix + "lse"][0]));
  CHECK(e <= 4 * budget_factor);
  if (!c.has(prefix + "softmax")) return;

  const Eigen::Matrix<T, Eigen::Dynamic, 1> y = xent::log_softmax(x), p = xent::softmax(x);
  const auto& y_exact = c[prefix + "log_softmax"];
  const auto& p_exact = c[prefix + "softmax"];
  for (Eigen::Index k = 0; k < x.size(); ++k) {
    const double ey = ulps(y(k), y_exact[std::size_t(k)], 1);
    const long double pk = p_exact[std::size_t(k)];
    const double ep = pk < 2 * (long double)std::numeric_limits<T>::min()
                          ? 0
                          : ulps(p(k), pk, std::numeric_limits<T>::min()) / (6 + double(std::fabs(std::log(pk))));
    worst.log_softmax = std::max(worst.log_softmax, ey);
    worst.softmax = std::max(worst.softmax, ep);  // as a fraction of the budget
    worst.checked += 2;
    INFO(c.name << " " << prefix << " class " << k << ": log_softmax " << y(k) << " vs " << double(y_exact[std::size_t(k)])
                << ", softmax " << p(k) << " vs " << double(pk));
    CHECK(ey <= 4 * budget_factor);
    CHECK(xent_test::probability_within_budget(p(k), pk, budget_factor));
  }
}

const std::vector<xent_test::reference_case>& cases() {
  static const auto all = xent_test::read_reference(xent_test::reference_path("lse_cases.txt"));
  return all;
}

}  // namespace

TEMPLATE_TEST_CASE("logsumexp, log_softmax and softmax match mpmath's exact values", "[reference][mpmath]", float,
                   double) {
  worst_error worst;
  std::size_t used = 0;
  for (const auto& c : cases()) {
    if (!c.has("lse")) continue;
    ++used;
    check_against<TestType>(c, "", 1, worst);
  }
  CHECK(used >= 15);
  std::cout << "mpmath, " << (sizeof(TestType) == 4 ? "float " : "double") << ": " << used << " cases, "
            << worst.checked << " values; worst error in ulp: logsumexp " << worst.lse << ", log_softmax "
            << worst.log_softmax << ", softmax " << worst.softmax << " of its budget (6 + |ln p| ulp)\n";
}

TEMPLATE_TEST_CASE("logsumexp, log_softmax and softmax match torch 1.13", "[reference][torch]", float, double) {
  const std::string prefix = sizeof(TestType) == 4 ? "torch32_" : "torch64_";
  worst_error worst;
  std::size_t special = 0;
  for (const auto& c : cases()) {
    REQUIRE(c.has(prefix + "lse"));
    if (c.has("lse")) {
      check_against<TestType>(c, prefix, 2, worst);
      continue;
    }
    // Non-finite results (all -inf, +inf, NaN): the same special value, bit for bit in kind.
    ++special;
    const auto x = c.x<TestType>();
    const auto lse = xent::logsumexp(x);
    const auto y = xent::log_softmax(x);
    const auto p = xent::softmax(x);
    INFO(c.name);
    CHECK(ulps(lse(0), c[prefix + "lse"][0]) == 0);
    for (Eigen::Index k = 0; k < x.size(); ++k) {
      CHECK(ulps(y(k), c[prefix + "log_softmax"][std::size_t(k)]) == 0);
      CHECK(ulps(p(k), c[prefix + "softmax"][std::size_t(k)]) == 0);
    }
  }
  CHECK(special >= 5);
  std::cout << "torch, " << prefix << ": worst difference in ulp: logsumexp " << worst.lse << ", log_softmax "
            << worst.log_softmax << ", softmax " << worst.softmax << " of its budget; " << special << " special-value cases exact\n";
}
