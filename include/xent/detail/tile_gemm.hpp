#ifndef XENT_DETAIL_TILE_GEMM_HPP
#define XENT_DETAIL_TILE_GEMM_HPP

// The GEMMs of the fused linear losses' tiles: C (+)= op(A) op(B), op = identity or transpose.
//
// With XENT_USE_BLAS defined (the xent::blas CMake target defines it and links BLAS::BLAS; a
// consumer may define it and link a CBLAS itself), a float or double product whose three operands
// are in memory with unit inner stride goes to cblas_sgemm / cblas_dgemm; anything else (an
// expression, a strided Map, a dimension beyond the BLAS's int) stays on Eigen's GEMM, as does
// every product without XENT_USE_BLAS. bfloat16 and half inputs never get here: the tiles widen
// them to float first (linear_tiles).
//
// Threads: the tiles call the GEMM from their own workers, one tile per call, so the BLAS must
// run each call on the calling thread. For OpenBLAS (recognised by OPENBLAS_VERSION, which its
// cblas.h defines) blas_thread_scope sets openblas_set_num_threads(1) for the duration of a call
// and restores the count after; any other BLAS must be set to one thread by the user (e.g.
// MKL_NUM_THREADS=1, BLIS_NUM_THREADS=1), see docs/fused.md.

#include "engine/view.hpp"

#include <Eigen/Core>

#include <climits>
#include <type_traits>

#ifdef XENT_USE_BLAS
#include <cblas.h>

#include <mutex>
#endif

namespace xent::detail {

/// Whether the fused linear losses' tile GEMMs may go to a CBLAS (XENT_USE_BLAS).
#ifdef XENT_USE_BLAS
inline constexpr bool tile_gemm_uses_blas = true;
#else
inline constexpr bool tile_gemm_uses_blas = false;
#endif

/// op(x): x itself (a reference, no copy) or its transpose.
template <bool Transposed, class X>
decltype(auto) gemm_operand(const X& x) {
  if constexpr (Transposed) return x.transpose();
  else return (x);
}

#ifdef XENT_USE_BLAS
namespace blas {

/// A matrix in memory as a column-major BLAS operand: its data, leading dimension, and whether the
/// column-major matrix at data is the transpose of x (x row-major).
template <class S>
struct operand {
  S* data = nullptr;
  int ld = 0;
  bool stored_transposed = false;
  bool ok = false;
};

template <class X>
auto describe(X& x) {
  using S = std::remove_pointer_t<decltype(x.data())>;
  operand<S> o;
  if constexpr (has_direct_access<std::remove_const_t<X>>) {
    constexpr bool row_major = (int(std::remove_const_t<X>::Flags) & Eigen::RowMajorBit) != 0;
    // The column-major matrix at data: x (rows x cols) or, row-major, x^T (cols x rows).
    const Index stored_rows = row_major ? x.cols() : x.rows();
    const Index ld = x.outerStride();
    if (x.innerStride() != 1 || x.rows() > INT_MAX || x.cols() > INT_MAX || ld > INT_MAX) return o;
    const Index min_ld = stored_rows > 1 ? stored_rows : 1;
    // A single stored column may report any outer stride: it is never stepped over.
    const Index stored_cols = row_major ? x.rows() : x.cols();
    o.ld = int(stored_cols > 1 ? ld : (ld > min_ld ? ld : min_ld));
    if (o.ld < min_ld) return o;
    o.data = x.data();
    o.stored_transposed = row_major;
    o.ok = true;
  }
  return o;
}

inline CBLAS_TRANSPOSE trans(bool t) { return t ? CblasTrans : CblasNoTrans; }

inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float* a, int lda, const float* b,
                 int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace blas

/// While one exists, OpenBLAS runs every call on the calling thread (openblas_set_num_threads(1));
/// the last one to end restores the count it found. Nested and concurrent scopes share one count.
/// For any other BLAS it does nothing.
class blas_thread_scope {
 public:
  blas_thread_scope() {
#ifdef OPENBLAS_VERSION
    const std::lock_guard<std::mutex> lock(mutex());
    if (state().depth++ == 0) {
      state().saved = openblas_get_num_threads();
      if (state().saved != 1) openblas_set_num_threads(1);
    }
#endif
  }
  ~blas_thread_scope() {
#ifdef OPENBLAS_VERSION
    const std::lock_guard<std::mutex> lock(mutex());
    if (--state().depth == 0 && state().saved != 1) openblas_set_num_threads(state().saved);
#endif
  }
  blas_thread_scope(const blas_thread_scope&) = delete;
  blas_thread_scope& operator=(const blas_thread_scope&) = delete;

 private:
  struct shared {
    int depth = 0;
    int saved = 1;
  };
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static shared& state() {
    static shared s;
    return s;
  }
};
#else
/// Without XENT_USE_BLAS: nothing to set.
class blas_thread_scope {};
#endif

/// c = op(a) op(b), or c += op(a) op(b) when accumulate; c, a and b must not overlap.
template <bool TransA, bool TransB, class C, class A, class B>
void tile_gemm(C&& c, const A& a, const B& b, bool accumulate) {
#ifdef XENT_USE_BLAS
  using S = typename std::remove_reference_t<C>::Scalar;
  if constexpr ((std::is_same_v<S, float> || std::is_same_v<S, double>) && std::is_same_v<S, typename A::Scalar> &&
                std::is_same_v<S, typename B::Scalar>) {
    const auto dc = blas::describe(c);
    const auto da = blas::describe(a);
    const auto db = blas::describe(b);
    const Index k = TransA ? a.rows() : a.cols();
    if (dc.ok && da.ok && db.ok && c.rows() > 0 && c.cols() > 0 && k > 0 && k <= INT_MAX) {
      // op(x) as the BLAS sees it: the stored column-major matrix, transposed when x is row-major
      // xor op transposes it.
      const bool ta = TransA != da.stored_transposed, tb = TransB != db.stored_transposed;
      const S beta = accumulate ? S(1) : S(0);
      if (!dc.stored_transposed)
        blas::gemm(blas::trans(ta), blas::trans(tb), int(c.rows()), int(c.cols()), int(k), da.data, da.ld, db.data,
                   db.ld, beta, dc.data, dc.ld);
      else  // c row-major: c^T = op(b)^T op(a)^T, column-major
        blas::gemm(blas::trans(!tb), blas::trans(!ta), int(c.cols()), int(c.rows()), int(k), db.data, db.ld, da.data,
                   da.ld, beta, dc.data, dc.ld);
      return;
    }
  }
#endif
  if (accumulate)
    c.noalias() += gemm_operand<TransA>(a) * gemm_operand<TransB>(b);
  else
    c.noalias() = gemm_operand<TransA>(a) * gemm_operand<TransB>(b);
}

}  // namespace xent::detail

#endif
