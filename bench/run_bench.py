#!/usr/bin/python3
"""Builds xent_bench (Release, -O3 -march=native), runs it, measures peak memory, writes docs/performance.md.

Every ratio in the document is taken from one run of one process over the same buffers: the
medians of its repetitions, divided by the medians of the rooflines and of libtorch of the same
run and the same thread count. Absolute ns/logit move between runs on shared machines; the ratios
are what to compare.

    /usr/bin/python3 bench/run_bench.py                 # build, run, write docs/performance.md
    /usr/bin/python3 bench/run_bench.py --smoke -o /tmp/perf.md   # small shapes, a quick look
    /usr/bin/python3 bench/run_bench.py --losses        # every other loss: bench/run_loss_bench.py

Only the part of docs/performance.md between the markers <!-- run_bench:begin --> and
<!-- run_bench:end --> is rewritten: sections others add after it are kept.

Only the standard library; /usr/bin/time (Debian package `time`) for the peak-RSS runs.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- run_bench:begin -->"
END = "<!-- run_bench:end -->"

# The rows of every table, in order: (kernel, what it is, its roofline, the libtorch row it is compared to).
KERNELS = [
    ("read_roofline", "read roofline: vectorised sum of the logits, 8 accumulators (2 threads: each sums half)", None, None),
    ("rw_roofline", "read+write roofline: y = x + 1 into a touched buffer (2 threads: each writes half)", "read_roofline", None),
    ("exp_pass", "exp floor: one read pass summing Eigen's packet exp of every logit", "read_roofline", None),
    ("bf16_read_roofline", "bf16 read roofline: the bf16 logits' bytes summed as floats", "read_roofline", None),
    ("torch_ce_fwd", "libtorch `F::cross_entropy(x, t)` forward, mean", "read_roofline", None),
    ("torch_ce_fwd_bwd", "libtorch `F::cross_entropy(x, t)` forward + `backward()` (grad set to none each step)",
     "read_roofline", None),
    ("xent_ce_fwd", "`xent::cross_entropy(logits, targets, opts)`, mean", "read_roofline", "torch_ce_fwd"),
    ("xent_ce_fwd_grad", "`xent::cross_entropy_with_grad(logits, targets, opts, grad)` into a touched buffer",
     "rw_roofline", "torch_ce_fwd_bwd"),
    ("xent_ce_fwd_grad_in_place", "`xent::cross_entropy_with_grad_in_place` on a copy of the logits (copy untimed)",
     "rw_roofline", "torch_ce_fwd_bwd"),
    ("xent_ce_fwd_bf16", "`xent::cross_entropy` of the logits rounded to bf16, mean", "bf16_read_roofline", "torch_ce_fwd"),
    ("torch_logsumexp", "`torch::logsumexp(x, 1)`", "read_roofline", None),
    ("torch_softmax", "`at::softmax_out(out, x, 1)` into a touched buffer", "rw_roofline", None),
    ("torch_log_softmax", "`at::log_softmax_out(out, x, 1)` into a touched buffer", "rw_roofline", None),
    ("xent_logsumexp", "`xent::logsumexp_into`", "read_roofline", "torch_logsumexp"),
    ("xent_softmax", "`xent::softmax_into` into a touched buffer", "rw_roofline", "torch_softmax"),
    ("xent_log_softmax", "`xent::log_softmax_into` into a touched buffer", "rw_roofline", "torch_log_softmax"),
]
WHAT = {k: w for k, w, _, _ in KERNELS}
ROOFLINE_OF = {k: r for k, _, r, _ in KERNELS}
TORCH_OF = {k: t for k, _, _, t in KERNELS}
SHORT = {"read_roofline": "read", "rw_roofline": "read+write", "bf16_read_roofline": "bf16 read"}

# Peak-RSS runs: (mode, threads). Shapes: a large LLM batch, and the tiny-C shape where O(N) is large.
RSS_MODES = [("inputs", 1), ("fwd", 1), ("fwd", 2), ("fwd_grad", 1), ("fwd_grad", 2), ("fwd_grad_in_place", 1),
             ("torch_fwd", 1), ("torch_fwd_bwd", 1)]
RSS_SHAPES = [(4096, 32000), (1048576, 10)]
RSS_SHAPES_SMOKE = [(1024, 4096)]


def run(cmd, **kw):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def output(cmd):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def build(build_dir, target="xent_bench"):
    run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DXENT_NATIVE=ON",
         "-DXENT_BUILD_BENCH=ON", "-DXENT_BUILD_TESTS=OFF", "-DXENT_BUILD_EXAMPLES=OFF"])
    run(["cmake", "--build", build_dir, "--target", target, "-j2"])
    return os.path.join(build_dir, "bench", target)


def machine():
    lscpu = output(["lscpu"])
    field = lambda name: (re.search(r"^\s*" + re.escape(name) + r":\s*(.+)$", lscpu, re.M) or [None, "?"])[1].strip()
    perf = output(["sh", "-c", "perf stat -e instructions true 2>&1"])
    return {
        "model": field("Model name"),
        "cpus": field("CPU(s)"),
        "threads_per_core": field("Thread(s) per core"),
        "hypervisor": field("Hypervisor vendor"),
        "l1d": field("L1d cache"), "l2": field("L2 cache"), "l3": field("L3 cache"),
        "mem": (re.search(r"^Mem:\s+(\S+)", output(["free", "-h"]), re.M) or [None, "?"])[1],
        "kernel": output(["uname", "-sr"]).strip(),
        "perf_counters": bool(perf) and "not supported" not in perf and "instructions" in perf,
    }


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def deb_version(package):
    return output(["dpkg-query", "-W", "-f=${Version}", package]).strip() or "not installed"


def collect(report, unit="logit"):
    """{(kernel, shape, threads): summary of the repetitions}; shape is (N, C). unit: the counters'
    ns_per_<unit> (xent_bench: logit; xent_bench_losses: elem, one element of an N x C matrix)."""
    ns_key, wall_key = "ns_per_" + unit, "ns_per_" + unit + "_wall"
    samples = {}
    for b in report["benchmarks"]:
        if b.get("run_type") != "iteration" or ns_key not in b:
            continue
        if b.get("error_occurred"):
            sys.exit("benchmark %s failed: %s" % (b["name"], b.get("error_message")))
        m = re.match(r"([^/]+)/N:(\d+)/C:(\d+)/threads:(\d+)", b["name"])
        kernel, n, c, t = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        samples.setdefault((kernel, (n, c), t), []).append(b)
    stats = {}
    for key, runs in samples.items():
        ns = [r[ns_key] for r in runs]
        stats[key] = {
            "ns": statistics.median(ns), "min": min(ns), "max": max(ns), "reps": len(ns),
            "wall": statistics.median(r[wall_key] for r in runs),
            "cpu_per_wall": statistics.median(r.get("cpu_per_wall", 0) for r in runs),
            "load1": max(r.get("load1", -1) for r in runs),
        }
    return stats


def peak_rss(binary, mode, threads, shape):
    """Runs one --xent_rss mode under /usr/bin/time -v: {max, inputs, start} in bytes."""
    cmd = ["/usr/bin/time", "-v", binary, "--xent_rss=" + mode, "--xent_rss_shape=%dx%d" % shape,
           "--xent_threads=%d" % threads]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("peak-RSS run failed:\n" + p.stdout + p.stderr)
    line = re.search(r"^xent_rss .*$", p.stdout, re.M).group(0)
    kib = lambda name: int(re.search(name + r"=(-?\d+)", line).group(1))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    # /usr/bin/time's figure and the process's own VmHWM differ by a few pages; take the larger.
    return {"max": max(peak, kib("hwm_kib")) * 1024, "inputs": kib("rss_inputs_kib") * 1024,
            "start": kib("rss_start_kib") * 1024}


def fmt(x, digits=3):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return "%.0f" % x
    return ("%." + str(digits) + "g") % x


def shape_label(shape):
    return "N = %d, C = %d" % shape


class Doc:
    def __init__(self, stats, ctx):
        self.stats, self.ctx, self.lines = stats, ctx, []
        self.shapes = []
        for (_, shape, _) in stats:
            if shape not in self.shapes:
                self.shapes.append(shape)
        self.threads = sorted({t for (_, _, t) in stats})

    def w(self, line=""):
        self.lines.append(line)

    def get(self, kernel, shape, t, field="ns"):
        s = self.stats.get((kernel, shape, t))
        return s[field] if s else None

    def ratio(self, kernel, other, shape, t, field="ns"):
        """kernel's time / other's time at the same shape and thread count."""
        a, b = self.get(kernel, shape, t, field), self.get(other, shape, t, field)
        return a / b if a and b else None

    def speedup_vs_1_thread(self, kernel, shape, t):
        """Wall clock of the 1-thread row / wall clock of this row."""
        if t == 1:
            return None
        a, b = self.get(kernel, shape, 1, "wall"), self.get(kernel, shape, t, "wall")
        return a / b if a and b else None


def verdict(measured, goal, at_most):
    if measured is None:
        return "not measured"
    if (measured <= goal) if at_most else (measured >= goal):
        return "met"
    return "**missed** (off by %.2f×)" % (measured / goal if at_most else goal / measured)


def goal_rows(d, rss):
    """(goal, case, measured, verdict) for every goal of issue 5."""
    rows = []
    large = [s for s in d.shapes if s[1] >= 1000]
    for s in large:
        x = d.ratio("xent_ce_fwd", "read_roofline", s, 1)
        rows.append(("forward, 1 thread: ≤ 1.4× read roofline", shape_label(s), fmt(x) + "×", verdict(x, 1.4, True)))
    for s in large:
        x = d.ratio("torch_ce_fwd", "xent_ce_fwd", s, 1)
        rows.append(("forward, 1 thread: ≥ 10× faster than libtorch forward", shape_label(s), fmt(x) + "×",
                     verdict(x, 10, False)))
    if 2 in d.threads:
        for s in large:
            x = d.ratio("xent_ce_fwd", "read_roofline", s, 2)
            cpu = d.get("xent_ce_fwd", s, 2, "cpu_per_wall")
            rows.append(("forward, 2 threads: ≤ 1.15× 2-thread read roofline", shape_label(s),
                         "%s× (CPU/wall %s)" % (fmt(x), fmt(cpu, 2)), verdict(x, 1.15, True)))
    for s in d.shapes:
        x = d.ratio("xent_ce_fwd_grad", "rw_roofline", s, 1)
        rows.append(("forward + gradient, 1 thread: ≤ 1.5× read+write roofline", shape_label(s), fmt(x) + "×",
                     verdict(x, 1.5, True)))
    for s in d.shapes:
        x = d.ratio("torch_ce_fwd_bwd", "xent_ce_fwd_grad", s, 1)
        rows.append(("forward + gradient, 1 thread: ≥ 20× faster than libtorch forward + backward", shape_label(s),
                     fmt(x) + "×", verdict(x, 20, False)))
    # Issue 16: a per-sample weight or mask vector costs at most 5 % on the fused forward.
    for s in d.shapes:
        for kernel, what in (("xent_ce_fwd_sample_weight", "sample_weight"), ("xent_ce_fwd_mask", "mask")):
            x = d.ratio(kernel, "xent_ce_fwd", s, 1)
            if x is not None:
                rows.append(("forward with a %s vector, 1 thread: ≤ 1.05× the plain forward (issue 16)" % what,
                             shape_label(s), fmt(x) + "×", verdict(x, 1.05, True)))
    for s in d.shapes:
        if s[1] <= 16:
            x = d.ratio("xent_ce_fwd", "read_roofline", s, 1)
            rows.append(("C ≤ 16 forward, 1 thread: ≤ 4× read roofline", shape_label(s), fmt(x) + "×",
                         verdict(x, 4, True)))
    if 2 in d.threads:
        for s in d.shapes:
            if s[0] <= 64 and s[1] >= 100000:
                x = d.speedup_vs_1_thread("xent_ce_fwd", s, 2)
                cpu = d.get("xent_ce_fwd", s, 2, "cpu_per_wall")
                rows.append(("forward, 2 threads: ≥ 1.8× the 1-thread speed (wall clock)", shape_label(s),
                             "%s× (CPU/wall %s)" % (fmt(x), fmt(cpu, 2)), verdict(x, 1.8, False)))
    for (mode, t, shape), r in rss.items():
        n, c = shape
        logits = n * c * 4
        extra = (r["max"] - r["inputs"]) / logits
        # O(N): a few numbers per sample (16 bytes) plus 10% of the logits for the allocator and pages.
        allowance = 0.1 + 16.0 * n / logits
        measured = "inputs + %.2f× the logits" % extra
        if mode == "fwd":
            rows.append(("memory, forward (%d thread%s): peak RSS = inputs + O(N)" % (t, "s" if t > 1 else ""),
                         shape_label(shape), measured, verdict(extra, allowance, True)))
        elif mode == "fwd_grad":
            rows.append(("memory, forward + gradient (%d thread%s): inputs + one N × C output" % (t, "s" if t > 1 else ""),
                         shape_label(shape), measured, verdict(extra, 1 + allowance, True)))
        elif mode == "fwd_grad_in_place":
            rows.append(("memory, forward + gradient in place: inputs + O(N)", shape_label(shape), measured,
                         verdict(extra, allowance, True)))
    return rows


def generate(d, rss, info, command, loads):
    ctx, w = d.ctx, d.w
    has_torch = not ctx.get("torch_version", "none").startswith("none")
    w("<!-- Written by bench/run_bench.py from one run: edit the script, not this part. -->")
    w()
    w("Generated by `bench/run_bench.py` on %s. **Compare the ratios, not the absolute times**: every"
      % datetime.date.today().isoformat())
    w("ratio below divides medians taken in the same process run, over the same buffers (fp32 logits")
    w("`randn * 3`, int64 targets, torch `[N, C]` memory = Eigen column-major `C x N`), at the same thread")
    w("count. Absolute ns/logit move from run to run on this shared 2-core machine (load average %s" % loads[0])
    w("before the run, %s after it; each shape's heading gives the highest 1-minute load seen while its" % loads[1])
    w("rows ran). A 2-thread row needs both cores: its `CPU/wall` column says how much of the second core")
    w("it got (2.0 = all of it), and a figure far below 2 on a row that should scale means other jobs held it.")
    w()
    one = [s["cpu_per_wall"] for (k, _, t), s in d.stats.items() if t == 1]
    two = [s["cpu_per_wall"] for (k, _, t), s in d.stats.items() if t == 2 and k.endswith("roofline")]
    if one and statistics.median(one) < 0.9 or two and statistics.median(two) < 1.7:
        w("**This run shared the machine**: the 1-thread rows got %s of a core (median CPU/wall)%s." % (
            fmt(statistics.median(one), 2),
            ", the 2-thread rooflines %s of two" % fmt(statistics.median(two), 2) if two else ""))
        w("The 1-thread ratios (CPU time; other jobs still compete for memory bandwidth) are the more")
        w("reliable; the 2-thread rows (wall clock) measure the load: re-run on a quiet machine before")
        w("reading them.")
        w()
    w("## Against the goals of issue 5")
    w()
    w("Goals from `../shared/TARGETS.md`; ratios are medians of one run (× roofline: lower is better,")
    w("1.0 is the memory limit; × faster: higher is better). \"Off by\" is how far the figure is from")
    w("the goal, as a factor. Memory: peak RSS over the inputs (logits + targets), in multiples of the")
    w("logits' bytes; \"O(N)\" allows 16 bytes per sample plus 0.1× the logits.")
    w()
    w("| goal | shape | measured | |")
    w("|---|---|---|---|")
    for g in goal_rows(d, rss):
        w("| %s | %s | %s | %s |" % g)
    w()
    w("## Machine")
    w()
    w("| | |")
    w("|---|---|")
    w("| CPU | %s (%s CPUs, %s thread(s) per core; hypervisor: %s) |" % (
        info["model"], info["cpus"], info["threads_per_core"], info["hypervisor"]))
    w("| caches | L1d %s, L2 %s, L3 %s |" % (info["l1d"], info["l2"], info["l3"]))
    w("| memory | %s; %s |" % (info["mem"], info["kernel"]))
    w("| compiler | %s, `-O3 -march=native`, Release (Eigen SIMD in use: %s) |" % (
        ctx.get("compiler", "?"), ctx.get("eigen_simd", "?")))
    w("| OpenMP | `_OPENMP` = %s (libgomp, shared with libtorch) |" % ctx.get("openmp", "?"))
    w("| Eigen | %s (Debian libeigen3-dev %s) |" % (ctx.get("eigen_version", "?"), deb_version("libeigen3-dev")))
    w("| libtorch | %s (Debian libtorch-dev %s), `at::set_num_threads` = the row's thread count |" % (
        ctx.get("torch_version", "?"), deb_version("libtorch-dev")))
    w("| Google Benchmark | Debian libbenchmark-dev %s%s |" % (
        deb_version("libbenchmark-dev"), " (the Debian build calls itself a debug build: that slows the harness's"
        " bookkeeping between iterations, not the timed calls, each of which takes milliseconds)"
        if ctx.get("library_build_type") == "debug" else ""))
    w("| bf16 rows | %s |" % ctx.get("bf16_rows", "?"))
    w()
    w("## Reproduce")
    w()
    w("```sh")
    w(command)
    w("```")
    w()
    w("configures `build-bench/` (Release, `XENT_NATIVE=ON`), builds `xent_bench`, runs")
    w()
    w("```sh")
    w(" ".join(shlex.quote(c) for c in info["bench_cmd"]))
    w("```")
    w()
    w("then one process per peak-RSS figure (`/usr/bin/time -v build-bench/bench/xent_bench --xent_rss=MODE")
    w("--xent_rss_shape=NxC --xent_threads=T`), and rewrites this part of the file. The raw JSON of the")
    w("run is kept in `build-bench/bench.json`. `--xent_smoke` runs small shapes in seconds (CTest's")
    w("`bench.smoke`); `--benchmark_filter=REGEX` picks rows, e.g. `'xent_ce_fwd/N:4096/C:32000/threads:1'`.")
    w()
    w("## How the rows are timed")
    w()
    w("- Per shape, every 1-thread row runs before the 2-thread rows, in the order of the tables: the")
    w("  rooflines, libtorch, then xent. Before its first row, each shape's losses and gradients are")
    w("  checked against a double-precision reference and against libtorch (the bench fails otherwise).")
    w("- **1-thread rows: process CPU time** (user + system of every thread of the process: it excludes")
    w("  the time other jobs held the core, and would include a helper thread the kernel started;")
    w("  `CPU/wall` ≈ 1 shows none did). **2-thread rows: wall clock** (CPU time would add the two")
    w("  threads' times and hide the speedup); their `CPU/wall` is the cores they really had.")
    w("  \"2T vs 1T\" divides the two rows' wall-clock medians.")
    w("- The rooflines are plain loops over Eigen packets (same ISA flags as the kernels). At 2 threads")
    w("  each thread sums (or copies) one half of the buffer. Shapes whose logits fit in the caches")
    w("  (N = 16, C = 128256: 7.8 MiB) time their rooflines at cache bandwidth: a stricter reference.")
    w("- xent rows call the public functions with `cross_entropy_options::num_threads` = the row's")
    w("  thread count; torch rows run after `at::set_num_threads(T)`. The forward + gradient rows write")
    w("  into a buffer allocated and touched before timing; torch's allocates its gradient each step.")
    w()
    w("## Results (median of %d repetitions)" % max(s["reps"] for s in d.stats.values()))
    w()
    w("Columns: ns per logit on the row's clock (median, and min–max over the repetitions); its roofline")
    w("(same shape and thread count) and time / roofline time; libtorch's time for the same result / this")
    w("time; for 2-thread rows, the 1-thread wall time / this wall time; process CPU time / wall time.")
    w()
    w("Rows:")
    w()
    for kernel, what, _, _ in KERNELS:
        if any(k == kernel for (k, _, _) in d.stats):
            w("- `%s`: %s" % (kernel, what))
    w()
    for shape in d.shapes:
        n, c = shape
        load = max(s["load1"] for (k, sh, _), s in d.stats.items() if sh == shape)
        w("### N = %d, C = %d (%.1f MiB of logits; load ≤ %.2f)" % (n, c, n * c * 4 / 2**20, load))
        w()
        w("| row | threads | clock | ns/logit | min–max | × roofline | × faster than libtorch | 2T vs 1T | CPU/wall |")
        w("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for t in d.threads:
            for kernel, _, roof, torch in KERNELS:
                s = d.stats.get((kernel, shape, t))
                if not s:
                    continue
                x_roof = d.ratio(kernel, roof, shape, t) if roof else None
                speed = d.ratio(torch, kernel, shape, t) if torch else None
                name = "**`%s`**" % kernel if kernel.startswith("xent_") else "`%s`" % kernel
                w("| %s | %d | %s | %s | %s–%s | %s | %s | %s | %s |" % (
                    name, t, "CPU" if t == 1 else "wall", fmt(s["ns"]), fmt(s["min"]), fmt(s["max"]),
                    ("%s× %s" % (fmt(x_roof), SHORT[roof])) if x_roof else "—", fmt(speed),
                    fmt(d.speedup_vs_1_thread(kernel, shape, t)), fmt(s["cpu_per_wall"], 2)))
        read = d.get("read_roofline", shape, 1)
        w()
        if read:
            rw = d.get("rw_roofline", shape, 1)
            read2 = d.get("read_roofline", shape, 2, "wall")
            w("Read roofline: %s GB/s at 1 thread%s; read+write roofline: %s GB/s moved (read + written)." % (
                fmt(4.0 / read), (", %s GB/s at 2 threads" % fmt(4.0 / read2)) if read2 else "",
                fmt(8.0 / rw) if rw else "—"))
            w()

    if rss:
        w("## Peak memory")
        w()
        w("Each row is one process (`xent_bench --xent_rss=MODE`, no benchmark, no agreement check) that")
        w("builds the inputs (logits + int64 targets), reads its own RSS, runs MODE once and exits;")
        w("`/usr/bin/time -v` gives the peak (maximum resident set size). \"Over the inputs\" is peak minus")
        w("the RSS once the inputs were built, in multiples of the logits' bytes: 0 is the forward's goal")
        w("(inputs + O(N)); 1 is one N × C buffer (the gradient the caller provides). \"Peak − libraries\"")
        w("counts the inputs too (the logits are 1.0; the int64 targets add 2 / C).")
        w()
        w("| shape | run | threads | peak RSS (MiB) | inputs built (MiB) | peak − libraries, × logits | over the inputs, × logits |")
        w("|---|---|---:|---:|---:|---:|---:|")
        for (mode, t, shape), r in rss.items():
            logits = shape[0] * shape[1] * 4
            w("| %s | %s | %d | %.0f | %.0f | %.2f | %.2f |" % (
                shape_label(shape), mode, t, r["max"] / 2**20, r["inputs"] / 2**20, (r["max"] - r["start"]) / logits,
                (r["max"] - r["inputs"]) / logits))
        w()
        w("The process holds %.0f MiB before the inputs (libraries%s)." % (
            min(r["start"] for r in rss.values()) / 2**20, ", libtorch included" if has_torch else ""))
        w("`fwd_grad` counts the caller's gradient buffer; libtorch's forward allocates an N × C `log_softmax`")
        w("output, and its backward the gradient and its temporaries.")
        w()

    w("## Profiling on this machine")
    w()
    if info["perf_counters"]:
        w("Hardware counters work here: `perf stat -e instructions,cycles,cache-misses build-bench/bench/xent_bench")
        w("--benchmark_filter=ROW`, and `perf record -g` / `perf report` for the hot loop.")
    else:
        w("Hardware counters are not available in this VM (`perf stat -e instructions true` reports")
        w("`<not supported>`). Sampling on the software clock works: `perf record -e cpu-clock -g")
        w("build-bench/bench/xent_bench --benchmark_filter='xent_ce_fwd/N:4096/C:32000/threads:1'`, then")
        w("`perf report` / `perf annotate` for where the time goes. For instruction counts per logit use")
        w("`valgrind --tool=callgrind --dump-instr=yes build-bench/bench/xent_bench --xent_rss=fwd")
        w("--xent_rss_shape=64x32000` and `callgrind_annotate` (the --xent_rss modes run a call once).")
    return "\n".join(d.lines).rstrip() + "\n"


LEGACY_SECTION = re.compile(r"^## (Machine|Reproduce|Results|Against the goals|Peak memory|How the rows|Profiling)")


def splice(path, generated):
    """The file with its run_bench part replaced; what others wrote before or after it is kept."""
    head, tail = "# Performance\n\n", ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if BEGIN in text and END in text:
            head = text[:text.index(BEGIN)]
            tail = text[text.index(END) + len(END):]
        else:
            # Written before the markers: everything was generated except sections others appended.
            sections = re.split(r"(?m)^(?=## )", text)
            kept = [s for s in sections[1:] if not LEGACY_SECTION.match(s)]
            tail = "\n" + "".join(kept) if kept else ""
    tail = tail.rstrip()
    return head + BEGIN + "\n" + generated + END + ("\n\n" + tail.lstrip("\n") if tail else "") + "\n"


def main():
    if "--losses" in sys.argv[1:]:
        # Every other loss: its own binary, tables and section of the document.
        import run_loss_bench
        return run_loss_bench.main([a for a in sys.argv[1:] if a != "--losses"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "performance.md"))
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=None, help="--benchmark_min_time per repetition (s)")
    ap.add_argument("--smoke", action="store_true", help="small shapes (a quick look, not for the docs)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs")
    ap.add_argument("--reuse", action="store_true",
                    help="no build, no run: rewrite the document from the last run's bench.json and rss.json")
    args = ap.parse_args()
    if args.reuse:
        args.no_build = True

    binary = os.path.join(args.build_dir, "bench", "xent_bench") if args.no_build else build(args.build_dir)
    json_path = os.path.join(args.build_dir, "bench.json")
    bench_cmd = [binary] + (["--xent_smoke"] if args.smoke else []) + [
        "--benchmark_repetitions=%d" % args.repetitions] + (
        ["--benchmark_min_time=%g" % args.min_time] if args.min_time else []) + [
        "--benchmark_format=json", "--benchmark_out=" + json_path, "--benchmark_out_format=json"]
    rss_path = os.path.join(args.build_dir, "rss.json")
    if args.reuse:
        with open(rss_path) as f:
            saved = json.load(f)
        loads, rss = saved["loads"], {(m, t, tuple(s)): r for m, t, s, r in saved["rss"]}
    else:
        loads = [load_average()]
        with open(os.devnull, "w") as devnull:
            run(bench_cmd, stdout=devnull)  # the results go to --benchmark_out, progress to stderr
        loads.append(load_average())
        rss = {}
    with open(json_path) as f:
        report = json.load(f)
    ctx = report["context"]
    stats = collect(report)

    if not args.no_rss and not args.reuse:
        if not os.path.exists("/usr/bin/time"):
            sys.exit("/usr/bin/time is missing: apt-get install time (or pass --no-rss)")
        has_torch = not ctx.get("torch_version", "none").startswith("none")
        has_omp = not ctx.get("openmp", "none").startswith("none")
        for shape in RSS_SHAPES_SMOKE if args.smoke else RSS_SHAPES:
            for mode, t in RSS_MODES:
                if (mode.startswith("torch") and not has_torch) or (t > 1 and not has_omp):
                    continue
                rss[(mode, t, shape)] = peak_rss(binary, mode, t, shape)
    if not args.reuse:
        with open(rss_path, "w") as f:
            json.dump({"loads": loads, "rss": [[m, t, list(s), r] for (m, t, s), r in rss.items()]}, f)

    info = machine()
    rel = os.path.relpath(binary, ROOT)
    info["bench_cmd"] = [rel] + [c if not c.startswith("--benchmark_out=") else "--benchmark_out=" +
                                 os.path.relpath(json_path, ROOT) for c in bench_cmd[1:]]
    command = "/usr/bin/python3 bench/run_bench.py" + (" --smoke" if args.smoke else "") + (
        " --repetitions %d" % args.repetitions if args.repetitions != 3 else "")
    generated = generate(Doc(stats, ctx), rss, info, command, loads)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    text = splice(args.output, generated)
    with open(args.output, "w") as f:
        f.write(text)
    print("wrote", args.output)


if __name__ == "__main__":
    main()
