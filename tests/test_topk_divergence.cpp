// xent::topk_divergence (losses/topk_divergence.hpp): divergences against a teacher stored as its
// top-k classes and one lumped tail. k = C against xent::divergence; values and the student's and
// the teacher values' gradients against torch 1.13 float64 compositions of the lumped definition
// (tests/reference/topk_cases.txt, from tests/reference/gen_topk_reference.py); central finite
// differences (the student's and the teacher values' gradients); the teacher gradient at k = C
// against divergence's; a 131072-class vocabulary with a peaked teacher against the full teacher; layouts,
// threads and in-place giving the same bits; misuse.
//
// Errors: a loss's |got - ref| / max(|ref|, 1); a gradient's |got - ref| / (the largest |ref|
// entry), in epsilons of the type. Against torch: 32 eps times the case's conditioning (the
// teacher's tail from its stored values, (1 - tail) / tail; 1 without a known tail), float and
// double alike (the k + 1 lumped entries are computed in double).

#include "misuse.hpp"
#include "support.hpp"

#include <xent/losses/logit_divergence.hpp>
#include <xent/losses/topk_divergence.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#ifndef TOPK_TEACHER_SEED
#define TOPK_TEACHER_SEED 20261203
#endif

namespace {

/// d f / d x_i by central differences at h, h/2 and h/4 combined by Richardson extrapolation
/// (error O(h^6), not O(h^2)): where the teacher's tail is thin, D's higher derivatives in the
/// values grow as powers of 1 / Q_tail and a plain central difference misses 1e-8 by 10 to 1000x.
template <class M, class F>
double extrapolated_difference(M& x, Eigen::Index i, F&& f) {
  const double x0 = x.data()[i], h = 1e-3 * std::max(1.0, std::fabs(x0));
  const auto central = [&](double step) {
    x.data()[i] = x0 + step;
    const double up = f(x);
    x.data()[i] = x0 - step;
    const double down = f(x);
    x.data()[i] = x0;
    return (up - down) / (2 * step);
  };
  const double d1 = central(h), d2 = central(h / 2), d4 = central(h / 4);
  const double r1 = (4 * d2 - d1) / 3, r2 = (4 * d4 - d2) / 3;
  return (16 * r2 - r1) / 15;
}

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;
using index_matrix = Eigen::Matrix<int, Eigen::Dynamic, Eigen::Dynamic>;
using xent::divergence_kind;
using xent::topk_values;

constexpr std::array<divergence_kind, 4> kinds = {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd,
                                                  divergence_kind::tvd};

template <class M>
double largest(const M& m) {
  return std::max(1e-300, double(m.cwiseAbs().maxCoeff()));
}

/// The teacher's top-k (by value, largest first) of full teacher logits t (C x N): logits, logits
/// with the full lse, or log-probabilities.
template <class T>
xent::topk_teacher<int, T> top_k_of(const matrix<T>& t, Eigen::Index k, topk_values as, bool with_lse) {
  const Eigen::Index C = t.rows(), N = t.cols();
  xent::topk_teacher<int, T> out;
  out.indices.resize(k, N);
  out.values.resize(k, N);
  out.values_are = as;
  if (with_lse) out.lse.resize(N);
  std::vector<int> order(static_cast<std::size_t>(C));
  for (Eigen::Index j = 0; j < N; ++j) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return t(a, j) > t(b, j); });
    const T m = t.col(j).maxCoeff();
    const T lse = m + std::log((t.col(j).array() - m).exp().sum());
    if (with_lse) out.lse(j) = lse;
    for (Eigen::Index i = 0; i < k; ++i) {
      out.indices(i, j) = order[std::size_t(i)];
      out.values(i, j) = as == topk_values::log_probs ? t(order[std::size_t(i)], j) - lse : t(order[std::size_t(i)], j);
    }
  }
  return out;
}

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("topk_cases.txt"); }

template <class T>
void check_case(const xent_test::reference_case& c, double budget, double& worst_loss, double& worst_grad, double& worst_teacher) {
  INFO(c.name);
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]), k = Eigen::Index(c["k"][0]);
  const matrix<T> s = xent_test::as_matrix<T>(c["logits"], C, N);
  xent::topk_teacher<int, T> teacher;
  teacher.indices = xent_test::as_matrix<double>(c["indices"], k, N).template cast<int>();
  teacher.values = xent_test::as_matrix<T>(c["values"], k, N);
  teacher.values_are = c["values_are"][0] != 0 ? topk_values::log_probs : topk_values::logits;
  if (c.has("lse")) teacher.lse = xent_test::as_matrix<T>(c["lse"], N, 1);
  xent::divergence_options o;
  o.kind = static_cast<divergence_kind>(int(c["kind"][0]));
  o.beta = double(c["beta"][0]);
  o.temperature = double(c["T"][0]);
  o.teacher_temperature = double(c["T"][1]);
  o.scale_by_temperature_squared = c["scaled"][0] != 0;
  o.reduction = std::array<xent::reduction, 4>{xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                               xent::reduction::batchmean}[std::size_t(c["reduction"][0])];
  const bool none = o.reduction == xent::reduction::none, has_targets = c.has("target");
  index_vector targets(N);
  if (has_targets)
    for (Eigen::Index j = 0; j < N; ++j) targets(j) = std::int64_t(c["target"][std::size_t(j)]);
  auto loss_values = [&](const xent::loss_result<T>& r) {
    return none ? vector<T>(r.per_sample()) : vector<T>::Constant(1, r.value());
  };
  // The teacher's tail log(1 - sum q) magnifies the rounding of sum q by (1 - tail) / tail: the
  // conditioning of the case (1 without a known tail).
  double kappa = 1;
  if (k < C && (teacher.values_are == topk_values::log_probs || c.has("lse")))
    for (Eigen::Index j = 0; j < N; ++j) {
      long double q = 0;
      for (Eigen::Index i = 0; i < k; ++i)
        q += std::exp(c["values"][std::size_t(j * k + i)] - (c.has("lse") ? c["lse"][std::size_t(j)] : 0.0L));
      kappa = std::max(kappa, double(q / (1 - q)));
    }
  budget *= kappa;
  const vector<T> loss = loss_values(has_targets ? xent::topk_divergence(s, teacher, targets, o) : xent::topk_divergence(s, teacher, o));
  const auto& ref = c["loss"];
  REQUIRE(std::size_t(loss.size()) == ref.size());
  double e = 0;
  for (Eigen::Index i = 0; i < loss.size(); ++i)
    e = std::max(e, xent_test::error_of(double(loss(i)), ref[std::size_t(i)], std::max(std::fabs(ref[std::size_t(i)]), 1.0L)));
  e /= double(std::numeric_limits<T>::epsilon());
  INFO("conditioning " << kappa);
  CHECK(e <= budget);
  worst_loss = std::max(worst_loss, e / kappa);
  if (!c.has("grad")) return;  // reverse KL without a teacher tail: +inf (checked above)

  matrix<T> g(C, N);
  const vector<T> grad_out = xent_test::as_matrix<T>(c["grad_out"], Eigen::Index(c["grad_out"].size()), 1);
  if (none) {
    if (has_targets)
      xent::topk_divergence_backward(s, teacher, targets, grad_out, o, g);
    else
      xent::topk_divergence_backward(s, teacher, grad_out, o, g);
  } else {
    if (has_targets)
      xent::topk_divergence_backward(s, teacher, targets, double(grad_out(0)), o, g);
    else
      xent::topk_divergence_backward(s, teacher, double(grad_out(0)), o, g);
  }
  const matrix<double> gref = xent_test::as_matrix<double>(c["grad"], C, N);
  const double eg = (g.template cast<double>() - gref).cwiseAbs().maxCoeff() / largest(gref) / double(std::numeric_limits<T>::epsilon());
  CHECK(eg <= budget);
  worst_grad = std::max(worst_grad, eg / kappa);
  // _with_grad: the forward's loss bits and, with grad_out 1, _backward's gradient bits.
  if (!none || grad_out.isOnes()) {
    matrix<T> g2(C, N);
    const auto r = has_targets ? xent::topk_divergence_with_grad(s, teacher, targets, o, g2)
                               : xent::topk_divergence_with_grad(s, teacher, o, g2);
    CHECK(loss_values(r) == loss);
    if (grad_out.isOnes()) CHECK(g2 == g);
  }
  // The teacher values' gradient (lse held fixed), with the student's in the same call.
  matrix<T> gs(C, N), gt(k, N);
  if (none) {
    if (has_targets)
      xent::topk_divergence_backward(s, teacher, targets, grad_out, o, gs, gt);
    else
      xent::topk_divergence_backward(s, teacher, grad_out, o, gs, gt);
  } else {
    if (has_targets)
      xent::topk_divergence_backward(s, teacher, targets, double(grad_out(0)), o, gs, gt);
    else
      xent::topk_divergence_backward(s, teacher, double(grad_out(0)), o, gs, gt);
  }
  CHECK(gs == g);
  const matrix<double> tref = xent_test::as_matrix<double>(c["grad_values"], k, N);
  const double et = (gt.template cast<double>() - tref).cwiseAbs().maxCoeff() / largest(tref) / double(std::numeric_limits<T>::epsilon());
  // Twice the budget: plain logits project e - Q sum e, which cancels to 0 in a sample whose top-k
  // entries all pull one way (TVD with every p_i < q_i); torch and xent then both return rounding
  // of the terms' size, measured here against the largest entry of other samples (53 eps seen).
  CHECK(et <= 2 * budget);
  worst_teacher = std::max(worst_teacher, et / kappa);
}

}  // namespace

TEST_CASE("topk_divergence: k = C is divergence, every kind and teacher form", "[topk]") {
  const Eigen::Index C = 29, N = 7;
  const matrix<double> s = xent_test::random_logits<double>(C, N, 2.5), t = xent_test::random_logits<double>(C, N, 2.5);
  double worst_loss = 0, worst_grad = 0;
  for (const divergence_kind kind : kinds)
    for (const double beta : {0.5, 0.2})
      for (int form = 0; form < 3; ++form) {
        if (beta != 0.5 && kind != divergence_kind::jsd) continue;
        INFO(xent::to_string(kind) << " beta " << beta << " form " << form);
        const topk_values as = form == 2 ? topk_values::log_probs : topk_values::logits;
        const auto teacher = top_k_of(t, C, as, form == 1);
        xent::divergence_options o;
        o.kind = kind;
        o.beta = beta;
        o.reduction = xent::reduction::none;
        o.temperature = 1.7;
        // A known tail (forms 1 and 2) needs the teacher at temperature 1; the plain logits take T_t.
        o.teacher_temperature = form == 0 ? 0.6 : 1;
        matrix<double> g(C, N), g_full(C, N);
        const vector<double> d = xent::topk_divergence_with_grad(s, teacher, o, g).per_sample();
        const vector<double> full = xent::divergence_with_grad(s, t, o, g_full).per_sample();
        const double el = (d - full).cwiseAbs().maxCoeff() / std::max(1.0, largest(full)) / std::numeric_limits<double>::epsilon();
        const double eg = (g - g_full).cwiseAbs().maxCoeff() / largest(g_full) / std::numeric_limits<double>::epsilon();
        CHECK(el <= 16);
        CHECK(eg <= 32);
        worst_loss = std::max(worst_loss, el);
        worst_grad = std::max(worst_grad, eg);
      }
  std::cout << "topk_divergence k = C vs divergence (double): loss " << worst_loss << " eps, grad " << worst_grad << " eps\n";
}

TEST_CASE("topk_divergence: values and both gradients against torch 1.13 float64", "[topk][reference]") {
  double loss_d = 0, grad_d = 0, loss_f = 0, grad_f = 0, teacher_d = 0, teacher_f = 0;
  for (const auto& c : cases()) {
    check_case<double>(c, 32, loss_d, grad_d, teacher_d);
    check_case<float>(c, 32, loss_f, grad_f, teacher_f);
  }
  std::cout << "topk_divergence vs torch (" << cases().size() << " cases): double loss " << loss_d << " eps, grad " << grad_d
            << " eps, teacher grad " << teacher_d << " eps; float loss " << loss_f << " eps, grad " << grad_f << " eps, teacher grad "
            << teacher_f << " eps (each over the case's conditioning)\n";
}

TEST_CASE("topk_divergence: the gradient is the central difference of the loss", "[topk]") {
  const Eigen::Index C = 17, N = 3, k = 5;
  matrix<double> s = xent_test::random_logits<double>(C, N, 2), t = xent_test::random_logits<double>(C, N, 2);
  double worst = 0;
  for (const divergence_kind kind : kinds)
    for (int form = 0; form < 3; ++form) {
      if (kind == divergence_kind::reverse_kl && form == 0) continue;  // +inf without a teacher tail
      INFO(xent::to_string(kind) << " form " << form);
      const auto teacher = top_k_of(t, k, form == 2 ? topk_values::log_probs : topk_values::logits, form == 1);
      xent::divergence_options o;
      o.kind = kind;
      o.beta = 0.3;
      o.temperature = form == 0 ? 1.4 : 0.8;
      o.teacher_temperature = form == 0 ? 0 : 1;
      o.reduction = xent::reduction::sum;
      matrix<double> g(C, N);
      xent::topk_divergence_with_grad(s, teacher, o, g);
      for (Eigen::Index i = 0; i < s.size(); ++i) {
        const double fd = xent_test::central_difference(s, i, [&](const matrix<double>& x) {
          return double(xent::topk_divergence(x, teacher, o).value());
        });
        worst = std::max(worst, std::fabs(fd - g.data()[i]));
        CHECK(std::fabs(fd - g.data()[i]) <= 1e-8);
      }
    }
  std::cout << "topk_divergence vs central differences: " << worst << "\n";
}

TEST_CASE("topk_divergence: k = 64 of 131072 classes, a peaked teacher, against the full teacher", "[topk]") {
  const Eigen::Index V = 131072, N = 4, k = 64;
  const matrix<double> s = xent_test::random_logits<double>(V, N, 2);
  matrix<double> t = xent_test::random_logits<double>(V, N, 1);
  // 64 classes per sample with logits 22 to 27: the other 131008 hold < 1e-7 of the mass.
  std::uniform_real_distribution<double> high(22, 27);
  std::uniform_int_distribution<Eigen::Index> cls(0, V - 1);
  for (Eigen::Index j = 0; j < N; ++j)
    for (Eigen::Index i = 0; i < k; ++i) t(cls(xent_test::rng()), j) = high(xent_test::rng());
  const auto teacher = top_k_of(t, k, topk_values::logits, true);
  double tail = 0;
  for (Eigen::Index j = 0; j < N; ++j) tail = std::max(tail, 1 - (teacher.values.col(j).array() - teacher.lse(j)).exp().sum());
  REQUIRE(tail < 1e-6);
  const xent::topk_teacher<int, float> stored{teacher.indices, teacher.values.cast<float>(), topk_values::logits,
                                              teacher.lse.cast<float>()};
  const double per_token = double(stored.indices.size() * sizeof(int) + stored.values.size() * sizeof(float) +
                                  stored.lse.size() * sizeof(float)) / double(N);
  const double full_per_token = double(V * sizeof(float));
  CHECK(full_per_token / per_token >= 20);
  xent::divergence_options o;
  o.reduction = xent::reduction::none;
  o.beta = 0.4;
  std::cout << "topk_divergence k = 64 of V = 131072: teacher tail <= " << tail << "; teacher memory " << per_token
            << " bytes per token (float32 values and lse, int32 indices) vs " << full_per_token << " for full logits ("
            << full_per_token / per_token << "x less)\n";
  for (const divergence_kind kind : kinds) {
    INFO(xent::to_string(kind));
    o.kind = kind;
    const vector<double> d = xent::topk_divergence(s, teacher, o).per_sample(), full = xent::divergence(s, t, o).per_sample();
    // Lumping classes never increases a divergence (data processing), here with the exact tail.
    for (Eigen::Index j = 0; j < N; ++j) CHECK(d(j) <= full(j) + 1e-12);
    const double gap = (d - full).cwiseAbs().maxCoeff();
    std::cout << "  " << xent::to_string(kind) << ": largest |top-k - full| " << gap << " (full " << full.maxCoeff() << ")\n";
    // Forward KL, JSD and TVD weigh the tail by the teacher's tail mass (or bound it by it); reverse
    // KL weighs it by the student's, here nearly 1, and the lumped tail loses its log ratio.
    if (kind != divergence_kind::reverse_kl)
      CHECK(gap <= 1e-6);
    else
      CHECK(gap > 1);
  }
}

TEST_CASE("topk_divergence: layouts, threads, in place and masks give the same bits", "[topk]") {
  // 1700 x 48 logits: enough work for thread_count to use 2 threads when asked.
  const Eigen::Index C = 1700, N = 48, k = 12;
  const matrix<float> s = xent_test::random_logits<float>(C, N, 3), t = xent_test::random_logits<float>(C, N, 3);
  const auto teacher = top_k_of(t, k, topk_values::log_probs, false);
  for (const divergence_kind kind : kinds) {
    INFO(xent::to_string(kind));
    xent::divergence_options o;
    o.kind = kind;
    o.reduction = xent::reduction::none;
    matrix<float> g(C, N);
    const vector<float> d = xent::topk_divergence_with_grad(s, teacher, o, g).per_sample();
    // dim = 1: the student N x C, the teacher N x k.
    xent::divergence_options o1 = o;
    o1.dim = 1;
    const matrix<float> st = s.transpose();
    const xent::topk_teacher<int, float> tt{teacher.indices.transpose(), teacher.values.transpose(), teacher.values_are, {}};
    matrix<float> g1(N, C);
    CHECK(xent::topk_divergence_with_grad(st, tt, o1, g1).per_sample() == d);
    CHECK(matrix<float>(g1.transpose()) == g);
    for (int threads : {1, 2, 3}) {
      xent::divergence_options ot = o;
      ot.num_threads = threads;
      matrix<float> gt(C, N);
      CHECK(xent::topk_divergence_with_grad(s, teacher, ot, gt).per_sample() == d);
      CHECK(gt == g);
    }
    matrix<float> in_place = s;
    CHECK(xent::topk_divergence_with_grad(in_place, teacher, o, in_place).per_sample() == d);
    CHECK(in_place == g);
    // A masked sample: 0 loss, 0 gradient, the others unchanged.
    xent::divergence_options om = o;
    om.mask = xent::sample_mask::Ones(N);
    om.mask(3) = false;
    matrix<float> gm(C, N);
    const vector<float> dm = xent::topk_divergence_with_grad(s, teacher, om, gm).per_sample();
    CHECK(dm(3) == 0.0f);
    CHECK(gm.col(3).cwiseAbs().maxCoeff() == 0.0f);
    CHECK(dm(5) == d(5));
    CHECK(gm.col(5) == g.col(5));
    // Sample weights: the weighted sum of the per-sample divergences, and the gradient scaled per sample.
    xent::divergence_options ow = o;
    ow.reduction = xent::reduction::sum;
    ow.sample_weight = Eigen::VectorXd::LinSpaced(N, 0.5, 2.0);
    matrix<float> gw(C, N);
    const double weighted = xent::topk_divergence_with_grad(s, teacher, ow, gw).value();
    CHECK(std::fabs(weighted - d.cast<double>().dot(ow.sample_weight)) <= 1e-5 * std::max(1.0, std::fabs(weighted)));
    CHECK((gw - g * ow.sample_weight.cast<float>().asDiagonal()).cwiseAbs().maxCoeff() <= 1e-6f * largest(g));
  }
}

TEST_CASE("topk_divergence: the teacher gradient is the central difference of the loss", "[topk][teacher]") {
  const Eigen::Index C = 17, N = 3, k = 5;
  // Inputs of their own seed, whatever ran before (the shared engine's stream depends on the
  // tests that ran first).
  const std::mt19937_64 saved = xent_test::rng();
  xent_test::rng().seed(TOPK_TEACHER_SEED);
  const matrix<double> s = xent_test::random_logits<double>(C, N, 2), t = xent_test::random_logits<double>(C, N, 2);
  xent_test::rng() = saved;
  double worst = 0;
  for (const divergence_kind kind : kinds)
    for (int form = 0; form < 3; ++form)
      for (const bool scaled : {false, true}) {
        if (kind == divergence_kind::reverse_kl && form == 0) continue;  // +inf without a teacher tail
        INFO(xent::to_string(kind) << " form " << form << " scaled " << scaled);
        auto teacher = top_k_of(t, k, form == 2 ? topk_values::log_probs : topk_values::logits, form == 1);
        xent::divergence_options o;
        o.kind = kind;
        o.beta = 0.3;
        o.temperature = form == 0 ? 1.4 : 0.8;
        o.teacher_temperature = form == 0 ? 0.7 : 1;
        o.reduction = scaled ? xent::reduction::batchmean : xent::reduction::sum;
        o.scale_by_temperature_squared = scaled;
        matrix<double> gs(C, N), gt(k, N);
        xent::topk_divergence_with_grad(s, teacher, o, gs, gt);
        for (Eigen::Index i = 0; i < teacher.values.size(); ++i) {
          const double fd = extrapolated_difference(teacher.values, i, [&](const matrix<double>&) {
            return double(xent::topk_divergence(s, teacher, o).value());
          });
          worst = std::max(worst, std::fabs(fd - gt.data()[i]) / std::max(1.0, std::fabs(gt.data()[i])));
          // Relative: reverse KL has d D / d v = -Q_i P_tail / Q_tail (large where the tail is thin).
          CHECK(std::fabs(fd - gt.data()[i]) <= 1e-8 * std::max(1.0, std::fabs(gt.data()[i])));
        }
        // The student's gradient is the one without a teacher buffer.
        matrix<double> gs_only(C, N);
        xent::topk_divergence_with_grad(s, teacher, o, gs_only);
        CHECK(gs == gs_only);
      }
  std::cout << "topk_divergence teacher gradient vs central differences: " << worst << "\n";
}

TEST_CASE("topk_divergence: at k = C the teacher gradient is divergence's", "[topk][teacher]") {
  const Eigen::Index C = 29, N = 7;
  const matrix<double> s = xent_test::random_logits<double>(C, N, 2.5), t = xent_test::random_logits<double>(C, N, 2.5);
  double worst = 0;
  for (const divergence_kind kind : kinds)
    for (int form = 0; form < 3; ++form) {
      INFO(xent::to_string(kind) << " form " << form);
      const auto teacher = top_k_of(t, C, form == 2 ? topk_values::log_probs : topk_values::logits, form == 1);
      xent::divergence_options o;
      o.kind = kind;
      o.beta = 0.35;
      o.reduction = xent::reduction::mean;
      o.temperature = 1.7;
      o.teacher_temperature = form == 0 ? 0.6 : 1;
      matrix<double> gt(C, N), gs_full(C, N), gt_full(C, N);
      xent::topk_divergence_with_grad(s, teacher, o, matrix<double>(), gt);
      xent::divergence_with_grad(s, t, o, gs_full, gt_full);
      // divergence differentiates the full logits t. The top-k's values are logits (the same
      // variables), or log_probs / logits with a fixed lse: t moves them all and the normaliser,
      // d/dt_c = g_c - q_c sum g (q = softmax(t): the lse's derivative is minus the column's sum).
      matrix<double> mapped(C, N);
      for (Eigen::Index j = 0; j < N; ++j) {
        const double m = t.col(j).maxCoeff(), lse = m + std::log((t.col(j).array() - m).exp().sum());
        const double sum = gt.col(j).sum();
        for (Eigen::Index i = 0; i < C; ++i) {
          const Eigen::Index c = teacher.indices(i, j);
          mapped(c, j) = form == 0 ? gt(i, j) : gt(i, j) - std::exp(t(c, j) - lse) * sum;
        }
      }
      const double e = (mapped - gt_full).cwiseAbs().maxCoeff() / largest(gt_full) / std::numeric_limits<double>::epsilon();
      CHECK(e <= 64);
      worst = std::max(worst, e);
    }
  std::cout << "topk_divergence teacher gradient at k = C vs divergence (double): " << worst << " eps\n";
}

TEST_CASE("topk_divergence: the teacher gradient's layouts, in place, backward, masks and misuse", "[topk][teacher]") {
  const Eigen::Index C = 300, N = 9, k = 7;
  const matrix<float> s = xent_test::random_logits<float>(C, N, 3), t = xent_test::random_logits<float>(C, N, 3);
  const auto teacher = top_k_of(t, k, topk_values::log_probs, false);
  for (const divergence_kind kind : kinds) {
    INFO(xent::to_string(kind));
    xent::divergence_options o;
    o.kind = kind;
    o.reduction = xent::reduction::sum;
    matrix<float> gs(C, N), gt(k, N);
    xent::topk_divergence_with_grad(s, teacher, o, gs, gt);
    CHECK(gt.cwiseAbs().maxCoeff() > 0);
    xent::divergence_options o1 = o;
    o1.dim = 1;
    const matrix<float> st = s.transpose();
    const xent::topk_teacher<int, float> tt{teacher.indices.transpose(), teacher.values.transpose(), teacher.values_are, {}};
    matrix<float> gs1(N, C), gt1(N, k);
    xent::topk_divergence_with_grad(st, tt, o1, gs1, gt1);
    CHECK(matrix<float>(gt1.transpose()) == gt);
    // Into the teacher values' own storage.
    auto in_place = teacher;
    xent::topk_divergence_with_grad(s, in_place, o, matrix<float>(), in_place.values);
    CHECK(in_place.values == gt);
    // backward: grad_out times the same gradients.
    matrix<float> bs(C, N), bt(k, N);
    xent::topk_divergence_backward(s, teacher, 2.0, o, bs, bt);
    CHECK((bt - 2 * gt).cwiseAbs().maxCoeff() <= 1e-6f * largest(gt));
    CHECK((bs - 2 * gs).cwiseAbs().maxCoeff() <= 1e-6f * largest(gs));
    // An ignored sample: a zero teacher gradient, the others unchanged.
    index_vector targets = index_vector::Zero(N);
    targets(4) = -100;
    matrix<float> bti(k, N);
    xent::topk_divergence_backward(s, teacher, targets, 1.0, o, matrix<float>(), bti);
    CHECK(bti.col(4).cwiseAbs().maxCoeff() == 0.0f);
    CHECK(bti.col(2) == gt.col(2));
  }
  matrix<float> gs(C, N), wrong(k + 1, N), shared(C, N);
  const Eigen::Map<matrix<float>> overlap(shared.data(), k, N);
  const xent_test::misuse table[] = {
      {"teacher buffer of the wrong shape", [&] { xent::topk_divergence_with_grad(s, teacher, {}, gs, wrong); },
       "topk_divergence_with_grad", "grad_teacher_out", "must have the shape", "8 x 9"},
      {"teacher buffer inside the student's", [&] { xent::topk_divergence_with_grad(s, teacher, {}, shared, overlap); },
       "topk_divergence_with_grad", "grad_teacher_out", "must not overlap grad_student_out"},
  };
  CHECK(xent_test::check_misuse(table) == 2);
}

TEST_CASE("topk_divergence: misuse", "[topk][errors]") {
  const Eigen::Index C = 10, N = 4;
  const matrix<double> s = xent_test::random_logits<double>(C, N, 2), t = xent_test::random_logits<double>(C, N, 2);
  const auto good = top_k_of(t, 3, topk_values::logits, true);
  auto with = [&](auto change) {
    auto bad = good;
    change(bad);
    return bad;
  };
  const auto out_of_range = with([](auto& b) { b.indices(1, 2) = 10; });
  const auto negative = with([](auto& b) { b.indices(0, 1) = -1; });
  const auto repeated = with([](auto& b) { b.indices(2, 3) = b.indices(0, 3); });
  const auto too_many = top_k_of(t, 3, topk_values::logits, false);
  auto wide = too_many;
  wide.indices.resize(11, N);
  wide.values.resize(11, N);
  const auto short_values = with([](auto& b) { b.values.conservativeResize(2, N); });
  const auto short_lse = with([](auto& b) { b.lse.conservativeResize(3); });
  const auto log_probs_lse = with([](auto& b) { b.values_are = topk_values::log_probs; });
  const auto few_samples = with([](auto& b) {
    b.indices.conservativeResize(3, 3);
    b.values.conservativeResize(3, 3);
  });
  xent::divergence_options hot;
  hot.temperature = 2;
  xent::divergence_options hot_teacher;
  hot_teacher.teacher_temperature = 0.5;
  matrix<double> g(C, N), small(C - 1, N);
  const xent_test::misuse table[] = {
      {"index >= C", [&] { xent::topk_divergence(s, out_of_range); }, "topk_divergence", "teacher.indices(1, 2)", "[0, 10)", "got 10"},
      {"index < 0", [&] { xent::topk_divergence(s, negative); }, "topk_divergence", "teacher.indices(0, 1)", "[0, 10)", "got -1"},
      {"repeated index", [&] { xent::topk_divergence(s, repeated); }, "topk_divergence", "teacher.indices(2, 3)", "repeats class"},
      {"k > C", [&] { xent::topk_divergence(s, wide); }, "topk_divergence", "teacher.indices", "k <= C = 10", "got 11"},
      {"values' shape", [&] { xent::topk_divergence(s, short_values); }, "topk_divergence", "teacher.values", "shape of teacher.indices"},
      {"lse's size", [&] { xent::topk_divergence(s, short_lse); }, "topk_divergence", "teacher.lse", "one entry per sample (4)"},
      {"lse with log_probs", [&] { xent::topk_divergence(s, log_probs_lse); }, "topk_divergence", "teacher.lse", "log_probs"},
      {"teacher samples", [&] { xent::topk_divergence(s, few_samples); }, "topk_divergence", "teacher.indices", "(4)", "got 3"},
      {"tail at T != 1", [&] { xent::topk_divergence(s, good, hot); }, "topk_divergence", "temperature", "temperature 1", "got 2"},
      {"tail at T_t != 1", [&] { xent::topk_divergence(s, good, hot_teacher); }, "topk_divergence", "teacher_temperature",
       "temperature 1", "got 0.5"},
      {"gradient's shape", [&] { xent::topk_divergence_with_grad(s, good, {}, small); }, "topk_divergence_with_grad",
       "grad_student_out", "shape of the input"},
      {"grad_out a vector for batchmean", [&] { xent::topk_divergence_backward(s, good, vector<double>::Ones(N), {}, g); },
       "topk_divergence_backward", "grad_out", "must be a scalar"},
      {"bad beta", [&] {
         xent::divergence_options o;
         o.beta = 2;
         xent::topk_divergence(s, good, o);
       }, "topk_divergence", "beta", "[0, 1]"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
  // The teacher's plain logits take any teacher temperature (no tail: the top-k renormalised).
  CHECK(std::isfinite(xent::topk_divergence(s, too_many, hot).value()));
}
