#ifndef XENT_TOOLS_REPORT_HPP
#define XENT_TOOLS_REPORT_HPP

// xent-eval's three outputs of one evaluation: the readable report, the JSON report and the
// reliability diagram (SVG).

#include <xent/metrics/evaluation.hpp>
#include <xent/metrics/sequences.hpp>
#include <xent/metrics/temperature.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace xent_eval {

/// What the report says about one input file.
struct input_info {
  std::string path;
  std::string format;  // "npy", "safetensors" or "raw"
  std::string tensor;  // the tensor's name in a .safetensors file
  std::string dtype;   // as stored: float16 and bfloat16 logits were evaluated as float32
  std::vector<std::uint64_t> shape;
};

/// Everything one run produced.
struct run_result {
  input_info logits, targets;
  xent::eval_report report;
  xent::eval_units units;
  std::optional<xent::temperature_fit> fit;
  std::optional<input_info> weights, sequence_lengths;  // --weights, --sequence-lengths
  std::optional<xent::sequence_report> sequences;      // --sequence-length or --sequence-lengths
  std::int64_t sequence_length = 0;                     // --sequence-length; 0 with --sequence-lengths
  bool quantile_bins = false;                           // --bins-mode quantile: equal-mass bins
  bool binary_curve = false;                            // --binary: the bins are of p, their accuracy the share of positives
};

/// `text` with its control characters, but for newlines and tabs, as \xNN: a file name or a .npy
/// header may hold any byte, and an escape sequence printed raw would drive the terminal.
inline std::string printable(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(u));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

namespace detail {

inline std::string fixed(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

inline std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// A JSON number: shortest round-trip digits; NaN and infinities (not JSON) become null.
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

inline std::string xml_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

}  // namespace detail

/// The readable report.
inline void write_text(std::ostream& out, const run_result& run) {
  using detail::fixed;
  const xent::eval_report& r = run.report;
  const auto line = [&](const std::string& label, const std::string& value) {
    out << "  " << label << std::string(label.size() < 18 ? 18 - label.size() : 1, ' ') << value << '\n';
  };
  out << "xent-eval report\n";
  const auto input = [](const input_info& in) {
    const std::string where = in.format == "safetensors" ? "  tensor \"" + printable(in.tensor) + "\"" : in.format == "raw" ? "  raw" : "";
    return printable(in.path) + where + "  " + in.dtype + " " + detail::shape_text(in.shape);
  };
  line("logits", input(run.logits));
  line("targets", input(run.targets));
  if (run.weights) line("weights", input(*run.weights) + "  (total weight " + fixed(r.weight, 4) + ")");
  if (run.sequence_lengths) line("sequence lengths", input(*run.sequence_lengths));
  line("samples", std::to_string(r.samples) + " evaluated, " + std::to_string(r.ignored) + " ignored" +
                      (r.nonfinite_samples ? ", " + std::to_string(r.nonfinite_samples) + " skipped as non-finite (" +
                                                 std::to_string(r.nonfinite_logits) + " logits)"
                                           : std::string()));
  if (r.temperature != 1) line("temperature", fixed(r.temperature, 4) + " (logits divided by it)");
  out << '\n';
  line("NLL", fixed(r.nll, 6) + " nats/token  (standard error " + fixed(r.nll_stderr, 6) + ")");
  line("", fixed(r.bits_per_token, 6) + " bits/token");
  line("perplexity", fixed(r.perplexity, 4) + "  (+- " + fixed(r.perplexity_stderr, 4) + ")");
  if (run.units.characters > 0) line("bits/character", fixed(r.bits_per_character, 6));
  if (run.units.bytes > 0) line("bits/byte", fixed(r.bits_per_byte, 6));
  if (run.units.dimensions > 0) line("bits/dimension", fixed(r.bits_per_dimension, 6));
  line("accuracy", "top-1 " + fixed(r.accuracy, 4) + "   top-" + std::to_string(r.top_k) + " " + fixed(r.top_k_accuracy, 4));
  line("Brier score", fixed(r.brier, 6) + "  (sum over classes, 0 = perfect, 2 = worst)");
  line("mean confidence", fixed(r.mean_confidence, 4));
  line("ECE", fixed(r.ece, 6) + "  (" + std::to_string(r.bins.size()) + (run.quantile_bins ? " equal-mass" : "") + " bins; MCE " +
                  fixed(r.mce, 4) + ")");
  line("RMS calib. error", fixed(r.rmsce, 6) + "  (L2 norm over the same bins)");
  if (!std::isnan(r.classwise_ece)) {
    line("classwise ECE", fixed(r.classwise_ece, 6) + "  (mean over classes of p_k's ECE)");
    line("Brier decomp.", "reliability " + fixed(r.brier_reliability, 6) + " - resolution " + fixed(r.brier_resolution, 6) +
                              " + uncertainty " + fixed(r.brier_uncertainty, 6));
    line("", "+ within-bin " + fixed(r.brier_within_bin, 6) + "  (0 with bin-constant forecasts)");
  }
  if (run.sequences) {
    const xent::sequence_report& q = *run.sequences;
    out << '\n';
    line("sequences", std::to_string(q.sequences) + " evaluated" +
                          (run.sequence_length > 0 ? " of " + std::to_string(run.sequence_length) + " tokens" : std::string(" of given lengths")) +
                          (q.empty_sequences ? ", " + std::to_string(q.empty_sequences) + " without an evaluated token" : std::string()));
    line("per-sequence PPL", "mean " + fixed(q.mean_perplexity, 4) + "   median " + fixed(q.median_perplexity, 4) + "   best " +
                                 fixed(q.min_perplexity, 4));
    line("", "worst " + fixed(q.max_perplexity, 4) + " (sequence " + std::to_string(q.worst_sequence) + ")   token-pooled " +
                 fixed(r.perplexity, 4));
  }
  // With --weights the bins' confidence and accuracy are weighted means, so the weight each one
  // carries (what ECE weighs the gaps by) is shown beside its count; without, it equals the count.
  const bool weighted = run.weights.has_value();
  out << "\n  reliability     confidence bin        count" << (weighted ? "       weight" : "") << "   confidence   accuracy        gap\n";
  for (const xent::reliability_bin& b : r.bins) {
    char buf[192];
    const std::string range = (b.lower == 0 ? "[" : "(") + fixed(b.lower, 3) + ", " + fixed(b.upper, 3) + "]";
    char weight[32] = "";
    if (weighted) std::snprintf(weight, sizeof weight, " %12.4f", b.weight);
    if (b.count == 0) {
      std::snprintf(buf, sizeof buf, "                  %-18s %10lld%s            -          -          -\n", range.c_str(), 0LL, weight);
    } else {
      std::snprintf(buf, sizeof buf, "                  %-18s %10lld%s   %10.4f %10.4f %+10.4f\n", range.c_str(), static_cast<long long>(b.count),
                    weight, b.confidence, b.accuracy, b.accuracy - b.confidence);
    }
    out << buf;
  }
  if (run.fit) {
    const xent::temperature_fit& f = *run.fit;
    out << '\n';
    line("temperature fit", "T = " + fixed(f.temperature, 4) + "  (" + std::to_string(f.iterations + 1) + " passes" +
                                (f.at_bound ? ", at the search bound" : "") + (f.converged ? "" : ", NOT converged") + ")");
    line("", "NLL " + fixed(f.nll_before, 6) + " -> " + fixed(f.nll_after, 6) + " nats/token");
    line("", "ECE " + fixed(f.ece_before, 6) + " -> " + fixed(f.ece_after, 6));
    line("", "NLL = calibration " + fixed(f.nll_calibration, 6) + " + refinement " + fixed(f.nll_refinement, 6));
  }
}

/// The machine-readable report: one JSON object (field names as in xent::eval_report).
inline void write_json(std::ostream& out, const run_result& run) {
  using detail::json_number;
  const xent::eval_report& r = run.report;
  const auto input = [&](const input_info& in) {
    std::string shape = "[";
    for (std::size_t i = 0; i < in.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(in.shape[i]);
    return "{\"path\": " + detail::json_string(in.path) + ", \"format\": \"" + in.format + "\"" +
           (in.format == "safetensors" ? ", \"tensor\": " + detail::json_string(in.tensor) : std::string()) + ", \"dtype\": \"" + in.dtype +
           "\", \"shape\": " + shape + "]}";
  };
  out << "{\n";
  out << "  \"logits\": " << input(run.logits) << ",\n";
  out << "  \"targets\": " << input(run.targets) << ",\n";
  out << "  \"samples\": " << r.samples << ",\n";
  out << "  \"ignored\": " << r.ignored << ",\n";
  out << "  \"nonfinite_samples\": " << r.nonfinite_samples << ",\n";
  out << "  \"nonfinite_logits\": " << r.nonfinite_logits << ",\n";
  if (run.weights) out << "  \"weights\": " << input(*run.weights) << ",\n";
  out << "  \"weight\": " << json_number(r.weight) << ",\n";
  const std::pair<const char*, double> numbers[] = {
      {"temperature", r.temperature},       {"nll", r.nll},
      {"nll_stderr", r.nll_stderr},         {"bits_per_token", r.bits_per_token},
      {"perplexity", r.perplexity},         {"perplexity_stderr", r.perplexity_stderr},
      {"total_nats", r.total_nats},         {"total_bits", r.total_bits},
      {"bits_per_character", r.bits_per_character}, {"bits_per_byte", r.bits_per_byte},
      {"bits_per_dimension", r.bits_per_dimension}, {"accuracy", r.accuracy},
      {"top_k_accuracy", r.top_k_accuracy}, {"brier", r.brier},
      {"mean_confidence", r.mean_confidence}, {"ece", r.ece},
      {"mce", r.mce},                       {"rmsce", r.rmsce},
      {"classwise_ece", r.classwise_ece},   {"brier_reliability", r.brier_reliability},
      {"brier_resolution", r.brier_resolution}, {"brier_uncertainty", r.brier_uncertainty},
      {"brier_within_bin", r.brier_within_bin}};
  for (const auto& [key, value] : numbers) out << "  \"" << key << "\": " << json_number(value) << ",\n";
  out << "  \"top_k\": " << r.top_k << ",\n";
  out << "  \"bins_mode\": \"" << (run.quantile_bins ? "quantile" : "uniform") << "\",\n";
  out << "  \"bins\": [";
  for (std::size_t b = 0; b < r.bins.size(); ++b) {
    const xent::reliability_bin& x = r.bins[b];
    out << (b ? ",\n    " : "\n    ") << "{\"lower\": " << json_number(x.lower) << ", \"upper\": " << json_number(x.upper)
        << ", \"count\": " << x.count << ", \"weight\": " << json_number(x.weight) << ", \"confidence\": " << json_number(x.confidence)
        << ", \"accuracy\": " << json_number(x.accuracy) << "}";
  }
  out << "\n  ]";
  if (run.sequences) {
    const xent::sequence_report& q = *run.sequences;
    out << ",\n  \"per_sequence\": {";
    if (run.sequence_lengths) out << "\"sequence_lengths\": " << input(*run.sequence_lengths);
    else out << "\"sequence_length\": " << run.sequence_length;
    out << ", \"sequences\": " << q.sequences << ", \"empty_sequences\": " << q.empty_sequences
        << ", \"mean_perplexity\": " << json_number(q.mean_perplexity) << ", \"median_perplexity\": " << json_number(q.median_perplexity)
        << ", \"max_perplexity\": " << json_number(q.max_perplexity) << ", \"min_perplexity\": " << json_number(q.min_perplexity)
        << ", \"worst_sequence\": " << q.worst_sequence << "}";
  }
  if (run.fit) {
    const xent::temperature_fit& f = *run.fit;
    out << ",\n  \"temperature_fit\": {\"temperature\": " << json_number(f.temperature) << ", \"nll_before\": " << json_number(f.nll_before)
        << ", \"nll_after\": " << json_number(f.nll_after) << ", \"ece_before\": " << json_number(f.ece_before)
        << ", \"ece_after\": " << json_number(f.ece_after) << ", \"nll_calibration\": " << json_number(f.nll_calibration)
        << ", \"nll_refinement\": " << json_number(f.nll_refinement) << ", \"passes\": " << f.iterations + 1
        << ", \"converged\": " << (f.converged ? "true" : "false") << ", \"at_bound\": " << (f.at_bound ? "true" : "false") << "}";
  }
  out << "\n}\n";
}

/// The reliability diagram: per confidence bin, a bar of the bin's accuracy (with its sample count
/// above it) and the gap to the bin's mean confidence, against the diagonal of perfect calibration.
inline void write_svg(std::ostream& out, const run_result& run) {
  using detail::fixed;
  const xent::eval_report& r = run.report;
  // Title and subtitle, then a strip of sample counts (one per bin, rotated: counts can be long and
  // bins narrow), then the plot.
  const double W = 560, H = 600, left = 70, right = 20, top = 112, bottom = 70, strip = 104;
  const double pw = W - left - right, ph = H - top - bottom;
  const auto X = [&](double v) { return left + v * pw; };
  const auto Y = [&](double v) { return top + (1 - v) * ph; };
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << ' ' << H
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">Reliability diagram</text>\n";
  std::string subtitle = std::to_string(r.samples) + " samples, " + std::to_string(r.bins.size()) + " bins, ECE " + fixed(r.ece, 4) +
                         ", RMS " + fixed(r.rmsce, 4) + ", accuracy " + fixed(r.accuracy, 4);
  if (r.temperature != 1) subtitle += ", T = " + fixed(r.temperature, 3);
  out << "<text x=\"" << W / 2 << "\" y=\"44\" text-anchor=\"middle\" font-size=\"12\" fill=\"#444\">" << detail::xml_escape(subtitle)
      << "</text>\n";
  out << "<text x=\"" << left - 8 << "\" y=\"" << strip << "\" text-anchor=\"end\" font-size=\"11\" fill=\"#444\">count</text>\n";
  // Grid and axes.
  for (int i = 0; i <= 5; ++i) {
    const double v = i / 5.0;
    out << "<line x1=\"" << X(0) << "\" y1=\"" << Y(v) << "\" x2=\"" << X(1) << "\" y2=\"" << Y(v) << "\" stroke=\"#e4e4e4\"/>\n";
    out << "<text x=\"" << X(0) - 8 << "\" y=\"" << Y(v) + 4 << "\" text-anchor=\"end\" font-size=\"11\">" << fixed(v, 1) << "</text>\n";
    out << "<text x=\"" << X(v) << "\" y=\"" << Y(0) + 18 << "\" text-anchor=\"middle\" font-size=\"11\">" << fixed(v, 1) << "</text>\n";
  }
  // Bars: accuracy (blue) and the gap between accuracy and mean confidence (red, translucent).
  const double n_bins = double(r.bins.size());
  const double label_size = std::min(11.0, std::max(6.0, pw / n_bins * 0.45));
  for (const xent::reliability_bin& b : r.bins) {
    const double x0 = X(b.lower) + 1, w = std::max(1.0, X(b.upper) - X(b.lower) - 2);
    if (b.count > 0) {
      out << "<rect x=\"" << x0 << "\" y=\"" << Y(b.accuracy) << "\" width=\"" << w << "\" height=\"" << Y(0) - Y(b.accuracy)
          << "\" fill=\"#3b75af\"><title>(" << fixed(b.lower, 3) << ", " << fixed(b.upper, 3) << "]: " << b.count << " samples, accuracy "
          << fixed(b.accuracy, 4) << ", confidence " << fixed(b.confidence, 4) << "</title></rect>\n";
      const double lo = std::min(b.accuracy, b.confidence), hi = std::max(b.accuracy, b.confidence);
      out << "<rect x=\"" << x0 << "\" y=\"" << Y(hi) << "\" width=\"" << w << "\" height=\"" << Y(lo) - Y(hi)
          << "\" fill=\"#d62728\" fill-opacity=\"0.35\" stroke=\"#d62728\" stroke-width=\"0.8\"/>\n";
    }
    const double cx = x0 + w / 2 + label_size / 3;
    out << "<text x=\"" << cx << "\" y=\"" << strip << "\" font-size=\"" << label_size << "\" fill=\"#222\" transform=\"rotate(-90 " << cx
        << ' ' << strip << ")\">" << b.count << "</text>\n";
  }
  // The diagonal of perfect calibration, and the frame.
  out << "<line x1=\"" << X(0) << "\" y1=\"" << Y(0) << "\" x2=\"" << X(1) << "\" y2=\"" << Y(1)
      << "\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n";
  out << "<rect x=\"" << X(0) << "\" y=\"" << Y(1) << "\" width=\"" << pw << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#222\"/>\n";
  out << "<text x=\"" << X(0.5) << "\" y=\"" << H - 36 << "\" text-anchor=\"middle\" font-size=\"13\">"
      << (run.binary_curve ? "predicted probability p (positive class)" : "confidence (max probability)") << "</text>\n";
  out << "<text x=\"18\" y=\"" << Y(0.5) << "\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 " << Y(0.5)
      << ")\">" << (run.binary_curve ? "fraction of positives" : "accuracy") << "</text>\n";
  // Legend.
  const double ly = H - 16;
  out << "<rect x=\"" << left << "\" y=\"" << ly - 10 << "\" width=\"12\" height=\"12\" fill=\"#3b75af\"/>\n";
  out << "<text x=\"" << left + 17 << "\" y=\"" << ly << "\" font-size=\"11\">accuracy</text>\n";
  out << "<rect x=\"" << left + 110 << "\" y=\"" << ly - 10 << "\" width=\"12\" height=\"12\" fill=\"#d62728\" fill-opacity=\"0.35\" "
      << "stroke=\"#d62728\"/>\n";
  out << "<text x=\"" << left + 127 << "\" y=\"" << ly << "\" font-size=\"11\">gap to mean confidence</text>\n";
  out << "<line x1=\"" << left + 290 << "\" y1=\"" << ly - 4 << "\" x2=\"" << left + 315 << "\" y2=\"" << ly - 4
      << "\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n";
  out << "<text x=\"" << left + 320 << "\" y=\"" << ly << "\" font-size=\"11\">perfect calibration</text>\n";
  out << "</svg>\n";
}

}  // namespace xent_eval

#endif
