#ifndef XENT_TOOLS_INPUTS_HPP
#define XENT_TOOLS_INPUTS_HPP

// Which tensor of which file xent-eval reads: the format of each input (.npy, .safetensors or raw),
// the tensor chosen in it, and every check of its type, shape and size against the file, before any
// data is read. docs/metrics.md lists the formats and the messages.

#include "npy.hpp"
#include "safetensors.hpp"
#include "tensor_file.hpp"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace xent_eval {

enum class file_format { npy, safetensors, raw };

inline const char* format_name(file_format f) {
  switch (f) {
    case file_format::npy: return "npy";
    case file_format::safetensors: return "safetensors";
    case file_format::raw: return "raw";
  }
  return "?";
}

/// What the command line says about the logits.
struct logits_request {
  std::string key;                   // --logits-key: the tensor of a .safetensors file
  std::optional<dtype> type;         // --dtype: bfloat16 bits in a .npy of uint16, or a raw file's type
  std::vector<std::uint64_t> shape;  // --shape N,C: the file is raw
};

/// The names --dtype takes.
inline std::optional<dtype> parse_dtype_name(const std::string& name) {
  if (name == "f16" || name == "float16") return dtype::float16;
  if (name == "bf16" || name == "bfloat16") return dtype::bfloat16;
  if (name == "f32" || name == "float32") return dtype::float32;
  if (name == "f64" || name == "float64") return dtype::float64;
  return std::nullopt;
}

namespace detail {

inline bool has_suffix(const std::string& path, const std::string& suffix) {
  if (path.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(path[path.size() - suffix.size() + i])) != suffix[i]) return false;
  return true;
}

inline bool starts_as_npy(const std::vector<unsigned char>& prefix) {
  return prefix.size() >= 6 && std::memcmp(prefix.data(), "\x93NUMPY", 6) == 0;
}

/// The format, from the file's name and first bytes: the .npy magic; a .safetensors name, or the '{'
/// that opens a safetensors header after its 8-byte length.
inline file_format detect_format(tensor_file& f, bool logits) {
  const std::vector<unsigned char> prefix = f.read_prefix(12);
  if (starts_as_npy(prefix)) return file_format::npy;
  if (has_suffix(f.path(), ".safetensors") || (prefix.size() >= 9 && prefix[8] == '{')) return file_format::safetensors;
  if (f.file_size() == 0) return file_format::npy;  // its reader says that the file is empty
  throw file_error(f.path() + ": not a .npy file (it does not start with \"\\x93NUMPY\" and two version bytes) nor a .safetensors file (an 8-byte "
                              "length, then a JSON object)" +
                   (logits ? "; raw logits need --dtype and --shape" : ""));
}

inline npy_header read_npy(tensor_file& f) {
  const std::vector<unsigned char> prefix = f.read_prefix(12);
  const std::uint64_t offset = npy_data_offset(f.path(), prefix.data(), prefix.size(), f.file_size());
  const std::vector<unsigned char> bytes = f.read_prefix(std::size_t(offset));
  if (bytes.size() < offset) throw file_error(f.path() + ": truncated in the .npy header (it shrank while being read)");
  return parse_npy_header(f.path(), bytes.data(), offset);
}

inline safetensors_header read_safetensors(tensor_file& f) {
#if !XENT_EVAL_SAFETENSORS
  throw safetensors_unsupported(f.path());
#else
  const std::vector<unsigned char> prefix = f.read_prefix(8);
  const std::uint64_t length = safetensors_header_length(f.path(), prefix.data(), prefix.size(), f.file_size());
  const std::vector<unsigned char> bytes = f.read_prefix(std::size_t(8 + length));
  if (bytes.size() < 8 + length) throw file_error(f.path() + ": truncated in the .safetensors header (it shrank while being read)");
  return parse_safetensors_header(f.path(), reinterpret_cast<const char*>(bytes.data()) + 8, std::size_t(length), f.file_size() - 8 - length);
#endif
}

/// A .npy descr of 2-byte unsigned integers: how bfloat16 bits travel in numpy, which has no bfloat16.
inline bool is_uint16(const std::string& descr) {
  return descr.size() == 3 && (descr[0] == '<' || descr[0] == '=' || descr[0] == '|') && descr.compare(1, 2, "u2") == 0;
}

inline std::string dtype_option(dtype t) { return std::string("--dtype ") + dtype_name(t); }

inline tensor_desc npy_tensor(const tensor_file& f, const npy_header& h, dtype t) {
  npy_check_size(f.path(), h, f.file_size() - h.data_offset, dtype_size(t));
  return {"", t, h.shape, h.data_offset, f.file_size() - h.data_offset};
}

inline tensor_desc safetensors_tensor(const safetensors_header& h, const safetensor& t, dtype type) {
  return {t.name, type, t.shape, h.data_offset + t.begin, t.end - t.begin};
}

}  // namespace detail

/// Opens the logits in f: finds their format and tensor, checks them, and selects them.
inline file_format open_logits(tensor_file& f, const logits_request& r) {
  using namespace detail;
  const std::string& path = f.path();
  if (!r.shape.empty()) {
    // Raw: the logits alone, little-endian, C order. A file with a header is refused: its header
    // knows the shape better than the command line.
    const std::vector<unsigned char> prefix = f.read_prefix(12);
    if (starts_as_npy(prefix) || has_suffix(path, ".safetensors"))
      throw file_error(path + ": --shape is for raw files, but this is a " + (starts_as_npy(prefix) ? ".npy" : ".safetensors") +
                       " file, whose header gives the shape; leave --shape out");
    const dtype t = r.type.value_or(dtype::float32);
    std::uint64_t bytes = dtype_size(t);
    for (const std::uint64_t d : r.shape) {
      if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / d) throw file_error(path + ": --shape overflows 64 bits");
      bytes *= d;
    }
    if (f.file_size() != bytes)
      throw file_error(path + ": " + dtype_option(t) + " --shape " + std::to_string(r.shape[0]) + "," + std::to_string(r.shape[1]) +
                       " needs a raw file of " + std::to_string(bytes) + " bytes (the logits alone: C order, little-endian, no header), but the file has " +
                       std::to_string(f.file_size()));
    f.select({"", t, r.shape, 0, bytes});
    return file_format::raw;
  }
  const file_format format = detect_format(f, true);
  if (format == file_format::safetensors) {
    const safetensors_header h = read_safetensors(f);
    const safetensor& t = select_safetensor(path, h, r.key, "logits", safetensor_suits_logits, safetensors_logits_wanted, "--logits-key");
    const dtype type = *safetensors_element_type(t.dtype);
    if (r.type && *r.type != type)
      throw file_error(path + ": " + dtype_option(*r.type) + " must agree with the file, but tensor '" + t.name + "' is " + t.dtype + " (" +
                       dtype_name(type) + "); leave --dtype out");
    f.select(safetensors_tensor(h, t, type));
    return format;
  }
  if (!r.key.empty())
    throw file_error(path + ": --logits-key names a tensor of a .safetensors file, but this is a .npy file, which holds one array; leave it out");
  const npy_header h = read_npy(f);
  dtype type = dtype::float32;
  if (r.type == dtype::bfloat16) {
    if (!is_uint16(h.descr))
      throw file_error(path + ": --dtype bfloat16 reads bfloat16 bits from a .npy of uint16 ('<u2'), but the file holds dtype '" + h.descr + "'" +
                       (h.descr.size() == 3 && h.descr[1] == 'f' ? "; leave --dtype out" : ""));
    type = dtype::bfloat16;
  } else {
    if (is_uint16(h.descr))
      throw file_error(path + ": logits must be float16, float32 or float64, but the file holds dtype '" + h.descr +
                       "' (bfloat16 bits as uint16? --dtype bf16 reads them so)");
    type = npy_element_type(path, h, {dtype::float16, dtype::float32, dtype::float64}, "logits");
    if (r.type && *r.type != type)
      throw file_error(path + ": " + dtype_option(*r.type) + " must agree with the file, but the file holds " + dtype_name(type) + " ('" + h.descr +
                       "'); leave --dtype out");
  }
  if (h.shape.size() != 2)
    throw file_error(path + ": logits must have shape (N, C), but the file holds shape " + detail::shape_string(h.shape));
  if (h.fortran_order)
    throw file_error(path + ": logits must be in C order (row-major); the file is in Fortran order (save np.ascontiguousarray(a))");
  f.select(npy_tensor(f, h, type));
  return format;
}

/// Opens the targets in f (key: --targets-key), as open_logits does the logits.
inline file_format open_targets(tensor_file& f, const std::string& key) {
  using namespace detail;
  const std::string& path = f.path();
  const file_format format = detect_format(f, false);
  if (format == file_format::safetensors) {
    const safetensors_header h = read_safetensors(f);
    const safetensor& t = select_safetensor(path, h, key, "targets", safetensor_suits_targets, safetensors_targets_wanted, "--targets-key");
    f.select(safetensors_tensor(h, t, *safetensors_element_type(t.dtype)));
    return format;
  }
  if (!key.empty())
    throw file_error(path + ": --targets-key names a tensor of a .safetensors file, but this is a .npy file, which holds one array; leave it out");
  const npy_header h = read_npy(f);
  const dtype type = npy_element_type(path, h, {dtype::int32, dtype::int64}, "targets");
  if (h.shape.size() != 1)
    throw file_error(path + ": targets must have shape (N,), but the file holds shape " + detail::shape_string(h.shape));
  f.select(npy_tensor(f, h, type));
  return format;
}

/// Opens a 1-D .npy of one of the `accepted` types in f: --weights (float32, float64) and
/// --sequence-lengths (int32, int64). `what` names the values in messages.
inline void open_npy_vector(tensor_file& f, const std::vector<dtype>& accepted, const std::string& what) {
  using namespace detail;
  const file_format format = detect_format(f, false);
  if (format != file_format::npy)
    throw file_error(f.path() + ": " + what + " must be a .npy file (a 1-D array), but this is a .safetensors file");
  const npy_header h = read_npy(f);
  const dtype type = npy_element_type(f.path(), h, accepted, what);
  if (h.shape.size() != 1) throw file_error(f.path() + ": " + what + " must have shape (N,), but the file holds shape " + detail::shape_string(h.shape));
  f.select(npy_tensor(f, h, type));
}

}  // namespace xent_eval

#endif
