// The error policy: misuse throws xent::invalid_argument (a std::invalid_argument) whose message
// names the function, the argument, what was expected and what was got.

#include <xent/xent.hpp>

#include "misuse.hpp"

#include <catch2/catch.hpp>

#include <functional>
#include <string>

TEST_CASE("misuse throws xent::invalid_argument naming function, argument, expectation and value", "[errors]") {
  const Eigen::MatrixXf x = Eigen::MatrixXf::Random(5, 3);
  const Eigen::MatrixXf empty_classes(0, 3), empty_samples(5, 0);
  Eigen::VectorXf short_out(2);
  Eigen::MatrixXf wrong_shape(3, 5);

  const xent_test::misuse cases[] = {
      {"dim 2", [&] { (void)xent::logsumexp(x, 2); }, "logsumexp", "dim", "must be 0", "got 2"},
      {"dim -1", [&] { (void)xent::softmax(x, -1); }, "softmax", "dim", "must be 0", "got -1"},
      {"dim 5 on log_softmax", [&] { (void)xent::log_softmax(x, 5); }, "log_softmax", "dim", "must be 0", "got 5"},
      {"no classes", [&] { (void)xent::logsumexp(empty_classes); }, "logsumexp", "x", "must not be empty", "got 0 x 3"},
      {"no samples", [&] { (void)xent::softmax(empty_samples); }, "softmax", "x", "must not be empty", "got 5 x 0"},
      {"empty partials", [&] { (void)xent::logsumexp_partials(empty_samples); }, "logsumexp_partials", "x", "must not be empty", "got 5 x 0"},
      {"short out", [&] { xent::logsumexp_into(x, short_out); }, "logsumexp_into", "out", "one entry per sample (3)", "got 2"},
      {"short out, dim 1", [&] { xent::logsumexp_into(x, Eigen::VectorXf(4), 1); }, "logsumexp_into", "out", "one entry per sample (5)", "got 4"},
      {"transposed out", [&] { xent::softmax_into(x, wrong_shape); }, "softmax_into", "out", "the shape of x (5 x 3)", "got 3 x 5"},
      {"log_softmax out", [&] { xent::log_softmax_into(x, Eigen::MatrixXf(5, 2)); }, "log_softmax_into", "out", "the shape of x (5 x 3)", "got 5 x 2"},
  };
  xent_test::check_misuse(cases);
  // Callers who only know the standard hierarchy can catch it too.
  CHECK_THROWS_AS(xent::logsumexp(x, 3), std::invalid_argument);
}
