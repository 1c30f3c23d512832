"""How a verdict reads: what confirmed / refuted mean for this setup (good or bad news, by the
hypothesis kind), the one sentence a reader can act on, and user strings made safe for Markdown.

Shared by the phases' verdict cells (lab) and the report's pages (report.html draws the badges).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

# A verdict is evidence only over at least this many replicates: with fewer, the spread over seeds
# (the margin's standard error, saelab.lab.hypothesis.removes_deaths) is unmeasured (one) or a guess
# (two), so a verdict "in every replicate" is an indication. The quick and full profiles run 3.
MIN_REPLICATES = 3

# what confirmed / refuted mean for the researcher, per hypothesis kind
MEANING = {"cause": {"confirmed": "bad", "refuted": "good"}, "remedy": {"confirmed": "good", "refuted": "bad"},
           "fact": {"confirmed": "bad", "refuted": "good"}}


# characters Markdown would read as markup (emphasis, code, links, tables, escapes), as entities
_MD_SPECIAL = {c: f"&#{ord(c)};" for c in "`*_[]|\\#~"}


def md_text(text: Any) -> str:
    """A user string made safe for a Markdown cell: HTML escaped, and Markdown's own markup
    characters as entities, so it renders exactly as typed and never as markup (issue 14)."""
    return "".join(_MD_SPECIAL.get(c, c) for c in escape(str(text), quote=False))


def shown(value: Any, digits: int = 6) -> str:
    """A value as a reader sees it: floats at ``digits`` significant digits (0.0003, never the
    float noise 0.00030000000000000003 of 0.003 * 0.1), strings quoted, lists and dicts element by
    element; everything else as ``repr``."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(shown(v, digits) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' * (len(value) == 1)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{shown(k, digits)}: {shown(v, digits)}" for k, v in value.items()) + "}"
    return repr(value)


def md_code(text: Any) -> str:
    """A user string in monospace for a Markdown cell: inline HTML ``<code>`` (inside a Markdown
    code span an entity would show as typed), escaped by ``md_text``."""
    return f"<code>{md_text(text)}</code>"


# ----- one plotly.js for a folder of pages ----------------------------------------------------


# ----- verdicts by what they mean ---------------------------------------------------------------

SENTENCE = {  # (kind, verdict) -> what it means, in one clause
    ("cause", "confirmed"): "kills latents in this setup: its fix removes the deaths",
    ("cause", "refuted"): "is not what kills latents here: removing it leaves the deaths",
    ("remedy", "confirmed"): "works in this setup",
    ("remedy", "refuted"): "does not work in this setup",
    ("fact", "confirmed"): "holds in this setup",
    ("fact", "refuted"): "does not hold in this setup",
}


def meaning_of(v: Mapping[str, Any]) -> str:
    """"good" | "bad" | "unclear" | "na" for a verdict dict: its ``meaning`` when set, else read
    from its ``kind`` and word; "na" for not applicable; "unclear" when nothing says."""
    word = str(v.get("verdict", ""))
    if word == "not applicable":
        return "na"
    m = v.get("meaning")
    if m in ("good", "bad", "unclear"):
        return str(m)
    return MEANING.get(str(v.get("kind", "")), {}).get(word, "unclear")


MEANING_TITLE = {"good": "good news for this setup", "bad": "bad news for this setup", "unclear": "not settled by these runs",
                 "na": "cannot act on this base; no arm trained"}


def what_it_means(v: Mapping[str, Any]) -> str:
    """One sentence a reader can act on: "H1 kills latents in this setup: its fix removes the deaths.";
    a verdict over too few replicates (``indication``, set by ``saelab.lab.phases.PhaseRun.verdicts``)
    says it is an indication."""
    word, kind = str(v.get("verdict", "")), str(v.get("kind", ""))
    who = str(v.get("id") or str(v.get("hypothesis", "?")).split(" · ")[0])
    n = v.get("replicates")
    hedge = f" (an indication from {_replicates(n)}, not evidence)" if v.get("indication") else ""
    if word == "not applicable":
        return f"{who} cannot act on this base ({v.get('effect') or 'no arm trained'})."
    if word == "inconclusive":
        if isinstance(n, int) and n < 2:  # one replicate cannot disagree with itself
            return f"{who} is not settled: the effect is inside the margin{hedge} (more steps or replicates)."
        return f"{who} is not settled: the replicates disagree or the effect is inside the margin (more steps or replicates)."
    clause = SENTENCE.get((kind, word))
    if clause is None:
        return f"{who}: {word}{hedge}."
    return f"{who} {clause}{hedge}."


def _replicates(n: Any) -> str:
    return f"{n} replicate{'s' * (n != 1)}" if isinstance(n, int) else "too few replicates"


def indication_note(verdicts: list[Mapping[str, Any]]) -> str:
    """The sentence a verdict cell or page opens with when its verdicts rest on fewer than
    MIN_REPLICATES replicates; "" when none does."""
    counts = [v.get("replicates") for v in verdicts if v.get("indication")]
    if not counts:
        return ""
    n = min((c for c in counts if isinstance(c, int)), default=None)
    return (f"Indications, not evidence: these runs have {_replicates(n)} per arm, and a verdict needs at least "
            f"{MIN_REPLICATES} (with fewer the spread over seeds is not measured; at the smoke profile nothing is expected "
            f"to show). For evidence, run the quick or full profile ({MIN_REPLICATES} replicates) or pass "
            f"seeds={list(range(MIN_REPLICATES))}.")


def summary_sentence(verdicts: list[Mapping[str, Any]]) -> str:
    """The one sentence a phase page opens with: what its verdicts, together, mean."""
    if not verdicts:
        return "This phase wrote no verdicts."
    by = {m: [str(v.get("id", "?")) for v in verdicts if meaning_of(v) == m] for m in ("bad", "good", "unclear", "na")}
    parts = []
    if by["bad"]:
        parts.append(f"bad news for this setup from {', '.join(by['bad'])}")
    if by["good"]:
        parts.append(f"good news from {', '.join(by['good'])}")
    if by["unclear"]:
        parts.append(f"{', '.join(by['unclear'])} not settled")
    if by["na"]:
        parts.append(f"{', '.join(by['na'])} not applicable to this base")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


# ----- the glossary -----------------------------------------------------------------------------
