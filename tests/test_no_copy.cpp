// A Map over a caller's torch-style [N, C] buffer is read and written in place: with Eigen's
// run-time malloc check on, any hidden temporary of the logits would abort this program (the
// kernels allocate nothing). cross_entropy keeps O(N) per-sample losses (so that its sum does not
// depend on the thread count) and O(C) weights in the logits' type: every allocation it makes is
// recorded by the operator new below and must stay far below the logits' size.

#undef NDEBUG  // eigen_assert must be live for EIGEN_RUNTIME_NO_MALLOC to check anything
#define EIGEN_RUNTIME_NO_MALLOC
#include <xent/xent.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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
  const float loss = xent::cross_entropy(x, t, ce).value();
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

  // The row holds 97-periodic values; its log-sum-exp is the same for every sample up to the phase.
  const bool finite = out.allFinite() && p.allFinite() && std::isfinite(loss);
  std::printf("kernels: no allocation; cross_entropy: largest allocation %zu bytes (logits %zu); lse[0] = %.6f, sum of softmax(log_softmax) = %.6f\n",
              largest_allocation, logits.size() * sizeof(float), double(out(0)), sum);
  return finite && sum > 0.999 && sum < 1.001 ? 0 : 1;
}
