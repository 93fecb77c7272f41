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

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("sample_weight_cases.txt"); }

enum class loss_kind {
  cross_entropy, cross_entropy_probs, nll_loss, softmax_focal_loss, generalized_cross_entropy, divergence,
  binary_cross_entropy, binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss, poly1_cross_entropy,
  poly1_cross_entropy_probs, cross_entropy_other_classes, categorical_cross_entropy, categorical_cross_entropy_probs
};

bool is_elementwise(const xent_test::reference_case& c) {
  const int k = int(c["loss"][0]);
  return k >= int(loss_kind::binary_cross_entropy) && k <= int(loss_kind::sigmoid_focal_loss);
}

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
  const bool elementwise = is_elementwise(c);
  if (reduced) {
    backward(static_cast<T>(c["grad_out"][0]), g2);
    g1 *= static_cast<T>(c["grad_out"][0]);
  } else if (elementwise) {
    const matrix<T> go = xent_test::as_matrix<T>(c["grad_out"], C, N);
    backward(go, g2);
    g1 = g1.cwiseProduct(go);  // with_grad seeds 1 per element
  } else {
    const vector<T> go = doubles(c["grad_out"]).cast<T>();
    backward(go, g2);
    g1 = g1 * go.asDiagonal();  // with_grad seeds 1 per sample
  }
  return {std::move(fwd), std::move(wg), g1, g2};
}

template <class T>
outcome<T> run_case(const xent_test::reference_case& c) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const matrix<T> x = xent_test::as_matrix<T>(c["logits"], C, N);
  index_vector targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = c.has("target") ? std::int64_t(c["target"][std::size_t(j)]) : 0;
  const auto kind = static_cast<loss_kind>(int(c["loss"][0]));
  auto three = [&](const auto&, auto&& fwd, auto&& wg, auto&& bwd) { return run_three<T>(c, C, N, fwd, wg, bwd); };
  switch (kind) {
    case loss_kind::cross_entropy:
    case loss_kind::cross_entropy_other_classes:
    case loss_kind::cross_entropy_probs: {
      xent::cross_entropy_options o;
      weighting_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      if (kind == loss_kind::cross_entropy_other_classes) o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
      if (kind != loss_kind::cross_entropy_probs)
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
    case loss_kind::poly1_cross_entropy:
    case loss_kind::poly1_cross_entropy_probs: {
      xent::poly1_cross_entropy_options o;
      weighting_of(c, o);
      if (c.has("class_weight")) o.weight = doubles(c["class_weight"]);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      o.epsilon = double(c["epsilon"][0]);
      if (kind == loss_kind::poly1_cross_entropy)
        return three(o, [&] { return xent::poly1_cross_entropy(x, targets, o); },
                     [&](matrix<T>& g) { return xent::poly1_cross_entropy_with_grad(x, targets, o, g); },
                     [&](const auto& go, matrix<T>& g) { xent::poly1_cross_entropy_backward(x, targets, go, o, g); });
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::poly1_cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::poly1_cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::poly1_cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::categorical_cross_entropy:
    case loss_kind::categorical_cross_entropy_probs: {
      xent::categorical_cross_entropy_options o;
      weighting_of(c, o);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      if (kind == loss_kind::categorical_cross_entropy)
        return three(o, [&] { return xent::categorical_cross_entropy(x, targets, o); },
                     [&](matrix<T>& g) { return xent::categorical_cross_entropy_with_grad(x, targets, o, g); },
                     [&](const auto& go, matrix<T>& g) { xent::categorical_cross_entropy_backward(x, targets, go, o, g); });
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::categorical_cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::categorical_cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::categorical_cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::binary_cross_entropy: {
      xent::binary_cross_entropy_options<T> o;
      weighting_of(c, o);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      o.weight = doubles(c["class_weight"]).cast<T>();
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::binary_cross_entropy(x, y, o); },
                   [&](matrix<T>& g) { return xent::binary_cross_entropy_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::binary_cross_entropy_backward(x, y, go, o, g); });
    }
    case loss_kind::binary_cross_entropy_with_logits: {
      xent::binary_cross_entropy_with_logits_options<T> o;
      weighting_of(c, o);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      o.weight = doubles(c["class_weight"]).cast<T>();
      o.pos_weight = doubles(c["pos_weight"]).cast<T>();
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::binary_cross_entropy_with_logits(x, y, o); },
                   [&](matrix<T>& g) { return xent::binary_cross_entropy_with_logits_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::binary_cross_entropy_with_logits_backward(x, y, go, o, g); });
    }
    case loss_kind::kl_div: {
      xent::kl_div_options o;
      weighting_of(c, o);
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::kl_div(x, y, o); }, [&](matrix<T>& g) { return xent::kl_div_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::kl_div_backward(x, y, go, o, g); });
    }
    case loss_kind::sigmoid_focal_loss: {
      xent::sigmoid_focal_loss_options o;
      weighting_of(c, o);
      if (c.has("smoothing")) o.label_smoothing = double(c["smoothing"][0]);
      o.alpha = double(c["alpha"][0]);
      o.gamma = double(c["gamma"][0]);
      const matrix<T> y = xent_test::as_matrix<T>(c["probs"], C, N);
      return three(o, [&] { return xent::sigmoid_focal_loss(x, y, o); },
                   [&](matrix<T>& g) { return xent::sigmoid_focal_loss_with_grad(x, y, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::sigmoid_focal_loss_backward(x, y, go, o, g); });
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
      const bool elementwise = is_elementwise(c);
      const T* got = elementwise ? r->elementwise().data() : r->per_sample().data();
      REQUIRE(std::size_t(elementwise ? r->elementwise().size() : r->per_sample().size()) == ref.size());
      for (std::size_t j = 0; j < ref.size(); ++j)
        value_error = std::max(value_error, xent_test::error_of(double(got[j]), ref[j], std::max(std::fabs(ref[j]), 1.0L)));
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
  WARN("sample_weight_cases (" << cases().size() << " cases): double loss " << worst_double[0] << ", gradient "
                                << worst_double[1] << "; float loss " << worst_float[0] << " eps, gradient "
                                << worst_float[1] << " eps");
}

namespace {

/// Targets in [0, C) with every fifth sample ignored.
index_vector random_targets(Eigen::Index N, Eigen::Index C) {
  index_vector t(N);
  std::uniform_int_distribution<std::int64_t> cls(0, C - 1);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 5 == 3 ? -100 : cls(xent_test::rng());
  return t;
}

Eigen::VectorXd random_weights(Eigen::Index N) {
  std::uniform_real_distribution<double> u(0.0, 2.0);
  Eigen::VectorXd w(N);
  for (Eigen::Index j = 0; j < N; ++j) w(j) = u(xent_test::rng());
  return w;
}

xent::sample_mask random_mask(Eigen::Index N) {
  std::bernoulli_distribution keep(0.8);
  xent::sample_mask m(N);
  for (Eigen::Index j = 0; j < N; ++j) m(j) = keep(xent_test::rng());
  return m;
}

}  // namespace

TEST_CASE("weights of 1 and an all-true mask change nothing, and a false mask is ignore_index", "[sample_weight]") {
  const Eigen::Index C = 37, N = 101;
  const matrix<float> x = xent_test::random_logits<float>(C, N);
  const index_vector t = random_targets(N, C);
  for (const double smoothing : {0.0, 0.1}) {
    xent::cross_entropy_options plain;
    plain.label_smoothing = smoothing;
    plain.weight = random_weights(C).array() + 0.5;
    xent::cross_entropy_options ones = plain;
    ones.sample_weight = Eigen::VectorXd::Ones(N);
    ones.mask = xent::sample_mask::Constant(N, true);
    matrix<float> g_plain(C, N), g_ones(C, N);
    const auto a = xent::cross_entropy_with_grad(x, t, plain, g_plain);
    const auto b = xent::cross_entropy_with_grad(x, t, ones, g_ones);
    CHECK(a.value() == b.value());  // the same bits: a weight of 1 multiplies nothing away
    CHECK(a.denominator() == b.denominator());
    CHECK((g_plain.array() == g_ones.array()).all());

    // mask false on samples 0, 7, 50 is the same as ignore_index there.
    xent::cross_entropy_options masked = plain;
    masked.mask = xent::sample_mask::Constant(N, true);
    index_vector ignored = t;
    for (Eigen::Index j : {0, 7, 50}) {
      masked.mask(j) = false;
      ignored(j) = -100;
    }
    matrix<float> g_masked(C, N), g_ignored(C, N);
    const auto m = xent::cross_entropy_with_grad(x, t, masked, g_masked);
    const auto i = xent::cross_entropy_with_grad(x, ignored, plain, g_ignored);
    CHECK(m.value() == i.value());
    CHECK(m.denominator() == i.denominator());
    CHECK((g_masked.array() == g_ignored.array()).all());
  }
}

TEST_CASE("an integer sample weight is that many copies of the sample", "[sample_weight]") {
  const Eigen::Index C = 9, N = 12;
  const matrix<double> x = xent_test::random_logits<double>(C, N);
  const index_vector t = random_targets(N, C);
  Eigen::VectorXd w(N);
  std::vector<Eigen::Index> copies;
  for (Eigen::Index j = 0; j < N; ++j) {
    w(j) = double(j % 4);
    for (int k = 0; k < j % 4; ++k) copies.push_back(j);
  }
  matrix<double> xc(C, Eigen::Index(copies.size()));
  index_vector tc(Eigen::Index(copies.size()));
  for (std::size_t k = 0; k < copies.size(); ++k) {
    xc.col(Eigen::Index(k)) = x.col(copies[k]);
    tc(Eigen::Index(k)) = t(copies[k]);
  }
  xent::softmax_focal_loss_options o;
  o.sample_weight = w;
  const auto weighted = xent::softmax_focal_loss(x, t, o);
  const auto repeated = xent::softmax_focal_loss(xc, tc, xent::softmax_focal_loss_options{});
  CHECK(weighted.value() == Approx(repeated.value()).epsilon(4e-16));
  CHECK(weighted.denominator() == repeated.denominator());
  xent::divergence_options d;
  d.sample_weight = w;
  const matrix<double> teacher = xent_test::random_logits<double>(C, N);
  matrix<double> tcopy(C, xc.cols());
  for (std::size_t k = 0; k < copies.size(); ++k) tcopy.col(Eigen::Index(k)) = teacher.col(copies[k]);
  CHECK(xent::divergence(x, teacher, t, d).value() ==
        Approx(xent::divergence(xc, tcopy, tc, xent::divergence_options{}).value()).epsilon(4e-16));
}

TEST_CASE("a masked sample is never read: NaN there changes nothing", "[sample_weight]") {
  const Eigen::Index C = 50, N = 40;
  matrix<float> x = xent_test::random_logits<float>(C, N);
  const index_vector t = random_targets(N, C);
  xent::cross_entropy_options o;
  o.mask = random_mask(N);
  o.mask(3) = false;
  o.sample_weight = random_weights(N);
  matrix<float> g_clean(C, N), g_nan(C, N);
  const auto clean = xent::cross_entropy_with_grad(x, t, o, g_clean);
  for (Eigen::Index j = 0; j < N; ++j)
    if (!o.mask(j)) x.col(j).setConstant(std::numeric_limits<float>::quiet_NaN());
  const auto poisoned = xent::cross_entropy_with_grad(x, t, o, g_nan);
  REQUIRE(std::isfinite(clean.value()));
  CHECK(clean.value() == poisoned.value());
  CHECK((g_clean.array() == g_nan.array()).all());
  for (Eigen::Index j = 0; j < N; ++j)
    if (!o.mask(j)) CHECK((g_nan.col(j).array() == 0).all());
  // The same for a loss without class-index targets (probability targets) and for divergence.
  matrix<float> y = xent::softmax(xent_test::random_logits<float>(C, N));
  xent::cross_entropy_options p;
  p.mask = o.mask;
  const float prob = xent::cross_entropy(x, y, p).value();
  CHECK(std::isfinite(prob));
  xent::divergence_options d;
  d.mask = o.mask;
  CHECK(std::isfinite(xent::divergence(x, y.array().log().matrix(), d).value()));

  // The elementwise losses: a masked sample's NaN logits and out-of-range targets are neither read
  // nor reported, along either class axis.
  for (const int dim : {0, 1}) {
    const Eigen::Index rows = dim == 0 ? C : N, cols = dim == 0 ? N : C;
    matrix<float> logits = xent_test::random_logits<float>(rows, cols);
    matrix<float> targets = (xent_test::random_logits<float>(rows, cols).array() > 0).cast<float>();
    xent::binary_cross_entropy_with_logits_options<float> b;
    b.dim = dim;
    b.mask = o.mask;
    b.sample_weight = o.sample_weight;
    b.sample_weight(5) = 0;  // a zero weight is left out the same way
    matrix<float> g_clean(rows, cols), g_poisoned(rows, cols);
    const float clean_value = xent::binary_cross_entropy_with_logits_with_grad(logits, targets, b, g_clean).value();
    for (Eigen::Index j = 0; j < N; ++j)
      if (!o.mask(j) || j == 5) {
        if (dim == 0) {
          logits.col(j).setConstant(std::numeric_limits<float>::quiet_NaN());
          targets.col(j).setConstant(7);
        } else {
          logits.row(j).setConstant(std::numeric_limits<float>::quiet_NaN());
          targets.row(j).setConstant(7);
        }
      }
    const float poisoned_value = xent::binary_cross_entropy_with_logits_with_grad(logits, targets, b, g_poisoned).value();
    CHECK(std::isfinite(clean_value));
    CHECK(clean_value == poisoned_value);
    CHECK((g_clean.array() == g_poisoned.array()).all());
  }
}

TEMPLATE_TEST_CASE("micro-batches with the global normalizer sum to the whole batch's mean", "[sample_weight]", float, double) {
  using T = TestType;
  const Eigen::Index C = 300, N = 4096, parts = 4;
  const matrix<T> x = xent_test::random_logits<T>(C, N);
  const index_vector t = random_targets(N, C);
  xent::cross_entropy_options whole;
  whole.label_smoothing = 0.1;
  whole.sample_weight = random_weights(N);
  whole.mask = random_mask(N);
  matrix<T> g_whole(C, N);
  const auto big = xent::cross_entropy_with_grad(x, t, whole, g_whole);
  // What a training loop knows before its micro-batches: the whole batch's denominator (here, a
  // first pass; across ranks, one allreduce_sum of each rank's).
  const double global = big.denominator();
  double summed = 0;
  matrix<T> g_parts(C, N);
  const Eigen::Index n = N / parts;
  double denominators = 0;
  for (Eigen::Index k = 0; k < parts; ++k) {
    xent::cross_entropy_options part = whole;
    part.sample_weight = whole.sample_weight.segment(k * n, n);
    part.mask = whole.mask.segment(k * n, n);
    part.normalizer = global;
    matrix<T> g(C, n);
    const auto r = xent::cross_entropy_with_grad(x.middleCols(k * n, n), t.segment(k * n, n), part, g);
    summed += double(r.value());
    denominators += r.denominator();
    g_parts.middleCols(k * n, n) = g;
  }
  CHECK(denominators == Approx(global).epsilon(1e-15));
  const double ulp = double(std::numeric_limits<T>::epsilon()) * std::fabs(double(big.value()));
  CHECK(std::fabs(summed - double(big.value())) <= 4 * ulp);
  // Each token's gradient is the whole batch's: the same upstream 1 / global times its weight.
  CHECK((g_parts.array() == g_whole.array()).all());
  // sum with the normalizer is the same number as mean with it (Keras's sum / N by name).
  xent::cross_entropy_options keras = whole;
  keras.reduction = xent::reduction::sum;
  keras.normalizer = double(N);
  xent::cross_entropy_options total = whole;
  total.reduction = xent::reduction::sum;
  CHECK(double(xent::cross_entropy(x, t, keras).value()) ==
        Approx(double(xent::cross_entropy(x, t, total).value()) / double(N)).epsilon(2 * std::numeric_limits<T>::epsilon()));
}

TEST_CASE("sample-weighted gradients agree with finite differences", "[sample_weight]") {
  const Eigen::Index C = 6, N = 8;
  matrix<double> x = xent_test::random_logits<double>(C, N);
  const index_vector t = random_targets(N, C);
  xent::generalized_cross_entropy_options g;
  g.sample_weight = random_weights(N);
  g.mask = random_mask(N);
  g.normalizer = 3.25;
  xent::cross_entropy_options ce;
  ce.sample_weight = g.sample_weight;
  ce.mask = g.mask;
  ce.label_smoothing = 0.2;
  double worst = 0;
  auto check = [&](auto&& loss, auto&& with_grad) {
    matrix<double> grad(C, N);
    with_grad(grad);
    for (Eigen::Index i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::fabs(grad.data()[i] - xent_test::central_difference(x, i, loss)));
  };
  check([&](const matrix<double>& m) { return xent::generalized_cross_entropy(m, t, g).value(); },
        [&](matrix<double>& out) { xent::generalized_cross_entropy_with_grad(x, t, g, out); });
  check([&](const matrix<double>& m) { return xent::cross_entropy(m, t, ce).value(); },
        [&](matrix<double>& out) { xent::cross_entropy_with_grad(x, t, ce, out); });
  CHECK(worst <= 1e-9);
  WARN("finite differences, weighted and masked gce and cross_entropy: " << worst);
}

TEST_CASE("bad sample weights, masks and normalizers are named errors", "[sample_weight][errors]") {
  const matrix<float> x = matrix<float>::Zero(4, 3);
  const index_vector t = index_vector::Zero(3);
  auto ce = [&](auto&& set) {
    return [&x, &t, set] {
      xent::cross_entropy_options o;
      set(o);
      (void)xent::cross_entropy(x, t, o);
    };
  };
  const xent_test::misuse table[] = {
      {"a weight per class, not per sample", ce([](auto& o) { o.sample_weight = Eigen::VectorXd::Ones(4); }),
       "cross_entropy", "sample_weight", "one entry per sample (3)", "4"},
      {"a negative weight", ce([](auto& o) { o.sample_weight = Eigen::Vector3d(1, -0.5, 1); }), "cross_entropy",
       "sample_weight[1]", "finite and >= 0", "-0.5"},
      {"a NaN weight", ce([](auto& o) { o.sample_weight = Eigen::Vector3d(1, 1, std::nan("")); }), "cross_entropy",
       "sample_weight[2]", "finite and >= 0"},
      {"an infinite weight", ce([](auto& o) { o.sample_weight = Eigen::Vector3d(HUGE_VAL, 1, 1); }), "cross_entropy",
       "sample_weight[0]", "finite and >= 0", "inf"},
      {"a mask of the wrong length", ce([](auto& o) { o.mask = xent::sample_mask::Constant(2, true); }), "cross_entropy",
       "mask", "one entry per sample (3)", "2"},
      {"a zero normalizer", ce([](auto& o) { o.normalizer = 0.0; }), "cross_entropy", "normalizer", "finite and > 0", "0"},
      {"a negative normalizer", ce([](auto& o) { o.normalizer = -2.0; }), "cross_entropy", "normalizer", "finite and > 0"},
      {"a NaN normalizer", ce([](auto& o) { o.normalizer = std::nan(""); }), "cross_entropy", "normalizer", "finite and > 0"},
      {"a normalizer without a reduction", ce([](auto& o) {
         o.normalizer = 2.0;
         o.reduction = xent::reduction::none;
       }),
       "cross_entropy", "normalizer", "mean, sum or batchmean", "none"},
      {"nll_loss's weights", [&] {
         xent::nll_loss_options o;
         o.sample_weight = Eigen::VectorXd::Ones(2);
         (void)xent::nll_loss(x, t, o);
       },
       "nll_loss", "sample_weight", "one entry per sample (3)"},
      {"probability targets' mask", [&] {
         xent::cross_entropy_options o;
         o.mask = xent::sample_mask::Constant(4, true);
         (void)xent::cross_entropy(x, x, o);
       },
       "cross_entropy", "mask", "one entry per sample (3)"},
      {"softmax_focal_loss_backward's normalizer", [&] {
         xent::softmax_focal_loss_options o;
         o.normalizer = -1.0;
         matrix<float> g(4, 3);
         xent::softmax_focal_loss_backward(x, t, 1.0f, o, g);
       },
       "softmax_focal_loss_backward", "normalizer", "finite and > 0"},
      {"generalized_cross_entropy_with_grad's weights", [&] {
         xent::generalized_cross_entropy_options o;
         o.sample_weight = Eigen::Vector3d(0, 0, -1);
         matrix<float> g(4, 3);
         (void)xent::generalized_cross_entropy_with_grad(x, t, o, g);
       },
       "generalized_cross_entropy_with_grad", "sample_weight[2]", "finite and >= 0"},
      {"binary_cross_entropy_with_logits's weights", [&] {
         xent::binary_cross_entropy_with_logits_options<float> o;
         o.sample_weight = Eigen::VectorXd::Ones(4);
         (void)xent::binary_cross_entropy_with_logits(x, x, o);
       },
       "binary_cross_entropy_with_logits", "sample_weight", "one entry per sample (3)", "4"},
      {"kl_div's normalizer without a reduction", [&] {
         xent::kl_div_options o;
         o.reduction = xent::reduction::none;
         o.normalizer = 3.0;
         (void)xent::kl_div(x, x, o);
       },
       "kl_div", "normalizer", "mean, sum or batchmean"},
      {"sigmoid_focal_loss's mask along dim 1", [&] {
         xent::sigmoid_focal_loss_options o;
         o.dim = 1;
         o.mask = xent::sample_mask::Constant(3, true);
         (void)xent::sigmoid_focal_loss(x, x, o);
       },
       "sigmoid_focal_loss", "mask", "one entry per sample (4)", "3"},
      {"other_classes smoothing over one class", [&] {
         xent::cross_entropy_options o;
         o.label_smoothing = 0.1;
         o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
         const matrix<float> one = matrix<float>::Zero(1, 3);
         (void)xent::cross_entropy(one, t, o);
       },
       "cross_entropy", "label_smoothing_kind", "at least 2 classes", "C = 1"},
      {"other_classes smoothing with probability targets", [&] {
         xent::cross_entropy_options o;
         o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
         (void)xent::cross_entropy(x, x, o);
       },
       "cross_entropy", "label_smoothing_kind", "must be uniform with probability targets"},
      {"a label_smoothing_kind outside the enum", [&] {
         xent::cross_entropy_options o;
         o.label_smoothing_kind = static_cast<xent::label_smoothing_kind>(7);
         (void)xent::cross_entropy(x, t, o);
       },
       "cross_entropy", "label_smoothing_kind", "uniform or other_classes", "7"},
      {"categorical_cross_entropy: a negative probability", [&] {
         matrix<float> p = matrix<float>::Constant(4, 3, 0.25f);
         p(2, 1) = -0.5f;
         (void)xent::categorical_cross_entropy(p, t);
       },
       "categorical_cross_entropy", "probs", "finite probabilities >= 0", "probs(2, 1) = -0.5"},
      {"categorical_cross_entropy: a sample summing to 0", [&] {
         matrix<float> p = matrix<float>::Constant(4, 3, 0.25f);
         p.col(2).setZero();
         matrix<float> g(4, 3);
         (void)xent::categorical_cross_entropy_with_grad(p, t, xent::categorical_cross_entropy_options{}, g);
       },
       "categorical_cross_entropy_with_grad", "probs", "positive sum", "sample 2"},
      {"categorical_cross_entropy: epsilon 0.5", [&] {
         xent::categorical_cross_entropy_options o;
         o.epsilon = 0.5;
         (void)xent::categorical_cross_entropy(x, t, o);
       },
       "categorical_cross_entropy", "epsilon", "(0, 0.5)"},
      {"divergence's mask", [&] {
         xent::divergence_options o;
         o.mask = xent::sample_mask::Constant(5, true);
         (void)xent::divergence(x, x, o);
       },
       "divergence", "mask", "one entry per sample (3)"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
}

TEST_CASE("linear_cross_entropy with sample weights is cross_entropy of the logits with them", "[sample_weight]") {
  const Eigen::Index D = 24, V = 301, N = 77;
  const matrix<double> hidden = xent_test::random_logits<double>(D, N, 1.0);
  const matrix<double> weight = xent_test::random_logits<double>(D, V, 0.5);
  const index_vector t = random_targets(N, V);
  xent::linear_cross_entropy_options lo;
  lo.label_smoothing = 0.1;
  lo.sample_weight = random_weights(N);
  lo.sample_weight(4) = 0;  // out of the GEMMs
  lo.mask = random_mask(N);
  // Megatron's smoothing (test_linear.cpp covers torch's).
  lo.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
  xent::cross_entropy_options co;
  co.label_smoothing = lo.label_smoothing;
  co.label_smoothing_kind = lo.label_smoothing_kind;
  co.sample_weight = lo.sample_weight;
  co.mask = lo.mask;
  for (const auto r : {xent::reduction::mean, xent::reduction::sum}) {
    for (const bool normalized : {false, true}) {
      lo.reduction = co.reduction = r;
      if (normalized) lo.normalizer = co.normalizer = 123.0;
      const matrix<double> logits = weight.transpose() * hidden;
      matrix<double> g_logits(V, N), g_hidden(D, N), g_weight(D, V);
      const double expected = xent::cross_entropy_with_grad(logits, t, co, g_logits).value();
      const auto got = xent::linear_cross_entropy_with_grad(hidden, weight, t, 1.0, lo, g_hidden, g_weight);
      CHECK(got.loss.value() == Approx(expected).epsilon(1e-13));
      CHECK(got.loss.denominator() == Approx(xent::mean_denominator(t, co)).epsilon(1e-15));
      CHECK((g_hidden - weight * g_logits).cwiseAbs().maxCoeff() <= 1e-13);
      CHECK((g_weight - hidden * g_logits.transpose()).cwiseAbs().maxCoeff() <= 1e-13);
      CHECK((g_hidden.col(4).array() == 0).all());
      lo.normalizer.reset();
      co.normalizer.reset();
    }
  }
}

TEST_CASE("poly1_cross_entropy is cross_entropy + epsilon (1 - p_t), on every path of the sweep", "[poly1]") {
  // N = 3 x C = 20000 takes the sweep's chunk-split path (threads share a sample), N = 64 x C = 10
  // the per-sample one (Poly-1 leaves the small-C lane blocks), along both class axes.
  for (const auto shape : {std::array<Eigen::Index, 2>{20000, 3}, std::array<Eigen::Index, 2>{10, 64}}) {
    const Eigen::Index C = shape[0], N = shape[1];
    const matrix<double> x = xent_test::random_logits<double>(C, N, 4.0);
    const index_vector t = random_targets(N, C);
    xent::poly1_cross_entropy_options o;
    o.epsilon = 1.5;
    o.num_threads = 2;
    xent::cross_entropy_options plain;
    plain.num_threads = 2;
    matrix<double> g_poly(C, N), g_ce(C, N);
    const double poly = xent::poly1_cross_entropy_with_grad(x, t, o, g_poly).value();
    const double ce = xent::cross_entropy_with_grad(x, t, plain, g_ce).value();
    const matrix<double> p = xent::softmax(x);
    const double denominator = xent::mean_denominator(t, plain);
    double extra = 0;
    matrix<double> g_expected = g_ce;
    for (Eigen::Index j = 0; j < N; ++j) {
      if (t(j) < 0) continue;
      const double pt = p(t(j), j);
      extra += o.epsilon * (1 - pt);
      // d (eps (1 - p_t)) / d x_k = eps p_t (p_k - [k = t]), over the mean's denominator.
      for (Eigen::Index k = 0; k < C; ++k) g_expected(k, j) += o.epsilon * pt * (p(k, j) - (k == t(j))) / denominator;
    }
    CHECK(poly == Approx(ce + extra / denominator).epsilon(1e-14));
    CHECK((g_poly - g_expected).cwiseAbs().maxCoeff() <= 1e-15);
    // The strided class axis (dim = 1 over the transposed buffer) gives the same bits.
    xent::poly1_cross_entropy_options o1 = o;
    o1.dim = 1;
    const matrix<double> xt = x.transpose();
    matrix<double> g1(N, C);
    CHECK(xent::poly1_cross_entropy_with_grad(xt, t, o1, g1).value() == poly);
    CHECK((g1.transpose().array() == g_poly.array()).all());
  }
}

TEST_CASE("poly1_cross_entropy: epsilon 0 is cross_entropy bit for bit, finite differences, a bad epsilon", "[poly1]") {
  const Eigen::Index C = 12, N = 21;
  matrix<double> x = xent_test::random_logits<double>(C, N);
  const index_vector t = random_targets(N, C);
  const matrix<double> y = xent::softmax(xent_test::random_logits<double>(C, N));
  xent::poly1_cross_entropy_options zero;
  zero.epsilon = 0;
  zero.label_smoothing = 0.1;
  xent::cross_entropy_options plain;
  plain.label_smoothing = 0.1;
  matrix<double> a(C, N), b(C, N);
  CHECK(xent::poly1_cross_entropy_with_grad(x, t, zero, a).value() == xent::cross_entropy_with_grad(x, t, plain, b).value());
  CHECK((a.array() == b.array()).all());
  CHECK(xent::poly1_cross_entropy_with_grad(x, y, zero, a).value() == xent::cross_entropy_with_grad(x, y, plain, b).value());
  CHECK((a.array() == b.array()).all());

  xent::poly1_cross_entropy_options o;
  o.label_smoothing = 0.05;
  o.sample_weight = random_weights(N);
  double worst = 0;
  for (int kind = 0; kind < 2; ++kind) {
    matrix<double> grad(C, N);
    if (kind == 0)
      xent::poly1_cross_entropy_with_grad(x, t, o, grad);
    else
      xent::poly1_cross_entropy_with_grad(x, y, o, grad);
    for (Eigen::Index i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::fabs(grad.data()[i] - xent_test::central_difference(x, i, [&](const matrix<double>& m) {
                                          return kind == 0 ? xent::poly1_cross_entropy(m, t, o).value()
                                                           : xent::poly1_cross_entropy(m, y, o).value();
                                        })));
  }
  CHECK(worst <= 1e-9);
  WARN("poly1_cross_entropy finite differences (index and probability targets): " << worst);

  const xent_test::misuse table[] = {
      {"a NaN epsilon", [&] {
         xent::poly1_cross_entropy_options bad;
         bad.epsilon = std::nan("");
         (void)xent::poly1_cross_entropy(x, t, bad);
       },
       "poly1_cross_entropy", "epsilon", "must be finite"},
      {"an infinite epsilon, probability targets", [&] {
         xent::poly1_cross_entropy_options bad;
         bad.epsilon = HUGE_VAL;
         matrix<double> g(C, N);
         (void)xent::poly1_cross_entropy_with_grad(x, y, bad, g);
       },
       "poly1_cross_entropy_with_grad", "epsilon", "must be finite"},
      {"cross_entropy's checks", [&] {
         xent::poly1_cross_entropy_options bad;
         bad.label_smoothing = 2;
         matrix<double> g(C, N);
         xent::poly1_cross_entropy_backward(x, t, 1.0, bad, g);
       },
       "poly1_cross_entropy_backward", "label_smoothing", "[0, 1]"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
}

TEST_CASE("safe probability-target cross_entropy: a zero target on a -inf logit adds 0, as Optax's", "[safe]") {
  // Classes 2 and 5 are masked (-inf) and have no target mass: the safe loss is the cross-entropy
  // over the other classes alone, and its gradient there is theirs (0 on the masked classes).
  for (const Eigen::Index C : {9, 5000}) {  // 5000: across the 4096-float chunks
    const Eigen::Index N = 6;
    matrix<double> x = xent_test::random_logits<double>(C, N);
    matrix<double> y = xent::softmax(xent_test::random_logits<double>(C, N));
    for (const Eigen::Index k : {Eigen::Index(2), Eigen::Index(5)}) {
      x.row(k).setConstant(-std::numeric_limits<double>::infinity());
      y.row(k).setZero();
    }
    std::vector<Eigen::Index> kept_classes;
    for (Eigen::Index k = 0; k < C; ++k)
      if (k != 2 && k != 5) kept_classes.push_back(k);
    matrix<double> xs(Eigen::Index(kept_classes.size()), N), ys(xs.rows(), N);
    for (std::size_t i = 0; i < kept_classes.size(); ++i) {
      xs.row(Eigen::Index(i)) = x.row(kept_classes[i]);
      ys.row(Eigen::Index(i)) = y.row(kept_classes[i]);
    }
    xent::cross_entropy_options safe;
    safe.safe = true;
    matrix<double> g(C, N), gs(xs.rows(), N);
    const double got = xent::cross_entropy_with_grad(x, y, safe, g).value();
    const double expected = xent::cross_entropy_with_grad(xs, ys, xent::cross_entropy_options{}, gs).value();
    CHECK(got == Approx(expected).epsilon(1e-15));
    for (std::size_t i = 0; i < kept_classes.size(); ++i)
      CHECK((g.row(kept_classes[i]) - gs.row(Eigen::Index(i))).cwiseAbs().maxCoeff() <= 1e-16);
    CHECK((g.row(2).array() == 0).all());
    CHECK((g.row(5).array() == 0).all());
    // torch's (and the default's) 0 * -inf.
    CHECK(std::isnan(xent::cross_entropy(x, y).value()));
  }
}
