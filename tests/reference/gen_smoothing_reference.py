"""Reference data for the label-smoothing family (issue 16, items 4 and 5): torch 1.13, float64.

Rerun (Debian's python has torch 1.13 and numpy):

    /usr/bin/python3 tests/reference/gen_smoothing_reference.py > tests/reference/smoothing_cases.txt

Deterministic: fixed numpy seed, fixed case list, single-threaded torch. Line format as the other
*_cases.txt (read by tests/support.hpp):

    case <name> <C>
    N <samples>
    fn <0 cross_entropy, 1 softmax_focal_loss, 2 categorical_focal_cross_entropy>
    reduction <0 none, 1 mean, 2 sum>
    kind <0 uniform, 1 other_classes>  (fn 0)
    eps <label_smoothing>
    excluded <E class indices>        (fn 0, only when some classes are excluded)
    weight <C>                        (fn 0, only when class-weighted)
    gamma <value>                     (fn 1, 2)
    alpha <C> or <1>                  (fn 1: per class, only when given; fn 2: Keras's scalar)
    clip <value>                      (fn 2: Keras's epsilon)
    target <N ints>                   -100: ignored (fn 2: absent with probability targets)
    targets <N*C>                     (fn 2, probability targets)
    logits <N*C>                      torch [N, C] row-major = xent's C x N (dim = 0); fn 2: the probabilities
    grad_out <1 or N>
    loss <1 or N>
    grad <N*C>                        autograd of sum(loss * grad_out)
    end

The composition is written out, not torch's label_smoothing: the smoothed target distribution q of
each sample, then -(w * q * log_softmax(x)).sum(1). With E excluded classes (s_k = 0 excluded, 1
else) and a target t that is not excluded:
    uniform:        q = (1 - eps) onehot(t) + eps s / (C - E)
    other_classes:  q_t = 1 - eps, q_k = eps s_k / (C - E - 1) for k != t
and q = onehot(t) when t itself is excluded (no smoothing). mean divides by the summed w_t of the
non-ignored samples, as torch's cross_entropy.

softmax_focal_loss with label smoothing (fn 1): q = (1 - eps) onehot(t) + eps / C, p = softmax(x),
    loss = -(alpha * q * (1 - p)^gamma * log p).sum(1),   1 - p as -expm1(log_softmax(x)),
mean over the non-ignored samples (alpha does not enter the denominator). eps = 0 is the
unsmoothed -alpha_t (1 - p_t)^gamma log p_t.

categorical_focal_cross_entropy (fn 2), Keras 3's categorical_focal_crossentropy with
from_logits=False written out (keras/src/losses/losses.py): u = p / p.sum(1), v = clamp(u, clip,
1 - clip), y~ = (1 - eps) y + eps / C (y one-hot for class indices), loss = (-y~ alpha (1 - v)^gamma
log v).sum(1); mean over the kept samples. The gradient passes through the clamp where
clip <= u <= 1 - clip (torch.clamp's, tf.clip_by_value's).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32
REDUCTIONS = ("none", "mean", "sum")
KINDS = ("uniform", "other_classes")


def fmt(v):
    return repr(float(v))


def line(key, values):
    return key + " " + " ".join(fmt(v) for v in np.asarray(values, dtype=np.float64).ravel()) + "\n"


def ints(key, values):
    return key + " " + " ".join(str(int(v)) for v in values) + "\n"


def smoothed_targets(target, c, eps, kind, excluded):
    """q [N, C] for class-index targets (a row of zeros for an ignored sample)."""
    n = len(target)
    s = np.ones(c)
    s[list(excluded)] = 0
    e = len(excluded)
    q = np.zeros((n, c))
    for j, t in enumerate(target):
        if t == -100:
            continue
        if t in excluded:
            q[j, t] = 1
        elif kind == "uniform":
            q[j] = eps * s / (c - e)
            q[j, t] += 1 - eps
        else:
            q[j] = eps * s / (c - e - 1)
            q[j, t] = 1 - eps
    return torch.tensor(q)


def ce_loss(x, target, eps, kind, excluded, weight, reduction):
    n, c = x.shape
    w = torch.ones(c, dtype=torch.float64) if weight is None else torch.tensor(weight, dtype=torch.float64)
    q = smoothed_targets(target, c, eps, kind, excluded)
    per = -(w * q * F.log_softmax(x, 1)).sum(1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    kept = torch.tensor(target != -100)
    return per.sum() / w[torch.tensor(np.where(target == -100, 0, target))][kept].sum()


def write_case(out, rs, name, x, target, eps, kind, excluded, reduction, weight=None):
    n, c = x.shape
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    loss = ce_loss(xt, target, eps, kind, excluded, weight, reduction)
    g = rs.uniform(-2, 2, size=n).astype(F32) if reduction == "none" else np.array([1.0], dtype=F32)
    (gx,) = torch.autograd.grad(loss, (xt,), torch.tensor(g, dtype=torch.float64).reshape(loss.shape))
    out.write("case %s %d\nN %d\nfn 0\n" % (name, c, n))
    out.write("reduction %d\n" % REDUCTIONS.index(reduction))
    out.write("kind %d\n" % KINDS.index(kind))
    out.write(line("eps", [eps]))
    if excluded:
        out.write(ints("excluded", excluded))
    if weight is not None:
        out.write(line("weight", weight))
    out.write(ints("target", target))
    out.write(line("logits", x))
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    out.write(line("grad", gx.numpy()))
    out.write("end\n")


def write_header(out, name, c, n, fn, reduction, eps):
    out.write("case %s %d\nN %d\nfn %d\n" % (name, c, n, fn))
    out.write("reduction %d\n" % REDUCTIONS.index(reduction))
    out.write(line("eps", [eps]))


def reduce_(per, reduction, kept):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / kept


def write_tail(out, rs, xt, loss, n):
    g = rs.uniform(-2, 2, size=n).astype(F32) if loss.dim() == 1 else np.array([1.0], dtype=F32)
    (gx,) = torch.autograd.grad(loss, (xt,), torch.tensor(g, dtype=torch.float64).reshape(loss.shape))
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    out.write(line("grad", gx.numpy()))
    out.write("end\n")


def write_focal_case(out, rs, name, x, target, eps, gamma, alpha, reduction):
    n, c = x.shape
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lp = F.log_softmax(xt, 1)
    om = -torch.expm1(lp)
    q = smoothed_targets(target, c, eps, "uniform", [])
    a = torch.ones(c, dtype=torch.float64) if alpha is None else torch.tensor(alpha, dtype=torch.float64)
    per = -(a * q * om.pow(gamma) * lp).sum(1)
    loss = reduce_(per, reduction, float((target != -100).sum()))
    write_header(out, name, c, n, 1, reduction, eps)
    out.write(line("gamma", [gamma]))
    if alpha is not None:
        out.write(line("alpha", alpha))
    out.write(ints("target", target))
    out.write(line("logits", x))
    write_tail(out, rs, xt, loss, n)


def write_keras_focal_case(out, rs, name, p, target, eps, gamma, alpha, clip, reduction):
    """target: N class indices (-100 ignored) or an [N, C] probability array."""
    n, c = p.shape
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    if target.ndim == 1:
        y = torch.zeros(n, c, dtype=torch.float64)
        for j, t in enumerate(target):
            if t != -100:
                y[j, t] = 1
        kept = torch.tensor(target != -100, dtype=torch.float64)
    else:
        y = torch.tensor(target, dtype=torch.float64)
        kept = torch.ones(n, dtype=torch.float64)
    ys = y * (1 - eps) + eps / c
    u = pt / pt.sum(1, keepdim=True)
    v = torch.clamp(u, clip, 1 - clip)
    per = (-ys * alpha * (1 - v).pow(gamma) * torch.log(v)).sum(1) * kept
    loss = reduce_(per, reduction, float(kept.sum()))
    write_header(out, name, c, n, 2, reduction, eps)
    out.write(line("gamma", [gamma]))
    out.write(line("alpha", [alpha]))
    out.write(line("clip", [clip]))
    if target.ndim == 1:
        out.write(ints("target", target))
    else:
        out.write(line("targets", target))
    out.write(line("logits", p))
    write_tail(out, rs, pt, loss, n)


def main():
    torch.set_num_threads(1)
    out = sys.stdout
    out.write("# generated by tests/reference/gen_smoothing_reference.py (torch %s, numpy %s)\n"
              % (torch.__version__, np.__version__))
    out.write("# command: /usr/bin/python3 tests/reference/gen_smoothing_reference.py > tests/reference/smoothing_cases.txt\n")
    rs = np.random.RandomState(16)
    # C = 6 (the small-class path when E = 0) and C = 40 (the sweep), N = 9 (not a packet multiple)
    for c, n in ((6, 9), (40, 9)):
        x = (rs.randn(n, c) * 2.5).astype(F32)
        target = rs.randint(0, c, size=n)
        excluded = [0, c - 1]         # padding first, a special token last
        target[1], target[5] = 0, c - 1   # two samples whose target is excluded
        target[3] = -100
        weight = rs.uniform(0.3, 2.0, size=c).astype(F32)
        for kind in KINDS:
            for eps in (0.1, 0.6):
                for reduction in REDUCTIONS:
                    write_case(out, rs, "ce_C%d_%s_eps%g_%s" % (c, kind, eps, reduction), x, target, eps, kind,
                               excluded, reduction)
                write_case(out, rs, "ce_C%d_%s_eps%g_weighted" % (c, kind, eps), x, target, eps, kind, excluded,
                           "mean", weight)
            # one class excluded; and as many as leave the kind its minimum (1 class, or 2)
            write_case(out, rs, "ce_C%d_%s_one_excluded" % (c, kind), x, target, 0.3, kind, [2], "none")
            most = list(range(c - (1 if kind == "uniform" else 2)))
            write_case(out, rs, "ce_C%d_%s_most_excluded" % (c, kind), x, target, 0.3, kind, most, "none", weight)
        # the E = 0 case through the same composition (torch's label_smoothing for uniform)
        write_case(out, rs, "ce_C%d_none_excluded" % c, x, target, 0.2, "uniform", [], "none")
    # softmax_focal_loss with label smoothing: C = 5 and 40; a confident sample (p_t near 1) and
    # one ignored; gamma 0 (cross_entropy's smoothing), 0.5, 2; with and without alpha.
    for c, n in ((5, 7), (40, 6)):
        x = (rs.randn(n, c) * 2).astype(F32)
        target = rs.randint(0, c, size=n)
        x[0, target[0]] = F32(14)
        target[2] = -100
        alpha = rs.uniform(0.2, 1.0, size=c).astype(F32)
        for gamma in (0.0, 0.5, 2.0):
            for eps in (0.1, 0.45):
                for reduction in REDUCTIONS:
                    write_focal_case(out, rs, "focal_C%d_g%g_eps%g_%s" % (c, gamma, eps, reduction), x, target, eps,
                                     gamma, None, reduction)
                write_focal_case(out, rs, "focal_C%d_g%g_eps%g_alpha" % (c, gamma, eps), x, target, eps, gamma, alpha,
                                 "none")
        write_focal_case(out, rs, "focal_C%d_eps0" % c, x, target, 0.0, 2.0, alpha, "none")
    # categorical_focal_cross_entropy of probabilities: a softmax output with one entry below the
    # clip (1e-9), one sample above 1 - clip, one unnormalised sample; class-index and probability
    # targets; Keras's defaults (alpha 0.25, gamma 2, clip 1e-7) and others.
    for c, n in ((4, 6), (30, 5)):
        z = rs.randn(n, c) * 1.5
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        p[1, 0] = 1e-9
        p[2] = 1e-10
        p[2, 1] = 1.0
        p[3] *= 3.0
        p = p.astype(F32).astype(np.float64)
        target = rs.randint(0, c, size=n)
        target[2] = 1
        target[4] = -100
        soft = rs.dirichlet(np.ones(c), size=n).astype(F32).astype(np.float64)
        for gamma, alpha in ((2.0, 0.25), (0.0, 1.0), (0.5, 0.6), (3.0, 1.0)):
            for eps in (0.0, 0.2):
                for reduction in REDUCTIONS:
                    write_keras_focal_case(out, rs, "keras_focal_C%d_g%g_a%g_eps%g_%s" % (c, gamma, alpha, eps, reduction),
                                           p, target, eps, gamma, alpha, 1e-7, reduction)
                write_keras_focal_case(out, rs, "keras_focal_C%d_g%g_a%g_eps%g_soft" % (c, gamma, alpha, eps), p, soft,
                                       eps, gamma, alpha, 1e-7, "none")
        write_keras_focal_case(out, rs, "keras_focal_C%d_clip1e-3" % c, p, target, 0.1, 2.0, 0.25, 1e-3, "none")


if __name__ == "__main__":
    main()
