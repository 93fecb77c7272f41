// The elementary functions of the formulas (xent/detail/simd/math.hpp): xent's float exp over every
// float in [-87.3, 0] (a sample by default, all with XENT_EXP_EXHAUSTIVE=1), softplus and sigmoid
// against mpmath (tests/reference/elementwise_cases.txt), the log of denormals, and NaN propagation.

#include "binary_reference.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>

namespace {

using Eigen::Index;
template <class T>
constexpr T inf = std::numeric_limits<T>::infinity();

/// ulps of got against the exact exp(x), at the float spacing of the exact value.
double exp_error_ulps(float got, float x) {
  const long double exact = std::exp(static_cast<long double>(x));
  int e = 0;
  std::frexp(static_cast<double>(exact), &e);
  const long double ulp = std::ldexp(1.0L, e - 24);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ulp);
}

TEST_CASE("xent's float exp is within 2 ulp on [-87.3, 0]", "[exp]") {
  using xent::detail::simd::packet;
  using P = packet<float>;
  constexpr Index ps = xent::detail::simd::packet_size<float>;
  if constexpr (!xent::detail::simd::has_fast_exp_for<float>) {
    WARN("this ISA has no integer packets: the kernels use Eigen's pexp, not xent's exp");
  } else {
    // Every float in [-87.3, 0] by bit pattern: all 1.1e9 with XENT_EXP_EXHAUSTIVE=1, else every 61st.
    const bool exhaustive = std::getenv("XENT_EXP_EXHAUSTIVE") != nullptr;
    const std::uint32_t step = exhaustive ? 1 : 61;
    const float lowest = -87.3f;
    std::uint32_t last;
    std::memcpy(&last, &lowest, sizeof last);
    double worst = 0;
    float worst_at = 0;
    alignas(64) float in[ps], out[ps];
    std::uint64_t count = 0;
    for (std::uint64_t bits = 0x80000000u; bits <= last; bits += step * ps) {
      for (Index i = 0; i < ps; ++i) {
        const std::uint32_t b = static_cast<std::uint32_t>(std::min<std::uint64_t>(bits + std::uint64_t(i) * step, last));
        std::memcpy(&in[i], &b, sizeof b);
      }
      xent::detail::simd::store(out, xent::detail::simd::exp_clamped(xent::detail::simd::load<P>(in)));
      for (Index i = 0; i < ps; ++i) {
        const double e = exp_error_ulps(out[i], in[i]);
        if (e > worst) worst = e, worst_at = in[i];
      }
      count += ps;
    }
    WARN("xent exp: worst " << worst << " ulp at " << worst_at << " over " << count << " floats in [-87.3, 0]");
    REQUIRE(worst <= 2);
    // The ends: exactly 1 at 0, and below the clamp a value no sum can see.
    xent::detail::simd::store(out, xent::detail::simd::exp_clamped(xent::detail::simd::pset1<P>(0.0f)));
    REQUIRE(out[0] == 1.0f);
    xent::detail::simd::store(out, xent::detail::simd::exp_clamped(xent::detail::simd::pset1<P>(-inf<float>)));
    REQUIRE(out[0] >= 0.0f);
    REQUIRE(out[0] < 2e-38f);
    xent::detail::simd::store(out, xent::detail::simd::exp_nonpositive(xent::detail::simd::pset1<P>(-inf<float>)));
    REQUIRE(out[0] == 0.0f);
  }
}

/// softplus(x) (or log sigmoid(x) = -softplus(-x)) and its derivative, from the shared parts. V is
/// deduced: naming a packet type as a template argument draws GCC's -Wignored-attributes.
template <class V>
void softplus_of(const V& x, bool log_sigmoid, V& value, V& derivative) {
  const xent::detail::simd::softplus_parts<V> s(x);
  value = log_sigmoid ? xent::detail::simd::pnegate(s.softplus_neg()) : s.softplus();
  derivative = log_sigmoid ? s.sigmoid_neg() : s.sigmoid();
}

template <class V>
bool all_parts_nan(const V& x) {
  const xent::detail::simd::softplus_parts<V> s(x);
  using T = xent::detail::simd::scalar_of<V>;
  alignas(64) T out[xent::detail::simd::lanes<V>];
  bool nan = true;
  for (const auto& part : {s.softplus(), s.softplus_neg(), s.sigmoid(), s.sigmoid_neg()}) {
    xent::detail::simd::store(out, part);
    nan = nan && std::isnan(out[0]);
  }
  return nan;
}

/// softplus_parts on every point of the softplus and log_sigmoid tables, through packets (and
/// scalars where there are none), float and double: softplus(x) and sigmoid(x) within 2 ulp,
/// -softplus(-x) = log sigmoid(x) and sigmoid(-x) likewise.
template <class T>
void check_softplus_tables() {
  using V = xent::detail::simd::vector_of<T>;
  constexpr Index ps = xent::detail::simd::vector_lanes<T>;
  double worst_value = 0, worst_derivative = 0;
  std::size_t points = 0;
  for (const auto& c : xent_test::elementwise_tables()) {
    if ((c.tag != "softplus" && c.tag != "log_sigmoid") || (sizeof(T) == 4 && xent_test::double_only(c))) continue;
    const bool log_sigmoid = c.tag == "log_sigmoid";
    const auto& xs = c["x"];
    for (std::size_t i = 0; i < xs.size(); ++i) {
      alignas(64) T in[ps], value[ps], derivative[ps];
      for (Index l = 0; l < ps; ++l) in[l] = T(xs[i]);
      V v, d;
      softplus_of(xent::detail::simd::load<V>(in), log_sigmoid, v, d);
      xent::detail::simd::store(value, v);
      xent::detail::simd::store(derivative, d);
      const long double exact = c["loss"][i], exact_derivative = c["grad"][i];
      const double ev = xent_test::table_ulps(value[0], exact, exact);
      const double ed = xent_test::table_ulps(derivative[0], exact_derivative, exact_derivative);
      worst_value = std::max(worst_value, ev);
      worst_derivative = std::max(worst_derivative, ed);
      ++points;
      INFO(c.name << " x = " << double(in[0]) << ": " << double(value[0]) << " vs " << double(exact) << " (" << ev
                  << " ulp), derivative " << double(derivative[0]) << " vs " << double(exact_derivative) << " (" << ed << ")");
      CHECK(ev <= 2);
      CHECK(ed <= 2);
    }
  }
  CHECK(points > 1000);
  std::cout << "softplus and sigmoid vs mpmath, " << (sizeof(T) == 4 ? "float" : "double") << ": " << points
            << " points, worst " << worst_value << " ulp (value), " << worst_derivative << " ulp (derivative); budget 2\n";
}

}  // namespace

TEST_CASE("softplus and sigmoid are within 2 ulp of mpmath for every x", "[simd][mpmath]") {
  check_softplus_tables<float>();
  check_softplus_tables<double>();
}

TEMPLATE_TEST_CASE("the log takes denormals, and NaN reaches every part of softplus", "[simd]", float, double) {
  using T = TestType;
  using V = xent::detail::simd::vector_of<T>;
  constexpr Index ps = xent::detail::simd::vector_lanes<T>;
  alignas(64) T in[ps], out[ps];
  // Eigen's plog takes a denormal as the smallest normal number; log_any lifts it first.
  for (const T x : {std::numeric_limits<T>::denorm_min(), std::numeric_limits<T>::min() / T(1024), T(0), T(1)}) {
    for (Index l = 0; l < ps; ++l) in[l] = x;
    xent::detail::simd::store(out, xent::detail::simd::log_any(xent::detail::simd::load<V>(in)));
    INFO("log_any(" << double(x) << ") = " << double(out[0]));
    if (x == T(0))
      CHECK(out[0] == -inf<T>);
    else
      CHECK(xent_test::ulps(out[0], std::log((long double)x), 1) <= 2);
  }
  for (Index l = 0; l < ps; ++l) in[l] = std::numeric_limits<T>::quiet_NaN();
  CHECK(all_parts_nan(xent::detail::simd::load<V>(in)));
}
