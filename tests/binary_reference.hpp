#ifndef XENT_TESTS_BINARY_REFERENCE_HPP
#define XENT_TESTS_BINARY_REFERENCE_HPP

// What the tests of the elementwise losses and the measures share: the torch 1.13 cases of
// tests/reference/binary_cases.txt (float64 values and autograd gradients), the mpmath tables of
// tests/reference/elementwise_cases.txt, and the comparisons with their tallies.
//
// torch tolerances, |got - torch| <= rel * |torch| + abs:
//   double: rel 1e-12, abs 1e-14 (abs covers torch's log(1 + exp(-x)), which rounds losses below
//           1e-16 to 0 where xent's log1p keeps them: docs/differences-from-torch.md)
//   float:  rel 2e-6,  abs 2e-6 (the same float32-exact inputs, computed in float)
// Every torch case runs with both class axes: dim 0 (C x N, torch's [N, C] memory) and dim 1 (N x C).

#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace xent_test {

using Eigen::Index;
template <class T>
using dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// A case of binary_cases.txt; its tag names the function.
struct binary_case : reference_case {
  Index n() const { return Index(values.at("shape")[0]); }
  Index c() const { return Index(values.at("shape")[1]); }
  int reduction_code() const { return has("reduction") ? int(values.at("reduction")[0]) : 0; }
};

inline const std::vector<binary_case>& binary_cases() {
  static const std::vector<binary_case> all = [] {
    std::vector<binary_case> cases;
    for (auto& c : read_reference(reference_path("binary_cases.txt"))) cases.push_back({std::move(c)});
    return cases;
  }();
  REQUIRE(all.size() == 126);  // every case the generator writes
  return all;
}

/// A torch [rows, cols] row-major array as the Eigen matrix of the class axis `dim`:
/// dim 0 -> cols x rows (its transpose), dim 1 -> rows x cols.
template <class T>
dense<T> as_dim_matrix(const std::vector<long double>& v, Index rows, Index cols, int dim) {
  dense<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = T(v[std::size_t(i * cols + j)]);
  if (dim == 0) return m.transpose();
  return m;
}

/// A weight of C values stays a vector; N*C values become the input's shape.
template <class T>
dense<T> weight_of(const binary_case& c, const std::string& key, int dim) {
  if (!c.has(key)) return {};
  const auto& v = c[key];
  if (Index(v.size()) == c.c() && c.n() != 1) {
    dense<T> w(c.c(), 1);
    for (Index k = 0; k < c.c(); ++k) w(k) = T(v[std::size_t(k)]);
    return w;
  }
  return as_dim_matrix<T>(v, c.n(), c.c(), dim);
}

inline xent::reduction reduction_of(int code) {
  const xent::reduction all[] = {xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                 xent::reduction::batchmean};
  return all[code];
}

/// An elementwise loss's result as a matrix: the losses for none, 1 x 1 otherwise.
template <class T>
dense<T> as_dense(const xent::loss_result<T>& r) {
  if (r.reduction() == xent::reduction::none) return r.elementwise();
  return dense<T>::Constant(1, 1, r.value());
}

struct tolerance {
  double rel, abs;
};

struct tally {
  std::size_t cases = 0, values = 0;
  double worst_value = 0, worst_grad = 0;  // |got - torch| / (|torch| + abs / rel), i.e. relative with a floor
};

template <class T>
void compare(const char* what, const dense<T>& got, const dense<T>& expected, tolerance tol, double& worst, tally& t,
             const std::string& name) {
  REQUIRE(got.rows() == expected.rows());
  REQUIRE(got.cols() == expected.cols());
  for (Index i = 0; i < got.size(); ++i) {
    const double g = double(got.data()[i]), e = double(expected.data()[i]);
    const double err = std::fabs(g - e);
    worst = std::max(worst, err / (std::fabs(e) + tol.abs / tol.rel));
    ++t.values;
    INFO(name << " " << what << "[" << i << "]: got " << g << ", torch " << e);
    CHECK(err <= tol.rel * std::fabs(e) + tol.abs);
  }
}

/// Each torch loss case whose tag is in `tags`, both class axes: run(case, dim, x, t, grad_out,
/// reduction) returns {value, gradient} as matrices.
template <class T, class Run>
tally check_torch_loss_cases(std::initializer_list<const char*> tags, tolerance tol, Run&& run) {
  tally t;
  for (const auto& c : binary_cases()) {
    if (std::none_of(tags.begin(), tags.end(), [&](const char* tag) { return c.tag == tag; })) continue;
    ++t.cases;
    for (int dim = 0; dim < 2; ++dim) {
      const dense<T> x = as_dim_matrix<T>(c["input"], c.n(), c.c(), dim);
      const std::string name = c.name + " dim " + std::to_string(dim);
      const dense<T> target = as_dim_matrix<T>(c["target"], c.n(), c.c(), dim);
      const bool none = c.reduction_code() == 0;
      const dense<T> grad_out = none ? as_dim_matrix<T>(c["grad_out"], c.n(), c.c(), dim)
                                     : dense<T>::Constant(1, 1, T(c["grad_out"][0]));
      const auto [value, grad] = run(c, dim, x, target, grad_out, reduction_of(c.reduction_code()));
      const dense<T> expected = none ? as_dim_matrix<T>(c["value"], c.n(), c.c(), dim)
                                     : dense<T>::Constant(1, 1, T(c["value"][0]));
      compare("value", value, expected, tol, t.worst_value, t, name);
      compare("grad", grad, as_dim_matrix<T>(c["grad"], c.n(), c.c(), dim), tol, t.worst_grad, t, name);
    }
  }
  return t;
}

/// The forward, with_grad and backward of an elementwise loss agree: with_grad returns the forward's
/// value and writes the backward's gradient for the seed 1 (for none: of the sum of the losses).
template <class T>
void check_with_grad_agrees(const dense<T>& forward, const dense<T>& with_grad_value, const dense<T>& with_grad,
                            const dense<T>& backward_seed_one, const std::string& name) {
  INFO(name << ": with_grad against forward and backward");
  CHECK(with_grad_value == forward);
  CHECK(with_grad == backward_seed_one);
}

// ---- The mpmath tables (elementwise_cases.txt): budgets in ulps of the compute type.

/// Where the exact value's magnitude is below the smallest normal number (times the factor that
/// multiplied a flushed term), anything that small, 0 included, is accepted: the kernels flush such
/// terms (docs/kernels.md).
template <class T>
bool flushed(T got, long double exact, double factor = 1) {
  const long double tiny = (long double)std::numeric_limits<T>::min() * factor;
  return std::fabs(exact) < tiny && std::fabs(static_cast<long double>(got)) < tiny;
}

/// |got - exact| in ulps of T at max(|scale|, smallest normal); exact beyond T's range must be inf.
template <class T>
double table_ulps(T got, long double exact, long double scale, double flush_factor = 1) {
  if (flushed(got, exact, flush_factor)) return 0;
  if (std::fabs(exact) > std::numeric_limits<T>::max())
    return std::isinf(got) && (got > 0) == (exact > 0) ? 0 : std::numeric_limits<double>::infinity();
  return ulps(got, exact, std::max(std::fabs(scale), (long double)std::numeric_limits<T>::min()));
}

/// One point's inputs of an elementwise table case, in T.
template <class T>
dense<T> table_column(const reference_case& c, const char* key, T fill) {
  const std::size_t n = c["x"].size();
  dense<T> m(Index(n), 1);
  for (std::size_t i = 0; i < n; ++i) m(Index(i)) = c.has(key) ? T(c[key][i]) : fill;
  return m;
}

inline bool double_only(const reference_case& c) {
  return c.name.size() > 7 && c.name.compare(c.name.size() - 7, 7, "_double") == 0;
}

inline const std::vector<reference_case>& elementwise_tables() {
  static const std::vector<reference_case> all = read_reference(reference_path("elementwise_cases.txt"));
  REQUIRE(all.size() == 81);  // every case the generator writes
  return all;
}

}  // namespace xent_test

#endif
