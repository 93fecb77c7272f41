// A Map over a caller's torch-style [N, C] buffer is read and written in place: with Eigen's
// run-time malloc check on, any hidden temporary of the logits would abort this program (the
// kernels allocate nothing). cross_entropy keeps O(N) per-sample losses (so that its sum does not
// depend on the thread count) and O(C) weights in the logits' type: every allocation it makes is
// recorded by the operator new below and must stay far below the logits' size; so must every
// allocation of every other loss, forward and with its gradient.

#undef NDEBUG  // eigen_assert must be live for EIGEN_RUNTIME_NO_MALLOC to check anything
#define EIGEN_RUNTIME_NO_MALLOC
#include <xent/xent.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
// These are the replacement operators themselves: malloc and free are their right pair.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
bool recording = false;
std::size_t largest_allocation = 0;
}  // namespace

void* operator new(std::size_t size) {
  if (recording && size > largest_allocation) largest_allocation = size;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

int main() {
  const int samples = 64, classes = 50000;
  std::vector<float> logits(std::size_t(samples) * classes), probs(logits.size()), lse(samples);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = float(int(i % 97) - 48) / 8.0f;

  Eigen::Map<const Eigen::MatrixXf> x(logits.data(), classes, samples);
  Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> x_rows(logits.data(), samples, classes);
  Eigen::Map<Eigen::MatrixXf> p(probs.data(), classes, samples);
  Eigen::Map<Eigen::VectorXf> out(lse.data(), samples);

  std::vector<int> targets(samples);
  for (int j = 0; j < samples; ++j) targets[std::size_t(j)] = (j * 7919) % classes;
  const Eigen::Map<const Eigen::VectorXi> t(targets.data(), samples);
  Eigen::internal::set_is_malloc_allowed(false);
  xent::logsumexp_into(x, out);
  xent::logsumexp_into(x_rows, out, 1);
  xent::softmax_into(x, p);
  xent::log_softmax_into(x_rows, Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(probs.data(), samples, classes), 1);
  xent::softmax_into(p, p);
  const double sum = p.col(0).cast<double>().sum();  // checked below; p is reused for the gradient
  Eigen::internal::set_is_malloc_allowed(true);
  // cross_entropy forward (mean), backward and forward + gradient on the same buffers: nothing of
  // the logits' size is made, only O(N) + O(C).
  recording = true;
  xent::cross_entropy_options ce;
  ce.label_smoothing = 0.1;
  ce.weight = Eigen::VectorXd::Ones(classes);
  const float loss = xent::cross_entropy(x, t, ce).value();  // (the largest allocation is kept across the runs below)
  xent::cross_entropy_backward(x, t, 1.0f, ce, p);
  (void)xent::cross_entropy_with_grad(x, t, ce, p);
  ce.dim = 1;
  xent::cross_entropy_backward(x_rows, t, 1.0f, ce,
                               Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(probs.data(), samples, classes));
  recording = false;
  // The weights in float are C floats; the per-sample losses N; nothing near N x C.
  const std::size_t limit = std::max<std::size_t>(classes, samples) * sizeof(double);
  if (largest_allocation > limit) {
    std::printf("cross_entropy allocated %zu bytes at once (limit %zu; the logits are %zu)\n", largest_allocation, limit,
                logits.size() * sizeof(float));
    return 1;
  }

  // Every other loss, forward and with its gradient, on the caller's buffers: each allocation stays
  // O(N) + O(C) (per-sample losses, block sums, weights), never of the logits' size.
  std::vector<float> second(logits.size());
  for (std::size_t i = 0; i < second.size(); ++i) second[i] = float(int(i % 89)) / 89.0f;  // in [0, 1)
  Eigen::Map<const Eigen::MatrixXf> y(second.data(), classes, samples);  // probabilities, targets, teacher logits
  struct loss_run {
    const char* name;
    std::function<float()> call;
  };
  xent::binary_cross_entropy_with_logits_options<float> bcel;
  bcel.pos_weight = Eigen::VectorXf::Constant(classes, 2.0f);
  xent::binary_cross_entropy_options<float> bce;
  xent::kl_div_options kl;
  kl.reduction = xent::reduction::batchmean;
  xent::sigmoid_focal_loss_options sfocal;
  sfocal.reduction = xent::reduction::mean;
  xent::distillation_options kd;
  kd.temperature = 2;
  xent::distillation_options kd_mixed = kd;
  kd_mixed.alpha = 0.5;
  xent::cross_entropy_options plain;
  xent::divergence_options jsd, tvd;
  jsd.kind = xent::divergence_kind::jsd;
  tvd.kind = xent::divergence_kind::tvd;
  tvd.temperature = 2;
  // A top-k teacher of x: 64 distinct classes per sample, its logits there and its full lse.
  xent::topk_teacher<int, float> top;
  top.indices.resize(64, samples);
  top.values.resize(64, samples);
  top.lse = out;
  for (int j = 0; j < samples; ++j)
    for (int i = 0; i < 64; ++i) {
      top.indices(i, j) = (j * 13 + i * 701) % classes;
      top.values(i, j) = x(top.indices(i, j), j);
    }
  std::vector<float> teacher_grad(logits.size());
  Eigen::Map<Eigen::MatrixXf> gt(teacher_grad.data(), classes, samples);
  const loss_run runs[] = {
      {"cross_entropy (probability targets)", [&] { return xent::cross_entropy(x, y, plain).value(); }},
      {"cross_entropy_with_grad (probability targets)", [&] { return xent::cross_entropy_with_grad(x, y, plain, p).value(); }},
      {"nll_loss_with_grad", [&] { return xent::nll_loss_with_grad(x, t, {}, p).value(); }},
      {"binary_cross_entropy_with_logits", [&] { return xent::binary_cross_entropy_with_logits(x, y, bcel).value(); }},
      {"binary_cross_entropy_with_logits_with_grad", [&] { return xent::binary_cross_entropy_with_logits_with_grad(x, y, bcel, p).value(); }},
      {"binary_cross_entropy_with_grad", [&] { return xent::binary_cross_entropy_with_grad(y, y, bce, p).value(); }},
      {"kl_div_with_grad", [&] { return xent::kl_div_with_grad(x, y, kl, p).value(); }},
      {"sigmoid_focal_loss_with_grad", [&] { return xent::sigmoid_focal_loss_with_grad(x, y, sfocal, p).value(); }},
      {"softmax_focal_loss_with_grad", [&] { return xent::softmax_focal_loss_with_grad(x, t, {}, p).value(); }},
      {"generalized_cross_entropy_with_grad", [&] { return xent::generalized_cross_entropy_with_grad(x, t, {}, p).value(); }},
      {"distillation_loss_with_grad", [&] { return xent::distillation_loss_with_grad(x, y, kd, p).value(); }},
      {"distillation_loss_with_grad (with hard targets)", [&] { return xent::distillation_loss_with_grad(x, y, t, kd_mixed, p).value(); }},
      {"softmax_hvp_into", [&] { xent::softmax_hvp_into(x, y, p); return p(0, 0); }},
      {"entropy_from_logits_with_grad", [&] { return xent::entropy_from_logits_with_grad(x, {}, p)(0); }},
      {"divergence (jsd)", [&] { return xent::divergence(x, y, jsd).value(); }},
      {"divergence_with_grad (forward_kl)", [&] { return xent::divergence_with_grad(x, y, {}, p).value(); }},
      {"divergence_with_grad (tvd, both gradients)", [&] { return xent::divergence_with_grad(x, y, tvd, p, gt).value(); }},
      {"topk_divergence (jsd)", [&] { return xent::topk_divergence(x, top, jsd).value(); }},
      {"topk_divergence_with_grad (forward_kl)", [&] { return xent::topk_divergence_with_grad(x, top, {}, p).value(); }},
  };
  bool all_finite = true;
  for (const loss_run& r : runs) {
    largest_allocation = 0;
    recording = true;
    const float value = r.call();
    recording = false;
    all_finite = all_finite && std::isfinite(value) && p.allFinite();
    if (largest_allocation > limit) {
      std::printf("%s allocated %zu bytes at once (limit %zu; the logits are %zu)\n", r.name, largest_allocation, limit,
                  logits.size() * sizeof(float));
      return 1;
    }
    std::printf("%s: largest allocation %zu bytes\n", r.name, largest_allocation);
  }
  if (!all_finite) {
    std::printf("a loss gave a non-finite value or gradient on finite inputs\n");
    return 1;
  }

  // The row holds 97-periodic values; its log-sum-exp is the same for every sample up to the phase.
  const bool finite = out.allFinite() && p.allFinite() && std::isfinite(loss);
  std::printf("kernels: no allocation; cross_entropy: largest allocation %zu bytes (logits %zu); lse[0] = %.6f, sum of softmax(log_softmax) = %.6f\n",
              largest_allocation, logits.size() * sizeof(float), double(out(0)), sum);
  return finite && sum > 0.999 && sum < 1.001 ? 0 : 1;
}
