#ifndef XENT_TESTS_SUPPORT_HPP
#define XENT_TESTS_SUPPORT_HPP

// What the tests share: errors in ulps, the committed reference data, repeatable random inputs.

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace xent_test {

/// |got - exact| in units in the last place of T, the ulp taken at max(|exact|, scale_floor) (and
/// never below T's smallest subnormal). Exact special values must match exactly (NaN with NaN).
template <class T>
double ulps(T got, long double exact, long double scale_floor = 0) {
  if (std::isnan(exact)) return std::isnan(got) ? 0.0 : std::numeric_limits<double>::infinity();
  if (std::isinf(exact) || std::isinf(got) || std::isnan(got))
    return static_cast<long double>(got) == exact ? 0.0 : std::numeric_limits<double>::infinity();
  const long double scale = std::max(std::fabs(exact), scale_floor);
  long double ulp = std::numeric_limits<T>::denorm_min();
  if (scale >= std::numeric_limits<T>::min())
    ulp = std::ldexp(1.0L, std::ilogb(scale) - (std::numeric_limits<T>::digits - 1));
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ulp);
}

/// Whether a computed probability is within budget of the exact one. Budget: 6 + |ln p| ulp at p.
/// exp(x - max) of an argument rounded to T has a relative error up to |x - max| / 2 epsilon (that
/// is up to |x - max| ulp of p), in torch as here; exp and the scaling by 1/sum add a few ulp.
/// Exact values below twice the smallest normal may also come out as 0: the kernels flush results
/// under the smallest normal number (docs/kernels.md).
template <class T>
bool probability_within_budget(T got, long double exact, double factor = 1) {
  if (exact < 2 * (long double)std::numeric_limits<T>::min() && got >= 0 && got <= 2 * std::numeric_limits<T>::min())
    return true;
  const double budget = 6 + (exact > 0 ? double(std::fabs(std::log(exact))) : 0);
  return ulps(got, exact, std::numeric_limits<T>::min()) <= budget * factor;
}

/// One case of a reference file (tests/reference/*_cases.txt): "key v1 v2 ..." lines between
/// "case NAME C" and "end".
struct reference_case {
  std::string name;
  std::string tag;   // the header's second word: the class count, or (binary_cases.txt) the function
  long classes = 0;  // the tag when it is a number
  std::map<std::string, std::vector<long double>> values;

  bool has(const std::string& key) const { return values.count(key) != 0; }
  const std::vector<long double>& operator[](const std::string& key) const { return values.at(key); }

  template <class T>
  Eigen::Matrix<T, Eigen::Dynamic, 1> x() const {
    const auto& v = values.at("x");
    Eigen::Matrix<T, Eigen::Dynamic, 1> out(static_cast<Eigen::Index>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) out(Eigen::Index(i)) = static_cast<T>(v[i]);
    return out;
  }
};

inline std::vector<reference_case> read_reference(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot open reference data " + file);
  std::vector<reference_case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "case") {
      cases.emplace_back();
      reference_case& c = cases.back();
      words >> c.name >> c.tag;
      c.classes = std::strtol(c.tag.c_str(), nullptr, 10);
    } else if (key == "end") {
      // lse_cases.txt has an x of C values per case; other files (categorical_cases.txt) state their own keys.
      // (elementwise_cases.txt names a function there and has one x per point)
      if (cases.back().classes > 0 && cases.back().has("x") && cases.back().values.at("x").size() != std::size_t(cases.back().classes))
        throw std::runtime_error("reference case " + cases.back().name + ": x has the wrong length");
    } else {
      std::vector<long double>& v = cases.back().values[key];
      std::string word;
      // strtold, not >>: streams do not read "inf" and "nan".
      while (words >> word) v.push_back(std::strtold(word.c_str(), nullptr));
    }
  }
  if (cases.empty()) throw std::runtime_error("no cases in " + file);
  return cases;
}

/// A [N, C] row-major list from the reference data as xent's C x N column-major matrix (the same memory).
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> as_matrix(const std::vector<long double>& v, Eigen::Index c, Eigen::Index n) {
  if (v.size() != std::size_t(c * n)) throw std::runtime_error("reference values do not fill a " + std::to_string(c) + " x " + std::to_string(n) + " matrix");
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> m(c, n);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(v[std::size_t(i)]);
  return m;
}

/// |got - ref| / scale, with special values required to match exactly (infinite error otherwise).
inline double error_of(double got, long double ref, long double scale) {
  if (std::isnan(double(ref)) || std::isinf(double(ref)) || !std::isfinite(got))
    return (std::isnan(double(ref)) && std::isnan(got)) || double(ref) == got ? 0 : std::numeric_limits<double>::infinity();
  return double(std::fabs((long double)got - ref) / scale);
}

inline std::string reference_path(const std::string& name) { return std::string(XENT_REFERENCE_DIR) + "/" + name; }

/// The cases of a committed reference file, read on first use and kept for the run.
inline const std::vector<reference_case>& cached_reference(const std::string& name) {
  static std::map<std::string, std::vector<reference_case>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, read_reference(reference_path(name))).first;
  return it->second;
}

/// The shapes every test names: C x N logits, vectors, int64 class-index targets.
template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
using index_vector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

/// The central difference of objective(x) in entry i of x's storage, step 1e-5 max(1, |x_i|); x is
/// left as it was.
template <class M, class F>
double central_difference(M& x, Eigen::Index i, F&& objective) {
  const double x0 = x.data()[i], h = 1e-5 * std::max(1.0, std::fabs(x0));
  x.data()[i] = x0 + h;
  const double up = objective(x);
  x.data()[i] = x0 - h;
  const double down = objective(x);
  x.data()[i] = x0;
  return (up - down) / (2 * h);
}

inline std::mt19937_64& rng() {
  static std::mt19937_64 engine(20261123);
  return engine;
}

/// Normal logits with standard deviation `scale`, exactly representable in T.
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> random_logits(Eigen::Index rows, Eigen::Index cols, double scale = 3) {
  std::normal_distribution<double> normal(0.0, scale);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(normal(rng()));
  return x;
}

}  // namespace xent_test

#endif
