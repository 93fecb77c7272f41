// The label-smoothing family (issue 16, items 4 and 5): cross_entropy's label_smoothing_excluded
// (classes that take no smoothing mass), softmax_focal_loss's label_smoothing and Keras's
// categorical focal loss of probabilities, against torch 1.13 float64 compositions
// (tests/reference/smoothing_cases.txt, from tests/reference/gen_smoothing_reference.py), the same
// distribution given as probability targets, Keras's documented example, finite differences,
// E = 0 as the plain label_smoothing bit for bit, and the bad input.

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

/// A list of class indices as the options hold it. (Not a fixed-size Eigen temporary: GCC 12 with
/// -march=native AVX-512 reports a false -Warray-bounds on copying one into an Eigen::VectorXi.)
Eigen::VectorXi classes_of(std::initializer_list<int> list) {
  Eigen::VectorXi v(Eigen::Index(list.size()));
  Eigen::Index k = 0;
  for (int c : list) v(k++) = c;
  return v;
}

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("smoothing_cases.txt"); }

constexpr std::array<xent::reduction, 3> reductions{xent::reduction::none, xent::reduction::mean, xent::reduction::sum};

Eigen::VectorXd doubles(const std::vector<long double>& v) {
  Eigen::VectorXd out(Eigen::Index(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(Eigen::Index(i)) = double(v[i]);
  return out;
}

Eigen::VectorXi ints(const std::vector<long double>& v) {
  Eigen::VectorXi out(Eigen::Index(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(Eigen::Index(i)) = int(v[i]);
  return out;
}

xent::cross_entropy_options ce_options_of(const xent_test::reference_case& c) {
  xent::cross_entropy_options o;
  o.reduction = reductions[std::size_t(c["reduction"][0])];
  o.label_smoothing = double(c["eps"][0]);
  o.label_smoothing_kind = c["kind"][0] == 0 ? xent::label_smoothing_kind::uniform : xent::label_smoothing_kind::other_classes;
  if (c.has("excluded")) o.label_smoothing_excluded = ints(c["excluded"]);
  if (c.has("weight")) o.weight = doubles(c["weight"]);
  return o;
}

xent::softmax_focal_loss_options focal_options_of(const xent_test::reference_case& c) {
  xent::softmax_focal_loss_options o;
  o.reduction = reductions[std::size_t(c["reduction"][0])];
  o.label_smoothing = double(c["eps"][0]);
  o.gamma = double(c["gamma"][0]);
  if (c.has("alpha")) o.alpha = doubles(c["alpha"]);
  return o;
}

xent::categorical_focal_cross_entropy_options keras_focal_options_of(const xent_test::reference_case& c) {
  xent::categorical_focal_cross_entropy_options o;
  o.reduction = reductions[std::size_t(c["reduction"][0])];
  o.label_smoothing = double(c["eps"][0]);
  o.gamma = double(c["gamma"][0]);
  o.alpha = double(c["alpha"][0]);
  o.epsilon = double(c["clip"][0]);
  return o;
}

/// The worst loss error (relative to max(|ref|, 1)) and gradient error (relative to the largest
/// reference entry) of a case, over the forward, _with_grad and _backward calls.
template <class T>
std::array<double, 2> errors_of(const xent_test::reference_case& c) {
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const matrix<T> x = xent_test::as_matrix<T>(c["logits"], C, N);
  index_vector t = index_vector::Zero(N);
  if (c.has("target"))
    for (Eigen::Index j = 0; j < N; ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
  const bool reduced = reductions[std::size_t(c["reduction"][0])] != xent::reduction::none;
  matrix<T> g1(C, N), g2(C, N);
  // forward, with_grad into g1, backward with the case's grad_out into g2, for one loss
  auto three = [&](auto&& forward, auto&& with_grad, auto&& backward) {
    auto fwd = forward();
    auto wg = with_grad(g1);
    if (!reduced) {
      const vector<T> go = doubles(c["grad_out"]).cast<T>();
      backward(go, g2);
      g1 = g1 * go.asDiagonal();  // with_grad seeds 1 per sample
    } else {
      backward(T(c["grad_out"][0]), g2);
    }
    return std::array<xent::loss_result<T>, 2>{std::move(fwd), std::move(wg)};
  };
  const int fn = int(c["fn"][0]);
  auto results = [&] {
    if (fn == 0) {
      const xent::cross_entropy_options o = ce_options_of(c);
      return three([&] { return xent::cross_entropy(x, t, o); }, [&](matrix<T>& g) { return xent::cross_entropy_with_grad(x, t, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::cross_entropy_backward(x, t, go, o, g); });
    }
    if (fn == 1) {
      const xent::softmax_focal_loss_options o = focal_options_of(c);
      return three([&] { return xent::softmax_focal_loss(x, t, o); },
                   [&](matrix<T>& g) { return xent::softmax_focal_loss_with_grad(x, t, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::softmax_focal_loss_backward(x, t, go, o, g); });
    }
    const xent::categorical_focal_cross_entropy_options o = keras_focal_options_of(c);
    if (c.has("target"))
      return three([&] { return xent::categorical_focal_cross_entropy(x, t, o); },
                   [&](matrix<T>& g) { return xent::categorical_focal_cross_entropy_with_grad(x, t, o, g); },
                   [&](const auto& go, matrix<T>& g) { xent::categorical_focal_cross_entropy_backward(x, t, go, o, g); });
    const matrix<T> y = xent_test::as_matrix<T>(c["targets"], C, N);
    return three([&] { return xent::categorical_focal_cross_entropy(x, y, o); },
                 [&](matrix<T>& g) { return xent::categorical_focal_cross_entropy_with_grad(x, y, o, g); },
                 [&](const auto& go, matrix<T>& g) { xent::categorical_focal_cross_entropy_backward(x, y, go, o, g); });
  }();
  const auto& fwd = results[0];
  const auto& wg = results[1];
  const auto& ref = c["loss"];
  double loss_error = 0;
  for (const auto* r : {&fwd, &wg}) {
    if (r->reduction() == xent::reduction::none) {
      REQUIRE(std::size_t(r->per_sample().size()) == ref.size());
      for (std::size_t j = 0; j < ref.size(); ++j)
        loss_error = std::max(loss_error, xent_test::error_of(double(r->per_sample()(Eigen::Index(j))), ref[j],
                                                              std::max(std::fabs(ref[j]), 1.0L)));
    } else {
      loss_error = std::max(loss_error, xent_test::error_of(double(r->value()), ref[0], std::max(std::fabs(ref[0]), 1.0L)));
    }
  }
  const auto& g = c["grad"];
  long double scale = std::numeric_limits<long double>::min();
  for (long double v : g) scale = std::max(scale, std::fabs(v));
  double grad_error = 0;
  for (const matrix<T>* m : {&g1, &g2})
    for (Eigen::Index i = 0; i < m->size(); ++i)
      grad_error = std::max(grad_error, xent_test::error_of(double(m->data()[i]), g[std::size_t(i)], scale));
  return {loss_error, grad_error};
}

/// Targets in [0, C), every seventh sample ignored, and some on the excluded classes.
index_vector random_targets(Eigen::Index N, Eigen::Index C, const Eigen::VectorXi& excluded) {
  index_vector t(N);
  std::uniform_int_distribution<std::int64_t> cls(0, C - 1);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = j % 7 == 3 ? -100 : cls(xent_test::rng());
  for (Eigen::Index j = 1; j < N && excluded.size(); j += 5) t(j) = excluded(j % excluded.size());
  return t;
}

/// The smoothed target distribution of the convention (docs/losses.md), written out: a column per sample.
matrix<double> smoothed_targets(const index_vector& t, Eigen::Index C, const xent::cross_entropy_options& o) {
  std::vector<bool> excluded(std::size_t(C), false);
  for (Eigen::Index i = 0; i < o.label_smoothing_excluded.size(); ++i) excluded[std::size_t(o.label_smoothing_excluded(i))] = true;
  const double left = double(C - o.label_smoothing_excluded.size()), eps = o.label_smoothing;
  const bool uniform = o.label_smoothing_kind == xent::label_smoothing_kind::uniform;
  matrix<double> q = matrix<double>::Zero(C, t.size());
  for (Eigen::Index j = 0; j < t.size(); ++j) {
    if (t(j) < 0) continue;
    if (excluded[std::size_t(t(j))]) {
      q(t(j), j) = 1;
      continue;
    }
    for (Eigen::Index k = 0; k < C; ++k)
      if (!excluded[std::size_t(k)]) q(k, j) = eps / (uniform ? left : left - 1);
    q(t(j), j) = uniform ? q(t(j), j) + (1 - eps) : 1 - eps;
  }
  return q;
}

}  // namespace

namespace {

/// Every case of one function against the reference, in double and float; the worst errors printed.
void check_reference_cases(int fn, const char* what, int at_least) {
  double worst_double[2] = {0, 0}, worst_float[2] = {0, 0};
  int checked = 0;
  for (const auto& c : cases()) {
    if (c["fn"][0] != fn) continue;
    INFO(c.name);
    ++checked;
    const auto d = errors_of<double>(c);
    CHECK(d[0] <= 2e-15);
    CHECK(d[1] <= 4e-15);
    const auto f = errors_of<float>(c);
    constexpr double eps = std::numeric_limits<float>::epsilon();
    CHECK(f[0] <= 6 * eps);
    CHECK(f[1] <= 6 * eps);
    for (int k = 0; k < 2; ++k) {
      worst_double[k] = std::max(worst_double[k], d[k]);
      worst_float[k] = std::max(worst_float[k], f[k] / eps);
    }
  }
  CHECK(checked >= at_least);
  WARN("smoothing_cases, " << what << " (" << checked << " cases): double loss " << worst_double[0] << ", gradient "
                           << worst_double[1] << "; float loss " << worst_float[0] << " eps, gradient " << worst_float[1]
                           << " eps");
}

}  // namespace

TEST_CASE("label_smoothing_excluded matches torch 1.13 float64 compositions", "[smoothing]") {
  check_reference_cases(0, "cross_entropy", 40);
}

TEST_CASE("softmax_focal_loss with label_smoothing matches torch 1.13 float64 compositions", "[smoothing][focal]") {
  check_reference_cases(1, "softmax_focal_loss", 50);
}

TEST_CASE("categorical_focal_cross_entropy matches Keras's formula written out in torch 1.13 float64", "[smoothing][focal]") {
  check_reference_cases(2, "categorical_focal_cross_entropy", 50);
}

TEMPLATE_TEST_CASE("label_smoothing_excluded is cross_entropy against its smoothed distribution as probability targets",
                   "[smoothing]", float, double) {
  // C = 3000 crosses the sweep's chunks, C = 7 with N = 37 the small-class blocks' sizes; both
  // layouts, class weights, both kinds. The probability-target path is a separate kernel.
  using T = TestType;
  double worst_loss = 0, worst_grad = 0;
  for (const Eigen::Index C : {Eigen::Index(7), Eigen::Index(3000)}) {
    const Eigen::Index N = C == 7 ? 37 : 11;
    const matrix<T> x = xent_test::random_logits<T>(C, N);
    Eigen::VectorXi excluded(3);
    excluded << 0, int(C) - 1, 2;
    const index_vector t = random_targets(N, C, excluded);
    for (const auto kind : {xent::label_smoothing_kind::uniform, xent::label_smoothing_kind::other_classes})
      for (const bool weighted : {false, true})
        for (const int dim : {0, 1}) {
          INFO("C " << C << " kind " << int(kind) << " weighted " << weighted << " dim " << dim);
          xent::cross_entropy_options o;
          o.label_smoothing = 0.3;
          o.label_smoothing_kind = kind;
          o.label_smoothing_excluded = excluded;
          o.reduction = xent::reduction::none;
          o.dim = dim;
          if (weighted) o.weight = Eigen::VectorXd::LinSpaced(C, 0.5, 1.5);
          matrix<T> q = smoothed_targets(t, C, o).cast<T>();
          xent::cross_entropy_options p = o;
          p.label_smoothing = 0;
          p.label_smoothing_kind = xent::label_smoothing_kind::uniform;
          p.label_smoothing_excluded.resize(0);
          const matrix<T> xs = dim == 0 ? x : matrix<T>(x.transpose());
          const matrix<T> qs = dim == 0 ? q : matrix<T>(q.transpose());
          matrix<T> g(xs.rows(), xs.cols()), gp(xs.rows(), xs.cols());
          const auto got = xent::cross_entropy_with_grad(xs, t, o, g);
          const auto want = xent::cross_entropy_with_grad(xs, qs, p, gp);
          for (Eigen::Index j = 0; j < N; ++j) {
            // an ignored sample has a zero column of q: 0 either way
            worst_loss = std::max(worst_loss, double(std::fabs(got.per_sample()(j) - want.per_sample()(j))) /
                                                  std::max(1.0, double(std::fabs(want.per_sample()(j)))));
          }
          worst_grad = std::max(worst_grad, double((g - gp).cwiseAbs().maxCoeff()));
        }
  }
  const double eps = std::numeric_limits<T>::epsilon();
  CHECK(worst_loss <= 8 * eps);
  CHECK(worst_grad <= 4 * eps);
  WARN((sizeof(T) == 4 ? "float" : "double") << ": index against probability targets, loss " << worst_loss / eps
                                             << " eps, gradient " << worst_grad / eps << " eps");
}

TEST_CASE("label_smoothing_excluded: E = 0, or smoothing 0, is the plain label_smoothing bit for bit", "[smoothing]") {
  for (const Eigen::Index C : {Eigen::Index(6), Eigen::Index(500)}) {
    const Eigen::Index N = 19;
    const matrix<float> x = xent_test::random_logits<float>(C, N);
    const index_vector t = random_targets(N, C, Eigen::VectorXi());
    for (const auto kind : {xent::label_smoothing_kind::uniform, xent::label_smoothing_kind::other_classes}) {
      xent::cross_entropy_options plain;
      plain.label_smoothing = 0.25;
      plain.label_smoothing_kind = kind;
      plain.reduction = xent::reduction::none;
      xent::cross_entropy_options empty = plain;
      empty.label_smoothing_excluded = Eigen::VectorXi(0);
      matrix<float> g1(C, N), g2(C, N);
      const auto a = xent::cross_entropy_with_grad(x, t, plain, g1);
      const auto b = xent::cross_entropy_with_grad(x, t, empty, g2);
      CHECK((a.per_sample().array() == b.per_sample().array()).all());
      CHECK((g1.array() == g2.array()).all());
      // No smoothing: the excluded classes change nothing either.
      xent::cross_entropy_options none = plain, none_excluded = plain;
      none.label_smoothing = none_excluded.label_smoothing = 0;
      none_excluded.label_smoothing_excluded = classes_of({0, 3});
      const auto c0 = xent::cross_entropy_with_grad(x, t, none, g1);
      const auto c1 = xent::cross_entropy_with_grad(x, t, none_excluded, g2);
      CHECK((c0.per_sample().array() == c1.per_sample().array()).all());
      CHECK((g1.array() == g2.array()).all());
    }
  }
  // The E = 0 reference case, torch's own label_smoothing: held to the same budget as the others.
  for (const auto& c : cases())
    if (c.name.find("none_excluded") != std::string::npos) {
      INFO(c.name);
      CHECK(errors_of<double>(c)[0] <= 2e-15);
    }
}

TEST_CASE("label_smoothing_excluded: gradients agree with finite differences", "[smoothing]") {
  const Eigen::Index C = 9, N = 12;
  matrix<double> x = xent_test::random_logits<double>(C, N);
  const Eigen::VectorXi excluded = classes_of({1, 4, 8});
  const index_vector t = random_targets(N, C, excluded);
  double worst = 0;
  for (const auto kind : {xent::label_smoothing_kind::uniform, xent::label_smoothing_kind::other_classes}) {
    xent::cross_entropy_options o;
    o.label_smoothing = 0.4;
    o.label_smoothing_kind = kind;
    o.label_smoothing_excluded = excluded;
    o.weight = Eigen::VectorXd::LinSpaced(C, 0.4, 2.0);
    o.z_loss = kind == xent::label_smoothing_kind::uniform ? 0.0 : 1e-2;  // the sweep with z-loss too
    matrix<double> grad(C, N);
    xent::cross_entropy_with_grad(x, t, o, grad);
    for (Eigen::Index i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::fabs(grad.data()[i] - xent_test::central_difference(
                                                            x, i, [&](const matrix<double>& m) { return xent::cross_entropy(m, t, o).value(); })));
  }
  CHECK(worst <= 1e-9);
  WARN("finite differences, label_smoothing_excluded: " << worst);
}

TEST_CASE("bad label_smoothing_excluded is a named error", "[smoothing][errors]") {
  const matrix<float> x = matrix<float>::Zero(4, 3);
  const index_vector t = index_vector::Zero(3);
  auto ce = [&](auto&& set) {
    return [&x, &t, set] {
      xent::cross_entropy_options o;
      o.label_smoothing = 0.1;
      set(o);
      (void)xent::cross_entropy(x, t, o);
    };
  };
  const xent_test::misuse table[] = {
      {"an index past the classes", ce([](auto& o) { o.label_smoothing_excluded = classes_of({1, 4}); }), "cross_entropy",
       "label_smoothing_excluded", "in [0, 4)", "entry 1 = 4"},
      {"a negative index", ce([](auto& o) { o.label_smoothing_excluded = classes_of({-1, 2}); }), "cross_entropy",
       "label_smoothing_excluded", "in [0, 4)", "entry 0 = -1"},
      {"a class twice", ce([](auto& o) { o.label_smoothing_excluded = classes_of({2, 0, 2}); }), "cross_entropy",
       "label_smoothing_excluded", "at most once", "class 2 twice"},
      {"every class excluded", ce([](auto& o) { o.label_smoothing_excluded = classes_of({0, 1, 2, 3}); }),
       "cross_entropy", "label_smoothing_excluded", "at least 1 class", "4 of 4 excluded"},
      {"other_classes with one class left", ce([](auto& o) {
         o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
         o.label_smoothing_excluded = classes_of({0, 1, 2});
       }),
       "cross_entropy", "label_smoothing_excluded", "at least 2 classes", "3 of 4 excluded"},
      {"a bad index without smoothing", ce([](auto& o) {
         o.label_smoothing = 0;
         o.label_smoothing_excluded = classes_of({0, 7});
       }),
       "cross_entropy", "label_smoothing_excluded", "in [0, 4)"},
      {"the backward's check", [&] {
         xent::cross_entropy_options o;
         o.label_smoothing_excluded = classes_of({3, 3});
         matrix<float> g(4, 3);
         xent::cross_entropy_backward(x, t, 1.0f, o, g);
       },
       "cross_entropy_backward", "label_smoothing_excluded", "at most once"},
      {"probability targets", [&] {
         xent::cross_entropy_options o;
         o.label_smoothing_excluded = Eigen::VectorXi::Constant(1, 0);
         (void)xent::cross_entropy(x, x, o);
       },
       "cross_entropy", "label_smoothing_excluded", "must be empty with probability targets", "1 classes"},
      {"poly1_cross_entropy", [&] {
         xent::poly1_cross_entropy_options o;
         o.label_smoothing = 0.1;
         o.label_smoothing_excluded = Eigen::VectorXi::Constant(1, 0);
         (void)xent::poly1_cross_entropy(x, t, o);
       },
       "poly1_cross_entropy", "label_smoothing_excluded", "must be empty for poly1_cross_entropy"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
}

TEST_CASE("softmax_focal_loss label_smoothing: gamma 0 is smoothed cross_entropy, finite differences, both layouts",
          "[smoothing][focal]") {
  const Eigen::Index C = 11, N = 13;
  matrix<double> x = xent_test::random_logits<double>(C, N);
  const index_vector t = random_targets(N, C, Eigen::VectorXi());
  xent::softmax_focal_loss_options f;
  f.gamma = 0;
  f.label_smoothing = 0.3;
  f.reduction = xent::reduction::none;
  xent::cross_entropy_options ce;
  ce.label_smoothing = 0.3;
  ce.reduction = xent::reduction::none;
  matrix<double> gf(C, N), gc(C, N);
  const auto a = xent::softmax_focal_loss_with_grad(x, t, f, gf);
  const auto b = xent::cross_entropy_with_grad(x, t, ce, gc);
  const double eps = std::numeric_limits<double>::epsilon();
  CHECK((a.per_sample() - b.per_sample()).cwiseAbs().maxCoeff() <= 8 * eps * std::max(1.0, b.per_sample().cwiseAbs().maxCoeff()));
  CHECK((gf - gc).cwiseAbs().maxCoeff() <= 8 * eps);
  // the gradient of the mean, with alpha, against central differences, and dim = 1 against dim = 0
  double worst = 0;
  for (const double gamma : {0.5, 2.0, 3.0}) {
    xent::softmax_focal_loss_options o;
    o.gamma = gamma;
    o.label_smoothing = 0.25;
    o.alpha = Eigen::VectorXd::LinSpaced(C, 0.3, 1.2);
    matrix<double> grad(C, N);
    const auto loss = xent::softmax_focal_loss_with_grad(x, t, o, grad);
    for (Eigen::Index i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::fabs(grad.data()[i] - xent_test::central_difference(x, i, [&](const matrix<double>& m) {
                                          return xent::softmax_focal_loss(m, t, o).value();
                                        })));
    xent::softmax_focal_loss_options rows = o;
    rows.dim = 1;
    const matrix<double> xt = x.transpose();
    matrix<double> grad_rows(N, C);
    const auto loss_rows = xent::softmax_focal_loss_with_grad(xt, t, rows, grad_rows);
    CHECK(loss_rows.value() == loss.value());
    CHECK((grad_rows.transpose().array() == grad.array()).all());
  }
  CHECK(worst <= 1e-9);
  WARN("finite differences, smoothed softmax_focal_loss: " << worst);
}

TEST_CASE("categorical_focal_cross_entropy: Keras's documented example, gamma 0 and alpha 1 as categorical_cross_entropy",
          "[smoothing][focal]") {
  // keras.losses.categorical_focal_crossentropy's docstring: y_true [[0, 1, 0], [0, 0, 1]],
  // y_pred [[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]] gives [2.63401289e-04, 6.75912094e-01] (float32).
  Eigen::Matrix<float, 3, 2> probs;
  probs << 0.05f, 0.1f, 0.9f, 0.85f, 0.05f, 0.05f;
  Eigen::Matrix<float, 3, 2> onehot;
  onehot << 0, 0, 1, 0, 0, 1;
  xent::categorical_focal_cross_entropy_options o;
  o.reduction = xent::reduction::none;
  const auto soft = xent::categorical_focal_cross_entropy(probs, onehot, o);
  const auto index = xent::categorical_focal_cross_entropy(probs, Eigen::Matrix<std::int64_t, 2, 1>(1, 2), o);
  CHECK(soft.per_sample()(0) == Approx(2.63401289e-04).epsilon(2e-6));
  CHECK(soft.per_sample()(1) == Approx(6.75912094e-01).epsilon(2e-6));
  CHECK((soft.per_sample().array() == index.per_sample().array()).all());
  // gamma 0, alpha 1: the cross-entropy of the same clipped probabilities
  const Eigen::Index C = 9, N = 10;
  const matrix<double> logits = xent_test::random_logits<double>(C, N);
  matrix<double> q = logits.array().exp().matrix();
  q(2, 3) = 1e-12;  // below the clip
  const index_vector t = random_targets(N, C, Eigen::VectorXi());
  xent::categorical_focal_cross_entropy_options f;
  f.gamma = 0;
  f.alpha = 1;
  f.label_smoothing = 0.15;
  xent::categorical_cross_entropy_options ce;
  ce.label_smoothing = 0.15;
  matrix<double> gf(C, N), gc(C, N);
  const auto a = xent::categorical_focal_cross_entropy_with_grad(q, t, f, gf);
  const auto b = xent::categorical_cross_entropy_with_grad(q, t, ce, gc);
  CHECK(a.value() == b.value());  // the focal factor 1 * (1 - v)^0 is exact
  CHECK((gf - gc).cwiseAbs().maxCoeff() <= 4 * std::numeric_limits<double>::epsilon() * gc.cwiseAbs().maxCoeff());
}

TEST_CASE("bad focal smoothing options are named errors", "[smoothing][focal][errors]") {
  const matrix<float> x = matrix<float>::Constant(4, 3, 0.25f);
  const index_vector t = index_vector::Zero(3);
  const xent_test::misuse table[] = {
      {"focal smoothing above 1", [&] {
         xent::softmax_focal_loss_options o;
         o.label_smoothing = 1.5;
         (void)xent::softmax_focal_loss(x, t, o);
       },
       "softmax_focal_loss", "label_smoothing", "in [0, 1]", "1.5"},
      {"focal smoothing NaN", [&] {
         xent::softmax_focal_loss_options o;
         o.label_smoothing = std::nan("");
         matrix<float> g(4, 3);
         (void)xent::softmax_focal_loss_with_grad(x, t, o, g);
       },
       "softmax_focal_loss_with_grad", "label_smoothing", "in [0, 1]"},
      {"a negative gamma", [&] {
         xent::categorical_focal_cross_entropy_options o;
         o.gamma = -1;
         (void)xent::categorical_focal_cross_entropy(x, t, o);
       },
       "categorical_focal_cross_entropy", "gamma", "finite and >= 0", "-1"},
      {"a NaN alpha", [&] {
         xent::categorical_focal_cross_entropy_options o;
         o.alpha = std::nan("");
         matrix<float> g(4, 3);
         xent::categorical_focal_cross_entropy_backward(x, t, 1.0f, o, g);
       },
       "categorical_focal_cross_entropy_backward", "alpha", "finite"},
      {"a negative probability", [&] {
         matrix<float> p = x;
         p(1, 2) = -0.5f;
         (void)xent::categorical_focal_cross_entropy(p, t, xent::categorical_focal_cross_entropy_options{});
       },
       "categorical_focal_cross_entropy", "probs", "finite probabilities >= 0"},
      {"a clip outside (0, 0.5)", [&] {
         xent::categorical_focal_cross_entropy_options o;
         o.epsilon = 0.5;
         (void)xent::categorical_focal_cross_entropy(x, t, o);
       },
       "categorical_focal_cross_entropy", "epsilon", "in (0, 0.5)"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
}

TEST_CASE("softmax_focal_loss label_smoothing takes bf16 logits as their float values", "[smoothing][focal]") {
  const Eigen::Index C = 7, N = 9;
  const matrix<Eigen::bfloat16> x = xent_test::random_logits<float>(C, N).cast<Eigen::bfloat16>();
  const matrix<float> xf = x.cast<float>();
  const index_vector t = random_targets(N, C, Eigen::VectorXi());
  xent::softmax_focal_loss_options o;
  o.label_smoothing = 0.2;
  o.reduction = xent::reduction::sum;
  matrix<Eigen::bfloat16> g(C, N);
  matrix<float> gf(C, N);
  const auto a = xent::softmax_focal_loss_with_grad(x, t, o, g);
  const auto b = xent::softmax_focal_loss_with_grad(xf, t, o, gf);
  CHECK(a.value() == b.value());  // the same float inputs, the same double pass
  CHECK((g.cast<float>().array() == gf.cast<Eigen::bfloat16>().cast<float>().array()).all());  // rounded once
}
