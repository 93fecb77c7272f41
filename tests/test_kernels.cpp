// The vectorised kernels held to the scalar long-double reference path, on every layout, plus the
// identities of the field. Budgets as in test_reference_data.cpp.

#include "reference.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <limits>

namespace {

using Eigen::Index;
using xent_test::ulps;
namespace ref = xent_test::reference;

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <class T>
constexpr T inf = std::numeric_limits<T>::infinity();

/// Checks logsumexp, softmax and log_softmax of every column of x against the reference path.
template <class T>
void check_columns_against_reference(const matrix<T>& x) {
  const auto lse = xent::logsumexp(x);
  const matrix<T> p = xent::softmax(x), y = xent::log_softmax(x);
  for (Index j = 0; j < x.cols(); ++j) {
    const long double exact = ref::logsumexp(x.col(j).data(), x.rows());
    INFO("C = " << x.rows() << ", sample " << j << ": logsumexp " << lse(j) << " vs " << double(exact));
    REQUIRE(ulps(lse(j), exact, 1) <= 4);
    for (Index k = 0; k < x.rows(); ++k) {
      const long double pk = ref::softmax_at(x.col(j).data(), k, 1, exact);
      const long double yk = ref::log_softmax_at(x.col(j).data(), k, 1, exact);
      INFO("class " << k << " x = " << x(k, j) << ": softmax " << p(k, j) << " vs " << double(pk) << ", log_softmax "
                    << y(k, j) << " vs " << double(yk));
      REQUIRE(xent_test::probability_within_budget(p(k, j), pk));
      REQUIRE(ulps(y(k, j), yk, 1) <= 4);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("the vectorised kernels match the scalar reference on every class count", "[kernels]", float,
                   double) {
  using T = TestType;
  // Around the packet widths (4, 8, 16), the 4-packet unroll, and the 16 KiB chunk of the float and
  // double kernels (4096 and 2048 elements), with ragged tails.
  for (Index classes : {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 1000, 2047, 2048, 2049, 4095, 4096, 4097, 12289}) {
    matrix<T> x = xent_test::random_logits<T>(classes, 3, 4);
    if (classes > 8) {
      // Masks, and huge finite values in the same sample.
      x(classes / 3, 0) = -inf<T>;
      x(classes - 1, 0) = -inf<T>;
      x(classes / 2, 1) = T(1e30);
      x(0, 1) = T(-1e30);
      x(classes - 1, 2) = T(40);  // the max in the ragged tail
    }
    check_columns_against_reference(x);
  }
  // The largest vocabulary in common use.
  check_columns_against_reference(xent_test::random_logits<T>(128256, 2, 2));
}

TEMPLATE_TEST_CASE("special values land anywhere: packet body, ragged tail, later chunk", "[kernels][special]", float,
                   double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (Index classes : {5, 37, 5000, 9000}) {
    for (Index at : {Index(0), classes / 2, classes - 1}) {
      matrix<T> x = xent_test::random_logits<T>(classes, 1);
      x(at, 0) = nan;
      CHECK(std::isnan(xent::logsumexp(x)(0)));
      CHECK(xent::softmax(x).array().isNaN().all());
      x(at, 0) = inf<T>;
      CHECK(xent::logsumexp(x)(0) == inf<T>);
      CHECK(xent::log_softmax(x).array().isNaN().all());
      // +inf first, NaN later (another chunk for the long rows): NaN wins, as in torch.
      x(classes - 1 - at, 0) = nan;
      if (classes - 1 - at != at) CHECK(std::isnan(xent::logsumexp(x)(0)));
    }
    matrix<T> masked = matrix<T>::Constant(classes, 1, -inf<T>);
    CHECK(xent::logsumexp(masked)(0) == -inf<T>);
    CHECK(xent::softmax(masked).array().isNaN().all());
    masked(classes / 2, 0) = T(-3.5);
    CHECK(xent::logsumexp(masked)(0) == T(-3.5));
    const matrix<T> p = xent::softmax(masked);
    CHECK(p(classes / 2, 0) == T(1));
    CHECK(p.sum() == T(1));  // every masked entry exactly 0
  }
}

TEMPLATE_TEST_CASE("every layout and expression gives the same numbers", "[kernels][layout]", float, double) {
  using T = TestType;
  const Index classes = 1000, samples = 7;
  const matrix<T> x = xent_test::random_logits<T>(classes, samples);  // C x N, column-major
  const auto expected = xent::logsumexp(x);
  const matrix<T> expected_p = xent::softmax(x);

  SECTION("a row-major Map of a torch [N, C] buffer, dim = 1, reads the same memory") {
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> torch_like(x.data(), samples,
                                                                                                   classes);
    CHECK(xent::logsumexp(torch_like, 1) == expected);
    CHECK(xent::softmax(torch_like, 1).transpose() == expected_p);
  }
  SECTION("a column-major N x C matrix, dim = 1: the strided class axis") {
    const matrix<T> transposed = x.transpose();
    const auto lse = xent::logsumexp(transposed, 1);
    const matrix<T> p = xent::softmax(transposed, 1), y = xent::log_softmax(transposed, 1);
    for (Index j = 0; j < samples; ++j) {
      CHECK(ulps(lse(j), ref::logsumexp(x.col(j).data(), classes), 1) <= 4);
      const long double exact_lse = ref::logsumexp(x.col(j).data(), classes);
      for (Index k = 0; k < classes; ++k) {
        const long double pk = ref::softmax_at(x.col(j).data(), k, 1, exact_lse);
        INFO("sample " << j << " class " << k << ": " << p(j, k) << " vs " << double(pk));
        CHECK(xent_test::probability_within_budget(p(j, k), pk));
      }
    }
    CHECK((y.transpose() - xent::log_softmax(x)).cwiseAbs().maxCoeff() <= 8 * std::numeric_limits<T>::epsilon() * 16);
  }
  SECTION("blocks, lazy expressions and vectors") {
    CHECK(xent::logsumexp(x.middleCols(2, 3)) == expected.segment(2, 3));
    CHECK(xent::logsumexp(x.col(4))(0) == expected(4));
    const matrix<T> doubled = x * T(2);
    CHECK(xent::logsumexp(x * T(2)) == xent::logsumexp(doubled));
    CHECK(xent::logsumexp(x.array()) == expected);
  }
  SECTION("in place, and into a caller's buffer") {
    matrix<T> in_place = x;
    xent::softmax_into(in_place, in_place);
    CHECK(in_place == expected_p);
    std::vector<T> buffer(std::size_t(classes * samples));
    xent::log_softmax_into(x, Eigen::Map<matrix<T>>(buffer.data(), classes, samples));
    CHECK(Eigen::Map<matrix<T>>(buffer.data(), classes, samples) == xent::log_softmax(x));
    std::vector<T> lse(samples);
    xent::logsumexp_into(x, Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(lse.data(), samples));
    CHECK(Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(lse.data(), samples) == expected);
  }
}

TEMPLATE_TEST_CASE("identities: shift invariance, normalisation, log_softmax = x - lse", "[kernels][identity]", float,
                   double) {
  using T = TestType;
  constexpr double eps = std::numeric_limits<T>::epsilon();
  for (Index classes : {3, 17, 1000, 5000}) {
    // Multiples of 2^-10 in [-32, 32]: adding 256 is exact in float, so x + c is the same logits shifted.
    matrix<T> x = (xent_test::random_logits<T>(classes, 5, 8).array() * T(1024)).round().cwiseMax(T(-32768)).cwiseMin(T(32768)) / T(1024);
    const T c = 256;
    const matrix<T> shifted = x.array() + c;
    const auto lse = xent::logsumexp(x), lse_shifted = xent::logsumexp(shifted);
    const matrix<T> p = xent::softmax(x);
    CHECK(xent::softmax(shifted) == p);                   // x - max is the same bits: exactly equal
    CHECK(xent::log_softmax(shifted) == xent::log_softmax(x));
    for (Index j = 0; j < x.cols(); ++j) {
      CHECK(ulps(T(lse_shifted(j) - c), (long double)lse(j), std::fabs(double(lse_shifted(j)))) <= 1);
      // sum of C probabilities each within a few ulp, summed in T: a few ulp plus the rounding of the sum.
      CHECK(std::fabs(double(p.col(j).sum()) - 1) <= (4 + 0.5 * std::sqrt(double(classes))) * eps);
    }
    const matrix<T> y = xent::log_softmax(x);
    const matrix<T> x_minus_lse = x.rowwise() - lse.transpose();
    for (Index i = 0; i < x.size(); ++i) {
      CHECK(ulps(y.data()[i], (long double)x_minus_lse.data()[i], std::max(1.0, std::fabs(double(lse(i / classes))))) <= 2);
      CHECK(ulps(std::exp(y.data()[i]), (long double)p.data()[i], std::numeric_limits<T>::min()) <=
            8 + std::fabs(double(y.data()[i])));
    }
  }
}

TEMPLATE_TEST_CASE("lse_partial: identity, commutativity, associativity, merge of chunks = whole", "[partial]", float,
                   double) {
  using T = TestType;
  using partial = xent::lse_partial<T>;
  const matrix<T> x = xent_test::random_logits<T>(10007, 1);
  const T whole = xent::logsumexp(x)(0);
  const partial identity = partial::identity();
  CHECK(identity.value() == -inf<T>);

  // Split the classes at random points, fold the pieces' partials in two different orders.
  std::uniform_int_distribution<Index> cut(1, x.rows() - 1);
  for (int trial = 0; trial < 20; ++trial) {
    Index a = cut(xent_test::rng()), b = cut(xent_test::rng());
    if (a > b) std::swap(a, b);
    if (a == b) continue;
    const partial p1 = xent::logsumexp_partials(x.topRows(a))[0];
    const partial p2 = xent::logsumexp_partials(x.middleRows(a, b - a))[0];
    const partial p3 = xent::logsumexp_partials(x.bottomRows(x.rows() - b))[0];
    const partial left = xent::merge(xent::merge(p1, p2), p3), right = xent::merge(p1, xent::merge(p2, p3));
    CHECK(ulps(left.value(), (long double)whole, 1) <= 4);
    CHECK(ulps(right.value(), (long double)left.value(), 1) <= 2);
    const partial ab = xent::merge(p1, p2), ba = xent::merge(p2, p1);
    CHECK(ab.max == ba.max);
    CHECK(ab.sum == ba.sum);
    const partial with_identity = xent::merge(p1, identity), identity_first = xent::merge(identity, p1);
    CHECK(with_identity.max == p1.max);
    CHECK(with_identity.sum == p1.sum);
    CHECK(identity_first.sum == p1.sum);
  }
  // Special values merge as torch's logsumexp treats them.
  const partial nan_part{std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::quiet_NaN()};
  const partial inf_part{inf<T>, 1};
  const partial finite{T(2), T(1.5)};
  CHECK(std::isnan(xent::merge(finite, nan_part).value()));
  CHECK(std::isnan(xent::merge(inf_part, nan_part).value()));
  CHECK(xent::merge(finite, inf_part).value() == inf<T>);
  CHECK(xent::merge(identity, identity).value() == -inf<T>);
  static_assert(std::is_trivially_copyable_v<partial> && std::is_standard_layout_v<partial> && sizeof(partial) == 2 * sizeof(T),
                "a partial travels as two numbers over MPI");
}
