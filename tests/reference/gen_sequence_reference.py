"""Reference data for the sequence reductions (reduction sequence_mean and per_sequence, the options'
sequence_lengths) of xent's per-sample losses: cross_entropy (class-index and probability targets),
nll_loss, softmax_focal_loss, generalized_cross_entropy, divergence; and of the elementwise losses
binary_cross_entropy, binary_cross_entropy_with_logits, kl_div, sigmoid_focal_loss (a token is a
sample, the run of C entries along dim). torch 1.13, float64.

Rerun (Debian's python has torch 1.13 and numpy):

    /usr/bin/python3 tests/reference/gen_sequence_reference.py > tests/reference/sequence_cases.txt

Deterministic: fixed numpy seed, fixed case list, single-threaded torch. The per-token losses are
those of gen_sample_weight_reference.py (torch's reduction='none', imported from it); the line
format is its own (loss numbers alike), with

    reduction <4 sequence_mean, 5 per_sequence>
    lengths <one length T, or B lengths summing to N>
    value <1 or B>          per_sequence: NaN for a sequence with no kept token
    denominator <1>         B', the sequences with a kept token

The composition written out (docs/losses.md, "Sequences"): l_j torch's per-token loss,
a_j = mask_j * sample_weight_j * (target_j != ignore_index), d_j = a_j * class_weight[target_j]
(cross_entropy, nll_loss with class-index targets; a_j otherwise), and for each sequence s
    D_s = sum_{j in s} d_j,   L_s = sum_{j in s} a_j l_j / D_s   (NaN when D_s = 0)
    per_sequence: L_s,   sequence_mean: the mean of L_s over the B' sequences with D_s > 0.
For the elementwise losses l_j is the mean of the token's C entries of torch's reduction='none'
loss (the sum for kl_div: batchmean's per-sample KL) and d_j = a_j.
grad: autograd of sum over those sequences of value * grad_out.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_sample_weight_reference as sw_ref  # noqa: E402  (per_sample, line, LOSSES)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261204)
REDUCTIONS = ("none", "mean", "sum", "batchmean", "sequence_mean", "per_sequence")
line = sw_ref.line


def starts_of(lengths, N):
    if len(lengths) == 1:
        lengths = [lengths[0]] * (N // lengths[0])
    return np.concatenate([[0], np.cumsum(lengths)]).astype(int)


def case(name, loss, C, lengths, reduction, weighted=True, masked=True, ignore=True, empty=None, **params):
    N = int(lengths[0] * 3) if len(lengths) == 1 and "N" not in params else params.get("N", int(sum(lengths)))
    if len(lengths) == 1:
        N = params.get("N", N)
    starts = starts_of(lengths, N)
    B = len(starts) - 1
    x = torch.tensor(rng.standard_normal((N, C)) * 3)
    if loss == "nll_loss":
        x = F.log_softmax(x, 1)
    t = torch.tensor(rng.integers(0, C, N))
    if ignore:
        t[1] = -100
    extra = {}
    if loss == "cross_entropy_probs":
        extra["probs"] = F.softmax(torch.tensor(rng.standard_normal((N, C)) * 2), 1)
        t = torch.zeros(N, dtype=torch.int64)
    if loss in ("cross_entropy", "cross_entropy_probs", "nll_loss") and params.get("class_weight"):
        extra["class_weight"] = torch.tensor(rng.uniform(0.2, 2.0, C))
    if loss == "softmax_focal_loss":
        extra["alpha"] = torch.tensor(rng.uniform(0.2, 1.0, C))
    if loss == "divergence":
        extra["teacher"] = torch.tensor(rng.standard_normal((N, C)) * 2)
    for k in ("smoothing", "gamma", "q", "T"):
        if k in params:
            extra[k] = params[k]
    sw = torch.tensor(rng.uniform(0.0, 3.0, N)) if weighted else torch.ones(N)
    if weighted:
        sw[2] = 0.0
    mask = torch.ones(N, dtype=torch.bool)
    if masked:
        mask[rng.choice(N, max(1, N // 5), replace=False)] = False
    if empty is not None:  # every token of sequence `empty` left out (masked, or ignored when unmasked)
        lo, hi = starts[empty], starts[empty + 1]
        if masked or loss in ("cross_entropy_probs", "divergence"):
            mask[lo:hi] = False
            masked = True
        else:
            t[lo:hi] = -100
    x.requires_grad_(True)
    l = sw_ref.per_sample(loss, x, t, extra)
    kept = mask & (t != -100)
    a = torch.where(kept, sw, torch.zeros_like(sw))
    by_target = "class_weight" in extra and loss in ("cross_entropy", "nll_loss")
    cw = extra["class_weight"][torch.where(t != -100, t, torch.zeros_like(t))] if by_target else torch.ones(N)
    d = a * cw
    per, alive = [], []
    for s in range(B):
        lo, hi = starts[s], starts[s + 1]
        D = d[lo:hi].sum()
        alive.append(bool(D > 0))
        per.append((a[lo:hi] * l[lo:hi]).sum() / D if D > 0 else torch.tensor(float("nan")))
    alive_t = torch.tensor(alive)
    kept_sequences = int(alive_t.sum())
    if reduction == "per_sequence":
        value = torch.stack(per)
        grad_out = torch.tensor(rng.uniform(-1.0, 2.0, B))
        objective = sum(per[s] * grad_out[s] for s in range(B) if alive[s])
    else:
        value = sum(per[s] for s in range(B) if alive[s]) / kept_sequences
        value = value.reshape(1)
        grad_out = torch.tensor([rng.uniform(0.5, 2.0)])
        objective = (value * grad_out).sum()
    objective.backward()
    out = f"case {name} {C}\nN {N}\n"
    out += f"loss {sw_ref.LOSSES.index(loss)}\nreduction {REDUCTIONS.index(reduction)}\n"
    out += line("lengths", lengths)
    out += line("logits", x.detach().numpy())
    if "teacher" in extra:
        out += line("teacher", extra["teacher"].numpy())
    if "probs" in extra:
        out += line("probs", extra["probs"].numpy())
    out += line("target", t.numpy())
    if "class_weight" in extra:
        out += line("class_weight", extra["class_weight"].numpy())
    if "alpha" in extra:
        out += line("alpha", extra["alpha"].numpy())
    for k in ("smoothing", "gamma", "q", "T"):
        if k in extra:
            out += line(k, [extra[k]])
    if weighted:
        out += line("sample_weight", sw.numpy())
    if masked:
        out += line("mask", mask.numpy().astype(np.float64))
    out += line("grad_out", grad_out.numpy())
    out += line("value", value.detach().numpy())
    out += line("denominator", [float(kept_sequences)])
    out += line("grad", x.grad.numpy())
    return out + "end\n"


def elementwise_case(name, loss, C, lengths, reduction, N=None, weighted=True, masked=True, empty=None, smoothing=None):
    N = N if N is not None else int(sum(lengths))
    starts = starts_of(lengths, N)
    B = len(starts) - 1
    x = torch.tensor(rng.standard_normal((N, C)) * 3)
    extra = {"probs": torch.tensor(rng.uniform(0, 1, (N, C)))}
    if loss == "binary_cross_entropy":
        x = torch.sigmoid(x)
    if loss == "kl_div":
        x = F.log_softmax(x, 1)
        extra["probs"] = F.softmax(torch.tensor(rng.standard_normal((N, C))), 1)
    x, extra["probs"] = x.float().double(), extra["probs"].float().double()
    if loss in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        extra["class_weight"] = torch.tensor(rng.uniform(0.2, 2.0, C))
    if loss == "binary_cross_entropy_with_logits":
        extra["pos_weight"] = torch.tensor(rng.uniform(0.5, 3.0, C))
    if loss == "sigmoid_focal_loss":
        extra["alpha"], extra["gamma"] = 0.25, 2.0
    if smoothing is not None:
        extra["smoothing"] = smoothing
    sw = torch.tensor(rng.uniform(0.0, 3.0, N)) if weighted else torch.ones(N)
    if weighted:
        sw[2] = 0.0
    mask = torch.ones(N, dtype=torch.bool)
    if masked:
        mask[rng.choice(N, max(1, N // 5), replace=False)] = False
    if empty is not None:
        mask[starts[empty]:starts[empty + 1]] = False
        masked = True
    x.requires_grad_(True)
    a = torch.where(mask, sw, torch.zeros_like(sw))
    e = sw_ref.elementwise(loss, x, extra)
    tok = e.sum(1) if loss == "kl_div" else e.mean(1)
    per, alive = [], []
    for q in range(B):
        lo, hi = starts[q], starts[q + 1]
        D = a[lo:hi].sum()
        alive.append(bool(D > 0))
        per.append((a[lo:hi] * tok[lo:hi]).sum() / D if D > 0 else torch.tensor(float("nan")))
    kept_sequences = sum(alive)
    if reduction == "per_sequence":
        value = torch.stack(per)
        grad_out = torch.tensor(rng.uniform(-1.0, 2.0, B))
        objective = sum(per[q] * grad_out[q] for q in range(B) if alive[q])
    else:
        value = (sum(per[q] for q in range(B) if alive[q]) / kept_sequences).reshape(1)
        grad_out = torch.tensor([rng.uniform(0.5, 2.0)])
        objective = (value * grad_out).sum()
    objective.backward()
    out = f"case {name} {C}\nN {N}\n"
    out += f"loss {sw_ref.LOSSES.index(loss)}\nreduction {REDUCTIONS.index(reduction)}\n"
    out += line("lengths", lengths)
    out += line("logits", x.detach().numpy())
    out += line("probs", extra["probs"].numpy())
    for k in ("class_weight", "pos_weight"):
        if k in extra:
            out += line(k, extra[k].numpy())
    for k in ("alpha", "gamma", "smoothing"):
        if k in extra:
            out += line(k, [extra[k]])
    if weighted:
        out += line("sample_weight", sw.numpy())
    if masked:
        out += line("mask", mask.numpy().astype(np.float64))
    out += line("grad_out", grad_out.numpy())
    out += line("value", value.detach().numpy())
    out += line("denominator", [float(kept_sequences)])
    out += line("grad", x.grad.numpy())
    return out + "end\n"


def main():
    out = []
    params = {"cross_entropy": {"class_weight": True, "smoothing": 0.1},
              "cross_entropy_probs": {"class_weight": True, "smoothing": 0.05},
              "nll_loss": {"class_weight": True},
              "softmax_focal_loss": {"gamma": 2.0},
              "generalized_cross_entropy": {"q": 0.7},
              "divergence": {"T": 2.0}}
    ragged = [5, 1, 0, 7, 3]
    for loss, p in params.items():
        for reduction in ("sequence_mean", "per_sequence"):
            out.append(case(f"{loss}_{reduction}_uniform", loss, 7, [4], reduction, N=16, **p))
            out.append(case(f"{loss}_{reduction}_ragged", loss, 6, ragged, reduction, **p))
            out.append(case(f"{loss}_{reduction}_empty_sequence", loss, 5, [3, 4, 2, 5], reduction, empty=1, **p))
        out.append(case(f"{loss}_sequence_mean_unweighted", loss, 5, [6], "sequence_mean", N=18, weighted=False,
                        masked=False, ignore=False, **p))
    # cross_entropy without class weights or smoothing, ignore_index only.
    out.append(case("cross_entropy_sequence_mean_ignore_only", "cross_entropy", 9, [2, 6, 4], "sequence_mean",
                    weighted=False, masked=False))
    # A sequence left empty by ignore_index alone (no mask).
    out.append(case("cross_entropy_per_sequence_all_ignored", "cross_entropy", 5, [3, 3, 3], "per_sequence",
                    weighted=False, masked=False, empty=2, class_weight=True))
    for loss in sw_ref.ELEMENTWISE:
        for reduction in ("sequence_mean", "per_sequence"):
            out.append(elementwise_case(f"{loss}_{reduction}_uniform", loss, 5, [3], reduction, N=12))
            out.append(elementwise_case(f"{loss}_{reduction}_ragged_empty", loss, 4, [4, 0, 5, 2, 3], reduction, empty=3))
        out.append(elementwise_case(f"{loss}_sequence_mean_unweighted", loss, 6, [5], "sequence_mean", N=10, weighted=False,
                                    masked=False))
    out.append(elementwise_case("binary_cross_entropy_with_logits_smoothed_per_sequence", "binary_cross_entropy_with_logits",
                                3, [2, 5, 4], "per_sequence", smoothing=0.1))
    print("# Generated by tests/reference/gen_sequence_reference.py (torch %s); do not edit." % torch.__version__)
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
