// A language-model head trained without its logits: xent::linear_cross_entropy_with_grad over a
// torch-style hidden state [N, D] and an nn.Linear weight [V, D], both read in place, with padding
// (ignore_index), label smoothing, PaLM's z-loss and Gemma 2's soft-cap. A few SGD steps on the
// weight; the first step's loss is checked against cross_entropy on the materialised logits.

#include <xent/xent.hpp>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

int main() {
  const Eigen::Index N = 96, D = 32, V = 5000;  // samples (tokens), hidden size, vocabulary
  std::vector<float> hidden_buf(std::size_t(N * D)), weight_buf(std::size_t(V * D));
  for (std::size_t i = 0; i < hidden_buf.size(); ++i) hidden_buf[i] = float(std::sin(0.7 * double(i)));
  for (std::size_t i = 0; i < weight_buf.size(); ++i) weight_buf[i] = 0.2f * float(std::cos(1.3 * double(i)));
  std::vector<std::int64_t> labels(static_cast<std::size_t>(N));
  for (Eigen::Index j = 0; j < N; ++j) labels[std::size_t(j)] = j % 8 == 7 ? -100 : (j * 131) % V;  // -100: padding

  Eigen::Map<const Eigen::MatrixXf> hidden(hidden_buf.data(), D, N);  // torch [N, D], one token per column
  Eigen::Map<Eigen::MatrixXf> weight(weight_buf.data(), D, V);        // torch nn.Linear(D, V).weight, [V, D]
  Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> targets(labels.data(), N);

  xent::linear_cross_entropy_options opts;  // the shape tells the layout (D x V here)
  opts.label_smoothing = 0.1;
  opts.z_loss = 1e-4;   // + 1e-4 * logsumexp^2 per token
  opts.softcap = 30;    // logits become 30 * tanh(logits / 30)

  // The same loss on materialised logits, for comparison (what the fused call never allocates).
  {
    const Eigen::MatrixXf x = weight.transpose() * hidden;  // V x N
    const Eigen::MatrixXf z = (x.array() / 30.0f).tanh() * 30.0f;
    xent::cross_entropy_options ce;
    ce.label_smoothing = 0.1;
    ce.reduction = xent::reduction::none;
    const Eigen::VectorXf ce_per_token = xent::cross_entropy(z, targets, ce).per_sample();
    const Eigen::VectorXf lse = xent::logsumexp(z);
    double total = 0;
    int kept = 0;
    for (Eigen::Index j = 0; j < N; ++j)
      if (targets(j) != -100) {
        total += ce_per_token(j) + 1e-4 * lse(j) * lse(j);
        ++kept;
      }
    std::cout << "materialised logits (" << V * N * 4 / 1024 << " KiB): loss " << total / kept << '\n';
  }

  Eigen::MatrixXf grad_hidden(D, N), grad_weight(D, V);
  for (int step = 0; step < 5; ++step) {
    const float loss = xent::linear_cross_entropy_with_grad(hidden, weight, targets, 1.0f, opts, grad_hidden, grad_weight)
                           .loss.value();
    std::cout << "step " << step << ": fused loss " << loss << ", |grad_weight| " << grad_weight.norm() << '\n';
    weight -= 2.0f * grad_weight;  // plain SGD on the classifier
  }
  std::cout << "padding tokens get zero gradient: |grad_hidden[:, 7]| = " << grad_hidden.col(7).norm() << '\n';
}
