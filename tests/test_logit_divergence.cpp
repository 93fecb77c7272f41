// xent::divergence (losses/logit_divergence.hpp): forward and reverse KL, generalised JSD and TVD
// between two logit sets. Values and both gradients against torch 1.13 float64 compositions
// (tests/reference/divergence_cases.txt, from tests/reference/gen_divergence_reference.py); the
// field's identities (D(P, P) = 0, the role swap, Pinsker, the bounds); central finite differences;
// threads, layouts, bf16 and in-place giving the same bits; misuse.
//
// Budgets: a loss error is |got - torch| / max(|torch|, 1); a gradient error |got - torch| / (the
// case's largest |torch| entry), over the inputs' conditioning (2 max |x| / T: see conditioning()).
// double: 1e-12; float (the same float32 inputs): 64 float epsilons (the KLs are f / S_u - log S_u
// + log S_z: a few ulp of each log-sum-exp-sized term).

#include "misuse.hpp"
#include "support.hpp"

#include <xent/losses/distill.hpp>
#include <xent/losses/logit_divergence.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <iostream>
#include <string>

namespace {

using xent_test::index_vector;
using xent_test::matrix;
using xent_test::vector;
using xent::divergence_kind;

const std::vector<xent_test::reference_case>& cases() { return xent_test::cached_reference("divergence_cases.txt"); }

xent::divergence_options options_of(const xent_test::reference_case& c) {
  xent::divergence_options o;
  o.kind = static_cast<divergence_kind>(int(c["kind"][0]));
  o.beta = double(c["beta"][0]);
  o.temperature = double(c["T"][0]);
  o.teacher_temperature = double(c["T"][1]);
  o.scale_by_temperature_squared = c["scaled"][0] != 0;
  o.reduction = std::array<xent::reduction, 4>{xent::reduction::none, xent::reduction::mean, xent::reduction::sum,
                                               xent::reduction::batchmean}[std::size_t(c["reduction"][0])];
  return o;
}

/// The largest error of values against a reference (scale: max(|ref|, 1) each, or the largest
/// finite |ref| of the list for gradients). A NaN reference gradient entry is skipped: torch's
/// autograd through where(w > 0, ...) is NaN where the branch it did not take is 0 * inf (a class
/// of exp(-1e30) mass); xent's entry there is the gradient's limit, 0 or the mixture's term.
template <class M>
double worst_error(const M& got, const std::vector<long double>& ref, bool gradient) {
  REQUIRE(std::size_t(got.size()) == ref.size());
  long double scale = 1;
  if (gradient) {
    scale = std::numeric_limits<long double>::min();
    for (long double v : ref)
      if (std::isfinite(double(v))) scale = std::max(scale, std::fabs(v));
  }
  double worst = 0;
  for (Eigen::Index i = 0; i < got.size(); ++i) {
    const long double r = ref[std::size_t(i)];
    if (gradient && std::isnan(double(r))) continue;
    worst = std::max(worst, xent_test::error_of(double(got.data()[i]), r, gradient ? scale : std::max(std::fabs(r), 1.0L)));
  }
  return worst;
}

/// How much the inputs' rounding is magnified in the gradient: exp of (x - max) / T, x rounded to
/// the type, has a relative error up to |x - max| / T ulps (as in torch). The largest |logit| below
/// 1e6 over the smaller temperature (the +-1e30 entries make one-hot distributions, not wide exponents).
double conditioning(const xent_test::reference_case& c) {
  long double largest = 0;
  for (const char* key : {"logits", "teacher"})
    for (long double v : c[key])
      if (std::fabs(v) < 1e6L) largest = std::max(largest, std::fabs(v));
  return std::max(1.0, double(2 * largest) / std::min(double(c["T"][0]), double(c["T"][1])));
}

template <class T>
void check_case(const xent_test::reference_case& c, double budget, double& worst_loss, double& worst_grad) {
  INFO(c.name);
  const Eigen::Index C = c.classes, N = Eigen::Index(c["N"][0]);
  const matrix<T> s = xent_test::as_matrix<T>(c["logits"], C, N), t = xent_test::as_matrix<T>(c["teacher"], C, N);
  const xent::divergence_options o = options_of(c);
  const double kappa = conditioning(c);
  const bool none = o.reduction == xent::reduction::none;
  const bool has_targets = c.has("target");
  index_vector targets(N);
  if (has_targets)
    for (Eigen::Index j = 0; j < N; ++j) targets(j) = std::int64_t(c["target"][std::size_t(j)]);
  auto loss_values = [&](const xent::loss_result<T>& r) {
    return none ? matrix<T>(r.per_sample()) : matrix<T>::Constant(1, 1, r.value());
  };
  const auto forward = has_targets ? xent::divergence(s, t, targets, o) : xent::divergence(s, t, o);
  const double e = worst_error(loss_values(forward), c["loss"], false);
  CHECK(e <= budget);
  worst_loss = std::max(worst_loss, e);

  // Both gradients with the case's grad_out, through _backward.
  matrix<T> gs(C, N), gt(C, N);
  const vector<T> grad_out = xent_test::as_matrix<T>(c["grad_out"], Eigen::Index(c["grad_out"].size()), 1);
  if (none) {
    if (has_targets)
      xent::divergence_backward(s, t, targets, grad_out, o, gs, gt);
    else
      xent::divergence_backward(s, t, grad_out, o, gs, gt);
  } else {
    if (has_targets)
      xent::divergence_backward(s, t, targets, double(grad_out(0)), o, gs, gt);
    else
      xent::divergence_backward(s, t, double(grad_out(0)), o, gs, gt);
  }
  if (!c.has("grad")) {
    // -inf masks: where the student has no mass its gradient is 0 (no 0 * inf) whatever the kind.
    for (Eigen::Index i = 0; i < s.size(); ++i)
      if (s.data()[i] == -std::numeric_limits<T>::infinity() && std::isfinite(double(forward.per_sample()(i / C))))
        CHECK(gs.data()[i] == T(0));
    return;
  }
  const double eg = std::max(worst_error(gs, c["grad"], true), worst_error(gt, c["grad_teacher"], true)) / kappa;
  CHECK(eg <= budget);
  worst_grad = std::max(worst_grad, eg);

  // _with_grad: the same loss bits as the forward, and the gradient of what it returns.
  if (grad_out.size() == 1 && grad_out(0) == T(1) && !has_targets) {
    matrix<T> g2(C, N);
    const auto r = xent::divergence_with_grad(s, t, o, g2);
    CHECK(loss_values(r) == loss_values(forward));
    CHECK(g2 == gs);
  }
}

}  // namespace

TEST_CASE("divergence: values and both gradients against torch 1.13 float64", "[divergence][reference]") {
  double loss_d = 0, grad_d = 0, loss_f = 0, grad_f = 0;
  for (const auto& c : cases()) {
    check_case<double>(c, 1e-12, loss_d, grad_d);
    check_case<float>(c, 64 * std::numeric_limits<float>::epsilon(), loss_f, grad_f);
  }
  std::cout << "divergence vs torch (" << cases().size() << " cases): double loss " << loss_d << ", grad " << grad_d
            << " (over the conditioning); float loss " << loss_f / std::numeric_limits<float>::epsilon() << " eps, grad "
            << grad_f / std::numeric_limits<float>::epsilon() << " eps (over the conditioning)\n";
}

TEST_CASE("divergence: identities of the field", "[divergence]") {
  const matrix<double> s = xent_test::random_logits<double>(37, 11, 2.5), t = xent_test::random_logits<double>(37, 11, 2.5);
  xent::divergence_options o;
  o.reduction = xent::reduction::none;
  o.temperature = 1.7;
  for (divergence_kind k : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
    INFO(xent::to_string(k));
    o.kind = k;
    // D(P, P) = 0 exactly, with a 0 gradient (TVD's subgradient at 0 included).
    matrix<double> g(37, 11), gt(37, 11);
    const vector<double> same = xent::divergence_with_grad(s, s, o, g).per_sample();
    CHECK(same.cwiseAbs().maxCoeff() == 0.0);
    CHECK(g.cwiseAbs().maxCoeff() == 0.0);
    // The role swap: forward(s, t) = reverse(t, s), jsd_beta(s, t) = jsd_(1-beta)(t, s), tvd symmetric.
    xent::divergence_options swapped = o;
    swapped.kind = k == divergence_kind::forward_kl ? divergence_kind::reverse_kl
                   : k == divergence_kind::reverse_kl ? divergence_kind::forward_kl
                                                      : k;
    o.beta = 0.3;
    swapped.beta = 0.7;
    const vector<double> d = xent::divergence(s, t, o).per_sample(), r = xent::divergence(t, s, swapped).per_sample();
    CHECK((d - r).cwiseAbs().maxCoeff() <= 1e-14 * d.cwiseAbs().maxCoeff());
    CHECK(d.minCoeff() >= 0.0);
    // The teacher's gradient is the student's gradient of the swapped call.
    matrix<double> gs_swapped(37, 11), none_buffer(0, 0);
    xent::divergence_with_grad(s, t, o, none_buffer, gt);
    xent::divergence_with_grad(t, s, swapped, gs_swapped);
    CHECK((gt - gs_swapped).cwiseAbs().maxCoeff() <= 1e-15);
    o.beta = 0.5;
  }
  // Bounds: JSD(1/2) <= ln 2, TVD <= 1, and Pinsker TVD^2 <= KL / 2 for both KLs.
  o.temperature = 0.2;  // sharp distributions, near the bounds
  o.kind = divergence_kind::jsd;
  const vector<double> jsd = xent::divergence(s, t, o).per_sample();
  o.kind = divergence_kind::tvd;
  const vector<double> tvd = xent::divergence(s, t, o).per_sample();
  o.kind = divergence_kind::forward_kl;
  const vector<double> fkl = xent::divergence(s, t, o).per_sample();
  o.kind = divergence_kind::reverse_kl;
  const vector<double> rkl = xent::divergence(s, t, o).per_sample();
  CHECK(jsd.maxCoeff() <= std::log(2.0));
  CHECK(tvd.maxCoeff() <= 1.0);
  CHECK(jsd.minCoeff() > 0.0);
  for (Eigen::Index j = 0; j < 11; ++j) {
    CHECK(tvd(j) * tvd(j) <= fkl(j) / 2);
    CHECK(tvd(j) * tvd(j) <= rkl(j) / 2);
  }
  // Disjoint supports: JSD(1/2) = ln 2 and TVD = 1 exactly (up to the last bit); forward KL = +inf.
  matrix<double> ds = s, dt = t;
  ds.topRows(20).setConstant(-std::numeric_limits<double>::infinity());
  dt.bottomRows(17).setConstant(-std::numeric_limits<double>::infinity());
  o.temperature = 1;
  o.kind = divergence_kind::jsd;
  CHECK((xent::divergence(ds, dt, o).per_sample().array() - std::log(2.0)).abs().maxCoeff() <= 4e-16);
  o.kind = divergence_kind::tvd;
  CHECK((xent::divergence(ds, dt, o).per_sample().array() - 1.0).abs().maxCoeff() <= 4e-16);
  o.kind = divergence_kind::forward_kl;
  CHECK(xent::divergence(ds, dt, o).per_sample().minCoeff() == std::numeric_limits<double>::infinity());
}

TEST_CASE("divergence: forward KL at T with T^2 is the soft distillation loss", "[divergence]") {
  const matrix<float> s = xent_test::random_logits<float>(300, 9), t = xent_test::random_logits<float>(300, 9);
  xent::distillation_options kd;
  kd.temperature = 2.5;
  xent::divergence_options o;
  o.temperature = 2.5;
  o.scale_by_temperature_squared = true;
  const float kd_loss = xent::distillation_loss(s, t, kd).value(), d = xent::divergence(s, t, o).value();
  CHECK(std::fabs(kd_loss - d) <= 2 * std::numeric_limits<float>::epsilon() * kd_loss);
  matrix<float> g_kd(300, 9), g(300, 9);
  xent::distillation_loss_with_grad(s, t, kd, g_kd);
  xent::divergence_with_grad(s, t, o, g);
  CHECK((g - g_kd).cwiseAbs().maxCoeff() <= 4 * std::numeric_limits<float>::epsilon() * g_kd.cwiseAbs().maxCoeff());
}

TEST_CASE("divergence: gradients by central differences", "[divergence]") {
  matrix<double> s = xent_test::random_logits<double>(50, 4, 2), t = xent_test::random_logits<double>(50, 4, 2);
  xent::divergence_options o;
  o.temperature = 1.3;
  o.teacher_temperature = 0.7;
  o.scale_by_temperature_squared = true;
  double worst = 0;
  for (divergence_kind k : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
    o.kind = k;
    o.beta = 0.35;
    matrix<double> gs(50, 4), gt(50, 4);
    xent::divergence_with_grad(s, t, o, gs, gt);
    const double scale = std::max(gs.cwiseAbs().maxCoeff(), gt.cwiseAbs().maxCoeff());
    for (Eigen::Index i : {Eigen::Index(0), Eigen::Index(7), Eigen::Index(63), Eigen::Index(111), Eigen::Index(199)}) {
      const double ds = xent_test::central_difference(s, i, [&](const matrix<double>& x) { return xent::divergence(x, t, o).value(); });
      const double dt = xent_test::central_difference(t, i, [&](const matrix<double>& x) { return xent::divergence(s, x, o).value(); });
      worst = std::max({worst, std::fabs(ds - gs.data()[i]) / scale, std::fabs(dt - gt.data()[i]) / scale});
    }
  }
  std::cout << "divergence gradients vs central differences: " << worst << " of the largest entry\n";
  CHECK(worst <= 1e-7);
}

TEST_CASE("divergence: the same bits for any thread count, layout, bf16 widening and in place", "[divergence]") {
  for (auto shape : {std::array<Eigen::Index, 2>{40000, 3}, std::array<Eigen::Index, 2>{300, 64}}) {
    const Eigen::Index C = shape[0], N = shape[1];
    INFO("C = " << C << ", N = " << N);
    const matrix<float> s = xent_test::random_logits<float>(C, N), t = xent_test::random_logits<float>(C, N);
    for (divergence_kind k : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
      INFO(xent::to_string(k));
      xent::divergence_options o;
      o.kind = k;
      o.temperature = 1.5;
      o.num_threads = 1;
      matrix<float> gs1(C, N), gt1(C, N), gs2(C, N), gt2(C, N);
      const float one = xent::divergence_with_grad(s, t, o, gs1, gt1).value();
      o.num_threads = 2;
      const float two = xent::divergence_with_grad(s, t, o, gs2, gt2).value();
      CHECK(one == two);
      CHECK(gs1 == gs2);
      CHECK(gt1 == gt2);
      // The class axis along rows (dim = 1): a row-major map of the same storage.
      using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      const Eigen::Map<const row_major> sr(s.data(), N, C), tr(t.data(), N, C);
      row_major gsr(N, C);
      o.dim = 1;
      CHECK(xent::divergence_with_grad(sr, tr, o, gsr).value() == one);
      CHECK(Eigen::Map<const matrix<float>>(gsr.data(), C, N) == gs1);
      // Strided: dim = 1 on column-major storage (the transpose).
      const matrix<float> st = s.transpose(), tt = t.transpose();
      CHECK(xent::divergence(st, tt, o).value() == one);
      o.dim = 0;
      // In place: the student's gradient into the student's storage.
      matrix<float> in_place = s;
      CHECK(xent::divergence_with_grad(in_place, t, o, in_place).value() == one);
      CHECK(in_place == gs1);
      // bf16 logits: widened to float, the same bits as the float call on the widened values.
      const matrix<Eigen::bfloat16> sb = s.cast<Eigen::bfloat16>(), tb = t.cast<Eigen::bfloat16>();
      matrix<Eigen::bfloat16> gb(C, N);
      const matrix<float> sw = sb.cast<float>(), tw = tb.cast<float>();
      matrix<float> gw(C, N);
      CHECK(xent::divergence_with_grad(sb, tb, o, gb).value() == xent::divergence_with_grad(sw, tw, o, gw).value());
      // The float gradient may differ in its last bits (the two instantiations contract into FMAs
      // differently), so a bf16 entry may land one bf16 ulp away.
      CHECK(((gb.cast<float>() - gw).array().abs() <= gw.array().abs() * (1.0f / 128)).all());
    }
  }
}

TEST_CASE("divergence: ignored samples and reductions", "[divergence]") {
  const matrix<double> s = xent_test::random_logits<double>(20, 7), t = xent_test::random_logits<double>(20, 7);
  index_vector targets(7);
  targets << 3, -100, 0, 5, -100, -100, 19;
  xent::divergence_options o;
  o.kind = divergence_kind::jsd;
  o.reduction = xent::reduction::none;
  const vector<double> all = xent::divergence(s, t, o).per_sample();
  const vector<double> kept = xent::divergence(s, t, targets, o).per_sample();
  double sum = 0;
  for (Eigen::Index j = 0; j < 7; ++j) {
    CHECK(kept(j) == (targets(j) == -100 ? 0.0 : all(j)));
    if (targets(j) != -100) sum += all(j);
  }
  o.reduction = xent::reduction::batchmean;
  const auto bm = xent::divergence(s, t, targets, o);
  CHECK(bm.value() == Approx(sum / 4).epsilon(1e-15));
  CHECK(bm.denominator() == 4);
  o.reduction = xent::reduction::mean;
  CHECK(xent::divergence(s, t, targets, o).value() == Approx(sum / (4 * 20)).epsilon(1e-15));
  o.reduction = xent::reduction::sum;
  CHECK(xent::divergence(s, t, targets, o).value() == Approx(sum).epsilon(1e-15));
  matrix<double> g(20, 7);
  xent::divergence_with_grad(s, t, targets, o, g);
  for (Eigen::Index j : {1, 4, 5}) CHECK(g.col(j).cwiseAbs().maxCoeff() == 0.0);
  CHECK(g.col(0).cwiseAbs().maxCoeff() > 0.0);
}

TEST_CASE("divergence: float sums over a large vocabulary", "[divergence]") {
  // One sample of 2e6 classes in float against the same float inputs in double.
  const Eigen::Index C = 2000000;
  const matrix<float> s = xent_test::random_logits<float>(C, 1, 2), t = xent_test::random_logits<float>(C, 1, 2);
  const matrix<double> sd = s.cast<double>(), td = t.cast<double>();
  double worst = 0;
  for (divergence_kind k : {divergence_kind::forward_kl, divergence_kind::reverse_kl, divergence_kind::jsd, divergence_kind::tvd}) {
    xent::divergence_options o;
    o.kind = k;
    const double exact = xent::divergence(sd, td, o).value();
    worst = std::max(worst, std::fabs(double(xent::divergence(s, t, o).value()) - exact) / exact);
  }
  std::cout << "divergence, 2e6 float classes: worst relative error " << worst << "\n";
  CHECK(worst <= 1e-5);
}

TEST_CASE("divergence: misuse", "[divergence][errors]") {
  const matrix<float> s = xent_test::random_logits<float>(5, 4), t = xent_test::random_logits<float>(5, 4);
  const matrix<float> wrong = xent_test::random_logits<float>(4, 4);
  index_vector targets(4);
  targets << 0, 1, 9, -100;
  xent::divergence_options o;
  auto with = [&](auto change) {
    xent::divergence_options c = o;
    change(c);
    return c;
  };
  matrix<float> g(5, 4), g2(5, 4), small(3, 4);
  matrix<float> shared = s;
  const xent_test::misuse table[] = {
      {"teacher shape", [&] { xent::divergence(s, wrong, o); }, "divergence", "teacher_logits", "must have the shape"},
      {"beta above 1", [&] { xent::divergence(s, t, with([](auto& c) { c.kind = divergence_kind::jsd; c.beta = 1.5; })); },
       "divergence", "beta", "[0, 1]"},
      {"beta NaN", [&] { xent::divergence(s, t, with([](auto& c) { c.beta = std::nan(""); })); }, "divergence", "beta", "[0, 1]"},
      {"T = 0", [&] { xent::divergence(s, t, with([](auto& c) { c.temperature = 0; })); }, "divergence", "temperature", "> 0"},
      {"1 / T overflows float", [&] { xent::divergence(s, t, with([](auto& c) { c.temperature = 1e-40; })); }, "divergence",
       "temperature", "1 / temperature is finite"},
      {"teacher T < 0", [&] { xent::divergence(s, t, with([](auto& c) { c.teacher_temperature = -1; })); }, "divergence",
       "teacher_temperature", "> 0"},
      {"kind", [&] { xent::divergence(s, t, with([](auto& c) { c.kind = static_cast<divergence_kind>(7); })); }, "divergence",
       "kind", "forward_kl"},
      {"reduction", [&] { xent::divergence(s, t, with([](auto& c) { c.reduction = static_cast<xent::reduction>(9); })); },
       "divergence", "reduction", "batchmean"},
      {"dim", [&] { xent::divergence(s, t, with([](auto& c) { c.dim = 2; })); }, "divergence", "dim", "0 (classes down each column)"},
      {"target out of range", [&] { xent::divergence(s, t, targets, o); }, "divergence", "target[2]", "must be in [0, 5)"},
      {"gradient shape", [&] { xent::divergence_with_grad(s, t, o, small); }, "divergence_with_grad", "grad_student_out",
       "must have the shape"},
      {"student gradient over the teacher", [&] { xent::divergence_with_grad(s, shared, o, shared); }, "divergence_with_grad",
       "grad_student_out", "teacher_logits"},
      {"teacher gradient over the student", [&] { xent::divergence_with_grad(shared, t, o, g, shared); }, "divergence_with_grad",
       "grad_teacher_out", "student_logits"},
      {"both gradients, one in place", [&] { xent::divergence_with_grad(shared, t, o, shared, g2); }, "divergence_with_grad",
       "grad_student_out", "the input"},
      {"scalar grad_out for none",
       [&] { xent::divergence_backward(s, t, 1.0, with([](auto& c) { c.reduction = xent::reduction::none; }), g); },
       "divergence_backward", "grad_out", "one entry per sample"},
      {"grad_out length", [&] {
         xent::divergence_backward(s, t, vector<float>::Ones(3), with([](auto& c) { c.reduction = xent::reduction::none; }), g);
       }, "divergence_backward", "grad_out", "one entry per sample"},
  };
  CHECK(xent_test::check_misuse(table) == int(std::size(table)));
}
