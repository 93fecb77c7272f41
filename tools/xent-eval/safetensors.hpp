#ifndef XENT_TOOLS_SAFETENSORS_HPP
#define XENT_TOOLS_SAFETENSORS_HPP

// A reader of the .safetensors format, for xent-eval only: the header is parsed (with nlohmann-json)
// and every tensor's place checked against the file before any data is read; tensor_file.hpp then
// streams the chosen tensor.
//
// Format (huggingface/safetensors): an unsigned 64-bit little-endian length n, then n bytes of JSON
// (padded with spaces), {"NAME": {"dtype": "F16", "shape": [N, C], "data_offsets": [BEGIN, END]},
// ..., "__metadata__": {"key": "value"}}, then the data: each tensor little-endian, C order, at
// [BEGIN, END) of the bytes after the header. The tensors cover those bytes exactly, without holes
// or overlaps (the format's rule: nothing hides in a file), and never more than 100 MB of header.
//
// Without XENT_EVAL_SAFETENSORS (nlohmann-json not found at configure time) only the parts that need
// no JSON are here; safetensors_supported is false and the caller says so (safetensors_unsupported).

#include "npy.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#if XENT_EVAL_SAFETENSORS
#include <nlohmann/json.hpp>
#endif

namespace xent_eval {

struct safetensor {
  std::string name;
  std::string dtype;  // as the header names it: "F16", "BF16", ...
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets: relative to the first byte after the header
};

struct safetensors_header {
  std::uint64_t data_offset = 0;    // 8 + the header's length: where the data start in the file
  std::vector<safetensor> tensors;  // in the header's order
};

/// Whether this build reads .safetensors files (nlohmann-json was found when it was configured).
#if XENT_EVAL_SAFETENSORS
constexpr bool safetensors_supported = true;
#else
constexpr bool safetensors_supported = false;
#endif

inline file_error safetensors_unsupported(const std::string& path) {
  return file_error(path + ": a .safetensors file, but this xent-eval was built without .safetensors support (nlohmann-json was not found "
                           "when it was configured; Debian: nlohmann-json3-dev)");
}

/// safetensors' own limit: a longer header is a damaged (or hostile) file, not a model.
constexpr std::uint64_t safetensors_max_header = 100000000;

namespace detail {

struct safetensors_dtype {
  const char* name;
  unsigned bits;
};
// The dtypes of the format (safetensors 0.6), with the size of one element in bits.
inline constexpr safetensors_dtype safetensors_dtypes[] = {
    {"BOOL", 8}, {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6},
    {"I16", 16}, {"U16", 16}, {"F16", 16}, {"BF16", 16},   {"I32", 32},    {"U32", 32},    {"F32", 32}, {"F64", 64},    {"I64", 64},
    {"U64", 64}};

inline std::string in_quotes(const std::string& name) { return "'" + name + "'"; }

inline std::string shape_json(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline std::string offsets_text(const safetensor& t) { return "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]"; }

}  // namespace detail

/// The size in bits of one element of a safetensors dtype, 0 for a name the format does not know.
inline unsigned safetensors_dtype_bits(const std::string& name) {
  for (const auto& d : detail::safetensors_dtypes)
    if (name == d.name) return d.bits;
  return 0;
}

/// The element type xent-eval reads for a safetensors dtype, if it reads it at all.
inline std::optional<dtype> safetensors_element_type(const std::string& name) {
  if (name == "F16") return dtype::float16;
  if (name == "BF16") return dtype::bfloat16;
  if (name == "F32") return dtype::float32;
  if (name == "F64") return dtype::float64;
  if (name == "I32") return dtype::int32;
  if (name == "I64") return dtype::int64;
  return std::nullopt;
}

/// The header's length from the file's first n bytes, checked against the file's size.
inline std::uint64_t safetensors_header_length(const std::string& path, const unsigned char* prefix, std::size_t n, std::uint64_t file_size) {
  if (file_size < 8 || n < 8)
    throw file_error(path + ": truncated: a .safetensors file must start with an 8-byte header length, but the file has " +
                     std::to_string(file_size) + " bytes");
  std::uint64_t length = 0;
  for (std::size_t i = 8; i-- > 0;) length = length << 8 | prefix[i];
  if (length > safetensors_max_header)
    throw file_error(path + ": the .safetensors header length must be at most " + std::to_string(safetensors_max_header) +
                     " bytes (the format's limit), but got " + std::to_string(length));
  if (length > file_size - 8)
    throw file_error(path + ": the .safetensors header length must fit in the file (" + std::to_string(file_size - 8) +
                     " bytes after the 8 bytes of the length), but got " + std::to_string(length));
  return length;
}

#if XENT_EVAL_SAFETENSORS
namespace detail {

/// What a JSON value is, for messages: its kind, and the text of a short one.
inline std::string json_kind(const nlohmann::ordered_json& v) {
  std::string text = v.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " " + text;
}

}  // namespace detail

/// Parses the header's JSON text (`length` bytes) and checks every tensor against the data_size
/// bytes of data that follow it. Each fault is a file_error naming the file, what the format wants
/// and what the file holds.
inline safetensors_header parse_safetensors_header(const std::string& path, const char* text, std::size_t length, std::uint64_t data_size) {
  using json = nlohmann::ordered_json;  // the header's order, for the listings in messages
  using detail::in_quotes;
  // A name twice would make --logits-key ambiguous; nlohmann keeps the last one silently.
  std::set<std::string> names;
  std::string duplicate;
  const json::parser_callback_t note_names = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && duplicate.empty() && !names.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + length, note_names);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond a double (1e999), which JSON allows.
    std::string what = e.what();
    const std::size_t tag = what.find("] ");  // "[json.exception.parse_error.101] parse error at ..."
    if (tag != std::string::npos) what = what.substr(tag + 2);
    throw file_error(path + ": the .safetensors header must be JSON, but got a " + what);
  }
  if (!header.is_object()) throw file_error(path + ": the .safetensors header must be a JSON object of tensors, but got " + detail::json_kind(header));
  if (!duplicate.empty())
    throw file_error(path + ": the .safetensors header must name each tensor once, but names " + in_quotes(duplicate) + " more than once");

  safetensors_header h;
  h.data_offset = 8 + length;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      // safetensors' own rule: a map of strings to strings.
      bool strings = entry.is_object();
      for (const auto& value : entry) strings = strings && value.is_string();
      if (!strings) throw file_error(path + ": \"__metadata__\" must be an object of strings, but got " + detail::json_kind(entry));
      continue;
    }
    const std::string what = path + ": tensor " + in_quotes(name);
    if (!entry.is_object())
      throw file_error(what + " must be an object with \"dtype\", \"shape\" and \"data_offsets\", but got " + detail::json_kind(entry));
    safetensor t;
    t.name = name;
    const auto dtype_at = entry.find("dtype");
    if (dtype_at == entry.end() || !dtype_at->is_string())
      throw file_error(what + " must have a \"dtype\" string, but got " + (dtype_at == entry.end() ? std::string("none") : detail::json_kind(*dtype_at)));
    t.dtype = dtype_at->get<std::string>();
    const unsigned bits = safetensors_dtype_bits(t.dtype);
    if (bits == 0) {
      std::string known;
      for (const auto& d : detail::safetensors_dtypes) known += std::string(known.empty() ? "" : ", ") + d.name;
      throw file_error(what + ": the dtype must be one of the format's (" + known + "), but got " + in_quotes(t.dtype));
    }
    const auto shape_at = entry.find("shape");
    bool shape_ok = shape_at != entry.end() && shape_at->is_array();
    if (shape_ok)
      for (const auto& d : *shape_at) shape_ok = shape_ok && d.is_number_unsigned();
    if (!shape_ok)
      throw file_error(what + " must have a \"shape\" list of non-negative integers, but got " +
                       (shape_at == entry.end() ? std::string("none") : detail::json_kind(*shape_at)));
    for (const auto& d : *shape_at) t.shape.push_back(d.get<std::uint64_t>());
    const auto offsets_at = entry.find("data_offsets");
    const bool offsets_ok = offsets_at != entry.end() && offsets_at->is_array() && offsets_at->size() == 2 &&
                            (*offsets_at)[0].is_number_unsigned() && (*offsets_at)[1].is_number_unsigned() &&
                            (*offsets_at)[0].get<std::uint64_t>() <= (*offsets_at)[1].get<std::uint64_t>();
    if (!offsets_ok)
      throw file_error(what + " must have \"data_offsets\" [BEGIN, END] with integers 0 <= BEGIN <= END, but got " +
                       (offsets_at == entry.end() ? std::string("none") : detail::json_kind(*offsets_at)));
    t.begin = (*offsets_at)[0].get<std::uint64_t>();
    t.end = (*offsets_at)[1].get<std::uint64_t>();
    if (t.end > data_size)
      throw file_error(what + ": its data_offsets must lie within the " + std::to_string(data_size) + " bytes of data after the header, but got " +
                       detail::offsets_text(t));
    std::uint64_t elements = 1;
    for (const std::uint64_t d : t.shape) {
      if (d != 0 && elements > std::numeric_limits<std::uint64_t>::max() / d)
        throw file_error(what + ": its shape " + detail::shape_json(t.shape) + " overflows 64 bits");
      elements *= d;
    }
    if (elements > std::numeric_limits<std::uint64_t>::max() / bits)
      throw file_error(what + ": its shape " + detail::shape_json(t.shape) + " overflows 64 bits");
    const std::uint64_t bit_size = elements * bits;
    if (bit_size % 8 != 0)
      throw file_error(what + ": " + std::to_string(elements) + " elements of " + t.dtype + " must fill whole bytes, but take " +
                       std::to_string(bit_size) + " bits");
    if (t.end - t.begin != bit_size / 8)
      throw file_error(what + ": dtype " + t.dtype + " and shape " + detail::shape_json(t.shape) + " need " + std::to_string(bit_size / 8) +
                       " bytes, but its data_offsets " + detail::offsets_text(t) + " hold " + std::to_string(t.end - t.begin));
    h.tensors.push_back(std::move(t));
  }

  // Sorted by place, each tensor must start where the one before it ends.
  std::vector<const safetensor*> by_place;
  for (const safetensor& t : h.tensors) by_place.push_back(&t);
  std::sort(by_place.begin(), by_place.end(), [](const safetensor* a, const safetensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t covered = 0;
  const safetensor* previous = nullptr;
  for (const safetensor* t : by_place) {
    if (t->begin < covered)
      throw file_error(path + ": tensors must not overlap, but " + in_quotes(previous->name) + " " + detail::offsets_text(*previous) + " and " +
                       in_quotes(t->name) + " " + detail::offsets_text(*t) + " do");
    if (t->begin > covered)
      throw file_error(path + ": every byte of the data must belong to a tensor, but bytes [" + std::to_string(covered) + ", " +
                       std::to_string(t->begin) + ") belong to none");
    covered = t->end;
    if (t->end > t->begin) previous = t;
  }
  if (covered != data_size)
    throw file_error(path + ": every byte of the data must belong to a tensor, but the last " + std::to_string(data_size - covered) +
                     " of its " + std::to_string(data_size) + " bytes belong to none");
  return h;
}
#endif

/// What xent-eval takes for logits and for targets in a .safetensors file, and how it says so.
inline bool safetensor_suits_logits(const safetensor& t) {
  const std::optional<dtype> e = safetensors_element_type(t.dtype);
  return t.shape.size() == 2 && e && (*e == dtype::float16 || *e == dtype::bfloat16 || *e == dtype::float32 || *e == dtype::float64);
}
inline bool safetensor_suits_targets(const safetensor& t) { return t.shape.size() == 1 && (t.dtype == "I32" || t.dtype == "I64"); }
constexpr const char* safetensors_logits_wanted = "a 2-D tensor of F16, BF16, F32 or F64";
constexpr const char* safetensors_targets_wanted = "a 1-D tensor of I32 or I64";

/// One line per tensor, at most `limit` of them, for the messages that list a file's tensors.
inline std::string safetensors_listing(const safetensors_header& h, std::size_t limit = 12) {
  std::string out;
  for (std::size_t i = 0; i < h.tensors.size() && i < limit; ++i) {
    const safetensor& t = h.tensors[i];
    out += (i ? ", " : "") + detail::in_quotes(t.name) + " (" + t.dtype + " " + detail::shape_json(t.shape) + ")";
  }
  if (h.tensors.size() > limit) out += ", and " + std::to_string(h.tensors.size() - limit) + " more";
  return h.tensors.empty() ? "no tensor at all" : out;
}

/// The tensor for a role ("logits", "targets"): the one named `key` if given, else the only one that
/// `suits`. `wanted` says what suits, `option` names the key's option, for the messages.
template <class Suits>
const safetensor& select_safetensor(const std::string& path, const safetensors_header& h, const std::string& key, const std::string& role,
                                    Suits&& suits, const std::string& wanted, const std::string& option) {
  using detail::in_quotes;
  if (!key.empty()) {
    for (const safetensor& t : h.tensors) {
      if (t.name != key) continue;
      if (!suits(t))
        throw file_error(path + ": the " + role + " must be " + wanted + ", but tensor " + in_quotes(t.name) + " is " + t.dtype + " " +
                         detail::shape_json(t.shape));
      return t;
    }
    throw file_error(path + ": " + option + " " + in_quotes(key) + " must name a tensor of the file, but the file holds " + safetensors_listing(h));
  }
  std::vector<const safetensor*> fits;
  for (const safetensor& t : h.tensors)
    if (suits(t)) fits.push_back(&t);
  if (fits.size() == 1) return *fits.front();
  if (fits.empty())
    throw file_error(path + ": the " + role + " must be " + wanted + ", but the file holds " + safetensors_listing(h));
  std::string names;
  for (std::size_t i = 0; i < fits.size() && i < 12; ++i) names += (i ? ", " : "") + in_quotes(fits[i]->name);
  if (fits.size() > 12) names += ", and " + std::to_string(fits.size() - 12) + " more";
  throw file_error(path + ": " + std::to_string(fits.size()) + " tensors could be the " + role + " (" + names + "); choose one with " + option +
                   " NAME");
}

}  // namespace xent_eval

#endif
