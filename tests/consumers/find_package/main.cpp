// Consumer smoke test: compiled by every tests/consumers/* project against the xent it found
// (installed package, add_subdirectory, FetchContent, pkg-config). Exits non-zero on any mismatch.
#include <xent/xent.hpp>
#include <xent/version.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdio>

// The core has no MPI dependency: only <xent/parallel/mpi.hpp> includes <mpi.h>.
#if defined(MPI_VERSION) || defined(OMPI_MPI_H)
#error "<xent/xent.hpp> included <mpi.h>"
#endif

// xent::xent and xent.pc are the serial core: OpenMP reaches only those who link xent::openmp.
#ifdef _OPENMP
#error "_OPENMP is defined: xent forced -fopenmp on a consumer that asked for no threads"
#endif

// The consumer projects ask for C++14 at most; xent's usage requirements must raise it to 17
// (the pkg-config consumer asks for 17 itself: a .pc file names no standard).
static_assert(__cplusplus >= 201703L, "xent must propagate C++17 to its consumers");

int main() {
  int failures = 0;

  // Columns are independent distributions; classes run down each column.
  Eigen::MatrixXd x(2, 3);
  x << 0.0, 1.0, 1000.0,
       0.0, 2.0, 1000.0;
  const Eigen::Matrix<double, Eigen::Dynamic, 1> lse = xent::logsumexp(x);

  const double expected[3] = {std::log(2.0), 2.0 + std::log1p(std::exp(-1.0)), 1000.0 + std::log(2.0)};
  if (lse.size() != 3) {
    std::printf("FAIL: logsumexp returned %ld values, expected one per column (3)\n",
                static_cast<long>(lse.size()));
    return 1;
  }
  for (int j = 0; j < 3; ++j) {
    const double err = std::abs(lse(j) - expected[j]);
    const bool ok = std::isfinite(lse(j)) && err <= 1e-12 * std::max(1.0, std::abs(expected[j]));
    std::printf("%s: logsumexp(column %d) = %.17g, expected %.17g\n", ok ? "ok" : "FAIL", j, lse(j),
                expected[j]);
    failures += ok ? 0 : 1;
  }

  std::printf("xent headers say version %d.%d.%d\n", XENT_VERSION_MAJOR, XENT_VERSION_MINOR,
              XENT_VERSION_PATCH);
#if defined(XENT_EXPECTED_VERSION_MAJOR)
  if (XENT_VERSION_MAJOR != XENT_EXPECTED_VERSION_MAJOR || XENT_VERSION_MINOR != XENT_EXPECTED_VERSION_MINOR ||
      XENT_VERSION_PATCH != XENT_EXPECTED_VERSION_PATCH) {
    std::printf("FAIL: package version is %d.%d.%d but <xent/version.hpp> says %d.%d.%d\n",
                XENT_EXPECTED_VERSION_MAJOR, XENT_EXPECTED_VERSION_MINOR, XENT_EXPECTED_VERSION_PATCH,
                XENT_VERSION_MAJOR, XENT_VERSION_MINOR, XENT_VERSION_PATCH);
    ++failures;
  }
#endif

  return failures == 0 ? 0 : 1;
}
