// xent-eval compare BASE TEST [TARGETS]: two models' logits for the same tokens (a quantised or pruned
// model against its original) -> KL(base || test) with its percentiles, top-1 agreement, Δp of the
// target token and ln(PPL_test / PPL_base) with its standard error; a text or JSON report, an SVG of
// the per-token KL and Δp histograms and, on request, every token's figures as a .npy.
// docs/metrics.md ("Comparing two models") documents it.
//
// Part of main.cpp, which includes it after its helpers (progress_meter, run_workers, write_all,
// write_svg_file, positive, print_error): the two files are streamed in chunks of --chunk-mb as one, both
// memory-mapped where possible (each released behind its chunk) or read with pread, by --threads
// workers in a fixed round-robin, each with its own accumulator, merged in worker order.

#include <xent/metrics/compare.hpp>

namespace {

using xent_eval::dtype;

struct compare_settings {
  std::string base_path, test_path, targets_path;
  std::string base_key, test_key, targets_key;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  long ignore_index = -100;
  double chunk_mb = 1;
  bool json = false;
  std::string svg_path, per_token_path;
  bool skip_nonfinite = false;
  bool progress = true;
  bool mmap = true;
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
};

struct compare_run {
  xent_eval::input_info base, test, targets;
  bool has_targets = false;
  xent::compare_report report;
  std::vector<float> kl_values, delta_p_values;  // for the histograms (any order)
};

/// n values of type `from` at `in` as U (exact: U is float64 whenever a file holds float64).
template <class U>
void convert(dtype from, const void* in, U* out, std::size_t n) {
  switch (from) {
    case dtype::float16:
      if constexpr (std::is_same_v<U, float>) {
        xent_eval::widen(static_cast<const Eigen::half*>(in), out, n);
      } else {
        for (std::size_t i = 0; i < n; ++i) out[i] = U(float(static_cast<const Eigen::half*>(in)[i]));
      }
      break;
    case dtype::bfloat16:
      if constexpr (std::is_same_v<U, float>) {
        xent_eval::widen(static_cast<const Eigen::bfloat16*>(in), out, n);
      } else {
        for (std::size_t i = 0; i < n; ++i) out[i] = U(float(static_cast<const Eigen::bfloat16*>(in)[i]));
      }
      break;
    case dtype::float32:
      for (std::size_t i = 0; i < n; ++i) out[i] = U(static_cast<const float*>(in)[i]);
      break;
    case dtype::float64:
      for (std::size_t i = 0; i < n; ++i) out[i] = U(static_cast<const double*>(in)[i]);
      break;
    default:
      throw std::logic_error("not a logits type");
  }
}

/// One logits file of a comparison, chunk by chunk: its mapped bytes read in place when they are
/// already of the evaluated type U, otherwise converted (or pread) into the worker's buffers.
template <class U>
class logits_stream {
 public:
  logits_stream(xent_eval::tensor_file& f, bool mmap) : f_(f), type_(f.tensor().type), size_(xent_eval::dtype_size(type_)) {
    classes_ = f.tensor().shape[1];
    if (mmap) mapped_ = f.map_data(size_);
  }
  std::size_t stored_bytes_per_row() const { return std::size_t(classes_) * size_; }
  bool direct() const { return mapped_ && type_ == (std::is_same_v<U, float> ? dtype::float32 : dtype::float64); }
  /// Rows [first, first + rows) as U, through the worker's buffers (raw: the stored bytes when read).
  const U* rows(std::uint64_t first, std::uint64_t rows, std::vector<U>& converted, std::vector<unsigned char>& raw) const {
    const std::size_t values = std::size_t(rows * classes_), bytes = values * size_;
    const unsigned char* stored = nullptr;
    if (mapped_) {
      stored = mapped_ + first * classes_ * size_;
      if (direct()) return reinterpret_cast<const U*>(stored);
    } else {
      raw.resize(bytes);
      f_.read_at(raw.data(), bytes, first * classes_ * size_);
      stored = raw.data();
    }
    converted.resize(values);
    convert(type_, stored, converted.data(), values);
    return converted.data();
  }
  void release(std::uint64_t first, std::uint64_t rows) const {
    if (!mapped_) return;
    const std::uint64_t end = (first + rows) * classes_ * size_;
    f_.check_intact(end);
    f_.release_mapped(first * classes_ * size_, end);
  }

 private:
  xent_eval::tensor_file& f_;
  dtype type_;
  std::size_t size_;
  std::uint64_t classes_ = 0;
  const unsigned char* mapped_ = nullptr;
};

#ifndef _WIN32
/// The per-token .npy (float32, shape (N, 5): KL, Δp, base NLL, test NLL, same top), written in
/// place by the workers (pwrite at each chunk's rows) into a temporary file renamed over the path
/// once complete.
class per_token_file {
 public:
  per_token_file(const std::string& path, std::uint64_t samples) : path_(path), temp_(path + ".tmp-" + std::to_string(XENT_EVAL_GETPID())) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(samples) + ", 5), }";
    const std::size_t unpadded = 10 + dict.size() + 1;
    dict.append((64 - unpadded % 64) % 64, ' ');
    dict += '\n';
    const unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(dict.size() & 0xff),
                                      static_cast<unsigned char>(dict.size() >> 8)};
    fd_ = open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(path_ + ": cannot write the per-token figures" + system_reason());
    header_ = 10 + dict.size();
    std::string head(reinterpret_cast<const char*>(prefix), 10);
    head += dict;
    write_at(head.data(), head.size(), 0);
  }
  ~per_token_file() {
    if (fd_ >= 0) close(fd_);
    if (!done_) std::remove(temp_.c_str());
  }
  /// Rows [first, first + rows) of the array: 5 floats each.
  void write_rows(const float* values, std::uint64_t first, std::uint64_t rows) {
    write_at(values, std::size_t(rows * 5 * sizeof(float)), header_ + first * 5 * sizeof(float));
  }
  void finish() {
    const int closed = close(fd_);
    fd_ = -1;
    if (closed != 0) throw std::runtime_error(path_ + ": cannot write the per-token figures" + system_reason());
    std::error_code ec;
    std::filesystem::rename(temp_, path_, ec);
    if (ec) throw std::runtime_error(path_ + ": cannot write the per-token figures (" + ec.message() + ")");
    done_ = true;
  }

 private:
  void write_at(const void* data, std::size_t bytes, std::uint64_t offset) {
    for (std::size_t done = 0; done < bytes;) {
      const ssize_t n = pwrite(fd_, static_cast<const char*>(data) + done, bytes - done, off_t(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(path_ + ": cannot write the per-token figures" + system_reason());
      done += std::size_t(n);
    }
  }
  std::string path_, temp_;
  int fd_ = -1;
  std::uint64_t header_ = 0;
  bool done_ = false;
};
#else
/// --per-token writes with pwrite (POSIX); not available here.
class per_token_file {
 public:
  per_token_file(const std::string& path, std::uint64_t) {
    throw std::runtime_error(path + ": --per-token is not available on this platform (it writes with pwrite)");
  }
  void write_rows(const float*, std::uint64_t, std::uint64_t) {}
  void finish() {}
};
#endif

template <class U>
compare_run run_compare_as(const compare_settings& s, xent_eval::tensor_file& bf, xent_eval::tensor_file& tf, xent_eval::tensor_file* gf,
                              compare_run result) {
  const std::uint64_t n = bf.tensor().shape[0], c = bf.tensor().shape[1];
  logits_stream<U> base(bf, s.mmap), test(tf, s.mmap);
  // Per row: both inputs as stored, and as U where they are converted.
  const double row_bytes = double(base.stored_bytes_per_row() + test.stored_bytes_per_row()) +
                           double(c * sizeof(U)) * ((base.direct() ? 0 : 1) + (test.direct() ? 0 : 1));
  const std::uint64_t rows_per_chunk = std::uint64_t(std::max(1.0, std::min(std::floor(s.chunk_mb * 1e6 / row_bytes), double(n))));
  const std::uint64_t chunks = (n + rows_per_chunk - 1) / rows_per_chunk;
  const int workers = int(std::min<std::uint64_t>(std::uint64_t(std::max(1, s.threads)), chunks));
  const bool i32 = gf && gf->tensor().type == dtype::int32;

  std::optional<per_token_file> tokens_out;
  if (!s.per_token_path.empty()) tokens_out.emplace(s.per_token_path, n);

  xent::compare_options opts;
  opts.ignore_index = s.ignore_index;
  opts.skip_nonfinite = s.skip_nonfinite;
  opts.num_threads = 1;  // the workers are this program's own
  std::vector<xent::compare_accumulator> accs(static_cast<std::size_t>(workers), xent::compare_accumulator(opts));
  std::vector<std::int64_t> first_bad(static_cast<std::size_t>(workers), -1);
  progress_meter meter(s.progress, n * (base.stored_bytes_per_row() + test.stored_bytes_per_row()));
  meter.start("comparing " + xent_eval::printable(tf.path()) + " with " + xent_eval::printable(bf.path()));
  using logits_map = Eigen::Map<const Eigen::Matrix<U, Eigen::Dynamic, Eigen::Dynamic>>;
  run_workers(workers, [&](int w) {
    std::vector<U> bconv, tconv;
    std::vector<unsigned char> braw, traw;
    std::vector<std::int32_t> t32;
    Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets;
    Eigen::MatrixXf tokens;
    xent::compare_accumulator& acc = accs[std::size_t(w)];
    const std::uint64_t stride = rows_per_chunk * std::uint64_t(workers);
    for (std::uint64_t first = rows_per_chunk * std::uint64_t(w); first < n; first += stride) {
      const std::uint64_t rows = std::min(rows_per_chunk, n - first);
      const Eigen::Index r = Eigen::Index(rows);
      if (gf) {
        targets.resize(r);
        if (i32) {
          t32.resize(rows);
          gf->read_at(t32.data(), std::size_t(rows * 4), first * 4);
          for (Eigen::Index j = 0; j < r; ++j) targets(j) = t32[std::size_t(j)];
        } else {
          gf->read_at(targets.data(), std::size_t(rows * 8), first * 8);
        }
        // Checked here, with their index in the file, before the library sees them.
        for (Eigen::Index j = 0; j < r; ++j) {
          const long t = long(targets(j));
          if (t != s.ignore_index && (t < 0 || std::uint64_t(t) >= c))
            throw file_error(gf->path() + ": target[" + std::to_string(first + std::uint64_t(j)) + "] = " + std::to_string(t) +
                             " is outside [0, " + std::to_string(c) + ") and is not the ignore index (" + std::to_string(s.ignore_index) + ")");
        }
      }
      const logits_map b(base.rows(first, rows, bconv, braw), Eigen::Index(c), r);
      const logits_map t(test.rows(first, rows, tconv, traw), Eigen::Index(c), r);
      tokens.resize(5, r);
      const double bad_before = acc[xent::compare_accumulator::nonfinite_samples];
      if (gf)
        acc.update(b, t, targets, tokens);
      else
        acc.update(b, t, nullptr, tokens);
      // The first sample left out as non-finite: a NaN KL where no target ignores it.
      std::int64_t& bad = first_bad[std::size_t(w)];
      if (bad < 0 && acc[xent::compare_accumulator::nonfinite_samples] > bad_before)
        for (Eigen::Index j = 0; j < r && bad < 0; ++j)
          if (std::isnan(tokens(0, j)) && !(gf && long(targets(j)) == s.ignore_index)) bad = std::int64_t(first) + j;
      if (tokens_out) tokens_out->write_rows(tokens.data(), first, rows);
      base.release(first, rows);
      test.release(first, rows);
      if (w == 0) meter.advance(std::min<std::uint64_t>(n, first + stride) * (base.stored_bytes_per_row() + test.stored_bytes_per_row()));
    }
  });
  meter.finish();
  for (std::size_t w = 1; w < accs.size(); ++w) accs[0].merge(accs[w]);
  result.report = accs[0].report();
  const xent::compare_report& r = result.report;
  std::int64_t first_nonfinite = -1;
  for (const std::int64_t b : first_bad)
    if (b >= 0 && (first_nonfinite < 0 || b < first_nonfinite)) first_nonfinite = b;
  if (r.nonfinite_samples > 0 && !s.skip_nonfinite)
    throw file_error(std::to_string(r.nonfinite_samples) + " of " + std::to_string(n) + " samples have no distribution in " + bf.path() +
                     " or " + tf.path() + " (a NaN or +inf logit, or every logit -inf; the first is sample " + std::to_string(first_nonfinite) +
                     "); their KL would be NaN. --skip-nonfinite leaves those samples out");
  if (r.samples == 0)
    throw file_error((gf ? gf->path() : bf.path()) + ": no sample left to compare (" + std::to_string(r.ignored) + " ignored, " +
                     std::to_string(r.nonfinite_samples) + " non-finite)");
  if (tokens_out) tokens_out->finish();
  result.kl_values = accs[0].kl_values();
  result.delta_p_values = accs[0].delta_p_values();
  return result;
}

std::string shape_mismatch(const xent_eval::tensor_file& bf, const xent_eval::tensor_file& tf) {
  const auto& b = bf.tensor().shape;
  const auto& t = tf.tensor().shape;
  if (b[1] != t[1])
    return tf.path() + ": " + std::to_string(t[1]) + " classes per sample, but " + bf.path() + " has " + std::to_string(b[1]) +
           "; base and test must share the vocabulary (shapes " + xent_eval::detail::shape_string(b) + " and " +
           xent_eval::detail::shape_string(t) + ")";
  return tf.path() + ": " + std::to_string(t[0]) + " samples, but " + bf.path() + " has " + std::to_string(b[0]) +
         "; base and test must be the logits of the same tokens (shapes " + xent_eval::detail::shape_string(b) + " and " +
         xent_eval::detail::shape_string(t) + ")";
}

compare_run run_compare(const compare_settings& s) {
  const xent_eval::logits_request base_request{s.base_key, xent_eval::parse_dtype_name(s.dtype), s.shape};
  const xent_eval::logits_request test_request{s.test_key, xent_eval::parse_dtype_name(s.dtype), s.shape};
  xent_eval::tensor_file bf(s.base_path);
  const xent_eval::file_format bformat = xent_eval::open_logits(bf, base_request);
  xent_eval::tensor_file tf(s.test_path);
  const xent_eval::file_format tformat = xent_eval::open_logits(tf, test_request);
  std::optional<xent_eval::tensor_file> gf;
  xent_eval::file_format gformat = xent_eval::file_format::npy;
  if (!s.targets_path.empty()) {
    gf.emplace(s.targets_path);
    gformat = xent_eval::open_targets(*gf, s.targets_key);
  }
  const xent_eval::tensor_desc& bt = bf.tensor();
  const xent_eval::tensor_desc& tt = tf.tensor();
  if (bt.shape[0] == 0) throw file_error(bf.path() + ": the logits hold no sample (shape " + xent_eval::detail::shape_string(bt.shape) + ")");
  if (bt.shape[1] == 0) throw file_error(bf.path() + ": the logits hold no class (shape " + xent_eval::detail::shape_string(bt.shape) + ")");
  if (bt.shape != tt.shape) throw file_error(shape_mismatch(bf, tf));
  if (gf && gf->tensor().shape[0] != bt.shape[0])
    throw file_error(gf->path() + ": " + std::to_string(gf->tensor().shape[0]) + " targets for " + std::to_string(bt.shape[0]) +
                     " samples of logits in " + bf.path() + "; both must have the same N");
  compare_run result;
  result.base = {bf.path(), xent_eval::format_name(bformat), bt.name, xent_eval::dtype_name(bt.type), bt.shape};
  result.test = {tf.path(), xent_eval::format_name(tformat), tt.name, xent_eval::dtype_name(tt.type), tt.shape};
  if (gf) {
    result.has_targets = true;
    const xent_eval::tensor_desc& g = gf->tensor();
    result.targets = {gf->path(), xent_eval::format_name(gformat), g.name, xent_eval::dtype_name(g.type), g.shape};
  }
  // float64 if either file holds it (the other is widened exactly), float32 otherwise.
  if (bt.type == dtype::float64 || tt.type == dtype::float64) return run_compare_as<double>(s, bf, tf, gf ? &*gf : nullptr, result);
  return run_compare_as<float>(s, bf, tf, gf ? &*gf : nullptr, result);
}

// ---- The outputs

std::string percent(double v, int digits = 3) { return xent_eval::detail::fixed(100 * v, digits); }

void write_compare_text(std::ostream& out, const compare_run& run) {
  using xent_eval::detail::fixed;
  const xent::compare_report& r = run.report;
  const auto line = [&](const std::string& label, const std::string& value) {
    out << "  " << label << std::string(label.size() < 20 ? 20 - label.size() : 1, ' ') << value << '\n';
  };
  const auto input = [](const xent_eval::input_info& in) {
    const std::string where = in.format == "safetensors" ? "  tensor \"" + xent_eval::printable(in.tensor) + "\"" : in.format == "raw" ? "  raw" : "";
    return xent_eval::printable(in.path) + where + "  " + in.dtype + " " + xent_eval::detail::shape_text(in.shape);
  };
  out << "xent-eval compare report\n";
  line("base", input(run.base));
  line("test", input(run.test));
  if (run.has_targets) line("targets", input(run.targets));
  line("samples", std::to_string(r.samples) + " compared, " + std::to_string(r.ignored) + " ignored" +
                      (r.nonfinite_samples ? ", " + std::to_string(r.nonfinite_samples) + " skipped as non-finite" : std::string()));
  out << '\n';
  line("KL(base || test)", fixed(r.kl, 6) + " +- " + fixed(r.kl_stderr, 6) + " nats/token (mean +- standard error)");
  line("", "median " + fixed(r.kl_median, 6) + "   90% " + fixed(r.kl_p90, 6) + "   95% " + fixed(r.kl_p95, 6));
  line("", "99% " + fixed(r.kl_p99, 6) + "   99.9% " + fixed(r.kl_p999, 6) + "   max " + fixed(r.kl_max, 6));
  line("same top token", percent(r.same_top) + " +- " + percent(r.same_top_stderr) + " %");
  if (run.has_targets) {
    out << '\n';
    line("delta p (target)", percent(r.delta_p) + " +- " + percent(r.delta_p_stderr) + " %   (p_test - p_base of the target token)");
    line("", "RMS " + percent(r.delta_p_rms) + " +- " + percent(r.delta_p_rms_stderr) + " %   max |delta p| " + percent(r.delta_p_max_abs) + " %");
    const auto& q = r.delta_p_quantiles;  // at xent::compare_fractions
    line("", "1% " + percent(q[2]) + "   5% " + percent(q[3]) + "   25% " + percent(q[5]) + "   median " + percent(q[6]) + " %");
    line("", "75% " + percent(q[7]) + "   95% " + percent(q[9]) + "   99% " + percent(q[10]) + " %");
    out << '\n';
    line("NLL", "base " + fixed(r.nll_base, 6) + " +- " + fixed(r.nll_base_stderr, 6) + "   test " + fixed(r.nll_test, 6) + " +- " +
                    fixed(r.nll_test_stderr, 6) + " nats/token");
    line("", "correlation of the per-token NLLs " + percent(r.nll_correlation, 2) + " %");
    line("perplexity", "base " + fixed(r.ppl_base, 4) + " +- " + fixed(r.ppl_base_stderr, 4) + "   test " + fixed(r.ppl_test, 4) + " +- " +
                           fixed(r.ppl_test_stderr, 4));
    line("ln(PPL_test/base)", fixed(r.log_ppl_ratio, 6) + " +- " + fixed(r.log_ppl_ratio_stderr, 6));
    line("PPL_test/PPL_base", fixed(r.ppl_ratio, 6) + " +- " + fixed(r.ppl_ratio_stderr, 6) + "   (PPL_test - PPL_base " + fixed(r.ppl_diff, 4) +
                                  " +- " + fixed(r.ppl_diff_stderr, 4) + ")");
  }
}

void write_compare_json(std::ostream& out, const compare_run& run) {
  using xent_eval::detail::json_number;
  const xent::compare_report& r = run.report;
  const auto input = [&](const xent_eval::input_info& in) {
    std::string shape = "[";
    for (std::size_t i = 0; i < in.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(in.shape[i]);
    return "{\"path\": " + xent_eval::detail::json_string(in.path) + ", \"format\": \"" + in.format + "\"" +
           (in.format == "safetensors" ? ", \"tensor\": " + xent_eval::detail::json_string(in.tensor) : std::string()) + ", \"dtype\": \"" +
           in.dtype + "\", \"shape\": " + shape + "]}";
  };
  out << "{\n  \"base\": " << input(run.base) << ",\n  \"test\": " << input(run.test) << ",\n";
  if (run.has_targets) out << "  \"targets\": " << input(run.targets) << ",\n";
  out << "  \"samples\": " << r.samples << ",\n  \"ignored\": " << r.ignored << ",\n  \"nonfinite_samples\": " << r.nonfinite_samples
      << ",\n  \"targeted\": " << r.targeted << ",\n";
  const std::pair<const char*, double> numbers[] = {
      {"kl", r.kl}, {"kl_stderr", r.kl_stderr}, {"kl_median", r.kl_median}, {"kl_p90", r.kl_p90}, {"kl_p95", r.kl_p95},
      {"kl_p99", r.kl_p99}, {"kl_p999", r.kl_p999}, {"kl_max", r.kl_max}, {"same_top", r.same_top}, {"same_top_stderr", r.same_top_stderr},
      {"nll_base", r.nll_base}, {"nll_base_stderr", r.nll_base_stderr}, {"nll_test", r.nll_test}, {"nll_test_stderr", r.nll_test_stderr},
      {"ppl_base", r.ppl_base}, {"ppl_base_stderr", r.ppl_base_stderr}, {"ppl_test", r.ppl_test}, {"ppl_test_stderr", r.ppl_test_stderr},
      {"nll_correlation", r.nll_correlation}, {"log_ppl_ratio", r.log_ppl_ratio}, {"log_ppl_ratio_stderr", r.log_ppl_ratio_stderr},
      {"ppl_ratio", r.ppl_ratio}, {"ppl_ratio_stderr", r.ppl_ratio_stderr}, {"ppl_diff", r.ppl_diff}, {"ppl_diff_stderr", r.ppl_diff_stderr},
      {"delta_p", r.delta_p}, {"delta_p_stderr", r.delta_p_stderr}, {"delta_p_rms", r.delta_p_rms},
      {"delta_p_rms_stderr", r.delta_p_rms_stderr}, {"delta_p_max_abs", r.delta_p_max_abs}, {"delta_p_median", r.delta_p_median}};
  for (const auto& [key, value] : numbers) out << "  \"" << key << "\": " << json_number(value) << ",\n";
  const auto list = [&](const std::vector<double>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json_number(v[i]);
    return s + "]";
  };
  out << "  \"fractions\": " << list(std::vector<double>(std::begin(xent::compare_fractions), std::end(xent::compare_fractions))) << ",\n";
  out << "  \"kl_quantiles\": " << list(r.kl_quantiles) << ",\n";
  out << "  \"delta_p_quantiles\": " << list(r.delta_p_quantiles) << "\n}\n";
}

/// Two histograms side by side: the per-token KL on a log axis (a bar for the tokens below its
/// first decade, exact zeros among them), and Δp on a linear axis with a log count axis; the mean,
/// median and 99th percentile marked on the first.
void write_compare_svg(std::ostream& out, const compare_run& run) {
  using xent_eval::detail::fixed;
  const xent::compare_report& r = run.report;
  const double W = 1000, H = 420, top = 70, bottom = 70, pw = 400, ph = H - top - bottom;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << ' ' << H
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">" << xent_eval::detail::xml_escape(xent_eval::printable(run.test.path))
      << " against " << xent_eval::detail::xml_escape(xent_eval::printable(run.base.path)) << "</text>\n";
  out << "<text x=\"" << W / 2 << "\" y=\"44\" text-anchor=\"middle\" font-size=\"12\" fill=\"#444\">" << r.samples << " tokens; mean KL "
      << fixed(r.kl, 5) << " ± " << fixed(r.kl_stderr, 5) << " nats; same top " << percent(r.same_top, 2) << " %"
      << (run.has_targets ? "; ln(PPL ratio) " + fixed(r.log_ppl_ratio, 5) + " ± " + fixed(r.log_ppl_ratio_stderr, 5) : std::string())
      << "</text>\n";

  // A panel: bars of counts over [x0, x1) in plot coordinates u in [0, 1].
  struct bar {
    double u0, u1;
    std::int64_t count;
  };
  const auto panel = [&](double left, const std::vector<bar>& bars, bool log_count, const std::string& xlabel, const std::string& title,
                         const std::vector<std::pair<double, std::string>>& ticks, const std::vector<std::pair<double, std::string>>& marks,
                         const char* colour, bool legend_right) {
    std::int64_t most = 1;
    for (const bar& b : bars) most = std::max(most, b.count);
    const double top_value = log_count ? std::ceil(std::log10(double(most) + 1)) : double(most);
    const auto Y = [&](double count) {
      const double v = log_count ? std::log10(count + 1) / top_value : count / top_value;
      return top + (1 - v) * ph;
    };
    const auto X = [&](double u) { return left + u * pw; };
    out << "<text x=\"" << X(0.5) << "\" y=\"" << top - 10 << "\" text-anchor=\"middle\" font-size=\"13\">" << xent_eval::detail::xml_escape(title)
        << "</text>\n";
    // Count grid.
    const int lines = log_count ? int(top_value) : 4;
    for (int i = 0; i <= lines; ++i) {
      const double count = log_count ? std::pow(10.0, i) - 1 : top_value * i / lines;
      out << "<line x1=\"" << X(0) << "\" y1=\"" << Y(count) << "\" x2=\"" << X(1) << "\" y2=\"" << Y(count) << "\" stroke=\"#e4e4e4\"/>\n";
      out << "<text x=\"" << X(0) - 6 << "\" y=\"" << Y(count) + 4 << "\" text-anchor=\"end\" font-size=\"10\">"
          << (log_count ? std::to_string(static_cast<long long>(std::pow(10.0, i))) : std::to_string(static_cast<long long>(std::llround(count))))
          << "</text>\n";
    }
    for (const bar& b : bars) {
      if (b.count == 0) continue;
      out << "<rect x=\"" << X(b.u0) + 0.5 << "\" y=\"" << Y(double(b.count)) << "\" width=\"" << std::max(0.5, (b.u1 - b.u0) * pw - 1)
          << "\" height=\"" << Y(0) - Y(double(b.count)) << "\" fill=\"" << colour << "\"><title>" << b.count << " tokens</title></rect>\n";
    }
    for (const auto& [u, label] : ticks) {
      out << "<line x1=\"" << X(u) << "\" y1=\"" << Y(0) << "\" x2=\"" << X(u) << "\" y2=\"" << Y(0) + 5 << "\" stroke=\"#222\"/>\n";
      out << "<text x=\"" << X(u) << "\" y=\"" << Y(0) + 18 << "\" text-anchor=\"middle\" font-size=\"10\">" << xent_eval::detail::xml_escape(label) << "</text>\n";
    }
    // The marks' lines, and their labels as a legend in the corner the histogram leaves free.
    double label_y = top + 16;
    for (const auto& [u, label] : marks) {
      if (!(u >= 0 && u <= 1)) continue;
      out << "<line x1=\"" << X(u) << "\" y1=\"" << top << "\" x2=\"" << X(u) << "\" y2=\"" << Y(0)
          << "\" stroke=\"#d62728\" stroke-width=\"1.2\" stroke-dasharray=\"5 3\"/>\n";
      if (label.empty()) continue;
      out << "<text x=\"" << (legend_right ? X(1) - 8 : X(0) + 8) << "\" y=\"" << label_y << "\" text-anchor=\""
          << (legend_right ? "end" : "start") << "\" font-size=\"11\" fill=\"#d62728\" stroke=\"white\" stroke-width=\"4\" paint-order=\"stroke\">" << xent_eval::detail::xml_escape(label) << "</text>\n";
      label_y += 14;
    }
    out << "<rect x=\"" << X(0) << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#222\"/>\n";
    out << "<text x=\"" << X(0.5) << "\" y=\"" << H - 30 << "\" text-anchor=\"middle\" font-size=\"12\">" << xent_eval::detail::xml_escape(xlabel)
        << "</text>\n";
    out << "<text x=\"" << left - 48 << "\" y=\"" << top + ph / 2 << "\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 "
        << left - 48 << ' ' << top + ph / 2 << ")\">" << (log_count ? "tokens (log scale)" : "tokens") << "</text>\n";
  };

  // KL: decades from the one holding the 1st percentile (at least 1e-8) to the one above the max,
  // five bins a decade; the first bar holds everything below (zeros too).
  {
    std::vector<float> kl = run.kl_values;
    std::sort(kl.begin(), kl.end());
    const double p1 = xent::sorted_quantile(kl.data(), kl.size(), 0.01);
    // The largest finite KL: a test model that masks a class the base gives mass has KL +inf
    // there, counted in the last bar.
    double hi_value = 1e-7;
    for (auto it = kl.rbegin(); it != kl.rend(); ++it)
      if (std::isfinite(*it)) {
        hi_value = std::max(hi_value, double(*it));
        break;
      }
    int lo = int(std::floor(std::log10(std::max(p1, 1e-8))));
    const int hi = std::max(lo + 1, int(std::ceil(std::log10(hi_value))));
    lo = std::min(lo, hi - 1);
    const int per_decade = 5, n_bins = (hi - lo) * per_decade;
    const double under = 1.0 / (n_bins + 1);  // the width of the "below" bar
    std::vector<bar> bars(std::size_t(n_bins + 1));
    for (int i = 0; i <= n_bins; ++i) bars[std::size_t(i)] = {i * under, (i + 1) * under, 0};
    const auto u_of = [&](double v) { return under + (std::log10(v) - lo) / (hi - lo) * (1 - under); };
    for (const float v : kl) {
      const double u = v > 0 ? u_of(v) : -1;
      const int i = u < under ? 0 : !(u < 1) ? n_bins : std::min(n_bins, 1 + int((u - under) / (1 - under) * n_bins));
      ++bars[std::size_t(i)].count;
    }
    for (int i = 1; i <= n_bins; ++i) bars[std::size_t(i)].u0 = under + (i - 1) * (1 - under) / n_bins, bars[std::size_t(i)].u1 = under + i * (1 - under) / n_bins;
    std::vector<std::pair<double, std::string>> ticks = {{under / 2, "<1e" + std::to_string(lo)}};
    for (int d = lo + 1; d <= hi; ++d) ticks.push_back({u_of(std::pow(10.0, d)), "1e" + std::to_string(d)});
    const std::vector<std::pair<double, std::string>> marks = {{u_of(r.kl_median), "median " + fixed(r.kl_median, 5)},
                                                                {u_of(r.kl), "mean " + fixed(r.kl, 5)},
                                                                {u_of(r.kl_p99), "99th percentile " + fixed(r.kl_p99, 4)}};
    panel(80, bars, false, "KL(base || test) per token, nats (log scale)", "KL divergence per token", ticks, marks, "#3b75af", false);
  }
  if (run.has_targets && !run.delta_p_values.empty()) {
    // Δp: 41 bins over a symmetric range holding every value, rounded up to a tenth (or to 1 %).
    double a = 0;
    for (const float v : run.delta_p_values) a = std::max(a, double(std::fabs(v)));
    const double step = a > 0.1 ? 0.1 : 0.01;
    a = std::max(step, std::ceil(a / step) * step);
    const int n_bins = 41;
    std::vector<bar> bars(static_cast<std::size_t>(n_bins));
    for (int i = 0; i < n_bins; ++i) bars[std::size_t(i)] = {double(i) / n_bins, double(i + 1) / n_bins, 0};
    const auto u_of = [&](double v) { return (v + a) / (2 * a); };
    for (const float v : run.delta_p_values) ++bars[std::size_t(std::clamp(int(std::clamp(u_of(v), 0.0, 1.0) * n_bins), 0, n_bins - 1))].count;
    std::vector<std::pair<double, std::string>> ticks;
    for (int i = -2; i <= 2; ++i) ticks.push_back({u_of(a * i / 2), percent(a * i / 2, a >= 0.2 ? 0 : 1) + "%"});
    const std::vector<std::pair<double, std::string>> marks = {{u_of(r.delta_p), "mean " + percent(r.delta_p, 2) + " %"},
                                                                {u_of(-r.delta_p_rms), "RMS " + percent(r.delta_p_rms, 2) + " % (either side)"},
                                                                {u_of(r.delta_p_rms), ""}};
    panel(560, bars, true, "delta p = p_test - p_base of the target token", "Change of the target's probability", ticks, marks, "#2ca02c", false);
  } else {
    out << "<text x=\"760\" y=\"" << top + ph / 2 << "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#666\">no targets: no delta p</text>\n";
  }
  out << "</svg>\n";
}

/// Refuses, before the comparison, an output that would overwrite an input or whose directory does
/// not exist.
void check_output_path(const std::string& option, const std::string& path, const compare_settings& s, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& [input, name] : {std::pair{&s.base_path, "base"}, std::pair{&s.test_path, "test"}, std::pair{&s.targets_path, "targets"}})
    if (!input->empty() && fs::equivalent(path, *input, ec))
      throw std::invalid_argument(option + " " + path + " names the " + name + " file " + *input + "; the " + what + " would overwrite an input");
  const fs::path dir = fs::path(path).parent_path();
  if (!fs::is_directory(dir.empty() ? fs::path(".") : dir, ec))
    throw file_error(path + ": cannot write the " + what + " (there is no directory " + dir.string() + ")");
}

int compare_main(int argc, char** argv) {
  compare_settings s;
  CLI::App app{"xent-eval compare: two models' logits for the same tokens (a quantised or pruned model against its original): KL(base || test)\n"
               "with its percentiles, top-1 agreement, delta p of the target and ln(PPL_test / PPL_base) with its standard error.",
               "xent-eval compare"};
  app.add_option("base", s.base_path, "The reference model's logits, shape (N, C): .npy, .safetensors or raw (--dtype, --shape)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("test", s.test_path, "The compared model's logits, the same shape")->required()->check(CLI::ExistingFile);
  app.add_option("targets", s.targets_path, "Class indices, shape (N,): .npy or .safetensors of int32 or int64 (for delta p and the perplexities)")
      ->check(CLI::ExistingFile);
  auto* base_key = app.add_option("--base-key", s.base_key, "The base logits' tensor in a .safetensors file");
  auto* test_key = app.add_option("--test-key", s.test_key, "The test logits' tensor in a .safetensors file");
  app.add_option("--targets-key", s.targets_key, "The targets' tensor in a .safetensors file");
  auto* dtype_opt = app.add_option("--dtype", s.dtype, "The element type of both logits files where they cannot say it (see xent-eval --help)")
                        ->check(CLI::IsMember({"f16", "float16", "bf16", "bfloat16", "f32", "float32", "f64", "float64"}));
  app.add_option("--shape", s.shape, "N,C: both logits files are raw, of --dtype")->delimiter(',')->expected(2)->needs(dtype_opt)->excludes(base_key)->excludes(test_key);
  app.add_option("--ignore-index", s.ignore_index, "Targets equal to this are left out")->capture_default_str();
  app.add_option("--chunk-mb", s.chunk_mb, "Process both files in chunks of at most this size together (MB): the memory used per worker")
      ->capture_default_str()
      ->check(positive());
  app.add_option("--threads", s.threads, "Worker threads over the chunks (default: the cores)")->check(CLI::Range(1, 1024));
  app.add_flag("!--no-mmap", s.mmap, "Read the files with pread() into chunk buffers instead of memory-mapping them");
  app.add_flag("--json", s.json, "Print the report as JSON");
  app.add_option("--svg", s.svg_path, "Write the histograms of the per-token KL and delta p to this SVG file");
  app.add_option("--per-token", s.per_token_path, "Write every token's KL, delta p, base NLL, test NLL and same top (1/0) to this .npy (float32, N x 5)");
  app.add_flag("--skip-nonfinite", s.skip_nonfinite, "Leave out samples without a distribution in either model (default: refuse them)");
  app.add_flag("!--no-progress", s.progress, "No progress on standard error");
  app.failure_message([](const CLI::App* a, const CLI::Error& e) { return xent_eval::printable(CLI::FailureMessage::simple(a, e)); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    if (code == 0 && (std::fflush(stdout) != 0 || std::ferror(stdout))) {
      print_error("cannot write to standard output" + system_reason());
      return 1;
    }
    return code;
  }
  try {
#ifndef _WIN32
    if (fcntl(STDOUT_FILENO, F_GETFD) == -1) throw std::runtime_error("cannot write the report to standard output" + system_reason());
#endif
    if (!s.svg_path.empty()) check_output_path("--svg", s.svg_path, s, "histograms");
    if (!s.per_token_path.empty()) check_output_path("--per-token", s.per_token_path, s, "per-token figures");
    const compare_run result = run_compare(s);
    std::ostringstream report;
    if (s.json)
      write_compare_json(report, result);
    else
      write_compare_text(report, result);
    int status = 0;
    if (!s.svg_path.empty()) {
      try {
        std::ostringstream svg;
        write_compare_svg(svg, result);
        write_svg_file(s.svg_path, svg.str(), "the histograms");
      } catch (const std::exception& e) {
        print_error(e.what());
        status = 1;
      }
    }
    write_all(stdout, report.str(), "cannot write the report to standard output");
    return status;
  } catch (const std::exception& e) {
    print_error(e.what());
    return 1;
  }
}

}  // namespace
