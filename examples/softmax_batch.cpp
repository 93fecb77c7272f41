// The softmax, log-softmax and log-sum-exp of a batch of logits that lives in someone else's buffer,
// laid out as torch lays out [N, C]: each sample's C logits contiguous. No copy is made.

#include <xent/xent.hpp>

#include <iostream>
#include <vector>

int main() {
  const int samples = 3, classes = 5;
  std::vector<float> logits = {
      2.0f, 1.0f, 0.1f, -1.0f, 0.5f,   // sample 0
      1e30f, 0.0f, -1e30f, 3.0f, 2.0f,  // sample 1: huge logits stay finite
      0.0f, 0.0f, 0.0f, 0.0f, 0.0f,     // sample 2: uniform, log-sum-exp = log 5
  };
  // Classes down each column (dim = 0, the default): the contiguous axis.
  Eigen::Map<const Eigen::MatrixXf> x(logits.data(), classes, samples);

  std::cout << "log-sum-exp per sample:\n" << xent::logsumexp(x).transpose() << "\n\n";
  std::cout << "softmax (one sample per column):\n" << xent::softmax(x) << "\n\n";
  std::cout << "log_softmax:\n" << xent::log_softmax(x) << "\n\n";

  // The same buffer seen as torch sees it, N x C row-major, classes along each row: dim = 1.
  Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> torch_view(logits.data(), samples, classes);
  std::cout << "log-sum-exp through the [N, C] view: " << xent::logsumexp(torch_view, 1).transpose() << '\n';
  std::cout << "log(5) = " << std::log(5.0f) << '\n';
}
