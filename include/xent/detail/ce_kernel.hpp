#ifndef XENT_DETAIL_CE_KERNEL_HPP
#define XENT_DETAIL_CE_KERNEL_HPP

// The fused cross-entropy over a contiguous class axis, class-index targets: one read of each
// logit gives the sample's log-sum-exp partial and, when label smoothing needs them, the (weighted)
// sum of its logits; the target logit is read once more on its own. Forward + gradient adds one
// pass that writes softmax * Q - q into the caller's buffer (which may be the logits themselves).
// Work is spread over threads by samples, by chunks of the classes when there are few samples
// (N = 16, C = 128K), and by blocks of one sample per SIMD lane when C is small (C <= 16).
// The scalar per-sample functions of categorical_kernel.hpp are the reference this is held to.

#include "categorical_kernel.hpp"
#include "lse_kernel.hpp"
#include "softmax_kernel.hpp"
#include "engine/threads.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace xent::detail {

/// The type a kernel computes in for a given logit type: bf16 logits are widened to fp32.
template <class S>
struct compute_of {
  using type = S;
};
template <>
struct compute_of<Eigen::bfloat16> {
  using type = float;
};
template <class S>
using compute_t = typename compute_of<S>::type;

/// What the fused kernel knows of one call. T is the compute type.
template <class T>
struct fused_setup {
  const T* weight = nullptr;  // one per class, in T; null when unweighted
  T smoothing = 0;
  T weight_total = 0;  // sum of the weights, C when unweighted
  Index classes = 0;
  T softcap = 0;  // > 0: the logits are c * tanh(x / c) (Gemma 2); 0: as given
  T z_loss = 0;   // s: s * lse^2 is added to each sample's loss (PaLM)

  T weight_at(Index k) const { return weight ? weight[k] : T(1); }
  chunk_sums sums() const {
    if (smoothing == 0) return chunk_sums::none;
    return weight ? chunk_sums::weighted_logits : chunk_sums::logits;
  }
};

/// Elements of one chunk: the compute type's L1 chunk (bf16 chunks are widened into an fp32 buffer
/// of that size first).
template <class S>
inline constexpr Index fused_chunk = lse_chunk<compute_t<S>>;

/// softcap(x) = c * tanh(x / c), in place over n values.
template <class T>
void apply_softcap(T* z, Index n, T cap) {
  Index i = 0;
  if constexpr (simd::has_packet_exp<T> && simd::has_packet_tanh<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    const P vcap = simd::pset1<P>(cap), inv = simd::pset1<P>(T(1) / cap);
    for (; i + ps <= n; i += ps)
      simd::store(z + i, simd::pmul(vcap, simd::tanh(simd::pmul(simd::load<P>(z + i), inv))));
  }
  for (; i < n; ++i) z[i] = cap * std::tanh(z[i] / cap);
}

/// The logits [start, start + len) of a sample as the kernel sees them, in the compute type: the
/// logits themselves, or (bf16 widened to fp32, soft-capped) their values in `buffer`.
template <class S>
const compute_t<S>* chunk_values(const S* x, Index start, Index len, compute_t<S>* buffer, compute_t<S> softcap = 0) {
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    if (softcap == 0) return x + start;
    std::copy(x + start, x + start + len, buffer);
  } else {
    for (Index i = 0; i < len; ++i) buffer[i] = static_cast<compute_t<S>>(x[start + i]);
  }
  if (softcap != 0) apply_softcap(buffer, len, softcap);
  return buffer;
}

/// One logit as the kernel sees it.
template <class S>
compute_t<S> logit_value(S x, compute_t<S> softcap) {
  const auto v = static_cast<compute_t<S>>(x);
  return softcap == 0 ? v : softcap * std::tanh(v / softcap);
}

/// One chunk's summary. next: null, or the logits whose chunk at the same place to bring into cache
/// meanwhile (instead of the chunk after next).
template <chunk_sums Sums, class S>
chunk_summary<compute_t<S>> summarize_chunk_of(const S* x, const fused_setup<compute_t<S>>& st, Index chunk,
                                               const S* next = nullptr) {
  using T = compute_t<S>;
  const Index n = st.classes, start = chunk * fused_chunk<S>, len = std::min(fused_chunk<S>, n - start);
  T buffer[fused_chunk<S>];
  const read_ahead ahead = next ? read_ahead{reinterpret_cast<const char*>(next + start), len * Index(sizeof(S))}
                                : chunk_after_next(x + start, len);
  return summarize_chunk<Sums>(chunk_values(x, start, len, buffer, st.softcap),
                               Sums == chunk_sums::weighted_logits ? st.weight + start : st.weight, len, ahead);
}

/// A sample's summary. next: null, or the next sample's logits, to bring into cache meanwhile: with a
/// gradient, the pass that writes it is bound by those writes and this one by the exp, so this is
/// where the next read overlaps best.
template <chunk_sums Sums, class S>
sample_summary<compute_t<S>> summarize_sample(const S* x, const fused_setup<compute_t<S>>& st, const S* next = nullptr) {
  if constexpr (std::is_same_v<S, compute_t<S>>)
    if (st.softcap == 0) return summarize_contiguous<Sums>(x, st.weight, st.classes, next);
  sample_summary<compute_t<S>> s;
  const Index n = st.classes, chunks = chunk_count(n, fused_chunk<S>);
  for (Index c = 0; c < chunks; ++c)
    s.add(summarize_chunk_of<Sums>(x, st, c, next), std::min(fused_chunk<S>, n - c * fused_chunk<S>));
  return s;
}

/// torch's per-sample loss from the summary (target t not ignored, x_t its logit):
///   (1 - eps) * w_t * (lse - x_t) - eps / C * sum_k w_k * log_softmax_k,
/// with sum_k w_k * log_softmax_k = weighted_sum + W * (ref - max) - W * log(sum).
template <class T>
T fused_loss(const sample_summary<T>& s, T x_t, Index t, const fused_setup<T>& st) {
  const lse_partial<T>& p = s.partial;
  if (!softmax_defined(p)) return std::numeric_limits<T>::quiet_NaN();
  const T log_sum = std::log(p.sum);
  // (x_t - max) first: exact near the max, so a confident sample keeps its small loss's digits.
  const T nll = -st.weight_at(t) * ((x_t - p.max) - log_sum);
  const T z_term = st.z_loss == 0 ? T(0) : st.z_loss * (p.max + log_sum) * (p.max + log_sum);
  if (st.smoothing == 0) return nll + z_term;
  const T C = static_cast<T>(st.classes);
  const T sum_weighted_log_probs = st.weight ? s.weighted_sum + st.weight_total * ((s.ref - p.max) - log_sum)
                                             : s.logit_sum + C * ((s.ref - p.max) - log_sum);
  return (1 - st.smoothing) * nll - st.smoothing / C * sum_weighted_log_probs + z_term;
}

/// The gradient of c * loss of one sample: g_k = p_k * c * Q - c * q_k, with
/// q_k = eps / C * w_k + [k = t] (1 - eps) * w_t and Q = sum_k q_k.
template <class T>
struct fused_grad {
  T max = 0;
  T prob_scale = 0;    // c * Q / sum: multiplies exp(x_k - max)
  T smooth_scale = 0;  // c * eps / C: multiplies w_k
  T target_term = 0;   // c * (1 - eps) * w_t, taken off at the target
  bool defined = true;

  fused_grad(const sample_summary<T>& s, Index t, const fused_setup<T>& st, T c) : max(s.partial.max), defined(softmax_defined(s.partial)) {
    const T eps_c = st.smoothing / static_cast<T>(st.classes);
    target_term = c * (1 - st.smoothing) * st.weight_at(t);
    smooth_scale = c * eps_c;
    // z-loss: d (s * lse^2) / d x_k = 2 s lse p_k, one more multiple of p_k.
    const T z_grad = st.z_loss == 0 ? T(0) : c * 2 * st.z_loss * (s.partial.max + std::log(s.partial.sum));
    prob_scale = (target_term + smooth_scale * st.weight_total + z_grad) / s.partial.sum;
  }
  T at(T x, T w) const { return simd::exp_nonpositive_scalar(x - max) * prob_scale - smooth_scale * w; }
  // c * q_t summed before it is taken off, in the order prob_scale was formed: then a sure sample
  // (p_t = 1, C = 1) gets exactly 0, as torch.
  T at_target(T x, T w) const { return simd::exp_nonpositive_scalar(x - max) * prob_scale - (target_term + smooth_scale * w); }
};

/// g_k for n classes in the compute type (w: their weights, or null); g may be x.
template <class T>
void fused_grad_values(const T* x, T* g, Index n, const fused_grad<T>& k, const T* w) {
  Index i = 0;
  if constexpr (simd::has_packet_exp<T>) {
    using P = simd::packet<T>;
    constexpr Index ps = simd::packet_size<T>;
    const P vmax = simd::pset1<P>(k.max), vprob = simd::pset1<P>(k.prob_scale), vsmooth = simd::pset1<P>(k.smooth_scale);
    if (w && k.smooth_scale != 0) {
      for (; i + ps <= n; i += ps) {
        const P e = simd::exp_nonpositive(simd::psub(simd::load<P>(x + i), vmax));
        simd::store(g + i, simd::psub(simd::pmul(e, vprob), simd::pmul(vsmooth, simd::load<P>(w + i))));
      }
    } else {
      // Unweighted: smooth_scale * 1 for every class (0 without smoothing).
      for (; i + ps <= n; i += ps) {
        const P e = simd::exp_nonpositive(simd::psub(simd::load<P>(x + i), vmax));
        simd::store(g + i, simd::psub(simd::pmul(e, vprob), vsmooth));
      }
    }
  }
  for (; i < n; ++i) g[i] = k.at(x[i], w ? w[i] : T(1));
}

/// Writes the gradient of classes [begin, end) of one sample (all but the target's own entry).
/// bf16: each value is formed in fp32, by the same code as for fp32 logits, and narrowed once.
template <class S>
void fused_grad_range(const S* x, S* g, Index begin, Index end, const fused_grad<compute_t<S>>& k,
                      const fused_setup<compute_t<S>>& st) {
  using T = compute_t<S>;
  if (!k.defined) {
    std::fill(g + begin, g + end, S(std::numeric_limits<T>::quiet_NaN()));  // as torch: a NaN loss, NaN gradients
    return;
  }
  if constexpr (std::is_same_v<S, T>) {
    if (st.softcap == 0) {
      fused_grad_values(x + begin, g + begin, end - begin, k, st.weight ? st.weight + begin : nullptr);
      return;
    }
  }
  {
    T capped[fused_chunk<S>], grad[fused_chunk<S>];
    for (Index start = begin; start < end; start += fused_chunk<S>) {
      const Index len = std::min(fused_chunk<S>, end - start);
      const T* z = chunk_values(x, start, len, capped, st.softcap);
      fused_grad_values(z, grad, len, k, st.weight ? st.weight + start : nullptr);
      if (st.softcap != 0) {
        // d z / d x = 1 - tanh^2(x / c) = 1 - (z / c)^2
        const T inv = T(1) / st.softcap;
        for (Index i = 0; i < len; ++i) grad[i] *= T(1) - (z[i] * inv) * (z[i] * inv);
      }
      for (Index i = 0; i < len; ++i) g[start + i] = S(grad[i]);
    }
  }
}

/// The target's entry, formed whole in the compute type and narrowed once (p_t - 1 in fp32 for bf16).
/// x_t: the target's logit as the kernel sees it (soft-capped when asked).
template <class S>
void fused_grad_target(S* g, Index t, compute_t<S> x_t, const fused_grad<compute_t<S>>& k, const fused_setup<compute_t<S>>& st) {
  using T = compute_t<S>;
  if (!k.defined) return;
  T d = k.at_target(x_t, st.weight_at(t));
  if (st.softcap != 0) d *= T(1) - (x_t / st.softcap) * (x_t / st.softcap);
  g[t] = S(d);
}

/// C <= 16 with samples back to back: one sample per SIMD lane, the classes gathered into
/// registers, so a block of samples costs one max, one exp-sum and one log, all in packets.
/// Returns false (having written nothing) when a sample in the block has a non-finite max; the
/// caller then takes the block sample by sample. C is a template argument so that the classes stay
/// in registers and every loop over them unrolls.
template <int C, class T, class TargetAt, class ScaleAt>
bool small_classes_block(const T* x, Index j0, const fused_setup<T>& st, TargetAt&& target_at, T* losses, ScaleAt&& scale,
                         T* g) {
  using P = simd::packet<T>;
  constexpr Index ps = simd::packet_size<T>;
  using namespace simd;
  const T* block = x + j0 * C;
  P v[C];
  for (int k = 0; k < C; ++k) v[k] = pgather<T, P>(block + k, C);
  P m = v[0];
  for (int k = 1; k < C; ++k) m = simd::max_nan(m, v[k]);
  const P zero = pset1<P>(T(0));
  // m - m is 0 exactly when m is finite (NaN for NaN and for either infinity).
  if (predux_any(pandnot(ptrue(m), pcmp_eq(psub(m, m), zero)))) return false;
  alignas(64) T lane_max[ps];
  pstore(lane_max, m);
  P s = zero, a = zero, b = zero;
  for (int k = 0; k < C; ++k) {
    const P d = psub(v[k], m);
    s = padd(s, simd::exp_for_sum(d));
    if (st.smoothing != 0) {
      a = padd(a, d);
      if (st.weight) b = pmadd(pset1<P>(st.weight[k]), d, b);
    }
  }
  alignas(64) T lane_target[ps], lane_w[ps];
  Index t[ps];
  for (Index l = 0; l < ps; ++l) {
    t[l] = target_at(j0 + l);
    const bool live = t[l] >= 0;
    lane_target[l] = live ? block[l * C + t[l]] : lane_max[l];
    lane_w[l] = live ? st.weight_at(t[l]) : T(0);
  }
  const P log_s = plog(s), w_t = pload<P>(lane_w);
  // (x_t - max) first, as fused_loss; the smoothing sums are relative to the lane's max (ref = max).
  P loss = pmul(w_t, psub(log_s, psub(pload<P>(lane_target), m)));
  if (st.smoothing != 0) {
    const P eps = pset1<P>(st.smoothing), eps_c = pset1<P>(st.smoothing / T(C));
    const P sum_wlp = st.weight ? psub(b, pmul(pset1<P>(st.weight_total), log_s)) : psub(a, pmul(pset1<P>(T(C)), log_s));
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
  T* gblock = g + j0 * C;
  for (int k = 0; k < C; ++k) {
    const P e = simd::exp_nonpositive(psub(v[k], m));
    pscatter<T, P>(gblock + k, psub(pmul(e, prob_scale), pmul(smooth_scale, pset1<P>(st.weight_at(k)))), C);
  }
  // The target's entry as fused_grad::at_target forms it, so both paths give the same numbers.
  alignas(64) T lane_term[ps], lane_prob[ps], lane_smooth[ps];
  pstore(lane_term, target_term);
  pstore(lane_prob, prob_scale);
  pstore(lane_smooth, smooth_scale);
  for (Index l = 0; l < ps; ++l)
    if (t[l] >= 0)
      gblock[l * C + t[l]] = simd::exp_nonpositive_scalar(lane_target[l] - lane_max[l]) * lane_prob[l] -
                             (lane_term[l] + lane_smooth[l] * lane_w[l]);
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

/// The fused class-index cross-entropy over contiguous classes.
///   target_at(j): the class of sample j, or -1 when ignored (its logits are never read);
///   losses: N per-sample losses out (0 when ignored); lse_out: null, or N per-sample log-sum-exps
///   (of the soft-capped logits; NaN when ignored);
///   grad: null, or the gradient's view (same layout), written with scale(j) * d loss_j / d x_j
///         (zeros for an ignored sample); it may be the logits' own storage.
template <chunk_sums Sums, class S, class TargetAt, class ScaleAt>
void fused_cross_entropy(const samples_view<const S>& v, const fused_setup<compute_t<S>>& st, int requested_threads,
                         TargetAt&& target_at, compute_t<S>* losses, compute_t<S>* lse_out, ScaleAt&& scale,
                         const samples_view<S>* grad) {
  using T = compute_t<S>;
  const Index N = v.samples, C = v.classes;
  const int threads = thread_count(requested_threads, N * C);

  auto zero_grad = [&](Index j, Index begin, Index end) { std::fill(grad->sample(j) + begin, grad->sample(j) + end, S(0)); };

  auto one_sample = [&](Index j) {
    const Index t = target_at(j);
    if (t < 0) {
      losses[j] = 0;
      if (lse_out) lse_out[j] = std::numeric_limits<T>::quiet_NaN();  // never read
      if (grad) zero_grad(j, 0, C);
      return;
    }
    const S* x = v.sample(j);
    const T x_t = logit_value(x[t], st.softcap);  // before the gradient may overwrite it (in place)
    const S* next = grad && j + 1 < N ? v.sample(j + 1) : nullptr;
    const sample_summary<T> s = summarize_sample<Sums>(x, st, next);
    losses[j] = fused_loss(s, x_t, t, st);
    if (lse_out) lse_out[j] = s.partial.value();
    if (grad) {
      const fused_grad<T> k(s, t, st, scale(j));
      fused_grad_range(x, grad->sample(j), 0, C, k, st);
      fused_grad_target(grad->sample(j), t, x_t, k, st);
    }
  };

  if constexpr (std::is_same_v<S, T> && simd::has_packet_exp<T>) {
    constexpr Index ps = simd::packet_size<T>;
    // (softcap, z-loss and per-sample lse: sample by sample)
    if (C <= 16 && v.sample_stride == C && N >= ps && st.softcap == 0 && st.z_loss == 0 && !lse_out &&
        (!grad || grad->sample_stride == C)) {
      T* g = grad ? grad->data : nullptr;
      const Index blocks = N / ps;
      auto run_blocks = [&](auto classes) {
        parallel_for(blocks, threads, [&](Index b) {
          if (!small_classes_block<decltype(classes)::value>(v.data, b * ps, st, target_at, losses, scale, g))
            for (Index j = b * ps; j < (b + 1) * ps; ++j) one_sample(j);
        });
      };
      with_small_class_count(C, run_blocks);
      for (Index j = blocks * ps; j < N; ++j) one_sample(j);
      return;
    }
  }

  const Index chunks = chunk_count(C, fused_chunk<S>);
  if (threads == 1 || N >= 4 * threads || chunks < 2) {
    parallel_for(N, threads, one_sample);
    return;
  }

  // Few samples, many classes: threads share each sample's chunks. The chunks' summaries fold in
  // the same order as one_sample's, so the loss is the same bits as on one thread.
  std::vector<chunk_summary<T>> parts(static_cast<size_t>(N * chunks));
  parallel_for(N * chunks, threads, [&](Index i) {
    const Index j = i / chunks;
    if (target_at(j) >= 0) parts[size_t(i)] = summarize_chunk_of<Sums>(v.sample(j), st, i % chunks);
  });
  std::vector<sample_summary<T>> summaries(static_cast<size_t>(N));
  std::vector<T> target_logits(static_cast<size_t>(N));
  for (Index j = 0; j < N; ++j) {
    const Index t = target_at(j);
    if (t < 0) {
      losses[j] = 0;
      if (lse_out) lse_out[j] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    sample_summary<T>& s = summaries[size_t(j)];
    for (Index c = 0; c < chunks; ++c) s.add(parts[size_t(j * chunks + c)], std::min(fused_chunk<S>, C - c * fused_chunk<S>));
    target_logits[size_t(j)] = logit_value(v.sample(j)[t], st.softcap);
    losses[j] = fused_loss(s, target_logits[size_t(j)], t, st);
    if (lse_out) lse_out[j] = s.partial.value();
  }
  if (!grad) return;
  parallel_for(N * chunks, threads, [&](Index i) {
    const Index j = i / chunks, begin = (i % chunks) * fused_chunk<S>, end = std::min(begin + fused_chunk<S>, C);
    const Index t = target_at(j);
    if (t < 0)
      zero_grad(j, begin, end);
    else
      fused_grad_range(v.sample(j), grad->sample(j), begin, end, fused_grad<T>(summaries[size_t(j)], t, st, scale(j)), st);
  });
  for (Index j = 0; j < N; ++j) {
    const Index t = target_at(j);
    if (t >= 0)
      fused_grad_target(grad->sample(j), t, target_logits[size_t(j)], fused_grad<T>(summaries[size_t(j)], t, st, scale(j)), st);
  }
}

/// fused_cross_entropy with the read chosen at run time from the options.
template <class S, class... Args>
void fused_cross_entropy_dispatch(const samples_view<const S>& v, const fused_setup<compute_t<S>>& st, Args&&... args) {
  switch (st.sums()) {
    case chunk_sums::none: return fused_cross_entropy<chunk_sums::none>(v, st, std::forward<Args>(args)...);
    case chunk_sums::logits: return fused_cross_entropy<chunk_sums::logits>(v, st, std::forward<Args>(args)...);
    case chunk_sums::weighted_logits: return fused_cross_entropy<chunk_sums::weighted_logits>(v, st, std::forward<Args>(args)...);
  }
}

}  // namespace xent::detail

#endif
