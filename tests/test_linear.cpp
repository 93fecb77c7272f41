// linear_cross_entropy: values, per-sample log-sum-exp and gradients against torch 1.13
// (tests/reference/linear_cases.txt, float64 torch on the materialised logits), against xent's own
// cross_entropy on materialised logits and a plain long-double reference (softcap, z-loss), by central
// finite differences, and the misuse checks. Every case runs over both weight layouts, several
// tilings (partial tiles, one sample per block, the logits kept or recomputed) and 1-3 threads.
//
// Budgets. An error is |got - ref| divided by a scale: for a loss or lse, max(|ref|, 1, the largest
// |logit|) (the logits carry the GEMM's rounding, which the loss inherits in absolute terms); for a
// gradient, the largest |ref| entry of that gradient times a condition number, max(1, largest
// |logit| * (1 + 2 / softcap)): the logits' absolute rounding reaches the gradient through
// exp(x - lse), and through the soft-cap's derivative sech^2(x / c) amplified by 2 / c.
//   double: 1e-14.   float: 8 float epsilons (9.5e-7).
// The worst measured errors print when the tests run (about 1.3 epsilons in float, 4e-16 in double).
// Special values (NaN, inf) must match exactly.

#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>
#include <xent/losses/linear.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

namespace {

using xent_test::matrix;
using xent_test::row_matrix;
using xent_test::vector;
using targets_t = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;
using xent_test::error_of;

template <class T>
double budget() {
  return std::is_same_v<T, double> ? 1e-14 : 8 * double(std::numeric_limits<float>::epsilon());
}

/// One problem and what a reference says about it (loss: 1 value or N; lse: N, NaN when ignored).
struct problem {
  matrix<double> hidden, weight;  // D x N, D x V
  vector<double> bias;            // empty: no bias
  targets_t targets;
  xent::linear_cross_entropy_options opts;
  vector<double> grad_out;  // 1 entry for mean/sum
  vector<double> loss, lse;
  matrix<double> grad_hidden, grad_weight;
  vector<double> grad_bias;
  double logit_scale = 1;  // max(1, largest |logit|)
};

/// How a run reads the problem: weight layout and storage, tiling, threads.
struct variant {
  std::string name;
  xent::weight_layout layout;
  bool row_major;  // vocab_by_hidden only: a row-major V x D matrix (torch's [V, D] as Eigen sees it)
  Eigen::Index block, sample_block;
  int threads;
  std::size_t max_block_bytes;
};

std::vector<variant> variants() {
  const std::size_t keep = std::size_t(256) << 20;
  return {
      {"D x V, defaults", xent::weight_layout::deduce, false, 0, 0, 1, keep},
      {"V x D, defaults", xent::weight_layout::vocab_by_hidden, false, 0, 0, 1, keep},
      {"V x D row-major, tiles of 3, 2 samples", xent::weight_layout::deduce, true, 3, 2, 1, keep},
      {"D x V, tiles of 64 x 16, recomputed, 2 threads", xent::weight_layout::hidden_by_vocab, false, 64, 16, 2, 0},
      {"D x V, tiles of 1 x 1, 3 threads", xent::weight_layout::deduce, false, 1, 1, 3, keep},
      {"V x D, tiles of 7 x 5, recomputed, 3 threads", xent::weight_layout::deduce, false, 7, 5, 3, 0},
  };
}

struct worst {
  double loss = 0, lse = 0, grad = 0;
  std::size_t runs = 0;
};

template <class T>
double max_error(const matrix<double>& ref, const matrix<T>& got) {
  REQUIRE(ref.rows() == got.rows());
  REQUIRE(ref.cols() == got.cols());
  const double scale = std::max(ref.cwiseAbs().maxCoeff(), 1e-300);
  double e = 0;
  for (Eigen::Index i = 0; i < ref.size(); ++i) e = std::max(e, error_of(double(got.data()[i]), ref.data()[i], scale));
  return e;
}

/// Runs the forward, with_grad and backward on one variant and checks them against the problem's reference.
template <class T>
void check_variant(const problem& p, const variant& v, worst& w) {
  INFO("variant: " << v.name);
  const Eigen::Index D = p.hidden.rows(), N = p.hidden.cols(), V = p.weight.cols();
  const matrix<T> h = p.hidden.cast<T>();
  const vector<T> b = p.bias.cast<T>();
  xent::linear_cross_entropy_options o = p.opts;
  o.weight_layout = v.layout;
  o.block = v.block;
  o.sample_block = v.sample_block;
  o.num_threads = v.threads;
  o.max_block_bytes = v.max_block_bytes;
  o.return_lse = true;
  const bool none = o.reduction == xent::reduction::none;
  const bool v_by_d = v.layout == xent::weight_layout::vocab_by_hidden || v.row_major;

  matrix<T> gh(D, N), gh2(D, N);
  matrix<T> gw(v_by_d ? V : D, v_by_d ? D : V), gw2(gw.rows(), gw.cols());
  vector<T> gb(V), gb2(V);
  const vector<T> go = p.grad_out.cast<T>();

  auto run = [&](const auto& weight) {
    auto forward = [&] {
      return p.bias.size() ? xent::linear_cross_entropy(h, weight, b, p.targets, o)
                           : xent::linear_cross_entropy(h, weight, p.targets, o);
    };
    auto train = [&](const auto& grad_out) {
      if (p.bias.size()) {
        auto r = xent::linear_cross_entropy_with_grad(h, weight, b, p.targets, grad_out, o, gh, gw, gb);
        xent::linear_cross_entropy_backward(h, weight, b, p.targets, grad_out, o, gh2, gw2, gb2);
        return r;
      }
      auto r = xent::linear_cross_entropy_with_grad(h, weight, p.targets, grad_out, o, gh, gw);
      xent::linear_cross_entropy_backward(h, weight, p.targets, grad_out, o, gh2, gw2);
      return r;
    };
    const auto fwd = forward();
    const auto trained = none ? train(go) : train(go(0));
    return std::make_pair(fwd, trained);
  };
  const auto results = [&] {
    if (v.row_major) {
      const row_matrix<T> wt = p.weight.transpose().cast<T>();
      return run(wt);
    }
    if (v_by_d) {
      const matrix<T> wt = p.weight.transpose().cast<T>();
      return run(wt);
    }
    const matrix<T> wm = p.weight.cast<T>();
    return run(wm);
  }();

  const double tol = budget<T>();
  for (const auto* r : {&results.first, &results.second}) {
    // The loss and lse are the same numbers whichever call computed them.
    const vector<T> loss = none ? r->loss.per_sample() : vector<T>::Constant(1, r->loss.value());
    REQUIRE(loss.size() == p.loss.size());
    const double loss_scale = std::max({p.loss.cwiseAbs().maxCoeff(), 1.0, p.logit_scale});
    for (Eigen::Index j = 0; j < loss.size(); ++j) {
      const double e = error_of(double(loss(j)), p.loss(j), loss_scale);
      w.loss = std::max(w.loss, e);
      INFO("loss[" << j << "] " << loss(j) << " vs " << double(p.loss(j)));
      CHECK(e <= tol);
    }
    REQUIRE(r->lse.size() == N);
    for (Eigen::Index j = 0; j < N; ++j) {
      const double e = error_of(double(r->lse(j)), p.lse(j), std::max({std::fabs(p.lse(j)), 1.0, p.logit_scale}));
      w.lse = std::max(w.lse, e);
      INFO("lse[" << j << "] " << r->lse(j) << " vs " << double(p.lse(j)));
      CHECK(e <= tol);
    }
  }
  // with_grad and backward write the same bits.
  CHECK(gh == gh2);
  CHECK(gw == gw2);
  if (p.bias.size()) CHECK(gb == gb2);
  const matrix<double> ref_gw = v_by_d ? matrix<double>(p.grad_weight.transpose()) : p.grad_weight;
  double e = std::max(max_error(p.grad_hidden, gh), max_error(ref_gw, gw));
  if (p.bias.size()) e = std::max(e, max_error(matrix<double>(p.grad_bias), matrix<T>(gb)));
  const double condition = std::max(1.0, p.logit_scale * (1 + (o.softcap > 0 ? 2 / o.softcap : 0)));
  e /= condition;
  w.grad = std::max(w.grad, e);
  CHECK(e <= tol);
  ++w.runs;
}

/// The plain reference: logits materialised in long double, softcap, z-loss and label smoothing by
/// their definitions; loss reduced, lse, and the gradients of sum(loss * grad_out).
void materialised_reference(problem& p) {
  using ld = long double;
  const Eigen::Index D = p.hidden.rows(), N = p.hidden.cols(), V = p.weight.cols();
  const auto& o = p.opts;
  const ld eps = o.label_smoothing, s = o.z_loss, c = o.softcap;
  std::vector<ld> per(std::size_t(N), 0);
  p.lse.setConstant(N, std::numeric_limits<double>::quiet_NaN());
  p.grad_hidden.setZero(D, N);
  p.grad_weight.setZero(D, V);
  p.grad_bias.setZero(p.bias.size());
  p.logit_scale = 1;
  Eigen::Index kept = 0;
  for (Eigen::Index j = 0; j < N; ++j) kept += p.targets(j) != o.ignore_index;
  std::vector<ld> x(static_cast<std::size_t>(V)), z(static_cast<std::size_t>(V));
  for (Eigen::Index j = 0; j < N; ++j) {
    const auto t = p.targets(j);
    if (t == o.ignore_index) continue;
    ld m = -INFINITY;
    for (Eigen::Index k = 0; k < V; ++k) {
      ld a = p.bias.size() ? ld(p.bias(k)) : 0;
      for (Eigen::Index d = 0; d < D; ++d) a += ld(p.weight(d, k)) * ld(p.hidden(d, j));
      x[std::size_t(k)] = a;
      z[std::size_t(k)] = c > 0 ? c * std::tanh(a / c) : a;
      p.logit_scale = std::max(p.logit_scale, double(std::fabs(a)));
      m = std::max(m, z[std::size_t(k)]);
    }
    ld sum = 0, zsum = 0;
    for (Eigen::Index k = 0; k < V; ++k) {
      sum += std::exp(z[std::size_t(k)] - m);
      zsum += z[std::size_t(k)];
    }
    const ld lse = m + std::log(sum);
    p.lse(j) = double(lse);
    per[std::size_t(j)] = (1 - eps) * (lse - z[std::size_t(t)]) + eps * (lse - zsum / ld(V)) + s * lse * lse;
    const ld scale = o.reduction == xent::reduction::none ? ld(p.grad_out(j))
                     : o.reduction == xent::reduction::mean ? ld(p.grad_out(0)) / ld(kept)
                                                           : ld(p.grad_out(0));
    for (Eigen::Index k = 0; k < V; ++k) {
      const ld prob = std::exp(z[std::size_t(k)] - lse);
      ld g = prob * (1 + 2 * s * lse) - eps / ld(V) - (k == t ? 1 - eps : 0);
      if (c > 0) g *= 1 - std::pow(std::tanh(x[std::size_t(k)] / c), 2);
      g *= scale;
      for (Eigen::Index d = 0; d < D; ++d) {
        p.grad_hidden(d, j) += double(g * ld(p.weight(d, k)));
        p.grad_weight(d, k) += double(g * ld(p.hidden(d, j)));
      }
      if (p.bias.size()) p.grad_bias(k) += double(g);
    }
  }
  ld total = 0;
  for (ld l : per) total += l;
  if (o.reduction == xent::reduction::none) {
    p.loss.resize(N);
    for (Eigen::Index j = 0; j < N; ++j) p.loss(j) = double(per[std::size_t(j)]);
  } else {
    p.loss.setConstant(1, double(o.reduction == xent::reduction::mean ? total / ld(kept) : total));
  }
}

problem from_reference(const xent_test::reference_case& c) {
  problem p;
  const Eigen::Index V = c.classes, N = Eigen::Index(c["N"][0]), D = Eigen::Index(c["D"][0]);
  p.hidden = xent_test::as_matrix<double>(c["hidden"], D, N);
  p.weight = xent_test::as_matrix<double>(c["weight"], D, V);
  if (c.has("bias")) p.bias = xent_test::as_matrix<double>(c["bias"], V, 1);
  p.targets.resize(N);
  for (Eigen::Index j = 0; j < N; ++j) p.targets(j) = std::int64_t(c["target"][std::size_t(j)]);
  p.opts.reduction = std::array<xent::reduction, 3>{xent::reduction::none, xent::reduction::mean,
                                                    xent::reduction::sum}[std::size_t(c["reduction"][0])];
  p.opts.ignore_index = long(c["ignore_index"][0]);
  p.opts.label_smoothing = double(c["label_smoothing"][0]);
  p.opts.z_loss = double(c["z_loss"][0]);
  p.opts.softcap = double(c["softcap"][0]);
  const auto& g = c["grad_out"];
  p.grad_out = xent_test::as_matrix<double>(g, Eigen::Index(g.size()), 1);
  const auto& l = c["loss"];
  p.loss = xent_test::as_matrix<double>(l, Eigen::Index(l.size()), 1);
  p.lse = xent_test::as_matrix<double>(c["lse"], N, 1);
  p.grad_hidden = xent_test::as_matrix<double>(c["grad_hidden"], D, N);
  p.grad_weight = xent_test::as_matrix<double>(c["grad_weight"], D, V);
  if (c.has("grad_bias")) p.grad_bias = xent_test::as_matrix<double>(c["grad_bias"], V, 1);
  // The logits' magnitude, for the loss's error scale.
  const matrix<double> x = p.weight.transpose() * p.hidden;
  p.logit_scale = std::max(1.0, x.cwiseAbs().maxCoeff() + (p.bias.size() ? p.bias.cwiseAbs().maxCoeff() : 0.0));
  return p;
}

problem random_problem(Eigen::Index D, Eigen::Index V, Eigen::Index N, bool biased, xent::reduction r, double eps,
                       double z_loss, double softcap) {
  problem p;
  p.hidden = xent_test::random_logits<float>(D, N, 1).cast<double>();
  p.weight = (xent_test::random_logits<float>(D, V, 3.0 / std::sqrt(double(D)))).cast<double>();
  if (biased) p.bias = xent_test::random_logits<float>(V, 1, 0.5).cast<double>();
  p.targets.resize(N);
  std::uniform_int_distribution<std::int64_t> pick(0, V - 1);
  for (Eigen::Index j = 0; j < N; ++j) p.targets(j) = j % 5 == 3 ? -100 : pick(xent_test::rng());
  p.opts.reduction = r;
  p.opts.label_smoothing = eps;
  p.opts.z_loss = z_loss;
  p.opts.softcap = softcap;
  p.grad_out = r == xent::reduction::none ? vector<double>(xent_test::random_logits<float>(N, 1, 1).cast<double>())
                                          : vector<double>::Constant(1, 1.0);
  materialised_reference(p);
  return p;
}

}  // namespace

TEMPLATE_TEST_CASE("linear_cross_entropy matches torch 1.13: loss, lse and gradients, every layout, tiling and thread count",
                   "[linear][reference][torch]", float, double) {
  static const auto cases = xent_test::read_reference(xent_test::reference_path("linear_cases.txt"));
  worst w;
  for (const auto& c : cases) {
    INFO("case " << c.name);
    const problem p = from_reference(c);
    for (const variant& v : variants()) check_variant<TestType>(p, v, w);
  }
  std::cout << "linear_cross_entropy vs torch, " << (std::is_same_v<TestType, float> ? "float" : "double") << ": "
            << cases.size() << " cases, " << w.runs << " runs; worst error / scale: loss " << w.loss << ", lse " << w.lse
            << ", gradients " << w.grad << "\n";
}

TEMPLATE_TEST_CASE("linear_cross_entropy matches a materialised long-double reference on larger shapes",
                   "[linear][reference]", float, double) {
  worst w;
  for (auto r : {xent::reduction::none, xent::reduction::mean, xent::reduction::sum})
    for (double eps : {0.0, 0.1})
      for (double s : {0.0, 1e-3})
        for (double cap : {0.0, 5.0}) {
          INFO(xent::to_string(r) << " eps " << eps << " z_loss " << s << " softcap " << cap);
          const problem p = random_problem(24, 301, 37, eps != 0, r, eps, s, cap);
          for (const variant& v : variants()) check_variant<TestType>(p, v, w);
        }
  std::cout << "linear_cross_entropy vs materialised reference, " << (std::is_same_v<TestType, float> ? "float" : "double")
            << ": " << w.runs << " runs; worst error / scale: loss " << w.loss << ", lse " << w.lse << ", gradients "
            << w.grad << "\n";
}

TEST_CASE("linear_cross_entropy equals xent::cross_entropy on the materialised logits", "[linear]") {
  const Eigen::Index D = 32, V = 1000, N = 70;
  const matrix<float> h = xent_test::random_logits<float>(D, N, 1);
  const matrix<float> W = xent_test::random_logits<float>(D, V, 0.5);
  const vector<float> b = xent_test::random_logits<float>(V, 1, 1);
  targets_t t(N);
  for (Eigen::Index j = 0; j < N; ++j) t(j) = (j * 7919) % V;
  t(5) = t(17) = -100;
  const matrix<float> logits = (W.transpose() * h).colwise() + b;
  for (double eps : {0.0, 0.2}) {
    xent::cross_entropy_options ce;
    ce.label_smoothing = eps;
    xent::linear_cross_entropy_options lo;
    lo.label_smoothing = eps;
    lo.block = 96;
    lo.sample_block = 24;
    const float expected = xent::cross_entropy(logits, t, ce).value();
    const float got = xent::linear_cross_entropy(h, W, b, t, lo).loss.value();
    CHECK(std::fabs(got - expected) <= 1e-5f * std::fabs(expected));
    matrix<float> gz(V, N), gh(D, N), gw(D, V);
    vector<float> gb(V);
    xent::cross_entropy_backward(logits, t, 1.0f, ce, gz);
    xent::linear_cross_entropy_with_grad(h, W, b, t, 1.0f, lo, gh, gw, gb);
    const matrix<float> eh = W * gz, ew = h * gz.transpose();
    const vector<float> eb = gz.rowwise().sum();
    CHECK((gh - eh).cwiseAbs().maxCoeff() <= 1e-5f * eh.cwiseAbs().maxCoeff());
    CHECK((gw - ew).cwiseAbs().maxCoeff() <= 1e-5f * ew.cwiseAbs().maxCoeff());
    CHECK((gb - eb).cwiseAbs().maxCoeff() <= 1e-5f * eb.cwiseAbs().maxCoeff());
  }
}

TEST_CASE("linear_cross_entropy gradients agree with central finite differences (double)", "[linear][fd]") {
  const Eigen::Index D = 4, V = 9, N = 5;
  double worst_fd = 0;
  std::size_t checks = 0;
  for (auto r : {xent::reduction::none, xent::reduction::mean})
    for (double cap : {0.0, 1.5}) {
      problem p = random_problem(D, V, N, true, r, 0.1, 0.02, cap);
      p.targets(1) = -100;
      xent::linear_cross_entropy_options o = p.opts;
      o.block = 4;
      o.sample_block = 2;
      auto f = [&](const matrix<double>& h, const matrix<double>& w, const vector<double>& b) {
        const auto l = xent::linear_cross_entropy(h, w, b, p.targets, o).loss;
        return r == xent::reduction::none ? l.per_sample().dot(p.grad_out) : l.value() * p.grad_out(0);
      };
      matrix<double> gh(D, N), gw(D, V);
      vector<double> gb(V);
      if (r == xent::reduction::none)
        xent::linear_cross_entropy_with_grad(p.hidden, p.weight, p.bias, p.targets, p.grad_out, o, gh, gw, gb);
      else
        xent::linear_cross_entropy_with_grad(p.hidden, p.weight, p.bias, p.targets, p.grad_out(0), o, gh, gw, gb);
      auto check = [&](const char* what, auto& x, const auto& analytic) {
        const double scale = std::max(analytic.cwiseAbs().maxCoeff(), 1e-3);
        for (Eigen::Index i = 0; i < x.size(); ++i) {
          const double keep = x.data()[i], step = 1e-5 * std::max(1.0, std::fabs(keep));
          x.data()[i] = keep + step;
          const double up = f(p.hidden, p.weight, p.bias);
          x.data()[i] = keep - step;
          const double down = f(p.hidden, p.weight, p.bias);
          x.data()[i] = keep;
          const double fd = (up - down) / (2 * step), e = std::fabs(fd - analytic.data()[i]) / scale;
          worst_fd = std::max(worst_fd, e);
          ++checks;
          INFO(what << " entry " << i << " (" << xent::to_string(r) << ", softcap " << cap << "): fd " << fd << " vs "
                    << analytic.data()[i]);
          CHECK(e < 1e-7);
        }
      };
      check("hidden", p.hidden, gh);
      check("weight", p.weight, gw);
      check("bias", p.bias, gb);
    }
  std::cout << "linear_cross_entropy finite differences, double: " << checks << " entries; worst |fd - analytic| / scale "
            << worst_fd << "\n";
}

TEST_CASE("linear_cross_entropy: a confident target's gradient is formed without cancelling p_t - 1", "[linear][accuracy]") {
  // Sample j's hidden state is the unit vector e_j, so its logits are row j of the weight, and
  // the weight gradient's entry (j, k) is d loss / d z_k of sample j alone. z_t is 11 to 13 above
  // every other logit: 1 - p_t is 3e-3 .. 3e-3 / e^2 (V = 1000, four tiles), which float's
  // p_t - 1 would get to a few ulp of 1 at best. d loss / d z_t = -(sum of the others' p).
  const Eigen::Index D = 4, V = 1000, N = 3;
  Eigen::MatrixXf w = 0.01f * xent_test::random_logits<float>(D, V, 1), h = Eigen::MatrixXf::Identity(D, N);
  Eigen::VectorXi t(N);
  t << 5, 500, 999;
  for (Eigen::Index j = 0; j < N; ++j) w(j, t(j)) = 12.0f + float(j);
  xent::linear_cross_entropy_options o;
  o.reduction = xent::reduction::sum;
  o.block = 256;  // four tiles: the target's and three others
  double worst = 0;
  for (const float cap : {0.0f, 50.0f}) {
    o.softcap = cap;
    Eigen::MatrixXf gh(D, N), gw(D, V);
    (void)xent::linear_cross_entropy_with_grad(h, w, t, 1.0f, o, gh, gw);
    const auto capped = [&](double x) { return cap == 0 ? x : cap * std::tanh(x / cap); };
    for (Eigen::Index j = 0; j < N; ++j) {
      double lse = -INFINITY, s = 0, others = 0;
      for (Eigen::Index k = 0; k < V; ++k) lse = std::max(lse, capped(w(j, k)));
      for (Eigen::Index k = 0; k < V; ++k) s += std::exp(capped(w(j, k)) - lse);
      for (Eigen::Index k = 0; k < V; ++k)
        if (k != t(j)) others += std::exp(capped(w(j, k)) - lse) / s;
      const double x_t = w(j, t(j)), sech2 = cap == 0 ? 1.0 : 1.0 / (std::cosh(x_t / cap) * std::cosh(x_t / cap));
      const double expected = -others * sech2;
      INFO("cap " << cap << " sample " << j << " 1 - p_t = " << others);
      CHECK(others < 1e-2);
      CHECK(gw(j, t(j)) == Approx(expected).epsilon(1e-5));
      worst = std::max(worst, std::fabs(gw(j, t(j)) / expected - 1));
    }
  }
  std::cout << "linear_cross_entropy, confident target's gradient in float: worst relative error " << worst << "\n";
}

TEST_CASE("linear_cross_entropy: the loss and lse do not depend on the tiling's thread count, bit for bit", "[linear]") {
  const problem p = random_problem(16, 500, 50, true, xent::reduction::none, 0.1, 1e-3, 4.0);
  const matrix<float> h = p.hidden.cast<float>(), W = p.weight.cast<float>();
  const vector<float> b = p.bias.cast<float>();
  xent::linear_cross_entropy_options o = p.opts;
  o.return_lse = true;
  o.block = 64;
  o.sample_block = 16;
  const auto one = xent::linear_cross_entropy(h, W, b, p.targets, o);
  for (int threads : {2, 3, 7}) {
    o.num_threads = threads;
    const auto many = xent::linear_cross_entropy(h, W, b, p.targets, o);
    CHECK(many.loss.per_sample() == one.loss.per_sample());
    CHECK(many.lse.cwiseEqual(one.lse).count() + one.lse.array().isNaN().count() == one.lse.size());
  }
}

TEST_CASE("linear_cross_entropy skips ignored samples: NaN hidden states there reach no gradient (differs from torch)",
          "[linear]") {
  problem p = random_problem(8, 40, 6, true, xent::reduction::mean, 0, 0, 0);
  p.targets(2) = -100;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  matrix<double> h = p.hidden;
  h.col(2).setConstant(nan);
  matrix<double> gh(8, 6), gw(8, 40);
  vector<double> gb(40);
  xent::linear_cross_entropy_options o;
  o.return_lse = true;
  const auto r = xent::linear_cross_entropy_with_grad(h, p.weight, p.bias, p.targets, 1.0, o, gh, gw, gb);
  materialised_reference(p);  // the same problem with a finite column 2, which is ignored anyway
  CHECK(std::fabs(r.loss.value() - p.loss(0)) < 1e-12 * std::max(1.0, std::fabs(p.loss(0))));
  CHECK(std::isnan(r.lse(2)));
  CHECK(gh.allFinite());
  CHECK(gw.allFinite());
  CHECK(gh.col(2).isZero(0));
  CHECK(max_error(p.grad_weight, gw) < 1e-12);
}

TEST_CASE("linear_cross_entropy: every target ignored gives NaN (mean), 0 (sum) and zero gradients", "[linear]") {
  const matrix<float> h = matrix<float>::Random(4, 3), W = matrix<float>::Random(4, 6);
  const targets_t t = targets_t::Constant(3, -100);
  xent::linear_cross_entropy_options o;
  matrix<float> gh = matrix<float>::Constant(4, 3, 7), gw = matrix<float>::Constant(4, 6, 7);
  CHECK(std::isnan(xent::linear_cross_entropy_with_grad(h, W, t, 1.0f, o, gh, gw).loss.value()));
  CHECK(gh.isZero(0));
  CHECK(gw.isZero(0));
  o.reduction = xent::reduction::sum;
  CHECK(xent::linear_cross_entropy(h, W, t, o).loss.value() == 0);
}

TEST_CASE("linear_cross_entropy special values: NaN weights, a -inf bias as a mask, +inf with and without softcap",
          "[linear]") {
  const Eigen::Index D = 3, V = 5, N = 4;
  const matrix<double> h = xent_test::random_logits<double>(D, N, 1), W0 = xent_test::random_logits<double>(D, V, 1);
  const targets_t t = (targets_t(N) << 0, 1, 2, 4).finished();
  const double inf = std::numeric_limits<double>::infinity();
  xent::linear_cross_entropy_options o;
  o.reduction = xent::reduction::none;
  matrix<double> gh(D, N), gw(D, V);
  vector<double> gb(V);
  const vector<double> go = vector<double>::Ones(N);

  SECTION("a NaN weight makes every sample NaN, loss and gradient") {
    matrix<double> W = W0;
    W(1, 3) = std::numeric_limits<double>::quiet_NaN();
    const auto r = xent::linear_cross_entropy_with_grad(h, W, t, go, o, gh, gw);
    CHECK(r.loss.per_sample().array().isNaN().all());
    CHECK(gh.array().isNaN().all());
  }
  SECTION("a -inf bias masks its class: exact zero gradient there, the others as without the class") {
    vector<double> b = vector<double>::Zero(V);
    b(3) = -inf;
    const auto r = xent::linear_cross_entropy_with_grad(h, W0, b, t, go, o, gh, gw, gb);
    CHECK(r.loss.per_sample().allFinite());
    CHECK(gb(3) == 0);
    CHECK(gw.col(3).isZero(0));
    // Without class 3 (targets renumbered): the same losses.
    matrix<double> W4(D, V - 1);
    W4 << W0.leftCols(3), W0.col(4);
    const targets_t t4 = (targets_t(N) << 0, 1, 2, 3).finished();
    const auto r4 = xent::linear_cross_entropy(h, W4, t4, o);
    CHECK((r.loss.per_sample() - r4.loss.per_sample()).cwiseAbs().maxCoeff() < 1e-14);
  }
  SECTION("+inf logits: NaN without softcap (as torch), finite with it (tanh saturates)") {
    vector<double> b = vector<double>::Zero(V);
    b(2) = inf;
    CHECK(xent::linear_cross_entropy(h, W0, b, t, o).loss.per_sample().array().isNaN().all());
    o.softcap = 3;
    const auto r = xent::linear_cross_entropy_with_grad(h, W0, b, t, go, o, gh, gw, gb);
    CHECK(r.loss.per_sample().allFinite());
    CHECK(gh.allFinite());
    CHECK(gb(2) == 0);  // tanh'(inf) = 0
  }
}

TEST_CASE("linear_cross_entropy reads torch buffers in place: [N, D] hidden and [V, D] weight as Maps", "[linear]") {
  const Eigen::Index D = 6, V = 11, N = 5;
  std::vector<float> hidden_buf(std::size_t(N * D)), weight_buf(std::size_t(V * D));
  for (std::size_t i = 0; i < hidden_buf.size(); ++i) hidden_buf[i] = float(std::sin(double(i)));
  for (std::size_t i = 0; i < weight_buf.size(); ++i) weight_buf[i] = float(std::cos(3.0 * double(i)));
  const std::vector<std::int64_t> tv = {1, 10, 0, 4, 4};
  const Eigen::Map<const Eigen::MatrixXf> h(hidden_buf.data(), D, N);
  const Eigen::Map<const Eigen::MatrixXf> w_dv(weight_buf.data(), D, V);                        // hidden_by_vocab
  const Eigen::Map<const row_matrix<float>> w_vd(weight_buf.data(), V, D);                       // vocab_by_hidden
  const Eigen::Map<const targets_t> t(tv.data(), N);
  std::vector<float> gw_buf(weight_buf.size()), gw_buf2(weight_buf.size()), gh_buf(hidden_buf.size());
  const auto a = xent::linear_cross_entropy_with_grad(h, w_dv, t, 1.0f, {}, Eigen::Map<Eigen::MatrixXf>(gh_buf.data(), D, N),
                                                      Eigen::Map<Eigen::MatrixXf>(gw_buf.data(), D, V));
  const auto b = xent::linear_cross_entropy_with_grad(h, w_vd, t, 1.0f, {}, Eigen::Map<Eigen::MatrixXf>(gh_buf.data(), D, N),
                                                      Eigen::Map<row_matrix<float>>(gw_buf2.data(), V, D));
  CHECK(std::fabs(a.loss.value() - b.loss.value()) <= 1e-6f * std::fabs(a.loss.value()));
  for (std::size_t i = 0; i < gw_buf.size(); ++i) CHECK(std::fabs(gw_buf[i] - gw_buf2[i]) <= 1e-6f);
}

TEST_CASE("linear_cross_entropy on bfloat16 and half: float accumulation, the float result of the rounded inputs",
          "[linear]") {
  const Eigen::Index D = 64, V = 300, N = 20;
  const problem p = random_problem(D, V, N, true, xent::reduction::mean, 0.1, 1e-3, 10.0);
  xent::linear_cross_entropy_options o = p.opts;
  o.block = 64;
  o.sample_block = 8;
  auto check = [&](auto tag) {
    using S = decltype(tag);
    const matrix<S> h = p.hidden.cast<S>(), W = p.weight.cast<S>();
    const vector<S> b = p.bias.cast<S>();
    const matrix<float> hf = h.template cast<float>(), Wf = W.template cast<float>();
    const vector<float> bf = b.template cast<float>();
    matrix<float> gh(D, N), gw(D, V), fh(D, N), fw(D, V);
    vector<float> gb(V), fb(V);
    const float got = xent::linear_cross_entropy_with_grad(h, W, b, p.targets, 1.0f, o, gh, gw, gb).loss.value();
    const float ref = xent::linear_cross_entropy_with_grad(hf, Wf, bf, p.targets, 1.0f, o, fh, fw, fb).loss.value();
    // Same float arithmetic on the same (rounded) values: the same bits.
    CHECK(got == ref);
    CHECK(gh == fh);
    CHECK(gw == fw);
    CHECK(gb == fb);
  };
  check(Eigen::bfloat16());
  check(Eigen::half());
}

TEST_CASE("linear_cross_entropy: a square weight needs its layout named", "[linear]") {
  const matrix<double> h = matrix<double>::Random(4, 3), W = matrix<double>::Random(4, 4);
  const targets_t t = (targets_t(3) << 0, 3, 1).finished();
  xent::linear_cross_entropy_options o;
  o.weight_layout = xent::weight_layout::hidden_by_vocab;
  const double dv = xent::linear_cross_entropy(h, W, t, o).loss.value();
  o.weight_layout = xent::weight_layout::vocab_by_hidden;
  const matrix<double> Wt = W.transpose();
  CHECK(std::fabs(xent::linear_cross_entropy(h, Wt, t, o).loss.value() - dv) < 1e-14);
}

TEST_CASE("linear_cross_entropy misuse throws xent::invalid_argument naming function, argument and value",
          "[linear][errors]") {
  const matrix<float> h = matrix<float>::Random(4, 3), W = matrix<float>::Random(4, 6), sq = matrix<float>::Random(4, 4);
  const vector<float> b = vector<float>::Random(6);
  const targets_t t = (targets_t(3) << 0, 5, -100).finished();
  matrix<float> gh(4, 3), gw(4, 6);
  vector<float> gb(6);
  auto with = [](auto&& edit) {
    xent::linear_cross_entropy_options o;
    edit(o);
    return o;
  };
  using opts = xent::linear_cross_entropy_options;
  const char* fn = "linear_cross_entropy";
  const char* wg = "linear_cross_entropy_with_grad";
  const xent_test::misuse all[] = {
      {"weight rows and cols both differ from D", [&] { (void)xent::linear_cross_entropy(h, matrix<float>(5, 6), t); }, fn,
       "weight", "D x V or V x D with D = hidden.rows() = 4", "got 5 x 6"},
      {"named layout, wrong side", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.weight_layout = xent::weight_layout::vocab_by_hidden; })); },
       fn, "weight", "V x D (vocab_by_hidden)", "got 4 x 6"},
      {"square weight, deduce", [&] { (void)xent::linear_cross_entropy(h, sq, t); }, fn, "weight_layout",
       "when weight is square (4 x 4)", "got deduce"},
      {"layout out of the enum", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.weight_layout = xent::weight_layout(7); })); },
       fn, "weight_layout", "deduce, hidden_by_vocab or vocab_by_hidden", "got 7"},
      {"empty hidden", [&] { (void)xent::linear_cross_entropy(matrix<float>(4, 0), W, targets_t(0)); }, fn, "hidden",
       "must not be empty", "got 4 x 0"},
      {"empty weight", [&] { (void)xent::linear_cross_entropy(h, matrix<float>(4, 0), t); }, fn, "weight",
       "must not be empty", "got 4 x 0"},
      {"bias length", [&] { (void)xent::linear_cross_entropy(h, W, vector<float>(5), t); }, fn, "bias",
       "one entry per class (6)", "got 5 x 1"},
      {"bias a matrix", [&] { (void)xent::linear_cross_entropy(h, W, matrix<float>(2, 3), t); }, fn, "bias",
       "a vector with one entry per class (6)", "got 2 x 3"},
      {"targets length", [&] { (void)xent::linear_cross_entropy(h, W, targets_t::Zero(4)); }, fn, "targets",
       "one entry per sample (3)", "got 4"},
      {"target beyond V", [&] { (void)xent::linear_cross_entropy(h, W, (targets_t(3) << 0, 6, 1).finished()); }, fn,
       "target[1]", "must be in [0, 6) or ignore_index (-100)", "got 6"},
      {"negative target", [&] { (void)xent::linear_cross_entropy(h, W, (targets_t(3) << 0, 1, -1).finished()); }, fn,
       "target[2]", "[0, 6)", "got -1"},
      {"softcap < 0", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.softcap = -1; })); }, fn,
       "softcap", "finite and >= 0", "got -1"},
      {"softcap NaN", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.softcap = std::nan(""); })); }, fn,
       "softcap", "finite and >= 0", "got nan"},
      {"z_loss < 0", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.z_loss = -1e-4; })); }, fn,
       "z_loss", "finite and >= 0", "got -0.0001"},
      {"z_loss inf", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.z_loss = INFINITY; })); }, fn,
       "z_loss", "finite and >= 0", "got inf"},
      {"label_smoothing > 1", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.label_smoothing = 2; })); },
       fn, "label_smoothing", "[0, 1]", "got 2"},
      {"batchmean", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.reduction = xent::reduction::batchmean; })); },
       fn, "reduction", "must be none, mean or sum", "got batchmean"},
      {"block < 0", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.block = -1; })); }, fn, "block",
       ">= 0", "got -1"},
      {"sample_block < 0", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.sample_block = -8; })); }, fn,
       "sample_block", ">= 0", "got -8"},
      {"negative threads", [&] { (void)xent::linear_cross_entropy(h, W, t, with([](opts& o) { o.num_threads = -2; })); }, fn,
       "num_threads", ">= 0 (0 = OpenMP's default)", "got -2"},
      {"grad_hidden transposed", [&] { xent::linear_cross_entropy_with_grad(h, W, t, 1.0f, {}, matrix<float>(3, 4), gw); },
       wg, "grad_hidden_out", "hidden's shape (4 x 3)", "got 3 x 4"},
      {"grad_weight in the other layout", [&] { xent::linear_cross_entropy_with_grad(h, W, t, 1.0f, {}, gh, matrix<float>(6, 4)); },
       wg, "grad_weight_out", "weight's shape (4 x 6)", "got 6 x 4"},
      {"grad_bias length", [&] { xent::linear_cross_entropy_with_grad(h, W, b, t, 1.0f, {}, gh, gw, vector<float>(4)); },
       wg, "grad_bias_out", "one entry per class (6)", "got 4 x 1"},
      {"scalar grad_out for none",
       [&] { xent::linear_cross_entropy_with_grad(h, W, t, 1.0f, with([](opts& o) { o.reduction = xent::reduction::none; }), gh, gw); },
       wg, "grad_out", "one entry per sample", "not a scalar"},
      {"short grad_out for none",
       [&] { xent::linear_cross_entropy_backward(h, W, t, vector<float>(2), with([](opts& o) { o.reduction = xent::reduction::none; }), gh, gw); },
       "linear_cross_entropy_backward", "grad_out", "one entry per sample (3)", "got 2"},
      {"backward bias length", [&] { xent::linear_cross_entropy_backward(h, W, vector<float>(7), t, 1.0f, {}, gh, gw, gb); },
       "linear_cross_entropy_backward", "bias", "one entry per class (6)", "got 7 x 1"},
  };
  CHECK(xent_test::check_misuse(all) == int(std::size(all)));
}

#ifdef _OPENMP
#include <omp.h>

TEST_CASE("linear_cross_entropy under OpenMP: same bits inside another parallel region, and the thread count is restored",
          "[linear]") {
  const problem p = random_problem(16, 700, 40, true, xent::reduction::sum, 0.1, 1e-3, 4.0);
  const matrix<float> h = p.hidden.cast<float>(), W = p.weight.cast<float>();
  const vector<float> b = p.bias.cast<float>();
  xent::linear_cross_entropy_options o = p.opts;
  o.block = 64;
  o.num_threads = 3;
  matrix<float> gh(16, 40), gw(16, 700), gh2(16, 40), gw2(16, 700);
  vector<float> gb(700), gb2(700);
  const float loss = xent::linear_cross_entropy_with_grad(h, W, b, p.targets, 1.0f, o, gh, gw, gb).loss.value();
  // Inside a parallel region the nested team has one thread, which runs the three workers in turn.
  float nested = 0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    nested = xent::linear_cross_entropy_with_grad(h, W, b, p.targets, 1.0f, o, gh2, gw2, gb2).loss.value();
  }
  CHECK(nested == loss);
  CHECK(gh2 == gh);
  CHECK(gw2 == gw);
  CHECK(gb2 == gb);
  // A serial call keeps Eigen's GEMMs on one thread and gives the caller its thread count back.
  const int before = omp_get_max_threads();
  o.num_threads = 1;
  (void)xent::linear_cross_entropy(h, W, b, p.targets, o);
  CHECK(omp_get_max_threads() == before);
}
#endif
