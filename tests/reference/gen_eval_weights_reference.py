"""Reference data for eval_accumulator's per-sample weights and sequence_accumulator's per-sequence
perplexity (include/xent/metrics/evaluation.hpp, sequences.hpp), float64 numpy and torch 1.13.

Rerun (Debian's python has torch 1.13 and numpy; the python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_eval_weights_reference.py > tests/reference/eval_weights_cases.txt

Deterministic: fixed numpy seeds, fixed case list, single-threaded torch.

The format of metrics_cases.txt (gen_metrics_reference.py; read by tests/support.hpp), each metric
now its weighted form, with these keys besides:

    weights <N values>           per-sample weights (float32-representable), 0 for some samples
    weight                       summed weight of the evaluated samples (target != ignore_index, weight > 0)
    nll                          sum_j w_j l_j / W, l_j = torch cross_entropy (reduction none) on logits / T
    nll_stderr                   frequency-weighted: sqrt((sum_j w_j (l_j - nll)^2 / (W - 1)) / W)
    accuracy, top_k_accuracy, brier, mean_confidence   weighted means (np.average with the weights)
    bin_weight                   W_b, the summed weight of bin b; bin_confidence and bin_accuracy are
                                 weighted means in the bin; ece = sum_b W_b / W |acc_b - conf_b|
    sequence_length <T>          (sequence cases) tokens per sequence, N a multiple of T; or
    sequence_lengths <S ints>    each sequence's length, summing to N
    sequences, empty_sequences   sequences with evaluated tokens, and those without
    sequence_perplexity          S values: exp(sum w l / sum w) over each sequence's evaluated tokens
                                 (nan for an empty one)
    sequence_mean, sequence_median, sequence_max, sequence_min   of those perplexities (numpy mean,
                                 median, max, min over the non-empty sequences)
    sequence_worst               index of the sequence of the largest perplexity (first one on ties)
"""

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def fmt_f32(values):
    words = [repr(np.float32(v)) for v in values]
    for w, v in zip(words, values):
        assert np.float32(np.longdouble(w)) == np.float32(v), w
    return " ".join(words)


def per_sample(x, t, temperature):
    z = torch.from_numpy(x / temperature)
    nll = F.cross_entropy(z, torch.from_numpy(t), reduction="none").numpy()
    p = torch.softmax(z, dim=1).numpy()
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1
    brier = ((p - onehot) ** 2).sum(axis=1)
    order = np.argsort(-x, axis=1, kind="stable")
    rank = np.argmax(order == t[:, None], axis=1)
    return nll, p.max(axis=1), brier, rank


def metrics(x, t, w, top_k, bins, temperature, ignore_index):
    keep = (t != ignore_index) & (w > 0)
    xs, ts, ws = x[keep], t[keep], w[keep]
    W = ws.sum()
    nll, conf, brier, rank = per_sample(xs, ts, temperature)
    correct = (rank == 0).astype(float)
    mean = np.average(nll, weights=ws)
    var = (ws * (nll - mean) ** 2).sum() / (W - 1)
    edges = np.linspace(0, 1, bins + 1)
    assert np.min(np.abs(conf[:, None] - edges[None, 1:-1])) > 1e-5 if bins > 1 else True
    count, bweight, bconf, bacc = [], [], [], []
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b > 0 else conf <= hi
        count.append(int(inside.sum()))
        wb = ws[inside].sum()
        bweight.append(wb)
        if wb > 0:
            c, a = np.average(conf[inside], weights=ws[inside]), np.average(correct[inside], weights=ws[inside])
            bconf.append(c)
            bacc.append(a)
            ece += wb / W * abs(a - c)
            mce = max(mce, abs(a - c))
        else:
            bconf.append(math.nan)
            bacc.append(math.nan)
    return {
        "samples": [len(ts)],
        "ignored": [len(t) - len(ts)],
        "weight": [W],
        "nll": [mean],
        "nll_stderr": [math.sqrt(var / W)],
        "perplexity": [math.exp(mean)],
        "accuracy": [np.average(correct, weights=ws)],
        "top_k_accuracy": [np.average(rank < top_k, weights=ws)],
        "brier": [np.average(brier, weights=ws)],
        "mean_confidence": [np.average(conf, weights=ws)],
        "ece": [ece],
        "mce": [mce],
        "bin_count": count,
        "bin_weight": bweight,
        "bin_confidence": bconf,
        "bin_accuracy": bacc,
    }


def sequences(x, t, w, lengths, temperature, ignore_index):
    nll, _, _, _ = per_sample(x, np.where(t == ignore_index, 0, t), temperature)
    keep = (t != ignore_index) & (w > 0)
    ppl, start = [], 0
    for n in lengths:
        k, ww, ll = keep[start:start + n], w[start:start + n], nll[start:start + n]
        ppl.append(math.exp((ww[k] * ll[k]).sum() / ww[k].sum()) if k.any() else math.nan)
        start += n
    ppl = np.array(ppl)
    full = ppl[~np.isnan(ppl)]
    worst = int(np.nanargmax(ppl))
    return {
        "sequences": [len(full)],
        "empty_sequences": [len(ppl) - len(full)],
        "sequence_perplexity": ppl,
        "sequence_mean": [full.mean()],
        "sequence_median": [np.median(full)],
        "sequence_max": [full.max()],
        "sequence_min": [full.min()],
        "sequence_worst": [worst],
    }


def emit(name, x, t, w, top_k=5, bins=15, temperature=1.0, ignore_index=-100, seq=None, lengths=None):
    n, c = x.shape
    print(f"case {name} {c}")
    print(f"N {n}")
    print(f"top_k {top_k}")
    print(f"bins {bins}")
    print(f"temperature {temperature!r}")
    print(f"ignore_index {ignore_index}")
    print("logits " + fmt_f32(x.reshape(-1)))
    print("target " + " ".join(str(int(v)) for v in t))
    print("weights " + fmt_f32(w))
    for key, values in metrics(x, t, w, top_k, bins, temperature, ignore_index).items():
        print(f"{key} {fmt(values)}")
    if seq is not None or lengths is not None:
        if seq is not None:
            assert n % seq == 0
            print(f"sequence_length {seq}")
            lengths = [seq] * (n // seq)
        else:
            assert sum(lengths) == n
            print("sequence_lengths " + " ".join(str(int(v)) for v in lengths))
        for key, values in sequences(x, t, w, lengths, temperature, ignore_index).items():
            print(f"{key} {fmt(values)}")
    print("end")


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def sample_targets(rng, x, temperature=1.0):
    p = torch.softmax(torch.from_numpy(x / temperature), dim=1).numpy()
    u = rng.random((x.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), x.shape[1] - 1).astype(np.int64)


def main():
    print("# generated by tests/reference/gen_eval_weights_reference.py "
          f"(torch {torch.__version__}, numpy {np.__version__})")
    print("# command: /usr/bin/python3 tests/reference/gen_eval_weights_reference.py > tests/reference/eval_weights_cases.txt")

    # Real-valued weights in [0, 3), a tenth of them 0, some targets ignored; sequences of 10.
    rng = np.random.default_rng(7101)
    x = f32(rng.standard_normal((200, 10)) * 2)
    t = sample_targets(rng, x, 1.5)
    t[rng.random(200) < 0.05] = -100
    w = f32(rng.random(200) * 3)
    w[rng.random(200) < 0.1] = 0
    emit("weighted_c10_seq10", x, t, w, top_k=3, seq=10)

    # C = 4500 (two kernel chunks), a temperature, ragged sequence lengths, one sequence all weight 0.
    rng = np.random.default_rng(7102)
    x = f32(rng.standard_normal((8, 4500)) * 4)
    t = sample_targets(rng, x, 0.8)
    w = f32(rng.random(8) + 0.25)
    w[3:5] = 0
    emit("weighted_c4500_lengths", x, t, w, top_k=10, bins=10, temperature=0.8, lengths=[3, 2, 1, 2])

    # Weights that are integers (2, 3, 5, 1): the identity with repeated samples, over 20 bins.
    rng = np.random.default_rng(7103)
    x = f32(rng.standard_normal((120, 17)) * 1.5)
    t = sample_targets(rng, x)
    w = rng.choice([1.0, 2.0, 3.0, 5.0], 120)
    emit("integer_weights_c17_seq8", x, t, w, top_k=4, bins=20, seq=8)


if __name__ == "__main__":
    sys.exit(main())
