"""Reference data for xent's evaluation metrics (include/xent/metrics/), float64 numpy and torch 1.13.

Rerun (Debian's python has torch 1.13, numpy and scipy; the python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_metrics_reference.py > tests/reference/metrics_cases.txt

Deterministic: fixed numpy seeds, fixed case list, single-threaded torch.

File format (the reader in tests/support.hpp; one "key v1 v2 ..." line per key):

    case <name> <C>
    N <samples>
    top_k <k>  bins <B>  temperature <T>  ignore_index <i>      (one line each)
    logits <N*C values>          torch [N, C] row-major = xent's C x N column-major (dim = 0)
    target <N ints>
    samples, ignored             evaluated and ignored sample counts
    nll, nll_stderr              mean NLL (torch cross_entropy, reduction none, on logits / T) and
                                 its standard error (numpy std, ddof = 1, / sqrt(n))
    perplexity                   exp(nll)
    accuracy, top_k_accuracy     position of the target in numpy's stable descending argsort
                                 (np.argsort(-x, kind="stable")) == 0, resp. < k
    brier                        mean of sum_k (softmax_k - onehot_k)^2
    mean_confidence, ece, mce    confidence = max softmax; bin b holds (b / B, (b + 1) / B]
    bin_count, bin_confidence, bin_accuracy   B values each (nan for an empty bin)
    fitted_temperature           (cases named fit_*) scipy's bounded minimiser of the mean NLL over T
    end

Every logit is a float32, written as its shortest decimal (read it as float, then widen: the double
tests see the same inputs). Special values are written as inf, -inf, nan. No confidence lies within 1e-5 of a bin edge (asserted), so
that float rounding cannot move a sample across bins.
"""

import math
import sys

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def fmt_f32(values):
    """The shortest decimal of each float32 (about half the size of a double's); it must come back
    as the same float32 through long double, as the C++ reader parses it (strtold, then float)."""
    words = [repr(np.float32(v)) for v in values]
    for w, v in zip(words, values):
        assert np.float32(np.longdouble(w)) == np.float32(v) or (math.isnan(v) and w == "nan"), w
    return " ".join(words)


def metrics(x, t, top_k, bins, temperature, ignore_index):
    """All metrics of float64 logits x [N, C] (already float32-representable) and targets t [N]."""
    keep = t != ignore_index
    xs, ts = x[keep], t[keep]
    n = len(ts)
    z = torch.from_numpy(xs / temperature)
    nll = F.cross_entropy(z, torch.from_numpy(ts), reduction="none").numpy()
    p = torch.softmax(z, dim=1).numpy()
    onehot = np.zeros_like(p)
    onehot[np.arange(n), ts] = 1
    brier = ((p - onehot) ** 2).sum(axis=1)
    order = np.argsort(-xs, axis=1, kind="stable")
    rank = np.argmax(order == ts[:, None], axis=1)
    # torch.argmax takes the first maximum, and the stable rank 0 is exactly that.
    assert np.array_equal(rank == 0, torch.argmax(torch.from_numpy(xs), dim=1).numpy() == ts)
    conf = p.max(axis=1)
    correct = (rank == 0).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    assert np.min(np.abs(conf[:, None] - edges[None, 1:-1])) > 1e-5 if bins > 1 else True
    count, bconf, bacc = [], [], []
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b > 0 else conf <= hi
        m = int(inside.sum())
        count.append(m)
        if m:
            c, a = conf[inside].mean(), correct[inside].mean()
            bconf.append(c)
            bacc.append(a)
            ece += m / n * abs(a - c)
            mce = max(mce, abs(a - c))
        else:
            bconf.append(math.nan)
            bacc.append(math.nan)
    return {
        "samples": [n],
        "ignored": [len(t) - n],
        "nll": [nll.mean()],
        "nll_stderr": [nll.std(ddof=1) / math.sqrt(n)],
        "perplexity": [math.exp(nll.mean())],
        "accuracy": [correct.mean()],
        "top_k_accuracy": [(rank < top_k).mean()],
        "brier": [brier.mean()],
        "mean_confidence": [conf.mean()],
        "ece": [ece],
        "mce": [mce],
        "bin_count": count,
        "bin_confidence": bconf,
        "bin_accuracy": bacc,
    }


def sample_targets(rng, x, temperature=1.0):
    p = torch.softmax(torch.from_numpy(x / temperature), dim=1).numpy()
    u = rng.random((x.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), x.shape[1] - 1).astype(np.int64)


def fitted_temperature(x, t):
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    f = lambda log_t: F.cross_entropy(xt / math.exp(log_t), tt).item()
    r = scipy.optimize.minimize_scalar(f, bounds=(math.log(0.01), math.log(100)), method="bounded",
                                       options={"xatol": 1e-10})
    return math.exp(r.x)


def emit(name, x, t, top_k=5, bins=15, temperature=1.0, ignore_index=-100, fit=False):
    n, c = x.shape
    print(f"case {name} {c}")
    print(f"N {n}")
    print(f"top_k {top_k}")
    print(f"bins {bins}")
    print(f"temperature {temperature!r}")
    print(f"ignore_index {ignore_index}")
    print("logits " + fmt_f32(x.reshape(-1)))
    print("target " + " ".join(str(int(v)) for v in t))
    for key, values in metrics(x, t, top_k, bins, temperature, ignore_index).items():
        print(f"{key} {fmt(values)}")
    if fit:
        print(f"fitted_temperature {fitted_temperature(x, t)!r}")
    print("end")


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def main():
    print("# generated by tests/reference/gen_metrics_reference.py "
          f"(torch {torch.__version__}, numpy {np.__version__})")
    print("# command: /usr/bin/python3 tests/reference/gen_metrics_reference.py > tests/reference/metrics_cases.txt")

    rng = np.random.default_rng(7001)
    x = f32(rng.standard_normal((200, 10)) * 2)
    emit("random_c10", x, rng.integers(0, 10, 200), top_k=3)

    # Targets drawn from the model itself, some ignored; C = 1000 (one chunk), 10 bins.
    rng = np.random.default_rng(7002)
    x = f32(rng.standard_normal((24, 1000)) * 5)
    t = sample_targets(rng, x)
    t[[3, 17, 20]] = -100
    emit("peaked_c1000_ignored", x, t, top_k=5, bins=10)

    # C = 5000 spans two of the kernel's 4096-float chunks; -inf masks (never on the target).
    rng = np.random.default_rng(7003)
    x = f32(rng.standard_normal((4, 5000)) * 4)
    t = sample_targets(rng, x)
    mask = rng.random(x.shape) < 0.3
    mask[np.arange(4), t] = False
    x[mask] = -np.inf
    emit("masked_c5000", x, t, top_k=10)

    # A temperature other than 1, and ignore_index = 2 (a class value, as torch allows).
    rng = np.random.default_rng(7004)
    x = f32(rng.standard_normal((500, 3)) * 3)
    emit("temperature2_c3_ignore2", x, sample_targets(rng, x, 2.0), top_k=2, bins=5, temperature=2.0, ignore_index=2)

    # Integer logits in a small range: ties everywhere, for the stable rank.
    rng = np.random.default_rng(7005)
    x = rng.integers(-2, 3, (300, 7)).astype(np.float64)
    emit("ties_c7", x, rng.integers(0, 7, 300), top_k=3, bins=1)

    # C = 17 (a ragged packet tail), one bin per 1/20.
    rng = np.random.default_rng(7006)
    x = f32(rng.standard_normal((120, 17)) * 1.5)
    emit("ragged_c17", x, sample_targets(rng, x), top_k=4, bins=20)

    # Temperature scaling: targets drawn at T = 1.7 from logits evaluated at T = 1.
    rng = np.random.default_rng(7007)
    x = f32(rng.standard_normal((400, 12)) * 3)
    emit("fit_t1.7_c12", x, sample_targets(rng, x, 1.7), top_k=3, fit=True)
    rng = np.random.default_rng(7008)
    x = f32(rng.standard_normal((300, 50)) * 2)
    emit("fit_t0.6_c50", x, sample_targets(rng, x, 0.6), top_k=5, fit=True)


if __name__ == "__main__":
    sys.exit(main())
