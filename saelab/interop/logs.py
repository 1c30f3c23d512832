"""A training log from anywhere (``saelab autopsy LOG``): CSV, JSONL or parquet, W&B CSV exports of
SAELens and sparsify runs included, mapped to saelab's metric roles and run through the same
collapse detection as saelab's own runs (``diagnose.autopsy``).

Events found near a collapse are reported as *coinciding* with it, never as its cause: a log
holds no counterfactual (no run without the event to compare with); saelab's phases are how a
cause is tested.

Column names each library logs (read from their source):
  SAELens (sae_lens/training/sae_trainer.py): metrics/l0, sparsity/dead_features (a count of
  latents), details/current_learning_rate, losses/overall_loss, losses/mse_loss,
  metrics/explained_variance; W&B's own step column is _step (its CSV export: Step).
  sparsify (sparsify/trainer.py): dead_pct/<hookpoint> (a fraction), fvu/<hookpoint>,
  auxk/<hookpoint>, k (the TopK k: its L0); wandb.log(step=step).
A W&B chart export names columns "<run> - <metric>" with "__MIN"/"__MAX" companions; the prefix
is dropped and the companions ignored.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saelab.training import diagnose

ROLES = ("step", "l0", "dead_frac", "dead_count", "lr", "loss", "mse", "fvu", "explained_variance")
# role -> known column names (fnmatch patterns, matched case-insensitively, first match wins)
KNOWN: dict[str, tuple[str, ...]] = {
    "step": ("step", "_step", "global_step", "train/step", "trainer/global_step", "iteration"),
    "l0": ("l0", "metrics/l0", "sparsity/l0", "train/l0", "eval/l0", "k"),
    "dead_frac": ("dead_frac", "dead_fraction", "frac_dead", "dead_pct/*", "dead_pct", "sparsity/dead_frac"),
    "dead_count": ("sparsity/dead_features", "dead_features", "n_dead", "num_dead", "dead_latents"),
    "lr": ("lr", "learning_rate", "details/current_learning_rate", "train/lr", "lr-adam"),
    "loss": ("loss", "losses/overall_loss", "train/loss", "overall_loss"),
    "mse": ("mse", "losses/mse_loss", "mse_loss", "train/mse"),
    "fvu": ("fvu", "fvu/*", "metrics/fvu"),
    "explained_variance": ("metrics/explained_variance", "explained_variance"),
}
LR_JUMP = 0.2  # an LR change of more than 20% between consecutive logs after warmup is an event
NOTE = ("Events are reported as coinciding with a collapse, not as its cause: a training log holds no "
        "counterfactual (no run without the event to compare with). saelab's phases test causes by intervention.")


USED = ("step", "l0", "dead_frac", "dead_count", "lr")  # the roles the autopsy reads (the others are only named)


def _shown_names(columns: list, p: Path) -> dict[Any, str]:
    """Original column -> the name used here: W&B's "<run> - " prefix dropped, __MIN/__MAX left out."""
    kept = [c for c in columns if not re.search(r"__(MIN|MAX)$", str(c))]
    prefixes = {str(c).split(" - ", 1)[0] for c in kept if " - " in str(c)}
    if len(prefixes) > 1:
        raise ValueError(f"log {p}: a W&B export of several runs {sorted(prefixes)}; export one run")
    return {c: str(c).split(" - ", 1)[1] if " - " in str(c) else str(c) for c in kept}


def read_log(path: str | Path, only: Callable[[list[str]], list[str]] | None = None) -> pd.DataFrame:
    """The log as a table; W&B export prefixes dropped and __MIN/__MAX companions removed.
    ``only(names)`` picks the columns to load: a CSV or parquet log is then read in those columns
    alone (a log of millions of rows and a dozen metrics stays a few columns in memory)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"log {p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            names = _shown_names(list(pd.read_csv(p, nrows=0).columns), p)
            pick = None if only is None else [c for c, n in names.items() if n in set(only(list(names.values())))]
            df = pd.read_csv(p, usecols=pick if pick is not None else list(names))
        elif suffix in (".jsonl", ".ndjson", ".json"):
            df = pd.read_json(p, lines=True)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = _shown_names(list(pq.read_schema(p).names), p)
            pick = None if only is None else [c for c, n in names.items() if n in set(only(list(names.values())))]
            df = pd.read_parquet(p, columns=pick if pick is not None else list(names))
        else:
            raise ValueError(f"log {p}: unknown format {suffix or '(no suffix)'!r}; use .csv, .jsonl or .parquet")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        if str(e).startswith(f"log {p}"):
            raise
        raise ValueError(f"log {p}: could not be read as {suffix[1:]} ({str(e).splitlines()[0]})") from None
    names = _shown_names(list(df.columns), p)
    return df[list(names)].rename(columns=names)


def map_columns(df: pd.DataFrame, overrides: dict[str, str], label: str) -> dict[str, str]:
    """role -> column: the user's ``--column name=role`` first, then the known names."""
    cols = [str(c) for c in df.columns]
    out: dict[str, str] = {}
    for name, role in overrides.items():
        if role not in ROLES:
            raise ValueError(f"--column {name}={role}: unknown role; choose one of {list(ROLES)}")
        if name not in cols:
            raise ValueError(f"--column {name}={role}: {label} has no column {name!r}; it has {cols}")
        out[role] = name
    taken = set(out.values())
    for role, patterns in KNOWN.items():
        if role in out:
            continue
        for pat in patterns:
            hits = [c for c in cols if c not in taken and fnmatch.fnmatch(c.lower(), pat)]
            if len(hits) > 1:
                raise ValueError(f"{label}: several columns could be {role}: {hits}; pick one with --column NAME={role}")
            if hits:
                out[role] = hits[0]
                taken.add(hits[0])
                break
    return out


def metrics_table(df: pd.DataFrame, roles: dict[str, str], d_sae: int | None, label: str) -> pd.DataFrame:
    """step, dead_frac, l0 (and lr, loss, mse, fvu when present), one row per step, sorted. The
    columns are taken out of ``df`` as they are converted (``df`` is left without them), so a log of
    millions of rows is never held twice."""
    cols = [str(c) for c in df.columns]
    if "step" not in roles:
        raise ValueError(f"{label} has no step column (known: {list(KNOWN['step'])}); it has {cols}; "
                         f"map one with --column NAME=step")
    if not any(r in roles for r in ("l0", "dead_frac", "dead_count")):
        raise ValueError(f"{label} has no L0 or dead-latent column; it has {cols}; map one with --column NAME=l0 "
                         f"or --column NAME=dead_frac")
    taken: dict[str, np.ndarray] = {}
    for role in ROLES:
        if role in roles and roles[role] in df:  # a column not loaded (read_log's ``only``) is only named
            col = df.pop(roles[role])
            kind = np.int64 if role == "step" and pd.api.types.is_integer_dtype(col) else np.float64
            taken[role] = pd.to_numeric(col, errors="coerce").to_numpy(kind)
            del col
    n = len(taken["step"])
    if "dead_frac" not in taken and "dead_count" in taken:
        if not d_sae:
            raise ValueError(f"{label}: column {roles['dead_count']!r} counts dead latents; give --d-sae N (the number "
                             f"of latents) to turn it into a fraction")
        taken["dead_frac"] = taken.pop("dead_count") / d_sae  # the count is not needed again
    if "dead_frac" in taken and np.nanmax(taken["dead_frac"], initial=0) > 1:
        raise ValueError(f"{label}: column {roles['dead_frac']!r} goes above 1; it is a count, not a fraction: map it "
                         f"with --column {roles['dead_frac']}=dead_count and give --d-sae N")
    for role in ("dead_frac", "l0"):
        if role not in taken:
            taken[role] = np.full(n, np.nan)
    step = taken["step"]
    keep = (~np.isnan(taken["dead_frac"]) | ~np.isnan(taken["l0"]))
    if step.dtype.kind == "f":
        keep &= ~np.isnan(step)
    if not keep.all():  # rows without a step, or with neither value: the only copy, and only when needed
        taken = {k: v[keep] for k, v in taken.items()}
        step = taken["step"]
    if not len(step):
        raise ValueError(f"{label}: no row has a step and an L0 or dead value")
    if (step < 0).any():
        raise ValueError(f"{label}: column {roles['step']!r} has negative steps (e.g. {step[step < 0][0]:g}); a "
                         f"training step counts from 0: map another column with --column NAME=step")
    if (step > 2**53).any():
        raise ValueError(f"{label}: column {roles['step']!r} has step {step.max():g}, beyond 2^53: not a step count; "
                         f"map another column with --column NAME=step")
    taken["step"] = step.astype(np.int64, copy=False)
    out = pd.DataFrame(taken, copy=False)
    if (np.diff(taken["step"]) > 0).all():  # already one row per step, in order: no regrouping copy
        return out
    return out.groupby("step", as_index=False).last().sort_values("step").reset_index(drop=True)


def parse_event(text: str) -> dict[str, Any]:
    """``STEP:name`` -> {"step": STEP, "kind": name, "source": "user"}."""
    step, sep, name = text.partition(":")
    if not sep or not name.strip() or not step.strip().lstrip("-").isdigit():
        raise ValueError(f"--event {text!r} must look like STEP:name, e.g. 25000:resample")
    return {"step": int(step), "kind": name.strip(), "source": "user"}


def lr_events(m: pd.DataFrame) -> list[dict[str, Any]]:
    """From the lr column: the end of a warmup (the first log at the peak after a rise) and every
    change of more than LR_JUMP between consecutive logs after it."""
    if "lr" not in m or m["lr"].notna().sum() < 2:
        return []
    s = m[["step", "lr"]].dropna()
    steps, lr = s["step"].to_numpy(), s["lr"].to_numpy(dtype=np.float64)
    peak = int(np.argmax(lr))
    events = []
    if peak > 0 and lr[0] < lr[peak]:
        events.append({"step": int(steps[peak]), "kind": "warmup_end", "lr_before": float(lr[peak - 1]),
                       "lr_after": float(lr[peak]), "source": "lr column"})
    for i in range(peak + 1, len(lr)):
        a, b = lr[i - 1], lr[i]
        if a > 0 and abs(b / a - 1) > LR_JUMP:
            events.append({"step": int(steps[i]), "kind": "lr_change", "lr_before": float(a), "lr_after": float(b),
                           "source": "lr column"})
    return events


def coinciding(collapse: dict[str, Any], events: list[dict[str, Any]], lookback: int) -> list[dict[str, Any]]:
    """Events from ``start_step - lookback`` to ``end_step``, with their position relative to the
    collapse (before / at_onset / during, as diagnose.attribute places them)."""
    out = []
    for e in sorted(events, key=lambda e: e["step"]):
        if collapse["start_step"] - lookback <= e["step"] <= collapse["end_step"]:
            pos = ("before" if e["step"] <= collapse["start_step"] else
                   "at_onset" if e["step"] <= collapse["onset_step"] else "during")
            out.append({**e, "position": pos, "distance": int(collapse["onset_step"] - e["step"])})
    return out


def _lr_at(m: pd.DataFrame, step: int) -> float | None:
    if "lr" not in m:
        return None
    s = m[m["step"] <= step]["lr"].dropna()
    return float(s.iloc[-1]) if len(s) else None


def autopsy_log(path: str | Path, columns: dict[str, str] | None = None, events: list[str] | None = None,
                d_sae: int | None = None, **kw: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the autopsy.json record, the metrics table) of a log: column mapping, collapses
    (diagnose.autopsy's detection) each with its coinciding events and the LR before it, and a
    one-paragraph verdict."""
    label = f"log {Path(path)}"
    roles: dict[str, str] = {}

    def used(names: list[str]) -> list[str]:  # map every role on the header, load the columns USED
        roles.update(map_columns(pd.DataFrame(columns=names), columns or {}, label))
        return [roles[r] for r in USED if r in roles]

    df = read_log(path, used)
    if not roles:  # a JSON-lines log is read whole
        roles = map_columns(df, columns or {}, label)
    m = metrics_table(df, roles, d_sae, label)
    del df  # a long log: keep one table in memory, not two
    evs = [parse_event(e) for e in events or []] + lr_events(m)
    a = diagnose.autopsy(m, [], **kw)
    lookback = a["params"]["lookback_steps"]
    keep = ("step", "start_step", "onset_step", "end_step", "peak_step", "trigger", "dead_before", "dead_after",
            "dead_peak", "l0_before", "l0_after", "l0_min", "dead_rise", "l0_factor")
    collapses = []
    for c in a["collapses"]:
        rec = {k: c[k] for k in keep}
        rec["lr_before"], rec["lr_at_onset"] = _lr_at(m, c["start_step"]), _lr_at(m, c["onset_step"])
        rec["coinciding"] = coinciding(c, evs, lookback)
        collapses.append(rec)
    out = {"log": str(path), "columns": roles, "n_rows": int(len(m)), "first_step": int(m["step"].iloc[0]),
           "last_step": int(m["step"].iloc[-1]), "params": a["params"], "n_collapses": len(collapses),
           "collapses": collapses, "initial_sparsification": a["initial_sparsification"], "final": a["final"],
           "events": evs, "note": NOTE}
    out["verdict"] = log_verdict(out)
    return out, m


def _f(v: float | None, spec: str) -> str:
    return "?" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def log_verdict(a: dict[str, Any]) -> str:
    p = a["params"]
    rule = (f"a rise of the dead fraction by more than {p['dead_rise']:.0%} or an L0 fall of more than "
            f"{p['l0_drop_factor']:g}x within {p['window_steps']} steps")
    span = f"steps {a['first_step']}-{a['last_step']} ({a['n_rows']} logged rows)"
    if not a["collapses"]:
        fin = a["final"] or {}
        return (f"No collapse in {span} ({rule}); at the last step dead {_f(fin.get('dead_frac'), '.1%')}, "
                f"L0 {_f(fin.get('l0'), '.3g')}.")
    parts = [f"{a['n_collapses']} collapse(s) in {span} ({rule})."]
    for n, c in enumerate(a["collapses"], 1):
        s = (f"#{n}: steps {c['start_step']}-{c['end_step']} (first seen {c['onset_step']}), dead "
             f"{_f(c['dead_before'], '.1%')} -> {_f(c['dead_after'], '.1%')}, L0 {_f(c['l0_before'], '.3g')} -> "
             f"{_f(c['l0_after'], '.3g')}")
        ev = [e for e in c["coinciding"] if e["position"] != "during"]
        if ev:
            s += "; coinciding with " + ", ".join(f"{e['kind']} at step {e['step']}" for e in ev)
        else:
            s += "; no logged or given event in the lookback window"
        parts.append(s + ".")
    parts.append(NOTE)
    return " ".join(parts)
