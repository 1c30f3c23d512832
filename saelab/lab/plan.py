"""The lab planned once: the user's base read once, every phase's parameters validated, every
phase's arms and jobs built, before anything trains or is written.

``plan_lab`` is what ``saelab lab`` does first (a bad base, parameter or data file is a ValueError
here, with nothing written). The plan is then the one source of what the lab runs: the jobs come
from it, each phase's part is written to ``runs/<stem>/plan.json`` where the phase's notebook reads
it back (``saelab.lab.phases.prepare``: the base is not parsed again), and ``out/plan.json`` states
the whole plan for the reader (parameters, base, pinned and profile-set fields, arms, jobs).

A phase that reads the other phases' verdicts (06, the fixed configuration) cannot be planned until
they are judged; ``judge`` writes a first-wave phase's verdicts from its planned runs, and
``plan_later`` then plans the late phase on the same base.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.execution.jobs import Job
from saelab.fileio import write_json
from saelab.lab import verdicts
from saelab.lab.base import Base, load_base
from saelab.lab.causes import PHASES
from saelab.lab.phases import PLAN_FILE, PhaseRun, check_data, plan_phase, validate


@dataclass
class LabPlan:
    """Every phase of one ``saelab lab`` run: its validated parameters and, once planned, its
    PhaseRun (arms per replicate, jobs)."""

    profile: str
    out: Path
    base: Base
    given: dict[str, Any]  # the notebook parameters the user passed (every phase gets them)
    parameters: dict[str, dict[str, Any]]  # stem -> the phase's validated notebook parameters (given + defaults)
    runs: dict[str, PhaseRun] = field(default_factory=dict)  # stem -> its plan, once planned
    later: tuple[str, ...] = ()  # phases planned after the others are judged (they read their verdicts)

    @property
    def stems(self) -> list[str]:
        return list(self.parameters)

    @property
    def first(self) -> list[str]:
        return [s for s in self.stems if s not in self.later]

    def jobs(self, stem: str) -> list[Job]:
        """The phase's training jobs ([] for a phase not planned yet, or a notebook that is not a phase)."""
        return self.runs[stem].jobs() if stem in self.runs else []

    def run_dir(self, stem: str) -> Path:
        return self.out / "runs" / stem

    def passed(self, stem: str) -> dict[str, Any]:
        """What papermill passes to the phase's notebook: the profile, its run folder and the given
        parameters (its parameters cell holds the rest; ``prepare`` completes them as ``validate`` did)."""
        return {"profile": self.profile, "out_dir": str(self.run_dir(stem)), **headless(stem), **self.given}

    def plan_later(self, stem: str) -> PhaseRun:
        """Plan a phase that reads the other phases' verdicts (they are on disk by now) and write it."""
        self.runs[stem] = plan_phase(stem, self.parameters[stem], self.base)
        self.write()
        return self.runs[stem]

    def judge(self, stem: str) -> None:
        """Write phase ``stem``'s verdicts.json from its trained runs (what its notebook's verdict
        cell computes and writes again), so that a late phase can be planned before that notebook ran."""
        run = self.runs[stem]
        run.load()
        verdicts.write(run.out_dir, run.verdicts())

    def record(self) -> dict[str, Any]:
        """The plan for the reader (out/plan.json): per phase its parameters, replicates, the fields
        the profile set, each arm's changes from the base, what cannot act and why, and the jobs."""
        phases = {}
        for stem in self.stems:
            run = self.runs.get(stem)
            if run is None:
                phases[stem] = {"parameters": self.parameters[stem],
                                "planned": "after the other phases are judged" if stem in self.later else "not a phase"}
                continue
            first = run.built[run.seeds[0]]
            phases[stem] = {"parameters": run.record()["parameters"], "seeds": list(run.seeds),
                            "profile_set": first.profile_set, "arms": first.plan.changes,
                            "not_applicable": first.plan.not_applicable,
                            "jobs": [{"name": j.name, "out": str(j.out), "arms": list(j.arms)} for j in run.jobs()]}
        return {"profile": self.profile, "out": str(self.out),
                "base": {"name": self.base.name, "origin": self.base.origin, "pinned": sorted(self.base.pinned)},
                "phases": phases}

    def write(self) -> None:
        """out/plan.json and, for each planned phase, runs/<stem>/plan.json (what its notebook reads)."""
        for stem, run in self.runs.items():
            write_json(self.run_dir(stem) / PLAN_FILE, run.record())
        write_json(self.out / PLAN_FILE, self.record())


def headless(stem: str) -> dict[str, Any]:
    """What the lab passes a phase's notebook beside the user's parameters: the explorer off (its
    parameters cell turns it on for JupyterLab; ipywidgets need a kernel, and a report has none)."""
    return {"explorer": False} if stem in PHASES else {}


def plan_lab(profile: str, stems: Iterable[str], parameters: Mapping[str, Any], out: Path) -> LabPlan:
    """Plan phases ``stems`` of a lab into ``out`` with the notebook ``parameters`` every phase gets
    (``base``, ``source``, ``steps``, ``overrides`` ...): the base read once, each phase's parameters
    validated, the arms and jobs of every phase that does not wait for the others built, and a file
    source checked (a batch of training rows, finite held-out rows). Writes nothing; raises
    ValueError naming the problem. Notebooks that are not phases are carried with no jobs."""
    out = Path(out).resolve()
    stems = list(stems)
    base = load_base(parameters.get("base"))
    given = {k: v for k, v in parameters.items() if k not in ("profile", "out_dir")}
    passed = {stem: {"profile": profile, "out_dir": str(out / "runs" / stem), **headless(stem), **given} for stem in stems}
    # a notebook saelab does not know gets what papermill passes
    validated = {stem: validate(stem, passed[stem]) if stem in PHASES else passed[stem] for stem in stems}
    plan = LabPlan(profile, out, base, given, validated, later=tuple(s for s in stems if s in PHASES and PHASES[s].reads_prior))
    for stem in plan.first:
        if stem in PHASES:
            plan.runs[stem] = plan_phase(stem, validated[stem], base)
    if plan.runs:
        some = next(iter(plan.runs.values()))
        check_data(some.built[some.seeds[0]].ctx.base)
    return plan
