"""Realistic fake run directories for tests of plots and reports.

A fake arm is written in the run-directory format of the contract (config.json, metrics.parquet,
events.jsonl, latents.safetensors, sae.safetensors, summary.json, autopsy.json, init.json) from a
small generative story, so the figures see the shapes real training produces: latents die in a
burst right after warmup in "collapsing" arms, resampling revives some of them, the single-batch
dead count overestimates the held-out truth, and normalization logs Task 5.1 norm ranges.

Nothing here trains anything; it only writes files, and ``fake_arms`` reads them back with
``saelab.training.runs.load_arms`` (so the fake is checked against the real loader).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from saelab.config import RunConfig
from saelab.training.runs import load_arms

DETECTORS = ("single_batch", "window", "tokens")

# Arms used by default: name -> (collapse?, resample interval or 0, reanimation coefficient)
DEFAULT_ARMS: dict[str, dict[str, Any]] = {
    "seed": {"collapse": True, "resample_every": 250, "reanim_coef": 0.0},
    "fixed": {"collapse": False, "resample_every": 250, "reanim_coef": 0.0},
    "reanimate": {"collapse": False, "resample_every": 0, "reanim_coef": 1e-3},
}


def write_fake_run(
    path: Path,
    *,
    seed: int = 0,
    d_sae: int = 96,
    d_in: int = 32,
    steps: int = 1000,
    log_interval: int = 25,
    warmup: int = 200,
    eval_rows: int = 2048,
    collapse: bool = False,
    resample_every: int = 0,
    reanim_coef: float = 0.0,
    lr: float = 3e-4,
) -> Path:
    """Write one fake arm directory at ``path`` and return it."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig().with_overrides(
        {"sae.d_sae": d_sae, "sae.d_in": d_in, "steps": steps, "log_interval": log_interval,
         "eval_rows": eval_rows, "schedule.warmup_steps": warmup, "optim.lr": lr, "seed": seed,
         "aux.reanimation_coef": reanim_coef, "resample.interval": max(resample_every, 1),
         "resample.strategy": "seed" if resample_every else "off",
         "normalize.mode": "constant_norm_rescale"}
    )
    (path / "config.json").write_text(cfg.to_json())

    log_steps = np.arange(0, steps + 1, log_interval, dtype=np.int64)  # row 0: before training
    n_logs = len(log_steps)
    # Each latent fires on a log-uniform fraction of held-out rows while alive.
    rate = 10 ** rng.uniform(-3.0, -0.5, size=d_sae)
    # Death step: a few die slowly; a collapsing arm loses ~70% just after warmup ends.
    death = np.where(rng.random(d_sae) < 0.15, rng.uniform(0, steps, d_sae), np.inf)
    collapse_step = warmup + 2 * log_interval if collapse else None
    if collapse:
        death = np.where(rng.random(d_sae) < 0.7, collapse_step + rng.uniform(0, log_interval, d_sae), death)
    if reanim_coef > 0:  # the reanimation loss keeps latents alive: half of the deaths never happen
        death = np.where(rng.random(d_sae) < 0.5, np.inf, death)
    events: list[dict[str, Any]] = [{"step": warmup, "kind": "warmup_end", "lr": lr}]
    revived = np.full(d_sae, np.inf)
    if resample_every:
        for s in range(resample_every, steps + 1, resample_every):
            if s < warmup:
                continue
            dead_now = np.flatnonzero((death <= s) & (revived > s))
            pick = dead_now[rng.random(len(dead_now)) < 0.5]
            revived[pick] = s
            events.append({"step": s, "kind": "resample", "n_resampled": int(len(pick)),
                           "detector": "single_batch", "strategy": "seed",
                           "n_detected": int(len(dead_now)), "n_truly_dead": int(len(dead_now)),
                           "dead_frac_before": float(len(dead_now) / d_sae),
                           "dead_frac_after": float((len(dead_now) - len(pick)) / d_sae)})
    for s in (0, steps // 2):  # Task 5.1 numbers, keys as saelab.training.normalize.Normalizer.stats
        lo, hi = float(rng.uniform(1e-4, 0.5)), float(rng.uniform(5.0, 40.0))
        events.append({"step": int(s), "kind": "norm_stats", "where": "held-out set",
                       "mode": "constant_norm_rescale", "n_rows": eval_rows,
                       "x_norm_min": lo, "x_norm_max": hi,
                       "coef_min": math.sqrt(d_in) / hi, "coef_max": math.sqrt(d_in) / lo,
                       "out_norm_min": math.sqrt(d_in) * 0.999, "out_norm_max": math.sqrt(d_in) * 1.001,
                       "n_tiny": 0, "n_nonfinite": 0})
    events.append({"step": steps, "kind": "checkpoint", "path": "sae.safetensors"})
    events.sort(key=lambda e: e["step"])
    with open(path / "events.jsonl", "w") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")

    alive = (log_steps[:, None] < death[None, :]) | (log_steps[:, None] >= revived[None, :])
    fire = rng.binomial(eval_rows, np.broadcast_to(rate, alive.shape)) * alive
    fire_counts = fire.astype(np.int32)
    # like saelab.training.train: no "eval_rows" tensor (readers take config.eval_rows)
    save_file({"steps": log_steps, "fire_counts": fire_counts}, str(path / "latents.safetensors"))

    dead_frac = (fire_counts == 0).mean(axis=1)
    l0 = fire_counts.sum(axis=1) / eval_rows
    lr_curve = lr * np.minimum(log_steps / max(warmup, 1), 1.0)  # the seed's linear warmup
    mse = 0.05 + 0.5 * np.exp(-log_steps / (steps / 4)) + 0.3 * dead_frac
    l1 = 0.003 * l0 * 0.8
    m = {
        "step": log_steps, "lr": lr_curve, "alpha": np.full(n_logs, 0.003), "mse": mse,
        "fvu": mse / 0.6, "explained_variance": 1 - mse / 0.6, "l0": l0, "l0_frac": l0 / d_sae,
        "dead_frac": dead_frac, "dead_frac_common": dead_frac,
        "dead_frac_batch": np.clip(dead_frac + rng.uniform(0.05, 0.2, n_logs), 0, 1),
        "dead_frac_window": np.clip(dead_frac + rng.uniform(0.0, 0.05, n_logs), 0, 1),
        "dead_frac_tokens": np.clip(dead_frac + rng.uniform(-0.02, 0.03, n_logs), 0, 1),
        "l1_penalty": l1, "l1_recon_ratio": l1 / mse, "reanim_coef": np.full(n_logs, reanim_coef),
        "l1_sum": l1 * 128 * d_sae, "l1_mean": l1, "l1_feature_mean": l1 * d_sae / 128,
        "mse_orig": mse * 3.0, "fvu_orig": mse / 0.6, "mmcs": np.linspace(0.2, 0.8, n_logs),
        "frac_recovered": np.linspace(0.05, 0.6, n_logs),
    }
    m["loss"] = m["mse"] + m["l1_penalty"]
    for q, lo, hi in (("x_norm", 0.5, 30.0), ("coef", math.sqrt(d_in) / 30, math.sqrt(d_in) / 0.5),
                      ("out_norm", math.sqrt(d_in), math.sqrt(d_in))):  # per logged training batch
        m[f"norm_{q}_min"], m[f"norm_{q}_max"] = np.full(n_logs, lo), np.full(n_logs, hi)
    for d in DETECTORS:
        m[f"det_{d}_precision"] = rng.uniform(0.3 if d == "single_batch" else 0.8, 1.0, n_logs)
        m[f"det_{d}_recall"] = rng.uniform(0.7, 1.0, n_logs)
    metrics = pd.DataFrame(m)
    metrics.to_parquet(path / "metrics.parquet", index=False)

    summary = {k: float(v) for k, v in metrics.iloc[-1].items()}
    summary.update(arm=path.name, steps=int(steps), wall_seconds=12.5, steps_per_second=steps / 12.5)
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    # the shape saelab.training.diagnose.autopsy writes
    autopsy: dict[str, Any] = {"params": {"dead_rise": 0.2}, "collapses": [], "table": [],
                               "final": {"step": int(steps), "dead_frac": float(dead_frac[-1]), "l0": float(l0[-1])}}
    if collapse:
        i = int(np.searchsorted(log_steps, collapse_step))
        before, after = max(i - 1, 0), min(i + 1, n_logs - 1)
        c = {"start_step": int(log_steps[before]), "onset_step": int(log_steps[i]), "end_step": int(log_steps[after]),
             "peak_step": int(log_steps[after]), "trigger": "dead_rise+l0_drop",
             "dead_before": float(dead_frac[before]), "dead_after": float(dead_frac[after]),
             "l0_before": float(l0[before]), "l0_after": float(l0[after]),
             "events": [{"kind": "warmup_end", "step": warmup, "position": "before",
                         "distance": int(log_steps[i]) - warmup, "details": {"lr": lr}}],
             "coincides_with": "warmup_end", "coincides_step": warmup, "coincides_distance": int(log_steps[i]) - warmup,
             "coincides_details": {"lr": lr}, "tied_with": []}
        autopsy["collapses"].append(c)
        autopsy["table"].append({k: c[k] for k in ("start_step", "end_step", "dead_before", "dead_after", "coincides_with")})
    autopsy["n_collapses"] = len(autopsy["collapses"])
    (path / "autopsy.json").write_text(json.dumps(autopsy, indent=2))
    (path / "init.json").write_text(json.dumps({"encoder_norm_mean": 1.0, "decoder_norm_mean": 1.0}))
    w = {"W_enc": rng.normal(size=(d_sae, d_in)).astype(np.float32),
         "b_enc": np.zeros(d_sae, np.float32),
         "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
         "b_dec": np.zeros(d_in, np.float32)}
    save_file(w, str(path / "sae.safetensors"))
    return path


def write_fake_arms(out: Path, arms: dict[str, dict[str, Any]] | None = None, factor: str = "recipe",
                    **common: Any) -> Path:
    """Write several arms under ``out`` plus ``arms.json``; ``common`` goes to every arm."""
    arms = DEFAULT_ARMS if arms is None else arms
    for i, (name, kw) in enumerate(arms.items()):
        write_fake_run(out / name, **{"seed": i, **common, **kw})
    meta = {"arms": list(arms), "factor": factor, "values": {n: str(kw) for n, kw in arms.items()}}
    (out / "arms.json").write_text(json.dumps(meta, indent=2))
    return out


def fake_arms(out: Path, arms: dict[str, dict[str, Any]] | None = None, **common: Any) -> dict[str, Any]:
    """Write fake arms under ``out`` and load them back."""
    return load_arms(write_fake_arms(out, arms, **common))


# ----- phase notebooks for tests of the batch (the real phases live in notebooks/) -------------

TEMPLATE = Path(__file__).resolve().parents[1] / "notebooks" / "_template.ipynb"
FIGURES_CODE = """\
import sys
from pathlib import Path

import pandas as pd
import plotly.io as pio
from IPython.display import display

sys.path.insert(0, tests_dir)
from fake_runs import fake_arms
from saelab.report import plots, tables
pio.renderers.default = "plotly_mimetype+notebook"
runs = fake_arms(Path(out_dir) / "arms")
rows = [{"arm": "seed", "metric": "dead (final)", "value": 0.6, "target": "<10%", "range": "<20%", "pass": False}]
spread = pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "dead_frac": [0.1, 0.2, 0.5, 0.7]})
for fig in [plots.training_curves(runs), plots.firing_histogram(runs), plots.death_heatmap(runs["seed"]),
            plots.detector_pr(runs), plots.lr_schedules(runs), plots.dead_vs_l0(runs), plots.norm_ranges(runs),
            plots.replicate_spread(spread)]:
    fig.show()
display(tables.autopsy_table(runs), tables.validation_table(rows))
"""
N_FIGURES_IN_FIGURES_NOTEBOOK = 8  # plotly figures; the autopsy and validation tables are HTML tables
# issue 14: a user string with a backtick and markup, as a data source path, must never run
HOSTILE = "file:/x/`<img src=w onerror=alert(4)>`.npy"
HOSTILE_CODE = """\
import json
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import Markdown, display

from saelab.lab.wording import md_code
from saelab.report import plots, tables
from saelab.lab import verdicts
pio.renderers.default = "plotly_mimetype+notebook"
display(Markdown(f"data {md_code(source)}"))
print(source)
go.Figure(go.Bar(x=[source], y=[1], name=source), layout={"title": source}).show()
display(tables.Table(["arm"], [[source]]))
found = [{"hypothesis": source, "id": "H1", "phase": "03_hostile", "verdict": "confirmed", "kind": "cause",
          "effect": source, "numbers": {source: 1.0}, "evidence": "x"}]
display(Markdown(verdicts.narrative(found)))
Path(out_dir).mkdir(parents=True, exist_ok=True)
(Path(out_dir) / "verdicts.json").write_text(json.dumps(found))
"""


def write_test_notebooks(nb_dir: Path, broken: bool = True, figures: bool = False, hostile: bool = False) -> Path:
    """Phase notebooks for batch tests in ``nb_dir``: ``00_template`` (the template as is),
    ``01_broken`` (the template with a cell that raises before the verdict), ``02_figures``
    (every saelab.report.plots builder on fake runs; takes a ``tests_dir`` parameter) and ``03_hostile``
    (its ``source`` parameter in Markdown, stdout, a figure, a table and verdicts.json)."""
    import nbformat

    nb_dir.mkdir(parents=True, exist_ok=True)
    template = nbformat.read(str(TEMPLATE), as_version=4)
    nbformat.write(template, str(nb_dir / "00_template.ipynb"))
    if broken:
        nb = nbformat.read(str(TEMPLATE), as_version=4)
        verdict_at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Verdict"))
        nb.cells.insert(verdict_at, nbformat.v4.new_code_cell('raise RuntimeError("deliberate failure for the test")'))
        nbformat.write(nb, str(nb_dir / "01_broken.ipynb"))
    if figures:
        nb = nbformat.read(str(TEMPLATE), as_version=4)
        params = nbformat.v4.new_code_cell(f'profile = "smoke"\nout_dir = "reports/_figures"\ntests_dir = {str(Path(__file__).parent)!r}')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell("# Every figure builder"), params,
                    nbformat.v4.new_code_cell(FIGURES_CODE)]
        nbformat.write(nb, str(nb_dir / "02_figures.ipynb"))
    if hostile:
        nb = nbformat.read(str(TEMPLATE), as_version=4)
        params = nbformat.v4.new_code_cell('profile = "smoke"\nout_dir = "reports/_hostile"\nsource = "synthetic"')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell("# A hostile source path"), params, nbformat.v4.new_code_cell(HOSTILE_CODE)]
        nbformat.write(nb, str(nb_dir / "03_hostile.ipynb"))
    return nb_dir
