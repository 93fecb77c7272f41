// Data parallelism with the exact token mean: each rank holds a contiguous share of the batch (the
// shares uneven), adds its mean_denominator into one xent::parallel::allreduce_sum, and calls
// cross_entropy_with_grad with that total as the normalizer. The ranks' losses then sum to the one
// process's weighted mean (to 4 ulp of float), and every rank's gradient columns are the one
// process's, bit for bit. Run on 2 and 3 ranks by CTest (mpi.data_parallel_mean.np*).

#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include "mpi_check.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>

int main(int argc, char** argv) {
  xent_test::mpi_checks checks(&argc, &argv);
  const int rank = checks.rank, ranks = checks.ranks;
  auto expect = [&](bool ok, const char* what) { checks.expect(ok, what); };

  // The same batch on every rank (same seed): the one process's answer is computed on each.
  const Eigen::Index C = 257, N = 1001;
  std::mt19937_64 rng(1602);
  std::normal_distribution<double> normal(0, 3);
  std::uniform_real_distribution<double> uniform(0, 2);
  Eigen::MatrixXf logits(C, N);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits.data()[i] = float(normal(rng));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets(N);
  xent::cross_entropy_options whole;
  whole.label_smoothing = 0.1;
  whole.weight = Eigen::VectorXd::Constant(C, 1.0);
  whole.weight.head(10).setConstant(0.5);
  whole.sample_weight.resize(N);
  whole.mask.resize(N);
  for (Eigen::Index j = 0; j < N; ++j) {
    targets(j) = j % 11 == 0 ? -100 : std::int64_t(rng() % std::uint64_t(C));
    whole.sample_weight(j) = uniform(rng);
    whole.mask(j) = j % 7 != 3;
  }
  Eigen::MatrixXf g_whole(C, N);
  const float one_process = xent::cross_entropy_with_grad(logits, targets, whole, g_whole).value();

  // Rank r's share: [begin, end), the first ranks one sample longer.
  const Eigen::Index base = N / ranks, extra = N % ranks;
  const Eigen::Index begin = rank * base + std::min<Eigen::Index>(rank, extra);
  const Eigen::Index n = base + (rank < extra ? 1 : 0);
  xent::cross_entropy_options mine = whole;
  mine.sample_weight = whole.sample_weight.segment(begin, n);
  mine.mask = whole.mask.segment(begin, n);
  const auto my_targets = targets.segment(begin, n);
  double denominator = xent::mean_denominator(my_targets, mine);
  xent::parallel::allreduce_sum(&denominator, 1, MPI_COMM_WORLD);
  mine.normalizer = denominator;
  Eigen::MatrixXf g_mine(C, n);
  double loss = xent::cross_entropy_with_grad(logits.middleCols(begin, n), my_targets, mine, g_mine).value();
  xent::parallel::allreduce_sum(&loss, 1, MPI_COMM_WORLD);

  const double ulp = double(std::numeric_limits<float>::epsilon()) * std::fabs(double(one_process));
  expect(std::fabs(loss - double(one_process)) <= 4 * ulp, "the ranks' losses sum to the one process's mean");
  expect((g_mine.array() == g_whole.middleCols(begin, n).array()).all(), "each rank's gradient is the one process's");
  expect(std::fabs(denominator - xent::mean_denominator(targets, whole)) <= 1e-12 * denominator,
         "the allreduced denominator is the whole batch's");
  if (rank == 0)
    std::printf("data-parallel mean over %d ranks: %.9g vs one process %.9g (%.2f ulp)\n", ranks, loss, double(one_process),
                std::fabs(loss - double(one_process)) / ulp);

  return checks.finish("data_parallel_mean");
}
