// linear_divergence: forward and reverse KL, JSD(beta) and TVD of the fused linear distillation
// against xent::divergence on the materialised logits z = W^T h (its gradient g taken through the
// chain rule: grad_h = W g, grad_W = h g^T), computed in double from the same inputs; over both
// weight layouts, several tilings (partial tiles, one sample per block, the logits kept or
// recomputed), 1 and 2 threads (the same bits for the loss and grad_weight; grad_hidden repeatable
// per thread count), every reduction, temperatures, the T^2 scaling, masks and sample weights;
// bfloat16/half inputs; a teacher's masked class; central finite differences; and the misuse checks.
//
// Budgets. Errors are divided by a scale: for a loss, max(|ref|, 1, the largest |logit / T|) (the
// logits carry the GEMM's rounding, which the loss inherits in absolute terms); for a gradient, the
// largest |ref| entry of that gradient times max(1, the largest |logit / T|).
//   double: 1e-14.   float: 8 float epsilons (9.5e-7).

#include "linear_divergence_support.hpp"
#include "misuse.hpp"
#include "support.hpp"

#include <xent/xent.hpp>
#include <xent/losses/linear_divergence.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using xent_test::matrix;
using xent_test::row_matrix;
using xent_test::vector;
using xent_test::error_of;

using namespace xent_test::linear;

/// The fused call on every variant and 1 and 2 threads against divergence on z = W^T h in double.
template <class T>
void check_case(const matrix<double>& h64, const matrix<double>& w64, const matrix<double>& t64,
                const xent::linear_divergence_options& opts, worst& w) {
  const Eigen::Index D = h64.rows(), N = h64.cols(), V = w64.cols();
  const matrix<T> h = h64.cast<T>(), wt = w64.cast<T>(), teacher = t64.cast<T>();
  // The reference sees exactly the rounded inputs.
  const matrix<double> hd = h.template cast<double>(), wd = wt.template cast<double>(), td = teacher.template cast<double>();
  const matrix<double> z = wd.transpose() * hd;
  const xent::divergence_options d = divergence_options_of(opts);
  const bool none = opts.reduction == xent::reduction::none;
  const vector<double> go = vector<double>::LinSpaced(N, 0.5, 1.5);
  const auto ref = xent::divergence(z, td, d);
  matrix<double> g(V, N);
  if (none)
    xent::divergence_backward(z, td, go, d, g);
  else
    xent::divergence_backward(z, td, 0.75, d, g);
  const matrix<double> ref_gh = wd * g, ref_gw = hd * g.transpose();
  const double cond = std::max(1.0, z.cwiseAbs().maxCoeff() / opts.temperature);
  const vector<double> ref_loss = none ? vector<double>(ref.per_sample()) : vector<double>::Constant(1, ref.value());
  for (const variant& v : variants) {
    INFO("variant " << v.name << ", kind " << xent::to_string(opts.kind) << ", reduction " << xent::to_string(opts.reduction));
    xent::linear_divergence_options o = opts;
    o.weight_layout = v.layout;
    o.block = v.block;
    o.sample_block = v.sample_block;
    o.max_block_bytes = v.max_block_bytes;
    const matrix<T> weight = v.v_by_d ? matrix<T>(wt.transpose()) : wt;
    matrix<T> gh_first, gw_first;
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
        gh_first = gh, gw_first = gw, loss_first = loss;
      } else {
        // The thread count changes who computes a tile, never the order of the loss's merges nor
        // of a weight tile's GEMM; grad_hidden sums the workers' shares, so its bits follow the
        // thread count (as linear_cross_entropy's): the same count gives the same bits.
        CHECK(loss == loss_first);
        CHECK(gw == gw_first);
        matrix<T> gh3(D, N), gw3(weight.rows(), weight.cols());
        if (none)
          xent::linear_divergence_backward(h, weight, teacher, go_t, o, gh3, gw3);
        else
          xent::linear_divergence_backward(h, weight, teacher, T(0.75), o, gh3, gw3);
        CHECK(gh3 == gh);
      }
    }
  }
}

template <class T>
void check_all(const char* label) {
  std::mt19937 gen(17);
  const Eigen::Index D = 6, N = 9, V = 37;
  const matrix<double> h = random_matrix(D, N, 1.0, gen), wt = random_matrix(D, V, 0.8, gen);
  const matrix<double> teacher = random_matrix(V, N, 2.0, gen);
  worst w;
  for (auto kind : {xent::divergence_kind::forward_kl, xent::divergence_kind::reverse_kl, xent::divergence_kind::jsd,
                    xent::divergence_kind::tvd}) {
    for (auto r : {xent::reduction::batchmean, xent::reduction::sum, xent::reduction::mean, xent::reduction::none}) {
      xent::linear_divergence_options o;
      o.kind = kind;
      o.reduction = r;
      check_case<T>(h, wt, teacher, o, w);
    }
    xent::linear_divergence_options o;
    o.kind = kind;
    o.temperature = 2.5;
    o.teacher_temperature = 0.7;
    o.scale_by_temperature_squared = true;
    check_case<T>(h, wt, teacher, o, w);
    o.teacher_temperature = 0;
    o.temperature = 0.3;
    o.sample_weight = vector<double>::LinSpaced(N, 0.0, 2.0);  // sample 0 weighs 0: out of the GEMMs
    o.mask = xent::sample_mask::Constant(N, true);
    o.mask(3) = false;
    check_case<T>(h, wt, teacher, o, w);
    o.reduction = xent::reduction::none;
    check_case<T>(h, wt, teacher, o, w);
  }
  for (double beta : {0.0, 0.2, 1.0}) {  // the ends are the KLs, as divergence's
    xent::linear_divergence_options o;
    o.kind = xent::divergence_kind::jsd;
    o.beta = beta;
    o.temperature = 1.3;
    check_case<T>(h, wt, teacher, o, w);
  }
  std::cout << "linear_divergence vs divergence on W^T h, " << label << ": worst loss error " << w.loss
            << ", worst gradient error " << w.grad << " (budget " << budget<T>() << ")\n";
}

}  // namespace

TEST_CASE("linear_divergence equals divergence on the materialised logits, double") { check_all<double>("double"); }

TEST_CASE("linear_divergence equals divergence on the materialised logits, float") { check_all<float>("float"); }

TEST_CASE("linear_divergence with bfloat16 inputs and a half teacher, accumulated in float") {
  std::mt19937 gen(23);
  const Eigen::Index D = 8, N = 5, V = 29;
  const matrix<Eigen::bfloat16> h = random_matrix(D, N, 1.0, gen).cast<Eigen::bfloat16>();
  const matrix<Eigen::bfloat16> wt = random_matrix(V, D, 0.7, gen).cast<Eigen::bfloat16>();  // V x D
  const matrix<Eigen::half> teacher = random_matrix(V, N, 2.0, gen).cast<Eigen::half>();
  const matrix<double> hd = h.cast<double>(), wd = wt.cast<double>(), td = teacher.cast<double>();
  const matrix<double> z = wd * hd;
  for (auto kind : {xent::divergence_kind::forward_kl, xent::divergence_kind::tvd}) {
    xent::linear_divergence_options o;
    o.kind = kind;
    o.block = 6;
    xent::divergence_options d;
    d.kind = kind;
    const double ref = xent::divergence(z, td, d).value();
    matrix<double> g(V, N);
    xent::divergence_backward(z, td, 1.0, d, g);
    const matrix<double> ref_gh = wd.transpose() * g, ref_gw = g * hd.transpose();
    matrix<float> gh(D, N), gw(V, D);
    const float loss = xent::linear_divergence_with_grad(h, wt, teacher, 1.0f, o, gh, gw).value();
    const double cond = std::max(1.0, z.cwiseAbs().maxCoeff());
    CHECK(error_of(double(loss), ref, std::max({std::fabs(ref), 1.0, cond})) <= budget<float>());
    CHECK(max_error(ref_gh, gh, cond) <= budget<float>());
    CHECK(max_error(ref_gw, gw, cond) <= budget<float>());
    CHECK(xent::linear_divergence(h, wt, teacher, o).value() == loss);
  }
}

TEST_CASE("linear_divergence: a class the teacher masks") {
  // Teacher -inf on a class: forward KL ignores it (no mass), reverse KL is +inf (the student has mass there).
  std::mt19937 gen(5);
  const matrix<double> h = random_matrix(4, 3, 1.0, gen), wt = random_matrix(4, 10, 1.0, gen);
  matrix<double> teacher = random_matrix(10, 3, 1.0, gen);
  teacher(2, 1) = -std::numeric_limits<double>::infinity();
  const matrix<double> z = wt.transpose() * h;
  xent::linear_divergence_options o;
  o.reduction = xent::reduction::none;
  o.block = 3;
  xent::divergence_options d;
  d.reduction = xent::reduction::none;
  const vector<double> fused = xent::linear_divergence(h, wt, teacher, o).per_sample();
  const vector<double> ref = xent::divergence(z, teacher, d).per_sample();
  for (Eigen::Index j = 0; j < 3; ++j) CHECK(std::fabs(fused(j) - ref(j)) <= 1e-13 * std::max(1.0, std::fabs(ref(j))));
  o.kind = d.kind = xent::divergence_kind::reverse_kl;
  const vector<double> fused_r = xent::linear_divergence(h, wt, teacher, o).per_sample();
  CHECK(fused_r(1) == std::numeric_limits<double>::infinity());
  CHECK(std::fabs(fused_r(0) - xent::divergence(z, teacher, d).per_sample()(0)) <= 1e-13);
}

TEST_CASE("linear_divergence gradients match central finite differences") {
  std::mt19937 gen(11);
  matrix<double> h = random_matrix(5, 4, 1.0, gen), wt = random_matrix(5, 23, 1.0, gen);
  const matrix<double> teacher = random_matrix(23, 4, 1.5, gen);
  double worst_fd = 0;
  for (auto kind : {xent::divergence_kind::forward_kl, xent::divergence_kind::reverse_kl, xent::divergence_kind::jsd}) {
    xent::linear_divergence_options o;
    o.kind = kind;
    o.beta = 0.3;
    o.temperature = 1.7;
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
  std::cout << "linear_divergence finite differences, double: worst |fd - analytic| / scale " << worst_fd << "\n";
}

TEST_CASE("linear_divergence misuse is named") {
  using xent_test::misuse;
  const matrix<double> h = matrix<double>::Ones(4, 3), wt = matrix<double>::Ones(4, 6), teacher = matrix<double>::Zero(6, 3);
  const matrix<double> wrong_teacher = matrix<double>::Zero(6, 2), square = matrix<double>::Ones(4, 4);
  matrix<double> gh(4, 3), gw(4, 6), bad_gw(6, 4);
  auto with = [](auto f) {
    xent::linear_divergence_options o;
    f(o);
    return o;
  };
  const auto t0 = with([](auto& o) { o.temperature = 0; });
  const auto tneg = with([](auto& o) { o.teacher_temperature = -1; });
  const auto bad_beta = with([](auto& o) {
    o.kind = xent::divergence_kind::jsd;
    o.beta = 1.5;
  });
  const auto none = with([](auto& o) { o.reduction = xent::reduction::none; });
  const auto bad_mask = with([](auto& o) { o.mask = xent::sample_mask::Constant(2, true); });
  const auto bad_block = with([](auto& o) { o.block = -1; });
  const misuse table[] = {
      {"teacher not V x N", [&] { xent::linear_divergence(h, wt, wrong_teacher); }, "linear_divergence", "teacher_logits",
       "must be V x N (6 x 3)", "6 x 2"},
      {"weight of the wrong size", [&] { xent::linear_divergence(h, matrix<double>::Ones(5, 6), teacher); },
       "linear_divergence", "weight", "D = hidden.rows() = 4"},
      {"square weight", [&] { xent::linear_divergence(h, square, matrix<double>::Zero(4, 3)); }, "linear_divergence",
       "weight_layout", "square"},
      {"temperature 0", [&] { xent::linear_divergence(h, wt, teacher, t0); }, "linear_divergence", "temperature",
       "finite and > 0"},
      {"teacher_temperature < 0", [&] { xent::linear_divergence(h, wt, teacher, tneg); }, "linear_divergence",
       "teacher_temperature", "finite and > 0"},
      {"beta outside [0, 1]", [&] { xent::linear_divergence(h, wt, teacher, bad_beta); }, "linear_divergence", "beta",
       "in [0, 1]", "1.5"},
      {"mask of the wrong size", [&] { xent::linear_divergence(h, wt, teacher, bad_mask); }, "linear_divergence", "mask",
       "one entry per sample"},
      {"negative block", [&] { xent::linear_divergence(h, wt, teacher, bad_block); }, "linear_divergence", "block", ">= 0"},
      {"grad_weight_out's shape", [&] { xent::linear_divergence_with_grad(h, wt, teacher, 1.0, {}, gh, bad_gw); },
       "linear_divergence_with_grad", "grad_weight_out", "weight's shape"},
      {"scalar grad_out with none", [&] { xent::linear_divergence_backward(h, wt, teacher, 1.0, none, gh, gw); },
       "linear_divergence_backward", "grad_out", "one entry per sample"},
  };
  CHECK(xent_test::check_misuse(table) == 10);
}
