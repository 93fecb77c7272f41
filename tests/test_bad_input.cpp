// Misuse across the whole public API (kernels, categorical and binary losses, kl_div, measures,
// loss_result): each case must throw xent::invalid_argument naming the function and the argument,
// with a message that holds the argument, a piece of the expectation and a piece of the value got
// (docs/errors.md). The expectations were written from each function's actual checks.
// Misuses found NOT to be caught are documented in the [!mayfail] tests at the end.

#include "misuse.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

namespace {

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr double infinity = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE("bad input across the API throws xent::invalid_argument naming function, argument, expectation and value",
          "[bad-input]") {
  // 4 classes x 3 samples (dim = 0) unless a case says otherwise.
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(4, 3);
  const Eigen::MatrixXd p = xent::softmax(x);
  const Eigen::MatrixXd y = xent::log_softmax(x);
  const Eigen::MatrixXd bt = Eigen::MatrixXd::Constant(4, 3, 0.5);  // valid binary targets / probs
  const Eigen::VectorXi t = (Eigen::VectorXi(3) << 0, 1, 3).finished();
  const Eigen::MatrixXd wrong_shape(3, 4), empty_classes(0, 3), empty_samples(4, 0);
  Eigen::MatrixXd g(4, 3);
  const auto with = [](auto opts, auto&& edit) { edit(opts); return opts; };
  using ce_opts = xent::cross_entropy_options;
  using nll_opts = xent::nll_loss_options;
  using bce_opts = xent::binary_cross_entropy_options<double>;
  using bcel_opts = xent::binary_cross_entropy_with_logits_options<double>;
  using kl_opts = xent::kl_div_options;
  using m_opts = xent::measure_options;
  const auto at = [](Eigen::MatrixXd m, Eigen::Index r, Eigen::Index c, double v) { m(r, c) = v; return m; };

  const xent_test::misuse cases[] = {
      // ---- kernels
      {"logsumexp dim 2", [&] { (void)xent::logsumexp(x, 2); }, "logsumexp", "dim", "must be 0", "got 2"},
      {"softmax empty", [&] { (void)xent::softmax(empty_samples); }, "softmax", "x", "must not be empty", "got 4 x 0"},
      {"log_softmax_into transposed out", [&] { xent::log_softmax_into(x, wrong_shape); }, "log_softmax_into", "out",
       "the shape of x (4 x 3)", "got 3 x 4"},
      {"logsumexp_into short out, dim 1", [&] { xent::logsumexp_into(x, Eigen::VectorXd(3), 1); }, "logsumexp_into",
       "out", "one entry per sample (4)", "got 3"},

      // ---- cross_entropy (class-index targets)
      {"ce dim 2", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.dim = 2; })); },
       "cross_entropy", "dim", "must be 0", "got 2"},
      {"ce batchmean", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.reduction = xent::reduction::batchmean; })); },
       "cross_entropy", "reduction", "must be none, mean or sum", "got batchmean"},
      {"ce num_threads -1", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.num_threads = -1; })); },
       "cross_entropy", "num_threads", "must be >= 0", "got -1"},
      {"ce_with_grad grad shape", [&] { Eigen::MatrixXd g(1, 1); (void)xent::cross_entropy_with_grad(x, t, ce_opts{}, g); },
       "cross_entropy_with_grad", "grad_logits_out", "must have the shape of the input", "got 1 x 1"},
      {"ce label_smoothing 1.5", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.label_smoothing = 1.5; })); },
       "cross_entropy", "label_smoothing", "must be in [0, 1]", "got 1.5"},
      {"ce label_smoothing -0.1", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.label_smoothing = -0.1; })); },
       "cross_entropy", "label_smoothing", "must be in [0, 1]", "got -0.1"},
      {"ce label_smoothing NaN", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.label_smoothing = not_a_number; })); },
       "cross_entropy", "label_smoothing", "must be in [0, 1]", "got nan"},
      {"ce empty logits", [&] { (void)xent::cross_entropy(empty_classes, t); }, "cross_entropy", "logits",
       "must not be empty", "got 0 x 3"},
      {"ce weight length", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.weight = Eigen::VectorXd::Ones(2); })); },
       "cross_entropy", "weight", "one entry per class (4)", "got 2"},
      {"ce weight length, dim 1", [&] { (void)xent::cross_entropy(x, Eigen::VectorXi::Zero(4), with(ce_opts{}, [](auto& o) { o.dim = 1; o.weight = Eigen::VectorXd::Ones(4); })); },
       "cross_entropy", "weight", "one entry per class (3)", "got 4"},
      {"ce targets length", [&] { (void)xent::cross_entropy(x, Eigen::VectorXi::Zero(2)); }, "cross_entropy", "targets",
       "one entry per sample (3)", "got 2"},
      {"ce target == C", [&] { (void)xent::cross_entropy(x, (Eigen::VectorXi(3) << 0, 4, 1).finished()); }, "cross_entropy",
       "target[1]", "must be in [0, 4) or ignore_index (-100)", "got 4"},
      {"ce target -1", [&] { (void)xent::cross_entropy(x, (Eigen::Matrix<std::int64_t, -1, 1>(3) << -1, 0, 1).finished()); },
       "cross_entropy", "target[0]", "must be in [0, 4)", "got -1"},
      {"ce prob targets shape", [&] { (void)xent::cross_entropy(x, wrong_shape); }, "cross_entropy", "targets",
       "the shape of logits (4 x 3)", "got 3 x 4"},
      {"ce prob targets ignore_index", [&] { (void)xent::cross_entropy(x, p, with(ce_opts{}, [](auto& o) { o.ignore_index = 0; })); },
       "cross_entropy", "ignore_index", "must stay -100", "got 0"},

      // ---- cross_entropy_backward
      {"ce backward scalar grad_out for none", [&] { xent::cross_entropy_backward(x, t, 1.0, with(ce_opts{}, [](auto& o) { o.reduction = xent::reduction::none; }), g); },
       "cross_entropy_backward", "grad_out", "one entry per sample for reduction none", "got 1"},
      {"ce backward vector grad_out for mean", [&] { xent::cross_entropy_backward(x, t, Eigen::VectorXd::Ones(3), ce_opts{}, g); },
       "cross_entropy_backward", "grad_out", "must be a scalar for reduction mean", "got 3"},
      {"ce backward grad_out length", [&] { xent::cross_entropy_backward(x, t, Eigen::VectorXd::Ones(2), with(ce_opts{}, [](auto& o) { o.reduction = xent::reduction::none; }), g); },
       "cross_entropy_backward", "grad_out", "one entry per sample (3)", "got 2"},
      {"ce backward out shape", [&] { Eigen::MatrixXd out(3, 4); xent::cross_entropy_backward(x, t, 1.0, ce_opts{}, out); },
       "cross_entropy_backward", "grad_logits_out", "the shape of the input (4 x 3)", "got 3 x 4"},
      {"ce backward prob targets out shape", [&] { Eigen::MatrixXd out(4, 2); xent::cross_entropy_backward(x, p, 1.0, ce_opts{}, out); },
       "cross_entropy_backward", "grad_logits_out", "the shape of the input (4 x 3)", "got 4 x 2"},
      {"ce backward target out of range", [&] { xent::cross_entropy_backward(x, (Eigen::VectorXi(3) << 0, 1, 7).finished(), 1.0, ce_opts{}, g); },
       "cross_entropy_backward", "target[2]", "must be in [0, 4)", "got 7"},

      // ---- nll_loss
      {"nll batchmean", [&] { (void)xent::nll_loss(y, t, with(nll_opts{}, [](auto& o) { o.reduction = xent::reduction::batchmean; })); },
       "nll_loss", "reduction", "must be none, mean or sum", "got batchmean"},
      {"nll weight length", [&] { (void)xent::nll_loss(y, t, with(nll_opts{}, [](auto& o) { o.weight = Eigen::VectorXd::Ones(5); })); },
       "nll_loss", "weight", "one entry per class (4)", "got 5"},
      {"nll target out of range, dim 1", [&] { (void)xent::nll_loss(y, (Eigen::VectorXi(4) << 0, 1, 3, 2).finished(), with(nll_opts{}, [](auto& o) { o.dim = 1; })); },
       "nll_loss", "target[2]", "must be in [0, 3)", "got 3"},
      {"nll empty", [&] { (void)xent::nll_loss(empty_samples, Eigen::VectorXi(0)); }, "nll_loss", "log_probs", "must not be empty", "got 4 x 0"},
      {"nll backward out shape", [&] { Eigen::MatrixXd out(4, 4); xent::nll_loss_backward(y, t, 1.0, nll_opts{}, out); },
       "nll_loss_backward", "grad_log_probs_out", "the shape of the input (4 x 3)", "got 4 x 4"},

      // ---- loss_result
      {"value() of reduction none", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.reduction = xent::reduction::none; })).value(); },
       "loss_result::value", "reduction", "must be mean, sum or batchmean", "got none"},
      {"per_sample() of reduction sum", [&] { (void)xent::cross_entropy(x, t, with(ce_opts{}, [](auto& o) { o.reduction = xent::reduction::sum; })).per_sample(); },
       "loss_result::per_sample", "reduction", "must be none", "got sum"},

      // ---- binary_cross_entropy
      {"bce prob 1.5", [&] { (void)xent::binary_cross_entropy(at(bt, 1, 2, 1.5), bt); }, "binary_cross_entropy", "probs",
       "must hold probabilities in [0, 1]", "probs(1, 2) = 1.5"},
      {"bce prob NaN", [&] { (void)xent::binary_cross_entropy(at(bt, 0, 0, not_a_number), bt); }, "binary_cross_entropy", "probs",
       "must hold probabilities in [0, 1]", "probs(0, 0) = nan"},
      {"bce prob -0 ok, -1e-300 not", [&] { (void)xent::binary_cross_entropy(at(bt, 3, 1, -1e-300), bt); }, "binary_cross_entropy",
       "probs", "in [0, 1]", "probs(3, 1) = -1e-300"},
      {"bce target -0.2", [&] { (void)xent::binary_cross_entropy(bt, at(bt, 2, 1, -0.2)); }, "binary_cross_entropy", "targets",
       "must hold probabilities in [0, 1]", "targets(2, 1) = -0.2"},
      {"bce target inf, dim 1", [&] { (void)xent::binary_cross_entropy(bt, at(bt, 0, 1, infinity), with(bce_opts{}, [](auto& o) { o.dim = 1; })); },
       "binary_cross_entropy", "targets", "in [0, 1]", "targets(0, 1) = inf"},
      {"bce targets shape", [&] { (void)xent::binary_cross_entropy(bt, wrong_shape); }, "binary_cross_entropy", "targets",
       "the shape of probs (4 x 3)", "got 3 x 4"},
      {"bce empty", [&] { (void)xent::binary_cross_entropy(empty_samples, empty_samples); }, "binary_cross_entropy", "probs",
       "must not be empty", "got 4 x 0"},
      {"bce weight 2 x 2", [&] { (void)xent::binary_cross_entropy(bt, bt, with(bce_opts{}, [](auto& o) { o.weight = Eigen::MatrixXd::Ones(2, 2); })); },
       "binary_cross_entropy", "weight", "one entry per class (4) or the shape of the input (4 x 3)", "got 2 x 2"},
      {"bce batchmean", [&] { (void)xent::binary_cross_entropy(bt, bt, with(bce_opts{}, [](auto& o) { o.reduction = xent::reduction::batchmean; })); },
       "binary_cross_entropy", "reduction", "batchmean is kl_div's only", "got batchmean"},
      {"bce dim -1", [&] { (void)xent::binary_cross_entropy(bt, bt, with(bce_opts{}, [](auto& o) { o.dim = -1; })); },
       "binary_cross_entropy", "dim", "must be 0", "got -1"},
      {"bce backward gradient buffer shape", [&] { Eigen::MatrixXd out(3, 4); xent::binary_cross_entropy_backward(bt, bt, 1.0, {}, out); },
       "binary_cross_entropy_backward", "grad_probs_out", "the shape of the input (4 x 3)", "got 3 x 4"},
      {"bce backward grad_out not 1 x 1 for mean", [&] { xent::binary_cross_entropy_backward(bt, bt, bt, {}, g); },
       "binary_cross_entropy_backward", "grad_out", "must be a number (or 1 x 1) for reduction mean", "got 4 x 3"},
      {"bce backward grad_out shape for none", [&] { xent::binary_cross_entropy_backward(bt, bt, Eigen::MatrixXd::Ones(2, 2), with(bce_opts{}, [](auto& o) { o.reduction = xent::reduction::none; }), g); },
       "binary_cross_entropy_backward", "grad_out", "must have the shape of the input (4 x 3)", "got 2 x 2"},
      {"bce backward prob 2", [&] { xent::binary_cross_entropy_backward(at(bt, 3, 2, 2.0), bt, 1.0, {}, g); },
       "binary_cross_entropy_backward", "probs", "in [0, 1]", "probs(3, 2) = 2"},

      // ---- binary_cross_entropy_with_logits
      {"bcel pos_weight length", [&] { (void)xent::binary_cross_entropy_with_logits(x, bt, with(bcel_opts{}, [](auto& o) { o.pos_weight = Eigen::MatrixXd::Ones(3, 1); })); },
       "binary_cross_entropy_with_logits", "pos_weight", "one entry per class (4)", "got 3 x 1"},
      {"bcel weight length, dim 1", [&] { (void)xent::binary_cross_entropy_with_logits(x, bt, with(bcel_opts{}, [](auto& o) { o.dim = 1; o.weight = Eigen::MatrixXd::Ones(4, 1); })); },
       "binary_cross_entropy_with_logits", "weight", "one entry per class (3)", "got 4 x 1"},
      {"bcel target NaN", [&] { (void)xent::binary_cross_entropy_with_logits(x, at(bt, 1, 1, not_a_number)); },
       "binary_cross_entropy_with_logits", "targets", "in [0, 1]", "targets(1, 1) = nan"},
      {"bcel target 1.0001", [&] { (void)xent::binary_cross_entropy_with_logits(x, at(bt, 2, 0, 1.0001)); },
       "binary_cross_entropy_with_logits", "targets", "in [0, 1]", "targets(2, 0) = 1.0001"},
      {"bcel empty logits", [&] { (void)xent::binary_cross_entropy_with_logits(empty_classes, empty_classes); },
       "binary_cross_entropy_with_logits", "logits", "must not be empty", "got 0 x 3"},
      {"bcel backward dim 3", [&] { xent::binary_cross_entropy_with_logits_backward(x, bt, 1.0, with(bcel_opts{}, [](auto& o) { o.dim = 3; }), g); },
       "binary_cross_entropy_with_logits_backward", "dim", "must be 0", "got 3"},
      {"bcel backward pos_weight shape", [&] { xent::binary_cross_entropy_with_logits_backward(x, bt, 1.0, with(bcel_opts{}, [](auto& o) { o.pos_weight = Eigen::MatrixXd::Ones(4, 2); }), g); },
       "binary_cross_entropy_with_logits_backward", "pos_weight", "one entry per class (4)", "got 4 x 2"},
      {"bcel backward gradient buffer shape", [&] { Eigen::MatrixXd out(4, 1); xent::binary_cross_entropy_with_logits_backward(x, bt, 1.0, {}, out); },
       "binary_cross_entropy_with_logits_backward", "grad_logits_out", "the shape of the input (4 x 3)", "got 4 x 1"},

      // ---- kl_div
      {"kl_div target -0.5", [&] { (void)xent::kl_div(y, at(p, 1, 0, -0.5)); }, "kl_div", "target",
       "must hold probabilities (finite and >= 0)", "target(1, 0) = -0.5"},
      {"kl_div target NaN", [&] { (void)xent::kl_div(y, at(p, 0, 2, not_a_number)); }, "kl_div", "target", "finite and >= 0",
       "target(0, 2) = nan"},
      {"kl_div target inf", [&] { (void)xent::kl_div(y, at(p, 3, 0, infinity)); }, "kl_div", "target", "finite and >= 0",
       "target(3, 0) = inf"},
      {"kl_div target shape", [&] { (void)xent::kl_div(y, Eigen::MatrixXd::Ones(4, 2)); }, "kl_div", "target",
       "the shape of input (4 x 3)", "got 4 x 2"},
      {"kl_div empty", [&] { (void)xent::kl_div(empty_samples, empty_samples); }, "kl_div", "input", "must not be empty", "got 4 x 0"},
      {"kl_div dim 2", [&] { (void)xent::kl_div(y, p, with(kl_opts{}, [](auto& o) { o.dim = 2; })); }, "kl_div", "dim", "must be 0", "got 2"},
      {"kl_div_backward gradient buffer shape", [&] { Eigen::MatrixXd out(3, 4); xent::kl_div_backward(y, p, 1.0, {}, out); },
       "kl_div_backward", "grad_input_out", "the shape of the input (4 x 3)", "got 3 x 4"},
      {"kl_div_backward grad_out for batchmean", [&] { xent::kl_div_backward(y, p, Eigen::MatrixXd::Ones(4, 3), with(kl_opts{}, [](auto& o) { o.reduction = xent::reduction::batchmean; }), g); },
       "kl_div_backward", "grad_out", "must be a number (or 1 x 1) for reduction batchmean", "got 4 x 3"},
      {"kl_div_backward target negative", [&] { xent::kl_div_backward(y, at(p, 2, 2, -1.0), 1.0, {}, g); },
       "kl_div_backward", "target", "finite and >= 0", "target(2, 2) = -1"},

      // ---- measures
      {"entropy base 0", [&] { (void)xent::entropy(p, with(m_opts{}, [](auto& o) { o.base = 0; })); }, "entropy", "base",
       "must be finite, > 0 and != 1", "got 0"},
      {"entropy base 1", [&] { (void)xent::entropy(p, with(m_opts{}, [](auto& o) { o.base = 1; })); }, "entropy", "base",
       "!= 1", "got 1"},
      {"kl_divergence base -2", [&] { (void)xent::kl_divergence(p, p, with(m_opts{}, [](auto& o) { o.base = -2; })); },
       "kl_divergence", "base", "> 0", "got -2"},
      {"js_divergence base inf", [&] { (void)xent::js_divergence(p, p, with(m_opts{}, [](auto& o) { o.base = infinity; })); },
       "js_divergence", "base", "must be finite", "got inf"},
      {"entropy_from_logits base NaN", [&] { (void)xent::entropy_from_logits(x, with(m_opts{}, [](auto& o) { o.base = not_a_number; })); },
       "entropy_from_logits", "base", "must be finite", "got nan"},
      {"entropy p negative", [&] { (void)xent::entropy(at(p, 2, 1, -0.2)); }, "entropy", "p",
       "must hold probabilities (finite and >= 0)", "p(2, 1) = -0.2"},
      {"entropy p inf, dim 1", [&] { (void)xent::entropy(at(p, 1, 2, infinity), with(m_opts{}, [](auto& o) { o.dim = 1; })); },
       "entropy", "p", "finite and >= 0", "p(1, 2) = inf"},
      {"cross_entropy_between q NaN", [&] { (void)xent::cross_entropy_between(p, at(p, 0, 2, not_a_number)); },
       "cross_entropy_between", "q", "finite and >= 0", "q(0, 2) = nan"},
      {"kl_divergence q shape", [&] { (void)xent::kl_divergence(p, wrong_shape); }, "kl_divergence", "q",
       "the shape of p (4 x 3)", "got 3 x 4"},
      {"js_divergence empty", [&] { (void)xent::js_divergence(empty_classes, empty_classes); }, "js_divergence", "p",
       "must not be empty", "got 0 x 3"},
      {"entropy_from_logits dim 2", [&] { (void)xent::entropy_from_logits(x, with(m_opts{}, [](auto& o) { o.dim = 2; })); },
       "entropy_from_logits", "dim", "must be 0", "got 2"},
      {"entropy_from_logits empty", [&] { (void)xent::entropy_from_logits(empty_samples); }, "entropy_from_logits", "x",
       "must not be empty", "got 4 x 0"},
  };

  const int checked = xent_test::check_misuse(cases);
  CHECK(checked == int(sizeof(cases) / sizeof(cases[0])));
  CHECK(checked >= 30);
}

// ---- Misuse found while writing the table, now caught: a reduction value outside the enum (a cast
// integer) used to fall through to a silent sum. (Unsigned class-index targets, which could wrap to
// ignore_index, are now a compile-time error: see check_index_targets.)

TEST_CASE("a reduction value outside the enum is rejected", "[bad-input]") {
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(4, 3);
  const Eigen::VectorXi t = (Eigen::VectorXi(3) << 0, 1, 3).finished();
  const Eigen::MatrixXd p = xent::softmax(x);
  xent::cross_entropy_options ce;
  ce.reduction = static_cast<xent::reduction>(7);
  xent::kl_div_options kl;
  kl.reduction = static_cast<xent::reduction>(7);
  xent::binary_cross_entropy_options<double> bce;
  bce.reduction = static_cast<xent::reduction>(-1);
  const xent_test::misuse cases[] = {
      {"cross_entropy", [&] { (void)xent::cross_entropy(x, t, ce); }, "cross_entropy", "reduction", "must be none, mean, sum or batchmean", "but got 7"},
      {"kl_div", [&] { (void)xent::kl_div(xent::log_softmax(x), p, kl); }, "kl_div", "reduction", "must be none, mean, sum or batchmean", "but got 7"},
      {"binary_cross_entropy", [&] { (void)xent::binary_cross_entropy(p, p, bce); }, "binary_cross_entropy", "reduction", "must be none", "but got -1"},
  };
  xent_test::check_misuse(cases);
}
