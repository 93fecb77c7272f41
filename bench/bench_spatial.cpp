// cross_entropy over torch's [N, C, H, W] layout (a segmentation shape: N = 8, C = 21, 256 x 256
// pixels, fp32 randn * 3, int64 targets) read in place through xent::spatial, against one read of
// the logits (the roofline), against the matrix overload on the same values already permuted to
// [N * H * W, C] (the copy a caller would otherwise make, not timed), and against libtorch 1.13's
// F::cross_entropy on the [N, C, H, W] tensor when the bench links it; the same rows with
// probability targets (a per-pixel softmax of randn, a second [N, C, H, W] buffer: the *_prob_*
// rows, x_perm their ratio to the permuted copy's); softmax_focal_loss (gamma 2, no alpha) the same
// way against the permuted copy (the *_focal_* rows, x_perm). 1-thread rows: process CPU
// time (bench_support.hpp's time_row); 2-thread rows: wall clock. Every row reports ns per logit.
//
//   xent_bench_spatial [--benchmark_filter=...] [--xent_smoke]   (--xent_smoke: 2 x 5 x 16 x 16)

#include "bench_support.hpp"

#include <xent/xent.hpp>

#ifdef XENT_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif

#include <cmath>
#include <cstring>
#include <iostream>

namespace {

using xent_bench::Index;

struct Inputs {
  Index N = 8, C = 21, H = 256, W = 256;
  std::vector<float> x, grad, y;  // y: probability targets, [N, C, H, W]
  Eigen::MatrixXf permuted, permuted_grad, permuted_y;
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> targets;
  Index D() const { return H * W; }
  Index logits() const { return N * C * D(); }
  void build() {
    xent_bench::splitmix64 rng{20261204};
    x.resize(std::size_t(logits()));
    xent_bench::fill_normal(rng, x.data(), logits(), 3.0);
    grad.assign(x.size(), 1.0f);  // touched before timing
    targets.resize(N * D());
    for (Index j = 0; j < N * D(); ++j) targets(j) = std::int64_t(rng.next() % std::uint64_t(C));
    permuted.resize(C, N * D());
    for (Index n = 0; n < N; ++n)
      for (Index k = 0; k < C; ++k)
        for (Index d = 0; d < D(); ++d) permuted(k, n * D() + d) = x[std::size_t((n * C + k) * D() + d)];
    permuted_grad = Eigen::MatrixXf::Ones(C, N * D());
    y.resize(x.size());
    xent_bench::fill_normal(rng, y.data(), logits(), 1.0);
    permuted_y.resize(C, N * D());
    for (Index n = 0; n < N; ++n)
      for (Index d = 0; d < D(); ++d) {
        double total = 0;
        for (Index k = 0; k < C; ++k) total += std::exp(double(y[std::size_t((n * C + k) * D() + d)]));
        for (Index k = 0; k < C; ++k) {
          float& v = y[std::size_t((n * C + k) * D() + d)];
          v = float(std::exp(double(v)) / total);
          permuted_y(k, n * D() + d) = v;
        }
      }
  }
};

Inputs& inputs() {
  static Inputs in;
  return in;
}

xent::cross_entropy_options opts(int threads) {
  xent::cross_entropy_options o;
  o.num_threads = threads;
  return o;
}

xent::softmax_focal_loss_options focal_opts(int threads) {
  xent::softmax_focal_loss_options o;
  o.num_threads = threads;
  return o;
}

void register_rows() {
  for (const int threads : xent_bench::thread_counts) {
    const std::string t = "/threads:" + std::to_string(threads);
    benchmark::RegisterBenchmark(("read_logits" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      xent_bench::time_row(s, "read" + std::to_string(threads), threads, double(in.logits()), "logit",
                           [&] { benchmark::DoNotOptimize(xent_bench::read_sum(threads, in.x.data(), in.logits())); });
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "fwd" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy(v, in.targets, opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_ce_fwd_grad" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto g = xent::spatial(in.grad.data(), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "fwd_grad" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy_with_grad(v, in.targets, opts(threads), g).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_permuted_copy_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto me = xent_bench::time_row(s, "perm" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy(in.permuted, in.targets, opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_permuted_copy_prob_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto me = xent_bench::time_row(s, "perm_prob" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy(in.permuted, in.permuted_y, opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_prob_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto y = xent::spatial(static_cast<const float*>(in.y.data()), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "prob_fwd" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy(v, y, opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
      if (const auto* p = xent_bench::latest_of("perm_prob" + std::to_string(threads))) s.counters["x_perm"] = me.ns / p->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_prob_ce_fwd_grad" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto y = xent::spatial(static_cast<const float*>(in.y.data()), in.N, in.C, in.D());
      const auto g = xent::spatial(in.grad.data(), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "prob_fwd_grad" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::cross_entropy_with_grad(v, y, opts(threads), g).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_permuted_copy_focal_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto me = xent_bench::time_row(s, "perm_focal" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::softmax_focal_loss(in.permuted, in.targets, focal_opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_focal_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "focal_fwd" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::softmax_focal_loss(v, in.targets, focal_opts(threads)).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
      if (const auto* p = xent_bench::latest_of("perm_focal" + std::to_string(threads))) s.counters["x_perm"] = me.ns / p->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_permuted_copy_focal_fwd_grad" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto me = xent_bench::time_row(s, "perm_focal_grad" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(
            xent::softmax_focal_loss_with_grad(in.permuted, in.targets, focal_opts(threads), in.permuted_grad).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("xent_spatial_focal_fwd_grad" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      const auto v = xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D());
      const auto g = xent::spatial(in.grad.data(), in.N, in.C, in.D());
      const auto me = xent_bench::time_row(s, "focal_fwd_grad" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(xent::softmax_focal_loss_with_grad(v, in.targets, focal_opts(threads), g).value());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
      if (const auto* p = xent_bench::latest_of("perm_focal_grad" + std::to_string(threads))) s.counters["x_perm"] = me.ns / p->ns;
    })->UseRealTime();
#ifdef XENT_BENCH_WITH_TORCH
    benchmark::RegisterBenchmark(("torch_prob_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      torch::set_num_threads(threads);
      const torch::Tensor x = torch::from_blob(in.x.data(), {in.N, in.C, in.H, in.W}, torch::kFloat);
      const torch::Tensor y = torch::from_blob(in.y.data(), {in.N, in.C, in.H, in.W}, torch::kFloat);
      const auto me = xent_bench::time_row(s, "torch_prob" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(torch::nn::functional::cross_entropy(x, y).item<float>());
      });
      if (const auto* f = xent_bench::latest_of("prob_fwd" + std::to_string(threads))) s.counters["x_xent"] = me.ns / f->ns;
    })->UseRealTime();
    benchmark::RegisterBenchmark(("torch_ce_fwd" + t).c_str(), [threads](benchmark::State& s) {
      Inputs& in = inputs();
      torch::set_num_threads(threads);
      const torch::Tensor x = torch::from_blob(in.x.data(), {in.N, in.C, in.H, in.W}, torch::kFloat);
      const torch::Tensor tg = torch::from_blob(in.targets.data(), {in.N, in.H, in.W}, torch::kLong);
      const auto me = xent_bench::time_row(s, "torch" + std::to_string(threads), threads, double(in.logits()), "logit", [&] {
        benchmark::DoNotOptimize(torch::nn::functional::cross_entropy(x, tg).item<float>());
      });
      if (const auto* r = xent_bench::latest_of("read" + std::to_string(threads))) s.counters["x_read"] = me.ns / r->ns;
      if (const auto* f = xent_bench::latest_of("fwd" + std::to_string(threads))) s.counters["x_xent"] = me.ns / f->ns;
    })->UseRealTime();
#endif
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--xent_smoke") == 0) smoke = true;
  Inputs& in = inputs();
  if (smoke) in.N = 2, in.C = 5, in.H = 16, in.W = 16;
  in.build();
  // The rows agree before anything is timed: spatial and the permuted copy (and libtorch).
  const double a = xent::cross_entropy(xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D()), in.targets).value();
  const double b = xent::cross_entropy(in.permuted, in.targets).value();
  if (!xent_bench::close(a, b, 1e-5)) {
    std::cerr << "xent_bench_spatial: spatial " << a << " != permuted copy " << b << "\n";
    return 2;
  }
  const double pa = xent::cross_entropy(xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D()),
                                        xent::spatial(static_cast<const float*>(in.y.data()), in.N, in.C, in.D()))
                        .value();
  const double pb = xent::cross_entropy(in.permuted, in.permuted_y).value();
  if (!xent_bench::close(pa, pb, 1e-5)) {
    std::cerr << "xent_bench_spatial: spatial probability targets " << pa << " != permuted copy " << pb << "\n";
    return 2;
  }
  const double fa =
      xent::softmax_focal_loss(xent::spatial(static_cast<const float*>(in.x.data()), in.N, in.C, in.D()), in.targets).value();
  const double fb = xent::softmax_focal_loss(in.permuted, in.targets).value();
  if (!xent_bench::close(fa, fb, 1e-5)) {
    std::cerr << "xent_bench_spatial: spatial focal " << fa << " != permuted copy " << fb << "\n";
    return 2;
  }
#ifdef XENT_BENCH_WITH_TORCH
  const double c = torch::nn::functional::cross_entropy(torch::from_blob(in.x.data(), {in.N, in.C, in.H, in.W}, torch::kFloat),
                                                        torch::from_blob(in.targets.data(), {in.N, in.H, in.W}, torch::kLong))
                       .item<double>();
  if (!xent_bench::close(a, c, 1e-5)) {
    std::cerr << "xent_bench_spatial: spatial " << a << " != libtorch " << c << "\n";
    return 2;
  }
#endif
  int kept = 0;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i)
    if (std::strcmp(argv[i], "--xent_smoke") != 0) args.push_back(argv[i]), ++kept;
  benchmark::Initialize(&kept, args.data());
  xent_bench::add_common_context(smoke);
  benchmark::AddCustomContext("xent_spatial_shape", std::to_string(in.N) + " x " + std::to_string(in.C) + " x " +
                                                        std::to_string(in.H) + " x " + std::to_string(in.W));
  xent_bench::start_thread_team();
  register_rows();
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
