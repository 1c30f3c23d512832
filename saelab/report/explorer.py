"""A live run explorer for JupyterLab: pick arms, replicates, a metric and a step range, and the plot
redraws.

ipywidgets need a running kernel, so the static HTML report cannot show this: the phase notebooks
call ``explore`` only when their parameter ``explorer`` is True (on in the parameters cell, off in
``saelab lab``). In the report the figures' own plotly dropdowns do the picking instead.

Runs are keyed by (arm, replicate): every arm of the phase is offered and picked (a phase like 05
has a dozen), the first replicate is picked; colour follows the arm and the line style the
replicate, and the legend (one entry per arm and replicate, grouped by arm) names them in full.
Metrics are offered by the glossary's names; the raw metrics.parquet column is the tooltip and
the y-axis says it too.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from saelab.report.html import GLOSSARY
from saelab.report.plots import color
from saelab.training.runs import load_run

DEFAULT_METRIC = "dead_frac"
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")  # one per replicate

# metrics.parquet column -> (the name a reader knows, the glossary entry that defines it or None),
# in the order the dropdown offers them; any other numeric column follows under its own name
METRICS: dict[str, tuple[str, str | None]] = {
    "dead_frac": ("dead fraction (held-out rows and training window)", "dead latent"),
    "dead_frac_heldout": ("dead fraction, held-out rows alone", "dead latent"),
    "dead_frac_common": ("dead fraction over one window for every arm (phase 03, H29)", "dead latent"),
    "dead_frac_batch": ("dead fraction in a single batch (the seed's count)", None),
    "dead_frac_window": ("dead fraction over the window detector", None),
    "dead_frac_tokens": ("dead fraction over the token-count detector", None),
    "nearly_dead_1e-3": ("nearly dead: firing on < 0.1% of held-out rows", None),
    "nearly_dead_1e-5": ("nearly dead: firing on < 0.001% of held-out rows", None),
    "l0": ("L0 (active latents per row)", "L0, L0 fraction"),
    "l0_frac": ("L0 fraction (L0 / d_sae)", "L0, L0 fraction"),
    "fvu": ("FVU (fraction of variance unexplained)", "FVU"),
    "explained_variance": ("explained variance (1 - FVU)", "FVU"),
    "mse": ("reconstruction MSE", None),
    "mmcs": ("MMCS (true features recovered, mean max cosine)", "MMCS"),
    "frac_recovered": ("true features recovered (cosine > 0.9)", "MMCS"),
    "loss": ("training loss (reconstruction + penalties)", None),
    "rec_loss": ("reconstruction loss", None),
    "l1_penalty": ("L1 penalty as used", None),
    "l1_recon_ratio": ("L1 / recon", "L1 / recon"),
    "lr": ("learning rate", None),
    "alpha": ("L1 coefficient alpha", None),
    "reanim_coef": ("reanimation coefficient", None),
}


def metric_name(column: str) -> str:
    """The name the explorer offers for a metrics column (the column itself when it has none)."""
    return METRICS.get(column, (column, None))[0]


def metric_tooltip(column: str) -> str:
    """The raw column, then the glossary's definition where there is one."""
    key = METRICS.get(column, (column, None))[1]
    return f"column {column}" + (f": {GLOSSARY[key]}" if key in GLOSSARY else "")


# ----- finding runs -----------------------------------------------------------------------------


def find_runs(root: str | Path) -> dict[tuple[str, str], Any]:
    """Every run directory (one holding config.json and metrics.parquet) under ``root``, loaded,
    keyed by (arm, replicate): the arm is the folder's name, the replicate the ``seed<s>`` folder
    above it (``seed0/off``, ``seed1/group0/off``); "" where there is none. Sorted by path."""
    root = Path(root)
    out: dict[tuple[str, str], Any] = {}
    for d in sorted(p.parent for p in root.rglob("config.json") if (p.parent / "metrics.parquet").exists()):
        parts = d.relative_to(root).parts if d != root else (d.name,)
        seed = next((p for p in reversed(parts[:-1]) if re.fullmatch(r"seed\d+", p)), "")
        out[(parts[-1] if parts else d.name, seed)] = load_run(d)
    return out


def phase_runs(run: Any) -> dict[tuple[str, str], Any]:
    """The runs a phase trained in this execution (a trained ``lab.phases.PhaseRun``), keyed by
    (arm, ``seed<s>``) in the phase's arm order. Unlike ``find_runs`` over a folder, older runs
    left in ``out_dir`` by an earlier execution never show up among them."""
    return {(arm, f"seed{seed}"): r for seed, arms in run.runs.items() for arm, r in arms.items()}


def arms_of(runs: dict[tuple[str, str], Any]) -> list[str]:
    return list(dict.fromkeys(arm for arm, _ in runs))


def replicates_of(runs: dict[tuple[str, str], Any]) -> list[str]:
    return list(dict.fromkeys(seed for _, seed in runs))


def metric_columns(runs: dict[Any, Any]) -> list[str]:
    """Numeric metric columns present in every run (``step`` excluded): the named ones (METRICS)
    in their order, then the others in the first run's order."""
    if not runs:
        return []
    frames = [r.metrics for r in runs.values()]
    first = [c for c in frames[0].columns if c != "step" and np.issubdtype(frames[0][c].dtype, np.number)]
    common = [c for c in first if all(c in f.columns for f in frames[1:])]
    return [c for c in METRICS if c in common] + [c for c in common if c not in METRICS]


# ----- the figure -------------------------------------------------------------------------------


def figure(runs: dict[tuple[str, str], Any], arms: list[str], replicates: list[str], metric: str,
           steps: tuple[int, int] | None = None, log_y: bool = False) -> go.Figure:
    """``metric`` against the step for each picked (arm, replicate) run, restricted to ``steps``
    (inclusive): colour by arm, line style by replicate, legend grouped by arm; a dotted line at
    each resampling of each run."""
    fig = go.Figure()
    order = arms_of(runs)
    reps = replicates_of(runs)
    for arm in arms:
        for seed in replicates:
            r = runs.get((arm, seed))
            if r is None:
                continue
            m = r.metrics
            if steps is not None:
                m = m[(m["step"] >= steps[0]) & (m["step"] <= steps[1])]
            if metric in m:
                fig.add_trace(go.Scatter(
                    x=m["step"], y=m[metric], mode="lines", name=f"{arm} · {seed}" if seed else arm, legendgroup=arm,
                    line={"color": color(order.index(arm)), "dash": DASHES[reps.index(seed) % len(DASHES)]},
                    hovertemplate=f"<b>{escape(arm)}</b> {escape(seed)}<br>step %{{x}}<br>{escape(metric_name(metric))}: "
                                  "%{y:.4g}<extra></extra>"))
            for e in r.events:
                if e.get("kind") == "resample" and (steps is None or steps[0] <= e["step"] <= steps[1]):
                    fig.add_vline(x=e["step"], line={"dash": "dot", "width": 1, "color": "#d62728"}, opacity=0.4)
    fig.update_layout(xaxis_title="optimizer step", yaxis_title=f"{metric_name(metric)} [{metric}]",
                      yaxis_type="log" if log_y else "linear", height=480, margin={"t": 30},
                      legend={"font": {"size": 12}, "groupclick": "toggleitem"}, hovermode="closest")
    return fig


def explore(root: Any, metric: str = DEFAULT_METRIC) -> Any:
    """An ipywidgets panel over the runs of ``root``: a trained ``lab.phases.PhaseRun`` (its own runs:
    what the notebooks pass) or a folder (every run under it, old and new). Arms (every one picked),
    replicates (the first picked), metric (by name; the raw column is the tooltip), step range and
    log y; the figure redraws on every change. Returns the panel; ``panel.figure`` is the figure on
    display (``panel.figure.write_html(path)`` keeps it)."""
    import ipywidgets as w

    runs = phase_runs(root) if hasattr(root, "runs") else find_runs(root)
    if not runs:
        return w.HTML(f"<i>no runs in {escape(str(getattr(root, 'out_dir', root)))}</i>")
    cols = metric_columns(runs)
    last = max(int(r.metrics["step"].max()) for r in runs.values())
    arms, reps = arms_of(runs), replicates_of(runs)
    # long arm names whole: the list as wide as the longest name plus its label (about 12 characters)
    fit = w.Layout(width=f"{max(len(a) for a in arms) + 16}ch")
    pick_arms = w.SelectMultiple(options=arms, value=tuple(arms), rows=min(14, len(arms)), description="arms", layout=fit)
    pick_reps = w.SelectMultiple(options=reps, value=reps[:1], rows=max(2, min(6, len(reps))), description="replicates")
    start = metric if metric in cols else cols[0]
    what = w.Dropdown(options=[(metric_name(c), c) for c in cols], value=start, description="metric",
                      tooltip=metric_tooltip(start), layout=w.Layout(width="32em"))
    span = w.IntRangeSlider(value=(0, last), min=0, max=last, step=max(1, last // 200), description="steps",
                            continuous_update=False, layout=w.Layout(width="60%"))
    log = w.Checkbox(value=False, description="log y")
    out = w.Output()
    panel = w.VBox([w.HBox([pick_arms, w.VBox([pick_reps, what, log])]), span, out])

    def redraw(*_: Any) -> None:
        what.tooltip = metric_tooltip(what.value)
        panel.figure = figure(runs, list(pick_arms.value), list(pick_reps.value), what.value, span.value, log.value)
        # the figure as plotly's JSON mimetype (what JupyterLab's plotly extension draws) goes into
        # the Output widget's state, not through its capture of displayed output (``with out:
        # display(...)``), which left papermill's client waiting forever at the explore profile
        # (issue 23); not append_display_data either: a plotly figure displays itself into the cell
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(panel.figure.to_dict())
        out.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    for widget in (pick_arms, pick_reps, what, span, log):
        widget.observe(redraw, names="value")
    redraw()
    return panel
