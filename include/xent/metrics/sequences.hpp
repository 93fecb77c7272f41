#ifndef XENT_METRICS_SEQUENCES_HPP
#define XENT_METRICS_SEQUENCES_HPP

// Per-sequence perplexity: the distribution over sequences (documents, prompts) of exp(mean NLL of
// each sequence's tokens), beside the token-pooled metrics of eval_accumulator. docs/metrics.md,
// "Sequences".

#include "evaluation.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace xent {

/// What sequence_accumulator::report returns. The statistics are over the sequences with at least
/// one evaluated token, each sequence counting once whatever its length; NaN when there is none, or
/// when a non-finite sample was seen and skip_nonfinite is false (as eval_report).
struct sequence_report {
  std::int64_t sequences = 0;        ///< sequences with at least one evaluated token
  /// Sequences with none (all ignored, masked or of weight 0): of the sequences up to the last token
  /// seen with a sequence_length, of all the given ones with lengths.
  std::int64_t empty_sequences = 0;
  double mean_perplexity = 0;        ///< mean over the sequences of exp(their weighted mean NLL)
  double median_perplexity = 0;      ///< median (the mean of the two middle ones for an even count, as numpy)
  double max_perplexity = 0;         ///< the worst sequence's perplexity
  double min_perplexity = 0;         ///< the best sequence's perplexity
  /// Index of the worst sequence (the first of the largest perplexity; -1 when there is none).
  std::int64_t worst_sequence = -1;
};

/// eval_accumulator over a stream of tokens cut into sequences, either all of sequence_length
/// tokens or of the given lengths: tokens() is the token-pooled evaluation, report() the
/// distribution of per-sequence perplexity, ppl_s = exp(sum_j w_j l_j / sum_j w_j) over sequence s's
/// evaluated tokens (w_j = 1 without weights).
///
/// Tokens are placed by their position in the stream: update() appends after the last token added
/// by update(), update_at(first, ...) puts a batch at positions first, first + 1, ... (for threads,
/// shards or ranks that each see a part of the stream, batches that need not end on a sequence's
/// boundary). The state is each sequence's two sums (sum w l, sum w) plus the eval_accumulator's:
/// merge() adds them element-wise, so the result depends neither on the split nor on the merge
/// order beyond floating-point addition (each sequence's sums are exact bit for bit when the
/// sequence is not split). Positions given twice are counted twice.
class sequence_accumulator {
 public:
  /// Sequences of sequence_length tokens each.
  /// \throws xent::invalid_argument unless sequence_length >= 1, or for options eval_accumulator refuses.
  explicit sequence_accumulator(std::int64_t sequence_length, const eval_options& opts = {}) : tokens_(opts), length_(sequence_length) {
    if (sequence_length < 1) detail::throw_invalid("sequence_accumulator", "sequence_length", "must be at least 1", sequence_length);
  }

  /// Sequences of the given lengths, one after the other (their sum is the stream's length).
  /// \throws xent::invalid_argument for no lengths or a length below 1, or for options eval_accumulator refuses.
  explicit sequence_accumulator(const std::vector<std::int64_t>& lengths, const eval_options& opts = {}) : tokens_(opts) {
    constexpr const char* fn = "sequence_accumulator";
    if (lengths.empty()) detail::throw_invalid(fn, "lengths", "must name at least one sequence", "none");
    starts_.reserve(lengths.size() + 1);
    starts_.push_back(0);
    for (std::size_t s = 0; s < lengths.size(); ++s) {
      if (lengths[s] < 1) detail::throw_invalid(fn, "lengths[" + std::to_string(s) + "]", "must be at least 1", lengths[s]);
      starts_.push_back(starts_.back() + lengths[s]);
    }
    resize_sums(2 * lengths.size());
  }

  /// Adds a batch (logits and targets as eval_accumulator::update) as the stream's next tokens. With
  /// a sequence_length T, the batch must hold whole sequences: N a multiple of T.
  /// \throws xent::invalid_argument as eval_accumulator::update; for N not a multiple of T; for
  ///   tokens beyond the lengths' total.
  template <class Derived, class TDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets) {
    append(logits, targets, [&](std::int64_t first) { update_at(first, logits, targets); });
  }
  /// The same with a mask or per-sample weights (eval_accumulator::update's third argument).
  template <class Derived, class TDerived, class MDerived>
  void update(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
              const Eigen::DenseBase<MDerived>& mask_or_weights) {
    append(logits, targets, [&](std::int64_t first) { update_at(first, logits, targets, mask_or_weights); });
  }

  /// Adds a batch at positions first, first + 1, ... of the stream (any part of it: sequences may
  /// continue in other batches or other accumulators).
  /// \throws xent::invalid_argument as eval_accumulator::update, for first < 0, or for tokens beyond
  ///   the lengths' total.
  template <class Derived, class TDerived>
  void update_at(std::int64_t first, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets) {
    place(first, logits, [&](auto&& sink) {
      tokens_.add(logits, targets, [](Eigen::Index) { return true; }, [](Eigen::Index) { return 1.0; }, sink);
    });
  }
  /// The same with a mask or per-sample weights.
  template <class Derived, class TDerived, class MDerived>
  void update_at(std::int64_t first, const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>& targets,
                 const Eigen::DenseBase<MDerived>& mask_or_weights) {
    using M = typename MDerived::Scalar;
    const auto& m = mask_or_weights.derived();
    const Eigen::Index samples = tokens_.opts_.dim == 0 ? logits.cols() : logits.rows();
    if constexpr (std::is_floating_point_v<M>) eval_accumulator::check_weights(m, samples);
    else if (m.size() != samples)
      detail::throw_invalid("eval_accumulator::update", "mask", "must have one entry per sample (" + std::to_string(samples) + ")", m.size());
    place(first, logits, [&](auto&& sink) {
      const auto weight = [&m](Eigen::Index j) {
        if constexpr (std::is_floating_point_v<M>) return double(m.coeff(j));
        else return 1.0;
      };
      tokens_.add(logits, targets, [&m](Eigen::Index j) { return m.coeff(j) != M(0); }, weight, sink);
    });
  }

  /// Adds other's tokens and per-sequence sums to this one's.
  /// \throws xent::invalid_argument if the two differ in their sequences (length or lengths) or in
  ///   what eval_accumulator::merge compares.
  sequence_accumulator& merge(const sequence_accumulator& other) {
    constexpr const char* fn = "sequence_accumulator::merge";
    if (other.length_ != length_)
      detail::throw_invalid(fn, "other", "must have the same sequence_length (" + std::to_string(length_) + ")", other.length_);
    if (other.starts_ != starts_) detail::throw_invalid(fn, "other", "must have the same sequence lengths", "others");
    tokens_.merge(other.tokens_);
    if (other.sum_count() > sum_count()) resize_sums(other.sum_count());
    for (std::size_t i = 0; i < other.sum_count(); ++i) sum(i) += other.sum(i);
    end_ = std::max(end_, other.end_);
    next_ = std::max(next_, other.next_);
    return *this;
  }

  /// The distribution of per-sequence perplexity of everything added so far.
  /// \throws xent::invalid_argument with a sequence_length T when the last position seen does not
  ///   end a sequence (the stream's length is not a multiple of T).
  sequence_report report() const {
    constexpr double nan = std::numeric_limits<double>::quiet_NaN();
    if (length_ > 0 && end_ % length_ != 0)
      detail::throw_invalid("sequence_accumulator::report", "sequence_length",
                            "must divide the tokens seen (" + std::to_string(end_) + ") into whole sequences", length_);
    const std::size_t total = length_ > 0 ? std::size_t(end_ / length_) : starts_.size() - 1;
    std::vector<std::pair<double, std::int64_t>> ppl;  // (perplexity, sequence)
    for (std::size_t s = 0; s < total; ++s) {
      const double w = s < sum_count() / 2 ? sum(2 * s + 1) : 0;
      if (w > 0) ppl.emplace_back(std::exp(sum(2 * s) / w), std::int64_t(s));
    }
    sequence_report r;
    r.sequences = std::int64_t(ppl.size());
    r.empty_sequences = std::int64_t(total) - r.sequences;
    const eval_report pooled = tokens_.report();
    const bool poisoned = pooled.nonfinite_samples > 0 && !tokens_.opts_.skip_nonfinite;
    if (ppl.empty() || poisoned) {
      r.mean_perplexity = r.median_perplexity = r.max_perplexity = r.min_perplexity = nan;
      return r;
    }
    // Sorted first: the sum below, and so the mean, is then the same bits in any merge order.
    std::sort(ppl.begin(), ppl.end(), [](const auto& a, const auto& b) { return a.first < b.first || (a.first == b.first && a.second < b.second); });
    double sum = 0;
    for (const auto& p : ppl) sum += p.first;
    const std::size_t n = ppl.size();
    r.mean_perplexity = sum / double(n);
    r.median_perplexity = n % 2 ? ppl[n / 2].first : (ppl[n / 2 - 1].first + ppl[n / 2].first) / 2;
    r.min_perplexity = ppl.front().first;
    r.max_perplexity = ppl.back().first;
    // The first sequence of the largest perplexity: the first of the equal ones at the end.
    std::size_t worst = n - 1;
    while (worst > 0 && ppl[worst - 1].first == ppl.back().first) --worst;
    r.worst_sequence = ppl[worst].second;
    return r;
  }

  /// Each sequence's weighted mean NLL (NaN for one without evaluated tokens), in stream order, up
  /// to the last sequence seen (all of them with lengths).
  std::vector<double> sequence_nll() const {
    const std::size_t total = length_ > 0 ? std::size_t((end_ + length_ - 1) / length_) : starts_.size() - 1;
    std::vector<double> out(total, std::numeric_limits<double>::quiet_NaN());
    for (std::size_t s = 0; s < total && 2 * s < sum_count(); ++s)
      if (sum(2 * s + 1) > 0) out[s] = sum(2 * s) / sum(2 * s + 1);
    return out;
  }

  /// The token-pooled evaluation of every token added.
  const eval_accumulator& tokens() const noexcept { return tokens_; }
  /// The stream's length so far: one past the last position added.
  std::int64_t tokens_seen() const noexcept { return end_; }
  /// sequence_length, or 0 when the sequences have lengths of their own.
  std::int64_t sequence_length() const noexcept { return length_; }

  /// Declares the stream at least `tokens` long, as if positions up to tokens - 1 had been seen:
  /// with a sequence_length the state then holds all its sequences, and report() counts the ones no
  /// token reached as empty. Data parallelism calls it with the whole stream's length on every rank
  /// before reducing data(), so that every rank's state has the same size (with lengths it has
  /// already). Positions already seen beyond it are kept.
  /// \throws xent::invalid_argument for tokens < 0, or beyond the lengths' total.
  void extend_to(std::int64_t tokens) {
    constexpr const char* fn = "sequence_accumulator::extend_to";
    if (tokens < 0) detail::throw_invalid(fn, "tokens", "must be >= 0", tokens);
    if (length_ == 0 && tokens > starts_.back())
      detail::throw_invalid(fn, "tokens", "must be at most the sequences' total length (" + std::to_string(starts_.back()) + ")", tokens);
    if (length_ > 0) {
      const std::size_t needed = 2 * std::size_t((tokens + length_ - 1) / length_);
      if (needed > sum_count()) resize_sums(needed);
    }
    end_ = std::max(end_, tokens);
  }

  /// The state as one flat array of doubles, every entry a plain sum: tokens()'s state
  /// (eval_accumulator's layout), then each sequence's (sum w l, sum w) in stream order. Adding two
  /// states element-wise is merge() of equal-sized accumulators, so data-parallel evaluation is
  ///   acc.extend_to(stream_length);  xent::parallel::allreduce_sum(acc, comm);
  /// with the same sequences and options on every rank (docs/metrics.md, "Sequences"). The size
  /// grows with the sequences seen (sequence_length) until extend_to() fixes it.
  std::size_t size() const noexcept { return tokens_.state_.size(); }
  /// The size() doubles of the state, writable: what an in-place MPI_Allreduce sums into.
  double* data() noexcept { return tokens_.state_.data(); }
  /// The size() doubles of the state, for sending or saving them.
  const double* data() const noexcept { return tokens_.state_.data(); }

 private:
  template <class Derived, class TDerived, class F>
  void append(const Eigen::DenseBase<Derived>& logits, const Eigen::DenseBase<TDerived>&, F&& at) {
    const std::int64_t n = tokens_.opts_.dim == 0 ? logits.cols() : logits.rows();
    if (length_ > 0 && n % length_ != 0)
      detail::throw_invalid("sequence_accumulator::update", "logits",
                            "must hold whole sequences: a sample count that is a multiple of sequence_length (" + std::to_string(length_) + ")",
                            n);
    at(next_);
    next_ += n;
  }

  /// Runs add(sink) with a sink that adds each evaluated token's w l and w to its sequence's sums.
  template <class Derived, class Add>
  void place(std::int64_t first, const Eigen::DenseBase<Derived>& logits, Add&& add) {
    constexpr const char* fn = "sequence_accumulator::update";
    const std::int64_t n = tokens_.opts_.dim == 0 ? logits.cols() : logits.rows();
    if (first < 0) detail::throw_invalid(fn, "first", "must be >= 0", first);
    if (length_ == 0 && first + n > starts_.back())
      detail::throw_invalid(fn, "logits", "must end within the sequences' total length (" + std::to_string(starts_.back()) + ") at position " +
                                              std::to_string(first),
                            first + n);
    if (length_ > 0) {
      const std::size_t needed = 2 * std::size_t((first + n + length_ - 1) / length_);
      if (needed > sum_count()) resize_sums(needed);
    }
    // Tokens come in order of j: the sequence of lengths is found once, then followed.
    std::size_t seq = length_ > 0 ? 0 : std::size_t(std::upper_bound(starts_.begin(), starts_.end(), first) - starts_.begin() - 1);
    add([&](Eigen::Index j, double w, double nll) {
      const std::int64_t at = first + std::int64_t(j);
      if (length_ > 0) {
        seq = std::size_t(at / length_);
      } else {
        while (at >= starts_[seq + 1]) ++seq;
      }
      sum(2 * seq) += w * nll;
      sum(2 * seq + 1) += w;
    });
    end_ = std::max(end_, first + n);
  }

  // The per-sequence sums live after tokens_'s own entries, in its state vector (one flat state).
  std::size_t sum_count() const noexcept { return tokens_.state_.size() - tokens_.own_size(); }
  double& sum(std::size_t i) noexcept { return tokens_.state_[tokens_.own_size() + i]; }
  double sum(std::size_t i) const noexcept { return tokens_.state_[tokens_.own_size() + i]; }
  void resize_sums(std::size_t count) { tokens_.state_.resize(tokens_.own_size() + count, 0.0); }

  eval_accumulator tokens_;
  std::int64_t length_ = 0;           // 0: the sequences are given by starts_
  std::vector<std::int64_t> starts_;  // each sequence's first position, then the total
  std::int64_t end_ = 0;              // one past the last position added
  std::int64_t next_ = 0;             // where update() appends
};

/// a merged with b (see sequence_accumulator::merge).
inline sequence_accumulator merge(sequence_accumulator a, const sequence_accumulator& b) { return a.merge(b); }

}  // namespace xent

#endif
