// sigmoid_focal_loss, softmax_focal_loss, generalized_cross_entropy, distillation_loss and softmax_hvp:
// values and gradients against torch 1.13 float64 (tests/reference/focal_cases.txt, from
// tests/reference/gen_focal_reference.py), central finite differences, identities, and misuse.
//
// Budgets as test_categorical.cpp: a loss error is |got - torch| / max(|torch|, 1); a gradient error is
// |got - torch| / (largest |torch| entry of the case). double: 1e-12; float: 32 float epsilons
// (the float inputs are the same float32-representable values; pow and the two sigmoids add a few ulp
// over cross_entropy's 16).

#include "support.hpp"

#include <xent/losses/distill.hpp>
#include <xent/losses/focal.hpp>
#include <xent/losses/gce.hpp>
#include <xent/losses/hvp.hpp>
#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <iostream>
#include <string>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("focal_cases.txt"); }

using xent_test::as_matrix;

using xent_test::error_of;

xent::reduction reduction_of(const xent_test::reference_case& c) {
  return std::array<xent::reduction, 3>{xent::reduction::none, xent::reduction::mean,
                                        xent::reduction::sum}[std::size_t(c["reduction"][0])];
}

struct worst {
  double loss = 0, grad = 0;
  std::size_t cases = 0;
};

/// Compares values (C x N layout, dim 0) with a reference list in torch's [N, C] order.
template <class T>
void compare_values(const matrix<T>& got, const std::vector<long double>& ref, double tol, double& worst_err,
                    bool per_entry_scale) {
  REQUIRE(std::size_t(got.size()) == ref.size());
  long double scale = std::numeric_limits<long double>::min();
  for (long double v : ref)
    if (std::isfinite(double(v))) scale = std::max(scale, std::fabs(v));
  for (Eigen::Index i = 0; i < got.size(); ++i) {
    const long double r = ref[std::size_t(i)];
    const long double s = per_entry_scale ? std::max<long double>(std::fabs(r), 1) : scale;
    const double e = error_of(double(got.data()[i]), r, s);
    INFO("entry " << i << ": " << got.data()[i] << " vs torch " << double(r));
    CHECK(e <= tol);
    worst_err = std::max(worst_err, e);
  }
}

template <class T>
void check_case(const xent_test::reference_case& c, int dim, worst& w) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const int kind = int(c["kind"][0]);
  INFO(c.name << (sizeof(T) == 4 ? " float" : " double") << " dim " << dim);
  const double tol = sizeof(T) == 4 ? 32 * double(std::numeric_limits<float>::epsilon()) : 1e-12;
  const matrix<T> x0 = as_matrix<T>(c["logits"], C, N);
  const matrix<T> x = dim == 0 ? x0 : matrix<T>(x0.transpose());
  auto back_to_dim0 = [&](const matrix<T>& m) { return dim == 0 ? m : matrix<T>(m.transpose()); };
  matrix<T> g(x.rows(), x.cols());
  index_vector t;
  if (c.has("target")) {
    t.resize(N);
    for (Eigen::Index j = 0; j < N; ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
  }

  if (kind == 0) {  // sigmoid focal: elementwise, the layout does not matter beyond the shape
    xent::sigmoid_focal_loss_options o;
    o.alpha = double(c["alpha"][0]);
    o.gamma = double(c["gamma"][0]);
    o.reduction = reduction_of(c);
    const matrix<T> y0 = as_matrix<T>(c["target_prob"], C, N);
    const matrix<T> y = dim == 0 ? y0 : matrix<T>(y0.transpose());
    const auto result = xent::sigmoid_focal_loss(x, y, o);
    const matrix<T> loss = o.reduction == xent::reduction::none ? result.elementwise() : matrix<T>::Constant(1, 1, result.value());
    if (o.reduction == xent::reduction::none) {
      compare_values<T>(back_to_dim0(loss), c["loss"], tol, w.loss, true);
      const matrix<T> go0 = as_matrix<T>(c["grad_out"], C, N);
      xent::sigmoid_focal_loss_backward(x, y, dim == 0 ? go0 : matrix<T>(go0.transpose()), o, g);
    } else {
      compare_values<T>(loss, c["loss"], tol, w.loss, true);
      xent::sigmoid_focal_loss_backward(x, y, T(c["grad_out"][0]), o, g);
    }
  } else if (kind == 1 || kind == 2) {
    const auto red = reduction_of(c);
    xent::loss_result<T> result = xent::loss_result<T>::reduced(xent::reduction::sum, T(0), 0.0);
    auto run = [&](const auto& grad_out) {
      if (kind == 1) {
        xent::softmax_focal_loss_options o;
        o.gamma = double(c["gamma"][0]);
        if (c.has("alpha")) o.alpha = as_matrix<double>(c["alpha"], C, 1);
        o.ignore_index = long(c["ignore_index"][0]);
        o.reduction = red;
        o.dim = dim;
        result = xent::softmax_focal_loss(x, t, o);
        xent::softmax_focal_loss_backward(x, t, grad_out, o, g);
      } else {
        xent::generalized_cross_entropy_options o;
        o.q = double(c["q"][0]);
        o.ignore_index = long(c["ignore_index"][0]);
        o.reduction = red;
        o.dim = dim;
        result = xent::generalized_cross_entropy(x, t, o);
        xent::generalized_cross_entropy_backward(x, t, grad_out, o, g);
      }
    };
    if (red == xent::reduction::none) {
      run(vector<T>(as_matrix<T>(c["grad_out"], N, 1)));
      compare_values<T>(matrix<T>(result.per_sample()), c["loss"], tol, w.loss, true);
    } else {
      run(double(c["grad_out"][0]));
      compare_values<T>(matrix<T>::Constant(1, 1, result.value()), c["loss"], tol, w.loss, true);
    }
  } else if (kind == 3) {
    const matrix<T> te0 = as_matrix<T>(c["teacher"], C, N);
    const matrix<T> te = dim == 0 ? te0 : matrix<T>(te0.transpose());
    xent::distillation_options o;
    o.alpha = double(c["alpha"][0]);
    o.ignore_index = long(c["ignore_index"][0]);
    o.dim = dim;
    o.temperature = double(c["T"][0]);
    T loss;
    if (c.has("target")) {
      loss = xent::distillation_loss(x, te, t, o).value();
      xent::distillation_loss_backward(x, te, t, T(1), o, g);
    } else {
      loss = xent::distillation_loss(x, te, o).value();
      xent::distillation_loss_backward(x, te, T(1), o, g);
    }
    compare_values<T>(matrix<T>::Constant(1, 1, loss), c["loss"], tol, w.loss, true);
  } else {
    const matrix<T> v0 = as_matrix<T>(c["v"], C, N);
    const matrix<T> hv = xent::softmax_hvp(x, dim == 0 ? v0 : matrix<T>(v0.transpose()), dim);
    compare_values<T>(back_to_dim0(hv), c["hvp"], tol, w.grad, false);
    ++w.cases;
    return;
  }
  compare_values<T>(back_to_dim0(g), c["grad"], tol, w.grad, false);
  ++w.cases;
}

/// Central differences of a scalar function of x, step 1e-5 * max(1, |x|).
template <class F>
matrix<double> numeric_gradient(const matrix<double>& x, F&& f) {
  matrix<double> g(x.rows(), x.cols());
  matrix<double> y = x;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const double h = 1e-5 * std::max(1.0, std::fabs(x.data()[i]));
    y.data()[i] = x.data()[i] + h;
    const double up = f(y);
    y.data()[i] = x.data()[i] - h;
    const double down = f(y);
    y.data()[i] = x.data()[i];
    g.data()[i] = (up - down) / (2 * h);
  }
  return g;
}

double worst_fd = 0;

void check_fd(const char* what, const matrix<double>& analytic, const matrix<double>& numeric) {
  const double scale = std::max(1e-3, numeric.cwiseAbs().maxCoeff());
  const double e = (analytic - numeric).cwiseAbs().maxCoeff() / scale;
  INFO(what << ": analytic\n" << analytic << "\nnumeric\n" << numeric);
  CHECK(e <= 1e-7);
  worst_fd = std::max(worst_fd, e);
}

template <class F>
void require_throws_with(F&& f, const std::string& function, const std::string& argument, const std::string& piece) {
  try {
    f();
    FAIL("no exception for " << function << " " << argument);
  } catch (const xent::invalid_argument& e) {
    CHECK(e.function() == function);
    CHECK(e.argument() == argument);
    CHECK_THAT(e.what(), Catch::Matchers::Contains(piece));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("focal, GCE, distillation and softmax_hvp match torch 1.13, values and gradients",
                   "[focal][reference][torch]", float, double) {
  for (int dim : {0, 1}) {
    worst w;
    for (const auto& c : cases()) check_case<TestType>(c, dim, w);
    CHECK(w.cases == cases().size());
    std::cout << "focal reference (" << (sizeof(TestType) == 4 ? "float" : "double") << ", dim " << dim << "): "
              << w.cases << " cases, worst loss error " << w.loss << ", worst gradient error " << w.grad << "\n";
  }
}

TEST_CASE("focal, GCE and distillation gradients agree with central finite differences", "[focal][fd]") {
  const matrix<double> x = xent_test::random_logits<double>(5, 6, 2);
  const matrix<double> te = xent_test::random_logits<double>(5, 6, 3);
  index_vector t(6);
  t << 0, 4, 2, -100, 1, 3;
  matrix<double> y(5, 6);
  for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = double((i * 7) % 11) / 10.0;
  matrix<double> g(5, 6);

  for (double alpha : {0.25, -1.0})
    for (double gamma : {2.0, 1.5, 1.0, 0.0}) {
      xent::sigmoid_focal_loss_options o;
      o.alpha = alpha;
      o.gamma = gamma;
      o.reduction = xent::reduction::mean;
      xent::sigmoid_focal_loss_backward(x, y, 1.0, o, g);
      check_fd("sigmoid_focal_loss", g, numeric_gradient(x, [&](const matrix<double>& z) {
                 return xent::sigmoid_focal_loss(z, y, o).value();
               }));
    }
  for (double gamma : {2.0, 0.5, 0.0}) {
    xent::softmax_focal_loss_options o;
    o.gamma = gamma;
    o.alpha = Eigen::VectorXd::LinSpaced(5, 0.2, 1.0);
    for (int dim : {0, 1}) {
      o.dim = dim;
      const matrix<double> xd = dim == 0 ? x : matrix<double>(x.transpose());
      matrix<double> gd(xd.rows(), xd.cols());
      xent::softmax_focal_loss_backward(xd, t, 1.0, o, gd);
      check_fd("softmax_focal_loss", gd, numeric_gradient(xd, [&](const matrix<double>& z) {
                 return xent::softmax_focal_loss(z, t, o).value();
               }));
    }
  }
  for (double q : {0.7, 1.0, 0.05}) {
    xent::generalized_cross_entropy_options o;
    o.q = q;
    o.reduction = xent::reduction::sum;
    xent::generalized_cross_entropy_backward(x, t, 1.0, o, g);
    check_fd("generalized_cross_entropy", g, numeric_gradient(x, [&](const matrix<double>& z) {
               return xent::generalized_cross_entropy(z, t, o).value();
             }));
  }
  for (double T : {0.5, 1.0, 3.0}) {
    xent::distillation_options o;
    o.temperature = T;
    xent::distillation_loss_backward(x, te, 1.0, o, g);
    check_fd("distillation_loss soft", g, numeric_gradient(x, [&](const matrix<double>& z) {
               return xent::distillation_loss(z, te, o).value();
             }));
    o.alpha = 0.4;
    xent::distillation_loss_backward(x, te, t, 1.0, o, g);
    check_fd("distillation_loss mixed", g, numeric_gradient(x, [&](const matrix<double>& z) {
               return xent::distillation_loss(z, te, t, o).value();
             }));
  }
  {  // HVP: the finite difference of cross_entropy's gradient along v.
    const matrix<double> v = xent_test::random_logits<double>(5, 6, 1);
    index_vector tt(6);
    tt << 0, 4, 2, 3, 1, 3;
    xent::cross_entropy_options ce;
    ce.reduction = xent::reduction::sum;
    const double h = 1e-5;
    matrix<double> gp(5, 6), gm(5, 6);
    xent::cross_entropy_backward(matrix<double>(x + h * v), tt, 1.0, ce, gp);
    xent::cross_entropy_backward(matrix<double>(x - h * v), tt, 1.0, ce, gm);
    check_fd("softmax_hvp", xent::softmax_hvp(x, v), (gp - gm) / (2 * h));
  }
  std::cout << "focal finite differences, double: worst |fd - analytic| / scale " << worst_fd << "\n";
}

TEST_CASE("focal identities: gamma 0 is BCE / CE, GCE tends to CE, distillation at T 1 is kl_div, HVP sums to 0",
          "[focal]") {
  const matrix<double> x = xent_test::random_logits<double>(6, 8, 3);
  matrix<double> y(6, 8);
  for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = double(i % 2);
  index_vector t(8);
  t << 0, 5, 2, 3, 1, 4, -100, 2;

  // sigmoid: gamma = 0, alpha < 0 is binary_cross_entropy_with_logits, values and gradients.
  xent::sigmoid_focal_loss_options so;
  so.gamma = 0;
  so.alpha = -1;
  so.reduction = xent::reduction::mean;
  const double bce = xent::binary_cross_entropy_with_logits(x, y).value();
  CHECK(xent::sigmoid_focal_loss(x, y, so).value() == Approx(bce).epsilon(1e-14));
  matrix<double> g1(6, 8), g2(6, 8);
  xent::sigmoid_focal_loss_backward(x, y, 1.0, so, g1);
  xent::binary_cross_entropy_with_logits_backward(x, y, 1.0, {}, g2);
  CHECK((g1 - g2).cwiseAbs().maxCoeff() <= 1e-16);

  // softmax: gamma = 0, no alpha is cross_entropy (same mean over non-ignored samples).
  xent::softmax_focal_loss_options mo;
  mo.gamma = 0;
  const double ce = xent::cross_entropy(x, t).value();
  CHECK(xent::softmax_focal_loss(x, t, mo).value() == Approx(ce).epsilon(1e-14));
  xent::softmax_focal_loss_backward(x, t, 1.0, mo, g1);
  xent::cross_entropy_backward(x, t, 1.0, xent::cross_entropy_options{}, g2);
  CHECK((g1 - g2).cwiseAbs().maxCoeff() <= 1e-16);
  // per-class alpha with gamma = 0 is weighted cross-entropy per sample (reduction none).
  mo.alpha = Eigen::VectorXd::LinSpaced(6, 0.5, 2.0);
  mo.reduction = xent::reduction::none;
  xent::cross_entropy_options wce;
  wce.weight = mo.alpha;
  wce.reduction = xent::reduction::none;
  CHECK((xent::softmax_focal_loss(x, t, mo).per_sample() - xent::cross_entropy(x, t, wce).per_sample())
            .cwiseAbs()
            .maxCoeff() <= 1e-14);

  // GCE: q -> 0 approaches cross-entropy (the error is O(q)), q = 1 is 1 - p_y.
  xent::generalized_cross_entropy_options go;
  go.q = 1e-8;
  CHECK(xent::generalized_cross_entropy(x, t, go).value() == Approx(ce).epsilon(1e-6));
  go.q = 1;
  go.reduction = xent::reduction::none;
  const matrix<double> p = xent::softmax(x);
  const auto gce1 = xent::generalized_cross_entropy(x, t, go).per_sample();
  for (Eigen::Index j = 0; j < 8; ++j)
    CHECK(gce1(j) == Approx(t(j) == -100 ? 0.0 : 1 - p(t(j), j)).margin(1e-15));

  // distillation at T = 1, alpha = 1 is kl_div(log_softmax(s), softmax(t), batchmean).
  const matrix<double> te = xent_test::random_logits<double>(6, 8, 2);
  xent::kl_div_options ko;
  ko.reduction = xent::reduction::batchmean;
  const double kl = xent::kl_div(xent::log_softmax(x), xent::softmax(te), ko).value();
  CHECK(xent::distillation_loss(x, te).value() == Approx(kl).epsilon(1e-13));
  // alpha = 0 is the hard cross-entropy alone.
  xent::distillation_options dop;
  dop.alpha = 0;
  dop.temperature = 3;
  CHECK(xent::distillation_loss(x, te, t, dop).value() == Approx(ce).epsilon(1e-14));
  // teacher = student: the soft loss and its gradient vanish.
  xent::distillation_options at2;
  at2.temperature = 2;
  CHECK(std::fabs(xent::distillation_loss(x, x, at2).value()) <= 1e-14);

  // HVP: each sample sums to 0, and it is linear in v.
  const matrix<double> v = xent_test::random_logits<double>(6, 8, 1);
  const matrix<double> hv = xent::softmax_hvp(x, v);
  CHECK(hv.colwise().sum().cwiseAbs().maxCoeff() <= 1e-15);
  const matrix<double> hv1 = xent::softmax_hvp(x, matrix<double>::Ones(6, 8));
  CHECK(hv1.cwiseAbs().maxCoeff() <= 1e-15);  // (diag p - p p^T) 1 = 0
  const matrix<double> hvt = xent::softmax_hvp(matrix<double>(x.transpose()), matrix<double>(v.transpose()), 1);
  CHECK((hvt.transpose() - hv).cwiseAbs().maxCoeff() <= 1e-15);  // strided path: another summation order
  // Map over the caller's buffer, in place of an output.
  std::vector<double> buffer(48);
  xent::softmax_hvp_into(x, v, Eigen::Map<Eigen::MatrixXd>(buffer.data(), 6, 8));
  CHECK(Eigen::Map<Eigen::MatrixXd>(buffer.data(), 6, 8) == hv);
}

TEST_CASE("focal, GCE, distillation and softmax_hvp misuse throws xent::invalid_argument", "[focal][errors]") {
  const matrix<double> x = xent_test::random_logits<double>(3, 4, 1);
  const matrix<double> y = matrix<double>::Constant(3, 4, 0.5);
  index_vector t(4);
  t << 0, 1, 2, 1;
  matrix<double> g(3, 4);

  SECTION("sigmoid_focal_loss") {
    xent::sigmoid_focal_loss_options o;
    o.gamma = -1;
    require_throws_with([&] { xent::sigmoid_focal_loss(x, y, o); }, "sigmoid_focal_loss", "gamma", "must be finite and >= 0");
    o = {};
    o.alpha = 1.5;
    require_throws_with([&] { xent::sigmoid_focal_loss(x, y, o); }, "sigmoid_focal_loss", "alpha", "must be <= 1");
    o = {};
    o.reduction = xent::reduction::batchmean;
    require_throws_with([&] { xent::sigmoid_focal_loss(x, y, o); }, "sigmoid_focal_loss", "reduction", "batchmean");
    require_throws_with([&] { xent::sigmoid_focal_loss(x, matrix<double>(y.transpose())); }, "sigmoid_focal_loss",
                        "targets", "must have the shape of logits (3 x 4)");
    require_throws_with([&] { xent::sigmoid_focal_loss(x, matrix<double>::Constant(3, 4, 2.0)); }, "sigmoid_focal_loss",
                        "targets", "must hold probabilities in [0, 1]");
    require_throws_with([&] { xent::sigmoid_focal_loss(matrix<double>(0, 0), matrix<double>(0, 0)); },
                        "sigmoid_focal_loss", "logits", "must not be empty");
    require_throws_with([&] { xent::sigmoid_focal_loss_backward(x, y, 1.0, {}, matrix<double>(2, 2)); },
                        "sigmoid_focal_loss_backward", "grad_logits_out", "must have the shape of the input");
    require_throws_with([&] { xent::sigmoid_focal_loss_backward(x, y, matrix<double>(2, 2), {}, g); },
                        "sigmoid_focal_loss_backward", "grad_out", "must have the shape of the input (3 x 4) for reduction none");
  }
  SECTION("softmax_focal_loss") {
    xent::softmax_focal_loss_options o;
    o.alpha = Eigen::VectorXd::Ones(2);
    require_throws_with([&] { xent::softmax_focal_loss(x, t, o); }, "softmax_focal_loss", "alpha",
                        "must be empty or have one entry per class (3)");
    o = {};
    o.gamma = std::nan("");
    require_throws_with([&] { xent::softmax_focal_loss(x, t, o); }, "softmax_focal_loss", "gamma", "must be finite");
    o = {};
    index_vector bad = t;
    bad(2) = 3;
    require_throws_with([&] { xent::softmax_focal_loss(x, bad, o); }, "softmax_focal_loss", "target[2]", "must be in [0, 3)");
    require_throws_with([&] { xent::softmax_focal_loss(x, index_vector(3), o); }, "softmax_focal_loss", "targets",
                        "one entry per sample (4)");
    o.dim = 2;
    require_throws_with([&] { xent::softmax_focal_loss(x, t, o); }, "softmax_focal_loss", "dim", "must be 0");
    o = {};
    require_throws_with([&] { xent::softmax_focal_loss_backward(x, t, vector<double>::Ones(4), o, g); },
                        "softmax_focal_loss_backward", "grad_out", "must be a scalar for reduction mean");
    require_throws_with([&] { xent::softmax_focal_loss_backward(x, t, 1.0, o, matrix<double>(4, 3)); },
                        "softmax_focal_loss_backward", "grad_logits_out", "must have the shape of the input (3 x 4)");
  }
  SECTION("generalized_cross_entropy") {
    xent::generalized_cross_entropy_options o;
    o.q = 0;
    require_throws_with([&] { xent::generalized_cross_entropy(x, t, o); }, "generalized_cross_entropy", "q",
                        "must be in (0, 1]");
    o.q = 1.5;
    require_throws_with([&] { xent::generalized_cross_entropy_backward(x, t, 1.0, o, g); },
                        "generalized_cross_entropy_backward", "q", "must be in (0, 1], but got 1.5");
    o = {};
    o.reduction = xent::reduction::batchmean;
    require_throws_with([&] { xent::generalized_cross_entropy(x, t, o); }, "generalized_cross_entropy", "reduction",
                        "must be none, mean or sum");
  }
  SECTION("distillation_loss") {
    auto at = [](double temperature) {
      xent::distillation_options o;
      o.temperature = temperature;
      return o;
    };
    require_throws_with([&] { xent::distillation_loss(x, x, at(0.0)); }, "distillation_loss", "temperature", "must be finite and > 0");
    require_throws_with([&] { xent::distillation_loss(x, x, at(-2.0)); }, "distillation_loss", "temperature", "but got -2");
    require_throws_with([&] { xent::distillation_loss_backward(x, x, 1.0, at(0.0), g); },
                        "distillation_loss_backward", "temperature", "must be finite and > 0");
    require_throws_with([&] { xent::distillation_loss(x, x, at(1e-320)); }, "distillation_loss", "temperature",
                        "1 / temperature is finite");
    require_throws_with([&] { xent::distillation_loss(x, matrix<double>(x.transpose())); }, "distillation_loss",
                        "teacher_logits", "must have the shape of student_logits (3 x 4)");
    xent::distillation_options o;
    o.alpha = 0.5;
    require_throws_with([&] { xent::distillation_loss(x, x, o); }, "distillation_loss", "alpha",
                        "must be 1 without hard targets");
    o.alpha = 1.5;
    require_throws_with([&] { xent::distillation_loss(x, x, t, o); }, "distillation_loss", "alpha", "must be in [0, 1]");
    o.alpha = 0.5;
    index_vector bad = t;
    bad(0) = 7;
    require_throws_with([&] { xent::distillation_loss(x, x, bad, o); }, "distillation_loss", "target[0]", "must be in [0, 3)");
    o.reduction = xent::reduction::mean;
    require_throws_with([&] { xent::distillation_loss(x, x, t, o); }, "distillation_loss", "reduction", "batchmean, sum or none");
  }
  SECTION("softmax_hvp") {
    require_throws_with([&] { xent::softmax_hvp(x, matrix<double>(4, 3)); }, "softmax_hvp", "v",
                        "must have the shape of logits (3 x 4)");
    require_throws_with([&] { xent::softmax_hvp_into(x, x, matrix<double>(1, 1)); }, "softmax_hvp", "out",
                        "must have the shape of the input (3 x 4)");
    require_throws_with([&] { xent::softmax_hvp(x, x, 3); }, "softmax_hvp", "dim", "must be 0");
    require_throws_with([&] { xent::softmax_hvp(matrix<double>(0, 4), matrix<double>(0, 4)); }, "softmax_hvp", "logits",
                        "must not be empty");
  }
}
