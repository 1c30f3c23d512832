"""HTML tables for notebooks and report pages: ``Table`` (plain HTML with inline styles, so it reads
the same in JupyterLab, nbconvert's pages and a browser without script; names never cut, numbers
formatted, every string escaped) and the tables the phases show: the autopsy and the seed's
validation table as an arms x metrics grid. ``saelab.report.plots`` re-exports them (``plots.Table``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd


def as_runs(runs: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    """Runs keyed by arm name; a list of runs is keyed by each run's ``.name``."""
    return dict(runs) if isinstance(runs, Mapping) else {r.name: r for r in runs}


def autopsy_events(run: Any) -> list[dict[str, Any]]:
    """Collapses of a run's autopsy (saelab.training.diagnose: ``{"collapses": [...]}``), each flattened to
    its scalar fields plus ``kind="collapse"`` and ``step`` (the onset step)."""
    a = getattr(run, "autopsy", None) or {}
    out = []
    for c in a.get("collapses", []) if isinstance(a, Mapping) else a:
        step = c.get("onset_step", c.get("step", c.get("start_step")))
        if step is not None:
            scalars = {k: v for k, v in c.items() if isinstance(v, (int, float, str, bool))}
            out.append({**scalars, "kind": "collapse", "step": int(step)})
    return out



def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


TONE = {"good": "#dff3e3", "bad": "#f8d7da", "unclear": "#fff1c2", "": ""}  # cell shades by what a value means
_TABLE_STYLE = ("border-collapse:collapse;font:13px/1.4 system-ui,sans-serif;margin:6px 0 14px")
_TH = "border-bottom:2px solid #c8d1dc;background:#eef2f7;padding:5px 9px;text-align:left;vertical-align:bottom"
_TD = "border-bottom:1px solid #e1e6ec;padding:4px 9px;vertical-align:top"


def _cell_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


@dataclass
class Table:
    """A formatted table for notebooks and report pages: plain HTML with inline styles, so it reads
    the same in JupyterLab, in nbconvert's page and in a browser without script. Columns size to
    their content and names never wrap or get cut (a wide table scrolls sideways); numbers show 4
    significant digits, missing ones a dash; every string is escaped. ``tones`` shades cells by
    what they mean ("good" | "bad" | "unclear" | "", one per cell, same shape as ``rows``)."""

    header: list[str]
    rows: list[list[Any]]
    title: str = ""
    tones: list[list[str]] | None = None
    note: str = ""  # a line under the table
    index_columns: int = 1  # leading columns that hold names (never wrapped)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, title: str = "", note: str = "") -> Table:
        """A DataFrame as a Table; a named or multi-level index becomes leading name columns."""
        named = [n for n in df.index.names if n is not None]
        frame = df.reset_index() if named else df
        return cls([str(c) for c in frame.columns], frame.to_numpy(dtype=object).tolist(), title, note=note,
                   index_columns=max(len(named), 1))

    def to_html(self) -> str:
        e = lambda x: escape(str(x))  # noqa: E731
        head = "".join(f'<th style="{_TH}">{e(h)}</th>' for h in self.header)
        body = []
        for i, row in enumerate(self.rows):
            cells = []
            for j, v in enumerate(row):
                style = _TD + (";white-space:nowrap;font-weight:600" if j < self.index_columns else "")
                if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                    style += ";text-align:right;font-variant-numeric:tabular-nums"
                tone = self.tones[i][j] if self.tones else ""
                if TONE.get(tone):
                    style += f";background:{TONE[tone]}"
                cells.append(f'<td style="{style}">{e(_cell_text(v))}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        title = f'<div style="font:600 15px system-ui,sans-serif;margin-top:8px">{e(self.title)}</div>' if self.title else ""
        note = f'<div style="font:12px system-ui,sans-serif;color:#57606a">{e(self.note)}</div>' if self.note else ""
        return (f'<div class="saelab-table" style="overflow-x:auto">{title}<table style="{_TABLE_STYLE}">'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}</div>")

    def _repr_html_(self) -> str:
        return self.to_html()


def autopsy_table(runs: Mapping[str, Any]) -> Table:
    """Collapses of every arm (saelab.training.diagnose's autopsy) with what triggered them, the change in
    dead fraction and L0, and the event they coincide with."""
    rows = []
    for arm, run in as_runs(runs).items():
        evs = autopsy_events(run)
        for e in evs:
            span = f"{e.get('start_step', e['step'])}–{e.get('end_step', e['step'])}"
            dead = f"{_fmt(e.get('dead_before', ''))} → {_fmt(e.get('dead_after', ''))}"
            l0 = f"{_fmt(e.get('l0_before', ''))} → {_fmt(e.get('l0_after', ''))}"
            suspect = e.get("coincides_with", e.get("attribution", "")) or "none found"
            if e.get("coincides_step") is not None:
                suspect += f" at step {e['coincides_step']} ({e.get('coincides_distance', '?')} steps before onset)"
            rows.append([arm, e["step"], span, e.get("trigger", ""), dead, l0, suspect])
        if not evs:
            rows.append([arm, "—", "", "", "", "", "no collapse detected"])
    return Table(["arm", "onset step", "steps", "trigger", "dead fraction", "L0", "coincides with"], rows,
                 "Autopsy: collapses and the events they coincide with",
                 note="Coinciding is not causing: only an arm that removes the event can show that.")


def validation_table(rows: pd.DataFrame | list[Mapping[str, Any]]) -> Table:
    """The seed's validation metrics (rows with arm, metric, value, target, range, pass) as an
    arms x metrics grid: each cell the value (mean over replicates) with pass / FAIL, shaded
    green / red (n/a: not applicable to the arm); the header states each metric's target and
    acceptable range."""
    rows = pd.DataFrame(rows).to_dict("records")
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    spec = {r["metric"]: (r.get("target", ""), r.get("range", "")) for r in rows}
    at = {(r["arm"], r["metric"]): r for r in rows}
    grid, tones = [], []
    for arm in arms:
        line, shade = [arm], [""]
        for m in metrics:
            r = at.get((arm, m))
            ok = None if r is None else r.get("pass")
            word = "pass" if ok is True else "FAIL" if ok is False else "n/a"
            line.append("" if r is None else f"{_cell_text(r.get('value'))} {word}")
            shade.append("good" if ok is True else "bad" if ok is False else "")
        passed = sum(at.get((arm, m), {}).get("pass") is True for m in metrics)
        judged = sum(at.get((arm, m), {}).get("pass") is not None for m in metrics)
        line.append(f"{passed} of {judged}")
        shade.append("good" if judged and passed == judged else "bad" if judged else "")
        grid.append(line)
        tones.append(shade)
    header = ["arm", *[f"{m} (target {spec[m][0]}, pass {spec[m][1]})" for m in metrics], "metrics passed"]
    return Table(header, grid, "The seed's validation table: each arm against each metric", tones,
                 note="Value: mean over the replicates; pass only if every replicate passes.")
