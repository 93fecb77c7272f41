// xent-eval: evaluates a model's logits against class-index targets, read from .npy, .safetensors
// or raw files: NLL, perplexity, bits, accuracy, Brier score, calibration (ECE, reliability diagram),
// and on request the temperature that calibrates the model. docs/metrics.md documents it.
//
// The logits are processed in chunks of --chunk-mb, memory-mapped (or read into a buffer with
// --no-mmap, or where mapping is unavailable) and released behind, so memory stays at one chunk
// per worker whatever the file size; --fit-temperature streams the file again for each pass.
// float16 and bfloat16 logits are widened to float32 chunk by chunk; the chunk's bytes in the file
// and its widened copy share the --chunk-mb.

#include "inputs.hpp"
#include "report.hpp"

#include <xent/metrics/binary.hpp>
#include <xent/metrics/evaluation.hpp>
#include <xent/metrics/sequences.hpp>
#include <xent/metrics/temperature.hpp>
#include <xent/version.hpp>

#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _WIN32
#include <io.h>
#include <process.h>
#define XENT_EVAL_ISATTY(fd) _isatty(fd)
#define XENT_EVAL_GETPID() _getpid()
#else
#include <fcntl.h>
#include <unistd.h>
#define XENT_EVAL_ISATTY(fd) isatty(fd)
#define XENT_EVAL_GETPID() getpid()
#endif

namespace {

using xent_eval::file_error;

struct settings {
  std::string logits_path, targets_path;  // targets_path empty: the targets are in the logits' .safetensors file
  std::string logits_key, targets_key;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::string weights_path;           // --weights: per-sample weights, .npy of float32 or float64
  std::int64_t sequence_length = 0;   // --sequence-length T; 0: none
  std::string sequence_lengths_path;  // --sequence-lengths: .npy of int32 or int64
  long ignore_index = -100;
  int top_k = 5;
  int bins = 15;
  std::string bins_mode = "uniform";  // --bins-mode: uniform (equal-width) or quantile (equal-mass)
  double temperature = 1;
  bool fit_temperature = false;
  bool classwise = false;  // --classwise: per-class bins (classwise ECE, Brier decomposition)
  bool binary = false;         // --binary: sigmoid outputs (N,) or (N, L) against 0/1 targets
  bool probabilities = false;  // --probabilities: with --binary, the inputs are p, not logits
  double threshold = 0.5;      // --threshold: with --binary, accuracy's decision threshold on p
  xent::eval_units units;
  double chunk_mb = 1;
  bool json = false;
  std::string svg_path;
  bool skip_nonfinite = false;
  bool allow_masks = false;
  bool progress = true;
  bool mmap = true;
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
};

/// Progress on standard error, for passes that take more than a second: a line redrawn in place on
/// a terminal, a line every few seconds otherwise (logs).
class progress_meter {
 public:
  using clock = std::chrono::steady_clock;

  progress_meter(bool enabled, std::uint64_t total) : enabled_(enabled), total_(total), tty_(XENT_EVAL_ISATTY(2) != 0) {}

  void start(std::string label) {
    label_ = std::move(label);
    start_ = last_ = clock::now();
    shown_ = false;
  }
  void advance(std::uint64_t done) {
    if (!enabled_) return;
    const clock::time_point now = clock::now();
    const double elapsed = seconds(now - start_);
    if (elapsed < 1 || (shown_ && seconds(now - last_) < (tty_ ? 0.2 : 5))) return;
    last_ = now;
    shown_ = true;
    std::fprintf(stderr, "%sxent-eval: %s %5.1f%% (%.0f of %.0f MB, %.2f GB/s)%s", tty_ ? "\r" : "", label_.c_str(),
                 100.0 * double(done) / double(total_), double(done) / 1e6, double(total_) / 1e6, double(done) / elapsed / 1e9,
                 tty_ ? "" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (!shown_) return;
    const double elapsed = seconds(clock::now() - start_);
    // On a terminal the spaces blank out the rest of the longer progress line.
    std::fprintf(stderr, "%sxent-eval: %s done in %.1f s (%.2f GB/s)%s\n", tty_ ? "\r" : "", label_.c_str(), elapsed,
                 double(total_) / elapsed / 1e9, tty_ ? "          " : "");
    shown_ = false;
  }

 private:
  static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }
  bool enabled_;
  std::uint64_t total_;
  bool tty_;
  bool shown_ = false;
  std::string label_;
  clock::time_point start_, last_;
};

/// Runs work(w) for every worker w < workers, worker 0 on this thread, and rethrows the first
/// worker's exception (in worker order) once all have finished.
template <class F>
void run_workers(int workers, F&& work) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  const auto guarded = [&](int w) {
    try {
      work(w);
    } catch (...) {
      errors[std::size_t(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < workers; ++w) threads.emplace_back(guarded, w);
  guarded(0);
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

/// The logits and targets as a sequence of chunks of at most --chunk-mb. Memory-mapped files are
/// read in place, by `threads` workers (worker w takes chunks w, w + threads, ...: a fixed split, so
/// the sums and hence the report are the same from run to run); each worker checks that the file
/// did not shrink under its chunk and releases the chunk behind it.
/// Otherwise one worker reads each chunk into a buffer; a file that fits in one chunk is then read
/// only once whatever the number of passes.
/// S is the logits' type in the file, T the type they are evaluated in: float16 and bfloat16 (S)
/// are widened to float (T) into a buffer per worker, chunk by chunk.
template <class S, class T, class I>
class dataset {
 public:
  using logits_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>>;
  using targets_map = Eigen::Map<const Eigen::Matrix<I, Eigen::Dynamic, 1>>;
  static constexpr bool widened = !std::is_same_v<S, T>;

  dataset(xent_eval::tensor_file& logits, xent_eval::tensor_file& targets, std::uint64_t samples, std::uint64_t classes, const settings& s,
          progress_meter& meter)
      : logits_(logits), targets_(targets), samples_(samples), classes_(classes), meter_(meter) {
    // A widened chunk is held twice, as stored and as T: both count against --chunk-mb.
    const double row_bytes = double(classes) * double(sizeof(S) + (widened ? sizeof(T) : 0));
    const double rows = std::floor(s.chunk_mb * 1e6 / row_bytes);
    rows_per_chunk_ = std::uint64_t(std::max(1.0, std::min(rows, double(samples))));
    if (s.mmap) mapped_logits_ = reinterpret_cast<const S*>(logits.map_data(sizeof(S)));
    if (!mapped()) {
      logit_buf_.resize(std::size_t(rows_per_chunk_ * classes));
      if (widened) stored_buf_.resize(std::size_t(rows_per_chunk_ * classes));
      target_buf_.resize(std::size_t(rows_per_chunk_));
    }
    const std::uint64_t chunks = (samples + rows_per_chunk_ - 1) / rows_per_chunk_;
    workers_ = mapped() ? int(std::min<std::uint64_t>(std::uint64_t(std::max(1, s.threads)), chunks)) : 1;
  }

  /// The number of workers a pass uses: f is called with worker indices below it.
  int workers() const { return workers_; }

  /// Calls f(logits C x rows, targets, first sample, worker) for every chunk; each worker sees its
  /// chunks in order. An exception in any worker is rethrown here (the first worker's first).
  template <class F>
  void pass(const std::string& label, F&& f) {
    const bool once = !mapped() && rows_per_chunk_ == samples_;
    if (once && loaded_) {
      f(logits_map(logit_buf_.data(), Eigen::Index(classes_), Eigen::Index(samples_)), targets_map(target_buf_.data(), Eigen::Index(samples_)),
        std::uint64_t(0), 0);
      return;
    }
    logits_.rewind();
    targets_.rewind();
    meter_.start(label);
    run_workers(workers_, [&](int w) {
      std::vector<I> chunk_targets(mapped() ? std::size_t(rows_per_chunk_) : 0);
      std::vector<T> chunk_widened(mapped() && widened ? std::size_t(rows_per_chunk_ * classes_) : 0);
      const std::uint64_t stride = rows_per_chunk_ * std::uint64_t(workers_);
      for (std::uint64_t first = rows_per_chunk_ * std::uint64_t(w); first < samples_; first += stride) {
        const std::uint64_t rows = std::min(rows_per_chunk_, samples_ - first);
        const std::size_t values = std::size_t(rows * classes_);
        const T* x = logit_buf_.data();
        const I* t = mapped() ? chunk_targets.data() : target_buf_.data();
        if (mapped()) {
          // The targets, C times smaller, are read: a copy of them costs less than their own
          // mapping and its release.
          targets_.read_at(chunk_targets.data(), std::size_t(rows * sizeof(I)), first * sizeof(I));
          const S* stored = mapped_logits_ + first * classes_;
          if constexpr (widened) {
            xent_eval::widen(stored, chunk_widened.data(), values);
            x = chunk_widened.data();
          } else {
            x = stored;
          }
        } else {
          if constexpr (widened) {
            logits_.read(stored_buf_.data(), values * sizeof(S));
            xent_eval::widen(stored_buf_.data(), logit_buf_.data(), values);
          } else {
            logits_.read(logit_buf_.data(), values * sizeof(S));
          }
          targets_.read(target_buf_.data(), std::size_t(rows * sizeof(I)));
        }
        f(logits_map(x, Eigen::Index(classes_), Eigen::Index(rows)), targets_map(t, Eigen::Index(rows)), first, w);
        if (mapped()) {
          const std::uint64_t end = (first + rows) * classes_ * sizeof(S);
          logits_.check_intact(end);
          logits_.release_mapped(first * classes_ * sizeof(S), end);
        }
        if (w == 0)  // worker 0 speaks for all: the others are at most a chunk apart
          meter_.advance(std::min<std::uint64_t>(samples_, first + stride) * classes_ * sizeof(S));
      }
    });
    meter_.finish();
    loaded_ = once;
    if (once) std::vector<S>().swap(stored_buf_);  // the widened copy stays, for the next passes
  }

 private:
  bool mapped() const { return mapped_logits_ != nullptr; }

  xent_eval::tensor_file& logits_;
  xent_eval::tensor_file& targets_;
  std::uint64_t samples_, classes_, rows_per_chunk_;
  progress_meter& meter_;
  const S* mapped_logits_ = nullptr;
  int workers_ = 1;
  bool loaded_ = false;
  std::vector<T> logit_buf_;
  std::vector<S> stored_buf_;  // widened only: the chunk as read, before widening
  std::vector<I> target_buf_;
};

/// Whether sample j has no distribution under the options (as eval_accumulator decides).
template <class Map>
bool nonfinite_sample(const Map& logits, Eigen::Index j, bool allow_masks) {
  bool any_finite = false;
  for (Eigen::Index k = 0; k < logits.rows(); ++k) {
    const double v = double(logits(k, j));
    if (std::isnan(v) || v == std::numeric_limits<double>::infinity() || (v == -std::numeric_limits<double>::infinity() && !allow_masks))
      return true;
    any_finite = any_finite || std::isfinite(v);
  }
  return !any_finite;
}

/// One accumulator per worker, merged in worker order at the end: the accumulators' merge is what
/// makes the threads free of any lock.
template <class Accumulator>
Accumulator merged(std::vector<Accumulator>& parts) {
  for (std::size_t w = 1; w < parts.size(); ++w) parts[0].merge(parts[w]);
  return parts[0];
}

/// --weights: samples [first, first + rows) of the weights file as doubles, each checked with its
/// index in the file (the library would refuse a bad one too, but without the file's position).
std::vector<double> read_weights(const xent_eval::tensor_file& wf, std::uint64_t first, std::uint64_t rows) {
  std::vector<double> w(static_cast<std::size_t>(rows), 0.0);
  if (wf.tensor().type == xent_eval::dtype::float32) {
    std::vector<float> f(static_cast<std::size_t>(rows));
    wf.read_at(f.data(), f.size() * sizeof(float), first * sizeof(float));
    std::copy(f.begin(), f.end(), w.begin());
  } else {
    wf.read_at(w.data(), w.size() * sizeof(double), first * sizeof(double));
  }
  for (std::size_t j = 0; j < w.size(); ++j)
    if (!(w[j] >= 0 && w[j] < std::numeric_limits<double>::infinity())) {
      std::ostringstream m;
      m << wf.path() << ": weights[" << first + j << "] = " << w[j] << ", but every weight must be finite and >= 0";
      throw file_error(m.str());
    }
  return w;
}

/// --sequence-lengths: the whole file (one entry per sequence), each >= 1, summing to the samples.
std::vector<std::int64_t> read_sequence_lengths(xent_eval::tensor_file& f, std::uint64_t samples) {
  const std::uint64_t count = f.tensor().shape[0];
  if (count == 0) throw file_error(f.path() + ": the sequence lengths name no sequence (shape [0])");
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(count));
  if (f.tensor().type == xent_eval::dtype::int32) {
    std::vector<std::int32_t> v(static_cast<std::size_t>(count));
    f.read_at(v.data(), v.size() * sizeof(std::int32_t), 0);
    std::copy(v.begin(), v.end(), lengths.begin());
  } else {
    f.read_at(lengths.data(), lengths.size() * sizeof(std::int64_t), 0);
  }
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] < 1)
      throw file_error(f.path() + ": sequence length [" + std::to_string(i) + "] = " + std::to_string(lengths[i]) + ", but every length must be at least 1");
    total += std::uint64_t(lengths[i]);
    if (total > samples) break;
  }
  if (total != samples)
    throw file_error(f.path() + ": the sequence lengths must add up to the " + std::to_string(samples) + " samples of the logits, but they add up to " +
                     (total > samples ? "more" : std::to_string(total)));
  return lengths;
}

template <class S, class T, class I>
xent_eval::run_result evaluate(const settings& s, xent_eval::tensor_file& lf, xent_eval::tensor_file& tf, const xent_eval::tensor_file* wf,
                               const std::vector<std::int64_t>& lengths, std::uint64_t n, std::uint64_t c, xent_eval::run_result run) {
  progress_meter meter(s.progress, n * c * sizeof(S));
  dataset<S, T, I> data(lf, tf, n, c, s, meter);
  const std::size_t workers = std::size_t(data.workers());

  xent::eval_options opts;
  opts.ignore_index = s.ignore_index;
  opts.top_k = s.top_k;
  opts.bins = s.bins;
  if (s.bins_mode == "quantile") opts.strategy = xent::bin_strategy::quantile;
  run.quantile_bins = s.bins_mode == "quantile";
  opts.temperature = s.temperature;
  opts.skip_nonfinite = s.skip_nonfinite;
  opts.neg_inf_is_mask = s.allow_masks;
  opts.num_threads = 1;  // the workers are this program's own
  if (s.classwise) opts.classwise_classes = long(c);
  std::vector<xent::eval_accumulator> accs(workers, xent::eval_accumulator(opts));
  // With sequences, each worker's sequence_accumulator places its chunks by position (chunks cut
  // sequences anywhere) and holds the token-pooled state itself.
  std::vector<xent::sequence_accumulator> seqs;
  if (s.sequence_length > 0) seqs.assign(workers, xent::sequence_accumulator(s.sequence_length, opts));
  if (!lengths.empty()) seqs.assign(workers, xent::sequence_accumulator(lengths, opts));
  const auto tokens_of = [&](std::size_t w) -> const xent::eval_accumulator& { return seqs.empty() ? accs[w] : seqs[w].tokens(); };
  std::vector<std::int64_t> first_bad(workers, -1);
  data.pass("evaluating " + xent_eval::printable(lf.path()), [&](const auto& logits, const auto& targets, std::uint64_t first, int w) {
    // The targets are checked here, with their index in the file, before the library sees them.
    for (Eigen::Index j = 0; j < targets.size(); ++j) {
      const long t = long(targets(j));
      if (t != s.ignore_index && (t < 0 || std::uint64_t(t) >= c))
        throw file_error(tf.path() + ": target[" + std::to_string(first + std::uint64_t(j)) + "] = " + std::to_string(t) + " is outside [0, " +
                         std::to_string(c) + ") and is not the ignore index (" + std::to_string(s.ignore_index) + ")");
    }
    const std::size_t ws = std::size_t(w);
    const double bad_before = tokens_of(ws)[xent::eval_accumulator::nonfinite_samples];
    std::vector<double> weights;
    if (wf) weights = read_weights(*wf, first, std::uint64_t(targets.size()));
    const Eigen::Map<const Eigen::VectorXd> wmap(weights.data(), Eigen::Index(weights.size()));
    if (seqs.empty() && wf) accs[ws].update(logits, targets, wmap);
    else if (seqs.empty()) accs[ws].update(logits, targets);
    else if (wf) seqs[ws].update_at(std::int64_t(first), logits, targets, wmap);
    else seqs[ws].update_at(std::int64_t(first), logits, targets);
    std::int64_t& bad = first_bad[ws];
    if (bad < 0 && tokens_of(ws)[xent::eval_accumulator::nonfinite_samples] > bad_before) {
      for (Eigen::Index j = 0; j < targets.size() && bad < 0; ++j)
        if (long(targets(j)) != s.ignore_index && (weights.empty() || weights[std::size_t(j)] != 0) && nonfinite_sample(logits, j, s.allow_masks))
          bad = std::int64_t(first) + j;
    }
  });
  if (seqs.empty()) {
    run.report = merged(accs).report(s.units);
  } else {
    const xent::sequence_accumulator all = merged(seqs);
    run.report = all.tokens().report(s.units);
    run.sequences = all.report();
    run.sequence_length = s.sequence_length;
  }
  const xent::eval_report& r = run.report;
  std::int64_t first_nonfinite = -1;
  for (const std::int64_t b : first_bad)
    if (b >= 0 && (first_nonfinite < 0 || b < first_nonfinite)) first_nonfinite = b;
  if (r.nonfinite_samples > 0 && !s.skip_nonfinite)
    throw file_error(lf.path() + ": " + std::to_string(r.nonfinite_logits) + " non-finite logits (NaN or +-inf) in " +
                     std::to_string(r.nonfinite_samples) + " of " + std::to_string(n) + " samples (the first is sample " +
                     std::to_string(first_nonfinite) + "); their metrics would be NaN. --skip-nonfinite leaves those samples out" +
                     (s.allow_masks ? "" : "; --allow-masks treats -inf logits as masked classes"));
  if (r.samples == 0)
    throw file_error(tf.path() + ": no sample left to evaluate (" + std::to_string(r.ignored) + " ignored, " +
                     std::to_string(r.nonfinite_samples) + " non-finite)");

  if (s.fit_temperature) {
    xent::temperature_options topts;
    topts.ignore_index = s.ignore_index;
    topts.bins = s.bins;
    topts.skip_nonfinite = s.skip_nonfinite;
    topts.num_threads = 1;
    int pass = 0;
    xent::temperature_fit fit = xent::fit_temperature_with(
        [&](double temperature) {
          std::vector<xent::temperature_sums> sums(workers);
          data.pass("fitting the temperature, pass " + std::to_string(++pass),
                    [&](const auto& logits, const auto& targets, std::uint64_t first, int w) {
                      // --weights: the weighted mean NLL is minimised.
                      if (wf) {
                        const std::vector<double> weights = read_weights(*wf, first, std::uint64_t(targets.size()));
                        const Eigen::Map<const Eigen::VectorXd> wmap(weights.data(), Eigen::Index(weights.size()));
                        xent::add_temperature_sums(logits, targets, wmap, temperature, topts, sums[std::size_t(w)]);
                      } else {
                        xent::add_temperature_sums(logits, targets, temperature, topts, sums[std::size_t(w)]);
                      }
                    });
          for (std::size_t w = 1; w < workers; ++w) sums[0].merge(sums[w]);
          return sums[0];
        },
        topts);
    fit.ece_before = r.ece;  // the main pass ran at T = 1 (--temperature excludes --fit-temperature)
    if (std::isfinite(fit.temperature)) {
      opts.temperature = fit.temperature;
      opts.classwise_classes = 0;  // only the ECE is reported after the fit
      std::vector<xent::eval_accumulator> after(workers, xent::eval_accumulator(opts));
      data.pass("evaluating at the fitted temperature", [&](const auto& logits, const auto& targets, std::uint64_t first, int w) {
        if (wf) {
          const std::vector<double> weights = read_weights(*wf, first, std::uint64_t(targets.size()));
          after[std::size_t(w)].update(logits, targets, Eigen::Map<const Eigen::VectorXd>(weights.data(), Eigen::Index(weights.size())));
        } else {
          after[std::size_t(w)].update(logits, targets);
        }
      });
      fit.ece_after = merged(after).report().ece;
    }
    run.fit = fit;
  }
  return run;
}

xent_eval::input_info input_info_of(const xent_eval::tensor_file& f, const xent_eval::tensor_desc& d) {
  return {f.path(), "npy", d.name, xent_eval::dtype_name(d.type), d.shape};
}

xent_eval::run_result run(const settings& s) {
  using xent_eval::dtype;
  xent_eval::tensor_file lf(s.logits_path);
  xent_eval::logits_request request{s.logits_key, xent_eval::parse_dtype_name(s.dtype), s.shape};
  const xent_eval::file_format lformat = xent_eval::open_logits(lf, request);
  if (s.targets_path.empty() && lformat != xent_eval::file_format::safetensors)
    throw file_error(lf.path() + ": a " + (lformat == xent_eval::file_format::raw ? "raw" : ".npy") +
                     " file holds the logits alone; give the targets file (.npy or .safetensors) after it");
  // Targets in the logits' own .safetensors file are read through a second descriptor: each file
  // object streams one tensor.
  xent_eval::tensor_file tf(s.targets_path.empty() ? s.logits_path : s.targets_path);
  const xent_eval::file_format tformat = xent_eval::open_targets(tf, s.targets_key);
  const xent_eval::tensor_desc& lt = lf.tensor();
  const xent_eval::tensor_desc& tt = tf.tensor();
  const std::uint64_t n = lt.shape[0], c = lt.shape[1];
  if (n == 0) throw file_error(lf.path() + ": the logits hold no sample (shape " + xent_eval::detail::shape_string(lt.shape) + ")");
  if (c == 0) throw file_error(lf.path() + ": the logits hold no class (shape " + xent_eval::detail::shape_string(lt.shape) + ")");
  if (tt.shape[0] != n)
    throw file_error(tf.path() + ": " + std::to_string(tt.shape[0]) + " targets for " + std::to_string(n) + " samples of logits in " +
                     lf.path() + "; both must have the same N");

  // The library refuses such a temperature too, but in its own terms. float16 and bfloat16 logits
  // are evaluated as float32.
  const dtype evaluated = lt.type == dtype::float64 ? dtype::float64 : dtype::float32;
  const double largest = evaluated == dtype::float32 ? double(std::numeric_limits<float>::max()) : std::numeric_limits<double>::max();
  if (!(1 / s.temperature <= largest)) {
    std::ostringstream m;
    m << "--temperature " << s.temperature << " is too small for the " << xent_eval::dtype_name(lt.type) << " logits of " << lf.path()
      << ": 1 / T = " << 1 / s.temperature << " overflows " << xent_eval::dtype_name(evaluated) << " (T must be at least " << 1 / largest << ")";
    throw std::invalid_argument(m.str());
  }

  xent_eval::run_result result;
  result.logits = {lf.path(), xent_eval::format_name(lformat), lt.name, xent_eval::dtype_name(lt.type), lt.shape};
  result.targets = {tf.path(), xent_eval::format_name(tformat), tt.name, xent_eval::dtype_name(tt.type), tt.shape};
  result.units = s.units;
  // --weights and --sequence-lengths: 1-D .npy files of N weights, of the sequences' lengths.
  std::optional<xent_eval::tensor_file> wf;
  if (!s.weights_path.empty()) {
    wf.emplace(s.weights_path);
    xent_eval::open_npy_vector(*wf, {dtype::float32, dtype::float64}, "weights");
    if (wf->tensor().shape[0] != n)
      throw file_error(wf->path() + ": " + std::to_string(wf->tensor().shape[0]) + " weights for " + std::to_string(n) + " samples of logits in " +
                       lf.path() + "; both must have the same N");
    const xent_eval::tensor_desc& d = wf->tensor();
    result.weights = input_info_of(*wf, d);
  }
  if (s.sequence_length > 0 && n % std::uint64_t(s.sequence_length) != 0)
    throw std::invalid_argument("--sequence-length " + std::to_string(s.sequence_length) + " must divide the " + std::to_string(n) +
                                " samples of " + lf.path() + " into whole sequences (" + std::to_string(n % std::uint64_t(s.sequence_length)) +
                                " left over)");
  std::vector<std::int64_t> lengths;
  if (!s.sequence_lengths_path.empty()) {
    xent_eval::tensor_file sf(s.sequence_lengths_path);
    xent_eval::open_npy_vector(sf, {dtype::int32, dtype::int64}, "sequence lengths");
    lengths = read_sequence_lengths(sf, n);
    result.sequence_lengths = input_info_of(sf, sf.tensor());
  }
  const xent_eval::tensor_file* w = wf ? &*wf : nullptr;
  const bool i32 = tt.type == dtype::int32;
  switch (lt.type) {
    case dtype::float16:
      return i32 ? evaluate<Eigen::half, float, std::int32_t>(s, lf, tf, w, lengths, n, c, result)
                 : evaluate<Eigen::half, float, std::int64_t>(s, lf, tf, w, lengths, n, c, result);
    case dtype::bfloat16:
      return i32 ? evaluate<Eigen::bfloat16, float, std::int32_t>(s, lf, tf, w, lengths, n, c, result)
                 : evaluate<Eigen::bfloat16, float, std::int64_t>(s, lf, tf, w, lengths, n, c, result);
    case dtype::float32:
      return i32 ? evaluate<float, float, std::int32_t>(s, lf, tf, w, lengths, n, c, result)
                 : evaluate<float, float, std::int64_t>(s, lf, tf, w, lengths, n, c, result);
    default:
      return i32 ? evaluate<double, double, std::int32_t>(s, lf, tf, w, lengths, n, c, result)
                 : evaluate<double, double, std::int64_t>(s, lf, tf, w, lengths, n, c, result);
  }
}

/// Bounds as a reader writes them. CLI11's PositiveNumber prints its range with every one of the 309
/// digits of the largest double. (The help says ">=": CLI11 aligns its columns by bytes, not by the
/// characters of a UTF-8 "≥".)
CLI::Validator at_least(int low) {
  return CLI::Validator(
      [low](std::string& text) {
        double v = 0;
        // A word that is no number is left to the option's conversion, which names the type it wants.
        if (!CLI::detail::lexical_cast(text, v) || v >= low) return std::string();
        return "must be ≥ " + std::to_string(low) + ", but got " + text;
      },
      ">= " + std::to_string(low));
}
CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& text) {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v) || (v > 0 && std::isfinite(v))) return std::string();
        return "must be a finite number > 0, but got " + text;
      },
      "> 0");
}

std::string system_reason() { return std::string(" (") + std::strerror(errno) + ")"; }

/// Writes `text` to `out` and flushes it: a full disk, a closed descriptor or a pipe without a
/// reader throws, with the system's reason.
void write_all(std::FILE* out, const std::string& text, const std::string& what) {
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fflush(out) != 0) throw std::runtime_error(what + system_reason());
}

/// Refuses, before the evaluation, an SVG path that would overwrite an input or whose directory
/// does not exist.
void check_svg_path(const settings& s) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& [input, what] : {std::pair{&s.logits_path, "logits"}, std::pair{&s.targets_path, "targets"}})
    if (!input->empty() && fs::equivalent(s.svg_path, *input, ec))
      throw std::invalid_argument("--svg " + s.svg_path + " names the " + what + " file " + *input + "; the diagram would overwrite an input");
  const fs::path dir = fs::path(s.svg_path).parent_path();
  if (!fs::is_directory(dir.empty() ? fs::path(".") : dir, ec))
    throw file_error(s.svg_path + ": cannot write the reliability diagram (there is no directory " + dir.string() + ")");
}

/// The diagram goes to a temporary file next to `path`, renamed over it once complete: a full disk
/// leaves neither a truncated SVG nor a damaged older one. An existing path that is not a regular
/// file (/dev/stdout, a FIFO) is written in place, since renaming would replace it.
void write_svg_file(const std::string& path, const std::string& svg, const std::string& diagram = "the reliability diagram") {
  namespace fs = std::filesystem;
  const std::string what = path + ": cannot write " + diagram;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
    if (!f) throw std::runtime_error(what + system_reason());
    write_all(f.get(), svg, what);
    if (std::fclose(f.release()) != 0) throw std::runtime_error(what + system_reason());
    return;
  }
  const std::string temp = path + ".tmp-" + std::to_string(XENT_EVAL_GETPID());
  std::FILE* f = std::fopen(temp.c_str(), "wbx");  // x: never through an existing file or link
  if (!f) throw std::runtime_error(what + system_reason());
  try {
    write_all(f, svg, what);
    const int closed = std::fclose(f);
    f = nullptr;
    if (closed != 0) throw std::runtime_error(what + system_reason());
    fs::rename(temp, path, ec);
    if (ec) throw std::runtime_error(what + " (" + ec.message() + ")");
  } catch (...) {
    if (f) std::fclose(f);
    std::remove(temp.c_str());
    throw;
  }
}

void print_error(const std::string& message) { std::cerr << "xent-eval: error: " << xent_eval::printable(message) << '\n'; }

}  // namespace

#include "binary.hpp"   // xent-eval --binary: uses the helpers above
#include "compare.hpp"  // xent-eval compare: uses the helpers above

int main(int argc, char** argv) {
#ifndef _WIN32
  // Writing to a pipe without a reader, or past the file-size limit, then fails with EPIPE or EFBIG,
  // which the check on every write reports, instead of killing the process without a word.
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGXFSZ, SIG_IGN);
#endif
  // xent-eval compare BASE TEST [TARGETS]: a command of its own (a file named "compare" is ./compare).
  if (argc > 1 && std::strcmp(argv[1], "compare") == 0) return compare_main(argc - 1, argv + 1);
  settings s;
  CLI::App app{"xent-eval: evaluate a model's logits against class-index targets (.npy, .safetensors or raw files): NLL,\n"
               "perplexity, bits, accuracy, Brier score, calibration (ECE, reliability diagram) and temperature scaling.\n"
               "xent-eval compare BASE TEST [TARGETS] compares two models (xent-eval compare --help).",
               "xent-eval"};
  app.add_option("logits", s.logits_path,
                 "Logits, shape (N, C), C order: .npy of float16, float32 or float64; .safetensors (F16, BF16, F32, F64); raw with --dtype "
                 "and --shape")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("targets", s.targets_path,
                 "Class indices, shape (N,): .npy or .safetensors of int32 or int64 (default: the logits' .safetensors file)")
      ->check(CLI::ExistingFile);
  auto* logits_key = app.add_option("--logits-key", s.logits_key, "The logits' tensor in a .safetensors file (default: its only 2-D float tensor)");
  app.add_option("--targets-key", s.targets_key, "The targets' tensor in a .safetensors file (default: its only 1-D integer tensor)");
  auto* dtype = app.add_option("--dtype", s.dtype, "The logits' element type where the file cannot say it: bf16 for a .npy of uint16 bits, "
                                                   "or any for a raw file (with --shape)")
                    ->check(CLI::IsMember({"f16", "float16", "bf16", "bfloat16", "f32", "float32", "f64", "float64"}));
  app.add_option("--shape", s.shape, "N,C: the logits file is raw (no header, C order, little-endian), of --dtype")
      ->delimiter(',')
      ->expected(2)
      ->needs(dtype)
      ->excludes(logits_key);
  app.add_option("--ignore-index", s.ignore_index, "Targets equal to this are left out, as torch's ignore_index")->capture_default_str();
  app.add_option("--top-k", s.top_k, "k of the top-k accuracy")->capture_default_str()->check(at_least(1));
  app.add_option("--bins", s.bins, "Confidence bins of the ECE and the diagram")->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--bins-mode", s.bins_mode,
                 "uniform: equal-width bins; quantile: equal-mass bins (about N / bins samples each, from a 4096-cell histogram of the "
                 "confidences; 128 KiB per thread)")
      ->capture_default_str()
      ->check(CLI::IsMember({"uniform", "quantile"}));
  auto* temp = app.add_option("--temperature", s.temperature, "Evaluate softmax(logits / T)")->capture_default_str()->check(positive());
  app.add_flag("--fit-temperature", s.fit_temperature, "Also fit the temperature that minimises the NLL; report NLL and ECE before and after")
                  ->excludes(temp);
  app.add_flag("--classwise", s.classwise,
               "Also bin every class's probability: classwise ECE and the Brier score's decomposition (C x bins x 24 bytes per thread)");
  auto* binary = app.add_flag("--binary", s.binary,
                              "Binary or multi-label (sigmoid) model: logits of shape (N,) or (N, L) against 0/1 targets of the same shape (.npy): "
                              "BCE, accuracy at --threshold, Brier score, ECE and reliability curve of p");
  app.add_flag("--probabilities", s.probabilities, "With --binary: the inputs are probabilities in [0, 1], not logits (torch's binary_cross_entropy)")
      ->needs(binary);
  app.add_option("--threshold", s.threshold, "With --binary: a prediction is positive when p > this")
      ->capture_default_str()
      ->needs(binary)
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--weights", s.weights_path, "Per-sample weights, shape (N,): .npy of float32 or float64, each finite and >= 0; every metric weighted")
      ->check(CLI::ExistingFile);
  auto* seq_len = app.add_option("--sequence-length", s.sequence_length,
                                 "Cut the samples into sequences of T tokens (T must divide N): report per-sequence perplexity too")
                      ->check(at_least(1));
  app.add_option("--sequence-lengths", s.sequence_lengths_path,
                 "Sequences of the lengths in this .npy (int32 or int64, each >= 1, summing to N): report per-sequence perplexity too")
      ->check(CLI::ExistingFile)
      ->excludes(seq_len);
  app.add_option("--characters", s.units.characters, "Characters of the evaluated text, for bits per character")->check(positive());
  app.add_option("--bytes", s.units.bytes, "Bytes of the evaluated text, for bits per byte")->check(positive());
  app.add_option("--dimensions", s.units.dimensions, "Dimensions of the data, for bits per dimension")->check(positive());
  app.add_option("--chunk-mb", s.chunk_mb,
                 "Process the logits in chunks of at most this size (MB): the memory used per worker, whatever the file size")
      ->capture_default_str()
      ->check(positive());
  app.add_option("--threads", s.threads, "Worker threads over the chunks of a memory-mapped file (default: the cores)")
      ->check(CLI::Range(1, 1024));
  app.add_flag("!--no-mmap", s.mmap, "Read the files with read() into a chunk buffer instead of memory-mapping them");
  app.add_flag("--json", s.json, "Print the report as JSON");
  app.add_option("--svg", s.svg_path, "Write the reliability diagram to this SVG file");
  app.add_flag("--skip-nonfinite", s.skip_nonfinite, "Leave out samples with NaN or infinite logits (default: refuse them)");
  app.add_flag("--allow-masks", s.allow_masks, "Treat -inf logits as masked classes of probability 0 (default: refuse them)");
  app.add_flag("!--no-progress", s.progress, "No progress on standard error");
  app.set_version_flag("--version", "xent-eval " + std::to_string(XENT_VERSION_MAJOR) + "." + std::to_string(XENT_VERSION_MINOR) + "." +
                                        std::to_string(XENT_VERSION_PATCH));
  app.failure_message([](const CLI::App* a, const CLI::Error& e) { return xent_eval::printable(CLI::FailureMessage::simple(a, e)); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // --help and --version print on standard output
    if (code == 0 && (std::fflush(stdout) != 0 || std::ferror(stdout))) {
      print_error("cannot write to standard output" + system_reason());
      return 1;
    }
    return code;
  }

  try {
#ifndef _WIN32
    // Closed, it would lose the report, and the next file opened would take its descriptor.
    if (fcntl(STDOUT_FILENO, F_GETFD) == -1) throw std::runtime_error("cannot write the report to standard output" + system_reason());
#endif
    if (!s.svg_path.empty()) check_svg_path(s);
    if (s.binary) {
      const binary_run b = run_binary(s);
      std::ostringstream report;
      if (s.json)
        write_binary_json(report, b);
      else
        write_binary_text(report, b);
      int status = 0;
      if (!s.svg_path.empty()) {
        try {
          std::ostringstream svg;
          xent_eval::write_svg(svg, binary_as_run(b));
          write_svg_file(s.svg_path, svg.str());
        } catch (const std::exception& e) {
          print_error(e.what());
          status = 1;
        }
      }
      write_all(stdout, report.str(), "cannot write the report to standard output");
      return status;
    }
    const xent_eval::run_result result = run(s);
    std::ostringstream report;
    if (s.json)
      xent_eval::write_json(report, result);
    else
      xent_eval::write_text(report, result);
    // A diagram that cannot be written does not cost the report.
    int status = 0;
    if (!s.svg_path.empty()) {
      try {
        std::ostringstream svg;
        xent_eval::write_svg(svg, result);
        write_svg_file(s.svg_path, svg.str());
      } catch (const std::exception& e) {
        print_error(e.what());
        status = 1;
      }
    }
    write_all(stdout, report.str(), "cannot write the report to standard output");
    return status;
  } catch (const std::exception& e) {
    // file_error and xent::invalid_argument carry the whole story; std::bad_alloc is a chunk too big.
    print_error(e.what());
    return 1;
  }
}
