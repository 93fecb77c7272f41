#ifndef XENT_DETAIL_LOSSES_CROSS_ENTROPY_HPP
#define XENT_DETAIL_LOSSES_CROSS_ENTROPY_HPP

// cross_entropy's formula on the sweep driver (engine/sweep.hpp), for class-index and probability
// targets. Every form is
//   loss_j = -sum_k q_k log_softmax(z)_k (+ s lse^2, PaLM's z-loss),   z = x or softcap * tanh(x / softcap),
// for a per-sample target distribution q (weights, smoothing and the target folded in), so that
//   d loss_j / d z_k = p_k (Q + 2 s lse) - q_k,   Q = sum_k q_k,  p = softmax(z).
// One read of a chunk gives the log-sum-exp partial and, when q is spread (label smoothing,
// probability targets), sum_k q_k (z_k - ref) and sum_k q_k; the target's logit is read once more.
// The scalar reference the tests hold this to: tests/categorical_reference.hpp.

#include "../engine/sweep.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace xent::detail {

/// What one read of a chunk gathers besides the partial: label smoothing needs the sum of the
/// logits (weighted by the class weights when there are any); probability targets the sum of
/// q_k z_k with q_k = (y_k (1 - eps) + eps / C) w_k, and of q_k.
enum class chunk_sums { none, logits, weighted_logits, targets };

/// What the kernel knows of one call. T is the compute type.
template <class T>
struct fused_setup {
  const T* weight = nullptr;  // one per class, in T; null when unweighted
  T smoothing = 0;
  T weight_total = 0;  // sum of the weights, C when unweighted
  Index classes = 0;
  T softcap = 0;  // > 0: the logits are c * tanh(x / c) (Gemma 2); 0: as given
  T z_loss = 0;   // s: s * lse^2 is added to each sample's loss (PaLM)
  T poly = 0;     // Poly-1's epsilon: eps * (1 - P) is added, P the (smoothed) target's probability
  // label_smoothing_excluded (all three null / 0 when no class is excluded): the smoothing mass
  // goes to the other classes only, as if an excluded class had weight 0 in the smoothing term
  // alone; the target's own weight (weight_at) is untouched. weight_total is then sum_k w_k s_k.
  const T* smooth_weight = nullptr;            // w_k s_k, s_k = 0 for an excluded class, else 1
  const unsigned char* excluded = nullptr;     // one flag per class
  Index smooth_classes = 0;                    // C - E, the smoothing's divisor

  T weight_at(Index k) const { return weight ? weight[k] : T(1); }
  /// The weights of the smoothing term: the class weights, or w_k s_k with excluded classes.
  const T* smoothing_weights() const { return smooth_weight ? smooth_weight : weight; }
  T smoothing_weight_at(Index k) const { return smoothing_weights() ? smoothing_weights()[k] : T(1); }
  /// eps of a sample whose target is t: none when the target itself is excluded (plain NLL).
  T smoothing_at(Index t) const { return excluded && excluded[t] ? T(0) : smoothing; }
  T smoothing_divisor() const { return static_cast<T>(smooth_classes > 0 ? smooth_classes : classes); }
  chunk_sums sums() const {
    if (smoothing == 0) return chunk_sums::none;
    return smoothing_weights() ? chunk_sums::weighted_logits : chunk_sums::logits;
  }
  engine::transform<T> transform() const { return {softcap, T(1)}; }
};

/// A whole sample's statistics: its partial and the sums relative to `ref` (its first chunk's max
/// when finite, else 0), which keeps the sums of large logits (1e30, or 1e4 in float) free of
/// cancellation. The fold is the same whoever computed the chunks (one thread, or several splitting
/// the classes), so results do not depend on the thread count.
template <class T>
struct sample_summary {
  lse_partial<T> partial = lse_partial<T>::identity();
  T ref = 0;
  T logit_sum = 0;     // sum_k (z_k - ref), or sum_k w_k (z_k - ref), or sum_k q_k (z_k - ref)
  T weighted_sum = 0;  // the same as logit_sum for the weighted forms (kept apart for readers)
  T weight_sum = 0;    // sum_k w_k or sum_k q_k
  T poly_mass = 0;     // probability targets with Poly-1: P = sum_k y~_k p_k (the second read's)
  bool empty = true;
};

/// The chunk statistics of cross_entropy (engine/sweep.hpp's Stats).
template <class T, chunk_sums Sums, bool Weighted = Sums == chunk_sums::weighted_logits>
struct ce_stats {
  static constexpr int sums = Sums == chunk_sums::none ? 1 : Sums == chunk_sums::logits ? 2 : 3;
  static constexpr bool uses_y = Sums == chunk_sums::targets;
  static constexpr bool uses_w = Weighted;
  static constexpr bool max_of_y = false, exp_of_x = true;
  T keep = 1;    // targets: 1 - eps
  T spread = 0;  // targets: eps / C
  bool safe = false;  // targets: a zero q on a -inf logit adds 0, not 0 * -inf = NaN (Optax's safe form)
  using sample = sample_summary<T>;

  template <class V>
  void accumulate(V* acc, const V&, const V& d, const V&, const V& y, const V& w, const V&) const {
    if constexpr (Sums == chunk_sums::logits) {
      acc[0] = simd::padd(acc[0], d);
    } else if constexpr (Sums == chunk_sums::weighted_logits) {
      acc[0] = simd::pmadd(w, d, acc[0]);
      acc[1] = simd::padd(acc[1], w);
    } else if constexpr (Sums == chunk_sums::targets) {
      const V q = simd::pmul(simd::pmadd(y, simd::pset1<V>(keep), simd::pset1<V>(spread)), w);
      // The branch is the same for the whole call: the compiler hoists it out of the loops.
      acc[0] = simd::pmadd(q, safe ? simd::pandnot(d, simd::pcmp_eq(q, simd::pset1<V>(T(0)))) : d, acc[0]);
      acc[1] = simd::padd(acc[1], q);
    }
  }

  /// A chunk whose max is not finite: NaN decides; +inf decides unless a NaN comes (merge sees to
  /// that); all -inf adds nothing. The sums are taken relative to 0, so a -inf logit makes them
  /// -inf (or NaN where its weight is 0), as torch's sums of log-probabilities.
  void nonfinite(engine::chunk_stats<T, sums>& c, const T* x, const T* y, const T* w, Index n) const {
    constexpr T inf = std::numeric_limits<T>::infinity();
    c.sum[0] = std::isnan(c.max) ? c.max : c.max == inf ? T(1) : T(0);
    for (Index i = 0; i < n; ++i) {
      T acc[sums > 1 ? sums - 1 : 1] = {};
      accumulate(acc, x[i], x[i], T(0), uses_y ? y[i] : T(0), uses_w ? w[i] : T(1), T(0));
      for (int k = 0; k + 1 < sums; ++k) c.sum[k + 1] += acc[k];
    }
  }

  void fold(sample& s, const engine::chunk_stats<T, sums>& c, Index len) const {
    const lse_partial<T> partial{c.max, c.sum[0]};
    const T ref = std::isfinite(c.max) ? c.max : T(0);
    // if constexpr: clang's -Warray-bounds sees c.sum[2] of a 1- or 2-entry array in a dead branch.
    T weight = T(0);
    if constexpr (Sums == chunk_sums::logits)
      weight = T(len);
    else if constexpr (sums > 2)
      weight = c.sum[2];
    if (s.empty) {
      s.partial = partial;
      s.ref = ref;
      if constexpr (sums > 1) s.logit_sum = s.weighted_sum = c.sum[1];
      s.weight_sum = weight;
      s.empty = false;
      return;
    }
    if constexpr (sums > 1) {
      s.logit_sum += c.sum[1] + weight * (ref - s.ref);
      s.weighted_sum = s.logit_sum;
    }
    s.weight_sum += weight;
    // merge with the identity is exact, and skipping it saves an exp per sample at small C.
    s.partial = s.partial.max == -std::numeric_limits<T>::infinity() ? partial : merge(s.partial, partial);
  }
};

/// torch's per-sample loss from the summary (target t not ignored, x_t its logit):
///   (1 - eps) * w_t * (lse - x_t) - eps / C * sum_k w_k * log_softmax_k,
/// with sum_k w_k * log_softmax_k = weighted_sum + W * (ref - max) - W * log(sum).
template <class T>
T fused_loss(const sample_summary<T>& s, T x_t, Index t, const fused_setup<T>& st) {
  const lse_partial<T>& p = s.partial;
  if (!std::isfinite(p.max)) return std::numeric_limits<T>::quiet_NaN();
  const T log_sum = std::log(p.sum);
  // (x_t - max) first: exact near the max, so a confident sample keeps its small loss's digits.
  const T nll = -st.weight_at(t) * ((x_t - p.max) - log_sum);
  const T z_term = st.z_loss == 0 ? T(0) : st.z_loss * (p.max + log_sum) * (p.max + log_sum);
  const T C = static_cast<T>(st.classes);
  // Poly-1 (Leng et al. 2022) against the smoothed target y~ = (1 - eps) onehot + eps / C: 1 - P =
  // (1 - eps) (1 - p_t) + eps (1 - 1 / C), with 1 - p_t = -expm1(log p_t): no cancellation near p_t = 1.
  const T poly_term = st.poly == 0 ? T(0)
                                   : st.poly * ((1 - st.smoothing) * -std::expm1((x_t - p.max) - log_sum) +
                                                st.smoothing * (1 - 1 / C));
  const T eps = st.smoothing_at(t);
  if (eps == 0) return nll + z_term + poly_term;
  const T sum_weighted_log_probs = st.smoothing_weights() ? s.weighted_sum + st.weight_total * ((s.ref - p.max) - log_sum)
                                                          : s.logit_sum + C * ((s.ref - p.max) - log_sum);
  return (1 - eps) * nll - eps / st.smoothing_divisor() * sum_weighted_log_probs + z_term + poly_term;
}

/// p_t of a sample from its summary and its target's logit (Poly-1's gradient needs it).
template <class T>
T target_probability(const sample_summary<T>& s, T x_t) {
  return std::exp((x_t - s.partial.max) - std::log(s.partial.sum));
}

/// The gradient of c * loss of one sample: g_k = p_k * c * Q' - c * q_k, with
/// q_k = eps / C * w_k + [k = t] ((1 - eps) * w_t + a p_t), Q = sum_k q_k and Q' = Q + 2 s lse (z-loss);
/// a = poly (1 - eps), Poly-1's d (-a p_t) / d z_k = a p_t (p_k - [k = t]).
template <class T>
struct fused_grad {
  T max = 0;
  T prob_scale = 0;    // c * Q' / sum: multiplies exp(z_k - max)
  T smooth_scale = 0;  // c * eps / C: multiplies w_k
  T target_term = 0;   // c * (1 - eps) * w_t, taken off at the target
  T poly_term = 0;     // c * poly * (1 - eps) * p_t: Poly-1's share, also taken off at the target
  T z_grad = 0;        // c * 2 s lse: the sum of g over the classes
  T others_weight = 0; // c * eps / C * (W - w_t): the smoothing mass on the other classes
  T sum = 1;           // the sample's sum of exp(z_k - max)
  bool defined = true;

  /// p_t: the target's probability (Poly-1 only; unused when st.poly is 0).
  fused_grad(const sample_summary<T>& s, Index t, const fused_setup<T>& st, T c, T p_t = 0)
      : max(s.partial.max), defined(std::isfinite(s.partial.max)) {
    const T eps = st.smoothing_at(t);
    const T eps_c = eps / st.smoothing_divisor();
    target_term = c * (1 - eps) * st.weight_at(t);
    poly_term = st.poly == 0 ? T(0) : c * st.poly * (1 - eps) * p_t;
    smooth_scale = c * eps_c;
    // z-loss: d (s * lse^2) / d z_k = 2 s lse p_k, one more multiple of p_k.
    z_grad = st.z_loss == 0 ? T(0) : c * 2 * st.z_loss * (s.partial.max + std::log(s.partial.sum));
    prob_scale = (target_term + smooth_scale * st.weight_total + z_grad + poly_term) / s.partial.sum;
    others_weight = smooth_scale * (st.weight_total - st.smoothing_weight_at(t));
    sum = s.partial.sum;
  }
  /// g_k for a class other than the target (w: its weight, 1 unweighted); mass = exp(z_k - max).
  // Inlined, and the multiply-add spelled out: every caller (the packet loops of each layout, bf16
  // or float) then forms the same bits, whatever the compiler would otherwise contract.
  template <class V>
  EIGEN_ALWAYS_INLINE V operator()(const V& z, const V&, const V& w, V& mass) const {
    mass = simd::exp_nonpositive(simd::psub(z, simd::pset1<V>(max)));
    return simd::pmadd(mass, simd::pset1<V>(prob_scale), simd::pnegate(simd::pmul(simd::pset1<V>(smooth_scale), w)));
  }
  /// The target's g_t = c (p_t Q' - q_t). For p_t >= 1/2 from the other classes' mass,
  /// c eps / C (W - w_t) + z_grad - prob_scale sum_{k != t} e_k, where its own formula would cancel;
  /// below, from its own formula, which then does not.
  bool from_others(T z) const { return !(T(2) * simd::exp_nonpositive(z - max) < sum); }
  T at_target(T z, T, T w, double others) const {
    if (!from_others(z)) return at_target_direct(z, w);
    return (others_weight + z_grad) - prob_scale * static_cast<T>(others);
  }
  /// The same from the target's own formula (c * q_t summed before it is taken off, in the order
  /// prob_scale was formed, so a sure sample gets exactly 0): what a rank that holds the target
  /// but not the other classes uses (vocabulary-parallel).
  T at_target_direct(T z, T w) const {
    return simd::exp_nonpositive(z - max) * prob_scale - ((target_term + poly_term) + smooth_scale * w);
  }
};

/// The gradient of c * loss for probability targets: g_k = c (p_k Q - q_k), the difference formed
/// before c multiplies it (so a sure sample, p = 1 and Q = q, gets exactly 0 however the compiler
/// contracts the multiply-adds, as torch).
/// With Poly-1 (Poly true) the gradient of eps (1 - P), P = sum_k y~_k p_k, joins it:
/// d (-eps P) / d z_k = eps p_k (P - y~_k), folded into the same difference.
template <class T, bool Poly = false>
struct prob_target_grad {
  T max = 0, q_per_sum = 0, c = 0, keep = 1, spread = 0;  // q_per_sum = Q / sum
  T poly_per_sum = 0;                                     // Poly-1: eps / sum
  T poly_mass = 0;                                        // Poly-1: P
  template <class V>
  V operator()(const V& z, const V& y, const V& w, V& mass) const {
    const V smoothed = simd::pmadd(y, simd::pset1<V>(keep), simd::pset1<V>(spread));
    const V q = simd::pmul(smoothed, w);
    mass = simd::exp_nonpositive(simd::psub(z, simd::pset1<V>(max)));
    if constexpr (Poly) {
      // p_k (Q + eps P) - q_k - eps p_k y~_k, the p_k terms first: mass (Q + eps (P - y~_k)) / sum.
      const V per_mass = simd::pmadd(simd::pset1<V>(poly_per_sum), simd::psub(simd::pset1<V>(poly_mass), smoothed),
                                     simd::pset1<V>(q_per_sum));
      return simd::pmul(simd::pset1<V>(c), simd::psub(simd::pmul(mass, per_mass), q));
    } else {
      return simd::pmul(simd::pset1<V>(c), simd::psub(simd::pmul(mass, simd::pset1<V>(q_per_sum)), q));
    }
  }
};

/// P = sum_k y~_k p_k of one sample, from a second read (engine::sum_range), y~ = y keep + spread.
template <class T>
struct smoothed_target_mass {
  static constexpr int sums = 1;
  T max, keep, spread;
  template <class V>
  void operator()(const V& z, const V& y, V* acc) const {
    const V smoothed = simd::pmadd(y, simd::pset1<V>(keep), simd::pset1<V>(spread));
    acc[0] = simd::pmadd(smoothed, simd::exp_nonpositive(simd::psub(z, simd::pset1<V>(max))), acc[0]);
  }
};

/// How far past its block a block of ps samples of C classes is read by lane_rows (whole packets from
/// each sample's start): 0 <= it < ps.
template <int C, class T>
inline constexpr Index lane_rows_overshoot =
    (Index(C - 1) / simd::packet_size<T>) * simd::packet_size<T> + simd::packet_size<T> - Index(C);

/// The C logits of ps samples stored back to back (sample l's class k at block[l * C + k]) as C
/// packets, v[k] lane l = block[l * C + k]. Rows: ps loads of whole packets per ps classes and an
/// in-register transpose (reads lane_rows_overshoot entries past the block, which the caller
/// ensures exist); otherwise C strided gathers, which read nothing past it (slower: the gathers
/// took 40 % of the forward at C = 10 on AVX-512).
template <int C, bool Rows, class T, class P>
EIGEN_ALWAYS_INLINE void lane_rows_load(const T* block, P* v) {
  constexpr int ps = int(simd::packet_size<T>);
  if constexpr (Rows) {
    for (int c0 = 0; c0 < C; c0 += ps) {
      simd::packet_block<P, ps> rows;
      for (int l = 0; l < ps; ++l) rows.packet[l] = simd::load<P>(block + l * C + c0);
      simd::ptranspose(rows);
      for (int i = 0; i < ps && c0 + i < C; ++i) v[c0 + i] = rows.packet[i];
    }
  } else {
    for (int k = 0; k < C; ++k) v[k] = simd::pgather<T, P>(block + k, C);
  }
}

/// The reverse of lane_rows_load: block[l * C + k] = v[k] lane l, writing nothing outside the
/// block. Rows: transposed back and stored row by row in memory order; a whole-packet store that
/// runs into the next sample writes junk there that the next sample's own stores overwrite, and
/// one that would leave the block is cut to its sample's entries.
template <int C, bool Rows, class T, class P>
EIGEN_ALWAYS_INLINE void lane_rows_store(T* block, const P* v) {
  constexpr int ps = int(simd::packet_size<T>);
  if constexpr (Rows) {
    constexpr int chunks = (C + ps - 1) / ps;
    simd::packet_block<P, ps> rows[chunks];
    for (int c = 0; c < chunks; ++c) {
      for (int i = 0; i < ps; ++i) rows[c].packet[i] = c * ps + i < C ? v[c * ps + i] : v[0];
      simd::ptranspose(rows[c]);
    }
    for (int l = 0; l < ps; ++l)
      for (int c = 0; c < chunks; ++c) {
        T* to = block + l * C + c * ps;
        if (l * C + c * ps + ps <= ps * C) {
          simd::store(to, rows[c].packet[l]);
        } else {
          alignas(64) T lane[ps];
          simd::pstore(lane, rows[c].packet[l]);
          for (int i = 0; i < ps && c * ps + i < C; ++i) to[i] = lane[i];
        }
      }
  } else {
    for (int k = 0; k < C; ++k) simd::pscatter<T, P>(block + k, v[k], C);
  }
}

/// C <= 16 with samples back to back: one sample per SIMD lane, the classes brought into
/// registers (lane_rows_load), so a block of samples costs one max, one exp-sum and one log, all
/// in packets.
/// Returns false (having written nothing) when a sample in the block has a non-finite max; the
/// caller then takes the block sample by sample. C is a template argument so that the classes stay
/// in registers and every loop over them unrolls. The target's gradient is formed from the other
/// classes' mass, as the sweep forms it.
template <int C, bool Rows, class T, class TargetAt, class ScaleAt>
bool small_classes_block(const T* x, Index j0, const fused_setup<T>& st, TargetAt&& target_at, T* losses, ScaleAt&& scale,
                         T* g) {
  using P = simd::packet<T>;
  constexpr Index ps = simd::packet_size<T>;
  using namespace simd;
  const T* block = x + j0 * C;
  // The loads stall on memory the hardware prefetcher has not brought in yet: ask for the block
  // four ahead (12 % less CPU time at N = 1M, C = 10 with AVX-512, with gathers).
  constexpr Index block_bytes = Index(C) * ps * Index(sizeof(T));
  for (Index line = 0; line < block_bytes; line += 64) prefetch_ahead(block, 4 * block_bytes + line);
  P v[C];
  lane_rows_load<C, Rows>(block, v);
  P m = v[0];
  for (int k = 1; k < C; ++k) m = max_nan(m, v[k]);
  const P zero = pset1<P>(T(0));
  // m - m is 0 exactly when m is finite (NaN for NaN and for either infinity).
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  P s = zero, a = zero, b = zero;
  for (int k = 0; k < C; ++k) {
    const P d = psub(v[k], m);
    s = padd(s, exp_for_sum(d));
    if (st.smoothing != 0) {
      a = padd(a, d);
      if (st.weight) b = pmadd(pset1<P>(st.weight[k]), d, b);
    }
  }
  // The targets as numbers in T (exact: C <= 16), -1 for an ignored lane; everything after is in
  // packets: the target's logit, weight and gradient entry by a compare-select over the C classes
  // (no per-lane gather, lookup or branch).
  alignas(64) T lane_t[ps];
  for (Index l = 0; l < ps; ++l) lane_t[l] = T(target_at(j0 + l));
  const P targets = pload<P>(lane_t);
  const P live = pcmp_le(zero, targets);  // all ones where the lane has a target
  P is_t[C];
  P x_t = m;  // an ignored lane: x_t - max = 0, a finite stand-in its zero weight cancels
  for (int k = 0; k < C; ++k) {
    is_t[k] = pcmp_eq(targets, pset1<P>(T(k)));
    x_t = pselect(is_t[k], v[k], x_t);
  }
  P w_t = pand(live, pset1<P>(T(1)));
  if (st.weight) {
    w_t = zero;
    for (int k = 0; k < C; ++k) w_t = pselect(is_t[k], pset1<P>(st.weight[k]), w_t);
  }
  const P log_s = plog(s);
  // (x_t - max) first, as fused_loss; the smoothing sums are relative to the lane's max (ref = max).
  P loss = pmul(w_t, psub(log_s, psub(x_t, m)));
  if (st.smoothing != 0) {
    const P eps = pset1<P>(st.smoothing), eps_c = pset1<P>(st.smoothing / T(C));
    const P sum_wlp = st.weight ? psub(b, pmul(pset1<P>(st.weight_total), log_s)) : psub(a, pmul(pset1<P>(T(C)), log_s));
    loss = psub(pmul(psub(pset1<P>(T(1)), eps), loss), pmul(eps_c, sum_wlp));
  }
  pstoreu(losses + j0, pand(live, loss));  // an ignored lane's smoothing term is not its loss: +0
  if (!g) return true;
  alignas(64) T lane_c[ps];
  for (Index l = 0; l < ps; ++l) lane_c[l] = scale(j0 + l);
  const P c = pand(live, pload<P>(lane_c));  // 0 for an ignored lane: its gradient is +0
  const P eps_c = pset1<P>(st.smoothing / T(C));
  const P target_term = pmul(c, pmul(pset1<P>(T(1) - st.smoothing), w_t));
  const P smooth_scale = pmul(c, eps_c);
  const P prob_scale = pdiv(padd(target_term, pmul(smooth_scale, pset1<P>(st.weight_total))), s);
  P e[C];
  P others = zero;  // per lane: the mass exp(x_k - max) of the classes other than the target
  for (int k = 0; k < C; ++k) {
    e[k] = exp_nonpositive(psub(v[k], m));
    others = padd(others, pandnot(e[k], is_t[k]));
  }
  // The target's entry as fused_grad::at_target forms it: from the others' mass where p_t >= 1/2,
  // from its own formula below.
  const P e_t = exp_nonpositive(psub(x_t, m));
  const P from_others = psub(pmul(smooth_scale, psub(pset1<P>(st.weight_total), w_t)), pmul(prob_scale, others));
  const P direct = psub(pmul(e_t, prob_scale), padd(target_term, pmul(smooth_scale, w_t)));
  const P target = pselect(pcmp_lt(padd(e_t, e_t), s), direct, from_others);
  P out[C];
  for (int k = 0; k < C; ++k) {
    const P other = psub(pmul(e[k], prob_scale), pmul(smooth_scale, pset1<P>(st.weight_at(k))));
    out[k] = pselect(is_t[k], target, other);
  }
  lane_rows_store<C, Rows>(g + j0 * C, out);
  return true;
}

/// f(std::integral_constant<int, C>{}) for 1 <= C <= 16.
template <class F>
void with_small_class_count(Index C, F&& f) {
  switch (C) {
#define XENT_SMALL_C(n) \
  case n: return f(std::integral_constant<int, n>{});
    XENT_SMALL_C(1) XENT_SMALL_C(2) XENT_SMALL_C(3) XENT_SMALL_C(4) XENT_SMALL_C(5) XENT_SMALL_C(6) XENT_SMALL_C(7)
    XENT_SMALL_C(8) XENT_SMALL_C(9) XENT_SMALL_C(10) XENT_SMALL_C(11) XENT_SMALL_C(12) XENT_SMALL_C(13) XENT_SMALL_C(14)
    XENT_SMALL_C(15) XENT_SMALL_C(16)
#undef XENT_SMALL_C
    default: return;
  }
}

/// The class-index cross-entropy as a sweep policy.
///   target_at(j): the class of sample j, or -1 when ignored (its logits are never read);
///   losses: N per-sample losses out (0 when ignored); lse_out: null, or N per-sample log-sum-exps
///   (of the soft-capped logits; NaN when ignored); scale(j): the upstream gradient of sample j's
///   loss; grad: whether the sweep's write pass writes d (sum_j scale(j) loss_j) / d x.
template <chunk_sums Sums, class S, class TargetAt, class ScaleAt>
class index_ce_policy {
 public:
  using T = compute_t<S>;
  using stats_type = ce_stats<T, Sums>;
  using sample = sample_summary<T>;
  static constexpr bool has_lane_blocks = std::is_same_v<S, T> && simd::has_packet_exp<T>;

  /// target_p: with Poly-1 and a gradient, N entries the forward fills with each p_t for the writer.
  index_ce_policy(const fused_setup<T>& st, TargetAt target_at, T* losses, T* lse_out, ScaleAt scale, bool grad,
                  T* target_p = nullptr)
      : st_(st), target_at_(target_at), losses_(losses), lse_(lse_out), scale_(scale), grad_(grad), target_p_(target_p) {}

  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return Sums == chunk_sums::weighted_logits ? st_.smoothing_weights() : nullptr; }
  engine::transform<T> transform_x() const { return st_.transform(); }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index j) const { return target_at_(j) < 0; }
  void skipped(Index j) const {
    losses_[j] = 0;
    if (lse_) lse_[j] = std::numeric_limits<T>::quiet_NaN();  // never read
  }
  void finish(Index j, const sample& s, const engine::row<S>& x) const {
    const Index t = target_at_(j);
    const T x_t = engine::value_of(*x.at(t), st_.transform());
    losses_[j] = fused_loss(s, x_t, t, st_);
    if (lse_) lse_[j] = s.partial.value();
    if (target_p_) target_p_[j] = target_probability(s, x_t);
  }
  bool writes() const { return grad_; }
  engine::sample_writer<fused_grad<T>> writer(Index j, const sample& s) const {
    const Index t = target_at_(j);
    fused_grad<T> k(s, t, st_, scale_(j), target_p_ ? target_p_[j] : T(0));
    return {k, k.defined, t};
  }

  /// C <= 16, float or double packets, samples back to back: small_classes_block on every full
  /// block of samples (softcap, z-loss and per-sample lse go sample by sample).
  template <class Views, class OneSample>
  bool lane_blocks(const Views& v, int threads, OneSample&& one_sample) const {
    constexpr Index ps = simd::packet_size<T>;
    const Index N = v.x.samples, C = v.x.classes;
    const bool packed = v.x.class_stride == 1 && v.x.sample_stride == C && (!v.out || (v.out->class_stride == 1 &&
                                                                                       v.out->sample_stride == C));
    if (!(C <= 16 && packed && N >= ps && st_.softcap == 0 && st_.z_loss == 0 && st_.poly == 0 && !lse_ && !st_.excluded))
      return false;
    T* g = grad_ && v.out ? v.out->data : nullptr;
    const Index blocks = N / ps;
    with_small_class_count(C, [&](auto classes) {
      constexpr int c = decltype(classes)::value;
      parallel_for(blocks, threads, [&](Index b) {
        // Whole-packet row loads where what they read past the block lies inside the logits (and,
        // for a gradient written in place by several threads, never: the next block may be
        // another thread's, being overwritten).
        const bool rows = (N - (b + 1) * ps) * C >= lane_rows_overshoot<c, T> &&
                          !(g && threads != 1 && static_cast<const T*>(g) == v.x.data);
        if (!(rows ? small_classes_block<c, true>(v.x.data, b * ps, st_, target_at_, losses_, scale_, g)
                   : small_classes_block<c, false>(v.x.data, b * ps, st_, target_at_, losses_, scale_, g)))
          for (Index j = b * ps; j < (b + 1) * ps; ++j) one_sample(j);
      });
    });
    for (Index j = blocks * ps; j < N; ++j) one_sample(j);
    return true;
  }

 private:
  fused_setup<T> st_;
  stats_type stats_;
  TargetAt target_at_;
  T* losses_;
  T* lse_;
  ScaleAt scale_;
  bool grad_;
  T* target_p_;
};

/// The fused class-index cross-entropy (see index_ce_policy); grad: null, or the gradient's view
/// (same layout), written with scale(j) * d loss_j / d x_j (zeros for an ignored sample); it may
/// be the logits' own storage.
template <chunk_sums Sums, class S, class TargetAt, class ScaleAt>
void fused_cross_entropy(const samples_view<const S>& v, const fused_setup<compute_t<S>>& st, int requested_threads,
                         TargetAt&& target_at, compute_t<S>* losses, compute_t<S>* lse_out, ScaleAt&& scale,
                         const samples_view<S>* grad) {
  std::vector<compute_t<S>> target_p(st.poly != 0 && grad ? std::size_t(v.samples) : 0);
  const index_ce_policy<Sums, S, std::decay_t<TargetAt>, std::decay_t<ScaleAt>> policy(
      st, target_at, losses, lse_out, scale, grad != nullptr, target_p.empty() ? nullptr : target_p.data());
  engine::sweep(policy, engine::sweep_views<S>{v, nullptr, grad}, requested_threads);
}

/// fused_cross_entropy with the read chosen at run time from the options.
template <class S, class... Args>
void fused_cross_entropy_dispatch(const samples_view<const S>& v, const fused_setup<compute_t<S>>& st, Args&&... args) {
  switch (st.sums()) {
    case chunk_sums::none: return fused_cross_entropy<chunk_sums::none>(v, st, std::forward<Args>(args)...);
    case chunk_sums::logits: return fused_cross_entropy<chunk_sums::logits>(v, st, std::forward<Args>(args)...);
    case chunk_sums::weighted_logits: return fused_cross_entropy<chunk_sums::weighted_logits>(v, st, std::forward<Args>(args)...);
    case chunk_sums::targets: return;  // probability targets have their own policy
  }
}

/// Cross-entropy against probability targets y (the logits' shape) as a sweep policy: per sample
///   sum_k q_k (lse - z_k),  q_k = (y_k (1 - eps) + eps / C) w_k,
/// torch's -sum_k log_softmax(z)_k ((1 - eps) y_k + eps / C) w_k, from one read of each input.
/// As torch, a zero probability on a -inf logit gives 0 * -inf = NaN.
template <class S, class ScaleAt, bool Weighted, bool Poly = false>
class prob_ce_policy {
 public:
  using T = compute_t<S>;
  using stats_type = ce_stats<T, chunk_sums::targets, Weighted>;
  using sample = sample_summary<T>;
  static constexpr bool has_lane_blocks = false;

  /// mask: null, or one flag per sample (false: left out, its inputs never read); poly: Poly-1's
  /// epsilon (with Poly).
  prob_ce_policy(const T* weight, T smoothing, Index classes, T* losses, ScaleAt scale, bool grad, const bool* mask = nullptr,
                 T poly = 0, bool safe = false)
      : weight_(weight), losses_(losses), scale_(scale), grad_(grad), mask_(mask), poly_(poly) {
    stats_.safe = safe;
    stats_.keep = T(1) - smoothing;
    stats_.spread = smoothing / T(classes);
  }

  const stats_type& stats() const { return stats_; }
  const T* class_weights() const { return Weighted ? weight_ : nullptr; }
  engine::transform<T> transform_x() const { return {}; }
  engine::transform<T> transform_y() const { return {}; }
  bool skip(Index j) const { return mask_ && !mask_[j]; }
  void skipped(Index j) const { losses_[j] = 0; }
  /// Poly-1's P: a second read of the sample (from cache) once its max and sum are known.
  template <bool P = Poly, std::enable_if_t<P, int> = 0>
  void second_read(Index, sample& s, const engine::row<S>& x, const engine::row<S>* y, Index n) const {
    if (!std::isfinite(s.partial.max)) return;
    const auto total = engine::sum_range(smoothed_target_mass<T>{s.partial.max, stats_.keep, stats_.spread}, x, y, 0, n,
                                         transform_x(), transform_y());
    s.poly_mass = static_cast<T>(total[0] / double(s.partial.sum));
  }
  void finish(Index j, const sample& s, const engine::row<S>&) const {
    const lse_partial<T>& p = s.partial;
    losses_[j] = std::isfinite(p.max) ? s.weight_sum * ((p.max - s.ref) + std::log(p.sum)) - s.logit_sum
                                      : std::numeric_limits<T>::quiet_NaN();
    if constexpr (Poly) losses_[j] += poly_ * (1 - s.poly_mass);
  }
  bool writes() const { return grad_; }
  engine::sample_writer<prob_target_grad<T, Poly>> writer(Index j, const sample& s) const {
    const T c = scale_(j);
    prob_target_grad<T, Poly> k{s.partial.max, s.weight_sum / s.partial.sum, c, stats_.keep, stats_.spread};
    if constexpr (Poly) {
      k.poly_per_sum = poly_ / s.partial.sum;
      k.poly_mass = s.poly_mass;
    }
    return {k, std::isfinite(s.partial.max), -1};
  }

 private:
  stats_type stats_;
  const T* weight_;
  T* losses_;
  ScaleAt scale_;
  bool grad_;
  const bool* mask_;
  T poly_;
};

/// The statistics of one sample's n contiguous logits as cross_entropy sees them (the vocabulary-
/// parallel record of a rank's shard is this over its classes).
template <chunk_sums Sums, class S>
sample_summary<compute_t<S>> summarize_logits(const S* x, Index n, const fused_setup<compute_t<S>>& st) {
  struct shard_policy {
    const fused_setup<compute_t<S>>& st;
    ce_stats<compute_t<S>, Sums> stats_;
    using sample [[maybe_unused]] = sample_summary<compute_t<S>>;  // read by engine::summarize_sample
    const ce_stats<compute_t<S>, Sums>& stats() const { return stats_; }
    const compute_t<S>* class_weights() const { return Sums == chunk_sums::weighted_logits ? st.weight : nullptr; }
    engine::transform<compute_t<S>> transform_x() const { return st.transform(); }
    engine::transform<compute_t<S>> transform_y() const { return {}; }
  } p{st, {}};
  return engine::summarize_sample(p, 0, engine::row<S>{x, 1}, static_cast<const engine::row<S>*>(nullptr), n,
                                  static_cast<const S*>(nullptr));
}

/// Writes c * d loss / d x over n contiguous classes (all but the target's, which at_target gives)
/// from the sample's gradient k; g may be x.
template <class S>
void fused_grad_range(const S* x, S* g, Index n, const fused_grad<compute_t<S>>& k, const fused_setup<compute_t<S>>& st) {
  const engine::sample_writer<fused_grad<compute_t<S>>> sw{k, k.defined, -1};
  engine::write_range(engine::row<S>{x, 1}, static_cast<const engine::row<S>*>(nullptr), st.weight, g, 1, 0, n, sw,
                      false, st.transform(), engine::transform<compute_t<S>>{});
}

/// The target's entry from its own formula, formed whole in the compute type and narrowed once.
/// x_t: the target's raw logit (in the compute type).
template <class S>
void fused_grad_target(S* g, Index t, compute_t<S> x_t, const fused_grad<compute_t<S>>& k, const fused_setup<compute_t<S>>& st) {
  using T = compute_t<S>;
  if (!k.defined) return;
  T d = k.at_target_direct(engine::value_of(x_t, st.transform()), st.weight_at(t));
  engine::apply_transform_derivative(&x_t, 1, &d, 1, st.transform());
  g[t] = S(d);
}

}  // namespace xent::detail

#endif
