#ifndef XENT_TESTS_MPI_CHECK_HPP
#define XENT_TESTS_MPI_CHECK_HPP

// The checks of the plain-main MPI tests: a failed check is recorded, never thrown (a rank that
// left early would leave the others waiting in a collective), and the verdict is summed over the
// ranks at the end.

#include <mpi.h>

#include <cstdio>

namespace xent_test {

struct mpi_checks {
  int rank = 0, ranks = 1, failures = 0;

  /// MPI_Init and this rank's place in MPI_COMM_WORLD.
  mpi_checks(int* argc, char*** argv) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  }
  void expect(bool ok, const char* what) {
    if (ok) return;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what);
    ++failures;
  }
  /// The failures of every rank, MPI_Finalize, and the process's exit code.
  int finish(const char* test) {
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) std::printf("%s on %d ranks: %s\n", test, ranks, total == 0 ? "all passed" : "FAILED");
    MPI_Finalize();
    return total == 0 ? 0 : 1;
  }
};

}  // namespace xent_test

#endif
