"""Reference data for xent's calibration figures (include/xent/metrics/evaluation.hpp,
temperature.hpp): float64 numpy, scikit-learn and scipy.

Rerun (Debian's python has numpy, scipy and scikit-learn, `apt-get install python3-sklearn`; the
python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_calibration_reference.py > tests/reference/calibration_cases.txt
    /usr/bin/python3 tests/reference/gen_calibration_reference.py --binary > tests/reference/binary_eval_cases.txt
    /usr/bin/python3 tests/reference/gen_calibration_reference.py --binary-npy tests/reference/binary_eval

(--binary: binary_eval_accumulator's cases; --binary-npy: the same as .npy files with their
expected reports, for xent-eval --binary's CLI tests.)

Deterministic: fixed numpy seeds, fixed case list.

Definitions written out here (torchmetrics is not in Debian; these are its
`calibration_error(norm=...)` formulas, torchmetrics/functional/classification/calibration_error.py,
`_ce_compute`):

    acc_b, conf_b, prop_b = mean correctness, mean confidence, share of the samples in bin b
    norm='l1'  (ECE):  sum_b prop_b |acc_b - conf_b|
    norm='l2'  (RMS):  sqrt(sum_b prop_b (acc_b - conf_b)^2)
    norm='max' (MCE):  max_b |acc_b - conf_b|   (an empty bin has acc = conf = 0, so gap 0)

Binning: torchmetrics buckets with torch.bucketize(right=True) over linspace(0, 1, B + 1), i.e.
[lo, hi) bins; scikit-learn's calibration_curve uses np.searchsorted(edges[1:-1], p) (side
'left'), i.e. (lo, hi] bins, as xent. The two agree except on an edge, and no probability here
lies within MARGIN of one (asserted), so all three conventions give the same bins.

Classwise ECE: for each class k, the binary calibration of p_k against [target = k]: the bins
from sklearn.calibration.calibration_curve(y == k, p_k, n_bins=B, strategy='uniform') (prob_true,
prob_pred over the non-empty bins) weighted by the bins' shares; the mean over classes. With
weights, the same numpy formulas weighted (calibration_curve has no weights).

Brier decomposition (Murphy 1973), summed over classes on those classwise bins:
    reliability = sum_k sum_b prop_kb (conf_kb - acc_kb)^2
    resolution  = sum_k sum_b prop_kb (acc_kb - base_k)^2,   base_k = frequency of class k
    uncertainty = sum_k base_k (1 - base_k)
    within_bin  = brier - (reliability - resolution + uncertainty)
brier is sum_k sklearn.metrics.brier_score_loss(y == k, p_k) (the multi-class sum). within_bin is
Stephenson et al.'s (2008) within-bin variance minus within-bin covariance, computed here also
from its own definition (1/n sum (p - conf_b)^2 - 2/n sum (p - conf_b)(y - acc_b)) and asserted
equal; it is 0 when every bin holds one forecast value (case "bin_constant_c3").

Equal-mass (quantile) bins (keys quantile_*, cases named quantile_*): the exact sample-quantile
split, written out here: sort the evaluated samples by confidence; the sample with weight W_before
of samples before it in that order goes to bin floor(W_before * B / W) (unweighted: rank i goes to
floor(i B / n), the equal-count split of np.array_split's kind with the larger bins last). Then the
three norms as above. xent forms these bins from a fine histogram of 4096 cells, equal-width in
logit(conf) over [-16, 16]; it gives the exact split when no cell holds samples of two bins, which
each such case asserts (conf below 0.99, and a sample within QMARGIN = 1e-3 of a cell edge in logit,
which float rounding might move across it, meets only samples of its own bin there); its figures then equal these.

NLL split (cases with fitted_temperature): calibration = NLL(T=1) - NLL(fitted T), refinement =
NLL(fitted T), the T from scipy's bounded minimiser of the mean NLL; with weights (case
fit_weighted_*), of the weighted mean NLL sum_j w_j nll_j / sum_j w_j.

File format (the reader in tests/support.hpp; one "key v1 v2 ..." line per key):

    case <name> <C>
    N, bins, temperature, ignore_index      one line each
    logits <N*C values>    [N, C] row-major = xent's C x N column-major (dim = 0), float32 decimals
    target <N ints>
    weight <N values>      (optional) per-sample weights
    ece, rmsce, mce, classwise_ece, brier, brier_reliability, brier_resolution,
    brier_uncertainty, brier_within_bin
    class_ece <C values>   each class's ECE (informative)
    nll_before, nll_after, nll_calibration, nll_refinement, fitted_temperature   (fit_* cases)
    quantile_ece, quantile_rmsce, quantile_mce   (quantile_* cases: equal-mass bins)
    quantile_weight <bins values>   each equal-mass bin's weight
    end
"""

import math
import sys

import numpy as np
import scipy.optimize
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

MARGIN = 2e-6
QCELLS, QRANGE, QMARGIN = 4096, 16.0, 1e-3


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def fmt_f32(values):
    words = [repr(np.float32(v)) for v in values]
    for w, v in zip(words, values):
        assert np.float32(np.longdouble(w)) == np.float32(v) or (math.isnan(v) and w == "nan"), w
    return " ".join(words)


def softmax(z):
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    return e / e.sum(axis=1, keepdims=True)


def far_from_edges(values, bins):
    edges = np.linspace(0, 1, bins + 1)[1:-1]
    return bins == 1 or np.min(np.abs(values.reshape(-1)[:, None] - edges[None, :])) > MARGIN


def uniform_bins(p, bins):
    """scikit-learn's bin of each probability (calibration_curve, strategy='uniform')."""
    return np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p)


def top_label(conf, correct, w, bins):
    """torchmetrics' three norms, (lo, hi] bins (the same bins here, see the docstring)."""
    ids = uniform_bins(conf, bins)
    W = w.sum()
    l1 = l2 = mx = 0.0
    for b in range(bins):
        inside = ids == b
        wb = w[inside].sum()
        if wb == 0:
            continue
        acc = (w[inside] * correct[inside]).sum() / wb
        cf = (w[inside] * conf[inside]).sum() / wb
        prop = wb / W
        l1 += prop * abs(acc - cf)
        l2 += prop * (acc - cf) ** 2
        mx = max(mx, abs(acc - cf))
    return l1, math.sqrt(l2) if l2 > 0 else 0.0, mx


def quantile_bins(conf, w, bins):
    """The exact sample-quantile bin of each sample (see the docstring)."""
    order = np.argsort(conf, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(w[order])[:-1]])
    ids = np.empty(len(conf), dtype=np.int64)
    ids[order] = np.minimum(np.floor(before * bins / w.sum()).astype(np.int64), bins - 1)
    return ids


def fine_cells_exact(conf, ids):
    """xent's fine cells give the exact split: no cell holds samples of two bins, and a conf within
    QMARGIN (in logit) of a cell edge, which float rounding might move across it, finds only
    samples of its own bin beyond that edge."""
    if np.max(conf) >= 0.99:
        return False
    logit = np.log(conf) - np.log1p(-conf)
    pos = (logit + QRANGE) * (QCELLS / (2 * QRANGE))
    cells = np.floor(pos).astype(np.int64)
    frac = pos - cells
    m = QMARGIN * QCELLS / (2 * QRANGE)
    for j in range(len(conf)):
        near = [cells[j]] + ([cells[j] - 1] if frac[j] < m else []) + ([cells[j] + 1] if frac[j] > 1 - m else [])
        if np.any(ids[np.isin(cells, near)] != ids[j]):
            return False
    return True


def norms_over(ids, conf, correct, w, bins):
    W = w.sum()
    l1 = l2 = mx = 0.0
    weights = []
    for b in range(bins):
        inside = ids == b
        wb = w[inside].sum()
        weights.append(wb)
        if wb == 0:
            continue
        acc = (w[inside] * correct[inside]).sum() / wb
        cf = (w[inside] * conf[inside]).sum() / wb
        l1 += wb / W * abs(acc - cf)
        l2 += wb / W * (acc - cf) ** 2
        mx = max(mx, abs(acc - cf))
    return l1, math.sqrt(l2), mx, weights


def classwise(p, y, w, bins, weighted):
    n, c = p.shape
    W = w.sum()
    class_ece, rel, res, unc, wbv, wbc = [], 0.0, 0.0, 0.0, 0.0, 0.0
    for k in range(c):
        pk, yk = p[:, k], (y == k).astype(float)
        ids = uniform_bins(pk, bins)
        base = (w * yk).sum() / W
        unc += base * (1 - base)
        ece_k = 0.0
        if not weighted:
            # scikit-learn's curve over the non-empty bins, in bin order, and their shares.
            prob_true, prob_pred = calibration_curve(yk, pk, n_bins=bins, strategy="uniform")
            counts = np.bincount(ids, minlength=bins)
            share = counts[counts > 0] / n
            ece_k = float((share * np.abs(prob_true - prob_pred)).sum())
        for b in range(bins):
            inside = ids == b
            wb = w[inside].sum()
            if wb == 0:
                continue
            acc = (w[inside] * yk[inside]).sum() / wb
            cf = (w[inside] * pk[inside]).sum() / wb
            if weighted:
                ece_k += wb / W * abs(acc - cf)
            rel += wb / W * (cf - acc) ** 2
            res += wb / W * (acc - base) ** 2
            wbv += (w[inside] * (pk[inside] - cf) ** 2).sum() / W
            wbc += 2 * (w[inside] * (pk[inside] - cf) * (yk[inside] - acc)).sum() / W
        class_ece.append(ece_k)
    return class_ece, rel, res, unc, wbv - wbc


def fitted_temperature(x, t, w=None):
    """scipy's bounded minimiser of the (weighted) mean NLL over log T."""
    w = np.ones(len(t)) if w is None else w

    def nll(log_t):
        z = x / math.exp(log_t)
        lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
        return float((w * (lse - z[np.arange(len(t)), t])).sum() / w.sum())

    r = scipy.optimize.minimize_scalar(nll, bounds=(math.log(0.01), math.log(100)), method="bounded",
                                       options={"xatol": 1e-10})
    return math.exp(r.x), nll(0.0), nll(r.x)


def emit(name, x, t, bins=15, temperature=1.0, ignore_index=-100, weights=None, fit=False, quantile=False):
    n, c = x.shape
    keep = t != ignore_index
    w_all = np.ones(n) if weights is None else weights
    keep &= w_all > 0
    xs, ts, w = x[keep], t[keep], w_all[keep]
    p = softmax(xs / temperature)
    assert far_from_edges(p, bins), name
    conf = p.max(axis=1)
    correct = (np.argmax(xs, axis=1) == ts).astype(float)
    ece, rmsce, mce = top_label(conf, correct, w, bins)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(ts)), ts] = 1
    brier_rows = ((p - onehot) ** 2).sum(axis=1)
    brier = float((w * brier_rows).sum() / w.sum())
    if weights is None:
        sk = sum(brier_score_loss((ts == k).astype(int), p[:, k]) for k in range(c))
        assert abs(sk - brier) < 1e-12, (sk, brier)
    class_ece, rel, res, unc, within = classwise(p, ts, w, bins, weights is not None)
    assert abs((rel - res + unc + within) - brier) < 1e-12, name

    print(f"case {name} {c}")
    print(f"N {n}")
    print(f"bins {bins}")
    print(f"temperature {temperature!r}")
    print(f"ignore_index {ignore_index}")
    print("logits " + fmt_f32(x.reshape(-1)))
    print("target " + " ".join(str(int(v)) for v in t))
    if weights is not None:
        print("weight " + fmt(weights))
    print(f"ece {ece!r}")
    print(f"rmsce {rmsce!r}")
    print(f"mce {mce!r}")
    print(f"classwise_ece {float(np.mean(class_ece))!r}")
    print(f"brier {brier!r}")
    print(f"brier_reliability {rel!r}")
    print(f"brier_resolution {res!r}")
    print(f"brier_uncertainty {unc!r}")
    print(f"brier_within_bin {brier - (rel - res + unc)!r}")
    print("class_ece " + fmt(class_ece))
    if quantile:
        ids = quantile_bins(conf, w, bins)
        assert fine_cells_exact(conf, ids), name
        q1, q2, qmax, qw = norms_over(ids, conf, correct, w, bins)
        assert q1 <= q2 + 1e-15 <= qmax + 2e-15, name
        print(f"quantile_ece {q1!r}")
        print(f"quantile_rmsce {q2!r}")
        print(f"quantile_mce {qmax!r}")
        print("quantile_weight " + fmt(qw))
    if fit:
        temp, before, after = fitted_temperature(xs, ts, None if weights is None else w)
        print(f"fitted_temperature {temp!r}")
        print(f"nll_before {before!r}")
        print(f"nll_after {after!r}")
        print(f"nll_calibration {before - after!r}")
        print(f"nll_refinement {after!r}")
    print("end")


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def sample_targets(rng, x, temperature=1.0):
    p = softmax(x / temperature)
    u = rng.random((x.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), x.shape[1] - 1).astype(np.int64)


def draw(seed, make, bins, temperature=1.0):
    """make(rng) -> (x, t, ...) with every softmax probability MARGIN away from the bin edges:
    the first seed from `seed` on that gives it (the seed is part of the case's name)."""
    for s in range(seed, seed + 1000):
        out = make(np.random.default_rng(s))
        finite = out[0]
        if far_from_edges(softmax(finite / temperature), bins):
            return s, out
    raise RuntimeError("no seed")


def main():
    print("# generated by tests/reference/gen_calibration_reference.py "
          f"(numpy {np.__version__}, scikit-learn {sklearn.__version__}, scipy {scipy.__version__})")
    print("# command: /usr/bin/python3 tests/reference/gen_calibration_reference.py > tests/reference/calibration_cases.txt")

    # Overconfident: logits twice what the targets were drawn from.
    def overconfident(rng):
        x = f32(rng.standard_normal((300, 10)) * 2)
        t = sample_targets(rng, x, 2.0)
        return x, t
    s, (x, t) = draw(8101, overconfident, 15)
    emit(f"overconfident_c10_seed{s}", x, t, bins=15, fit=True)

    # Weights (real, with zeros), 10 bins, C = 5.
    def weighted(rng):
        x = f32(rng.standard_normal((200, 5)) * 1.5)
        t = sample_targets(rng, x)
        w = rng.random(200) * 2
        w[rng.random(200) < 0.1] = 0
        return x, t, w
    s, (x, t, w) = draw(8201, weighted, 10)
    emit(f"weighted_c5_seed{s}", x, t, bins=10, weights=w)

    # -inf masks (never on the target), ignored targets, T = 0.7, 8 bins.
    def masked(rng):
        x = f32(rng.standard_normal((150, 7)) * 2)
        t = sample_targets(rng, x, 0.7)
        m = rng.random(x.shape) < 0.25
        m[np.arange(150), t] = False
        t[rng.random(150) < 0.05] = -100
        x2 = x.copy()
        x2[m] = -np.inf
        return x2, t
    s, (x, t) = draw(8301, masked, 8, 0.7)
    emit(f"masked_c7_t0.7_seed{s}", x, t, bins=8, temperature=0.7)

    # Bin-constant forecasts: two distinct rows whose p_k fall in different bins for every k, so
    # Murphy's identity is exact (within_bin = 0 up to rounding).
    rows = np.log(np.array([[0.72, 0.21, 0.07], [0.13, 0.33, 0.54]]))
    rng = np.random.default_rng(8401)
    pick = rng.integers(0, 2, 100)
    x = f32(rows[pick])
    t = sample_targets(rng, x)
    emit("bin_constant_c3", x, t, bins=20)

    # Underconfident, C = 40 (a ragged packet tail), 15 bins.
    def under(rng):
        x = f32(rng.standard_normal((250, 40)) * 1.0)
        return x, sample_targets(rng, x, 0.5)
    s, (x, t) = draw(8501, under, 15)
    emit(f"underconfident_c40_seed{s}", x, t, bins=15, fit=True)

    # Weighted temperature fit: an overconfident model whose weights favour its confident samples
    # (so the weighted optimum differs from the unweighted one, asserted).
    def fit_weighted(rng):
        x = f32(rng.standard_normal((250, 8)) * 2)
        t = sample_targets(rng, x, 1.6)
        w = np.exp(softmax(x).max(axis=1) * 3) * rng.random(250)
        w[rng.random(250) < 0.1] = 0
        return x, t, w
    s, (x, t, w) = draw(8701, fit_weighted, 12)
    keep = w > 0
    assert abs(fitted_temperature(x[keep], t[keep], w[keep])[0] - fitted_temperature(x[keep], t[keep])[0]) > 0.05
    emit(f"fit_weighted_c8_seed{s}", x, t, bins=12, weights=w, fit=True)

    # Equal-mass bins: confident logits (their confidences spread over many fine cells), the first
    # seed whose exact quantile split the fine histogram reproduces.
    def quantile_case(n, c, bins, scale, weighted):
        def make(rng):
            x = f32(rng.standard_normal((n, c)) * scale)
            t = sample_targets(rng, x, 1.5)
            if not weighted:
                return x, t
            w = rng.random(n) * 2
            w[rng.random(n) < 0.1] = 0
            return x, t, w
        for seed in range(8601 + 1000 * weighted, 8601 + 1000 * weighted + 1000):
            s, out = draw(seed, make, bins)
            x, t = out[0], out[1]
            w = out[2] if weighted else np.ones(n)
            keep = w > 0
            p = softmax(x[keep])
            conf = p.max(axis=1)
            if fine_cells_exact(conf, quantile_bins(conf, w[keep], bins)):
                return s, out
        raise RuntimeError("no seed")
    s, (x, t) = quantile_case(120, 6, 10, 1.5, False)
    emit(f"quantile_c6_seed{s}", x, t, bins=10, quantile=True)
    s, (x, t, w) = quantile_case(90, 4, 6, 1.5, True)
    emit(f"quantile_weighted_c4_seed{s}", x, t, bins=6, weights=w, quantile=True)


# ---- binary / multi-label evaluation (binary_eval_accumulator, xent-eval --binary)

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def binary_figures(x, y, w, bins, threshold, probabilities, ignore_index=-100):
    """torch's losses, scikit-learn's metrics and calibration_curve, numpy for the rest; x, y, w
    flat (C order)."""
    import torch
    keep = (y != ignore_index) & (w > 0)
    x, y, w = x[keep], y[keep].astype(float), w[keep]
    if probabilities:
        p = x
        bce = torch.nn.functional.binary_cross_entropy(torch.tensor(p), torch.tensor(y), reduction="none").numpy()
    else:
        p = sigmoid(x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y), reduction="none").numpy()
    assert far_from_edges(p, bins) and np.min(np.abs(p - threshold)) > MARGIN
    W = w.sum()
    mean = float((w * bce).sum() / W)
    var = float(((w * bce * bce).sum() - W * mean * mean) / (W - 1))
    pred = (p > threshold).astype(float)
    out = {"samples": int(keep.sum()), "ignored": int((~keep).sum()), "weight": float(W), "bce": mean,
           "bce_stderr": math.sqrt(var / W), "accuracy": float((w * (pred == y)).sum() / W),
           "brier": float((w * (p - y) ** 2).sum() / W), "mean_probability": float((w * p).sum() / W),
           "base_rate": float((w * y).sum() / W)}
    if np.all(w == 1):
        out_sk = (log_loss(y, np.clip(p, 0, 1), labels=[0, 1]), accuracy_score(y, pred), brier_score_loss(y, p))
        if not probabilities or np.all((p > 0) & (p < 1)):
            assert abs(out_sk[0] - mean) < 1e-12 * max(1, mean), (out_sk[0], mean)
        assert out_sk[1] == out["accuracy"] and abs(out_sk[2] - out["brier"]) < 1e-14
        prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
        ids = uniform_bins(p, bins)
        counts = np.bincount(ids, minlength=bins)
        share = counts[counts > 0] / len(p)
        gaps = np.abs(prob_true - prob_pred)
        sk = (float((share * gaps).sum()), math.sqrt(float((share * gaps ** 2).sum())), float(gaps.max()))
    ids = uniform_bins(p, bins)
    l1, l2, mx, weights = norms_over(ids, p, y, w, bins)
    if np.all(w == 1):
        assert max(abs(a - b) for a, b in zip(sk, (l1, l2, mx))) < 1e-14, (sk, (l1, l2, mx))
    out.update({"ece": l1, "rmsce": l2, "mce": mx})
    return out, weights


def binary_cases():
    """(name, x, y, w or None, bins, threshold, probabilities, labels)"""
    out = []
    # Overconfident logits: targets drawn at sigmoid(x / 2).
    def over(rng):
        x = f32(rng.standard_normal(400) * 3)
        return x, (rng.random(400) < sigmoid(x / 2)).astype(np.int64)
    for s in range(9101, 9300):
        x, y = over(np.random.default_rng(s))
        if far_from_edges(sigmoid(x), 10) and np.min(np.abs(sigmoid(x) - 0.5)) > MARGIN:
            break
    out.append((f"binary_logits_seed{s}", x, y, None, 10, 0.5, False, 1))
    # Weights (with zeros), ignored targets, threshold 0.3, 8 bins.
    for s in range(9301, 9500):
        rng = np.random.default_rng(s)
        x = f32(rng.standard_normal(300) * 2 + 0.5)
        y = (rng.random(300) < sigmoid(x * 0.7)).astype(np.int64)
        y[rng.random(300) < 0.05] = -100
        w = rng.random(300) * 3
        w[rng.random(300) < 0.1] = 0
        p = sigmoid(x)
        if far_from_edges(p, 8) and np.min(np.abs(p - 0.3)) > MARGIN:
            break
    out.append((f"binary_weighted_seed{s}", x, y, w, 8, 0.3, False, 1))
    # Probabilities, some exactly 0 and 1 (torch's log clamp at -100), 12 bins.
    for s in range(9501, 9700):
        rng = np.random.default_rng(s)
        p = rng.beta(0.7, 0.9, 250)
        p[:3] = [0.0, 1.0, 0.0]
        y = (rng.random(250) < p ** 1.3).astype(np.int64)
        y[:3] = [1, 0, 0]
        if far_from_edges(p[3:], 12) and np.min(np.abs(p - 0.5)) > MARGIN:
            break
    out.append((f"binary_probabilities_seed{s}", p, y, None, 12, 0.5, True, 1))
    # Multi-label [N, L] = [120, 4]: each label its own bias, pooled (micro) over the entries.
    for s in range(9701, 9900):
        rng = np.random.default_rng(s)
        x = f32(rng.standard_normal((120, 4)) * 2 + np.array([-1.0, 0.0, 0.5, 1.5]))
        y = (rng.random((120, 4)) < sigmoid(x * 0.8)).astype(np.int64)
        if far_from_edges(sigmoid(x), 10) and np.min(np.abs(sigmoid(x) - 0.5)) > MARGIN:
            break
    out.append((f"multilabel_l4_seed{s}", x, y, None, 10, 0.5, False, 4))
    return out


def binary_main():
    print("# generated by tests/reference/gen_calibration_reference.py --binary "
          f"(numpy {np.__version__}, scikit-learn {sklearn.__version__})")
    print("# command: /usr/bin/python3 tests/reference/gen_calibration_reference.py --binary > tests/reference/binary_eval_cases.txt")
    print("# case <name> <labels L>; logits (or probabilities) and targets [N, L] in C order; figures: torch's")
    print("# binary_cross_entropy(_with_logits), scikit-learn's accuracy_score / brier_score_loss / log_loss /")
    print("# calibration_curve (unweighted cases), numpy's weighted formulas (all cases)")
    for name, x, y, w, bins, threshold, probabilities, labels in binary_cases():
        flat_w = np.ones(x.size) if w is None else np.repeat(w, labels)
        fig, weights = binary_figures(x.reshape(-1), y.reshape(-1), flat_w, bins, threshold, probabilities)
        print(f"case {name} {labels}")
        print(f"N {x.shape[0]}")
        print(f"bins {bins}")
        print(f"threshold {threshold!r}")
        print(f"probabilities {int(probabilities)}")
        print("logits " + (fmt(x.reshape(-1)) if probabilities else fmt_f32(x.reshape(-1))))
        print("target " + " ".join(str(int(v)) for v in y.reshape(-1)))
        if w is not None:
            print("weight " + fmt(w))
        for k, v in fig.items():
            print(f"{'total_weight' if k == 'weight' else k} {v!r}")  # "weight" is the per-sample weights
        print("bin_weight " + fmt(weights))
        print("end")


def binary_npy(directory):
    """The CLI's inputs and expected reports (xent_eval_inputs compare's "key value" lines)."""
    import os
    os.makedirs(directory, exist_ok=True)
    for name, x, y, w, bins, threshold, probabilities, labels in binary_cases():
        stem = name.split("_seed")[0]
        np.save(os.path.join(directory, stem + "_x.npy"), x.astype(np.float64 if probabilities else np.float32))
        np.save(os.path.join(directory, stem + "_y.npy"), y.astype(np.int64))
        if w is not None:
            np.save(os.path.join(directory, stem + "_w.npy"), w.astype(np.float64))
        flat_w = np.ones(x.size) if w is None else np.repeat(w, labels)
        fig, _ = binary_figures(x.reshape(-1), y.reshape(-1), flat_w, bins, threshold, probabilities)
        with open(os.path.join(directory, stem + "_expected.txt"), "w") as f:
            for k, v in fig.items():
                f.write(f"{k} {v!r}\n")
        if stem == "binary_logits":
            # Bad inputs for the CLI's messages: a target of 2 (at index 17), a NaN logit (at 5).
            bad = y.astype(np.int64)
            bad[17] = 2
            np.save(os.path.join(directory, "binary_bad_target_y.npy"), bad)
            nan = x.astype(np.float32)
            nan[5] = np.nan
            np.save(os.path.join(directory, "binary_nan_x.npy"), nan)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--binary":
        sys.exit(binary_main())
    if len(sys.argv) > 2 and sys.argv[1] == "--binary-npy":
        sys.exit(binary_npy(sys.argv[2]))
    sys.exit(main())
