// The fused cross-entropy kernel (detail/losses/cross_entropy.hpp on the sweep driver) held to the
// scalar reference path (tests/categorical_reference.hpp), on the
// shapes where its code paths change (C = 1, 2, 7, 16, 17 for the one-sample-per-lane blocks,
// chunk edges, 128256 for a vocabulary) and on adversarial values; its thread-count invariance;
// forward + gradient in one call against the separate calls; bf16 logits.

#include "categorical_reference.hpp"
#include "support.hpp"

#include <xent/xent.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using xent_test::matrix;
using xent_test::vector;
using Eigen::Index;

template <class T>
constexpr T inf = std::numeric_limits<T>::infinity();

struct option_set {
  const char* name;
  bool weighted;
  double smoothing;
  bool ignore_some;
  xent::reduction reduction;
};

const option_set option_sets[] = {
    {"plain", false, 0.0, false, xent::reduction::none},
    {"weight", true, 0.0, false, xent::reduction::none},
    {"smoothing", false, 0.1, false, xent::reduction::none},
    {"weight+smoothing+ignore", true, 0.25, true, xent::reduction::none},
    {"ignore mean", false, 0.0, true, xent::reduction::mean},
    {"weight+smoothing sum", true, 0.1, false, xent::reduction::sum},
};

template <class T>
xent::cross_entropy_options options_for(const option_set& o, Index C) {
  xent::cross_entropy_options opts;
  if (o.weighted) opts.weight = (Eigen::ArrayXd::LinSpaced(C, 0.5, 2.0)).matrix();
  opts.label_smoothing = o.smoothing;
  opts.reduction = o.reduction;
  opts.ignore_index = -1;
  return opts;
}

Eigen::VectorXi targets_for(Index N, Index C, bool ignore_some) {
  Eigen::VectorXi t(N);
  for (Index j = 0; j < N; ++j) t(j) = static_cast<int>((j * 7919 + 3) % C);
  if (ignore_some)
    for (Index j = 1; j < N; j += 3) t(j) = -1;
  return t;
}

/// Logits with the values the kernels must survive, at deterministic places.
template <class T>
matrix<T> adversarial_logits(Index C, Index N, int kind) {
  matrix<T> x = xent_test::random_logits<T>(C, N, 3.0);
  if (kind == 1) {  // masks: -inf everywhere but the target's neighbourhood
    for (Index j = 0; j < N; ++j)
      for (Index k = 0; k < C; k += 3) x((k + j) % C, j) = -inf<T>;
  } else if (kind == 2) {  // huge logits, both signs
    for (Index j = 0; j < N; ++j) x(j % C, j) = (j % 2 ? T(1e30) : T(-1e30));
  } else if (kind == 3) {  // one sample each with NaN, +inf, all -inf
    if (N > 0) x(C / 2, 0) = std::numeric_limits<T>::quiet_NaN();
    if (N > 1) x(C - 1, 1) = inf<T>;
    if (N > 2) x.col(2).setConstant(-inf<T>);
  }
  return x;
}

/// |got - ref| in units of eps * max(|ref|, floor); special values must agree exactly.
template <class T>
double error_in_eps(T got, T ref, double floor) {
  if (std::isnan(ref) || std::isnan(got)) return std::isnan(ref) && std::isnan(got) ? 0 : inf<double>;
  if (std::isinf(ref) || std::isinf(got)) return got == ref ? 0 : inf<double>;
  return std::abs(double(got) - double(ref)) / (std::numeric_limits<T>::epsilon() * std::max(std::abs(double(ref)), floor));
}

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

struct worst_error {
  double loss = 0, grad = 0;
};

/// The scalar reference's result for the options' reduction, and its gradient (N x C) of the
/// returned loss.
template <class T>
xent::loss_result<T> reference_result(const matrix<T>& x, const Eigen::VectorXi& t, const xent::cross_entropy_options& opts,
                                      matrix<T>& grad) {
  namespace ref = xent_test::reference;
  const Index C = x.rows(), N = x.cols();
  long double denominator = 0;
  for (Index j = 0; j < N; ++j)
    if (t(j) >= 0) denominator += opts.weight.size() ? opts.weight(t(j)) : 1.0;
  const long double c = opts.reduction == xent::reduction::mean ? 1 / denominator : 1;
  vector<T> losses(N);
  long double total = 0;
  grad.resize(N, C);
  std::vector<long double> g(static_cast<std::size_t>(C));
  for (Index j = 0; j < N; ++j) {
    if (t(j) < 0) {
      losses(j) = 0;
      grad.row(j).setZero();
      continue;
    }
    const long double l = ref::index_ce(x.col(j).data(), C, 1, t(j), opts.weight, opts.label_smoothing);
    losses(j) = T(l);
    total += l;
    ref::index_ce_grad(x.col(j).data(), C, 1, t(j), opts.weight, opts.label_smoothing, c, g.data());
    for (Index k = 0; k < C; ++k) grad(j, k) = T(g[std::size_t(k)]);
  }
  if (opts.reduction == xent::reduction::none) return xent::loss_result<T>::per_sample_losses(losses, double(denominator));
  return xent::loss_result<T>::reduced(opts.reduction, T(total * c), double(denominator));
}

/// The fused path (contiguous classes, dim 0) against the scalar reference, loss and gradient; and
/// the same logits with the classes along strided rows (dim 1), which the kernel gathers into its
/// chunk buffer: the same bits.
template <class T>
void check_fused_against_scalar(const matrix<T>& x, const option_set& o, worst_error& worst, int threads = 1) {
  const Index C = x.rows(), N = x.cols();
  auto opts = options_for<T>(o, C);
  opts.num_threads = threads;
  const Eigen::VectorXi t = targets_for(N, C, o.ignore_some);
  const matrix<T> xt = x.transpose();  // N x C column-major: classes strided
  auto opts_strided = opts;
  opts_strided.dim = 1;

  const auto fused = xent::cross_entropy(x, t, opts);
  matrix<T> g(C, N), gt(N, C), g_strided(N, C);
  const auto scalar = reference_result(x, t, opts, gt);
  const auto fused_with_grad = xent::cross_entropy_with_grad(x, t, opts, g);
  const auto strided_with_grad = xent::cross_entropy_with_grad(xt, t, opts_strided, g_strided);
  {
    // Above 16 classes both layouts run the chunked sweep: the same bits. At 16 and below the
    // contiguous one takes the one-sample-per-lane blocks, which add the classes in another order.
    INFO(o.name << ", C = " << C << ", N = " << N << ": the strided class axis against the contiguous one");
    auto same = [&](T a, T b) { return C > 16 ? same_bits(a, b) : error_in_eps(a, b, 1.0) <= 16; };
    if (o.reduction == xent::reduction::none) {
      for (Index j = 0; j < N; ++j) REQUIRE(same(strided_with_grad.per_sample()(j), fused_with_grad.per_sample()(j)));
    } else {
      REQUIRE(same(strided_with_grad.value(), fused_with_grad.value()));
    }
    for (Index j = 0; j < N; ++j)
      for (Index k = 0; k < C; ++k) REQUIRE(same(g_strided(j, k), g(k, j)));
  }
  INFO(o.name << ", C = " << C << ", N = " << N << ", threads " << threads);
  // Under smoothing a loss sums C log-probabilities, in a different order on each path: the two
  // paths' rounding errors then grow like sqrt(C) (and with the logits' size, hence the floor).
  const double floor = 1 + (o.smoothing > 0 ? 8.0 : 0.0);
  const double loss_budget = o.smoothing > 0 ? 32 + 4 * std::sqrt(double(C)) : 16;
  if (o.reduction == xent::reduction::none) {
    for (Index j = 0; j < N; ++j) {
      INFO("sample " << j << ": fused " << fused.per_sample()(j) << ", scalar " << scalar.per_sample()(j));
      const double e = error_in_eps(fused.per_sample()(j), scalar.per_sample()(j), floor);
      worst.loss = std::max(worst.loss, e);
      REQUIRE(e <= loss_budget);
      REQUIRE(same_bits(fused_with_grad.per_sample()(j), fused.per_sample()(j)));  // one kernel, the same bits
    }
  } else {
    const double e = error_in_eps(fused.value(), scalar.value(), floor);
    worst.loss = std::max(worst.loss, e);
    REQUIRE(e <= loss_budget);
    REQUIRE(same_bits(fused_with_grad.value(), fused.value()));
  }
  // Entries are differences p_k * cQ - c * q_k of terms up to c * Q: measure them against that.
  double denominator = 0, weight_total = opts.weight.size() ? opts.weight.sum() : double(C);
  for (Index j = 0; j < N; ++j)
    if (t(j) >= 0) denominator += opts.weight.size() ? opts.weight(t(j)) : 1.0;
  const double c = o.reduction == xent::reduction::mean ? 1 / denominator : 1;
  for (Index j = 0; j < N; ++j) {
    const double w_t = t(j) < 0 ? 0.0 : opts.weight.size() ? opts.weight(t(j)) : 1.0;
    const double cQ = c * ((1 - o.smoothing) * w_t + o.smoothing / double(C) * weight_total);
    for (Index k = 0; k < C; ++k) {
      const double e = error_in_eps(g(k, j), gt(j, k), std::max(cQ, 1e-30));
      worst.grad = std::max(worst.grad, e);
      // The message only when it is needed: built for every entry, it was half the test's time.
      if (e <= 16) {
        REQUIRE(e <= 16);
      } else {
        INFO("gradient sample " << j << " class " << k << ": fused " << g(k, j) << ", scalar " << gt(j, k) << ", cQ " << cQ);
        REQUIRE(e <= 16);
      }
    }
  }
}

template <class T>
void fused_against_scalar_on_every_path() {
  worst_error worst;
  const Index Cs[] = {1, 2, 7, 16, 17, 1000, 2047, 2048, 2049, 4095, 4096, 4097, 8193};
  const Index Ns[] = {1, 3, 16, 33};
  for (Index C : Cs)
    for (Index N : Ns)
      for (const option_set& o : option_sets)
        for (int kind = 0; kind < 4; ++kind) check_fused_against_scalar(adversarial_logits<T>(C, N, kind), o, worst);
  for (const option_set& o : option_sets) check_fused_against_scalar(adversarial_logits<T>(128256, 2, 0), o, worst, 2);
  WARN("fused vs scalar path, " << (sizeof(T) == 4 ? "float" : "double") << ": worst loss error " << worst.loss
                                << " eps, worst gradient error " << worst.grad << " eps of c * Q");
}

TEST_CASE("fused cross-entropy matches the scalar reference path (float)", "[fused]") {
  fused_against_scalar_on_every_path<float>();
}
TEST_CASE("fused cross-entropy matches the scalar reference path (double)", "[fused]") {
  fused_against_scalar_on_every_path<double>();
}

template <class T>
void expect_same_bits(const matrix<T>& a, const matrix<T>& b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(std::memcmp(a.data(), b.data(), sizeof(T) * size_t(a.size())) == 0);
}

TEST_CASE("cross-entropy results do not depend on the thread count", "[fused][threads]") {
#ifndef _OPENMP
  WARN("built without OpenMP: every call is serial, so this compares serial with serial");
#endif
  struct shape {
    Index C, N;
  };
  // A vocabulary over 3 samples (threads split each sample's classes), many samples (threads split
  // the samples), small C (threads split blocks of one sample per lane).
  const shape shapes[] = {{128256, 3}, {1000, 300}, {10, 50000}};
  for (const shape& s : shapes)
    for (const option_set& o : option_sets) {
      INFO(o.name << ", C = " << s.C << ", N = " << s.N);
      const matrix<float> x = adversarial_logits<float>(s.C, s.N, 1);
      const Eigen::VectorXi t = targets_for(s.N, s.C, o.ignore_some);
      auto opts = options_for<float>(o, s.C);
      matrix<float> g1(s.C, s.N), g2(s.C, s.N);
      opts.num_threads = 1;
      const auto one = xent::cross_entropy_with_grad(x, t, opts, g1);
      opts.num_threads = 2;
      const auto two = xent::cross_entropy_with_grad(x, t, opts, g2);
      if (o.reduction == xent::reduction::none)
        expect_same_bits<float>(one.per_sample(), two.per_sample());
      else
        REQUIRE(one.value() == two.value());
      expect_same_bits(g1, g2);
    }
}

TEST_CASE("forward + gradient in one call equals the separate calls, and in place equals out of place", "[fused]") {
  for (const option_set& o : option_sets)
    for (Index C : {Index(10), Index(1000), Index(5000)}) {
      INFO(o.name << ", C = " << C);
      const Index N = 40;
      const matrix<double> x = adversarial_logits<double>(C, N, 1);
      const Eigen::VectorXi t = targets_for(N, C, o.ignore_some);
      const auto opts = options_for<double>(o, C);
      matrix<double> g(C, N), g_separate(C, N);
      const auto loss = xent::cross_entropy_with_grad(x, t, opts, g);
      const auto forward = xent::cross_entropy(x, t, opts);
      if (o.reduction == xent::reduction::none) {
        xent::cross_entropy_backward(x, t, vector<double>::Ones(N).eval(), opts, g_separate);
        expect_same_bits<double>(loss.per_sample(), forward.per_sample());
      } else {
        xent::cross_entropy_backward(x, t, 1.0, opts, g_separate);
        REQUIRE(loss.value() == forward.value());
      }
      expect_same_bits(g, g_separate);

      matrix<double> overwritten = x;
      const auto in_place = xent::cross_entropy_with_grad_in_place(overwritten, t, opts);
      expect_same_bits(overwritten, g);
      if (o.reduction != xent::reduction::none) REQUIRE(in_place.value() == loss.value());
    }
}

// C <= 16 runs lane blocks of samples. Their whole-packet row loads read past a block, into the next
// block: written in place by another thread, that block may already hold gradients, so in place
// with more than one thread the blocks load sample by sample. Either load gives the same bits.
template <class T>
void check_small_classes_in_place_threads() {
  for (Index C : {Index(2), Index(3), Index(10), Index(16)})
    for (const option_set& o : option_sets) {
      INFO(o.name << ", C = " << C);
      const Index N = 4099;  // many lane blocks per thread, and a ragged tail
      const matrix<T> x = adversarial_logits<T>(C, N, 1);
      const Eigen::VectorXi t = targets_for(N, C, o.ignore_some);
      auto opts = options_for<T>(o, C);
      opts.num_threads = 1;
      matrix<T> g(C, N);
      const auto serial = xent::cross_entropy_with_grad(x, t, opts, g);
      for (int threads : {1, 2}) {
        INFO("threads = " << threads);
        opts.num_threads = threads;
        matrix<T> overwritten = x;
        const auto in_place = xent::cross_entropy_with_grad_in_place(overwritten, t, opts);
        expect_same_bits(overwritten, g);
        if (o.reduction == xent::reduction::none)
          expect_same_bits<T>(in_place.per_sample(), serial.per_sample());
        else
          REQUIRE(in_place.value() == serial.value());
      }
    }
}

TEST_CASE("C <= 16 in place with two threads gives the bits of one thread out of place", "[fused]") {
  check_small_classes_in_place_threads<float>();
  check_small_classes_in_place_threads<double>();
}

TEST_CASE("bf16 logits: read into fp32, the gradient formed in fp32 and narrowed once", "[fused][bf16]") {
  using bf16 = Eigen::bfloat16;
  // C > 16: the fp32 logits take the same (sample by sample) path as the widened bf16 ones.
  for (Index C : {Index(17), Index(1000), Index(9000)})
    for (const option_set& o : option_sets) {
      INFO(o.name << ", C = " << C);
      const Index N = 20;
      const matrix<bf16> x = adversarial_logits<float>(C, N, 1).cast<bf16>();
      const matrix<float> widened = x.cast<float>();
      const Eigen::VectorXi t = targets_for(N, C, o.ignore_some);
      const auto opts = options_for<float>(o, C);
      matrix<bf16> g(C, N);
      matrix<float> g_float(C, N);
      const auto loss = xent::cross_entropy_with_grad(x, t, opts, g);
      const auto loss_float = xent::cross_entropy_with_grad(widened, t, opts, g_float);
      static_assert(std::is_same_v<std::decay_t<decltype(loss)>, xent::loss_result<float>>, "bf16 losses come back in fp32");
      // The same fp32 kernel on the same values: the same loss bits, and each gradient entry the
      // fp32 entry rounded once (narrowing twice could differ in the last bf16 bit).
      if (o.reduction == xent::reduction::none)
        expect_same_bits<float>(loss.per_sample(), loss_float.per_sample());
      else
        REQUIRE(loss.value() == loss_float.value());
      const matrix<bf16> narrowed = g_float.cast<bf16>();
      for (Index j = 0; j < N; ++j)
        for (Index k = 0; k < C; ++k) {
          INFO("sample " << j << " class " << k);
          REQUIRE(Eigen::numext::bit_cast<std::uint16_t>(g(k, j)) == Eigen::numext::bit_cast<std::uint16_t>(narrowed(k, j)));
        }
      if (o.reduction == xent::reduction::none) {
        const auto forward = xent::cross_entropy(x, t, opts);
        expect_same_bits<float>(forward.per_sample(), loss.per_sample());
      }
    }
}

TEST_CASE("bf16 logits on a strided class axis give the contiguous axis's bits", "[fused][bf16]") {
  // The strided classes are gathered and widened into the same chunk buffer as contiguous ones.
  const matrix<Eigen::bfloat16> x = xent_test::random_logits<float>(37, 5, 3.0).cast<Eigen::bfloat16>();
  const matrix<Eigen::bfloat16> xt = x.transpose();
  const Eigen::VectorXi t = (Eigen::VectorXi(5) << 0, 36, 7, 18, 2).finished();
  xent::cross_entropy_options opts, strided;
  opts.reduction = strided.reduction = xent::reduction::none;
  strided.dim = 1;
  matrix<Eigen::bfloat16> g(37, 5), gt(5, 37);
  const auto a = xent::cross_entropy_with_grad(x, t, opts, g), b = xent::cross_entropy_with_grad(xt, t, strided, gt);
  for (Index j = 0; j < 5; ++j) REQUIRE(same_bits(a.per_sample()(j), b.per_sample()(j)));
  REQUIRE(matrix<Eigen::bfloat16>(gt.transpose()) == g);
}

}  // namespace

namespace {

/// softcap, z-loss and return_lse from their definitions, in long double, sample by sample.
struct extension_reference {
  std::vector<long double> loss, lse;
};

template <class T>
extension_reference reference_with_extensions(const matrix<T>& x, const Eigen::VectorXi& t, const xent::cross_entropy_options& o) {
  extension_reference r;
  const Index C = x.rows();
  for (Index j = 0; j < x.cols(); ++j) {
    std::vector<long double> z(static_cast<size_t>(C));
    long double m = -INFINITY;
    for (Index k = 0; k < C; ++k) {
      const long double v = x(k, j);
      z[size_t(k)] = o.softcap > 0 ? o.softcap * std::tanh(v / o.softcap) : v;
      m = std::max(m, z[size_t(k)]);
    }
    long double s = 0;
    for (long double v : z) s += std::exp(v - m);
    const long double lse = m + std::log(s);
    auto w = [&](Index k) -> long double { return o.weight.size() ? o.weight(k) : 1.0L; };
    long double loss = 0;
    if (t(j) != o.ignore_index) {
      long double smooth = 0;
      for (Index k = 0; k < C; ++k) smooth += w(k) * (lse - z[size_t(k)]);
      loss = (1 - o.label_smoothing) * w(t(j)) * (lse - z[size_t(t(j))]) + o.label_smoothing / C * smooth +
             o.z_loss * lse * lse;
    }
    r.loss.push_back(loss);
    r.lse.push_back(lse);
  }
  return r;
}

template <class T>
void check_extensions(Index C, Index N, double softcap, double z_loss, const option_set& base) {
  const matrix<T> x = xent_test::random_logits<T>(C, N, 20.0);  // big enough for the cap to bend them
  const Eigen::VectorXi t = targets_for(N, C, base.ignore_some);
  auto opts = options_for<T>(base, C);
  opts.reduction = xent::reduction::none;
  opts.softcap = softcap;
  opts.z_loss = z_loss;
  opts.return_lse = true;
  INFO(base.name << ", C = " << C << ", N = " << N << ", softcap " << softcap << ", z_loss " << z_loss);
  matrix<T> g(C, N);
  const auto got = xent::cross_entropy_with_grad(x, t, opts, g);
  const auto forward = xent::cross_entropy(x, t, opts);
  const extension_reference ref = reference_with_extensions(x, t, opts);
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  for (Index j = 0; j < N; ++j) {
    INFO("sample " << j << ": loss " << got.per_sample()(j) << " vs " << double(ref.loss[size_t(j)]) << ", lse "
                   << got.lse()(j) << " vs " << double(ref.lse[size_t(j)]));
    REQUIRE(std::abs(got.per_sample()(j) - ref.loss[size_t(j)]) <= tol * std::max<long double>(1, std::abs(ref.loss[size_t(j)])));
    REQUIRE(same_bits(forward.per_sample()(j), got.per_sample()(j)));
    if (t(j) >= 0) REQUIRE(std::abs(got.lse()(j) - ref.lse[size_t(j)]) <= tol * std::max<long double>(1, std::abs(ref.lse[size_t(j)])));
  }
  if constexpr (std::is_same_v<T, double>) {
    // The gradient of the summed losses by central differences, on a few entries per sample.
    auto total = [&](const matrix<double>& y) {
      auto o = opts;
      o.reduction = xent::reduction::sum;
      o.return_lse = false;
      return xent::cross_entropy(y, t, o).value();
    };
    for (Index j = 0; j < N; ++j)
      for (Index k : {Index(0), C / 2, C - 1, Index(t(j) >= 0 ? t(j) : 0)}) {
        matrix<double> up = x, down = x;
        const double h = 1e-6 * std::max(1.0, std::abs(x(k, j)));
        up(k, j) += h;
        down(k, j) -= h;
        const double fd = (total(up) - total(down)) / (2 * h);
        INFO("gradient sample " << j << " class " << k << ": " << g(k, j) << " vs finite difference " << fd);
        REQUIRE(std::abs(g(k, j) - fd) <= 1e-6 * std::max(1.0, std::abs(fd)));
      }
  }
}

TEST_CASE("softcap, z_loss and return_lse: against their definitions and finite differences", "[fused][extensions]") {
  for (const option_set& o : option_sets)
    for (Index C : {Index(5), Index(300), Index(5000)})
      for (double softcap : {0.0, 30.0})
        for (double z_loss : {0.0, 1e-3}) {
          check_extensions<double>(C, 7, softcap, z_loss, o);
          check_extensions<float>(C, 7, softcap, z_loss, o);
        }
}

TEST_CASE("softcap, z_loss and return_lse: misuse", "[fused][extensions]") {
  const matrix<double> x = matrix<double>::Random(5, 3);
  const Eigen::VectorXi t = Eigen::VectorXi::Zero(3);
  xent::cross_entropy_options o;
  o.softcap = -1;
  REQUIRE_THROWS_WITH(xent::cross_entropy(x, t, o), Catch::Contains("xent::cross_entropy: softcap must be finite and >= 0"));
  o.softcap = 0;
  o.z_loss = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(xent::cross_entropy(x, t, o), Catch::Contains("z_loss must be finite and >= 0"));
  o.z_loss = 1e-4;
  o.softcap = 5;
  o.dim = 1;
  // dim = 1 on column-major storage: the classes run along strided rows, into the same chunk buffer.
  const matrix<double> xt = x.transpose();
  REQUIRE(xent::cross_entropy(x, Eigen::VectorXi::Zero(5).eval(), o).value() ==
          xent::cross_entropy(xt, Eigen::VectorXi::Zero(5).eval(), [&] { auto c = o; c.dim = 0; return c; }()).value());
  o.softcap = 0;
  o.dim = 0;
  REQUIRE_THROWS_WITH(xent::cross_entropy(x, xent::softmax(x), o), Catch::Contains("must be class indices for softcap"));
  o.z_loss = 0;
  const auto plain = xent::cross_entropy(x, t, o);
  REQUIRE_THROWS_WITH(plain.lse(), Catch::Contains("return_lse must be true"));
}

}  // namespace
