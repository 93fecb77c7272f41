#ifndef XENT_DETAIL_CATEGORICAL_KERNEL_HPP
#define XENT_DETAIL_CATEGORICAL_KERNEL_HPP

// One sample of cross_entropy / nll_loss, forward and backward. Every loss here has the form
//   loss_j = -sum_k q_k * log_softmax(x)_k
// for a per-sample target distribution q (weights, smoothing and the target folded in), so that
//   d loss_j / d x_k = p_k * Q - q_k,   Q = sum_k q_k,  p = softmax(x).
// The log-sum-exp comes from lse_partial_of_sample, the same kernel as logsumexp.

#include "lse_kernel.hpp"
#include "softmax_kernel.hpp"

#include <cmath>
#include <limits>

namespace xent::detail {

/// Class weights as the kernels read them: 1 for every class when the caller gave none.
template <class T>
struct class_weights {
  const double* w = nullptr;
  T operator[](Index k) const { return w ? static_cast<T>(w[k]) : T(1); }
};

/// log_softmax and softmax of one sample's classes, from its partial. As torch: every entry is
/// NaN when the sample's log-sum-exp is not finite.
template <class T>
struct sample_normalizer {
  T max, log_sum, inv_sum;
  bool defined;

  explicit sample_normalizer(const lse_partial<T>& p)
      : max(p.max), log_sum(std::log(p.sum)), inv_sum(T(1) / p.sum), defined(softmax_defined(p)) {}

  // (x - max) first: exact near the max, so the dominant class keeps its small digits (as torch).
  T log_prob(T x) const { return defined ? (x - max) - log_sum : std::numeric_limits<T>::quiet_NaN(); }
  T prob(T x) const { return defined ? simd::exp_nonpositive_scalar(x - max) * inv_sum : std::numeric_limits<T>::quiet_NaN(); }
};

/// What the kernels need to know about one loss call.
template <class T>
struct categorical_setup {
  class_weights<T> weight;
  T smoothing = 0;        // label_smoothing
  T weight_total = 0;     // sum_k weight[k], for the smoothing term's Q
};

/// Cross-entropy of sample j with class-index target t (not ignored), torch's per-sample formula:
///   (1 - eps) * (-w_t * lp_t) + eps / C * (-sum_k w_k * lp_k)
/// The smoothing term is only computed when eps > 0 (torch takes plain nll_loss then).
template <class T>
T index_target_loss(const samples_view<const T>& v, Index j, Index t, const categorical_setup<T>& s) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  const T nll = -s.weight[t] * n.log_prob(x[t * v.class_stride]);
  if (s.smoothing == 0) return nll;
  T smooth = 0;
  for (Index k = 0; k < v.classes; ++k) smooth -= s.weight[k] * n.log_prob(x[k * v.class_stride]);
  return (1 - s.smoothing) * nll + s.smoothing / T(v.classes) * smooth;
}

/// Gradient of c * loss_j (index target t, not ignored) into out's sample j.
template <class T>
void index_target_grad(const samples_view<const T>& v, Index j, Index t, const categorical_setup<T>& s, T c,
                       const samples_view<T>& out) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  T* g = out.sample(j);
  const T eps_c = s.smoothing / T(v.classes);
  const T q_target = (1 - s.smoothing) * s.weight[t];
  const T cQ = c * (q_target + eps_c * s.weight_total);
  for (Index k = 0; k < v.classes; ++k) {
    const T q = eps_c * s.weight[k] + (k == t ? q_target : T(0));
    g[k * out.class_stride] = n.prob(x[k * v.class_stride]) * cQ - c * q;
  }
}

/// Cross-entropy of sample j against the probabilities y (same layout as the logits), torch's
/// formula -sum_k lp_k * ((1 - eps) y_k + eps / C) * w_k. A zero probability on a -inf logit gives
/// 0 * -inf = NaN, as in torch.
template <class T>
T prob_target_loss(const samples_view<const T>& v, const samples_view<const T>& y, Index j, const categorical_setup<T>& s) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  const T* yj = y.sample(j);
  const T eps_c = s.smoothing / T(v.classes);
  T loss = 0;
  for (Index k = 0; k < v.classes; ++k) {
    const T target = yj[k * y.class_stride] * (1 - s.smoothing) + eps_c;
    loss -= n.log_prob(x[k * v.class_stride]) * target * s.weight[k];
  }
  return loss;
}

template <class T>
void prob_target_grad(const samples_view<const T>& v, const samples_view<const T>& y, Index j,
                      const categorical_setup<T>& s, T c, const samples_view<T>& out) {
  const sample_normalizer<T> n(lse_partial_of_sample(v, j));
  const T* x = v.sample(j);
  const T* yj = y.sample(j);
  T* g = out.sample(j);
  const T eps_c = s.smoothing / T(v.classes);
  auto q = [&](Index k) { return (yj[k * y.class_stride] * (1 - s.smoothing) + eps_c) * s.weight[k]; };
  T Q = 0;
  for (Index k = 0; k < v.classes; ++k) Q += q(k);
  const T cQ = c * Q;
  for (Index k = 0; k < v.classes; ++k) g[k * out.class_stride] = n.prob(x[k * v.class_stride]) * cQ - c * q(k);
}

/// Writes 0 to every class of out's sample j (an ignored target has no gradient).
template <class T>
void zero_sample(const samples_view<T>& out, Index j) {
  T* g = out.sample(j);
  for (Index k = 0; k < out.classes; ++k) g[k * out.class_stride] = T(0);
}

}  // namespace xent::detail

#endif
