"""Verdicts: each hypothesis of the seed's plan, and those the lab adds, judged from the runs.

Every verdict is computed from run directories, never written by hand: a function takes the
phase's runs for all seed replicates (``{seed: {arm: Run}}``) and applies a rule with explicit
thresholds, stated in its docstring. "In every replicate" means: the condition holds for each
seed separately, so the spread across seeds cannot hide a failure. A verdict is a dict::

    {"hypothesis": "H3 · ...", "id": "H3", "phase": "03_resampling",
     "verdict": "confirmed" | "refuted" | "inconclusive", "effect": "<one line with numbers>",
     "numbers": {...}, "evidence": "evidence-h3"}

``evidence`` is the id of an anchor the phase's notebook puts above the figure that shows it
(``evidence-h1``; per-architecture or per-arm ids share one: ``evidence-r1``, ``evidence-validation``).

Summary numbers avoid the last log row alone: training can end right after a resampling (the
seed resamples every 25% of the steps), so "final" (``tail``) is the median over the last 10% of
the logged rows (at least 3 rows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saelab.lab.wording import MEANING_TITLE, indication_note, md_text, meaning_of, what_it_means
from saelab.training.diagnose import autopsy

RunsBySeed = Mapping[int, Mapping[str, Any]]  # seed -> arm -> saelab.training.runs.Run (or an object with its fields)

L0_TARGET, L0_RANGE = 0.05, (0.04, 0.07)  # the seed's Validation Metrics table
DEAD_TARGET, DEAD_MAX = 0.10, 0.20
RATIO_TARGET, RATIO_RANGE = 0.1, (0.01, 0.5)
RECON_TARGET, RECON_MAX = 0.05, 0.10
DENSE_ABOVE = 0.5  # a latent firing on more than half of the held-out rows is dense noise


# ----- numbers from one run -------------------------------------------------------------------


def tail(run: Any, column: str, fraction: float = 0.1) -> float:
    """Median of ``column`` over the last ``fraction`` of the logged rows (at least 3)."""
    m = run.metrics
    if column not in m or len(m) == 0:
        return float("nan")
    n = max(3, int(math.ceil(fraction * len(m))))
    return float(np.nanmedian(m[column].to_numpy(np.float64)[-n:]))


def at_step(run: Any, column: str, step: int) -> float:
    """``column`` at the last log at or before ``step``."""
    m = run.metrics
    rows = m[m["step"] <= step]
    return float(rows[column].iloc[-1]) if len(rows) and column in m else float("nan")


def peak(run: Any, column: str = "dead_frac", after: int = 0) -> float:
    """Largest ``column`` over the logs at steps >= ``after``."""
    m = run.metrics
    if column not in m:
        return float("nan")
    vals = m.loc[m["step"] >= after, column].to_numpy(np.float64)
    return float(np.nanmax(vals)) if len(vals) else float("nan")


def events(run: Any, kind: str) -> list[dict]:
    return [e for e in run.events if e.get("kind") == kind]


def first_resample(run: Any) -> int | None:
    steps = [int(e["step"]) for e in events(run, "resample")]
    return min(steps) if steps else None


def collapses(run: Any) -> list[dict]:
    """The autopsy's collapse events (recomputed from the metrics when autopsy.json is absent)."""
    a = getattr(run, "autopsy", None)
    if not a:
        a = autopsy(run.metrics, run.events)
    return list(a.get("collapses", []))


def late_collapses(run: Any) -> list[dict]:
    """Collapses whose onset comes after the LR warmup and after the first 10% of training: the
    seed's "training stability" is judged on the run once it has settled (the autopsy already
    leaves out the initial sparsification; deaths while the LR and the code are still settling
    count as instability only through the dead-latent metrics)."""
    start = max(run.config.schedule.warmup_steps, run.config.steps // 10)
    return [c for c in collapses(run) if c["onset_step"] > start]


def before_resample(run: Any) -> int:
    """The last log step before the arm's first resampling (its final step if it never resamples)."""
    first, m = first_resample(run), run.metrics
    steps = m["step"].to_numpy()
    return int(steps[steps < first].max()) if first is not None and (steps < first).any() else int(steps[-1])


def pre(column: str) -> Callable[[Any], float]:
    """``column`` at the last log before the arm's first resampling (the window of the seed's evidence)."""
    return lambda r: at_step(r, column, before_resample(r))


def dense_share(run: Any, above: float = DENSE_ABOVE) -> float:
    """Fraction of the alive latents (fired on some held-out row) that fire on more than ``above``
    of the held-out rows at the last log (NaN when none is alive)."""
    lat = run.latents
    if "fire_counts" not in lat:
        return float("nan")
    freq = np.asarray(lat["fire_counts"][-1], dtype=np.float64) / float(np.asarray(lat["eval_rows"]))
    alive = freq > 0
    return float(np.mean(freq[alive] > above)) if alive.any() else float("nan")


# ----- replicates and formatting --------------------------------------------------------------


def per_seed(runs: RunsBySeed, arm: str, fn: Callable[[Any], float]) -> list[float]:
    """``fn(run)`` of ``arm`` for each seed that trained it."""
    return [float(fn(arms[arm])) for arms in runs.values() if arm in arms]


def stats(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation and count over replicates (NaN entries ignored)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)] if len(v) else v
    if len(v) == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def pm(values: list[float], pct: bool = True) -> str:
    """'34.1% ± 2.0' (mean ± sd over replicates); '34.1%' alone over one replicate, whose spread
    is not measured (a "± 0.0" would claim it is nil)."""
    s = stats(values)
    spread = s["n"] > 1
    if pct:
        return f"{100 * s['mean']:.1f}%" + (f" ± {100 * s['sd']:.1f}" if spread else "")
    return f"{s['mean']:.3g}" + (f" ± {s['sd']:.2g}" if spread else "")


def rule(all_confirm: list[bool], all_refute: list[bool]) -> str:
    """confirmed when the confirming condition holds in every replicate, refuted when the refuting
    one does, else inconclusive (also with no replicates)."""
    if all_confirm and all(all_confirm):
        return "confirmed"
    if all_refute and all(all_refute):
        return "refuted"
    return "inconclusive"


def verdict(hid: str, title: str, phase: str, word: str, effect: str, numbers: dict[str, Any]) -> dict[str, Any]:
    clean = {k: (float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in numbers.items()}
    return {"hypothesis": f"{hid} · {title}", "id": hid, "phase": phase, "verdict": word, "effect": effect,
            "numbers": clean, "evidence": f"evidence-{hid.lower().split('-')[0]}"}


def paired(runs: RunsBySeed, a: str, b: str, fn: Callable[[Any], float]) -> list[tuple[float, float]]:
    """(fn(a), fn(b)) per seed that trained both arms."""
    return [(float(fn(arms[a])), float(fn(arms[b]))) for arms in runs.values() if a in arms and b in arms]


# ----- writing --------------------------------------------------------------------------------


def write(out_dir: str | Path, verdicts: list[dict[str, Any]], validation: list[dict[str, Any]] | None = None) -> Path:
    """Write ``out_dir/verdicts.json`` (and ``validation.json`` when rows are given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = lambda o: json.loads(json.dumps(o, default=float).replace("NaN", "null"))  # noqa: E731
    (out / "verdicts.json").write_text(json.dumps(clean(verdicts), indent=2) + "\n")
    if validation is not None:
        (out / "validation.json").write_text(json.dumps(clean(validation), indent=2) + "\n")
    return out / "verdicts.json"


def table(verdicts: list[dict[str, Any]]) -> pd.DataFrame:
    """The verdicts as a DataFrame for display (hypothesis, verdict, effect)."""
    return pd.DataFrame([{k: v[k] for k in ("hypothesis", "verdict", "effect")} for v in verdicts])


def narrative(verdicts: list[dict[str, Any]]) -> str:
    """Markdown, one bullet per verdict, written from the verdicts themselves (never by hand): the
    verdict, what it means for this setup (good / bad news, ``saelab.lab.wording.what_it_means``), then
    the numbers (a "not applicable" reason, already in the sentence, once). Verdicts over fewer
    replicates than MIN_REPLICATES open with the note that they are indications, not evidence."""
    note = indication_note(verdicts)
    bullets = [f"- **{md_text(v['hypothesis'])}: {v['verdict']}{' (indication)' if v.get('indication') else ''}** "
               f"({MEANING_TITLE[meaning_of(v)]}). {md_text(what_it_means(v))}"
               + ("" if v["verdict"] == "not applicable" else f" {md_text(v['effect'])}") for v in verdicts]
    return "\n".join(([f"**{md_text(note)}**", ""] if note else []) + bullets)


# ----- evidence tables ------------------------------------------------------------------------


def replicate_frame(runs: RunsBySeed) -> pd.DataFrame:
    """One row per (arm, replicate): the replicate's random seed, final and peak dead fraction,
    final L0 fraction, final FVU and the number of autopsy collapses (for plots.replicate_spread)."""
    rows = [{"arm": arm, "replicate": seed, "final dead fraction": tail(r, "dead_frac"), "peak dead fraction": peak(r),
             "final L0 fraction": tail(r, "l0_frac"), "final FVU": tail(r, "fvu"), "collapses": float(len(collapses(r)))}
            for seed, arms in runs.items() for arm, r in arms.items()]
    return pd.DataFrame(rows)


L1_COLUMNS = {"alpha": "alpha", "l1_sum": "sum|z|", "l1_mean": "mean|z|", "l1_feature_mean": "feature mean|z|",
              "l1_penalty": "penalty as used", "rec_loss": "reconstruction", "l1_recon_ratio": "L1/recon", "l0_frac": "L0 fraction"}


def _sig(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Round every number to ``digits`` significant digits (for display)."""
    return df.map(lambda v: float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v)


def l1_breakdown(arms: Mapping[str, Any]) -> pd.DataFrame:
    """The seed's Task 1.1 numbers per arm, from the training batch at the last log before the
    first resampling and at the end: alpha, sum|z|, mean|z|, per-feature mean, the penalty as
    used, alpha x penalty, the reconstruction loss, their ratio and the L0 fraction. Indexed by
    (arm, when)."""
    rows = []
    for arm, r in arms.items():
        first, m = first_resample(r), r.metrics
        for when, frame in (("before resampling", m[m["step"] < first] if first else m), ("end", m)):
            if len(frame):
                last = frame.iloc[-1]
                row = {"arm": arm, "when": f"{when} (step {int(last['step'])})", "form": r.config.penalty.form}
                row |= {label: float(last[c]) for c, label in L1_COLUMNS.items() if c in frame}
                row["alpha x penalty"] = row.get("alpha", float("nan")) * row.get("penalty as used", float("nan"))
                rows.append(row)
    return _sig(pd.DataFrame(rows)).set_index(["arm", "when"]) if rows else pd.DataFrame()


def resample_table(arms: Mapping[str, Any]) -> pd.DataFrame:
    """Every resampling event per arm: step, strategy, detector, latents detected / truly dead,
    dead fraction and L0 right before and after, and the detectors' precision."""
    keys = ["step", "strategy", "detector", "n_detected", "n_truly_dead", "dead_frac_before", "dead_frac_after",
            "l0_before", "l0_after", "det_single_batch_precision", "det_window_precision", "det_tokens_precision"]
    rows = [{"arm": arm, **{k: e.get(k) for k in keys}} for arm, r in arms.items() for e in r.events if e.get("kind") == "resample"]
    return _sig(pd.DataFrame(rows, columns=["arm", *keys]), 3)
