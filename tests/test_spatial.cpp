// The spatial layout [N, C, d1, d2, ...] (xent::spatial, losses/spatial.hpp): cross_entropy (class
// indices and probability targets), its gradient and backward, nll_loss, and softmax / log_softmax, against torch 1.13 on [N, C, d1, d2] tensors
// (tests/reference/spatial_cases.txt, float64 torch), against the same loss on an explicitly
// permuted [N * D, C] copy (the matrix overload), finite differences, threads, special values and
// the misuse checks; softmax_focal_loss the same way (its torch cases are the composition
// written out, fn 5 of spatial_cases.txt).
//
// Budgets, as test_categorical.cpp's: an error is |got - torch| over max(|torch|, 1) for a loss,
// over the case's largest |torch| entry for a gradient; double 1e-12, float 16 float epsilons.
// Against the permuted copy (same inputs, same formulas, the classes summed in another order by
// the lanes): per-sample losses within 8 ulp of the copy's at max(|loss|, 1), gradient entries
// within 8 ulp at the call's largest |entry|, double and float.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using xent_test::error_of;
using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;
using Eigen::Index;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("spatial_cases.txt"); }

const xent::reduction reductions[] = {xent::reduction::none, xent::reduction::mean, xent::reduction::sum};

template <class T>
void check_torch_cases() {
  const double budget = std::is_same_v<T, double> ? 1e-12 : 16 * double(std::numeric_limits<float>::epsilon());
  double worst_loss = 0, worst_grad = 0;
  int checked = 0;
  for (const auto& c : cases()) {
    const int fn = int(c["fn"][0]);
    if (fn >= 3) continue;  // softmax / log_softmax: their own test case
    INFO(c.name);
    const Index N = Index(c["shape"][0]), D = Index(c["shape"][1] * c["shape"][2]), C = c.classes;
    std::vector<T> x(std::size_t(N * C * D)), g(x.size(), T(7)), g2(x.size(), T(7));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(c["logits"][i]);
    index_vector t(N * D);
    if (fn != 2)
      for (Index j = 0; j < N * D; ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
    std::vector<T> y(x.size(), T(0));  // probability targets (fn 2)
    if (fn == 2)
      for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<T>(c["targets"][i]);
    const xent::reduction r = reductions[int(c["reduction"][0])];
    const auto& ref_loss = c["loss"];
    const auto& ref_grad = c["grad"];
    long double gscale = 0;
    for (long double v : ref_grad) gscale = std::max(gscale, std::fabs(v));
    const auto view = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
    const auto gview = xent::spatial(g.data(), N, C, D);
    const auto gview2 = xent::spatial(g2.data(), N, C, D);
    vector<T> grad_out_v(N * D);
    for (Index j = 0; j < N * D; ++j) grad_out_v(j) = static_cast<T>(c["grad_out"][std::size_t(r == xent::reduction::none ? j : 0)]);
    const T grad_out = grad_out_v(0);
    auto check_loss = [&](const auto& result) {
      if (r == xent::reduction::none) {
        for (Index j = 0; j < N * D; ++j) {
          const double e = error_of(double(result.per_sample()(j)), ref_loss[std::size_t(j)],
                                    std::max<long double>(1, std::fabs(ref_loss[std::size_t(j)])));
          worst_loss = std::max(worst_loss, e);
          CHECK(e <= budget);
        }
      } else {
        const double e = error_of(double(result.value()), ref_loss[0], std::max<long double>(1, std::fabs(ref_loss[0])));
        worst_loss = std::max(worst_loss, e);
        CHECK(e <= budget);
      }
    };
    auto check_grad = [&](const std::vector<T>& got, double factor) {
      for (std::size_t i = 0; i < got.size(); ++i) {
        const double e = error_of(double(got[i]) * factor, ref_grad[i], gscale);
        worst_grad = std::max(worst_grad, e);
        CHECK(e <= budget);
      }
    };
    if (fn == 0 || fn == 2) {
      xent::cross_entropy_options o;
      o.reduction = r;
      if (fn == 0) o.ignore_index = long(c["ignore"][0]);
      o.label_smoothing = double(c["eps"][0]);
      if (c.has("weight")) o.weight = Eigen::Map<const Eigen::Matrix<long double, Eigen::Dynamic, 1>>(c["weight"].data(), C).cast<double>();
      const auto yview = xent::spatial(static_cast<const T*>(y.data()), N, C, D);
      // The same calls with class indices (fn 0) or the targets' view (fn 2).
      auto forward = [&] { return fn == 0 ? xent::cross_entropy(view, t, o) : xent::cross_entropy(view, yview, o); };
      auto with_grad = [&] {
        return fn == 0 ? xent::cross_entropy_with_grad(view, t, o, gview) : xent::cross_entropy_with_grad(view, yview, o, gview);
      };
      auto backward = [&](const auto& grad_out_arg) {
        if (fn == 0)
          xent::cross_entropy_backward(view, t, grad_out_arg, o, gview2);
        else
          xent::cross_entropy_backward(view, yview, grad_out_arg, o, gview2);
      };
      check_loss(forward());
      const auto with = with_grad();
      check_loss(with);
      if (r == xent::reduction::none) {
        backward(grad_out_v);
        // with_grad is the gradient of the sum: times grad_out per pixel to compare with torch's.
        std::vector<T> scaled = g;
        for (Index n = 0; n < N; ++n)
          for (Index k = 0; k < C; ++k)
            for (Index d = 0; d < D; ++d) scaled[std::size_t((n * C + k) * D + d)] *= grad_out_v(n * D + d);
        check_grad(scaled, 1.0);
      } else {
        backward(grad_out);
        check_grad(g, double(grad_out));
      }
      check_grad(g2, 1.0);
    } else {
      xent::nll_loss_options o;
      o.reduction = r;
      o.ignore_index = long(c["ignore"][0]);
      if (c.has("weight")) o.weight = Eigen::Map<const Eigen::Matrix<long double, Eigen::Dynamic, 1>>(c["weight"].data(), C).cast<double>();
      check_loss(xent::nll_loss(view, t, o));
      check_loss(xent::nll_loss_with_grad(view, t, o, gview));
      if (r == xent::reduction::none)
        xent::nll_loss_backward(view, t, grad_out_v, o, gview2);
      else
        xent::nll_loss_backward(view, t, grad_out, o, gview2);
      check_grad(g2, 1.0);
    }
    ++checked;
  }
  CHECK(checked == 72);
  std::cout << "spatial vs torch (" << (std::is_same_v<T, double> ? "double" : "float") << ", " << checked
            << " cases): worst loss error " << worst_loss << ", gradient " << worst_grad << " (budget " << budget << ")\n";
}

TEST_CASE("spatial cross_entropy and nll_loss match torch 1.13 on [N, C, d1, d2]", "[spatial]") {
  check_torch_cases<double>();
  check_torch_cases<float>();
}

/// [N, C, D] logits as the matrix overload's C x (N * D) copy: column n * D + d holds sample (n, d).
template <class T>
matrix<T> permuted(const std::vector<T>& x, Index N, Index C, Index D) {
  matrix<T> m(C, N * D);
  for (Index n = 0; n < N; ++n)
    for (Index k = 0; k < C; ++k)
      for (Index d = 0; d < D; ++d) m(k, n * D + d) = x[std::size_t((n * C + k) * D + d)];
  return m;
}

template <class T>
double ulps_apart(T a, T b, T scale) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : std::numeric_limits<double>::infinity();
  if (a == b) return 0;
  return xent_test::ulps(a, (long double)b, (long double)scale);
}

/// The spatial call against the matrix overload on the permuted copy: per-sample losses and the
/// gradient, over several option sets. Returns the worst distance in ulps.
template <class T>
double against_permuted(Index N, Index C, Index D, std::uint64_t seed, bool specials = false) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0, 3);
  std::uniform_int_distribution<int> cls(0, int(C) - 1);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<T> x(std::size_t(N * C * D));
  for (auto& v : x) v = static_cast<T>(normal(gen));
  index_vector t(N * D);
  for (Index j = 0; j < N * D; ++j) t(j) = unit(gen) < 0.1 ? -100 : cls(gen);
  if (specials && N * D > 20) {
    // A pixel with +inf, one with NaN, one with every class -inf, one with a -inf class.
    x[std::size_t(0 * D + 3)] = std::numeric_limits<T>::infinity();
    x[std::size_t(1 * D + 7)] = std::numeric_limits<T>::quiet_NaN();
    for (Index k = 0; k < C; ++k) x[std::size_t(k * D + 11)] = -std::numeric_limits<T>::infinity();
    x[std::size_t(2 * D + 19)] = -std::numeric_limits<T>::infinity();
    t(11) = 0;
  }
  const matrix<T> m = permuted(x, N, C, D);
  double worst = 0;
  for (int variant = 0; variant < 5; ++variant) {
    xent::cross_entropy_options o;
    o.reduction = xent::reduction::none;
    if (variant == 1) {
      o.weight = vector<double>::LinSpaced(C, 0.5, 2.0);
      o.label_smoothing = 0.1;
    } else if (variant == 2) {
      o.label_smoothing = 0.2;
      o.sample_weight = vector<double>::LinSpaced(N * D, 0.1, 3.0);
      o.mask = xent::sample_mask::Constant(N * D, true);
      for (Index j = 0; j < N * D; j += 5) o.mask(j) = false;
    } else if (variant == 3) {
      o.z_loss = 1e-3;  // the driver's path (the lanes take neither z-loss, softcap nor the lse)
      o.softcap = 15;
      o.return_lse = true;
    } else if (variant == 4 && C >= 3) {
      o.label_smoothing = 0.1;  // the driver's path too
      o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
      o.label_smoothing_excluded = (Eigen::VectorXi(1) << 1).finished();
    }
    const auto sp = xent::cross_entropy(xent::spatial(static_cast<const T*>(x.data()), N, C, D), t, o);
    const auto mat = xent::cross_entropy(m, t, o);
    std::vector<T> g(x.size());
    matrix<T> gm(C, N * D);
    const auto spg = xent::cross_entropy_with_grad(xent::spatial(static_cast<const T*>(x.data()), N, C, D), t, o,
                                                   xent::spatial(g.data(), N, C, D));
    (void)xent::cross_entropy_with_grad(m, t, o, gm);
    const matrix<T> gp = permuted(g, N, C, D);
    // The gradient's scale: the largest finite |entry| of the call (test_categorical.cpp's).
    T scale = T(1e-30);
    for (Index i = 0; i < gm.size(); ++i)
      if (std::isfinite(gm.data()[i])) scale = std::max(scale, std::fabs(gm.data()[i]));
    for (Index j = 0; j < N * D; ++j) {
      const T a = sp.per_sample()(j), b = mat.per_sample()(j);
      const double e = ulps_apart(a, b, std::max(T(1), std::fabs(b)));
      worst = std::max(worst, e);
      CHECK(e <= 8);
      CHECK(ulps_apart(spg.per_sample()(j), a, T(1)) == 0);
      if (o.return_lse) CHECK(ulps_apart(sp.lse()(j), mat.lse()(j), T(1)) <= 8);
      for (Index k = 0; k < C; ++k) {
        const double eg = ulps_apart(gp(k, j), gm(k, j), scale);
        worst = std::max(worst, eg);
        CHECK(eg <= 8);
      }
    }
  }
  return worst;
}

TEST_CASE("spatial cross_entropy equals the matrix overload on a permuted copy", "[spatial]") {
  double worst_f = 0, worst_d = 0;
  for (const Index D : {Index(1), Index(3), Index(21), Index(37), Index(64 * 64)}) {
    for (const Index C : {Index(3), Index(21)}) {
      INFO("D " << D << " C " << C);
      const Index N = D == 64 * 64 ? 2 : 3;
      worst_f = std::max(worst_f, against_permuted<float>(N, C, D, 7 + std::uint64_t(D * 31 + C)));
      worst_d = std::max(worst_d, against_permuted<double>(N, C, D, 11 + std::uint64_t(D * 31 + C)));
    }
  }
  // Large C (the sums over many classes in chains) and non-finite pixels (the lanes hand them to the driver).
  worst_f = std::max(worst_f, against_permuted<float>(2, 300, 40, 5));
  worst_d = std::max(worst_d, against_permuted<double>(2, 300, 40, 6));
  worst_f = std::max(worst_f, against_permuted<float>(3, 5, 48, 8, true));
  worst_d = std::max(worst_d, against_permuted<double>(3, 5, 48, 9, true));
  std::cout << "spatial vs permuted copy: worst " << worst_f << " ulp (float), " << worst_d << " ulp (double)\n";
}

TEST_CASE("spatial cross_entropy: D = 1 is the matrix overload bit for bit, and threads do not change the bits", "[spatial]") {
  std::mt19937_64 gen(42);
  std::normal_distribution<double> normal(0, 3);
  const Index N = 4, C = 21, D = 1;
  std::vector<float> x(std::size_t(N * C * D));
  for (auto& v : x) v = float(normal(gen));
  const index_vector t = (index_vector(4) << 0, 5, 20, 7).finished();
  xent::cross_entropy_options o;
  o.reduction = xent::reduction::none;
  const auto sp = xent::cross_entropy(xent::spatial(static_cast<const float*>(x.data()), N, C, D), t, o);
  const auto mat = xent::cross_entropy(Eigen::Map<const matrix<float>>(x.data(), C, N), t, o);
  CHECK((sp.per_sample().array() == mat.per_sample().array()).all());

  const Index N2 = 8, C2 = 21, D2 = 128 * 128;
  std::vector<float> y(std::size_t(N2 * C2 * D2));
  for (auto& v : y) v = float(normal(gen));
  index_vector t2(N2 * D2);
  for (Index j = 0; j < t2.size(); ++j) t2(j) = j % C2;
  std::vector<float> g1(y.size()), g2(y.size());
  o.reduction = xent::reduction::mean;
  o.num_threads = 1;
  const float one = xent::cross_entropy_with_grad(xent::spatial(static_cast<const float*>(y.data()), N2, C2, D2), t2, o,
                                                  xent::spatial(g1.data(), N2, C2, D2)).value();
  o.num_threads = 2;
  const float two = xent::cross_entropy_with_grad(xent::spatial(static_cast<const float*>(y.data()), N2, C2, D2), t2, o,
                                                  xent::spatial(g2.data(), N2, C2, D2)).value();
  CHECK(one == two);
  CHECK(g1 == g2);
  // In place: the gradient over the logits' own memory equals the separate buffer's.
  std::vector<float> z = y;
  const auto zv = xent::spatial(z.data(), N2, C2, D2);
  const float in_place = xent::cross_entropy_with_grad(zv, t2, o, zv).value();
  CHECK(in_place == one);
  CHECK(z == g1);
}

TEST_CASE("spatial cross_entropy's gradient matches central differences", "[spatial]") {
  std::mt19937_64 gen(3);
  std::normal_distribution<double> normal(0, 2);
  const Index N = 2, C = 4, D = 9;
  matrix<double> x(N * C * D, 1);
  for (Index i = 0; i < x.size(); ++i) x(i) = normal(gen);
  index_vector t(N * D);
  for (Index j = 0; j < N * D; ++j) t(j) = (j * 7) % C;
  t(4) = -100;
  xent::cross_entropy_options o;
  o.label_smoothing = 0.15;
  o.weight = (vector<double>(4) << 0.5, 1.0, 2.0, 1.5).finished();
  matrix<double> g(N * C * D, 1);
  (void)xent::cross_entropy_with_grad(xent::spatial(x, N, C, D), t, o, xent::spatial(g, N, C, D));
  double worst = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double fd = xent_test::central_difference(x, i, [&](const matrix<double>& m) {
      return xent::cross_entropy(xent::spatial(m, N, C, D), t, o).value();
    });
    worst = std::max(worst, std::fabs(fd - g(i)));
  }
  CHECK(worst <= 1e-8);
  std::cout << "spatial gradient vs central differences: worst " << worst << "\n";
}

TEST_CASE("spatial misuse", "[spatial][errors]") {
  std::vector<float> x(24, 0.f), g(24, 0.f), small(12, 0.f);
  const index_vector t = index_vector::Zero(6);
  const Index big = std::numeric_limits<Index>::max() / 2;
  const xent::cross_entropy_options plain;
  xent::cross_entropy_options dim1;
  dim1.dim = 1;
  const auto v = xent::spatial(static_cast<const float*>(x.data()), 2, 4, 3);
  vector<float> buffer(23);
  const xent_test::misuse table[] = {
      {"null data", [&] { (void)xent::spatial(static_cast<float*>(nullptr), 2, 4, 3); }, "spatial", "data", "must not be null"},
      {"N 0", [&] { (void)xent::spatial(x.data(), 0, 4, 3); }, "spatial", "N", "must be > 0", "got 0"},
      {"C negative", [&] { (void)xent::spatial(x.data(), 2, -4, 3); }, "spatial", "C", "must be > 0", "got -4"},
      {"D 0", [&] { (void)xent::spatial(x.data(), 2, 4, 0); }, "spatial", "D", "must be > 0"},
      {"dims with a 0", [&] { (void)xent::spatial(x.data(), 2, 4, {3, 0}); }, "spatial", "dims[1]", "must be > 0"},
      {"N C D overflow", [&] { (void)xent::spatial(x.data(), big, 4, 3); }, "spatial", "N * C * D", "must fit in Eigen::Index"},
      {"buffer size", [&] { (void)xent::spatial(buffer, 2, 4, 3); }, "spatial", "buffer", "must hold N * C * D = 2 * 4 * 3 = 24 values",
       "got 23"},
      {"default view", [&] { (void)xent::cross_entropy(xent::spatial_view<const float>{}, t, plain); }, "cross_entropy",
       "logits.data", "must not be null"},
      {"targets size",
       [&] { (void)xent::cross_entropy(v, index_vector::Zero(5), plain); }, "cross_entropy", "targets",
       "must have one entry per sample (6)", "got 5"},
      {"target out of range",
       [&] { (void)xent::cross_entropy(v, index_vector::Constant(6, 4), plain); }, "cross_entropy", "target[0]", "must be in [0, 4)"},
      {"dim 1", [&] { (void)xent::cross_entropy(v, t, dim1); }, "cross_entropy", "dim", "class axis is fixed"},
      {"grad shape",
       [&] { (void)xent::cross_entropy_with_grad(v, t, plain, xent::spatial(small.data(), 2, 2, 3)); }, "cross_entropy_with_grad",
       "grad_logits_out", "must have the logits' shape [2, 4, 3]", "[2, 2, 3]"},
      {"grad overlaps",
       [&] { (void)xent::cross_entropy_with_grad(v, t, plain, xent::spatial(x.data() + 1, 2, 4, 3)); }, "cross_entropy_with_grad",
       "grad_logits_out", "not overlap"},
      {"backward grad_out vector for mean",
       [&] { xent::cross_entropy_backward(v, t, vector<float>::Ones(6), plain, xent::spatial(g.data(), 2, 4, 3)); },
       "cross_entropy_backward", "grad_out", "must be a scalar"},
      {"nll weight size",
       [&] {
         xent::nll_loss_options o;
         o.weight = vector<double>::Ones(3);
         (void)xent::nll_loss(v, t, o);
       },
       "nll_loss", "weight", "one entry per class (4)"},
  };
  CHECK(xent_test::check_misuse(table) == 15);
}

/// Probability targets of [N, C, D] shape: a softmax of normal draws per pixel, with some exact
/// zeros (sparse soft labels, and the safe option's case).
template <class T>
std::vector<T> prob_targets(Index N, Index C, Index D, std::mt19937_64& gen) {
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<T> y(std::size_t(N * C * D));
  for (Index n = 0; n < N; ++n)
    for (Index d = 0; d < D; ++d) {
      double total = 0;
      std::vector<double> e(static_cast<std::size_t>(C));
      for (Index k = 0; k < C; ++k) total += e[std::size_t(k)] = unit(gen) < 0.2 ? 0.0 : std::exp(normal(gen));
      for (Index k = 0; k < C; ++k) y[std::size_t((n * C + k) * D + d)] = static_cast<T>(total > 0 ? e[std::size_t(k)] / total : 0.0);
    }
  return y;
}

/// The spatial call with probability targets against the matrix overload on permuted copies of
/// both: per-sample losses and the gradient, over several option sets. Returns the worst ulps.
template <class T>
double prob_against_permuted(Index N, Index C, Index D, std::uint64_t seed, bool specials = false) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0, 3);
  std::vector<T> x(std::size_t(N * C * D));
  for (auto& v : x) v = static_cast<T>(normal(gen));
  std::vector<T> y = prob_targets<T>(N, C, D, gen);
  if (specials && N * D > 20) {
    // +inf, NaN, an all -inf pixel, and a -inf class whose target is 0 (NaN unless safe).
    x[std::size_t(0 * D + 3)] = std::numeric_limits<T>::infinity();
    x[std::size_t(1 * D + 7)] = std::numeric_limits<T>::quiet_NaN();
    for (Index k = 0; k < C; ++k) x[std::size_t(k * D + 11)] = -std::numeric_limits<T>::infinity();
    x[std::size_t(2 * D + 19)] = -std::numeric_limits<T>::infinity();
    y[std::size_t(2 * D + 19)] = T(0);
  }
  const matrix<T> m = permuted(x, N, C, D), ym = permuted(y, N, C, D);
  const auto xv = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
  const auto yv = xent::spatial(static_cast<const T*>(y.data()), N, C, D);
  double worst = 0;
  for (int variant = 0; variant < 4; ++variant) {
    xent::cross_entropy_options o;
    o.reduction = xent::reduction::none;
    if (variant == 1) {
      o.weight = vector<double>::LinSpaced(C, 0.5, 2.0);
      o.label_smoothing = 0.1;
    } else if (variant == 2) {
      o.label_smoothing = 0.2;
      o.sample_weight = vector<double>::LinSpaced(N * D, 0.1, 3.0);
      o.mask = xent::sample_mask::Constant(N * D, true);
      for (Index j = 0; j < N * D; j += 5) o.mask(j) = false;
    } else if (variant == 3) {
      o.safe = true;
      o.weight = vector<double>::LinSpaced(C, 2.0, 0.5);
    }
    const auto sp = xent::cross_entropy(xv, yv, o);
    const auto mat = xent::cross_entropy(m, ym, o);
    std::vector<T> g(x.size());
    matrix<T> gm(C, N * D);
    const auto spg = xent::cross_entropy_with_grad(xv, yv, o, xent::spatial(g.data(), N, C, D));
    (void)xent::cross_entropy_with_grad(m, ym, o, gm);
    const matrix<T> gp = permuted(g, N, C, D);
    T scale = T(1e-30);
    for (Index i = 0; i < gm.size(); ++i)
      if (std::isfinite(gm.data()[i])) scale = std::max(scale, std::fabs(gm.data()[i]));
    int nonfinite = 0;
    for (Index j = 0; j < N * D; ++j) {
      const T a = sp.per_sample()(j), b = mat.per_sample()(j);
      nonfinite += !std::isfinite(b);
      const double e = ulps_apart(a, b, std::max(T(1), std::fabs(b)));
      worst = std::max(worst, e);
      CHECK(e <= 8);
      CHECK(ulps_apart(spg.per_sample()(j), a, T(1)) == 0);
      for (Index k = 0; k < C; ++k) {
        const double eg = ulps_apart(gp(k, j), gm(k, j), scale);
        worst = std::max(worst, eg);
        CHECK(eg <= 8);
      }
    }
    // The special pixels do reach both paths: +inf, NaN, all -inf, and (unless safe or masked) 0 * -inf.
    if (specials) CHECK(nonfinite >= 3);
  }
  return worst;
}

TEST_CASE("spatial cross_entropy with probability targets equals the matrix overload on permuted copies", "[spatial]") {
  double worst_f = 0, worst_d = 0;
  for (const Index D : {Index(1), Index(3), Index(21), Index(37), Index(64 * 64)}) {
    for (const Index C : {Index(3), Index(21)}) {
      INFO("D " << D << " C " << C);
      const Index N = D == 64 * 64 ? 2 : 3;
      worst_f = std::max(worst_f, prob_against_permuted<float>(N, C, D, 17 + std::uint64_t(D * 31 + C)));
      worst_d = std::max(worst_d, prob_against_permuted<double>(N, C, D, 19 + std::uint64_t(D * 31 + C)));
    }
  }
  worst_f = std::max(worst_f, prob_against_permuted<float>(2, 300, 40, 15));
  worst_d = std::max(worst_d, prob_against_permuted<double>(2, 300, 40, 16));
  worst_f = std::max(worst_f, prob_against_permuted<float>(3, 5, 48, 18, true));
  worst_d = std::max(worst_d, prob_against_permuted<double>(3, 5, 48, 19, true));
  std::cout << "spatial probability targets vs permuted copies: worst " << worst_f << " ulp (float), " << worst_d
            << " ulp (double)\n";
}

TEST_CASE("spatial cross_entropy with probability targets: the safe option, threads and in place", "[spatial]") {
  // safe: a zero target on a -inf logit adds 0 (the pixel's loss is finite), torch's form gives NaN.
  {
    const Index N = 1, C = 3, D = 35;  // whole packets and a ragged end
    std::vector<double> x(std::size_t(N * C * D), 0.5), y(x.size(), 0.5);
    for (Index d = 0; d < D; ++d) {
      x[std::size_t(2 * D + d)] = -std::numeric_limits<double>::infinity();
      y[std::size_t(2 * D + d)] = 0;
    }
    xent::cross_entropy_options o;
    o.reduction = xent::reduction::none;
    const auto xv = xent::spatial(static_cast<const double*>(x.data()), N, C, D);
    const auto yv = xent::spatial(static_cast<const double*>(y.data()), N, C, D);
    CHECK(std::isnan(xent::cross_entropy(xv, yv, o).per_sample()(5)));
    o.safe = true;
    // Two equal finite logits with half each: log 2 per pixel, in every lane and the ragged end.
    const auto safe = xent::cross_entropy(xv, yv, o).per_sample();
    for (Index j = 0; j < D; ++j) CHECK(std::fabs(safe(j) - std::log(2.0)) <= 4 * std::numeric_limits<double>::epsilon());
  }
  std::mt19937_64 gen(43);
  std::normal_distribution<double> normal(0, 3);
  const Index N = 8, C = 21, D = 128 * 128 + 5;
  std::vector<float> x(std::size_t(N * C * D));
  for (auto& v : x) v = float(normal(gen));
  const std::vector<float> y = prob_targets<float>(N, C, D, gen);
  const auto yv = xent::spatial(static_cast<const float*>(y.data()), N, C, D);
  std::vector<float> g1(x.size()), g2(x.size());
  xent::cross_entropy_options o;
  o.label_smoothing = 0.05;
  o.weight = vector<double>::LinSpaced(C, 0.5, 1.5);
  o.num_threads = 1;
  const float one = xent::cross_entropy_with_grad(xent::spatial(static_cast<const float*>(x.data()), N, C, D), yv, o,
                                                  xent::spatial(g1.data(), N, C, D)).value();
  o.num_threads = 2;
  const float two = xent::cross_entropy_with_grad(xent::spatial(static_cast<const float*>(x.data()), N, C, D), yv, o,
                                                  xent::spatial(g2.data(), N, C, D)).value();
  CHECK(one == two);
  CHECK(g1 == g2);
  std::vector<float> z = x;
  const auto zv = xent::spatial(z.data(), N, C, D);
  CHECK(xent::cross_entropy_with_grad(zv, yv, o, zv).value() == one);
  CHECK(z == g1);
  // backward with grad_out 1 is with_grad's gradient.
  std::vector<float> g3(x.size());
  xent::cross_entropy_backward(xent::spatial(static_cast<const float*>(x.data()), N, C, D), yv, 1.0f, o,
                               xent::spatial(g3.data(), N, C, D));
  CHECK(g3 == g1);
}

TEST_CASE("spatial cross_entropy with probability targets: gradient matches central differences", "[spatial]") {
  std::mt19937_64 gen(5);
  std::normal_distribution<double> normal(0, 2);
  const Index N = 2, C = 4, D = 19;  // two packets of doubles and a ragged end on AVX-512
  matrix<double> x(N * C * D, 1);
  for (Index i = 0; i < x.size(); ++i) x(i) = normal(gen);
  const std::vector<double> yd = prob_targets<double>(N, C, D, gen);
  const auto yv = xent::spatial(static_cast<const double*>(yd.data()), N, C, D);
  xent::cross_entropy_options o;
  o.label_smoothing = 0.15;
  o.weight = (vector<double>(4) << 0.5, 1.0, 2.0, 1.5).finished();
  o.sample_weight = vector<double>::LinSpaced(N * D, 0.5, 2.0);
  o.mask = xent::sample_mask::Constant(N * D, true);
  o.mask(3) = false;
  matrix<double> g(N * C * D, 1);
  (void)xent::cross_entropy_with_grad(xent::spatial(x, N, C, D), yv, o, xent::spatial(g, N, C, D));
  double worst = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double fd = xent_test::central_difference(x, i, [&](const matrix<double>& m) {
      return xent::cross_entropy(xent::spatial(m, N, C, D), yv, o).value();
    });
    worst = std::max(worst, std::fabs(fd - g(i)));
  }
  CHECK(worst <= 1e-8);
  for (Index k = 0; k < C; ++k) CHECK(g(k * D + 3) == 0);  // the masked pixel
  std::cout << "spatial probability-target gradient vs central differences: worst " << worst << "\n";
}

TEST_CASE("spatial cross_entropy with probability targets: misuse", "[spatial][errors]") {
  std::vector<float> x(24, 0.f), y(24, 0.25f), g(24, 0.f), small(12, 0.25f);
  const auto v = xent::spatial(static_cast<const float*>(x.data()), 2, 4, 3);
  const auto yv = xent::spatial(static_cast<const float*>(y.data()), 2, 4, 3);
  const auto gv = xent::spatial(g.data(), 2, 4, 3);
  auto with = [](auto change) {
    xent::cross_entropy_options o;
    change(o);
    return o;
  };
  const xent_test::misuse table[] = {
      {"targets shape", [&] { (void)xent::cross_entropy(v, xent::spatial(static_cast<const float*>(small.data()), 2, 2, 3)); },
       "cross_entropy", "targets", "must have the logits' shape [2, 4, 3]", "[2, 2, 3]"},
      {"default targets view", [&] { (void)xent::cross_entropy(v, xent::spatial_view<const float>{}); }, "cross_entropy",
       "targets.data", "must not be null"},
      {"ignore_index", [&] { (void)xent::cross_entropy(v, yv, with([](auto& o) { o.ignore_index = 0; })); }, "cross_entropy",
       "ignore_index", "not supported with probability targets"},
      {"z_loss", [&] { (void)xent::cross_entropy(v, yv, with([](auto& o) { o.z_loss = 1e-3; })); }, "cross_entropy", "targets",
       "must be class indices"},
      {"dim 1", [&] { (void)xent::cross_entropy(v, yv, with([](auto& o) { o.dim = 1; })); }, "cross_entropy", "dim",
       "class axis is fixed"},
      {"sample_weight size",
       [&] { (void)xent::cross_entropy(v, yv, with([](auto& o) { o.sample_weight = vector<double>::Ones(5); })); },
       "cross_entropy", "sample_weight", "6"},
      {"grad over the targets",
       [&] { (void)xent::cross_entropy_with_grad(v, yv, {}, xent::spatial(y.data(), 2, 4, 3)); }, "cross_entropy_with_grad",
       "grad_logits_out", "must not overlap targets"},
      {"grad overlaps the logits",
       [&] { (void)xent::cross_entropy_with_grad(v, yv, {}, xent::spatial(x.data() + 1, 2, 4, 3)); }, "cross_entropy_with_grad",
       "grad_logits_out", "not overlap"},
      {"backward grad_out vector for mean",
       [&] { xent::cross_entropy_backward(v, yv, vector<float>::Ones(6), {}, gv); }, "cross_entropy_backward", "grad_out",
       "must be a scalar"},
  };
  CHECK(xent_test::check_misuse(table) == 9);
}

TEST_CASE("spatial softmax and log_softmax match torch 1.13 on [N, C, d1, d2]", "[spatial]") {
  auto run = [](auto zero) {
    using T = decltype(zero);
    const double budget = std::is_same_v<T, double> ? 1e-12 : 16 * double(std::numeric_limits<float>::epsilon());
    double worst = 0;
    int checked = 0;
    for (const auto& c : cases()) {
      const int fn = int(c["fn"][0]);
      if (fn != 3 && fn != 4) continue;  // 5: softmax_focal_loss, its own test case
      INFO(c.name);
      const Index N = Index(c["shape"][0]), D = Index(c["shape"][1] * c["shape"][2]), C = c.classes;
      std::vector<T> x(std::size_t(N * C * D)), out(x.size(), T(7));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(c["logits"][i]);
      const auto xv = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
      if (fn == 3)
        xent::softmax_into(xv, xent::spatial(out.data(), N, C, D));
      else
        xent::log_softmax_into(xv, xent::spatial(out.data(), N, C, D));
      const auto& ref = c["out"];
      for (std::size_t i = 0; i < out.size(); ++i) {
        // softmax relative to the probability itself, log_softmax at max(|value|, 1).
        const long double scale = fn == 3 ? std::fabs(ref[i]) : std::max<long double>(1, std::fabs(ref[i]));
        const double e = error_of(double(out[i]), ref[i], scale);
        worst = std::max(worst, e);
        CHECK(e <= budget);
      }
      ++checked;
    }
    CHECK(checked == 10);
    std::cout << "spatial softmax / log_softmax vs torch (" << (std::is_same_v<T, double> ? "double" : "float")
              << "): worst " << worst << " (budget " << budget << ")\n";
  };
  run(0.0);
  run(0.0f);
}

/// spatial softmax / log_softmax against the matrix overloads on the permuted copy, with special
/// pixels (+inf, NaN, all -inf, one -inf class); in place and on two threads the same bits.
template <class T, bool Log>
double normalize_against_permuted(Index N, Index C, Index D, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0, 3);
  std::vector<T> x(std::size_t(N * C * D));
  for (auto& v : x) v = static_cast<T>(normal(gen));
  const bool specials = N * D > 20;
  if (specials) {
    x[std::size_t(0 * D + 3)] = std::numeric_limits<T>::infinity();
    x[std::size_t(1 * D + 7)] = std::numeric_limits<T>::quiet_NaN();
    for (Index k = 0; k < C; ++k) x[std::size_t(k * D + 11)] = -std::numeric_limits<T>::infinity();
    x[std::size_t(2 * D + 19)] = -std::numeric_limits<T>::infinity();
  }
  const matrix<T> m = permuted(x, N, C, D);
  matrix<T> want(C, N * D);
  std::vector<T> got(x.size(), T(7)), two(x.size(), T(5));
  const auto xv = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
  if constexpr (Log) {
    xent::log_softmax_into(m, want);
    xent::log_softmax_into(xv, xent::spatial(got.data(), N, C, D), 0, 1);
    xent::log_softmax_into(xv, xent::spatial(two.data(), N, C, D), 0, 2);
  } else {
    xent::softmax_into(m, want);
    xent::softmax_into(xv, xent::spatial(got.data(), N, C, D), 0, 1);
    xent::softmax_into(xv, xent::spatial(two.data(), N, C, D), 0, 2);
  }
  CHECK(std::memcmp(got.data(), two.data(), got.size() * sizeof(T)) == 0);
  std::vector<T> in_place = x;
  const auto iv = xent::spatial(in_place.data(), N, C, D);
  if constexpr (Log)
    xent::log_softmax_into(iv, iv);
  else
    xent::softmax_into(iv, iv);
  CHECK(std::memcmp(got.data(), in_place.data(), got.size() * sizeof(T)) == 0);
  const matrix<T> gp = permuted(got, N, C, D);
  double worst = 0;
  int nan_pixels = 0;
  for (Index j = 0; j < N * D; ++j) {
    nan_pixels += std::isnan(want(0, j));
    // The exact value (long double) of the pixel where it is finite.
    long double mx = -std::numeric_limits<long double>::infinity(), sum = 0;
    for (Index k = 0; k < C; ++k) mx = std::max<long double>(mx, m(k, j));
    if (std::isfinite(double(mx)))
      for (Index k = 0; k < C; ++k) sum += std::exp((long double)m(k, j) - mx);
    for (Index k = 0; k < C; ++k) {
      const T b = want(k, j), a = gp(k, j);
      const T scale = Log ? std::max(T(1), std::fabs(b)) : std::max(std::numeric_limits<T>::min(), std::fabs(b));
      if (std::isinf(b) || std::isnan(b)) {
        CHECK(((std::isnan(a) && std::isnan(b)) || a == b));
        continue;
      }
      // Within the kernels' budget of exact (log_softmax 8 ulp at max(|value|, 1); a probability
      // 6 + |ln p| ulp, support.hpp), and within 12 ulp of the matrix overload (the sums of the
      // classes are rounded in different orders: 9 ulp apart were seen at C = 300).
      const long double d = (long double)m(k, j) - mx;
      const long double exact = Log ? d - std::log(sum) : std::exp(d) / sum;
      const double e = ulps_apart(a, b, scale);
      const double ex = xent_test::ulps(a, exact, (long double)scale);
      worst = std::max(worst, e);
      CHECK(e <= 12);
      if (Log)
        CHECK(ex <= 8);
      else
        CHECK(xent_test::probability_within_budget(a, exact));
    }
  }
  if (specials) CHECK(nan_pixels == 3);  // +inf, NaN and all -inf: all NaN, as torch
  return worst;
}

TEST_CASE("spatial softmax and log_softmax equal the matrix overloads on a permuted copy", "[spatial]") {
  double worst = 0;
  for (const Index D : {Index(1), Index(21), Index(48), Index(64 * 64)})
    for (const Index C : {Index(3), Index(21), Index(300)}) {
      INFO("D " << D << " C " << C);
      const Index N = D == 64 * 64 ? 2 : 3;
      const std::uint64_t seed = 23 + std::uint64_t(D * 31 + C);
      worst = std::max(worst, normalize_against_permuted<float, false>(N, C, D, seed));
      worst = std::max(worst, normalize_against_permuted<float, true>(N, C, D, seed));
      worst = std::max(worst, normalize_against_permuted<double, false>(N, C, D, seed));
      worst = std::max(worst, normalize_against_permuted<double, true>(N, C, D, seed));
    }
  std::cout << "spatial softmax / log_softmax vs permuted copy: worst " << worst << " ulp\n";
}

TEST_CASE("spatial softmax misuse", "[spatial][errors]") {
  std::vector<float> x(24, 0.f), out(24, 0.f), small(12, 0.f);
  const auto v = xent::spatial(static_cast<const float*>(x.data()), 2, 4, 3);
  const xent_test::misuse table[] = {
      {"out shape", [&] { xent::softmax_into(v, xent::spatial(small.data(), 2, 2, 3)); }, "softmax_into", "out",
       "must have the logits' shape [2, 4, 3]", "[2, 2, 3]"},
      {"out overlaps", [&] { xent::log_softmax_into(v, xent::spatial(x.data() + 1, 2, 4, 3)); }, "log_softmax_into", "out",
       "not overlap"},
      {"dim 1", [&] { xent::softmax_into(v, xent::spatial(out.data(), 2, 4, 3), 1); }, "softmax_into", "dim", "class axis is fixed"},
      {"threads", [&] { xent::softmax_into(v, xent::spatial(out.data(), 2, 4, 3), 0, -1); }, "softmax_into", "num_threads", ">= 0"},
      {"default view", [&] { xent::softmax_into(xent::spatial_view<const float>{}, xent::spatial(out.data(), 2, 4, 3)); },
       "softmax_into", "x.data", "must not be null"},
  };
  CHECK(xent_test::check_misuse(table) == 5);
}

}  // namespace

// softmax_focal_loss on a spatial view: torch 1.13 (fn 5 cases, the composition written out, as
// gen_focal_reference.py defines it), the matrix overload on the permuted copy, central
// differences and the misuse checks; the budgets are the cross_entropy cases' above.

template <class T>
void check_focal_torch_cases() {
  const double budget = std::is_same_v<T, double> ? 1e-12 : 16 * double(std::numeric_limits<float>::epsilon());
  double worst_loss = 0, worst_grad = 0;
  int checked = 0;
  for (const auto& c : cases()) {
    if (int(c["fn"][0]) != 5) continue;
    INFO(c.name);
    const Index N = Index(c["shape"][0]), D = Index(c["shape"][1] * c["shape"][2]), C = c.classes;
    std::vector<T> x(std::size_t(N * C * D)), g(x.size(), T(7)), g2(x.size(), T(7));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(c["logits"][i]);
    index_vector t(N * D);
    for (Index j = 0; j < N * D; ++j) t(j) = std::int64_t(c["target"][std::size_t(j)]);
    const xent::reduction r = reductions[int(c["reduction"][0])];
    xent::softmax_focal_loss_options o;
    o.reduction = r;
    o.gamma = double(c["gamma"][0]);
    o.label_smoothing = double(c["eps"][0]);
    o.ignore_index = long(c["ignore"][0]);
    if (c.has("alpha")) o.alpha = Eigen::Map<const Eigen::Matrix<long double, Eigen::Dynamic, 1>>(c["alpha"].data(), C).cast<double>();
    const auto& ref_loss = c["loss"];
    const auto& ref_grad = c["grad"];
    long double gscale = 0;
    for (long double v : ref_grad) gscale = std::max(gscale, std::fabs(v));
    const auto view = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
    vector<T> grad_out_v(N * D);
    for (Index j = 0; j < N * D; ++j) grad_out_v(j) = static_cast<T>(c["grad_out"][std::size_t(r == xent::reduction::none ? j : 0)]);
    auto check_loss = [&](const auto& result) {
      const Index n = r == xent::reduction::none ? N * D : 1;
      for (Index j = 0; j < n; ++j) {
        const double got = double(r == xent::reduction::none ? result.per_sample()(j) : result.value());
        const double e = error_of(got, ref_loss[std::size_t(j)], std::max<long double>(1, std::fabs(ref_loss[std::size_t(j)])));
        worst_loss = std::max(worst_loss, e);
        CHECK(e <= budget);
      }
    };
    auto check_grad = [&](const std::vector<T>& got) {
      for (std::size_t i = 0; i < got.size(); ++i) {
        const double e = error_of(double(got[i]), ref_grad[i], gscale);
        worst_grad = std::max(worst_grad, e);
        CHECK(e <= budget);
      }
    };
    check_loss(xent::softmax_focal_loss(view, t, o));
    check_loss(xent::softmax_focal_loss_with_grad(view, t, o, xent::spatial(g.data(), N, C, D)));
    if (r == xent::reduction::none) {
      xent::softmax_focal_loss_backward(view, t, grad_out_v, o, xent::spatial(g2.data(), N, C, D));
      // with_grad is the gradient of the sum: times grad_out per pixel to compare with torch's.
      for (Index n = 0; n < N; ++n)
        for (Index k = 0; k < C; ++k)
          for (Index d = 0; d < D; ++d) g[std::size_t((n * C + k) * D + d)] *= grad_out_v(n * D + d);
    } else {
      xent::softmax_focal_loss_backward(view, t, grad_out_v(0), o, xent::spatial(g2.data(), N, C, D));
      for (auto& v : g) v *= grad_out_v(0);
    }
    check_grad(g);
    check_grad(g2);
    ++checked;
  }
  CHECK(checked == 28);
  std::cout << "spatial focal vs torch (" << (std::is_same_v<T, double> ? "double" : "float") << ", " << checked
            << " cases): worst loss error " << worst_loss << ", gradient " << worst_grad << " (budget " << budget << ")\n";
}

TEST_CASE("spatial softmax_focal_loss matches torch 1.13 on [N, C, d1, d2]", "[spatial][focal]") {
  check_focal_torch_cases<double>();
  check_focal_torch_cases<float>();
}

/// The spatial softmax_focal_loss against the matrix overload on the permuted copy, per-sample
/// losses and gradients over several option sets; the worst distance in ulps.
template <class T>
double focal_against_permuted(Index N, Index C, Index D, std::uint64_t seed, bool specials = false) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0, 3);
  std::uniform_int_distribution<int> cls(0, int(C) - 1);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<T> x(std::size_t(N * C * D));
  for (auto& v : x) v = static_cast<T>(normal(gen));
  index_vector t(N * D);
  for (Index j = 0; j < N * D; ++j) t(j) = unit(gen) < 0.1 ? -100 : cls(gen);
  if (specials && N * D > 20) {
    // +inf, NaN, every class -inf, a -inf target class (the lanes hand each to the driver), and a
    // pixel with p_t near 1 (the target's gradient from the other classes' mass).
    x[std::size_t(0 * D + 3)] = std::numeric_limits<T>::infinity();
    x[std::size_t(1 * D + 7)] = std::numeric_limits<T>::quiet_NaN();
    for (Index k = 0; k < C; ++k) x[std::size_t(k * D + 11)] = -std::numeric_limits<T>::infinity();
    t(11) = 0;
    x[std::size_t(2 * D + 19)] = -std::numeric_limits<T>::infinity();
    t(19) = 2;
    x[std::size_t(1 * D + 13)] = T(40);
    t(13) = 1;
  }
  const matrix<T> m = permuted(x, N, C, D);
  const auto xv = xent::spatial(static_cast<const T*>(x.data()), N, C, D);
  double worst = 0;
  for (int variant = 0; variant < 4; ++variant) {
    xent::softmax_focal_loss_options o;
    o.reduction = xent::reduction::none;
    if (variant == 1) {
      o.alpha = vector<double>::LinSpaced(C, 0.25, 1.0);
      o.gamma = 0.5;
    } else if (variant == 2) {
      o.gamma = 1;
      o.sample_weight = vector<double>::LinSpaced(N * D, 0.1, 3.0);
      o.mask = xent::sample_mask::Constant(N * D, true);
      for (Index j = 0; j < N * D; j += 5) o.mask(j) = false;
    } else if (variant == 3) {
      o.label_smoothing = 0.1;  // the driver's every-class loop
      o.alpha = vector<double>::LinSpaced(C, 1.0, 0.5);
    }
    const auto sp = xent::softmax_focal_loss(xv, t, o);
    const auto mat = xent::softmax_focal_loss(m, t, o);
    std::vector<T> g(x.size());
    matrix<T> gm(C, N * D);
    const auto spg = xent::softmax_focal_loss_with_grad(xv, t, o, xent::spatial(g.data(), N, C, D));
    (void)xent::softmax_focal_loss_with_grad(m, t, o, gm);
    const matrix<T> gp = permuted(g, N, C, D);
    T scale = T(1e-30);
    for (Index i = 0; i < gm.size(); ++i)
      if (std::isfinite(gm.data()[i])) scale = std::max(scale, std::fabs(gm.data()[i]));
    int nonfinite = 0;
    for (Index j = 0; j < N * D; ++j) {
      const T a = sp.per_sample()(j), b = mat.per_sample()(j);
      nonfinite += !std::isfinite(b);
      const double e = ulps_apart(a, b, std::max(T(1), std::fabs(b)));
      worst = std::max(worst, e);
      CHECK(e <= 8);
      CHECK(ulps_apart(spg.per_sample()(j), a, T(1)) == 0);
      for (Index k = 0; k < C; ++k) {
        const double eg = ulps_apart(gp(k, j), gm(k, j), scale);
        worst = std::max(worst, eg);
        CHECK(eg <= 8);
      }
    }
    if (specials) CHECK(nonfinite >= 2);
  }
  return worst;
}

TEST_CASE("spatial softmax_focal_loss equals the matrix overload on a permuted copy", "[spatial][focal]") {
  double worst_f = 0, worst_d = 0;
  for (const Index D : {Index(1), Index(3), Index(21), Index(37), Index(64 * 64)}) {
    for (const Index C : {Index(3), Index(21)}) {
      INFO("D " << D << " C " << C);
      const Index N = D == 64 * 64 ? 2 : 3;
      worst_f = std::max(worst_f, focal_against_permuted<float>(N, C, D, 17 + std::uint64_t(D * 31 + C)));
      worst_d = std::max(worst_d, focal_against_permuted<double>(N, C, D, 19 + std::uint64_t(D * 31 + C)));
    }
  }
  worst_f = std::max(worst_f, focal_against_permuted<float>(2, 300, 40, 25));
  worst_d = std::max(worst_d, focal_against_permuted<double>(2, 300, 40, 26));
  worst_f = std::max(worst_f, focal_against_permuted<float>(3, 5, 48, 28, true));
  worst_d = std::max(worst_d, focal_against_permuted<double>(3, 5, 48, 29, true));
  std::cout << "spatial focal vs permuted copy: worst " << worst_f << " ulp (float), " << worst_d << " ulp (double)\n";
}

TEST_CASE("spatial softmax_focal_loss: threads and in place do not change the bits", "[spatial][focal]") {
  std::mt19937_64 gen(44);
  std::normal_distribution<double> normal(0, 3);
  const Index N = 4, C = 7, D = 64 * 64 + 5;
  std::vector<float> y(std::size_t(N * C * D));
  for (auto& v : y) v = float(normal(gen));
  index_vector t(N * D);
  for (Index j = 0; j < t.size(); ++j) t(j) = j % 11 == 0 ? -100 : j % C;
  std::vector<float> g1(y.size()), g2(y.size());
  xent::softmax_focal_loss_options o;
  o.alpha = vector<double>::LinSpaced(C, 0.25, 1.0);
  o.num_threads = 1;
  const auto yv = xent::spatial(static_cast<const float*>(y.data()), N, C, D);
  const float one = xent::softmax_focal_loss_with_grad(yv, t, o, xent::spatial(g1.data(), N, C, D)).value();
  o.num_threads = 2;
  const float two = xent::softmax_focal_loss_with_grad(yv, t, o, xent::spatial(g2.data(), N, C, D)).value();
  CHECK(one == two);
  CHECK(g1 == g2);
  std::vector<float> z = y;
  const auto zv = xent::spatial(z.data(), N, C, D);
  CHECK(xent::softmax_focal_loss_with_grad(zv, t, o, zv).value() == one);
  CHECK(z == g1);
}

TEST_CASE("spatial softmax_focal_loss: gradient matches central differences", "[spatial][focal]") {
  std::mt19937_64 gen(5);
  std::normal_distribution<double> normal(0, 2);
  const Index N = 2, C = 4, D = 9;
  matrix<double> x(N * C * D, 1);
  for (Index i = 0; i < x.size(); ++i) x(i) = normal(gen);
  index_vector t(N * D);
  for (Index j = 0; j < N * D; ++j) t(j) = (j * 7) % C;
  t(4) = -100;
  double worst = 0;
  for (const double eps : {0.0, 0.15}) {
    xent::softmax_focal_loss_options o;
    o.gamma = 1.5;
    o.label_smoothing = eps;
    o.alpha = (vector<double>(4) << 0.5, 1.0, 0.25, 0.75).finished();
    matrix<double> g(N * C * D, 1);
    (void)xent::softmax_focal_loss_with_grad(xent::spatial(x, N, C, D), t, o, xent::spatial(g, N, C, D));
    for (Index i = 0; i < x.size(); ++i) {
      const double fd = xent_test::central_difference(x, i, [&](const matrix<double>& m) {
        return xent::softmax_focal_loss(xent::spatial(m, N, C, D), t, o).value();
      });
      worst = std::max(worst, std::fabs(fd - g(i)));
    }
  }
  CHECK(worst <= 1e-8);
  std::cout << "spatial focal gradient vs central differences: worst " << worst << "\n";
}

TEST_CASE("spatial softmax_focal_loss: misuse", "[spatial][errors][focal]") {
  std::vector<float> x(24, 0.f), g(24, 0.f), small(12, 0.f);
  const index_vector t = index_vector::Zero(6);
  const xent::softmax_focal_loss_options plain;
  const auto v = xent::spatial(static_cast<const float*>(x.data()), 2, 4, 3);
  auto with = [](auto edit) {
    xent::softmax_focal_loss_options o;
    edit(o);
    return o;
  };
  const xent_test::misuse table[] = {
      {"default view", [&] { (void)xent::softmax_focal_loss(xent::spatial_view<const float>{}, t, plain); }, "softmax_focal_loss",
       "logits.data", "must not be null"},
      {"targets size", [&] { (void)xent::softmax_focal_loss(v, index_vector::Zero(5), plain); }, "softmax_focal_loss", "targets",
       "must have one entry per sample (6)", "got 5"},
      {"target out of range", [&] { (void)xent::softmax_focal_loss(v, index_vector::Constant(6, 4), plain); },
       "softmax_focal_loss", "target[0]", "must be in [0, 4)"},
      {"dim 1", [&] { (void)xent::softmax_focal_loss(v, t, with([](auto& o) { o.dim = 1; })); }, "softmax_focal_loss", "dim",
       "class axis is fixed"},
      {"alpha size", [&] { (void)xent::softmax_focal_loss(v, t, with([](auto& o) { o.alpha = vector<double>::Ones(3); })); },
       "softmax_focal_loss", "alpha", "one entry per class (4)", "got 3"},
      {"gamma negative", [&] { (void)xent::softmax_focal_loss(v, t, with([](auto& o) { o.gamma = -1; })); }, "softmax_focal_loss",
       "gamma", "must be finite and >= 0"},
      {"mask size",
       [&] { (void)xent::softmax_focal_loss(v, t, with([](auto& o) { o.mask = xent::sample_mask::Constant(5, true); })); },
       "softmax_focal_loss", "mask", "6"},
      {"grad shape",
       [&] { (void)xent::softmax_focal_loss_with_grad(v, t, plain, xent::spatial(small.data(), 2, 2, 3)); },
       "softmax_focal_loss_with_grad", "grad_logits_out", "must have the logits' shape [2, 4, 3]", "[2, 2, 3]"},
      {"grad overlaps",
       [&] { (void)xent::softmax_focal_loss_with_grad(v, t, plain, xent::spatial(x.data() + 1, 2, 4, 3)); },
       "softmax_focal_loss_with_grad", "grad_logits_out", "not overlap"},
      {"backward grad_out vector for mean",
       [&] { xent::softmax_focal_loss_backward(v, t, vector<float>::Ones(6), plain, xent::spatial(g.data(), 2, 4, 3)); },
       "softmax_focal_loss_backward", "grad_out", "must be a scalar"},
      {"backward grad_out size for none",
       [&] {
         xent::softmax_focal_loss_backward(v, t, vector<float>::Ones(5), with([](auto& o) { o.reduction = xent::reduction::none; }),
                                           xent::spatial(g.data(), 2, 4, 3));
       },
       "softmax_focal_loss_backward", "grad_out", "6"},
  };
  CHECK(xent_test::check_misuse(table) == 11);
}
