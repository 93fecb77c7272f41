"""Reference data for xent::topk_divergence (losses/topk_divergence.hpp): torch 1.13, float64.

Rerun (Debian's python has torch 1.13 and numpy):

    /usr/bin/python3 tests/reference/gen_topk_reference.py > tests/reference/topk_cases.txt

Deterministic: fixed numpy seed, fixed case list, single-threaded torch. Line format as the other
*_cases.txt (read by tests/support.hpp):

    case <name> <C>
    N <samples>
    k <teacher classes per sample>
    kind <0 forward_kl, 1 reverse_kl, 2 jsd, 3 tvd>
    beta <value>                      jsd's weight of the student
    T <student temperature> <teacher temperature>
    scaled <0 or 1>                   times T_s^2
    reduction <0 none, 1 mean, 2 sum, 3 batchmean>
    values_are <0 logits, 1 log_probs>
    logits <N*C>                      torch [N, C] row-major = xent's C x N (dim = 0)
    indices <N*k>  values <N*k>       torch [N, k] row-major = xent's k x N
    lse <N>                           (only for logits with the teacher's full log-sum-exp)
    target <N ints>                   (only when some samples are ignored: ignore_index -100)
    grad_out <1 or N>
    loss <1 or N>
    grad <N*C>                        autograd of sum(loss * grad_out) w.r.t. the student logits
                                      (only where the loss is finite)
    grad_values <N*k>                 the same w.r.t. the teacher's stored values (lse held fixed)
    end

The definition, written out (docs/losses.md, "Top-k teachers"): the student's P = softmax(s / T_s)
lumped onto the teacher's k classes plus one tail class, P' = (P[idx], 1 - sum P[idx]) (the tail
as the log-sum-exp of the student's other log-probabilities); the teacher's Q' = (q, tail) with
    logits without lse:  q = softmax(values / T_t), tail 0 (the top-k renormalised)
    logits with lse:     q = exp(values - lse),      tail = max(0, 1 - sum q)
    log_probs:           q = exp(values),            tail = max(0, 1 - sum q)
(T_t = 1 whenever the tail is known); then divergence's compositions over the k + 1 entries: the
KLs with 0 log 0 = 0, JSD as Liger-Kernel (beta KL(P' || M) + (1 - beta) KL(Q' || M)), TVD as
|P' - Q'|.sum() / 2. The stored values (float32) are the inputs, rounded as a pipeline stores them.
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32
KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")
REDUCTIONS = ("none", "mean", "sum", "batchmean")
VALUES = ("logits", "log_probs")


def fmt(v):
    return repr(float(v))


def line(key, values):
    return key + " " + " ".join(fmt(v) for v in np.asarray(values, dtype=np.float64).ravel()) + "\n"


def xlogy_diff(w, lw, lo):
    """sum over entries of w (lw - lo), 0 where w = 0."""
    return torch.where(w > 0, w * (lw - lo), torch.zeros_like(w)).sum(1)


def lumped_student(s, idx, ts):
    lp = F.log_softmax(s / ts, 1)
    top = lp.gather(1, idx)
    outside = torch.ones_like(lp, dtype=torch.bool).scatter(1, idx, False)
    tail = torch.logsumexp(torch.where(outside, lp, torch.full_like(lp, -np.inf)), 1, keepdim=True)
    return torch.cat([top, tail], 1)


def lumped_teacher(values, lse, values_are, tt):
    if values_are == "logits" and lse is None:
        lq = F.log_softmax(values / tt, 1)
        return torch.cat([lq, torch.full_like(lq[:, :1], -np.inf)], 1)
    lq = values if values_are == "log_probs" else values - lse[:, None]
    tail_mass = torch.clamp(-torch.expm1(torch.logsumexp(lq, 1, keepdim=True)), min=0)
    return torch.cat([lq, tail_mass.log()], 1)


def per_sample(lp, lq, kind, beta):
    p, q = lp.exp(), lq.exp()
    if kind == "jsd" and beta == 0:
        kind = "forward_kl"
    if kind == "jsd" and beta == 1:
        kind = "reverse_kl"
    if kind == "forward_kl":
        return xlogy_diff(q, lq, lp)
    if kind == "reverse_kl":
        return xlogy_diff(p, lp, lq)
    if kind == "jsd":
        lm = torch.logaddexp(np.log(beta) + lp, np.log1p(-beta) + lq)
        return beta * xlogy_diff(p, lp, lm) + (1 - beta) * xlogy_diff(q, lq, lm)
    return (p - q).abs().sum(1) / 2


def write_case(out, rs, name, s, idx, values, lse, values_are, kind, beta, ts, tt, scaled, reduction, target=None):
    n, c = s.shape
    k = idx.shape[1]
    keep = torch.ones(n, dtype=torch.bool) if target is None else torch.tensor(target != -100)
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    lp = lumped_student(st, torch.tensor(idx, dtype=torch.int64), ts)
    vt = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    lq = lumped_teacher(vt,
                        None if lse is None else torch.tensor(lse, dtype=torch.float64), values_are, tt)
    d = per_sample(lp, lq, kind, beta)
    if scaled:
        d = d * ts * ts
    d = torch.where(keep, d, torch.zeros_like(d))
    kept = keep.sum()
    loss = {"none": d, "sum": d.sum(), "batchmean": d.sum() / kept, "mean": d.sum() / (kept * c)}[reduction]
    g = rs.uniform(-2, 2, size=n).astype(F32) if reduction == "none" else np.array([1.0], dtype=F32)
    out.write("case %s %d\nN %d\nk %d\n" % (name, c, n, k))
    out.write("kind %d\n" % KINDS.index(kind))
    out.write(line("beta", [beta]))
    out.write(line("T", [ts, tt]))
    out.write("scaled %d\n" % int(scaled))
    out.write("reduction %d\n" % REDUCTIONS.index(reduction))
    out.write("values_are %d\n" % VALUES.index(values_are))
    out.write(line("logits", s))
    out.write("indices " + " ".join(str(int(v)) for v in idx.ravel()) + "\n")
    out.write(line("values", values))
    if lse is not None:
        out.write(line("lse", lse))
    if target is not None:
        out.write("target " + " ".join(str(int(v)) for v in target) + "\n")
    out.write(line("grad_out", g))
    out.write(line("loss", loss.detach().numpy()))
    if torch.isfinite(loss).all():
        gs, gv = torch.autograd.grad(loss, (st, vt), torch.tensor(g, dtype=torch.float64).reshape(loss.shape))
        out.write(line("grad", gs.numpy()))
        out.write(line("grad_values", gv.numpy()))
    out.write("end\n")


def teacher_of(t, idx, mode):
    """The stored values (float32) of teacher logits t at idx: mode logits, lse (logits and the
    full log-sum-exp) or log_probs."""
    t64 = torch.tensor(t, dtype=torch.float64)
    if mode == "log_probs":
        return F.log_softmax(t64, 1).gather(1, torch.tensor(idx)).numpy().astype(F32), None, "log_probs"
    values = np.take_along_axis(t, idx, 1)
    lse = torch.logsumexp(t64, 1).numpy().astype(F32) if mode == "lse" else None
    return values, lse, "logits"


def main():
    torch.set_num_threads(1)
    out = sys.stdout
    out.write("# generated by tests/reference/gen_topk_reference.py (torch %s, numpy %s)\n"
              % (torch.__version__, np.__version__))
    out.write("# command: /usr/bin/python3 tests/reference/gen_topk_reference.py > tests/reference/topk_cases.txt\n")
    rs = np.random.RandomState(23)
    n, c, k = 4, 24, 4
    s = (rs.randn(n, c) * 2).astype(F32)
    # A teacher that agrees with the student in part, peaked enough that the top 5 hold most mass.
    t = (s * 0.5 + rs.randn(n, c) * 2.5).astype(F32)
    top = np.argsort(-t, 1, kind="stable")[:, :k].astype(np.int64)  # by probability, not by class
    some = np.stack([rs.choice(c, k, replace=False) for _ in range(n)]).astype(np.int64)  # not the top
    for kind in KINDS:
        for beta in ((0.5, 0.2) if kind == "jsd" else (0.5,)):
            for mode in ("logits", "lse", "log_probs"):
                values, lse, values_are = teacher_of(t, top, mode)
                if kind == "reverse_kl" and mode == "logits":
                    # No teacher tail: +inf wherever the student has mass outside the k classes.
                    write_case(out, rs, "reverse_kl_logits_no_tail", s, top, values, lse, values_are, kind, beta, 1, 1,
                               False, "none")
                    continue
                temperatures = ((1, 1), (2, 1), (0.5, 1)) if mode != "logits" else ((1, 1), (2, 2), (0.5, 3))
                for ts, tt in temperatures:
                    reductions = REDUCTIONS if (ts, tt) == (2, 1) or (ts, tt) == (2, 2) else ("none", "batchmean")
                    for reduction in reductions:
                        for scaled in ((False, True) if reduction == "batchmean" and ts == 2 else (False,)):
                            name = "%s_b%g_%s_T%g_%g_%s%s" % (kind, beta, mode, ts, tt, reduction, "_T2" if scaled else "")
                            write_case(out, rs, name, s, top, values, lse, values_are, kind, beta, ts, tt, scaled, reduction)
                # k classes that are not the teacher's top (the tail may then outweigh them)
                values, lse, values_are = teacher_of(t, some, mode)
                write_case(out, rs, "%s_b%g_%s_random_classes" % (kind, beta, mode), s, some, values, lse, values_are, kind,
                           beta, 1, 1, False, "none")
        # ignore_index
        target = rs.randint(0, c, size=n)
        target[[1, 3]] = -100
        values, lse, values_are = teacher_of(t, top, "lse")
        for reduction in ("none", "batchmean", "mean"):
            write_case(out, rs, "%s_ignore_%s" % (kind, reduction), s, top, values, lse, values_are, kind, 0.3, 1, 1, False,
                       reduction, target)
        # k = 1 and k = C - 1 (one class in the tail)
        for kk in (1, c - 1):
            idx = np.argsort(-t, 1, kind="stable")[:, :kk].astype(np.int64)
            values, lse, values_are = teacher_of(t, idx, "log_probs")
            write_case(out, rs, "%s_k%d" % (kind, kk), s, idx, values, lse, values_are, kind, 0.5, 1, 1, False, "none")


if __name__ == "__main__":
    main()
