// The README's example, run: cross-entropy with label smoothing over a torch-style [N, C] buffer, its
// gradient into our own buffer, and a finite-difference look at one entry of that gradient.

#include <xent/xent.hpp>

#include <iostream>
#include <vector>

int main() {
  const int N = 4, C = 6;
  std::vector<float> buffer(N * C);
  for (int i = 0; i < N * C; ++i) buffer[i] = float((i * 7) % 11) / 3.0f - 1.5f;
  std::vector<int> labels = {0, 5, 2, 3};

  Eigen::Map<const Eigen::MatrixXf> logits(buffer.data(), C, N);  // torch [N, C] memory, read in place (dim = 0)
  Eigen::Map<const Eigen::VectorXi> targets(labels.data(), N);    // one class index per sample
  xent::cross_entropy_options opts;                                // torch's names and defaults
  opts.label_smoothing = 0.1;
  const float loss = xent::cross_entropy(logits, targets, opts).value();
  Eigen::MatrixXf grad(C, N);
  xent::cross_entropy_backward(logits, targets, 1.0f, opts, grad);  // d loss / d logits

  std::cout << "cross_entropy (mean, label_smoothing 0.1) = " << loss << '\n';
  std::cout << "gradient (one sample per column):\n" << grad << '\n';
  std::cout << "each column sums to " << grad.colwise().sum() << "  (softmax - smoothed target: 0)\n";

  // Nudge one logit and watch the loss move by about the gradient.
  std::vector<float> nudged = buffer;
  const float h = 1e-2f;
  nudged[2 * C + 2] += h;
  const float loss_nudged =
      xent::cross_entropy(Eigen::Map<const Eigen::MatrixXf>(nudged.data(), C, N), targets, opts).value();
  std::cout << "d loss / d logit[2][2]: analytic " << grad(2, 2) << ", finite difference " << (loss_nudged - loss) / h << '\n';
}
