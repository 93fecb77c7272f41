// libFuzzer harness over xent-eval's .npy reader and what it feeds: any bytes are taken as a whole
// .npy file. Parsing the header, the dtype and the size checks must either accept the file or throw
// xent_eval::file_error (never crash, never a sanitizer finding); an accepted 2-D float file (float16
// widened as xent-eval widens it) then goes through eval_accumulator (eval_check.hpp).

#include "eval_check.hpp"
#include "npy.hpp"

#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace xent_eval;
  try {
    const std::uint64_t offset = npy_data_offset("fuzz.npy", data, size, size);
    const npy_header h = parse_npy_header("fuzz.npy", data, offset);
    const dtype t = npy_element_type("fuzz.npy", h, {dtype::float16, dtype::float32, dtype::float64, dtype::int32, dtype::int64}, "values");
    npy_check_size("fuzz.npy", h, size - offset, dtype_size(t));
    if (h.shape.size() == 2 && h.shape[0] > 0 && h.shape[1] > 0 && !h.fortran_order) {
      const bool skip = size % 2 == 0, masks = size % 3 == 0;
      if (t == dtype::float16) fuzz::check_evaluation<Eigen::half, float>("fuzz_npy", data + offset, h.shape[0], h.shape[1], skip, masks);
      if (t == dtype::float32) fuzz::check_evaluation<float>("fuzz_npy", data + offset, h.shape[0], h.shape[1], skip, masks);
      if (t == dtype::float64) fuzz::check_evaluation<double>("fuzz_npy", data + offset, h.shape[0], h.shape[1], skip, masks);
    }
  } catch (const file_error&) {
  }
  return 0;
}
