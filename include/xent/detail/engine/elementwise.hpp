#ifndef XENT_DETAIL_ENGINE_ELEMENTWISE_HPP
#define XENT_DETAIL_ENGINE_ELEMENTWISE_HPP

// The elementwise driver: one loop for every elementwise loss (binary_cross_entropy,
// binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss, the measures' gradients), as
// ATen's cpu_kernel_vec is for torch's. A loss supplies a formula (detail/losses/): loss(x, t, e), d loss / d x and the mask of
// invalid inputs, each a template over V (a packet, or a scalar); the driver owns the rest:
//  - storage order: it walks the first input in memory order, runs of its contiguous axis; other
//    operands are read with their own strides, gathered into a block buffer when they are not
//    contiguous along the run;
//  - short runs (C = 10 along the contiguous axis) are taken several at a time as one flat block,
//    with a per-class weight tiled once per call to the block's length: no per-element branch,
//    no per-element index arithmetic;
//  - packet loops over each block, the ragged end through the same packet code on a padded copy;
//  - threads over blocks; the reduction policy of reduce.hpp (the block size is fixed, so the
//    sum is the same bits for any thread count);
//  - the input checks the formula defines, folded into the same loop (one read of the data): a
//    violation is reported after the loop by the first bad element in storage order.

#include "../../core/loss_result.hpp"
#include "../../core/reduction.hpp"
#include "../simd/math.hpp"
#include "checks.hpp"
#include "reduce.hpp"
#include "selection.hpp"
#include "threads.hpp"
#include "view.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace xent::detail::engine {

/// An operand of an elementwise call: element (i, j) of the call's rows x cols shape is
/// data[i * row_stride + j * col_stride]. A per-class vector broadcast over the samples has stride
/// 0 along the sample axis. Null data: an optional operand that is absent.
template <class T>
struct operand {
  T* data = nullptr;
  Index row_stride = 0;
  Index col_stride = 0;

  operand() = default;
  operand(T* d, Index rows_apart, Index cols_apart) : data(d), row_stride(rows_apart), col_stride(cols_apart) {}
  /// A writable operand read as a read-only one.
  template <class U, std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>, int> = 0>
  operand(const operand<U>& o) : data(o.data), row_stride(o.row_stride), col_stride(o.col_stride) {}

  explicit operator bool() const noexcept { return data != nullptr; }
};

/// The operand of a matrix's own storage (any Matrix, Map or Block).
template <class Derived>
auto operand_of(Derived& m) {
  using T = std::remove_pointer_t<decltype(m.data())>;
  return operand<T>{m.data(), m.rowStride(), m.colStride()};
}

/// One elementwise call. The formula sees (x, t, e); w multiplies the loss and the gradient.
template <class T>
struct elementwise_call {
  Index rows = 0, cols = 0;
  operand<const T> x, t, w, e;
  /// Each sample's weight broadcast over its classes (0 for a masked sample), or absent. Elements
  /// of weight 0 are not read: the formula sees padding there, so that NaN or a bad target in a
  /// masked sample neither spreads nor is reported.
  operand<const T> sample_w;
  operand<const T> grad_out;    // backward of reduction none: the upstream gradient per element
  T scale = 1;                  // upstream factor otherwise (grad_out scalar and the reduction's 1/n)
  operand<T> losses;            // reduction none: the losses, in the input's shape
  bool sum = false;             // add the losses up (mean, sum, batchmean)
  operand<T> grad;              // the gradient w.r.t. x
  int num_threads = 0;          // the options' num_threads
};

/// What a call returns: the sum of the losses (when asked) and, when the formula's check failed,
/// the first bad element (row, col) in the first input's storage order.
struct elementwise_outcome {
  double sum = 0;
  bool invalid = false;
  Index bad_row = -1, bad_col = -1;
};

namespace elementwise_detail {

/// Elements per block: 8 KiB of float, 16 KiB of double (the block buffers of a gathered call
/// stay in L1 together).
inline constexpr Index block_elements = 2048;

/// How the call's elements are cut into blocks. Runs follow the first input's contiguous axis.
struct plan {
  bool runs_are_columns = true;
  Index run_length = 0, runs = 0;
  bool flat = false;          // several whole runs per block
  Index runs_per_block = 1;   // flat
  Index segments = 1;         // per run, when not flat
  Index blocks = 0;

  Index pos_stride(Index row_stride, Index col_stride) const { return runs_are_columns ? row_stride : col_stride; }
  Index run_stride(Index row_stride, Index col_stride) const { return runs_are_columns ? col_stride : row_stride; }
  // (row, col) of position p of run r
  Index row(Index r, Index p) const { return runs_are_columns ? p : r; }
  Index col(Index r, Index p) const { return runs_are_columns ? r : p; }
};

template <class T>
plan make_plan(const elementwise_call<T>& c) {
  plan p;
  // Column runs unless the first input is contiguous along its rows only.
  p.runs_are_columns = !(c.x.col_stride == 1 && c.x.row_stride != 1 && c.cols > 1);
  p.run_length = p.runs_are_columns ? c.rows : c.cols;
  p.runs = p.runs_are_columns ? c.cols : c.rows;
  if (p.run_length <= block_elements / 2) {
    p.flat = true;
    p.runs_per_block = block_elements / p.run_length;
    p.blocks = (p.runs + p.runs_per_block - 1) / p.runs_per_block;
  } else {
    p.segments = (p.run_length + block_elements - 1) / block_elements;
    p.blocks = p.runs * p.segments;
  }
  return p;
}

/// Where one block's elements are: runs [run, run + count) from position `position` on, `length`
/// elements in all (a flat block holds count whole runs; a segment block, part of one run).
struct block_span {
  Index run = 0, count = 1, position = 0, length = 0;
};

inline block_span span_of(const plan& p, Index b) {
  block_span s;
  if (p.flat) {
    s.run = b * p.runs_per_block;
    s.count = std::min(p.runs_per_block, p.runs - s.run);
    s.length = s.count * p.run_length;
  } else {
    s.run = b / p.segments;
    s.position = (b % p.segments) * block_elements;
    s.length = std::min(block_elements, p.run_length - s.position);
  }
  return s;
}

/// A read-only operand made contiguous over a block: the operand's own memory when it already is,
/// a tile made once per call for a per-position vector under flat blocks, or the block buffer.
template <class T>
class block_reader {
 public:
  block_reader(const operand<const T>& a, const plan& p) : a_(a), p_(p) {
    if (!a) return;
    pos_ = p.pos_stride(a.row_stride, a.col_stride);
    run_ = p.run_stride(a.row_stride, a.col_stride);
    if (p.flat && run_ == 0 && !(pos_ == 1 && p.runs_per_block == 1)) {
      // The same values for every run: tile them once to a whole block's length.
      tile_.resize(std::size_t(p.runs_per_block * p.run_length));
      for (Index r = 0; r < p.runs_per_block; ++r)
        for (Index i = 0; i < p.run_length; ++i) tile_[std::size_t(r * p.run_length + i)] = a.data[i * pos_];
    }
  }
  /// The block's values, contiguous: in place, the tile, or gathered into buffer.
  const T* read(const block_span& s, T* buffer) const {
    if (!a_) return nullptr;
    const T* base = a_.data + s.run * run_ + s.position * pos_;
    if (!p_.flat) {
      if (pos_ == 1) return base;
      for (Index i = 0; i < s.length; ++i) buffer[i] = base[i * pos_];
      return buffer;
    }
    if (pos_ == 1 && (run_ == p_.run_length || s.count == 1)) return base;
    if (!tile_.empty()) return tile_.data();
    for (Index r = 0; r < s.count; ++r)
      for (Index i = 0; i < p_.run_length; ++i) buffer[r * p_.run_length + i] = base[r * run_ + i * pos_];
    return buffer;
  }

 private:
  operand<const T> a_;
  plan p_;
  Index pos_ = 0, run_ = 0;
  std::vector<T> tile_;
};

/// An output made contiguous over a block: the operand's memory when it is, else the block buffer,
/// scattered back by commit().
template <class T>
class block_writer {
 public:
  block_writer(const operand<T>& a, const plan& p) : a_(a), p_(p) {
    if (!a) return;
    pos_ = p.pos_stride(a.row_stride, a.col_stride);
    run_ = p.run_stride(a.row_stride, a.col_stride);
  }
  T* target(const block_span& s, T* buffer) const {
    if (!a_) return nullptr;
    return direct(s) ? a_.data + s.run * run_ + s.position * pos_ : buffer;
  }
  void commit(const block_span& s, const T* buffer) const {
    if (!a_ || direct(s)) return;
    T* base = a_.data + s.run * run_ + s.position * pos_;
    if (!p_.flat) {
      for (Index i = 0; i < s.length; ++i) base[i * pos_] = buffer[i];
      return;
    }
    for (Index r = 0; r < s.count; ++r)
      for (Index i = 0; i < p_.run_length; ++i) base[r * run_ + i * pos_] = buffer[r * p_.run_length + i];
  }

 private:
  bool direct(const block_span& s) const {
    return pos_ == 1 && (!p_.flat || run_ == p_.run_length || s.count == 1);
  }
  operand<T> a_;
  plan p_;
  Index pos_ = 0, run_ = 0;
};

/// What a block kernel computes; the flags are compile-time so that each loop carries only its work.
struct mode {
  bool weight, extra, grad_out, store_loss, sum, grad;
};

/// The block's contiguous operands.
template <class T>
struct block_data {
  const T *x, *t, *w, *e, *go;
  T* loss;
  T* grad;
  Index n;
};

template <class T>
struct block_result {
  double sum = 0;
  bool invalid = false;
};

/// One block: packets of the formula over n elements, the ragged end on a padded copy.
template <bool W, bool E, bool GO, bool Store, bool Sum, bool Grad, class F, class T>
block_result<T> run_block(const F& f, const block_data<T>& d, T scale) {
  using V = simd::vector_of<T>;
  constexpr Index ps = simd::vector_lanes<T>;
  const V one = simd::pset1<V>(T(1)), vscale = simd::pset1<V>(scale), zero = simd::pset1<V>(T(0));
  V bad = zero;
  exact_sum total;

  // The loss (when needed) of the ps elements at x[i] ..., writing what the mode stores.
  auto lanes_at = [&](const T* x, const T* t, const T* w, const T* e, const T* go, T* loss, T* grad, Index i) -> V {
    const V xv = simd::load<V>(x + i), tv = simd::load<V>(t + i);
    const V ev = E ? simd::load<V>(e + i) : one;
    bad = simd::por(bad, f.invalid(xv, tv));
    V l = zero;
    if constexpr (Grad) {
      V g;
      if constexpr (Store || Sum)
        l = f.loss_grad(xv, tv, ev, g);
      else
        g = f.grad(xv, tv, ev);
      V c = GO ? simd::pmul(simd::load<V>(go + i), vscale) : vscale;
      if constexpr (W) c = simd::pmul(c, simd::load<V>(w + i));
      simd::store(grad + i, simd::pmul(g, c));
    } else {
      l = f.loss(xv, tv, ev);
    }
    if constexpr (W && (Store || Sum)) l = simd::pmul(l, simd::load<V>(w + i));
    if constexpr (Store) simd::store(loss + i, l);
    return l;
  };

  // Lanes of a chain: the chains restart every chain_terms steps and fold into double.
  auto fold = [&](const V& chain) {
    alignas(64) T lanes_out[ps];
    simd::store(lanes_out, chain);
    double s = 0;
    for (Index l = 0; l < ps; ++l) s += double(lanes_out[l]);
    total.add(s);
  };

  Index i = 0;
  const Index n = d.n;
  while (i + 2 * ps <= n) {
    V a0 = zero, a1 = zero;
    for (const Index end = std::min(n, i + 2 * ps * chain_terms); i + 2 * ps <= end; i += 2 * ps) {
      a0 = simd::padd(a0, lanes_at(d.x, d.t, d.w, d.e, d.go, d.loss, d.grad, i));
      a1 = simd::padd(a1, lanes_at(d.x, d.t, d.w, d.e, d.go, d.loss, d.grad, i + ps));
    }
    if constexpr (Sum) fold(simd::padd(a0, a1));
  }
  if (i < n) {
    // The last (up to 2 ps - 1) elements, ps at a time on a copy padded with inputs the formula
    // accepts (they are neither reported nor summed).
    alignas(64) T x[ps], t[ps], w[ps], e[ps], go[ps], loss[ps], grad[ps];
    for (; i < n; i += ps) {
      const Index m = std::min(ps, n - i);
      for (Index l = 0; l < ps; ++l) {
        const bool in = l < m;
        x[l] = in ? d.x[i + l] : T(F::pad_x);
        t[l] = in ? d.t[i + l] : T(F::pad_t);
        w[l] = W && in ? d.w[i + l] : T(0);
        e[l] = E && in ? d.e[i + l] : T(1);
        go[l] = GO && in ? d.go[i + l] : T(0);
      }
      const V l = lanes_at(x, t, w, e, go, loss, grad, 0);
      if constexpr (Sum) {
        alignas(64) T lanes_out[ps];
        simd::store(lanes_out, l);
        double s = 0;
        for (Index k = 0; k < m; ++k) s += double(lanes_out[k]);
        total.add(s);
      }
      if constexpr (Store) std::copy(loss, loss + m, d.loss + i);
      if constexpr (Grad) std::copy(grad, grad + m, d.grad + i);
    }
  }
  block_result<T> r;
  r.sum = total.value();
  r.invalid = simd::predux_any(bad);
  return r;
}

/// run_block with the mode's flags made compile-time.
template <class F, class T>
block_result<T> dispatch_block(const F& f, const mode& m, const block_data<T>& d, T scale) {
  auto with = [&](auto w, auto e) -> block_result<T> {
    constexpr bool W = decltype(w)::value, E = decltype(e)::value;
    if (m.grad) {
      if (m.grad_out) return run_block<W, E, true, false, false, true>(f, d, scale);
      if (m.store_loss) return run_block<W, E, false, true, false, true>(f, d, scale);
      if (m.sum) return run_block<W, E, false, false, true, true>(f, d, scale);
      return run_block<W, E, false, false, false, true>(f, d, scale);
    }
    if (m.store_loss) return run_block<W, E, false, true, false, false>(f, d, scale);
    return run_block<W, E, false, false, true, false>(f, d, scale);
  };
  using yes = std::true_type;
  using no = std::false_type;
  if (m.weight) return m.extra ? with(yes{}, yes{}) : with(yes{}, no{});
  return m.extra ? with(no{}, yes{}) : with(no{}, no{});
}

}  // namespace elementwise_detail

/// Runs formula f over every element of the call.
template <class F, class T>
elementwise_outcome run_elementwise(const F& f, const elementwise_call<T>& c) {
  using namespace elementwise_detail;
  const plan p = make_plan(c);
  const block_reader<T> x(c.x, p), t(c.t, p), w(c.w, p), e(c.e, p), go(c.grad_out, p), sample_w(c.sample_w, p);
  const block_writer<T> losses(c.losses, p), grad(c.grad, p);
  const mode m{bool(c.w) || bool(c.sample_w), bool(c.e), bool(c.grad_out), bool(c.losses), c.sum, bool(c.grad)};
  std::vector<double> block_sums(c.sum ? std::size_t(p.blocks) : 0);
  std::vector<char> block_invalid(std::size_t(p.blocks), 0);
  const int threads = thread_count(c.num_threads, c.rows * c.cols);

  parallel_for(p.blocks, threads, [&](Index b) {
    const block_span s = span_of(p, b);
    alignas(64) T bx[block_elements], bt[block_elements], bw[block_elements], be[block_elements], bgo[block_elements],
        bloss[block_elements], bgrad[block_elements];
    block_data<T> d{x.read(s, bx), t.read(s, bt), w.read(s, bw), e.read(s, be), go.read(s, bgo),
                    losses.target(s, bloss), grad.target(s, bgrad), s.length};
    if (c.sample_w) {
      alignas(64) T bsw[block_elements];
      const T* a = sample_w.read(s, bsw);
      // The block's weight: the class weight (if any) times the sample's, in bw (w's own buffer).
      bool any_left_out = false;
      for (Index i = 0; i < s.length; ++i) {
        bw[i] = d.w ? d.w[i] * a[i] : a[i];
        any_left_out |= a[i] == T(0);
      }
      d.w = bw;
      if (any_left_out) {
        if (d.x != bx) std::copy(d.x, d.x + s.length, bx);
        if (d.t != bt) std::copy(d.t, d.t + s.length, bt);
        for (Index i = 0; i < s.length; ++i)
          if (a[i] == T(0)) {
            bx[i] = T(F::pad_x);
            bt[i] = T(F::pad_t);
          }
        d.x = bx;
        d.t = bt;
      }
    }
    const block_result<T> r = dispatch_block(f, m, d, c.scale);
    losses.commit(s, d.loss);
    grad.commit(s, d.grad);
    if (c.sum) block_sums[std::size_t(b)] = r.sum;
    block_invalid[std::size_t(b)] = r.invalid;
  });

  elementwise_outcome out;
  if (c.sum) out.sum = ordered_sum(block_sums.data(), Index(block_sums.size()));
  const auto first_bad = std::find(block_invalid.begin(), block_invalid.end(), char(1));
  if (first_bad != block_invalid.end()) {
    // Find the element in the block, in storage order, with the formula's scalar check.
    const block_span s = span_of(p, Index(first_bad - block_invalid.begin()));
    for (Index r = 0; r < s.count && !out.invalid; ++r)
      for (Index i = 0; i < (p.flat ? p.run_length : s.length) && !out.invalid; ++i) {
        const Index row = p.row(s.run + r, s.position + i), col = p.col(s.run + r, s.position + i);
        const T xv = c.x.data[row * c.x.row_stride + col * c.x.col_stride];
        const T tv = c.t.data[row * c.t.row_stride + col * c.t.col_stride];
        const bool left_out = c.sample_w && c.sample_w.data[row * c.sample_w.row_stride + col * c.sample_w.col_stride] == T(0);
        if (!left_out && f.invalid(xv, tv) != T(0)) {  // a scalar mask: all bits set (NaN) or 0
          out.invalid = true;
          out.bad_row = row;
          out.bad_col = col;
        }
      }
  }
  return out;
}

// ---- The front end: a public elementwise loss's Eigen arguments as one driver call.

/// What a public elementwise loss passes besides its inputs: names for messages, its options, and
/// its weight and extra (pos_weight) tensors, each empty, one per class along dim, or elementwise.
template <class T>
struct elementwise_args {
  const char* function;
  const char* x_name;  // "logits", "probs", "input"
  const char* t_name;  // "targets", "target"
  reduction r = reduction::mean;
  int dim = 0;
  int num_threads = 0;
  bool batchmean_allowed = false;
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>* weight = nullptr;
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>* extra = nullptr;
  const char* extra_name = nullptr;
  /// The options' per-sample weights, mask and normalizer (each sample: a run along dim's other axis).
  const Eigen::VectorXd* sample_weight = nullptr;
  const sample_mask* mask = nullptr;
  std::optional<double> normalizer = std::nullopt;
  /// The options' sequence_lengths (null: the options have none, the sequence reductions are refused).
  const std::vector<Index>* sequence_lengths = nullptr;
  /// Keras's label smoothing of the binary losses' targets (t -> t (1 - eps) + eps / 2), in [0, 1].
  double label_smoothing = 0;
};

/// The sample weighting of options that have it, into a call's arguments.
template <class T, class Options>
void with_selection(elementwise_args<T>& a, const Options& o) {
  a.sample_weight = &o.sample_weight;
  a.mask = &o.mask;
  a.normalizer = o.normalizer;
  if constexpr (has_sequence_lengths_v<Options>) a.sequence_lengths = &o.sequence_lengths;
}

template <class T>
sample_selection selection_of(const elementwise_args<T>& a);

/// The sequence plan of a call with a sequence reduction (null otherwise): each sample (token) of a
/// sequence weighs its sample weight in D_s. A token's loss is the one its loss's own mean averages:
/// the mean of its C entries, or their sum for kl_div (batchmean's, the KL of the sample).
template <class T>
std::shared_ptr<const sequence_plan> elementwise_sequences(const elementwise_args<T>& a, Index samples) {
  if (!a.sequence_lengths || !is_sequence_reduction(a.r)) return nullptr;
  sample_selection s = selection_of(a);
  s.sequence_lengths = a.sequence_lengths;
  plan_kept_sequences(s, a.r, samples);
  return s.sequences;
}

/// Each sample's factor in the compute type (its weight, 0 when masked); empty when the call has
/// neither weights nor a mask.
template <class T>
std::vector<T> sample_factors(const elementwise_args<T>& a, Index samples, Index classes) {
  if (const auto plan = elementwise_sequences(a, samples)) {
    // The effective weights a_j / (B' D_s) over the token's C entries (1 for kl_div).
    const double per_entry = a.batchmean_allowed ? 1.0 : 1.0 / double(classes);
    std::vector<T> f(std::size_t(samples), T(0));
    for (std::size_t j = 0; j < f.size(); ++j) f[j] = static_cast<T>(plan->weight[j] * per_entry);
    return f;
  }
  const bool weighted = a.sample_weight && a.sample_weight->size(), masked = a.mask && a.mask->size();
  std::vector<T> f(weighted || masked ? std::size_t(samples) : 0);
  for (std::size_t j = 0; j < f.size(); ++j) {
    const bool kept = !masked || (*a.mask)(Index(j));
    f[j] = kept ? (weighted ? static_cast<T>((*a.sample_weight)(Index(j))) : T(1)) : T(0);
  }
  return f;
}

/// torch's broadcast of a tensor against the input [N, C]: empty (absent), one entry per class (a
/// vector of C entries along dim), or the input's own shape.
template <class T>
operand<const T> broadcast_operand(const char* function, const char* name,
                                   const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>* w, Index rows, Index cols,
                                   int dim) {
  if (w == nullptr || w->size() == 0) return {};
  if (w->rows() == rows && w->cols() == cols) return {w->data(), 1, w->rows()};
  const Index classes = dim == 0 ? rows : cols;
  if (w->size() == classes && (w->rows() == 1 || w->cols() == 1))
    return dim == 0 ? operand<const T>{w->data(), 1, 0} : operand<const T>{w->data(), 0, 1};
  throw_invalid(function, name,
                "must have one entry per class (" + std::to_string(classes) + ") or the shape of the input (" +
                    shape_string(rows, cols) + ")",
                shape_string(w->rows(), w->cols()));
}

template <class T, class X, class Tg>
void check_elementwise(const elementwise_args<T>& a, const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Tg>& t) {
  static_assert(std::is_same_v<typename X::Scalar, T> && std::is_same_v<typename Tg::Scalar, T>,
                "the inputs and targets of an elementwise loss have one scalar type, float or double");
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "elementwise losses take float or double");
  check_dim(a.function, a.dim);
  check_reduction(a.function, a.r, a.batchmean_allowed, a.sequence_lengths != nullptr);
  check_num_threads(a.function, a.num_threads);
  check_not_empty(a.function, a.x_name, x);
  check_same_shape(a.function, a.t_name, t, a.x_name, x);
  (void)broadcast_operand(a.function, "weight", a.weight, x.rows(), x.cols(), a.dim);
  if (a.extra) (void)broadcast_operand(a.function, a.extra_name, a.extra, x.rows(), x.cols(), a.dim);
  if (!(a.label_smoothing >= 0 && a.label_smoothing <= 1))
    throw_invalid(a.function, "label_smoothing", "must be in [0, 1]", a.label_smoothing);
  static const Eigen::VectorXd no_weights;
  static const sample_mask no_mask;
  check_selection(a.function, a.sample_weight ? *a.sample_weight : no_weights, a.mask ? *a.mask : no_mask, a.normalizer, a.r,
                  a.dim == 0 ? x.cols() : x.rows());
  if (a.sequence_lengths) check_sequence_lengths(a.function, *a.sequence_lengths, a.r, a.dim == 0 ? x.cols() : x.rows());
}

/// The call's sample weighting, as the per-sample losses see theirs.
template <class T>
sample_selection selection_of(const elementwise_args<T>& a) {
  return {a.sample_weight && a.sample_weight->size() ? a.sample_weight->data() : nullptr,
          a.mask && a.mask->size() ? a.mask->data() : nullptr, a.normalizer};
}

/// What reduction::mean (batchmean) divides by: the elements (samples) kept, each sample counted
/// by its weight. The class weights are not in it (torch's mean over the elements).
template <class T>
double elementwise_denominator(const elementwise_args<T>& a, Index rows, Index cols) {
  const Index samples = a.dim == 0 ? cols : rows, classes = a.dim == 0 ? rows : cols;
  if (const auto plan = elementwise_sequences(a, samples)) return double(plan->kept_sequences);
  const double kept = kept_weight(selection_of(a), samples);
  return a.r == reduction::batchmean ? kept : kept * double(classes);
}

/// What the reduced weighted sum is divided by (sample_selection::divisor: the normalizer when
/// given, else the denominator for mean and batchmean, 1 for sum).
template <class T>
double elementwise_divisor(const elementwise_args<T>& a, reduction r, double denominator) {
  return selection_of(a).divisor(r, denominator);
}

/// The upstream gradient of a call: a number for mean, sum and batchmean (a 1 x 1 matrix is taken
/// as that number), the input's shape for none.
template <class T, class G>
struct upstream {
  T scale = 1;
  operand<const T> per_element;
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> evaluated;  // grad_out when it had no storage of its own
};

/// divisor: what the reduced loss is divided by (elementwise_divisor; 1 for none).
/// per_sequence: grad_out has one entry per sequence (or is a number, for all of them), spread over
/// each sequence's entries (plan: the call's elementwise_sequences).
template <class T, class G>
upstream<T, G> upstream_of(const char* function, const G& grad_out, reduction r, Index rows, Index cols, double divisor,
                           const sequence_plan* plan = nullptr, int dim = 0) {
  upstream<T, G> u;
  const T per = r == reduction::none ? T(1) : T(1.0 / divisor);
  if constexpr (!std::is_arithmetic_v<G>) {
    if (r == reduction::per_sequence && plan && !(grad_out.rows() == 1 && grad_out.cols() == 1 && plan->count() != 1)) {
      static_assert(std::is_same_v<typename G::Scalar, T>, "grad_out must have the input's scalar type");
      if (grad_out.size() != plan->count() || (grad_out.rows() != 1 && grad_out.cols() != 1))
        throw_invalid(function, "grad_out",
                      "must have one entry per sequence (" + std::to_string(plan->count()) + ") for reduction per_sequence",
                      shape_string(grad_out.rows(), grad_out.cols()));
      u.evaluated.resize(rows, cols);
      for (Index j = 0; j < (dim == 0 ? cols : rows); ++j) {
        const T g = static_cast<T>(grad_out.derived().coeff(plan->sequence_of[std::size_t(j)]));
        if (dim == 0)
          u.evaluated.col(j).setConstant(g);
        else
          u.evaluated.row(j).setConstant(g);
      }
      u.per_element = operand_of(u.evaluated);
      return u;
    }
  }
  if constexpr (std::is_arithmetic_v<G>) {
    if (r == reduction::none)
      throw_invalid(function, "grad_out", "must have the shape of the input (" + shape_string(rows, cols) + ") for reduction none, not a number",
                    grad_out);
    u.scale = T(grad_out) * per;
  } else {
    static_assert(std::is_same_v<typename G::Scalar, T>, "grad_out must have the input's scalar type");
    const bool scalar = grad_out.rows() == 1 && grad_out.cols() == 1;
    if (r != reduction::none) {
      if (!scalar)
        throw_invalid(function, "grad_out", std::string("must be a number (or 1 x 1) for reduction ") + to_string(r),
                      shape_string(grad_out.rows(), grad_out.cols()));
      u.scale = T(grad_out.derived().coeff(0, 0)) * per;
    } else {
      if (grad_out.rows() != rows || grad_out.cols() != cols)
        throw_invalid(function, "grad_out", "must have the shape of the input (" + shape_string(rows, cols) + ") for reduction none",
                      shape_string(grad_out.rows(), grad_out.cols()));
      if constexpr (has_direct_access<G>) {
        u.per_element = operand_of(grad_out.derived());
      } else {
        u.evaluated = grad_out;
        u.per_element = operand_of(u.evaluated);
      }
    }
  }
  return u;
}

/// The message of an input the formula rejects: "targets must hold probabilities in [0, 1], but
/// got targets(3, 1) = 1.5", naming the first bad element by its (row, col).
template <class F, class T>
[[noreturn]] void throw_bad_element(const elementwise_args<T>& a, const elementwise_outcome& o, T x, T t) {
  const bool blame_x = F::x_checked && F{}.invalid(x, T(F::pad_t)) != T(0);
  const char* name = blame_x ? a.x_name : a.t_name;
  std::ostringstream got;
  got << name << '(' << o.bad_row << ", " << o.bad_col << ") = " << (blame_x ? x : t);
  throw_invalid(a.function, name, blame_x ? F::x_expected : F::t_expected, got.str());
}

/// Runs f over x and t. losses_wanted: the forward's result (none: the elementwise losses); grad:
/// null, or the gradient's destination with its upstream.
template <class F, class T, class X, class Tg, class Out = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>,
          class G = T>
loss_result<T> elementwise(const F& f, const elementwise_args<T>& a, const Eigen::DenseBase<X>& x,
                           const Eigen::DenseBase<Tg>& t, bool losses_wanted, const upstream<T, G>* up = nullptr,
                           const Eigen::DenseBase<Out>* grad_out_buffer = nullptr) {
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const Index rows = x.rows(), cols = x.cols();
  const double denominator = elementwise_denominator(a, rows, cols);
  const std::vector<T> factors = sample_factors(a, a.dim == 0 ? cols : rows, a.dim == 0 ? rows : cols);
  const auto plan = elementwise_sequences(a, a.dim == 0 ? cols : rows);
  return with_storage(x, [&](const auto& xs) {
    return with_storage(t, [&](const auto& ts) {
    elementwise_call<T> c;
    c.rows = rows;
    c.cols = cols;
    c.x = operand_of(xs);
    c.t = operand_of(ts);
    c.w = broadcast_operand(a.function, "weight", a.weight, rows, cols, a.dim);
    if (a.extra) c.e = broadcast_operand(a.function, a.extra_name, a.extra, rows, cols, a.dim);
    if (!factors.empty()) c.sample_w = a.dim == 0 ? operand<const T>{factors.data(), 0, 1} : operand<const T>{factors.data(), 1, 0};
    c.num_threads = a.num_threads;
    matrix losses;
    // per_sequence: the weighted entries, then each sequence's sum of them.
    const bool store = a.r == reduction::none || a.r == reduction::per_sequence;
    if (losses_wanted && store) {
      losses.resize(rows, cols);
      c.losses = operand_of(losses);
    }
    c.sum = losses_wanted && !store;
    matrix grad_temporary;
    if (up) {
      c.scale = up->scale;
      c.grad_out = up->per_element;
      auto& out = const_cast<Out&>(grad_out_buffer->derived());
      if constexpr (has_direct_access<Out>) {
        c.grad = operand_of(out);
      } else {
        grad_temporary.resize(rows, cols);
        c.grad = operand_of(grad_temporary);
      }
    }
    const elementwise_outcome o = run_elementwise(f, c);
    if (o.invalid)
      throw_bad_element<F>(a, o, c.x.data[o.bad_row * c.x.row_stride + o.bad_col * c.x.col_stride],
                           c.t.data[o.bad_row * c.t.row_stride + o.bad_col * c.t.col_stride]);
    if constexpr (!has_direct_access<Out>) {
      if (up) const_cast<Out&>(grad_out_buffer->derived()) = grad_temporary;
    }
    if (a.r == reduction::none) return loss_result<T>::elementwise_losses(std::move(losses), denominator);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (a.r == reduction::per_sequence) {
      Eigen::Matrix<T, Eigen::Dynamic, 1> per(losses_wanted ? plan->count() : 0);  // backward: no losses
      if (per.size() == 0) return loss_result<T>::per_sequence_losses(std::move(per), denominator);
      for (Index q = 0; q < plan->count(); ++q) {
        exact_sum sq;
        for (Index j = plan->start[std::size_t(q)]; j < plan->start[std::size_t(q) + 1]; ++j) {
          if (plan->weight[std::size_t(j)] == 0) continue;  // left out: never read
          for (Index k = 0; k < (a.dim == 0 ? rows : cols); ++k) sq.add(double(a.dim == 0 ? losses(k, j) : losses(j, k)));
        }
        per(q) = static_cast<T>(plan->denominator[std::size_t(q)] > 0 ? sq.value() : nan);
      }
      return loss_result<T>::per_sequence_losses(std::move(per), denominator);
    }
    if (plan && plan->kept_sequences == 0) return loss_result<T>::reduced(a.r, static_cast<T>(nan), denominator);
    const double total = o.sum / elementwise_divisor(a, a.r, denominator);
    return loss_result<T>::reduced(a.r, static_cast<T>(total), denominator);
    });
  });
}

/// Checks the gradient buffer: the input's shape and scalar type, no memory shared with the
/// targets or the weights, and either x's own storage (in place) or none of it.
template <class T, class X, class Tg, class Out>
void check_gradient_buffer(const elementwise_args<T>& a, const char* out_name, const Eigen::DenseBase<X>& x,
                           const Eigen::DenseBase<Tg>& t, const Eigen::DenseBase<Out>& out) {
  static_assert(std::is_same_v<typename Out::Scalar, T>, "the gradient buffer must have the input's scalar type");
  if (out.rows() != x.rows() || out.cols() != x.cols())
    throw_invalid(a.function, out_name, "must have the shape of the input (" + shape_string(x.rows(), x.cols()) + ")",
                  shape_string(out.rows(), out.cols()));
  check_no_overlap(a.function, out_name, out, a.x_name, x, true);
  check_no_overlap(a.function, out_name, out, a.t_name, t, false);
  if (a.weight) check_no_overlap(a.function, out_name, out, "weight", *a.weight, false);
  if (a.extra) check_no_overlap(a.function, out_name, out, a.extra_name, *a.extra, false);
}

}  // namespace xent::detail::engine

#endif
