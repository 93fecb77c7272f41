// Distillation with each divergence: a small linear student (W: C x D) learns a fixed teacher's
// distributions over C classes from D-dimensional inputs, by gradient descent on
// xent::distillation_loss_with_grad, once per kind (forward KL, reverse KL, JSD, TVD) at temperature
// 2, the soft term mixed with the cross-entropy on hard labels (alpha = 0.7; the labels are the
// teacher's argmax, one in eight left out with ignore_index, which drops the sample from both
// terms). The loss printed every 50 steps goes down; the last column is the forward KL reached at
// T = 2, the same yardstick for every kind.

#include <xent/xent.hpp>

#include <cstdio>
#include <random>

int main() {
  const int N = 256, D = 16, C = 40, steps = 200;
  Eigen::setNbThreads(1);  // small GEMMs: one thread (an OpenMP team would cost more than it saves)
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Eigen::MatrixXf x(D, N), teacher_w(C, D);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (int i = 0; i < teacher_w.size(); ++i) teacher_w.data()[i] = 1.5f * normal(rng);
  const Eigen::MatrixXf teacher = teacher_w * x;  // C x N teacher logits, one sample per column

  Eigen::VectorXi labels(N);
  for (int j = 0; j < N; ++j) {
    Eigen::Index best;
    teacher.col(j).maxCoeff(&best);
    labels(j) = j % 8 == 7 ? -100 : int(best);  // -100: distillation_options::ignore_index
  }

  for (auto kind : {xent::divergence_kind::forward_kl, xent::divergence_kind::reverse_kl, xent::divergence_kind::jsd,
                    xent::divergence_kind::tvd}) {
    xent::distillation_options opts;
    opts.kind = kind;
    opts.temperature = 2;  // Hinton's T^2 (scale_by_temperature_squared, on by default) keeps the gradients of T = 1's size
    opts.alpha = 0.7;      // 0.7 of the soft term, 0.3 of the cross-entropy on the labels
    opts.num_threads = 1;  // a small problem: threads would cost more than they save
    xent::divergence_options yardstick;
    yardstick.temperature = 2;

    Eigen::MatrixXf w = Eigen::MatrixXf::Zero(C, D), grad(C, N);
    const float rate = kind == xent::divergence_kind::tvd ? 2.0f : 1.0f;
    std::printf("%-10s", xent::to_string(kind));
    float first = 0, last = 0;
    for (int step = 0; step <= steps; ++step) {
      const Eigen::MatrixXf student = w * x;
      const float loss = xent::distillation_loss_with_grad(student, teacher, labels, opts, grad).value();  // batchmean
      if (step == 0) first = loss;
      last = loss;
      if (step % 50 == 0) std::printf("  step %3d: %.4f", step, loss);
      w -= rate * grad * x.transpose();  // d loss / d W = d loss / d logits * x^T
    }
    const float kl = xent::divergence(Eigen::MatrixXf(w * x), teacher, yardstick).value();
    std::printf("   forward KL now %.4f\n", kl);
    if (!(last < 0.5f * first)) {
      std::printf("the %s loss did not halve\n", xent::to_string(kind));
      return 1;
    }
  }
  return 0;
}
