#ifndef XENT_DETAIL_LINEAR_DIVERGENCE_KERNEL_HPP
#define XENT_DETAIL_LINEAR_DIVERGENCE_KERNEL_HPP

// The fused linear divergence on linear_tiles: the student's logits W^T h, one tile at a time,
// against the teacher's logits, read tile by tile in the same pass. With y = z / T_s and
// u = t / T_t, both KLs are E_a[a - b] - lse(a) + lse(b), with (a, b) = (u, y) for forward
// KL(Q || P) and (y, u) for reverse KL(P || Q). Per tile and sample the fold keeps a partial of a
// carrying w = sum exp(a - max) (a - b), which rescales with the max exactly as the log-sum-exp's
// sum does, and a plain log-sum-exp partial of b: one pass over the tiles gives both normalisers
// and the expectation, merged in tile order (the same bits for any thread count).
//
// Training then turns each tile (kept, or recomputed by a further GEMM) into dloss/dz:
//   forward KL: (p - q) / T_s,  reverse KL: p ((y - lse_y) - (u - lse_u) - KL) / T_s.

#include "linear_kernel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace xent::detail {

/// A log-sum-exp partial {max, sum of exp(x - max)} with w = sum exp(x - max) v for some values
/// v: merged as the sum, so that w / sum is the softmax(x)-expectation of v.
template <class T>
struct weighted_lse_partial {
  T max = -std::numeric_limits<T>::infinity();
  T sum = 0;
  T w = 0;
};

template <class T>
weighted_lse_partial<T> merge(const weighted_lse_partial<T>& a, const weighted_lse_partial<T>& b) {
  constexpr T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  if (std::isnan(a.max) || std::isnan(b.max)) return {nan, nan, nan};
  const bool swap = a.max < b.max;
  const weighted_lse_partial<T>& hi = swap ? b : a;
  const weighted_lse_partial<T>& lo = swap ? a : b;
  if (hi.max == -inf) return {};
  if (hi.max == inf) return {nan, nan, nan};  // a +inf logit: the divergence is NaN, as divergence's
  const T f = std::exp(lo.max - hi.max);
  return {hi.max, hi.sum + lo.sum * f, hi.w + (lo.sum == 0 ? T(0) : lo.w * f)};
}

/// Which KL the kernel computes.
enum class linear_kl { forward, reverse };

template <class T>
struct linear_divergence_params {
  linear_kl kind = linear_kl::forward;
  T inv_student = 1;  // 1 / T_s
  T inv_teacher = 1;  // 1 / T_t
};

/// Teacher: V x N logits, any Eigen expression (read with coeff, cast to T).
template <class T, bool VByD, class Weight, class Hidden, class Teacher>
class linear_divergence_kernel : public linear_tiles<T, VByD, Weight, Hidden> {
  using base = linear_tiles<T, VByD, Weight, Hidden>;
  using base::active_;
  using base::plan_;

 public:
  using matrix = typename base::matrix;
  using vector = typename base::vector;
  using tile_map = typename base::tile_map;

  linear_divergence_kernel(const linear_plan& plan, const linear_divergence_params<T>& params, const Weight& weight,
                           const Hidden& hidden, const Teacher& teacher, const std::vector<Index>& active, bool training)
      : base(plan, weight, hidden, nullptr, active, training), params_(params), teacher_(teacher) {
    const std::size_t workers = std::size_t(plan.threads), partials = std::size_t(plan.tiles * plan.sample_block);
    teacher_tile_.assign(workers, vector(plan.vocab_block));
    exp_tile_.assign(workers, vector(plan.vocab_block));
    expected_.resize(partials);
    other_.resize(partials);
    stats_.resize(active.size());
    other_stats_.resize(active.size());
  }

  /// Both normalisers and the expectation of the kept samples [first, first + count).
  void forward_block(Index first, Index count) {
    this->forward_tiles(first, count, [&](int worker, Index t, Index v0, Index len, tile_map& z) {
      const Index nb = plan_.sample_block;
      z *= params_.inv_student;  // the tile holds y from here on (kept for the gradient pass)
      for (Index i = 0; i < count; ++i) {
        const T* y = z.col(i).data();
        const T* u = teacher_column(worker, first + i, v0, len);
        const bool forward = params_.kind == linear_kl::forward;
        expected_[std::size_t(t * nb + i)] = fold_expected(worker, forward ? u : y, forward ? y : u, len);
        other_[std::size_t(t * nb + i)] = lse_partial_contiguous(forward ? y : u, len);
      }
    });
    const Index nb = plan_.sample_block;
    for (Index i = 0; i < count; ++i) {
      weighted_lse_partial<T> a;
      lse_partial<T> b = lse_partial<T>::identity();
      for (Index t = 0; t < plan_.tiles; ++t) {
        a = merge(a, expected_[std::size_t(t * nb + i)]);
        b = merge(b, other_[std::size_t(t * nb + i)]);
      }
      stats_[std::size_t(first + i)] = a;
      other_stats_[std::size_t(first + i)] = b;
    }
  }

  /// After forward_block on the same samples: the gradient of sum_k scale(k) * loss_k (see
  /// linear_tiles::backward_tiles for what is written).
  template <class Scale, class GradHidden, class GradWeight>
  void backward_block(Index first, Index count, const Scale& scale, bool first_block, GradHidden& grad_hidden,
                      GradWeight& grad_weight) {
    this->backward_tiles(first, count, first_block, grad_hidden, grad_weight, nullptr,
                         [&](int worker, Index v0, Index len, tile_map& z) {
                           if (!plan_.keep_block) z *= params_.inv_student;  // recomputed: the raw logits
                           for (Index i = 0; i < count; ++i) column_grad(worker, first + i, v0, len, scale, z.col(i).data());
                         });
  }

  /// The divergence of kept sample k (after forward_block): NaN when a normaliser is not finite (a
  /// NaN or +inf logit, or every class of one side masked).
  T loss(std::size_t k) const {
    const weighted_lse_partial<T>& a = stats_[k];
    const lse_partial<T>& b = other_stats_[k];
    if (!std::isfinite(a.max) || !std::isfinite(b.max) || !(a.sum > 0)) return std::numeric_limits<T>::quiet_NaN();
    // E_a[a - b] - (lse_a - lse_b): the maxima cancel between the two normalisers first.
    return a.w / a.sum - ((a.max - b.max) + (std::log(a.sum) - std::log(b.sum)));
  }

 private:
  /// Teacher column of kept sample k, classes [v0, v0 + len), divided by T_t, in the worker's buffer.
  const T* teacher_column(int worker, Index k, Index v0, Index len) {
    T* u = teacher_tile_[std::size_t(worker)].data();
    const Index j = active_[std::size_t(k)];
    for (Index c = 0; c < len; ++c) u[c] = static_cast<T>(teacher_.coeff(v0 + c, j)) * params_.inv_teacher;
    return u;
  }

  /// The partial of a over one tile with w = sum exp(a - max) (a - b); a class a gives no mass adds
  /// nothing (not 0 * inf), one where b is -inf but a has mass makes it +inf.
  weighted_lse_partial<T> fold_expected(int worker, const T* a, const T* b, Index len) {
    constexpr T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
    T max = -inf;
    for (Index c = 0; c < len; ++c) {
      if (std::isnan(a[c])) return {nan, nan, nan};
      max = std::max(max, a[c]);
    }
    if (max == -inf) return {};
    if (max == inf) return {nan, nan, nan};
    T* e = exp_tile_[std::size_t(worker)].data();
    std::copy(a, a + len, e);
    softmax_affine(e, len, max, T(1), T(0));
    T sum = 0, w = 0;
    for (Index c = 0; c < len; ++c) {
      sum += e[c];
      if (e[c] != 0) w += e[c] * (a[c] - b[c]);
    }
    return {max, sum, w};
  }

  /// y (one column of the tile) becomes scale / T_s times dKL/dy in place.
  template <class Scale>
  void column_grad(int worker, Index k, Index v0, Index len, const Scale& scale, T* y) {
    const std::size_t kk = std::size_t(k);
    const T kl = loss(kk);
    if (std::isnan(kl)) {
      std::fill(y, y + len, std::numeric_limits<T>::quiet_NaN());
      return;
    }
    const T c = scale(kk) * params_.inv_student;
    const T* u = teacher_column(worker, k, v0, len);
    const bool forward = params_.kind == linear_kl::forward;
    const lse_partial<T> s = forward ? other_stats_[kk] : lse_partial<T>{stats_[kk].max, stats_[kk].sum};
    const lse_partial<T> q = forward ? lse_partial<T>{stats_[kk].max, stats_[kk].sum} : other_stats_[kk];
    const T lse_y = s.max + std::log(s.sum), lse_u = q.max + std::log(q.sum);
    T* e = exp_tile_[std::size_t(worker)].data();
    if (forward) {
      // c (p - q): both softmaxes from their own maxima, vectorised.
      std::copy(u, u + len, e);
      softmax_affine(e, len, q.max, c / q.sum, T(0));
      softmax_affine(y, len, s.max, c / s.sum, T(0));
      for (Index i = 0; i < len; ++i) y[i] -= e[i];
    } else {
      std::copy(y, y + len, e);
      softmax_affine(e, len, s.max, T(1) / s.sum, T(0));
      for (Index i = 0; i < len; ++i)
        y[i] = e[i] == 0 ? T(0) : c * e[i] * (((y[i] - lse_y) - (u[i] - lse_u)) - kl);
    }
  }

  linear_divergence_params<T> params_;
  const Teacher& teacher_;
  std::vector<vector> teacher_tile_;                // per worker: a teacher column's tile / T_t
  std::vector<vector> exp_tile_;                    // per worker: exponentials of one column
  std::vector<weighted_lse_partial<T>> expected_;   // tile t, block column i at t * sample_block + i
  std::vector<lse_partial<T>> other_;               // same indexing
  std::vector<weighted_lse_partial<T>> stats_;      // per kept sample: a's merged partial
  std::vector<lse_partial<T>> other_stats_;         // per kept sample: b's
};

}  // namespace xent::detail

#endif
