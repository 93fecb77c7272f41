// binary_cross_entropy(_with_logits), kl_div and the information measures against torch 1.13
// (tests/reference/binary_cases.txt, float64 values and autograd gradients), identities between the
// measures, finite differences of every gradient, and the errors.
//
// Tolerances, |got - torch| <= rel * |torch| + abs:
//   double: rel 1e-12, abs 1e-14 (abs covers torch's log(1 + exp(-x)), which rounds losses below
//           1e-16 to 0 where xent's log1p keeps them: docs/differences-from-torch.md)
//   float:  rel 2e-6,  abs 2e-6 (the same float32-exact inputs, computed in float)
// Every case runs with both class axes: dim 0 (C x N, torch's [N, C] memory) and dim 1 (N x C).

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

using Eigen::Index;
template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// A case of binary_cases.txt; its tag names the function.
struct ref_case : xent_test::reference_case {
  Index n() const { return Index(values.at("shape")[0]); }
  Index c() const { return Index(values.at("shape")[1]); }
  int reduction_code() const { return has("reduction") ? int(values.at("reduction")[0]) : 0; }
};

std::vector<ref_case> read_cases() {
  std::vector<ref_case> cases;
  for (auto& c : xent_test::read_reference(xent_test::reference_path("binary_cases.txt"))) cases.push_back({std::move(c)});
  REQUIRE(cases.size() == 126);  // every case the generator writes
  return cases;
}

const std::vector<ref_case>& cases() {
  static const auto all = read_cases();
  return all;
}

/// A torch [rows, cols] row-major array as the Eigen matrix of the class axis `dim`:
/// dim 0 -> cols x rows (its transpose), dim 1 -> rows x cols.
template <class T>
matrix<T> as_matrix(const std::vector<long double>& v, Index rows, Index cols, int dim) {
  matrix<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = T(v[std::size_t(i * cols + j)]);
  if (dim == 0) return m.transpose();
  return m;
}

/// A weight of C values stays a vector; N*C values become the input's shape.
template <class T>
matrix<T> weight_of(const ref_case& c, const std::string& key, int dim) {
  if (!c.has(key)) return {};
  const auto& v = c[key];
  if (Index(v.size()) == c.c() && c.n() != 1) {
    matrix<T> w(c.c(), 1);
    for (Index k = 0; k < c.c(); ++k) w(k) = T(v[std::size_t(k)]);
    return w;
  }
  return as_matrix<T>(v, c.n(), c.c(), dim);
}

xent::reduction reduction_of(int code) {
  const xent::reduction all[] = {xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                 xent::reduction::batchmean};
  return all[code];
}

struct tolerance {
  double rel, abs;
};

struct tally {
  std::size_t cases = 0, values = 0;
  double worst_value = 0, worst_grad = 0;  // |got - torch| / (|torch| + abs / rel), i.e. relative with a floor
};

template <class T>
void compare(const char* what, const matrix<T>& got, const matrix<T>& expected, tolerance tol, double& worst,
             tally& t, const std::string& name) {
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

/// Runs one loss case through xent at class axis dim; returns {value, gradient}.
template <class T>
std::pair<matrix<T>, matrix<T>> run_loss(const ref_case& c, int dim, const matrix<T>& x, const matrix<T>& t,
                                         const matrix<T>& grad_out) {
  const xent::reduction r = reduction_of(c.reduction_code());
  matrix<T> grad(x.rows(), x.cols());
  if (c.tag == "bce") {
    xent::binary_cross_entropy_options<T> o;
    o.weight = weight_of<T>(c, "weight", dim);
    o.reduction = r;
    o.dim = dim;
    xent::binary_cross_entropy_backward(grad_out, x, t, grad, o);
    return {xent::binary_cross_entropy(x, t, o), grad};
  }
  if (c.tag == "bce_logits") {
    xent::binary_cross_entropy_with_logits_options<T> o;
    o.weight = weight_of<T>(c, "weight", dim);
    o.pos_weight = weight_of<T>(c, "pos_weight", dim);
    o.reduction = r;
    o.dim = dim;
    xent::binary_cross_entropy_with_logits_backward(grad_out, x, t, grad, o);
    return {xent::binary_cross_entropy_with_logits(x, t, o), grad};
  }
  REQUIRE(c.tag == "kl_div");
  xent::kl_div_options o;
  o.reduction = r;
  o.log_target = c["log_target"][0] != 0;
  o.dim = dim;
  xent::kl_div_backward(grad_out, x, t, grad, o);
  return {xent::kl_div(x, t, o), grad};
}

template <class T>
matrix<T> run_measure(const ref_case& c, int dim, const matrix<T>& p) {
  xent::measure_options o;
  o.dim = dim;
  if (c["base"][0] != 0) o.base = double(c["base"][0]);
  if (c.tag == "entropy") return xent::entropy(p, o);
  if (c.tag == "entropy_from_logits") return xent::entropy_from_logits(p, o);
  const matrix<T> q = as_matrix<T>(c["target"], c.n(), c.c(), dim);
  if (c.tag == "cross_entropy_between") return xent::cross_entropy_between(p, q, o);
  if (c.tag == "kl_divergence") return xent::kl_divergence(p, q, o);
  REQUIRE(c.tag == "js_divergence");
  return xent::js_divergence(p, q, o);
}

template <class T>
tally check_all_cases(tolerance tol) {
  tally t;
  for (const auto& c : cases()) {
    ++t.cases;
    for (int dim = 0; dim < 2; ++dim) {
      const matrix<T> x = as_matrix<T>(c["input"], c.n(), c.c(), dim);
      const std::string name = c.name + " dim " + std::to_string(dim);
      if (c.has("grad")) {
        const matrix<T> target = as_matrix<T>(c["target"], c.n(), c.c(), dim);
        const bool none = c.reduction_code() == 0;
        const matrix<T> grad_out = none ? as_matrix<T>(c["grad_out"], c.n(), c.c(), dim)
                                        : matrix<T>::Constant(1, 1, T(c["grad_out"][0]));
        const auto [value, grad] = run_loss<T>(c, dim, x, target, grad_out);
        const matrix<T> expected = none ? as_matrix<T>(c["value"], c.n(), c.c(), dim)
                                        : matrix<T>::Constant(1, 1, T(c["value"][0]));
        compare("value", value, expected, tol, t.worst_value, t, name);
        compare("grad", grad, as_matrix<T>(c["grad"], c.n(), c.c(), dim), tol, t.worst_grad, t, name);
      } else {
        const matrix<T> value = run_measure<T>(c, dim, x);
        compare("value", value, as_matrix<T>(c["value"], c.n(), 1, 1), tol, t.worst_value, t, name);
      }
    }
  }
  return t;
}

}  // namespace

TEST_CASE("binary losses, kl_div and measures match torch 1.13 in double", "[binary][reference][torch]") {
  const tolerance tol{1e-12, 1e-14};
  const tally t = check_all_cases<double>(tol);
  CHECK(t.cases >= 120);
  std::cout << "binary/measures vs torch, double: " << t.cases << " cases (x2 class axes), " << t.values
            << " values; worst relative error (floor " << tol.abs / tol.rel << "): value " << t.worst_value
            << ", gradient " << t.worst_grad << "\n";
}

TEST_CASE("binary losses, kl_div and measures match torch 1.13 in float", "[binary][reference][torch]") {
  const tolerance tol{2e-6, 2e-6};
  const tally t = check_all_cases<float>(tol);
  std::cout << "binary/measures vs torch, float: " << t.cases << " cases, " << t.values
            << " values; worst relative error (floor 1): value " << t.worst_value << ", gradient " << t.worst_grad << "\n";
}

// ---------------------------------------------------------------------------------------------
// Finite differences: L = sum(loss * grad_out) for every reduction; central differences in double.

namespace {

double worst_fd = 0;

template <class Loss, class Backward>
void check_fd(const char* what, Eigen::MatrixXd x, const Eigen::MatrixXd& grad_out, Loss loss, Backward backward) {
  Eigen::MatrixXd grad(x.rows(), x.cols());
  backward(grad_out, x, grad);
  auto objective = [&](const Eigen::MatrixXd& at) {
    const Eigen::MatrixXd v = loss(at);
    return v.size() == 1 ? v(0, 0) * grad_out(0, 0) : v.cwiseProduct(grad_out).sum();
  };
  for (Index i = 0; i < x.size(); ++i) {
    const double x0 = x.data()[i], h = 1e-5 * std::max(1.0, std::fabs(x0));
    x.data()[i] = x0 + h;
    const double up = objective(x);
    x.data()[i] = x0 - h;
    const double down = objective(x);
    x.data()[i] = x0;
    const double fd = (up - down) / (2 * h), g = grad.data()[i];
    const double err = std::fabs(fd - g) / std::max(1.0, std::fabs(g));
    worst_fd = std::max(worst_fd, err);
    INFO(what << " element " << i << ": analytic " << g << ", finite difference " << fd);
    CHECK(err <= 1e-7);
  }
}

}  // namespace

TEST_CASE("every gradient matches central finite differences in double", "[binary][gradient]") {
  const Index C = 3, N = 4;
  std::uniform_real_distribution<double> unit(0.05, 0.95);
  auto random = [&](Index r, Index c) {
    Eigen::MatrixXd m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = unit(xent_test::rng());
    return m;
  };
  const Eigen::MatrixXd p = random(C, N), t = random(C, N), x = xent_test::random_logits<double>(C, N, 3);
  const Eigen::MatrixXd per_elem = random(C, N) + Eigen::MatrixXd::Constant(C, N, 0.5);
  const Eigen::MatrixXd log_q = xent::log_softmax(xent_test::random_logits<double>(5, N, 2));
  const Eigen::MatrixXd q = xent::softmax(xent_test::random_logits<double>(5, N, 2));

  for (int dim = 0; dim < 2; ++dim) {
    // dim 1 sees the same data transposed: samples along rows.
    auto T = [dim](const Eigen::MatrixXd& m) -> Eigen::MatrixXd { return dim == 0 ? m : Eigen::MatrixXd(m.transpose()); };
    for (auto r : {xent::reduction::none, xent::reduction::mean, xent::reduction::sum}) {
      const Eigen::MatrixXd seed = r == xent::reduction::none ? T(per_elem) : Eigen::MatrixXd::Constant(1, 1, 0.75);
      xent::binary_cross_entropy_options<double> bo;
      bo.weight = (Eigen::VectorXd(3) << 0.5, 1.5, 2.0).finished();
      bo.reduction = r;
      bo.dim = dim;
      check_fd("binary_cross_entropy", T(p), seed, [&](const Eigen::MatrixXd& a) { return xent::binary_cross_entropy(a, T(t), bo); },
               [&](const Eigen::MatrixXd& g, const Eigen::MatrixXd& a, Eigen::MatrixXd& out) {
                 xent::binary_cross_entropy_backward(g, a, T(t), out, bo);
               });
      xent::binary_cross_entropy_with_logits_options<double> lo;
      lo.weight = T(per_elem);
      lo.pos_weight = (Eigen::VectorXd(3) << 3.0, 0.5, 1.0).finished();
      lo.reduction = r;
      lo.dim = dim;
      check_fd("binary_cross_entropy_with_logits", T(x), seed,
               [&](const Eigen::MatrixXd& a) { return xent::binary_cross_entropy_with_logits(a, T(t), lo); },
               [&](const Eigen::MatrixXd& g, const Eigen::MatrixXd& a, Eigen::MatrixXd& out) {
                 xent::binary_cross_entropy_with_logits_backward(g, a, T(t), out, lo);
               });
    }
    for (auto r : {xent::reduction::none, xent::reduction::mean, xent::reduction::sum, xent::reduction::batchmean})
      for (bool log_target : {false, true}) {
        const Eigen::MatrixXd seed = r == xent::reduction::none ? T(Eigen::MatrixXd::Constant(5, N, 1.25))
                                                                : Eigen::MatrixXd::Constant(1, 1, 0.75);
        const Eigen::MatrixXd target = T(log_target ? Eigen::MatrixXd(q.array().log().matrix()) : q);
        const xent::kl_div_options ko{r, log_target, dim};
        check_fd("kl_div", T(log_q), seed, [&](const Eigen::MatrixXd& a) { return xent::kl_div(a, target, ko); },
                 [&](const Eigen::MatrixXd& g, const Eigen::MatrixXd& a, Eigen::MatrixXd& out) {
                   xent::kl_div_backward(g, a, target, out, ko);
                 });
      }
  }
  std::cout << "finite differences, double: worst |fd - analytic| / max(1, |analytic|) = " << worst_fd << "\n";
}

TEST_CASE("scalar seeds, Maps over caller buffers and row-major inputs", "[binary]") {
  // torch memory [N = 2, C = 3], viewed without a copy as C x N (dim 0).
  const double probs[] = {0.1, 0.5, 0.9, 0.2, 0.4, 0.6};
  const double targets[] = {0, 1, 1, 0.5, 0.5, 0};
  double grad[6];
  const Eigen::Map<const Eigen::MatrixXd> p(probs, 3, 2), t(targets, 3, 2);
  xent::binary_cross_entropy_backward(1.0, p, t, Eigen::Map<Eigen::MatrixXd>(grad, 3, 2));
  Eigen::MatrixXd g2(3, 2);
  xent::binary_cross_entropy_backward(Eigen::MatrixXd::Constant(1, 1, 1.0), p, t, g2);
  CHECK(Eigen::Map<Eigen::MatrixXd>(grad, 3, 2) == g2);
  using row_major = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
  const Eigen::Map<const row_major> pr(probs, 2, 3), tr(targets, 2, 3);
  xent::binary_cross_entropy_options<double> o;
  o.dim = 1;
  CHECK(xent::binary_cross_entropy(pr, tr, o).value() == Approx(xent::binary_cross_entropy(p, t).value()).epsilon(1e-15));
}

// ---------------------------------------------------------------------------------------------
// Identities between the measures, on random normalised distributions (double).

TEST_CASE("information identities hold", "[measures]") {
  for (int trial = 0; trial < 20; ++trial) {
    const Index C = 2 + trial, N = 6;
    Eigen::MatrixXd p = xent::softmax(xent_test::random_logits<double>(C, N, 2));
    const Eigen::MatrixXd q = xent::softmax(xent_test::random_logits<double>(C, N, 2));
    p(0, 0) = 0;  // a zero: 0 log 0 = 0
    p.col(0) /= p.col(0).sum();
    const Eigen::VectorXd h = xent::entropy(p), hpq = xent::cross_entropy_between(p, q), kl = xent::kl_divergence(p, q),
                          js = xent::js_divergence(p, q), js_bits = xent::js_divergence(p, q, {0, xent::bits}),
                          h_bits = xent::entropy(p, {0, 2.0});
    for (Index j = 0; j < N; ++j) {
      INFO("C " << C << " sample " << j);
      CHECK(hpq(j) == Approx(h(j) + kl(j)).epsilon(1e-12));
      CHECK(kl(j) >= 0);
      CHECK(js(j) >= 0);
      CHECK(js(j) <= std::log(2.0) + 1e-15);
      CHECK(js_bits(j) <= 1 + 1e-15);
      CHECK(h_bits(j) == Approx(h(j) / std::log(2.0)).epsilon(1e-14));
      CHECK(xent::entropy(p, {0, 10.0})(j) == Approx(h(j) / std::log(10.0)).epsilon(1e-14));
    }
    // The entropy of softmax(x) from logits equals the entropy of the probabilities.
    const Eigen::MatrixXd x = xent_test::random_logits<double>(C, N, 3);
    const Eigen::VectorXd hx = xent::entropy_from_logits(x), hs = xent::entropy(xent::softmax(x));
    for (Index j = 0; j < N; ++j) CHECK(hx(j) == Approx(hs(j)).epsilon(1e-12).margin(1e-15));
  }
  // Exact special values: a point mass has no entropy; disjoint supports have JS = ln 2 and infinite KL.
  const Eigen::Vector2d a(1, 0), b(0, 1);
  CHECK(xent::entropy(a)(0) == 0);
  CHECK(xent::js_divergence(a, b)(0) == Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(xent::js_divergence(a, b, {0, xent::bits})(0) == Approx(1).epsilon(1e-15));
  CHECK(std::isinf(xent::kl_divergence(a, b)(0)));
  CHECK(xent::entropy(Eigen::Vector4d::Constant(0.25))(0) == Approx(std::log(4.0)).epsilon(1e-15));
}

// ---------------------------------------------------------------------------------------------
// Misuse: xent::invalid_argument naming function, argument, expectation and value.

TEST_CASE("bad input to the binary losses and measures throws a message naming it", "[binary][errors]") {
  Eigen::MatrixXd p(3, 2);
  p << 0.2, 0.5, 0.3, 0.5, 0.5, 0.0;
  const Eigen::MatrixXd t = Eigen::MatrixXd::Constant(3, 2, 0.5), wrong(2, 3), empty(0, 2);
  Eigen::MatrixXd bad_p = p, grad(3, 2);
  bad_p(2, 1) = -0.2;
  Eigen::MatrixXd nan_p = p;
  nan_p(1, 0) = std::nan("");
  xent::binary_cross_entropy_options<double> w_len;
  w_len.weight = Eigen::Vector2d(1, 2);  // 3 classes along dim 0
  xent::binary_cross_entropy_with_logits_options<double> pw_len;
  pw_len.pos_weight = Eigen::Vector4d(1, 2, 3, 4);
  xent::binary_cross_entropy_options<double> batchmean;
  batchmean.reduction = xent::reduction::batchmean;
  xent::binary_cross_entropy_options<double> dim2;
  dim2.dim = 2;
  xent::binary_cross_entropy_options<double> sum;
  sum.reduction = xent::reduction::sum;
  Eigen::MatrixXd over = p;
  over(0, 1) = 1.5;

  const xent_test::misuse cases[] = {
      {"shape mismatch", [&] { (void)xent::binary_cross_entropy(p, wrong); }, "binary_cross_entropy", "targets", "must have the shape of probs (3 x 2), but got 2 x 3"},
      {"logits shape mismatch", [&] { (void)xent::binary_cross_entropy_with_logits(p, wrong); }, "binary_cross_entropy_with_logits", "targets", "but got 2 x 3"},
      {"weight length", [&] { (void)xent::binary_cross_entropy(p, t, w_len); }, "binary_cross_entropy", "weight", "one entry per class (3)"},
      {"pos_weight length", [&] { (void)xent::binary_cross_entropy_with_logits(p, t, pw_len); }, "binary_cross_entropy_with_logits", "pos_weight", "but got 4 x 1"},
      {"negative probability", [&] { (void)xent::binary_cross_entropy(bad_p, t); }, "binary_cross_entropy", "probs", "probs(2, 1) = -0.2"},
      {"probability above 1", [&] { (void)xent::binary_cross_entropy(over, t); }, "binary_cross_entropy", "probs", "probs(0, 1) = 1.5"},
      {"target above 1", [&] { (void)xent::binary_cross_entropy_with_logits(p, over); }, "binary_cross_entropy_with_logits", "targets", "targets(0, 1) = 1.5"},
      {"negative p in entropy", [&] { (void)xent::entropy(bad_p); }, "entropy", "p", "p(2, 1) = -0.2"},
      {"NaN p in entropy", [&] { (void)xent::entropy(nan_p); }, "entropy", "p", "p(1, 0) = nan"},
      {"negative q", [&] { (void)xent::kl_divergence(p, bad_p); }, "kl_divergence", "q", "q(2, 1) = -0.2"},
      {"negative kl_div target", [&] { (void)xent::kl_div(p, bad_p); }, "kl_div", "target", "target(2, 1) = -0.2"},
      {"empty input", [&] { (void)xent::binary_cross_entropy(empty, empty); }, "binary_cross_entropy", "probs", "must not be empty, but got 0 x 2"},
      {"empty p", [&] { (void)xent::js_divergence(empty, empty); }, "js_divergence", "p", "must not be empty"},
      {"base 1", [&] { (void)xent::entropy(p, {0, 1.0}); }, "entropy", "base", "> 0 and != 1, but got 1"},
      {"base -2", [&] { (void)xent::cross_entropy_between(p, p, {0, -2.0}); }, "cross_entropy_between", "base", "but got -2"},
      {"base inf", [&] { (void)xent::entropy_from_logits(p, {0, HUGE_VAL}); }, "entropy_from_logits", "base", "but got inf"},
      {"dim 2", [&] { (void)xent::binary_cross_entropy(p, t, dim2); }, "binary_cross_entropy", "dim", "must be 0"},
      {"dim -1 measure", [&] { (void)xent::entropy(p, {-1}); }, "entropy", "dim", "but got -1"},
      {"dim 3 kl_div", [&] { (void)xent::kl_div(p, t, {xent::reduction::mean, false, 3}); }, "kl_div", "dim", "but got 3"},
      {"batchmean outside kl_div", [&] { (void)xent::binary_cross_entropy(p, t, batchmean); }, "binary_cross_entropy", "reduction", "but got batchmean"},
      {"batchmean in backward", [&] { xent::binary_cross_entropy_backward(1.0, p, t, grad, batchmean); }, "binary_cross_entropy_backward", "reduction", "batchmean"},
      {"grad_out shape for sum", [&] { xent::binary_cross_entropy_backward(t, p, t, grad, sum); }, "binary_cross_entropy_backward", "grad_out", "must be 1 x 1 for reduction sum, but got 3 x 2"},
      {"grad_input shape", [&] { xent::kl_div_backward(1.0, p, t, wrong); }, "kl_div_backward", "grad_input", "the shape of the input (3 x 2), but got 2 x 3"},
  };
  xent_test::check_misuse(cases);
}
