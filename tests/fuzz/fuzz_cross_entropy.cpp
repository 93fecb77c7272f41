// libFuzzer harness over cross_entropy and cross_entropy_backward (class-index and probability
// targets): any bytes become a shape, a class axis, a scalar type, options (reduction incl. the
// invalid batchmean, weight of the right or wrong length, ignore_index, label_smoothing in and out of
// [0, 1]), targets in and out of range, and logits that are either any bit pattern or finite up to
// 1.28e30. It asserts: no crash or sanitizer finding; xent::invalid_argument exactly when the input is
// invalid per docs/losses.md ("Errors"); otherwise, with finite logits, a finite loss and gradient,
// except torch's NaN for a mean over zero total weight (every target ignored, or zero weights).

#include "fuzz_support.hpp"

namespace {

constexpr const char* harness = "fuzz_cross_entropy";

template <class T, class Targets>
void run(fuzz::reader& in, std::uint8_t flags, std::uint8_t opt_byte) {
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const std::uint8_t dim_sel = flags & 3;
  const int dim = dim_sel == 3 ? ((flags & 0x10) ? -1 : 2) : (dim_sel & 1);
  const bool prob_targets = flags & 8;
  const bool raw_logits = flags & 0x20;
  const bool lazy = flags & 0x40;
  const bool block_out = flags & 0x80;

  xent::cross_entropy_options o;
  o.reduction = static_cast<xent::reduction>(opt_byte & 3);
  o.dim = dim;
  const std::uint8_t ls = in.byte();
  constexpr double odd_smoothing[] = {-0.01, 1.01, std::numeric_limits<double>::quiet_NaN(), -0.0, 1, 0.5, 1e-300, -1e-300};
  o.label_smoothing = ls < 200 ? ls / 199.0 : odd_smoothing[ls % 8];
  const Eigen::Index classes = 1 + in.byte() % 16, samples = in.byte() % 9;
  const double scale = fuzz::scale_of(in.byte());
  const int ignore_mode = (opt_byte >> 4) & 3;
  o.ignore_index = ignore_mode == 0 ? -100 : ignore_mode == 1 ? 0 : ignore_mode == 2 ? long(classes - 1) : -1;
  const int weight_mode = (opt_byte >> 2) & 3;
  const bool wrong_lengths = opt_byte & 0x80, wrong_grad_kind = opt_byte & 0x40;

  const Eigen::Index rows = dim == 1 ? samples : classes, cols = dim == 1 ? classes : samples;
  matrix x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = raw_logits ? in.raw<T>() : in.bounded<T>(scale);
  if (weight_mode) {
    o.weight.resize(weight_mode == 2 ? classes + 1 : classes);
    for (Eigen::Index k = 0; k < o.weight.size(); ++k) o.weight(k) = (weight_mode == 3 && k % 2) ? 0.0 : in.byte() / 64.0;
  }
  const bool dim_ok = dim == 0 || dim == 1;
  const Eigen::Index n = dim_ok ? samples : cols;  // what the library counts as samples (dim is checked first anyway)
  Targets t(wrong_lengths && !prob_targets ? n + 1 : n);
  bool targets_ok = true;
  double weight_total = 0;
  for (Eigen::Index j = 0; j < t.size(); ++j) {
    const std::uint8_t b = in.byte();
    long v;
    if (b < 200) v = long(b % classes);
    else {
      const long odd[] = {-1, long(classes), long(classes) + 1, o.ignore_index, -100, long(1) << 40, -(long(1) << 40), 0};
      v = odd[b % 8];
      if (sizeof(typename Targets::Scalar) < 8 && (v > 1000000 || v < -1000000)) v = long(classes) + 3;
    }
    t(j) = typename Targets::Scalar(v);
    if (v == o.ignore_index) continue;
    if (v < 0 || v >= classes) targets_ok = false;
    else weight_total += o.weight.size() == classes ? o.weight(v) : 1.0;
  }
  matrix y(wrong_lengths && prob_targets ? cols : rows, wrong_lengths && prob_targets ? rows : cols);
  for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = T(in.byte()) / T(255);

  // What docs/losses.md says is misuse, in the order the checks run (only validity matters here).
  const bool shapes_same = y.rows() == x.rows() && y.cols() == x.cols();
  const bool valid = dim_ok && o.reduction != xent::reduction::batchmean &&
                     o.label_smoothing >= 0 && o.label_smoothing <= 1 && x.size() != 0 &&
                     (o.weight.size() == 0 || o.weight.size() == classes) &&
                     (prob_targets ? shapes_same && o.ignore_index == -100 : (t.size() == samples && targets_ok));
  const bool none = o.reduction == xent::reduction::none;
  // torch's 0 / 0: a mean over zero total target weight is NaN (class-index targets only).
  const bool nan_allowed = !prob_targets && o.reduction == xent::reduction::mean && weight_total == 0;
  const bool check_finite = valid && !raw_logits && !nan_allowed && fuzz::all_finite(o.weight);

  // ---- forward
  xent::loss_result<T> r = xent::loss_result<T>::reduced(xent::reduction::sum, T(0), 1.0);
  fuzz::expect_accepted_iff(harness, "cross_entropy", valid, "input", [&] {
    if (prob_targets) r = lazy ? xent::cross_entropy(x * T(1), y, o) : xent::cross_entropy(x, y, o);
    else r = lazy ? xent::cross_entropy(x * T(1), t, o) : xent::cross_entropy(x, t, o);
  });
  if (!valid) return;
  if (check_finite) {
    if (none) {
      if (r.per_sample().size() != samples || !fuzz::all_finite(r.per_sample())) fuzz::fail(harness, "non-finite per-sample loss");
    } else if (!std::isfinite(double(r.value()))) {
      fuzz::fail(harness, "non-finite loss " + std::to_string(double(r.value())));
    }
  }
  if (nan_allowed && o.weight.size() == 0 && !raw_logits && !std::isnan(double(r.value())))  // all ignored: 0 / 0
    fuzz::fail(harness, "mean over zero total weight is not NaN");

  // ---- backward: grad_out a number for mean/sum, a vector for none (sometimes the wrong kind or length)
  const T g = in.bounded<T>(1.0 / 16);
  vector gv(wrong_lengths ? samples + 2 : samples);
  for (Eigen::Index j = 0; j < gv.size(); ++j) gv(j) = in.bounded<T>(1.0 / 16);
  const bool give_vector = none != wrong_grad_kind;
  const bool grad_ok = give_vector ? none && gv.size() == samples : !none;
  matrix big = matrix::Constant(rows + 1, cols + 2, T(7));
  matrix plain(rows, cols);
  fuzz::expect_accepted_iff(harness, "cross_entropy_backward", grad_ok, "grad_out", [&] {
    auto call = [&](auto&& out) {
      if (prob_targets) {
        if (give_vector) xent::cross_entropy_backward(x, y, gv, o, out);
        else xent::cross_entropy_backward(x, y, g, o, out);
      } else {
        if (give_vector) xent::cross_entropy_backward(x, t, gv, o, out);
        else xent::cross_entropy_backward(x, t, g, o, out);
      }
    };
    if (block_out) call(big.block(1, 2, rows, cols));
    else call(plain);
  });
  if (!grad_ok) return;
  const matrix grad = block_out ? matrix(big.block(1, 2, rows, cols)) : plain;
  if (block_out && (big.row(0).array() != T(7)).any()) fuzz::fail(harness, "backward wrote outside its block");
  if (check_finite && !fuzz::all_finite(grad)) fuzz::fail(harness, "non-finite gradient with finite logits");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader in(data, size);
  const std::uint8_t flags = in.byte(), opt = in.byte();
  const bool use_double = flags & 4, int64_targets = flags & 0x10;
  if (use_double) {
    if (int64_targets) run<double, Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(in, flags, opt);
    else run<double, Eigen::VectorXi>(in, flags, opt);
  } else {
    if (int64_targets) run<float, Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(in, flags, opt);
    else run<float, Eigen::VectorXi>(in, flags, opt);
  }
  return 0;
}
