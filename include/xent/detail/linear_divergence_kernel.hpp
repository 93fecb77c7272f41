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
// JSD and TVD need each class's final p and q: the first pass gives the normalisers (the fold of
// forward KL), a second over the tiles (kept, or recomputed by a GEMM) sums each sample's
// divergence and E_p[a], a = dD/dp (beta log(p / m) for JSD, sign(p - q) / 2 for TVD).
//
// Training then turns each tile (kept, or recomputed by a further GEMM) into dloss/dz:
//   forward KL: (p - q) / T_s,  reverse KL: p ((y - lse_y) - (u - lse_u) - KL) / T_s,
//   JSD, TVD: p (a - E_p[a]) / T_s.
//
// Against a top-k teacher (linear_topk_kernel) the student is lumped onto the teacher's k classes
// plus one tail class, as topk_divergence: one pass over the tiles gathers y at the k classes and
// folds the log-sum-exp of the others (the tail's, direct rather than lse(all) minus the top, which
// cancels when the tail is small); the k + 1 lumped entries are then topk_divergence's own
// (topk_sample_divergence). Training turns a tile into d_e / T_s at the k classes and
// d_tail softmax_tail(y) / T_s elsewhere.

#include "../losses/topk_divergence.hpp"
#include "linear_kernel.hpp"
#include "simd/math.hpp"

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

/// x = log(beta p + (1 - beta) q) over n classes, vectorised (JSD's log of the mixture).
template <class T>
void log_mixture(T* x, const T* p, const T* q, Index n, T beta) {
  Index k = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    const P vb = simd::pset1<P>(beta), va = simd::pset1<P>(T(1) - beta);
    for (; k + ps <= n; k += ps)
      simd::store(x + k, simd::log_any(simd::padd(simd::pmul(vb, simd::load<P>(p + k)), simd::pmul(va, simd::load<P>(q + k)))));
  }
  for (; k < n; ++k) x[k] = std::log(beta * p[k] + (T(1) - beta) * q[k]);
}

/// Which KL the kernel computes.
enum class linear_kl { forward, reverse, jsd, tvd };

template <class T>
struct linear_divergence_params {
  linear_kl kind = linear_kl::forward;
  T inv_student = 1;  // 1 / T_s
  T inv_teacher = 1;  // 1 / T_t
  T beta = 0.5;       // jsd: the student's weight in the mixture, in (0, 1)
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
    if (two_pass()) {
      p_tile_.assign(workers, vector(plan.vocab_block));
      if (params.kind == linear_kl::jsd) log_m_tile_.assign(workers, vector(plan.vocab_block));
      tile_loss_.resize(partials);
      tile_pa_.resize(partials);
      loss_.resize(active.size());
      pa_.resize(active.size());
    }
  }

  /// Both normalisers and the expectation of the kept samples [first, first + count).
  void forward_block(Index first, Index count) {
    this->forward_tiles(first, count, [&](int worker, Index t, Index v0, Index len, tile_map& z) {
      const Index nb = plan_.sample_block;
      if (params_.inv_student != 1) z *= params_.inv_student;  // the tile holds y from here on (kept for the gradient pass)
      for (Index i = 0; i < count; ++i) {
        const T* y = z.col(i).data();
        const T* u = teacher_column(worker, first + i, v0, len);
        const bool forward = params_.kind != linear_kl::reverse;
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
    if (two_pass()) second_pass(first, count);
  }

  /// After forward_block on the same samples: the gradient of sum_k scale(k) * loss_k (see
  /// linear_tiles::backward_tiles for what is written).
  template <class Scale, class GradHidden, class GradWeight>
  void backward_block(Index first, Index count, const Scale& scale, bool first_block, GradHidden& grad_hidden,
                      GradWeight& grad_weight) {
    this->backward_tiles(first, count, first_block, grad_hidden, grad_weight, nullptr,
                         [&](int worker, Index v0, Index len, tile_map& z) {
                           if (!plan_.keep_block && params_.inv_student != 1) z *= params_.inv_student;  // recomputed: the raw logits
                           for (Index i = 0; i < count; ++i) column_grad(worker, first + i, v0, len, scale, z.col(i).data());
                         });
  }

  /// The divergence of kept sample k (after forward_block): NaN when a normaliser is not finite (a
  /// NaN or +inf logit, or every class of one side masked).
  T loss(std::size_t k) const {
    const weighted_lse_partial<T>& a = stats_[k];
    const lse_partial<T>& b = other_stats_[k];
    if (!std::isfinite(a.max) || !std::isfinite(b.max) || !(a.sum > 0)) return std::numeric_limits<T>::quiet_NaN();
    if (two_pass()) return loss_[k];
    // E_a[a - b] - (lse_a - lse_b): the maxima cancel between the two normalisers first.
    return a.w / a.sum - ((a.max - b.max) + (std::log(a.sum) - std::log(b.sum)));
  }

 private:
  bool two_pass() const { return params_.kind == linear_kl::jsd || params_.kind == linear_kl::tvd; }

  /// The student's and the teacher's (max, sum) of kept sample k.
  void normalisers(std::size_t k, lse_partial<T>& s, lse_partial<T>& q) const {
    const bool forward = params_.kind != linear_kl::reverse;
    s = forward ? other_stats_[k] : lse_partial<T>{stats_[k].max, stats_[k].sum};
    q = forward ? lse_partial<T>{stats_[k].max, stats_[k].sum} : other_stats_[k];
  }

  /// JSD, TVD: p and q of one column's tile into the worker's buffers (p_tile_, exp_tile_).
  void probabilities(int worker, std::size_t k, const T* y, const T* u, Index len) {
    lse_partial<T> s, q;
    normalisers(k, s, q);
    T* p = p_tile_[std::size_t(worker)].data();
    T* e = exp_tile_[std::size_t(worker)].data();
    std::copy(y, y + len, p);
    softmax_affine(p, len, s.max, T(1) / s.sum, T(0));
    std::copy(u, u + len, e);
    softmax_affine(e, len, q.max, T(1) / q.sum, T(0));
    if (params_.kind == linear_kl::jsd) log_mixture(log_m_tile_[std::size_t(worker)].data(), p, e, len, params_.beta);
  }

  /// JSD's dD/dp_i = beta log(p_i / m_i) (log p from y - lse_y, exact where p is tiny); TVD's sign(p - q) / 2.
  T derivative(T p, T q, T log_p, T log_m) const {
    if (params_.kind == linear_kl::tvd) return p > q ? T(0.5) : p < q ? T(-0.5) : T(0);
    return p == 0 ? T(0) : params_.beta * (log_p - log_m);
  }

  /// The divergence's share of one class, and dD/dp there into a.
  T term(T p, T q, T log_p, T log_q, T log_m, T& a) const {
    if (params_.kind == linear_kl::tvd) {
      a = p > q ? T(0.5) : p < q ? T(-0.5) : T(0);
      return std::fabs(p - q) / 2;
    }
    a = p == 0 ? T(0) : params_.beta * (log_p - log_m);
    return (p == 0 ? T(0) : p * a) + (q == 0 ? T(0) : (T(1) - params_.beta) * q * (log_q - log_m));
  }

  /// JSD, TVD: each sample's divergence and E_p[dD/dp], summed per tile, merged in tile order.
  void second_pass(Index first, Index count) {
    const Index nb = plan_.sample_block;
    this->revisit_tiles(count, [&](int worker, Index t, Index v0, Index len, tile_map& z, bool recomputed) {
      if (recomputed && params_.inv_student != 1) z *= params_.inv_student;
      for (Index i = 0; i < count; ++i) {
        const std::size_t k = std::size_t(first + i);
        const T* y = z.col(i).data();
        const T* u = teacher_column(worker, first + i, v0, len);
        probabilities(worker, k, y, u, len);
        lse_partial<T> s, q;
        normalisers(k, s, q);
        const T lse_y = s.max + std::log(s.sum), lse_u = q.max + std::log(q.sum);
        const T* p = p_tile_[std::size_t(worker)].data();
        const T* e = exp_tile_[std::size_t(worker)].data();
        const T* log_m = params_.kind == linear_kl::jsd ? log_m_tile_[std::size_t(worker)].data() : nullptr;
        T d = 0, pa = 0;
        for (Index c = 0; c < len; ++c) {
          const T log_p = y[c] - lse_y, log_q = u[c] - lse_u;
          T a;
          d += term(p[c], e[c], log_p, log_q, log_m ? log_m[c] : T(0), a);
          pa += p[c] * a;
        }
        tile_loss_[std::size_t(t * nb + i)] = d;
        tile_pa_[std::size_t(t * nb + i)] = pa;
      }
    });
    for (Index i = 0; i < count; ++i) {
      T d = 0, pa = 0;
      for (Index t = 0; t < plan_.tiles; ++t) {
        d += tile_loss_[std::size_t(t * nb + i)];
        pa += tile_pa_[std::size_t(t * nb + i)];
      }
      loss_[std::size_t(first + i)] = d;
      pa_[std::size_t(first + i)] = pa;
    }
  }

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
    // A NaN in a makes its exponential, and so the sum, NaN, whatever the max makes of it.
    const T max = Eigen::Map<const vector>(a, len).maxCoeff();
    if (max == -inf) return {};
    if (max == inf || std::isnan(max)) return {nan, nan, nan};
    T* e = exp_tile_[std::size_t(worker)].data();
    std::copy(a, a + len, e);
    softmax_affine(e, len, max, T(1), T(0));
    T sum = 0, w = 0;
    Index c = 0;
    if constexpr (simd::has_packet_exp<T>) {
      using P = simd::packet<T>;
      constexpr Index ps = simd::packet_size<T>;
      const P zero = simd::pset1<P>(T(0));
      P vsum = zero, vw = zero;
      for (; c + ps <= len; c += ps) {
        const P ve = simd::load<P>(e + c);
        vsum = simd::padd(vsum, ve);
        const P term = simd::pmul(ve, simd::psub(simd::load<P>(a + c), simd::load<P>(b + c)));
        vw = simd::padd(vw, simd::pselect(simd::pcmp_eq(ve, zero), zero, term));
      }
      sum = simd::predux(vsum);
      w = simd::predux(vw);
    }
    for (; c < len; ++c) {
      sum += e[c];
      if (e[c] != 0) w += e[c] * (a[c] - b[c]);
    }
    if (std::isnan(sum)) return {nan, nan, nan};
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
    lse_partial<T> s, q;
    normalisers(kk, s, q);
    const T lse_y = s.max + std::log(s.sum), lse_u = q.max + std::log(q.sum);
    T* e = exp_tile_[std::size_t(worker)].data();
    if (two_pass()) {
      probabilities(worker, kk, y, u, len);
      const T* p = p_tile_[std::size_t(worker)].data();
      const T* log_m = params_.kind == linear_kl::jsd ? log_m_tile_[std::size_t(worker)].data() : nullptr;
      for (Index i = 0; i < len; ++i)
        y[i] = c * p[i] * (derivative(p[i], e[i], y[i] - lse_y, log_m ? log_m[i] : T(0)) - pa_[kk]);
    } else if (params_.kind == linear_kl::forward) {
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
  std::vector<vector> p_tile_;                      // jsd, tvd, per worker: p of one column
  std::vector<vector> log_m_tile_;                  // jsd, per worker: log of the mixture of one column
  std::vector<T> tile_loss_, tile_pa_;              // jsd, tvd: per tile and block column, as expected_
  std::vector<T> loss_, pa_;                        // jsd, tvd, per kept sample: D and E_p[dD/dp]
};


/// The student W^T h against a top-k teacher (k x N indices and values, checked), over the kept
/// samples `active`; the lumped divergence as topk_divergence's.
template <class T, bool VByD, class Weight, class Hidden, class I, class V>
class linear_topk_kernel : public linear_tiles<T, VByD, Weight, Hidden> {
  using base = linear_tiles<T, VByD, Weight, Hidden>;
  using base::active_;
  using base::plan_;

 public:
  using tile_map = typename base::tile_map;

  linear_topk_kernel(const linear_plan& plan, const topk_form& form, T inv_student, const Weight& weight, const Hidden& hidden,
                     const topk_teacher<I, V>& teacher, const std::vector<Index>& active, bool training)
      : base(plan, weight, hidden, nullptr, active, training),
        form_(form),
        inv_student_(inv_student),
        teacher_(teacher),
        k_(form.k) {
    const std::size_t kept = active.size(), k = std::size_t(k_);
    // Each kept sample's teacher classes ascending, with their position in the teacher's column:
    // a tile's classes are then one run of it.
    order_.resize(kept * k);
    for (std::size_t s = 0; s < kept; ++s) {
      const Index j = active[s];
      for (Index i = 0; i < k_; ++i) order_[s * k + std::size_t(i)] = {static_cast<Index>(teacher.indices(i, j)), i};
      std::sort(order_.begin() + std::ptrdiff_t(s * k), order_.begin() + std::ptrdiff_t((s + 1) * k));
    }
    lp_.resize(kept * (k + 1));
    lq_.resize(k + 1);
    if (training) d_.resize(kept * (k + 1));
    tail_.resize(std::size_t(plan.tiles * plan.sample_block));
    tail_lse_.resize(kept);
    loss_.resize(kept);
  }

  /// The lumped divergence of the kept samples [first, first + count) (and, training, its d).
  void forward_block(Index first, Index count) {
    const Index nb = plan_.sample_block;
    this->forward_tiles(first, count, [&](int, Index t, Index v0, Index len, tile_map& z) {
      if (inv_student_ != 1) z *= inv_student_;  // the tile holds y from here on (kept for the gradient pass)
      for (Index i = 0; i < count; ++i) {
        const std::size_t s = std::size_t(first + i);
        T* y = z.col(i).data();
        const auto [b, e] = run_of(s, v0, len);
        // The teacher's classes leave the tail's fold as -inf, then get their y back.
        double* lp = lp_.data() + s * std::size_t(k_ + 1);
        for (auto it = b; it != e; ++it) {
          lp[it->second] = static_cast<double>(y[it->first - v0]);
          y[it->first - v0] = -std::numeric_limits<T>::infinity();
        }
        tail_[std::size_t(t * nb + i)] = lse_partial_contiguous(y, len);
        for (auto it = b; it != e; ++it) y[it->first - v0] = static_cast<T>(lp[it->second]);
      }
    });
    for (Index i = 0; i < count; ++i) {
      const std::size_t s = std::size_t(first + i), k1 = std::size_t(k_ + 1);
      lse_partial<T> tail = lse_partial<T>::identity();
      for (Index t = 0; t < plan_.tiles; ++t) tail = merge(tail, tail_[std::size_t(t * nb + i)]);
      tail_lse_[s] = tail.value();
      const Index j = active_[s];
      const double lse = teacher_.lse.size() != 0 ? static_cast<double>(teacher_.lse(j)) : 0.0;
      loss_[s] = static_cast<T>(topk_sample_divergence(form_, teacher_.values.col(j).data(), 1,
                                                       teacher_.lse.size() != 0 ? &lse : nullptr, double(tail_lse_[s]),
                                                       lp_.data() + s * k1, lq_.data(), this->training_ ? d_.data() + s * k1 : nullptr));
    }
  }

  /// After forward_block on the same samples: the gradient of sum_k scale(k) * loss_k (see
  /// linear_tiles::backward_tiles for what is written).
  template <class Scale, class GradHidden, class GradWeight>
  void backward_block(Index first, Index count, const Scale& scale, bool first_block, GradHidden& grad_hidden,
                      GradWeight& grad_weight) {
    this->backward_tiles(first, count, first_block, grad_hidden, grad_weight, nullptr,
                         [&](int, Index v0, Index len, tile_map& z) {
                           if (!plan_.keep_block && inv_student_ != 1) z *= inv_student_;  // recomputed: the raw logits
                           for (Index i = 0; i < count; ++i) column_grad(std::size_t(first + i), v0, len, scale, z.col(i).data());
                         });
  }

  /// The lumped divergence of kept sample k (after forward_block).
  T loss(std::size_t k) const { return loss_[k]; }

 private:
  using run = typename std::vector<std::pair<Index, Index>>::const_iterator;

  /// The teacher classes of kept sample s in [v0, v0 + len).
  std::pair<run, run> run_of(std::size_t s, Index v0, Index len) const {
    const run b = order_.begin() + std::ptrdiff_t(s * std::size_t(k_)), e = b + std::ptrdiff_t(k_);
    auto below = [](const std::pair<Index, Index>& a, Index c) { return a.first < c; };
    const run lo = std::lower_bound(b, e, v0, below);
    return {lo, std::lower_bound(lo, e, v0 + len, below)};
  }

  /// y (one column of the tile) becomes scale / T_s times dD/dy in place.
  template <class Scale>
  void column_grad(std::size_t s, Index v0, Index len, const Scale& scale, T* y) {
    const double up = double(scale(s)) * double(inv_student_);
    const double* d = d_.data() + s * std::size_t(k_ + 1);
    const T tail_lse = tail_lse_[s];
    const auto [b, e] = run_of(s, v0, len);
    // The tail classes: d_tail p_c / P_tail, p_c / P_tail = exp(y_c - the tail's lse), never above 1.
    // No tail mass (k = C, or every other class -inf) leaves 0 there, not 0 * exp(+inf).
    if (form_.tail && tail_lse != -std::numeric_limits<T>::infinity())
      softmax_affine(y, len, tail_lse, static_cast<T>(d[k_] * up), T(0));
    else
      std::fill(y, y + len, T(0));
    for (auto it = b; it != e; ++it) y[it->first - v0] = static_cast<T>(d[it->second] * up);
  }

  topk_form form_;
  T inv_student_;
  const topk_teacher<I, V>& teacher_;
  Index k_;
  std::vector<std::pair<Index, Index>> order_;  // per kept sample: (class, position) by class
  std::vector<double> lp_, d_;                  // per kept sample: k + 1 lumped entries
  std::vector<double> lq_;                      // the teacher's lumped log-probabilities of the sample at hand
  std::vector<lse_partial<T>> tail_;            // tile t, block column i at t * sample_block + i
  std::vector<T> tail_lse_, loss_;              // per kept sample
};

}  // namespace xent::detail

#endif
