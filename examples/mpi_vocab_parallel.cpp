// A vocabulary sharded over MPI ranks: each rank holds the logits of its own slice of a 32000-class
// vocabulary, and one MPI_Allreduce per step gives every rank the cross-entropy loss and the
// gradient of its own slice. Run with `mpiexec -n 2 example_mpi_vocab_parallel` (any rank count works).
//
// Then the evaluation side of data parallelism: per-rank accumulators (NLL sum, token count) summed
// over the ranks in one collective with allreduce_sum.

#include <xent/parallel/mpi.hpp>  // not in <xent/xent.hpp>: link xent::mpi
#include <xent/xent.hpp>

#include <mpi.h>

#include <cmath>
#include <cstdio>

namespace {

// The logit of class k for token j: any deterministic function will do, so that every rank can
// make its own slice without seeing the others (and rank 0 the whole matrix, to compare).
float logit(Eigen::Index k, Eigen::Index j) {
  return 3.0f * std::sin(0.37f * float(k) + 1.3f * float(j)) + 0.5f * std::cos(0.011f * float(k * (j + 1)));
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  const Eigen::Index vocabulary = 32000, tokens = 8;
  // Rank r holds classes [begin, begin + size): the balanced split. Checked once, collectively.
  const xent::parallel::vocab_shard shard = xent::parallel::even_shard(vocabulary, MPI_COMM_WORLD);
  xent::parallel::validate_shards(shard, MPI_COMM_WORLD);

  // This rank's rows of the vocabulary x tokens logits (torch's [tokens, vocabulary] memory, sliced
  // along the vocabulary): the only logits this rank ever stores.
  Eigen::MatrixXf local(shard.size, tokens);
  for (Eigen::Index j = 0; j < tokens; ++j)
    for (Eigen::Index k = 0; k < shard.size; ++k) local(k, j) = logit(shard.begin + k, j);

  Eigen::VectorXi targets(tokens);  // global class indices, the same on every rank
  targets << 17, 31999, 4242, -100, 16000, 0, 123, 27182;  // -100: a padding token, ignored
  xent::cross_entropy_options opts;
  opts.label_smoothing = 0.1;

  Eigen::MatrixXf grad_local(shard.size, tokens);
  const float loss =
      xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, opts, MPI_COMM_WORLD, grad_local).value();

  for (int r = 0; r < ranks; ++r) {
    if (r == rank)
      std::printf("rank %d: classes [%ld, %ld), %ld KiB of logits, loss %.7f\n", rank, long(shard.begin),
                  long(shard.begin + shard.size), long(local.size() * sizeof(float) / 1024), loss);
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
  }

  // Each gradient column (softmax - smoothed target) sums to 0 over the whole vocabulary: add up the
  // ranks' partial column sums to see it.
  Eigen::VectorXd column_sums = grad_local.cast<double>().colwise().sum().transpose();
  xent::parallel::allreduce_sum(column_sums, MPI_COMM_WORLD);

  if (rank == 0) {
    Eigen::MatrixXf whole(vocabulary, tokens);
    for (Eigen::Index j = 0; j < tokens; ++j)
      for (Eigen::Index k = 0; k < vocabulary; ++k) whole(k, j) = logit(k, j);
    const float single = xent::cross_entropy(whole, targets, opts).value();
    std::printf("one process on the whole logits: %.7f (difference %.1e)\n", single, double(loss - single));
    std::printf("gradient column sums over all ranks (0 up to rounding): %s\n", column_sums.cwiseAbs().maxCoeff() < 1e-5 ? "ok" : "WRONG");
  }

  // Data-parallel evaluation: each rank scores its own batches and keeps running sums; one
  // collective adds them up. (Here rank r pretends to have scored r + 1 batches like the one above.)
  const double batch_tokens = 7;  // the non-ignored targets above
  double accumulators[2] = {double(loss) * batch_tokens * (rank + 1), batch_tokens * (rank + 1)};  // NLL sum, tokens
  xent::parallel::allreduce_sum(accumulators, 2, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("evaluation over %d ranks: %.0f tokens, mean NLL %.7f\n", ranks, accumulators[1], accumulators[0] / accumulators[1]);

  MPI_Finalize();
}
