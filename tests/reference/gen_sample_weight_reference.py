"""Reference data for the per-sample weights, masks and normalizer of xent's per-sample losses
(cross_entropy with index and probability targets, nll_loss, softmax_focal_loss,
generalized_cross_entropy, divergence): torch 1.13, float64.

Rerun (Debian's python has torch 1.13 and numpy):

    /usr/bin/python3 tests/reference/gen_sample_weight_reference.py > tests/reference/sample_weight_cases.txt

Deterministic: fixed numpy seed, fixed case list, single-threaded torch. Line format as the other
*_cases.txt (read by tests/support.hpp):

    case <name> <C>
    N <samples>
    loss <0 cross_entropy, 1 cross_entropy (probability targets), 2 nll_loss, 3 softmax_focal_loss,
          4 generalized_cross_entropy, 5 divergence (forward KL, with targets), the elementwise losses
          6 binary_cross_entropy, 7 binary_cross_entropy_with_logits, 8 kl_div, 9 sigmoid_focal_loss,
          10 poly1_cross_entropy, 11 poly1_cross_entropy (probability targets),
          12 cross_entropy with label_smoothing_kind other_classes: (1 - eps) (-w_t lp_t)
             + eps / (C - 1) sum_{k != t} (-w_k lp_k), written out (torch has no such option),
          13, 14 Keras's (sparse) categorical_crossentropy of probabilities (logits holds them, not
             normalised): -sum y~ log(clamp(p / sum p, 1e-7, 1 - 1e-7)), written out>
    epsilon <value>                 Poly-1's: cross_entropy + epsilon (1 - sum_k y~_k softmax(x)_k),
                                    y~ the smoothed target ((1 - eps) y + eps / C, unweighted)
    reduction <0 none, 1 mean, 2 sum, 3 batchmean>
    logits <N*C>                    torch [N, C] row-major = xent's C x N (dim = 0)
    teacher <N*C> | probs <N*C>     the divergence's teacher, the probability targets
    target <N ints>                 -100 = ignore_index
    class_weight <C>                (cross_entropy, nll_loss), alpha <C> (softmax_focal_loss)
    smoothing, gamma, q, T          the loss's own parameter, when it has one (smoothing of the binary
                                    losses: Keras's, t -> t (1 - eps) + eps / 2)
    sample_weight <N>               (absent: every sample weighs 1)
    mask <N 0/1>                    (absent: every sample kept)
    normalizer <value>              (absent: the reduction's own denominator)
    grad_out <1 or N>
    value <1 or N>                  the loss
    denominator <1>                 sum over kept samples of sample_weight * class_weight[target]
    grad <N*C>                      autograd of sum(value * grad_out)
    end

The semantics written out (docs/losses.md, "Sample weights and masks"): torch's per-sample loss l_j
(F.cross_entropy(..., reduction='none') and its kin), then
    kept_j = mask_j and target_j != ignore_index,  a_j = kept_j * sample_weight_j,
    none:  a_j * l_j
    mean:  sum_j a_j l_j / (normalizer or sum_j a_j * class_weight[target_j])
    sum:   sum_j a_j l_j / (normalizer or 1)
    batchmean (divergence): sum_j a_j l_j / (normalizer or sum_j a_j)
and for the elementwise losses, l_jk torch's elementwise loss (class weights folded in as torch's
`weight`), with C classes per sample:
    none:  a_j * l_jk,   mean: sum a_j l_jk / (normalizer or C sum_j a_j),   sum: as above,
    batchmean (kl_div): sum a_j l_jk / (normalizer or sum_j a_j)
"""

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20261202)
REDUCTIONS = ("none", "mean", "sum", "batchmean")
LOSSES = ("cross_entropy", "cross_entropy_probs", "nll_loss", "softmax_focal_loss", "generalized_cross_entropy", "divergence",
          "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "sigmoid_focal_loss",
          "poly1_cross_entropy", "poly1_cross_entropy_probs", "cross_entropy_other_classes",
          "categorical_cross_entropy", "categorical_cross_entropy_probs")
ELEMENTWISE = LOSSES[6:10]


def fmt(v):
    return repr(float(v))


def line(key, values):
    return key + " " + " ".join(fmt(v) for v in np.asarray(values, dtype=np.float64).ravel()) + "\n"


def per_sample(loss, x, t, extra):
    """torch's per-sample loss (0 where the target is ignored)."""
    kept = t != -100
    safe_t = torch.where(kept, t, torch.zeros_like(t))
    if loss == "cross_entropy":
        return F.cross_entropy(x, t, weight=extra.get("class_weight"), reduction="none",
                               label_smoothing=extra.get("smoothing", 0.0))
    if loss == "cross_entropy_probs":
        return F.cross_entropy(x, extra["probs"], weight=extra.get("class_weight"), reduction="none",
                               label_smoothing=extra.get("smoothing", 0.0))
    if loss.startswith("categorical"):
        C = x.shape[1]
        eps = extra.get("smoothing", 0.0)
        y = F.one_hot(safe_t, C).double() if loss == "categorical_cross_entropy" else extra["probs"]
        smoothed = (1 - eps) * y + eps / C
        v = torch.clamp(x / x.sum(1, keepdim=True), 1e-7, 1 - 1e-7)
        v = -(smoothed * torch.log(v)).sum(1)
        return torch.where(kept, v, torch.zeros_like(v))
    if loss == "cross_entropy_other_classes":
        C = x.shape[1]
        eps = extra["smoothing"]
        w = extra["class_weight"] if "class_weight" in extra else torch.ones(C)
        lp = F.log_softmax(x, 1)
        onehot = F.one_hot(safe_t, C).double()
        v = -(1 - eps) * (w * onehot * lp).sum(1) - eps / (C - 1) * (w * (1 - onehot) * lp).sum(1)
        return torch.where(kept, v, torch.zeros_like(v))
    if loss.startswith("poly1"):
        C = x.shape[1]
        eps = extra.get("smoothing", 0.0)
        if loss == "poly1_cross_entropy":
            ce = F.cross_entropy(x, t, weight=extra.get("class_weight"), reduction="none", label_smoothing=eps)
            y = F.one_hot(safe_t, C).double()
        else:
            ce = F.cross_entropy(x, extra["probs"], weight=extra.get("class_weight"), reduction="none", label_smoothing=eps)
            y = extra["probs"]
        smoothed = (1 - eps) * y + eps / C
        v = ce + extra["epsilon"] * (1 - (smoothed * F.softmax(x, 1)).sum(1))
        return torch.where(kept, v, torch.zeros_like(v))
    if loss == "nll_loss":
        return F.nll_loss(x, t, weight=extra.get("class_weight"), reduction="none")
    lp = F.log_softmax(x, 1).gather(1, safe_t[:, None])[:, 0]
    if loss == "softmax_focal_loss":
        alpha = extra["alpha"][safe_t]
        v = -alpha * (1 - lp.exp()) ** extra["gamma"] * lp
    elif loss == "generalized_cross_entropy":
        v = (1 - (extra["q"] * lp).exp()) / extra["q"]
    else:  # divergence: forward KL(Q || P) at temperature T
        T = extra["T"]
        v = F.kl_div(F.log_softmax(x / T, 1), F.log_softmax(extra["teacher"] / T, 1), log_target=True,
                     reduction="none").sum(1)
    return torch.where(kept, v, torch.zeros_like(v))


def weighting_lines(sw, mask, normalizer, grad_out, value, denominator, grad):
    """The lines every case ends with: its weighting (what is given), the upstream, the results."""
    out = ""
    if sw is not None:
        out += line("sample_weight", sw.numpy())
    if mask is not None:
        out += line("mask", mask.numpy().astype(np.float64))
    if normalizer is not None:
        out += line("normalizer", [normalizer])
    out += line("grad_out", grad_out.numpy())
    out += line("value", value.detach().numpy())
    out += line("denominator", [float(denominator)])
    out += line("grad", grad.numpy())
    return out + "end\n"


def elementwise(loss, x, extra):
    """torch's elementwise loss, [N, C]; with a smoothing, Keras's: the targets y (1 - eps) + eps / 2 first."""
    y, cw = extra["probs"], extra.get("class_weight")
    if "smoothing" in extra:
        y = y * (1 - extra["smoothing"]) + extra["smoothing"] / 2
    if loss == "binary_cross_entropy":
        return F.binary_cross_entropy(x, y, weight=cw, reduction="none")
    if loss == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits(x, y, weight=cw, pos_weight=extra.get("pos_weight"), reduction="none")
    if loss == "kl_div":
        return F.kl_div(x, y, reduction="none")
    p = torch.sigmoid(x)  # torchvision.ops.sigmoid_focal_loss, written out
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    a = extra["alpha"]
    return (a * y + (1 - a) * (1 - y)) * ce * (1 - p_t) ** extra["gamma"]


def elementwise_case(name, loss, N, C, reduction, weighted=True, masked=True, normalizer=None, **params):
    x = torch.tensor(rng.standard_normal((N, C)) * 3)
    extra = {"probs": torch.tensor(rng.uniform(0, 1, (N, C)))}
    if loss == "binary_cross_entropy":
        x = torch.sigmoid(x)
    if loss == "kl_div":
        x = F.log_softmax(x, 1)
        extra["probs"] = F.softmax(torch.tensor(rng.standard_normal((N, C))), 1)
    # Inputs exactly representable in float: the float run then sees the reference's own inputs
    # (binary_cross_entropy's gradient magnifies a rounded p near 1 by p / (1 - p)).
    x, extra["probs"] = x.float().double(), extra["probs"].float().double()
    if loss in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        extra["class_weight"] = torch.tensor(rng.uniform(0.2, 2.0, C))
    if loss == "binary_cross_entropy_with_logits":
        extra["pos_weight"] = torch.tensor(rng.uniform(0.5, 3.0, C))
    if loss == "sigmoid_focal_loss":
        extra["alpha"], extra["gamma"] = 0.25, 2.0
    if "smoothing" in params:
        extra["smoothing"] = params["smoothing"]
    sw = torch.tensor(rng.uniform(0.0, 3.0, N)) if weighted else torch.ones(N)
    if weighted:
        sw[2] = 0.0
    mask = torch.ones(N, dtype=torch.bool)
    if masked:
        mask[rng.choice(N, max(1, N // 4), replace=False)] = False
    x.requires_grad_(True)
    a = torch.where(mask, sw, torch.zeros_like(sw))
    l = elementwise(loss, x, extra) * a[:, None]
    denominator = a.sum() * (1 if reduction == "batchmean" else C)
    if reduction == "none":
        value = l
        grad_out = torch.tensor(rng.uniform(-1.0, 2.0, (N, C)))
    else:
        divisor = normalizer if normalizer is not None else (1.0 if reduction == "sum" else float(denominator))
        value = l.sum() / divisor
        grad_out = torch.tensor([rng.uniform(0.5, 2.0)])
    (value * grad_out).sum().backward()
    out = f"case {name} {C}\nN {N}\n"
    out += f"loss {LOSSES.index(loss)}\nreduction {REDUCTIONS.index(reduction)}\n"
    out += line("logits", x.detach().numpy())
    out += line("probs", extra["probs"].numpy())
    for k in ("class_weight", "pos_weight"):
        if k in extra:
            out += line(k, extra[k].numpy())
    for k in ("alpha", "gamma", "smoothing"):
        if k in extra:
            out += line(k, [extra[k]])
    return out + weighting_lines(sw if weighted else None, mask if masked else None, normalizer, grad_out, value,
                                 denominator, x.grad)


def case(name, loss, N, C, reduction, weighted=True, masked=True, normalizer=None, ignore=True, **params):
    x = torch.tensor(rng.standard_normal((N, C)) * params.get("scale", 3))
    if loss == "nll_loss":
        x = F.log_softmax(x, 1)
    if loss.startswith("categorical"):
        # Unnormalised probabilities (each sample scaled), exactly representable in float.
        x = (F.softmax(x, 1) * torch.tensor(rng.uniform(0.5, 4.0, (N, 1)))).float().double()
    t = torch.tensor(rng.integers(0, C, N))
    if ignore:
        t[1] = -100
    extra = {}
    if loss in ("cross_entropy_probs", "poly1_cross_entropy_probs", "categorical_cross_entropy_probs"):
        extra["probs"] = F.softmax(torch.tensor(rng.standard_normal((N, C)) * 2), 1)
        t = torch.zeros(N, dtype=torch.int64)  # no targets: every sample counts
    if loss in ("cross_entropy", "cross_entropy_probs", "nll_loss", "poly1_cross_entropy", "poly1_cross_entropy_probs",
                "cross_entropy_other_classes") \
            and params.get("class_weight"):
        extra["class_weight"] = torch.tensor(rng.uniform(0.2, 2.0, C))
    if loss == "softmax_focal_loss":
        extra["alpha"] = torch.tensor(rng.uniform(0.2, 1.0, C))
    if loss == "divergence":
        extra["teacher"] = torch.tensor(rng.standard_normal((N, C)) * 2)
    for k in ("smoothing", "gamma", "q", "T", "epsilon"):
        if k in params:
            extra[k] = params[k]
    sw = torch.tensor(rng.uniform(0.0, 3.0, N)) if weighted else torch.ones(N)
    if weighted:
        sw[2] = 0.0  # a zero weight keeps the sample in nothing
    mask = torch.ones(N, dtype=torch.bool)
    if masked:
        mask[rng.choice(N, max(1, N // 4), replace=False)] = False
    x.requires_grad_(True)
    l = per_sample(loss, x, t, extra)
    kept = mask & (t != -100)
    a = torch.where(kept, sw, torch.zeros_like(sw))
    by_target = "class_weight" in extra and loss in ("cross_entropy", "nll_loss", "poly1_cross_entropy",
                                                     "cross_entropy_other_classes")
    cw = extra["class_weight"][torch.where(t != -100, t, torch.zeros_like(t))] if by_target else torch.ones(N)
    denominator = (a * cw).sum()
    weighted_sum = (a * l).sum()
    if reduction == "none":
        value = a * l
        grad_out = torch.tensor(rng.uniform(-1.0, 2.0, N))
    else:
        divisor = normalizer if normalizer is not None else (1.0 if reduction == "sum" else float(denominator))
        value = weighted_sum / divisor
        grad_out = torch.tensor([rng.uniform(0.5, 2.0)])
    (value * grad_out).sum().backward()
    out = f"case {name} {C}\nN {N}\n"
    out += f"loss {LOSSES.index(loss)}\nreduction {REDUCTIONS.index(reduction)}\n"
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
    for k in ("smoothing", "gamma", "q", "T", "epsilon"):
        if k in extra:
            out += line(k, [extra[k]])
    return out + weighting_lines(sw if weighted else None, mask if masked else None, normalizer, grad_out, value,
                                 denominator, x.grad)


def main():
    out = []
    for loss in LOSSES[:6]:
        params = {"cross_entropy": {"class_weight": True, "smoothing": 0.1},
                  "cross_entropy_probs": {"class_weight": True, "smoothing": 0.05},
                  "nll_loss": {"class_weight": True},
                  "softmax_focal_loss": {"gamma": 2.0},
                  "generalized_cross_entropy": {"q": 0.7},
                  "divergence": {"T": 2.0}}[loss]
        means = ("mean", "sum", "none") + (("batchmean",) if loss == "divergence" else ())
        for reduction in means:
            if loss == "divergence" and reduction == "mean":
                continue  # divergence's mean is over samples x classes: batchmean is its weighted mean
            out.append(case(f"{loss}_{reduction}", loss, 13, 7, reduction, **params))
            if reduction != "none":
                out.append(case(f"{loss}_{reduction}_normalizer", loss, 11, 5, reduction, normalizer=37.5, **params))
        weighted_mean = "batchmean" if loss == "divergence" else "mean"
        out.append(case(f"{loss}_mask_only", loss, 9, 6, weighted_mean, weighted=False, **params))
        out.append(case(f"{loss}_weight_only", loss, 9, 6, weighted_mean, masked=False, **params))
        if loss == "cross_entropy":
            out.append(case("cross_entropy_plain_weights_large_C", loss, 6, 300, "mean", class_weight=False))
            out.append(case("cross_entropy_no_smoothing", loss, 17, 4, "mean", class_weight=True))
    for loss in ("poly1_cross_entropy", "poly1_cross_entropy_probs"):
        for reduction in ("mean", "sum", "none"):
            out.append(case(f"{loss}_{reduction}", loss, 13, 7, reduction, class_weight=True, smoothing=0.1, epsilon=2.0))
        out.append(case(f"{loss}_plain", loss, 9, 6, "mean", weighted=False, masked=False, ignore=False, epsilon=1.0))
        out.append(case(f"{loss}_confident", loss, 9, 5, "none", weighted=False, masked=False, ignore=False, epsilon=2.0,
                        scale=12))
        out.append(case(f"{loss}_negative_epsilon", loss, 8, 40, "sum", epsilon=-1.0, smoothing=0.05))
    for reduction in ("mean", "sum", "none"):
        out.append(case(f"other_classes_{reduction}", "cross_entropy_other_classes", 13, 7, reduction, class_weight=True,
                        smoothing=0.1))
    out.append(case("other_classes_two_classes", "cross_entropy_other_classes", 10, 2, "mean", smoothing=0.3))
    out.append(case("other_classes_unweighted_large_C", "cross_entropy_other_classes", 5, 500, "mean", weighted=False,
                    masked=False, smoothing=0.2))
    for loss in ("categorical_cross_entropy", "categorical_cross_entropy_probs"):
        for reduction in ("mean", "sum", "none"):
            out.append(case(f"{loss}_{reduction}", loss, 13, 7, reduction, smoothing=0.1))
        out.append(case(f"{loss}_clipped", loss, 9, 6, "mean", weighted=False, masked=False, ignore=False, scale=12))
        out.append(case(f"{loss}_normalizer", loss, 8, 30, "sum", normalizer=19.0))
    for loss in ELEMENTWISE:
        for reduction in ("mean", "sum", "none") + (("batchmean",) if loss == "kl_div" else ()):
            out.append(elementwise_case(f"{loss}_{reduction}", loss, 10, 6, reduction))
            if reduction != "none":
                out.append(elementwise_case(f"{loss}_{reduction}_normalizer", loss, 7, 3, reduction, normalizer=12.5))
        out.append(elementwise_case(f"{loss}_mask_only", loss, 8, 33, "mean", weighted=False))
        if loss != "kl_div":
            out.append(elementwise_case(f"{loss}_label_smoothing", loss, 9, 4, "mean", smoothing=0.2))
            out.append(elementwise_case(f"{loss}_label_smoothing_none", loss, 6, 5, "none", weighted=False, masked=False,
                                        smoothing=0.1))
    print("".join(out), end="")


if __name__ == "__main__":
    main()
