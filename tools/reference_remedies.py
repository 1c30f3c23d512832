"""saelab's remedies against the real libraries' code: on identical weights and inputs, the TopK,
BatchTopK and JumpReLU losses and gradients, and the AuxK loss and gradients, computed by SAELens
and sparsify themselves, compared with saelab's. Prints the max abs difference per quantity.

    .venv/bin/python tools/reference_remedies.py --client .venv-sae-lens/bin/python [--sparsify .venv-sparsify/bin/python]

Weights, inputs and dead masks are written by saelab to a safetensors file; each library runs in its
own virtual environment (``--worker``, importing only the library, torch and safetensors), reads the
file, computes its own loss and gradients in float64 and writes them back. Exit code 1 when a
compared quantity differs beyond TOL, 2 on bad input.

Where the libraries' conventions differ from saelab's, the comparison maps them explicitly (each
mapping is stated in CONVENTIONS and printed) instead of loosening the tolerance:
- AuxK: saelab divides by the residual's variance (Gao et al. 2024, OpenAI's reference train.py
  ``normalized_mse``); SAELens does not normalize, sparsify divides by the input's total variance.
  Both scale the loss by min(n_dead / k_aux, 1) and take k_aux = d_in // 2 (saelab: aux.auxk_k).
- AuxK: saelab (like OpenAI's reference and sparsify) ReLUs the dead latents' pre-activations;
  SAELens feeds them raw, so negative pre-activations reconstruct the residual too. The inputs of
  the compared cases give every selected dead latent a positive pre-activation; the case
  ``auxk_negative`` measures the difference where they are negative and is reported, not checked.
- AuxK in sparsify: the fused encoder's backward drops the gradient that reaches the
  pre-activations, so AuxK trains only the dead latents' decoder rows; saelab's gradient (like
  OpenAI's reference and SAELens) also reaches the encoder and, through x - b_dec, b_dec. The loss
  and the W_dec gradient are checked; the encoder and b_dec gradients are reported, not checked.
- JumpReLU: saelab learns log(threshold) (Rajamanoharan et al. 2024); SAELens the threshold itself.
  dL/dtheta = dL/dlog(theta) / theta.
- TopK in SAELens: rescale_acts_by_decoder_norm=False (saelab has no such option).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from clients import clients as client_pythons  # tools/clients.py (this script's folder is on sys.path)
from clients import parser as client_parser

TOL = 1e-9  # max abs difference, float64 on both sides (values and gradients are O(1e-3..1e1))
TOL32 = 1e-6  # relative: SAELens keeps the JumpReLU threshold, and so its gradient, in float32
D_IN, D_SAE, ROWS, K = 32, 96, 256, 4
BANDWIDTH = 0.05  # SAELens' default jumprelu_bandwidth
CONVENTIONS = {
    "auxk/saelens": "saelab x var(residual) x min(n_dead/k_aux, 1); k_aux = d_in // 2",
    "auxk/sparsify": "saelab x var(residual) x B / sum||x - mean x||^2 x min(n_dead/k_aux, 1); no gradient to the encoder",
    "jumprelu/saelens": "threshold gradient = log_threshold gradient / threshold",
    "topk/sparsify": "fvu = sum squared error / sum ||x - mean x||^2; sparsify always encodes x - b_dec",
}


# ----- the library side (runs in the client's environment) ---------------------------------------

def worker(jobs_path: str) -> None:
    """Load the shared weights into the library's own SAE class, compute its loss and gradients."""
    import os

    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")  # sparsify's fused encoder: same math, no C++ build
    import torch
    from safetensors.torch import load_file, save_file

    spec = json.loads(Path(jobs_path).read_text())
    for job in spec["jobs"]:
        t = load_file(job["inputs"])
        out = (_saelens if spec["library"] == "saelens" else _sparsify)(job, t, torch)
        save_file({k: v.detach().double().contiguous() for k, v in out.items()}, job["out"])


def _grads(loss, named: dict, torch) -> dict:
    params = list(named.values())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {f"grad_{n}": (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named.items(), grads)}


def _saelens(job: dict, t: dict, torch) -> dict:
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    kind, x = job["kind"], t["x"]
    common = dict(d_in=x.shape[1], d_sae=t["W_enc"].shape[0], dtype="float64", device="cpu",
                  apply_b_dec_to_input=job["apply_b_dec_to_input"], decoder_init_norm=None)
    if kind == "jumprelu":
        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common, jumprelu_bandwidth=job["bandwidth"]))
    elif kind == "batchtopk":
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common, k=job["k"], rescale_acts_by_decoder_norm=False))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=job["k"], rescale_acts_by_decoder_norm=False,
                                                    aux_loss_coefficient=1.0))
    with torch.no_grad():
        sae.W_enc.copy_(t["W_enc"].T)
        sae.b_enc.copy_(t["b_enc"])
        sae.W_dec.copy_(t["W_dec"])
        sae.b_dec.copy_(t["b_dec"])
        if kind == "jumprelu":
            sae.threshold.data = t["threshold"].float()  # SAELens keeps it in float32 whatever the dtype
    named = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if kind == "jumprelu":
        named["threshold"] = sae.threshold
    sae.train()
    acts, pre = sae.encode_with_hidden_pre(x)
    out = sae.decode(acts)
    if kind == "auxk":
        loss = sae.calculate_topk_aux_loss(sae_in=x, sae_out=out, hidden_pre=pre, dead_neuron_mask=t["dead"].bool())
    else:
        loss = (out - x).pow(2).sum(-1).mean()  # SAELens' mse_loss (training_forward_pass)
    grads = _grads(loss, named, torch)
    grads["grad_W_enc"] = grads["grad_W_enc"].T  # back to saelab's [S, d] layout
    return {"loss": loss.reshape(1), "codes": acts.detach()} | grads


def _sparsify(job: dict, t: dict, torch) -> dict:
    from sparsify import SparseCoder, SparseCoderConfig

    x = t["x"]
    S = t["W_enc"].shape[0]
    sae = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=S, k=job["k"]), device="cpu", dtype=torch.float64)
    with torch.no_grad():
        sae.encoder.weight.copy_(t["W_enc"])
        sae.encoder.bias.copy_(t["b_enc"])
        sae.W_dec.copy_(t["W_dec"])
        sae.b_dec.copy_(t["b_dec"])
    named = {"W_enc": sae.encoder.weight, "b_enc": sae.encoder.bias, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    dead = t["dead"].bool() if job["kind"] == "auxk" else None
    res = sae(x, dead_mask=dead)
    loss = res.auxk_loss if job["kind"] == "auxk" else res.fvu
    codes = torch.zeros(x.shape[0], S, dtype=x.dtype).scatter(-1, res.latent_indices, res.latent_acts)
    return {"loss": loss.reshape(1), "codes": codes.detach()} | _grads(loss, named, torch)


# ----- saelab's side -----------------------------------------------------------------------------

def _cases() -> list[dict]:
    """name, library, kind, saelab config overrides, the input regime, and what is checked."""
    return [
        {"name": "topk", "library": "saelens", "kind": "topk", "check": True},
        {"name": "topk_b_dec_in", "library": "saelens", "kind": "topk", "apply_b_dec_to_input": True, "check": True},
        {"name": "batchtopk", "library": "saelens", "kind": "batchtopk", "check": True},
        {"name": "jumprelu", "library": "saelens", "kind": "jumprelu", "theta": (1.0, 3.0), "check": True},
        {"name": "jumprelu_small_theta", "library": "saelens", "kind": "jumprelu", "theta": (0.1, 0.4), "check": True},
        {"name": "auxk", "library": "saelens", "kind": "auxk", "check": True},
        {"name": "auxk_negative", "library": "saelens", "kind": "auxk", "dead_bias": -4.0, "check": False},
        {"name": "topk", "library": "sparsify", "kind": "topk", "apply_b_dec_to_input": True, "check": True},
        {"name": "auxk", "library": "sparsify", "kind": "auxk", "apply_b_dec_to_input": True, "check": ("loss", "grad_W_dec")},
    ]


def _inputs(case: dict, seed: int, torch) -> dict:
    """Weights in saelab's layout ([S, d] encoder and decoder rows), rows x, a dead mask, thresholds.
    Random but fixed by the seed; the decoder has rows of unequal norm so that nothing is hidden by
    unit norms, and b_dec is nonzero."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    W_enc = torch.randn(D_SAE, D_IN, generator=g, dtype=f64) / D_IN ** 0.5
    W_dec = torch.randn(D_SAE, D_IN, generator=g, dtype=f64) / D_IN ** 0.5 * (0.5 + torch.rand(D_SAE, 1, generator=g, dtype=f64))
    b_enc = torch.randn(D_SAE, generator=g, dtype=f64) * 0.1
    b_dec = torch.randn(D_IN, generator=g, dtype=f64) * 0.2
    x = torch.randn(ROWS, D_IN, generator=g, dtype=f64) + 0.3
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=g)[: D_SAE // 2]] = True
    if case["kind"] == "auxk":
        # dead latents get a bias that keeps them out of the TopK (they are dead) but, in the checked
        # cases, positive on the rows where AuxK picks them
        b_enc = torch.where(dead, torch.full_like(b_enc, case.get("dead_bias", 1.0)), b_enc + 3.0)
    lo, hi = case.get("theta", (1.0, 1.0))
    theta = BANDWIDTH * (lo + (hi - lo) * torch.rand(D_SAE, generator=g, dtype=f64))
    theta = theta.float().double()  # SAELens keeps its threshold in float32: share values both represent
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "x": x, "dead": dead.to(f64), "threshold": theta}


def _saelab_side(case: dict, t: dict, torch) -> dict:
    """saelab's own loss and gradients for the case, mapped to the library's convention."""
    from saelab import config
    from saelab.training import losses, models

    arch = {"auxk": "topk"}.get(case["kind"], case["kind"])
    cfg = config.SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=K, jumprelu_bandwidth=BANDWIDTH,
                           apply_b_dec_to_input=bool(case.get("apply_b_dec_to_input")))
    model = models.build(cfg, n_arms=1, dtype=torch.float64)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(model, name).copy_(t[name].unsqueeze(0))
        if arch == "jumprelu":
            model.log_threshold.copy_(t["threshold"].log().unsqueeze(0))
    model.train()
    X = t["x"].unsqueeze(0)
    pre, codes, x_hat = model(X)
    B = X.shape[1]
    if case["kind"] == "auxk":
        dead = t["dead"].bool()
        n_dead, k_aux = int(dead.sum()), D_IN // 2
        e = (X - x_hat).detach()
        var_e = (e - e.mean(-2, keepdim=True)).square().sum(-1).mean(-1)
        loss = losses.auxk(X, x_hat, pre, model.W_dec, dead.unsqueeze(0), min(k_aux, n_dead)) * var_e
        loss = loss * min(n_dead / k_aux, 1.0)
        if case["library"] == "sparsify":
            loss = loss * B / (X - X.mean(-2, keepdim=True)).square().sum()
    else:
        loss = losses.reconstruction(X, x_hat, "sum_features")
        if case["library"] == "sparsify":
            loss = loss * B / (X - X.mean(-2, keepdim=True)).square().sum()
    named = {"W_enc": model.W_enc, "b_enc": model.b_enc, "W_dec": model.W_dec, "b_dec": model.b_dec}
    if arch == "jumprelu":
        named["log_threshold"] = model.log_threshold
    params = list(named.values())
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    out = {"loss": loss.detach().reshape(1), "codes": codes.detach()[0]}
    for (n, p), gr in zip(named.items(), grads):
        gr = (gr if gr is not None else torch.zeros_like(p))[0]
        if n == "log_threshold":
            n, gr = "threshold", gr / t["threshold"]
        out[f"grad_{n}"] = gr
    return out


def main() -> int:
    ap = client_parser(__doc__)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    clients = client_pythons(args, "reference_remedies", need_one=True)
    if clients is None:
        return 2
    import torch
    from safetensors.torch import load_file, save_file

    worst_checked, worst_ratio, rows = 0.0, 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours, jobs = {}, {lib: [] for lib in clients}
        for i, case in enumerate(_cases()):
            lib = case["library"]
            if clients[lib] is None:
                continue
            tag = f"{lib}-{case['name']}"
            t = _inputs(case, args.seed + i, torch)
            save_file({k: v.contiguous() for k, v in t.items()}, str(tmp / f"{tag}-in.safetensors"))
            ours[tag] = _saelab_side(case, t, torch)
            jobs[lib].append({"tag": tag, "kind": case["kind"], "k": K, "bandwidth": BANDWIDTH,
                              "apply_b_dec_to_input": bool(case.get("apply_b_dec_to_input")),
                              "inputs": str(tmp / f"{tag}-in.safetensors"), "out": str(tmp / f"{tag}-out.safetensors"),
                              "case": case})
        for lib, todo in jobs.items():
            if not todo:
                continue
            spec = tmp / f"jobs-{lib}.json"
            spec.write_text(json.dumps({"library": lib, "jobs": todo}))
            res = subprocess.run([str(clients[lib]), __file__, "--worker", str(spec)], capture_output=True, text=True)
            if res.returncode:
                print(f"reference_remedies {lib}: FAILED in the library:\n{res.stderr.strip()[-3000:]}")
                worst_checked = worst_ratio = float("inf")
                continue
            for job in todo:
                case, theirs, mine = job["case"], load_file(job["out"]), ours[job["tag"]]
                checked = case["check"]
                for q in sorted(set(theirs) & set(mine)):
                    diff = float((theirs[q] - mine[q]).abs().max())
                    scale = float(theirs[q].abs().max())
                    is_checked = checked is True or (isinstance(checked, tuple) and q in checked)
                    tol = max(TOL, TOL32 * scale) if q == "grad_threshold" else TOL
                    if is_checked:
                        worst_checked = max(worst_checked, diff)
                        worst_ratio = max(worst_ratio, diff / tol)
                    rows.append({"library": lib, "case": case["name"], "quantity": q, "max_abs_diff": diff,
                                 "max_abs_value": scale, "checked": is_checked})
                    flag = "" if is_checked else "  (convention, reported)"
                    bad = "  MISMATCH" if is_checked and diff > tol else ""
                    print(f"reference {lib:8s} {case['name']:21s} {q:15s} max_abs_diff={diff:.3g} "
                          f"(max |value| {scale:.3g}){flag}{bad}")
    for key, text in CONVENTIONS.items():
        print(f"convention {key}: {text}")
    ok = worst_ratio <= 1.0
    print(json.dumps({"reference_max_abs_diff": worst_checked, "tolerance": TOL, "threshold_gradient_rel_tolerance": TOL32,
                      "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
