"""The answer first: which causes kill the latents of this setup, by how much, and the smallest
change that brings them back.

Every cause a phase tested by an arm that removes it carries a ``fix`` (the arm and the fields it
changed) and the intervention numbers of ``hypothesis.removes_deaths``. ``ranking`` orders them by
how many deaths their fix removes (peak, then final dead fraction); ``fixed_changes`` combines the
confirmed fixes into one config change, most harmful cause first, a later fix never overriding a
field an earlier one set; ``write`` saves ``answer.json`` and the fixed configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from saelab.base import STEP_FIELDS, Base
from saelab.config import RunConfig

VERDICT_ORDER = {"confirmed": 0, "inconclusive": 1, "refuted": 2}


def load_phase_verdicts(root: Path, skip: str = "") -> list[dict[str, Any]]:
    """The verdicts of every phase under ``root`` (``root/<stem>/verdicts.json``), ``skip`` left out;
    a file that cannot be read is left out (the phase's own page reports it)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(root).glob("*/verdicts.json")):
        if path.parent.name == skip or path.parent.name.startswith("."):  # a result set aside (saelab.report.set_aside)
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


def ranking(verdicts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Causes with a fix arm, most harmful first: confirmed before inconclusive before refuted,
    then by the mean fall of the peak dead fraction the fix brings, then of the final one."""
    rows = []
    for v in verdicts:
        fix, n = v.get("fix"), v.get("numbers") or {}
        if v.get("kind") != "cause" or not fix or v.get("verdict") not in VERDICT_ORDER or "peak_reduction" not in n:
            continue
        arm = fix["arm"]
        rows.append({
            "cause": v["hypothesis"], "id": v["id"], "phase": v["phase"], "verdict": v["verdict"],
            "peak_dead": {"base": n.get("base_peak_dead"), "with_fix": n.get(f"{arm}_peak_dead"), "fall": n["peak_reduction"]},
            "final_dead": {"base": n.get("base_final_dead"), "with_fix": n.get(f"{arm}_final_dead"), "fall": n.get("final_reduction")},
            "margin": n.get("margin"), "replicates": n.get("replicates"),
            "fix": _fix_lines(fix["changes"]), "fix_changes": fix["changes"], "fix_arm": arm})
    rows.sort(key=lambda r: (VERDICT_ORDER[r["verdict"]], -(r["peak_dead"]["fall"] or 0), -(r["final_dead"]["fall"] or 0)))
    return rows


def fixed_changes(ranked: list[dict[str, Any]]) -> dict[str, Any]:
    """The confirmed fixes combined, most harmful cause first; a fix that would set a field an
    earlier fix already set (to another value) is left out (its cause is listed, not combined)."""
    out: dict[str, Any] = {}
    for r in ranked:
        if r["verdict"] != "confirmed":
            continue
        ch = r["fix_changes"]
        if any(k in out and out[k] != v for k, v in ch.items()):
            r["combined"] = False
            continue
        r["combined"] = True
        out |= ch
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
    from saelab.runs import write_json

    write_json(out_dir / "answer.json", answer)
    if fixed is not None:
        (out_dir / "fixed_config.json").write_text(fixed.to_json() + "\n")
    return out_dir / "answer.json"
