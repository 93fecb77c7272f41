// The tile GEMM of the fused linear losses (detail/tile_gemm.hpp) on the BLAS: built into
// xent_tests_blas only (xent::blas, XENT_USE_BLAS), beside test_linear.cpp and
// test_linear_divergence.cpp, which run every linear loss case through it.
//
// tile_gemm against a long-double product for every storage the tiles can meet: column- and
// row-major operands and results, Blocks whose leading dimension exceeds their rows, a strided Map
// (Eigen's fallback), assignment and accumulation, float and double. Budget per entry: the standard
// GEMM bound k u sum_l |a_il| |b_lj| (u = the unit roundoff; any layout mistake is O(1) off). And,
// with OpenBLAS, the thread rule: one BLAS thread while a scope lives, the caller's count after.

#include "support.hpp"

#include <xent/xent.hpp>
#include <xent/detail/tile_gemm.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

namespace {

template <class T, int Order = Eigen::ColMajor>
using mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>;

template <class T, class X>
mat<long double> widened(const X& x) {
  mat<long double> r(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index j = 0; j < x.cols(); ++j) r(i, j) = static_cast<long double>(x(i, j));
  return r;
}

/// max over entries of |got - ref| / (k u (|A| |B|)_ij): <= 1 is within the bound.
template <class T, class G>
double bound_ratio(const G& got, const mat<long double>& ref, const mat<long double>& abs_product, Eigen::Index k) {
  const long double u = std::numeric_limits<T>::epsilon() / 2;
  double worst = 0;
  for (Eigen::Index i = 0; i < ref.rows(); ++i)
    for (Eigen::Index j = 0; j < ref.cols(); ++j) {
      const long double bound = (long double)(k + 2) * u * (abs_product(i, j) + std::fabs(ref(i, j))) + 1e-300L;
      worst = std::max(worst, double(std::fabs(static_cast<long double>(got(i, j)) - ref(i, j)) / bound));
    }
  return worst;
}

template <class T>
void check_storages() {
  std::mt19937_64 gen(20261204);
  std::normal_distribution<double> normal;
  auto random = [&](Eigen::Index r, Eigen::Index c) {
    mat<T> x(r, c);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(gen));
    return x;
  };
  double worst = 0;
  int runs = 0;
  for (const auto& shape : std::vector<std::array<Eigen::Index, 3>>{{37, 5, 24}, {1, 7, 3}, {64, 16, 1}, {9, 1, 11}}) {
    // Plain variables, not a structured binding: C++17 lambdas cannot capture those (Clang refuses).
    const Eigen::Index m = shape[0], n = shape[1], k = shape[2];
    // Parents larger than the operands: Blocks of them have leading dimension > rows.
    const mat<T> a_parent = random(m + 3, k + 2), b_parent = random(k + 4, n + 1);
    const auto a = a_parent.block(1, 1, m, k);
    const auto b = b_parent.block(2, 0, k, n);
    const mat<T> a_t = a.transpose(), b_t = b.transpose();                      // for op = transpose
    const mat<T, Eigen::RowMajor> a_row = a, b_t_row = b_t;                     // row-major storage
    const mat<long double> ref = widened<T>(a) * widened<T>(b);
    const mat<long double> abs_product = widened<T>(a).cwiseAbs() * widened<T>(b).cwiseAbs();
    const mat<T> c0 = random(m, n);
    const mat<long double> acc_ref = ref + widened<T>(c0);

    auto check = [&](const char* what, auto&& run) {
      INFO(what << ", m " << m << " n " << n << " k " << k);
      for (bool accumulate : {false, true}) {
        mat<T> c_parent = random(m + 2, n + 1);
        auto c = c_parent.block(1, 0, m, n);
        mat<T, Eigen::RowMajor> c_row(m, n);
        if (accumulate) {
          c = c0;
          c_row = c0;
        }
        const mat<T> parent_before = c_parent;
        run(c, accumulate);
        run(c_row, accumulate);
        const mat<long double>& r = accumulate ? acc_ref : ref;
        const mat<long double> bound_base = abs_product + (accumulate ? widened<T>(c0).cwiseAbs() : mat<long double>::Zero(m, n).eval());
        const double e = std::max(bound_ratio<T>(c, r, bound_base, k), bound_ratio<T>(c_row, r, bound_base, k));
        CHECK(e <= 1.0);
        worst = std::max(worst, e);
        // The parent's entries around the block are untouched.
        CHECK(c_parent.row(0) == parent_before.row(0));
        CHECK(c_parent.row(m + 1) == parent_before.row(m + 1));
        CHECK(c_parent.col(n) == parent_before.col(n));
        ++runs;
      }
    };
    check("A B", [&](auto& c, bool acc) { xent::detail::tile_gemm<false, false>(c, a, b, acc); });
    check("A^T B", [&](auto& c, bool acc) { xent::detail::tile_gemm<true, false>(c, a_t, b, acc); });
    check("A B^T", [&](auto& c, bool acc) { xent::detail::tile_gemm<false, true>(c, a, b_t, acc); });
    check("A^T B^T", [&](auto& c, bool acc) { xent::detail::tile_gemm<true, true>(c, a_t, b_t, acc); });
    check("row-major A, row-major B^T", [&](auto& c, bool acc) { xent::detail::tile_gemm<false, true>(c, a_row, b_t_row, acc); });
    // Every other element of a buffer twice as long: inner stride 2, no BLAS (Eigen's GEMM).
    mat<T> a_spread(2 * m, k);
    for (Eigen::Index i = 0; i < m; ++i) a_spread.row(2 * i) = a.row(i);
    const Eigen::Map<const mat<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> a_strided(a_spread.data(), m, k,
                                                                                 Eigen::Stride<Eigen::Dynamic, 2>(2 * m, 2));
    check("strided A (Eigen)", [&](auto& c, bool acc) { xent::detail::tile_gemm<false, false>(c, a_strided, b, acc); });
  }
  std::cout << "tile_gemm on the BLAS, " << (std::is_same_v<T, double> ? "double" : "float") << ": " << runs
            << " products; worst error / (k u |A||B|) " << worst << "\n";
}

}  // namespace

TEST_CASE("xent_tests_blas is built with XENT_USE_BLAS: the tile GEMMs go to the BLAS", "[linear][blas]") {
  STATIC_REQUIRE(xent::detail::tile_gemm_uses_blas);
}

TEMPLATE_TEST_CASE("tile_gemm on the BLAS: every storage, assigned and accumulated, within the GEMM error bound",
                   "[linear][blas]", float, double) {
  check_storages<TestType>();
}

#ifdef OPENBLAS_VERSION
TEST_CASE("OpenBLAS: one thread per call while a linear kernel runs, the caller's count restored after", "[linear][blas]") {
  const int before = openblas_get_num_threads();
  openblas_set_num_threads(2);
  {
    const xent::detail::blas_thread_scope outer;
    CHECK(openblas_get_num_threads() == 1);
    {
      const xent::detail::blas_thread_scope inner;
      CHECK(openblas_get_num_threads() == 1);
    }
    CHECK(openblas_get_num_threads() == 1);  // the outer scope still lives
  }
  CHECK(openblas_get_num_threads() == 2);
  // A whole call: the count is 2 again after it, and its results are the same as at 1.
  const Eigen::Index D = 16, V = 300, N = 20;
  std::mt19937_64 gen(7);
  std::normal_distribution<float> normal;
  Eigen::MatrixXf h(D, N), w(D, V);
  for (Eigen::Index i = 0; i < h.size(); ++i) h.data()[i] = normal(gen);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(gen) / 4;
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 37) % V;
  xent::linear_cross_entropy_options o;
  o.block = 64;
  o.num_threads = 2;
  const float loss2 = xent::linear_cross_entropy(h, w, t, o).loss.value();
  CHECK(openblas_get_num_threads() == 2);
  openblas_set_num_threads(1);
  const float loss1 = xent::linear_cross_entropy(h, w, t, o).loss.value();
  CHECK(loss1 == loss2);
  CHECK(openblas_get_num_threads() == 1);
  openblas_set_num_threads(before);
}
#endif
