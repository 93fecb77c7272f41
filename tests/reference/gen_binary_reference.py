#!/usr/bin/python3
"""Generate reference data for xent's binary losses, kl_div and information measures.

Writes tests/reference/binary_cases.txt (to stdout). Rerun from the repository root with Debian's
interpreter (it has torch 1.13 and numpy; the `python3` on PATH may not):

    /usr/bin/python3 tests/reference/gen_binary_reference.py > tests/reference/binary_cases.txt

Output is deterministic (fixed numpy seeds, fixed case list). All torch work is in float64.

File format (same line format as lse_cases.txt; parsed with strtold by tests/test_binary_measures.cpp):

    case <name> <function>       function: bce, bce_logits, kl_div, entropy, entropy_from_logits,
                                           cross_entropy_between, kl_divergence, js_divergence
    shape <N> <C>                torch shape [N, C]: N samples, C classes; every matrix below is
                                 written row-major, i.e. the memory of an Eigen C x N column-major
                                 matrix with dim = 0
    reduction <r>                0 none, 1 mean, 2 sum, 3 batchmean (losses only)
    log_target <0|1>             kl_div only
    base <b>                     measures only; 0 means e (nats)
    input <N*C values>           probs / logits / log-probabilities / p
    target <N*C values>          targets / q (absent for entropy*)
    weight <C or N*C values>     optional; C values = per class, N*C = elementwise
    pos_weight <C or N*C values> optional (bce_logits)
    value <1 or N*C or N values> torch's result (1 for mean/sum/batchmean, N*C for none, N for measures)
    grad_out <1 or N*C values>   losses: the seed of backward
    grad <N*C values>            losses: d(sum(value * grad_out)) / d(input) by torch autograd
    end

Every input value is exactly representable in float32 (so the float tests read the same inputs).
Special values are written as inf, -inf, nan.
"""

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2, "batchmean": 3}


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def fmt(values):
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        out.append("nan" if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else repr(float(v)))))
    return " ".join(out)


def emit(name, fn, n, c, fields):
    print(f"case {name} {fn}")
    print(f"shape {n} {c}")
    for key, val in fields:
        print(f"{key} {fmt(val)}")
    print("end")


def softmax_rows(rs, n, c, zeros=0):
    p = rs.dirichlet(np.ones(c), size=n)
    for i in range(zeros):
        p[i % n, (3 * i + 1) % c] = 0.0
    return f32(p)  # float32-representable, not exactly normalised; the measures do not require it


def loss_cases(fn, name, x, t, weight_variants, pos_variants, reductions, rs, extra=()):
    n, c = x.shape
    count = 0
    for wname, w in weight_variants:
        for pname, pw in pos_variants:
            for red in reductions:
                for extra_name, extra_kw in (extra or [("", {})]):
                    xi = torch.tensor(x, requires_grad=True)
                    tt = torch.tensor(t)
                    kw = dict(reduction=red, **extra_kw)
                    if fn == "bce":
                        out = F.binary_cross_entropy(xi, tt, weight=None if w is None else torch.tensor(w), **kw)
                    elif fn == "bce_logits":
                        out = F.binary_cross_entropy_with_logits(
                            xi, tt, weight=None if w is None else torch.tensor(w),
                            pos_weight=None if pw is None else torch.tensor(pw), **kw)
                    else:
                        out = F.kl_div(xi, tt, **kw)
                    g = f32(rs.uniform(0.5, 2.0, size=out.shape)) if red == "none" else np.array(0.75)
                    (out * torch.tensor(g)).sum().backward()
                    fields = [("reduction", [REDUCTIONS[red]])]
                    if fn == "kl_div":
                        fields.append(("log_target", [1 if extra_kw.get("log_target") else 0]))
                    fields += [("input", x), ("target", t)]
                    if w is not None:
                        fields.append(("weight", w))
                    if pw is not None:
                        fields.append(("pos_weight", pw))
                    fields += [("value", out.detach().numpy()), ("grad_out", g), ("grad", xi.grad.numpy())]
                    parts = [name, wname, pname, red, extra_name]
                    emit("_".join(p for p in parts if p), fn, n, c, fields)
                    count += 1
    return count


def measure_case(name, fn, p, q, base):
    pt, qt = torch.tensor(p), None if q is None else torch.tensor(q)
    if fn == "entropy":
        v = -torch.xlogy(pt, pt).sum(1)
    elif fn == "entropy_from_logits":
        v = torch.distributions.Categorical(logits=pt).entropy()
    elif fn == "cross_entropy_between":
        v = -torch.xlogy(pt, qt).sum(1)
    elif fn == "kl_divergence":
        v = (torch.xlogy(pt, pt) - torch.xlogy(pt, qt)).sum(1)
    else:
        m = (pt + qt) / 2
        v = 0.5 * (torch.xlogy(pt, pt) - torch.xlogy(pt, m)).sum(1) + 0.5 * (torch.xlogy(qt, qt) - torch.xlogy(qt, m)).sum(1)
    if base:
        v = v / math.log(base)
    fields = [("base", [base]), ("input", p)] + ([] if q is None else [("target", q)]) + [("value", v.numpy())]
    emit(name, fn, p.shape[0], p.shape[1], fields)
    return 1


def main():
    rs = np.random.RandomState(1234)
    total = 0
    print("# generated by tests/reference/gen_binary_reference.py")
    print("# command: /usr/bin/python3 tests/reference/gen_binary_reference.py > tests/reference/binary_cases.txt")
    print(f"# torch {torch.__version__}, numpy {np.__version__}; all values float64")

    n, c = 4, 3
    w_variants = [("", None), ("wclass", f32(rs.uniform(0.2, 2.0, size=c))), ("welem", f32(rs.uniform(0.2, 2.0, size=(n, c))))]
    pw_variants = [("", None), ("pwclass", f32(rs.uniform(0.5, 3.0, size=c))), ("pwelem", f32(rs.uniform(0.5, 3.0, size=(n, c))))]
    reds = ["none", "mean", "sum"]

    # binary_cross_entropy: random, then exact 0 / 1 probabilities (torch's -100 clamp, 1e-12 in backward).
    p = f32(rs.uniform(0.02, 0.98, size=(n, c)))
    t = f32(rs.uniform(0, 1, size=(n, c)))
    total += loss_cases("bce", "bce_random", p, t, w_variants, [("", None)], reds, rs)
    p_edge = f32([[0.0, 1.0, 0.5], [0.0, 1.0, 1e-30], [1e-7, 1 - 2**-24, 0.25], [0.0, 1.0, 0.999]])
    t_edge = f32([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.5, 0.5, 1.0], [0.3, 0.7, 1.0]])
    total += loss_cases("bce", "bce_edges", p_edge, t_edge, w_variants, [("", None)], reds, rs)

    # binary_cross_entropy_with_logits: random, then huge logits.
    x = f32(rs.normal(0, 3, size=(n, c)))
    total += loss_cases("bce_logits", "bcel_random", x, t, w_variants, pw_variants, reds, rs)
    x_edge = f32([[1e30, -1e30, 100.0], [-100.0, 0.0, 40.0], [1e30, -1e30, -40.0], [100.0, -100.0, 20.0]])
    t_edge2 = f32([[1.0, 0.0, 0.3], [0.3, 0.5, 1.0], [0.3, 0.7, 0.0], [0.0, 1.0, 0.5]])
    total += loss_cases("bce_logits", "bcel_edges", x_edge, t_edge2, w_variants, pw_variants, reds, rs)

    # kl_div: log-probability input; targets with zeros (0 log 0 = 0) and log targets.
    lp = f32(torch.log_softmax(torch.tensor(rs.normal(0, 2, size=(n, 5))), 1).numpy())
    q = softmax_rows(rs, n, 5, zeros=3)
    kreds = ["none", "mean", "sum", "batchmean"]
    total += loss_cases("kl_div", "kl_zeros", lp, q, [("", None)], [("", None)], kreds, rs)
    lq = f32(np.log(softmax_rows(rs, n, 5)))
    total += loss_cases("kl_div", "kl_logt", lp, lq, [("", None)], [("", None)], kreds, rs,
                        extra=[("logtarget", {"log_target": True})])

    # The measures, per sample, in nats, bits and base 10.
    for base in (0, 2, 10):
        for k, (nn, cc) in enumerate([(5, 4), (3, 17), (1, 2)]):
            pz = softmax_rows(rs, nn, cc, zeros=2 if cc > 2 else 0)
            qp = softmax_rows(rs, nn, cc)  # strictly positive: H(p, q), KL finite
            qz = softmax_rows(rs, nn, cc, zeros=1 if cc > 2 else 0)
            logits = f32(rs.normal(0, 4, size=(nn, cc)))
            tag = f"b{base}_{nn}x{cc}"
            total += measure_case(f"entropy_{tag}", "entropy", pz, None, base)
            total += measure_case(f"entropy_logits_{tag}", "entropy_from_logits", logits, None, base)
            total += measure_case(f"ce_{tag}", "cross_entropy_between", pz, qp, base)
            total += measure_case(f"kl_{tag}", "kl_divergence", pz, qp, base)
            total += measure_case(f"js_{tag}", "js_divergence", pz, qz, base)
    big = f32([[1e30, -1e30, 0.0, 100.0], [-100.0, -100.0, -100.0, -100.0]])
    total += measure_case("entropy_logits_huge", "entropy_from_logits", big, None, 0)
    print(f"{total} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
