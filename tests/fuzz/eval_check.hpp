// What the file-reader harnesses (fuzz_npy, fuzz_safetensors) share: an accepted 2-D logits tensor
// goes through eval_accumulator as xent-eval would send it, float16 and bfloat16 widened to float
// first, whatever its values (NaN, +-inf, denormals), and the report's counts must add up.
#ifndef XENT_TESTS_FUZZ_EVAL_CHECK_HPP
#define XENT_TESTS_FUZZ_EVAL_CHECK_HPP

#include "tensor_file.hpp"  // xent_eval::widen, as xent-eval widens

#include <xent/metrics/evaluation.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fuzz {

/// S as stored, T as evaluated (float for float16 and bfloat16).
template <class S, class T = S>
void check_evaluation(const char* harness, const std::uint8_t* data, std::uint64_t rows, std::uint64_t classes, bool skip, bool masks) {
  std::vector<S> stored(std::size_t(rows * classes));  // a copy: the fuzzer's buffer has no alignment
  std::memcpy(static_cast<void*>(stored.data()), data, stored.size() * sizeof(S));
  std::vector<T> logits(stored.size());
  if constexpr (std::is_same_v<S, T>)
    logits = stored;
  else
    xent_eval::widen(stored.data(), logits.data(), stored.size());
  const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> x(logits.data(), Eigen::Index(classes), Eigen::Index(rows));
  Eigen::VectorXi targets(static_cast<Eigen::Index>(rows));
  for (Eigen::Index j = 0; j < targets.size(); ++j) targets(j) = j % 7 == 3 ? -100 : int(std::uint64_t(j) * 2654435761u % classes);
  xent::eval_options o;
  o.skip_nonfinite = skip;
  o.neg_inf_is_mask = masks;
  o.top_k = 1 + int(rows % 5);
  const xent::eval_report r = xent::evaluate(x, targets, o);
  if (std::uint64_t(r.samples + r.ignored + r.nonfinite_samples) != rows) {
    std::fprintf(stderr, "%s: %lld + %lld + %lld samples != %llu rows\n", harness, (long long)r.samples, (long long)r.ignored,
                 (long long)r.nonfinite_samples, (unsigned long long)rows);
    std::abort();
  }
  std::int64_t in_bins = 0;
  for (const auto& b : r.bins) in_bins += b.count;
  if (in_bins != r.samples) {
    std::fprintf(stderr, "%s: the bins hold %lld samples, not %lld\n", harness, (long long)in_bins, (long long)r.samples);
    std::abort();
  }
}

}  // namespace fuzz

#endif
