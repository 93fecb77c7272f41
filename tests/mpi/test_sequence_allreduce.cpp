// Data-parallel per-sequence perplexity over MPI: each rank adds its own contiguous share of the
// token stream (shares that cut sequences in two), extend_to() gives every rank the same state
// size, and one xent::parallel::allreduce_sum of sequence_accumulator's flat state gives every rank
// the report of the whole stream, the same as one process (counts and the worst sequence exactly,
// sums to rounding). Both kinds of sequences: a sequence_length and given lengths, with weights.
// Run on 2 and 3 ranks by CTest (mpi.sequence_allreduce.np*).

#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include "mpi_check.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

bool close(double a, double b) { return std::fabs(a - b) <= 1e-12 * std::max(1.0, std::fabs(b)); }

}  // namespace

int main(int argc, char** argv) {
  xent_test::mpi_checks checks(&argc, &argv);
  const int rank = checks.rank, ranks = checks.ranks;
  auto expect = [&](bool ok, const std::string& what) { checks.expect(ok, what.c_str()); };

  // The same data on every rank (same seed).
  const Eigen::Index C = 40, N = 1000, T = 25;
  std::mt19937_64 rng(777);
  std::normal_distribution<double> normal(0, 2.0);
  Eigen::MatrixXf logits(C, N);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits.data()[i] = float(normal(rng));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 11 == 0 ? -100 : std::int64_t(rng() % std::uint64_t(C));
  // Sequence 3 (tokens 75..99) all ignored: an empty sequence on every split.
  for (Eigen::Index j = 3 * T; j < 4 * T; ++j) targets(j) = -100;
  Eigen::VectorXd weights(N);
  for (Eigen::Index j = 0; j < N; ++j) weights(j) = double(rng() % 4) * 0.5;  // 0, 0.5, 1, 1.5
  std::vector<std::int64_t> lengths;
  for (std::int64_t left = N, k = 0; left > 0; ++k) {
    const std::int64_t l = std::min<std::int64_t>(left, 1 + (k * 37) % 60);
    lengths.push_back(l);
    left -= l;
  }

  // This rank's share: a contiguous block whose ends fall inside sequences.
  const Eigen::Index first = N * rank / ranks, last = N * (rank + 1) / ranks;
  // The last rank's share ends the stream; the others' do not, so extend_to is what makes the sizes agree.
  auto block = [&](const auto& m) { return m.middleCols(first, last - first); };
  const auto my_targets = targets.segment(first, last - first);
  const auto my_weights = weights.segment(first, last - first);

  xent::eval_options opts;
  opts.bins = 10;
  opts.top_k = 5;
  for (int kind = 0; kind < 2; ++kind) {
    const std::string name = kind == 0 ? "sequence_length " : "lengths ";
    xent::sequence_accumulator whole = kind == 0 ? xent::sequence_accumulator(T, opts) : xent::sequence_accumulator(lengths, opts);
    xent::sequence_accumulator mine = whole;
    whole.update(logits, targets, weights);
    mine.update_at(first, block(logits), my_targets, my_weights);
    mine.extend_to(N);

    // Every rank's state the same size (else the collective would be undefined).
    long long size = (long long)mine.size(), low = 0, high = 0;
    MPI_Allreduce(&size, &low, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&size, &high, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    expect(low == high && size == (long long)whole.size(), name + "state sizes agree");
    expect(mine.tokens()[xent::eval_accumulator::samples] < whole.tokens()[xent::eval_accumulator::samples] || ranks == 1,
           name + "each rank evaluated a share only");

    xent::parallel::allreduce_sum(mine, MPI_COMM_WORLD);

    const xent::sequence_report a = whole.report(), b = mine.report();
    expect(a.sequences > 0 && a.empty_sequences >= 1, name + "the data has empty sequences");
    expect(b.sequences == a.sequences && b.empty_sequences == a.empty_sequences, name + "sequence counts are exact");
    expect(b.worst_sequence == a.worst_sequence, name + "the worst sequence");
    expect(close(b.mean_perplexity, a.mean_perplexity) && close(b.median_perplexity, a.median_perplexity), name + "mean and median");
    expect(close(b.max_perplexity, a.max_perplexity) && close(b.min_perplexity, a.min_perplexity), name + "max and min");
    const std::vector<double> na = whole.sequence_nll(), nb = mine.sequence_nll();
    bool same = na.size() == nb.size();
    for (std::size_t s = 0; same && s < na.size(); ++s) same = std::isnan(na[s]) ? std::isnan(nb[s]) : close(nb[s], na[s]);
    expect(same, name + "every sequence's NLL");
    const xent::eval_report ta = whole.tokens().report(), tb = mine.tokens().report();
    expect(tb.samples == ta.samples && tb.ignored == ta.ignored && close(tb.nll, ta.nll) && close(tb.accuracy, ta.accuracy),
           name + "the token-pooled report");
  }
  return checks.finish("sequence_allreduce");
}
