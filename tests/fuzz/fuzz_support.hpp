// What the loss harnesses share: a reader that turns the fuzzer's bytes into choices and values
// (past the end it reads zeros, so every input is usable), and the checks' failure report.
#ifndef XENT_TESTS_FUZZ_SUPPORT_HPP
#define XENT_TESTS_FUZZ_SUPPORT_HPP

#include <xent/xent.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

namespace fuzz {

[[noreturn]] inline void fail(const char* harness, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", harness, what.c_str());
  std::abort();
}

class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  template <class T>
  T raw() {  // any bit pattern: NaN, +-inf, denormals, huge
    T v{};
    unsigned char b[sizeof(T)];
    for (auto& c : b) c = byte();
    std::memcpy(&v, b, sizeof(T));
    return v;
  }
  /// A finite value of magnitude <= 128 * scale.
  template <class T>
  T bounded(double scale) { return T(double(std::int8_t(byte())) * scale); }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// The magnitudes the bounded values come in: up to 1.28e30, which docs/losses.md and binary.md promise to handle.
inline double scale_of(std::uint8_t b) {
  constexpr double scales[] = {1.0 / 16, 1.0, 1e6, 1e28};
  return scales[b & 3];
}

/// A probability, or (for a few byte values) something that is not one.
template <class T>
T probability_or_not(std::uint8_t b) {
  if (b < 240) return T(b) / T(239);
  switch (b - 240) {
    case 0: return T(-0.1);
    case 1: return T(1.1);
    case 2: return std::numeric_limits<T>::quiet_NaN();
    case 3: return std::numeric_limits<T>::infinity();
    case 4: return -std::numeric_limits<T>::infinity();
    case 5: return -std::numeric_limits<T>::denorm_min();
    case 6: return T(1) + std::numeric_limits<T>::epsilon();
    case 7: return T(-0.0);
    default: return T(b & 1);
  }
}

/// Runs call(), which must throw xent::invalid_argument from `function` exactly when the input is
/// not valid (what names the input in the failure message).
template <class F>
void expect_accepted_iff(const char* harness, const std::string& function, bool valid, const char* what, F&& call) {
  try {
    call();
  } catch (const xent::invalid_argument& e) {
    if (e.function() != function) fail(harness, std::string("wrong function in ") + e.what());
    if (valid) fail(harness, std::string("valid ") + what + " rejected: " + e.what());
    return;
  }
  if (!valid) fail(harness, std::string("invalid ") + what + " accepted");
}

template <class M>
bool all_finite(const M& m) {
  for (Eigen::Index i = 0; i < m.size(); ++i)
    if (!std::isfinite(double(m.data()[i]))) return false;
  return true;
}

/// An elementwise loss's result as a matrix: the losses for none, 1 x 1 otherwise.
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> dense_of(const xent::loss_result<T>& r) {
  if (r.reduction() == xent::reduction::none) return r.elementwise();
  return Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Constant(1, 1, r.value());
}

}  // namespace fuzz

#endif
