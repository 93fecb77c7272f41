// libFuzzer harness over kl_div and kl_div_backward: any bytes become a shape, a class axis, a scalar
// type, every reduction (batchmean included), log_target on or off, an input of log-probabilities
// (any bit pattern or finite up to 1.28e30), targets that are probabilities or not (NaN, +-inf,
// negative) or, with log_target, log-probabilities (<= 0) or any bit pattern, and grad_out of every
// shape. It asserts: no crash or sanitizer finding; xent::invalid_argument exactly when the input is
// invalid per docs/measures.md ("Errors"); otherwise, for finite inputs, a finite loss and gradient,
// and none/sum/mean/batchmean consistent with each other.

#include "fuzz_support.hpp"

namespace {

constexpr const char* harness = "fuzz_kl_div";

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <class T>
void run(fuzz::reader& in, std::uint8_t flags, std::uint8_t opt) {
  const std::uint8_t dim_sel = flags & 3;
  const int dim = dim_sel == 3 ? ((flags & 0x80) ? -1 : 2) : (dim_sel & 1);
  const bool raw_input = flags & 8, raw_target = flags & 0x10, lazy = flags & 0x20, wrong_shape = flags & 0x40;
  xent::kl_div_options o;
  o.reduction = static_cast<xent::reduction>(opt & 3);
  o.log_target = opt & 4;
  o.dim = dim;
  const int grad_mode = (opt >> 3) & 3;
  const Eigen::Index rows = in.byte() % 9, cols = in.byte() % 9;
  const double scale = fuzz::scale_of(in.byte());

  matrix<T> x(rows, cols), t(wrong_shape ? cols : rows, wrong_shape ? rows + 1 : cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = raw_input ? in.raw<T>() : in.bounded<T>(scale);
  for (Eigen::Index i = 0; i < t.size(); ++i)
    t.data()[i] = raw_target ? in.raw<T>() : o.log_target ? -T(in.byte()) / T(16) : fuzz::probability_or_not<T>(in.byte());

  bool target_ok = true;
  if (!o.log_target)
    for (Eigen::Index i = 0; i < t.size(); ++i) target_ok &= std::isfinite(double(t.data()[i])) && t.data()[i] >= 0;
  const bool valid = (dim == 0 || dim == 1) && x.size() != 0 && t.rows() == rows && t.cols() == cols && target_ok;
  // Raw bit patterns may be finite but huge (t * x overflows), so finiteness is promised for bounded values only.
  const bool check_finite = valid && !raw_input && !raw_target && fuzz::all_finite(t);

  const auto forward = [&](xent::reduction r) {
    xent::kl_div_options p = o;
    p.reduction = r;
    return fuzz::dense_of(lazy ? xent::kl_div(x * T(1), t, p) : xent::kl_div(x, t, p));
  };
  matrix<T> loss;
  fuzz::expect_accepted_iff(harness, "kl_div", valid, "input", [&] {
    loss = forward(o.reduction);
  });
  if (!valid) return;
  const bool none = o.reduction == xent::reduction::none;
  if ((none && (loss.rows() != rows || loss.cols() != cols)) || (!none && loss.size() != 1))
    fuzz::fail(harness, "wrong result shape");
  if (check_finite) {
    if (!fuzz::all_finite(loss)) fuzz::fail(harness, "non-finite loss with finite inputs");
    const matrix<T> each = forward(xent::reduction::none);
    const double s = double(forward(xent::reduction::sum)(0, 0)), m = double(forward(xent::reduction::mean)(0, 0)),
                 b = double(forward(xent::reduction::batchmean)(0, 0));
    double plain = 0, magnitude = 0;
    for (Eigen::Index i = 0; i < each.size(); ++i) plain += double(each.data()[i]), magnitude += std::fabs(double(each.data()[i]));
    const double eps = double(std::numeric_limits<T>::epsilon());
    const double tol = 64 * eps * magnitude + 1e-300;
    const double samples = double(dim == 0 ? cols : rows);
    if (std::fabs(s - plain) > tol) fuzz::fail(harness, "sum differs from the sum of none");
    if (std::fabs(m * double(x.size()) - s) > tol + 4 * eps * std::fabs(s)) fuzz::fail(harness, "mean differs from sum / numel");
    if (std::fabs(b * samples - s) > tol + 4 * eps * std::fabs(s)) fuzz::fail(harness, "batchmean differs from sum / samples");
  }

  // ---- backward: grad_out 1 x 1 (0, 1), the input's shape (2; none only) or a wrong shape (3)
  const Eigen::Index gr = grad_mode < 2 ? 1 : grad_mode == 2 ? rows : rows + 2, gc = grad_mode < 2 ? 1 : cols;
  matrix<T> grad_out(gr, gc);
  for (Eigen::Index i = 0; i < grad_out.size(); ++i) grad_out.data()[i] = in.bounded<T>(1.0 / 16);
  // A number (1 x 1) for a reduced loss, the input's shape for none.
  const bool grad_ok = none ? gr == rows && gc == cols : gr == 1 && gc == 1;
  matrix<T> grad(rows, cols);
  fuzz::expect_accepted_iff(harness, "kl_div_backward", grad_ok, "grad_out", [&] {
    xent::kl_div_backward(x, t, grad_out, o, grad);
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
