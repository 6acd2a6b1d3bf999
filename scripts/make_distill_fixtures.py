#!/usr/bin/env python3
"""Writes tests/fixtures/distill_terms.json: PyTorch's values and gradients of the
distillation terms beyond plain KD, written the way their reference implementations write
them, in float64 from inputs exact in float32.

Needs torch in a virtualenv (CI does not: the output is committed):

    python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
    ~/torchref/bin/python scripts/make_distill_fixtures.py tests/fixtures/distill_terms.json

Terms:
- dkd: decoupled KD as the authors' code (mdistiller `dkd_loss`) computes it: TCKD on the
  binary target/rest probabilities, NCKD with the target logit pushed out by −1000, each
  `kl_div(..., reduction="sum") · T² / batch`;
- attention_transfer: Zagoruyko & Komodakis' `at(x) = normalize(x.pow(2).mean(1))`, the loss
  `(at(s) − at(t)).pow(2).mean()` (their code, a mean over batch and positions) and the
  same squared distance summed over positions and averaged over the batch (this crate's
  term: the first times the number of positions);
- hint: FitNets with its projector, `mse(linear(h_s), h_t)`, gradients for the student's
  hidden states and the projector's weight and bias;
- token_kd: `T² · KL(softmax(t/T) ‖ softmax(s/T))` per token, averaged over the tokens whose
  attention mask (Hugging Face's: 1 = token) is 1;
- gjsd: the generalized Jensen–Shannon divergence of GKD (Agarwal et al., 2024; TRL's
  `generalized_jsd_loss`): `β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m)`, `m = β·p_t + (1 − β)·p_s`,
  forward KL `KL(p_t ‖ p_s)` at β = 0 and reverse KL `KL(p_s ‖ p_t)` at β = 1, at temperature
  T, averaged over the masked-in tokens;
- layers: feature distillation between mapped layers as TinyBERT and DistilBERT write it,
  over the real tokens of a padded batch (attention mask 1): the hint / hidden-state MSE
  `Σ_pairs mse(linear_k(h_s[real]), h_t[real])` with one projector per pair, TinyBERT's
  attention MSE on the probabilities `Σ_pairs mse(a_s, a_t)` over every head, real query
  and key, and DistilBERT's cosine `Σ_pairs mean_real(1 − cos(h_s, h_t))` (student and
  teacher of one width), with the gradients reaching the student's hidden states, attention
  maps and projectors.
"""
import json
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(20261206)


def f32(shape, scale=1.0):
    """Random values exactly representable in float32, as float64."""
    return (torch.randn(*shape) * scale).float().double()


def grad_of(fn, *inputs):
    xs = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*xs)
    grads = torch.autograd.grad(value, xs)
    return value.item(), [g.tolist() for g in grads]


def dkd(s, t, labels, alpha, beta, T):
    gt = F.one_hot(labels, s.shape[1]).double()
    other = 1.0 - gt
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * other).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * other).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T**2 / s.shape[0]
    log_ps2 = F.log_softmax(s / T - 1000.0 * gt, 1)
    pt2 = F.softmax(t / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * T**2 / s.shape[0]
    return alpha * tckd + beta * nckd


def at(x):
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def token_kd(s, t, mask, T):
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    keep = mask.double()
    return T**2 * (kl * keep).sum() / keep.sum()


def gjsd(s, t, mask, beta, T):
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    if beta == 0.0:
        per = F.kl_div(log_ps, log_pt, reduction="none", log_target=True)
    elif beta == 1.0:
        per = F.kl_div(log_pt, log_ps, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=log_ps.dtype)
        log_m = torch.logsumexp(torch.stack([log_ps + torch.log(1 - b), log_pt + torch.log(b)]), 0)
        kl_t = F.kl_div(log_m, log_pt, reduction="none", log_target=True)
        kl_s = F.kl_div(log_m, log_ps, reduction="none", log_target=True)
        per = beta * kl_t + (1 - beta) * kl_s
    keep = mask.double()
    return (per.sum(-1) * keep).sum() / keep.sum()


def real(x, mask):
    """Rows `[batch·seq, ...]` of the real tokens."""
    return x.reshape(mask.numel(), *x.shape[2:])[mask.reshape(-1).bool()]


def layers_case():
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    hs = [f32([2, 5, 6]) for _ in range(2)]
    ht = [f32([2, 5, 10]) for _ in range(2)]
    ws = [f32([10, 6], 0.3) for _ in range(2)]
    bs = [f32([10], 0.1) for _ in range(2)]
    att = lambda: F.softmax(f32([2, 2, 5, 5], 2.0), -1).float().double()
    a_s, a_t = att(), att()

    def hint(h0, h1, w0, w1, b0, b1):
        return sum(F.mse_loss(F.linear(real(h, mask), w, b), real(t, mask))
                   for h, t, w, b in zip([h0, h1], ht, [w0, w1], [b0, b1]))

    def attention_mse(a):
        # [batch, heads, q, k] → one row per (sample, query) with every head's keys.
        flat = lambda x: x.transpose(1, 2)
        return F.mse_loss(real(flat(a), mask), real(flat(a_t), mask))

    cs = [f32([2, 5, 10]) for _ in range(2)]

    def cosine(c0, c1):
        return sum((1 - F.cosine_similarity(real(c, mask), real(t, mask), dim=-1, eps=0)).mean()
                   for c, t in zip([c0, c1], ht))

    hint_value, hint_grads = grad_of(hint, *hs, *ws, *bs)
    att_value, (att_grad,) = grad_of(attention_mse, a_s)
    cos_value, cos_grads = grad_of(cosine, *cs)
    return {"attention_mask": mask.tolist(),
            "student_hidden": [h.tolist() for h in hs], "teacher_hidden": [t.tolist() for t in ht],
            "weights_out_in": [w.tolist() for w in ws], "biases": [b.tolist() for b in bs],
            "student_attention": a_s.tolist(), "teacher_attention": a_t.tolist(),
            "cosine_student_hidden": [c.tolist() for c in cs],
            "hint": hint_value, "grad_hint_hidden": hint_grads[:2],
            "grad_hint_weights_out_in": hint_grads[2:4], "grad_hint_biases": hint_grads[4:],
            "attention_mse": att_value, "grad_attention_mse": att_grad,
            "cosine": cos_value, "grad_cosine_hidden": cos_grads}


def main(out):
    cases = {}
    s, t = f32([5, 7], 2.0), f32([5, 7], 2.0)
    labels = torch.tensor([0, 3, 6, 2, 3])
    cases["dkd"] = {"student": s.tolist(), "teacher": t.tolist(), "labels": labels.tolist(),
                    "runs": []}
    for alpha, beta, T in [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)]:
        value, (g,) = grad_of(lambda x: dkd(x, t, labels, alpha, beta, T), s)
        cases["dkd"]["runs"].append({"alpha": alpha, "beta": beta, "T": T, "value": value,
                                     "grad_student": g})

    a_s, a_t = f32([3, 4, 6]), f32([3, 8, 6])
    paper, (g_paper,) = grad_of(lambda x: (at(x) - at(a_t)).pow(2).mean(), a_s)
    positions = a_s.shape[2]
    ours, (g_ours,) = grad_of(lambda x: (at(x) - at(a_t)).pow(2).sum(1).mean(), a_s)
    assert abs(ours - paper * positions) < 1e-12
    cases["attention_transfer"] = {"student": a_s.tolist(), "teacher": a_t.tolist(),
                                   "paper_value": paper, "value": ours, "grad_student": g_ours}

    hs, ht = f32([4, 6]), f32([4, 10])
    w, b = f32([10, 6], 0.3), f32([10], 0.1)
    value, (g_h, g_w, g_b) = grad_of(lambda h, w_, b_: F.mse_loss(F.linear(h, w_, b_), ht),
                                     hs, w, b)
    cases["hint"] = {"student": hs.tolist(), "teacher": ht.tolist(),
                     "weight_out_in": w.tolist(), "bias": b.tolist(), "value": value,
                     "grad_student": g_h, "grad_weight_out_in": g_w, "grad_bias": g_b}

    ts, tt = f32([2, 5, 9], 2.0), f32([2, 5, 9], 2.0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    cases["token_kd"] = {"student": ts.tolist(), "teacher": tt.tolist(),
                         "attention_mask": mask.tolist(), "runs": []}
    for T in [1.0, 2.0]:
        value, (g,) = grad_of(lambda x: token_kd(x, tt, mask, T), ts)
        cases["token_kd"]["runs"].append({"T": T, "value": value, "grad_student": g})
    cases["gjsd"] = {"student": ts.tolist(), "teacher": tt.tolist(),
                     "attention_mask": mask.tolist(), "runs": []}
    for beta, T in [(0.0, 1.0), (0.5, 1.0), (0.1, 2.0), (0.9, 1.0), (1.0, 1.5)]:
        value, (g,) = grad_of(lambda x: gjsd(x, tt, mask, beta, T), ts)
        cases["gjsd"]["runs"].append({"beta": beta, "T": T, "value": value, "grad_student": g})

    cases["layers"] = layers_case()

    doc = {
        "description": __doc__.strip().splitlines()[0],
        "generator": {"script": "scripts/make_distill_fixtures.py", "torch": torch.__version__,
                      "compute_dtype": "float64", "inputs": "exact in float32"},
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print({k: [r["value"] for r in v["runs"]] if "runs" in v else v.get("value")
           for k, v in cases.items()})
    print({k: cases["layers"][k] for k in ["hint", "attention_mse", "cosine"]})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/distill_terms.json")
