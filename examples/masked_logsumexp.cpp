// A masked row (attention-style -inf entries), and a vocabulary split in two shards whose partial
// log-sum-exps merge into the whole, the way threads or MPI ranks combine their shares.

#include <xent/xent.hpp>

#include <iostream>
#include <limits>

int main() {
  const float masked = -std::numeric_limits<float>::infinity();
  Eigen::VectorXf row(6);
  row << 0.5f, masked, 2.0f, masked, -1.0f, masked;

  std::cout << "logits:       " << row.transpose() << '\n';
  std::cout << "log-sum-exp:  " << xent::logsumexp(row)(0) << "  (masked entries contribute nothing)\n";
  std::cout << "softmax:      " << xent::softmax(row).transpose() << "  (exactly 0 where masked)\n";

  Eigen::VectorXf all_masked = Eigen::VectorXf::Constant(3, masked);
  std::cout << "fully masked: log-sum-exp " << xent::logsumexp(all_masked)(0) << ", softmax "
            << xent::softmax(all_masked).transpose() << "  (torch's convention)\n\n";

  // Two shards of a 10-class vocabulary, as two ranks would hold them.
  Eigen::VectorXf vocabulary = Eigen::VectorXf::LinSpaced(10, -3.0f, 6.0f);
  const auto shard0 = xent::logsumexp_partials(vocabulary.head(4))[0];
  const auto shard1 = xent::logsumexp_partials(vocabulary.tail(6))[0];
  const auto merged = xent::merge(shard0, shard1);
  std::cout << "shard partials (max, sum): (" << shard0.max << ", " << shard0.sum << ") and (" << shard1.max << ", "
            << shard1.sum << ")\n";
  std::cout << "merged log-sum-exp " << merged.value() << " = whole " << xent::logsumexp(vocabulary)(0) << '\n';
}
