// MPI consumer smoke test: built against xent::mpi by the consumer projects that have MPI, run on 2
// ranks. Each rank holds half of a 7-class vocabulary; the sharded loss must match the
// single-process one, and allreduce_sum must add the ranks' counts. Exits non-zero on any mismatch.
#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  const Eigen::Index C = 7, N = 3;
  Eigen::MatrixXd logits(C, N);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits.data()[i] = std::sin(double(i)) * 4;
  Eigen::VectorXi targets(N);
  targets << 1, 6, 3;
  const auto shard = xent::parallel::even_shard(C, MPI_COMM_WORLD);
  xent::parallel::validate_shards(shard, MPI_COMM_WORLD);
  const Eigen::MatrixXd local = logits.middleRows(shard.begin, shard.size);
  const double sharded = xent::parallel::vocab_parallel_cross_entropy(local, targets, shard, {}, MPI_COMM_WORLD).value();
  const double single = xent::cross_entropy(logits, targets).value();
  const bool loss_ok = std::abs(sharded - single) <= 1e-14 * std::abs(single);

  long long tokens[1] = {10 + rank};
  xent::parallel::allreduce_sum(tokens, 1, MPI_COMM_WORLD);
  const bool sum_ok = tokens[0] == 10LL * ranks + ranks * (ranks - 1) / 2;

  std::printf("rank %d of %d: classes [%ld, %ld), loss %.17g (one process: %.17g) %s, token sum %lld %s\n", rank, ranks,
              long(shard.begin), long(shard.begin + shard.size), sharded, single, loss_ok ? "ok" : "FAIL", tokens[0],
              sum_ok ? "ok" : "FAIL");
  MPI_Finalize();
  return loss_ok && sum_ok ? 0 : 1;
}
