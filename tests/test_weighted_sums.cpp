// engine::ordered_sum_of (the packet form of the weighted sums of a call: the mean's denominator and
// sum_j w_j l_j) against engine::ordered_sum, the scalar compensated chains it replaces: the same
// bits for any length (the tails of 1 to 3 terms included), for terms whose low parts the
// compensation must keep, and for chains that turn infinite or NaN.

#include <xent/detail/engine/reduce.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using xent::detail::engine::ordered_sum;
using xent::detail::engine::ordered_sum_of;

std::uint64_t bits_of(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

double packet_sum(const std::vector<double>& x) {
  return ordered_sum_of(Eigen::Index(x.size()), [&x](Eigen::Index i) { return x[std::size_t(i)]; });
}

// Magnitudes from 1e-8 to 1e16, both signs: most additions lose low parts to the compensation.
std::vector<double> mixed_terms(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> exponent(-8, 16), sign(-1, 1);
  std::vector<double> x(n);
  for (double& v : x) v = std::copysign(std::pow(10.0, exponent(rng)), sign(rng));
  return x;
}

}  // namespace

TEST_CASE("ordered_sum_of is the bits of ordered_sum for every length and mixed magnitudes", "[reduce]") {
  std::mt19937_64 rng(16);
  for (std::size_t n : {0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 37, 1000, 100003}) {
    const std::vector<double> x = mixed_terms(n, rng);
    INFO("n = " << n);
    CHECK(bits_of(packet_sum(x)) == bits_of(ordered_sum(x.data(), Eigen::Index(n))));
  }
}

TEST_CASE("ordered_sum_of keeps what plain summation loses", "[reduce]") {
  // 1e16 + 1 + ... : each 1 is lost by a plain sum in double (ulp(1e16) = 2); compensated, the
  // exact 4000 remains after the large terms cancel.
  std::vector<double> x(4000 + 8, 1.0);
  for (std::size_t c = 0; c < 4; ++c) {
    x[c] = 1e16;
    x[x.size() - 4 + c] = -1e16;
    x[4 + c] = 1.0;
  }
  double plain = 0;
  for (double v : x) plain += v;
  const double exact = double(x.size() - 8);
  CHECK(plain != exact);
  CHECK(packet_sum(x) == exact);
  CHECK(bits_of(packet_sum(x)) == bits_of(ordered_sum(x.data(), Eigen::Index(x.size()))));
}

TEST_CASE("ordered_sum_of turns infinite and NaN as ordered_sum does", "[reduce]") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::mt19937_64 rng(17);
  for (std::size_t n : {6, 13, 41}) {
    for (std::size_t at = 0; at < n; at += 5) {
      INFO("n = " << n << ", special term at " << at);
      std::vector<double> x = mixed_terms(n, rng);
      x[at] = inf;  // one infinite lane, the others finite (their NaN-free compensation kept)
      CHECK(packet_sum(x) == inf);
      CHECK(ordered_sum(x.data(), Eigen::Index(n)) == inf);
      x[at] = -inf;
      CHECK(packet_sum(x) == -inf);
      x[(at + 1) % n] = inf;  // +inf and -inf, in two lanes or one: NaN
      CHECK(std::isnan(packet_sum(x)));
      CHECK(std::isnan(ordered_sum(x.data(), Eigen::Index(n))));
      x = mixed_terms(n, rng);
      x[at] = nan;
      CHECK(std::isnan(packet_sum(x)));
      // A finite sum that overflows: the lane's sum turns infinite, its compensation NaN, dropped.
      x = std::vector<double>(n, std::numeric_limits<double>::max() / 2);
      CHECK(packet_sum(x) == ordered_sum(x.data(), Eigen::Index(n)));
    }
  }
}
