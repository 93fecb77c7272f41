#!/usr/bin/python3
"""Generate exact (mpmath) reference values for xent's elementwise loss formulas at adversarial points.

Writes tests/reference/elementwise_cases.txt (to stdout) and a self-check summary (to stderr).
Rerun from the repository root with Debian's interpreter (it has mpmath, numpy and torch 1.13; the
`python3` on PATH may not):

    /usr/bin/python3 tests/reference/gen_elementwise_reference.py > tests/reference/elementwise_cases.txt

Output is deterministic (fixed numpy seeds, fixed case list; torch is used only by the self-check,
whose results go to stderr). It takes a minute or two on one core.

File format (one case per function and input grid; parsed line by line with strtold):

    # comment lines
    case <name> <function>   function: bce_logits, bce, kl_div, kl_div_log_target, sigmoid_focal,
                                       softplus, log_sigmoid
    x <values>               first input, one per point: the logit (bce_logits, sigmoid_focal,
                             softplus, log_sigmoid), the probability p (bce), the input (kl_div*)
    t <values>               target, one per point (all but softplus and log_sigmoid)
    pw <values>              pos_weight, one per point (bce_logits only)
    alpha <a>                sigmoid_focal only, one value; alpha < 0 means no alpha weighting
    gamma <g>                sigmoid_focal only, one value
    loss <values>            the exact loss per point
    grad <values>            the exact d loss / d x per point (bce: torch's formula, see below)
    terms <values>           kl_div*: the magnitude the error budget is relative to (see below)
    end

Inputs (x, t, pw, alpha, gamma) are written as repr(float(v)), i.e. exactly. In the cases whose name
does not end in `_double` every input is exactly representable in float32 (the float and the double
tests read the same inputs). In the `_double` cases x is a float64 value that is NOT representable in
float32 (t and pw may be); they are for the double tests only.

loss, grad and terms are computed by mpmath at mp.dps = 60 from the exact inputs and written to 21
significant digits ("%.20e" style: d.dddddddddddddddddddde[+-]XX). Values far outside the long double
range (e.g. exp(-1e30)) are still written exactly; strtold returns 0 (ERANGE) for them. inf, -inf and
nan would be spelled so (none occur). The definitions (torch 1.13 semantics, 0 log 0 = 0):

    bce_logits        loss = (1 - t) x + (1 + (pw - 1) t) log(1 + exp(-x))
                           = (1 - t) softplus(x) + pw t softplus(-x)   (computed this way)
                      grad = (1 - t) sigmoid(x) - pw t sigmoid(-x)
    bce               loss = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100))
                      grad = (p - t) / max(p (1 - p), eps), eps = float(1e-12f) = 9.999999960041972e-13
                      (torch's backward formula, which is also the derivative wherever p (1 - p) > eps)
    kl_div            loss = xlogy(t, t) - t x, grad = -t, terms = |t log t| + |t x|
    kl_div_log_target loss = exp(t) (t - x), grad = -exp(t), terms = |exp(t) t| + |exp(t) x|
    sigmoid_focal     torchvision.ops.sigmoid_focal_loss per element: p = sigmoid(x),
                      ce = bce_logits(x, t, pw = 1), p_t = p t + (1 - p)(1 - t),
                      loss = ce (1 - p_t)^gamma, times alpha t + (1 - alpha)(1 - t) if alpha >= 0;
                      grad = its exact derivative, a_t [ce' m^g + ce g m^(g-1) m'] with
                      m = 1 - p_t = p (1 - t) + (1 - p) t, m' = p (1 - p) (1 - 2 t), ce' = (1 - t) p - t (1 - p)
    softplus          loss = log(1 + exp(x)), grad = sigmoid(x)
    log_sigmoid       loss = log(sigmoid(x)) = -softplus(-x), grad = sigmoid(-x)

Cases (names say the parameters: t0p25 = t 0.25, pw0p5 = pos_weight 0.5, am1 = alpha -1, g3p5 = gamma 3.5):

    bce_logits_t*_pw*        t in {0, 1, 0.5, 0.25, 0.9} x pw in {1, 0.5, 3}; x on the grid: -90..90 every
                             0.37, the integers, 0, +-{1e-30, 1e-8, 1e-3, 15, 16.6, 17, 30, 87.3, 88.7, 89,
                             103, 104, 1e4, 1e30, 3.4e38} (all rounded to float32)
    bce_logits_zone_*        t = 0: x = -90..-5 every 0.1 (pw 1); t = 1: x = 5..90 every 0.1 (pw 1, 3)
    bce_t*                   t in {0, 1, 0.5, 0.3, 0.999}; p in {0, 1, 0.5, 2**-k (k = 1..149),
                             1 - 2**-k (k = 1..24), 200 random, 1e-38, 1e-44, m 2**-149 (m = 23..30: the -100
                             clamp at exp(-100)), float(1e-12f) +- 3 ulps (the eps clamp)}
    kl_div_fixed_x           t in {0, 2**-k (k = 1..126 step 5), 2**-140, 2**-149, 0.5, 1, 10 random} x
                             x in {-1e30, -100, -88, -20, -1, -1e-7, 0}
    kl_div_near_log_t        the same t (> 0), x = float32(log t) + k ulps, k = -3..3
    kl_div_log_target_grid   t, x in {-100, -87, -20, -1, -1e-7, 0, 10 random in [-30, 0]}, all pairs
    kl_div_log_target_near   (x, t) = (v +- k ulps, v) and (v, v +- k ulps), k = 1..3, v in that set
    sigmoid_focal_a*_g*_t*   (alpha, gamma) in {(0.25, 2), (-1, 2), (0.25, 0), (0.5, 1), (0.25, 0.5),
                             (0.75, 3.5)} x t in {0, 1, 0.5}; x = -90..90 every 0.37, +-{1e-8, 30, 88, 1e30}
    softplus, log_sigmoid    x on the bce_logits grid
    *_double                 the same functions at float64-only x: the float64 thresholds (log 2**52..54,
                             log DBL_MIN, log DBL_MAX, log 2**-1074, ...), tiny (5e-324, 1e-300) and huge
                             (1e300, DBL_MAX) values, random ones; bce: 2**-k (k up to 1074), 1 - 2**-k
                             (k = 25..53), the two clamps' edges in float64; kl_div: float64 log t +- ulps

In the float cases the exact loss exceeds FLT_MAX at x = -3.4e38 for bce_logits (t, pw) = (1, 3), (0.5, 3)
and (0.9, 3) (the float result is inf); see the stderr summary.

Self-check (stderr): every value is recomputed at mp.dps = 100 and must print identically; every
printed value is read back at high precision (and compared with printf for exact doubles); the
stable forms are compared with the naive definitions at 400 digits and the grads with mpmath.diff
of the naive definitions on a sample; torch's float EPSILON in bce's backward is confirmed; and
torch float64 (and float32, for the float cases) is compared with the table, in ulps.
"""

import math
import sys

import mpmath
import numpy as np
from mpmath import mp, mpf

DPS = 60
CHECK_DPS = 100
NAIVE_DPS = 400  # the naive forms cancel; 1 - 2**-1074 alone needs 324 digits
SIG = 21
F32 = np.float32
EPS_BCE = float(F32(1e-12))  # torch's EPSILON in Loss.cpp is a float constant, also in double
assert EPS_BCE == 9.999999960041972e-13


# ------------------------------------------------------------------------------------------------
# exact formulas (evaluated at the current mp precision)

def softplus(z):
    if z > 0:
        return z + mp.log1p(mp.exp(-z))
    return mp.log1p(mp.exp(z))


def sigmoid(z):
    if z >= 0:
        return 1 / (1 + mp.exp(-z))
    e = mp.exp(z)
    return e / (1 + e)


def xlogy_tt(t):
    return mpf(0) if t == 0 else t * mp.log(t)


def ex_bce_logits(x, t, pw):
    loss = (1 - t) * softplus(x) + pw * t * softplus(-x)
    grad = (1 - t) * sigmoid(x) - pw * t * sigmoid(-x)
    return loss, grad


def ex_bce(p, t):
    lp = max(mp.log(p), mpf(-100)) if p > 0 else mpf(-100)
    q = mpmath.fsub(1, p, exact=True)  # the exact 1 - p
    lq = max(mp.log(q), mpf(-100)) if q > 0 else mpf(-100)
    loss = -(t * lp + (1 - t) * lq)
    grad = (p - t) / max(p * q, mpf(EPS_BCE))
    return loss, grad


def ex_kl_div(x, t):
    loss = xlogy_tt(t) - t * x
    return loss, -t, abs(xlogy_tt(t)) + abs(t * x)


def ex_kl_div_log_target(x, t):
    e = mp.exp(t)
    return e * (t - x), -e, abs(e * t) + abs(e * x)


def ex_sigmoid_focal(x, t, alpha, gamma):
    s, sm = sigmoid(x), sigmoid(-x)
    ce = (1 - t) * softplus(x) + t * softplus(-x)
    dce = (1 - t) * s - t * sm
    m = s * (1 - t) + sm * t  # 1 - p_t, without cancellation
    dm = s * sm * (1 - 2 * t)
    at = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else mpf(1)
    if gamma == 0:
        return at * ce, at * dce
    mg = m ** gamma
    return at * ce * mg, at * (dce * mg + ce * gamma * m ** (gamma - 1) * dm)


def ex_softplus(x):
    return softplus(x), sigmoid(x)


def ex_log_sigmoid(x):
    return -softplus(-x), sigmoid(-x)


def exact_point(fn, params, pt):
    """The exact outputs (dict key -> mpf) of one point; pt maps input keys to floats."""
    x = mpf(pt["x"])
    if fn == "bce_logits":
        loss, grad = ex_bce_logits(x, mpf(pt["t"]), mpf(pt["pw"]))
    elif fn == "bce":
        loss, grad = ex_bce(x, mpf(pt["t"]))
    elif fn == "kl_div":
        loss, grad, terms = ex_kl_div(x, mpf(pt["t"]))
        return {"loss": loss, "grad": grad, "terms": terms}
    elif fn == "kl_div_log_target":
        loss, grad, terms = ex_kl_div_log_target(x, mpf(pt["t"]))
        return {"loss": loss, "grad": grad, "terms": terms}
    elif fn == "sigmoid_focal":
        loss, grad = ex_sigmoid_focal(x, mpf(pt["t"]), mpf(params["alpha"]), mpf(params["gamma"]))
    elif fn == "softplus":
        loss, grad = ex_softplus(x)
    elif fn == "log_sigmoid":
        loss, grad = ex_log_sigmoid(x)
    else:
        raise ValueError(fn)
    return {"loss": loss, "grad": grad}


# naive definitions, for the self-check only (they cancel; evaluated at high precision)

def naive_loss(fn, params, pt):
    x = mpf(pt["x"])
    t = mpf(pt.get("t", 0.0))
    if fn == "bce_logits":
        pw = mpf(pt["pw"])
        return (1 - t) * x + (1 + (pw - 1) * t) * mp.log(1 + mp.exp(-x))
    if fn == "bce":
        return -(t * max(mp.log(x), -100) + (1 - t) * max(mp.log(1 - x), -100))
    if fn == "kl_div":
        return (t * mp.log(t) if t else 0) - t * x
    if fn == "kl_div_log_target":
        return mp.exp(t) * (t - x)
    if fn == "sigmoid_focal":
        alpha, gamma = mpf(params["alpha"]), mpf(params["gamma"])
        p = 1 / (1 + mp.exp(-x))
        ce = (1 - t) * x + mp.log(1 + mp.exp(-x))
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            loss *= alpha * t + (1 - alpha) * (1 - t)
        return loss
    if fn == "softplus":
        return mp.log(1 + mp.exp(x))
    if fn == "log_sigmoid":
        return mp.log(1 / (1 + mp.exp(-x)))
    raise ValueError(fn)


# ------------------------------------------------------------------------------------------------
# formatting

def fmt_in(v):
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def fmt_exact(v):
    """21 significant digits, "%.20e" style, for any mpf (also far outside the double range).

    Rounds the exact binary value to nearest, ties to even, like printf: by integer arithmetic when
    the binary exponent is moderate (every tie is there, e.g. 2**-31 = 4.656612873077392578125e-10),
    by mpmath.nstr otherwise (e.g. exp(-1e30); no ties are possible that far out).
    """
    if mpmath.isnan(v):
        return "nan"
    if mpmath.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0." + "0" * (SIG - 1) + "e+00"
    sign, man, exp, _ = v._mpf_
    neg = "-" if sign else ""
    if abs(exp) <= 5000:
        num, den = (int(man) << exp, 1) if exp >= 0 else (int(man), 1 << -exp)
        e10 = len(str(num)) - len(str(den))  # 10**e10 <= num / den < 10**(e10 + 1) after the fix-up
        if (num * 10 ** -e10 if e10 <= 0 else num) < (den if e10 <= 0 else den * 10 ** e10):
            e10 -= 1
        k = SIG - 1 - e10
        n2, d2 = (num * 10 ** k, den) if k >= 0 else (num, den * 10 ** -k)
        q, r = divmod(n2, d2)
        if 2 * r > d2 or (2 * r == d2 and q % 2):
            q += 1
        if q == 10 ** SIG:
            q, e10 = 10 ** (SIG - 1), e10 + 1
        ds = str(q)
        assert len(ds) == SIG
        mant = "%s%s.%s" % (neg, ds[0], ds[1:])
    else:
        s = mpmath.nstr(v, SIG, strip_zeros=False, min_fixed=1, max_fixed=0, show_zero_exponent=True)
        mant, e10 = s.split("e")
        e10 = int(e10)
        assert len(mant.lstrip("-")) == SIG + 1 and mant.lstrip("-")[1] == ".", s
    return "%se%s%02d" % (mant, "+" if e10 >= 0 else "-", abs(e10))


def check_fmt(v, s):
    """Is s (21 significant digits) within half a unit of its last digit of v? Read back at high precision."""
    if v == 0 or mpmath.isinf(v) or mpmath.isnan(v):
        return s == fmt_exact(v)
    if abs(v) < mpf(1.7976931348623157e308) and mpf(float(v)) == v and s != "%.20e" % float(v):
        return False  # an exact double: printf must agree
    mant, e10 = s.split("e")
    assert len(mant.lstrip("-")) == SIG + 1
    with mp.workdps(CHECK_DPS + 20 + len(str(int(abs(v.exp))))):
        unit = mp.mpf(10) ** (int(e10) - (SIG - 1))
        back = mp.mpf(s)
        lead = abs(mp.mpf(mant))
        return 1 <= lead < 10 and abs(back - v) <= unit / 2 * (1 + mp.mpf(10) ** -30)


# ------------------------------------------------------------------------------------------------
# inputs

def f32(v):
    return float(F32(v))


def is_f32(v):
    v = float(v)
    with np.errstate(over="ignore"):
        return math.isfinite(v) and float(F32(v)) == v


def f32_step(v, n):
    """Step float32 v by n ulps (n may be negative)."""
    v = F32(v)
    target = F32(np.inf) if n > 0 else F32(-np.inf)
    for _ in range(abs(n)):
        v = np.nextafter(v, target)
    return float(v)


def f64_step(v, n):
    v = float(v)
    target = math.inf if n > 0 else -math.inf
    for _ in range(abs(n)):
        v = float(np.nextafter(v, target))
    return v


def uniq(values):
    return sorted(set(float(v) for v in values))


def logit_grid():
    """Grid (1): -90..90 every 0.37, the integers, and the float32 thresholds."""
    g = [f32(-90 + 0.37 * k) for k in range(487)]
    g += [float(i) for i in range(-90, 91)]
    for s in (1e-30, 1e-8, 1e-3, 15, 16.6, 17, 30, 87.3, 88.7, 89, 103, 104, 1e4, 1e30, 3.4e38):
        g += [f32(s), f32(-s)]
    g.append(0.0)
    return uniq(g)


def focal_grid():
    g = [f32(-90 + 0.37 * k) for k in range(487)]
    for s in (1e-8, 30, 88, 1e30):
        g += [f32(s), f32(-s)]
    return uniq(g)


def logit_grid_double():
    """Non-float32 logits: the float64 thresholds, tiny and huge values, random ones."""
    rs = np.random.RandomState(6401)
    g = [-11.123456789012345, 11.123456789012345]
    for s in (5e-324, 2.2250738585072014e-308, 1e-300, 1e-20, 1e-10, 1e-5, 0.1, 0.3, 1.1, 2.5e-3,
              15.000000000000002, 16.635532333438686,  # log(2**24), float32's 1 + exp(-x) == 1
              36.04365338911715, 36.7368005696771, 37.42994775023705,  # log(2**52..54)
              87.33654475055310, 88.72283905206835,  # log(FLT_MIN), log(FLT_MAX)
              103.97207708399179, 104.1, 700.3, 708.3964185322641, 708.6, 709.782712893384,
              709.8, 744.4400719213812, 745.1332191019411, 745.2, 746.1, 1000.3,
              1e30, 3.5e38, 1e300, 1.7976931348623157e308):
        g += [s, -s]
    g += list(rs.uniform(-40, 40, size=40)) + list(rs.uniform(-800, 800, size=20))
    g = uniq(g)
    assert not any(is_f32(v) for v in g)
    return g


def zone_double(sign):
    """Where the naive form cancels in float64: |x| in [30, 750], sign = -1 (t = 0) or +1 (t = 1)."""
    rs = np.random.RandomState(6402 if sign < 0 else 6403)
    g = list(rs.uniform(30, 750, size=60))
    g += [36.04365338911715, 36.7368005696771, 37.42994775023705, 708.3964185322641, 709.782712893384,
          744.4400719213812, 745.1332191019411, 745.2, 746.1, 40.6, 50.1, 100.3]
    g = uniq(sign * v for v in g)
    assert not any(is_f32(v) for v in g)
    return g


def prob_set():
    rs = np.random.RandomState(6501)
    p = [0.0, 1.0, 0.5, f32(1e-38), f32(1e-44)]
    p += [2.0 ** -k for k in range(1, 150)]
    p += [1 - 2.0 ** -k for k in range(1, 25)]
    r = rs.uniform(0, 1, size=240).astype(F32)
    p += [float(v) for v in r[(r > 0) & (r < 1)][:200]]
    p += [m * 2.0 ** -149 for m in range(23, 31)]  # the -100 clamp of log p: exp(-100) = 26.55 * 2**-149
    p += [f32_step(EPS_BCE, k) for k in range(-3, 4)]  # the eps clamp of p (1 - p)
    p = uniq(p)
    assert all(is_f32(v) for v in p) and len([v for v in p if 0 < v < 1]) == len(p) - 2
    return p


def prob_set_double():
    rs = np.random.RandomState(6502)
    p = [2.0 ** -k for k in (150, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1022, 1023, 1050, 1074)]
    p += [1 - 2.0 ** -k for k in range(25, 54)]
    p += [1e-300, 2.2250738585072014e-308, 1e-20, 1e-12, 0.1, 0.3, 0.7, 0.9, 1 - 1e-15]
    e100 = float(mp.exp(-100))
    p += [f64_step(e100, k) for k in range(-3, 4)]  # the -100 clamp of log p
    # p (1 - p) == eps: at p0 ~ eps (1 + eps) and at 1 - p0 (1 - p = k 2**-53, k ~ 9007.2)
    p0 = float(mp.findroot(lambda v: v * (1 - v) - mpf(EPS_BCE), mpf(EPS_BCE)))
    p += [f64_step(p0, k) for k in range(-3, 4) if k]
    p += [1 - k * 2.0 ** -53 for k in range(9005, 9011)]
    p += list(rs.uniform(0, 1, size=100))
    p = uniq(v for v in p if not is_f32(v))
    assert all(0 < v < 1 for v in p)
    return p


# ------------------------------------------------------------------------------------------------
# cases: (name, function, {input key: [values]}, {param: value})

def tag(v):
    s = ("%g" % v).replace("-", "m").replace(".", "p")
    return s


def build_cases():
    cases = []

    def add(name, fn, inputs, params=None):
        n = len(inputs["x"])
        assert all(len(v) == n for v in inputs.values()), name
        cases.append((name, fn, inputs, params or {}))

    # 1. bce_logits
    grid = logit_grid()
    for t in (0.0, 1.0, 0.5, 0.25, 0.9):
        for pw in (1.0, 0.5, 3.0):
            add("bce_logits_t%s_pw%s" % (tag(t), tag(pw)), "bce_logits",
                {"x": grid, "t": [f32(t)] * len(grid), "pw": [pw] * len(grid)})
    # The zones where x + softplus(-x) (t = 0) and log(1 + exp(-x)) (t = 1) lose everything in a naive
    # kernel. pos_weight has no effect at t = 0 and only scales at t = 1 (the grid cases cover every
    # pw), so the zones take pw = 1 and, at t = 1, pw = 3.
    zone0 = uniq(f32(-90 + 0.1 * k) for k in range(851))
    zone1 = uniq(f32(5 + 0.1 * k) for k in range(851))
    add("bce_logits_zone_t0_pw1", "bce_logits", {"x": zone0, "t": [0.0] * len(zone0), "pw": [1.0] * len(zone0)})
    for pw in (1.0, 3.0):
        add("bce_logits_zone_t1_pw%s" % tag(pw), "bce_logits",
            {"x": zone1, "t": [1.0] * len(zone1), "pw": [pw] * len(zone1)})

    # 2. bce
    probs = prob_set()
    for t in (0.0, 1.0, 0.5, 0.3, 0.999):
        add("bce_t%s" % tag(t), "bce", {"x": probs, "t": [f32(t)] * len(probs)})

    # 3. kl_div (log_target = False)
    rs = np.random.RandomState(6601)
    ts = [0.0, 0.5, 1.0] + [2.0 ** -k for k in range(1, 127, 5)] + [2.0 ** -140, 2.0 ** -149]
    ts += [float(v) for v in rs.uniform(0, 1, size=10).astype(F32)]
    ts = uniq(ts)
    fixed_x = [f32(-1e30), -100.0, -88.0, -20.0, -1.0, f32(-1e-7), 0.0]
    xs, tt = [], []
    for t in ts:
        for x in fixed_x:
            xs.append(x)
            tt.append(t)
    add("kl_div_fixed_x", "kl_div", {"x": xs, "t": tt})
    xs, tt = [], []
    for t in ts:
        if t == 0:
            continue
        c = f32(math.log(t))
        for k in range(-3, 4):
            xs.append(f32_step(c, k))
            tt.append(t)
    add("kl_div_near_log_t", "kl_div", {"x": xs, "t": tt})

    # 4. kl_div, log_target = True
    vals = [-100.0, -87.0, -20.0, -1.0, f32(-1e-7), 0.0]
    vals += [float(v) for v in rs.uniform(-30, 0, size=10).astype(F32)]
    vals = uniq(vals)
    xs = [x for t in vals for x in vals]
    tt = [t for t in vals for x in vals]
    add("kl_div_log_target_grid", "kl_div_log_target", {"x": xs, "t": tt})
    xs, tt = [], []
    for v in vals:
        for k in (-3, -2, -1, 1, 2, 3):
            xs += [f32_step(v, k), v]
            tt += [v, f32_step(v, k)]
    add("kl_div_log_target_near", "kl_div_log_target", {"x": xs, "t": tt})

    # 5. sigmoid_focal
    fg = focal_grid()
    for alpha, gamma in ((0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.5, 1.0), (0.25, 0.5), (0.75, 3.5)):
        for t in (0.0, 1.0, 0.5):
            add("sigmoid_focal_a%s_g%s_t%s" % (tag(alpha), tag(gamma), tag(t)), "sigmoid_focal",
                {"x": fg, "t": [t] * len(fg)}, {"alpha": alpha, "gamma": gamma})

    # 6, 7. softplus, log_sigmoid
    add("softplus", "softplus", {"x": grid})
    add("log_sigmoid", "log_sigmoid", {"x": grid})

    # ---- float64-only inputs
    gd = logit_grid_double()
    for t in (0.0, 1.0, 0.3, 1 - 2.0 ** -40):
        # pw has no effect at t = 0; 2.7 makes torch's (1 + (pw - 1) t) (max_val + ...) overflow at -1e308
        for pw in {0.0: (1.0,), 0.3: (1.0, 0.7, 2.7)}.get(t, (1.0, 0.7)):
            add("bce_logits_t%s_pw%s_double" % ("1m2pm40" if t == 1 - 2.0 ** -40 else tag(t), tag(pw)),
                "bce_logits", {"x": gd, "t": [t] * len(gd), "pw": [pw] * len(gd)})
    z0, z1 = zone_double(-1), zone_double(1)
    add("bce_logits_zone_t0_pw1_double", "bce_logits", {"x": z0, "t": [0.0] * len(z0), "pw": [1.0] * len(z0)})
    for pw in (1.0, 0.7):
        add("bce_logits_zone_t1_pw%s_double" % tag(pw), "bce_logits",
            {"x": z1, "t": [1.0] * len(z1), "pw": [pw] * len(z1)})

    pd = prob_set_double()
    for t in (0.0, 1.0, 0.3, 1 - 2.0 ** -40):
        add("bce_t%s_double" % ("1m2pm40" if t == 1 - 2.0 ** -40 else tag(t)), "bce",
            {"x": pd, "t": [t] * len(pd)})

    rs = np.random.RandomState(6602)
    tsd = [0.0, 1.0, 2.0 ** -1074, 2.0 ** -1022, 1e-300, 2.0 ** -500, 1e-20, 0.1, 0.3, 0.7,
           1 - 2.0 ** -40, 1 - 2.0 ** -53] + list(rs.uniform(0, 1, size=5))
    tsd = uniq(tsd)
    fixed_xd = [-1e300, -745.6, -100.1, -20.000000001, -1.1, -0.1, -1e-300]
    xs = [x for t in tsd for x in fixed_xd]
    tt = [t for t in tsd for x in fixed_xd]
    add("kl_div_fixed_x_double", "kl_div", {"x": xs, "t": tt})
    xs, tt = [], []
    for t in tsd:
        if t == 0:
            continue
        c = float(mp.log(t))
        for k in range(-3, 4):
            x = f64_step(c, k)
            if not is_f32(x):
                xs.append(x)
                tt.append(t)
    add("kl_div_near_log_t_double", "kl_div", {"x": xs, "t": tt})

    valsd = [-745.6, -708.6, -100.1, -87.33654475055310, -20.1, -1.1, -0.1, -1e-17, -1e-300, -5e-324]
    valsd = uniq(valsd + list(rs.uniform(-30, 0, size=6)))
    xs = [x for t in valsd for x in valsd]
    tt = [t for t in valsd for x in valsd]
    add("kl_div_log_target_grid_double", "kl_div_log_target", {"x": xs, "t": tt})
    xs, tt = [], []
    for v in valsd:
        for k in (-3, -2, -1, 1, 2, 3):
            for x, t in ((f64_step(v, k), v), (v, f64_step(v, k))):
                if not is_f32(x):  # -5e-324 + 1 ulp is -0.0
                    xs.append(x)
                    tt.append(t)
    add("kl_div_log_target_near_double", "kl_div_log_target", {"x": xs, "t": tt})

    fgd = [v for v in gd if abs(v) <= 800 or abs(v) in (1e30, 1e300)]
    fgd = [v for i, v in enumerate(fgd) if abs(v) > 40 or abs(v) < 1 or i % 2 == 0]
    for alpha, gamma in ((0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.5, 1.0), (0.25, 0.5), (0.75, 3.5)):
        for t in ((0.0, 1.0, 0.5) if alpha == 0.25 and gamma == 2 else (0.0, 1.0)):  # keeps the file small
            add("sigmoid_focal_a%s_g%s_t%s_double" % (tag(alpha), tag(gamma), tag(t)), "sigmoid_focal",
                {"x": fgd, "t": [t] * len(fgd)}, {"alpha": alpha, "gamma": gamma})

    add("softplus_double", "softplus", {"x": gd})
    add("log_sigmoid_double", "log_sigmoid", {"x": gd})

    for name, fn, inputs, params in cases:
        double = name.endswith("_double")
        for key, vals_ in inputs.items():
            if not double or key != "x":
                assert double or all(is_f32(v) for v in vals_), (name, key)
            else:
                assert not any(is_f32(v) for v in vals_), (name, key)
        for v in params.values():
            assert is_f32(v)
    assert len(set(c[0] for c in cases)) == len(cases)
    return cases


OUT_KEYS = {"kl_div": ("loss", "grad", "terms"), "kl_div_log_target": ("loss", "grad", "terms")}


def points(inputs):
    keys = list(inputs)
    return [dict(zip(keys, vals)) for vals in zip(*(inputs[k] for k in keys))]


def exact_case(fn, inputs, params, dps):
    with mp.workdps(dps):
        out = [exact_point(fn, params, pt) for pt in points(inputs)]
    keys = OUT_KEYS.get(fn, ("loss", "grad"))
    return {k: [o[k] for o in out] for k in keys}


# ------------------------------------------------------------------------------------------------
# self-check

def torch_eval(fn, inputs, params, dtype):
    import torch
    import torch.nn.functional as F
    x = torch.tensor(inputs["x"], dtype=torch.float64).to(dtype).requires_grad_(True)
    t = torch.tensor(inputs["t"], dtype=torch.float64).to(dtype) if "t" in inputs else None
    if fn == "bce_logits":
        pw = torch.tensor(inputs["pw"], dtype=torch.float64).to(dtype)
        loss = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    elif fn == "bce":
        loss = F.binary_cross_entropy(x, t, reduction="none")
    elif fn == "kl_div":
        loss = F.kl_div(x, t, reduction="none", log_target=False)
    elif fn == "kl_div_log_target":
        loss = F.kl_div(x, t, reduction="none", log_target=True)
    elif fn == "sigmoid_focal":  # torchvision/ops/focal_loss.py, verbatim formula
        alpha, gamma = params["alpha"], params["gamma"]
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * ((1 - p_t) ** gamma)
        if alpha >= 0:
            loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    elif fn == "softplus":
        loss = F.softplus(x)
    elif fn == "log_sigmoid":
        loss = F.logsigmoid(x)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return [float(v) for v in loss.detach().double()], [float(v) for v in grad.double()]


def ulp_of(a, dtype):
    """The spacing of dtype at |a| (an mpf): 2**(e - 52) or 2**(e - 23) in binade [2**e, 2**(e+1)),
    the subnormal spacing below the normal range, the top binade's spacing above the finite range."""
    mant, emin, emax = (52, -1022, 1023) if dtype == "float64" else (23, -126, 127)
    e = emin if a == 0 else min(max(int(mp.floor(mp.log(abs(a), 2))), emin), emax)
    return mp.ldexp(1, e - mant)


def ulps(value, exact, dtype):
    """|value - exact| in ulps of dtype at the exact value (nan -> inf; inf -> 0 if the exact value
    rounds to that infinity in dtype, else inf)."""
    if not math.isfinite(value):
        big = mpf(1.7976931348623157e308) if dtype == "float64" else mpf(float(np.finfo(F32).max))
        half_ulp = ulp_of(big, dtype) / 2
        if math.isinf(value) and abs(exact) >= big + half_ulp and (value > 0) == (exact > 0):
            return 0.0
        return math.inf
    with mp.workdps(CHECK_DPS):
        return float(abs(mpf(value) - exact) / ulp_of(exact, dtype))


def reldiff(a, b):
    if a == b:
        return mpf(0)
    return abs(a - b) / max(abs(a), abs(b))


def main():
    import torch
    torch.set_num_threads(1)
    mp.dps = DPS
    cases = build_cases()
    out = sys.stdout
    err = sys.stderr
    out.write("# generated by tests/reference/gen_elementwise_reference.py\n")
    out.write("# command: /usr/bin/python3 tests/reference/gen_elementwise_reference.py"
              " > tests/reference/elementwise_cases.txt\n")
    out.write("# numpy %s, mpmath %s (mp.dps = %d; loss/grad/terms exact to %d significant digits);"
              " torch %s for the self-check only\n"
              % (np.__version__, mpmath.__version__, DPS, SIG, torch.__version__))
    out.write("# inputs written exactly; float32-representable except x in the *_double cases\n")

    n_values = n_mismatch = n_fmt = n_fmt_bad = 0
    rows = []
    exacts = {}
    for name, fn, inputs, params in cases:
        ex = exact_case(fn, inputs, params, DPS)
        hi = exact_case(fn, inputs, params, CHECK_DPS)
        exacts[name] = ex
        strs = {}
        for key, vals in ex.items():
            strs[key] = [fmt_exact(v) for v in vals]
            for v, s, h in zip(vals, strs[key], hi[key]):
                n_values += 1
                if s != fmt_exact(h):
                    n_mismatch += 1
                    if n_mismatch <= 5:
                        print("  dps %d vs %d mismatch in %s %s: %s vs %s"
                              % (DPS, CHECK_DPS, name, key, s, fmt_exact(h)), file=err)
                n_fmt += 1
                if not check_fmt(h, s):
                    n_fmt_bad += 1
                    if n_fmt_bad <= 5:
                        print("  format mismatch in %s %s: %s vs %r" % (name, key, s, h), file=err)
        out.write("case %s %s\n" % (name, fn))
        for key, vals in inputs.items():
            out.write("%s %s\n" % (key, " ".join(fmt_in(v) for v in vals)))
        for key, v in params.items():
            out.write("%s %s\n" % (key, fmt_in(v)))
        for key in ex:
            out.write("%s %s\n" % (key, " ".join(strs[key])))
        out.write("end\n")
        rows.append((name, fn, len(inputs["x"])))
    out.flush()

    print("%d cases, %d points, %d values" % (len(rows), sum(r[2] for r in rows), n_values), file=err)
    for name, fn, n in rows:
        print("  %-40s %-18s %5d points" % (name, fn, n), file=err)
    print("dps %d vs %d: %d of %d printed values differ" % (DPS, CHECK_DPS, n_mismatch, n_values), file=err)
    print("printing read back at high precision (and vs printf for exact doubles): %d of %d off by more"
          " than half a unit in the 21st digit" % (n_fmt_bad, n_fmt), file=err)
    flt_max = mpf(float(np.finfo(F32).max))
    for name, fn, inputs, params in cases:
        if name.endswith("_double"):
            continue
        for key, vals in exacts[name].items():
            over = [inputs["x"][i] for i, v in enumerate(vals) if abs(v) > flt_max]
            if over:
                print("note: %s %s exceeds FLT_MAX (float32 result inf) at x = %s"
                      % (name, key, " ".join(repr(v) for v in over)), file=err)

    # stable forms vs the naive definitions (200 digits), grads vs mpmath.diff of the naive forms
    worst_loss, worst_grad, n_l, n_g = {}, {}, 0, 0
    for name, fn, inputs, params in cases:
        pts = points(inputs)
        ex = exacts[name]
        step = max(1, len(pts) // 25)
        for i in range(0, len(pts), step):
            pt = pts[i]
            x = pt["x"]
            if fn in ("bce_logits", "sigmoid_focal", "softplus", "log_sigmoid") and abs(x) > 120:
                continue  # the naive form would need thousands of digits
            if fn == "bce" and not (0 < x < 1):
                continue
            with mp.workdps(NAIVE_DPS):
                nl = naive_loss(fn, params, pt)
            r = reldiff(nl, ex["loss"][i])
            n_l += 1
            if r > worst_loss.get(fn, (mpf(-1),))[0]:
                worst_loss[fn] = (r, name, x)
            if fn == "bce":
                with mp.workdps(DPS):
                    pq = mpf(x) * (1 - mpf(x))
                if pq <= EPS_BCE or x < 1e-43:  # torch's grad formula is not the derivative there
                    continue
            with mp.workdps(CHECK_DPS):
                h = mp.ldexp(max(mpf(1), abs(mpf(x))), -(mp.prec + 10))  # the default step is absolute
                d = mp.diff(lambda v: naive_loss(fn, params, dict(pt, x=v)), mpf(x), h=h)
            r = reldiff(d, ex["grad"][i])
            n_g += 1
            if r > worst_grad.get(fn, (mpf(-1),))[0]:
                worst_grad[fn] = (r, name, x)
    print("naive definitions at %d digits vs the table (%d sampled points), max relative difference:"
          % (NAIVE_DPS, n_l), file=err)
    for fn, (r, name, x) in worst_loss.items():
        print("  %-18s loss %.2e (%s, x = %r)" % (fn, float(r), name, x), file=err)
    print("mpmath.diff of the naive definitions (dps %d) vs grad (%d sampled points):" % (CHECK_DPS, n_g),
          file=err)
    for fn, (r, name, x) in worst_grad.items():
        print("  %-18s grad %.2e (%s, x = %r)" % (fn, float(r), name, x), file=err)

    # torch's EPSILON in binary_cross_entropy's backward
    p0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.functional.binary_cross_entropy(p0, torch.ones(1, dtype=torch.float64)), p0)
    print("torch float64 bce grad at p = 0, t = 1: %r (-1/float(1e-12f) = %r, -1/1e-12 = %r)"
          % (float(g[0]), -1 / EPS_BCE, -1 / 1e-12), file=err)

    # torch vs the table
    for dtype in ("float64", "float32"):
        tdt = torch.float64 if dtype == "float64" else torch.float32
        stats = {}
        for name, fn, inputs, params in cases:
            if dtype == "float32" and name.endswith("_double"):
                continue
            tl, tg = torch_eval(fn, inputs, params, tdt)
            ex = exacts[name]
            for key, tv in (("loss", tl), ("grad", tg)):
                s = stats.setdefault((fn, key), {"n": 0, "bad": 0, "nonfinite": 0, "max": (-1.0,), "cases": {}})
                for i, (v, e) in enumerate(zip(tv, ex[key])):
                    u = ulps(v, e, dtype)
                    s["n"] += 1
                    s["nonfinite"] += u == math.inf
                    if u > 4:
                        s["bad"] += 1
                        c = s["cases"].setdefault(name, [0, math.inf, -math.inf, 0.0])
                        c[0] += 1
                        c[1] = min(c[1], inputs["x"][i])
                        c[2] = max(c[2], inputs["x"][i])
                        c[3] = max(c[3], u)
                    if u > s["max"][0]:
                        s["max"] = (u, name, inputs["x"][i], inputs.get("t", [None] * (i + 1))[i], v,
                                    fmt_exact(e))
        print("torch %s vs the table, ulps of the exact value rounded to %s:" % (dtype, dtype), file=err)
        for (fn, key), s in stats.items():
            u, name, x, t, v, e = s["max"]
            print("  %-18s %-4s %6d points, %5d > 4 ulp (%d wrong nan/inf); worst %.3g ulp at %s x = %r t = %r:"
                  " torch %r, exact %s" % (fn, key, s["n"], s["bad"], s["nonfinite"], u, name, x, t, v, e), file=err)
            if dtype == "float64":
                for cname, (cnt, lo, hi_, worst) in s["cases"].items():
                    print("      %-38s %4d points > 4 ulp (max %.3g), x in [%r, %r]"
                          % (cname, cnt, worst, lo, hi_), file=err)


if __name__ == "__main__":
    main()
