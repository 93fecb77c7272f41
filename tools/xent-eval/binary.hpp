// xent-eval --binary: a binary or multi-label (sigmoid) model's logits, or probabilities, of shape
// (N,) or (N, L), against 0/1 targets of the same shape: xent::binary_eval_accumulator over chunks
// of rows read with pread (one thread; the working memory is one chunk). Included by main.cpp
// after its helpers (settings, file_error, write_all...).

namespace {

struct binary_run {
  xent_eval::input_info logits, targets;
  std::optional<xent_eval::input_info> weights;
  std::uint64_t labels = 1;  // L
  bool probabilities = false;
  double threshold = 0.5;
  xent::binary_eval_report report;
};

/// Opens a (N,) or (N, L) .npy of one of `accepted` in f, C order.
void open_binary_npy(xent_eval::tensor_file& f, const std::vector<xent_eval::dtype>& accepted, const std::string& what) {
  using namespace xent_eval::detail;
  if (detect_format(f, false) != xent_eval::file_format::npy)
    throw file_error(f.path() + ": with --binary the " + what + " must be a .npy file, but this is a .safetensors file");
  const xent_eval::npy_header h = read_npy(f);
  const xent_eval::dtype type = xent_eval::npy_element_type(f.path(), h, accepted, what);
  if (h.shape.size() != 1 && h.shape.size() != 2)
    throw file_error(f.path() + ": with --binary the " + what + " must have shape (N,) or (N, L), but the file holds shape " + shape_string(h.shape));
  if (h.fortran_order) throw file_error(f.path() + ": the " + what + " must be in C order (row-major); the file is in Fortran order");
  f.select(npy_tensor(f, h, type));
}

/// Entries [first, first + count) of f's tensor as doubles.
void read_doubles(const xent_eval::tensor_file& f, std::uint64_t first, std::size_t count, std::vector<double>& out) {
  using xent_eval::dtype;
  const dtype t = f.tensor().type;
  const std::size_t size = xent_eval::dtype_size(t);
  std::vector<unsigned char> raw(count * size);
  f.read_at(raw.data(), raw.size(), first * size);
  out.resize(count);
  const auto as = [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> v(count);
    std::memcpy(v.data(), raw.data(), raw.size());
    return v;
  };
  switch (t) {
    case dtype::float16: {
      const std::vector<Eigen::half> h = as(Eigen::half());
      std::vector<float> w(count);
      xent_eval::widen(h.data(), w.data(), count);
      std::copy(w.begin(), w.end(), out.begin());
      break;
    }
    case dtype::float32: {
      const std::vector<float> v = as(float());
      std::copy(v.begin(), v.end(), out.begin());
      break;
    }
    case dtype::float64: {
      const std::vector<double> v = as(double());
      std::copy(v.begin(), v.end(), out.begin());
      break;
    }
    case dtype::int32: {
      const std::vector<std::int32_t> v = as(std::int32_t());
      std::copy(v.begin(), v.end(), out.begin());
      break;
    }
    case dtype::int64: {
      const std::vector<std::int64_t> v = as(std::int64_t());
      std::copy(v.begin(), v.end(), out.begin());
      break;
    }
    default: throw file_error(f.path() + ": unexpected element type");
  }
}

binary_run run_binary(const settings& s) {
  using xent_eval::dtype;
  // Refused rather than ignored: each would change or add a figure that --binary does not compute.
  if (s.fit_temperature) throw std::invalid_argument("--fit-temperature is not available with --binary");
  if (s.classwise) throw std::invalid_argument("--classwise is not available with --binary (the binary report is one class's calibration)");
  if (s.temperature != 1) throw std::invalid_argument("--temperature is not available with --binary");
  if (s.bins_mode != "uniform") throw std::invalid_argument("--bins-mode " + s.bins_mode + " is not available with --binary (equal-width bins of p)");
  if (s.sequence_length > 0 || !s.sequence_lengths_path.empty())
    throw std::invalid_argument("--sequence-length and --sequence-lengths are not available with --binary");
  if (!s.shape.empty() || !s.logits_key.empty() || !s.targets_key.empty() || !s.dtype.empty())
    throw std::invalid_argument("with --binary the logits and targets are .npy files; --shape, --dtype, --logits-key and --targets-key do not apply");
  if (s.targets_path.empty()) throw std::invalid_argument("--binary needs a targets file (.npy of 0/1, the logits' shape) after the logits");
  if (!(s.threshold >= 0 && s.threshold < 1)) throw std::invalid_argument("--threshold must be in [0, 1), but got " + std::to_string(s.threshold));

  xent_eval::tensor_file lf(s.logits_path), tf(s.targets_path);
  open_binary_npy(lf, {dtype::float16, dtype::float32, dtype::float64}, s.probabilities ? "probabilities" : "logits");
  open_binary_npy(tf, {dtype::int32, dtype::int64, dtype::float32, dtype::float64}, "targets");
  const xent_eval::tensor_desc& lt = lf.tensor();
  const xent_eval::tensor_desc& tt = tf.tensor();
  if (lt.shape != tt.shape)
    throw file_error(tf.path() + ": targets of shape " + xent_eval::detail::shape_string(tt.shape) + " for " + (s.probabilities ? "probabilities" : "logits") +
                     " of shape " + xent_eval::detail::shape_string(lt.shape) + " in " + lf.path() + "; with --binary both must have the same shape");
  const std::uint64_t n = lt.shape[0], labels = lt.shape.size() == 2 ? lt.shape[1] : 1;
  if (n == 0 || labels == 0) throw file_error(lf.path() + ": holds no prediction (shape " + xent_eval::detail::shape_string(lt.shape) + ")");

  binary_run run;
  run.logits = {lf.path(), "npy", "", xent_eval::dtype_name(lt.type), lt.shape};
  run.targets = {tf.path(), "npy", "", xent_eval::dtype_name(tt.type), tt.shape};
  run.labels = labels;
  run.probabilities = s.probabilities;
  run.threshold = s.threshold;
  std::optional<xent_eval::tensor_file> wf;
  if (!s.weights_path.empty()) {
    wf.emplace(s.weights_path);
    xent_eval::open_npy_vector(*wf, {dtype::float32, dtype::float64}, "weights");
    if (wf->tensor().shape[0] != n)
      throw file_error(wf->path() + ": " + std::to_string(wf->tensor().shape[0]) + " weights for " + std::to_string(n) + " samples in " + lf.path() +
                       "; both must have the same N (a sample's weight applies to its L labels)");
    run.weights = xent_eval::input_info{wf->path(), "npy", "", xent_eval::dtype_name(wf->tensor().type), wf->tensor().shape};
  }

  xent::binary_eval_options opts;
  opts.ignore_index = s.ignore_index;
  opts.threshold = s.threshold;
  opts.bins = s.bins;
  opts.probabilities = s.probabilities;
  opts.skip_nonfinite = s.skip_nonfinite;
  xent::binary_eval_accumulator acc(opts);
  const std::uint64_t row_bytes = labels * xent_eval::dtype_size(lt.type);
  const std::uint64_t rows = std::max<std::uint64_t>(1, std::uint64_t(s.chunk_mb * 1e6) / row_bytes);
  std::vector<double> x, y, w, wrow;
  for (std::uint64_t first = 0; first < n; first += rows) {
    const std::uint64_t count = std::min(rows, n - first);
    const std::size_t entries = std::size_t(count * labels);
    read_doubles(lf, first * labels, entries, x);
    read_doubles(tf, first * labels, entries, y);
    for (std::size_t i = 0; i < entries; ++i) {
      // The library's messages would name the index in this chunk; these name it in the file.
      const double t = y[i];
      if (t != double(s.ignore_index) && t != 0 && t != 1) {
        std::ostringstream m;
        m << tf.path() << ": target[" << first * labels + i << "] = " << t << ", but with --binary every target must be 0, 1 or the ignore index ("
          << s.ignore_index << ")";
        throw file_error(m.str());
      }
      if (s.probabilities && !(x[i] >= 0 && x[i] <= 1) && !std::isnan(x[i])) {
        std::ostringstream m;
        m << lf.path() << ": probability[" << first * labels + i << "] = " << x[i] << " is outside [0, 1] (logits? leave out --probabilities)";
        throw file_error(m.str());
      }
    }
    const Eigen::Map<const Eigen::VectorXd> xm(x.data(), Eigen::Index(entries)), ym(y.data(), Eigen::Index(entries));
    if (wf) {
      wrow = read_weights(*wf, first, count);
      w.resize(entries);
      for (std::size_t i = 0; i < entries; ++i) w[i] = wrow[i / labels];
      acc.update(xm, ym, Eigen::Map<const Eigen::VectorXd>(w.data(), Eigen::Index(entries)));
    } else {
      acc.update(xm, ym);
    }
  }
  run.report = acc.report();
  const xent::binary_eval_report& r = run.report;
  if (r.nonfinite_samples > 0 && !s.skip_nonfinite)
    throw file_error(lf.path() + ": " + std::to_string(r.nonfinite_samples) + " non-finite logits (NaN or +-inf); their metrics would be NaN. "
                     "--skip-nonfinite leaves them out");
  if (r.samples == 0) throw file_error(tf.path() + ": no prediction left to evaluate (" + std::to_string(r.ignored) + " ignored)");
  return run;
}

void write_binary_text(std::ostream& out, const binary_run& run) {
  using xent_eval::detail::fixed;
  const xent::binary_eval_report& r = run.report;
  const auto line = [&](const std::string& label, const std::string& value) {
    out << "  " << label << std::string(label.size() < 18 ? 18 - label.size() : 1, ' ') << value << '\n';
  };
  out << "xent-eval --binary: " << xent_eval::printable(run.logits.path) << " (" << run.logits.dtype << ", "
      << (run.probabilities ? "probabilities" : "logits") << ", " << (run.labels > 1 ? std::to_string(run.labels) + " labels" : "one label") << ")\n";
  line("predictions", std::to_string(r.samples) + " evaluated, " + std::to_string(r.ignored) + " ignored" +
                          (r.nonfinite_samples ? ", " + std::to_string(r.nonfinite_samples) + " skipped as non-finite" : std::string()));
  out << '\n';
  line("BCE", fixed(r.bce, 6) + " nats/prediction  (standard error " + fixed(r.bce_stderr, 6) + ")");
  line("accuracy", fixed(r.accuracy, 4) + "  (positive when p > " + fixed(run.threshold, 3) + ")");
  line("Brier score", fixed(r.brier, 6) + "  (mean (p - y)^2)");
  line("mean p", fixed(r.mean_probability, 4) + "   base rate " + fixed(r.base_rate, 4));
  line("ECE", fixed(r.ece, 6) + "  (" + std::to_string(r.bins.size()) + " bins of p; MCE " + fixed(r.mce, 4) + ")");
  line("RMS calib. error", fixed(r.rmsce, 6) + "  (L2 norm over the same bins)");
  out << "\n  reliability     p bin                 count   mean p   positives        gap\n";
  for (const xent::reliability_bin& b : r.bins) {
    char buf[160];
    const std::string range = (b.lower == 0 ? "[" : "(") + fixed(b.lower, 3) + ", " + fixed(b.upper, 3) + "]";
    if (b.count == 0)
      std::snprintf(buf, sizeof buf, "                  %-18s %8lld\n", range.c_str(), static_cast<long long>(b.count));
    else
      std::snprintf(buf, sizeof buf, "                  %-18s %8lld   %6.4f      %6.4f    %+7.4f\n", range.c_str(), static_cast<long long>(b.count),
                    b.confidence, b.accuracy, b.accuracy - b.confidence);
    out << buf;
  }
}

void write_binary_json(std::ostream& out, const binary_run& run) {
  using xent_eval::detail::json_number;
  const xent::binary_eval_report& r = run.report;
  const auto input = [&](const xent_eval::input_info& in) {
    std::string shape = "[";
    for (std::size_t i = 0; i < in.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(in.shape[i]);
    return "{\"path\": " + xent_eval::detail::json_string(in.path) + ", \"format\": \"npy\", \"dtype\": \"" + in.dtype + "\", \"shape\": " + shape + "]}";
  };
  out << "{\n  \"mode\": \"binary\",\n";
  out << "  \"logits\": " << input(run.logits) << ",\n";
  out << "  \"targets\": " << input(run.targets) << ",\n";
  if (run.weights) out << "  \"weights\": " << input(*run.weights) << ",\n";
  out << "  \"probabilities\": " << (run.probabilities ? "true" : "false") << ",\n";
  out << "  \"labels\": " << run.labels << ",\n";
  out << "  \"samples\": " << r.samples << ",\n";
  out << "  \"ignored\": " << r.ignored << ",\n";
  out << "  \"nonfinite_samples\": " << r.nonfinite_samples << ",\n";
  const std::pair<const char*, double> numbers[] = {{"weight", r.weight},       {"threshold", run.threshold}, {"bce", r.bce},
                                                    {"bce_stderr", r.bce_stderr}, {"accuracy", r.accuracy},   {"brier", r.brier},
                                                    {"mean_probability", r.mean_probability}, {"base_rate", r.base_rate},
                                                    {"ece", r.ece},             {"mce", r.mce},               {"rmsce", r.rmsce}};
  for (const auto& [key, value] : numbers) out << "  \"" << key << "\": " << json_number(value) << ",\n";
  out << "  \"bins\": [";
  for (std::size_t b = 0; b < r.bins.size(); ++b) {
    const xent::reliability_bin& x = r.bins[b];
    out << (b ? ",\n    " : "\n    ") << "{\"lower\": " << json_number(x.lower) << ", \"upper\": " << json_number(x.upper) << ", \"count\": " << x.count
        << ", \"weight\": " << json_number(x.weight) << ", \"mean_probability\": " << json_number(x.confidence)
        << ", \"positives\": " << json_number(x.accuracy) << "}";
  }
  out << "\n  ]\n}\n";
}

/// The positive-class reliability curve in write_svg's diagram (bars: share of positives per bin of p).
xent_eval::run_result binary_as_run(const binary_run& run) {
  xent_eval::run_result r;
  r.logits = run.logits;
  r.targets = run.targets;
  r.report.samples = run.report.samples;
  r.report.ece = run.report.ece;
  r.report.mce = run.report.mce;
  r.report.rmsce = run.report.rmsce;
  r.report.accuracy = run.report.accuracy;
  r.report.bins = run.report.bins;
  r.weights = run.weights;
  r.binary_curve = true;
  return r;
}

}  // namespace
