"""Arms stacked into one model: building a group, its training step, its held-out evaluation,
its metrics rows and its resampling. saelab.training.train runs these in lockstep over a run.

A group is the arms whose SAE config (and tracking config and AuxK k) agree: one module with a
leading arm dimension K, one StackedAdam, one DeadTracker. Arms in a group may differ in
everything else (penalty, LR, schedule, normalization, resampling, auxiliary losses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from saelab.config import RunConfig
from saelab.data.sources import Source
from saelab.training import losses, metrics, remedies, schedules
from saelab.training.models import SAE, build
from saelab.training.normalize import WHITEN_ROWS_PER_DIM, Normalizer, make_normalizer
from saelab.training.optim import StackedAdam, retain_freed_memory
from saelab.training.tracking import DETECTORS, DeadTracker, precision_recall

EVAL_CHUNK = 4096
SUBSPACE_ROWS_PER_DIM = 4  # training rows per input dimension the subspace init (sae.init_subspace) is estimated from
RESAMPLE_POOL_ROWS = 8192  # rows the anthropic strategy samples from (recent training batches)


class NonFiniteError(RuntimeError):
    """A loss or weight became NaN/Inf; the last good state was checkpointed."""

    def __init__(self, arm: int, step: int, quantity: str):
        super().__init__(f"arm {arm}: {quantity} is not finite at step {step}")
        self.arm, self.step, self.quantity = arm, step, quantity


@dataclass
class Group:
    """Arms sharing one stacked model."""

    idx: list[int]  # global arm indices, in stacking order
    model: SAE
    adam: StackedAdam
    tracker: DeadTracker
    normalizers: list[Normalizer]
    shared_norm: bool  # every arm normalizes identically: compute once
    forward: Callable  # forward_losses, or its torch.compile'd form (RunConfig.compile)
    last: dict = field(default_factory=dict)  # tensors of the latest step, for logs and resampling


def build_groups(cfgs: list[RunConfig], source: Source, device: torch.device) -> list[Group]:
    """Stack the arms into groups (arms in one group share the SAE config, the tracking config and
    the AuxK k), each with its model (every arm starting from the same weights), Adam state,
    tracker and normalizers. The source's first normalize.estimate_batches batches fit the
    dataset_scalar and whitening normalizers and, under sae.b_dec_init, give each arm's starting b_dec; under
    sae.init_subspace, those batches (at least SUBSPACE_ROWS_PER_DIM rows per input dimension)
    give the subspace the initial rows are projected into."""
    retain_freed_memory()  # once per process, off the step: steps reuse their big buffers (saelab.training.optim)
    by_key: dict = {}
    for i, c in enumerate(cfgs):
        # a group shares one model, one tracker (tracking config) and one AuxK k (step_group uses
        # the group's first arm's), so arms differing in any of them go to separate groups
        by_key.setdefault((c.sae, c.tracking, c.aux.auxk_k), []).append(i)
    first, groups = cfgs[0], []
    dtype = dtype_of(first.dtype)
    for (sae_cfg, tracking_cfg, _), idx in by_key.items():
        arm_cfgs = [cfgs[i] for i in idx]
        model = build(sae_cfg, n_arms=len(idx), seed=first.seed, dtype=dtype).to(device)
        params = dict(model.named_parameters())
        betas = torch.tensor([[c.optim.beta1, c.optim.beta2] for c in arm_cfgs], dtype=torch.float64, device=device)
        eps = torch.tensor([c.optim.eps for c in arm_cfgs], dtype=torch.float64, device=device)
        decay = torch.tensor([c.optim.weight_decay for c in arm_cfgs], dtype=torch.float64, device=device)
        normalizers = [make_normalizer(c.normalize, sae_cfg.d_in) for c in arm_cfgs]
        shared = len({c.normalize for c in arm_cfgs}) == 1
        fit_batches = max(c.normalize.estimate_batches for c in arm_cfgs)
        # the subspace init's rows: at least SUBSPACE_ROWS_PER_DIM per dimension, so that a full-rank
        # input is not mistaken for a low-rank one (N rows span at most N directions)
        subspace_batches = -(-SUBSPACE_ROWS_PER_DIM * sae_cfg.d_in // first.data.batch_size) if sae_cfg.init_subspace > 0 else 0
        # whitening's covariance: at least WHITEN_ROWS_PER_DIM rows per dimension (Normalizer.fit)
        whiten = any(c.normalize.mode == "whitening" for c in arm_cfgs)
        whiten_batches = -(-WHITEN_ROWS_PER_DIM * sae_cfg.d_in // first.data.batch_size) if whiten else 0
        needs_batches = (sae_cfg.b_dec_init != "zeros" or sae_cfg.init_subspace > 0 or whiten
                         or any(c.normalize.mode == "dataset_scalar" for c in arm_cfgs))
        n_batches = max(fit_batches, subspace_batches, whiten_batches) if needs_batches else 0
        batches = [source.batch(s, first.data.batch_size).to(device, dtype) for s in range(n_batches)]
        for n in normalizers:
            n.fit(batches)
        if sae_cfg.b_dec_init != "zeros":
            _init_b_dec(model, normalizers, torch.cat(batches[:fit_batches]))
        if sae_cfg.init_subspace > 0:
            _init_subspace(model, normalizers, torch.cat(batches))
        groups.append(Group(idx, model, StackedAdam(params, betas, eps, decay),
                             DeadTracker(len(idx), sae_cfg.d_sae, tracking_cfg, device), normalizers, shared,
                             _compiled_forward() if first.compile else forward_losses))
    return groups


@torch.no_grad()
def _init_b_dec(model: SAE, normalizers: list[Normalizer], x: Tensor) -> None:
    """Each arm's decoder bias = the center (mean or geometric median, sae.b_dec_init) of the rows x
    [N, d] in that arm's normalized space."""
    for k, n in enumerate(normalizers):
        xn = n(x)[0]
        center = xn.mean(0) if model.cfg.b_dec_init == "mean" else metrics.geometric_median(xn)
        model.b_dec[k] = center


@torch.no_grad()
def _init_subspace(model: SAE, normalizers: list[Normalizer], x: Tensor) -> None:
    """Each arm's encoder and decoder rows projected onto the leading principal directions of its
    rows x [N, d] (in that arm's normalized space, about its starting b_dec) that hold
    sae.init_subspace of their second moment, each row keeping its norm (Wang et al. 2025, arXiv
    2508.16929: a row started outside the data's active subspace sees pre-activations from
    directions the data never takes, and its decoder adds error wherever it fires). A tied encoder
    stays the decoder's transpose: both rows are one direction projected the same way."""
    for k, n in enumerate(normalizers):
        basis = metrics.principal_basis(n(x)[0] - model.b_dec[k], model.cfg.init_subspace)  # [r, d] float64
        for w in (model.W_enc, model.W_dec):
            rows = w[k].to(torch.float64)
            inside = rows @ basis.T @ basis
            scale = rows.norm(dim=-1, keepdim=True) / inside.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            w[k] = (inside * scale).to(w.dtype)


def _compiled_forward() -> Callable:
    """forward_losses under torch.compile. Shapes are static within a run (dynamic=False: no
    symbolic-shape guards on the step). Dynamo keys its cache on the function's code, which every
    group shares, so each distinct model shape is one more cache entry: the limit is raised to fit
    a lab's groups instead of silently falling back to eager after the default 8."""
    import torch._dynamo  # only when asked for: importing it costs about a second

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(forward_losses, dynamic=False)


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[name]


def _per_form(forms: Sequence[str], fn) -> Tensor:
    """fn(form) -> [K]; picks each arm's value when arms use different forms."""
    if len(set(forms)) == 1:
        return fn(forms[0])
    by_form = {f: fn(f) for f in set(forms)}
    return torch.stack([by_form[f][i] for i, f in enumerate(forms)])


def normalize_batch(g: Group, x: Tensor) -> tuple[Tensor, list]:
    """x [B, d] -> X [K, B, d] (each arm's normalization) and each arm's inverse info. Arms that
    normalize identically share one normalized batch: X is then a stride-0 view, never K copies."""
    if g.shared_norm:
        xn, info = g.normalizers[0](x)
        return xn.unsqueeze(0).expand(len(g.idx), -1, -1), [info] * len(g.idx)
    pairs = [n(x) for n in g.normalizers]
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def _vec(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def forward_losses(model: SAE, X: Tensor, rec_forms: tuple[str, ...], l1_forms: tuple[str, ...]):
    """The model's forward pass and each arm's reconstruction and sparsity terms (before alpha):
    (pre, codes, x_hat, rec [K], pen [K]). The part of a step that RunConfig.compile compiles."""
    pre, codes, x_hat = model(X)
    rec = _per_form(rec_forms, lambda f: losses.reconstruction(X, x_hat, f))
    if all(f == "none" for f in l1_forms):  # TopK arms: no |z| pass over [K, B, S]
        pen = torch.zeros_like(rec)
    else:
        pen = _per_form(l1_forms, lambda f: _sparsity(model, pre, codes, f))
    return pre, codes, x_hat, rec, pen


def _sparsity(model: SAE, pre: Tensor, codes: Tensor, form: str) -> Tensor:
    """Every arm's sparsity term (before alpha) under one penalty.form: the L0 count of a JumpReLU
    (its pre-activations against its thresholds) or an L1 reduction of the codes."""
    if form == losses.L0_FORM:
        return losses.l0_penalty(pre, model.threshold(), model.cfg.jumprelu_bandwidth)
    return losses.l1_penalty(codes, form, model.W_dec)


def step_group(g: Group, cfgs: list[RunConfig], x: Tensor, step: int) -> Tensor:
    """Forward, per-arm losses, backward, clipping, Adam, decoder constraint, trackers.
    Returns the per-arm loss [K] (detached).

    Hot path (benchmarks/README.md): per-arm scalars stay Python floats until one small tensor
    each; a term that is exactly zero for every arm (no |z| penalty, reanimation with no latent
    dead in the batch, AuxK with no dead latent) is skipped, not computed and multiplied by 0, which
    also keeps TopK's backward on its sparse path; gradient clipping is applied inside Adam's fused
    pass, one kernel per set of arms sharing hyper-parameters."""
    model, arm_cfgs = g.model, [cfgs[i] for i in g.idx]
    X, _ = normalize_batch(g, x)
    pre, codes, x_hat, rec, pen = g.forward(model, X, tuple(c.penalty.reconstruction for c in arm_cfgs),
                                            tuple(c.penalty.form for c in arm_cfgs))
    alpha = _vec([schedules.alpha_at(step, c.penalty) for c in arm_cfgs], rec)
    loss = rec + alpha * pen
    coef = [schedules.reanimation_coef_at(step, c.aux) for c in arm_cfgs]
    if any(coef) and bool(losses.dead_in_batch(codes.detach()).any()):
        loss = loss + losses.reanimation(pre, codes, _vec(coef, rec))
    auxk_coef = [c.aux.auxk_coef for c in arm_cfgs]
    if any(auxk_coef):
        dead = g.tracker.dead("tokens")
        if bool(dead.any()):  # AuxK is exactly 0 for an arm without dead latents
            aux = losses.auxk(X, x_hat, pre, model.W_dec, dead, arm_cfgs[0].aux.auxk_k)
            loss = loss + _vec(auxk_coef, rec) * aux
    finite = torch.isfinite(loss)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        raise NonFiniteError(g.idx[bad], step, f"loss ({float(loss[bad].detach())})")
    g.adam.zero_grad()
    loss.sum().backward()  # arms own disjoint slices, so one backward gives every arm its own gradient
    if model.cfg.decoder_constraint == "unit_norm":
        model.project_decoder_grad()
    clip = [c.optim.grad_clip for c in arm_cfgs]
    divisor = clip_per_arm(model, _vec(clip, rec), apply=False) if any(clip) else None
    lrs = [schedules.lr_at(step, c) for c in arm_cfgs]
    g.adam.step(lrs, divisor)  # LRs as Python floats: the exact configured values; clipping in Adam's pass
    if model.cfg.decoder_constraint == "unit_norm":
        model.normalize_decoder()
    codes = codes.detach()
    g.tracker.update(codes)
    g.last = {"X": X, "codes": codes, "x_hat": x_hat.detach(), "rec": rec.detach(), "pen": pen.detach(),
              "alpha": alpha, "loss": loss.detach(), "lr": _vec(lrs, rec), "x": x}
    return loss.detach()


@torch.no_grad()
def clip_per_arm(model: SAE, max_norm: Tensor, apply: bool = True) -> Tensor:
    """Per arm, the factor that brings the joint L2 norm of its gradients down to max_norm [K]
    (0: no clipping), as torch.nn.utils.clip_grad_norm_ computes it; returned as a divisor [K]
    (>= 1). apply=True divides the gradients now; the trainer instead hands the divisor to Adam,
    whose fused pass divides them on the way (one pass over the gradients fewer)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [n_params, K]
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = torch.where(max_norm > 0, (max_norm / (total + 1e-6)).clamp_max(1.0), torch.ones_like(total))
    divisor = coef.reciprocal()
    if apply:
        for g in grads:
            g.div_(divisor.view(-1, *([1] * (g.ndim - 1))))
    return divisor


@torch.no_grad()
def evaluate(g: Group, x_eval: Tensor) -> dict[str, Tensor]:
    """Held-out metrics per arm of the group: fire counts [K, S], mse, fvu (normalized space and
    original space), l0 [K]. Squared errors are float32 differences summed in float64; the
    variances of the held-out set (normalized once per distinct normalization, and raw) are
    computed on the first call of a run and cached on the group."""
    model = g.model
    was_training = model.training
    model.eval()
    K = len(g.idx)
    f64 = torch.float64
    fire = torch.zeros(K, model.cfg.d_sae, dtype=torch.int64, device=x_eval.device)
    sq = torch.zeros(K, dtype=f64, device=x_eval.device)
    sq_orig, l0_sum = sq.clone(), sq.clone()
    for chunk in x_eval.split(EVAL_CHUNK):
        X, infos = normalize_batch(g, chunk)
        _, codes, x_hat = model(X)
        fire += metrics.fire_counts(codes)
        l0_sum += (codes != 0).sum((1, 2), dtype=f64)
        sq += (x_hat - X).square().sum((1, 2), dtype=f64)
        for k, n in enumerate(g.normalizers):
            sq_orig[k] += (n.inverse(x_hat[k], infos[k]) - chunk).square().sum(dtype=f64)
    n, d = x_eval.shape

    def _centered_sq(x: Tensor) -> Tensor:  # sum of (x - mean row)^2 in float64, chunked: no float64 copy of x
        mean = x.sum(0, dtype=f64) / x.shape[0]
        total = torch.zeros((), dtype=f64, device=x.device)
        for c in x.split(EVAL_CHUNK):
            total += (c.to(f64) - mean).square().sum()
        return total

    # The held-out set and the normalizers stay fixed during a run, so the variances are computed
    # once per run: cached on the group with the tensor itself (held, so identity is meaningful),
    # its version counter and the normalizers' state.
    state = (x_eval._version, str([nz.state_dict() for nz in g.normalizers]))
    cache = g.__dict__.get("_eval_var_cache")
    if cache is None or cache[0] is not x_eval or cache[1] != state:
        if g.shared_norm:
            var = _centered_sq(g.normalizers[0](x_eval)[0]).expand(K)
        else:
            var = torch.stack([_centered_sq(nz(x_eval)[0]) for nz in g.normalizers])
        cache = g.__dict__["_eval_var_cache"] = (x_eval, state, var, _centered_sq(x_eval))
    var, var_orig = cache[2], cache[3]
    model.train(was_training)
    return {
        "fire": fire,
        "mse": sq / (n * d),
        "fvu": sq / var.clamp_min(1e-300),
        "mse_orig": sq_orig / (n * d),
        "fvu_orig": sq_orig / var_orig.clamp_min(1e-300),
        "l0": l0_sum / n,
        "rows": n,
    }


FLOOR_OF_MEAN = 0.1  # the dead count's detection floor: a tenth of the mean firing rate L0 / d_sae (issue 21)


def count_window(cfg: RunConfig, l0: float, rows: int) -> int:
    """Training tokens the dead count looks back over: at least ``tracking.dead_tokens``, and
    enough that, with the ``rows`` held-out rows, an alive latent firing at FLOOR_OF_MEAN of the
    mean rate L0 / d_sae (k / d_sae for TopK; L0 taken as at least 1, so a collapsed SAE is held
    to the floor of one latent per row) is called dead with at most 1% probability. At k=2 of
    2,048 latents that is 47,150 tokens: 1,024 held-out rows alone put the floor at 4.6x the mean
    rate. Training rows stream past anyway, so the longer count holds nothing in memory."""
    return max(cfg.tracking.dead_tokens, floor_window(cfg, l0, rows))


def floor_window(cfg: RunConfig, l0: float, rows: int) -> int:
    """The part of ``count_window`` its detection floor needs, without ``tracking.dead_tokens``:
    training tokens that, with the ``rows`` held-out rows, call an alive latent firing at
    FLOOR_OF_MEAN of the mean rate max(L0, 1) / d_sae dead with at most 1% probability (may be <= 0:
    the held-out rows are enough)."""
    mean_rate = max(l0, 1.0) / cfg.sae.d_sae
    return metrics.observations_for(min(FLOOR_OF_MEAN * mean_rate, 0.5)) - rows


def common_window(cfg: RunConfig, rows: int) -> int:
    """The look-back of the ``dead_frac_common`` count: ``floor_window`` at L0 = 1 (the longest
    floor, a tenth of the rate of a code with one latent per row), so it depends on d_sae and the
    held-out rows alone. Two arms that differ in the tracking config (the window their resampling or
    AuxK calls latents dead by) or in L0 are counted over the same tokens: the lab's ``dead_frac``
    looks back over at least ``tracking.dead_tokens``, so a longer window would count fewer deaths
    by measurement alone (phase 03, H29). 64 latents and 256 held-out rows: 2,690 tokens."""
    return max(0, floor_window(cfg, 1.0, rows))


def stable_dead(g: Group, cfgs: list[RunConfig], heldout_dead: Tensor, windows: list[int] | None = None) -> Tensor:
    """bool [K, S]: latents dead by a count that does not hinge on how many held-out rows were
    looked at: silent on every held-out row AND on every training row of the last
    ``tracking.dead_tokens`` tokens the latent has lived through (tokens-since-fired counter; a
    latent younger than the window is judged on its whole life, so at step 0 only the held-out
    rows count). With 1,024 held-out rows a latent that fires once per 2,000 rows looks dead about
    60% of the time; over a window of 100 training batches it does not. ``windows`` (tokens per arm
    of the group, default ``tracking.dead_tokens``): the window, ``count_window`` for the lab's count."""
    t = g.tracker
    out = heldout_dead.clone()
    for k, arm in enumerate(g.idx):
        cfg = cfgs[arm]
        lived = t.age[k] * cfg.data.batch_size
        window = lived.clamp(max=windows[k] if windows is not None else cfg.tracking.dead_tokens)
        out[k] &= t.tokens_since_fired[k] >= window
    return out


def metric_rows(g: Group, cfgs: list[RunConfig], ev: dict, step: int, truth_dict: Tensor | None) -> list[dict]:
    """One metrics row per arm of the group at ``step`` (completed steps)."""
    model, last, S = g.model, g.last, g.model.cfg.d_sae
    truth = ev["fire"] == 0
    windows = [count_window(cfgs[arm], float(ev["l0"][k]), int(ev["rows"])) for k, arm in enumerate(g.idx)]
    dead = stable_dead(g, cfgs, truth, windows)
    common = stable_dead(g, cfgs, truth, [common_window(cfgs[arm], int(ev["rows"])) for arm in g.idx])
    collapsed = metrics.collapsed(ev["fvu_orig"], ev["l0"])
    rate = ev["fire"].to(torch.float64) / ev["rows"]
    rows = []
    pr = {d: precision_recall(g.tracker.dead(d), truth) for d in DETECTORS}
    dead_det = {d: g.tracker.dead(d).double().mean(-1) for d in DETECTORS}
    if truth_dict is not None:
        cos = metrics.max_cosines(model.W_dec.detach().float(), truth_dict)  # [K, F], shared by both metrics
        mmcs, frac = cos.mean(-1), (cos > 0.9).to(torch.float32).mean(-1)  # = metrics.mmcs / frac_recovered
    for k, arm in enumerate(g.idx):
        cfg = cfgs[arm]
        row = {
            "step": step,
            "lr": schedules.lr_at(max(step - 1, 0), cfg),
            "alpha": schedules.alpha_at(max(step - 1, 0), cfg.penalty),
            "reanim_coef": schedules.reanimation_coef_at(max(step - 1, 0), cfg.aux),
            "mse": float(ev["mse"][k]),
            "fvu": float(ev["fvu"][k]),
            "explained_variance": 1 - float(ev["fvu"][k]),
            "mse_orig": float(ev["mse_orig"][k]),
            "fvu_orig": float(ev["fvu_orig"][k]),
            "l0": float(ev["l0"][k]),
            "l0_frac": float(ev["l0"][k]) / S,
            "dead_frac": float(dead[k].double().mean()),
            "dead_frac_heldout": float(truth[k].double().mean()),
            # over common_window, the same for arms that differ in tracking.dead_tokens or L0 (H29)
            "dead_frac_common": float(common[k].double().mean()),
            "nearly_dead_1e-3": float((rate[k] < 1e-3).double().mean()),
            "nearly_dead_1e-5": float((rate[k] < 1e-5).double().mean()),
            "dead_rows": int(ev["rows"]),
            "dead_window_tokens": (counted := int(min(windows[k], step * cfg.data.batch_size))),
            # the firing rate below which an alive latent is called dead with > 1% probability by
            # this count (held-out rows and training tokens, each a chance to fire)
            "dead_floor_rate": metrics.detection_floor(int(ev["rows"]) + counted),
            "dense_frac": float(metrics.dense_fraction(ev["fire"][k], int(ev["rows"]))),
            "collapsed": float(collapsed[k]),
            "mmcs": float(mmcs[k]) if truth_dict is not None else float("nan"),
            "frac_recovered": float(frac[k]) if truth_dict is not None else float("nan"),
        }
        if last:  # the training batch of the latest step (the seed's Task 1.1 numbers)
            bd = losses.l1_breakdown(last["codes"][k], float(last["alpha"][k]), last["pen"][k], last["rec"][k])
            row |= {"loss": float(last["loss"][k]), "rec_loss": bd["reconstruction"]}
            row |= {key: bd[key] for key in ("l1_sum", "l1_mean", "l1_feature_mean", "l1_penalty", "l1_recon_ratio")}
            row |= {f"norm_{key}": v for key, v in g.normalizers[k].stats(last["x"]).items() if isinstance(v, (int, float))}
        row["dead_frac_batch"] = float(dead_det["single_batch"][k]) if last else float("nan")
        row["dead_frac_window"] = float(dead_det["window"][k]) if last else float("nan")
        row["dead_frac_tokens"] = float(dead_det["tokens"][k])
        for d in DETECTORS:
            row[f"det_{d}_precision"] = float(pr[d][0][k])
            row[f"det_{d}_recall"] = float(pr[d][1][k])
        rows.append(row)
    return rows


def resample_due(cfg: RunConfig, step: int) -> bool:
    r = cfg.resample
    # the seed's loop (`for step in range(total_steps)`) never resamples after the last step
    if r.strategy == "off" or step <= 0 or step >= cfg.steps or step % r.interval or step < r.first_step:
        return False
    return not (r.after_warmup and step < cfg.schedule.warmup_steps)


@torch.no_grad()
def resample(g: Group, cfgs: list[RunConfig], k: int, step: int, source: Source, x_eval: Tensor,
              gen: torch.Generator) -> dict:
    """Run arm k's resampling strategy and describe it (with detector quality vs the truth)."""
    cfg = cfgs[g.idx[k]]
    r = cfg.resample
    before = evaluate(g, x_eval)
    truth = before["fire"] == 0
    detected = g.tracker.dead(r.detector)
    pr = {d: precision_recall(g.tracker.dead(d), truth) for d in DETECTORS}
    if r.strategy == "anthropic":  # sample from recent training batches, weighted by squared loss
        n_batches = max(1, RESAMPLE_POOL_ROWS // cfg.data.batch_size)
        raw = torch.cat([source.batch(s, cfg.data.batch_size) for s in range(max(0, step - n_batches), step)])
        pool = g.normalizers[k](raw.to(x_eval))[0]
        _, _, x_hat = g.model(pool.unsqueeze(0).expand(len(g.idx), -1, -1))
        x_hat = x_hat[k]
    else:  # the seed resamples from the current batch
        pool, x_hat = g.last["X"][k], g.last["x_hat"][k]
    per_row_loss = (x_hat - pool).square().sum(-1)
    details = remedies.resample(r.strategy, g.model, g.adam.state, k, detected[k], pool, per_row_loss,
                                reset_adam=r.reset_adam, generator=gen)
    revived = detected[k].nonzero().flatten()
    g.tracker.revive(k, revived)
    after = evaluate(g, x_eval)
    return {
        "step": step, "kind": "resample", "strategy": r.strategy, "detector": r.detector,
        "n_detected": int(detected[k].sum()), "n_truly_dead": int(truth[k].sum()),
        "dead_frac_before": float(truth[k].double().mean()), "dead_frac_after": float((after["fire"][k] == 0).double().mean()),
        "l0_before": float(before["l0"][k]), "l0_after": float(after["l0"][k]),
        **{f"det_{d}_precision": float(pr[d][0][k]) for d in DETECTORS},
        **{f"det_{d}_recall": float(pr[d][1][k]) for d in DETECTORS},
        **{key: v for key, v in details.items() if key not in ("step", "kind", "arm")},  # "arm" is group-local
    }
