"""Plotly figure builders for saelab runs.

Every builder is pure: it takes runs (``saelab.training.runs.Run``, keyed by arm name) or a DataFrame and
returns a ``go.Figure``; nothing here calls ``.show()``. Choices between metrics or arms are
plotly's own dropdowns (``updatemenus``), so they keep working in the static HTML report where no
kernel runs. Long series are thinned to ``MAX_POINTS`` points to keep the pages small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from saelab.report.tables import as_runs, autopsy_events

MAX_POINTS = 2000  # points per line in any figure
MAX_HEATMAP_ROWS = 512  # latents (or groups of latents) in the death heatmap
MAX_HEATMAP_COLS = 400  # log steps in the death heatmap
PALETTE = qualitative.Plotly + qualitative.D3
SYMBOLS = ("circle", "diamond", "square", "triangle-up")  # past the palette's colours, the marker tells arms apart
DETECTORS = ("single_batch", "window", "tokens")
# event kind -> (marker symbol, colour); these get a vertical marker on time axes
EVENT_STYLE = {
    "warmup_end": ("triangle-down", "#555555"),
    "penalty_warmup_end": ("triangle-down-open", "#555555"),
    "lr_change": ("diamond-open", "#555555"),
    "resample": ("x", "#d62728"),
    "collapse": ("star", "#000000"),
    "nonfinite": ("hexagram", "#9467bd"),
}
NORM_LABELS = {"x_norm": "||x|| (raw row norm)", "coef": "coefficient sqrt(d_in)/||x||",
               "out_norm": "||x|| after normalization"}
# (dropdown label, y-axis title with units, [(column, legend suffix, dash)], log y)
CURVES = [
    ("L0", "L0 (active latents per row, count)", [("l0", "", "solid")], False),
    ("dead fraction", "dead latents (fraction of d_sae)",
     [("dead_frac", "held-out truth", "solid"), ("dead_frac_batch", "single batch (the seed's count)", "dash")], False),
    ("loss", "training loss (reconstruction + penalties)", [("loss", "", "solid")], True),
    ("L1 / recon", "L1 penalty / reconstruction loss (ratio)", [("l1_recon_ratio", "", "solid")], True),
    ("LR", "learning rate", [("lr", "", "solid")], False),
]


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread items of ``n``, keeping the first and last."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def final_value(run: Any, column: str) -> float:
    """A run's final number: ``summary[column]``, else the last metrics row."""
    v = run.summary.get(column) if getattr(run, "summary", None) else None
    if v is None and column in run.metrics and len(run.metrics):
        v = run.metrics[column].iloc[-1]
    return float("nan") if v is None else float(v)


def norm_stats_frame(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Task 5.1 ranges per arm: for each quantity q with ``q_min`` / ``q_max`` in the norm_stats
    events or ``norm_q_min`` / ``norm_q_max`` metrics columns (per logged batch), the smallest min
    and the largest max over the run. Columns arm, quantity, min, max, n (events + rows used).
    In events a null (a non-finite number written to JSON) counts as inf; in metrics NaN means
    "not measured" and is skipped."""
    rows = []
    for arm, run in as_runs(runs).items():
        lo: dict[str, list[float]] = {}
        hi: dict[str, list[float]] = {}
        for e in (e for e in run.events if e.get("kind") == "norm_stats"):
            for k in e:
                if k.endswith("_min") and f"{k[:-4]}_max" in e:
                    lo.setdefault(k[:-4], []).append(_num(e[k]))
                    hi.setdefault(k[:-4], []).append(_num(e[f"{k[:-4]}_max"]))
        m = run.metrics
        for col in m.columns:
            q = col[5:-4]
            if col.startswith("norm_") and col.endswith("_min") and f"norm_{q}_max" in m:
                pair = m[[col, f"norm_{q}_max"]].astype(float).dropna()  # NaN: no batch at that row (step 0)
                lo.setdefault(q, []).extend(pair[col].tolist())
                hi.setdefault(q, []).extend(pair[f"norm_{q}_max"].tolist())
        rows += [{"arm": arm, "quantity": NORM_LABELS.get(q, q), "min": min(lo[q]), "max": max(hi[q]),
                  "n": len(lo[q])} for q in lo]
    return pd.DataFrame(rows, columns=["arm", "quantity", "min", "max", "n"])


def _num(v: Any) -> float:
    return math.inf if v is None else float(v)


def event_hover(arm: str, ev: Mapping[str, Any]) -> str:
    """Hover text of one event: kind, step, arm and its scalar details."""
    lines = [f"<b>{ev.get('kind', 'event')}</b> at step {ev.get('step')}", f"arm: {arm}"]
    for k, v in ev.items():
        if k not in ("step", "kind") and isinstance(v, (int, float, str, bool)) and len(lines) < 12:
            lines.append(f"{k}: {_fmt(v)}")
    return "<br>".join(lines)


def marked_events(run: Any) -> list[dict[str, Any]]:
    """Events that get a vertical marker: schedule changes, resamples and autopsy collapses."""
    evs = [e for e in getattr(run, "events", []) if e.get("kind") in EVENT_STYLE and e.get("step") is not None]
    return sorted(evs + autopsy_events(run), key=lambda e: e["step"])


def add_event_markers(fig: go.Figure, events: Mapping[str, list[dict[str, Any]]]) -> None:
    """Vertical dotted lines at each event (one per distinct step and kind) plus hoverable
    markers along the top of the plot, on a hidden overlay axis ``y9`` spanning [0, 1]."""
    seen: set[tuple[int, str]] = set()
    for i, (arm, evs) in enumerate(events.items()):
        for ev in evs:
            key = (ev["step"], ev["kind"])
            if key not in seen:
                seen.add(key)
                fig.add_vline(x=ev["step"], line={"dash": "dot", "width": 1, "color": EVENT_STYLE[ev["kind"]][1]},
                              opacity=0.5)
        if evs:
            fig.add_trace(go.Scatter(
                x=[e["step"] for e in evs], y=[0.98 - 0.04 * (i % 6)] * len(evs), yaxis="y9", mode="markers",
                marker={"symbol": [EVENT_STYLE[e["kind"]][0] for e in evs], "size": 11, "color": color(i),
                        "line": {"width": 1, "color": "#222"}},
                hovertext=[event_hover(arm, e) for e in evs], hoverinfo="text",
                name=f"{arm} events", legendgroup=arm, showlegend=False, meta="events"))
    fig.update_layout(yaxis9={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True})


def _legend_note() -> str:
    return "markers: ▼ warmup end, ✕ resample, ★ collapse (hover for details)"


def _dropdown(buttons: list[dict[str, Any]]) -> dict[str, Any]:
    """A dropdown in the top right corner, above the legend and clear of the title."""
    return {"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right", "y": 1.03, "yanchor": "bottom",
            "showactive": True, "bgcolor": "#f4f6fa"}


def _visibility_buttons(labels: list[str], trace_keys: list[str | None], relayouts: list[dict] | None = None
                        ) -> list[dict[str, Any]]:
    """One button per label: traces whose key equals the label (or is None: always) are shown."""
    out = []
    for i, label in enumerate(labels):
        vis = [k is None or k == label for k in trace_keys]
        out.append({"label": label, "method": "update", "args": [{"visible": vis}, (relayouts or [{}] * len(labels))[i]]})
    return out


def training_curves(runs: Mapping[str, Any], max_points: int = MAX_POINTS, first: str = "L0") -> go.Figure:
    """L0, dead fraction (held-out truth solid, the seed's single-batch count dashed), loss,
    L1/reconstruction ratio and LR against the step, one colour per arm; a dropdown picks the
    metric (``first``: the one shown on opening, a label of CURVES), and event markers (warmup
    end, resampling, collapses) sit at their steps."""
    labels = [c[0] for c in CURVES]
    if first not in labels:
        raise ValueError(f"first={first!r}: choose one of {labels}")
    runs = as_runs(runs)
    fig, keys = go.Figure(), []
    for label, ytitle, cols, _ in CURVES:
        for i, (arm, run) in enumerate(runs.items()):
            m = run.metrics
            idx = thin(len(m), max_points)
            for col, suffix, dash in cols:
                if col not in m:
                    continue
                name = f"{arm} · {suffix}" if suffix else arm
                fig.add_trace(go.Scatter(
                    x=m["step"].to_numpy()[idx], y=m[col].to_numpy()[idx], mode="lines", name=name,
                    legendgroup=arm, line={"color": color(i), "dash": dash}, visible=label == first,
                    hovertemplate=f"<b>{name}</b><br>step %{{x}}<br>{col} = %{{y:.4g}}<extra></extra>"))
                keys.append(label)
    add_event_markers(fig, {arm: marked_events(r) for arm, r in runs.items()})
    keys += [None] * (len(fig.data) - len(keys))
    relayouts = [{"yaxis.title.text": yt, "yaxis.type": "log" if log else "linear", "yaxis.autorange": True}
                 for _, yt, _, log in CURVES]
    fig.update_layout(
        title={"text": "Training curves per arm", "subtitle": {"text": _legend_note()}},
        xaxis_title="optimizer step", yaxis_title=CURVES[labels.index(first)][1], hovermode="closest", margin={"t": 110},
        yaxis_type="log" if CURVES[labels.index(first)][3] else "linear",
        updatemenus=[_dropdown(_visibility_buttons(labels, keys, relayouts)) | {"active": labels.index(first)}], height=520)
    return fig


def _fire_frequency(run: Any, step_index: int = -1) -> tuple[np.ndarray, int, int]:
    """(fraction of held-out rows each latent fired on [d_sae], log step, eval_rows) at a log step."""
    lat = run.latents
    counts = to_numpy(lat["fire_counts"])[step_index].astype(np.float64)
    rows = int(to_numpy(lat["eval_rows"])) if "eval_rows" in lat else int(run.config.eval_rows)
    return counts / rows, int(to_numpy(lat["steps"])[step_index]), rows


def firing_histogram(runs: Mapping[str, Any], n_bins: int = 30) -> go.Figure:
    """Histogram of log10 firing frequency of every latent at the final log step, per arm; latents
    that never fired on the held-out rows get their own bar at the left, labelled "dead"."""
    runs = as_runs(runs)
    data = {arm: _fire_frequency(r) for arm, r in runs.items()}
    lo = math.floor(math.log10(1.0 / max(rows for _, _, rows in data.values())))
    edges = np.linspace(lo, 0.0, n_bins + 1)
    width = edges[1] - edges[0]
    dead_x = lo - 2 * width
    fig = go.Figure()
    for i, (arm, (freq, step, rows)) in enumerate(data.items()):
        alive = freq[freq > 0]
        counts, _ = np.histogram(np.log10(alive), bins=edges)
        n_dead = int((freq == 0).sum())
        centers = (edges[:-1] + edges[1:]) / 2
        hover = [f"<b>{arm}</b><br>dead (never fired on {rows} held-out rows): {n_dead} of {len(freq)} latents"]
        hover += [f"<b>{arm}</b><br>frequency 10^{a:.2f} to 10^{b:.2f}: {c} latents"
                  for a, b, c in zip(edges[:-1], edges[1:], counts)]
        fig.add_trace(go.Bar(x=np.r_[dead_x, centers], y=np.r_[n_dead, counts], width=width, name=f"{arm} (step {step})",
                             marker_color=color(i), opacity=0.6, hovertext=hover, hoverinfo="text", legendgroup=arm))
    fig.add_vline(x=dead_x + width, line={"dash": "dot", "color": "#888"})
    ticks = list(range(lo, 1))
    labels = list(data)
    buttons = _visibility_buttons(["all arms", *labels], labels)
    buttons[0]["args"][0]["visible"] = [True] * len(labels)
    fig.update_layout(
        title="Firing frequency of latents at the final log step",
        xaxis={"title": "firing frequency (fraction of held-out rows, log10 scale)",
               "tickvals": [dead_x, *ticks], "ticktext": ["dead", *[f"10^{t}" for t in ticks]]},
        yaxis_title="latents (count)", barmode="overlay", bargap=0.05, margin={"t": 100},
        updatemenus=[_dropdown(buttons)], height=450)
    return fig


def death_order(fire_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``fire_counts [n_logs, d_sae]``: (log index from which each latent stays dead, n_logs if
    alive at the end [d_sae]; latent order sorting by that index, earliest death first [d_sae])."""
    alive = fire_counts > 0
    n_logs = alive.shape[0]
    last_alive = np.where(alive.any(0), n_logs - 1 - np.argmax(alive[::-1], axis=0), -1)
    dead_from = last_alive + 1
    order = np.lexsort((-fire_counts.sum(0), dead_from))
    return dead_from, order


def death_heatmap(run: Any, max_rows: int = MAX_HEATMAP_ROWS, max_cols: int = MAX_HEATMAP_COLS) -> go.Figure:
    """Latent-by-step alive/dead map of one arm: rows are latents sorted by the step they die
    (earliest at the top), grouped into at most ``max_rows`` rows whose colour is the percentage
    of the group alive; columns are log steps (thinned to ``max_cols``); event markers on top."""
    fc = to_numpy(run.latents["fire_counts"])
    steps = to_numpy(run.latents["steps"])
    dead_from, order = death_order(fc)
    alive = (fc > 0)[:, order].T.astype(np.float32)  # [d_sae, n_logs], sorted
    groups = np.array_split(np.arange(alive.shape[0]), min(max_rows, alive.shape[0]))
    cols = thin(alive.shape[1], max_cols)
    # percent alive as uint8: plotly ships it as a base64 typed array (~270 kB at 512 x 400)
    z = np.rint(100 * np.stack([alive[g][:, cols].mean(0) for g in groups])).astype(np.uint8)
    ylab = [f"latents #{g[0]}–{g[-1]}" if len(g) > 1 else f"latent #{g[0]}" for g in groups]
    fig = go.Figure(go.Heatmap(
        z=z, x=steps[cols], y=ylab, zmin=0, zmax=100, colorscale=[[0, "#1b1b1b"], [1, "#3fb950"]],
        colorbar={"title": {"text": "alive (%)"}},
        hovertemplate="step %{x}<br>%{y} (sorted by death step)<br>alive: %{z}%<extra></extra>"))
    add_event_markers(fig, {run.name: marked_events(run)})
    n_dead = int((dead_from < fc.shape[0]).sum())
    fig.update_layout(
        title={"text": f"Latent deaths: {run.name}",
               "subtitle": {"text": f"{n_dead} of {fc.shape[1]} latents dead at the end; {_legend_note()}"}},
        xaxis_title="optimizer step", margin={"t": 100}, height=520,
        yaxis={"title": "latents, sorted by death step", "autorange": "reversed", "showticklabels": False})
    return fig


def detector_pr(runs: Mapping[str, Any], max_points: int = MAX_POINTS) -> go.Figure:
    """Precision (top) and recall (bottom) of the single-batch, window and tokens-since-fired dead
    detectors against the held-out truth, per step; colour = detector, dropdown = arm."""
    runs = as_runs(runs)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("precision: detected dead that are truly dead",
                                        "recall: truly dead that are detected"))
    keys = []
    arms = list(runs)
    for arm, run in runs.items():
        m = run.metrics
        idx = thin(len(m), max_points)
        for j, d in enumerate(DETECTORS):
            for row, what in ((1, "precision"), (2, "recall")):
                col = f"det_{d}_{what}"
                if col not in m:
                    continue
                fig.add_trace(go.Scatter(
                    x=m["step"].to_numpy()[idx], y=m[col].to_numpy()[idx], mode="lines", name=f"{arm} · {d}",
                    legendgroup=f"{arm}{d}", showlegend=row == 1, line={"color": color(j)}, visible=arm == arms[0],
                    hovertemplate=f"<b>{arm} · {d}</b><br>step %{{x}}<br>{what} = %{{y:.3f}}<extra></extra>"),
                    row=row, col=1)
                keys.append(arm)
    buttons = _visibility_buttons(arms + ["all arms"], keys)
    buttons[-1]["args"][0]["visible"] = [True] * len(keys)
    fig.update_yaxes(range=[0, 1.05], title_text="fraction")
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    fig.update_layout(title="Dead-latent detectors against the held-out truth", height=600, margin={"t": 110},
                      updatemenus=[_dropdown(buttons)])
    return fig


def largest_lr_jump(steps: np.ndarray, lr: np.ndarray) -> dict[str, float]:
    """Largest absolute step-to-step change of an LR series: its size, the steps it spans and its
    size relative to the peak LR."""
    d = np.abs(np.diff(lr))
    if len(d) == 0:
        return {"delta": 0.0, "from_step": float(steps[0]), "to_step": float(steps[0]), "rel_to_peak": 0.0}
    i = int(np.argmax(d))
    peak = float(np.max(np.abs(lr))) or 1.0
    return {"delta": float(d[i]), "from_step": float(steps[i]), "to_step": float(steps[i + 1]),
            "rel_to_peak": float(d[i] / peak)}


def lr_schedules(runs: Mapping[str, Any], lr_by_step: Mapping[str, Any] | None = None,
                 max_points: int = MAX_POINTS) -> go.Figure:
    """LR against the step per arm, with a star at each arm's largest step-to-step change.
    ``lr_by_step[arm]`` (the LR at every step 0..N-1, e.g. from saelab.training.schedules) replaces the
    logged LR so the largest change is measured at full resolution, not between log steps."""
    runs = as_runs(runs)
    fig = go.Figure()
    for i, (arm, run) in enumerate(runs.items()):
        if lr_by_step is not None and arm in lr_by_step:
            lr = to_numpy(lr_by_step[arm]).astype(np.float64)
            steps = np.arange(len(lr))
        else:
            steps, lr = run.metrics["step"].to_numpy(), run.metrics["lr"].to_numpy(np.float64)
        idx = thin(len(lr), max_points)
        fig.add_trace(go.Scatter(x=steps[idx], y=lr[idx], mode="lines", name=arm, legendgroup=arm,
                                 line={"color": color(i)},
                                 hovertemplate=f"<b>{arm}</b><br>step %{{x}}<br>lr = %{{y:.3g}}<extra></extra>"))
        j = largest_lr_jump(steps, lr)
        fig.add_trace(go.Scatter(
            x=[j["to_step"]], y=[float(lr[np.searchsorted(steps, j["to_step"])])], mode="markers",
            marker={"symbol": "star", "size": 14, "color": color(i), "line": {"width": 1, "color": "#222"}},
            name=f"{arm}: largest change", legendgroup=arm, showlegend=False,
            hovertext=f"<b>{arm}</b>: largest step-to-step change<br>Δlr = {j['delta']:.3g} "
                      f"({j['rel_to_peak']:.1%} of peak)<br>steps {j['from_step']:.0f} → {j['to_step']:.0f}",
            hoverinfo="text"))
    buttons = [{"label": s, "method": "relayout", "args": [{"yaxis.type": s.split()[0]}]} for s in ("linear y", "log y")]
    fig.update_layout(title={"text": "Learning-rate schedules", "subtitle": {"text": "★ largest step-to-step change"}},
                      xaxis_title="optimizer step", yaxis_title="learning rate", margin={"t": 110},
                      updatemenus=[_dropdown(buttons)], height=450)
    return fig


def dead_vs_l0(runs: Mapping[str, Any], color_by: str = "aux.reanimation_coef", dense_above: float = 0.1
               ) -> go.Figure:
    """Final dead fraction against final L0, one point per arm, named in the legend (text beside
    a dozen close points piles up unreadably: issue 23); the hover adds the config value at
    ``color_by`` and the fraction of dense latents (firing on more than ``dense_above`` of held-out
    rows), so revival that only buys dense noise is visible."""
    fig = go.Figure()
    for i, (arm, run) in enumerate(as_runs(runs).items()):
        freq = _fire_frequency(run)[0] if "fire_counts" in run.latents else np.array([np.nan])
        value = _config_value(run, color_by)
        dead, l0 = final_value(run, "dead_frac"), final_value(run, "l0")
        fig.add_trace(go.Scatter(
            x=[l0], y=[dead], mode="markers", name=arm,
            marker={"size": 13, "color": color(i), "symbol": SYMBOLS[i // len(PALETTE) % len(SYMBOLS)]},
            hovertext=f"<b>{arm}</b><br>{color_by} = {_fmt(value)}<br>final L0 = {l0:.3g}<br>"
                      f"final dead fraction = {dead:.3f}<br>dense latents (> {dense_above:.0%} of rows): "
                      f"{np.mean(freq > dense_above):.3f}", hoverinfo="text"))
    fig.update_layout(title=f"Dead latents against L0 at the end of training (legend: arm; hover: {color_by})",
                      xaxis_title="final L0 (active latents per row, count)", legend_title_text="arm",
                      yaxis_title="final dead latents (fraction of d_sae)", height=450)
    return fig


def _config_value(run: Any, path: str) -> Any:
    node: Any = run.config.to_dict() if hasattr(run.config, "to_dict") else dict(run.config)
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return run.summary.get(path.split(".")[-1], "n/a")
        node = node[part]
    return node


def norm_ranges(runs: Mapping[str, Any]) -> go.Figure:
    """The seed's Task 5.1 numbers: the range [min, max] over all norm_stats events of ||x||, of the
    normalization coefficient and of the normalized norm, one bar per arm and quantity (log x
    when every value is positive); a dotted line marks sqrt(d_in), the seed's target norm."""
    runs = as_runs(runs)
    df = norm_stats_frame(runs)
    fig = go.Figure()
    quantities = list(dict.fromkeys(df["quantity"])) if len(df) else []
    for i, arm in enumerate(runs):
        sub = df[df["arm"] == arm]
        xs, ys, hover = [], [], []
        for _, r in sub.iterrows():
            y = quantities.index(r["quantity"]) - 0.12 * (i - (len(runs) - 1) / 2)  # first arm on top
            xs += [r["min"], r["max"], None]
            ys += [y, y, None]
            hover += [f"<b>{arm}</b><br>{r['quantity']}: [{_fmt(r['min'])}, {_fmt(r['max'])}]<br>"
                      f"over {r['n']} logged batches / norm_stats events"] * 2 + [""]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=arm, line={"color": color(i), "width": 5},
                                 marker={"size": 9}, hovertext=hover, hoverinfo="text"))
    positive = len(df) > 0 and bool((df[["min", "max"]].to_numpy(np.float64) > 0).all())
    d_in = next((r.config.sae.d_in for r in runs.values() if getattr(r.config.sae, "d_in", 0)), 0)
    if d_in:
        fig.add_vline(x=math.sqrt(d_in), line={"dash": "dot", "color": "#888"},
                      annotation_text=f"sqrt(d_in) = {math.sqrt(d_in):.3g}")
    xaxis: dict[str, Any] = {"title": "value (activation units)", "type": "log" if positive else "linear"}
    finite = df[["min", "max"]].to_numpy(np.float64) if len(df) else np.zeros((0, 2))
    finite = finite[np.isfinite(finite)]
    if positive and finite.size:  # explicit range: the annotation alone would stretch a log axis
        lo, hi = np.log10([min(finite.min(), math.sqrt(d_in) or np.inf), max(finite.max(), math.sqrt(d_in))])
        xaxis["range"] = [lo - 0.3, hi + 0.3]
    fig.update_layout(title="Normalization ranges (seed Task 5.1)", xaxis=xaxis,
                      yaxis={"tickvals": list(range(len(quantities))), "ticktext": quantities, "title": ""},
                      height=220 + 60 * max(len(quantities), 1))
    return fig


def replicate_spread(df: pd.DataFrame, metrics: list[str] | None = None, arm: str = "arm", seed: str | None = None
                     ) -> go.Figure:
    """One row per (arm, replicate) with metric columns (``seed``: the column naming the replicate,
    default "replicate", else "seed") -> per arm the mean with ±1 standard deviation error bars and
    every replicate as a small dot; a dropdown picks the metric."""
    seed = seed or ("replicate" if "replicate" in df else "seed")
    metrics = metrics or [c for c in df.select_dtypes("number").columns if c != seed]
    fig, keys = go.Figure(), []
    arms = list(dict.fromkeys(df[arm]))
    for metric in metrics:
        for i, a in enumerate(arms):
            vals = df.loc[df[arm] == a, metric].to_numpy(np.float64)
            seeds = df.loc[df[arm] == a, seed].tolist() if seed in df else list(range(len(vals)))
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            first = metric == metrics[0]
            fig.add_trace(go.Scatter(
                x=[a], y=[float(np.mean(vals))], error_y={"type": "data", "array": [sd], "visible": True},
                mode="markers", marker={"size": 14, "color": color(i), "symbol": "line-ew-open",
                                        "line": {"width": 3}},
                name=a, legendgroup=a, visible=first,
                hovertext=f"<b>{a}</b><br>{metric}: mean {np.mean(vals):.4g} ± {sd:.2g} (n={len(vals)})",
                hoverinfo="text"))
            fig.add_trace(go.Scatter(
                x=[a] * len(vals), y=vals, mode="markers", marker={"size": 7, "color": color(i), "opacity": 0.6},
                name=f"{a} replicates", legendgroup=a, showlegend=False, visible=first,
                hovertext=[f"{a}, replicate {s}: {v:.4g}" for s, v in zip(seeds, vals)], hoverinfo="text"))
            keys += [metric, metric]
    relayouts = [{"yaxis.title.text": m} for m in metrics]
    fig.update_layout(title="Spread across replicates (mean ± 1 sd; dots: one replicate each)", xaxis_title="arm",
                      yaxis_title=metrics[0] if metrics else "", margin={"t": 110}, height=450,
                      updatemenus=[_dropdown(_visibility_buttons(metrics, keys, relayouts))] if metrics else [])
    return fig


def answer_bars(answer: Mapping[str, Any]) -> go.Figure:
    """The answer's summary: for each ranked cause, the base's peak and final dead fraction next to
    the same with the cause's fix (``saelab.lab.answer``), most harmful cause first."""
    rows = list(answer.get("ranking", []))
    labels = [f"{r['id']} ({r['verdict']})" for r in rows]
    fig = go.Figure()
    for key, name, color in (("peak_dead", "peak", "#c0392b"), ("final_dead", "final", "#e67e22")):
        fig.add_trace(go.Bar(x=labels, y=[100 * (r[key]["base"] or 0) for r in rows], name=f"{name} dead, base",
                             marker_color=color, hovertext=[r["cause"] for r in rows]))
        fig.add_trace(go.Bar(x=labels, y=[100 * (r[key]["with_fix"] or 0) for r in rows], name=f"{name} dead, with the fix",
                             marker_color=color, opacity=0.45, hovertext=[" ".join(r["fix"]) for r in rows]))
    fig.update_layout(barmode="group", title="Dead latents of the base vs each cause's fix (mean over replicates)",
                      yaxis_title="dead latents (%)", height=420, legend={"orientation": "h", "y": -0.25})
    return fig
