#!/usr/bin/python3
"""Builds xent_bench (Release, -O3 -march=native), runs it once and writes docs/performance.md.

Every ratio in the document is taken from one run of one process over the same buffers: the
medians of its repetitions, divided by the medians of the rooflines and of libtorch of the same
run. Absolute ns/logit move between runs on shared machines; the ratios are what to compare.

    /usr/bin/python3 bench/run_bench.py                 # build, run, write docs/performance.md
    /usr/bin/python3 bench/run_bench.py --smoke -o /tmp/perf.md   # small shapes, a quick look

Only the standard library; /usr/bin/time (Debian package `time`) for the peak-RSS section.
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

# The order of the rows of every table, and what each one is.
KERNELS = [
    ("read_roofline", "read roofline: vectorised sum of the logits, 8 accumulators"),
    ("rw_roofline", "read+write roofline: y = x + 1 into a touched buffer"),
    ("exp_pass", "exp floor: one read pass summing xent's packet exp (Eigen pexp) of every logit"),
    ("xent_logsumexp", "xent::logsumexp_into (stand-in for the CE forward until the fused CE lands)"),
    ("xent_softmax", "xent::softmax_into, into a touched buffer"),
    ("xent_log_softmax", "xent::log_softmax_into, into a touched buffer"),
    ("torch_logsumexp", "torch::logsumexp(x, 1)"),
    ("torch_softmax", "at::softmax_out(out, x, 1), into a touched buffer"),
    ("torch_log_softmax", "at::log_softmax_out(out, x, 1), into a touched buffer"),
    ("torch_ce_fwd", "F::cross_entropy(x, t) forward, mean"),
    ("torch_ce_fwd_bwd", "F::cross_entropy(x, t) forward + backward (grad set to none each step)"),
]
WRITES = {"rw_roofline", "xent_softmax", "xent_log_softmax", "torch_softmax", "torch_log_softmax"}
TORCH_OF = {"xent_logsumexp": "torch_logsumexp", "xent_softmax": "torch_softmax",
            "xent_log_softmax": "torch_log_softmax"}

RSS_SHAPE = "N:4096/C:32000"
RSS_KERNELS = ["xent_logsumexp", "xent_softmax", "torch_ce_fwd", "torch_ce_fwd_bwd"]


def run(cmd, **kw):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def output(cmd):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def build(build_dir):
    run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DXENT_NATIVE=ON",
         "-DXENT_BUILD_BENCH=ON", "-DXENT_BUILD_TESTS=OFF", "-DXENT_BUILD_EXAMPLES=OFF"])
    run(["cmake", "--build", build_dir, "--target", "xent_bench", "-j2"])
    return os.path.join(build_dir, "bench", "xent_bench")


def machine():
    lscpu = output(["lscpu"])
    field = lambda name: (re.search(r"^" + re.escape(name) + r":\s*(.+)$", lscpu, re.M) or [None, "?"])[1].strip()
    return {
        "model": field("Model name"),
        "cpus": field("CPU(s)"),
        "threads_per_core": field("Thread(s) per core"),
        "hypervisor": field("Hypervisor vendor"),
        "l1d": field("L1d cache"), "l2": field("L2 cache"), "l3": field("L3 cache"),
        "avx512": "yes" if " avx512f " in " " + field("Flags") + " " else "no",
        "mem": (re.search(r"^Mem:\s+(\S+)", output(["free", "-h"]), re.M) or [None, "?"])[1],
        "kernel": output(["uname", "-sr"]).strip(),
    }


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def deb_version(package):
    return output(["dpkg-query", "-W", "-f=${Version}", package]).strip() or "not installed"


def medians(report):
    """{(kernel, shape): (median, min, max) of ns_per_logit over the repetitions}."""
    samples = {}
    for b in report["benchmarks"]:
        if b.get("run_type") != "iteration" or "ns_per_logit" not in b:
            continue
        if b.get("error_occurred"):
            sys.exit("benchmark %s failed: %s" % (b["name"], b.get("error_message")))
        kernel, n, c = re.match(r"([^/]+)/(N:\d+)/(C:\d+)", b["name"]).groups()
        samples.setdefault((kernel, n + "/" + c), []).append(b["ns_per_logit"])
    return {k: (statistics.median(v), min(v), max(v), len(v)) for k, v in samples.items()}


def peak_rss(binary, shape, kernel, extra=()):
    """Max RSS in bytes of a process that runs only `kernel` at `shape`, and how long it ran."""
    cmd = ["/usr/bin/time", "-v", binary, "--xent_no_check", *extra, "--benchmark_min_time=0.01",
           "--benchmark_filter=^%s/%s$" % (kernel, shape)]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("peak-RSS run failed:\n" + p.stdout + p.stderr)
    if "Failed to match any benchmarks" in p.stdout + p.stderr:
        if kernel.startswith("torch_"):
            return None  # built without libtorch
        sys.exit("peak-RSS run matched no benchmark: %s/%s" % (kernel, shape))
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return kb * 1024


def fmt(x, digits=3):
    if x is None:
        return "—"
    if x >= 100:
        return "%.0f" % x
    return ("%." + str(digits) + "g") % x


def shape_dims(shape):
    n, c = (int(v) for v in re.findall(r"\d+", shape))
    return n, c


def write_doc(path, report, stats, rss, info, command, loads):
    ctx = report["context"]
    shapes = []
    for (_, shape) in stats:
        if shape not in shapes:
            shapes.append(shape)
    has_torch = any(k.startswith("torch_") for (k, _) in stats)
    out = []
    w = out.append
    w("# Performance")
    w("")
    w("Generated by `bench/run_bench.py` on %s. **Compare the ratios, not the absolute times**: every"
      % datetime.date.today().isoformat())
    w("ratio below divides medians taken in the same process run, over the same buffers (fp32 logits")
    w("`randn * 3`, int64 targets, torch `[N, C]` memory = Eigen column-major `C x N`), one thread.")
    w("Absolute ns/logit move from run to run on this shared machine (other jobs were running: load")
    w("average %s before the run, %s after it)." % (loads[0], loads[1]))
    w("")
    w("The fused cross-entropy has not landed yet: `xent_logsumexp` stands in for the CE forward (the")
    w("forward is this pass plus a gather of N target logits and a mean, see `check_agreement` in")
    w("`bench/bench_kernels.cpp`, which holds it to `F::cross_entropy` on every shape).")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w("| CPU | %s (%s CPUs, %s thread(s) per core; hypervisor: %s) |" % (
        info["model"], info["cpus"], info["threads_per_core"], info["hypervisor"]))
    w("| caches | L1d %s, L2 %s, L3 %s |" % (info["l1d"], info["l2"], info["l3"]))
    w("| memory | %s; %s |" % (info["mem"], info["kernel"]))
    w("| compiler | %s, `-O3 -march=native` (Eigen SIMD in use: %s) |" % (ctx.get("compiler", "?"), ctx.get("eigen_simd", "?")))
    w("| Eigen | %s (Debian libeigen3-dev %s) |" % (ctx.get("eigen_version", "?"), deb_version("libeigen3-dev")))
    w("| libtorch | %s (Debian libtorch-dev %s), `at::set_num_threads(1)` |" % (
        ctx.get("torch_version", "?"), deb_version("libtorch-dev")))
    w("| Google Benchmark | Debian libbenchmark-dev %s |" % deb_version("libbenchmark-dev"))
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w(command)
    w("```")
    w("")
    w("It configures `build-bench/` (Release, `XENT_NATIVE=ON`), builds `xent_bench`, runs")
    w("")
    w("```sh")
    w(" ".join(shlex.quote(c) for c in info["bench_cmd"]))
    w("```")
    w("")
    w("and the peak-RSS runs below, and rewrites this file. The raw JSON of the run is kept next to")
    w("the build (`build-bench/bench.json`).")
    w("")
    w("## Results (median of %d repetitions)" % max(v[3] for v in stats.values()))
    w("")
    w("Columns: ns per logit (median, and the min–max over the repetitions); × read roofline and × read+write")
    w("roofline (time / roofline time: 1.0 is the memory limit, lower is better); × faster than libtorch")
    w("(libtorch's time for the same result / xent's time: higher is better; for `xent_logsumexp` the")
    w("first figure is against `torch::logsumexp`, the second against `F::cross_entropy` forward).")
    w("")
    w("Kernels:")
    w("")
    for kernel, what in KERNELS:
        if any(k == kernel for (k, _) in stats):
            w("- `%s`: %s" % (kernel, what))
    w("")
    w("Times are the benchmark thread's CPU time (user + system): on this shared 2-core machine the wall")
    w("clock also counts time other jobs held the core. The JSON also has `ns_per_logit_wall`.")
    w("Shapes whose logits fit in the L3 (N = 16, C = 128256; N = 1M, C = 10) time their rooflines at")
    w("cache bandwidth, not DRAM's: their × roofline figures are stricter than the others'.")
    w("")
    for shape in shapes:
        n, c = shape_dims(shape)
        w("### N = %d, C = %d (%.1f MiB of logits)" % (n, c, n * c * 4 / 2**20))
        w("")
        w("| kernel | ns/logit | min–max | × read roofline | × read+write roofline | × faster than libtorch |")
        w("|---|---:|---:|---:|---:|---:|")
        read = stats.get(("read_roofline", shape), (None,))[0]
        rw = stats.get(("rw_roofline", shape), (None,))[0]
        for kernel, what in KERNELS:
            if (kernel, shape) not in stats:
                continue
            med, lo, hi, _ = stats[(kernel, shape)]
            x_read = med / read if read else None
            x_rw = med / rw if (rw and kernel in WRITES) else None
            speed = "—"
            if kernel in TORCH_OF and (TORCH_OF[kernel], shape) in stats:
                speed = fmt(stats[(TORCH_OF[kernel], shape)][0] / med)
                if kernel == "xent_logsumexp" and ("torch_ce_fwd", shape) in stats:
                    speed += " (CE fwd: %s)" % fmt(stats[("torch_ce_fwd", shape)][0] / med)
            name = "**`%s`**" % kernel if kernel.startswith("xent_") else "`%s`" % kernel
            w("| %s | %s | %s–%s | %s | %s | %s |" % (
                name, fmt(med), fmt(lo), fmt(hi), fmt(x_read), fmt(x_rw), speed))
        w("")
        w("Read roofline: %.1f GB/s." % (4.0 / read) if read else "")
        w("")

    w("## Against the goals (docs: ../shared/TARGETS.md)")
    w("")
    w("| goal | shape | measured |")
    w("|---|---|---|")
    for shape in shapes:
        n, c = shape_dims(shape)
        key = ("xent_logsumexp", shape)
        if key not in stats or ("read_roofline", shape) not in stats:
            continue
        med = stats[key][0]
        ratio = med / stats[("read_roofline", shape)][0]
        if c >= 1000:
            goal = "CE forward ≤ 1.4× read roofline, ≥ 10× faster than libtorch CE forward"
        elif c == 10:
            goal = "C = 10: CE forward ≤ 4× read roofline"
        else:
            continue
        torch = stats.get(("torch_ce_fwd", shape))
        w("| %s | N = %d, C = %d | logsumexp stand-in: %s× read roofline%s |" % (
            goal, n, c, fmt(ratio), (", %s× faster than F::cross_entropy" % fmt(torch[0] / med)) if torch else ""))
    w("")

    if rss:
        n, c = shape_dims(RSS_SHAPE)
        logits = n * c * 4
        w("## Peak memory")
        w("")
        w("Each row is a separate process that runs one benchmark at N = %d, C = %d (`/usr/bin/time -v`," % (n, c))
        w("maximum resident set size; `--xent_no_check` skips the agreement check, which would run torch).")
        w("The process holds the logits (%.0f MiB) and the int64 targets (%.2f MiB) whatever it runs; the"
          % (logits / 2**20, n * 8 / 2**20))
        w("baseline is the same binary on a tiny shape (libtorch loaded, no large buffer).")
        w("")
        w("| run | max RSS (MiB) | (max RSS − baseline) / logits bytes |")
        w("|---|---:|---:|")
        base = rss.get("baseline")
        for name, value in rss.items():
            if value is None:
                continue
            over = "—" if name == "baseline" or not base else "%.2f" % ((value - base) / logits)
            w("| %s | %.0f | %s |" % (name, value / 2**20, over))
        w("")
        w("Read as multiples of the logits: 1.0 is the logits alone (the goal for a forward: inputs + O(N)).")
        w("`xent_softmax` adds its N × C output; torch's forward allocates an N × C `log_softmax`")
        w("temporary; its forward + backward keeps that and allocates the gradient (and its temporaries).")
        w("")

    with open(path, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "performance.md"))
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="small shapes (a quick look, not for the docs)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs")
    args = ap.parse_args()

    binary = os.path.join(args.build_dir, "bench", "xent_bench") if args.no_build else build(args.build_dir)
    json_path = os.path.join(args.build_dir, "bench.json")
    bench_cmd = [binary] + (["--xent_smoke"] if args.smoke else []) + [
        "--benchmark_repetitions=%d" % args.repetitions, "--benchmark_format=json",
        "--benchmark_out=" + json_path, "--benchmark_out_format=json"]
    loads = [load_average()]
    with open(os.devnull, "w") as devnull:
        run(bench_cmd, stdout=devnull)  # the results go to --benchmark_out, progress to stderr
    loads.append(load_average())
    with open(json_path) as f:
        report = json.load(f)
    stats = medians(report)

    rss = {}
    if not args.no_rss and not args.smoke:
        if not os.path.exists("/usr/bin/time"):
            sys.exit("/usr/bin/time is missing: apt-get install time (or pass --no-rss)")
        rss["baseline"] = peak_rss(binary, "N:64/C:1000", "xent_logsumexp", ["--xent_smoke"])
        for kernel in RSS_KERNELS:
            rss[kernel] = peak_rss(binary, RSS_SHAPE, kernel)

    info = machine()
    rel = os.path.relpath(binary, ROOT)
    info["bench_cmd"] = [rel] + [c if not c.startswith("--benchmark_out=") else "--benchmark_out=" +
                                 os.path.relpath(json_path, ROOT) for c in bench_cmd[1:]]
    command = "/usr/bin/python3 bench/run_bench.py" + (" --smoke" if args.smoke else "")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_doc(args.output, report, stats, rss, info, command, loads)


if __name__ == "__main__":
    main()
