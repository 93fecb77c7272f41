"""The example inputs of xent-eval: a small, overconfident 10-class classifier.

Rerun from the repository's root (Debian's python3 with numpy):

    /usr/bin/python3 examples/data/gen_eval_example.py

writes examples/data/eval_logits.npy (float32, shape (5000, 10), C order) and
examples/data/eval_targets.npy (int64, shape (5000,)). Deterministic (fixed seed).

The targets are drawn from softmax(z) for standard-normal scores z * 1.5, and the "model" reports
logits 2 z * 1.5: it ranks the classes as well as the truth allows but is twice as sure as it should
be, so its ECE is large and temperature scaling finds T close to 2.
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rng = np.random.default_rng(20240607)
    n, c = 5000, 10
    z = rng.standard_normal((n, c)) * 1.5
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((n, 1))
    targets = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), c - 1).astype(np.int64)
    logits = (2.0 * z).astype(np.float32)
    np.save(os.path.join(HERE, "eval_logits.npy"), logits)
    np.save(os.path.join(HERE, "eval_targets.npy"), targets)


if __name__ == "__main__":
    main()
