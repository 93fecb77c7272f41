// linear_divergence against a top-k teacher (fused linear distillation, issue 17 item 5): against
// xent::topk_divergence on the materialised logits z = W^T h (its student gradient g taken through
// the chain rule: grad_h = W g, grad_W = h g^T), computed in double from the same rounded inputs;
// every kind, the three teacher forms (logits, logits with lse, log-probabilities), both weight
// layouts, tilings with blocks smaller than V (partial tiles, one sample per block, the logits kept
// or recomputed), 1 and 2 threads, every reduction, temperatures and the T^2 scaling, masks and
// sample weights (a left-out sample's NaN hidden state reaching nothing); k = V against the
// full-teacher linear_divergence; central finite differences; the misuse checks.
//
// Budgets, as tests/test_linear_divergence.cpp: errors divided by max(|ref|, 1, the largest
// |logit / T|) for a loss, by the largest |ref| entry times max(1, the largest |logit / T|) for a
// gradient (the logits carry the GEMM's rounding, which the loss inherits in absolute terms).
//   double: 1e-14.   float: 8 float epsilons (9.5e-7).

#include "linear_divergence_support.hpp"
#include "misuse.hpp"
#include "support.hpp"

#include <xent/losses/linear_divergence.hpp>
#include <xent/losses/topk_divergence.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace {

using xent_test::error_of;
using xent_test::matrix;
using xent_test::vector;
using xent::divergence_kind;
using xent::topk_values;

using namespace xent_test::linear;

/// The top k of full teacher logits t (V x N), largest first, as logits, logits with the full lse,
/// or log-probabilities (computed in double, then rounded to T).
template <class T>
xent::topk_teacher<int, T> top_k_of(const matrix<double>& t, Eigen::Index k, topk_values as, bool with_lse) {
  const Eigen::Index V = t.rows(), N = t.cols();
  xent::topk_teacher<int, T> out;
  out.indices.resize(k, N);
  out.values.resize(k, N);
  out.values_are = as;
  if (with_lse) out.lse.resize(N);
  for (Eigen::Index j = 0; j < N; ++j) {
    std::vector<int> order(static_cast<std::size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return t(a, j) > t(b, j); });
    const double m = t.col(j).maxCoeff(), lse = m + std::log((t.col(j).array() - m).exp().sum());
    for (Eigen::Index i = 0; i < k; ++i) {
      const int c = order[std::size_t(i)];
      out.indices(i, j) = c;
      out.values(i, j) = static_cast<T>(as == topk_values::log_probs ? t(c, j) - lse : t(c, j));
    }
    if (with_lse) out.lse(j) = static_cast<T>(lse);
  }
  return out;
}


/// The fused call on every variant and 1 and 2 threads against topk_divergence on z = W^T h in double.
template <class T>
void check_case(const matrix<double>& h64, const matrix<double>& w64, const xent::topk_teacher<int, T>& teacher,
                const xent::linear_divergence_options& opts, worst& w) {
  const Eigen::Index D = h64.rows(), N = h64.cols(), V = w64.cols();
  const matrix<T> h = h64.cast<T>(), wt = w64.cast<T>();
  const matrix<double> hd = h.template cast<double>(), wd = wt.template cast<double>();
  const matrix<double> z = wd.transpose() * hd;
  xent::topk_teacher<int, double> td;
  td.indices = teacher.indices;
  td.values = teacher.values.template cast<double>();
  td.values_are = teacher.values_are;
  td.lse = teacher.lse.template cast<double>();
  const xent::divergence_options d = divergence_options_of(opts);
  const bool none = opts.reduction == xent::reduction::none;
  const vector<double> go = vector<double>::LinSpaced(N, 0.5, 1.5);
  const auto ref = xent::topk_divergence(z, td, d);
  matrix<double> g(V, N);
  if (none)
    xent::topk_divergence_backward(z, td, go, d, g);
  else
    xent::topk_divergence_backward(z, td, 0.75, d, g);
  const matrix<double> ref_gh = wd * g, ref_gw = hd * g.transpose();
  const double cond = std::max(1.0, z.cwiseAbs().maxCoeff() / opts.temperature);
  const vector<double> ref_loss = none ? vector<double>(ref.per_sample()) : vector<double>::Constant(1, ref.value());
  for (const variant& v : variants) {
    INFO("variant " << v.name << ", kind " << xent::to_string(opts.kind) << ", reduction " << xent::to_string(opts.reduction)
                    << ", k " << teacher.indices.rows());
    xent::linear_divergence_options o = opts;
    o.weight_layout = v.layout;
    o.block = v.block;
    o.sample_block = v.sample_block;
    o.max_block_bytes = v.max_block_bytes;
    const matrix<T> weight = v.v_by_d ? matrix<T>(wt.transpose()) : wt;
    matrix<T> gw_first;
    vector<T> loss_first;
    for (int threads : {1, 2}) {
      INFO("threads " << threads);
      o.num_threads = threads;
      const auto fwd = xent::linear_divergence(h, weight, teacher, o);
      matrix<T> gh(D, N), gw(weight.rows(), weight.cols()), gh2(D, N), gw2(weight.rows(), weight.cols());
      const vector<T> go_t = go.cast<T>();
      const auto trained = none ? xent::linear_divergence_with_grad(h, weight, teacher, go_t, o, gh, gw)
                                : xent::linear_divergence_with_grad(h, weight, teacher, T(0.75), o, gh, gw);
      if (none)
        xent::linear_divergence_backward(h, weight, teacher, go_t, o, gh2, gw2);
      else
        xent::linear_divergence_backward(h, weight, teacher, T(0.75), o, gh2, gw2);
      const vector<T> loss = none ? vector<T>(fwd.per_sample()) : vector<T>::Constant(1, fwd.value());
      const vector<T> loss_t = none ? vector<T>(trained.per_sample()) : vector<T>::Constant(1, trained.value());
      for (Eigen::Index i = 0; i < loss.size(); ++i) {
        const double scale = std::max({std::fabs(ref_loss(i)), 1.0, cond});
        const double e = error_of(double(loss(i)), ref_loss(i), scale);
        CHECK(e <= budget<T>());
        CHECK(loss_t(i) == loss(i));  // the training pass computes the same loss
        w.loss = std::max(w.loss, e);
      }
      const matrix<T> gw_dv = v.v_by_d ? matrix<T>(gw.transpose()) : gw;
      const double eh = max_error(ref_gh, gh, cond), ew = max_error(ref_gw, gw_dv, cond);
      CHECK(eh <= budget<T>());
      CHECK(ew <= budget<T>());
      w.grad = std::max({w.grad, eh, ew});
      CHECK(gh2 == gh);
      CHECK(gw2 == gw);
      if (threads == 1) {
        gw_first = gw, loss_first = loss;
      } else {
        // As the logits version: the loss's merges and a weight tile's GEMM do not depend on the thread count.
        CHECK(loss == loss_first);
        CHECK(gw == gw_first);
      }
    }
  }
}

template <class T>
void check_all(const char* label) {
  std::mt19937 gen(29);
  const Eigen::Index D = 6, N = 9, V = 37;
  const matrix<double> h = random_matrix(D, N, 1.0, gen), wt = random_matrix(D, V, 0.8, gen);
  const matrix<double> full = random_matrix(V, N, 2.0, gen);
  worst w;
  struct form {
    topk_values as;
    bool lse;
  };
  for (const form f : {form{topk_values::logits, false}, form{topk_values::logits, true}, form{topk_values::log_probs, false}}) {
    for (Eigen::Index k : {Eigen::Index(1), Eigen::Index(5), V - 1}) {
      const auto teacher = top_k_of<T>(full, k, f.as, f.lse);
      const bool tail_known = f.as == topk_values::log_probs || f.lse;
      for (auto kind : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
        if (kind == divergence_kind::reverse_kl && !tail_known) {
          // The student's tail mass where the teacher has none: KL(P || Q) = +inf, as topk_divergence's.
          xent::linear_divergence_options o;
          o.kind = kind;
          o.block = 7;
          const matrix<T> hh = h.cast<T>(), ww = wt.cast<T>();
          CHECK(xent::linear_divergence(hh, ww, teacher, o).value() == std::numeric_limits<T>::infinity());
          continue;
        }
        for (auto r : {xent::reduction::batchmean, xent::reduction::sum, xent::reduction::mean, xent::reduction::none}) {
          xent::linear_divergence_options o;
          o.kind = kind;
          o.reduction = r;
          check_case<T>(h, wt, teacher, o, w);
        }
        xent::linear_divergence_options o;
        o.kind = kind;
        o.beta = 0.3;
        o.temperature = 2.5;
        // A known tail fixes the teacher's temperature at 1 (as topk_divergence).
        o.teacher_temperature = tail_known ? 1.0 : 0.7;
        o.scale_by_temperature_squared = true;
        check_case<T>(h, wt, teacher, o, w);
        o.temperature = 0.3;
        o.sample_weight = vector<double>::LinSpaced(N, 0.0, 2.0);  // sample 0 weighs 0: out of the GEMMs
        o.mask = xent::sample_mask::Constant(N, true);
        o.mask(3) = false;
        check_case<T>(h, wt, teacher, o, w);
        o.reduction = xent::reduction::none;
        check_case<T>(h, wt, teacher, o, w);
      }
    }
  }
  for (double beta : {0.0, 1.0}) {  // the ends are the KLs, as topk_divergence's
    xent::linear_divergence_options o;
    o.kind = divergence_kind::jsd;
    o.beta = beta;
    check_case<T>(h, wt, top_k_of<T>(full, 5, topk_values::log_probs, false), o, w);
  }
  std::cout << "linear_divergence (top-k teacher) vs topk_divergence on W^T h, " << label << ": worst loss error " << w.loss
            << ", worst gradient error " << w.grad << " (budget " << budget<T>() << ")\n";
}

}  // namespace

TEST_CASE("linear_divergence with a top-k teacher equals topk_divergence on the materialised logits, double") {
  check_all<double>("double");
}

TEST_CASE("linear_divergence with a top-k teacher equals topk_divergence on the materialised logits, float") {
  check_all<float>("float");
}

TEST_CASE("linear_divergence with a top-k teacher of k = V is the full-teacher linear_divergence") {
  // k = V: no tail on either side, and logits without lse are renormalised over all V classes,
  // which is softmax(t / T_t) itself.
  std::mt19937 gen(31);
  const Eigen::Index D = 5, N = 6, V = 19;
  const matrix<double> h = random_matrix(D, N, 1.0, gen), wt = random_matrix(D, V, 1.0, gen);
  const matrix<double> full = random_matrix(V, N, 1.5, gen);
  double worst_e = 0;
  for (auto kind : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
    for (topk_values as : {topk_values::logits, topk_values::log_probs}) {
      INFO("kind " << xent::to_string(kind));
      xent::linear_divergence_options o;
      o.kind = kind;
      o.beta = 0.4;
      o.block = 4;
      o.sample_block = 4;
      o.temperature = as == topk_values::logits ? 1.6 : 1.0;
      const auto teacher = top_k_of<double>(full, V, as, false);
      const matrix<double> teacher_logits = as == topk_values::logits ? full : matrix<double>(full.rowwise() - (full.array().exp().colwise().sum().log()).matrix());
      matrix<double> gh(D, N), gw(D, V), gh_full(D, N), gw_full(D, V);
      const double topk = xent::linear_divergence_with_grad(h, wt, teacher, 1.0, o, gh, gw).value();
      const double ref = xent::linear_divergence_with_grad(h, wt, teacher_logits, 1.0, o, gh_full, gw_full).value();
      const double cond = std::max(1.0, (wt.transpose() * h).cwiseAbs().maxCoeff() / o.temperature);
      const double e = std::max({error_of(topk, ref, std::max({std::fabs(ref), 1.0, cond})), max_error(gh_full, gh, cond),
                                 max_error(gw_full, gw, cond)});
      CHECK(e <= 1e-14);
      worst_e = std::max(worst_e, e);
    }
  }
  std::cout << "linear_divergence, top-k teacher with k = V vs the full teacher, double: worst error " << worst_e << "\n";
}

TEST_CASE("linear_divergence with a top-k teacher: a left-out sample reaches nothing") {
  // A masked sample and one of weight 0 have NaN hidden states: they are left out of the GEMMs,
  // so grad_weight stays finite and their columns of grad_hidden are 0.
  std::mt19937 gen(37);
  const Eigen::Index D = 4, N = 5, V = 23;
  matrix<double> h = random_matrix(D, N, 1.0, gen);
  const matrix<double> wt = random_matrix(D, V, 1.0, gen), full = random_matrix(V, N, 1.0, gen);
  h.col(1).setConstant(std::numeric_limits<double>::quiet_NaN());
  h.col(3).setConstant(std::numeric_limits<double>::quiet_NaN());
  const auto teacher = top_k_of<double>(full, 4, topk_values::logits, true);
  xent::linear_divergence_options o;
  o.kind = divergence_kind::jsd;
  o.block = 5;
  o.mask = xent::sample_mask::Constant(N, true);
  o.mask(1) = false;
  o.sample_weight = vector<double>::Ones(N);
  o.sample_weight(3) = 0;
  matrix<double> gh(D, N), gw(D, V);
  const double loss = xent::linear_divergence_with_grad(h, wt, teacher, 1.0, o, gh, gw).value();
  CHECK(std::isfinite(loss));
  CHECK(gw.allFinite());
  CHECK(gh.col(1).isZero(0));
  CHECK(gh.col(3).isZero(0));
  matrix<double> z = wt.transpose() * h;
  z.col(1).setZero();
  z.col(3).setZero();
  CHECK(std::fabs(loss - xent::topk_divergence(z, teacher, divergence_options_of(o)).value()) <= 1e-14 * std::max(1.0, loss));
}

TEST_CASE("linear_divergence with a top-k teacher: gradients match central finite differences") {
  std::mt19937 gen(41);
  matrix<double> h = random_matrix(5, 4, 1.0, gen), wt = random_matrix(5, 23, 1.0, gen);
  const matrix<double> full = random_matrix(23, 4, 1.5, gen);
  double worst_fd = 0;
  for (topk_values as : {topk_values::logits, topk_values::log_probs}) {
    const auto teacher = top_k_of<double>(full, 6, as, false);
    for (auto kind : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
      INFO("kind " << xent::to_string(kind));
      if (kind == divergence_kind::reverse_kl && as == topk_values::logits) continue;  // +inf: no teacher tail
      xent::linear_divergence_options o;
      o.kind = kind;
      o.beta = 0.3;
      o.temperature = 1.7;
      if (as == topk_values::log_probs) o.teacher_temperature = 1;
      o.block = 5;
      o.sample_block = 3;
      matrix<double> gh(5, 4), gw(5, 23);
      xent::linear_divergence_with_grad(h, wt, teacher, 1.0, o, gh, gw);
      auto objective = [&](const matrix<double>&) { return xent::linear_divergence(h, wt, teacher, o).value(); };
      const double scale = std::max(gh.cwiseAbs().maxCoeff(), gw.cwiseAbs().maxCoeff());
      for (Eigen::Index i = 0; i < h.size(); ++i) {
        const double e = std::fabs(xent_test::central_difference(h, i, objective) - gh.data()[i]) / scale;
        CHECK(e < 1e-8);
        worst_fd = std::max(worst_fd, e);
      }
      for (Eigen::Index i = 0; i < wt.size(); ++i) {
        const double e = std::fabs(xent_test::central_difference(wt, i, objective) - gw.data()[i]) / scale;
        CHECK(e < 1e-8);
        worst_fd = std::max(worst_fd, e);
      }
    }
  }
  std::cout << "linear_divergence (top-k teacher) finite differences, double: worst |fd - analytic| / scale " << worst_fd << "\n";
}

TEST_CASE("linear_divergence with a top-k teacher: misuse is named") {
  using xent_test::misuse;
  std::mt19937 gen(43);
  const matrix<double> h = random_matrix(4, 3, 1.0, gen), wt = random_matrix(4, 6, 1.0, gen);
  const auto good = top_k_of<double>(random_matrix(6, 3, 1.0, gen), 2, topk_values::logits, false);
  auto out_of_range = good, negative = good, repeated = good, wrong_n = good, too_many = good, lse_with_log_probs = good,
       lse_size = good, values_shape = good;
  out_of_range.indices(1, 2) = 6;
  negative.indices(0, 1) = -1;
  repeated.indices(1, 0) = repeated.indices(0, 0);
  wrong_n.indices.conservativeResize(2, 2);
  wrong_n.values.conservativeResize(2, 2);
  too_many.indices.resize(7, 3);
  too_many.values.resize(7, 3);
  for (Eigen::Index j = 0; j < 3; ++j)
    for (Eigen::Index i = 0; i < 7; ++i) too_many.indices(i, j) = int(i), too_many.values(i, j) = 0;
  lse_with_log_probs.values_are = topk_values::log_probs;
  lse_with_log_probs.lse = vector<double>::Zero(3);
  lse_size.lse = vector<double>::Zero(2);
  values_shape.values.resize(3, 3);
  auto with_lse = good;
  with_lse.lse = vector<double>::Zero(3);
  xent::linear_divergence_options hot;
  hot.temperature = 2;  // the teacher's too, with a known tail
  xent::linear_divergence_options bad_beta;
  bad_beta.kind = divergence_kind::jsd;
  bad_beta.beta = -0.5;
  matrix<double> gh(4, 3), gw(4, 6), bad_gh(4, 2);
  const misuse table[] = {
      {"index past V", [&] { xent::linear_divergence(h, wt, out_of_range); }, "linear_divergence", "teacher.indices(1, 2)",
       "[0, 6)", "6"},
      {"negative index", [&] { xent::linear_divergence(h, wt, negative); }, "linear_divergence", "teacher.indices(0, 1)", "[0, 6)"},
      {"repeated index", [&] { xent::linear_divergence(h, wt, repeated); }, "linear_divergence", "teacher.indices(1, 0)",
       "repeats class"},
      {"teacher of the wrong N", [&] { xent::linear_divergence(h, wt, wrong_n); }, "linear_divergence", "teacher.indices",
       "one sample per student sample (3)"},
      {"k > V", [&] { xent::linear_divergence(h, wt, too_many); }, "linear_divergence", "teacher.indices", "k <= C = 6"},
      {"values of another shape", [&] { xent::linear_divergence(h, wt, values_shape); }, "linear_divergence", "teacher.values",
       "teacher.indices"},
      {"lse with log_probs", [&] { xent::linear_divergence(h, wt, lse_with_log_probs); }, "linear_divergence", "teacher.lse",
       "log_probs"},
      {"lse of the wrong size", [&] { xent::linear_divergence(h, wt, lse_size); }, "linear_divergence", "teacher.lse",
       "one entry per sample"},
      {"teacher temperature with a known tail", [&] { xent::linear_divergence(h, wt, with_lse, hot); }, "linear_divergence",
       "temperature", "teacher's temperature 1"},
      {"beta outside [0, 1]", [&] { xent::linear_divergence(h, wt, good, bad_beta); }, "linear_divergence", "beta", "in [0, 1]"},
      {"weight of the wrong size", [&] { xent::linear_divergence(h, matrix<double>::Ones(5, 6), good); }, "linear_divergence",
       "weight", "D = hidden.rows() = 4"},
      {"grad_hidden_out's shape", [&] { xent::linear_divergence_with_grad(h, wt, good, 1.0, {}, bad_gh, gw); },
       "linear_divergence_with_grad", "grad_hidden_out", "hidden's shape"},
      {"index past V, backward", [&] { xent::linear_divergence_backward(h, wt, out_of_range, 1.0, {}, gh, gw); },
       "linear_divergence_backward", "teacher.indices(1, 2)", "[0, 6)"},
  };
  CHECK(xent_test::check_misuse(table) == 13);
}
