// libFuzzer harness over xent-eval's .safetensors reader: any bytes are taken as a whole file. The
// header length, the JSON and every tensor's entry must either be accepted or throw
// xent_eval::file_error (no other exception, no crash, no sanitizer finding). What is accepted must
// keep the reader's promises: each tensor inside the data, of the size its dtype and shape give, and
// the tensors tiling the data exactly. The tensors xent-eval would choose, without a key and by the
// first tensor's name, are then chosen the same way, and chosen logits go through eval_accumulator
// (eval_check.hpp), widened from float16 and bfloat16 as xent-eval widens them.

#include "eval_check.hpp"
#include "safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what.c_str());
  std::abort();
}

void check_layout(const xent_eval::safetensors_header& h, std::uint64_t data_size) {
  std::uint64_t total = 0;
  for (const xent_eval::safetensor& t : h.tensors) {
    if (t.begin > t.end || t.end > data_size) fail("tensor '" + t.name + "' accepted outside the data");
    std::uint64_t bits = xent_eval::safetensors_dtype_bits(t.dtype);
    for (const std::uint64_t d : t.shape) bits *= d;  // no overflow: the reader refused those
    if (bits != (t.end - t.begin) * 8) fail("tensor '" + t.name + "' accepted with the wrong size");
    total += t.end - t.begin;
  }
  // Inside the data and not overlapping (checked by the reader), they must also fill it.
  if (total != data_size) fail("the accepted tensors do not tile the data");
}

void evaluate(const std::uint8_t* data, const xent_eval::safetensors_header& h, const xent_eval::safetensor& t, std::size_t size) {
  if (t.shape[0] == 0 || t.shape[1] == 0) return;
  const std::uint8_t* at = data + h.data_offset + t.begin;
  const bool skip = size % 2 == 0, masks = size % 3 == 0;
  const std::uint64_t rows = t.shape[0], classes = t.shape[1];
  if (t.dtype == "F16") fuzz::check_evaluation<Eigen::half, float>("fuzz_safetensors", at, rows, classes, skip, masks);
  if (t.dtype == "BF16") fuzz::check_evaluation<Eigen::bfloat16, float>("fuzz_safetensors", at, rows, classes, skip, masks);
  if (t.dtype == "F32") fuzz::check_evaluation<float>("fuzz_safetensors", at, rows, classes, skip, masks);
  if (t.dtype == "F64") fuzz::check_evaluation<double>("fuzz_safetensors", at, rows, classes, skip, masks);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace xent_eval;
  const std::string path = "fuzz.safetensors";
  safetensors_header h;
  try {
    const std::uint64_t length = safetensors_header_length(path, data, size, size);
    h = parse_safetensors_header(path, reinterpret_cast<const char*>(data) + 8, std::size_t(length), size - 8 - length);
  } catch (const file_error&) {
    return 0;
  }
  check_layout(h, size - h.data_offset);
  for (const std::string& key : {std::string(), h.tensors.empty() ? std::string("absent") : h.tensors.front().name}) {
    try {
      const safetensor& t = select_safetensor(path, h, key, "logits", safetensor_suits_logits, safetensors_logits_wanted, "--logits-key");
      if (!safetensor_suits_logits(t)) fail("unsuitable logits '" + t.name + "' chosen");
      evaluate(data, h, t, size);
    } catch (const file_error&) {
    }
    try {
      const safetensor& t = select_safetensor(path, h, key, "targets", safetensor_suits_targets, safetensors_targets_wanted, "--targets-key");
      if (!safetensor_suits_targets(t)) fail("unsuitable targets '" + t.name + "' chosen");
    } catch (const file_error&) {
    }
  }
  return 0;
}
