// xent::distillation_loss (losses/distill.hpp) on the divergence's sweep: every divergence kind x
// alpha {1, 0.5, 0} x temperatures (the teacher's own too) x reductions x ignore_index / mask /
// sample_weight, values and student gradients against torch 1.13 float64 compositions
// (tests/reference/distill_cases.txt, from tests/reference/gen_distill_reference.py); both layouts;
// _with_grad agreeing with the forward and _backward; threads, in place and bf16 giving the same bits;
// the soft form as divergence, alpha 0 as cross_entropy; central finite differences; misuse.
//
// Budgets, in epsilons of the type: a loss error is |got - torch| / max(|torch|, 1), a gradient
// error |got - torch| / (the case's largest |torch| entry), over the inputs' conditioning kappa =
// max(1, 2 max |x| / T) (exp((x - max) / T) carries |x - max| / T ulps of x's rounding, as in torch).

#include "misuse.hpp"
#include "support.hpp"

#include <xent/losses/cross_entropy.hpp>
#include <xent/losses/distill.hpp>
#include <xent/losses/logit_divergence.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <iostream>
#include <limits>
#include <string>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;
using xent::divergence_kind;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("distill_cases.txt"); }

// Loss and gradient budgets in epsilons, times kappa. Measured worst (AVX2/AVX-512): see the printed lines.
constexpr double loss_budget_eps = 4, grad_budget_eps = 3;

xent::distillation_options options_of(const xent_test::reference_case& c, int dim) {
  xent::distillation_options o;
  o.kind = static_cast<divergence_kind>(int(c["kind"][0]));
  o.beta = double(c["beta"][0]);
  o.temperature = double(c["T"][0]);
  o.teacher_temperature = double(c["T"][1]);
  o.scale_by_temperature_squared = c["scaled"][0] != 0;
  o.alpha = double(c["alpha"][0]);
  o.reduction = std::array<xent::reduction, 4>{xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                               xent::reduction::batchmean}[std::size_t(c["reduction"][0])];
  o.dim = dim;
  if (c.has("sample_weight")) {
    o.sample_weight.resize(Eigen::Index(c["sample_weight"].size()));
    for (Eigen::Index j = 0; j < o.sample_weight.size(); ++j) o.sample_weight(j) = double(float(c["sample_weight"][std::size_t(j)]));
  }
  if (c.has("mask")) {
    o.mask.resize(Eigen::Index(c["mask"].size()));
    for (Eigen::Index j = 0; j < o.mask.size(); ++j) o.mask(j) = c["mask"][std::size_t(j)] != 0;
  }
  return o;
}

/// The inputs are float32 values in their shortest decimal form: rounded to float first, exact in T.
template <class T>
matrix<T> input_of(const xent_test::reference_case& c, const char* key, int dim) {
  const matrix<T> m = xent_test::as_matrix<float>(c[key], c.classes, Eigen::Index(c["N"][0])).template cast<T>();
  return dim == 0 ? m : matrix<T>(m.transpose());
}

double conditioning(const xent_test::reference_case& c) {
  long double largest = 0;
  for (const char* key : {"logits", "teacher"})
    for (long double v : c[key]) largest = std::max(largest, std::fabs(v));
  return std::max(1.0, double(2 * largest) / std::min(double(c["T"][0]), double(c["T"][1])));
}

template <class M>
double worst_error(const M& got, const std::vector<long double>& ref, bool gradient) {
  REQUIRE(std::size_t(got.size()) == ref.size());
  long double scale = std::numeric_limits<long double>::min();
  for (long double v : ref) scale = std::max(scale, std::fabs(v));
  double worst = 0;
  for (Eigen::Index i = 0; i < got.size(); ++i) {
    const long double r = ref[std::size_t(i)];
    worst = std::max(worst, xent_test::error_of(double(got.data()[i]), r, gradient ? scale : std::max(std::fabs(r), 1.0L)));
  }
  return worst;
}

struct worst {
  double loss = 0, grad = 0;  // in eps / kappa
  std::size_t cases = 0;
};

template <class T>
void check_case(const xent_test::reference_case& c, int dim, worst& w) {
  INFO(c.name << (sizeof(T) == 4 ? " float" : " double") << " dim " << dim);
  const Eigen::Index N = Eigen::Index(c["N"][0]);
  const matrix<T> s = input_of<T>(c, "logits", dim), t = input_of<T>(c, "teacher", dim);
  const xent::distillation_options o = options_of(c, dim);
  const bool none = o.reduction == xent::reduction::none, has_targets = c.has("target");
  const double eps = double(std::numeric_limits<T>::epsilon()), kappa = conditioning(c);
  index_vector y(N);
  if (has_targets)
    for (Eigen::Index j = 0; j < N; ++j) y(j) = std::int64_t(c["target"][std::size_t(j)]);
  auto values = [&](const xent::loss_result<T>& r) {
    return none ? matrix<T>(r.per_sample()) : matrix<T>::Constant(1, 1, r.value());
  };
  auto back_to_dim0 = [&](const matrix<T>& g) { return dim == 0 ? g : matrix<T>(g.transpose()); };

  const xent::loss_result<T> forward = has_targets ? xent::distillation_loss(s, t, y, o) : xent::distillation_loss(s, t, o);
  const double el = worst_error(values(forward), c["loss"], false) / eps;
  CHECK(el <= loss_budget_eps * kappa);
  w.loss = std::max(w.loss, el / kappa);

  matrix<T> g(s.rows(), s.cols());
  const vector<T> grad_out = xent_test::as_matrix<T>(c["grad_out"], Eigen::Index(c["grad_out"].size()), 1);
  if (none) {
    if (has_targets) xent::distillation_loss_backward(s, t, y, grad_out, o, g);
    else xent::distillation_loss_backward(s, t, grad_out, o, g);
  } else {
    if (has_targets) xent::distillation_loss_backward(s, t, y, double(grad_out(0)), o, g);
    else xent::distillation_loss_backward(s, t, double(grad_out(0)), o, g);
  }
  const double eg = worst_error(back_to_dim0(g), c["grad"], true) / eps;
  CHECK(eg <= grad_budget_eps * kappa);
  w.grad = std::max(w.grad, eg / kappa);

  // _with_grad: the forward's value, the gradient of _backward with the seed (1, or ones for none).
  matrix<T> gw(s.rows(), s.cols()), gb(s.rows(), s.cols());
  const xent::loss_result<T> with = has_targets ? xent::distillation_loss_with_grad(s, t, y, o, gw)
                                                : xent::distillation_loss_with_grad(s, t, o, gw);
  CHECK((values(with).array() == values(forward).array()).all());
  if (none) {
    const vector<T> ones = vector<T>::Ones(N);
    if (has_targets) xent::distillation_loss_backward(s, t, y, ones, o, gb);
    else xent::distillation_loss_backward(s, t, ones, o, gb);
  } else {
    if (has_targets) xent::distillation_loss_backward(s, t, y, 1.0, o, gb);
    else xent::distillation_loss_backward(s, t, 1.0, o, gb);
  }
  CHECK((gw.array() == gb.array()).all());
  ++w.cases;
}

}  // namespace

TEMPLATE_TEST_CASE("distillation_loss matches torch 1.13 for every kind, alpha, temperature, reduction and selection",
                   "[distill][reference][torch]", float, double) {
  for (int dim : {0, 1}) {
    worst w;
    for (const auto& c : cases()) check_case<TestType>(c, dim, w);
    CHECK(w.cases == cases().size());
    std::cout << "distill reference (" << (sizeof(TestType) == 4 ? "float" : "double") << ", dim " << dim << "): " << w.cases
              << " cases, worst loss error " << w.loss << " eps x kappa, worst gradient error " << w.grad << " eps x kappa\n";
  }
}

TEST_CASE("distillation_loss: threads, in place, bf16 and the soft form as divergence give the same bits", "[distill]") {
  for (const auto& c : cases()) {
    if (c.name.find("_wide") == std::string::npos && c.name.find("_all_none") == std::string::npos) continue;
    INFO(c.name);
    const Eigen::Index N = Eigen::Index(c["N"][0]);
    const matrix<float> s = input_of<float>(c, "logits", 0), t = input_of<float>(c, "teacher", 0);
    xent::distillation_options o = options_of(c, 0);
    index_vector y(N);
    for (Eigen::Index j = 0; j < N; ++j) y(j) = std::int64_t(c["target"][std::size_t(j)]);
    o.num_threads = 1;
    matrix<float> g1(s.rows(), s.cols()), g2(s.rows(), s.cols());
    const auto r1 = xent::distillation_loss_with_grad(s, t, y, o, g1);
    o.num_threads = 2;
    const auto r2 = xent::distillation_loss_with_grad(s, t, y, o, g2);
    const bool none = o.reduction == xent::reduction::none;
    CHECK((none ? (r1.per_sample().array() == r2.per_sample().array()).all() : r1.value() == r2.value()));
    CHECK((g1.array() == g2.array()).all());
    // In place: the gradient over the student's own storage.
    matrix<float> inplace = s;
    xent::distillation_loss_with_grad(inplace, t, y, o, inplace);
    CHECK((inplace.array() == g1.array()).all());
    // bf16 logits: widened to float, the value of the float call on the widened values; the
    // gradient within a bf16 ulp (the two instantiations may contract into FMAs differently).
    const matrix<Eigen::bfloat16> sb = s.cast<Eigen::bfloat16>(), tb = t.cast<Eigen::bfloat16>();
    const matrix<float> sw = sb.cast<float>(), tw = tb.cast<float>();
    matrix<Eigen::bfloat16> gb(s.rows(), s.cols());
    matrix<float> gw(s.rows(), s.cols());
    const auto rb = xent::distillation_loss_with_grad(sb, tb, y, o, gb);
    const auto rw = xent::distillation_loss_with_grad(sw, tw, y, o, gw);
    CHECK((none ? (rb.per_sample().array() == rw.per_sample().array()).all() : rb.value() == rw.value()));
    CHECK(((gb.cast<float>() - gw).array().abs() <= gw.array().abs() * (1.0f / 128) + 1e-30f).all());
  }
  // alpha 1 without targets is divergence with T^2, to the bit (the same policy).
  const matrix<double> s = xent_test::random_logits<double>(9, 7), t = xent_test::random_logits<double>(9, 7);
  for (auto kind : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
    INFO(xent::to_string(kind));
    xent::distillation_options kd;
    kd.kind = kind;
    kd.temperature = 2;
    kd.teacher_temperature = 3;
    xent::divergence_options d;
    d.kind = kind;
    d.temperature = 2;
    d.teacher_temperature = 3;
    d.scale_by_temperature_squared = true;
    matrix<double> gk(9, 7), gd(9, 7);
    CHECK(xent::distillation_loss_with_grad(s, t, kd, gk).value() == xent::divergence_with_grad(s, t, d, gd).value());
    CHECK((gk.array() == gd.array()).all());
  }
}

TEST_CASE("distillation_loss at alpha 0 is cross_entropy with the same weights, mask and ignore_index", "[distill]") {
  const Eigen::Index C = 6, N = 8;
  const matrix<double> s = xent_test::random_logits<double>(C, N), t = xent_test::random_logits<double>(C, N);
  index_vector y(N);
  for (Eigen::Index j = 0; j < N; ++j) y(j) = j % 3 == 1 ? -100 : (j * 5) % C;
  xent::distillation_options kd;
  kd.alpha = 0;
  kd.temperature = 3;
  kd.sample_weight = Eigen::VectorXd::LinSpaced(N, 0.5, 2.0);
  kd.mask = xent::sample_mask::Constant(N, true);
  kd.mask(2) = false;
  xent::cross_entropy_options ce;
  ce.sample_weight = kd.sample_weight;
  ce.mask = kd.mask;
  matrix<double> gk(C, N), gc(C, N);
  const double lk = xent::distillation_loss_with_grad(s, t, y, kd, gk).value();
  const double lc = xent::cross_entropy_with_grad(s, y, ce, gc).value();
  CHECK(lk == Approx(lc).epsilon(1e-14));
  CHECK((gk - gc).cwiseAbs().maxCoeff() <= 1e-15);
}

TEST_CASE("distillation_loss: a normalizer divides the weighted sum of both terms", "[distill]") {
  const Eigen::Index C = 6, N = 8;
  const matrix<double> s = xent_test::random_logits<double>(C, N), t = xent_test::random_logits<double>(C, N);
  index_vector y(N);
  for (Eigen::Index j = 0; j < N; ++j) y(j) = j == 3 ? -100 : (j * 5) % C;
  for (auto kind : {divergence_kind::forward_kl, divergence_kind::tvd}) {
    INFO(xent::to_string(kind));
    xent::distillation_options o;
    o.kind = kind;
    o.alpha = 0.4;
    o.temperature = 2;
    o.sample_weight = Eigen::VectorXd::LinSpaced(N, 0.25, 1.5);
    o.reduction = xent::reduction::sum;
    matrix<double> g_sum(C, N), g_norm(C, N);
    const double total = xent::distillation_loss_with_grad(s, t, y, o, g_sum).value();
    // What a micro-batch passes: the whole batch's kept weight, here 40 (not this call's).
    o.reduction = xent::reduction::batchmean;
    o.normalizer = 40.0;
    CHECK(xent::distillation_loss_with_grad(s, t, y, o, g_norm).value() == Approx(total / 40).epsilon(1e-15));
    CHECK((g_norm - g_sum / 40).cwiseAbs().maxCoeff() <= 1e-16);
  }
}

TEST_CASE("distillation_loss gradients agree with central finite differences", "[distill][fd]") {
  const Eigen::Index C = 7, N = 5;
  const matrix<double> s0 = xent_test::random_logits<double>(C, N), t = xent_test::random_logits<double>(C, N);
  index_vector y(N);
  y << 3, -100, 0, 6, 2;
  const vector<double> up = (vector<double>(N) << 0.7, -1.3, 0.4, 1.9, -0.6).finished();
  double worst_fd = 0;
  for (auto kind : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd})
    for (double alpha : {1.0, 0.5, 0.0})
      for (auto red : {xent::reduction::batchmean, xent::reduction::none}) {
        INFO(xent::to_string(kind) << " alpha " << alpha << " " << xent::to_string(red));
        xent::distillation_options o;
        o.kind = kind;
        o.beta = 0.3;
        o.alpha = alpha;
        o.temperature = 2;
        o.teacher_temperature = 1.5;
        o.reduction = red;
        o.sample_weight = (Eigen::VectorXd(N) << 1.5, 0.5, 1.0, 0.25, 2.0).finished();
        o.mask = xent::sample_mask::Constant(N, true);
        o.mask(4) = false;
        auto objective = [&](const matrix<double>& z) {
          const auto r = xent::distillation_loss(z, t, y, o);
          return red == xent::reduction::none ? double(r.per_sample().dot(up)) : double(r.value());
        };
        matrix<double> g(C, N), s = s0;
        if (red == xent::reduction::none) xent::distillation_loss_backward(s, t, y, up, o, g);
        else xent::distillation_loss_backward(s, t, y, 1.0, o, g);
        matrix<double> numeric(C, N);
        for (Eigen::Index i = 0; i < s.size(); ++i) numeric.data()[i] = xent_test::central_difference(s, i, objective);
        const double e = (g - numeric).cwiseAbs().maxCoeff() / std::max(1e-3, numeric.cwiseAbs().maxCoeff());
        CHECK(e <= 1e-7);
        worst_fd = std::max(worst_fd, e);
        // The ignored (1) and masked (4) samples have 0 gradient, in both terms.
        CHECK(g.col(1).cwiseAbs().maxCoeff() == 0);
        CHECK(g.col(4).cwiseAbs().maxCoeff() == 0);
      }
  std::cout << "distill finite differences: worst |fd - analytic| / scale " << worst_fd << "\n";
}

TEST_CASE("distillation_loss misuse throws named xent::invalid_argument", "[distill][errors]") {
  const matrix<double> x = xent_test::random_logits<double>(3, 4);
  index_vector y(4);
  y << 0, 1, 2, 1;
  matrix<double> g(3, 4);
  auto with = [](auto&& set) {
    xent::distillation_options o;
    set(o);
    return o;
  };
  const auto alpha_low = with([](auto& o) { o.alpha = -0.1; });
  const auto alpha_high = with([](auto& o) { o.alpha = 1.5; });
  const auto t_zero = with([](auto& o) { o.temperature = 0; });
  const auto t_negative = with([](auto& o) { o.temperature = -1; });
  const auto teacher_negative = with([](auto& o) { o.teacher_temperature = -2; });
  const auto beta_high = with([](auto& o) { o.kind = divergence_kind::jsd, o.beta = 1.5; });
  const auto beta_low = with([](auto& o) { o.beta = -0.5; });
  const auto short_weight = with([](auto& o) { o.sample_weight = Eigen::VectorXd::Ones(3); });
  const auto bad_weight = with([](auto& o) { o.sample_weight = Eigen::VectorXd::Constant(4, -1.0); });
  const auto long_mask = with([](auto& o) { o.mask = xent::sample_mask::Constant(5, true); });
  const auto mean = with([](auto& o) { o.reduction = xent::reduction::mean; });
  const auto none_normalizer = with([](auto& o) { o.reduction = xent::reduction::none, o.normalizer = 2.0; });
  const auto mixed = with([](auto& o) { o.alpha = 0.5; });
  const char* fn = "distillation_loss";
  const xent_test::misuse table[] = {
      {"alpha < 0", [&] { xent::distillation_loss(x, x, y, alpha_low); }, fn, "alpha", "must be in [0, 1]", "-0.1"},
      {"alpha > 1", [&] { xent::distillation_loss(x, x, y, alpha_high); }, fn, "alpha", "must be in [0, 1]", "1.5"},
      {"alpha != 1 without targets", [&] { xent::distillation_loss(x, x, mixed); }, fn, "alpha", "must be 1 without hard targets"},
      {"T = 0", [&] { xent::distillation_loss(x, x, t_zero); }, fn, "temperature", "must be finite and > 0"},
      {"T < 0 (backward)", [&] { xent::distillation_loss_backward(x, x, y, 1.0, t_negative, g); }, "distillation_loss_backward",
       "temperature", "must be finite and > 0", "-1"},
      {"teacher T < 0", [&] { xent::distillation_loss(x, x, teacher_negative); }, fn, "teacher_temperature",
       "must be finite and > 0", "-2"},
      {"beta > 1", [&] { xent::distillation_loss(x, x, beta_high); }, fn, "beta", "must be in [0, 1]", "1.5"},
      {"beta < 0 (with_grad)", [&] { xent::distillation_loss_with_grad(x, x, beta_low, g); }, "distillation_loss_with_grad", "beta",
       "must be in [0, 1]", "-0.5"},
      {"sample_weight of 3 for 4 samples", [&] { xent::distillation_loss(x, x, y, short_weight); }, fn, "sample_weight",
       "one entry per sample (4)", "3"},
      {"negative sample weight", [&] { xent::distillation_loss(x, x, bad_weight); }, fn, "sample_weight[0]", "must be finite and >= 0"},
      {"mask of 5 for 4 samples", [&] { xent::distillation_loss_with_grad(x, x, y, long_mask, g); }, "distillation_loss_with_grad",
       "mask", "one entry per sample (4)", "5"},
      {"reduction mean", [&] { xent::distillation_loss(x, x, y, mean); }, fn, "reduction", "batchmean, sum or none", "mean"},
      {"normalizer with none", [&] { xent::distillation_loss(x, x, none_normalizer); }, fn, "normalizer", "needs reduction"},
      {"target out of range", [&] { xent::distillation_loss(x, x, index_vector::Constant(4, 3), mixed); }, fn, "target[0]",
       "must be in [0, 3)"},
      {"vector grad_out for batchmean", [&] { xent::distillation_loss_backward(x, x, vector<double>::Ones(4), xent::distillation_options{}, g); },
       "distillation_loss_backward", "grad_out", "must be a scalar"},
      {"gradient buffer over the teacher", [&] { matrix<double> te = x; xent::distillation_loss_with_grad(x, te, xent::distillation_options{}, te); },
       "distillation_loss_with_grad", "grad_student_out", "teacher_logits"},
  };
  CHECK(xent_test::check_misuse(table) == int(sizeof(table) / sizeof(table[0])));
}
