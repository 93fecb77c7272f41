"""The example pair of `xent-eval compare`: a small "language model" and a perturbed copy of it.

Rerun from the repository's root (Debian's python3 with numpy):

    /usr/bin/python3 examples/data/gen_compare_example.py

writes examples/data/compare_base.npy and examples/data/compare_test.npy (float16, shape (1500, 64),
C order) and examples/data/compare_targets.npy (int64, shape (1500,)). Deterministic (fixed seed).
With --numpy it writes nothing and prints numpy's float64 figures of the committed files instead.

The base model's logits are a Zipf-like prior over a 64-token vocabulary, -1.1 log(k + 1), plus a
context score 2.2 z (z standard normal); the targets are drawn from the base model's own softmax,
so the base model is the truth. The test model is what a quantisation does to it: every logit moves
by Gaussian noise whose scale varies from token to token (log-normal around 0.1), and 2 % of the
tokens, the outliers a coarse quantisation produces, move by noise of scale 1. Both are stored as
float16, as inference engines often write logits.
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rng = np.random.default_rng(20261202)
    n, c = 1500, 64
    prior = -1.1 * np.log(np.arange(c) + 1.0)
    base = prior + 2.2 * rng.standard_normal((n, c))
    p = np.exp(base - base.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((n, 1))
    targets = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), c - 1).astype(np.int64)
    scale = 0.1 * np.exp(0.6 * rng.standard_normal((n, 1)))
    outliers = rng.random(n) < 0.02
    scale[outliers] = 1.0
    test = base + scale * rng.standard_normal((n, c))
    np.save(os.path.join(HERE, "compare_base.npy"), base.astype(np.float16))
    np.save(os.path.join(HERE, "compare_test.npy"), test.astype(np.float16))
    np.save(os.path.join(HERE, "compare_targets.npy"), targets)


if __name__ == "__main__" and __import__("sys").argv[1:] != ["--numpy"]:
    main()


def numpy_figures():
    """numpy's float64 figures of the committed pair (the numbers docs/metrics.md quotes)."""
    base = np.load(os.path.join(HERE, "compare_base.npy")).astype(np.float64)
    test = np.load(os.path.join(HERE, "compare_test.npy")).astype(np.float64)
    t = np.load(os.path.join(HERE, "compare_targets.npy"))

    def log_softmax(x):
        m = x.max(axis=1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))

    lb, lt = log_softmax(base), log_softmax(test)
    kl = (np.exp(lb) * (lb - lt)).sum(axis=1)
    n = len(t)
    idx = np.arange(n)
    nb, nt = -lb[idx, t], -lt[idx, t]
    dp = np.exp(-nt) - np.exp(-nb)
    same = np.mean(np.argmax(base, axis=1) == np.argmax(test, axis=1))
    se = lambda v: np.std(v, ddof=1) / np.sqrt(len(v))
    print("KL mean %.6f +- %.6f, median %.6f, 90%% %.6f, 95%% %.6f, 99%% %.6f, 99.9%% %.6f, max %.6f" %
          ((kl.mean(), se(kl)) + tuple(np.quantile(kl, [0.5, 0.9, 0.95, 0.99, 0.999])) + (kl.max(),)))
    print("same top %.3f %%" % (100 * same))
    print("delta p mean %.3f +- %.3f %%, RMS %.3f %%, max |dp| %.3f %%" % (100 * dp.mean(), 100 * se(dp), 100 * np.sqrt(np.mean(dp**2)),
                                                                       100 * np.abs(dp).max()))
    print("NLL base %.6f +- %.6f, test %.6f +- %.6f, correlation %.2f %%" % (nb.mean(), se(nb), nt.mean(), se(nt), 100 * np.corrcoef(nb, nt)[0, 1]))
    print("ln(PPL_test / PPL_base) %.6f +- %.6f" % (nt.mean() - nb.mean(), se(nt - nb)))


if __name__ == "__main__" and __import__("sys").argv[1:] == ["--numpy"]:
    numpy_figures()
