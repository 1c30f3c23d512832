"""Collapse autopsy, latent lifecycles and init diagnostics: what died, when, and right after what.

Inputs are a run directory's contents (see runs.py): the metrics table (one row per log step), the
events list ({"step", "kind", ...}) and the held-out fire counts. Outputs are JSON-able dicts (floats
that are undefined, such as a ratio with a zero denominator, are None), except ``lifecycles``, which
also returns tensors for plotting.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported by the functions that need it: `saelab autopsy` runs without it
    from torch import Tensor

# Events a collapse is reported to coincide with. A log holds no counterfactual: coinciding is not
# causing, and only an arm that removes the event can say it caused the deaths (saelab.lab.hypothesis).
CAUSE_KINDS = ("resample", "warmup_end", "lr_change", "penalty_warmup_end")
GRADUAL_RISE = 0.10  # dead-fraction points gained over the run with no collapse: a gradual death
SHOWN_DETAILS = ("n_resampled", "detector", "strategy", "lr_before", "lr_after")  # printed by format_autopsy
ONSET_LEVEL, END_LEVEL = 0.1, 0.9  # a collapse spans the 10%..90% points of its rise (rise-time convention)


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def by_step(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` in step order: itself when it already is (a log of millions of rows is not copied)."""
    return metrics if metrics["step"].is_monotonic_increasing else metrics.sort_values("step", kind="stable")


def default_window(steps: np.ndarray) -> int:
    """Detection window when none is given: a tenth of the logged span, at least two log intervals."""
    if len(steps) < 2:
        return 1
    return int(max((steps[-1] - steps[0]) / 10, 2 * np.median(np.diff(steps))))


# ----- collapse detection ---------------------------------------------------------------------


QUERY_CHUNK = 1 << 20  # queries of last_hit handled at once


def last_hit(a: np.ndarray, hi: np.ndarray, hit: Any, reduce: Any = np.maximum) -> np.ndarray:
    """For each row i: the last index j in [i + 1, hi[i]) with ``hit(a[j], i)``, or -1.

    ``hit(values, rows)`` (vectorized) must be monotone in the value: with ``reduce=np.maximum`` a
    larger value never turns a hit into a miss (np.minimum: a smaller one); ``a`` holds no NaN. A
    greedy descent from the right skips power-of-two blocks that hold no hit, testing each by its
    maximum (minimum): a sparse-table level, rebuilt for each level so that memory stays at a few
    arrays the size of ``a``. O(n log^2 n) vectorized work instead of comparing every row with every
    row of its window."""
    r = hi.copy()
    lo = np.arange(1, len(hi) + 1, dtype=hi.dtype)
    span = int((hi - lo).max()) if len(hi) else 0
    table = np.empty_like(a)
    for level in range(max(span, 1).bit_length() - 1, -1, -1):
        w = 1 << level
        if w > len(a):
            continue
        table[:] = a
        for k in range(level):  # the extreme over [x, x + 2^(k+1)) from two halves of 2^k, in place
            h = 1 << k
            for c in range(0, len(a) - h, QUERY_CHUNK):  # left to right: the halves read are not yet overwritten
                e = min(c + QUERY_CHUNK, len(a) - h)
                reduce(table[c:e], table[c + h : e + h], out=table[c:e])
        for c in range(0, len(r), QUERY_CHUNK):  # the queries' temporaries stay at a chunk's size
            rc, lc = r[c : c + QUERY_CHUNK], lo[c : c + QUERY_CHUNK]  # views
            q = np.nonzero(rc - w >= lc)[0]
            if len(q):
                miss = ~hit(table[rc[q] - w], q + c)
                rc[q[miss]] -= w
    return np.where(r > lo, r - 1, -1)


def _filled(x: np.ndarray, fill: float) -> np.ndarray:
    """``x`` with NaN replaced by ``fill``; ``x`` itself (no copy) when it holds none."""
    return np.where(np.isnan(x), fill, x) if np.isnan(x).any() else x


def collapse_spans(metrics: pd.DataFrame, dead_rise: float = 0.2, window_steps: int | None = None,
                   l0_drop_factor: float = 4.0) -> list[list[Any]]:
    """The triggered spans of ``detect_collapses`` as [first row, last row, dead triggered, l0
    triggered], rows of ``metrics`` sorted by step. Row i triggers with the last row j of its window
    (``0 < step_j - step_i <= window``, or a later row at the same step) where dead rises by more
    than dead_rise or L0 falls by more than l0_drop_factor; overlapping spans merge."""
    df = by_step(metrics)
    steps = df["step"].to_numpy(dtype=np.int64)
    dead = df["dead_frac"].to_numpy(dtype=np.float64)
    l0 = df["l0"].to_numpy(dtype=np.float64)
    window = default_window(steps) if window_steps is None else window_steps
    n = len(steps)
    if n < 2:
        return []
    hi = np.searchsorted(steps, steps + window, side="right").astype(np.int32 if n < 2**31 - 1 else np.int64)
    # both tests are monotone in row j's value (dead_j - dead_i, l0_drop_factor * l0_j), so a block is
    # tested exactly by its max dead / min L0; NaN never triggers, and neither do -inf / +inf
    jd = last_hit(_filled(dead, -np.inf), hi, lambda m, q: m - dead[q] > dead_rise)
    jl = last_hit(_filled(l0, np.inf), hi, lambda m, q: (l0[q] > 0) & (l0[q] > l0_drop_factor * m), np.minimum)
    first = np.nonzero((jd >= 0) | (jl >= 0))[0]
    if not len(first):
        return []
    ends = np.maximum(jd, jl)[first]
    new = np.ones(len(first), dtype=bool)  # a span merges into the previous one when it starts at or before its end
    new[1:] = first[1:] > np.maximum.accumulate(ends)[:-1]
    cut = np.nonzero(new)[0]
    return [[int(first[c]), int(e), bool(by_dead), bool(by_l0)] for c, e, by_dead, by_l0 in
            zip(cut, np.maximum.reduceat(ends, cut), np.logical_or.reduceat(jd[first] >= 0, cut),
                np.logical_or.reduceat(jl[first] >= 0, cut))]


def detect_collapses(
    metrics: pd.DataFrame, dead_rise: float = 0.2, window_steps: int | None = None, l0_drop_factor: float = 4.0
) -> list[dict[str, Any]]:
    """Find collapses in a metrics table with columns step, dead_frac, l0.

    A pair of log rows (i, j) with ``0 < step_j - step_i <= window_steps`` triggers when
    ``dead_frac_j - dead_frac_i > dead_rise`` (fraction points) or ``l0_i / l0_j > l0_drop_factor``.
    Overlapping triggered spans merge into one event (``collapse_spans``). Within an event the rise is located by the
    rise-time convention on dead_frac (or on the fall of L0 if only L0 triggered), with the lowest
    value before the peak as the base: ``start_step`` is the last log at or below 10% of the rise
    (the last healthy log), ``onset_step`` the first log above it (the rise is first seen there, so
    its cause lies at or before it), ``end_step`` the first log at 90% of the rise, ``peak_step``
    the peak. ``*_before`` are read at start_step, ``*_after`` at end_step; ``l0_factor`` is
    l0_before / l0_after (None if l0_after is 0). window_steps=None uses ``default_window``.
    """
    df = by_step(metrics)
    steps = df["step"].to_numpy(dtype=np.int64)
    dead = df["dead_frac"].to_numpy(dtype=np.float64)
    l0 = df["l0"].to_numpy(dtype=np.float64)
    spans = collapse_spans(metrics, dead_rise, window_steps, l0_drop_factor)

    out = []
    for a, b, by_dead, by_l0 in spans:
        s, c, e, p = (a + k for k in _rise(dead[a : b + 1] if by_dead else -l0[a : b + 1]))
        l0_after = l0[e]
        out.append(
            {
                "step": int(steps[c]),  # = onset_step: where plots put the collapse marker
                "start_step": int(steps[s]),
                "onset_step": int(steps[c]),
                "end_step": int(steps[e]),
                "peak_step": int(steps[p]),
                "trigger": "+".join(t for t, on in (("dead_rise", by_dead), ("l0_drop", by_l0)) if on),
                "dead_before": _num(dead[s]),
                "dead_after": _num(dead[e]),
                "dead_peak": _extreme(np.nanmax, dead[s : b + 1]),
                "l0_before": _num(l0[s]),
                "l0_after": _num(l0_after),
                "l0_min": _extreme(np.nanmin, l0[s : b + 1]),
                "dead_rise": _num(dead[e] - dead[s]),
                "l0_factor": _num(l0[s] / l0_after) if l0_after > 0 else None,
            }
        )
    return out


def _extreme(fn: Any, x: np.ndarray) -> float | None:
    """np.nanmax / np.nanmin of ``x``, None when every value is NaN (a log with no such column)."""
    return None if np.isnan(x).all() else _num(fn(x))


def _rise(seg: np.ndarray) -> tuple[int, int, int, int]:
    """Indices (start, onset, end, peak) of the rise to the first maximum of ``seg``."""
    p = int(np.nanargmax(seg))
    m = int(np.nanargmin(seg[: p + 1]))
    lo, hi = seg[m], seg[p]
    above = np.nonzero(seg[m + 1 : p + 1] > lo + ONSET_LEVEL * (hi - lo))[0]
    c = m + 1 + int(above[0]) if len(above) else p
    e = c + int(np.nonzero(seg[c : p + 1] >= lo + END_LEVEL * (hi - lo))[0][0])
    return max(c - 1, m), c, e, p


# ----- attribution ----------------------------------------------------------------------------


def _details(e: dict[str, Any]) -> dict[str, Any]:
    """An event's scalar numbers (lists such as resampled indices are left out; NaN/inf -> None)."""
    scalars = {k: v for k, v in e.items() if k not in ("step", "kind") and (v is None or isinstance(v, (bool, int, float, str)))}
    return {k: _num(v) if isinstance(v, float) else v for k, v in scalars.items()}


def attribute(collapses: list[dict[str, Any]], events: list[dict[str, Any]], lookback_steps: int) -> list[dict[str, Any]]:
    """For each collapse, list the CAUSE_KINDS events from ``start_step - lookback_steps`` to
    ``end_step``, each with its position ("before": at or before start_step; "at_onset": after
    the last healthy log, at or before onset_step; "during": after onset_step), its distance
    ``onset_step - step`` and its scalar details. ``coincides_with`` is the latest listed event at or
    before onset_step ("none" if there is none); other events at the same step are in tied_with
    (the seed's pipeline ends its warmup and first resamples at the same step). ``attribution`` is
    the same as one short string, e.g. "resample@5000+warmup_end" (what plots.autopsy_table shows)."""
    causes = sorted((e for e in events if e.get("kind") in CAUSE_KINDS), key=lambda e: e["step"])
    out = []
    for c in collapses:
        listed = []
        for e in causes:
            if not c["start_step"] - lookback_steps <= e["step"] <= c["end_step"]:
                continue
            pos = "before" if e["step"] <= c["start_step"] else "at_onset" if e["step"] <= c["onset_step"] else "during"
            listed.append({"kind": e["kind"], "step": int(e["step"]), "position": pos,
                           "distance": int(c["onset_step"] - e["step"]), "details": _details(e)})  # fmt: skip
        prior = [e for e in listed if e["position"] != "during"]
        s = prior[-1] if prior else {"kind": "none", "step": None, "distance": None, "details": {}}
        tied = [e["kind"] for e in prior[:-1] if e["step"] == s["step"]]
        text = "none" if not prior else f"{s['kind']}@{s['step']}" + "".join(f"+{k}" for k in tied)
        out.append(c | {"events": listed, "coincides_with": s["kind"], "coincides_step": s["step"],
                        "coincides_distance": s["distance"], "coincides_details": s["details"], "tied_with": tied,
                        "attribution": text})  # fmt: skip
    return out


def autopsy(metrics: pd.DataFrame, events: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """Detect and attribute collapses (autopsy.json). Keywords: dead_rise, window_steps,
    l0_drop_factor (see detect_collapses) and lookback_steps (default: the window)."""
    steps = by_step(metrics)["step"].to_numpy(dtype=np.int64)
    params = {
        "dead_rise": float(kw.pop("dead_rise", 0.2)),
        "window_steps": int(kw.pop("window_steps", None) or default_window(steps)),
        "l0_drop_factor": float(kw.pop("l0_drop_factor", 4.0)),
    }
    params["lookback_steps"] = int(kw.pop("lookback_steps", None) or params["window_steps"])
    if kw:
        raise TypeError(f"autopsy() got unknown options {sorted(kw)}")
    found = detect_collapses(metrics, params["dead_rise"], params["window_steps"], params["l0_drop_factor"])
    first_step = int(steps[0]) if len(steps) else None
    initial = [c for c in found if c["trigger"] == "l0_drop" and c["start_step"] == first_step]
    collapses = attribute([c for c in found if c not in initial], events, params["lookback_steps"])
    keys = ("start_step", "end_step", "dead_before", "dead_after", "l0_before", "l0_after")
    keys += ("coincides_with", "coincides_step", "coincides_distance")
    last = by_step(metrics).iloc[-1] if len(metrics) else None
    final = {"step": int(last["step"]), "dead_frac": _num(last["dead_frac"]), "l0": _num(last["l0"])} if last is not None else None
    return {
        "params": params,
        "n_collapses": len(collapses),
        "collapses": collapses,
        "table": [{k: c[k] for k in keys} for c in collapses],
        # An L0 fall from the first log with no latent dying is the penalty sparsifying a dense
        # random initialization, which is what training is for: reported, not counted as a collapse.
        "initial_sparsification": initial[0] if initial else None,
        # Deaths already present before the first update are their own finding, never a collapse.
        "at_init": {"dead_frac": _num(by_step(metrics)["dead_frac"].iloc[0])}
        if len(metrics) and int(steps[0]) == 0 else None,
        "gradual": gradual(metrics, collapses),
        "final": final,
    }


def gradual(metrics: pd.DataFrame, collapses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A death spread over the run: the dead fraction rises by more than GRADUAL_RISE from the
    first log to its peak, and no collapse accounts for that rise. {"from", "to", "from_step",
    "peak_step"} or None."""
    if len(metrics) < 2:
        return None
    df = by_step(metrics)
    dead = df["dead_frac"].to_numpy(np.float64)
    if np.isnan(dead).all():  # a log with L0 and no dead-latent column
        return None
    p = int(np.nanargmax(dead))
    rise = dead[p] - dead[0]
    jumps = sum((c["dead_after"] or 0) - (c["dead_before"] or 0) for c in collapses)
    if rise - jumps <= GRADUAL_RISE:
        return None
    return {"from": _num(dead[0]), "to": _num(dead[p]), "from_step": int(df["step"].iloc[0]), "peak_step": int(df["step"].iloc[p])}


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "?" if v is None else format(v, spec)


def format_autopsy(a: dict[str, Any]) -> str:
    """A few lines for ``saelab train`` to print."""
    p = a["params"]
    rule = f"dead rise > {p['dead_rise']:.2f} or L0 drop > {p['l0_drop_factor']:g}x within {p['window_steps']} steps"
    init = a.get("initial_sparsification")
    note = (f"\n  initial sparsification, not a collapse: L0 {_fmt(init['l0_before'])} -> {_fmt(init['l0_after'])} "
            f"over steps {init['start_step']}-{init['end_step']} with no latent dying") if init else ""
    at0, grad = a.get("at_init"), a.get("gradual")
    if at0 and at0["dead_frac"]:
        note += f"\n  dead before any update: {_fmt(at0['dead_frac'], '.1%')} (not a collapse)"
    if grad:
        note += (f"\n  gradual death, not a collapse: dead {_fmt(grad['from'], '.1%')} -> {_fmt(grad['to'], '.1%')} "
                 f"over steps {grad['from_step']}-{grad['peak_step']}")
    if not a["collapses"]:
        return f"autopsy: no collapse ({rule})" + note
    lines = [f"autopsy: {a['n_collapses']} collapse(s) ({rule})" + note]
    for n, c in enumerate(a["collapses"], 1):
        line = (
            f"  #{n} steps {c['start_step']}-{c['end_step']} (first seen {c['onset_step']}): "
            f"dead {_fmt(c['dead_before'], '.1%')} -> {_fmt(c['dead_after'], '.1%')}, "
            f"L0 {_fmt(c['l0_before'])} -> {_fmt(c['l0_after'])}; "
        )
        if c["coincides_with"] == "none":
            line += "coincides with: no event in the lookback window"
        else:
            d = c["coincides_details"]
            keys = [k for k in SHOWN_DETAILS if k in d] or list(d)[:3]
            nums = "".join(f"; {k}={_fmt(d[k]) if isinstance(d[k], float) else d[k]}" for k in keys)
            line += (f"coincides with: {c['coincides_with']} at step {c['coincides_step']} "
                     f"({c['coincides_distance']} steps before first seen{nums})")
            if c["tied_with"]:
                line += f" [same step: {', '.join(c['tied_with'])}]"
        lines.append(line)
    return "\n".join(lines)


# ----- lifecycles -----------------------------------------------------------------------------


def lifecycles(steps: Tensor, fire_counts: Tensor, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-latent life and death on the held-out set.

    steps: ``[T]`` log steps; fire_counts: ``[T, S]`` held-out rows on which each latent fired.
    A latent is alive at a log if it fired on at least one held-out row. A death is alive at log
    t-1 and dead at log t; a revival the reverse; each is stamped with step t and the nearest
    CAUSE_KINDS event at or before it (the change happened in (step_{t-1}, step_t], so with several
    events in between the latest is named). Latents dead at the first log have no death.
    Returns alive ``[T, S]`` bool, last_fired_step ``[S]`` (-1: never alive at a log), n_deaths /
    n_revivals ``[S]``, revived_then_dead ``[S]`` bool, deaths / revivals (lists of dicts) and a
    JSON-able summary with the transitions counted per preceding event (``lifecycle_record`` gives
    the JSON-able part for lifecycles.json).
    """
    import torch

    steps = steps.to(torch.int64).cpu()
    alive = fire_counts.cpu() > 0
    T, S = alive.shape
    if T == 0 or steps.shape != (T,):
        raise ValueError(f"steps {tuple(steps.shape)} must match fire_counts {tuple(fire_counts.shape)} with >= 1 log")
    ever = alive.any(0)
    last_idx = T - 1 - alive.flip(0).to(torch.int8).argmax(0)
    last_fired = torch.where(ever, steps[last_idx], torch.full((S,), -1, dtype=torch.int64))

    died = alive[:-1] & ~alive[1:]  # [T-1, S]: transition into log t+1
    revived = ~alive[:-1] & alive[1:]
    causes = sorted((e for e in events if e.get("kind") in CAUSE_KINDS), key=lambda e: e["step"])
    cause_steps = [int(e["step"]) for e in causes]
    cause_of_log = [bisect.bisect_right(cause_steps, int(s)) - 1 for s in steps.tolist()]  # -1: none yet

    per_event = [{"kind": e["kind"], "step": cause_steps[k], "deaths": 0, "revivals": 0} for k, e in enumerate(causes)]
    before_any = {"kind": "none", "step": None, "deaths": 0, "revivals": 0}

    def stamp(mask: Tensor, key: str) -> list[dict[str, Any]]:
        out = []
        for t, latent in mask.nonzero().tolist():  # sorted by log, then latent
            k = cause_of_log[t + 1]
            (per_event[k] if k >= 0 else before_any)[key] += 1
            out.append({"latent": latent, "step": int(steps[t + 1]), "event": causes[k]["kind"] if k >= 0 else None,
                        "event_step": cause_steps[k] if k >= 0 else None})  # fmt: skip
        return out

    deaths, revivals = stamp(died, "deaths"), stamp(revived, "revivals")
    log_idx = torch.arange(1, T).unsqueeze(1).expand(T - 1, S)
    first_revival = torch.where(revived, log_idx, T).amin(0) if T > 1 else torch.full((S,), T)
    last_death = torch.where(died, log_idx, -1).amax(0) if T > 1 else torch.full((S,), -1)
    revived_then_dead = first_revival < last_death
    by_event = ([before_any] if before_any["deaths"] or before_any["revivals"] else []) + per_event

    n_deaths, n_revivals = died.sum(0), revived.sum(0)
    summary = {
        "n_logs": T,
        "d_sae": S,
        "alive_first": int(alive[0].sum()),
        "alive_last": int(alive[-1].sum()),
        "never_alive": int((~ever).sum()),
        "n_deaths": len(deaths),
        "n_revivals": len(revivals),
        "latents_died": int((n_deaths > 0).sum()),
        "latents_revived": int((n_revivals > 0).sum()),
        "revived_then_dead": int(revived_then_dead.sum()),
        "by_event": by_event,
    }
    return {
        "steps": steps,
        "alive": alive,
        "last_fired_step": last_fired,
        "n_deaths": n_deaths,
        "n_revivals": n_revivals,
        "revived_then_dead": revived_then_dead,
        "deaths": deaths,
        "revivals": revivals,
        "summary": summary,
    }


def lifecycle_record(life: dict[str, Any], max_items: int = 20_000) -> dict[str, Any]:
    """The JSON-able part of ``lifecycles(...)`` for lifecycles.json: summary, per-latent
    last_fired_step / n_deaths / n_revivals as lists, the latents revived then dead again, and the
    first ``max_items`` deaths and revivals (``*_truncated`` says how many were left out). The alive
    matrix is left out: it is ``latents.safetensors["fire_counts"] > 0``."""
    return {
        "summary": life["summary"],
        "last_fired_step": life["last_fired_step"].tolist(),
        "n_deaths": life["n_deaths"].tolist(),
        "n_revivals": life["n_revivals"].tolist(),
        "revived_then_dead": life["revived_then_dead"].nonzero().flatten().tolist(),
        "deaths": life["deaths"][:max_items],
        "revivals": life["revivals"][:max_items],
        "deaths_truncated": max(0, len(life["deaths"]) - max_items),
        "revivals_truncated": max(0, len(life["revivals"]) - max_items),
    }


# ----- init diagnostics -----------------------------------------------------------------------


def init_diagnostics(x: Tensor, pre: Tensor) -> dict[str, Any]:
    """Facts at step 0 that predict early death (init.json).

    x: ``[N, d_in]`` raw held-out rows. pre: ``[N, d_sae]`` one arm's pre-activations at step 0
    on the normalized rows.
    outlier_severity = ||mu|| / sqrt(mean_i ||x_i - mu||^2), with mu = mean_i x_i: the norm of the
    mean vector over the RMS norm of the centered rows (the total standard deviation). Above ~1 the
    rows share one large direction, and latents not aligned with it start never-positive.
    Norm distribution of ||x_i||: min, p1, p50, p99, max. frac_tiny_rows: rows with ||x_i|| <
    1e-3 * median. frac_never_positive: latents whose pre-activation is <= 0 on every row.
    """
    import torch

    if x.ndim != 2 or pre.ndim != 2 or x.shape[0] != pre.shape[0]:
        raise ValueError(f"x [N, d_in] and pre [N, d_sae] must share N; got {tuple(x.shape)} and {tuple(pre.shape)}")
    x64 = x.detach().to(torch.float64).cpu()
    mu = x64.mean(0)
    rms = (x64 - mu).pow(2).sum(-1).mean().sqrt()
    norms = x64.norm(dim=-1)
    q = torch.quantile(norms, torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0], dtype=torch.float64))
    never = (pre.detach().cpu() <= 0).all(0)
    return {
        "n_rows": int(x.shape[0]),
        "d_in": int(x.shape[1]),
        "d_sae": int(pre.shape[1]),
        "mean_vector_norm": _num(mu.norm()),
        "rms_centered_norm": _num(rms),
        "outlier_severity": _num(mu.norm() / rms) if rms > 0 else None,
        "norm_min": _num(q[0]),
        "norm_p1": _num(q[1]),
        "norm_p50": _num(q[2]),
        "norm_p99": _num(q[3]),
        "norm_max": _num(q[4]),
        "frac_tiny_rows": _num((norms < 1e-3 * q[2]).double().mean()),
        "n_never_positive": int(never.sum()),
        "frac_never_positive": _num(never.double().mean()),
    }
