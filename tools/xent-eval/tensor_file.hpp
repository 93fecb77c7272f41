#ifndef XENT_TOOLS_TENSOR_FILE_HPP
#define XENT_TOOLS_TENSOR_FILE_HPP

// One tensor of a file, streamed: xent-eval's reading of the logits and targets whatever the format
// (.npy, .safetensors, raw). The format's reader (npy.hpp, safetensors.hpp, inputs.hpp) finds where
// the tensor lies; this class reads it, sequentially, at an offset, or memory-mapped, and catches a
// file that shrinks while it is read.

#include "npy.hpp"

#include <Eigen/Core>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define XENT_EVAL_F16C_DISPATCH 1
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
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

/// Where a tensor lies in its file and what it holds.
struct tensor_desc {
  std::string name;  // the tensor's key in a .safetensors file; empty for .npy and raw files
  dtype type = dtype::float32;
  std::vector<std::uint64_t> shape;
  std::uint64_t offset = 0;  // of its first byte in the file
  std::uint64_t bytes = 0;   // of data
};

/// Widens n bfloat16 values to float32: their bits are a float32's upper half, so a shift, which
/// compilers vectorise (4x faster than Eigen 3.4's cast<float>(), which converts one by one).
inline void widen(const Eigen::bfloat16* in, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    const std::uint32_t wide = std::uint32_t(bits) << 16;
    std::memcpy(out + i, &wide, sizeof wide);
  }
}

namespace detail {
#if XENT_EVAL_F16C_DISPATCH
// Compiled for F16C whatever the build's flags, chosen at run time by the processor: an xent-eval
// built for any x86-64 gets the fast path on the machines that have it. The F16C bit is read from
// CPUID itself: Clang 14's __builtin_cpu_supports does not know "f16c" (AVX's covers the OS's
// saving of the registers).
inline bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

__attribute__((target("avx,f16c"))) inline void widen_f16c(const Eigen::half* in, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
}
#endif
}  // namespace detail

/// Widens n float16 values to float32, 8 at a time where the processor has F16C (15x faster than
/// Eigen 3.4's cast<float>() on a chunk in cache), one by one with Eigen's conversion elsewhere. Both
/// are exact; only a signalling NaN comes out quiet (xent_eval_inputs widen-check holds the two
/// paths to each other on all 65536 values).
inline void widen(const Eigen::half* in, float* out, std::size_t n) {
  std::size_t i = 0;
#if XENT_EVAL_F16C_DISPATCH
  static const bool f16c = detail::has_f16c();
  if (f16c) {
    i = n / 8 * 8;
    detail::widen_f16c(in, out, i);
  }
#endif
  for (; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

#ifndef _WIN32
namespace detail {

/// A mapped file that shrinks while it is read (another process truncates it) raises SIGBUS on the
/// first load from a page past its new end, which kills the process. This handler puts zero pages
/// in place of the rest of the mapping instead, so that the load completes, and flags the mapping;
/// its readers then report the truncation (tensor_file::check_intact). A fault anywhere else gets the
/// action it had before the handler was installed.
class sigbus_guard {
 public:
  static constexpr int slots = 4;  // mappings watched at once (xent-eval compare maps two files)

  /// Watches [begin, begin + size) until unwatch(slot); the slot, or -1 if every slot is taken (the
  /// caller then reads the file rather than mapping it unguarded).
  static int watch(const unsigned char* begin, std::size_t size) {
    static const bool installed = install();
    if (!installed) return -1;
    for (int i = 0; i < slots; ++i) {
      std::uintptr_t idle = 0;
      if (!begin_[i].compare_exchange_strong(idle, reinterpret_cast<std::uintptr_t>(begin))) continue;
      faulted_[i] = false;
      end_[i] = reinterpret_cast<std::uintptr_t>(begin) + size;
      return i;
    }
    return -1;
  }
  static bool faulted(int slot) { return slot >= 0 && faulted_[slot]; }
  static void unwatch(int slot) {
    if (slot < 0) return;
    end_[slot] = 0;
    begin_[slot] = 0;
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
    // mmap is not on POSIX's list of async-signal-safe functions, but on Linux and the BSDs it is
    // the bare system call (Wayland's shared-memory pools survive truncation the same way).
    const std::uintptr_t page = at / page_ * page_;
    for (int i = 0; fault && i < slots; ++i) {
      const std::uintptr_t begin = begin_[i], end = end_[i];
      if (at >= begin && at < end &&
          mmap(reinterpret_cast<void*>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
        faulted_[i] = true;
        return;
      }
    }
    // Not ours: back to the previous action. A fault repeats under it once this returns; a SIGBUS
    // sent by kill() is raised again, to be delivered then.
    sigaction(SIGBUS, &previous_, nullptr);
    if (!fault) raise(number);
  }

  static inline std::atomic<std::uintptr_t> begin_[slots] = {}, end_[slots] = {};
  static inline std::atomic<bool> faulted_[slots] = {};
  static inline struct sigaction previous_ {};
  static inline std::uintptr_t page_ = 4096;
};

}  // namespace detail
#endif

/// An open regular file and the one tensor of it that is read (select() says which, once its format's
/// header has been read with read_prefix() and checked against file_size()).
class tensor_file {
 public:
  explicit tensor_file(std::string path) : path_(std::move(path)) {
    open_regular_file();
    // Large sequential reads go straight to the caller's buffer; stdio's own buffer would add a copy.
    std::setvbuf(file_.get(), nullptr, _IONBF, 0);
  }

  const std::string& path() const { return path_; }
  std::uint64_t file_size() const { return file_size_; }
  const tensor_desc& tensor() const { return tensor_; }

  /// The file's first `n` bytes, or all of them if it is shorter: the format's header.
  std::vector<unsigned char> read_prefix(std::size_t n) {
    std::vector<unsigned char> bytes(static_cast<std::size_t>(std::min<std::uint64_t>(n, file_size_)));
    std::rewind(file_.get());
    const std::size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), file_.get());
    if (std::ferror(file_.get())) throw file_error(path_ + ": read failed (" + std::strerror(errno) + ")");
    bytes.resize(got);  // shorter: it shrank since it was opened; the format's checks say so
    return bytes;
  }

  /// The tensor the reads below refer to (its offset and size checked against the file by the caller).
  void select(tensor_desc t) {
    tensor_ = std::move(t);
    rewind();
  }

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
      const ssize_t n = pread(fileno(file_.get()), static_cast<char*>(out) + done, bytes - done, off_t(tensor_.offset + begin + done));
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
  /// mapping failed, sigbus_guard::slots files are mapped already) or the data are not aligned for their element
  /// type: read() then. Mapping reads the page cache in place, without read()'s copy into a buffer.
  const unsigned char* map_data(std::size_t item_size) {
#ifndef _WIN32
    if (!map_ && tensor_.offset % item_size == 0 && tensor_.bytes > 0) {
      const std::size_t size = std::size_t(file_size_);
      void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fileno(file_.get()), 0);
      const int slot = p != MAP_FAILED ? detail::sigbus_guard::watch(static_cast<unsigned char*>(p), size) : -1;
      if (slot >= 0) {
        map_ = std::unique_ptr<unsigned char, unmapper>(static_cast<unsigned char*>(p), unmapper{size, slot});
        madvise(p, size, MADV_SEQUENTIAL);  // read ahead on a cold cache
      } else if (p != MAP_FAILED) {
        munmap(p, size);
      }
    }
    return map_ ? map_.get() + tensor_.offset : nullptr;
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
    const std::uintptr_t from = std::max(base, std::uintptr_t((base + tensor_.offset + begin) / span * span));
    const std::uintptr_t to = std::min(limit, std::uintptr_t((base + tensor_.offset + end + span - 1) / span * span));
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
    if ((map_ && detail::sigbus_guard::faulted(map_.get_deleter().slot)) ||
        (fstat(fileno(file_.get()), &st) == 0 && std::uint64_t(st.st_size) < tensor_.offset + end))
      throw truncated_while_read();
#else
    (void)end;
#endif
  }

  /// Back to the first byte of data, for another pass.
  void rewind() {
    if (seek(std::int64_t(tensor_.offset), SEEK_SET) != 0) throw file_error(path_ + ": cannot seek back to the data");
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
      throw file_error(path_ + ": not a regular file but " + kind + "; xent-eval reads files, which it seeks in and maps");
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
                      " now (shape " + detail::shape_string(tensor_.shape) + " needs " + std::to_string(tensor_.bytes) +
                      " bytes of data)");
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
    int slot;
    void operator()(unsigned char* p) const {
#ifndef _WIN32
      detail::sigbus_guard::unwatch(slot);
      munmap(p, size);
#else
      (void)p;
#endif
    }
  };
  std::string path_;
  std::unique_ptr<std::FILE, closer> file_;
  std::unique_ptr<unsigned char, unmapper> map_{nullptr, unmapper{0, -1}};
  std::uint64_t file_size_ = 0;
  tensor_desc tensor_;
};

}  // namespace xent_eval

#endif
