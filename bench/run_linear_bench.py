#!/usr/bin/python3
"""Runs xent_bench_linear and prints the "Linear cross-entropy" section of docs/performance.md.

Every ratio comes from one process: each fused or materialised row times its baseline (one bare GEMM,
or the three bare training GEMMs) in the same iteration on the same buffers (bench/bench_linear.cpp);
the table shows the medians over the repetitions. Peak RSS comes from separate processes that run one
mode once (--xent_mode) under /usr/bin/time -v.

    cmake --build build -j2 --target xent_bench_linear
    /usr/bin/python3 bench/run_linear_bench.py --build build > /tmp/linear.md     # then paste into docs/performance.md
    /usr/bin/python3 bench/run_linear_bench.py --build build --shapes N:2048/D:2048/V:32000 --repetitions 1
    /usr/bin/python3 bench/run_linear_bench.py --build build --smoke               # checks the script only

Only the standard library; /usr/bin/time (Debian package `time`) for the peak RSS.
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys

MODES = [
    ("gemm", "bare Eigen GEMM: the N x V logits, materialised"),
    ("gemm_ce", "GEMM + xent::cross_entropy on the materialised logits"),
    ("linear_fwd", "xent::linear_cross_entropy (fused forward)"),
    ("three_gemms", "three bare GEMMs: logits, grad_hidden = W dZ, grad_W = H dZ^T"),
    ("gemm_ce_train", "GEMM + cross_entropy + cross_entropy_backward + the two gradient GEMMs"),
    ("linear_train", "xent::linear_cross_entropy_with_grad (fused, one call)"),
    ("linear_fwd_bwd", "xent::linear_cross_entropy, then linear_cross_entropy_backward"),
    ("topk_fwd", "xent::linear_divergence against a k = 64 top-k teacher (fused forward, forward KL)"),
    ("topk_train", "xent::linear_divergence_with_grad against the same teacher"),
]
SHAPES = ["N:2048/D:2048/V:32000", "N:2048/D:2048/V:128256"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd):
    log("+", " ".join(shlex.quote(c) for c in cmd))
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def first_line(cmd):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    return "%s, %d logical CPUs, %s RAM, Linux %s; %s" % (model, os.cpu_count(), mem, platform.release(),
                                                         first_line(["c++", "--version"]))


def bench(exe, shape, threads, repetitions, smoke):
    """One process per shape and thread count: a run lost to a signal costs only its own rows (it is
    retried once)."""
    cmd = [exe, "--benchmark_filter=/%s/T:%d(/|$)" % (re.escape(shape), threads),
           "--benchmark_repetitions=%d" % repetitions, "--benchmark_format=json"]
    if smoke:
        cmd += ["--xent_smoke", "--benchmark_min_time=0.01"]
    try:
        out = run(cmd).stdout
    except subprocess.CalledProcessError as e:
        log("run failed (%s), retrying once" % e)
        out = run(cmd).stdout
    data = json.loads(out)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        name = b["run_name"].replace("/manual_time", "")
        rows.setdefault(name, []).append(b)
    return data["context"], rows


def median(rows, key):
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else None


def rss_kib(exe, mode, shape, threads):
    n, d, v = (int(x.split(":")[1]) for x in shape.split("/"))
    cmd = ["/usr/bin/time", "-v", exe, "--xent_mode=" + mode, "--xent_shape=%d,%d,%d" % (n, d, v),
           "--xent_threads=%d" % threads]
    result = run(cmd)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--repetitions", default="3,1", help="per shape, comma-separated (the last one repeats)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, e.g. N:2048/D:2048/V:32000")
    ap.add_argument("--rss-shape", default=SHAPES[0])
    ap.add_argument("--smoke", action="store_true", help="the bench's small shapes: checks this script, times nothing")
    args = ap.parse_args()
    if args.smoke:
        args.shapes, args.rss_shape = "N:64/D:32/V:1000", "N:64/D:32/V:1000"
    exe = os.path.join(args.build, "bench", "xent_bench_linear")
    shapes = args.shapes.split(",")

    load_before = loadavg()
    reps = [int(r) for r in str(args.repetitions).split(",")]
    reps_of = {shape: reps[min(i, len(reps) - 1)] for i, shape in enumerate(shapes)}
    rows = {}
    for shape in shapes:
        for threads in (1, 2):
            rows.update(bench(exe, shape, threads, reps_of[shape], args.smoke)[1])
    load_after = loadavg()
    rss = {m: rss_kib(exe, m, args.rss_shape, 1) for m in ["inputs"] + [m for m, _ in MODES]}

    p = print
    p("## Linear cross-entropy")
    p()
    p("`xent::linear_cross_entropy` (fused GEMM-tiled forward) and `linear_cross_entropy_with_grad`")
    p("(forward + gradients) against the Eigen GEMMs they are made of, fp32, `bench/bench_linear.cpp`.")
    p("Goals (issue 6): forward <= 1.05x one bare GEMM with extra memory O(N) + one block per thread;")
    p("training <= 1.15x three bare GEMMs.")
    p()
    p("Machine: %s. Eigen %s (GEMM single-threaded unless T:2, where the bare GEMMs use 2 OpenMP threads"
      % (machine(), "3.4"))
    p("and xent a team of 2 workers, each running single-threaded GEMMs on its own tiles). Load average %s before, %s after the run (a shared machine:" % (load_before, load_after))
    p("read the ratios, taken in the same iterations on the same buffers, not the absolute times).")
    p()
    p("Command: `%s`" % " ".join(["/usr/bin/python3", "bench/run_linear_bench.py", "--build", args.build,
                                  "--repetitions", str(args.repetitions), "--shapes", args.shapes]
                                 + (["--smoke"] if args.smoke else [])))
    p()
    p("Hidden states U(-sqrt 3, sqrt 3), weights scaled to logits of standard deviation 3, uniform random")
    p("targets, default options (mean, no smoothing, z-loss or softcap). Medians of the repetitions;")
    p("x = time of the row / time of its baseline in the same iteration (wall clock), x cpu = the same ratio of")
    p("process CPU time (all threads), which other processes' load does not inflate.")
    for shape in shapes:
        for threads in (1, 2):
            present = [m for m, _ in MODES if "%s/%s/T:%d" % (m, shape, threads) in rows]
            if not present:
                continue
            p()
            p("### %s, %d thread%s (%d repetition%s)" % (shape.replace("/", ", ").replace(":", " = "), threads,
                                                     "" if threads == 1 else "s", reps_of[shape],
                                                     "" if reps_of[shape] == 1 else "s"))
            p()
            p("| row | what | time (s) | x baseline | x baseline, cpu |")
            p("|---|---|---:|---:|---:|")
            for m, what in MODES:
                r = rows.get("%s/%s/T:%d" % (m, shape, threads))
                if not r:
                    continue
                t = median(r, "real_time") / 1000.0
                key = "x_gemm" if m in ("gemm_ce", "linear_fwd", "topk_fwd") else "x_3gemm"
                ratio, cpu = median(r, key), median(r, key + "_cpu")
                base = "one GEMM" if key == "x_gemm" else "three GEMMs"
                fmt = lambda v: "—" if v is None else "%.3f" % v
                if m in ("gemm", "three_gemms"):
                    p("| `%s` | %s | %.2f | (baseline) | |" % (m, what, t))
                else:
                    p("| `%s` | %s | %.2f | %s (%s) | %s |" % (m, what, t, fmt(ratio), base, fmt(cpu)))
    p()
    p("### Peak memory, %s, 1 thread" % args.rss_shape.replace("/", ", ").replace(":", " = "))
    p()
    n, d, v = (int(x.split(":")[1]) for x in args.rss_shape.split("/"))
    logits_mib = n * v * 4 / 1048576
    p("Each row is a separate process running one mode once (`xent_bench_linear --xent_mode=<row>`) under")
    p("`/usr/bin/time -v` (maximum resident set size). `inputs` allocates and fills the inputs only")
    p("(hidden %.0f MiB, weight %.0f MiB); the N x V logits would be %.0f MiB. Training rows hold" % (
        n * d * 4 / 1048576, d * v * 4 / 1048576, logits_mib))
    p("their gradient outputs too (grad_hidden %.0f MiB, grad_W %.0f MiB)." % (n * d * 4 / 1048576, d * v * 4 / 1048576))
    p()
    p("| mode | max RSS (MiB) | above inputs (MiB) | above inputs + outputs, in logits |")
    p("|---|---:|---:|---:|")
    base = rss["inputs"] / 1024
    outputs = (n * d + d * v) * 4 / 1048576
    for m in ["inputs"] + [m for m, _ in MODES]:
        k = rss[m]
        if k is None:
            continue
        mib = k / 1024
        above = mib - base
        out = outputs if m in ("three_gemms", "gemm_ce_train", "linear_train", "linear_fwd_bwd") else 0
        p("| `%s` | %.0f | %.0f | %s |" % (m, mib, above, "—" if m == "inputs" else "%.2f" % ((above - out) / logits_mib)))


if __name__ == "__main__":
    main()
