"""A data check before any training: what the activations alone say about dead latents.

The largest single cause of early death is visible in the data: outlier severity
gamma = ||mu|| / ||sigma|| (the norm of the mean row over the norm of the per-dimension standard
deviations) predicts the fraction of latents dead at initialization (Simon, Adams & Zou 2026, "On
the Relationship Between Activation Outliers and Feature Death in Sparse Autoencoders": Spearman
0.89 for TopK and 0.82 for ReLU across 454 model-layers; mean-centering removes that death).

Why gamma: a randomly initialized encoder row w sees a pre-activation w.x = w.mu + w.(x - mu); over
random w the ratio of the first term to the spread of the second is N(0, gamma^2). A ReLU latent
with zero bias is dead on N rows when w.mu is below the largest of N noise draws, about
-sqrt(2 ln N) spreads; so the predicted dead fraction is Phi(-sqrt(2 ln N) / gamma). A TopK latent
is dead when it never enters a row's top k; that is simulated under the same Gaussian model.
``check`` puts the prediction beside the dead fraction measured on the base's own initialized SAE.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from saelab.config import RunConfig
from saelab.training import metrics, stack

CHECK_ROWS = 100_000  # rows read (streamed in batches, float64 sums: memory stays at one batch)
INIT_ROWS = 4096  # held-out rows the initialized SAE is measured on
# a row norm above sqrt(float32 max) has a squared norm of inf in float32: every normalization and
# loss of a float32 SAE then sees inf or NaN, whatever the data's shape
FLOAT32_NORM_LIMIT = math.sqrt(float(np.finfo(np.float32).max))
# the covariance spectrum (effective rank): rows per dimension, the least rows, and the widest d_in
# (its d_in x d_in float64 sum: 512 MiB at 8,192)
SPECTRUM_ROWS_PER_DIM = 4
MIN_SPECTRUM_ROWS = 4096
SPECTRUM_MAX_D_IN = 8192
VARIANCE_SHARE = 0.99  # the share of the variance the effective subspace holds (Wang et al. 2025)
# 99% of the variance in at most this share of the directions: low-rank (Wang et al. 2025 measure
# about 60% for attention outputs, where 87% of the latents died, and about 90% for residual streams)
LOW_RANK_FRACTION = 0.75


def moments(source: Any, rows: int, batch: int = 4096) -> dict[str, Any]:
    """Stream ``rows`` training rows of ``source`` (at most one pass over a file's training rows):
    per-dimension mean and std (float64 sums), the row norms, the count of non-finite rows, and the
    covariance's eigenvalues from the first ``spectrum_rows(d_in)`` finite rows (None above
    SPECTRUM_MAX_D_IN: a d_in x d_in float64 sum would not fit)."""
    rows = min(rows, getattr(source, "train_rows", rows))
    d = source.d_in
    s1, s2 = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    want = spectrum_rows(d) if d <= SPECTRUM_MAX_D_IN else 0
    outer, o1, seen = (torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 0) if want else (None, None, 0)
    norms, n, bad, zero, step = [], 0, 0, 0, 0
    while n < rows:
        x = source.batch(step, batch)[: rows - n].to(torch.float64)  # whole batches: step * batch is where each starts
        step += 1
        ok = torch.isfinite(x).all(dim=-1)
        bad += int((~ok).sum())
        x = x[ok]
        zero += int((x == 0).all(dim=-1).sum())
        s1 += x.sum(0)
        s2 += x.square().sum(0)
        if seen < want:  # the covariance's rows: the first ``want`` finite ones
            head = x[: want - seen]
            outer += head.T @ head
            o1 += head.sum(0)
            seen += head.shape[0]
        norms.append(x.norm(dim=-1).to(torch.float32))
        n += x.shape[0] + int((~ok).sum())
    mean = s1 / max(n - bad, 1)
    var = (s2 / max(n - bad, 1) - mean.square()).clamp_min(0)
    eig = None
    if seen > 1:
        mu = o1 / seen
        eig = torch.linalg.eigvalsh(outer / seen - torch.outer(mu, mu)).clamp_min(0).flip(0)
    return {"rows": n, "nonfinite": bad, "zero": zero, "mean": mean, "std": var.sqrt(), "norms": torch.cat(norms),
            "eigenvalues": eig, "spectrum_rows": seen}


def spectrum_rows(d_in: int) -> int:
    """Rows the covariance spectrum is estimated from: SPECTRUM_ROWS_PER_DIM per dimension, at least
    MIN_SPECTRUM_ROWS (N rows span at most N directions, so fewer would make any data look low-rank)."""
    return max(MIN_SPECTRUM_ROWS, SPECTRUM_ROWS_PER_DIM * d_in)


def rank_summary(eig: torch.Tensor | None, rows: int, d_in: int) -> dict[str, Any]:
    """How many directions the rows use (Wang et al. 2025, arXiv 2508.16929: attention outputs put
    99% of their variance in about 60% of the directions, residual streams in about 90%):
    components holding 99% of the variance (count and share of d_in), participation ratio,
    entropy rank, and the variance share of the top component and of the top 10% of components.
    All None when no spectrum was measured; ``spectrum_rows`` says from how many rows."""
    if eig is None or float(eig.sum()) <= 0:
        return {"rank99": None, "rank99_frac": None, "participation_ratio": None, "entropy_rank": None,
                "top1_variance_share": None, "top10pct_variance_share": None, "spectrum_rows": rows}
    total = float(eig.sum())
    r99 = metrics.components_for(eig, VARIANCE_SHARE)
    return {"rank99": r99, "rank99_frac": r99 / d_in, "participation_ratio": metrics.participation_ratio(eig),
            "entropy_rank": metrics.entropy_rank(eig), "top1_variance_share": float(eig[0]) / total,
            "top10pct_variance_share": float(eig[: max(1, d_in // 10)].sum()) / total, "spectrum_rows": rows}


def low_rank(summary: dict[str, Any]) -> bool:
    """The rows sit in a subspace: 99% of their variance in at most LOW_RANK_FRACTION of d_in."""
    return summary.get("rank99_frac") is not None and summary["rank99_frac"] <= LOW_RANK_FRACTION


def gamma(mean: torch.Tensor, std: torch.Tensor) -> float:
    """Outlier severity ||mu|| / ||sigma|| (Simon, Adams & Zou 2026)."""
    return float(mean.norm() / std.norm().clamp_min(1e-30))


def predicted_dead_at_init(g: float, cfg: RunConfig, rows: int = INIT_ROWS, seed: int = 0) -> float:
    """Dead-at-init fraction the Gaussian model of outlier severity ``g`` predicts for the base's
    architecture over ``rows`` rows (module docstring). b_dec subtracted before the encoder
    centres the data: the model then sees gamma 0."""
    if cfg.sae.apply_b_dec_to_input and cfg.sae.b_dec_init != "zeros":
        g = 0.0
    arch = cfg.sae.architecture
    if arch in ("relu", "jumprelu"):
        if g <= 0:
            return 0.0
        return 0.5 * math.erfc(math.sqrt(2 * math.log(rows)) / g / math.sqrt(2))
    # TopK family: latent offsets g * u_i, row noise e_ri ~ N(0, 1); dead = never in a row's top k
    gen = torch.Generator().manual_seed(seed)
    S, k = cfg.sae.d_sae, cfg.sae.k
    u = torch.randn(S, generator=gen) * g
    seen = torch.zeros(S, dtype=torch.bool)
    for chunk in range(0, rows, 512):
        pre = u + torch.randn(min(512, rows - chunk), S, generator=gen)
        seen[pre.topk(k, dim=-1).indices.flatten()] = True
    return float((~seen).double().mean())


def measured_dead_at_init(cfg: RunConfig, source: Any, rows: int = INIT_ROWS) -> float:
    """Dead fraction of the base's own SAE before any update, on ``rows`` held-out rows (with the
    base's normalization and b_dec init, as training would start)."""
    groups = stack.build_groups([cfg], source, torch.device("cpu"))
    ev = stack.evaluate(groups[0], source.eval_set(rows).to(torch.float32))
    return float((ev["fire"][0] == 0).double().mean())


def check(cfg: RunConfig, source: Any, rows: int = CHECK_ROWS, top: int = 5) -> dict[str, Any]:
    """Everything the data says before training, as one JSON-able dict: rows, d_in, gamma, the
    norm distribution (median, max / median, rows above 10x and 100x the median), the dimensions
    with the largest |mean| / std, the effective rank (``rank_summary``), and the predicted and
    measured dead-at-init for ``cfg``."""
    m = moments(source, rows)
    mean, std, norms = m["mean"], m["std"], m["norms"]
    med = float(norms.median()) if len(norms) else float("nan")
    ratio = (mean.abs() / std.clamp_min(1e-30)).numpy()
    order = np.argsort(-ratio)[:top]
    g = gamma(mean, std)
    init_rows = min(INIT_ROWS, cfg.eval_rows, getattr(source, "eval_rows", INIT_ROWS))  # the held-out set is eval_rows long
    warnings = []
    top = float(norms.max()) if len(norms) else 0.0
    if top > FLOAT32_NORM_LIMIT:
        warnings.append(f"row norms reach {top:.3g}: their squares overflow float32 (norms above {FLOAT32_NORM_LIMIT:.3g}), "
                        f"so a float32 SAE sees inf or NaN and the dead-at-init above means nothing; rescale the rows "
                        f"(e.g. divide by {med:.3g}, the median norm)")
    if m["zero"]:
        warnings.append(f"{m['zero']} of the rows read are all-zero (padding?): a per-row normalization divides by their "
                        f"norm of 0; drop them or use a clamped normalization")
    try:
        measured = measured_dead_at_init(cfg, source, init_rows)
    except ValueError as e:  # the base cannot even start on these rows: the data is still described
        measured = None
        warnings.append(f"dead at init not measured: {e}")
    return {
        "source": cfg.data.source, "rows": m["rows"], "d_in": source.d_in, "nonfinite_rows": m["nonfinite"],
        "zero_rows": m["zero"], "warnings": warnings,
        "gamma": g, "mean_norm": float(mean.norm()), "std_norm": float(std.norm()),
        "norm_median": med, "norm_max_over_median": float(norms.max()) / med if med > 0 else float("inf"),
        "rows_above_10x_median": int((norms > 10 * med).sum()), "rows_above_100x_median": int((norms > 100 * med).sum()),
        "top_mean_over_std_dims": [{"dim": int(i), "mean": float(mean[i]), "std": float(std[i]), "ratio": float(ratio[i])}
                                   for i in order],
        **rank_summary(m["eigenvalues"], m["spectrum_rows"], source.d_in),
        "architecture": cfg.sae.architecture, "d_sae": cfg.sae.d_sae,
        "dead_at_init_rows": init_rows,
        "dead_at_init_predicted": predicted_dead_at_init(g, cfg, init_rows, cfg.seed),
        "dead_at_init_measured": measured,
    }


def _pct(v: float | None) -> str:
    return "not measured" if v is None else f"{100 * v:.1f}%"


def _rank_text(r: dict[str, Any]) -> str:
    if r.get("rank99") is None:
        return f"not measured (d_in above {SPECTRUM_MAX_D_IN:,}, or no variance)"
    low = " (low-rank: latents started outside it can stay dead; sae.init_subspace, H24 in phase 04)" if low_rank(r) else ""
    return (f"99% of the variance in {r['rank99']} of {r['d_in']} directions ({100 * r['rank99_frac']:.0f}%){low}; "
            f"participation ratio {r['participation_ratio']:.3g}, entropy rank {r['entropy_rank']:.3g}; the top component "
            f"holds {100 * r['top1_variance_share']:.1f}% of the variance, the top 10% of components "
            f"{100 * r['top10pct_variance_share']:.1f}% ({r['spectrum_rows']:,} rows)")


def format_check(r: dict[str, Any]) -> str:
    """The check as a few lines for the terminal."""
    dims = ", ".join(f"{d['dim']} ({d['ratio']:.2g})" for d in r["top_mean_over_std_dims"])
    return "\n".join(
        [
            f"data check: {r['source']}: {r['rows']} rows x d_in {r['d_in']}"
            + (f", {r['nonfinite_rows']} non-finite" if r["nonfinite_rows"] else ""),
            f"  outlier severity gamma = ||mean|| / ||std|| = {r['gamma']:.3g} ({r['mean_norm']:.3g} / {r['std_norm']:.3g})",
            f"  row norms: median {r['norm_median']:.3g}, max {r['norm_max_over_median']:.3g}x the median; "
            f"{r['rows_above_10x_median']} rows above 10x, {r['rows_above_100x_median']} above 100x",
            f"  dimensions with the largest |mean|/std: {dims}",
            f"  effective rank: {_rank_text(r)}",
            f"  dead at init ({r['architecture']}, {r['d_sae']} latents, {r['dead_at_init_rows']} rows): predicted "
            f"{_pct(r['dead_at_init_predicted'])}, measured {_pct(r['dead_at_init_measured'])}",
            *(f"  warning: {w}" for w in r.get("warnings", [])),
        ]
    )


def markdown(r: dict[str, Any]) -> str:
    """The check as a Markdown table for a report page, with one sentence of what it means."""
    pred, meas = r["dead_at_init_predicted"], r["dead_at_init_measured"]
    severe = r["gamma"] >= 2 or (meas or 0) >= 0.05
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| rows read x d_in | {r['rows']:,} x {r['d_in']}"
        + (f" ({r['nonfinite_rows']} non-finite)" if r["nonfinite_rows"] else "")
        + " |",
        f"| outlier severity gamma = ‖mean‖ / ‖std‖ | {r['gamma']:.3g} |",
        f"| row norm: median, max / median | {r['norm_median']:.3g}, {r['norm_max_over_median']:.3g}x |",
        f"| rows above 10x / 100x the median norm | {r['rows_above_10x_median']:,} / {r['rows_above_100x_median']:,} |",
        "| dimensions with the largest \\|mean\\| / std | "
        + ", ".join(f"{d['dim']} ({d['ratio']:.2g})" for d in r["top_mean_over_std_dims"])
        + " |",
        f"| effective rank (covariance spectrum) | {_rank_text(r).replace('|', '/')} |",
        f"| dead at init, predicted from gamma ({r['architecture']}, {r['d_sae']:,} latents) | {100 * pred:.1f}% |",
        f"| dead at init, measured on the initialized SAE ({r['dead_at_init_rows']:,} rows) | {_pct(meas)} |",
        "",
        (
            "The data alone predicts latents dead before any update: its mean offset is large next to its spread "
            "(centering the input, H8 in phase 04, is the arm that tests it)."
            if severe
            else "The data predicts few latents dead at initialization: deaths here come from training, not from the data's offset."
        ),
    ]
    if r["rows_above_100x_median"]:
        lines.append(f" {r['rows_above_100x_median']:,} rows have a norm above 100x the median (attention sinks or BOS "
                     "tokens are typical): such rows can dominate the loss and kill latents early.")
    return "\n".join(lines)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties share their mean rank): how alike the
    predicted and the measured dead-at-init order a collection of data sets."""
    import pandas as pd

    ra, rb = pd.Series(a, dtype=float).rank().to_numpy(), pd.Series(b, dtype=float).rank().to_numpy()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])

