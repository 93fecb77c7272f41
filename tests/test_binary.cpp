// binary_cross_entropy and binary_cross_entropy_with_logits (xent/losses/binary.hpp): torch 1.13's
// values and autograd gradients, the exact values of mpmath at adversarial points, finite
// differences, the three entry points against each other, threads, a reduction over 1e8 elements,
// and misuse.
//
// Budgets against mpmath (tests/reference/elementwise_cases.txt), in ulps of the compute type at the
// exact value (a term below the smallest normal number may be flushed to 0 before pos_weight
// multiplies it; exact values beyond the type's range must come out infinite):
//   loss, both losses, every x and t:                                          4 ulp
//   binary_cross_entropy's gradient:                                           4 ulp
//   binary_cross_entropy_with_logits' gradient (1 - t) s(x) - pw t s(-x):      4 ulp of
//     |(1 - t) s(x)| + |pw t s(-x)|: exact-relative for t in {0, 1}, where one term is 0; for a soft
//     target the two terms cancel near the optimum and the rounding of s(x) is what remains.

#include "binary_reference.hpp"
#include "misuse.hpp"

#include <catch2/catch.hpp>

#include <iostream>

namespace {

using namespace xent_test;
using Eigen::Index;

template <class T>
std::pair<dense<T>, dense<T>> run_binary(const binary_case& c, int dim, const dense<T>& x, const dense<T>& t,
                                         const dense<T>& grad_out, xent::reduction r) {
  dense<T> grad(x.rows(), x.cols()), with_grad(x.rows(), x.cols()), seed_one(x.rows(), x.cols());
  const auto seed = [&](auto&& backward) {
    if (r == xent::reduction::none) {
      backward(grad_out, grad);
      backward(dense<T>::Ones(x.rows(), x.cols()), seed_one);
    } else {
      backward(grad_out(0, 0), grad);
      backward(T(1), seed_one);
    }
  };
  if (c.tag == "bce") {
    xent::binary_cross_entropy_options<T> o;
    o.weight = weight_of<T>(c, "weight", dim);
    o.reduction = r;
    o.dim = dim;
    seed([&](const auto& g, dense<T>& out) { xent::binary_cross_entropy_backward(x, t, g, o, out); });
    const dense<T> value = as_dense(xent::binary_cross_entropy(x, t, o));
    check_with_grad_agrees(value, as_dense(xent::binary_cross_entropy_with_grad(x, t, o, with_grad)), with_grad, seed_one,
                           c.name);
    return {value, grad};
  }
  REQUIRE(c.tag == "bce_logits");
  xent::binary_cross_entropy_with_logits_options<T> o;
  o.weight = weight_of<T>(c, "weight", dim);
  o.pos_weight = weight_of<T>(c, "pos_weight", dim);
  o.reduction = r;
  o.dim = dim;
  seed([&](const auto& g, dense<T>& out) { xent::binary_cross_entropy_with_logits_backward(x, t, g, o, out); });
  const dense<T> value = as_dense(xent::binary_cross_entropy_with_logits(x, t, o));
  check_with_grad_agrees(value, as_dense(xent::binary_cross_entropy_with_logits_with_grad(x, t, o, with_grad)), with_grad,
                         seed_one, c.name);
  return {value, grad};
}

}  // namespace

TEST_CASE("binary losses match torch 1.13 in double", "[binary][reference][torch]") {
  const tolerance tol{1e-12, 1e-14};
  const tally t = check_torch_loss_cases<double>({"bce", "bce_logits"}, tol, run_binary<double>);
  CHECK(t.cases == 72);
  std::cout << "binary losses vs torch, double: " << t.cases << " cases (x2 class axes), " << t.values
            << " values; worst relative error (floor " << tol.abs / tol.rel << "): value " << t.worst_value
            << ", gradient " << t.worst_grad << "\n";
}

TEST_CASE("binary losses match torch 1.13 in float", "[binary][reference][torch]") {
  const tolerance tol{2e-6, 2e-6};
  const tally t = check_torch_loss_cases<float>({"bce", "bce_logits"}, tol, run_binary<float>);
  std::cout << "binary losses vs torch, float: " << t.cases << " cases, " << t.values
            << " values; worst relative error (floor 1): value " << t.worst_value << ", gradient " << t.worst_grad << "\n";
}

// ---------------------------------------------------------------------------------------------
// The exact values (mpmath) at adversarial points: t = 0 with x from -90 to 90, x = +-1e30 and
// +-FLT_MAX, p near 0 and 1 (denormals included), the clamps of torch's logs.

namespace {

/// |(1 - t) sigmoid(x)| + |pw t sigmoid(-x)|, in long double: what a soft target's gradient is
/// accurate relative to.
long double logits_grad_terms(long double x, long double t, long double pw) {
  const long double s = 1 / (1 + std::exp(-x)), sn = 1 / (1 + std::exp(x));
  return std::fabs((1 - t) * s) + std::fabs(pw * t * sn);
}

template <class T>
void check_binary_tables() {
  struct worst_of {
    double loss = 0, grad = 0;
    std::size_t points = 0;
  } bce, logits;
  for (const auto& c : elementwise_tables()) {
    if ((c.tag != "bce" && c.tag != "bce_logits") || (sizeof(T) == 4 && double_only(c))) continue;
    const dense<T> x = table_column<T>(c, "x", T(0)), t = table_column<T>(c, "t", T(0)), pw = table_column<T>(c, "pw", T(1));
    dense<T> grad(x.rows(), 1);
    dense<T> loss;
    if (c.tag == "bce") {
      xent::binary_cross_entropy_options<T> o;
      o.reduction = xent::reduction::none;
      loss = xent::binary_cross_entropy_with_grad(x, t, o, grad).elementwise();
    } else {
      xent::binary_cross_entropy_with_logits_options<T> o;
      o.reduction = xent::reduction::none;
      o.pos_weight = pw;
      loss = xent::binary_cross_entropy_with_logits_with_grad(x, t, o, grad).elementwise();
    }
    worst_of& w = c.tag == "bce" ? bce : logits;
    for (Index i = 0; i < x.rows(); ++i) {
      const long double exact_loss = c["loss"][std::size_t(i)], exact_grad = c["grad"][std::size_t(i)];
      const long double grad_scale =
          c.tag == "bce" ? exact_grad : logits_grad_terms(c["x"][std::size_t(i)], c["t"][std::size_t(i)], c["pw"][std::size_t(i)]);
      // pos_weight multiplies a term that may have been flushed below the smallest normal number.
      const double flush = c.tag == "bce" ? 1.0 : std::max(1.0, double(pw(i)));
      const double el = table_ulps(loss(i), exact_loss, exact_loss, flush), eg = table_ulps(grad(i), exact_grad, grad_scale, flush);
      w.loss = std::max(w.loss, el);
      w.grad = std::max(w.grad, eg);
      ++w.points;
      INFO(c.name << " x = " << double(x(i)) << " t = " << double(t(i)) << ": loss " << double(loss(i)) << " vs "
                  << double(exact_loss) << " (" << el << " ulp), grad " << double(grad(i)) << " vs " << double(exact_grad)
                  << " (" << eg << " ulp)");
      CHECK(el <= 4);
      CHECK(eg <= 4);
    }
  }
  CHECK(bce.points > 1000);
  CHECK(logits.points > 10000);
  std::cout << "binary losses vs mpmath, " << (sizeof(T) == 4 ? "float" : "double") << ": binary_cross_entropy "
            << bce.points << " points, worst loss " << bce.loss << " ulp, gradient " << bce.grad
            << " ulp; with_logits " << logits.points << " points, worst loss " << logits.loss << " ulp, gradient "
            << logits.grad << " ulp of its terms (budget 4)\n";
}

}  // namespace

TEST_CASE("binary losses are within 4 ulp of mpmath at adversarial points", "[binary][reference][mpmath]") {
  check_binary_tables<float>();
  check_binary_tables<double>();
}

// ---------------------------------------------------------------------------------------------
// Finite differences: L = sum(loss * grad_out) for every reduction; central differences in double.

namespace {

template <class Loss, class Backward>
double check_fd(const char* what, Eigen::MatrixXd x, const Eigen::MatrixXd& grad_out, Loss loss, Backward backward) {
  Eigen::MatrixXd grad(x.rows(), x.cols());
  backward(grad_out, x, grad);
  auto objective = [&](const Eigen::MatrixXd& at) {
    const Eigen::MatrixXd v = loss(at);
    return v.size() == 1 ? v(0, 0) * grad_out(0, 0) : v.cwiseProduct(grad_out).sum();
  };
  double worst = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double fd = central_difference(x, i, objective), g = grad.data()[i];
    const double err = std::fabs(fd - g) / std::max(1.0, std::fabs(g));
    worst = std::max(worst, err);
    INFO(what << " element " << i << ": analytic " << g << ", finite difference " << fd);
    CHECK(err <= 1e-7);
  }
  return worst;
}

/// grad_out of the matrix form (1 x 1 for a reduced loss) as the backward takes it.
template <class F>
void with_seed(const Eigen::MatrixXd& g, xent::reduction r, F&& f) {
  if (r == xent::reduction::none)
    f(g);
  else
    f(g(0, 0));
}

}  // namespace

TEST_CASE("binary gradients match central finite differences in double", "[binary][gradient]") {
  const Index C = 3, N = 4;
  std::uniform_real_distribution<double> unit(0.05, 0.95);
  auto random = [&](Index r, Index c) {
    Eigen::MatrixXd m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = unit(rng());
    return m;
  };
  const Eigen::MatrixXd p = random(C, N), t = random(C, N), x = random_logits<double>(C, N, 3);
  const Eigen::MatrixXd per_elem = random(C, N) + Eigen::MatrixXd::Constant(C, N, 0.5);
  double worst = 0;
  for (int dim = 0; dim < 2; ++dim) {
    // dim 1 sees the same data transposed: samples along rows.
    auto T = [dim](const Eigen::MatrixXd& m) -> Eigen::MatrixXd { return dim == 0 ? m : Eigen::MatrixXd(m.transpose()); };
    for (auto r : {xent::reduction::none, xent::reduction::mean, xent::reduction::sum}) {
      const Eigen::MatrixXd seed = r == xent::reduction::none ? T(per_elem) : Eigen::MatrixXd::Constant(1, 1, 0.75);
      xent::binary_cross_entropy_options<double> bo;
      bo.weight = (Eigen::VectorXd(3) << 0.5, 1.5, 2.0).finished();
      bo.reduction = r;
      bo.dim = dim;
      worst = std::max(worst, check_fd("binary_cross_entropy", T(p), seed,
                                       [&](const Eigen::MatrixXd& a) { return as_dense(xent::binary_cross_entropy(a, T(t), bo)); },
                                       [&](const Eigen::MatrixXd& g, const Eigen::MatrixXd& a, Eigen::MatrixXd& out) {
                                         with_seed(g, r, [&](const auto& s) { xent::binary_cross_entropy_backward(a, T(t), s, bo, out); });
                                       }));
      xent::binary_cross_entropy_with_logits_options<double> lo;
      lo.weight = T(per_elem);
      lo.pos_weight = (Eigen::VectorXd(3) << 3.0, 0.5, 1.0).finished();
      lo.reduction = r;
      lo.dim = dim;
      worst = std::max(
          worst, check_fd("binary_cross_entropy_with_logits", T(x), seed,
                          [&](const Eigen::MatrixXd& a) { return as_dense(xent::binary_cross_entropy_with_logits(a, T(t), lo)); },
                          [&](const Eigen::MatrixXd& g, const Eigen::MatrixXd& a, Eigen::MatrixXd& out) {
                            with_seed(g, r, [&](const auto& s) { xent::binary_cross_entropy_with_logits_backward(a, T(t), s, lo, out); });
                          }));
    }
  }
  std::cout << "binary finite differences, double: worst |fd - analytic| / max(1, |analytic|) = " << worst << "\n";
}

TEST_CASE("scalar seeds, Maps over caller buffers and row-major inputs", "[binary]") {
  // torch memory [N = 2, C = 3], viewed without a copy as C x N (dim 0).
  const double probs[] = {0.1, 0.5, 0.9, 0.2, 0.4, 0.6};
  const double targets[] = {0, 1, 1, 0.5, 0.5, 0};
  double grad[6];
  const Eigen::Map<const Eigen::MatrixXd> p(probs, 3, 2), t(targets, 3, 2);
  xent::binary_cross_entropy_backward(p, t, 1.0, {}, Eigen::Map<Eigen::MatrixXd>(grad, 3, 2));
  Eigen::MatrixXd g2(3, 2);
  xent::binary_cross_entropy_backward(p, t, Eigen::MatrixXd::Constant(1, 1, 1.0), {}, g2);
  CHECK(Eigen::Map<Eigen::MatrixXd>(grad, 3, 2) == g2);
  using row_major = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
  const Eigen::Map<const row_major> pr(probs, 2, 3), tr(targets, 2, 3);
  xent::binary_cross_entropy_options<double> o;
  o.dim = 1;
  CHECK(xent::binary_cross_entropy(pr, tr, o).value() == Approx(xent::binary_cross_entropy(p, t).value()).epsilon(1e-15));
}

TEST_CASE("every layout and broadcast gives the same numbers, and threads do not change them", "[binary][threads]") {
  // 37 classes x 1000 samples: flat blocks of whole samples along columns; the same data row-major
  // (runs of samples), a strided Block, and a per-class weight on both axes.
  const Index C = 37, N = 1000;
  const Eigen::MatrixXf x = random_logits<float>(C, N, 4);
  std::uniform_real_distribution<float> unit(0, 1);
  Eigen::MatrixXf t(C, N), w(C, 1);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = unit(rng());
  for (Index i = 0; i < C; ++i) w(i) = 0.5f + unit(rng());
  xent::binary_cross_entropy_with_logits_options<float> o;
  o.weight = w;
  o.pos_weight = Eigen::MatrixXf::Constant(C, 1, 2.5f);
  o.reduction = xent::reduction::none;
  const Eigen::MatrixXf reference = xent::binary_cross_entropy_with_logits(x, t, o).elementwise();
  // Row-major storage of the same N x C values: classes along rows (dim 1).
  using row_major = Eigen::Matrix<float, -1, -1, Eigen::RowMajor>;
  const row_major xr = x.transpose(), tr = t.transpose();
  auto orow = o;
  orow.dim = 1;
  CHECK(xent::binary_cross_entropy_with_logits(xr, tr, orow).elementwise() == reference.transpose());
  // Column-major N x C (classes along rows of a column-major matrix: runs cross the class axis).
  const Eigen::MatrixXf xc = x.transpose(), tc = t.transpose();
  CHECK(xent::binary_cross_entropy_with_logits(xc, tc, orow).elementwise() == reference.transpose());
  // Every other sample of a wider matrix (a strided Block), and an expression (evaluated once).
  Eigen::MatrixXf wide_x(C, 2 * N), wide_t(C, 2 * N);
  for (Index j = 0; j < N; ++j) {
    wide_x.col(2 * j) = x.col(j);
    wide_t.col(2 * j) = t.col(j);
  }
  const Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>> xs(wide_x.data(), C, N, Eigen::OuterStride<>(2 * C));
  const Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>> ts(wide_t.data(), C, N, Eigen::OuterStride<>(2 * C));
  CHECK(xent::binary_cross_entropy_with_logits(xs, ts, o).elementwise() == reference);
  CHECK(xent::binary_cross_entropy_with_logits(x * 1.0f, t, o).elementwise() == reference);
  // The sum and the gradient are the same bits for 1, 2 and 3 threads (fixed blocks, ordered sums).
  o.reduction = xent::reduction::sum;
  Eigen::MatrixXf g1(C, N), g(C, N);
  o.num_threads = 1;
  const float s1 = xent::binary_cross_entropy_with_logits_with_grad(x, t, o, g1).value();
  for (int threads : {2, 3}) {
    o.num_threads = threads;
    CHECK(xent::binary_cross_entropy_with_logits_with_grad(x, t, o, g).value() == s1);
    CHECK(g == g1);
  }
  // In place: the gradient overwrites the logits.
  Eigen::MatrixXf in_place = x;
  o.num_threads = 0;
  CHECK(xent::binary_cross_entropy_with_logits_with_grad(in_place, t, o, in_place).value() == s1);
  CHECK(in_place == g1);
}

TEST_CASE("a mean over 1e8 float elements is within 1e-6 of the double result", "[binary][large][.]") {
  // 3125 x 32000 logits randn * 3 and 0/1 targets: the reduction of the figure (a float sum
  // that stalls gave -6 % here).
  const Index C = 32000, N = 3125;
  Eigen::MatrixXf x(C, N), t(C, N);
  std::mt19937_64 engine(20261201);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (Index i = 0; i < x.size(); ++i) {
    x.data()[i] = normal(engine);
    t.data()[i] = float(engine() & 1);
  }
  // The exact mean to double precision: each element in double, summed in long double.
  long double sum = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double xi = x.data()[i], ti = t.data()[i];
    const double l = std::log1p(std::exp(-std::fabs(xi)));
    sum += (1 - ti) * (std::max(xi, 0.0) + l) + ti * (std::max(-xi, 0.0) + l);
  }
  const double exact = double(sum / (long double)x.size());
  const float got = xent::binary_cross_entropy_with_logits(x, t).value();
  const double relative = std::fabs(double(got) - exact) / exact;
  std::cout << "binary_cross_entropy_with_logits mean over " << x.size() << " floats: " << got << " vs double " << exact
            << ", relative error " << relative << " (budget 1e-6)\n";
  CHECK(relative <= 1e-6);
  // The same for binary_cross_entropy on sigmoid probabilities.
  Eigen::MatrixXf p = (1.0f / (1.0f + (-x.array()).exp())).matrix();
  sum = 0;
  for (Index i = 0; i < p.size(); ++i) {
    const double pi = p.data()[i], ti = t.data()[i];
    sum += -(ti * std::max(std::log(pi), -100.0) + (1 - ti) * std::max(std::log1p(-pi), -100.0));
  }
  const double exact_bce = double(sum / (long double)p.size());
  const float got_bce = xent::binary_cross_entropy(p, t).value();
  std::cout << "binary_cross_entropy mean over " << p.size() << " floats: " << got_bce << " vs double " << exact_bce << "\n";
  CHECK(std::fabs(double(got_bce) - exact_bce) / exact_bce <= 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Misuse: xent::invalid_argument naming function, argument, expectation and value.

TEST_CASE("bad input to the binary losses throws a message naming it", "[binary][errors]") {
  Eigen::MatrixXd p(3, 2);
  p << 0.2, 0.5, 0.3, 0.5, 0.5, 0.0;
  const Eigen::MatrixXd t = Eigen::MatrixXd::Constant(3, 2, 0.5), wrong(2, 3), empty(0, 2);
  Eigen::MatrixXd bad_p = p, grad(3, 2);
  bad_p(2, 1) = -0.2;
  xent::binary_cross_entropy_options<double> w_len;
  // Not Eigen::Vector2d(1, 2): assigned to the dynamic matrix, its packet loop of 4 doubles runs 0 times,
  // which GCC 12 at -O2 -mavx2 cannot see and reports as reading past the 2 (-Werror=array-bounds).
  w_len.weight = (Eigen::MatrixXd(2, 1) << 1, 2).finished();  // 3 classes along dim 0
  xent::binary_cross_entropy_with_logits_options<double> pw_len;
  pw_len.pos_weight = (Eigen::MatrixXd(4, 1) << 1, 2, 3, 4).finished();  // as w_len, for the same GCC report
  xent::binary_cross_entropy_options<double> batchmean;
  batchmean.reduction = xent::reduction::batchmean;
  xent::binary_cross_entropy_options<double> dim2;
  dim2.dim = 2;
  xent::binary_cross_entropy_options<double> sum;
  sum.reduction = xent::reduction::sum;
  xent::binary_cross_entropy_options<double> none;
  none.reduction = xent::reduction::none;
  xent::binary_cross_entropy_options<double> threads;
  threads.num_threads = -1;
  Eigen::MatrixXd over = p;
  over(0, 1) = 1.5;
  // A gradient buffer that is the probabilities shifted by one element.
  Eigen::MatrixXd storage(3, 3);
  storage.leftCols(2) = p;
  const Eigen::Map<const Eigen::MatrixXd> p_view(storage.data(), 3, 2);
  Eigen::Map<Eigen::MatrixXd> shifted(storage.data() + 1, 3, 2);
  Eigen::MatrixXd t_buffer = t;

  const misuse cases[] = {
      {"shape mismatch", [&] { (void)xent::binary_cross_entropy(p, wrong); }, "binary_cross_entropy", "targets", "must have the shape of probs (3 x 2), but got 2 x 3"},
      {"logits shape mismatch", [&] { (void)xent::binary_cross_entropy_with_logits(p, wrong); }, "binary_cross_entropy_with_logits", "targets", "but got 2 x 3"},
      {"weight length", [&] { (void)xent::binary_cross_entropy(p, t, w_len); }, "binary_cross_entropy", "weight", "one entry per class (3)"},
      {"pos_weight length", [&] { (void)xent::binary_cross_entropy_with_logits(p, t, pw_len); }, "binary_cross_entropy_with_logits", "pos_weight", "but got 4 x 1"},
      {"negative probability", [&] { (void)xent::binary_cross_entropy(bad_p, t); }, "binary_cross_entropy", "probs", "probs(2, 1) = -0.2"},
      {"probability above 1", [&] { (void)xent::binary_cross_entropy(over, t); }, "binary_cross_entropy", "probs", "probs(0, 1) = 1.5"},
      {"target above 1", [&] { (void)xent::binary_cross_entropy_with_logits(p, over); }, "binary_cross_entropy_with_logits", "targets", "targets(0, 1) = 1.5"},
      {"empty input", [&] { (void)xent::binary_cross_entropy(empty, empty); }, "binary_cross_entropy", "probs", "must not be empty, but got 0 x 2"},
      {"dim 2", [&] { (void)xent::binary_cross_entropy(p, t, dim2); }, "binary_cross_entropy", "dim", "must be 0"},
      {"batchmean outside kl_div", [&] { (void)xent::binary_cross_entropy(p, t, batchmean); }, "binary_cross_entropy", "reduction", "but got batchmean"},
      {"batchmean in backward", [&] { xent::binary_cross_entropy_backward(p, t, 1.0, batchmean, grad); }, "binary_cross_entropy_backward", "reduction", "batchmean"},
      {"grad_out shape for sum", [&] { xent::binary_cross_entropy_backward(p, t, t, sum, grad); }, "binary_cross_entropy_backward", "grad_out", "must be a number (or 1 x 1) for reduction sum, but got 3 x 2"},
      {"grad_out a number for none", [&] { xent::binary_cross_entropy_backward(p, t, 1.0, none, grad); }, "binary_cross_entropy_backward", "grad_out", "must have the shape of the input (3 x 2) for reduction none"},
      {"gradient buffer shape", [&] { xent::binary_cross_entropy_backward(p, t, 1.0, {}, wrong); }, "binary_cross_entropy_backward", "grad_probs_out", "the shape of the input (3 x 2), but got 2 x 3"},
      {"with_grad buffer shape", [&] { (void)xent::binary_cross_entropy_with_logits_with_grad(p, t, {}, wrong); }, "binary_cross_entropy_with_logits_with_grad", "grad_logits_out", "but got 2 x 3"},
      {"gradient buffer overlaps the input", [&] { (void)xent::binary_cross_entropy_with_grad(p_view, t, {}, shifted); }, "binary_cross_entropy_with_grad", "grad_probs_out", "must not overlap probs"},
      {"gradient buffer is the targets", [&] { (void)xent::binary_cross_entropy_with_grad(p, t_buffer, {}, t_buffer); }, "binary_cross_entropy_with_grad", "grad_probs_out", "must not overlap targets"},
      {"negative num_threads", [&] { (void)xent::binary_cross_entropy(p, t, threads); }, "binary_cross_entropy", "num_threads", "but got -1"},
  };
  check_misuse(cases);
}
