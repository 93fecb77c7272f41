// libFuzzer harness over the kernels' public entry points: any bytes become a shape, a class axis, a
// scalar type and logits of any bit pattern (NaN, ±inf, denormals, ±1e38). It asserts no crash, no
// sanitizer finding, and that every result is either xent::invalid_argument (for an empty input) or
// what the math and docs/kernels.md say: finite where the math is finite, torch's special values
// otherwise, probabilities in [0, 1] summing to 1, partials that merge to the whole.

#include <xent/xent.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace {

[[noreturn]] void fail(const char* what, double got) {
  std::fprintf(stderr, "fuzz_kernels: %s (got %.17g)\n", what, got);
  std::abort();
}

template <class T>
void check(const std::uint8_t* bytes, std::size_t size, Eigen::Index classes, int dim) {
  const Eigen::Index values = Eigen::Index(size / sizeof(T));
  const Eigen::Index samples = values / classes;
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  matrix x(dim == 0 ? classes : samples, dim == 0 ? samples : classes);
  if (x.size() > 0) std::memcpy(x.data(), bytes, std::size_t(x.size()) * sizeof(T));

  if (samples == 0) {
    try {
      (void)xent::logsumexp(x, dim);
    } catch (const xent::invalid_argument&) {
      return;
    }
    fail("empty input did not throw", 0);
  }
  const auto lse = xent::logsumexp(x, dim);
  const matrix p = xent::softmax(x, dim), y = xent::log_softmax(x, dim);
  const Eigen::Index half = classes > 1 ? classes / 2 : 1;  // both shards non-empty when C > 1
  const auto partials_a = xent::logsumexp_partials(dim == 0 ? x.block(0, 0, half, samples) : x.block(0, 0, samples, half), dim);

  for (Eigen::Index j = 0; j < samples; ++j) {
    const auto sample = [&](Eigen::Index k) { return dim == 0 ? x(k, j) : x(j, k); };
    const auto prob = [&](Eigen::Index k) { return dim == 0 ? p(k, j) : p(j, k); };
    bool any_nan = false, any_pos_inf = false, all_neg_inf = true;
    T max = -std::numeric_limits<T>::infinity();
    for (Eigen::Index k = 0; k < classes; ++k) {
      const T v = sample(k);
      any_nan |= std::isnan(v);
      any_pos_inf |= v == std::numeric_limits<T>::infinity();
      all_neg_inf &= v == -std::numeric_limits<T>::infinity();
      if (v > max) max = v;
    }
    if (any_nan) {
      if (!std::isnan(lse(j))) fail("NaN logit, lse not NaN", double(lse(j)));
      continue;
    }
    if (any_pos_inf) {
      if (lse(j) != std::numeric_limits<T>::infinity()) fail("+inf logit, lse not +inf", double(lse(j)));
      continue;
    }
    if (all_neg_inf) {
      if (lse(j) != -std::numeric_limits<T>::infinity()) fail("all -inf, lse not -inf", double(lse(j)));
      continue;
    }
    // Finite math: max <= lse <= max + log C, within rounding.
    const double slack = 8 * std::numeric_limits<T>::epsilon() * std::max(1.0, std::fabs(double(max)));
    if (!std::isfinite(lse(j)) || double(lse(j)) < double(max) - slack ||
        double(lse(j)) > double(max) + std::log(double(classes)) + slack + 1e-3)
      fail("lse out of [max, max + log C]", double(lse(j)));
    double sum = 0;
    for (Eigen::Index k = 0; k < classes; ++k) {
      const T pk = prob(k);
      if (!(pk >= 0 && pk <= 1)) fail("probability outside [0, 1]", double(pk));
      sum += double(pk);
    }
    if (std::fabs(sum - 1) > 1e-4) fail("probabilities do not sum to 1", sum);
    for (Eigen::Index k = 0; k < classes; ++k) {
      const T yk = dim == 0 ? y(k, j) : y(j, k);
      if (std::isnan(yk) || yk > T(1e-4)) fail("log_softmax NaN or positive", double(yk));
    }
    // The first half's partial merged with the rest's equals the whole.
    if (classes > 1) {
      const auto rest = xent::logsumexp_partials(
          dim == 0 ? x.block(half, j, classes - half, 1) : x.block(j, half, 1, classes - half), dim);
      const T merged = xent::merge(partials_a[std::size_t(j)], rest[0]).value();
      if (std::fabs(double(merged) - double(lse(j))) > 8 * slack + 1e-5 * std::fabs(double(lse(j))) + 1e-6)
        fail("merged partials differ from the whole", double(merged) - double(lse(j)));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const int dim = data[0] & 1;
  const bool use_double = (data[0] & 2) != 0;
  // Mostly small class counts (packet tails), sometimes past the 16 KiB chunk.
  const Eigen::Index classes = 1 + ((data[1] | (data[2] << 8)) % ((data[0] & 4) ? 9000 : 40));
  if (use_double)
    check<double>(data + 3, size - 3, classes, dim);
  else
    check<float>(data + 3, size - 3, classes, dim);
  return 0;
}
