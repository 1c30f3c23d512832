"""A live run explorer for JupyterLab: pick runs, a metric and a step range, and the plot redraws.

ipywidgets need a running kernel, so the static HTML report cannot show this: the phase notebooks
call ``explore`` only when their parameter ``explorer`` is True (default False). In the report the
figures' own plotly dropdowns do the picking instead.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from saelab.training.runs import load_run

DEFAULT_METRIC = "dead_frac"


def find_runs(root: str | Path) -> dict[str, Any]:
    """Every run directory (one holding config.json and metrics.parquet) under ``root``, loaded,
    keyed by its path relative to ``root`` (e.g. ``seed0/off``), sorted."""
    root = Path(root)
    dirs = sorted(p.parent for p in root.rglob("config.json") if (p.parent / "metrics.parquet").exists())
    return {str(d.relative_to(root)) if d != root else d.name: load_run(d) for d in dirs}


def phase_runs(run: Any) -> dict[str, Any]:
    """The runs a phase trained in this execution (a trained ``phases.PhaseRun``), labelled
    ``<profile> · seed<s> · <arm>``. Unlike ``find_runs`` over a folder, older runs left in
    ``out_dir`` by an earlier execution never show up among them."""
    return {f"{run.profile.name} · seed{seed} · {arm}": r for seed, arms in run.runs.items() for arm, r in arms.items()}


def _group(name: str) -> str:
    """The label without its last part: the runs of one seed (``quick · seed0``, or ``seed0`` for paths)."""
    for sep in (" · ", "/"):
        if sep in name:
            return name.rsplit(sep, 1)[0]
    return name


def metric_columns(runs: dict[str, Any]) -> list[str]:
    """Numeric metric columns present in every run (``step`` excluded), in the first run's order."""
    if not runs:
        return []
    frames = [r.metrics for r in runs.values()]
    first = [c for c in frames[0].columns if c != "step" and np.issubdtype(frames[0][c].dtype, np.number)]
    return [c for c in first if all(c in f.columns for f in frames[1:])]


def figure(runs: dict[str, Any], names: list[str], metric: str, steps: tuple[int, int] | None = None,
           log_y: bool = False) -> go.Figure:
    """``metric`` against the step for the runs ``names``, restricted to ``steps`` (inclusive), with a
    dotted line at each resampling of each run."""
    fig = go.Figure()
    for name in names:
        m = runs[name].metrics
        if steps is not None:
            m = m[(m["step"] >= steps[0]) & (m["step"] <= steps[1])]
        if metric in m:
            fig.add_trace(go.Scatter(x=m["step"], y=m[metric], mode="lines", name=name))
        for e in runs[name].events:
            if e.get("kind") == "resample" and (steps is None or steps[0] <= e["step"] <= steps[1]):
                fig.add_vline(x=e["step"], line={"dash": "dot", "width": 1, "color": "#d62728"}, opacity=0.4)
    fig.update_layout(xaxis_title="optimizer step", yaxis_title=metric, yaxis_type="log" if log_y else "linear",
                      height=450, margin={"t": 40}, legend={"font": {"size": 10}})
    return fig


def explore(root: Any, metric: str = DEFAULT_METRIC) -> Any:
    """An ipywidgets panel over the runs of ``root``: a trained ``phases.PhaseRun`` (its own runs,
    labelled by profile and seed: what the notebooks pass) or a folder (every run under it, old
    and new). Runs (multi-select, the first seed picked), metric (dropdown), step range (slider)
    and log y (checkbox); the figure redraws on every change. Returns the panel."""
    import ipywidgets as w
    from IPython.display import display

    runs = phase_runs(root) if hasattr(root, "runs") else find_runs(root)
    if not runs:
        return w.HTML(f"<i>no runs in {escape(str(getattr(root, 'out_dir', root)))}</i>")
    cols = metric_columns(runs)
    last = max(int(r.metrics["step"].max()) for r in runs.values())
    names = list(runs)
    pick = w.SelectMultiple(options=names, value=tuple(n for n in names if _group(n) == _group(names[0]))[:8],
                            rows=min(12, len(names)), description="runs")
    what = w.Dropdown(options=cols, value=metric if metric in cols else cols[0], description="metric")
    span = w.IntRangeSlider(value=(0, last), min=0, max=last, step=max(1, last // 200), description="steps",
                            continuous_update=False, layout=w.Layout(width="60%"))
    log = w.Checkbox(value=False, description="log y")
    out = w.Output()

    def redraw(*_: Any) -> None:
        out.clear_output(wait=True)
        with out:
            display(figure(runs, list(pick.value), what.value, span.value, log.value))

    for widget in (pick, what, span, log):
        widget.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([pick, w.VBox([what, log])]), span, out])
