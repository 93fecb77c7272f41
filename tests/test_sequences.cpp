// Sequence reductions (issue 16, item 2b): reduction::sequence_mean and reduction::per_sequence with
// the options' sequence_lengths, for every per-sample loss that has them. Against torch 1.13 float64
// compositions (tests/reference/sequence_cases.txt, from tests/reference/gen_sequence_reference.py:
// per-sequence weighted means of torch's reduction='none' losses, then their mean), the identities
// that define them (one sequence is the weighted mean; uniform T equals T, T, ... as ragged lengths;
// a sequence mean is the mean of the per-sequence losses), linear_cross_entropy against
// cross_entropy of its logits, finite differences, and the bad input each option can bring.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("sequence_cases.txt"); }

enum class loss_kind {
  cross_entropy, cross_entropy_probs, nll_loss, softmax_focal_loss, generalized_cross_entropy, divergence,
  binary_cross_entropy, binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss
};

constexpr std::array<xent::reduction, 6> reductions{xent::reduction::none,      xent::reduction::mean,
                                                    xent::reduction::sum,       xent::reduction::batchmean,
                                                    xent::reduction::sequence_mean, xent::reduction::per_sequence};

Eigen::VectorXd doubles(const std::vector<long double>& v) {
  Eigen::VectorXd out(Eigen::Index(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(Eigen::Index(i)) = double(v[i]);
  return out;
}

template <class Options>
void sequences_of(const xent_test::reference_case& c, Options& o) {
  o.reduction = reductions[std::size_t(c["reduction"][0])];
  for (long double l : c["lengths"]) o.sequence_lengths.push_back(Eigen::Index(l));
  if (c.has("sample_weight")) o.sample_weight = doubles(c["sample_weight"]);
  if (c.has("mask")) o.mask = doubles(c["mask"]).array() != 0;
}

template <class T>
struct outcome {
  xent::loss_result<T> forward, with_grad;
  matrix<T> grad_with_grad, grad_backward;
};

/// The forward, _with_grad and _backward calls of a case; the _with_grad gradient (seeded 1 per
/// sequence for per_sequence) is scaled to the case's grad_out where that is a number.
template <class T, class Forward, class WithGrad, class Backward>
outcome<T> run_three(const xent_test::reference_case& c, Eigen::Index C, Eigen::Index N, Forward&& forward, WithGrad&& with_grad,
                     Backward&& backward) {
  matrix<T> g1(C, N), g2(C, N);
  auto fwd = forward();
  auto wg = with_grad(g1);
  if (reductions[std::size_t(c["reduction"][0])] == xent::reduction::per_sequence) {
    const vector<T> go = doubles(c["grad_out"]).cast<T>();
    backward(go, g2);
    // with_grad's gradient is the sum's: check it against the backward of ones.
    matrix<T> g3(C, N);
    const vector<T> ones = vector<T>::Ones(go.size());
    backward(ones, g3);
    // Two calls of one kernel, but in float the fused with_grad and the backward may round an
    // entry differently (the small-class lane blocks): within 2 eps of the largest entry.
    CHECK((g1 - g3).cwiseAbs().maxCoeff() <= 2 * std::numeric_limits<T>::epsilon() * g3.cwiseAbs().maxCoeff());
    g1 = g2;
  } else {
    backward(static_cast<T>(c["grad_out"][0]), g2);
    g1 *= static_cast<T>(c["grad_out"][0]);
  }
  return {std::move(fwd), std::move(wg), g1, g2};
}

template <class T>
outcome<T> run_case(const xent_test::reference_case& c) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const matrix<T> x = xent_test::as_matrix<T>(c["logits"], C, N);
  index_vector targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = c.has("target") ? std::int64_t(c["target"][std::size_t(j)]) : 0;
  auto three = [&](auto&& fwd, auto&& wg, auto&& bwd) { return run_three<T>(c, C, N, fwd, wg, bwd); };
  switch (static_cast<loss_kind>(int(c["loss"][0]))) {
    case loss_kind::cross_entropy:
    case loss_kind::cross_entropy_probs: {
      xent::cross_entropy_options o;
      sequences_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      if (int(c["loss"][0]) == int(loss_kind::cross_entropy))
        return three([&] { return xent::cross_entropy(x, targets, o); },
                     [&](matrix<T>& g) { return xent::cross_entropy_with_grad(x, targets, o, g); },
                     [&](const auto& go, matrix<T>& g) { xent::cross_entropy_backward(x, targets, go, o, g); });
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three([&] { return xent::cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::nll_loss: {
      xent::nll_loss_options o;
      sequences_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      return three([&] { return xent::nll_loss(x, targets, o); },
                   [&](matrix<T>& g) { return xent::nll_loss_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::nll_loss_backward(x, targets, go, o, g); });
    }
    case loss_kind::softmax_focal_loss: {
      xent::softmax_focal_loss_options o;
      sequences_of(c, o);
      o.alpha = doubles(c["alpha"]);
      o.gamma = double(c["gamma"][0]);
      return three([&] { return xent::softmax_focal_loss(x, targets, o); },
                   [&](matrix<T>& g) { return xent::softmax_focal_loss_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::softmax_focal_loss_backward(x, targets, go, o, g); });
    }
    case loss_kind::generalized_cross_entropy: {
      xent::generalized_cross_entropy_options o;
      sequences_of(c, o);
      o.q = double(c["q"][0]);
      return three([&] { return xent::generalized_cross_entropy(x, targets, o); },
                   [&](matrix<T>& g) { return xent::generalized_cross_entropy_with_grad(x, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::generalized_cross_entropy_backward(x, targets, go, o, g); });
    }
    case loss_kind::divergence: {
      xent::divergence_options o;
      sequences_of(c, o);
      o.temperature = double(c["T"][0]);
      const matrix<T> t = xent_test::as_matrix<T>(c["teacher"], C, N);
      return three([&] { return xent::divergence(x, t, targets, o); },
                   [&](matrix<T>& g) { return xent::divergence_with_grad(x, t, targets, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::divergence_backward(x, t, targets, go, o, g); });
    }
    case loss_kind::binary_cross_entropy: {
      xent::binary_cross_entropy_options<T> o;
      sequences_of(c, o);
      o.weight = doubles(c["class_weight"]).cast<T>();
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three([&] { return xent::binary_cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::binary_cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::binary_cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::binary_cross_entropy_with_logits: {
      xent::binary_cross_entropy_with_logits_options<T> o;
      sequences_of(c, o);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      o.weight = doubles(c["class_weight"]).cast<T>();
      o.pos_weight = doubles(c["pos_weight"]).cast<T>();
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three([&] { return xent::binary_cross_entropy_with_logits(x, y, o); },
                   [&](matrix<T>& g) { return xent::binary_cross_entropy_with_logits_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::binary_cross_entropy_with_logits_backward(x, y, go, o, g); });
    }
    case loss_kind::kl_div: {
      xent::kl_div_options o;
      sequences_of(c, o);
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three([&] { return xent::kl_div(x, y, o); }, [&](matrix<T>& g) { return xent::kl_div_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::kl_div_backward(x, y, go, o, g); });
    }
    case loss_kind::sigmoid_focal_loss: {
      xent::sigmoid_focal_loss_options o;
      sequences_of(c, o);
      o.alpha = double(c["alpha"][0]);
      o.gamma = double(c["gamma"][0]);
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three([&] { return xent::sigmoid_focal_loss(x, y, o); },
                   [&](matrix<T>& g) { return xent::sigmoid_focal_loss_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::sigmoid_focal_loss_backward(x, y, go, o, g); });
    }
  }
  throw std::runtime_error("unknown loss in " + c.name);
}

/// The largest error of the values (relative to max(|ref|, 1); NaN must meet NaN) and of the
/// gradients (relative to the case's largest gradient entry).
template <class T>
std::array<double, 2> errors_of(const xent_test::reference_case& c, const outcome<T>& o) {
  const auto& ref = c["value"];
  double value_error = 0;
  for (const auto* r : {&o.forward, &o.with_grad}) {
    if (r->reduction() == xent::reduction::per_sequence) {
      REQUIRE(std::size_t(r->per_sequence().size()) == ref.size());
      for (std::size_t s = 0; s < ref.size(); ++s) {
        const double got = double(r->per_sequence()(Eigen::Index(s)));
        if (std::isnan(ref[s])) {
          CHECK(std::isnan(got));
          continue;
        }
        value_error = std::max(value_error, xent_test::error_of(got, ref[s], std::max(std::fabs(ref[s]), 1.0L)));
      }
    } else {
      REQUIRE(r->reduction() == xent::reduction::sequence_mean);
      value_error = std::max(value_error, xent_test::error_of(double(r->value()), ref[0], std::max(std::fabs(ref[0]), 1.0L)));
    }
    CHECK(r->denominator() == double(c["denominator"][0]));
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

TEST_CASE("sequence_mean and per_sequence match torch 1.13 float64 compositions", "[sequence]") {
  REQUIRE(cases().size() >= 60);
  double worst_double[2] = {0, 0}, worst_float[2] = {0, 0};
  for (const auto& c : cases()) {
    INFO(c.name);
    const auto d = errors_of(c, run_case<double>(c));
    CHECK(d[0] <= 2e-15);
    CHECK(d[1] <= 4e-15);
    const auto f = errors_of(c, run_case<float>(c));
    constexpr double eps = std::numeric_limits<float>::epsilon();
    CHECK(f[0] <= 6 * eps);
    CHECK(f[1] <= 6 * eps);
    for (int k = 0; k < 2; ++k) {
      worst_double[k] = std::max(worst_double[k], d[k]);
      worst_float[k] = std::max(worst_float[k], f[k] / eps);
    }
  }
  WARN("sequence_cases (" << cases().size() << " cases): double loss " << worst_double[0] << ", gradient " << worst_double[1]
                          << "; float loss " << worst_float[0] << " eps, gradient " << worst_float[1] << " eps");
}
