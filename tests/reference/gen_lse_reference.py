#!/usr/bin/python3
"""Generate reference data for xent's log-sum-exp / softmax / log-softmax tests.

Writes tests/reference/lse_cases.txt (to stdout) and a short summary (to stderr).
Rerun from the repository root with Debian's interpreter (it has torch, numpy
and mpmath; the `python3` on PATH may not):

    /usr/bin/python3 tests/reference/gen_lse_reference.py > tests/reference/lse_cases.txt

Output is deterministic (fixed numpy seeds, fixed case list).

File format (parsed line by line with strtold by the C++ tests):

    # comment lines
    case <name> <C>
    x <C values>
    lse <value>                      \
    log_softmax <C values>            > exact (mpmath, mp.dps = 120), 40 significant
    softmax <C values>               /  digits; only when the result is finite
    torch32_lse <value>
    torch32_log_softmax <C values>
    torch32_softmax <C values>
    torch64_lse <value>
    torch64_log_softmax <C values>
    torch64_softmax <C values>
    end

* Every x value is exactly representable in float32 and is written as
  repr(float(np.float32(v))), i.e. the exact value widened to double.
* Special values are written as inf, -inf, nan.
* The mpmath keys are omitted for the special cases (all -inf, +inf or NaN
  present); only the torch keys are written there.
* For C > 4096 the (log_)softmax lines are omitted (only x and the *lse keys).
* many_classes_* inputs are randn * scale rounded to multiples of 2**-8 so that
  their decimals are short (keeps the file under ~3 MB).
* The torch keys are torch.logsumexp / torch.log_softmax / torch.softmax along
  dim=1 of a [1, C] tensor in float32 and float64.
* Exact softmax values can be far below the long double range (e.g. exp(-1e30));
  they are still written exactly, so strtold returns 0 (with ERANGE) for them.
"""

import sys

import mpmath
import numpy as np
import torch

# The brief asked for mp.dps = 60; 60 digits are not enough for exp(d) with
# d ~ -2e30 (pm1e30) to 40 digits, so work at 120 (see exact()).
mpmath.mp.dps = 120
SIG_DIGITS = 40
MAX_C_WITH_VECTORS = 4096

INF = np.float32(np.inf)
NAN = np.float32(np.nan)
F32 = np.float32


def rng(seed):
    return np.random.RandomState(seed)


def randn(seed, c, scale):
    return (rng(seed).randn(c) * scale).astype(np.float32)


def randn_grid(seed, c, scale, grid=2.0 ** -8):
    """randn * scale rounded to a multiple of `grid` (exact in float32).

    Used only for the very large cases: the exact-double decimal of a
    full-mantissa float32 is ~19 characters, which would make the file ~4 MB;
    grid values print in ~11 characters.
    """
    v = rng(seed).randn(c) * scale
    return (np.round(v / grid) * grid).astype(np.float32)


def nextafter_n(v, n):
    """Step float32 v by n ulps (n may be negative)."""
    v = F32(v)
    target = F32(np.inf) if n > 0 else F32(-np.inf)
    for _ in range(abs(n)):
        v = np.nextafter(v, target)
    return F32(v)


# ----------------------------------------------------------------------------
# cases: (name, float32 array)

def build_cases():
    cases = []

    def add(name, values):
        arr = np.asarray(values, dtype=np.float32)
        assert arr.ndim == 1 and arr.size >= 1
        cases.append((name, arr))

    add("random_c10", randn(10, 10, 3.0))
    add("random_c1000", randn(1000, 1000, 3.0))
    add("random_c7", randn(7, 7, 3.0))
    add("single_class", [F32(1.7)])
    add("two_equal", [F32(-0.5), F32(-0.5)])
    add("all_equal_c7", [F32(3.3)] * 7)

    r = rng(4242)
    steps = r.randint(-4, 5, size=1000)
    add("near_ties_c1000", [nextafter_n(5.0, int(k)) for k in steps])

    add("huge_spread_c64", rng(64).uniform(-1e4, 1e4, size=64).astype(np.float32))
    add("pm1e30", [F32(1e30), F32(-1e30), F32(0.0), F32(1.0)])
    add("all_neg1e30_c4", [F32(-1e30), nextafter_n(-1e30, 1),
                           nextafter_n(-1e30, -1), nextafter_n(-1e30, 2)])
    add("large_positive", [100.0, 99.0, 98.0, 80.0, 88.5])
    add("dominant_tiny", [0.0] + [-200.0] * 99)
    add("tiny_inputs", [F32(1e-30), F32(-1e-30), F32(1e-38), F32(1e-45)])

    x = randn(16, 16, 1.0)
    x[rng(1616).choice(16, size=5, replace=False)] = -INF
    add("masked_c16", x)

    x = np.full(8, -INF, dtype=np.float32)
    x[3] = F32(2.5)
    add("mostly_masked", x)

    ln_flt_min = F32(np.log(np.finfo(np.float32).tiny))          # ~ -87.3365
    ln_flt_max = F32(np.log(np.finfo(np.float32).max))           # ~ 88.7228
    ln_denorm_min = F32(np.log(np.float64(F32(1e-45))))          # ~ -103.2789
    add("exp_boundary", [
        0.0,
        -87.3, nextafter_n(ln_flt_min, 1), ln_flt_min, nextafter_n(ln_flt_min, -1),
        -87.5, -88.0, -88.5,
        nextafter_n(-ln_flt_max, 1), -ln_flt_max, nextafter_n(-ln_flt_max, -1),
        -88.8,
        -103.0, nextafter_n(ln_denorm_min, 1), ln_denorm_min,
        nextafter_n(ln_denorm_min, -1), -103.5, -104.0,
    ])

    add("many_classes_c50000", randn_grid(50000, 50000, 3.0))
    add("many_classes_c131072_tail", randn_grid(131077, 131072 + 5, 2.0))

    for c in (2, 16, 17, 31, 33, 100, 257):
        add("random_c%d_s5" % c, randn(100000 + c, c, 5.0))

    # special cases: torch keys only
    add("all_neginf_c3", [-INF, -INF, -INF])
    add("has_posinf", [1.0, INF, 2.0])
    add("two_posinf", [INF, INF, 0.0])
    add("has_nan", [1.0, NAN, 2.0])
    add("neginf_and_posinf", [-INF, INF, 0.0])
    return cases


# ----------------------------------------------------------------------------
# exact math

def exact(x32):
    """Return (lse, log_softmax list, softmax list) as mpf, or None if not finite.

    Cancellation-free formulation: with m = max(x), k = number of maxima and
    t = sum_{x_i < m} exp(x_i - m),
        log_softmax_i = (x_i - m) - log(k) - log1p(t / k)
    where x_i - m is exact (float32 inputs span < 300 bits) and both terms
    have the same sign.  Only lse = m + log(s) can cancel; the loss is
    checked below.  The working precision (DPS) is above the requested 60
    digits so that exp() of log_softmax values as large as -2e30 is still
    correct to 40 significant digits.
    """
    xs = [float(v) for v in x32]
    if any(np.isnan(v) or v == np.inf for v in xs):
        return None
    finite = [mpmath.mpf(v) for v in xs if v != -np.inf]
    if not finite:
        return None
    m = max(finite)
    k = sum(1 for v in finite if v == m)
    t = mpmath.fsum(mpmath.exp(v - m) for v in finite if v != m)
    log_s = mpmath.log(k) + mpmath.log1p(t / k)
    lse = m + log_s
    if lse != 0:
        lost = mpmath.log10(max(abs(m), abs(log_s)) / abs(lse))
        assert lost < mpmath.mp.dps - SIG_DIGITS - 10, "lse cancellation"
    ls, sm = [], []
    for v in xs:
        if v == -np.inf:
            ls.append(mpmath.mpf("-inf"))
            sm.append(mpmath.mpf(0))
        else:
            d = (mpmath.mpf(v) - m) - log_s
            ls.append(d)
            sm.append(mpmath.exp(d))
    return lse, ls, sm


def fmt_mp(v):
    if mpmath.isinf(v):
        return "inf" if v > 0 else "-inf"
    if mpmath.isnan(v):
        return "nan"
    if v == 0:
        return "0"
    s = mpmath.nstr(v, SIG_DIGITS, min_fixed=0, max_fixed=0)  # always d.ddde±N
    assert "mpf" not in s and " " not in s, s
    return s


def fmt_f(v):
    return repr(float(v))


def torch_ref(x32, dtype):
    t = torch.from_numpy(x32.astype(np.float64)).to(dtype).reshape(1, -1)
    lse = torch.logsumexp(t, dim=1)[0].item()
    ls = torch.log_softmax(t, dim=1)[0].tolist()
    sm = torch.softmax(t, dim=1)[0].tolist()
    return lse, ls, sm


# ----------------------------------------------------------------------------

def main():
    torch.set_num_threads(1)
    cases = build_cases()
    out = sys.stdout
    out.write("# generated by tests/reference/gen_lse_reference.py\n")
    out.write("# command: /usr/bin/python3 tests/reference/gen_lse_reference.py"
              " > tests/reference/lse_cases.txt\n")
    out.write("# torch %s, numpy %s, mpmath %s (mp.dps = %d, %d significant digits)\n"
              % (torch.__version__, np.__version__, mpmath.__version__,
                 mpmath.mp.dps, SIG_DIGITS))
    out.write("# x: float32 values written as exact doubles; lse/log_softmax/softmax:"
              " exact (mpmath); torch32_*/torch64_*: torch float32/float64\n")
    out.write("# (log_)softmax lines omitted for C > %d; mpmath keys omitted when"
              " the result is not finite\n" % MAX_C_WITH_VECTORS)

    bad_ulps = []
    for name, x in cases:
        c = x.size
        vec = c <= MAX_C_WITH_VECTORS
        out.write("case %s %d\n" % (name, c))
        out.write("x " + " ".join(fmt_f(v) for v in x) + "\n")
        ex = exact(x)
        if ex is not None:
            lse, ls, sm = ex
            out.write("lse " + fmt_mp(lse) + "\n")
            if vec:
                out.write("log_softmax " + " ".join(fmt_mp(v) for v in ls) + "\n")
                out.write("softmax " + " ".join(fmt_mp(v) for v in sm) + "\n")
        for tag, dt in (("torch32", torch.float32), ("torch64", torch.float64)):
            tl, tls, tsm = torch_ref(x, dt)
            out.write("%s_lse %s\n" % (tag, fmt_f(tl)))
            if vec:
                out.write("%s_log_softmax %s\n" % (tag, " ".join(fmt_f(v) for v in tls)))
                out.write("%s_softmax %s\n" % (tag, " ".join(fmt_f(v) for v in tsm)))
            if tag == "torch32" and ex is not None:
                ref32 = F32(float(ex[0]))
                ulp = float(np.spacing(np.abs(ref32)))
                err = abs(mpmath.mpf(tl) - ex[0]) / ulp
                if err > 4:
                    bad_ulps.append((name, float(err)))
        out.write("end\n")
    out.flush()

    sys.stderr.write("cases: %d\n" % len(cases))
    if bad_ulps:
        for name, err in bad_ulps:
            sys.stderr.write("torch32_lse off by %.1f float32 ulps: %s\n" % (err, name))
    else:
        sys.stderr.write("torch32_lse within 4 float32 ulps of exact lse in all cases\n")


if __name__ == "__main__":
    main()
