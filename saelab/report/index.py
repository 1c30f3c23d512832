"""The report's front page, ``index.html``: it opens on the answer (what kills the latents of this
setup, each cause's fix, the fixed configuration and the command that trains it, from the
``answer.json`` phase 06 writes), then the hypotheses table, the seed's validation table as an
arms x metrics grid, and a card per phase.

Plain HTML and CSS (the summary figure is an inline SVG), so the page needs no script at all and its
Content-Security-Policy allows none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saelab.fileio import write_atomic
from saelab.lab.answer import no_fixed
from saelab.lab.wording import MEANING_TITLE, indication_note, meaning_of, shown, what_it_means
from saelab.report.html import CSS, badge, csp_meta, e, glossary_html, provenance_line, term, verdict_badge
from saelab.report.tables import validation_table

ANSWER_FILES = ("answer.json", "fixed_config.json")
VALIDATION_STEM = "06_validation"

BASE_FILE = "base.json"  # the base's name, origin and assumed lines, written by run_lab beside the index


LAB_TIMING = "lab.json"  # run_lab's wall time and training time of the last batch (the index shows them)

def load_answer(out: Path) -> dict[str, Any] | None:
    """The answer of a report folder (``out/answer.json``, else phase 06's own copy), or None when
    phase 06 has not run or its file cannot be read."""
    for path in (Path(out) / "answer.json", Path(out) / "runs" / VALIDATION_STEM / "answer.json"):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(found, dict) and isinstance(found.get("ranking"), list):
            return found
    return None


def _pct(v: Any) -> str:
    return "?" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"


def _with_spread(d: Mapping[str, Any], key: str) -> str:
    """"34.1%", or "34.1% ± 2.0" when the numbers carry the replicates' sd (``<key>_sd``)."""
    sd = d.get(f"{key}_sd")
    return _pct(d.get(key)) + (f" ± {100 * sd:.1f}" if isinstance(sd, (int, float)) else "")


def _cause_meaning(row: Mapping[str, Any]) -> str:
    return meaning_of({"verdict": row.get("verdict"), "kind": "cause"})


def answer_bars_svg(ranking: list[Mapping[str, Any]], width: int = 720) -> str:
    """The answer's summary figure as an inline SVG: per cause, the dead fraction of the base and
    of the base with the cause's fix (pale bar: peak during training; dark bar: final)."""
    if not ranking:
        return ""
    label_w, bar_w, row_h = 70, width - 70 - 110, 18
    parts, y = [], 24
    parts.append(f'<text x="{label_w}" y="14" font-size="12" fill="#57606a">dead latents (% of d_sae): '
                 "pale = peak during training, dark = final</text>")
    for r in ranking:
        name = f"{r.get('id', '?')} · {str(r.get('cause', '')).split(' · ', 1)[-1]}"
        parts.append(f'<text x="0" y="{y + 12}" font-size="12" font-weight="600">{e(name)}</text>')
        y += row_h  # the cause's name on its own line, whole
        for who, key, pale, dark in (("base", "base", "#f5b7b1", "#c0392b"), ("with fix", "with_fix", "#a9dfbf", "#1e8449")):
            peak = r.get("peak_dead", {}).get(key)
            final = r.get("final_dead", {}).get(key)
            pw = bar_w * min(max(peak or 0.0, 0.0), 1.0)
            fw = bar_w * min(max(final or 0.0, 0.0), 1.0)
            parts.append(f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end" fill="#57606a">{who}</text>'
                         f'<rect x="{label_w}" y="{y}" width="{pw:.1f}" height="{row_h - 4}" fill="{pale}"/>'
                         f'<rect x="{label_w}" y="{y + 4}" width="{fw:.1f}" height="{row_h - 12}" fill="{dark}"/>'
                         f'<text x="{label_w + max(pw, fw) + 4:.1f}" y="{y + 12}" font-size="11">'
                         f"{e(_pct(peak))} / {e(_pct(final))}</text>")
            y += row_h
        y += 8
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" role="img" '
            f'aria-label="dead fraction of the base and with each fix" style="font-family:system-ui,sans-serif">'
            + "".join(parts) + "</svg>")


def answer_section(found: Mapping[str, Any] | None) -> str:
    """The index's first section: the ranked causes with verdict, peak and final dead (base and
    with the fix), the fix as ``--set`` lines, the summary figure, and the fixed configuration with
    the command that trains it; one line when phase 06 has not written an answer."""
    head = "<h2>What kills the latents of this setup</h2>"
    if found is None:
        return (f'<section class="answer">{head}<p class="lead">No answer yet: phase {VALIDATION_STEM} has not run '
                f"(it ranks the causes the other phases tested); run <code>saelab lab</code> with every phase.</p></section>")
    ranking = [r for r in found.get("ranking", []) if isinstance(r, Mapping)]
    if not ranking:
        return (f'<section class="answer">{head}<p class="lead">No phase tested a cause with an arm that removes it, '
                "so there is nothing to rank.</p></section>")
    confirmed = [r for r in ranking if r.get("verdict") == "confirmed"]
    if confirmed:
        top = confirmed[0]
        lead = (f"{len(confirmed)} of the {len(ranking)} causes tested kill latents here. The worst: "
                f"<b>{e(str(top.get('cause', '')).split(' · ', 1)[-1])}</b> ({e(top.get('id', ''))}); its fix takes "
                f"the peak dead fraction from {e(_pct(top['peak_dead'].get('base')))} to {e(_pct(top['peak_dead'].get('with_fix')))}.")
        if len(confirmed) > 1 and confirmed[1].get("tied_with_above"):
            tied = confirmed[1]
            lead += (f" Tied with it within the spread over replicates: <b>{e(str(tied.get('cause', '')).split(' · ', 1)[-1])}</b> "
                     f"({e(tied.get('id', ''))}).")
    else:
        lead = f"None of the {len(ranking)} causes tested is confirmed: no single fix removes the deaths beyond the margin."
    rows = []
    for i, r in enumerate(ranking, 1):
        p, f = r.get("peak_dead", {}), r.get("final_dead", {})
        fix = "<br>".join(f"<code>--set {e(x)}</code>" for x in r.get("fix", []))
        reps = r.get("replicates")
        note = f'<div class="muted">margin {100 * r["margin"]:.1f} points over {e(reps)} replicate{"s" * (reps != 1)}</div>' \
            if isinstance(r.get("margin"), (int, float)) and reps else ""
        combined = "" if r.get("combined", True) or r.get("verdict") != "confirmed" else \
            f'<div class="muted">not in the fixed configuration: {e(r.get("why") or "an earlier fix sets the same field")}</div>'
        if r.get("cost"):  # why it ranks after the fixes that keep the SAE sparse and reconstructing
            note += f'<div class="muted">ranked after the fixes that cost nothing: {e(r["cost"])}</div>'
        elif r.get("costs_reconstruction"):  # an answer.json written before the sparsity cost existed
            fv = r.get("fvu") or {}
            note += (f'<div class="muted">costs reconstruction: final FVU {e(_num(fv.get("base")))} → '
                     f'{e(_num(fv.get("with_fix")))}</div>')
        if r.get("removed") == "collapse":
            note += '<div class="muted">removes a collapse (the SAE reconstructed nothing), not deaths</div>'
        if r.get("dose"):  # the stronger doses tried (saelab.lab.dose) and what each left
            note += f'<div class="muted">{e(r["dose"])}</div>'
        tie = ' title="tied with the cause above: the difference is within the spread"' if r.get("tied_with_above") else ""
        rows.append(f"<tr><td{tie}>{'=' if tie else i}</td>"
                    f"<td><b>{e(r.get('id', ''))}</b> {e(str(r.get('cause', '')).split(' · ', 1)[-1])}"
                    f'<div class="muted">{e(r.get("phase", ""))}</div></td>'
                    f"<td>{badge(str(r.get('verdict', '?')), _cause_meaning(r))}</td>"
                    f"<td class=num>{e(_with_spread(p, 'base'))} → {e(_with_spread(p, 'with_fix'))}{note}</td>"
                    f"<td class=num>{e(_with_spread(f, 'base'))} → {e(_with_spread(f, 'with_fix'))}</td>"
                    f"<td>{fix}{combined}</td></tr>")
    table = (f"<table><tr><th>#</th><th>cause</th><th>{term('verdict', 'confirmed / refuted / inconclusive')}</th>"
             f"<th>{term('peak dead', 'peak / final dead')}: {term('base', 'base')} → with {term('fix', 'fix')}</th>"
             f"<th>{term('final dead', 'peak / final dead')}: base → with fix</th><th>{term('fix', 'fix')}</th></tr>"
             f"{''.join(rows)}</table>"
             '<p class="muted">Ranked by how many deaths each fix removes (peak, then final dead fraction; mean over '
             "the replicates); a fix that keeps the latents alive only by learning less (final FVU up) ranks after those "
             "that do not; = marks a cause tied with the one above within the spread. Red: the cause kills latents in this setup.</p>")
    if found.get("fixed_config"):
        sets = " ".join(f"--set {x}" for x in found.get("fixed_changes", []))
        proof = f'<p class="lead">{e(found["proof"])}</p>' if found.get("proof") else ""
        budget = found.get("dose_budget") or {}
        spent = (f'<p class="muted">Dose search: {e(budget.get("used"))} of a budget of {e(budget.get("budget"))} extra arms '
                 "trained (saelab lab --dose-budget).</p>") if budget else ""
        fixed = ("<h3>The fixed configuration</h3><p>The confirmed fixes, most harmful cause first, added until one "
                 "leaves no more than 5% of the latents dead by its own arm, at your base's own scale and on the lab's data: "
                 + " ".join(f"<code>--set {e(x)}</code>" for x in found.get("fixed_changes", []))
                 + f".</p>{proof}{spent}"
                 + '<p>Saved as <a href="fixed_config.json">fixed_config.json</a> beside this page; train it, from this folder, with</p>'
                 f'<pre class="cmd">saelab train --config fixed_config.json --out reports/fixed</pre>'
                 f'<p class="muted">or on your own base: <code>saelab train --config &lt;your config&gt; {e(sets)}</code></p>')
    else:
        fixed = f"<p>{e(no_fixed(found))}</p>"
    # the figure: the causes not refuted (the ones that matter), else the three most harmful
    shown = [r for r in ranking if r.get("verdict") != "refuted"][:MAX_BARS] or ranking[:3]
    figure = answer_bars_svg(shown)
    return f'<section class="answer">{head}<p class="lead">{lead}</p>{figure}{table}{fixed}</section>'


MAX_BARS = 8  # causes in the answer's summary figure


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _verdict_rows(results: list[Any]) -> str:
    rows = []
    for r in results:
        for v in r.verdicts:
            anchor = str(v.get("evidence", "")).lstrip("#")
            link = f'<a href="{e(r.stem)}.html#{e(anchor)}">evidence</a>' if anchor else f'<a href="{e(r.stem)}.html">page</a>'
            nums = v.get("numbers") or {}
            nums = nums if isinstance(nums, dict) else {"value": nums}
            numbers = "; ".join(f"{e(k)} = {e(_num(x))}" for k, x in nums.items())
            rows.append(f"<tr><td>{e(v.get('hypothesis', ''))}</td><td>{verdict_badge(v)}</td>"
                        f"<td>{e(what_it_means(v))}<div class=muted>{e(v.get('effect', ''))}</div></td>"
                        f"<td class=num>{numbers}</td><td>{e(v.get('phase') or r.stem)}</td><td>{link}</td></tr>")
    return "".join(rows)


def _card(r: Any, show_parameters: bool = False) -> str:
    links = f'<a href="{e(r.stem)}.html">report page</a> · <a href="{e(r.stem)}.ipynb">notebook</a>'
    err = f'<pre class="error">{e(r.error)}</pre>' if r.error else ""
    items = "".join(f"<li>{verdict_badge(v)} {e(v.get('hypothesis', ''))}</li>" for v in r.verdicts)
    verdicts = f"<ul>{items}</ul>" if items else '<p class="muted">no verdicts</p>'
    title = f'<p class="title">{e(r.title)}</p>' if r.title else ""
    when = f" · {e(r.finished[:16].replace('T', ' '))} UTC" if r.finished else ""
    return (f'<div class="card {e(r.status)}"><h3>{e(r.stem)} {badge(r.status, "good" if r.status == "ok" else "bad")}</h3>{title}'
            f'<p class="muted">{r.wall_s:.1f} s · profile {e(r.profile or "?")}{when}</p>'
            + (f'<p class="muted">parameters: {e(", ".join(f"{k}={shown(v)}" for k, v in r.parameters.items()) or "(none)")}</p>'
               if show_parameters else "")  # issue 14: phases run with different parameters say so
            + f"<p>{links}</p>{err}{verdicts}</div>")


def timing_text(results: list[Any], timing: Mapping[str, Any] | None) -> str:
    """The report's time: the last batch's wall clock and its training jobs' time (lab.json, which
    run_lab writes), else only the notebooks' total (a report from before lab.json)."""
    notebooks = sum(r.wall_s for r in results)
    if not timing or not isinstance(timing.get("wall_s"), (int, float)):
        return f"notebooks {notebooks:.0f} s"
    return (f"last run {timing['wall_s']:.0f} s wall clock (training jobs {timing.get('training_s', 0):.0f} s of job time, "
            f"notebooks {timing.get('notebooks_s', notebooks):.0f} s)")


def assumed_section(base: Mapping[str, Any] | None) -> str:
    """What the user's base left open or saelab does differently (``Base.assumed``), first on the page."""
    if not base or not base.get("assumed"):
        return ""
    items = "".join(f"<li>{e(a)}</li>" for a in base["assumed"])
    return (f'<div class="assumed"><p><b>Assumed about your base</b> {e(base.get("name", ""))} ({e(base.get("origin", ""))}): '
            f"it does not say these, or saelab does them differently (docs/interop-fields.md).</p><ul>{items}</ul></div>")


def index_page(results: list[Any], validation: list[dict[str, Any]], answer: Mapping[str, Any] | None = None,
               timing: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> str:
    """The index page's HTML for these phase results, validation rows, answer, ``timing`` (lab.json:
    the last batch's wall time and its training time) and ``base`` (base.json: what was assumed)."""
    n_failed = sum(r.status != "ok" for r in results)
    every = [v for r in results for v in r.verdicts]
    counts = {m: sum(meaning_of(v) == m for v in every) for m in ("bad", "good", "unclear", "na")}
    profiles = ", ".join(sorted({r.profile for r in results if r.profile})) or "?"
    status = f"{len(results) - n_failed} of {len(results)} phases ran" + (f", {n_failed} failed" if n_failed else "")
    verdicts = _verdict_rows(results)
    differ = len({json.dumps(r.parameters, sort_keys=True, default=str) for r in results}) > 1
    tally = " · ".join(f"{badge(MEANING_TITLE[m], m)} {n}" for m, n in counts.items() if n)
    note = indication_note(every)  # too few replicates: the same note as the notebooks' verdict cells
    note = f'<p class="lead">{e(note)}</p>' if note else ""
    hyp = (f"{note}<p>{tally}</p><table><tr><th>hypothesis</th><th>verdict</th><th>what it means</th><th>numbers</th>"
           f"<th>phase</th><th>link</th></tr>{verdicts}</table>" if verdicts else '<p class="muted">No phase wrote verdicts.</p>')
    val = (f"<h2>The seed's validation table</h2>{validation_table(validation).to_html()}" if validation else "")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{csp_meta()}<link rel="icon" href="data:,">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>saelab report</title>'
            f"<style>{CSS}</style></head><body><h1>saelab: why do the latents die?</h1>"
            f'<p class="muted">{e(status)} · profile {e(profiles)} · {e(timing_text(results, timing))}'
            f" · built {when} · {e(provenance_line())}</p>{assumed_section(base)}{answer_section(answer)}{glossary_html()}"
            f"<h2>Hypotheses</h2>{hyp}{val}<h2>Phases</h2>"
            f'<div class="cards">{"".join(_card(r, differ) for r in results)}</div></body></html>\n')


def build_index(out: Path, results: list[Any]) -> Path:
    """Write ``out/index.html`` from the phases' results, the validation rows phase 06 wrote
    (``runs/<stem>/validation.json``) and the answer (``load_answer``). Returns the path."""
    out = Path(out)
    validation: list[dict[str, Any]] = []
    for r in results:
        f = out / "runs" / r.stem / "validation.json"
        if f.exists():
            validation += json.loads(f.read_text())
    path = out / "index.html"
    try:
        timing = json.loads((out / LAB_TIMING).read_text())
    except (OSError, ValueError):
        timing = None
    base = json.loads((out / BASE_FILE).read_text()) if (out / BASE_FILE).is_file() else None
    write_atomic(path, index_page(results, validation, load_answer(out), timing if isinstance(timing, dict) else None, base))
    return path


def copy_answer(out: Path) -> list[Path]:
    """Copy phase 06's ``answer.json`` and ``fixed_config.json`` to the report folder's root (where
    the index links them); a file phase 06 no longer wrote is removed there. Returns the copies."""
    out, copied = Path(out), []
    src = out / "runs" / VALIDATION_STEM
    if not src.is_dir():
        return copied
    for name in ANSWER_FILES:
        if (src / name).is_file():
            write_atomic(out / name, (src / name).read_text())
            copied.append(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    return copied
