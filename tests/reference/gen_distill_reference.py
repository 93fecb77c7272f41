"""Reference data for xent::distillation_loss (losses/distill.hpp): torch 1.13, float64.

Rerun (Debian's python has torch 1.13 and numpy):

    /usr/bin/python3 tests/reference/gen_distill_reference.py > tests/reference/distill_cases.txt

Deterministic: fixed numpy seed, fixed case list, single-threaded torch. Line format as the other
*_cases.txt (read by tests/support.hpp):

    case <name> <C>
    N <samples>
    kind <0 forward_kl, 1 reverse_kl, 2 jsd, 3 tvd>
    beta <value>                      jsd's weight of the student
    T <student temperature> <teacher temperature>
    scaled <0 or 1>                   the soft term times T_s^2
    alpha <value>                     the soft term's weight (1 - alpha: the hard cross-entropy)
    reduction <0 none, 2 sum, 3 batchmean>
    logits <N*C>  teacher <N*C>        torch [N, C] row-major = xent's C x N (dim = 0); float32 values,
                                      shortest round-trip (as sample_weight): read them as float
    target <N ints>                   hard labels, -100 = ignore_index (absent: the soft form, alpha 1)
    sample_weight <N>                 (only when given)
    mask <N 0/1>                      (only when given)
    grad_out <1 or N>
    loss <1 or N>
    grad <N*C>                        autograd of sum(loss * grad_out) w.r.t. the student logits
    end

The composition, written out in torch: the soft term per sample as the divergence's (the KLs as
F.kl_div(log_softmax(s / T_s), log_softmax(t / T_t), log_target=True) summed over the classes, JSD as
Liger-Kernel's beta KL(P || M) + (1 - beta) KL(Q || M), TVD as (p - q).abs().sum() / 2), times T_s^2
when scaled; the hard term F.cross_entropy(s, y, reduction='none') at T = 1; a sample is kept when
its mask is true and its target is not -100, and the mix alpha soft + (1 - alpha) hard of the kept
samples, times their weights, is summed (sum), divided by the kept weight (batchmean: the recipe's
F.kl_div(..., 'batchmean') and F.cross_entropy's mean, both over the kept samples), or per sample (none).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32
KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")
REDUCTIONS = ("none", "mean", "sum", "batchmean")


def fmt(v):
    return repr(float(v))


def line(key, values):
    return key + " " + " ".join(fmt(v) for v in np.asarray(values, dtype=np.float64).ravel()) + "\n"


def line32(key, values):
    """float32 inputs in their shortest round-trip form (the reader rounds them to float first)."""
    return key + " " + " ".join(str(v) for v in np.asarray(values, dtype=F32).ravel()) + "\n"


def kl_rows(log_w, log_o):
    return F.kl_div(log_o, log_w, reduction="none", log_target=True).sum(1)


def soft_term(s, t, kind, beta, ts, tt):
    lp = F.log_softmax(s / ts, 1)
    lq = F.log_softmax(t / tt, 1)
    if kind == "forward_kl":
        return kl_rows(lq, lp)
    if kind == "reverse_kl":
        return kl_rows(lp, lq)
    p, q = lp.exp(), lq.exp()
    if kind == "jsd":
        lm = (beta * p + (1 - beta) * q).log()
        return beta * kl_rows(lp, lm) + (1 - beta) * kl_rows(lq, lm)
    return (p - q).abs().sum(1) / 2


def loss_of(s, t, c, target, weight, mask):
    n = s.shape[0]
    soft = soft_term(s, t, c["kind"], c["beta"], c["ts"], c["tt"])
    if c["scaled"]:
        soft = soft * c["ts"] * c["ts"]
    keep = torch.ones(n, dtype=torch.bool)
    if mask is not None:
        keep &= torch.tensor(mask)
    per = c["alpha"] * soft
    if target is not None:
        y = torch.tensor(target)
        keep &= y != -100
        if c["alpha"] != 1:
            per = per + (1 - c["alpha"]) * F.cross_entropy(s, y, reduction="none", ignore_index=-100)
    w = torch.ones(n, dtype=torch.float64) if weight is None else torch.tensor(weight, dtype=torch.float64)
    per = torch.where(keep, per * w, torch.zeros_like(per))
    if c["reduction"] == "none":
        return per
    if c["reduction"] == "sum":
        return per.sum()
    return per.sum() / torch.where(keep, w, torch.zeros_like(w)).sum()


def write_case(out, rs, name, s, t, c, target=None, weight=None, mask=None):
    n, classes = s.shape
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    loss = loss_of(st, torch.tensor(t, dtype=torch.float64), c, target, weight, mask)
    g = rs.uniform(-2, 2, size=n).astype(F32) if c["reduction"] == "none" else np.array([1.0], dtype=F32)
    (gs,) = torch.autograd.grad(loss, st, torch.tensor(g, dtype=torch.float64).reshape(loss.shape))
    out.write("case %s %d\nN %d\n" % (name, classes, n))
    out.write("kind %d\n" % KINDS.index(c["kind"]))
    out.write(line("beta", [c["beta"]]))
    out.write(line("T", [c["ts"], c["tt"]]))
    out.write("scaled %d\n" % int(c["scaled"]))
    out.write(line("alpha", [c["alpha"]]))
    out.write("reduction %d\n" % REDUCTIONS.index(c["reduction"]))
    out.write(line32("logits", s))
    out.write(line32("teacher", t))
    if target is not None:
        out.write("target " + " ".join(str(int(v)) for v in target) + "\n")
    if weight is not None:
        out.write(line32("sample_weight", weight))
    if mask is not None:
        out.write("mask " + " ".join(str(int(v)) for v in mask) + "\n")
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    out.write(line("grad", gs.numpy()))
    out.write("end\n")


def main():
    torch.set_num_threads(1)
    out = sys.stdout
    out.write("# generated by tests/reference/gen_distill_reference.py (torch %s, numpy %s)\n"
              % (torch.__version__, np.__version__))
    out.write("# command: /usr/bin/python3 tests/reference/gen_distill_reference.py > tests/reference/distill_cases.txt\n")
    rs = np.random.RandomState(23)
    n, classes = 6, 5
    s = (rs.randn(n, classes) * 2).astype(F32)
    t = (s * 0.5 + rs.randn(n, classes) * 2).astype(F32)
    y = rs.randint(0, classes, size=n)
    y_ign = y.copy()
    y_ign[[1, 4]] = -100
    weight = rs.uniform(0.2, 2.0, size=n).astype(F32)
    mask = np.array([True, True, False, True, True, True])
    wide_s = (rs.randn(2, 4500) * 3).astype(F32)
    wide_t = (rs.randn(2, 4500) * 3).astype(F32)
    wide_y = rs.randint(0, 4500, size=2)
    for kind in KINDS:
        beta = 0.3 if kind == "jsd" else 0.5
        # each alpha x temperatures (the teacher's own, 4, as well) x reduction; alpha 1 in the soft form
        for alpha in (1.0, 0.5, 0.0):
            for ts, tt in ((1.0, 1.0), (2.0, 2.0), (2.0, 4.0)):
                for reduction in ("none", "sum", "batchmean"):
                    c = dict(kind=kind, beta=beta, ts=ts, tt=tt, scaled=True, alpha=alpha, reduction=reduction)
                    write_case(out, rs, "%s_a%g_T%g_%g_%s" % (kind, alpha, ts, tt, reduction), s, t, c,
                               None if alpha == 1 else y)
        # ignore_index, mask and sample_weight (each weighs or leaves out both terms), alone and together
        for alpha in (1.0, 0.5, 0.0):
            c = dict(kind=kind, beta=beta, ts=2.0, tt=3.0, scaled=True, alpha=alpha, reduction="batchmean")
            write_case(out, rs, "%s_a%g_ignore" % (kind, alpha), s, t, c, y_ign)
            write_case(out, rs, "%s_a%g_mask" % (kind, alpha), s, t, c, None if alpha == 1 else y, mask=mask)
            write_case(out, rs, "%s_a%g_weight" % (kind, alpha), s, t, c, None if alpha == 1 else y, weight=weight)
            for reduction in ("none", "sum", "batchmean"):
                c = dict(c, reduction=reduction)
                write_case(out, rs, "%s_a%g_all_%s" % (kind, alpha, reduction), s, t, c, y_ign, weight, mask)
        # without Hinton's T^2
        c = dict(kind=kind, beta=beta, ts=2.0, tt=1.5, scaled=False, alpha=0.5, reduction="batchmean")
        write_case(out, rs, "%s_unscaled" % kind, s, t, c, y)
        # wide samples: more than one chunk per sample in float and double (and threads sharing a sample's chunks)
        c = dict(kind=kind, beta=beta, ts=2.0, tt=2.0, scaled=True, alpha=0.5, reduction="batchmean")
        write_case(out, rs, "%s_wide" % kind, wide_s, wide_t, c, wide_y)


if __name__ == "__main__":
    main()
