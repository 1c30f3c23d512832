"""What every page of a saelab report shares: the stylesheet, one plotly.js beside the pages, a
Content-Security-Policy, verdict badges coloured by what a verdict means, and the glossary.

Colours follow the researcher's reading, not the verdict's word: a *confirmed* cause is bad news
(it kills latents in this setup), a *confirmed* remedy good news; ``meaning`` (set by
``saelab.lab.hypothesis.judged``) says which, and ``meaning_of`` falls back on the hypothesis kind.

Every string that reaches a page goes through ``escape`` (``e``); the CSP is the second line of
defence: scripts only from the page's folder or with a listed hash, so an injected inline event
handler (``<img onerror=...>``) does not run even if some string escaped escaping.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from saelab.fileio import write_atomic
from saelab.lab.wording import MEANING_TITLE, meaning_of
from saelab.version import describe

PLOTLY_JS = "plotly.min.js"  # written once beside the pages; every page loads it from its own folder

BADGE_CSS = """.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#eaeef2;
white-space:nowrap}
.badge.bad,.badge.fail,.badge.failed{background:#ffd8d3;color:#82071e}
.badge.good,.badge.pass,.badge.ok{background:#d3f3da;color:#0a5c26}.badge.unclear{background:#fff1c2;color:#6e4b00}
.badge.na{background:#eaeef2;color:#57606a}"""  # verdict pills, also in the notebooks' page header (report/batch.py)

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#656d76;font-size:13px;margin:2px 0}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{border-bottom:1px solid #d8dee4;padding:6px 8px;
text-align:left;vertical-align:top}th{background:#f3f5f8}td.num{font-family:ui-monospace,monospace;font-size:12px}
code{font-family:ui-monospace,monospace;font-size:13px;background:#f3f5f8;padding:1px 4px;border-radius:4px}
pre.cmd{background:#f3f5f8;padding:8px 12px;border-radius:6px;white-space:pre-wrap;font-size:13px}
""" + BADGE_CSS + """
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;background:#fff}.card.failed{border-color:#cf222e}
.card h3{margin:4px 0}.card .title{margin:0;font-weight:600}.card ul{padding-left:18px;margin:6px 0}
pre.error{white-space:pre-wrap;background:#fff5f5;border-left:3px solid #cf222e;padding:6px;font-size:12px}
details.glossary{font-size:13px;margin:8px 0}details.glossary dt{font-weight:600;margin-top:4px}
details.glossary dd{margin:0 0 0 16px;color:#3d444d}
.answer{border:2px solid #d0d7de;border-radius:8px;padding:4px 16px 12px;background:#fbfcfd}
.lead{font-size:17px;margin:8px 0}abbr[title]{text-decoration:underline dotted;cursor:help}
"""


def e(x: Any) -> str:
    """``x`` as text made safe for HTML (content and quoted attributes)."""
    return escape(str(x), quote=True)


def write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js`` from the installed plotly (offline), written when absent or from
    another plotly version; pages load it with ``<script src="plotly.min.js">``."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    js = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(js.encode()):
        write_atomic(path, js)
    return path


# a plotly figure's own inline script: the one right after its graph div (plotly's to_html and the
# notebook renderer both write them so); an inline script anywhere else is not the figure's
FIGURE_SCRIPT = re.compile(r'<div\b[^>]*\bclass="plotly-graph-div"[^>]*>\s*</div>\s*<script(?:\s+type="text/javascript")?>(.*?)</script>',
                           re.S)


def figure_scripts(html: str) -> list[str]:
    """The inline scripts that draw the plotly figures of ``html`` (each allowed by its hash)."""
    return [m.group(1) for m in FIGURE_SCRIPT.finditer(html)]


def script_hash(source: str) -> str:
    """The CSP source expression that allows one inline script: ``'sha256-<base64>'``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def csp_meta(inline_scripts: Iterable[str] = (), plotly: bool = False) -> str:
    """A Content-Security-Policy ``<meta>``: nothing from the network; scripts only from the page's
    own folder (the shared plotly.js, when ``plotly``) and the listed inline ones by hash; inline
    styles and data:/blob: images (plotly draws heatmaps through them)."""
    hashes = " ".join(dict.fromkeys(script_hash(s) for s in inline_scripts))
    script = f"'self' {hashes}".strip() if plotly or hashes else "'none'"
    policy = (f"default-src 'none'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
              "font-src 'self' data:; connect-src 'none'; base-uri 'none'; form-action 'none'")
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'


def badge(word: str, meaning: str) -> str:
    """A verdict word in a pill coloured by ``meaning`` (good green, bad red, unclear amber)."""
    return f'<span class="badge {e(meaning)}" title="{e(MEANING_TITLE.get(meaning, ""))}">{e(word)}</span>'


def verdict_badge(v: Mapping[str, Any]) -> str:
    return badge(str(v.get("verdict", "?")), meaning_of(v))


GLOSSARY = {
    "dead latent": "a latent that fired on none of the held-out rows and not in the latest training window "
                   "(dead fraction = dead latents / d_sae).",
    "peak / final dead": "the largest dead fraction during training / the median over the last 10% of the logs.",
    "L0, L0 fraction": "latents active per input row (a count); L0 fraction = L0 / d_sae (the seed's target: 5%).",
    "FVU": "fraction of variance unexplained: squared reconstruction error over the input's variance around its "
           "mean (0 = perfect, 1 = no better than predicting the mean).",
    "MMCS": "mean max cosine similarity between the true features of synthetic data and the decoder's rows "
            "(1 = every true feature recovered).",
    "L1 / recon": "the sparsity penalty (alpha x L1) divided by the reconstruction loss.",
    "base": "your configuration; every arm is the base with one factor changed.",
    "arm": "one trained SAE: the base, or the base with one factor changed; arms of a phase see identical data.",
    "the seed": "the investigation plan this lab started from (seeds/004, with seed 000's reanimation loss): its "
                "pipeline, its Bugs #1-#4 and its validation table.",
    "Test 1": "the seed's minimal reproduction: 256 latents, batch 64, 10,000 steps, warmup 500, resampling every "
              "2,500 steps (preset seed-test1).",
    "replicate": "a repeat of every arm with another random number seed (initialization and data order); "
                 "a verdict must hold in every replicate.",
    "confirmed / refuted / inconclusive": "the hypothesis holds / does not hold in every replicate / neither. "
                                          "Colour = what it means: red bad news, green good news, amber unclear.",
    "margin": "the smallest fall in dead fraction that counts: the larger of 5 points and 2 standard errors of the "
              "paired falls over the replicates.",
    "fix": "the change (--set path=value) of the arm that removed a cause's deaths.",
}


def term(label: str, key: str) -> str:
    """``label`` with the glossary's definition of ``key`` on hover (``<abbr title>``)."""
    return f'<abbr title="{e(GLOSSARY[key])}">{e(label)}</abbr>'


def glossary_html() -> str:
    """The glossary as a collapsed ``<details>`` block (plain HTML: it works with no script)."""
    items = "".join(f"<dt>{e(t)}</dt><dd>{e(d)}</dd>" for t, d in GLOSSARY.items())
    return f'<details class="glossary"><summary>Terms used in this report</summary><dl>{items}</dl></details>'


def provenance_line() -> str:
    """"saelab 0.1.0 (commit ...)": which saelab rendered the page."""
    return describe()
