"""Reference data for xent's categorical losses: torch 1.13 cross_entropy and nll_loss, float64.

Rerun (Debian's python has torch 1.13 and numpy; the python3 on PATH may not):

    /usr/bin/python3 tests/reference/gen_categorical_reference.py > tests/reference/categorical_cases.txt

Deterministic: fixed numpy seeds, fixed case list, single-threaded torch.

File format (the reader in tests/support.hpp; one "key v1 v2 ..." line per key):

    case <name> <C>
    N <samples>
    kind <0 = class-index targets, 1 = probability targets, 2 = nll_loss on log-probabilities>
    reduction <0 = none, 1 = mean, 2 = sum>
    ignore_index <value>
    label_smoothing <value>
    weight <C values>                 (only when weighted)
    logits <N*C values>               torch [N, C] row-major = xent's C x N column-major (dim = 0)
    target <N ints>                   (kinds 0 and 2)
    target_prob <N*C values>          (kind 1), same layout as logits
    grad_out <1 value or N values>    1 for mean/sum, random for none
    loss <1 value or N values>        torch float64 forward
    grad <N*C values>                 torch float64 autograd of sum(loss * grad_out) w.r.t. logits
    end

Every input value is exactly representable in float32 (so the float tests read the same inputs).
Special values are written as inf, -inf, nan. The combinations: reduction x weight on/off x ignored
targets present/absent x label_smoothing 0/0.1 for class-index targets; reduction x weight x
label_smoothing for probability targets (torch rejects ignore_index there); reduction x weight x
ignored present/absent for nll_loss. Logit sets: random, +-1e30, -inf masks (the target's logit is
finite), N = 1 (with "ignored present" its only target is ignored: mean gives NaN), C = 1.
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32
REDUCTIONS = ("none", "mean", "sum")


def logit_sets():
    """(name, logits [N, C] float32, targets [N] int64, soft targets [N, C] float32)."""
    sets = []

    def soft_for(rs, logits):
        p = rs.uniform(0.0, 1.0, size=logits.shape)
        p[~np.isfinite(logits)] = 0.0  # no probability on a masked class
        p /= p.sum(axis=1, keepdims=True)
        return p.astype(F32)

    rs = np.random.RandomState(1)
    x = (rs.randn(7, 5) * 3).astype(F32)
    sets.append(("random", x, rs.randint(0, 5, size=7), soft_for(rs, x)))

    rs = np.random.RandomState(2)
    x = (rs.randn(4, 6) * 3).astype(F32)
    x[0, 1], x[0, 3] = F32(1e30), F32(-1e30)
    x[1, :] = F32(-1e30)
    x[1, 2] = F32(1e30)
    x[2, 4] = F32(1e30)
    x[3, 0] = F32(-1e30)
    t = np.array([1, 0, 4, 0])  # sample 1 and 3 aim at a -1e30 class: loss ~2e30
    sets.append(("pm1e30", x, t, soft_for(rs, x)))

    rs = np.random.RandomState(3)
    x = (rs.randn(6, 8) * 2).astype(F32)
    t = rs.randint(0, 8, size=6)
    for j in range(6):
        masked = rs.choice(8, size=3, replace=False)
        masked = masked[masked != t[j]]
        x[j, masked] = -np.inf
    sets.append(("neginf_mask", x, t, soft_for(rs, x)))

    rs = np.random.RandomState(4)
    x = (rs.randn(1, 9) * 3).astype(F32)
    sets.append(("n1", x, np.array([4]), soft_for(rs, x)))

    rs = np.random.RandomState(5)
    x = (rs.randn(3, 1) * 3).astype(F32)
    sets.append(("c1", x, np.array([0, 0, 0]), np.ones((3, 1), dtype=F32)))
    return sets


def fmt(v):
    return repr(float(v))


def line(key, values):
    return key + " " + " ".join(fmt(v) for v in np.asarray(values, dtype=np.float64).ravel()) + "\n"


def with_ignored(t):
    """Targets with some entries set to the default ignore_index, -100 (every other one, from the second;
    the only one when N = 1)."""
    t = t.copy()
    if t.size == 1:
        t[0] = -100
    else:
        t[1::2] = -100
    return t


def write_case(out, name, kind, x, target, reduction, weight, smoothing, ignore_index, rs):
    n, c = x.shape
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    if kind == 0:
        loss = F.cross_entropy(xt, torch.tensor(target), weight=w, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
    elif kind == 1:
        loss = F.cross_entropy(xt, torch.tensor(target, dtype=torch.float64), weight=w,
                               reduction=reduction, label_smoothing=smoothing)
    else:
        loss = F.nll_loss(xt, torch.tensor(target), weight=w, ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        g = rs.uniform(-2, 2, size=n).astype(F32)
    else:
        g = np.array([1.0], dtype=F32)
    gt = torch.tensor(g, dtype=torch.float64).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, xt, gt)
    out.write("case %s %d\n" % (name, c))
    out.write("N %d\n" % n)
    out.write("kind %d\n" % kind)
    out.write("reduction %d\n" % REDUCTIONS.index(reduction))
    out.write("ignore_index %d\n" % ignore_index)
    out.write(line("label_smoothing", [smoothing]))
    if weight is not None:
        out.write(line("weight", weight))
    out.write(line("logits", x))
    if kind == 1:
        out.write(line("target_prob", target))
    else:
        out.write("target " + " ".join(str(int(v)) for v in target) + "\n")
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    out.write(line("grad", grad.numpy()))
    out.write("end\n")


def main():
    torch.set_num_threads(1)
    out = sys.stdout
    out.write("# generated by tests/reference/gen_categorical_reference.py (torch %s, numpy %s)\n"
              % (torch.__version__, np.__version__))
    out.write("# command: /usr/bin/python3 tests/reference/gen_categorical_reference.py"
              " > tests/reference/categorical_cases.txt\n")
    count = 0
    for set_name, x, t, p in logit_sets():
        n, c = x.shape
        rs = np.random.RandomState(100 + c * 10 + n)
        weight = rs.uniform(0.25, 2.0, size=c).astype(F32)
        # nll_loss reads log-probabilities; take torch's float32 log_softmax rounded, so they are floats too.
        logp = torch.log_softmax(torch.tensor(x, dtype=torch.float64), 1).numpy().astype(F32)
        for reduction in REDUCTIONS:
            for weighted in (False, True):
                wv = weight if weighted else None
                wtag = "w" if weighted else "now"
                for ignored in (False, True):
                    tt = with_ignored(t) if ignored else t
                    itag = "ign" if ignored else "noign"
                    for smoothing in (0.0, 0.1):
                        name = "ce_%s_%s_%s_%s_ls%g" % (set_name, reduction, wtag, itag, smoothing)
                        write_case(out, name, 0, x, tt, reduction, wv, smoothing, -100, rs)
                        count += 1
                    name = "nll_%s_%s_%s_%s" % (set_name, reduction, wtag, itag)
                    write_case(out, name, 2, logp, tt, reduction, wv, 0.0, -100, rs)
                    count += 1
                for smoothing in (0.0, 0.1):
                    name = "prob_%s_%s_%s_ls%g" % (set_name, reduction, wtag, smoothing)
                    write_case(out, name, 1, x, p, reduction, wv, smoothing, -100, rs)
                    count += 1
        # A non-default ignore_index that is also a valid class.
        tt = t.copy()
        write_case(out, "ce_%s_ignore_class0_mean_w_ls0.1" % set_name, 0, x, tt, "mean", weight, 0.1, 0, rs)
        count += 1
    sys.stderr.write("cases: %d\n" % count)


if __name__ == "__main__":
    main()
