#ifndef XENT_TOOLS_NPY_HPP
#define XENT_TOOLS_NPY_HPP

// A small reader of NumPy's .npy format (format versions 1.0, 2.0 and 3.0), for xent-eval only: the
// header is parsed and checked against the file's size before any data is read, then the data are
// read sequentially in pieces of the caller's choosing, so that a file larger than memory streams.
//
// Format (numpy/lib/format.py): the magic "\x93NUMPY", a major and a minor version byte, the header
// length (2 bytes little-endian for 1.0, 4 bytes for 2.0 and 3.0), then the header, a Python dict
// literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (4096, 32000), } padded with
// spaces and ended by '\n'; then the data, C order unless fortran_order is True.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef _WIN32
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#endif

namespace xent_eval {

/// Any problem with a file: the message names the file and says what is wrong.
class file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class dtype { float32, float64, int32, int64 };

inline const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::float32: return "float32";
    case dtype::float64: return "float64";
    case dtype::int32: return "int32";
    case dtype::int64: return "int64";
  }
  return "?";
}

inline std::size_t dtype_size(dtype t) { return t == dtype::float32 || t == dtype::int32 ? 4 : 8; }

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
  for (const dtype t : accepted) names += std::string(names.empty() ? "" : " or ") + dtype_name(t);
  if (d.size() == 3 && d[0] == '>' && d[2] != '1')
    throw file_error(path + ": " + what + " are big-endian ('" + d + "'); convert them with a.astype(a.dtype.newbyteorder('<'))");
  for (const dtype t : accepted) {
    const char* code = t == dtype::float32 ? "f4" : t == dtype::float64 ? "f8" : t == dtype::int32 ? "i4" : "i8";
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

#ifndef _WIN32
namespace detail {

/// A mapped file that shrinks while it is read (another process truncates it) raises SIGBUS on the
/// first load from a page past its new end, which kills the process. This handler puts zero pages
/// in place of the rest of the mapping instead, so that the load completes, and flags the mapping;
/// its readers then report the truncation (npy_file::check_intact). A fault anywhere else gets the
/// action it had before the handler was installed.
class sigbus_guard {
 public:
  /// Watches [begin, begin + size) until unwatch(); false if a mapping is watched already (the
  /// caller then reads the file rather than mapping it unguarded).
  static bool watch(const unsigned char* begin, std::size_t size) {
    static const bool installed = install();
    std::uintptr_t idle = 0;
    if (!installed || !begin_.compare_exchange_strong(idle, reinterpret_cast<std::uintptr_t>(begin))) return false;
    faulted_ = false;
    end_ = reinterpret_cast<std::uintptr_t>(begin) + size;
    return true;
  }
  static bool faulted() { return faulted_; }
  static void unwatch() {
    end_ = 0;
    begin_ = 0;
  }

 private:
  static bool install() {
    page_ = std::uintptr_t(sysconf(_SC_PAGESIZE));
    struct sigaction action {};
    action.sa_sigaction = &on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGBUS, &action, &previous_) == 0;
  }

  static void on_sigbus(int number, siginfo_t* info, void*) {
    const bool fault = info->si_code > 0;  // not sent by kill()
    const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const std::uintptr_t begin = begin_, end = end_;
    // mmap is not on POSIX's list of async-signal-safe functions, but on Linux and the BSDs it is
    // the bare system call (Wayland's shared-memory pools survive truncation the same way).
    const std::uintptr_t page = at / page_ * page_;
    if (fault && at >= begin && at < end &&
        mmap(reinterpret_cast<void*>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
      faulted_ = true;
      return;
    }
    // Not ours: back to the previous action. A fault repeats under it once this returns; a SIGBUS
    // sent by kill() is raised again, to be delivered then.
    sigaction(SIGBUS, &previous_, nullptr);
    if (!fault) raise(number);
  }

  static inline std::atomic<std::uintptr_t> begin_{0}, end_{0};
  static inline std::atomic<bool> faulted_{false};
  static inline struct sigaction previous_ {};
  static inline std::uintptr_t page_ = 4096;
};

}  // namespace detail
#endif

/// An open .npy file whose header has been read and checked against the file size.
class npy_file {
 public:
  explicit npy_file(std::string path) : path_(std::move(path)) {
    open_regular_file();
    // Large sequential reads go straight to the caller's buffer; stdio's own buffer would add a copy.
    std::setvbuf(file_.get(), nullptr, _IONBF, 0);
    read_header();
  }

  const std::string& path() const { return path_; }
  const npy_header& header() const { return header_; }
  std::uint64_t file_size() const { return file_size_; }
  std::uint64_t data_bytes() const { return file_size_ - header_.data_offset; }

  dtype element_type(const std::vector<dtype>& accepted, const std::string& what) const {
    return npy_element_type(path_, header_, accepted, what);
  }
  void check_size(std::size_t item_size) const { npy_check_size(path_, header_, data_bytes(), item_size); }

  /// Reads exactly `bytes` bytes of data into `out`, continuing where the last read stopped.
  void read(void* out, std::size_t bytes) {
    if (std::fread(out, 1, bytes, file_.get()) == bytes) return;
    if (std::ferror(file_.get())) throw file_error(path_ + ": read failed (" + std::strerror(errno) + ")");
    throw truncated_while_read();
  }

  /// Reads data bytes [begin, begin + bytes) into `out`, apart from read()'s position: several
  /// workers read at once.
  void read_at(void* out, std::size_t bytes, std::uint64_t begin) const {
#ifndef _WIN32
    for (std::size_t done = 0; done < bytes;) {
      const ssize_t n = pread(fileno(file_.get()), static_cast<char*>(out) + done, bytes - done, off_t(header_.data_offset + begin + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw file_error(path_ + ": read failed (" + std::strerror(errno) + ")");
      if (n == 0) throw truncated_while_read();
      done += std::size_t(n);
    }
#else
    (void)out, (void)bytes, (void)begin;
    throw file_error(path_ + ": positional reads are unavailable here");
#endif
  }

  /// The data memory-mapped (read-only), or nullptr where mapping is unavailable (not POSIX, the
  /// mapping failed, another file is mapped already) or the data are not aligned for their element
  /// type: read() then. Mapping reads the page cache in place, without read()'s copy into a buffer.
  const unsigned char* map_data(std::size_t item_size) {
#ifndef _WIN32
    if (!map_ && header_.data_offset % item_size == 0 && data_bytes() > 0) {
      const std::size_t size = std::size_t(file_size_);
      void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fileno(file_.get()), 0);
      if (p != MAP_FAILED && detail::sigbus_guard::watch(static_cast<unsigned char*>(p), size)) {
        map_ = std::unique_ptr<unsigned char, unmapper>(static_cast<unsigned char*>(p), unmapper{size});
        madvise(p, size, MADV_SEQUENTIAL);  // read ahead on a cold cache
      } else if (p != MAP_FAILED) {
        munmap(p, size);
      }
    }
    return map_ ? map_.get() + header_.data_offset : nullptr;
#else
    (void)item_size;
    return nullptr;
#endif
  }

  /// Drops the mapped data bytes [begin, end), a worker's chunk, from this process (they stay in
  /// the page cache), so that memory stays at about a chunk per worker. A fault maps more than the
  /// page asked for (fault-around, a whole large folio), pages of the neighbouring chunks too, which
  /// their own workers may have dropped already; but never beyond the page table that maps the page.
  /// So whole page-table spans are dropped: nothing mapped for this chunk stays behind, and a
  /// neighbour that loses pages of its chunk with them faults them in again.
  void release_mapped(std::uint64_t begin, std::uint64_t end) {
#ifndef _WIN32
    if (!map_) return;
    const std::uint64_t page = std::uint64_t(sysconf(_SC_PAGESIZE));
    const std::uint64_t span = page * (page / sizeof(void*));  // the pages of one page table: 2 MiB for 4 KiB pages
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(map_.get()), limit = base + map_.get_deleter().size;
    const std::uintptr_t from = std::max(base, std::uintptr_t((base + header_.data_offset + begin) / span * span));
    const std::uintptr_t to = std::min(limit, std::uintptr_t((base + header_.data_offset + end + span - 1) / span * span));
    madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
#else
    (void)begin;
    (void)end;
#endif
  }

  /// Throws if the file shrank while its mapped data were read up to data byte `end`: pages past
  /// its new end read as zeros (the SIGBUS guard's, or the kernel's in the file's last page).
  void check_intact(std::uint64_t end) const {
#ifndef _WIN32
    struct stat st {};
    if ((map_ && detail::sigbus_guard::faulted()) ||
        (fstat(fileno(file_.get()), &st) == 0 && std::uint64_t(st.st_size) < header_.data_offset + end))
      throw truncated_while_read();
#else
    (void)end;
#endif
  }

  /// Back to the first byte of data, for another pass.
  void rewind() {
    if (seek(std::int64_t(header_.data_offset), SEEK_SET) != 0) throw file_error(path_ + ": cannot seek back to the data");
  }

 private:
  void open_regular_file() {
#ifndef _WIN32
    // O_NONBLOCK: opening a FIFO would wait for a writer, forever if there is none. It has no effect
    // on the reads of a regular file, the only kind accepted.
    const int fd = open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw file_error(path_ + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      const int error = errno;
      close(fd);
      throw file_error(path_ + ": cannot stat (" + std::strerror(error) + ")");
    }
    if (!S_ISREG(st.st_mode)) {
      close(fd);
      const char* kind = S_ISFIFO(st.st_mode)  ? "a FIFO (named pipe)"
                         : S_ISCHR(st.st_mode) ? "a character device"
                         : S_ISBLK(st.st_mode) ? "a block device"
                         : S_ISDIR(st.st_mode) ? "a directory"
                         : S_ISSOCK(st.st_mode) ? "a socket"
                                                : "not a regular file";
      throw file_error(path_ + ": not a regular file but " + kind + "; xent-eval reads .npy files, which it seeks in and maps");
    }
    file_.reset(fdopen(fd, "rb"));
    if (!file_) {
      const int error = errno;
      close(fd);
      throw file_error(path_ + ": cannot open (" + std::strerror(error) + ")");
    }
    file_size_ = std::uint64_t(st.st_size);
#else
    file_.reset(std::fopen(path_.c_str(), "rb"));
    if (!file_) throw file_error(path_ + ": cannot open (" + std::strerror(errno) + ")");
    if (seek(0, SEEK_END) != 0) throw file_error(path_ + ": cannot seek (not a regular file?)");
    const std::int64_t end = tell();
    if (end < 0) throw file_error(path_ + ": cannot tell its size");
    file_size_ = std::uint64_t(end);
    std::rewind(file_.get());
#endif
  }

  /// The file was shorter than its header says when the data were read, after the size check at
  /// open passed: something truncated it meanwhile.
  file_error truncated_while_read() const {
    std::string now = "?";
#ifndef _WIN32
    struct stat st {};
    if (fstat(fileno(file_.get()), &st) == 0) now = std::to_string(st.st_size);
#endif
    return file_error(path_ + ": truncated while being read: it had " + std::to_string(file_size_) + " bytes when opened and has " + now +
                      " now (shape " + detail::shape_string(header_.shape) + " needs " + std::to_string(data_bytes()) +
                      " bytes of data)");
  }

  void read_header() {
    unsigned char prefix[12];
    const std::size_t n = std::fread(prefix, 1, sizeof prefix, file_.get());
    const std::uint64_t offset = npy_data_offset(path_, prefix, n, file_size_);
    std::vector<unsigned char> bytes(static_cast<std::size_t>(offset));
    std::rewind(file_.get());
    read(bytes.data(), bytes.size());
    header_ = parse_npy_header(path_, bytes.data(), offset);
  }

  // 64-bit offsets everywhere (std::fseek takes a long, 32 bits on some platforms).
  int seek(std::int64_t offset, int whence) {
#ifdef _WIN32
    return _fseeki64(file_.get(), offset, whence);
#else
    return fseeko(file_.get(), off_t(offset), whence);
#endif
  }
  std::int64_t tell() {
#ifdef _WIN32
    return _ftelli64(file_.get());
#else
    return std::int64_t(ftello(file_.get()));
#endif
  }

  struct closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  struct unmapper {
    std::size_t size;
    void operator()(unsigned char* p) const {
#ifndef _WIN32
      detail::sigbus_guard::unwatch();
      munmap(p, size);
#else
      (void)p;
#endif
    }
  };
  std::string path_;
  std::unique_ptr<std::FILE, closer> file_;
  std::unique_ptr<unsigned char, unmapper> map_{nullptr, unmapper{0}};
  std::uint64_t file_size_ = 0;
  npy_header header_;
};

/// Writes a .npy file (format 1.0, C order): for tests and the example generator's C++ twin.
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
