// Per-sample weights, masks and the external normalizer of the per-sample losses (issue 16, items 1
// and 3): against torch 1.13 float64 compositions (tests/reference/sample_weight_cases.txt, from
// tests/reference/gen_sample_weight_reference.py), the identities that define them (weights of 1 and
// an all-true mask change nothing, a false mask is ignore_index, an integer weight is that many
// copies), micro-batches with a global normalizer equal to one batch, finite differences, and the
// bad input each option can bring.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
using index_vector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

const std::vector<xent_test::reference_case>& cases() {
  static const auto all = xent_test::read_reference(xent_test::reference_path("sample_weight_cases.txt"));
  return all;
}

enum class loss_kind { cross_entropy, cross_entropy_probs, nll_loss, softmax_focal_loss, generalized_cross_entropy, divergence };

constexpr std::array<xent::reduction, 4> reductions{xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                                    xent::reduction::batchmean};

Eigen::VectorXd doubles(const std::vector<long double>& v) {
  Eigen::VectorXd out(Eigen::Index(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(Eigen::Index(i)) = double(v[i]);
  return out;
}

/// The weighting options of a reference case, into any options struct.
template <class Options>
void weighting_of(const xent_test::reference_case& c, Options& o) {
  o.reduction = reductions[std::size_t(c["reduction"][0])];
  if (c.has("sample_weight")) o.sample_weight = doubles(c["sample_weight"]);
  if (c.has("mask")) o.mask = doubles(c["mask"]).array() != 0;
  if (c.has("normalizer")) o.normalizer = double(c["normalizer"][0]);
}

/// What a case's loss returns and its gradient, from the forward, the _with_grad and the _backward
/// calls (each held to the reference, so that all three read the weighting the same way).
template <class T>
struct outcome {
  xent::loss_result<T> forward;
  xent::loss_result<T> with_grad;
  matrix<T> grad_with_grad, grad_backward;
};

template <class T, class Forward, class WithGrad, class Backward>
outcome<T> run_three(const xent_test::reference_case& c, Eigen::Index C, Eigen::Index N, Forward&& forward, WithGrad&& with_grad,
                     Backward&& backward) {
  matrix<T> g1(C, N), g2(C, N);
  auto fwd = forward();
  auto wg = with_grad(g1);
  const bool reduced = reductions[std::size_t(c["reduction"][0])] != xent::reduction::none;
  if (reduced) {
    backward(static_cast<T>(c["grad_out"][0]), g2);
  } else {
    const vector<T> go = doubles(c["grad_out"]).cast<T>();
    backward(go, g2);
  }
  if (!reduced) g1 = g1 * doubles(c["grad_out"]).cast<T>().asDiagonal();  // with_grad seeds 1 per sample
  else g1 *= static_cast<T>(c["grad_out"][0]);
  return {std::move(fwd), std::move(wg), g1, g2};
}

template <class T>
outcome<T> run_case(const xent_test::reference_case& c) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const matrix<T> x = xent_test::as_matrix<T>(c["logits"], C, N);
  index_vector targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = std::int64_t(c["target"][std::size_t(j)]);
  const auto kind = static_cast<loss_kind>(int(c["loss"][0]));
  auto three = [&](const auto& opts, auto&& fwd, auto&& wg, auto&& bwd) { return run_three<T>(c, C, N, fwd, wg, bwd); };
  switch (kind) {
    case loss_kind::cross_entropy:
    case loss_kind::cross_entropy_probs: {
      xent::cross_entropy_options o;
      weighting_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      if (kind == loss_kind::cross_entropy)
        return three(o, [&] { return xent::cross_entropy(x, targets, o); },
                     [&](matrix<T>& g) { return xent::cross_entropy_with_grad(x, targets, o, g); },
                     [&](const auto& go, matrix<T>& g) { xent::cross_entropy_backward(x, targets, go, o, g); });
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::nll_loss: {
      xent::nll_loss_options o;
      weighting_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      return three(o, [&] { return xent::nll_loss(x, targets, o); },
                   [&](matrix<T>& g) { return xent::nll_loss_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::nll_loss_backward(x, targets, go, o, g); });
    }
    case loss_kind::softmax_focal_loss: {
      xent::softmax_focal_loss_options o;
      weighting_of(c, o);
      o.alpha = doubles(c["alpha"]);
      o.gamma = double(c["gamma"][0]);
      return three(o, [&] { return xent::softmax_focal_loss(x, targets, o); },
                   [&](matrix<T>& g) { return xent::softmax_focal_loss_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::softmax_focal_loss_backward(x, targets, go, o, g); });
    }
    case loss_kind::generalized_cross_entropy: {
      xent::generalized_cross_entropy_options o;
      weighting_of(c, o);
      o.q = double(c["q"][0]);
      return three(o, [&] { return xent::generalized_cross_entropy(x, targets, o); },
                   [&](matrix<T>& g) { return xent::generalized_cross_entropy_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::generalized_cross_entropy_backward(x, targets, go, o, g); });
    }
    case loss_kind::divergence: {
      xent::divergence_options o;
      weighting_of(c, o);
      o.temperature = double(c["T"][0]);
      const matrix<T> t = xent_test::as_matrix<T>(c["teacher"], C, N);
      return three(o, [&] { return xent::divergence(x, t, targets, o); },
                   [&](matrix<T>& g) { return xent::divergence_with_grad(x, t, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::divergence_backward(x, t, targets, go, o, g); });
    }
  }
  throw std::runtime_error("unknown loss in " + c.name);
}

/// The largest error of a result against the case's value, relative to max(|ref|, 1), and of the
/// gradients relative to the case's largest gradient entry.
template <class T>
std::array<double, 2> errors_of(const xent_test::reference_case& c, const outcome<T>& o) {
  const auto& ref = c["value"];
  double value_error = 0;
  for (const auto* r : {&o.forward, &o.with_grad}) {
    if (r->reduction() == xent::reduction::none) {
      REQUIRE(std::size_t(r->per_sample().size()) == ref.size());
      for (std::size_t j = 0; j < ref.size(); ++j)
        value_error = std::max(value_error, xent_test::error_of(double(r->per_sample()(Eigen::Index(j))), ref[j],
                                                                std::max(std::fabs(ref[j]), 1.0L)));
    } else {
      value_error = std::max(value_error, xent_test::error_of(double(r->value()), ref[0], std::max(std::fabs(ref[0]), 1.0L)));
    }
    CHECK(r->denominator() == Approx(double(c["denominator"][0])).epsilon(1e-14));
  }
  const auto& g = c["grad"];
  long double scale = std::numeric_limits<long double>::min();
  for (long double v : g) scale = std::max(scale, std::fabs(v));
  double grad_error = 0;
  for (const matrix<T>* m : {&o.grad_with_grad, &o.grad_backward})
    for (Eigen::Index i = 0; i < m->size(); ++i)
      grad_error = std::max(grad_error, xent_test::error_of(double(m->data()[i]), g[std::size_t(i)], scale));
  return {value_error, grad_error};
}

}  // namespace

TEST_CASE("sample weights, masks and normalizers match torch 1.13 float64 compositions", "[sample_weight]") {
  double worst_double[2] = {0, 0}, worst_float[2] = {0, 0};
  for (const auto& c : cases()) {
    INFO(c.name);
    const auto d = errors_of(c, run_case<double>(c));
    CHECK(d[0] <= 2e-15);
    CHECK(d[1] <= 2e-15);
    const auto f = errors_of(c, run_case<float>(c));
    constexpr double eps = std::numeric_limits<float>::epsilon();
    CHECK(f[0] <= 6 * eps);
    CHECK(f[1] <= 6 * eps);
    for (int k = 0; k < 2; ++k) {
      worst_double[k] = std::max(worst_double[k], d[k]);
      worst_float[k] = std::max(worst_float[k], f[k] / eps);
    }
  }
  WARN("sample_weight_cases (" << cases().size() << " cases): double loss " << worst_double[0] << ", gradient "
                                << worst_double[1] << "; float loss " << worst_float[0] << " eps, gradient "
                                << worst_float[1] << " eps");
}
