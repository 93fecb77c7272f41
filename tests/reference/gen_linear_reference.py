"""Reference data for xent::linear_cross_entropy: torch 1.13, float64, on the materialised logits.

Rerun (Debian's python has torch 1.13 and numpy; the python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_linear_reference.py > tests/reference/linear_cases.txt

Deterministic: fixed numpy seeds, fixed case list, single-threaded torch.

The loss, per sample j with target t != ignore_index (0 for an ignored sample):

    x = hidden @ weight.T + bias                         (torch nn.Linear, weight [V, D])
    z = softcap * tanh(x / softcap)   if softcap > 0     (Gemma 2's logit soft-capping)
    loss_j = F.cross_entropy(z, t, label_smoothing=eps, reduction='none')[j] + z_loss * logsumexp(z_j)^2

(PaLM's z-loss, Liger's lse_square_scale), reduced by sum or by the mean over the non-ignored
samples (NaN when every target is ignored, with a zero gradient, as torch). Gradients by autograd of
sum(loss * grad_out).

File format (the reader in tests/support.hpp; one "key v1 v2 ..." line per key):

    case <name> <V>
    N <samples>
    D <hidden size>
    reduction <0 = none, 1 = mean, 2 = sum>
    ignore_index <value>
    label_smoothing <value>
    z_loss <value>
    softcap <value, 0 = off>
    hidden <N*D values>        torch [N, D] row-major = xent's D x N column-major
    weight <V*D values>        torch [V, D] row-major = xent's D x V column-major (hidden_by_vocab)
    bias <V values>            (only when the case has a bias)
    target <N ints>
    grad_out <1 value or N values>   1 for mean/sum, random for none
    loss <1 value or N values>
    lse <N values>             logsumexp of the soft-capped logits (nan for an ignored sample)
    grad_hidden <N*D values>   same layout as hidden
    grad_weight <V*D values>   same layout as weight
    grad_bias <V values>       (only when the case has a bias)
    end

Every input value is exactly representable in float32, so the float tests read the same inputs.
Combinations on the small set: reduction x bias x ignored present/absent x label_smoothing 0/0.1 x
z_loss 0/0.05 x softcap 0/2; the other sets take a few of them: N = 1 (with an ignored target: mean is
NaN), V = 1, large logits (|x| ~ 1e3: stability, and a saturated tanh), a non-default ignore_index
that is also a class, and a set of 300 classes for tilings with several partial tiles.
"""

import itertools
import sys

import numpy as np
import torch
import torch.nn.functional as F

# The writers of categorical_cases.txt: the same line format, and its choice of ignored targets.
from gen_categorical_reference import F32, REDUCTIONS, line, with_ignored


def make_set(seed, n, d, v, scale=1.0):
    rs = np.random.RandomState(seed)
    hidden = (rs.randn(n, d) * scale).astype(F32)
    weight = rs.randn(v, d).astype(F32)
    bias = (rs.randn(v) * 0.5).astype(F32)
    target = rs.randint(0, v, size=n)
    return hidden, weight, bias, target


def write_case(out, name, hidden, weight, bias, target, reduction, ignore_index, smoothing, z_loss, softcap, rs):
    n, d = hidden.shape
    v = weight.shape[0]
    h = torch.tensor(hidden, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    b = None if bias is None else torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    x = F.linear(h, w, b)
    z = softcap * torch.tanh(x / softcap) if softcap > 0 else x
    ce = F.cross_entropy(z, t, ignore_index=ignore_index, reduction="none", label_smoothing=smoothing)
    lse = torch.logsumexp(z, 1)
    kept = (t != ignore_index).to(torch.float64)
    per = ce + z_loss * lse * lse * kept
    if reduction == "none":
        loss = per
    elif reduction == "sum":
        loss = per.sum()
    else:
        loss = per.sum() / kept.sum()
    if z_loss == 0 and softcap == 0:
        # The formula above is torch's own cross_entropy when the extras are off.
        torch_loss = F.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
        assert torch.allclose(loss, torch_loss, equal_nan=True, rtol=1e-12, atol=1e-12), name
    if reduction == "none":
        g = rs.uniform(-2, 2, size=n).astype(F32)
    else:
        g = np.array([1.0], dtype=F32)
    gt = torch.tensor(g, dtype=torch.float64).reshape(loss.shape)
    inputs = [h, w] + ([] if b is None else [b])
    grads = torch.autograd.grad(loss, inputs, gt)
    if reduction == "mean" and kept.sum() == 0:
        # torch's cross_entropy gives a NaN loss and a zero gradient here (0 / 0 above would give NaN).
        grads = [torch.zeros_like(g) for g in grads]
    lse_out = torch.where(t != ignore_index, lse, torch.tensor(float("nan"), dtype=torch.float64))

    out.write("case %s %d\n" % (name, v))
    out.write("N %d\n" % n)
    out.write("D %d\n" % d)
    out.write("reduction %d\n" % REDUCTIONS.index(reduction))
    out.write("ignore_index %d\n" % ignore_index)
    out.write(line("label_smoothing", [smoothing]))
    out.write(line("z_loss", [z_loss]))
    out.write(line("softcap", [softcap]))
    out.write(line("hidden", hidden))
    out.write(line("weight", weight))
    if bias is not None:
        out.write(line("bias", bias))
    out.write("target " + " ".join(str(int(v)) for v in target) + "\n")
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    out.write(line("lse", lse_out.detach().numpy()))
    out.write(line("grad_hidden", grads[0].numpy()))
    out.write(line("grad_weight", grads[1].numpy()))
    if bias is not None:
        out.write(line("grad_bias", grads[2].numpy()))
    out.write("end\n")


def main():
    torch.set_num_threads(1)
    out = sys.stdout
    out.write("# generated by tests/reference/gen_linear_reference.py (torch %s, numpy %s)\n"
              % (torch.__version__, np.__version__))
    out.write("# command: /usr/bin/python3 tests/reference/gen_linear_reference.py > tests/reference/linear_cases.txt\n")
    rs = np.random.RandomState(2024)
    count = 0

    # Every combination on a small set.
    hidden, weight, bias, target = make_set(1, 6, 5, 7)
    for reduction, biased, ignored, smoothing, z_loss, softcap in itertools.product(
            REDUCTIONS, (False, True), (False, True), (0.0, 0.1), (0.0, 0.05), (0.0, 2.0)):
        name = "small_%s_%s_%s_ls%g_z%g_cap%g" % (reduction, "b" if biased else "nob", "ign" if ignored else "noign",
                                                 smoothing, z_loss, softcap)
        write_case(out, name, hidden, weight, bias if biased else None, with_ignored(target) if ignored else target,
                   reduction, -100, smoothing, z_loss, softcap, rs)
        count += 1

    # The other sets: a few combinations each.
    few = [("none", True, False, 0.1, 0.05, 2.0), ("mean", False, True, 0.0, 0.0, 0.0),
           ("mean", True, True, 0.1, 0.05, 2.0), ("sum", True, False, 0.0, 0.05, 0.0)]
    sets = [("n1", make_set(2, 1, 3, 4)), ("v1", make_set(3, 4, 3, 1)), ("large", make_set(4, 5, 4, 6, scale=300.0)),
            ("tiles", make_set(5, 40, 8, 300))]
    for set_name, (hidden, weight, bias, target) in sets:
        for reduction, biased, ignored, smoothing, z_loss, softcap in few:
            name = "%s_%s_%s_%s_ls%g_z%g_cap%g" % (set_name, reduction, "b" if biased else "nob",
                                                  "ign" if ignored else "noign", smoothing, z_loss, softcap)
            write_case(out, name, hidden, weight, bias if biased else None,
                       with_ignored(target) if ignored else target, reduction, -100, smoothing, z_loss, softcap, rs)
            count += 1

    # A non-default ignore_index that is also a class.
    hidden, weight, bias, target = make_set(6, 6, 5, 7)
    target = target.copy()
    target[::3] = 0
    write_case(out, "small_ignore_class0_mean_b_ls0.1_z0.05_cap2", hidden, weight, bias, target, "mean", 0, 0.1, 0.05,
               2.0, rs)
    count += 1
    sys.stderr.write("cases: %d\n" % count)


if __name__ == "__main__":
    main()
