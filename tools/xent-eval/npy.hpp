#ifndef XENT_TOOLS_NPY_HPP
#define XENT_TOOLS_NPY_HPP

// A small reader of NumPy's .npy format (format versions 1.0, 2.0 and 3.0), for xent-eval only: the
// header is parsed and checked against the file's size before any data is read (tensor_file.hpp
// then streams the data), and a writer of the same format for the tests and the examples.
//
// Format (numpy/lib/format.py): the magic "\x93NUMPY", a major and a minor version byte, the header
// length (2 bytes little-endian for 1.0, 4 bytes for 2.0 and 3.0), then the header, a Python dict
// literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (4096, 32000), } padded with
// spaces and ended by '\n'; then the data, C order unless fortran_order is True.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace xent_eval {

/// Any problem with a file: the message names the file and says what is wrong.
class file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Element types as stored in a file. float16 and bfloat16 logits are widened to float32 as they
/// are read; the evaluation never sees them.
enum class dtype { float16, bfloat16, float32, float64, int32, int64 };

inline const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::float16: return "float16";
    case dtype::bfloat16: return "bfloat16";
    case dtype::float32: return "float32";
    case dtype::float64: return "float64";
    case dtype::int32: return "int32";
    case dtype::int64: return "int64";
  }
  return "?";
}

inline std::size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::float16:
    case dtype::bfloat16: return 2;
    case dtype::float32:
    case dtype::int32: return 4;
    case dtype::float64:
    case dtype::int64: return 8;
  }
  return 1;
}

struct npy_header {
  std::string descr;                 // as written, e.g. "<f4"
  bool fortran_order = false;
  std::vector<std::uint64_t> shape;  // () for a scalar
  std::uint64_t data_offset = 0;     // bytes before the data
  int major = 0, minor = 0;
};

namespace detail {

/// The parser of the header's dict literal: just the grammar numpy writes (and hand-edited variants
/// with other spacing, double quotes or no trailing comma).
class dict_parser {
 public:
  dict_parser(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  npy_header parse() {
    npy_header h;
    bool has_descr = false, has_order = false, has_shape = false;
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        h.descr = string_literal();
        has_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
        has_order = true;
      } else if (key == "shape") {
        h.shape = tuple();
        has_shape = true;
      } else {
        fail("unknown key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip_space();
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++i_;
    if (!has_descr || !has_order || !has_shape)
      fail(std::string("the header lacks '") + (!has_descr ? "descr" : !has_order ? "fortran_order" : "shape") + "'");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw file_error(where_ + ": malformed .npy header (" + what + " at character " + std::to_string(i_) + " of \"" +
                     printable(s_) + "\")");
  }
  static std::string printable(const std::string& s) {
    std::string out;
    for (const char c : s) {
      if (c == '\n') break;
      out += (c >= 32 && c < 127) ? c : '?';
      if (out.size() > 120) return out + "...";
    }
    return out.erase(out.find_last_not_of(' ') + 1);  // the padding says nothing
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string_literal() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    const std::size_t end = s_.find(quote, i_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    skip_space();
    if (s_.compare(i_, 4, "True") == 0) return i_ += 4, true;
    if (s_.compare(i_, 5, "False") == 0) return i_ += 5, false;
    fail("expected True or False");
  }
  std::vector<std::uint64_t> tuple() {
    expect('(');
    std::vector<std::uint64_t> dims;
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') fail("expected a non-negative integer in the shape");
      std::uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const std::uint64_t digit = std::uint64_t(peek() - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail("a dimension overflows 64 bits");
        v = v * 10 + digit;
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2's long suffix
      dims.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip_space();
      if (peek() != ')') fail("expected ',' or ')' in the shape");
    }
    ++i_;
    return dims;
  }

  const std::string& s_;
  std::string where_;
  std::size_t i_ = 0;
};

inline std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace detail

/// The offset of the data in a .npy file of file_size bytes, from its first n bytes (n >= 12 unless
/// the file is shorter): checks the magic, the version and that the header fits in the file.
inline std::uint64_t npy_data_offset(const std::string& path, const unsigned char* prefix, std::size_t n, std::uint64_t file_size) {
  if (file_size == 0) throw file_error(path + ": the file is empty (0 bytes), not a .npy file");
  if (n < 8 || std::memcmp(prefix, "\x93NUMPY", 6) != 0)
    throw file_error(path + ": not a .npy file (it does not start with \"\\x93NUMPY\" and two version bytes)");
  const int major = prefix[6], minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0)
    throw file_error(path + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                     " is not supported (1.0, 2.0 and 3.0 are)");
  // The header length: 2 bytes little-endian in version 1.0, 4 bytes in 2.0 and 3.0.
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (n < 8 + len_bytes) throw file_error(path + ": truncated in the .npy header");
  std::uint64_t header_len = 0;
  for (std::size_t i = len_bytes; i-- > 0;) header_len = header_len * 256 + prefix[8 + i];
  const std::uint64_t offset = 8 + len_bytes + header_len;
  if (offset > file_size)
    throw file_error(path + ": truncated in the .npy header (it announces " + std::to_string(header_len) + " bytes of header, the file has " +
                     std::to_string(file_size) + " bytes in all)");
  return offset;
}

/// The header of a .npy file from its first `offset` bytes (offset = npy_data_offset(...)).
inline npy_header parse_npy_header(const std::string& path, const unsigned char* bytes, std::uint64_t offset) {
  const std::size_t text_at = bytes[6] == 1 ? 10 : 12;
  const std::string text(reinterpret_cast<const char*>(bytes) + text_at, std::size_t(offset) - text_at);
  npy_header h = detail::dict_parser(text, path).parse();
  h.major = bytes[6];
  h.minor = bytes[7];
  h.data_offset = offset;
  return h;
}

/// The element type, or a file_error naming the accepted ones (`what` says what the file holds).
inline dtype npy_element_type(const std::string& path, const npy_header& h, const std::vector<dtype>& accepted, const std::string& what) {
  const std::string& d = h.descr;
  std::string names;
  for (std::size_t i = 0; i < accepted.size(); ++i)
    names += std::string(i == 0 ? "" : i + 1 == accepted.size() ? " or " : ", ") + dtype_name(accepted[i]);
  if (d.size() == 3 && d[0] == '>' && d[2] != '1')
    throw file_error(path + ": " + what + " are big-endian ('" + d + "'); convert them with a.astype(a.dtype.newbyteorder('<'))");
  for (const dtype t : accepted) {
    // bfloat16 has no numpy type code: its bits come as uint16 (--dtype bf16 says so; main.cpp).
    const char* code = t == dtype::float16 ? "f2" : t == dtype::float32 ? "f4" : t == dtype::float64 ? "f8" : t == dtype::int32 ? "i4" : t == dtype::int64 ? "i8" : "";
    if (d.size() == 3 && (d[0] == '<' || d[0] == '=' || d[0] == '|') && d.compare(1, 2, code) == 0) return t;
  }
  throw file_error(path + ": " + what + " must be " + names + ", but the file holds dtype '" + d + "'");
}

/// Checks the data size against the header: truncated files and trailing bytes are both errors.
inline void npy_check_size(const std::string& path, const npy_header& h, std::uint64_t data_bytes, std::size_t item_size) {
  std::uint64_t items = 1;
  for (const std::uint64_t d : h.shape) {
    if (d != 0 && items > std::numeric_limits<std::uint64_t>::max() / d) throw file_error(path + ": the shape overflows 64 bits");
    items *= d;
  }
  if (items > std::numeric_limits<std::uint64_t>::max() / item_size) throw file_error(path + ": the shape overflows 64 bits");
  const std::uint64_t expected = items * item_size;
  if (data_bytes < expected)
    throw file_error(path + ": truncated: shape " + detail::shape_string(h.shape) + " needs " + std::to_string(expected) +
                     " bytes of data, but the file holds " + std::to_string(data_bytes));
  if (data_bytes > expected)
    throw file_error(path + ": " + std::to_string(data_bytes - expected) + " bytes follow the " + std::to_string(expected) +
                     " bytes of data that shape " + detail::shape_string(h.shape) + " announces");
}

/// Writes a .npy file (format 1.0, C order): for the tests' inputs and the examples' outputs.
inline void write_npy(const std::string& path, const std::string& descr, const std::vector<std::uint64_t>& shape, const void* data,
                      std::size_t bytes) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + detail::shape_string(shape) + ", }";
  // Pad so that the data start on a 64-byte boundary, as numpy does.
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) throw file_error(path + ": cannot create (" + std::strerror(errno) + ")");
  const unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(dict.size() & 0xff),
                                    static_cast<unsigned char>(dict.size() >> 8)};
  if (std::fwrite(prefix, 1, 10, f.get()) != 10 || std::fwrite(dict.data(), 1, dict.size(), f.get()) != dict.size() ||
      (bytes && std::fwrite(data, 1, bytes, f.get()) != bytes))
    throw file_error(path + ": write failed");
}

}  // namespace xent_eval

#endif
