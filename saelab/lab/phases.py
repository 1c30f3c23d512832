"""The lab's phases at run time: a notebook's parameters -> the user's base, sized by a profile ->
every applicable hypothesis's arms -> trained runs -> verdicts.

``prepare(stem, namespace)`` is what a notebook's second cell calls: it reads the parameters cell
(and papermill's injected cell), rejects unknown or invalid parameters with a ValueError (papermill
only warns), loads the base (``saelab.lab.base``), and returns a ``PhaseRun`` that trains the arms its
hypotheses (``saelab.lab.causes``) ask for and judges them. Every phase's own parameters mirror config
fields (``Phase.params``: notebook name -> (field, default, help)); ``check_mirrors`` checks that
contract and tests/test_notebooks.py checks the notebooks.
"""

from __future__ import annotations

import ast
import difflib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saelab.config import RunConfig, field_paths
from saelab.data.sources import make_source, resolve
from saelab.execution.jobs import Job, job_state, load_job, run_job
from saelab.fileio import read_json, write_json
from saelab.lab.answer import load_phase_verdicts
from saelab.lab.base import DEFAULT_BASE, PROFILES, Base, Profile, get_profile, load_base, sized  # noqa: F401 (re-exported)
from saelab.lab.causes import PHASES
from saelab.lab.datacheck import CHECK_ROWS, check
from saelab.lab.hypothesis import Arm, Context, Phase, Plan, build_arms, diff, not_applicable
from saelab.lab.params import default_run_dir, defaults, mirrors, parse_bool
from saelab.lab.wording import MIN_REPLICATES, shown
from saelab.lab.wording import md_code as _code
from saelab.lab.wording import md_text as _md
from saelab.training.identity import file_stamp
from saelab.training.train import SHARED_FIELDS
from saelab.version import provenance

PLAN_FILE = "plan.json"  # a phase's plan, in its out_dir (saelab.lab.plan writes it)

# ----- the parameter contract -----------------------------------------------------------------

def check_mirrors(phase: Phase) -> list[str]:
    """Problems with a phase's parameter contract: a mirrored field that does not exist, or a
    name that does not start with its field's path (dots as underscores)."""
    paths, problems = field_paths(), []
    for name, path in mirrors(phase).items():
        if path is None:
            continue
        if path not in paths:
            problems.append(f"{phase.stem}: parameter {name!r} mirrors unknown field {path!r}")
        elif name in phase.params and not name.startswith(path.replace(".", "_")):
            problems.append(f"{phase.stem}: parameter {name!r} does not start with {path.replace('.', '_')!r}")
    return problems


def get_phase(stem: str) -> Phase:
    if stem not in PHASES:
        raise ValueError(f"unknown phase {stem!r}; phases: {list(PHASES)}")
    return PHASES[stem]


# ----- building a phase's arms ----------------------------------------------------------------


@dataclass
class Built:
    """A phase's arms for one replicate: the context its hypotheses read, the plan, and the fields
    the profile set on the base."""

    ctx: Context
    plan: Plan
    profile_set: dict[str, Any]


def build(stem: str, profile: str = "quick", seed: int = 0, base: str | Base | None = None, source: str | None = None,
          steps: int | None = None, data_mean_offset: float | None = None, overrides: Mapping[str, Any] | None = None,
          prior: tuple[dict, ...] = (), **params: Any) -> Built:
    """Phase ``stem``'s arms for replicate ``seed`` on the user's ``base`` (a preset name, a config
    or run directory path, a SAELens config; None: the seed's Test 1) sized by ``profile``.
    ``overrides`` (dotted config paths) apply to the base, for every arm; they may not set a field
    that an arm of this phase varies. Raises ValueError naming the problem."""
    phase = get_phase(stem)
    unknown = [n for n in params if n not in phase.params]
    if unknown:
        raise ValueError(f"{stem}: unknown parameter {unknown[0]!r}{_suggest(unknown[0], list(phase.params))}")
    prof = get_profile(profile)
    if data_mean_offset is not None and (isinstance(data_mean_offset, bool) or not isinstance(data_mean_offset, (int, float))):
        raise ValueError(f"{stem}: data_mean_offset={data_mean_offset!r} must be a number (or None: the profile's)")
    b = base if isinstance(base, Base) else load_base(base)
    cfg, profile_set = sized(b, prof, source, seed, steps, data_mean_offset)
    given = {**phase.defaults(), **params}
    default_case = b.origin == "preset" and b.name == DEFAULT_BASE
    try:
        if overrides:
            cfg = cfg.with_overrides(dict(overrides))
        if phase.shared:
            cfg = cfg.with_overrides(phase.shared(cfg, given, default_case))
    except ValueError as e:
        raise ValueError(f"{stem}: {e}") from None
    explicit = steps is not None or "steps" in (overrides or {})  # either way the user chose the length of every arm
    ctx = Context(cfg, prof, given, default_case=default_case, steps_explicit=explicit, prior_verdicts=tuple(prior))
    try:
        plan = build_arms(phase, ctx)
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(stem) else f"{stem}: {e}") from None
    varied = varied_fields(plan)
    clash = [p for p in (overrides or {}) if p in varied]
    if clash:
        raise ValueError(f"{stem}: overrides set {clash[0]!r}, a field this phase varies; put it in the base config (--base) instead")
    return Built(ctx, plan, profile_set)


def varied_fields(plan: Plan) -> set[str]:
    """The fields in which some compared arm differs from the arm it is compared with."""
    out: set[str] = set()
    for arms in plan.tested.values():
        for a in arms:
            if a.against is not None:
                out |= set(diff(plan.arms[a.against], plan.arms[a.name]))
    return out


# ----- a phase's run ----------------------------------------------------------------------------


@dataclass
class PhaseRun:
    """A phase with validated parameters: the arms per replicate, where they are written, and how
    they are judged."""

    phase: Phase
    profile: Profile
    seeds: tuple[int, ...]
    out_dir: Path
    params: dict[str, Any]  # the phase's own parameters, validated
    built: dict[int, Built]  # replicate seed -> its arms
    base: Base
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> arm -> saelab.training.runs.Run
    wall_seconds: float = 0.0
    explorer: bool = False  # the parameter, parsed strictly (papermill's "false" is False); issue 14
    parameters: dict[str, Any] = field(default_factory=dict)  # every notebook parameter, validated (``validate``)

    @property
    def arms(self) -> dict[int, dict[str, RunConfig]]:
        return {s: b.plan.arms for s, b in self.built.items()}

    def jobs(self) -> list:
        """The phase's training jobs (saelab.execution.jobs.Job): one per lockstep group of arms (equal data,
        steps and cadence) per replicate, into ``out_dir/seed<s>/`` (``.../group<i>/`` when a
        replicate has several groups)."""
        out = []
        for seed, arms in self.arms.items():
            groups = lockstep_groups(arms)
            for i, group in enumerate(groups):
                tail = f"seed{seed}" + (f"/group{i}" if len(groups) > 1 else "")
                out.append(Job(f"{self.phase.stem}/{tail}", group, self.out_dir / tail,
                               ", ".join(self.phase.factor) or "recipe", self.profile.threads))
        return out

    def train(self, progress: bool = True, clear: bool = True) -> dict[int, dict[str, Any]]:
        """Bring every job of the phase to done and load the runs; returns seed -> arm -> Run. A job
        the lab (or an earlier, interrupted session) already trained is loaded, a half-finished one
        resumes from its checkpoint, only what is missing trains (saelab.execution.jobs.run_job). Torch's
        intra-op threads are the profile's while training. In a notebook, ``clear`` replaces the
        progress bars by a one-line summary when done (so reports stay static)."""
        t0 = time.perf_counter()
        done: dict[int, dict[str, Any]] = {seed: {} for seed in self.seeds}
        states, took = [], 0.0
        for job in self.jobs():
            states.append(run_job(job, progress=progress)["state"])
            loaded = load_job(job)
            took += next(iter(loaded.values())).summary.get("wall_seconds", 0.0)
            done[int(job.name.split("/")[1].removeprefix("seed"))].update(loaded)
        self.runs = {seed: {name: done[seed][name] for name in arms} for seed, arms in self.arms.items()}  # the phase's order
        self.wall_seconds = time.perf_counter() - t0
        if clear and progress and _in_notebook():
            from IPython.display import clear_output

            clear_output()
        n_arms = len(next(iter(self.arms.values())))
        reused = states.count("done")
        here = f"; {reused} of {len(states)} lockstep groups were already trained" if reused else ""
        print(f"trained {n_arms} arms x {len(self.seeds)} replicates ({self.profile.name} profile) in {took:.1f} s of "
              f"training{here}")
        return self.runs

    def load(self) -> dict[int, dict[str, Any]]:
        """Load the runs of a phase whose jobs are all trained (ValueError naming the first that is
        not); returns seed -> arm -> Run, as ``train`` does."""
        done: dict[int, dict[str, Any]] = {seed: {} for seed in self.seeds}
        for job in self.jobs():
            if job_state(job) != "done":
                raise ValueError(f"job {job.name} is not trained ({job_state(job)})")
            done[int(job.name.split("/")[1].removeprefix("seed"))].update(load_job(job))
        self.runs = {seed: {name: done[seed][name] for name in arms} for seed, arms in self.arms.items()}
        return self.runs

    def first(self) -> dict[str, Any]:
        """The first replicate's runs (what the per-arm figures show)."""
        return self.runs[self.seeds[0]]

    def verdicts(self, runs: Mapping[int, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every hypothesis of the phase judged on ``runs`` (default: the trained ones): applicable
        ones by their rule on their own arms, the others "not applicable" with the reason. Each
        carries ``replicates`` (how many it rests on) and ``indication``: True when that is fewer
        than MIN_REPLICATES, so the verdict is an indication, not evidence (the notebook's verdict
        cell and the report say so)."""
        runs = self.runs if runs is None else runs
        built = self.built[self.seeds[0]]
        out = []
        for h in self.phase.hypotheses:
            if h.id in built.plan.not_applicable:
                out.append(not_applicable(h, self.phase.stem, built.plan.not_applicable[h.id]))
                continue
            arms = built.plan.tested[h.id]
            keep = {"base", *(a.name for a in arms), *(a.against for a in arms if a.against)}
            mine = {s: {a: r for a, r in by_arm.items() if a in keep} for s, by_arm in runs.items()}
            found = h.judge(mine, built.ctx, arms)
            out += found if isinstance(found, list) else [found]
        n = sum(1 for by_arm in runs.values() if by_arm)
        for v in out:
            v["replicates"] = n
            v["indication"] = v["verdict"] != "not applicable" and n < MIN_REPLICATES
        return out

    def data_check(self, rows: int | None = None) -> dict[str, Any]:
        """The data check of the first replicate's base (``saelab check-data``: rows, d_in, outlier
        severity gamma, the norm distribution, predicted and measured dead-at-init), written to
        ``out_dir/data_check.json`` and returned. Reads at most ``rows`` rows (default: the
        check's 100,000), streamed as training reads them."""
        cfg = self.built[self.seeds[0]].ctx.base
        source = make_source(cfg)
        cfg = resolve(cfg, source)  # a base that leaves d_in open takes the data's, as training does
        found = check(cfg, source, rows or CHECK_ROWS)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / "data_check.json", found)
        return found

    def describe(self) -> str:
        """Markdown: the base and where it came from, the profile and the fields it set, and each arm
        with the config fields in which it differs from the base. Every user string (a path, a
        source, an override) is escaped (``_code``, ``_md``): it shows as typed and never becomes
        markup in the page (issue 14)."""
        built = self.built[self.seeds[0]]
        base = built.ctx.base
        lines = [f"Base: {_code(self.base.name)} ({_md(self.base.origin)}); data {_code(base.data.source)}. "
                 f"Profile {_code(self.profile.name)}: replicates {list(self.seeds)}, {base.steps} steps, "
                 f"batch {base.data.batch_size}, d_sae {base.sae.d_sae}.", ""]
        if self.base.assumed:  # what the user's config left open or saelab does differently (docs/interop-fields.md)
            lines += ["**Assumed** (your config does not say it, or saelab does it differently):", ""]
            lines += [f"- {_md(a)}" for a in self.base.assumed] + [""]
        if built.profile_set:
            lines.append("Fields the profile set (the base leaves them open): "
                         + ", ".join(_code(f"{k}={shown(v)}") for k, v in built.profile_set.items() if k != "seed") + ".")
        if self.overrides:
            lines.append("Overrides for every arm: " + ", ".join(_code(f"{k}={shown(v)}") for k, v in self.overrides.items()) + ".")
        lines += ["", "| arm | differs from the base in | tests |", "|---|---|---|"]
        testers: dict[str, list[str]] = {}
        for hid, arms in built.plan.tested.items():
            for a in arms:
                testers.setdefault(a.name, []).append(hid)
        for name in built.plan.arms:
            ch = built.plan.changes.get(name, {})
            text = ", ".join(_code(f"{k}={shown(v)}") for k, v in ch.items()) or "(the base)"
            lines.append(f"| {_code(name)} | {text} | {', '.join(testers.get(name, []))} |")
        if built.plan.not_applicable:
            lines += ["", "Not applicable to this base (no arm trained):"]
            lines += [f"- **{hid}**: {_md(why)}" for hid, why in built.plan.not_applicable.items()]
        return "\n".join(lines)


    # ----- the plan on disk: what the lab planned, read back by the phase's notebook ----------

    def record(self) -> dict[str, Any]:
        """The phase as planned, as JSON: its validated parameters, the base, and per replicate the
        context, the fields the profile set, every arm's config, what each hypothesis tests and why
        the others cannot act, and the jobs. ``PhaseRun.restore`` rebuilds this PhaseRun from it
        exactly, without reading the base again (``saelab.lab.plan`` writes it; ``prepare`` reads it)."""
        replicates = {}
        for seed, b in self.built.items():
            replicates[str(seed)] = {
                "context": {"base": b.ctx.base.to_dict(), "params": dict(b.ctx.params), "default_case": b.ctx.default_case,
                            "steps_explicit": b.ctx.steps_explicit, "prior_verdicts": list(b.ctx.prior_verdicts)},
                "profile_set": b.profile_set,
                "arms": {name: cfg.to_dict() for name, cfg in b.plan.arms.items()},
                "tested": {hid: [{"name": a.name, "changes": dict(a.changes), "against": a.against} for a in arms]
                           for hid, arms in b.plan.tested.items()},
                "not_applicable": b.plan.not_applicable,
                "changes": b.plan.changes,
            }
        return {"stem": self.phase.stem, "saelab": provenance(), "parameters": _jsonable(self.parameters),
                "base_stamp": base_stamp(self.base.files),
                "base": {"config": self.base.config.to_dict(), "pinned": sorted(self.base.pinned), "name": self.base.name,
                         "origin": self.base.origin, "assumed": list(self.base.assumed), "files": list(self.base.files)},
                "profile": self.profile.name, "seeds": list(self.seeds), "out_dir": str(self.out_dir), "params": self.params,
                "overrides": self.overrides, "explorer": self.explorer, "replicates": replicates,
                "jobs": [{"name": j.name, "out": str(j.out), "arms": list(j.arms), "factor": j.factor} for j in self.jobs()]}

    @classmethod
    def restore(cls, rec: Mapping[str, Any]) -> PhaseRun:
        """The PhaseRun that ``record`` wrote (ValueError naming what is missing or malformed)."""
        try:
            phase, profile = get_phase(rec["stem"]), get_profile(rec["profile"])
            built = {}
            for seed, r in rec["replicates"].items():
                c = r["context"]
                ctx = Context(RunConfig.from_dict(c["base"]), profile, c["params"], c["default_case"], c["steps_explicit"],
                              tuple(c["prior_verdicts"]))
                plan = Plan({name: RunConfig.from_dict(d) for name, d in r["arms"].items()},
                            {hid: [Arm(a["name"], a["changes"], a["against"]) for a in arms] for hid, arms in r["tested"].items()},
                            dict(r["not_applicable"]), {k: dict(v) for k, v in r["changes"].items()})
                built[int(seed)] = Built(ctx, plan, dict(r["profile_set"]))
            b = rec["base"]
            base = Base(RunConfig.from_dict(b["config"]), frozenset(b["pinned"]), b["name"], b["origin"],
                        tuple(b.get("assumed", ())), tuple(b.get("files", ())))
            return cls(phase, profile, tuple(rec["seeds"]), Path(rec["out_dir"]), dict(rec["params"]), built, base,
                       dict(rec["overrides"]), explorer=bool(rec["explorer"]), parameters=dict(rec["parameters"]))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"the phase's plan is malformed ({type(e).__name__}: {e})") from None


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def base_stamp(files: Any) -> list | None:
    """What says that the files a base was read from (``Base.files``: a sparsify cfg.json and its
    Trainer's config.json one folder up, too) are unchanged: each one's ``identity.file_stamp``;
    [] for a preset, None when one of them is gone (the plan is then made afresh)."""
    paths = [Path(f) for f in files or ()]
    if not all(p.is_file() for p in paths):
        return None
    return [file_stamp(p) for p in paths]


def read_plan(stem: str, parameters: Mapping[str, Any]) -> PhaseRun | None:
    """The PhaseRun the lab planned for ``stem`` in ``parameters["out_dir"]``, when its plan.json was
    made by this saelab from these very parameters and base; else None (the caller plans itself)."""
    path = Path(parameters["out_dir"]) / PLAN_FILE
    if not path.is_file():
        return None
    rec = read_json(path)
    if not isinstance(rec, dict):
        return None
    files = rec["base"].get("files") if isinstance(rec.get("base"), dict) else None
    if (rec.get("stem") != stem or rec.get("saelab") != provenance() or rec.get("parameters") != _jsonable(dict(parameters))
            or rec.get("base_stamp") != base_stamp(files)):
        return None
    return PhaseRun.restore(rec)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def lockstep_groups(arms: Mapping[str, RunConfig]) -> list[dict[str, RunConfig]]:
    """Split arms into groups that can train in lockstep (equal data, steps and cadence)."""
    groups: dict[tuple, dict[str, RunConfig]] = {}
    for name, cfg in arms.items():
        groups.setdefault(tuple(repr(getattr(cfg, f)) for f in SHARED_FIELDS), {})[name] = cfg
    return list(groups.values())


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (parameters: {sorted(options)})"


def parameter_names(history: list[str]) -> list[str]:
    """Names assigned by the cells in ``history`` that consist only of top-level assignments
    (the parameters cell and papermill's injected-parameters cell); cells that fail to parse or
    do anything else are ignored."""
    names: list[str] = []
    for source in history:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        if not tree.body or not all(isinstance(s, (ast.Assign, ast.AnnAssign)) for s in tree.body):
            continue
        for s in tree.body:
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return list(dict.fromkeys(names))


def prepare(stem: str, namespace: Mapping[str, Any], history: list[str] | None = None) -> PhaseRun:
    """What a notebook's second cell calls: validate its parameters and return its PhaseRun.

    ``namespace`` holds the parameter values (a notebook passes ``globals()``); ``history`` the
    sources of the cells run before (a notebook's ``In``), from which assigned names are read:
    any name there that is not a parameter of this phase raises ValueError, as does any invalid
    value (the message names the parameter and what is allowed). When ``saelab lab`` planned this
    phase with these parameters, its plan is read back (``read_plan``: the base is not parsed
    again); a notebook opened alone plans itself (``plan_phase``)."""
    phase = get_phase(stem)
    allowed = list(mirrors(phase))
    given = parameter_names(history if history is not None else list(namespace.get("In", [])))
    unknown = [n for n in given if n not in allowed]
    if unknown:
        raise ValueError(f"{stem}: unknown parameter {unknown[0]!r}{_suggest(unknown[0], allowed)}")
    missing = [n for n in allowed if n not in namespace]
    if missing:
        raise ValueError(f"{stem}: parameter {missing[0]!r} is not set; the parameters cell must define {allowed}")
    p = validate(stem, {n: namespace[n] for n in allowed})
    return read_plan(stem, p) or plan_phase(stem, p)


def validate(stem: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Phase ``stem``'s notebook parameters checked and completed: the missing ones at their
    defaults (``saelab.lab.params``), the flags parsed strictly, ``out_dir`` set (a new dated folder
    when None). Raises ValueError naming the parameter and what is allowed."""
    phase = get_phase(stem)
    allowed = list(mirrors(phase))
    unknown = [n for n in values if n not in allowed]
    if unknown:
        raise ValueError(f"{stem}: unknown parameter {unknown[0]!r}{_suggest(unknown[0], allowed)}")
    p = {**defaults(phase), **values}
    # issue 14 hooks (saelab.lab.params): papermill's `-p flag false` arrives as the string "false",
    # which reads as true; and with no out_dir a notebook writes a new dated folder, never a report's
    p["explorer"] = parse_bool("explorer", p["explorer"])
    for n, (_, default, _) in phase.params.items():
        if isinstance(default, bool):
            p[n] = parse_bool(f"{stem}: {n}", p[n])
        elif isinstance(default, list) and default and all(isinstance(d, bool) for d in default) and isinstance(p[n], list):
            p[n] = [parse_bool(f"{stem}: {n}", v) for v in p[n]]
    if p["out_dir"] is None:
        p["out_dir"] = default_run_dir(stem)
        print(f"{stem}: out_dir is not set; the runs go to {p['out_dir']}")
    profile = get_profile(p["profile"])
    seeds = tuple(profile.seeds if p["seeds"] is None else p["seeds"])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"{stem}: seeds={p['seeds']!r} must be a non-empty list of integers >= 0 (or None)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{stem}: seeds={p['seeds']!r} repeats a seed")
    if p["steps"] is not None and (not isinstance(p["steps"], int) or isinstance(p["steps"], bool) or p["steps"] < 1):
        raise ValueError(f"{stem}: steps={p['steps']!r} must be an integer >= 1 (or None: the profile's)")
    if not isinstance(p["overrides"], Mapping):
        raise ValueError(f"{stem}: overrides={p['overrides']!r} must be a dict of dotted config paths to values")
    if not isinstance(p["out_dir"], (str, Path)) or not str(p["out_dir"]):
        raise ValueError(f"{stem}: out_dir={p['out_dir']!r} must be a folder path")
    if p["base"] is not None and not isinstance(p["base"], str):
        raise ValueError(f"{stem}: base={p['base']!r} must be a preset name or a path (or None: {DEFAULT_BASE})")
    if p["source"] is not None and not isinstance(p["source"], str):
        raise ValueError(f"{stem}: source={p['source']!r} must be synthetic | minilm | hf:<model> | file:<path> (or None: the base's)")
    p["out_dir"] = str(p["out_dir"])
    return p


def plan_phase(stem: str, p: Mapping[str, Any], base: Base | None = None) -> PhaseRun:
    """Phase ``stem``'s arms for every replicate under the validated parameters ``p`` (``validate``)
    on ``base`` (default: ``load_base(p["base"])``; the lab passes the one it loaded). A phase that
    reads the other phases' verdicts (06) reads them beside its ``out_dir``. ValueError naming the
    problem."""
    phase = get_phase(stem)
    profile = get_profile(p["profile"])
    seeds = tuple(profile.seeds if p["seeds"] is None else p["seeds"])
    base = load_base(p["base"]) if base is None else base
    own = {n: p[n] for n in phase.params}
    prior: tuple[dict, ...] = ()
    if phase.reads_prior:  # the other phases of this lab write their verdicts beside this phase's folder
        prior = tuple(load_phase_verdicts(Path(p["out_dir"]).parent, skip=stem))
    built = {s: build(stem, p["profile"], s, base, p["source"], p["steps"], p["data_mean_offset"], dict(p["overrides"]),
                      prior, **own) for s in seeds}
    return PhaseRun(phase, profile, seeds, Path(p["out_dir"]), own, built, base, dict(p["overrides"]), explorer=p["explorer"],
                    parameters=dict(p))


def check_data(cfg: RunConfig) -> None:
    """What can be checked of a file source before anything trains: at least one batch of training
    rows and finite held-out rows (ValueError naming the file). Synthetic data is generated; a
    transformer source is checked when its cache is built."""
    if not cfg.data.source.startswith("file:"):
        return
    source = make_source(cfg)
    cfg = resolve(cfg, source)
    rows = getattr(source, "train_rows", None)
    if rows is not None and rows < cfg.data.batch_size:
        raise ValueError(f"data.source {cfg.data.source}: {rows} training rows, fewer than one batch of {cfg.data.batch_size}")
    x = source.eval_set(cfg.eval_rows)
    bad = int((~torch.isfinite(x)).any(dim=-1).sum())
    if bad:
        raise ValueError(f"data.source {cfg.data.source}: {bad} of the {x.shape[0]} held-out rows hold NaN or inf")
