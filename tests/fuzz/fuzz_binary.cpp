// libFuzzer harness over binary_cross_entropy and binary_cross_entropy_with_logits, forward and
// backward: any bytes become a shape, a class axis, a scalar type, a reduction (batchmean included,
// which is misuse), weight and pos_weight (absent, per class, elementwise, or of a wrong shape),
// probabilities/targets in [0, 1] or not (NaN, +-inf, -0.1, 1 + eps, -denormal), and logits that are
// any bit pattern or finite up to 1.28e30. It asserts: no crash or sanitizer finding;
// xent::invalid_argument exactly when the input is invalid per docs/binary.md ("Errors"); otherwise
// (finite logits and weights) a finite loss and gradient, and the none/sum/mean results agree.

#include "fuzz_support.hpp"

namespace {

constexpr const char* harness = "fuzz_binary";

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// A weight of the given mode: 0 absent, 1 per class (a column or a row vector), 2 elementwise, 3 wrong.
template <class T>
matrix<T> weight_of(fuzz::reader& in, int mode, Eigen::Index rows, Eigen::Index cols, Eigen::Index classes, bool row_vector) {
  matrix<T> w;
  if (mode == 1) w.resize(row_vector ? 1 : classes, row_vector ? classes : 1);
  if (mode == 2) w.resize(rows, cols);
  if (mode == 3) w.resize(classes + 1, 2);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = T(in.byte()) / T(64);
  return w;
}

template <class T, class Input>
bool broadcast_ok(const matrix<T>& w, const Input& x, Eigen::Index classes) {
  return w.size() == 0 || (w.rows() == x.rows() && w.cols() == x.cols()) ||
         (w.size() == classes && (w.rows() == 1 || w.cols() == 1));
}

bool in_unit(double v) { return std::isfinite(v) && v >= 0 && v <= 1; }

template <class T>
void run(fuzz::reader& in, std::uint8_t flags, std::uint8_t opt) {
  const std::uint8_t dim_sel = flags & 3;
  const int dim = dim_sel == 3 ? ((flags & 0x80) ? -1 : 2) : (dim_sel & 1);
  const bool logits_form = flags & 8, raw = flags & 0x10, lazy = flags & 0x20, row_vector = flags & 0x40;
  const auto red = static_cast<xent::reduction>(opt & 3);
  const int weight_mode = (opt >> 2) & 3, pos_mode = (opt >> 4) & 3, grad_mode = (opt >> 6) & 3;
  const Eigen::Index rows = in.byte() % 9, cols = in.byte() % 9;
  const double scale = fuzz::scale_of(in.byte());
  const bool dim_ok = dim == 0 || dim == 1;
  const Eigen::Index classes = dim == 1 ? cols : rows;

  matrix<T> x(rows, cols), t(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i)
    x.data()[i] = raw ? in.raw<T>() : logits_form ? in.bounded<T>(scale) : fuzz::probability_or_not<T>(in.byte());
  for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = fuzz::probability_or_not<T>(in.byte());
  const matrix<T> w = weight_of<T>(in, weight_mode, rows, cols, classes, row_vector);
  const matrix<T> pw = logits_form ? weight_of<T>(in, pos_mode, rows, cols, classes, !row_vector) : matrix<T>();

  bool values_ok = true;
  for (Eigen::Index i = 0; i < t.size(); ++i) values_ok &= in_unit(double(t.data()[i]));
  if (!logits_form)
    for (Eigen::Index i = 0; i < x.size(); ++i) values_ok &= in_unit(double(x.data()[i]));
  const bool valid = dim_ok && red != xent::reduction::batchmean && x.size() != 0 && broadcast_ok(w, x, classes) &&
                     broadcast_ok(pw, x, classes) && values_ok;
  // Raw bit patterns may be finite but huge (-2.4e38 * pos_weight 4 overflows float: the exact loss is
  // not representable), so finiteness is promised only for bounded logits (|x| <= 1.28e30, docs/binary.md).
  const bool check_finite = valid && !raw && fuzz::all_finite(w) && fuzz::all_finite(pw);
  const std::string fn = logits_form ? "binary_cross_entropy_with_logits" : "binary_cross_entropy";

  xent::binary_cross_entropy_options<T> bo;
  bo.weight = w;
  bo.reduction = red;
  bo.dim = dim;
  xent::binary_cross_entropy_with_logits_options<T> lo;
  lo.weight = w;
  lo.pos_weight = pw;
  lo.reduction = red;
  lo.dim = dim;
  const auto forward = [&](xent::reduction r) {
    bo.reduction = lo.reduction = r;
    matrix<T> out;
    if (logits_form) out = fuzz::dense_of(lazy ? xent::binary_cross_entropy_with_logits(x * T(1), t, lo) : xent::binary_cross_entropy_with_logits(x, t, lo));
    else out = fuzz::dense_of(lazy ? xent::binary_cross_entropy(x * T(1), t, bo) : xent::binary_cross_entropy(x, t, bo));
    bo.reduction = lo.reduction = red;
    return out;
  };

  matrix<T> loss;
  fuzz::expect_accepted_iff(harness, fn, valid, "input", [&] {
    loss = forward(red);
  });
  if (!valid) return;
  const bool none = red == xent::reduction::none;
  if ((none && (loss.rows() != rows || loss.cols() != cols)) || (!none && loss.size() != 1))
    fuzz::fail(harness, "wrong result shape");
  if (check_finite) {
    if (!fuzz::all_finite(loss)) fuzz::fail(harness, "non-finite loss with finite inputs");
    // sum == the sum of none; mean == sum / numel (within rounding).
    const matrix<T> each = forward(xent::reduction::none);
    const double s = double(forward(xent::reduction::sum)(0, 0)), m = double(forward(xent::reduction::mean)(0, 0));
    double plain = 0, magnitude = 0;
    for (Eigen::Index i = 0; i < each.size(); ++i) plain += double(each.data()[i]), magnitude += std::fabs(double(each.data()[i]));
    const double tol = 64 * double(std::numeric_limits<T>::epsilon()) * (magnitude + 1e-30) + 1e-300;
    if (std::fabs(s - plain) > tol) fuzz::fail(harness, "sum differs from the sum of none");
    if (std::fabs(m * double(x.size()) - s) > tol + 4 * double(std::numeric_limits<T>::epsilon()) * std::fabs(s))
      fuzz::fail(harness, "mean differs from sum / numel");
  }

  // ---- backward: grad_out 1 x 1 (0, 1), the input's shape (2; none only) or a wrong shape (3)
  const Eigen::Index gr = grad_mode < 2 ? 1 : grad_mode == 2 ? rows : rows + 1, gc = grad_mode < 2 ? 1 : cols;
  matrix<T> grad_out(gr, gc);
  for (Eigen::Index i = 0; i < grad_out.size(); ++i) grad_out.data()[i] = in.bounded<T>(1.0 / 16);
  // A number (1 x 1) for a reduced loss, the input's shape for none.
  const bool grad_ok = none ? gr == rows && gc == cols : gr == 1 && gc == 1;
  matrix<T> grad(rows, cols);
  fuzz::expect_accepted_iff(harness, fn + "_backward", grad_ok, "grad_out", [&] {
    if (logits_form) xent::binary_cross_entropy_with_logits_backward(x, t, grad_out, lo, grad);
    else xent::binary_cross_entropy_backward(x, t, grad_out, bo, grad);
  });
  if (grad_ok && check_finite && !fuzz::all_finite(grad)) fuzz::fail(harness, "non-finite gradient with finite inputs");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader in(data, size);
  const std::uint8_t flags = in.byte(), opt = in.byte();
  if (flags & 4) run<double>(in, flags, opt);
  else run<float>(in, flags, opt);
  return 0;
}
