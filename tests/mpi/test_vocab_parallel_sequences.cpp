// vocab_parallel_cross_entropy with the sequence reductions (reduction::sequence_mean and
// per_sequence, options' sequence_lengths) on 2 and 3 ranks, each holding an uneven contiguous
// shard of the vocabulary, against the single-process cross_entropy_with_grad on the whole logits.
// The per-token weights of a sequence reduction come from the targets and the options, the same on
// every rank, so the call stays one collective (the vocabulary-parallel record exchange).
// Budgets, as test_vocab_parallel.cpp's: losses (per sequence and reduced) within 4 ulp at
// max(|reference|, 1), gradient entries within 4 ulp at the call's largest |entry|; every rank the
// same loss bits. Run by CTest (mpi.vocab_parallel_sequences.np*).

#include <xent/parallel/mpi.hpp>
#include <xent/xent.hpp>

#include <mpi.h>

#include "mpi_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

template <class T>
double ulps_at(T got, T want, T scale) {
  if (std::isnan(got) || std::isnan(want)) return std::isnan(got) && std::isnan(want) ? 0 : 1e30;
  return std::fabs(double(got) - double(want)) / (double(std::numeric_limits<T>::epsilon()) * double(scale));
}

}  // namespace

int main(int argc, char** argv) {
  xent_test::mpi_checks checks(&argc, &argv);
  const int rank = checks.rank, ranks = checks.ranks;
  auto expect = [&](bool ok, const char* what) { checks.expect(ok, what); };

  const Eigen::Index C = 211, N = 72;
  std::mt19937_64 rng(1616);
  std::normal_distribution<double> normal(0, 3);
  std::uniform_real_distribution<double> uniform(0, 2);
  Eigen::MatrixXf logits(C, N);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits.data()[i] = float(normal(rng));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets(N);
  for (Eigen::Index j = 0; j < N; ++j) targets(j) = j % 9 == 4 ? -100 : std::int64_t(rng() % std::uint64_t(C));
  // Sequence 3 of the ragged lengths is all ignored: no kept token, left out of sequence_mean.
  for (Eigen::Index j = 45; j < 50; ++j) targets(j) = -100;

  // Uneven shards: rank r holds [begin, begin + size), the first ranks larger.
  const Eigen::Index base = C / ranks, extra = C % ranks;
  xent::parallel::vocab_shard shard;
  shard.classes = C;
  shard.begin = rank * base + std::min<Eigen::Index>(rank, extra);
  shard.size = base + (rank < extra ? 1 : 0);
  const Eigen::MatrixXf local = logits.middleRows(shard.begin, shard.size);

  double worst_loss = 0, worst_grad = 0;
  int cases = 0;
  for (int variant = 0; variant < 4; ++variant) {
    for (const xent::reduction r : {xent::reduction::sequence_mean, xent::reduction::per_sequence}) {
      xent::cross_entropy_options o;
      o.reduction = r;
      o.sequence_lengths = {12};  // B = 6 sequences of 12 tokens
      if (variant >= 1) o.sequence_lengths = {20, 0, 25, 5, 22};  // ragged, with an empty one
      if (variant >= 2) {
        o.label_smoothing = 0.1;
        o.weight = Eigen::VectorXd::Constant(C, 1.0);
        o.weight.head(17).setConstant(0.5);
      }
      if (variant == 3) {
        o.label_smoothing_kind = xent::label_smoothing_kind::other_classes;
        o.sample_weight.resize(N);
        o.mask = xent::sample_mask::Constant(N, true);
        for (Eigen::Index j = 0; j < N; ++j) o.sample_weight(j) = uniform(rng);
        for (Eigen::Index j = 2; j < N; j += 7) o.mask(j) = false;
        o.z_loss = 1e-3;
        o.softcap = 20;
      }
      Eigen::MatrixXf g_whole(C, N), g_local(shard.size, N);
      const auto one = xent::cross_entropy_with_grad(logits, targets, o, g_whole);
      const auto sharded = xent::parallel::vocab_parallel_cross_entropy_with_grad(local, targets, shard, o, MPI_COMM_WORLD, g_local);
      const auto forward = xent::parallel::vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD);
      if (r == xent::reduction::per_sequence) {
        const auto& a = sharded.per_sequence();
        const auto& b = one.per_sequence();
        expect(a.size() == b.size(), "per_sequence: one loss per sequence");
        for (Eigen::Index q = 0; q < std::min(a.size(), b.size()); ++q) {
          const double e = ulps_at(a(q), b(q), std::max(1.0f, std::fabs(b(q))));
          worst_loss = std::max(worst_loss, e);
          expect(e <= 4, "per_sequence loss within 4 ulp of one process");
          expect(std::memcmp(&a(q), &forward.per_sequence()(q), sizeof(float)) == 0, "forward and with_grad: the same bits");
        }
        // Rank 0's bits on every rank.
        std::vector<float> mine(a.data(), a.data() + a.size()), first = mine;
        MPI_Bcast(first.data(), int(first.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
        expect(std::memcmp(first.data(), mine.data(), mine.size() * sizeof(float)) == 0, "every rank: the same per-sequence bits");
      } else {
        const float a = sharded.value(), b = one.value();
        const double e = ulps_at(a, b, std::max(1.0f, std::fabs(b)));
        worst_loss = std::max(worst_loss, e);
        expect(e <= 4, "sequence_mean within 4 ulp of one process");
        expect(forward.value() == a, "forward and with_grad: the same value");
        float first = a;
        MPI_Bcast(&first, 1, MPI_FLOAT, 0, MPI_COMM_WORLD);
        expect(std::memcmp(&first, &a, sizeof(float)) == 0, "every rank: the same loss bits");
      }
      expect(sharded.denominator() == one.denominator(), "the same denominator (kept sequences) as one process");
      float scale = 1e-30f;
      for (Eigen::Index i = 0; i < g_whole.size(); ++i) scale = std::max(scale, std::fabs(g_whole.data()[i]));
      const Eigen::MatrixXf g_ref = g_whole.middleRows(shard.begin, shard.size);
      for (Eigen::Index i = 0; i < g_local.size(); ++i) {
        const double e = ulps_at(g_local.data()[i], g_ref.data()[i], scale);
        worst_grad = std::max(worst_grad, e);
        expect(e <= 4, "gradient entry within 4 ulp of one process");
      }
      ++cases;
    }
  }
  expect(cases == 8, "every case ran");

  // Sequence lengths that do not add up: the same named error on every rank, before any collective.
  {
    xent::cross_entropy_options o;
    o.reduction = xent::reduction::sequence_mean;
    o.sequence_lengths = {10, 10};
    std::string what;
    try {
      (void)xent::parallel::vocab_parallel_cross_entropy(local, targets, shard, o, MPI_COMM_WORLD);
    } catch (const xent::invalid_argument& e) {
      what = e.what();
    }
    expect(what.find("vocab_parallel_cross_entropy") != std::string::npos && what.find("sequence_lengths") != std::string::npos,
           "sequence_lengths that do not sum to N: a named invalid_argument");
  }

  if (rank == 0)
    std::printf("vocab-parallel sequence reductions on %d ranks: worst loss %.2f ulp, gradient %.2f ulp (%d cases)\n", ranks,
                worst_loss, worst_grad, cases);
  return checks.finish("vocab_parallel_sequences");
}
