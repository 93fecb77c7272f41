// What the fused linear divergence tests share (tests/test_linear_divergence.cpp against teacher
// logits, tests/test_linear_topk.cpp against a top-k teacher): the budgets, random inputs, the
// tilings every case runs on, and the comparison against the materialised logits' divergence.
#ifndef XENT_TESTS_LINEAR_DIVERGENCE_SUPPORT_HPP
#define XENT_TESTS_LINEAR_DIVERGENCE_SUPPORT_HPP

#include "support.hpp"

#include <xent/losses/linear_divergence.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <random>
#include <type_traits>

namespace xent_test::linear {

template <class T>
double budget() {
  return std::is_same_v<T, double> ? 1e-14 : 8 * double(std::numeric_limits<float>::epsilon());
}

inline matrix<double> random_matrix(Eigen::Index r, Eigen::Index c, double scale, std::mt19937& gen) {
  std::normal_distribution<double> d(0, scale);
  matrix<double> m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = d(gen);
  return m;
}

struct variant {
  const char* name;
  xent::weight_layout layout;
  bool v_by_d;
  Eigen::Index block, sample_block;
  std::size_t max_block_bytes;
};

inline const variant variants[] = {
    {"D x V, defaults", xent::weight_layout::deduce, false, 0, 0, std::size_t(256) << 20},
    {"V x D, defaults", xent::weight_layout::vocab_by_hidden, true, 0, 0, std::size_t(256) << 20},
    {"D x V, tiles of 7 x 3", xent::weight_layout::hidden_by_vocab, false, 7, 3, std::size_t(256) << 20},
    {"V x D, tiles of 16 x 1, recomputed", xent::weight_layout::deduce, true, 16, 1, 0},
    {"D x V, tiles of 1 x 4, recomputed", xent::weight_layout::deduce, false, 1, 4, 0},
};

struct worst {
  double loss = 0, grad = 0;
};

template <class T>
double max_error(const matrix<double>& ref, const matrix<T>& got, double condition) {
  REQUIRE(ref.rows() == got.rows());
  REQUIRE(ref.cols() == got.cols());
  const double scale = std::max(ref.cwiseAbs().maxCoeff(), 1e-300) * condition;
  double e = 0;
  for (Eigen::Index i = 0; i < ref.size(); ++i) e = std::max(e, error_of(double(got.data()[i]), ref.data()[i], scale));
  return e;
}

inline xent::divergence_options divergence_options_of(const xent::linear_divergence_options& o) {
  xent::divergence_options d;
  d.kind = o.kind;
  d.beta = o.beta;
  d.temperature = o.temperature;
  d.teacher_temperature = o.teacher_temperature;
  d.scale_by_temperature_squared = o.scale_by_temperature_squared;
  d.reduction = o.reduction;
  d.sample_weight = o.sample_weight;
  d.mask = o.mask;
  d.normalizer = o.normalizer;
  d.num_threads = 1;
  return d;
}

}  // namespace xent_test::linear

#endif
