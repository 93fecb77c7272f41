// cross_entropy and nll_loss: values and gradients against torch 1.13 (tests/reference/categorical_cases.txt,
// float64 torch), identities, finite differences, and the misuse checks.
//
// Budgets. An error is |got - torch| divided by a scale: for a loss value, max(|torch|, 1); for a
// gradient, the largest |torch| entry of the case (so a gradient entry is measured against the
// sample's dominant ones, where the cancellation in p * Q - q lives).
//   double: 1e-12      float: 16 float epsilons (1.9e-6); the float inputs are the same
//   float32-representable values, so this bounds float's own rounding (a few ulp per term, summed
//   over at most 9 classes and 7 samples, and the log of the sum).
// Special values (NaN, inf) must match exactly. Finite differences: central, step 1e-5 * max(1, |x|),
// agreement within 1e-7 of the gradient's scale.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <iostream>
#include <string>

namespace {

using xent_test::matrix;
using xent_test::vector;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("categorical_cases.txt"); }

using xent_test::as_matrix;

using xent_test::error_of;

struct worst {
  double loss = 0, grad = 0;
  std::size_t cases = 0;
};

template <class T>
void check_case(const xent_test::reference_case& c, int dim, worst& w) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const int kind = int(c["kind"][0]);
  const auto red = xent::reduction(std::array<xent::reduction, 3>{xent::reduction::none, xent::reduction::mean,
                                                                   xent::reduction::sum}[std::size_t(c["reduction"][0])]);
  xent::cross_entropy_options ce;
  xent::nll_loss_options nll;
  ce.reduction = nll.reduction = red;
  ce.ignore_index = nll.ignore_index = long(c["ignore_index"][0]);
  ce.label_smoothing = double(c["label_smoothing"][0]);
  ce.dim = nll.dim = dim;
  if (c.has("weight")) {
    ce.weight = nll.weight = as_matrix<double>(c["weight"], C, 1);
  }
  // dim 1 reads the transposed (N x C, column-major) matrix: the strided class-axis path.
  const matrix<T> x0 = as_matrix<T>(c["logits"], C, N);
  const matrix<T> x = dim == 0 ? x0 : matrix<T>(x0.transpose());
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> t(N);
  if (kind != 1)
    for (Eigen::Index j = 0; j < N; ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
  matrix<T> y;
  if (kind == 1) {
    y = as_matrix<T>(c["target_prob"], C, N);
    if (dim == 1) y.transposeInPlace();
  }

  auto forward = [&]() -> xent::loss_result<T> {
    if (kind == 0) return xent::cross_entropy(x, t, ce);
    if (kind == 1) return xent::cross_entropy(x, y, ce);
    return xent::nll_loss(x, t, nll);
  };
  matrix<T> g(x.rows(), x.cols());
  auto backward = [&](const auto& grad_out) {
    if (kind == 0) xent::cross_entropy_backward(x, t, grad_out, ce, g);
    else if (kind == 1) xent::cross_entropy_backward(x, y, grad_out, ce, g);
    else xent::nll_loss_backward(x, t, grad_out, nll, g);
  };

  const auto result = forward();
  const auto& ref_loss = c["loss"];
  INFO(c.name << (sizeof(T) == 4 ? " float" : " double") << " dim " << dim);
  const double tol = sizeof(T) == 4 ? 16 * double(std::numeric_limits<float>::epsilon()) : 1e-12;
  if (red == xent::reduction::none) {
    const vector<T>& l = result.per_sample();
    REQUIRE(l.size() == N);
    const vector<T> go = as_matrix<T>(c["grad_out"], N, 1);
    for (Eigen::Index j = 0; j < N; ++j) {
      const long double r = ref_loss[std::size_t(j)];
      const double e = error_of(double(l(j)), r, std::max<long double>(std::fabs(r), 1));
      INFO("sample " << j << ": " << l(j) << " vs torch " << double(r));
      CHECK(e <= tol);
      w.loss = std::max(w.loss, e);
    }
    backward(go);
  } else {
    const long double r = ref_loss[0];
    const double e = error_of(double(result.value()), r, std::max<long double>(std::fabs(r), 1));
    INFO(result.value() << " vs torch " << double(r));
    CHECK(e <= tol);
    w.loss = std::max(w.loss, e);
    backward(double(c["grad_out"][0]));
  }
  const matrix<T> ref_g0 = as_matrix<T>(c["grad"], C, N);  // only for the shape; values compared in long double
  long double scale = std::numeric_limits<long double>::min();
  for (long double v : c["grad"])
    if (std::isfinite(double(v))) scale = std::max(scale, std::fabs(v));
  for (Eigen::Index j = 0; j < N; ++j)
    for (Eigen::Index k = 0; k < C; ++k) {
      const long double r = c["grad"][std::size_t(j * C + k)];
      const T got = dim == 0 ? g(k, j) : g(j, k);
      const double e = error_of(double(got), r, scale);
      INFO("grad sample " << j << " class " << k << ": " << got << " vs torch " << double(r));
      CHECK(e <= tol);
      w.grad = std::max(w.grad, e);
    }
  ++w.cases;
}

}  // namespace

TEMPLATE_TEST_CASE("cross_entropy and nll_loss match torch 1.13, values and gradients", "[categorical][reference][torch]",
                   float, double) {
  for (int dim : {0, 1}) {
    worst w;
    for (const auto& c : cases()) check_case<TestType>(c, dim, w);
    CHECK(w.cases >= 200);
    std::cout << "categorical vs torch float64, " << (sizeof(TestType) == 4 ? "float " : "double") << " dim " << dim
              << ": " << w.cases << " cases; worst relative error: loss " << w.loss << ", gradient " << w.grad << "\n";
  }
}

TEST_CASE("cross_entropy: every target ignored with mean is NaN, with a zero gradient", "[categorical]") {
  const matrix<double> x = xent_test::random_logits<double>(4, 3);
  const Eigen::VectorXi t = Eigen::VectorXi::Constant(3, -100);
  xent::cross_entropy_options o;
  o.label_smoothing = 0.1;
  CHECK(std::isnan(xent::cross_entropy(x, t, o).value()));
  matrix<double> g(4, 3);
  xent::cross_entropy_backward(x, t, 1.0, o, g);
  CHECK(g.isZero(0));
  o.reduction = xent::reduction::sum;
  CHECK(xent::cross_entropy(x, t, o).value() == 0);
}

TEST_CASE("cross_entropy: an ignored sample is never read, not even its NaN logits (differs from torch's backward)",
          "[categorical]") {
  // torch's forward skips it too, but its log_softmax backward turns 0 * NaN into a NaN gradient row
  // (docs/differences-from-torch.md); padding samples with garbage logits get a zero gradient here.
  matrix<double> x(3, 2);
  x << 0, 1, 1, 2, std::numeric_limits<double>::quiet_NaN(), 3;
  const Eigen::VectorXi t = (Eigen::VectorXi(2) << -100, 1).finished();
  xent::cross_entropy_options o;
  o.reduction = xent::reduction::sum;
  o.label_smoothing = 0.1;
  const double loss = xent::cross_entropy(x, t, o).value();
  CHECK(std::isfinite(loss));
  matrix<double> g(3, 2);
  xent::cross_entropy_backward(x, t, 1.0, o, g);
  CHECK(g.col(0).isZero(0));
  CHECK(g.col(1).allFinite());
}

TEST_CASE("cross_entropy identities: one-hot probabilities, gradient sums, softmax - onehot", "[categorical]") {
  const Eigen::Index C = 6, N = 5;
  const matrix<double> x = xent_test::random_logits<double>(C, N);
  const Eigen::VectorXi t = (Eigen::VectorXi(N) << 0, 5, 2, 2, 3).finished();
  matrix<double> onehot = matrix<double>::Zero(C, N);
  for (Eigen::Index j = 0; j < N; ++j) onehot(t(j), j) = 1;

  xent::cross_entropy_options o;
  o.weight = (Eigen::VectorXd(C) << 0.5, 1, 2, 1.5, 0.25, 3).finished();
  o.label_smoothing = 0.1;
  // Weighted mean differs by design (index: / sum of target weights; probabilities: / N), so none and sum.
  for (auto r : {xent::reduction::none, xent::reduction::sum}) {
    o.reduction = r;
    const auto a = xent::cross_entropy(x, t, o), b = xent::cross_entropy(x, onehot, o);
    matrix<double> ga(C, N), gb(C, N);
    if (r == xent::reduction::none) {
      CHECK((a.per_sample() - b.per_sample()).cwiseAbs().maxCoeff() < 1e-14);
      const Eigen::VectorXd go = Eigen::VectorXd::LinSpaced(N, -1, 2);
      xent::cross_entropy_backward(x, t, go, o, ga);
      xent::cross_entropy_backward(x, onehot, go, o, gb);
    } else {
      CHECK(std::fabs(a.value() - b.value()) < 1e-13);
      xent::cross_entropy_backward(x, t, 1.0, o, ga);
      xent::cross_entropy_backward(x, onehot, 1.0, o, gb);
    }
    CHECK((ga - gb).cwiseAbs().maxCoeff() < 1e-14);
    // d/dx of -sum q log_softmax is p * Q - q: its classes always sum to 0.
    CHECK(ga.colwise().sum().cwiseAbs().maxCoeff() < 1e-14);
  }
  o = {};
  o.reduction = xent::reduction::sum;
  matrix<double> g(C, N);
  xent::cross_entropy_backward(x, t, 1.0, o, g);
  CHECK((g - (xent::softmax(x) - onehot)).cwiseAbs().maxCoeff() < 1e-15);
  o.reduction = xent::reduction::mean;
  xent::cross_entropy_backward(x, t, 1.0, o, g);
  CHECK((g - (xent::softmax(x) - onehot) / double(N)).cwiseAbs().maxCoeff() < 1e-15);
  // Unweighted, unsmoothed mean equals the mean of -log_softmax at the targets.
  const matrix<double> lp = xent::log_softmax(x);
  double mean = 0;
  for (Eigen::Index j = 0; j < N; ++j) mean -= lp(t(j), j) / double(N);
  CHECK(std::fabs(xent::cross_entropy(x, t).value() - mean) < 1e-14);
  CHECK(std::fabs(xent::nll_loss(lp, t).value() - mean) < 1e-14);
}

TEST_CASE("cross_entropy and nll_loss gradients agree with central finite differences", "[categorical][fd]") {
  const Eigen::Index C = 7, N = 4;
  const matrix<double> x = xent_test::random_logits<double>(C, N, 2);
  const Eigen::VectorXi t = (Eigen::VectorXi(N) << 3, -100, 0, 6).finished();
  matrix<double> y = xent::softmax(xent_test::random_logits<double>(C, N, 1));
  const Eigen::VectorXd weight = (Eigen::VectorXd(C) << 0.5, 1, 2, 1.5, 0.25, 3, 0.75).finished();
  const Eigen::VectorXd go = (Eigen::VectorXd(N) << 0.3, -1.2, 2, 0.7).finished();
  double worst_fd = 0;
  std::size_t checks = 0;

  // f(x) as the scalar sum(grad_out * loss), and its analytic gradient.
  auto check = [&](const std::string& what, const std::function<double(const matrix<double>&)>& f,
                   const matrix<double>& analytic) {
    const double scale = std::max(analytic.cwiseAbs().maxCoeff(), 1e-3);
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      matrix<double> xp = x, xm = x;
      const double h = 1e-5 * std::max(1.0, std::fabs(x.data()[i]));
      xp.data()[i] += h;
      xm.data()[i] -= h;
      const double fd = (f(xp) - f(xm)) / (2 * h);
      const double e = std::fabs(fd - analytic.data()[i]) / scale;
      worst_fd = std::max(worst_fd, e);
      ++checks;
      INFO(what << " entry " << i << ": fd " << fd << " vs " << analytic.data()[i]);
      CHECK(e < 1e-7);
    }
  };

  for (auto r : {xent::reduction::none, xent::reduction::mean, xent::reduction::sum})
    for (bool weighted : {false, true})
      for (double eps : {0.0, 0.1}) {
        xent::cross_entropy_options o;
        o.reduction = r;
        o.label_smoothing = eps;
        if (weighted) o.weight = weight;
        const std::string what = std::string(xent::to_string(r)) + (weighted ? " weighted" : "") + " eps " + std::to_string(eps);
        auto total = [&](const xent::loss_result<double>& l) {
          return r == xent::reduction::none ? l.per_sample().dot(go) : l.value();
        };
        matrix<double> g(C, N);
        if (r == xent::reduction::none) xent::cross_entropy_backward(x, t, go, o, g);
        else xent::cross_entropy_backward(x, t, 1.0, o, g);
        check("index " + what, [&](const matrix<double>& z) { return total(xent::cross_entropy(z, t, o)); }, g);
        if (r == xent::reduction::none) xent::cross_entropy_backward(x, y, go, o, g);
        else xent::cross_entropy_backward(x, y, 1.0, o, g);
        check("prob " + what, [&](const matrix<double>& z) { return total(xent::cross_entropy(z, y, o)); }, g);
        if (eps == 0) {
          xent::nll_loss_options n;
          n.reduction = r;
          n.weight = o.weight;
          if (r == xent::reduction::none) xent::nll_loss_backward(x, t, go, n, g);
          else xent::nll_loss_backward(x, t, 1.0, n, g);
          check("nll " + what, [&](const matrix<double>& z) { return total(xent::nll_loss(z, t, n)); }, g);
        }
      }
  std::cout << "finite differences, double: " << checks << " entries; worst |fd - analytic| / scale " << worst_fd << "\n";
}

TEST_CASE("categorical losses read Maps in place, either class axis", "[categorical]") {
  // torch's [N, C] float buffer: a C x N column-major Map (dim 0) or an N x C row-major Map (dim 1).
  const int N = 3, C = 4;
  std::vector<float> buf = {1, 2, 3, 4, -1, 0, 1, 0.5f, 9, -9, 0, 0};
  std::vector<float> grad0(buf.size()), grad1(buf.size());
  const Eigen::Map<const Eigen::MatrixXf> x0(buf.data(), C, N);
  const Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> x1(buf.data(), N, C);
  const std::vector<std::int32_t> tv = {3, 0, 1};
  const Eigen::Map<const Eigen::Matrix<std::int32_t, -1, 1>> t(tv.data(), N);
  xent::cross_entropy_options o0, o1;
  o1.dim = 1;
  CHECK(xent::cross_entropy(x0, t, o0).value() == xent::cross_entropy(x1, t, o1).value());
  xent::cross_entropy_backward(x0, t, 1.0f, o0, Eigen::Map<Eigen::MatrixXf>(grad0.data(), C, N));
  xent::cross_entropy_backward(x1, t, 1.0f, o1, Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(grad1.data(), N, C));
  CHECK(grad0 == grad1);
}

TEST_CASE("categorical misuse throws xent::invalid_argument naming function, argument and value", "[categorical][errors]") {
  const matrix<double> x = xent_test::random_logits<double>(10, 8);
  const Eigen::VectorXi t = (Eigen::VectorXi(8) << 0, 1, 2, 3, 4, 5, 6, 12).finished();
  const Eigen::VectorXi good = Eigen::VectorXi::Zero(8);
  matrix<double> g(10, 8);
  auto opts = [](auto&& f) {
    xent::cross_entropy_options o;
    f(o);
    return o;
  };
  const xent_test::misuse all[] = {
      {"target outside", [&] { (void)xent::cross_entropy(x, t); }, "cross_entropy", "target[7]",
       "target[7] must be in [0, 10) or ignore_index (-100), but got 12"},
      {"negative target", [&] { (void)xent::nll_loss(x, Eigen::VectorXi::Constant(8, -1)); }, "nll_loss", "target[0]",
       "but got -1"},
      {"backward target", [&] { xent::cross_entropy_backward(x, t, 1.0, {}, g); }, "cross_entropy_backward", "target[7]",
       "[0, 10)"},
      {"weight length", [&] { (void)xent::cross_entropy(x, good, opts([](auto& o) { o.weight = Eigen::VectorXd::Ones(9); })); },
       "cross_entropy", "weight", "one entry per class (10), but got 9"},
      {"targets length", [&] { (void)xent::cross_entropy(x, Eigen::VectorXi::Zero(7)); }, "cross_entropy", "targets",
       "one entry per sample (8), but got 7"},
      {"soft shape", [&] { (void)xent::cross_entropy(x, matrix<double>(8, 10)); }, "cross_entropy", "targets",
       "shape of logits (10 x 8), but got 8 x 10"},
      {"soft ignore_index", [&] { (void)xent::cross_entropy(x, x, opts([](auto& o) { o.ignore_index = 3; })); },
       "cross_entropy", "ignore_index", "but got 3"},
      {"smoothing > 1", [&] { (void)xent::cross_entropy(x, good, opts([](auto& o) { o.label_smoothing = 1.5; })); },
       "cross_entropy", "label_smoothing", "[0, 1], but got 1.5"},
      {"smoothing < 0", [&] { (void)xent::cross_entropy(x, x, opts([](auto& o) { o.label_smoothing = -0.1; })); },
       "cross_entropy", "label_smoothing", "but got -0.1"},
      {"empty batch", [&] { (void)xent::cross_entropy(matrix<double>(10, 0), Eigen::VectorXi(0)); }, "cross_entropy",
       "logits", "must not be empty, but got 10 x 0"},
      {"empty nll", [&] { (void)xent::nll_loss(matrix<float>(0, 3), Eigen::VectorXi(3)); }, "nll_loss", "log_probs",
       "must not be empty"},
      {"dim 2", [&] { (void)xent::cross_entropy(x, good, opts([](auto& o) { o.dim = 2; })); }, "cross_entropy", "dim",
       "but got 2"},
      {"batchmean", [&] { (void)xent::cross_entropy(x, good, opts([](auto& o) { o.reduction = xent::reduction::batchmean; })); },
       "cross_entropy", "reduction", "but got batchmean"},
      {"scalar grad_out for none",
       [&] { xent::cross_entropy_backward(x, good, 1.0, opts([](auto& o) { o.reduction = xent::reduction::none; }), g); },
       "cross_entropy_backward", "grad_out", "one entry per sample"},
      {"vector grad_out for mean", [&] { xent::cross_entropy_backward(x, good, Eigen::VectorXd::Ones(8), {}, g); },
       "cross_entropy_backward", "grad_out", "must be a scalar for reduction mean"},
      {"short grad_out",
       [&] { xent::nll_loss_backward(x, good, Eigen::VectorXd::Ones(3), xent::nll_loss_options{{}, -100, xent::reduction::none, 0}, g); },
       "nll_loss_backward", "grad_out", "one entry per sample (8), but got 3"},
      {"grad buffer shape", [&] { xent::cross_entropy_backward(x, good, 1.0, {}, matrix<double>(8, 10)); },
       "cross_entropy_backward", "grad_logits_out", "(10 x 8), but got 8 x 10"},
      {"value of none", [&] { (void)xent::cross_entropy(x, good, opts([](auto& o) { o.reduction = xent::reduction::none; })).value(); },
       "loss_result::value", "reduction", "but got none"},
      {"per_sample of mean", [&] { (void)xent::cross_entropy(x, good).per_sample(); }, "loss_result::per_sample",
       "reduction", "but got mean"},
  };
  xent_test::check_misuse(all);
}
