"""Dead-latent resampling: strategies that rewrite the weights (and optionally the Adam moments)
of dead latents of one arm, in place, in the model's own parameters.

Parameters are stacked over arms (see models.py): W_enc / W_dec ``[K, d_sae, d_in]`` (row i belongs
to latent i), b_enc ``[K, d_sae]``. Adam state is ``{name: {"m": Tensor, "v": Tensor}}`` with the
parameter's shape. A strategy touches only ``[arm, dead rows]``; everything else stays bit-identical.

Strategies:
    seed       the seed's training_tasks.py lines 926-971: ``W_enc[dead] = x[high-loss sample] * 0.1``.
               Nothing else changes (b_enc, W_dec, Adam moments stay) unless ``reset_adam``.
    seed-fix   the seed's Task 4.2: ``W_enc[dead] = x/||x|| * mean_i ||W_enc[i]|| * 0.5``, the mean over
               all latents of the arm, taken once before any write; a sample with ||x|| <= 1e-6 falls
               back to ``randn(d_in) * 0.01`` from the generator (the seed's ``else`` branch).
    anthropic  Bricken et al. 2023, "Towards Monosemanticity", neuron-resampling appendix: rows drawn
               with probability proportional to the square of their loss; ``W_dec[dead] = x/||x||``;
               ``W_enc[dead] = x/||x|| * 0.2 * mean ||W_enc[alive]||``; ``b_enc[dead] = 0``; the Adam
               moments of those rows and bias entries are reset (always, as in the paper).

Sample assignment for seed and seed-fix ("the high-loss sample"): rows are ranked by loss, highest
first (ties keep the lower row index), and the j-th dead latent (ascending latent index) gets the
row of rank ``j mod N``. With more dead latents than rows (the seed's case: ~500 dead latents, a
128-row batch) the ranking repeats, so several latents get identical encoder rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

STRATEGIES = ("seed", "seed-fix", "anthropic")
LIST_CAP = 50  # longest list stored in an event (indices, sample rows, norms)
TINY_NORM = 1e-6  # the seed's Task 4.2 threshold below which a sample has no direction
SEED_SCALE = 0.1  # the seed's line 963
SEED_FIX_SCALE = 0.5  # the seed's Task 4.2
ANTHROPIC_ENC_SCALE = 0.2  # Bricken 2023 appendix


def resample(
    strategy: str,
    model: nn.Module,
    adam_state: dict[str, dict[str, Tensor]],
    arm: int,
    dead: Tensor,
    x: Tensor,
    per_row_loss: Tensor,
    reset_adam: bool,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Rewrite the dead latents of one arm in place and return JSON-able event details.

    strategy: one of STRATEGIES. model: has W_enc, b_enc, W_dec as stacked nn.Parameters.
    adam_state: the optimizer's per-parameter moments (edited in place when resetting).
    arm: which arm. dead: bool ``[d_sae]``. x: ``[N, d_in]`` the arm's normalized input pool.
    per_row_loss: ``[N]`` the arm's squared reconstruction error per row.
    reset_adam: zero m and v of exactly the rewritten rows/entries (anthropic always does).
    generator: the only source of randomness (anthropic sampling, seed-fix fallback).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"resample strategy {strategy!r} is not allowed; choose one of {list(STRATEGIES)}")
    W_enc = model.W_enc
    K, S, d = W_enc.shape
    if not 0 <= arm < K:
        raise ValueError(f"arm={arm} out of range for {K} arms")
    if dead.dtype != torch.bool or dead.shape != (S,):
        raise ValueError(f"dead must be a bool tensor of shape ({S},), got {tuple(dead.shape)} {dead.dtype}")
    if x.ndim != 2 or x.shape[1] != d or per_row_loss.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"x must be [N, {d}] with N >= 1 and per_row_loss [N]; got {tuple(x.shape)} and {tuple(per_row_loss.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(per_row_loss).all()):
        raise ValueError("resample: x and per_row_loss must be finite (a NaN loss cannot rank or weight rows)")

    do_reset = reset_adam or strategy == "anthropic"
    touched = ["W_enc", "W_dec", "b_enc"] if strategy == "anthropic" else ["W_enc"]
    if do_reset and adam_state:  # check before writing anything, so an error leaves the model as it was
        for name in touched:
            if not {"m", "v"} <= set(adam_state.get(name, {})):
                raise ValueError(f"adam_state has no m/v for {name!r} (has {sorted(adam_state)}); cannot reset its moments")

    idx = dead.to(W_enc.device).nonzero().squeeze(-1)
    event: dict[str, Any] = {"strategy": strategy, "arm": arm, "n_resampled": int(idx.numel()), "n_pool_rows": int(x.shape[0])}
    if idx.numel() == 0:
        return event | {"indices": [], "reset_adam": do_reset, "adam_reset": []}

    x = x.detach().to(device=W_enc.device, dtype=W_enc.dtype)
    loss = per_row_loss.detach().to(device=W_enc.device, dtype=torch.float64)
    with torch.no_grad():
        if strategy == "seed":
            rows = _highest_loss_rows(loss, idx.numel())
            enc = x[rows] * SEED_SCALE
        elif strategy == "seed-fix":
            rows = _highest_loss_rows(loss, idx.numel())
            typical = W_enc[arm].norm(dim=-1).mean()  # all latents of the arm, before any write
            enc, n_fallback = _unit_or_noise(x[rows], typical * SEED_FIX_SCALE, generator)
            event |= {"typical_enc_norm": typical.item(), "n_fallback": n_fallback}
        else:
            rows = _loss_squared_sample(x, loss, idx.numel(), generator)
            alive = ~dead.to(W_enc.device)
            norms = W_enc[arm].norm(dim=-1)
            alive_mean = norms[alive].mean() if bool(alive.any()) else norms.mean()  # all dead: no alive norm exists
            unit = x[rows] / x[rows].norm(dim=-1, keepdim=True)
            enc = unit * (ANTHROPIC_ENC_SCALE * alive_mean)
            model.W_dec[arm, idx] = unit.to(model.W_dec.dtype)
            model.b_enc[arm, idx] = 0.0
            event |= {"alive_enc_norm_mean": alive_mean.item(), "n_alive": int(alive.sum())}
        W_enc[arm, idx] = enc  # index_put_ on the Parameter itself, never on a copy

    reset_names = _reset_moments(adam_state, arm, idx, touched) if do_reset else []
    written = enc.norm(dim=-1)
    return event | {
        "indices": idx[:LIST_CAP].tolist(),
        "sample_rows": rows[:LIST_CAP].tolist(),
        "n_unique_rows": int(rows.unique().numel()),
        "sample_loss_mean": loss[rows].mean().item(),
        "pool_loss_mean": loss.mean().item(),
        "enc_norms": written[:LIST_CAP].tolist(),
        "enc_norm_mean": written.mean().item(),
        "enc_norm_min": written.min().item(),
        "enc_norm_max": written.max().item(),
        "reset_adam": do_reset,
        "adam_reset": reset_names,
    }


def _highest_loss_rows(loss: Tensor, n: int) -> Tensor:
    """``[n]`` row indices: the rows by descending loss (stable), repeated cyclically if n > N."""
    order = torch.sort(loss, descending=True, stable=True).indices
    return order[torch.arange(n, device=order.device) % order.numel()]


def _unit_or_noise(samples: Tensor, scale: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
    """The seed's Task 4.2 body per sample ``[n, d]``: ``x/||x|| * scale`` if ``||x|| > 1e-6``,
    else ``randn(d) * 0.01`` drawn from ``generator`` (one draw per fallback row, in order)."""
    norm = samples.norm(dim=-1, keepdim=True)
    ok = norm.squeeze(-1) > TINY_NORM
    out = samples / norm.clamp_min(TINY_NORM) * scale
    n_bad = int((~ok).sum())
    if n_bad:
        noise = torch.randn(n_bad, samples.shape[1], generator=generator, device=generator.device, dtype=samples.dtype)
        out[~ok] = noise.to(samples.device) * 0.01
    return out, n_bad


def _loss_squared_sample(x: Tensor, loss: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``[n]`` rows drawn with replacement, P(row) proportional to loss**2 (Bricken 2023). Rows
    with ||x|| <= 1e-6 are excluded (no direction to copy); if every eligible loss is 0 the draw is
    uniform over the eligible rows."""
    eligible = (x.norm(dim=-1) > TINY_NORM).to(torch.float64)
    if not bool(eligible.any()):
        raise ValueError("anthropic resampling: every row in the pool has ||x|| <= 1e-6; nothing to copy")
    weights = loss.pow(2) * eligible
    if not bool(weights.sum() > 0):
        weights = eligible
    rows = torch.multinomial(weights.to(generator.device), n, replacement=True, generator=generator)
    return rows.to(x.device)


def _reset_moments(adam_state: dict[str, dict[str, Tensor]], arm: int, idx: Tensor, names: list[str]) -> list[str]:
    """Zero m and v at ``[arm, idx]`` of each named parameter, in place (names checked by the
    caller). An empty adam_state (no step taken yet) has nothing to reset."""
    if not adam_state:
        return []
    for name in names:
        for key in ("m", "v"):
            t = adam_state[name][key]
            t[arm, idx.to(t.device)] = 0.0
    return list(names)
