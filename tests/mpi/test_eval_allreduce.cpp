// Data-parallel evaluation over MPI: each rank evaluates its own share of the samples, and one
// xent::parallel::allreduce_sum of the accumulators' flat state gives every rank the report of the
// whole set, the same as one process evaluating everything (counts exactly, sums to rounding).
// Run on 2 and 3 ranks by CTest (mpi.eval_allreduce.np*).

#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include "mpi_check.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace {

bool close(double a, double b) { return std::fabs(a - b) <= 1e-12 * std::max(1.0, std::fabs(b)); }

}  // namespace

int main(int argc, char** argv) {
  xent_test::mpi_checks checks(&argc, &argv);
  const int rank = checks.rank, ranks = checks.ranks;
  auto expect = [&](bool ok, const char* what) { checks.expect(ok, what); };

  // The same data on every rank (same seed); rank r evaluates samples r, r + ranks, ...
  const Eigen::Index C = 50, N = 999;
  std::mt19937_64 rng(4242);
  std::normal_distribution<double> normal(0, 2.5);
  Eigen::MatrixXf logits(C, N);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits.data()[i] = float(normal(rng));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 13 == 0 ? -100 : std::int64_t(rng() % std::uint64_t(C));

  xent::eval_options opts;
  opts.bins = 12;
  opts.top_k = 3;
  xent::eval_accumulator whole(opts), mine(opts);
  whole.update(logits, targets);
  Eigen::VectorXi my_samples = Eigen::VectorXi::Zero(N);
  for (Eigen::Index j = rank; j < N; j += ranks) my_samples(j) = 1;
  mine.update(logits, targets, my_samples);
  const double my_count = mine[xent::eval_accumulator::samples];

  xent::parallel::allreduce_sum(mine, MPI_COMM_WORLD);

  const xent::eval_report a = whole.report(), b = mine.report();
  // The mask counts the other ranks' samples as ignored on every rank: ignored sums to (ranks - 1) N
  // plus the ignore_index ones, so compare what was evaluated.
  expect(b.samples == a.samples, "samples");
  expect(my_count < double(a.samples) || ranks == 1, "each rank evaluated a share only");
  expect(b.accuracy == a.accuracy && b.top_k_accuracy == a.top_k_accuracy, "hit counts are exact");
  for (std::size_t k = 0; k < a.bins.size(); ++k) expect(b.bins[k].count == a.bins[k].count, "bin counts are exact");
  expect(close(b.nll, a.nll) && close(b.nll_stderr, a.nll_stderr), "NLL and its standard error");
  expect(close(b.brier, a.brier) && close(b.ece, a.ece) && close(b.mean_confidence, a.mean_confidence), "Brier, ECE");

  // temperature_sums reduce the same way (six packed doubles).
  xent::temperature_sums sums;
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> my_targets = targets;
  for (Eigen::Index j = 0; j < N; ++j)
    if (my_samples(j) == 0) my_targets(j) = -100;
  xent::add_temperature_sums(logits, my_targets, 1.5, {}, sums);
  MPI_Allreduce(MPI_IN_PLACE, &sums, int(sizeof sums / sizeof(double)), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  xent::temperature_sums all;
  xent::add_temperature_sums(logits, targets, 1.5, {}, all);
  expect(sums.samples == all.samples && sums.weight == all.weight && close(sums.nll, all.nll) && close(sums.gradient, all.gradient), "temperature_sums");

  return checks.finish("eval_allreduce");
}
