#ifndef XENT_DETAIL_LOSSES_SPATIAL_HPP
#define XENT_DETAIL_LOSSES_SPATIAL_HPP

// The class-index cross-entropy over torch's [N, C, D] layout (core/spatial.hpp) without a copy.
// Each n is a [C, D] block whose classes are D apart and whose samples are adjacent, so a packet of
// consecutive d holds one class of several samples: the lanes are samples, the loop runs over the
// classes (ATen's non-last-dim softmax), with plain loads, no gathers. A block of lanes costs a max
// pass and an exp pass over its C packets (the second from L1), and one more for the gradient.
// What the lanes do not take goes to the sweep driver (engine/sweep.hpp) on a view of the same
// memory (class stride D, sample stride 1): the ragged end of each n, a block with a non-finite
// max (the special values are the driver's), and the options the lanes do not implement (softcap,
// z-loss, Poly-1, excluded smoothing classes, the per-sample lse, bf16 / half). Probability
// targets (a second [N, C, D] view) take the same packets, one more load per class, and so do
// softmax and log_softmax over the class axis (a max pass, a sum pass, a write pass), and the
// softmax focal loss (a max pass and a sum pass, the focal terms per lane, one more for the gradient).
// spatial_packets is the block setup all of them share.

#include "../../core/spatial.hpp"
#include "../engine/threads.hpp"
#include "cross_entropy.hpp"
#include "softmax.hpp"
#include "target_probability.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace xent::detail {

/// The samples_view of samples [d0, d0 + len) of block n of a spatial view.
template <class T>
samples_view<T> spatial_block(const spatial_view<T>& v, Index n, Index d0, Index len) {
  return {v.data + n * v.classes * v.spatial + d0, len, v.classes, v.spatial, 1};
}

/// The block setup of every spatial kernel: packets of ps consecutive samples of each n through
/// lanes(x + offset, n * D + d0, offset) (false: that packet through the driver, one thread), the
/// ragged end of each n through through_driver(n, d0, len, threads). The lanes run only where the
/// compute type is the storage type and has a packet exp, and when use_lanes; lanes is generic in
/// its pointer so that its body is never instantiated otherwise.
template <class S, class Lanes, class Driver>
void spatial_packets(const spatial_view<const S>& x, int requested_threads, bool use_lanes, const Lanes& lanes,
                     const Driver& through_driver) {
  const Index N = x.batch, C = x.classes, D = x.spatial;
  Index lane_end = 0;  // the samples [0, lane_end) of each n the lanes take
  if constexpr (std::is_same_v<S, compute_t<S>> && simd::has_packet_exp<S>) {
    constexpr Index ps = simd::packet_size<S>;
    if (use_lanes && D >= ps) {
      const Index per_n = D / ps;
      lane_end = per_n * ps;
      parallel_for(N * per_n, thread_count(requested_threads, N * C * D), [&](Index i) {
        const Index n = i / per_n, d0 = (i % per_n) * ps, offset = n * C * D + d0;
        if (!lanes(x.data + offset, n * D + d0, offset)) through_driver(n, d0, ps, 1);
      });
    }
  }
  if (lane_end == D) return;
  for (Index n = 0; n < N; ++n) through_driver(n, lane_end, D - lane_end, requested_threads);
}

/// One packet of consecutive samples j0 .. j0 + ps - 1 of a [C, D] block: x and g point at class 0
/// of the first lane (g null: no gradient). Returns false, having written nothing, when a lane's
/// max is not finite. The formulas are small_classes_block's (the loss relative to the lane's max,
/// the target's gradient from the other classes' mass where p_t >= 1/2).
template <class T, class TargetAt, class ScaleAt>
bool spatial_lanes(const T* x, Index C, Index D, Index j0, const fused_setup<T>& st, const TargetAt& target_at, T* losses,
                   const ScaleAt& scale, T* g) {
  using P = simd::packet<T>;
  constexpr Index ps = simd::packet_size<T>;
  using namespace simd;
  using engine::chain_terms;
  P m = load<P>(x);
  for (Index k = 1; k < C; ++k) m = max_nan(m, load<P>(x + k * D));
  const P zero = pset1<P>(T(0));
  // m - m is 0 exactly when m is finite (NaN for NaN and for either infinity).
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  // The sums in chains of chain_terms classes, each chain added to the total (the reduction policy).
  P s = zero, a = zero, b = zero, s_total = zero, a_total = zero, b_total = zero;
  const bool smoothing = st.smoothing != 0;
  for (Index k0 = 0; k0 < C; k0 += chain_terms) {
    const Index k1 = std::min(C, k0 + chain_terms);
    s = zero, a = zero, b = zero;
    for (Index k = k0; k < k1; ++k) {
      const P d = psub(load<P>(x + k * D), m);
      s = padd(s, exp_for_sum(d));
      if (smoothing) {
        a = padd(a, d);
        if (st.weight) b = pmadd(pset1<P>(st.weight[k]), d, b);
      }
    }
    s_total = padd(s_total, s);
    a_total = padd(a_total, a);
    b_total = padd(b_total, b);
  }
  s = s_total;
  alignas(64) T lane_max[ps], lane_target[ps], lane_w[ps], lane_t[ps];
  pstore(lane_max, m);
  Index t[ps];
  for (Index l = 0; l < ps; ++l) {
    t[l] = target_at(j0 + l);
    const bool live = t[l] >= 0;
    lane_target[l] = live ? x[t[l] * D + l] : lane_max[l];
    lane_w[l] = live ? st.weight_at(t[l]) : T(0);
    lane_t[l] = T(t[l]);
  }
  const P log_s = plog(s), w_t = pload<P>(lane_w);
  P loss = pmul(w_t, psub(log_s, psub(pload<P>(lane_target), m)));
  if (smoothing) {
    const P eps = pset1<P>(st.smoothing), eps_c = pset1<P>(st.smoothing / T(C));
    const P sum_wlp =
        st.weight ? psub(b_total, pmul(pset1<P>(st.weight_total), log_s)) : psub(a_total, pmul(pset1<P>(T(C)), log_s));
    loss = psub(pmul(psub(pset1<P>(T(1)), eps), loss), pmul(eps_c, sum_wlp));
  }
  pstoreu(losses + j0, loss);
  for (Index l = 0; l < ps; ++l)
    if (t[l] < 0) losses[j0 + l] = T(0);  // an ignored lane's smoothing term is not its loss
  if (!g) return true;
  alignas(64) T lane_c[ps];
  for (Index l = 0; l < ps; ++l) lane_c[l] = t[l] >= 0 ? scale(j0 + l) : T(0);
  const P c = pload<P>(lane_c);
  const P eps_c = pset1<P>(st.smoothing / T(C));
  const P target_term = pmul(c, pmul(pset1<P>(T(1) - st.smoothing), w_t));
  const P smooth_scale = pmul(c, eps_c);
  const P prob_scale = pdiv(padd(target_term, pmul(smooth_scale, pset1<P>(st.weight_total))), s);
  const P targets = pload<P>(lane_t);
  P others = zero;  // per lane: the mass exp(x_k - max) of the classes other than the target
  for (Index k = 0; k < C; ++k) {
    const P e = exp_nonpositive(psub(load<P>(x + k * D), m));
    others = padd(others, pandnot(e, pcmp_eq(targets, pset1<P>(T(k)))));
    pstoreu(g + k * D, psub(pmul(e, prob_scale), pmul(smooth_scale, pset1<P>(st.weight_at(k)))));
  }
  // The target's entry as fused_grad::at_target forms it.
  const P e_t = exp_nonpositive(psub(pload<P>(lane_target), m));
  const P from_others = psub(pmul(smooth_scale, psub(pset1<P>(st.weight_total), w_t)), pmul(prob_scale, others));
  const P direct = psub(pmul(e_t, prob_scale), padd(target_term, pmul(smooth_scale, w_t)));
  const P target = pselect(pcmp_lt(padd(e_t, e_t), s), direct, from_others);
  alignas(64) T lane_target_g[ps];
  pstore(lane_target_g, target);
  for (Index l = 0; l < ps; ++l)
    if (t[l] >= 0) g[t[l] * D + l] = lane_target_g[l];
  return true;
}

/// The class-index cross-entropy of a spatial view: losses (N * D, (n, d) order; 0 when ignored),
/// lse_out (null or N * D), and with grad (a view of the same shape, possibly x's own memory) the
/// gradient times scale(j). target_at(j) and scale(j) take the flat sample index n * D + d.
template <class S, class TargetAt, class ScaleAt>
void spatial_cross_entropy(const spatial_view<const S>& x, const fused_setup<compute_t<S>>& st, int requested_threads,
                           const TargetAt& target_at, compute_t<S>* losses, compute_t<S>* lse_out, const ScaleAt& scale,
                           const spatial_view<S>* grad) {
  const Index N = x.batch, C = x.classes, D = x.spatial;
  // D = 1 is an [N, C] matrix, classes contiguous: the driver's own layout (and its small-C lanes).
  if (D == 1) {
    const samples_view<const S> v{x.data, N, C, 1, C};
    const samples_view<S> gv = grad ? samples_view<S>{grad->data, N, C, 1, C} : samples_view<S>{};
    fused_cross_entropy_dispatch(v, st, requested_threads, target_at, losses, lse_out, scale, grad ? &gv : nullptr);
    return;
  }
  // Samples [d0, d0 + len) of block n through the driver, threads inside it.
  auto through_driver = [&](Index n, Index d0, Index len, int threads) {
    const Index offset = n * D + d0;
    const samples_view<const S> v = spatial_block(x, n, d0, len);
    const samples_view<S> gv = grad ? spatial_block(*grad, n, d0, len) : samples_view<S>{};
    fused_cross_entropy_dispatch(
        v, st, threads, [&](Index j) { return target_at(offset + j); }, losses + offset, lse_out ? lse_out + offset : nullptr,
        [&](Index j) { return scale(offset + j); }, grad ? &gv : nullptr);
  };
  const bool use_lanes = st.softcap == 0 && st.z_loss == 0 && st.poly == 0 && !st.excluded && !lse_out;
  spatial_packets(
      x, requested_threads, use_lanes,
      [&](const auto* xp, Index j0, Index offset) {
        return spatial_lanes(xp, C, D, j0, st, target_at, losses, scale, grad ? grad->data + offset : nullptr);
      },
      through_driver);
}

/// One packet of consecutive samples j0 .. j0 + ps - 1 against probability targets: x, y and g
/// point at class 0 of the first lane (g null: no gradient), weight is null or one per class, live
/// the lanes the mask keeps. Returns false, having written nothing, when a lane's max is not
/// finite. prob_ce_policy's formulas relative to the lane's max: loss = Q log(s) - sum_k q_k (x_k - m),
/// q_k = (y_k (1 - eps) + eps / C) w_k, Q = sum_k q_k; g_k = c (exp(x_k - m) Q / s - q_k).
template <class T, class ScaleAt>
bool spatial_prob_lanes(const T* x, const T* y, Index C, Index D, Index j0, const T* weight, T keep, T spread, bool safe,
                        const bool* mask, T* losses, const ScaleAt& scale, T* g) {
  using P = simd::packet<T>;
  constexpr Index ps = simd::packet_size<T>;
  using namespace simd;
  using engine::chain_terms;
  P m = load<P>(x);
  for (Index k = 1; k < C; ++k) m = max_nan(m, load<P>(x + k * D));
  const P zero = pset1<P>(T(0));
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  const P keep_p = pset1<P>(keep), spread_p = pset1<P>(spread);
  auto q_of = [&](Index k) {
    const P q = pmadd(load<P>(y + k * D), keep_p, spread_p);
    return weight ? pmul(q, pset1<P>(weight[k])) : q;
  };
  // The sums in chains of chain_terms classes, each chain added to the total (the reduction policy).
  P s_total = zero, a_total = zero, q_total = zero;
  for (Index k0 = 0; k0 < C; k0 += chain_terms) {
    const Index k1 = std::min(C, k0 + chain_terms);
    P s = zero, a = zero, qs = zero;
    for (Index k = k0; k < k1; ++k) {
      const P d = psub(load<P>(x + k * D), m);
      const P q = q_of(k);
      s = padd(s, exp_for_sum(d));
      // safe: a zero q on a -inf logit adds 0 (Optax's), not torch's 0 * -inf = NaN.
      a = pmadd(q, safe ? pandnot(d, pcmp_eq(q, zero)) : d, a);
      qs = padd(qs, q);
    }
    s_total = padd(s_total, s);
    a_total = padd(a_total, a);
    q_total = padd(q_total, qs);
  }
  alignas(64) T lane_live[ps], lane_c[ps];
  for (Index l = 0; l < ps; ++l) {
    const bool live = !mask || mask[j0 + l];
    // All bits set or none: a select mask (the bits of a NaN, never read as a number).
    std::memset(&lane_live[l], live ? 0xff : 0, sizeof(T));
    lane_c[l] = live && g ? scale(j0 + l) : T(0);
  }
  const P live = pload<P>(lane_live);
  // A left-out lane's inputs are never a number it reports: its loss and gradient are 0.
  pstoreu(losses + j0, pselect(live, psub(pmul(q_total, plog(s_total)), a_total), zero));
  if (!g) return true;
  const P c = pload<P>(lane_c), q_per_sum = pdiv(q_total, s_total);
  for (Index k = 0; k < C; ++k) {
    const P e = exp_nonpositive(psub(load<P>(x + k * D), m));
    pstoreu(g + k * D, pselect(live, pmul(c, psub(pmul(e, q_per_sum), q_of(k))), zero));
  }
  return true;
}

/// cross_entropy against probability targets y (the logits' shape) of a spatial view: losses
/// (N * D, (n, d) order; 0 when left out by mask) and with grad (possibly x's own memory, never
/// y's) the gradient times scale(j). Packets of consecutive samples as spatial_cross_entropy's;
/// the ragged end of each n, a block with a non-finite max and bf16 / half go to the sweep driver
/// (prob_ce_policy) on views of the same memory.
template <class S, class ScaleAt>
void spatial_prob_cross_entropy(const spatial_view<const S>& x, const spatial_view<const S>& y, const compute_t<S>* weight,
                                compute_t<S> smoothing, bool safe, const bool* mask, int requested_threads,
                                compute_t<S>* losses, const ScaleAt& scale, const spatial_view<S>* grad) {
  using T = compute_t<S>;
  const Index N = x.batch, C = x.classes, D = x.spatial;
  // Samples [j0, j0 + len) of the view through the driver (n's block from d0), threads inside it.
  auto through_driver = [&](Index n, Index d0, Index len, int threads) {
    const Index offset = n * D + d0;
    const samples_view<const S> v = D == 1 ? samples_view<const S>{x.data + n * C, len, C, 1, C} : spatial_block(x, n, d0, len);
    const samples_view<const S> yv = D == 1 ? samples_view<const S>{y.data + n * C, len, C, 1, C} : spatial_block(y, n, d0, len);
    const samples_view<S> gv = !grad ? samples_view<S>{}
                               : D == 1 ? samples_view<S>{grad->data + n * C, len, C, 1, C}
                                        : spatial_block(*grad, n, d0, len);
    auto local_scale = [&](Index j) { return scale(offset + j); };
    auto run = [&](auto weighted) {
      const prob_ce_policy<S, decltype(local_scale), decltype(weighted)::value> policy(
          weight, smoothing, C, losses + offset, local_scale, grad != nullptr, mask ? mask + offset : nullptr, T(0), safe);
      engine::sweep(policy, engine::sweep_views<S>{v, &yv, grad ? &gv : nullptr}, threads);
    };
    if (weight)
      run(std::true_type{});
    else
      run(std::false_type{});
  };
  // D = 1 is an [N, C] matrix, classes contiguous: the driver's own layout.
  if (D == 1) {
    through_driver(0, 0, N, requested_threads);
    return;
  }
  const T keep = T(1) - smoothing, spread = smoothing / T(C);
  spatial_packets(
      x, requested_threads, true,
      [&](const auto* xp, Index j0, Index offset) {
        return spatial_prob_lanes(xp, y.data + offset, C, D, j0, weight, keep, spread, safe, mask, losses, scale,
                                  grad ? grad->data + offset : nullptr);
      },
      through_driver);
}

/// One packet of consecutive samples j0 .. j0 + ps - 1 of the softmax focal loss (no smoothing):
/// x and g point at class 0 of the first lane (g null: no gradient). Returns false, having written
/// nothing, when a lane's max or focal factor is not finite (the driver's special values). The max
/// and sum passes are packets; the focal terms of lp_t = (x_t - m) - log(s), one per lane, are
/// focal_formula's own (the driver's, so the two agree to the sum's rounding); the write pass is
/// scaled_probability's, g_k = c F (p_k - [k = t]) with the target's entry from the other classes'
/// mass where p_t >= 1/2.
template <class T, class TargetAt, class ScaleAt>
bool spatial_focal_lanes(const T* x, Index C, Index D, Index j0, const focal_formula<T>& f, const TargetAt& target_at, T* losses,
                         const ScaleAt& scale, T* g) {
  using P = simd::packet<T>;
  constexpr Index ps = simd::packet_size<T>;
  using namespace simd;
  using engine::chain_terms;
  P m = load<P>(x);
  for (Index k = 1; k < C; ++k) m = max_nan(m, load<P>(x + k * D));
  const P zero = pset1<P>(T(0));
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  P s_total = zero;
  for (Index k0 = 0; k0 < C; k0 += chain_terms) {
    const Index k1 = std::min(C, k0 + chain_terms);
    P s = zero;
    for (Index k = k0; k < k1; ++k) s = padd(s, exp_for_sum(psub(load<P>(x + k * D), m)));
    s_total = padd(s_total, s);
  }
  alignas(64) T lane_max[ps], lane_sum[ps], lane_loss[ps], lane_cf[ps], lane_target[ps], lane_t[ps];
  pstore(lane_max, m);
  pstore(lane_sum, s_total);
  Index t[ps];
  for (Index l = 0; l < ps; ++l) {
    t[l] = target_at(j0 + l);
    lane_t[l] = T(t[l]);
    lane_loss[l] = lane_cf[l] = T(0);
    lane_target[l] = lane_max[l];
    if (t[l] < 0) continue;
    lane_target[l] = x[t[l] * D + l];
    const T lp = (lane_target[l] - lane_max[l]) - std::log(lane_sum[l]);
    lane_loss[l] = f.loss(lp, t[l]);
    if (!g) continue;
    const T F = f.factor(lp, t[l]);
    if (!std::isfinite(F)) return false;  // a -inf target logit: the driver's NaN gradient
    lane_cf[l] = scale(j0 + l) * F;
  }
  pstoreu(losses + j0, pload<P>(lane_loss));
  if (!g) return true;
  const P cf = pload<P>(lane_cf), prob_scale = pdiv(cf, s_total), targets = pload<P>(lane_t);
  P others = zero;  // per lane: the mass exp(x_k - max) of the classes other than the target
  for (Index k = 0; k < C; ++k) {
    const P e = exp_nonpositive(psub(load<P>(x + k * D), m));
    others = padd(others, pandnot(e, pcmp_eq(targets, pset1<P>(T(k)))));
    pstoreu(g + k * D, pmul(e, prob_scale));
  }
  const P e_t = exp_nonpositive(psub(pload<P>(lane_target), m));
  const P target = pselect(pcmp_lt(padd(e_t, e_t), s_total), psub(pmul(e_t, prob_scale), cf), pnegate(pmul(prob_scale, others)));
  alignas(64) T lane_target_g[ps];
  pstore(lane_target_g, target);
  for (Index l = 0; l < ps; ++l)
    if (t[l] >= 0) g[t[l] * D + l] = lane_target_g[l];
  return true;
}

/// softmax (Log = false) or log_softmax (Log = true) of one packet of consecutive samples into
/// out (may be x). Returns false, having written nothing, when a lane's max is not finite (the
/// driver's NaN rows). normalizer's formulas per lane: exp(x - m) / s, or (x - m) - log(s).
template <bool Log, class T>
bool spatial_normalize_lanes(const T* x, T* out, Index C, Index D) {
  using P = simd::packet<T>;
  using namespace simd;
  using engine::chain_terms;
  P m = load<P>(x);
  for (Index k = 1; k < C; ++k) m = max_nan(m, load<P>(x + k * D));
  const P zero = pset1<P>(T(0));
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  // The chains' totals with their rounding errors kept (Knuth's two-sum): a probability carries the
  // sum's relative error whole, and the driver folds its chains in double (at C = 300 a plain float
  // fold was 15 ulp from it).
  P s_hi = zero, s_lo = zero;
  for (Index k0 = 0; k0 < C; k0 += chain_terms) {
    const Index k1 = std::min(C, k0 + chain_terms);
    P s = zero;
    for (Index k = k0; k < k1; ++k) s = padd(s, exp_for_sum(psub(load<P>(x + k * D), m)));
    const P t = padd(s_hi, s), b = psub(t, s_hi);
    s_lo = padd(s_lo, padd(psub(s_hi, psub(t, b)), psub(s, b)));
    s_hi = t;
  }
  const P s_total = padd(s_hi, s_lo);
  if constexpr (Log) {
    const P log_s = plog(s_total);
    for (Index k = 0; k < C; ++k) pstoreu(out + k * D, psub(psub(load<P>(x + k * D), m), log_s));
  } else {
    const P inv_s = pdiv(pset1<P>(T(1)), s_total);
    for (Index k = 0; k < C; ++k) pstoreu(out + k * D, pmul(exp_nonpositive(psub(load<P>(x + k * D), m)), inv_s));
  }
  return true;
}

/// softmax / log_softmax over the class axis of a spatial view (torch's dim 1 of [N, C, d1, ...])
/// into out (the same shape; x's own memory or apart from it): packets of consecutive samples, the
/// ragged ends and non-finite blocks through the driver (normalize_samples).
template <bool Log, class S>
void spatial_normalize(const spatial_view<const S>& x, const spatial_view<S>& out, int requested_threads) {
  const Index N = x.batch, C = x.classes, D = x.spatial;
  if (D == 1) {
    normalize_samples<Log>(samples_view<const S>{x.data, N, C, 1, C}, samples_view<S>{out.data, N, C, 1, C}, requested_threads);
    return;
  }
  auto through_driver = [&](Index n, Index d0, Index len, int threads) {
    normalize_samples<Log>(spatial_block(x, n, d0, len), spatial_block(out, n, d0, len), threads);
  };
  spatial_packets(
      x, requested_threads, true,
      [&](const auto* xp, Index, Index offset) { return spatial_normalize_lanes<Log>(xp, out.data + offset, C, D); },
      through_driver);
}

}  // namespace xent::detail

#endif
