#ifndef XENT_LOSSES_TOPK_DIVERGENCE_HPP
#define XENT_LOSSES_TOPK_DIVERGENCE_HPP

// Divergences against a teacher stored as its top-k classes per sample (offline distillation:
// k indices and values per token instead of C logits). The student's distribution is lumped onto
// the teacher's k classes plus ONE tail class (the student's mass outside them) and compared with
// the teacher's k probabilities plus its tail mass, by the kinds of divergence_options. One read of
// the student column for its log-sum-exp (the top-k values gathered on the way), a second for the
// gradient; no N x C temporaries. docs/losses.md ("Top-k teachers") is the reference.

#include "../core/error.hpp"
#include "../core/loss_result.hpp"
#include "../core/reduction.hpp"
#include "../detail/engine/per_sample.hpp"
#include "../detail/engine/threads.hpp"
#include "logit_divergence.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace xent {

/// What a top-k teacher's values are.
enum class topk_values {
  logits,    ///< the teacher's logits at its k classes (with lse: its full normaliser is known)
  log_probs  ///< the teacher's log-probabilities log softmax(t) at its k classes
};

/// A teacher's k most probable classes per sample. For dim = 0 (the student C x N) indices and
/// values are k x N (one column per sample); for dim = 1, N x k. The tail mass 1 - sum_topk q is
/// known for log_probs, and for logits with lse (the log-sum-exp of the teacher's full logits per
/// sample); logits without lse are renormalised over the k classes (no tail).
template <class IndexScalar = int, class Scalar = float>
struct topk_teacher {
  Eigen::Matrix<IndexScalar, Eigen::Dynamic, Eigen::Dynamic> indices;  ///< class indices, distinct within a sample
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> values;        ///< the teacher's values at those classes
  topk_values values_are = topk_values::logits;                        ///< logits or log_probs
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> lse{};  ///< empty, or (logits only) one full log-sum-exp per sample
};

namespace detail {

/// log(exp(a) + exp(b)), -inf when both are.
template <class T>
T log_add(T a, T b) {
  const T m = std::max(a, b);
  if (m == -std::numeric_limits<T>::infinity()) return m;
  return m + std::log1p(std::exp(std::min(a, b) - m));
}

/// The chunk in which a student column is gathered (contiguous whatever its stride) before Eigen's
/// vectorised max, exp and sum: the same bits for either layout.
inline constexpr Index topk_chunk = 512;

/// A log-sum-exp accumulated over runs of values (the max of a chunk first, then its sum): one read.
template <class T>
struct lse_accumulator {
  T max = -std::numeric_limits<T>::infinity(), sum = 0;
  template <class S>
  void add(const S* x, Index stride, Index begin, Index end, T scale) {
    alignas(64) T buffer[topk_chunk];
    for (Index c0 = begin; c0 < end; c0 += topk_chunk) {
      const Index n = std::min(topk_chunk, end - c0);
      for (Index i = 0; i < n; ++i) buffer[i] = static_cast<T>(x[(c0 + i) * stride]) * scale;
      const Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned64> b(buffer, n);
      const T m = b.template maxCoeff<Eigen::PropagateNaN>();
      if (std::isnan(m) || m == std::numeric_limits<T>::infinity()) {
        max = m;  // NaN, or a +inf logit: the sample's divergence is NaN (as divergence)
        sum = 1;
        return;
      }
      if (m == -std::numeric_limits<T>::infinity()) continue;
      const T s = (b - m).exp().sum();
      if (m > max) {
        sum = sum * std::exp(max - m) + s;
        max = m;
      } else {
        sum += s * std::exp(m - max);
      }
    }
  }
  T value() const { return max == -std::numeric_limits<T>::infinity() || std::isnan(max) ? max : max + std::log(sum); }
};

/// The lumped divergence of one sample over e = 0..k (k: the tail), from the student's lumped
/// log-probabilities lp and the teacher's lq (-inf: no mass); grad[e] = d D / d y_e, y the lumped
/// logits (lp = log_softmax(y)). kind: forward_kl, reverse_kl, jsd (0 < beta < 1) or tvd.
template <class T>
T lumped_divergence(divergence_kind kind, T beta, const T* lp, const T* lq, Index n, T* grad) {
  T loss = 0;
  if (kind == divergence_kind::forward_kl) {
    T qsum = 0;
    for (Index e = 0; e < n; ++e) {
      const T q = std::exp(lq[e]);
      if (q > 0) loss += q * (lq[e] - lp[e]);
      qsum += q;
    }
    // sum Q need not be exactly 1 (stored log-probabilities): the derivative of the sum as defined.
    if (grad)
      for (Index e = 0; e < n; ++e) grad[e] = std::exp(lp[e]) * qsum - std::exp(lq[e]);
    return loss;
  }
  T mean_h = 0;
  for (Index e = 0; e < n; ++e) {
    const T p = std::exp(lp[e]), q = std::exp(lq[e]);
    T h = 0;  // d D / d P_e
    if (kind == divergence_kind::reverse_kl) {
      if (p > 0) {
        h = lp[e] - lq[e];
        loss += p * h;
      }
    } else if (kind == divergence_kind::jsd) {
      const T lm = log_add(std::log(beta) + lp[e], std::log1p(-beta) + lq[e]);
      if (p > 0) {
        h = beta * (lp[e] - lm);
        loss += p * h;
      }
      if (q > 0) loss += (1 - beta) * q * (lq[e] - lm);
    } else {
      h = p > q ? T(0.5) : p < q ? T(-0.5) : T(0);
      loss += std::fabs(p - q) / 2;
    }
    if (grad) grad[e] = h;
    mean_h += p * h;
  }
  if (grad)
    for (Index e = 0; e < n; ++e) {
      const T p = std::exp(lp[e]);
      grad[e] = p > 0 ? p * (grad[e] - mean_h) : T(0);
    }
  return loss;
}

/// The checks of a top-k teacher against the student (C classes, N samples); returns k.
template <class I, class V>
Index check_topk_teacher(const char* fn, const topk_teacher<I, V>& t, Index classes, Index samples, int dim) {
  const int a = static_cast<int>(t.values_are);
  if (a < 0 || a > 1) throw_invalid(fn, "teacher.values_are", "must be logits or log_probs", a);
  check_not_empty(fn, "teacher.indices", t.indices);
  check_same_shape(fn, "teacher.values", t.values, "teacher.indices", t.indices);
  const Index k = dim == 0 ? t.indices.rows() : t.indices.cols(), n = dim == 0 ? t.indices.cols() : t.indices.rows();
  if (n != samples)
    throw_invalid(fn, "teacher.indices", "must have one sample per student sample (" + std::to_string(samples) + ")", n);
  if (k > classes) throw_invalid(fn, "teacher.indices", "must hold k <= C = " + std::to_string(classes) + " classes per sample", k);
  if (t.lse.size() != 0) {
    if (t.values_are == topk_values::log_probs)
      throw_invalid(fn, "teacher.lse", "must be empty when the values are log_probs (they are normalised already)", t.lse.size());
    if (t.lse.size() != samples)
      throw_invalid(fn, "teacher.lse", "must be empty or have one entry per sample (" + std::to_string(samples) + ")", t.lse.size());
  }
  // Named by the entry of teacher.indices at fault, (row, column) as the matrix is laid out.
  auto entry = [dim](Index i, Index j) {
    return "teacher.indices(" + std::to_string(dim == 0 ? i : j) + ", " + std::to_string(dim == 0 ? j : i) + ")";
  };
  std::vector<std::pair<long long, Index>> column(static_cast<std::size_t>(k));
  for (Index j = 0; j < samples; ++j) {
    for (Index i = 0; i < k; ++i) {
      const long long c = static_cast<long long>(dim == 0 ? t.indices(i, j) : t.indices(j, i));
      if (c < 0 || c >= classes) throw_invalid(fn, entry(i, j), "must be a class in [0, " + std::to_string(classes) + ")", c);
      column[std::size_t(i)] = {c, i};
    }
    std::sort(column.begin(), column.end());
    for (std::size_t r = 1; r < column.size(); ++r)
      if (column[r].first == column[r - 1].first)
        throw_invalid(fn, entry(std::max(column[r].second, column[r - 1].second), j),
                      "must differ from the sample's other classes (it repeats class " + std::to_string(column[r].first) + ")",
                      column[r].first);
  }
  return k;
}

/// What every sample of one top-k call computes, fixed by the checks (topk_form_of).
struct topk_form {
  divergence_kind kind = divergence_kind::forward_kl;  // jsd at beta 0 or 1 is already the KL it reduces to
  double beta = 0.5;
  double teacher_temperature = 1;  // T_t
  bool teacher_tail = false;       // the teacher's tail mass is known (log_probs, or logits with lse)
  bool tail = false;               // k < C: the student has a tail class
  Index k = 0;
};

/// The checks of a top-k call's divergence parameters that need the teacher (kind, beta and the
/// temperatures are checked already), and what each sample computes.
template <class I, class V>
topk_form topk_form_of(const char* fn, const topk_teacher<I, V>& teacher, Index k, Index classes, divergence_kind kind,
                       double beta, double temperature, double teacher_temperature) {
  topk_form f;
  f.k = k;
  f.beta = beta;
  f.teacher_tail = teacher.values_are == topk_values::log_probs || teacher.lse.size() != 0;
  f.teacher_temperature = teacher_temperature != 0 ? teacher_temperature : temperature;
  // The tail's mass at another temperature, sum_tail exp(t / T) / sum exp(t / T), depends on how
  // the mass is spread over the tail's classes, which a top-k teacher does not store.
  if (f.teacher_tail && f.teacher_temperature != 1)
    throw_invalid(fn, teacher_temperature != 0 ? "teacher_temperature" : "temperature",
                  "must make the teacher's temperature 1 when its tail mass is known (log_probs, or logits with lse)",
                  f.teacher_temperature);
  f.kind = kind;
  if (kind == divergence_kind::jsd && beta == 0) f.kind = divergence_kind::forward_kl;
  if (kind == divergence_kind::jsd && beta == 1) f.kind = divergence_kind::reverse_kl;
  // With k = C no class is outside the top-k: a stored tail mass is only the values' rounding.
  f.tail = k < classes;
  return f;
}

/// The lumped divergence of one sample. On entry lp[0, k) holds the student's y = x / T_s at the
/// teacher's k classes (in the teacher's order) and tail_lse the log-sum-exp of y over every other
/// class; val (stride vstride) the teacher's k values and lse its stored log-sum-exp (null when
/// the teacher has none). On return lp and lq hold the k + 1 lumped log-probabilities (the tail last) and, when
/// d is given, d[e] = d D / d y_e over the lumped entries. In double whatever the student's type:
/// the teacher's tail, log(1 - sum q), magnifies the rounding of sum q by 1 / tail, and k is small
/// next to C.
template <class V>
double topk_sample_divergence(const topk_form& f, const V* val, Index vstride, const double* lse, double tail_lse, double* lp,
                              double* lq, double* d) {
  constexpr double dinf = std::numeric_limits<double>::infinity();
  const Index k = f.k;
  lse_accumulator<double> top;
  top.add(lp, 1, 0, k, 1.0);
  const double student_lse = log_add(top.value(), tail_lse);
  for (Index i = 0; i < k; ++i) lp[i] -= student_lse;
  lp[k] = f.tail ? tail_lse - student_lse : -dinf;
  // The teacher's log-probabilities and tail: log(1 - sum q) from the sum's log (expm1, exact
  // near 1), at least 0 (stored values may sum a little above 1).
  for (Index i = 0; i < k; ++i) {
    const double v = static_cast<double>(val[i * vstride]);
    lq[i] = !f.teacher_tail ? v / f.teacher_temperature : lse ? v - *lse : v;
  }
  lse_accumulator<double> tq;
  tq.add(lq, 1, 0, k, 1.0);
  const double top_q = tq.value();
  if (f.teacher_tail) {
    lq[k] = f.tail && top_q < 0 ? std::log(-std::expm1(top_q)) : -dinf;
  } else {
    for (Index i = 0; i < k; ++i) lq[i] -= top_q;
    lq[k] = -dinf;
  }
  return lumped_divergence(f.kind, f.beta, lp, lq, k + 1, d);
}

/// d D / d Q_e of the lumped divergence (the loss as lumped_divergence defines it, Q_e free: the
/// stored values need not sum to 1), at an entry with Q_e > 0.
inline double lumped_teacher_slope(divergence_kind kind, double beta, double lp, double lq) {
  if (kind == divergence_kind::forward_kl) return lq - lp + 1;
  if (kind == divergence_kind::reverse_kl) return -std::exp(lp - lq);
  if (kind == divergence_kind::jsd) return (1 - beta) * (lq - log_add(std::log(beta) + lp, std::log1p(-beta) + lq));
  const double p = std::exp(lp), q = std::exp(lq);
  return q > p ? 0.5 : q < p ? -0.5 : 0.0;
}

/// Every top-k call: the checks, one pass per sample (loss, and with grad_out the gradients times
/// scale(j): the student's into gs, the teacher values' into gt, an empty buffer not wanted), the
/// reduction.
template <class S, class I, class V, class Y, class G, class Gs, class Gt = no_grad_buffer>
loss_result<compute_t<typename S::Scalar>> topk_call(const char* fn, const Eigen::DenseBase<S>& s, const topk_teacher<I, V>& teacher,
                                                     const Y* targets, const divergence_options& o, const G* grad_out,
                                                     const Eigen::DenseBase<Gs>* gs, const Eigen::DenseBase<Gt>* gt = nullptr) {
  using Sc = typename S::Scalar;
  static_assert(std::is_same_v<Sc, float> || std::is_same_v<Sc, double>, "topk_divergence takes float or double student logits");
  static_assert(std::is_integral_v<I> && std::is_signed_v<I>, "teacher indices must be signed integers");
  static_assert(std::is_floating_point_v<V>, "teacher values must be float or double");
  using T = compute_t<Sc>;
  // The student's own checks are divergence's (its teacher argument stands in for itself here).
  const Index samples = check_divergence(fn, s, s, o);
  const Index classes = o.dim == 0 ? s.rows() : s.cols();
  const Index k = check_topk_teacher(fn, teacher, classes, samples, o.dim);
  const bool want_s = grad_out && gs && gs->size() != 0;
  bool want_t = false;
  if constexpr (!std::is_same_v<Gt, no_grad_buffer>) {
    want_t = grad_out && gt && gt->size() != 0;
    if (want_t) {
      check_no_overlap(fn, "grad_teacher_out", *gt, "student_logits", s, false);
      if (want_s) check_no_overlap(fn, "grad_teacher_out", *gt, "grad_student_out", *gs, false);
    }
  }
  const topk_form form = topk_form_of(fn, teacher, k, classes, o.kind, o.beta, o.temperature, o.teacher_temperature);
  const bool teacher_tail = form.teacher_tail, tail = form.tail;
  const double ts = o.temperature, tt = form.teacher_temperature;
  const divergence_kind kind = form.kind;
  sample_selection selection = selection_of(fn, o, samples);
  double kept = kept_weight(selection, samples);
  if constexpr (!std::is_same_v<Y, void>) {
    kept = check_index_targets(fn, *targets, samples, classes, o.ignore_index, Eigen::VectorXd(), selection);
    plan_index_sequences(selection, o.reduction, *targets, o.ignore_index, Eigen::VectorXd());
  } else {
    plan_kept_sequences(selection, o.reduction, samples);
  }
  const double denominator = o.reduction == reduction::mean ? kept * double(classes) : kept;
  const double factor = o.scale_by_temperature_squared ? ts * ts : 1.0;
  const T inv_ts = static_cast<T>(1 / ts);
  const auto skip = left_out_of(targets, o.ignore_index, selection.mask);
  Eigen::Matrix<T, Eigen::Dynamic, 1> losses(samples);
  const auto vi = view_of(teacher.indices, o.dim);
  const auto vv = view_of(teacher.values, o.dim);
  constexpr double dinf = std::numeric_limits<double>::infinity();

  auto pass = [&](const samples_view<const Sc>& vs, const samples_view<Sc>* out, const samples_view<V>* tout, const auto& scale) {
    const int threads = thread_count(o.num_threads, samples * classes);
    parallel_for(samples, threads, [&](Index j) {
      Sc* g = out ? out->sample(j) : nullptr;
      const Index gstride = out ? out->class_stride : 0;
      V* gv = tout ? tout->sample(j) : nullptr;
      const Index gvstride = tout ? tout->class_stride : 0;
      if (skip(j)) {
        losses(j) = 0;
        if (g)
          for (Index c = 0; c < classes; ++c) g[c * gstride] = Sc(0);
        if (gv)
          for (Index i = 0; i < k; ++i) gv[i * gvstride] = V(0);
        return;
      }
      const Sc* x = vs.sample(j);
      const Index xs = vs.class_stride;
      const I* idx = vi.sample(j);
      const V* val = vv.sample(j);
      // lp, lq, d: the k classes then the tail; order: the top-k classes ascending (the tail's runs).
      std::vector<double> lp(std::size_t(k + 1)), lq(std::size_t(k + 1)), d(std::size_t(k + 1));
      std::vector<std::pair<Index, Index>> order(static_cast<std::size_t>(k));
      for (Index i = 0; i < k; ++i) {
        const Index c = static_cast<Index>(idx[i * vi.class_stride]);
        order[std::size_t(i)] = {c, i};
        lp[std::size_t(i)] = static_cast<double>(static_cast<T>(x[c * xs]) * inv_ts);
      }
      std::sort(order.begin(), order.end());
      lse_accumulator<T> rest;
      Index from = 0;
      for (const auto& [c, i] : order) {
        rest.add(x, xs, from, c, inv_ts);
        from = c + 1;
      }
      rest.add(x, xs, from, classes, inv_ts);
      const T tail_lse = rest.value();
      const double lse = teacher.lse.size() != 0 ? static_cast<double>(teacher.lse(j)) : 0.0;
      losses(j) = static_cast<T>(topk_sample_divergence(form, val, vv.class_stride, teacher.lse.size() != 0 ? &lse : nullptr,
                                                        double(tail_lse), lp.data(), lq.data(),
                                                        g ? d.data() : nullptr));
      if (gv) {
        // e_i = d D / d lq_i = Q_i dD/dQ_i. Through the tail: d log Q_tail / d v_i = -Q_i / Q_tail
        // (log_probs, or logits with lse held fixed; d D / d lse is minus the column's sum), none
        // where Q_tail is clamped to 0. Plain logits: lq = log_softmax(v / T_t) over the k classes.
        // The values were read above, so gv may be their storage.
        std::vector<double> e(static_cast<std::size_t>(k));
        double esum = 0;
        for (Index i = 0; i < k; ++i) {
          const double q = std::exp(lq[std::size_t(i)]);
          e[std::size_t(i)] = q > 0 ? q * lumped_teacher_slope(kind, o.beta, lp[std::size_t(i)], lq[std::size_t(i)]) : 0.0;
          esum += e[std::size_t(i)];
        }
        const double tail_slope =
            teacher_tail && lq[std::size_t(k)] > -dinf ? lumped_teacher_slope(kind, o.beta, lp[std::size_t(k)], lq[std::size_t(k)]) : 0.0;
        const double up_t = double(scale(j)) / (teacher_tail ? 1.0 : tt);
        for (Index i = 0; i < k; ++i) {
          const double q = std::exp(lq[std::size_t(i)]);
          const double gi = teacher_tail ? e[std::size_t(i)] - q * tail_slope : e[std::size_t(i)] - q * esum;
          gv[i * gvstride] = static_cast<V>(gi * up_t);
        }
      }
      if (!g) return;
      // d D / d x_c: d_i / T_s at the top-k classes; in the tail d_tail p_c / P_tail / T_s, where
      // p_c / P_tail = exp(x_c / T_s - the tail's lse). x_c is read before g_c is written (in place).
      const double up = double(scale(j)) / ts;
      const T d_tail = tail ? static_cast<T>(d[std::size_t(k)] * up) : T(0);
      auto tail_run = [&](Index b, Index e) {
        alignas(64) T buffer[topk_chunk];
        for (Index c0 = b; c0 < e; c0 += topk_chunk) {
          const Index n = std::min(topk_chunk, e - c0);
          for (Index i = 0; i < n; ++i) buffer[i] = static_cast<T>(x[(c0 + i) * xs]) * inv_ts - tail_lse;
          Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned64> v(buffer, n);
          v = d_tail * v.exp();
          for (Index i = 0; i < n; ++i) g[(c0 + i) * gstride] = static_cast<Sc>(buffer[i]);
        }
      };
      from = 0;
      for (const auto& [c, i] : order) {
        tail_run(from, c);
        g[c * gstride] = static_cast<Sc>(d[std::size_t(i)] * up);
        from = c + 1;
      }
      tail_run(from, classes);
    });
  };
  with_view(s, o.dim, [&](const samples_view<const Sc>& vs) {
    auto no_scale = [](Index) { return T(0); };
    if constexpr (std::is_same_v<G, void>) {
      pass(vs, nullptr, nullptr, no_scale);
    } else {
      const auto up = divergence_upstream<T>(fn, o, samples, denominator, factor, *grad_out, selection);
      auto with_student = [&](const samples_view<V>* tout) {
        if (want_s)
          with_out_view(fn, "grad_student_out", s, *gs, o.dim, [&](const samples_view<Sc>& g) { pass(vs, &g, tout, up); });
        else
          pass(vs, nullptr, tout, up);
      };
      if constexpr (!std::is_same_v<Gt, no_grad_buffer>) {
        if (want_t) {
          with_out_view(fn, "grad_teacher_out", teacher.values, *gt, o.dim, [&](const samples_view<V>& g) { with_student(&g); });
          return;
        }
      }
      with_student(nullptr);
    }
  });
  if (o.scale_by_temperature_squared) losses *= static_cast<T>(factor);
  if (o.reduction == reduction::none) return reduce_losses(o.reduction, std::move(losses), kept, selection);
  return reduce_losses(o.reduction, std::move(losses), denominator, selection);
}

}  // namespace detail

/// The divergence (opts.kind, as divergence) between the student's softmax(student_logits / T_s),
/// lumped onto the teacher's k classes plus one tail class (its mass on every other class), and
/// the teacher's k probabilities plus its tail mass; per sample, reduced by opts.reduction (mean
/// divides by the kept samples x C, as divergence). With k = C it is divergence. Student logits
/// C x N (dim = 0) or N x C (dim = 1), float or double.
/// \throws xent::invalid_argument as divergence, and for teacher indices out of [0, C) or repeated
/// within a sample, k > C, shapes that do not match the student's, an lse of the wrong size or
/// with log_probs, or a teacher temperature other than 1 when the teacher's tail is known.
template <class S, class I, class V>
loss_result<detail::compute_t<typename S::Scalar>> topk_divergence(const Eigen::DenseBase<S>& student_logits,
                                                                   const topk_teacher<I, V>& teacher,
                                                                   const divergence_options& opts = {}) {
  return detail::topk_call<S, I, V, void, void, detail::no_grad_buffer>("topk_divergence", student_logits, teacher, nullptr, opts,
                                                                        nullptr, nullptr);
}

/// topk_divergence over the samples whose target is not opts.ignore_index.
template <class S, class I, class V, class Y>
loss_result<detail::compute_t<typename S::Scalar>> topk_divergence(const Eigen::DenseBase<S>& student_logits,
                                                                   const topk_teacher<I, V>& teacher,
                                                                   const Eigen::DenseBase<Y>& targets,
                                                                   const divergence_options& opts) {
  return detail::topk_call<S, I, V, Eigen::DenseBase<Y>, void, detail::no_grad_buffer>("topk_divergence", student_logits, teacher,
                                                                                       &targets, opts, nullptr, nullptr);
}

/// topk_divergence and its gradient w.r.t. the student logits (for none, of the sum of the
/// per-sample divergences) in one call; grad_student_out may be the student logits' storage.
template <class S, class I, class V, class Gs>
loss_result<detail::compute_t<typename S::Scalar>> topk_divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                             const topk_teacher<I, V>& teacher,
                                                                             const divergence_options& opts,
                                                                             const Eigen::DenseBase<Gs>& grad_student_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::topk_call<S, I, V, void, decltype(ones), Gs>("topk_divergence_with_grad", student_logits, teacher, nullptr, opts,
                                                                &ones, &grad_student_out);
  return detail::topk_call<S, I, V, void, double, Gs>("topk_divergence_with_grad", student_logits, teacher, nullptr, opts, &one,
                                                      &grad_student_out);
}

/// topk_divergence and its gradients w.r.t. the student logits and the teacher's stored values
/// (grad_teacher_out: the shape and scalar of teacher.values; an empty 0 x 0 buffer skips either).
/// grad_teacher_out may be teacher.values' storage; it must not overlap the student's buffers.
template <class S, class I, class V, class Gs, class Gt>
loss_result<detail::compute_t<typename S::Scalar>> topk_divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                             const topk_teacher<I, V>& teacher,
                                                                             const divergence_options& opts,
                                                                             const Eigen::DenseBase<Gs>& grad_student_out,
                                                                             const Eigen::DenseBase<Gt>& grad_teacher_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::topk_call<S, I, V, void, decltype(ones), Gs, Gt>("topk_divergence_with_grad", student_logits, teacher, nullptr,
                                                                    opts, &ones, &grad_student_out, &grad_teacher_out);
  return detail::topk_call<S, I, V, void, double, Gs, Gt>("topk_divergence_with_grad", student_logits, teacher, nullptr, opts, &one,
                                                          &grad_student_out, &grad_teacher_out);
}

/// topk_divergence_with_grad over the samples whose target is not opts.ignore_index.
template <class S, class I, class V, class Y, class Gs>
loss_result<detail::compute_t<typename S::Scalar>> topk_divergence_with_grad(const Eigen::DenseBase<S>& student_logits,
                                                                             const topk_teacher<I, V>& teacher,
                                                                             const Eigen::DenseBase<Y>& targets,
                                                                             const divergence_options& opts,
                                                                             const Eigen::DenseBase<Gs>& grad_student_out) {
  const double one = 1;
  const detail::ones_of<detail::compute_t<typename S::Scalar>> ones{opts.dim == 0 ? student_logits.cols() : student_logits.rows()};
  if (opts.reduction == reduction::none)
    return detail::topk_call<S, I, V, Eigen::DenseBase<Y>, decltype(ones), Gs>("topk_divergence_with_grad", student_logits, teacher,
                                                                               &targets, opts, &ones, &grad_student_out);
  return detail::topk_call<S, I, V, Eigen::DenseBase<Y>, double, Gs>("topk_divergence_with_grad", student_logits, teacher, &targets,
                                                                     opts, &one, &grad_student_out);
}

/// The gradient of topk_divergence w.r.t. the student logits (and the teacher's stored values,
/// unless grad_teacher_out is empty) times grad_out (a number for the reductions, one per sample
/// for none).
template <class S, class I, class V, class G, class Gs, class Gt = detail::no_grad_buffer>
void topk_divergence_backward(const Eigen::DenseBase<S>& student_logits, const topk_teacher<I, V>& teacher, const G& grad_out,
                              const divergence_options& opts, const Eigen::DenseBase<Gs>& grad_student_out,
                              const Eigen::DenseBase<Gt>& grad_teacher_out = detail::no_grad_buffer()) {
  detail::topk_call<S, I, V, void, G, Gs, Gt>("topk_divergence_backward", student_logits, teacher, nullptr, opts, &grad_out,
                                              &grad_student_out, &grad_teacher_out);
}

/// topk_divergence_backward over the samples whose target is not opts.ignore_index (their gradient is 0).
template <class S, class I, class V, class Y, class G, class Gs, class Gt = detail::no_grad_buffer>
void topk_divergence_backward(const Eigen::DenseBase<S>& student_logits, const topk_teacher<I, V>& teacher,
                              const Eigen::DenseBase<Y>& targets, const G& grad_out, const divergence_options& opts,
                              const Eigen::DenseBase<Gs>& grad_student_out,
                              const Eigen::DenseBase<Gt>& grad_teacher_out = detail::no_grad_buffer()) {
  detail::topk_call<S, I, V, Eigen::DenseBase<Y>, G, Gs, Gt>("topk_divergence_backward", student_logits, teacher, &targets, opts,
                                                             &grad_out, &grad_student_out, &grad_teacher_out);
}

}  // namespace xent

#endif
