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
from saelab.lab.base import STEP_FIELDS, Base
from saelab.lab.hypothesis import MIN_EFFECT, SPREAD_FACTOR
from saelab.lab.verdicts import (
    DEAD_MAX,
    L0_RANGE,
    RATIO_RANGE,
    RECON_MAX,
    RunsBySeed,
    late_collapses,
    per_seed,
    rule,
    stats,
    tail,
    verdict,
)
from saelab.lab.wording import md_code, md_text

VERDICT_ORDER = {"confirmed": 0, "inconclusive": 1, "refuted": 2}
FVU_COST = 0.02  # final FVU points a fix may add before it counts as keeping latents alive by learning less


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
    within each, fixes that keep the reconstruction before those that cost it (``costs_reconstruction``),
    then by the mean fall of the peak dead fraction the fix brings, then of the final one. A row whose
    fall is within the spread of the row above is marked ``tied_with_above``."""
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
            "margin": n.get("margin"), "replicates": n.get("replicates"),
            "fix": _fix_lines(fix["changes"]), "fix_changes": fix["changes"], "fix_arm": arm})
    for r in rows:
        # a fix that changes the data (drops rows, reorders them) is measured on other held-out rows:
        # its FVU is not comparable with the base's, so it is not judged a cost
        r["fvu"]["comparable"] = not any(k.startswith("data.") for k in r["fix_changes"])
        r["costs_reconstruction"] = r["fvu"]["comparable"] and costs_reconstruction(r["fvu"])
    rows.sort(key=lambda r: (VERDICT_ORDER[r["verdict"]], r["costs_reconstruction"], -(r["peak_dead"]["fall"] or 0),
                             -(r["final_dead"]["fall"] or 0)))
    for i, r in enumerate(rows):
        r["tied_with_above"] = i > 0 and _tied(rows[i - 1], r)
    return rows


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
    their difference (paired falls, known with several replicates): the order between them is noise."""
    if above["verdict"] != "confirmed" or r["verdict"] != "confirmed" or above["costs_reconstruction"] != r["costs_reconstruction"]:
        return False
    a, b = above["peak_dead"], r["peak_dead"]
    if "fall_se" not in a or "fall_se" not in b or a.get("fall") is None or b.get("fall") is None:
        return False
    return abs(a["fall"] - b["fall"]) <= max(SPREAD_FACTOR * math.hypot(a["fall_se"], b["fall_se"]), 1e-9)


def fixed_changes(ranked: list[dict[str, Any]], enough: float = MIN_EFFECT) -> dict[str, Any]:
    """The smallest combination of confirmed fixes that brings the latents back: most harmful cause
    first, adding the next fix only while the best fix taken so far still leaves more than
    ``enough`` of the latents dead at the peak (by its own arm: 26% -> 0% with a centered b_dec needs
    nothing else). A fix that would set a field an earlier fix already set, to another value, is left
    out. Each confirmed row gets ``combined`` (True / False) and, when left out, ``why``."""
    out: dict[str, Any] = {}
    left = float("inf")  # the peak dead fraction the fixes taken so far leave, by the best one's own arm
    for r in ranked:
        if r["verdict"] != "confirmed":
            continue
        ch = r["fix_changes"]
        if r.get("costs_reconstruction"):
            fv = r["fvu"]
            r["combined"], r["why"] = False, (f"costs reconstruction: final FVU {fv['base']:.3g} with the base, "
                                              f"{fv['with_fix']:.3g} with this fix")
            continue
        if left <= enough:
            r["combined"], r["why"] = False, f"not needed: the fixes above already leave {100 * left:.1f}% dead at the peak"
            continue
        if any(k in out and out[k] != v for k, v in ch.items()):
            r["combined"], r["why"] = False, "sets a field an earlier fix already set to another value"
            continue
        r["combined"] = True
        out |= ch
        with_fix = r["peak_dead"].get("with_fix")
        left = min(left, with_fix if isinstance(with_fix, (int, float)) else float("inf"))
    return out


def at_base_scale(changes: dict[str, Any], base: Base, sized: RunConfig) -> dict[str, Any]:
    """``changes`` measured on the profile-sized base, for the user's own base: step counts keep
    their share of the run (a warmup of 10 of 1,000 steps is 100 of the base's 10,000)."""
    out = dict(changes)
    ratio = base.config.steps / sized.steps
    for path in STEP_FIELDS:
        if path in out and isinstance(out[path], int) and ratio != 1:
            out[path] = max(1, round(out[path] * ratio))
    return out


def write(out_dir: Path, ranked: list[dict[str, Any]], fixed: RunConfig | None, base: Base,
          changes: dict[str, Any]) -> Path:
    """``out_dir/answer.json`` (the ranking, most harmful first, and the fixed configuration) and,
    when some fix was confirmed, ``out_dir/fixed_config.json`` (train it with ``saelab train
    --config``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    answer = {"base": base.name, "base_origin": base.origin, "ranking": [{k: v for k, v in r.items() if k != "fix_changes"}
                                                                        for r in ranked],
              "fixed_changes": _fix_lines(changes), "fixed_config": fixed.to_dict() if fixed else None}
    write_json(out_dir / "answer.json", answer)
    if fixed is not None:
        (out_dir / "fixed_config.json").write_text(fixed.to_json() + "\n")
    return out_dir / "answer.json"


def write_answer(run: Any) -> dict[str, Any]:
    """After training phase 06: rank the other phases' causes, save ``answer.json`` and (when a cause
    was confirmed) ``fixed_config.json`` at the user's own scale in ``run.out_dir``; returns the
    answer (``saelab.lab.answer.write``)."""
    built = run.built[run.seeds[0]]
    ranked = ranking(built.ctx.prior_verdicts)
    changes = fixed_changes(ranked)
    user = at_base_scale(changes, run.base, built.ctx.base) if changes else {}
    fixed_cfg = run.base.config.with_overrides(user) if user else None
    path = write(run.out_dir, ranked, fixed_cfg, run.base, user)
    return json.loads(path.read_text())


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
    if found["fixed_config"]:
        lines += ["", "Fixed configuration (the smallest set of confirmed fixes, most harmful cause first, that leaves no more "
                  "than 5% of the latents dead by their own arms; at your base's own scale): "
                  + " ".join(md_code(f"--set {x}") for x in found["fixed_changes"]) + "; saved as `fixed_config.json` "
                  "(train it with `saelab train --config fixed_config.json`)."]
    else:
        lines += ["", "No cause was confirmed, so there is no fixed configuration to train."]
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
