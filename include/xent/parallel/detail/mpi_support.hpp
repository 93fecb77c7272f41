#ifndef XENT_PARALLEL_DETAIL_MPI_SUPPORT_HPP
#define XENT_PARALLEL_DETAIL_MPI_SUPPORT_HPP

// Everything xent says to MPI: the predefined datatype of a C++ number, the record's derived
// datatype and merge op (created and freed around each call: both are local, cheap operations, and
// nothing outlives MPI_Finalize), and return codes turned into exceptions.

#include "../../core/error.hpp"
#include "vocab_record.hpp"

#if defined(__has_include)
#if !__has_include(<mpi.h>)
#error "xent/parallel/mpi.hpp needs an MPI implementation's <mpi.h>: link xent::mpi (find_package(xent COMPONENTS mpi)), or compile with mpicxx"
#endif
#endif
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace xent::parallel {

/// Thrown when an MPI call returns an error code, which happens only on a communicator whose error
/// handler returns errors (MPI_ERRORS_RETURN); with MPI's default handler the job aborts instead.
class mpi_error : public std::runtime_error {
 public:
  mpi_error(const std::string& call, int code) : std::runtime_error(describe(call, code)), code_(code) {}
  /// The MPI error code.
  int code() const noexcept { return code_; }

 private:
  static std::string describe(const std::string& call, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
    return "xent: " + call + " failed with MPI error " + std::to_string(code) + (length ? ": " + std::string(text, std::size_t(length)) : "");
  }
  int code_;
};

namespace detail {

inline void check_mpi(int code, const char* call) {
  if (code != MPI_SUCCESS) throw mpi_error(call, code);
}

/// MPI's predefined datatype for a C++ arithmetic type; void when there is none.
template <class T>
MPI_Datatype mpi_type_of() {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, "MPI reduces arithmetic types only");
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, long double>) return MPI_LONG_DOUBLE;
  else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  else if constexpr (std::is_same_v<T, signed char>) return MPI_SIGNED_CHAR;
  else if constexpr (std::is_same_v<T, unsigned char>) return MPI_UNSIGNED_CHAR;
  else if constexpr (std::is_same_v<T, short>) return MPI_SHORT;
  else if constexpr (std::is_same_v<T, unsigned short>) return MPI_UNSIGNED_SHORT;
  else if constexpr (std::is_same_v<T, int>) return MPI_INT;
  else if constexpr (std::is_same_v<T, unsigned>) return MPI_UNSIGNED;
  else if constexpr (std::is_same_v<T, long>) return MPI_LONG;
  else if constexpr (std::is_same_v<T, unsigned long>) return MPI_UNSIGNED_LONG;
  else if constexpr (std::is_same_v<T, long long>) return MPI_LONG_LONG;
  else if constexpr (std::is_same_v<T, unsigned long long>) return MPI_UNSIGNED_LONG_LONG;
  else static_assert(sizeof(T) == 0, "no predefined MPI datatype for this type");
}

/// Throws before any communication when MPI cannot be used at all (a local state, the same on
/// every rank of a correct program).
inline void check_communicator(const char* fn, MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
  if (!initialized || finalized)
    xent::detail::throw_invalid(fn, "comm", "needs MPI initialized (MPI_Init) and not finalized",
                                finalized ? "MPI finalized" : "MPI not initialized");
  if (comm == MPI_COMM_NULL) xent::detail::throw_invalid(fn, "comm", "must be a communicator", "MPI_COMM_NULL");
}

/// An MPI handle (a committed derived datatype, a created op) freed on scope exit.
template <class Handle, int (*free_handle)(Handle*)>
class scoped_handle {
 public:
  explicit scoped_handle(Handle h) : handle_(h) {}
  scoped_handle(const scoped_handle&) = delete;
  scoped_handle& operator=(const scoped_handle&) = delete;
  ~scoped_handle() { free_handle(&handle_); }
  Handle get() const noexcept { return handle_; }

 private:
  Handle handle_;
};
using scoped_datatype = scoped_handle<MPI_Datatype, MPI_Type_free>;
using scoped_op = scoped_handle<MPI_Op, MPI_Op_free>;

/// vocab_record<T> as MPI sees it: five T from `max` on, one int64 `holders`, extent sizeof(record)
/// so that arrays of records (with any trailing padding) are walked correctly.
template <class T>
scoped_datatype record_datatype() {
  using R = vocab_record<T>;
  static_assert(offsetof(R, smooth_weight) - offsetof(R, max) == 4 * sizeof(T), "the five T fields must be contiguous");
  int lengths[2] = {5, 1};
  MPI_Aint displacements[2] = {MPI_Aint(offsetof(R, max)), MPI_Aint(offsetof(R, holders))};
  MPI_Datatype types[2] = {mpi_type_of<T>(), mpi_type_of<std::int64_t>()};
  MPI_Datatype packed = MPI_DATATYPE_NULL, resized = MPI_DATATYPE_NULL;
  check_mpi(MPI_Type_create_struct(2, lengths, displacements, types, &packed), "MPI_Type_create_struct");
  const int status = MPI_Type_create_resized(packed, 0, MPI_Aint(sizeof(R)), &resized);
  MPI_Type_free(&packed);
  check_mpi(status, "MPI_Type_create_resized");
  const int committed = MPI_Type_commit(&resized);
  if (committed != MPI_SUCCESS) MPI_Type_free(&resized);
  check_mpi(committed, "MPI_Type_commit");
  return scoped_datatype(resized);
}

/// The MPI_User_function: inout[i] = merge(in[i], inout[i]).
template <class T>
void merge_records(void* in, void* inout, int* length, MPI_Datatype*) {
  const auto* a = static_cast<const vocab_record<T>*>(in);
  auto* b = static_cast<vocab_record<T>*>(inout);
  for (int i = 0; i < *length; ++i) b[i] = merge(a[i], b[i]);
}

template <class T>
scoped_op record_merge_op() {
  MPI_Op op = MPI_OP_NULL;
  check_mpi(MPI_Op_create(&merge_records<T>, /*commute=*/1, &op), "MPI_Op_create");
  return scoped_op(op);
}

}  // namespace detail
}  // namespace xent::parallel

#endif
