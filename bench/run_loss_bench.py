#!/usr/bin/python3
"""Every loss against the rooflines of its own inputs and libtorch: builds xent_bench_losses (Release,
-O3 -march=native), runs it, measures each loss's peak memory, and writes its section of
docs/performance.md (between <!-- run_loss_bench:begin --> and <!-- run_loss_bench:end -->; the rest
of the file, run_bench.py's section included, is kept).

The whole thing is one command, from the repository's root:

    /usr/bin/python3 bench/run_bench.py --losses      # = /usr/bin/python3 bench/run_loss_bench.py

It takes about 25 minutes on a 2-core guest: about 1 to build, 20 to 22 for the benchmark (3 shapes x
15 losses x 1 and 2 threads, medians of 3 repetitions of at least 0.25 s each; libtorch's composed
sigmoid focal forward + backward at 4096 x 32000 alone is ~10 s a call) and 2 for the peak-memory
processes. The run holds at most ~7 GB (two 0.5 GB inputs, the output buffer and libtorch's autograd
temporaries). Time it on a quiet machine: `uptime` should show a load average below ~1.2 before it
starts, and the document says how loaded the run was. Pieces of a run:

    /usr/bin/python3 bench/run_bench.py --losses --shapes 65536x1000 --threads 1   # one shape, 1 thread
    /usr/bin/python3 bench/run_bench.py --losses --smoke -o /tmp/perf.md          # tiny shapes, seconds
    /usr/bin/python3 bench/run_bench.py --losses --reuse                          # rewrite from the last run

Every ratio is taken from one run of one process over the same buffers: medians of the repetitions
divided by the medians of the same shape's rooflines (of that loss's inputs) and libtorch rows at the
same thread count. Only the standard library (and run_bench.py's helpers); /usr/bin/time (Debian
package `time`) for the whole run's peak RSS.
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
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench  # noqa: E402  (its build, machine and formatting helpers)
from run_bench import ROOT, fmt, shape_label  # noqa: E402

BEGIN = "<!-- run_loss_bench:begin -->"
END = "<!-- run_loss_bench:end -->"
BINARY = "xent_bench_losses"

# The goals of issue 13 (item 7), ratios from one run, never asserted in tests.
FWD_ROOF, FWD_TORCH = 2.0, 5.0      # forward, 1 thread, C >= 1000: <= 2x read roofline, >= 5x libtorch
GRAD_ROOF, GRAD_TORCH = 2.0, 10.0   # forward + gradient: <= 2x read + write, >= 10x libtorch fwd + bwd
GOAL_MIN_C = 1000
CE_TODAY_SLACK = 1.03               # cross-entropy: no slower than today's table, within 3 %
CE_C10_ROOF = 4.0                   # cross-entropy forward at C = 10: <= 4x read roofline
CE_2T_ROOF = 1.3                    # cross-entropy forward, 2 threads: <= 1.3x the 2-thread read roofline
# Issue 17's goals for the divergences between two logit sets (xent::divergence): the same rooflines,
# but >= 10x libtorch's composition (log_softmax twice + kl_div + autograd) forward too, not 5x.
DIVERGENCES = ("fkl", "rkl", "jsd", "tvd")
DIV_FWD_TORCH = 10.0
NO_TEMPORARY = ("distill", "distill_mixed", "fkl", "rkl", "jsd", "tvd", "sigmoid_focal", "softmax_focal")

# Peak-memory processes: every loss, forward and forward + gradient, 1 thread. A large C (each N x C
# temporary is 125 MiB) and the tiny-C shape, where O(N) buffers are a tenth of a matrix.
RSS_SHAPES = [(1024, 32000), (1048576, 10)]
RSS_SHAPES_SMOKE = [(64, 1000)]

INPUTS = [
    ("x", "logits, randn * 3"),
    ("z", "a second randn * 3: teacher logits (distillation), v (HVP)"),
    ("p", "softmax(z) per sample: probability targets (soft cross-entropy, kl_div's target)"),
    ("logp", "log_softmax(x) per sample: log-probabilities (nll_loss, kl_div's input)"),
    ("pb", "sigmoid(randn): probabilities in (0, 1) (binary_cross_entropy)"),
    ("b", "0/1 floats, P(1) = 1/2: binary targets"),
]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^flags\s*:\s*(.*)$", f.read(), re.M)
    except OSError:
        return []
    return m.group(1).split() if m else []


def isa_summary():
    flags = cpu_flags()
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    return "avx2: %s; fma: %s; avx512: %s" % ("yes" if "avx2" in flags else "no", "yes" if "fma" in flags else "no",
                                               " ".join(avx512) if avx512 else "none")


def run_benchmark(cmd):
    """Runs the benchmark (under /usr/bin/time -v when present): its stderr goes to ours, and the lines
    the binary writes about disagreements are kept. Returns (returncode, those lines, peak RSS in
    bytes or None, seconds)."""
    timed = os.path.exists("/usr/bin/time")
    full = (["/usr/bin/time", "-v"] if timed else []) + cmd
    print("+", " ".join(shlex.quote(c) for c in full), flush=True)
    start = time.monotonic()
    p = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    notes, tail = [], []
    for line in p.stderr:
        sys.stderr.write(line)
        if line.startswith(BINARY + ":"):
            notes.append(line[len(BINARY) + 1:].strip())
        tail.append(line)
    p.wait()
    peak = None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", "".join(tail[-40:]))
    if m:
        peak = int(m.group(1)) * 1024
    return p.returncode, notes, peak, time.monotonic() - start


def peak_rss(binary, loss, mode, shape, threads=1):
    """One --xent_rss process: {"extra": bytes over the inputs, "inputs": bytes, "reset": bool} or None."""
    cmd = [binary, "--xent_rss=%s:%s" % (loss, mode), "--xent_rss_shape=%dx%d" % shape, "--xent_threads=%d" % threads]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"^xent_rss .*$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        return {"error": (p.stderr.strip() or p.stdout.strip() or "exit %d" % p.returncode)[-300:]}
    line = m.group(0)
    kib = lambda name: int(re.search(name + r"=(-?\d+)", line).group(1))
    return {"extra": (kib("hwm_kib") - kib("rss_inputs_kib")) * 1024, "inputs": (kib("rss_inputs_kib") - kib("rss_start_kib")) * 1024,
            "reset": kib("hwm_reset") == 1}


class Run:
    """One run's medians, with the loss metadata the binary put in the JSON context."""

    def __init__(self, stats, ctx):
        self.stats, self.ctx = stats, ctx
        self.shapes = []
        for (_, shape, _) in stats:
            if shape not in self.shapes:
                self.shapes.append(shape)
        self.threads = sorted({t for (_, _, t) in stats})
        self.losses = [l for l in ctx.get("losses", "").split(",") if l]

    def call(self, loss, what):
        return self.ctx.get("call.%s.%s" % (loss, what), "")

    def inputs(self, loss):
        return self.call(loss, "inputs").split(",")

    def kind(self, loss):
        return self.call(loss, "kind")

    def has_grad(self, loss):
        c = self.call(loss, "fwd_grad")
        return bool(c) and not c.startswith("none")

    def roofline(self, loss, rw):
        return ("roofline_rw_" if rw else "roofline_read_") + "_".join(self.inputs(loss))

    def fwd_roofline(self, loss):
        return self.roofline(loss, self.kind(loss) == "matrix")

    def get(self, kernel, shape, t, field="ns"):
        s = self.stats.get((kernel, shape, t))
        return s[field] if s else None

    def ratio(self, a, b, shape, t, field="ns"):
        x, y = self.get(a, shape, t, field), self.get(b, shape, t, field)
        return x / y if x and y else None


def short(v):
    return "met" if v == "met" else ("**missed**" if v.startswith("**missed") else v)


def verdict(x, goal, at_most, applies=True):
    if x is None:
        return "not measured"
    if not applies:
        return "no goal"
    return run_bench.verdict(x, goal, at_most)


def goal_cell(x, unit, goal, at_most, applies):
    if x is None:
        return "—"
    v = verdict(x, goal, at_most, applies)
    return "%s× %s: %s" % (fmt(x), unit, short(v) if applies else "(no goal)")


class Tally:
    def __init__(self):
        self.met = self.missed = 0

    def add(self, x, goal, at_most, applies=True):
        if x is None or not applies:
            return
        if (x <= goal) if at_most else (x >= goal):
            self.met += 1
        else:
            self.missed += 1


def memory_allowance(shape, matrix_output):
    """Extra bytes over the inputs that the goal allows, in multiples of one N x C matrix: O(N) is
    16 bytes per sample plus 0.1x a matrix (allocator, pages); plus the caller's N x C output."""
    n, c = shape
    return (1.0 if matrix_output else 0.0) + 0.1 + 16.0 * n / (4.0 * n * c)


def generate(r, rss, meta, baseline):
    out = []
    w = out.append
    has_torch = not r.ctx.get("torch_version", "none").startswith("none")
    w("<!-- Written by bench/run_loss_bench.py (bench/run_bench.py --losses) from one run: edit the script, not this part. -->")
    w("")
    w("## Every loss against its inputs' rooflines and libtorch")
    w("")
    if meta.get("label"):
        w("> **%s**" % meta["label"])
        w("")
    w("Generated by `%s` on %s (%.0f s for the benchmark, peak RSS of the run %s). Machine: %s, %s CPUs; %s."
      % (meta["command"], meta["date"], meta["seconds"],
         ("%.1f GiB" % (meta["peak"] / 2**30)) if meta.get("peak") else "not measured",
         meta["machine"]["model"], meta["machine"]["cpus"], meta["isa"]))
    w("Load average %s before the run, %s after it. Ratios below are medians of one process over the same"
      % (meta["loads"][0], meta["loads"][1]))
    w("buffers (fp32, torch `[N, C]` memory = Eigen column-major `C x N`); every figure is ns per element of")
    w("one N × C matrix. The rooflines are those of *each loss's own inputs*: one read of all of its")
    w("same-shape inputs (two streams at once for two), and for forward + gradient that read plus one N × C")
    w("write, measured in the same run, on the same buffers, at the same thread count.")
    w("")
    one = [s["cpu_per_wall"] for (k, _, t), s in r.stats.items() if t == 1]
    two = [s["cpu_per_wall"] for (k, _, t), s in r.stats.items() if t == 2 and k.startswith("roofline")]
    if (one and statistics.median(one) < 0.9) or (two and statistics.median(two) < 1.7):
        w("**This run shared the machine**: the 1-thread rows got %s of a core (median CPU/wall)%s. Re-run on a"
          % (fmt(statistics.median(one), 2), ", the 2-thread rooflines %s of two" % fmt(statistics.median(two), 2) if two else ""))
        w("quiet machine before reading the figures (the 2-thread rows above all).")
        w("")

    # ---- goals
    w("### Against the goals")
    w("")
    w("Goals of issue 13 (`../shared/TARGETS.md`). × roofline: lower is better, 1.0 is the memory limit; × torch:")
    w("libtorch's time / xent's, higher is better. The per-loss goals apply at C ≥ %d; the C = 10 figures are" % GOAL_MIN_C)
    w("shown for information. The divergences between two logit sets (%s) are held to issue 17's goals:"
      % ", ".join("`%s`" % l for l in DIVERGENCES))
    w("the same rooflines, and ≥ %g× libtorch's composition forward as well as forward + backward." % DIV_FWD_TORCH)
    w("")
    tally = Tally()
    # The per-loss goals' columns: the shapes every loss ran at (not the shapes only cross-entropy runs at).
    big = [s for s in r.shapes if any(k.startswith("xent_") and not k.startswith("xent_ce_") and sh == s
                                      for (k, sh, _) in r.stats)] or r.shapes
    for title, rw_goal in (("Forward, 1 thread: ≤ %g× the read roofline of the loss's inputs (read + write for the "
                            "normalisers and the HVP, which write N × C), ≥ %g× faster than libtorch's forward" % (FWD_ROOF, FWD_TORCH), False),
                           ("Forward + gradient, 1 thread: ≤ %g× the read + write roofline, ≥ %g× faster than libtorch's "
                            "forward + backward" % (GRAD_ROOF, GRAD_TORCH), True)):
        w("**%s**" % title)
        w("")
        w("| loss | " + " | ".join(shape_label(s) for s in big) + " |")
        w("|---|" + "---|" * len(big))
        for loss in r.losses:
            if rw_goal and not r.has_grad(loss):
                continue
            cells = []
            for s in big:
                applies = s[1] >= GOAL_MIN_C
                if rw_goal:
                    x = r.ratio("xent_%s_fwd_grad" % loss, r.roofline(loss, True), s, 1)
                    sp = r.ratio("torch_%s_fwd_bwd" % loss, "xent_%s_fwd_grad" % loss, s, 1)
                    goals = (GRAD_ROOF, GRAD_TORCH)
                    unit = "r+w"
                else:
                    x = r.ratio("xent_%s_fwd" % loss, r.fwd_roofline(loss), s, 1)
                    sp = r.ratio("torch_%s_fwd" % loss, "xent_%s_fwd" % loss, s, 1)
                    goals = (FWD_ROOF, DIV_FWD_TORCH if loss in DIVERGENCES else FWD_TORCH)
                    unit = "r+w" if r.kind(loss) == "matrix" else "read"
                tally.add(x, goals[0], True, applies)
                tally.add(sp, goals[1], False, applies)
                cells.append("%s · %s" % (goal_cell(x, unit, goals[0], True, applies), goal_cell(sp, "torch", goals[1], False, applies))
                             if x is not None or sp is not None else "not measured")
            w("| `%s` | %s |" % (loss, " | ".join(cells)))
        w("")

    w("**Cross-entropy (class-index targets)**: no slower than today (within 3 %%: × roofline ≤ %g × today's, "
      "from `bench/ce_baseline.json`: %s); C = 10 forward ≤ %g× read; 2 threads ≤ %g× the 2-thread read roofline."
      % (CE_TODAY_SLACK, baseline.get("source", "?") if baseline else "missing", CE_C10_ROOF, CE_2T_ROOF))
    w("")
    w("| goal | shape | today | this run | |")
    w("|---|---|---:|---:|---|")
    base_shapes = (baseline or {}).get("shapes", {})
    for key, row, roof, what in (("xent_ce_fwd", "xent_ce_fwd", "roofline_read_x", "forward, 1 thread, × read roofline"),
                                 ("xent_ce_fwd_grad", "xent_ce_fwd_grad", "roofline_rw_x", "forward + gradient, 1 thread, × read + write")):
        for sk, rows in base_shapes.items():
            n, c = (int(v) for v in sk.split("x"))
            today = rows.get(key, {}).get("1", {}).get("x_roofline")
            x = r.ratio(row, roof, (n, c), 1)
            limit = today * CE_TODAY_SLACK if today else None
            tally.add(x, limit, True, limit is not None)
            w("| no slower than today: %s | %s | %s× | %s | %s |" % (
                what, shape_label((n, c)), fmt(today), (fmt(x) + "×") if x else "—",
                verdict(x, limit, True) if limit else "no baseline"))
    for s in r.shapes:
        if s[1] <= 16:
            x = r.ratio("xent_ce_fwd", "roofline_read_x", s, 1)
            tally.add(x, CE_C10_ROOF, True)
            w("| C = 10 forward, 1 thread: ≤ %g× read | %s | — | %s | %s |" % (
                CE_C10_ROOF, shape_label(s), (fmt(x) + "×") if x else "—", verdict(x, CE_C10_ROOF, True)))
    if 2 in r.threads:
        for s in r.shapes:
            x = r.ratio("xent_ce_fwd", "roofline_read_x", s, 2)
            cpu = r.get("xent_ce_fwd", s, 2, "cpu_per_wall")
            tally.add(x, CE_2T_ROOF, True)
            w("| forward, 2 threads: ≤ %g× the 2-thread read roofline | %s | — | %s | %s |" % (
                CE_2T_ROOF, shape_label(s), ("%s× (CPU/wall %s)" % (fmt(x), fmt(cpu, 2))) if x else "—",
                verdict(x, CE_2T_ROOF, True)))
    w("")

    if rss:
        w("**Memory**: forward = inputs + O(N); forward + gradient = inputs + the gradient buffer; distillation and")
        w("focal: no N × C temporaries. Peak RSS over the inputs, in multiples of one N × C matrix (one process per")
        w("figure, 1 thread). Allowed: O(N) = 16 bytes a sample + 0.1 of a matrix; + 1 for the caller's gradient")
        w("(or, for the normalisers and the HVP, the caller's output).")
        w("")
        rss_shapes = sorted({shape for (_, _, shape) in rss}, key=lambda s: -s[1])
        w("| loss | " + " | ".join("%s: forward · forward + gradient" % shape_label(s) for s in rss_shapes) + " |")
        w("|---|" + "---|" * len(rss_shapes))
        for loss in r.losses:
            cells = []
            for s in rss_shapes:
                parts = []
                for mode in ("fwd", "fwd_grad"):
                    m = rss.get((loss, mode, s))
                    if m is None:
                        parts.append("—")
                        continue
                    if "error" in m:
                        parts.append("failed")
                        continue
                    extra = m["extra"] / (4.0 * s[0] * s[1])
                    allowed = memory_allowance(s, mode == "fwd_grad" or r.kind(loss) == "matrix")
                    tally.add(extra, allowed, True)
                    parts.append("+%.2f: %s" % (extra, short(run_bench.verdict(extra, allowed, True))))
                cells.append(" · ".join(parts))
            note = " (no N × C temporaries)" if loss in NO_TEMPORARY else ""
            w("| `%s`%s | %s |" % (loss, note, " | ".join(cells)))
        w("")
    w("%d goals met, %d missed (figures from this run; the C = 10 per-loss figures are not counted)." % (tally.met, tally.missed))
    w("")

    # ---- what is timed
    w("### What is timed")
    w("")
    w("Inputs, built per shape (deterministic seeds) and held only while their losses run: " +
      "; ".join("`%s` %s" % kv for kv in INPUTS) + "; `targets` int64 class indices, uniform in [0, C).")
    w("")
    w("| loss | inputs (its rooflines read these) | xent forward | xent forward + gradient | libtorch (fwd; + `backward()`) |")
    w("|---|---|---|---|---|")
    for loss in r.losses:
        w("| `%s` | %s | `%s` | %s | `%s` |" % (
            loss, ", ".join("`%s`" % i for i in r.inputs(loss)), r.call(loss, "fwd"),
            ("`%s`" % r.call(loss, "fwd_grad")) if r.has_grad(loss) else "— (writes N × C; no gradient row)",
            r.call(loss, "torch")))
    w("")
    w("- 1-thread rows: process CPU time (all threads of the process; other jobs' time on the core is not")
    w("  counted, their use of memory bandwidth is); 2-thread rows: wall clock, and their CPU/wall says how")
    w("  much of two cores they had. Per group of losses with the same inputs and per thread count the two")
    w("  rooflines run first, then for each loss libtorch's forward, its forward + backward, xent's forward,")
    w("  xent's forward + gradient (into a buffer touched before timing; libtorch allocates its gradient each")
    w("  step, as a training step does). libtorch rows run after `at::set_num_threads(T)`; xent rows pass the")
    w("  thread count in the call's options (`num_threads`; the normalisers' and the HVP's last argument).")
    w("- Before a group's first row, each of its losses is checked at every thread count against a scalar")
    w("  double-precision reference (relative 1e-4; the gradient through directional derivatives of the reference")
    w("  on a spread of samples), and libtorch's value too: see \"Agreement\" below.")
    w("")

    # ---- results
    w("### Results (median of %d repetitions)" % max(s["reps"] for s in r.stats.values()))
    w("")
    w("Columns: ns per element (median) on the row's clock; × its roofline (same inputs, shape and thread count);")
    w("× faster than libtorch (libtorch's median / xent's); forward + gradient likewise against read + write and")
    w("libtorch's forward + backward; 2T/1T: the 1-thread wall time / the 2-thread one (forward); spread: (max − min) /")
    w("median of xent's forward repetitions; CPU/wall of xent's forward.")
    w("")
    for s in r.shapes:
        load = max(st["load1"] for (k, sh, _), st in r.stats.items() if sh == s)
        w("#### %s (%.0f MiB per N × C matrix; load ≤ %.2f)" % (shape_label(s), s[0] * s[1] * 4 / 2**20, load))
        w("")
        roofs = []
        for loss in r.losses:
            key = "_".join(r.inputs(loss))
            if key not in roofs and any(k == "roofline_read_" + key and sh == s for (k, sh, _) in r.stats):
                roofs.append(key)
        w("| rooflines of | " + " | ".join("read %dT | read+write %dT" % (t, t) for t in r.threads) + " |")
        w("|---|" + "---:|---:|" * len(r.threads))
        for key in roofs:
            cells = []
            for t in r.threads:
                cells += [fmt(r.get("roofline_read_" + key, s, t)), fmt(r.get("roofline_rw_" + key, s, t))]
            w("| %s | %s |" % (", ".join("`%s`" % i for i in key.split("_")), " | ".join(cells)))
        w("")
        w("| loss | T | fwd ns/elem | × roofline | × torch | fwd+grad ns/elem | × read+write | × torch fwd+bwd | 2T/1T | spread | CPU/wall |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for loss in r.losses:
            for t in r.threads:
                f, g = "xent_%s_fwd" % loss, "xent_%s_fwd_grad" % loss
                st = r.stats.get((f, s, t))
                if not st and not r.stats.get((g, s, t)):
                    continue
                roof = r.ratio(f, r.fwd_roofline(loss), s, t)
                unit = "r+w" if r.kind(loss) == "matrix" else "read"
                speed = (r.get(f, s, 1, "wall") / r.get(f, s, t, "wall")) if t > 1 and r.get(f, s, 1, "wall") and r.get(f, s, t, "wall") else None
                w("| `%s` | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    loss, t, fmt(r.get(f, s, t)), ("%s× %s" % (fmt(roof), unit)) if roof else "—",
                    fmt(r.ratio("torch_%s_fwd" % loss, f, s, t)),
                    fmt(r.get(g, s, t)), (fmt(r.ratio(g, r.roofline(loss, True), s, t)) + "×") if r.get(g, s, t) else "—",
                    fmt(r.ratio("torch_%s_fwd_bwd" % loss, g, s, t)), fmt(speed),
                    ("%.0f %%" % (100 * (st["max"] - st["min"]) / st["ns"])) if st else "—",
                    fmt(st["cpu_per_wall"], 2) if st else "—"))
        w("")
        if has_torch:
            torch_rows = [(loss, t) for loss in r.losses for t in r.threads if r.get("torch_%s_fwd" % loss, s, t)]
            if torch_rows:
                w("libtorch, ns/elem (forward; forward + backward): " + "; ".join(
                    "`%s` %dT %s; %s" % (loss, t, fmt(r.get("torch_%s_fwd" % loss, s, t)), fmt(r.get("torch_%s_fwd_bwd" % loss, s, t)))
                    for loss, t in torch_rows) + ".")
                w("")

    # ---- memory
    if rss:
        w("### Peak memory")
        w("")
        w("One process per figure (`%s --xent_rss=LOSS:MODE --xent_rss_shape=NxC`): it builds the loss's inputs," % BINARY)
        w("allocates the caller's output buffer untouched (forward + gradient, and the normalisers' and HVP's forward),")
        w("resets the peak RSS (`/proc/self/clear_refs`), runs the call once and reports the peak over the RSS it had")
        w("after building the inputs, in MiB and in multiples of one N × C matrix.")
        w("")
        w("| loss | shape | mode | inputs (MiB) | peak over the inputs (MiB) | × N × C |")
        w("|---|---|---|---:|---:|---:|")
        for (loss, mode, s), m in rss.items():
            if "error" in m:
                w("| `%s` | %s | %s | — | failed: %s | — |" % (loss, shape_label(s), mode, m["error"].replace("|", "/").replace("\n", " ")))
                continue
            w("| `%s` | %s | %s | %.0f | %.1f | %.2f%s |" % (loss, shape_label(s), mode, m["inputs"] / 2**20, m["extra"] / 2**20,
                                                             m["extra"] / (4.0 * s[0] * s[1]), "" if m["reset"] else " (peak not reset)"))
        w("")

    # ---- agreement
    w("### Agreement")
    w("")
    if meta["notes"]:
        w("The binary reported (exit code %d):" % meta["returncode"])
        w("")
        for n in meta["notes"]:
            w("- %s" % n.replace("|", "/"))
    elif meta["returncode"] == 0:
        w("Every loss agreed with the double-precision reference (relative 1e-4), forward and gradient, at every")
        w("thread count and shape%s." % (", and so did libtorch's values" if has_torch else ""))
    else:
        w("The benchmark exited with code %d (see its output)." % meta["returncode"])
    w("")

    # ---- reproduce
    w("### Reproduce")
    w("")
    w("```sh")
    w(meta["command"])
    w("```")
    w("")
    w("configures `build-bench/` (Release, `XENT_NATIVE=ON`: `-O3 -march=native`), builds `%s`, runs" % BINARY)
    w("")
    w("```sh")
    w(" ".join(shlex.quote(c) for c in meta["bench_cmd"]))
    w("```")
    w("")
    w("(under `/usr/bin/time -v` for the run's peak RSS), then the peak-memory processes, and rewrites this section.")
    w("`%s --xent_list` prints every loss, its inputs and the calls timed; `--xent_smoke` runs every row once on" % BINARY)
    w("tiny shapes with the agreement checks (CTest's `bench.losses_smoke`); `--xent_shapes=NxC,...`,")
    w("`--xent_losses=a,b` and `--benchmark_filter=REGEX` pick rows. Compiler: %s; Eigen %s (SIMD: %s); libtorch %s."
      % (r.ctx.get("compiler", "?"), r.ctx.get("eigen_version", "?"), r.ctx.get("eigen_simd", "?"), r.ctx.get("torch_version", "?")))
    return "\n".join(out).rstrip() + "\n"


def splice(path, generated):
    """The file with this script's section replaced, or inserted after run_bench.py's section (or at
    the end); everything else is kept."""
    text = open(path).read() if os.path.exists(path) else "# Performance\n"
    block = BEGIN + "\n" + generated + END
    if BEGIN in text and END in text:
        return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    if run_bench.END in text:
        at = text.index(run_bench.END) + len(run_bench.END)
        return text[:at] + "\n\n" + block + "\n" + text[at:]
    return text.rstrip() + "\n\n" + block + "\n"


def load_baseline():
    try:
        with open(os.path.join(ROOT, "bench", "ce_baseline.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="run_bench.py --losses", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "performance.md"))
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.25, help="--benchmark_min_time per repetition (s)")
    ap.add_argument("--shapes", help="NxC,NxC,... instead of the default shapes")
    ap.add_argument("--threads", help="1 or 2: only the rows of that thread count")
    ap.add_argument("--losses", dest="only", help="a,b,...: only these losses (see xent_bench_losses --xent_list)")
    ap.add_argument("--label", help="a note printed at the top of the section (e.g. that the machine was loaded)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, every row once (a pipeline check, not for the docs)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--reuse", action="store_true", help="no build, no run: rewrite from the last run's JSON files")
    args = ap.parse_args(argv)
    if args.reuse:
        args.no_build = True

    binary = os.path.join(args.build_dir, "bench", BINARY) if args.no_build else run_bench.build(args.build_dir, BINARY)
    json_path = os.path.join(args.build_dir, "bench_losses.json")
    meta_path = os.path.join(args.build_dir, "bench_losses_meta.json")
    bench_cmd = [binary] + (["--xent_smoke"] if args.smoke else []) + (
        ["--xent_shapes=" + args.shapes] if args.shapes else []) + (["--xent_losses=" + args.only] if args.only else []) + (
        ["--benchmark_filter=/threads:%s/" % args.threads] if args.threads else []) + [
        "--benchmark_repetitions=%d" % (1 if args.smoke else args.repetitions)] + (
        [] if args.smoke else ["--benchmark_min_time=%g" % args.min_time]) + [
        "--benchmark_format=json", "--benchmark_out=" + json_path, "--benchmark_out_format=json"]
    command = "/usr/bin/python3 bench/run_bench.py --losses" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--reuse")

    info = run_bench.machine()
    print("machine: %s (%s CPUs); %s" % (info["model"], info["cpus"], isa_summary()), flush=True)
    print("command: %s" % command, flush=True)
    if args.reuse:
        with open(meta_path) as f:
            meta = json.load(f)
        rss = {(l, m, tuple(s)): v for l, m, s, v in meta.pop("rss")}
    else:
        loads = [run_bench.load_average()]
        code, notes, peak, seconds = run_benchmark(bench_cmd)
        loads.append(run_bench.load_average())
        if code not in (0, 2) or not os.path.exists(json_path):
            sys.exit("%s failed (exit code %d): no tables written" % (BINARY, code))
        meta = {"returncode": code, "notes": notes, "peak": peak, "seconds": seconds, "loads": loads,
                "date": datetime.date.today().isoformat()}
        rss = {}
    with open(json_path) as f:
        report = json.load(f)
    r = Run(run_bench.collect(report, "elem"), report["context"])
    if not r.stats:
        sys.exit("no benchmark rows in %s" % json_path)

    if not args.no_rss and not args.reuse:
        shapes = RSS_SHAPES_SMOKE if args.smoke else RSS_SHAPES
        for shape in shapes:
            for loss in r.losses:
                if args.only and loss not in args.only.split(","):
                    continue
                for mode in ("fwd", "fwd_grad"):
                    if mode == "fwd_grad" and not r.has_grad(loss):
                        continue
                    rss[(loss, mode, shape)] = peak_rss(binary, loss, mode, shape)
    if not args.reuse:
        with open(meta_path, "w") as f:
            json.dump(dict(meta, rss=[[l, m, list(s), v] for (l, m, s), v in rss.items()]), f)

    meta.update(command=command, label=args.label, machine=info, isa=isa_summary(),
                bench_cmd=[os.path.relpath(binary, ROOT)] + [
                    c if not c.startswith("--benchmark_out=") else "--benchmark_out=" + os.path.relpath(json_path, ROOT)
                    for c in bench_cmd[1:]])
    generated = generate(r, rss, meta, load_baseline())
    text = splice(args.output, generated)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
