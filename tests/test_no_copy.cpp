// A Map over a caller's torch-style [N, C] buffer is read and written in place: with Eigen's
// run-time malloc check on, any hidden temporary of the logits would abort this program.

#undef NDEBUG  // eigen_assert must be live for EIGEN_RUNTIME_NO_MALLOC to check anything
#define EIGEN_RUNTIME_NO_MALLOC
#include <xent/xent.hpp>

#include <cstdio>
#include <vector>

int main() {
  const int samples = 64, classes = 50000;
  std::vector<float> logits(std::size_t(samples) * classes), probs(logits.size()), lse(samples);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = float(int(i % 97) - 48) / 8.0f;

  Eigen::Map<const Eigen::MatrixXf> x(logits.data(), classes, samples);
  Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> x_rows(logits.data(), samples, classes);
  Eigen::Map<Eigen::MatrixXf> p(probs.data(), classes, samples);
  Eigen::Map<Eigen::VectorXf> out(lse.data(), samples);

  Eigen::internal::set_is_malloc_allowed(false);
  xent::logsumexp_into(x, out);
  xent::logsumexp_into(x_rows, out, 1);
  xent::softmax_into(x, p);
  xent::log_softmax_into(x_rows, Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(probs.data(), samples, classes), 1);
  xent::softmax_into(p, p);
  Eigen::internal::set_is_malloc_allowed(true);

  // The row holds 97-periodic values; its log-sum-exp is the same for every sample up to the phase.
  const bool finite = out.allFinite() && p.allFinite();
  const double sum = p.col(0).cast<double>().sum();
  std::printf("no allocation; lse[0] = %.6f, sum of softmax(log_softmax) = %.6f\n", double(out(0)), sum);
  return finite && sum > 0.999 && sum < 1.001 ? 0 : 1;
}
