#ifndef XENT_DETAIL_LINEAR_KERNEL_HPP
#define XENT_DETAIL_LINEAR_KERNEL_HPP

// The fused linear cross-entropy: logits x = W^T h (+ b) are produced one tile of
// `vocab_block` classes x `sample_block` samples at a time by an Eigen GEMM into a preallocated
// buffer, folded into per-tile log-sum-exp partials (merged later in tile order) while the tile is
// still in cache, and never stored whole. With XENT_USE_BLAS the float and double tile GEMMs go to
// the CBLAS (tile_gemm.hpp), each call single-threaded on the worker that makes it.
//
// Training adds, per tile, dz = scale * (softmax * (1 + 2 s lse) - target distribution) (times the
// soft-cap's derivative), then grad_hidden += W_tile dz and grad_weight_tile (+)= h dz^T. dz needs
// the sample's final log-sum-exp, which needs every tile (and, for the target's entry where
// p_t >= 1/2, the log-sum-exp of the other classes, so that p_t - 1 does not cancel): when the
// logits of one sample block over the whole vocabulary fit `max_block_bytes`, they are kept
// between the two passes (three GEMMs in all), otherwise each tile is recomputed (a fourth GEMM).
//
// Ignored samples are dropped before the GEMMs: no work is spent on padding, and a padding row of
// garbage (NaN) hidden state cannot reach the weight gradient through 0 * NaN.

#include "../core/lse_partial.hpp"
#include "engine/threads.hpp"
#include "engine/transform.hpp"
#include "engine/view.hpp"
#include "losses/softmax.hpp"
#include "simd/math.hpp"
#include "tile_gemm.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace xent::detail {

/// The scalar types of hidden state and weights; bfloat16 and half are computed in float.
template <class S>
inline constexpr bool is_linear_scalar = std::is_same_v<S, float> || std::is_same_v<S, double> ||
                                         std::is_same_v<S, Eigen::bfloat16> || std::is_same_v<S, Eigen::half>;

/// The type the GEMMs, the log-sum-exp and every gradient accumulate in: float for float,
/// bfloat16 and half inputs, double for double.
template <class S>
using accumulation_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

/// What one call computes and with which blocking, fixed before any data is read.
struct linear_plan {
  Index hidden_size = 0;   // D
  Index classes = 0;       // V
  Index sample_block = 0;  // samples per GEMM
  Index vocab_block = 0;   // classes per tile
  Index tiles = 0;         // ceil(V / vocab_block)
  bool weight_v_by_d = false;
  bool keep_block = false;  // training: the block's logits stay between the two passes
  int threads = 1;
};

/// The loss's parameters, in the accumulation type.
template <class T>
struct linear_loss_params {
  T smoothing = 0;
  T z_loss = 0;
  T softcap = 0;  // 0: off
};

/// g = a * exp(z - max) - b over n contiguous logits z, in place (a holds the softmax's 1 / sum).
/// exp_nonpositive keeps a masked (-inf) class at exactly 0.
template <class T>
void softmax_affine(T* z, Index n, T max, T a, T b) {
  Index k = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    const P vmax = simd::pset1<P>(max), va = simd::pset1<P>(a), vb = simd::pset1<P>(b);
    for (; k + ps <= n; k += ps)
      simd::store(z + k, simd::psub(simd::pmul(simd::exp_nonpositive(simd::psub(simd::load<P>(z + k), vmax)), va), vb));
  }
  for (; k < n; ++k) z[k] = simd::exp_nonpositive_scalar(z[k] - max) * a - b;
}

/// The tiling shared by the fused linear losses: the blocking, the buffers (one tile per worker,
/// or one block's logits), the GEMMs that produce a tile of logits and the two that take a tile of
/// logit gradients back to hidden and weight. A loss derives from it and says what it folds out of
/// each tile (forward_tiles) and how a tile of logits becomes its gradient (backward_tiles).
///
/// Weight is any Eigen expression of D x V (VByD false) or V x D; Hidden any D x N. Samples are
/// indexed by position in `active` (the kept samples in order).
template <class T, bool VByD, class Weight, class Hidden>
class linear_tiles {
 public:
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using tile_map = Eigen::Map<matrix>;

  linear_tiles(const linear_plan& plan, const Weight& weight, const Hidden& hidden, const vector* bias,
               const std::vector<Index>& active, bool training)
      : plan_(plan), weight_(weight), hidden_(hidden), bias_(bias), active_(active), training_(training) {
    const Index nb = plan.sample_block, vb = plan.vocab_block, D = plan.hidden_size;
    const std::size_t workers = std::size_t(plan.threads);
    block_h_.resize(D, nb);
    if (plan.keep_block)
      kept_.resize(std::size_t(plan.tiles * vb * nb));
    else
      tiles_.assign(workers, matrix(vb, nb));
    if constexpr (converts_weight) weight_tiles_.assign(workers, VByD ? matrix(vb, D) : matrix(D, vb));
    if (training) grad_h_.assign(workers, matrix(D, nb));
  }

 protected:
  /// Gathers the kept samples [first, first + count) and calls fold(worker, t, v0, len, z) on each
  /// tile of their logits z (len classes from v0 x count samples), tiles split over the workers.
  template <class Fold>
  void forward_tiles(Index first, Index count, Fold&& fold) {
    gather(first, count);
    fork_join(plan_.threads, [&](int worker) {
      for (Index t = worker; t < plan_.tiles; t += plan_.threads) {
        const Index v0 = t * plan_.vocab_block, len = std::min(plan_.vocab_block, plan_.classes - v0);
        tile_map z = tile(worker, t, len, count);
        logits(worker, v0, len, count, z);
        fold(worker, t, v0, len, z);
      }
    });
  }

  /// After forward_tiles on the same samples: calls f(worker, t, v0, len, z, recomputed) on each
  /// tile again, z kept (as the fold left it) or recomputed by a GEMM (the raw logits), for a loss
  /// that needs its statistics before it can read the tiles' classes.
  template <class F>
  void revisit_tiles(Index count, F&& f) {
    fork_join(plan_.threads, [&](int worker) {
      for (Index t = worker; t < plan_.tiles; t += plan_.threads) {
        const Index v0 = t * plan_.vocab_block, len = std::min(plan_.vocab_block, plan_.classes - v0);
        tile_map z = tile(worker, t, len, count);
        if (!plan_.keep_block) logits(worker, v0, len, count, z);
        f(worker, t, v0, len, z, !plan_.keep_block);
      }
    });
  }

  /// After forward_tiles on the same samples: each tile of logits (kept or recomputed) is turned
  /// into dloss/dlogits in place by grads(worker, v0, len, z), then taken back through the GEMMs.
  /// Writes grad_weight's tiles (assigning on the first block, adding after), adds to grad_bias (a
  /// T vector, or null) and writes the block's columns of grad_hidden (whose other columns the
  /// caller zeroed).
  template <class Grads, class GradHidden, class GradWeight>
  void backward_tiles(Index first, Index count, bool first_block, GradHidden& grad_hidden, GradWeight& grad_weight,
                      vector* grad_bias, Grads&& grads) {
    for (matrix& g : grad_h_) g.leftCols(count).setZero();
    fork_join(plan_.threads, [&](int worker) {
      for (Index t = worker; t < plan_.tiles; t += plan_.threads) {
        const Index v0 = t * plan_.vocab_block, len = std::min(plan_.vocab_block, plan_.classes - v0);
        tile_map z = tile(worker, t, len, count);
        if (!plan_.keep_block) logits(worker, v0, len, count, z);
        grads(worker, v0, len, z);
        if (grad_bias) {
          if (first_block)
            grad_bias->segment(v0, len) = z.rowwise().sum();
          else
            grad_bias->segment(v0, len) += z.rowwise().sum();
        }
        const auto h = block_h_.leftCols(count);
        auto gh = grad_h_[std::size_t(worker)].leftCols(count);
        with_weight_tile(worker, v0, len, [&](const auto& w) {
          // GEMMs 2 and 3: gh += W_tile z, grad_W_tile (+)= h z^T (in the weight's orientation).
          if constexpr (VByD) {
            tile_gemm<true, false>(gh, w, z, true);
            tile_gemm<false, true>(grad_weight.middleRows(v0, len), z, h, !first_block);
          } else {
            tile_gemm<false, false>(gh, w, z, true);
            tile_gemm<false, true>(grad_weight.middleCols(v0, len), h, z, !first_block);
          }
        });
      }
    });
    // The workers' shares in worker order: the same thread count gives the same bits.
    for (std::size_t r = 1; r < grad_h_.size(); ++r) grad_h_[0].leftCols(count) += grad_h_[r].leftCols(count);
    for (Index i = 0; i < count; ++i)
      grad_hidden.col(active_[std::size_t(first + i)]) = grad_h_[0].col(i).template cast<typename GradHidden::Scalar>();
  }

  linear_plan plan_;
  const Weight& weight_;
  const Hidden& hidden_;
  const vector* bias_;
  const std::vector<Index>& active_;
  bool training_;

 private:
  static constexpr bool converts_weight =
      !std::is_same_v<typename Weight::Scalar, T> || !has_direct_access<Weight>;

  tile_map tile(int worker, Index t, Index len, Index count) {
    T* data = plan_.keep_block ? kept_.data() + t * plan_.vocab_block * plan_.sample_block
                               : tiles_[std::size_t(worker)].data();
    return tile_map(data, len, count);
  }

  /// Calls f with the classes [v0, v0 + len) of the weight in its own orientation (D x len, or
  /// len x D), read in place when the weight is a T matrix in memory, else converted to T.
  template <class F>
  void with_weight_tile(int worker, Index v0, Index len, F&& f) {
    auto slice = [&] {
      if constexpr (VByD) return weight_.middleRows(v0, len);
      else return weight_.middleCols(v0, len);
    }();
    if constexpr (converts_weight) {
      matrix& buffer = weight_tiles_[std::size_t(worker)];
      Eigen::Map<matrix> w(buffer.data(), slice.rows(), slice.cols());
      w = slice.template cast<T>();
      f(w);
    } else {
      f(slice);
    }
  }

  /// The kept samples [first, first + count) as the columns of a T matrix.
  void gather(Index first, Index count) {
    for (Index i = 0; i < count; ++i)
      block_h_.col(i) = hidden_.col(active_[std::size_t(first + i)]).template cast<T>();
  }

  /// GEMM 1: x = W_tile^T h (+ b).
  void logits(int worker, Index v0, Index len, Index count, tile_map& z) {
    const auto h = block_h_.leftCols(count);
    with_weight_tile(worker, v0, len, [&](const auto& w) { tile_gemm<!VByD, false>(z, w, h, false); });
    if (bias_) z.colwise() += bias_->segment(v0, len);
  }

  matrix block_h_;                    // D x sample_block: the block's hidden states in T
  std::vector<matrix> tiles_;         // per worker: one vocab_block x sample_block tile
  std::vector<T> kept_;               // keep_block: every tile of the block, tile t at t * vb * nb
  std::vector<matrix> weight_tiles_;  // per worker: a weight tile converted to T
  std::vector<matrix> grad_h_;        // per worker: its share of the block's grad_hidden
  blas_thread_scope blas_threads_;    // XENT_USE_BLAS with OpenBLAS: one BLAS thread per call while the kernel lives
};

/// The linear cross-entropy on the shared tiles: per kept sample its log-sum-exp partial, target
/// logit and (with label smoothing) logit sum. The tile keeps the raw logits x; the soft-cap is
/// applied column by column where it is read, because its derivative needs x.
template <class T, bool VByD, class Weight, class Hidden>
class linear_ce_kernel : public linear_tiles<T, VByD, Weight, Hidden> {
  using base = linear_tiles<T, VByD, Weight, Hidden>;
  using base::plan_;
  using base::training_;

 public:
  using matrix = typename base::matrix;
  using vector = typename base::vector;
  using tile_map = typename base::tile_map;

  linear_ce_kernel(const linear_plan& plan, const linear_loss_params<T>& params, const Weight& weight,
                   const Hidden& hidden, const vector* bias, const std::vector<Index>& active,
                   const std::vector<Index>& target, bool training)
      : base(plan, weight, hidden, bias, active, training), params_(params), target_(target) {
    const Index nb = plan.sample_block;
    partials_.resize(std::size_t(plan.tiles * nb));
    if (params.smoothing != 0) tile_sums_.resize(std::size_t(plan.tiles * nb));
    if (params.softcap != 0) scratch_.assign(std::size_t(plan.threads), matrix(plan.vocab_block, 1));
    const std::size_t kept = active.size();
    stats_.resize(kept);
    target_logit_.assign(kept, T(0));
    if (params.smoothing != 0) logit_sum_.assign(kept, 0.0);
    if (training) target_tile_others_.resize(kept), others_.resize(kept);
  }

  /// Log-sum-exp partial, target logit and logit sum of the kept samples [first, first + count):
  /// one GEMM per tile.
  void forward_block(Index first, Index count) {
    this->forward_tiles(first, count, [&](int worker, Index t, Index v0, Index len, tile_map& z) {
      fold(worker, t, v0, len, first, count, z);
    });
    const Index nb = plan_.sample_block;
    for (Index i = 0; i < count; ++i) {
      lse_partial<T> acc = lse_partial<T>::identity();
      double sum = 0;
      for (Index t = 0; t < plan_.tiles; ++t) {
        acc = merge(acc, partials_[std::size_t(t * nb + i)]);
        if (params_.smoothing != 0) sum += double(tile_sums_[std::size_t(t * nb + i)]);
      }
      stats_[std::size_t(first + i)] = acc;
      if (params_.smoothing != 0) logit_sum_[std::size_t(first + i)] = sum;
      if (training_) {
        // Every class but the target: its own tile's partial without it, the other tiles' whole.
        const std::size_t k = std::size_t(first + i);
        const Index target_tile = target_[k] / plan_.vocab_block;
        lse_partial<T> others = lse_partial<T>::identity();
        for (Index t = 0; t < plan_.tiles; ++t)
          others = merge(others, t == target_tile ? target_tile_others_[k] : partials_[std::size_t(t * nb + i)]);
        others_[k] = others;
      }
    }
  }

  /// After forward_block on the same samples: the gradient of sum_k scale(k) * loss_k (see
  /// linear_tiles::backward_tiles for what is written).
  template <class Scale, class GradHidden, class GradWeight>
  void backward_block(Index first, Index count, const Scale& scale, bool first_block, GradHidden& grad_hidden,
                      GradWeight& grad_weight, vector* grad_bias) {
    this->backward_tiles(first, count, first_block, grad_hidden, grad_weight, grad_bias,
                         [&](int worker, Index v0, Index len, tile_map& z) {
                           logit_grads(worker, v0, len, first, count, scale, z);
                         });
  }

  /// The loss of kept sample k (after forward_block):
  ///   (1 - eps) (lse - z_t) + eps (lse - mean_k z_k) + s lse^2,
  /// NaN when the log-sum-exp is not finite (a NaN or +inf logit, or every logit -inf), as torch.
  T loss(std::size_t k) const {
    const lse_partial<T>& p = stats_[k];
    if (!std::isfinite(p.max)) return std::numeric_limits<T>::quiet_NaN();
    const T log_sum = std::log(p.sum), lse = p.max + log_sum;
    // (max - z_t) first: exact when the target is the largest logit, as torch's log_softmax.
    T loss = (p.max - target_logit_[k]) + log_sum;
    if (params_.smoothing != 0) {
      const T smooth = lse - T(logit_sum_[k] / double(plan_.classes));
      loss = (T(1) - params_.smoothing) * loss + params_.smoothing * smooth;
    }
    if (params_.z_loss != 0) loss += params_.z_loss * lse * lse;
    return loss;
  }

  /// The log-sum-exp of kept sample k's (soft-capped) logits (after forward_block).
  T lse(std::size_t k) const { return stats_[k].value(); }

 private:
  /// Column i of the tile as the logits the loss sees: the tile itself, or its soft-cap in scratch.
  T* capped(int worker, tile_map& x, Index i, Index len) {
    if (params_.softcap == 0) return x.col(i).data();
    T* z = scratch_[std::size_t(worker)].col(0).data();
    std::copy(x.col(i).data(), x.col(i).data() + len, z);
    engine::apply_transform(z, len, softcap());
    return z;
  }
  engine::transform<T> softcap() const {
    engine::transform<T> f;
    f.softcap = params_.softcap;
    return f;
  }

  void fold(int worker, Index t, Index v0, Index len, Index first, Index count, tile_map& x) {
    const Index nb = plan_.sample_block;
    for (Index i = 0; i < count; ++i) {
      const T* z = capped(worker, x, i, len);
      partials_[std::size_t(t * nb + i)] = lse_partial_contiguous(z, len);
      if (params_.smoothing != 0)
        tile_sums_[std::size_t(t * nb + i)] = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(z, len).sum();
      // Exactly one tile holds each target, so no two workers write the same entry.
      const Index target = target_[std::size_t(first + i)];
      if (target >= v0 && target < v0 + len) {
        const Index at = target - v0;
        target_logit_[std::size_t(first + i)] = z[at];
        if (training_)
          target_tile_others_[std::size_t(first + i)] =
              merge(lse_partial_contiguous(z, at), lse_partial_contiguous(z + at + 1, len - at - 1));
      }
    }
  }

  /// The tile of logits x becomes dloss/dx in place, for loss = sum_k scale(k) loss_k: with z the
  /// soft-capped logits and p = softmax(z),
  ///   scale * (p (1 + 2 s lse) - eps / V - (1 - eps) [class == target]) * sech^2(x / c).
  template <class Scale>
  void logit_grads(int worker, Index v0, Index len, Index first, Index count, const Scale& scale, tile_map& x) {
    const T eps = params_.smoothing, cap = params_.softcap;
    for (Index i = 0; i < count; ++i) {
      const std::size_t k = std::size_t(first + i);
      const lse_partial<T>& p = stats_[k];
      T* column = x.col(i).data();
      if (!std::isfinite(p.max)) {
        // As torch: a sample whose log-sum-exp is not finite has a NaN gradient everywhere.
        std::fill(column, column + len, std::numeric_limits<T>::quiet_NaN());
        continue;
      }
      const T c = scale(k), lse = p.max + std::log(p.sum);
      T* g = capped(worker, x, i, len);  // the tile itself, or scratch
      softmax_affine(g, len, p.max, c * (T(1) + 2 * params_.z_loss * lse) / p.sum, c * eps / T(plan_.classes));
      const Index target = target_[k];
      if (target >= v0 && target < v0 + len) {
        // c ((1 + 2 s lse) p_t - eps / V - (1 - eps)): where p_t >= 1/2, p_t - 1 is formed as
        // minus the other classes' probability mass (p_t - 1 itself would cancel).
        const T p_t = std::exp(target_logit_[k] - lse);
        T& g_t = g[target - v0];
        if (p_t >= T(0.5)) {
          const T others = std::exp(others_[k].value() - lse);
          g_t = c * (2 * params_.z_loss * lse * p_t + eps * (T(1) - T(1) / T(plan_.classes)) - others);
        } else {
          g_t -= c * (T(1) - eps);
        }
      }
      if (cap != 0) {
        engine::apply_transform_derivative(column, 1, g, len, softcap());
        std::copy(g, g + len, column);
      }
    }
  }

  linear_loss_params<T> params_;
  const std::vector<Index>& target_;  // per kept sample

  std::vector<matrix> scratch_;            // per worker, softcap only: a capped column
  std::vector<lse_partial<T>> partials_;   // tile t, block column i at t * sample_block + i
  std::vector<T> tile_sums_;               // same indexing (label smoothing only)
  std::vector<lse_partial<T>> stats_;      // per kept sample
  std::vector<T> target_logit_;            // per kept sample
  std::vector<double> logit_sum_;          // per kept sample (label smoothing only)
  std::vector<lse_partial<T>> target_tile_others_;  // training, per kept sample: the target's tile without it
  std::vector<lse_partial<T>> others_;              // training, per kept sample: every class but the target
};

}  // namespace xent::detail

#endif
