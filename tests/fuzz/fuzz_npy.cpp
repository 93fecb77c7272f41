// libFuzzer harness over xent-eval's .npy reader and what it feeds: any bytes are taken as a whole
// .npy file. Parsing the header, the dtype and the size checks must either accept the file or throw
// xent_eval::file_error (never crash, never a sanitizer finding); an accepted 2-D float file then goes
// through eval_accumulator as xent-eval would send it, whatever its values (NaN, +-inf, denormals),
// and the report's counts must add up.

#include "npy.hpp"

#include <xent/metrics/evaluation.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

template <class T>
void evaluate(const std::uint8_t* data, std::uint64_t rows, std::uint64_t classes, bool skip, bool masks) {
  std::vector<T> logits(std::size_t(rows * classes));  // a copy: the fuzzer's buffer has no alignment
  std::memcpy(logits.data(), data, logits.size() * sizeof(T));
  const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> x(logits.data(), Eigen::Index(classes), Eigen::Index(rows));
  Eigen::VectorXi targets(static_cast<Eigen::Index>(rows));
  for (Eigen::Index j = 0; j < targets.size(); ++j) targets(j) = j % 7 == 3 ? -100 : int(std::uint64_t(j) * 2654435761u % classes);
  xent::eval_options o;
  o.skip_nonfinite = skip;
  o.neg_inf_is_mask = masks;
  o.top_k = 1 + int(rows % 5);
  const xent::eval_report r = xent::evaluate(x, targets, o);
  if (std::uint64_t(r.samples + r.ignored + r.nonfinite_samples) != rows) {
    std::fprintf(stderr, "fuzz_npy: %lld + %lld + %lld samples != %llu rows\n", (long long)r.samples, (long long)r.ignored,
                 (long long)r.nonfinite_samples, (unsigned long long)rows);
    std::abort();
  }
  std::int64_t in_bins = 0;
  for (const auto& b : r.bins) in_bins += b.count;
  if (in_bins != r.samples) {
    std::fprintf(stderr, "fuzz_npy: the bins hold %lld samples, not %lld\n", (long long)in_bins, (long long)r.samples);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace xent_eval;
  try {
    const std::uint64_t offset = npy_data_offset("fuzz.npy", data, size, size);
    const npy_header h = parse_npy_header("fuzz.npy", data, offset);
    const dtype t = npy_element_type("fuzz.npy", h, {dtype::float32, dtype::float64, dtype::int32, dtype::int64}, "values");
    npy_check_size("fuzz.npy", h, size - offset, dtype_size(t));
    if (h.shape.size() == 2 && h.shape[0] > 0 && h.shape[1] > 0 && !h.fortran_order) {
      if (t == dtype::float32) evaluate<float>(data + offset, h.shape[0], h.shape[1], size % 2 == 0, size % 3 == 0);
      if (t == dtype::float64) evaluate<double>(data + offset, h.shape[0], h.shape[1], size % 2 == 0, size % 3 == 0);
    }
  } catch (const file_error&) {
  }
  return 0;
}
