"""Standalone offline HTML pages for ``saelab inspect`` and ``saelab autopsy``: the report's CSS,
plotly figures, and plotly.js written once beside the page (``plotly.min.js``, from
``plotly.offline.get_plotlyjs()``), so a folder of pages shares one copy and needs no network."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from saelab.fileio import write_atomic
from saelab.report.html import CSS, PLOTLY_JS, csp_meta, figure_scripts, glossary_html, provenance_line, write_plotly_js


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.4g}</td>'
        return f"<td>{escape(str(v))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: Path, title: str, verdict: str, sections: list[tuple[str, str | go.Figure]],
               subtitle: str = "") -> Path:
    """Write ``path`` (HTML) with a verdict paragraph first, then (heading, HTML or figure)
    sections; plotly.min.js goes beside it once."""
    path = Path(path)
    write_plotly_js(path.parent)
    parts = []
    for heading, body in sections:
        html = body.to_html(full_html=False, include_plotlyjs=False) if isinstance(body, go.Figure) else body
        parts.append(f"<h2>{escape(heading)}</h2>{html}")
    # the figures' inline scripts, allowed by hash; nothing else inline may run
    scripts = [src for p in parts for src in figure_scripts(p)]
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8">{csp_meta(scripts, plotly=True)}<link rel="icon" href="data:,">'
            f"<title>{escape(title)}</title><style>{CSS}</style>"
            f'<script src="{PLOTLY_JS}"></script></head><body><h1>{escape(title)}</h1>'
            f'<p class="muted">{escape(subtitle)} · {escape(provenance_line())}</p><h2>Verdict</h2>'
            f'<p class="verdict">{escape(verdict)}</p>{glossary_html()}'
            + "".join(parts) + "</body></html>")
    write_atomic(path, page)
    return path


# ----- saelab inspect -------------------------------------------------------------------------


def _split(values: list[float], dead: set[int]) -> tuple[list[float], list[float]]:
    d = [v for i, v in enumerate(values) if i in dead]
    a = [v for i, v in enumerate(values) if i not in dead]
    return d, a


def inspect_figures(rec: dict[str, Any]) -> list[tuple[str, go.Figure]]:
    """Firing-frequency histogram, margins (dead vs alive), and bias against alignment with the mean."""
    h = rec["histogram"]
    mids = [(a + b) / 2 for a, b in zip(h["edges"][:-1], h["edges"][1:])]
    fh = go.Figure(go.Bar(x=mids, y=h["counts"], width=h["edges"][1] - h["edges"][0], name="alive",
                          marker_color="#1f77b4"))
    fh.update_layout(title=f"log10 firing frequency of the alive latents ({h['dead']} dead latents never fire: not shown)",
                     xaxis_title="log10(fraction of rows on which the latent fires)", yaxis_title="latents",
                     height=360, margin={"t": 50})
    lat = rec["latents"]
    dead = set(rec["dead"])
    md, ma = _split(lat["margin"], dead)
    fm = go.Figure()
    fm.add_trace(go.Histogram(x=ma, name="alive", opacity=0.6, marker_color="#1f77b4"))
    fm.add_trace(go.Histogram(x=md, name="dead", opacity=0.7, marker_color="#d62728"))
    fm.update_layout(barmode="overlay", title="margin: largest (pre-activation - firing gate) over the rows; <= 0 never fired",
                     xaxis_title="margin (activation units)", yaxis_title="latents", height=360, margin={"t": 50})
    fs = go.Figure()
    for name, idx, colour in (("alive", [i for i in range(rec["n_latents"]) if i not in dead], "#1f77b4"),
                              ("dead", sorted(dead), "#d62728")):
        idx = idx[:5000]
        fs.add_trace(go.Scattergl(x=[lat["cos_mean"][i] for i in idx], y=[lat["b_enc"][i] for i in idx], mode="markers",
                                  name=name, marker={"color": colour, "size": 5, "opacity": 0.6},
                                  text=[f"latent {i}: {', '.join(rec['reasons'].get(str(i), [])) or '-'}" for i in idx]))
    fs.update_layout(title="encoder bias against the encoder row's cosine with the mean input",
                     xaxis_title="cos(W_enc row, mean encoder input)", yaxis_title="b_enc", height=420, margin={"t": 50})
    return [("Firing frequency", fh), ("How close the dead are to firing", fm), ("Bias and alignment with the data mean", fs)]


def inspect_page(rec: dict[str, Any], path: Path) -> Path:
    rows = [[r["name"], r["description"], r["n"], f"{100 * r['frac_of_dead']:.0f}%", r["measure"],
             r["dead_median"] if r["dead_median"] is not None else "-",
             r["alive_median"] if r["alive_median"] is not None else "-", r["cutoff"]] for r in rec["reason_summary"]]
    reasons = table(["reason", "what", "dead latents", "share of dead", "measure", "dead median", "alive median",
                     "cutoff"], rows)
    first = rec["dead"][:200]
    lat = rec["latents"]
    dead_rows = [[i, lat["margin"][i], lat["cos_mean"][i], lat["b_enc"][i], lat["enc_norm"][i],
                  rec["decoder_twins"].get(str(i), "-"), ", ".join(rec["reasons"][str(i)]) or "-"] for i in first]
    dead_table = table(["latent", "margin", "cos(W_enc, mean)", "b_enc", "||W_enc||", "decoder twin", "reasons"], dead_rows)
    note = "".join(f'<p class="muted">{escape(n)}</p>' for n in rec.get("notes", []))
    sections: list[tuple[str, Any]] = [("Reasons, dead compared with alive", reasons + note)]
    sections += inspect_figures(rec)
    sections.append((f"Dead latents (first {len(first)} of {rec['n_dead']})", dead_table))
    sub = (f"{rec['checkpoint']} ({rec['format']}, {rec['library_architecture']}; {rec['n_latents']} latents, "
           f"d_in {rec['d_in']}) on {rec['n_rows']:,} rows of {rec['source']}")
    return write_page(path, "saelab inspect: which latents are dead, and why", rec["verdict"], sections, sub)


# ----- saelab autopsy -------------------------------------------------------------------------


CURVE_POINTS = 4000  # rows drawn per curve at most: a browser stalls on millions of points


def thin(m: Any, columns: tuple[str, ...], points: int = CURVE_POINTS) -> Any:
    """The rows of ``m`` worth drawing: all of them when there are few, else the first, the last
    and, in each of ``points / (2 x columns)`` consecutive buckets, the rows of each column's
    minimum and maximum, so a spike or a collapse one row long stays visible."""
    n = len(m)
    cols = [c for c in columns if c in m]
    if n <= points or not cols:
        return m
    b = -(-n * 2 * len(cols) // points)  # rows per bucket
    pad = (-n) % b
    keep = [np.array([0, n - 1])]
    for c in cols:
        v = np.concatenate([m[c].to_numpy(np.float64), np.full(pad, np.nan)]).reshape(-1, b)
        base = np.arange(v.shape[0]) * b
        for fill, pick in ((-np.inf, np.argmax), (np.inf, np.argmin)):
            keep.append(base + pick(np.where(np.isnan(v), fill, v), axis=1))
    rows = np.unique(np.concatenate(keep))
    return m.iloc[rows[rows < n]]


def autopsy_figure(rec: dict[str, Any], m: Any) -> go.Figure:
    """Dead fraction, L0 and LR over the steps (``thin``ned to CURVE_POINTS rows), collapses
    shaded, events marked."""
    from plotly.subplots import make_subplots

    m = thin(m, ("dead_frac", "l0", "lr"))
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("dead latents (fraction)", "L0 (active latents per row)", "learning rate"))
    fig.add_trace(go.Scatter(x=m["step"], y=m["dead_frac"], name="dead fraction", line={"color": "#d62728"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=m["step"], y=m["l0"], name="L0", line={"color": "#1f77b4"}), row=2, col=1)
    if "lr" in m:
        fig.add_trace(go.Scatter(x=m["step"], y=m["lr"], name="LR", line={"color": "#555555"}), row=3, col=1)
    for c in rec["collapses"]:
        fig.add_vrect(x0=c["start_step"], x1=c["end_step"], fillcolor="#d62728", opacity=0.12, line_width=0)
    for e in rec["events"]:
        fig.add_vline(x=e["step"], line={"color": "#555555", "dash": "dash", "width": 1})
        fig.add_annotation(x=e["step"], y=1, yref="paper", text=e["kind"], showarrow=False, textangle=-90,
                           xanchor="left", font={"size": 10})
    fig.update_layout(height=720, margin={"t": 60}, xaxis3={"title": "step"})
    return fig


def autopsy_page(rec: dict[str, Any], m: Any, path: Path) -> Path:
    rows = []
    for n, c in enumerate(rec["collapses"], 1):
        ev = "; ".join(f"{e['kind']}@{e['step']} ({e['position']})" for e in c["coinciding"]) or "-"
        rows.append([n, c["start_step"], c["onset_step"], c["end_step"], c["trigger"], c["dead_before"] or 0.0,
                     c["dead_after"] or 0.0, c["l0_before"] or 0.0, c["l0_after"] or 0.0, ev])
    tab = table(["#", "start", "first seen", "end", "trigger", "dead before", "dead after", "L0 before", "L0 after",
                 "coinciding events"], rows) if rows else "<p>No collapse.</p>"
    mapping = table(["role", "column"], [[k, v] for k, v in rec["columns"].items()])
    sections: list[tuple[str, Any]] = [("Collapses", tab + f'<p class="muted">{escape(rec["note"])}</p>'),
                                       ("Curves", autopsy_figure(rec, m)), ("Columns used", mapping)]
    sub = f"{rec['log']}: {rec['n_rows']} logged rows, steps {rec['first_step']}-{rec['last_step']}"
    return write_page(path, "saelab autopsy: what collapsed, and what coincided with it", rec["verdict"], sections, sub)
