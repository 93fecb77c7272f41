// Inputs and expectations for the xent-eval end-to-end tests (tests/cli/cli_tests.cmake).
//
//   xent_eval_inputs make DIR
//     writes good and bad .npy, .safetensors and raw files into DIR, and DIR/expected*.txt: what the
//     library reports for the good files, evaluated in memory ("key value" lines): expected.txt for
//     the float32 logits, expected_f16.txt and expected_bf16.txt for the same logits rounded to
//     float16 and bfloat16 (evaluated as the float32 values they widen to);
//   xent_eval_inputs compare EXPECTED REPORT.json TOLERANCE KEY...
//     checks that each KEY of EXPECTED appears in the JSON report with a value within
//     TOLERANCE (relative, at max(|expected|, 1)); counts must match exactly;
//   xent_eval_inputs widen-check
//     holds xent-eval's widening of float16 and bfloat16 (vectorised where the ISA allows) to Eigen's
//     one-by-one conversion on every one of the 65536 values of each, in every position of a vector;
//   xent_eval_inputs run [CONDITION...] -- TOOL ARGS...   (Linux)
//     runs TOOL under the conditions and exits as it did (a signal that kills TOOL kills this too):
//       close-stdout          TOOL starts with its standard output closed;
//       fsize=BYTES           TOOL may not write files beyond BYTES (RLIMIT_FSIZE): a full disk;
//       truncate=FILE:BYTES   FILE shrinks to BYTES while TOOL reads it, after TOOL checked its size:
//                             right after TOOL maps FILE, or before its first read() or pread() of
//                             more than 1 KiB (more than a header) from FILE (found by tracing
//                             TOOL's system calls);
//       max-rss-mb=MB         exit 3 if TOOL's peak resident set size exceeded MB (its rusage).

#include "npy.hpp"
#include "tensor_file.hpp"

#include <xent/metrics/compare.hpp>
#include <xent/metrics/evaluation.hpp>
#include <xent/metrics/sequences.hpp>
#include <xent/metrics/temperature.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifndef _WIN32
#include <sys/stat.h>
#include <unistd.h>
#endif
#ifdef __linux__
#include <csignal>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#endif

namespace {

using xent_eval::write_npy;
constexpr std::uint64_t N = 300, C = 7;

/// The bits of float16 and bfloat16 values, as a file stores them.
template <class H>
std::vector<std::uint16_t> bits_of(const std::vector<H>& v) {
  std::vector<std::uint16_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(std::uint16_t));
  return out;
}

template <class T>
void save(const std::string& path, const std::string& descr, const std::vector<std::uint64_t>& shape, const std::vector<T>& v) {
  write_npy(path, descr, shape, v.data(), v.size() * sizeof(T));
}

/// A file's bytes, to corrupt them.
std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}
template <class T>
std::string as_bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

/// A .safetensors file: the 8-byte little-endian length of `header` (padded with spaces to a multiple
/// of 8, as safetensors writes it, unless pad is false), the header, the data.
void save_safetensors(const std::string& path, std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  std::string out;
  for (int i = 0; i < 8; ++i) out += char((std::uint64_t(header.size()) >> (8 * i)) & 0xff);
  write_bytes(path, out + header + data);
}

/// One entry of a safetensors header.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, std::uint64_t begin, std::uint64_t end) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" + std::to_string(begin) + ", " +
         std::to_string(end) + "]}";
}

/// What the library says, in memory, with xent-eval's defaults (and 1000 characters, 2000 bytes).
void write_expected(const std::string& path, const std::vector<float>& logits, const std::vector<std::int64_t>& targets) {
  const Eigen::Map<const Eigen::MatrixXf> x(logits.data(), C, N);
  const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> t(targets.data(), N);
  const xent::eval_report r = xent::evaluate(x, t, {}, {1000, 2000, 0});
  const xent::temperature_fit fit = xent::fit_temperature(x, t);
  xent::eval_options classwise;  // --classwise
  classwise.classwise_classes = C;
  const xent::eval_report k = xent::evaluate(x, t, classwise);
  std::ofstream expected(path);
  expected.precision(17);
  expected << "rmsce " << r.rmsce << "\nclasswise_ece " << k.classwise_ece << "\nbrier_reliability " << k.brier_reliability
           << "\nbrier_resolution " << k.brier_resolution << "\nbrier_uncertainty " << k.brier_uncertainty << "\nbrier_within_bin "
           << k.brier_within_bin << "\nnll_calibration " << fit.nll_calibration << "\nnll_refinement " << fit.nll_refinement << "\n";
  expected << "samples " << r.samples << "\nignored " << r.ignored << "\nnll " << r.nll << "\nnll_stderr " << r.nll_stderr
           << "\nperplexity " << r.perplexity << "\naccuracy " << r.accuracy << "\ntop_k_accuracy " << r.top_k_accuracy << "\nbrier "
           << r.brier << "\nece " << r.ece << "\nmce " << r.mce << "\nbits_per_character " << r.bits_per_character << "\nbits_per_byte "
           << r.bits_per_byte << "\nfitted_temperature " << fit.temperature << "\nece_after " << fit.ece_after << "\n";
}

/// What the library says, in memory, with --bins-mode quantile (equal-mass bins), weighted by
/// `weights` when given.
void write_expected_quantile(const std::string& path, const std::vector<float>& logits, const std::vector<std::int64_t>& targets,
                             const std::vector<float>* weights) {
  const Eigen::Map<const Eigen::MatrixXf> x(logits.data(), C, N);
  const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> t(targets.data(), N);
  xent::eval_options o;
  o.strategy = xent::bin_strategy::quantile;
  xent::eval_accumulator acc(o);
  if (weights)
    acc.update(x, t, Eigen::Map<const Eigen::VectorXf>(weights->data(), N));
  else
    acc.update(x, t);
  const xent::eval_report r = acc.report();
  const xent::temperature_fit fit = xent::fit_temperature(x, t);
  o.temperature = fit.temperature;
  const xent::eval_report after = weights ? xent::eval_report{} : xent::evaluate(x, t, o);
  std::ofstream expected(path);
  expected.precision(17);
  expected << "samples " << r.samples << "\nece " << r.ece << "\nmce " << r.mce << "\nrmsce " << r.rmsce << "\nnll " << r.nll;
  if (!weights) expected << "\nece_after " << after.ece;
  expected << "\n";
}

/// What the library says, in memory, of the logits weighted by `weights` and cut into sequences of
/// `length` tokens (or of `lengths`), with xent-eval's defaults: the token-pooled report and the
/// per-sequence one.
void write_expected_weights(const std::string& path, const std::vector<float>& logits, const std::vector<std::int64_t>& targets,
                            const std::vector<float>* weights, std::int64_t length, const std::vector<std::int64_t>& lengths) {
  const Eigen::Map<const Eigen::MatrixXf> x(logits.data(), C, N);
  const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> t(targets.data(), N);
  xent::eval_options classwise;  // --classwise
  classwise.classwise_classes = C;
  xent::sequence_accumulator acc =
      length > 0 ? xent::sequence_accumulator(length, classwise) : xent::sequence_accumulator(lengths, classwise);
  if (weights)
    acc.update(x, t, Eigen::Map<const Eigen::VectorXf>(weights->data(), N));
  else
    acc.update(x, t);
  const xent::eval_report r = acc.tokens().report();
  const xent::sequence_report q = acc.report();
  std::ofstream expected(path);
  expected.precision(17);
  expected << "samples " << r.samples << "\nignored " << r.ignored << "\nweight " << r.weight << "\nnll " << r.nll << "\nnll_stderr "
           << r.nll_stderr << "\nperplexity " << r.perplexity << "\naccuracy " << r.accuracy << "\ntop_k_accuracy " << r.top_k_accuracy
           << "\nbrier " << r.brier << "\nece " << r.ece << "\nmce " << r.mce << "\nrmsce " << r.rmsce << "\nclasswise_ece "
           << r.classwise_ece << "\nbrier_reliability " << r.brier_reliability << "\nbrier_within_bin " << r.brier_within_bin
           << "\nsequences " << q.sequences << "\nempty_sequences "
           << q.empty_sequences << "\nmean_perplexity " << q.mean_perplexity << "\nmedian_perplexity " << q.median_perplexity
           << "\nmax_perplexity " << q.max_perplexity << "\nmin_perplexity " << q.min_perplexity << "\nworst_sequence " << q.worst_sequence
           << "\n";
}

/// What the library says of base against test (C x N float32 each), in memory, with xent-eval
/// compare's defaults; and each token's figures, as xent-eval compare --per-token writes them.
void write_expected_compare(const std::string& path, const std::vector<float>& base, const std::vector<float>& test,
                            const std::vector<std::int64_t>* targets, const std::string& tokens_path) {
  const Eigen::Map<const Eigen::MatrixXf> b(base.data(), C, N), t(test.data(), C, N);
  xent::compare_accumulator acc;
  Eigen::MatrixXf tokens(5, N);
  if (targets) {
    acc.update(b, t, Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(targets->data(), N), tokens);
  } else {
    acc.update(b, t, nullptr, tokens);
  }
  const xent::compare_report r = acc.report();
  std::ofstream expected(path);
  expected.precision(17);
  expected << "samples " << r.samples << "\nignored " << r.ignored << "\nkl " << r.kl << "\nkl_stderr " << r.kl_stderr << "\nkl_median "
           << r.kl_median << "\nkl_p99 " << r.kl_p99 << "\nkl_max " << r.kl_max << "\nsame_top " << r.same_top << "\nlog_ppl_ratio "
           << r.log_ppl_ratio << "\nlog_ppl_ratio_stderr " << r.log_ppl_ratio_stderr << "\ndelta_p " << r.delta_p << "\ndelta_p_rms "
           << r.delta_p_rms << "\nnll_base " << r.nll_base << "\nnll_test " << r.nll_test << "\n";
  save(tokens_path, "<f4", {N, 5}, std::vector<float>(tokens.data(), tokens.data() + tokens.size()));
}

/// A .npy with the given raw header dict (padded and ended as numpy does) and data.
void save_raw(const std::string& path, std::string dict, const std::string& data, int major = 1) {
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  const std::size_t unpadded = 8 + len_bytes + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(major);
  out += char(0);
  for (std::size_t i = 0; i < len_bytes; ++i) out += char((dict.size() >> (8 * i)) & 0xff);
  write_bytes(path, out + dict + data);
}

int make(const std::string& dir) {
  std::mt19937_64 rng(7007);
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> uniform(0, 1);
  // An overconfident model: targets drawn from softmax(z), logits 2 z (the fitted T is near 2).
  std::vector<float> logits(N * C);
  std::vector<std::int64_t> targets(N);
  for (std::uint64_t j = 0; j < N; ++j) {
    double z[C], total = 0;
    for (std::uint64_t k = 0; k < C; ++k) total += z[k] = std::exp(1.5 * normal(rng));
    double u = uniform(rng) * total;
    std::uint64_t t = 0;
    while (t + 1 < C && (u -= z[t]) > 0) ++t;
    targets[j] = j % 37 == 5 ? -100 : std::int64_t(t);  // a few ignored
    for (std::uint64_t k = 0; k < C; ++k) logits[j * C + k] = float(2 * std::log(z[k]));
  }
  const std::string d = dir + "/";
  save(d + "logits_f4.npy", "<f4", {N, C}, logits);
  save(d + "targets_i8.npy", "<i8", {N}, targets);
  save(d + "logits_f8.npy", "<f8", {N, C}, std::vector<double>(logits.begin(), logits.end()));
  save(d + "targets_i4.npy", "<i4", {N}, std::vector<std::int32_t>(targets.begin(), targets.end()));
  const std::string good_data(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  save_raw(d + "logits_v2.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 7), }", good_data, 2);
  save_raw(d + "logits_spaced.npy", "{\"shape\":(300,7),\"fortran_order\":False,\"descr\":\"<f4\"}", good_data);

  write_expected(d + "expected.txt", logits, targets);

  // ---- --weights, --sequence-length, --sequence-lengths (a generator of their own: the draws
  // above and below stay as they were)
  std::mt19937_64 wrng(7011);
  std::vector<float> weights(N);
  for (std::uint64_t j = 0; j < N; ++j) weights[j] = j % 23 == 4 ? 0.0f : float(0.25 + 2 * uniform(wrng));
  save(d + "weights_f4.npy", "<f4", {N}, weights);
  save(d + "weights_f8.npy", "<f8", {N}, std::vector<double>(weights.begin(), weights.end()));
  std::vector<float> bad_weights = weights;
  bad_weights[17] = -1;
  save(d + "weights_negative.npy", "<f4", {N}, bad_weights);
  bad_weights = weights;
  bad_weights[250] = std::numeric_limits<float>::quiet_NaN();
  save(d + "weights_nan.npy", "<f4", {N}, bad_weights);
  save(d + "weights_short.npy", "<f4", {N - 1}, std::vector<float>(weights.begin(), weights.end() - 1));
  save(d + "weights_i8.npy", "<i8", {N}, std::vector<std::int64_t>(N, 1));
  save(d + "weights_ones.npy", "<f4", {N}, std::vector<float>(N, 1.0f));
  // Ragged lengths from 1 to 41 tokens, the last cut so that they add up to N.
  std::vector<std::int64_t> lengths;
  for (std::int64_t i = 0, total = 0; total < std::int64_t(N); ++i) {
    lengths.push_back(std::min<std::int64_t>(1 + (i * 37) % 41, std::int64_t(N) - total));
    total += lengths.back();
  }
  save(d + "lengths_i8.npy", "<i8", {lengths.size()}, lengths);
  save(d + "lengths_i4.npy", "<i4", {lengths.size()}, std::vector<std::int32_t>(lengths.begin(), lengths.end()));
  std::vector<std::int64_t> bad_lengths = lengths;
  bad_lengths.back() -= 1;
  save(d + "lengths_short.npy", "<i8", {bad_lengths.size()}, bad_lengths);
  bad_lengths = lengths;
  bad_lengths[2] = 0;
  save(d + "lengths_zero.npy", "<i8", {bad_lengths.size()}, bad_lengths);
  write_expected_weights(d + "expected_weights.txt", logits, targets, &weights, 10, {});
  write_expected_weights(d + "expected_lengths.txt", logits, targets, &weights, 0, lengths);
  write_expected_weights(d + "expected_sequences.txt", logits, targets, nullptr, 20, {});

  write_expected_quantile(d + "expected_quantile.txt", logits, targets, nullptr);
  write_expected_quantile(d + "expected_quantile_weights.txt", logits, targets, &weights);
  {
    // --weights with --fit-temperature: the weighted fit (its NLL split and ECE after, weighted).
    const Eigen::Map<const Eigen::MatrixXf> x(logits.data(), C, N);
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> t(targets.data(), N);
    const xent::temperature_fit fit = xent::fit_temperature(x, t, Eigen::Map<const Eigen::VectorXf>(weights.data(), N));
    std::ofstream expected(d + "expected_weights_fit.txt");
    expected.precision(17);
    expected << "fitted_temperature " << fit.temperature << "\nece_after " << fit.ece_after << "\nnll_calibration " << fit.nll_calibration
             << "\nnll_refinement " << fit.nll_refinement << "\n";
  }
  // ---- float16 and bfloat16: the same logits rounded (to nearest, ties to even), and the float32
  // values they widen to, which the library evaluates for the expected reports.
  std::vector<Eigen::half> halves(logits.begin(), logits.end());
  std::vector<Eigen::bfloat16> brains(logits.begin(), logits.end());
  const std::vector<float> from_half(halves.begin(), halves.end()), from_brain(brains.begin(), brains.end());
  write_expected(d + "expected_f16.txt", from_half, targets);
  write_expected(d + "expected_bf16.txt", from_brain, targets);
  const std::string half_data = as_bytes(bits_of(halves)), brain_data = as_bytes(bits_of(brains));
  save_raw(d + "logits_f2.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (300, 7), }", half_data);
  save(d + "logits_f2_widened.npy", "<f4", {N, C}, from_half);
  save_raw(d + "logits_bf16_u2.npy", "{'descr': '<u2', 'fortran_order': False, 'shape': (300, 7), }", brain_data);
  save(d + "logits_bf16_widened.npy", "<f4", {N, C}, from_brain);
  write_bytes(d + "logits_bf16.raw", brain_data);
  write_bytes(d + "logits_f4.raw", good_data);
  write_bytes(d + "logits_short.raw", brain_data.substr(0, brain_data.size() - 2));

  // ---- .safetensors: data laid out as safetensors does (in the order of the entries, no gaps)
  const std::string shape_nc = "[300, 7]", shape_n = "[300]";
  const std::string target_data = as_bytes(targets), target32_data = as_bytes(std::vector<std::int32_t>(targets.begin(), targets.end()));
  const std::uint64_t f4_bytes = N * C * 4, h_bytes = N * C * 2, i8_bytes = N * 8, i4_bytes = N * 4;
  save_safetensors(d + "st_f32.safetensors", "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + "}", good_data);
  save_safetensors(d + "st_f16.safetensors",
                   "{\"__metadata__\": {\"format\": \"pt\"}, " + entry("logits", "F16", shape_nc, 0, h_bytes) + ", " +
                       entry("targets", "I64", shape_n, h_bytes, h_bytes + i8_bytes) + "}",
                   half_data + target_data);
  // Several candidates for each role: only the keys tell. teacher.logits holds other values, so that
  // the wrong choice shows in the report.
  std::vector<float> teacher(N * C);
  for (std::uint64_t i = 0; i < teacher.size(); ++i) teacher[i] = float(int(i * 7919 % 23) - 11) / 4;
  const std::vector<float> embedding(C * 4, 0.5f);
  std::uint64_t at = 0;
  std::string header = "{";
  header += entry("teacher.logits", "F32", shape_nc, at, at + f4_bytes) + ", ";
  at += f4_bytes;
  header += entry("model.logits", "BF16", shape_nc, at, at + h_bytes) + ", ";
  at += h_bytes;
  header += entry("embedding", "F32", "[7, 4]", at, at + C * 4 * 4) + ", ";
  at += C * 4 * 4;
  header += entry("labels", "I64", shape_n, at, at + i8_bytes) + ", ";
  at += i8_bytes;
  header += entry("label_ids", "I32", shape_n, at, at + i4_bytes) + "}";
  save_safetensors(d + "st_bf16_keys.safetensors", header, as_bytes(teacher) + brain_data + as_bytes(embedding) + target_data + target32_data);
  // One byte ahead of the logits puts them at an odd offset: not mapped (float16 needs 2-byte
  // alignment) but read.
  save_safetensors(d + "st_misaligned.safetensors",
                   "{" + entry("pad", "U8", "[1]", 0, 1) + ", " + entry("logits", "F16", shape_nc, 1, 1 + h_bytes) + ", " +
                       entry("targets", "I32", shape_n, 1 + h_bytes, 1 + h_bytes + i4_bytes) + "}",
                   std::string(1, '\0') + half_data + target32_data);
  write_bytes(d + "st_truncate.safetensors", bytes_of(d + "st_f32.safetensors"));

  // ---- bad .safetensors files, one fault each
  const std::string one = "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + "}";
  write_bytes(d + "st_short.safetensors", std::string("\x08\0\0\0\0", 5));
  write_bytes(d + "st_header_beyond.safetensors", std::string("\x40\x42\x0f\0\0\0\0\0", 8) + one);  // 1000000 bytes of header
  write_bytes(d + "st_header_huge.safetensors", std::string("\0\0\0\0\0\x01\0\0", 8) + one);        // 2^40
  save_safetensors(d + "st_bad_json.safetensors", "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + ",}", good_data);
  save_safetensors(d + "st_number_overflow.safetensors", "{\"logits\": {\"dtype\": \"F32\", \"shape\": [300, 7], \"data_offsets\": [0, 1e999]}}",
                   good_data);
  save_safetensors(d + "st_not_object.safetensors", "[\"logits\", \"F32\"]", "");
  save_safetensors(d + "st_no_offsets.safetensors", "{\"logits\": {\"dtype\": \"F32\", \"shape\": [300, 7]}}", good_data);
  save_safetensors(d + "st_bad_shape.safetensors", "{" + entry("logits", "F32", "[300, -7]", 0, f4_bytes) + "}", good_data);
  save_safetensors(d + "st_outside.safetensors", "{" + entry("logits", "F32", shape_nc, 0, 9000) + "}", good_data);
  save_safetensors(d + "st_size_mismatch.safetensors", "{" + entry("logits", "F16", shape_nc, 0, f4_bytes) + "}", good_data);
  save_safetensors(d + "st_overlap.safetensors",
                   "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + ", " + entry("targets", "I64", shape_n, 8000, 8000 + i8_bytes) + "}",
                   good_data + std::string(8000 + i8_bytes - f4_bytes, '\0'));
  save_safetensors(d + "st_hole.safetensors",
                   "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + ", " + entry("targets", "I64", shape_n, 8408, 8408 + i8_bytes) + "}",
                   good_data + std::string(8, '\0') + target_data);
  save_safetensors(d + "st_trailing.safetensors", one, good_data + std::string(16, '\0'));
  save_safetensors(d + "st_unknown_dtype.safetensors", "{" + entry("logits", "F17", shape_nc, 0, f4_bytes) + "}", good_data);
  save_safetensors(d + "st_duplicate.safetensors",
                   "{" + entry("logits", "F32", shape_nc, 0, f4_bytes) + ", " + entry("logits", "F32", shape_nc, 0, f4_bytes) + "}", good_data);
  save_safetensors(d + "st_bad_metadata.safetensors", "{\"__metadata__\": {\"epoch\": 3}, " + entry("logits", "F32", shape_nc, 0, f4_bytes) + "}",
                   good_data);
  save_safetensors(d + "st_no_logits.safetensors", "{" + entry("targets", "I64", shape_n, 0, i8_bytes) + "}", target_data);

  // ---- bad files
  const std::string good = bytes_of(d + "logits_f4.npy");
  write_bytes(d + "empty.npy", "");
  write_bytes(d + "not_npy.npy", "hello, world: this is text\n");
  write_bytes(d + "truncated_header.npy", good.substr(0, 30));
  write_bytes(d + "truncated_data.npy", good.substr(0, good.size() - 100));
  write_bytes(d + "trailing.npy", good + "12345678");
  save_raw(d + "bad_header.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (300, 7 }", good_data);
  save_raw(d + "bad_bool.npy", "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (300, 7), }", good_data);
  save_raw(d + "no_shape.npy", "{'descr': '<f4', 'fortran_order': False, }", good_data);
  std::string v4 = good;
  v4[6] = 4;
  write_bytes(d + "version4.npy", v4);
  save_raw(d + "logits_c8.npy", "{'descr': '<c8', 'fortran_order': False, 'shape': (300, 7), }", std::string(N * C * 8, '\0'));
  save(d + "logits_i4.npy", "<i4", {N, C}, std::vector<std::int32_t>(N * C, 1));
  save_raw(d + "logits_big_endian.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (300, 7), }", good_data);
  save_raw(d + "logits_fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (300, 7), }", good_data);
  save(d + "logits_1d.npy", "<f4", {N * C}, logits);
  save(d + "logits_3d.npy", "<f4", {N, C, 1}, logits);
  save(d + "targets_f4.npy", "<f4", {N}, std::vector<float>(N, 1.0f));
  save(d + "targets_u8.npy", "<u8", {N}, std::vector<std::uint64_t>(N, 1));
  save(d + "targets_2d.npy", "<i8", {N, 1}, targets);
  save(d + "targets_short.npy", "<i8", {N - 1}, std::vector<std::int64_t>(targets.begin(), targets.end() - 1));
  std::vector<std::int64_t> range = targets;
  range[123] = std::int64_t(C);
  save(d + "targets_range.npy", "<i8", {N}, range);
  std::vector<std::int64_t> negative = targets;
  negative[45] = -5;
  save(d + "targets_negative.npy", "<i8", {N}, negative);
  save(d + "targets_all_ignored.npy", "<i8", {N}, std::vector<std::int64_t>(N, -100));
  std::vector<float> special = logits;
  special[17 * C + 2] = std::numeric_limits<float>::quiet_NaN();
  special[40 * C + 0] = std::numeric_limits<float>::infinity();
  special[41 * C + 6] = -std::numeric_limits<float>::infinity();
  save(d + "logits_nonfinite.npy", "<f4", {N, C}, special);
  std::vector<float> masked = logits;
  for (std::uint64_t j = 0; j < N; j += 10) masked[j * C + (targets[j] == 0 ? 1 : 0)] = -std::numeric_limits<float>::infinity();
  save(d + "logits_masked.npy", "<f4", {N, C}, masked);
  save(d + "logits_no_samples.npy", "<f4", {0, C}, std::vector<float>());
  save(d + "targets_no_samples.npy", "<i8", {0}, std::vector<std::int64_t>());
  save(d + "logits_no_classes.npy", "<f4", {N, 0}, std::vector<float>());
  save_raw(d + "logits_escape.npy", "{'descr': '\x1b[2J\x1b[31m<f4', 'fortran_order': False, 'shape': (300, 7), }", good_data);
#ifndef _WIN32
  // A FIFO without a writer: opening it to read would wait forever.
  const std::string fifo = d + "fifo.npy";
  std::remove(fifo.c_str());
  if (mkfifo(fifo.c_str(), 0600) != 0) throw xent_eval::file_error(fifo + ": mkfifo failed (" + std::strerror(errno) + ")");
#endif

  // ---- files the tests truncate, or must leave alone
  write_bytes(d + "truncate_mapped.npy", good);
  write_bytes(d + "truncate_last_page.npy", good);
  write_bytes(d + "truncate_read.npy", good);
  write_bytes(d + "truncate_targets.npy", bytes_of(d + "targets_i8.npy"));
  write_bytes(d + "logits_svg_target.npy", good);

  // ---- 64 MiB of logits, for the memory bound: 2048 samples x 8192 classes, any finite values
  constexpr std::uint64_t big_n = 2048, big_c = 8192;
  std::vector<float> big(big_n * big_c);
  for (std::uint64_t i = 0; i < big.size(); ++i) big[i] = float((i * 2654435761u) % 1000) / 100;
  std::vector<std::int64_t> big_targets(big_n);
  for (std::uint64_t j = 0; j < big_n; ++j) big_targets[j] = std::int64_t(j * 7 % big_c);
  save(d + "logits_big.npy", "<f4", {big_n, big_c}, big);
  save(d + "targets_big.npy", "<i8", {big_n}, big_targets);
  save(d + "logits_big_f2.npy", "<f2", {big_n, big_c}, std::vector<Eigen::half>(big.begin(), big.end()));

  // ---- xent-eval compare: the logits above as the base model, a perturbed copy as the test model.
  std::vector<float> test(logits);
  for (float& v : test) v += float(0.3 * normal(rng));
  save(d + "cmp_test_f4.npy", "<f4", {N, C}, test);
  write_expected_compare(d + "expected_compare.txt", logits, test, &targets, d + "expected_compare_tokens.npy");
  write_expected_compare(d + "expected_compare_notargets.txt", logits, test, nullptr, d + "expected_compare_notargets_tokens.npy");
  // The test model as float16: compared as the float32 values it widens to.
  const std::vector<Eigen::half> test_halves(test.begin(), test.end());
  save_raw(d + "cmp_test_f2.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (300, 7), }", as_bytes(bits_of(test_halves)));
  write_expected_compare(d + "expected_compare_f16.txt", logits, std::vector<float>(test_halves.begin(), test_halves.end()), &targets,
                         d + "expected_compare_f16_tokens.npy");
  // Bad pairs: another vocabulary, other tokens, a NaN in sample 43 of the test model (42 is ignored).
  save(d + "cmp_test_c6.npy", "<f4", {N, 6}, std::vector<float>(test.begin(), test.begin() + N * 6));
  save(d + "cmp_test_n299.npy", "<f4", {N - 1, C}, std::vector<float>(test.begin(), test.begin() + (N - 1) * C));
  std::vector<float> test_nan(test);
  test_nan[43 * C + 3] = std::numeric_limits<float>::quiet_NaN();
  save(d + "cmp_test_nan.npy", "<f4", {N, C}, test_nan);
  return 0;
}

#ifdef __linux__
/// Whether descriptor fd of process pid is the file at `path` (a canonical path).
bool is_file(pid_t pid, long long fd, const std::string& path) {
  if (fd < 0) return false;
  char link[4096];
  const std::string proc = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  const ssize_t n = readlink(proc.c_str(), link, sizeof link);
  return n > 0 && std::string(link, std::size_t(n)) == path;
}

/// Follows pid's system calls until it maps `path` or starts reading its data, truncates the file
/// to `bytes` there, and lets pid go on untraced. Returns false if pid ended first (its status in
/// `status` and its rusage in `usage`).
bool truncate_while_read(pid_t pid, const std::string& path, long long bytes, int& status, rusage& usage) {
  char canonical[PATH_MAX];
  if (!realpath(path.c_str(), canonical)) throw xent_eval::file_error(path + ": " + std::strerror(errno));
  if (wait4(pid, &status, 0, &usage) != pid || !WIFSTOPPED(status)) return false;  // the stop after execve
  ptrace(PTRACE_SETOPTIONS, pid, nullptr, reinterpret_cast<void*>(long(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)));
  bool mapping = false;
  long deliver = 0;
  for (;;) {
    ptrace(PTRACE_SYSCALL, pid, nullptr, reinterpret_cast<void*>(deliver));
    deliver = 0;
    if (wait4(pid, &status, 0, &usage) != pid || !WIFSTOPPED(status)) return false;
    if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {  // a signal, not a system call: pass it on
      deliver = WSTOPSIG(status);
      continue;
    }
    __ptrace_syscall_info info{};
    if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, reinterpret_cast<void*>(sizeof info), &info) <= 0) continue;
    if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
      const auto& a = info.entry.args;
      const bool read =
          (info.entry.nr == SYS_read || info.entry.nr == SYS_pread64) && a[2] > 1024 && is_file(pid, static_cast<long long>(a[0]), canonical);
      mapping = info.entry.nr == SYS_mmap && is_file(pid, static_cast<int>(a[4]), canonical);  // fd -1: anonymous
      if (read) break;
    } else if (info.op == PTRACE_SYSCALL_INFO_EXIT && mapping) {
      break;
    }
  }
  if (truncate(canonical, off_t(bytes)) != 0) throw xent_eval::file_error(path + ": truncate failed (" + std::strerror(errno) + ")");
  ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
  return true;
}

int run(int argc, char** argv) {
  bool close_stdout = false;
  long long fsize = -1, truncate_to = -1;
  double max_rss_mb = -1;
  std::string truncate_path;
  int i = 0;
  for (; i < argc && std::string(argv[i]) != "--"; ++i) {
    const std::string a = argv[i];
    if (a == "close-stdout") {
      close_stdout = true;
    } else if (a.rfind("fsize=", 0) == 0) {
      fsize = std::stoll(a.substr(6));
    } else if (a.rfind("max-rss-mb=", 0) == 0) {
      max_rss_mb = std::stod(a.substr(11));
    } else if (a.rfind("truncate=", 0) == 0 && a.rfind(':') > 9) {
      truncate_path = a.substr(9, a.rfind(':') - 9);
      truncate_to = std::stoll(a.substr(a.rfind(':') + 1));
    } else {
      throw std::invalid_argument("run: unknown condition " + a);
    }
  }
  if (i + 1 >= argc) throw std::invalid_argument("run: no command after --");
  char** tool = argv + i + 1;
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    if (!truncate_path.empty()) ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    if (close_stdout) close(STDOUT_FILENO);
    if (fsize >= 0) {
      const rlimit limit{rlim_t(fsize), rlim_t(fsize)};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    execv(tool[0], tool);
    std::fprintf(stderr, "xent_eval_inputs: cannot run %s (%s)\n", tool[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  if (truncate_path.empty() || truncate_while_read(pid, truncate_path, truncate_to, status, usage)) {
    if (wait4(pid, &status, 0, &usage) != pid) throw std::runtime_error(std::string("wait4 failed: ") + std::strerror(errno));
  } else {
    std::fprintf(stderr, "xent_eval_inputs: %s ended before it read %s\n", tool[0], truncate_path.c_str());
  }
  if (WIFSIGNALED(status)) {
    std::signal(WTERMSIG(status), SIG_DFL);
    raise(WTERMSIG(status));
  }
  if (max_rss_mb >= 0) {
    const double rss_mb = double(usage.ru_maxrss) * 1024 / 1e6;  // ru_maxrss is in KiB on Linux
    std::fprintf(stderr, "xent_eval_inputs: peak resident set size of %s: %.1f MB (at most %.1f MB)\n", tool[0], rss_mb, max_rss_mb);
    if (rss_mb > max_rss_mb) return 3;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}
#endif

/// Every bit pattern, widened by xent_eval::widen and by Eigen's scalar conversion: the same float,
/// bit for bit, or NaN for NaN (F16C quiets a signalling NaN). The patterns are shifted by 0 ... 8
/// places, so that each one passes through every lane of the vector loop and through its tail.
template <class H>
int widen_check(const char* name) {
  int failures = 0;
  for (std::size_t shift = 0; shift <= 8; ++shift) {
    std::vector<H> in(65536 + shift);
    for (std::size_t i = 0; i < in.size(); ++i) {
      const std::uint16_t bits = std::uint16_t((i + 65536 - shift) & 0xffff);
      std::memcpy(static_cast<void*>(&in[i]), &bits, sizeof bits);
    }
    std::vector<float> out(in.size());
    xent_eval::widen(in.data(), out.data(), in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      const float want = static_cast<float>(in[i]);
      const bool same = std::isnan(want) ? std::isnan(out[i]) : std::memcmp(&want, &out[i], sizeof want) == 0;
      if (!same && failures++ < 10)
        std::cerr << name << " bits 0x" << std::hex << ((i + 65536 - shift) & 0xffff) << std::dec << ": widened to " << out[i] << ", not "
                  << want << '\n';
    }
  }
  std::cout << name << ": 65536 values, 9 alignments: " << (failures ? "FAILED" : "all exact") << '\n';
  return failures;
}

/// The number after "key": in a JSON text (the report's numbers are flat "key": value pairs).
bool json_number(const std::string& json, const std::string& key, double& value) {
  const std::string needle = "\"" + key + "\": ";
  const std::size_t at = json.find(needle);
  if (at == std::string::npos) return false;
  const char* begin = json.c_str() + at + needle.size();
  if (std::strncmp(begin, "null", 4) == 0) {
    value = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  char* end = nullptr;
  value = std::strtod(begin, &end);
  return end != begin;
}

int compare(const std::string& expected_path, const std::string& json_path, double tolerance, const std::vector<std::string>& keys) {
  std::ifstream in(expected_path);
  std::map<std::string, double> expected;
  for (std::string key; in >> key;) {
    std::string word;
    in >> word;
    expected[key] = std::strtod(word.c_str(), nullptr);
  }
  const std::string json = bytes_of(json_path);
  // fitted_temperature and ece_after live in the temperature_fit object.
  const std::map<std::string, std::string> json_key = {{"fitted_temperature", "temperature_fit\": {\"temperature"}, {"ece_after", "ece_after"}};
  int failures = 0;
  for (const auto& [key, want] : expected) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) continue;
    double got = 0;
    const auto renamed = json_key.find(key);
    if (!json_number(json, renamed == json_key.end() ? key : renamed->second, got)) {
      std::cerr << key << ": missing from " << json_path << '\n';
      ++failures;
      continue;
    }
    const bool same_nan = std::isnan(want) && std::isnan(got);
    const double error = std::fabs(got - want) / std::max(std::fabs(want), 1.0);
    const bool ok = same_nan || (key == "samples" || key == "ignored" ? got == want : error <= tolerance);
    std::cout << key << ": expected " << want << ", got " << got << (ok ? "" : "  <-- FAILED") << '\n';
    failures += ok ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "make") return make(argv[2]);
    if (argc == 2 && std::string(argv[1]) == "widen-check")
      return widen_check<Eigen::half>("float16") + widen_check<Eigen::bfloat16>("bfloat16") == 0 ? 0 : 1;
    if (argc >= 6 && std::string(argv[1]) == "compare")
      return compare(argv[2], argv[3], std::strtod(argv[4], nullptr), std::vector<std::string>(argv + 5, argv + argc));
#ifdef __linux__
    if (argc >= 4 && std::string(argv[1]) == "run") return run(argc - 2, argv + 2);
#endif
  } catch (const std::exception& e) {
    std::cerr << "xent_eval_inputs: " << e.what() << '\n';
    return 1;
  }
  std::cerr << "usage: xent_eval_inputs make DIR | compare EXPECTED REPORT.json TOLERANCE KEY... | widen-check | run [CONDITION...] -- TOOL "
               "ARGS...\n";
  return 2;
}
