"""The dose search: a confirmed cause whose fix still leaves more than MIN_EFFECT of the latents
dead by its own arm gets stronger doses of the same one factor, one dose at a time, until one
leaves no more than that or the ladder (``Hypothesis.doses``) or the budget of extra arms runs out.

Issue 21: on TopK k=2 of 2,048 latents the lab tried k x4 once (42.5% dead left) and presented
``--set sae.k=8`` as the fix; k x16 was never tried. A fix is only as good as its dose.

The search runs after phases 00-05 are judged and before phase 06 is planned
(``saelab.report.batch``). Each round trains, per replicate, one job holding the next dose of every
cause still short of the margin: the dose is the cause's phase base with one factor changed (the
hypothesis's own field, checked like ``build_arms`` checks an arm: inside its factor, never equal
to the base or to an arm already trained), paired by seed with that phase's base run, and judged by
the hypothesis's own rule (its ``judge`` on the base and the dose alone). A dose is *met* when that
verdict is confirmed and its final dead fraction (mean over the replicates) is at most MIN_EFFECT;
the search stops for a cause at its first met dose, so a cause whose first dose works costs
nothing, and at a dose that keeps the latents alive only by making the SAE dense or reconstructing
worse (``answer.ranking``'s costs: a stronger one would cost more). ``runs/dose/doses.json``
records the budget, every dose tried and what it measured; ``apply`` puts each cause's chosen dose
(the first met one, else the confirmed one that costs nothing and left the fewest dead) in place
of its phase's verdict where the answer reads them (phase 06's prior verdicts), and every
searched cause carries ``dose_search`` (what was tried) to the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.config import RunConfig
from saelab.execution.jobs import Job, load_job
from saelab.fileio import read_json, write_json
from saelab.lab.answer import ranking
from saelab.lab.base import DOSE_BUDGET  # the extra arms a search may train (the CLI's default too)
from saelab.lab.causes import PHASES
from saelab.lab.hypothesis import MIN_EFFECT, Arm, Hypothesis, diff
from saelab.lab.wording import MIN_REPLICATES
from saelab.training.train import SHARED_FIELDS

DOSE_DIR = "dose"  # runs/dose/: the search's jobs (round<r>/seed<s>) and doses.json
RECORD = "doses.json"


def final_dead(v: Mapping[str, Any]) -> float | None:
    """The final dead fraction a verdict's fix arm left (mean over the replicates), or None."""
    fix, n = v.get("fix"), v.get("numbers") or {}
    x = n.get(f"{fix['arm']}_final_dead") if fix else None
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def short(v: Mapping[str, Any]) -> bool:
    """A confirmed cause whose fix arm leaves more than MIN_EFFECT of the latents dead at the end."""
    left = final_dead(v)
    return v.get("kind") == "cause" and v.get("verdict") == "confirmed" and left is not None and left > MIN_EFFECT


def cost(v: Mapping[str, Any]) -> str:
    """What a confirmed fix costs by the answer's rules (``answer.ranking``: it keeps the latents
    alive by making the SAE dense, or by reconstructing worse), "" when nothing."""
    rows = ranking([dict(v)])
    return rows[0]["cost"] if rows else ""


def met(v: Mapping[str, Any]) -> bool:
    """The dose removes the deaths (confirmed), leaves at most MIN_EFFECT dead at the end, and
    costs nothing: a dose that keeps the latents alive by making the SAE dense has not met it."""
    left = final_dead(v)
    return v.get("verdict") == "confirmed" and left is not None and left <= MIN_EFFECT and not cost(v)


def _strength(base: RunConfig, changes: Mapping[str, Any]) -> float | None:
    """How far a one-field numeric dose moves its field from the base's value, as a signed log
    ratio (lr x0.1: -2.3; k 2 -> 8: +1.4); None when it is not one positive number."""
    if len(changes) != 1:
        return None
    (path, value), = changes.items()
    section, _, leaf = path.rpartition(".")
    old = getattr(getattr(base, section) if section else base, leaf, None)
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in (old, value))
    return math.log(value / old) if ok else None


def stronger(base: RunConfig, dose: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Is ``dose`` further from the base than ``than`` in the same direction? (True when the two
    cannot be compared as numbers: the ladder's order is then the only order.)"""
    a, b = _strength(base, dose), _strength(base, than)
    if a is None or b is None:
        return True
    return a * b > 0 and abs(a) > abs(b) + 1e-12


@dataclass(eq=False)
class Cause:
    """One confirmed cause under search: its phase run, its hypothesis, the phase's verdict and
    the doses tried so far (each: arm, changes, round, verdict dict, met). Equal only to itself
    (hashable: a round's arms are grouped by their cause)."""

    stem: str
    run: Any  # saelab.lab.phases.PhaseRun, its runs trained
    h: Hypothesis
    first: dict[str, Any]
    ladder: list[Arm]
    tried: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "searching"  # searching | met | ladder exhausted | budget spent | failed: ...

    @property
    def ctx(self) -> Any:
        return self.run.built[self.run.seeds[0]].ctx

    def reference(self) -> dict[str, Any]:
        """The strongest dose so far: the last one tried, else the phase's fix."""
        return self.tried[-1]["changes"] if self.tried else self.first["fix"]["changes"]

    def next_dose(self) -> Arm | None:
        """The first dose on the ladder stronger than the reference that equals no arm already
        trained (the phase's or the search's): never two identical arms."""
        base = self.ctx.base
        trained = [*self.run.built[self.run.seeds[0]].plan.arms.values(),
                   *(base.with_overrides(dict(t["changes"])) for t in self.tried)]
        for arm in self.ladder:
            cfg = base.with_overrides(dict(arm.changes))
            if not stronger(base, arm.changes, self.reference()):
                continue
            if any(not diff(c, cfg) and not diff(cfg, c) for c in trained):
                continue
            changed = diff(base, cfg)
            outside = [f for f in changed if f not in self.h.factor]
            if not changed or outside:
                raise ValueError(f"{self.stem}/{self.h.id}: dose {arm.name!r} changes {outside or 'nothing'}, "
                                 f"not one field of its factor {list(self.h.factor)}")
            return arm
        return None

    def chosen(self) -> dict[str, Any] | None:
        """The dose the answer uses: the first met one; else the confirmed dose that costs nothing
        and left fewer dead than the phase's fix and every other such dose; None: the phase's fix stays."""
        for t in self.tried:
            if t["met"]:
                return t
        best, left = None, final_dead(self.first) or float("inf")
        for t in self.tried:
            x = final_dead(t["verdict"]) if t["verdict"] else None
            if t["verdict"] and t["verdict"].get("verdict") == "confirmed" and not t.get("cost") and x is not None and x < left:
                best, left = t, x
        return best


class DoseSearch:
    """Rounds of doses for the confirmed causes of the first-wave phases ``runs`` (stem ->
    PhaseRun), their verdicts read from ``root/<stem>/verdicts.json``, at most ``budget`` extra
    arms in all. ``next_round`` plans a round's jobs ([] when the search is over); ``judge_round``
    judges them once trained; ``write`` saves ``root/dose/doses.json``."""

    def __init__(self, runs: Mapping[str, Any], root: Path, budget: int = DOSE_BUDGET):
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(f"dose budget={budget!r} must be an integer >= 0 (extra arms)")
        self.root, self.budget, self.used, self.round = Path(root), budget, 0, 0
        self.causes: list[Cause] = []
        self.jobs: list[Job] = []  # the current round's
        self.arms: dict[str, Cause] = {}  # job arm name -> its cause, in the current round
        for stem, run in runs.items():
            path = self.root / stem / "verdicts.json"
            try:
                found = read_json(path) if path.is_file() else []
            except ValueError:  # the phase's own page reports an unreadable verdicts.json
                found = []
            hyps = {h.id: h for h in PHASES[stem].hypotheses} if stem in PHASES else {}
            for v in found if isinstance(found, list) else []:
                h = hyps.get(v.get("id")) if isinstance(v, dict) else None
                if h is not None and h.doses is not None and short(v):
                    c = Cause(stem, run, h, v, [])
                    c.ladder = h.doses(c.ctx)
                    self.causes.append(c)
        # most harmful first: the budget goes to the cause whose fix removes the most deaths
        self.causes.sort(key=lambda c: -float((c.first.get("numbers") or {}).get("peak_reduction", 0.0)))

    def next_round(self) -> list[Job]:
        """The next round's jobs: per replicate, one lockstep group per set of doses that can share
        one (equal data, steps and cadence). [] when every cause is met, out of doses or budget."""
        picks: list[tuple[Cause, Arm]] = []
        for c in self.causes:
            if c.outcome != "searching":
                continue
            arm = c.next_dose()
            if arm is None:
                c.outcome = "ladder exhausted"
            elif self.used + len(picks) >= self.budget:
                c.outcome = "budget spent"
            else:
                picks.append((c, arm))
        if not picks:
            self.jobs, self.arms = [], {}
            return []
        self.round += 1
        self.used += len(picks)
        self.arms = {f"{c.h.id}-{arm.name}": c for c, arm in picks}
        for c, arm in picks:
            c.tried.append({"arm": arm.name, "changes": dict(arm.changes), "round": self.round, "verdict": None, "met": False})
        seeds = sorted({s for c, _ in picks for s in c.run.seeds})
        self.jobs = []
        for seed in seeds:
            arms = {f"{c.h.id}-{arm.name}": c.run.built[seed].ctx.base.with_overrides(dict(arm.changes))
                    for c, arm in picks if seed in c.run.built}
            groups: dict[tuple, dict[str, RunConfig]] = {}
            for name, cfg in arms.items():
                groups.setdefault(tuple(repr(getattr(cfg, f)) for f in SHARED_FIELDS), {})[name] = cfg
            for i, group in enumerate(groups.values()):
                tail = f"round{self.round}/seed{seed}" + (f"/group{i}" if len(groups) > 1 else "")
                threads = picks[0][0].run.profile.threads
                self.jobs.append(Job(f"{DOSE_DIR}/{tail}", group, self.root / DOSE_DIR / tail, "dose", threads))
        return self.jobs

    def judge_round(self, failed: Mapping[str, str | None] | None = None) -> None:
        """Judge the current round's doses, each by its hypothesis's own rule on the phase's base
        runs and the dose's (paired by seed); a cause whose job failed stops with the error."""
        failed = {k: v for k, v in (failed or {}).items() if v}
        loaded: dict[str, dict[int, dict[str, Any]]] = {}  # job arm name -> seed -> Run
        for job in self.jobs:
            seed = int(job.name.split("/")[2].removeprefix("seed"))
            if job.name in failed:
                for name in job.arms:
                    self.arms[name].outcome = f"failed: job {job.name}: {failed[job.name]}"
                continue
            for name, r in load_job(job).items():
                loaded.setdefault(name, {})[seed] = r
        for name, c in self.arms.items():
            if c.outcome != "searching":
                continue
            if not c.run.runs:
                c.run.load()
            t = c.tried[-1]
            runs = {s: {"base": c.run.runs[s]["base"], t["arm"]: r} for s, r in loaded.get(name, {}).items() if s in c.run.runs}
            found = c.h.judge(runs, c.ctx, [Arm(t["arm"], t["changes"])])
            found = found if isinstance(found, list) else [found]
            v = next((x for x in found if x.get("id") == c.h.id), found[0])
            v["replicates"] = len(runs)  # as PhaseRun.verdicts marks them: fewer than MIN_REPLICATES is an indication
            v["indication"] = v["verdict"] != "not applicable" and len(runs) < MIN_REPLICATES
            t["verdict"], t["met"], t["cost"] = v, met(v), cost(v) if v.get("verdict") == "confirmed" else ""
            if t["met"]:
                c.outcome = "met"
            elif t["cost"]:  # a stronger dose would cost more: stop here
                c.outcome = "costs"

    def record(self) -> dict[str, Any]:
        """What doses.json holds: the budget and the arms used, and per cause searched: its phase's
        fix and what it left, every dose tried (its changes, verdict and final / peak dead), how the
        search ended and the dose chosen (None: the phase's fix stays)."""
        causes = []
        for c in self.causes:
            pick = c.chosen()
            causes.append({
                "id": c.h.id, "phase": c.stem, "claim": c.first.get("hypothesis", c.h.claim),
                "first": _summary(c.first["fix"]["arm"], c.first["fix"]["changes"], c.first),
                "ladder": [a.name for a in c.ladder],
                "tried": [_summary(t["arm"], t["changes"], t["verdict"]) | {"round": t["round"], "met": t["met"], "cost": t.get("cost", "")}
                          for t in c.tried],
                "outcome": c.outcome if c.outcome != "searching" else "budget spent",
                "chosen": pick["arm"] if pick else None,
                "verdict": pick["verdict"] if pick else None})
        return {"budget": self.budget, "used": self.used, "margin": MIN_EFFECT, "rounds": self.round, "causes": causes}

    def write(self) -> dict[str, Any]:
        rec = self.record()
        write_json(self.root / DOSE_DIR / RECORD, rec)
        return rec


def _summary(arm: str, changes: Mapping[str, Any], v: Mapping[str, Any] | None) -> dict[str, Any]:
    n = (v or {}).get("numbers") or {}
    return {"arm": arm, "changes": dict(changes), "verdict": (v or {}).get("verdict"),
            "final_dead": n.get(f"{arm}_final_dead"), "peak_dead": n.get(f"{arm}_peak_dead"),
            "l0": n.get(f"{arm}_final_l0"), "fvu": n.get(f"{arm}_final_fvu")}


def read(root: Path) -> dict[str, Any] | None:
    """``root/dose/doses.json`` (root: a lab's runs/ folder), or None when there is none or it is unreadable."""
    path = Path(root) / DOSE_DIR / RECORD
    try:
        rec = read_json(path) if path.is_file() else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("causes"), list) else None


def apply(prior: list[dict[str, Any]], rec: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The phases' verdicts with each searched cause's chosen dose in place of its phase's verdict
    and ``dose_search`` (budget, the phase's fix, the doses tried, how it ended) on it. A record
    made from other verdicts than these (the phase was rerun since) is ignored for that cause."""
    if not rec:
        return list(prior)
    by_id = {(c.get("phase"), c.get("id")): c for c in rec["causes"] if isinstance(c, dict)}
    out = []
    for v in prior:
        c = by_id.get((v.get("phase"), v.get("id")))
        first = (c or {}).get("first") or {}
        if c is None or not v.get("fix") or v["fix"].get("arm") != first.get("arm") or final_dead(v) != first.get("final_dead"):
            out.append(v)
            continue
        search = {"budget": rec.get("budget"), "used": rec.get("used"), "margin": rec.get("margin"), "first": first,
                  "tried": c.get("tried", []), "outcome": c.get("outcome"), "chosen": c.get("chosen")}
        chosen = c.get("verdict") if isinstance(c.get("verdict"), dict) else None
        out.append(dict(chosen or v) | {"dose_search": search})
    return out
