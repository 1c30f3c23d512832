"""The answer first: which causes kill the latents of this setup, by how much, and the smallest
change that brings them back.

Every cause a phase tested by an arm that removes it carries a ``fix`` (the arm and the fields it
changed) and the intervention numbers of ``hypothesis.removes_deaths``. ``ranking`` orders them by
how many deaths their fix removes (peak, then final dead fraction); ``fixed_changes`` takes the
smallest set of confirmed fixes, most harmful cause first, that leaves no more than MIN_EFFECT of
the latents dead by their own arms, a later fix never overriding a field an earlier one set;
``write`` saves ``answer.json`` and the fixed configuration; ``write_answer`` does all of it for
phase 06 and ``markdown`` states it. The seed's Validation Metrics table (``validation_rows``,
``validation_verdicts``) is the check the fixed configuration's arm must pass.

This module owns the answer; the report only draws it (report/index.py, tables.validation_table,
plots.answer_bars).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from saelab.config import RunConfig
from saelab.fileio import write_json
from saelab.lab.base import STEP_FIELDS, Base, file_rows
from saelab.lab.hypothesis import MIN_EFFECT, SPREAD_FACTOR, health
from saelab.lab.verdicts import (
    DEAD_MAX,
    L0_RANGE,
    RATIO_RANGE,
    RECON_MAX,
    RunsBySeed,
    late_collapses,
    peak,
    per_seed,
    rule,
    stats,
    tail,
    verdict,
)
from saelab.lab.wording import md_code, md_text
from saelab.training.metrics import COLLAPSE_FVU

VERDICT_ORDER = {"confirmed": 0, "inconclusive": 1, "refuted": 2}
FVU_COST = 0.02  # final FVU points a fix may add before it counts as keeping latents alive by learning less
L0_COST = 2.0  # ... and the factor its L0 may grow by, when it ends above the seed's acceptable L0 (L0_RANGE[1])


def load_phase_verdicts(root: Path, skip: str = "") -> list[dict[str, Any]]:
    """The verdicts of every phase under ``root`` (``root/<stem>/verdicts.json``), ``skip`` left out;
    a file that cannot be read is left out (the phase's own page reports it)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(root).glob("*/verdicts.json")):
        if path.parent.name == skip or path.parent.name.startswith("."):  # a result set aside (saelab.report.batch.set_aside)
            continue
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out += [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []
    return out


def _fix_lines(changes: dict[str, Any]) -> list[str]:
    """``--set`` lines: strings quoted, floats at 6 significant digits (0.01, not 0.010000000000000002)."""
    def fmt(v: Any) -> str:
        if isinstance(v, str):
            return json.dumps(v)
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    return [f"{k}={fmt(v)}" for k, v in changes.items()]


def _dead(n: dict[str, Any], which: str, arm: str) -> dict[str, Any]:
    """One dead fraction (``which`` = peak | final) of the base and of the fix arm: means over the
    replicates and the mean paired fall; with several replicates also their standard deviations
    (``base_sd``, ``with_fix_sd``) and the standard error of the fall (``fall_se``)."""
    out = {"base": n.get(f"base_{which}_dead"), "with_fix": n.get(f"{arm}_{which}_dead"), "fall": n.get(f"{which}_reduction")}
    for key, name in (("base_sd", f"base_{which}_dead_sd"), ("with_fix_sd", f"{arm}_{which}_dead_sd"),
                      ("fall_se", f"{which}_reduction_se")):
        if name in n:
            out[key] = n[name]
    return out


def ranking(verdicts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Causes with a fix arm, most harmful first: confirmed before inconclusive before refuted;
    within each, fixes that keep the SAE sparse and reconstructing before those that keep latents
    alive only by making it dense (``costs_sparsity``: denser than the base by ``costs_sparsity``,
    and either moving the sparsity itself, SPARSITY_TARGETS, or denser than another confirmed fix
    that removes as many deaths, ``sparser_alternative``) or by
    learning less (``costs_reconstruction``) or while the SAE it leaves has still collapsed
    (``still_collapsed``;
    ``cost`` says which, with numbers), then by the mean fall of the peak dead fraction the fix
    brings, then of the final one, then by the L0 and FVU the fix ends with relative to the base's
    (FVU in the original space: ``hypothesis.health``). A row whose fall is within the spread of the
    row above, or equal to it, is marked ``tied_with_above``; ``removed`` names what the fix
    removed (deaths or a collapse)."""
    rows = []
    for v in verdicts:
        fix, n = v.get("fix"), v.get("numbers") or {}
        if v.get("kind") != "cause" or not fix or v.get("verdict") not in VERDICT_ORDER or "peak_reduction" not in n:
            continue
        arm = fix["arm"]
        rows.append({
            "cause": v["hypothesis"], "id": v["id"], "phase": v["phase"], "verdict": v["verdict"],
            "peak_dead": _dead(n, "peak", arm), "final_dead": _dead(n, "final", arm),
            "fvu": {"base": n.get("base_final_fvu"), "with_fix": n.get(f"{arm}_final_fvu")},
            "l0": {"base": n.get("base_final_l0"), "with_fix": n.get(f"{arm}_final_l0"),
                   "base_frac": n.get("base_final_l0_frac"), "with_fix_frac": n.get(f"{arm}_final_l0_frac"), "d_in": n.get("d_in")},
            "collapsed": {"base": n.get("base_collapsed"), "with_fix": n.get(f"{arm}_collapsed")},
            "removed": n.get("removed") if v["verdict"] == "confirmed" else None,
            "margin": n.get("margin"), "replicates": n.get("replicates"),
            "fix": _fix_lines(fix["changes"]), "fix_changes": fix["changes"], "fix_arm": arm,
            **({"dose_search": v["dose_search"], "dose": dose_sentence(v["dose_search"])} if v.get("dose_search") else {})})
    for r in rows:
        # a fix that changes the data (drops rows, reorders them) is measured on other held-out rows:
        # its FVU is not comparable with the base's, so it is not judged a cost
        r["fvu"]["comparable"] = not any(k.startswith("data.") for k in r["fix_changes"])
        r["costs_reconstruction"] = r["fvu"]["comparable"] and costs_reconstruction(r["fvu"])
        r["still_collapsed"] = still_collapsed(r["collapsed"])
    for r in rows:
        r["knob_dense"] = costs_sparsity(r["l0"], r["collapsed"]) and any(k in SPARSITY_TARGETS for k in r["fix_changes"])
    for r in rows:
        alt = sparser_alternative(r, rows) if costs_sparsity(r["l0"], r["collapsed"]) else None
        r["costs_sparsity"], r["sparser"] = alt is not None or r["knob_dense"], alt
    for r in rows:
        del r["knob_dense"]
        r["cost"] = cost_sentence(r)
    # deaths removed first; a fix that keeps latents alive only by learning less, by making the SAE
    # dense or while the SAE it leaves has still collapsed after those that do not, and among those, one
    # whose code no longer compresses last; equal falls by what they cost (L0 growth, then FVU)
    rows.sort(key=lambda r: (VERDICT_ORDER[r["verdict"]], r["costs_reconstruction"] or r["costs_sparsity"] or r["still_collapsed"],
                             r["costs_sparsity"] and no_compression(r["l0"]),
                             -round(r["peak_dead"]["fall"] or 0, 9), -round(r["final_dead"]["fall"] or 0, 9),
                             _ratio(r["l0"]), _ratio(r["fvu"]) if r["fvu"]["comparable"] else 1.0))
    for i, r in enumerate(rows):
        r["tied_with_above"] = i > 0 and _tied(rows[i - 1], r)
    return rows


def _ratio(pair: dict[str, Any]) -> float:
    """with_fix / base (1.0 when either is missing): how much a fix moves L0 or FVU."""
    b, f = pair.get("base"), pair.get("with_fix")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (b, f)) or b <= 0:
        return 1.0
    return f / b


def no_compression(l0: dict[str, Any]) -> bool:
    """Does the fix's code fire as many latents per row as the input has dimensions (L0 >= d_in,
    from a base below it)? Such a code can copy any input through d_in latents: it no longer
    compresses, so among the fixes that cost something it is the dearest. TopK's k x4 on a
    d_in 16 input with k 4 reached exactly that (L0 16), ahead of whitening (FVU 0.015 -> 0.145)
    by deaths removed alone."""
    d_in, b, f = l0.get("d_in"), l0.get("base"), l0.get("with_fix")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (d_in, b, f)):
        return False
    return f >= d_in > b


def _mostly(share: Any) -> bool:
    """Is a share of the replicates (``hypothesis.health``'s collapsed, averaged) most of them?"""
    return isinstance(share, (int, float)) and share >= 0.5


def costs_sparsity(l0: dict[str, Any], collapsed: dict[str, Any] | None = None) -> bool:
    """Does the fix keep the latents alive only by making the SAE dense? Its final L0 grows by more
    than L0_COST times the base's and ends above the seed's acceptable L0 fraction (7% of the
    latents per row): alpha x0.01 took L0 from 7.4 to 110 of 512 latents (21%) where LR x0.3 kept
    it at 16 (3%). TopK's k x4 stays under 7% on any real dictionary. From a collapsed base (L0 < 1
    per row: LR 30x too high left 0.98) a larger L0 is the recovery, not a cost, and so from one that
    learned nothing (FVU >= COLLAPSE_FVU in most replicates): an unshuffled stream's base ended at FVU
    1.24 on shuffled held-out rows (it fitted the last document) at L0 1.45; the shuffle took it to
    FVU 0.043 at L0 28.6."""
    frac, base = l0.get("with_fix_frac"), l0.get("base")
    if isinstance(base, (int, float)) and base < 1:  # a collapsed base: any SAE that works has a larger L0
        return False
    if _mostly((collapsed or {}).get("base")):  # collapsed by its FVU (learned nothing): the same
        return False
    return _ratio(l0) > L0_COST and isinstance(frac, (int, float)) and frac > L0_RANGE[1]


# fields that set the SAE's sparsity itself: a fix that moves them toward density keeps latents alive
# by making the SAE dense by definition (alpha x0.01; TopK's k x4 on 64 latents, 6% -> 25% per row)
SPARSITY_TARGETS = ("penalty.alpha", "sae.k")


def sparser_alternative(r: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The confirmed fix that shows ``r``'s density is a cost, not the price of any fix (unless ``r``
    moves a SPARSITY_TARGETS field, which is a cost on its own): a fix that is not dense by moving
    the sparsity itself and does not learn less (an alpha lowered 10x ending at L0 7.4 from 1.45
    shows nothing about a shuffled stream ending at the control's L0 28.6); it removes
    about as many deaths (its peak fall at least ``r``'s less MIN_EFFECT) and ends at an L0 at most
    1 / L0_COST of ``r``'s; None when there is none. Without one, a fix that leaves the SAE at a
    toy dictionary's healthy density (a 64-latent SAE fires 40% of its latents per row at the
    alpha its control trains with) is not ranked after fixes that remove far fewer deaths: a
    JumpReLU threshold started 1,000x too high left 67% dead at L0 1.2; the lower threshold took it
    to 3% at L0 26 while the sparser fixes left 38% and 52%."""
    fall, l0 = r["peak_dead"].get("fall"), r["l0"].get("with_fix")
    if fall is None or not isinstance(l0, (int, float)):
        return None
    for o in rows:
        ofall, ol0 = o["peak_dead"].get("fall"), o["l0"].get("with_fix")
        # an alternative that is itself dense by moving the sparsity, that learns less or that leaves the
        # SAE collapsed shows nothing
        if (o is not r and o["verdict"] == "confirmed" and not o.get("knob_dense") and not o.get("costs_reconstruction")
                and not o.get("still_collapsed")
                and ofall is not None and ofall >= fall - MIN_EFFECT and isinstance(ol0, (int, float)) and ol0 * L0_COST <= l0):
            return {"id": o["id"], "l0": ol0, "peak_with_fix": o["peak_dead"].get("with_fix")}
    return None


def cost_sentence(r: dict[str, Any]) -> str:
    """Why a fix ranks after the others, in numbers ("" when it costs nothing)."""
    parts = []
    if r.get("costs_sparsity"):
        lv = r["l0"]
        alt = r.get("sparser") or {}
        parts.append(f"keeps latents alive by making the SAE dense: L0 {lv['base']:.3g} -> {lv['with_fix']:.3g} per row "
                     f"({100 * lv['with_fix_frac']:.0f}% of the latents"
                     + (f", as many as the input's {lv['d_in']} dimensions: the code no longer compresses)" if no_compression(lv) else ")")
                     + (f", where {alt['id']}'s fix removes as many deaths at L0 {alt['l0']:.3g}" if alt else ""))
    if r.get("costs_reconstruction"):
        fv = r["fvu"]
        parts.append(f"costs reconstruction: final FVU {fv['base']:.3g} with the base, {fv['with_fix']:.3g} with this fix")
    elif r.get("still_collapsed"):
        fv, lv = r["fvu"], r["l0"]
        parts.append("leaves the SAE collapsed: it still reconstructs nothing"
                     + (f" (final FVU {fv['with_fix']:.3g}, L0 {lv['with_fix']:.3g} per row)"
                        if isinstance(fv.get("with_fix"), (int, float)) and isinstance(lv.get("with_fix"), (int, float)) else ""))
    return "; ".join(parts)


def still_collapsed(collapsed: dict[str, Any]) -> bool:
    """Does the SAE the fix leaves still reconstruct nothing (``hypothesis.health``'s collapse, FVU >=
    COLLAPSE_FVU or L0 < 1 per row, in most replicates)? Its latents may fire again, but the SAE has
    not recovered: Adam's beta1 = 0 on an unshuffled stream took the dead 42.2% -> 26.0% and left FVU
    at 1.20, where the shuffle (21.9% dead) took it to 0.043. Such a fix ranks after those whose SAE
    works, and shows nothing about another fix's density (``sparser_alternative``)."""
    return _mostly(collapsed.get("with_fix"))


def costs_reconstruction(fvu: dict[str, Any]) -> bool:
    """Does the fix keep the latents alive only by learning less? Its final FVU (fraction of
    variance unexplained) is above the base's by more than FVU_COST (absolute) or a tenth of the
    base's: a learning rate 10x lower keeps every latent alive by barely training (FVU 1.0 -> 1.25)."""
    b, f = fvu.get("base"), fvu.get("with_fix")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (b, f)):
        return False
    return f > b + max(FVU_COST, 0.1 * abs(b))


def _tied(above: dict[str, Any], r: dict[str, Any]) -> bool:
    """Two confirmed causes whose fixes remove as many deaths within twice the standard error of
    their difference (paired falls, known with several replicates), or identical falls whatever
    the number of replicates (one replicate has no spread, but 6.4% -> 0% twice is a tie): the
    order between them is noise. A fix that costs (``cost``) is never tied with one that does not."""
    if above["verdict"] != "confirmed" or r["verdict"] != "confirmed" or bool(above.get("cost")) != bool(r.get("cost")):
        return False
    a, b = above["peak_dead"], r["peak_dead"]
    if a.get("fall") is None or b.get("fall") is None:
        return False
    se = math.hypot(a["fall_se"], b["fall_se"]) if "fall_se" in a and "fall_se" in b else 0.0
    return abs(a["fall"] - b["fall"]) <= max(SPREAD_FACTOR * se, 1e-9)


def fixed_changes(ranked: list[dict[str, Any]], enough: float = MIN_EFFECT) -> dict[str, Any]:
    """The smallest combination of confirmed fixes that brings the latents back: most harmful cause
    first, adding the next fix only while the best fix taken so far still leaves more than
    ``enough`` of the latents dead at the end (by its own arm: 26% -> 0% with a centered b_dec needs
    nothing else; a fix that leaves less dead at the end than at the peak is judged by what it
    leaves). A fix that would set a field an earlier fix already set, to another value, is left
    out. Each confirmed row gets ``combined`` (True / False) and, when left out, ``why``. Phase 06
    trains the result and ``write_answer`` reports what that run measured."""
    out: dict[str, Any] = {}
    left = float("inf")  # the final dead fraction the fixes taken so far leave, by the best one's own arm
    for r in ranked:
        if r["verdict"] != "confirmed":
            continue
        ch = r["fix_changes"]
        if r.get("cost"):
            r["combined"], r["why"] = False, r["cost"]
            continue
        if left <= enough:
            r["combined"], r["why"] = False, f"not needed: the fixes above already leave {100 * left:.1f}% dead by their own arms"
            continue
        if any(k in out and out[k] != v for k, v in ch.items()):
            r["combined"], r["why"] = False, "sets a field an earlier fix already set to another value"
            continue
        r["combined"] = True
        out |= ch
        with_fix = r["final_dead"].get("with_fix")
        left = min(left, with_fix if isinstance(with_fix, (int, float)) else float("inf"))
    return out


def at_base_scale(changes: dict[str, Any], base: Base, sized: RunConfig) -> dict[str, Any]:
    """``changes`` measured on the profile-sized base, for the user's own base: step counts keep
    their share of the run (a warmup of 10 of 1,000 steps is 100 of the base's 10,000), and k and
    AuxK's k their share of the latents (k = 32 of 256 is 256 of 2,048), as ``base.sized`` sized them."""
    out = dict(changes)
    ratio = base.config.steps / sized.steps
    for path in STEP_FIELDS:
        if path in out and isinstance(out[path], int) and ratio != 1:
            out[path] = max(1, round(out[path] * ratio))
    width = base.config.sae.d_sae / sized.sae.d_sae
    for path in ("sae.k", "aux.auxk_k"):
        if path in out and isinstance(out[path], int) and width != 1:
            out[path] = max(1, min(base.config.sae.d_sae, round(out[path] * width)))
    return out


def on_lab_data(base: Base, sized: RunConfig) -> dict[str, Any]:
    """What the user's base needs to train on the data the lab trained on (``saelab lab --data``):
    its source; for a source other than synthetic rows, d_in from the source unless the base pins
    it, and for a file the held-out rows the lab kept (a quarter of a small file) unless pinned."""
    src = sized.data.source
    if src == base.config.data.source:
        return {}
    out: dict[str, Any] = {"data.source": src}
    if src != "synthetic" and "sae.d_in" not in base.pinned:
        out["sae.d_in"] = 0
    if src.startswith("file:") and "eval_rows" not in base.pinned and (rows := file_rows(src)):
        out["eval_rows"] = max(1, min(base.config.eval_rows, rows // 4))
    return out


def write(out_dir: Path, ranked: list[dict[str, Any]], fixed: RunConfig | None, base: Base,
          changes: dict[str, Any], measured: dict[str, Any] | None = None, search: dict[str, Any] | None = None) -> Path:
    """``out_dir/answer.json`` (the ranking, most harmful first, the fixed configuration, what its own
    run measured, and the dose search) and, when some fix was confirmed, ``out_dir/fixed_config.json``
    (train it with ``saelab train --config``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    answer = {"base": base.name, "base_origin": base.origin, "ranking": [{k: v for k, v in r.items() if k != "fix_changes"}
                                                                        for r in ranked],
              "fixed_changes": _fix_lines(changes), "fixed_config": fixed.to_dict() if fixed else None,
              "fixed_run": measured, "dose_budget": search}
    answer["proof"] = proof(answer)
    write_json(out_dir / "answer.json", answer)
    if fixed is not None:
        (out_dir / "fixed_config.json").write_text(fixed.to_json() + "\n")
    return out_dir / "answer.json"


def measure(runs: RunsBySeed, arm: str = "fixed") -> dict[str, Any] | None:
    """What arm ``arm`` measured over the replicates that trained it (means, and sds with several):
    final and peak dead fraction, L0 per row and as a share of the latents, dense share, FVU in the
    original space, collapsed (the share of the replicates); None when no replicate trained it."""
    mine = [r[arm] for r in runs.values() if arm in r]
    if not mine:
        return None
    hs = [health(r) for r in mine]
    cols = {"dead": [h["dead"] for h in hs], "peak_dead": [peak(r, "dead_frac") for r in mine], "l0": [h["l0"] for h in hs],
            "l0_frac": [h["l0_frac"] for h in hs], "dense": [h["dense"] for h in hs], "fvu": [h["fvu"] for h in hs],
            "collapsed": [h["collapsed"] for h in hs]}
    out: dict[str, Any] = {"arm": arm, "replicates": len(mine)}
    for k, v in cols.items():
        st = stats(v)
        out[k] = st["mean"]
        if len(mine) > 1:
            out[f"{k}_sd"] = st["sd"]
    out["meets_margin"] = bool(out["dead"] <= MIN_EFFECT)
    return out


def proof(found: dict[str, Any]) -> str:
    """What the fixed configuration's own run (phase 06, arm ``fixed``) measured, as a sentence;
    when it leaves more than MIN_EFFECT dead, says so, names the best tested change (the ranked fix
    that left the fewest dead by its own arm) with its number, and what remains. "" before phase
    06 trained it (or when there is no fixed configuration)."""
    m = found.get("fixed_run")
    if not found.get("fixed_config") or not m:
        return ""
    line = (f"Its own run (phase 06, arm `fixed`, {m['replicates']} replicate{'s' * (m['replicates'] != 1)}) measured: "
            f"{_pct(m['dead'])} of the latents dead at the end (peak {_pct(m['peak_dead'])}), L0 {m['l0']:.3g} per row "
            f"({_pct(m['l0_frac'])} of the latents), FVU {m['fvu']:.3g}.")
    if m["meets_margin"] and (m["fvu"] >= COLLAPSE_FVU or m["l0"] < 1):  # alive because nothing was learned
        return line + (f" That is within the {100 * MIN_EFFECT:.0f}% margin on deaths, but the run has learned nothing "
                       f"(FVU {m['fvu']:.3g} >= {COLLAPSE_FVU}" + (f", L0 {m['l0']:.3g} < 1" if m["l0"] < 1 else "")
                       + "): no latent can be called alive or dead by it; train longer (a larger --profile) before trusting it.")
    if m["meets_margin"] and m.get("cost"):  # alive, but at a cost the ranking would hold against a fix
        return line + (f" That is within the {100 * MIN_EFFECT:.0f}% margin on deaths, but against the base's own run in this "
                       f"phase it {m['cost']}: weigh that before adopting it.")
    if m["meets_margin"] and m["l0_frac"] > L0_RANGE[1]:  # not a cost against the base (as dense, or collapsed), still not sparse
        base = f" (the base's own run: L0 {m['base_l0']:.3g})" if isinstance(m.get("base_l0"), (int, float)) else ""
        return line + (f" That is within the {100 * MIN_EFFECT:.0f}% margin on deaths, but the SAE is not sparse: "
                       f"{_pct(m['l0_frac'])} of the latents fire per row, above the {100 * L0_RANGE[1]:.0f}% the validation "
                       f"table accepts{base}; the sparsity is a separate problem from the deaths.")
    if m["meets_margin"]:
        return line + f" That is within the {100 * MIN_EFFECT:.0f}% margin."
    line += (f" That is more than the {100 * MIN_EFFECT:.0f}% margin: the lab found no fix that brings the deaths under it "
             "without a cost (making the SAE dense or reconstructing worse).")
    tested = [r for r in found.get("ranking", []) if isinstance(r.get("final_dead", {}).get("with_fix"), (int, float))]
    if tested:
        best = min(tested, key=lambda r: r["final_dead"]["with_fix"])
        left = best["final_dead"]["with_fix"]
        line += (f" The best tested change is {best['id']} ({' '.join('--set ' + x for x in best['fix'])}): its own arm left "
                 f"{_pct(left)} dead at the end (base {_pct(best['final_dead'].get('base'))}); {_pct(left)} of the latents remain dead "
                 f"with it" + (f" ({best['dose']})" if best.get("dose") else "") + ".")
    return line


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "?"


def dose_sentence(search: dict[str, Any]) -> str:
    """The dose search of one cause in words: the phase's fix and what it left, each dose tried and
    what it left, how it ended."""
    def one(t: dict[str, Any]) -> str:
        what = " ".join(_fix_lines(t.get("changes") or {}))
        note = t["verdict"] if t.get("verdict") not in (None, "confirmed") else t.get("cost") or ""
        return f"{what}: {_pct(t.get('final_dead'))} dead" + (f" ({note})" if note else "")
    tried = search.get("tried") or []
    first = search.get("first") or {}
    text = f"dose search: the phase's {one(first)}; " + ("; ".join(one(t) for t in tried) or "no stronger dose tried")
    ending = {"met": "met the margin", "ladder exhausted": "no stronger dose left", "budget spent": "the budget of extra arms ran out",
              "costs": "stopped: that dose keeps the latents alive at a cost"}
    return text + f" ({ending.get(search.get('outcome'), search.get('outcome') or '')})"


def write_answer(run: Any) -> dict[str, Any]:
    """After training phase 06: rank the other phases' causes (each searched cause at its chosen
    dose, saelab.lab.dose), save ``answer.json`` with what the fixed configuration's own run (arm
    ``fixed``) measured and, when a cause was confirmed, ``fixed_config.json``: the user's base at
    its own scale, on the data the lab trained on, with the fixes; returns the answer."""
    built = run.built[run.seeds[0]]
    ranked = ranking(built.ctx.prior_verdicts)
    changes = fixed_changes(ranked)
    user = at_base_scale(changes, run.base, built.ctx.base) if changes else {}
    fixed_cfg = run.base.config.with_overrides(on_lab_data(run.base, built.ctx.base) | user) if user else None
    searched = [v["dose_search"] for v in built.ctx.prior_verdicts if v.get("dose_search")]
    search = {k: searched[0][k] for k in ("budget", "used")} if searched else None
    measured = measure(run.runs, "fixed") if run.runs and "fixed" in built.plan.arms else None
    if measured is not None and (base := measure(run.runs, "base")) is not None:  # what the fixed run costs, against the base's own run
        measured |= {"base_l0": base["l0"], "base_fvu": base["fvu"]}
        measured["cost"] = fixed_run_cost(base, measured)
    path = write(run.out_dir, ranked, fixed_cfg, run.base, user, measured, search)
    return json.loads(path.read_text())


def fixed_run_cost(base: dict[str, Any], fixed: dict[str, Any]) -> str:
    """What the fixed configuration's own run costs against the base's own run in phase 06 (both
    ``measure``'s), by the ranking's rules: denser (``costs_sparsity``, where a base that learned
    nothing makes any larger L0 the recovery) or reconstructing worse; "" when neither."""
    l0 = {"base": base["l0"], "with_fix": fixed["l0"], "with_fix_frac": fixed["l0_frac"]}
    fvu = {"base": base["fvu"], "with_fix": fixed["fvu"]}
    return cost_sentence({"costs_sparsity": costs_sparsity(l0, {"base": base.get("collapsed"), "with_fix": fixed.get("collapsed")}),
                          "costs_reconstruction": costs_reconstruction(fvu), "l0": l0, "fvu": fvu})


def no_fixed(found: dict[str, Any]) -> str:
    """Why there is no fixed configuration: nothing confirmed, or every confirmed fix costs."""
    costly = [r for r in found.get("ranking", []) if r.get("verdict") == "confirmed"]
    if not costly:
        return "No cause was confirmed, so there is no fixed configuration to train."
    return ("No fixed configuration: every confirmed fix keeps the latents alive only at a cost ("
            + "; ".join(f"{r['id']}: {r.get('why') or r.get('cost')}" for r in costly) + "), so none is prescribed.")


def markdown(found: dict[str, Any]) -> str:
    """The answer as Markdown: the causes ranked, each with its verdict and fix, then the fixed config
    (every string escaped: a fix's value may come from the user's base)."""
    if not found["ranking"]:
        return "No phase of this lab tested a cause with an arm that removes it (run phases 00-05 first)."
    lines = ["| cause | verdict | peak dead: base -> with fix | final dead: base -> with fix | fix |", "|---|---|---|---|---|"]
    def pct(d: dict[str, Any], key: str) -> str:  # mean over the replicates, ± their sd when known
        v, sd = d.get(key), d.get(f"{key}_sd")
        return "?" if v is None else f"{100 * v:.1f}%" + (f" ± {100 * sd:.1f}" if sd is not None else "")

    for r in found["ranking"]:
        p, f = r["peak_dead"], r["final_dead"]
        lines.append(f"| {md_text(r['id'])} · {md_text(r['cause'].split(' · ', 1)[-1])} | **{r['verdict']}** "
                     f"| {pct(p, 'base')} -> {pct(p, 'with_fix')} | {pct(f, 'base')} -> {pct(f, 'with_fix')} "
                     f"| {' '.join(md_code(f'--set {x}') for x in r['fix'])}"
                     + (f" (not in the fixed configuration: {md_text(r['why'])})" if r.get("combined") is False else "")
                     + (" (tied with the cause above within the spread)" if r.get("tied_with_above") else "") + " |")
    doses = [r for r in found["ranking"] if r.get("dose")]
    if doses:
        budget = found.get("dose_budget") or {}
        lines += ["", f"Dose search (stronger doses of a confirmed cause's one factor while its fix leaves more than 5% dead; "
                  f"{budget.get('used', '?')} of a budget of {budget.get('budget', '?')} extra arms used):", ""]
        lines += [f"- {md_text(r['id'])}: {md_text(r['dose'])}" for r in doses]
    if found["fixed_config"]:
        lines += ["", "Fixed configuration (the confirmed fixes, most harmful cause first, added until one leaves no more "
                  "than 5% of the latents dead by its own arm; at your base's own scale, on the lab's data): "
                  + " ".join(md_code(f"--set {x}") for x in found["fixed_changes"]) + "; saved as `fixed_config.json` "
                  "(train it with `saelab train --config fixed_config.json`)."]
        if found.get("proof"):
            lines += ["", md_text(found["proof"])]
    else:
        lines += ["", no_fixed(found)]
    return "\n".join(lines)


# ----- the seed's Validation Metrics table (phase 06) -----------------------------------------

def _has_l1(run: Any) -> bool:
    return run.config.penalty.form != "none" and run.config.penalty.alpha > 0


# (metric, how to read it from a run, target, acceptable range, pass test; None = not applicable)
VALIDATION: list[tuple[str, Callable[[Any], float], str, str, Callable[[float], bool | None]]] = [
    ("L0 sparsity (final)", lambda r: tail(r, "l0_frac"), "5%", "4%-7%", lambda v: L0_RANGE[0] <= v <= L0_RANGE[1]),
    ("dead latents (final)", lambda r: tail(r, "dead_frac"), "<10%", "<20%", lambda v: v < DEAD_MAX),
    ("L1/recon loss ratio", lambda r: tail(r, "l1_recon_ratio") if _has_l1(r) else float("nan"), "0.1", "0.01-0.5",
     lambda v: None if not math.isfinite(v) else RATIO_RANGE[0] <= v <= RATIO_RANGE[1]),
    ("reconstruction loss (MSE, normalized space)", lambda r: tail(r, "mse"), "<0.05", "<0.10", lambda v: v < RECON_MAX),
    ("training stability (autopsy collapses after warmup)", lambda r: float(len(late_collapses(r))), "no collapse",
     "smooth L0 curve", lambda v: v == 0),
]


def validation_rows(runs: RunsBySeed) -> list[dict[str, Any]]:
    """The seed's Validation Metrics table per arm: {arm, metric, value (mean over replicates),
    target, range, pass (True only if every replicate passes; None: not applicable, i.e. the L1
    ratio of an SAE without an L1 penalty), per_seed}. Final values are ``tail`` medians;
    reconstruction loss is the MSE in the normalized space (the seed's loss_reconstruction);
    stability counts ``late_collapses``."""
    arms = list(dict.fromkeys(a for r in runs.values() for a in r))
    rows = []
    for arm in arms:
        for metric, read, target, ok_range, test in VALIDATION:
            vals = per_seed(runs, arm, read)
            checks = [test(v) for v in vals]
            ok = None if any(c is None for c in checks) else all(checks)
            rows.append({"arm": arm, "metric": metric, "value": stats(vals)["mean"], "target": target, "range": ok_range,
                         "pass": ok, "per_seed": [round(v, 5) for v in vals]})
    return rows


def validation_verdicts(runs: RunsBySeed) -> list[dict[str, Any]]:
    """V · an arm meets the seed's validation table: confirmed when every applicable metric passes
    in every replicate; refuted when some metric fails in every replicate; else inconclusive."""
    out, rows = [], validation_rows(runs)
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        seeds = max(len(r["per_seed"]) for r in mine)
        fails = {r["metric"]: [not VALIDATION[i][4](v) for v in r["per_seed"]] for i, r in enumerate(mine) if r["pass"] is not None}
        per_rep_ok = [not any(f[i] for f in fails.values()) for i in range(seeds)]
        always = [m for m, f in fails.items() if f and all(f)]
        word = rule(per_rep_ok, [bool(always)] * seeds)
        passed = sum(r["pass"] is True for r in mine)
        effect = f"{passed}/{sum(r['pass'] is not None for r in mine)} metrics pass in every replicate" + (
            f"; always failing: {', '.join(always)}" if always else "") + "; " + ", ".join(
            f"{r['metric'].split(' (')[0]} {r['value']:.3g}" for r in mine)
        out.append(verdict(f"V-{arm}", f"{arm} meets the seed's validation table", "06_validation", word, effect,
                           {r["metric"].split(" (")[0]: r["value"] for r in mine}))
        out[-1]["evidence"] = "evidence-validation"
    return out
