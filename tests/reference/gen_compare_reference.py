"""Reference data for xent's two-model comparison (include/xent/metrics/compare.hpp), float64 numpy.

Rerun (Debian's python has numpy; the python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_compare_reference.py > tests/reference/compare_cases.txt

Deterministic: fixed numpy seeds, fixed case list.

File format (the reader in tests/support.hpp; one "key v1 v2 ..." line per key):

    case <name> <C>
    N <samples>  ignore_index <i>  has_targets <0|1>       (one line each)
    base, test <N*C values>      torch [N, C] row-major = xent's C x N column-major (dim = 0); or, for
                                 the cases named lcg_*, absent: the logits are
                                 lcg_logits(seed, N, C) below, which the C++ test computes too
    seed_base, seed_test         (lcg_* cases) the seeds
    target <N ints>              (has_targets 1)
    token_kl, token_delta_p, token_nll_base, token_nll_test, token_same_top
                                 per sample (nan where left out: ignored; Δp and NLLs without targets)
    samples, ignored, targeted   counts
    kl, kl_stderr, kl_max        mean KL(base || test) over the compared samples, its standard error
                                 (numpy std, ddof = 1, / sqrt(n)), the max
    kl_quantiles                 np.quantile(kl, fractions) (numpy's default method, "linear"), at
    fractions                    0, .001, .01, .05, .1, .25, .5, .75, .9, .95, .99, .999, 1
    same_top, same_top_stderr    mean [argmax base == argmax test] (np.argmax: first index), and
                                 sqrt(p (1 - p) / (n - 1)) (llama.cpp)
    nll_base, nll_base_stderr, nll_test, nll_test_stderr, nll_correlation (np.corrcoef)
    log_ppl_ratio                mean(nll_test) - mean(nll_base)
    log_ppl_ratio_stderr         std(nll_test - nll_base, ddof = 1) / sqrt(n)
    log_ppl_ratio_stderr_llama   llama.cpp's form: sqrt(se_test^2 + se_base^2 - 2 cov), cov =
                                 (sum ab / n - (sum a / n)(sum b / n)) / (n - 1)  (the same number)
    ppl_ratio, ppl_ratio_stderr, ppl_diff, ppl_diff_stderr   llama.cpp's formulas in float64
    delta_p, delta_p_stderr      Δp = softmax(test)[t] - softmax(base)[t]
    delta_p_rms, delta_p_rms_stderr, delta_p_max_abs, delta_p_quantiles
    end

and one case "quantile_check" with values v and np.quantile(v, q) for q in q_fractions, to hold the
percentile definition itself to numpy.

Every logit is a float32, written as its shortest decimal. Special values are written as inf, -inf, nan.
KL per sample: sum_k p_k (log p_k - log q_k) over the classes with p_k > 0, p = softmax(base),
q = softmax(test), from scipy-free float64 log-softmax (logits - logsumexp).
"""

import math
import sys

import numpy as np

FRACTIONS = [0, 0.001, 0.01, 0.05, 0.10, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99, 0.999, 1]


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def fmt_f32(values):
    words = [repr(np.float32(v)) for v in values]
    for w, v in zip(words, values):
        assert np.float32(np.longdouble(w)) == np.float32(v) or (math.isnan(v) and w == "nan"), w
    return " ".join(words)


def lcg_logits(seed, n, c):
    """Logits from a 64-bit linear congruential generator (Knuth's MMIX constants): each value is
    ((state >> 33) % 2001 - 1000) / 128, an exact float32 in [-7.8125, 7.8125]."""
    out = np.empty(n * c, dtype=np.float64)
    state = seed & 0xFFFFFFFFFFFFFFFF
    for i in range(n * c):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out[i] = (((state >> 33) % 2001) - 1000) / 128.0
    return out.reshape(n, c)


def log_softmax(x):
    m = np.max(x, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


def mean_se(v):
    n = len(v)
    return float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def compare(base, test, target, ignore_index, has_targets):
    n, c = base.shape
    lb, lt = log_softmax(base), log_softmax(test)
    pb = np.exp(lb)
    with np.errstate(invalid="ignore"):
        terms = np.where(pb > 0, pb * (lb - lt), 0.0)
    kl_all = np.sum(terms, axis=1)
    same_all = (np.argmax(base, axis=1) == np.argmax(test, axis=1)).astype(np.float64)
    keep = np.ones(n, dtype=bool) if not has_targets else target != ignore_index
    nan = float("nan")
    tok = {k: np.full(n, nan) for k in ["kl", "delta_p", "nll_base", "nll_test", "same_top"]}
    tok["kl"][keep] = kl_all[keep]
    tok["same_top"][keep] = same_all[keep]
    r = {"samples": [int(keep.sum())], "ignored": [int(n - keep.sum())]}
    kl, same = kl_all[keep], same_all[keep]
    r["kl"], r["kl_stderr"] = mean_se(kl)
    r["kl"], r["kl_stderr"] = [r["kl"]], [r["kl_stderr"]]
    r["kl_max"] = [float(np.max(kl))]
    r["kl_quantiles"] = list(np.quantile(kl, FRACTIONS))
    p = float(np.mean(same))
    r["same_top"], r["same_top_stderr"] = [p], [math.sqrt(p * (1 - p) / (len(same) - 1))]
    if has_targets:
        idx = np.nonzero(keep)[0]
        t = target[idx]
        nb, nt = -lb[idx, t], -lt[idx, t]
        dp = np.exp(-nt) - np.exp(-nb)
        tok["nll_base"][idx], tok["nll_test"][idx], tok["delta_p"][idx] = nb, nt, dp
        m = len(idx)
        r["targeted"] = [m]
        mb, sb = mean_se(nb)
        mt, st = mean_se(nt)
        r["nll_base"], r["nll_base_stderr"], r["nll_test"], r["nll_test_stderr"] = [mb], [sb], [mt], [st]
        r["nll_correlation"] = [float(np.corrcoef(nb, nt)[0, 1])]
        md, sd = mean_se(nt - nb)
        r["log_ppl_ratio"], r["log_ppl_ratio_stderr"] = [mt - mb], [sd]
        cov = (np.sum(nb * nt) / m - (np.sum(nb) / m) * (np.sum(nt) / m)) / (m - 1)
        r["log_ppl_ratio_stderr_llama"] = [math.sqrt(st * st + sb * sb - 2 * cov)]
        ratio = float(np.exp(mt - mb))
        r["ppl_ratio"], r["ppl_ratio_stderr"] = [ratio], [ratio * sd]
        ppl_t, ppl_b = float(np.exp(mt)), float(np.exp(mb))
        r["ppl_diff"] = [ppl_t - ppl_b]
        r["ppl_diff_stderr"] = [float(np.sqrt(np.float64(ppl_t * st) ** 2 + (ppl_b * sb) ** 2 - 2 * ppl_t * ppl_b * cov))]
        r["delta_p"], r["delta_p_stderr"] = [mean_se(dp)[0]], [mean_se(dp)[1]]
        mse, mse_se = mean_se(dp * dp)
        rms = math.sqrt(mse)
        r["delta_p_rms"], r["delta_p_rms_stderr"] = [rms], [0.5 / rms * mse_se]
        r["delta_p_max_abs"] = [float(np.max(np.abs(dp)))]
        r["delta_p_quantiles"] = list(np.quantile(dp, FRACTIONS))
    else:
        r["targeted"] = [0]
    return tok, r


def emit(name, base, test, target, ignore_index, has_targets, seeds=None):
    base, test = f32(base), f32(test)  # the float32 values the file holds
    n, c = base.shape
    tok, r = compare(base, test, target, ignore_index, has_targets)
    print(f"case {name} {c}")
    print(f"N {n}")
    print(f"ignore_index {ignore_index}")
    print(f"has_targets {int(has_targets)}")
    if seeds is None:
        print("base " + fmt_f32(base.reshape(-1)))
        print("test " + fmt_f32(test.reshape(-1)))
    else:
        print(f"seed_base {seeds[0]}")
        print(f"seed_test {seeds[1]}")
    if has_targets:
        print("target " + " ".join(str(int(v)) for v in target))
    for k, v in tok.items():
        print(f"token_{k} " + fmt(v))
    for k, v in r.items():
        print(f"{k} " + fmt(v))
    print("end")


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def main():
    np.seterr(over="ignore", invalid="ignore")
    print("# generated by tests/reference/gen_compare_reference.py (numpy %s)" % np.__version__)
    print("# command: /usr/bin/python3 tests/reference/gen_compare_reference.py > tests/reference/compare_cases.txt")
    rng = np.random.default_rng(14)

    # A model and a perturbed copy, targets drawn from the base model, some ignored.
    n, c = 120, 16
    base = f32(rng.standard_normal((n, c)) * 2.5)
    test = f32(base + rng.standard_normal((n, c)) * 0.3)
    pb = np.exp(log_softmax(base))
    target = np.array([rng.choice(c, p=p / p.sum()) for p in pb])
    target[rng.choice(n, 9, replace=False)] = -100
    emit("perturbed_c16", base, test, target, -100, True)

    # Ties (argmax of both on repeated maxima, the first index counts), masks (-inf in the same
    # classes of both, and test mass on classes the base masks), a shift of the whole row (KL 0).
    n, c = 60, 7
    base = f32(np.round(rng.standard_normal((n, c)) * 4) / 2)  # halves: many ties
    test = f32(np.round((base + rng.standard_normal((n, c)) * 0.6) * 2) / 2)
    base[::5, 2] = -np.inf
    test[::5, 2] = -np.inf
    base[1::7, 4] = -np.inf  # base masks a class test keeps: no KL term
    test[3::11] = base[3::11] + 3.0  # the same distribution, shifted: KL 0, same top
    target = rng.integers(0, c, n)
    target[::5] = np.where(target[::5] == 2, 0, target[::5])  # no target on a masked class
    target[1::7] = np.where(target[1::7] == 4, 1, target[1::7])
    emit("ties_masks_c7", base, test, target, -1, True)

    # Large logits: offsets of 1e30 and disagreeing one-hot rows (KL ~ 2e30).
    n, c = 24, 5
    base = f32(rng.standard_normal((n, c)))
    test = f32(base + rng.standard_normal((n, c)) * 0.1)
    base[::4] += 1e30
    test[::4] += 1e30
    base[2, :] = -1e30
    base[2, 1] = 1e30
    test[2, :] = -1e30
    test[2, 3] = 1e30
    base[6] = 1e30 * np.array([1, -1, -1, -1, -1])
    test[6] = 1e30 * np.array([1, -1, -1, -1, -1])
    target = rng.integers(0, c, n)
    target[2] = 1
    emit("large_c5", base, test, target, -100, True)

    # No targets: KL and agreement only.
    n, c = 50, 12
    base = f32(rng.standard_normal((n, c)) * 3)
    test = f32(base * 1.2 + rng.standard_normal((n, c)) * 0.2)
    emit("no_targets_c12", base, test, np.zeros(n, dtype=np.int64), -100, False)

    # Many classes (several 16 KiB chunks of float, one of them holding both maxima late), from the LCG.
    n, c = 6, 20000
    base = lcg_logits(1, n, c)
    test = lcg_logits(2, n, c) * 0.25 + base
    test = f32(test)
    target = np.array([5, 19999, 4096, 0, 12345, 8191])
    emit("lcg_c20000", base, test, target, -100, True, seeds=(1, 2))

    # The percentile definition alone.
    v = f32(rng.standard_normal(37) ** 3)
    q = [0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.3, 0.5, 0.51, 0.75, 0.9, 0.95, 0.99, 0.999, 1]
    print("case quantile_check 0")
    print("v " + fmt_f32(v))
    print("q_fractions " + fmt(q))
    print("q_values " + fmt(np.quantile(v, q)))
    print("end")


if __name__ == "__main__":
    main()
