"""The lab's phases: the arms each notebook trains, at the scale its profile asks for.

A phase answers one question of the seed's plan (``seeds/004``; seed 000 for reanimation) by
training arms that differ from the seed's pipeline in ONE factor, on identical data, for several
seed replicates. ``prepare(stem, namespace)`` is what a notebook's second cell calls: it reads the
parameters cell (and papermill's injected cell), rejects unknown or invalid parameters with a
ValueError (papermill only warns), and returns a ``PhaseRun`` that trains and loads the arms.

Every phase's own parameters mirror config fields (``Phase.params``: notebook name -> (field,
default)); ``check_mirrors`` checks that contract and tests/test_notebooks.py checks the notebooks.
"""

from __future__ import annotations

import ast
import difflib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.config import RunConfig, field_paths, seed_test1

# ----- profiles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How big the runs of every phase are. Schedules keep the seed's Test 1 proportions: warmup
    5% of the steps (500 of 10,000), resampling every 25% (2,500 of 10,000)."""

    name: str
    seeds: tuple[int, ...]  # seed replicates per phase
    steps: int  # optimizer steps per arm
    d_in: int  # synthetic activation width (the seed's hidden size is 768)
    d_sae: int  # latents (Test 1: 256; the seed's pipeline: 2048)
    batch_size: int  # rows per step (Test 1: 64)
    eval_rows: int  # held-out rows for metrics and the truth dead detector
    log_interval: int  # steps between metrics rows
    n_features: int  # true synthetic features
    mean_offset: float  # norm of the synthetic data's constant offset (outlier severity ~ offset / 3.8)
    max_tokens: int  # tokens of text for the transformer source (its cache build is paid once)
    pipeline_d_sae: int  # phase 00's seed-pipeline arm (the seed: 2048)
    pipeline_batch: int  # ... and its batch (the seed: 128)
    pipeline_steps: int  # ... and its length (the seed: 50,000)
    threads: int  # torch intra-op threads prepare() sets (0: torch's default). At quick widths a second
    # thread costs more in synchronization than it saves, and under any other CPU load it makes
    # steps 4-14x slower (measured: phase 05 smoke 1.6 s with 1 thread, 21.8 s with 2)


PROFILES: dict[str, Profile] = {
    # seconds: for tests; nothing is expected to show at this size
    "smoke": Profile("smoke", (0,), 60, 32, 32, 16, 256, 10, 128, 8.0, 4096, 64, 32, 60, 1),
    # the default: all seven notebooks in <= 15 minutes on a 2-core CPU, 3 replicates each
    "quick": Profile("quick", (0, 1, 2), 1000, 256, 256, 64, 1024, 50, 1024, 8.0, 50_000, 512, 128, 1000, 1),
    # the seed's own scale (Test 1 length at the pipeline's width; phase 00 at the seed's 50k)
    "full": Profile("full", (0, 1, 2), 10_000, 768, 2048, 128, 8192, 100, 4096, 8.0, 400_000, 2048, 128, 50_000, 0),
}
WARMUP_FRACTION = 0.05  # Test 1: 500 / 10,000
RESAMPLE_FRACTION = 0.25  # Test 1: 2,500 / 10,000


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile={name!r} is unknown; choose one of {list(PROFILES)}")
    return PROFILES[name]


def base_config(profile: Profile, seed: int, source: str = "synthetic", steps: int | None = None,
                mean_offset: float | None = None) -> RunConfig:
    """The seed's Test 1 (``config.seed_test1``: mean-over-all L1 at 0.003, linear warmup, per-sample
    norm rescale, single-batch x*0.1 resampling after warmup) at the profile's scale."""
    n = steps or profile.steps
    return seed_test1().with_overrides({
        "steps": n, "seed": seed, "log_interval": min(profile.log_interval, n), "eval_rows": profile.eval_rows,
        "sae.d_sae": profile.d_sae, "sae.d_in": profile.d_in if source == "synthetic" else 0,
        "data.source": source, "data.batch_size": profile.batch_size, "data.n_features": profile.n_features,
        "data.mean_active": min(16.0, profile.n_features / 4), "data.max_tokens": profile.max_tokens,
        "data.mean_offset": profile.mean_offset if mean_offset is None else mean_offset,
        "schedule.warmup_steps": max(1, round(WARMUP_FRACTION * n)),
        "resample.interval": max(1, round(RESAMPLE_FRACTION * n)),
        "tracking.dead_tokens": 100 * profile.batch_size,  # 100 batches (Gao 2024 use 10M tokens at scale)
        "tracking.window_batches": min(50, max(1, n // 10)),
    })


# ----- the parameter contract -----------------------------------------------------------------

# name in every notebook -> the config field it mirrors (None: not a config field)
COMMON_PARAMS: dict[str, str | None] = {
    "profile": None, "seeds": "seed", "out_dir": None, "source": "data.source", "steps": "steps",
    "data_mean_offset": "data.mean_offset", "overrides": None, "explorer": None,
}


@dataclass(frozen=True)
class Phase:
    """One notebook: its question, the hypotheses its verdicts answer, the factor its arms vary,
    its own parameters (name -> mirrored config field, default) and the arm builder
    ``build(base, profile, params) -> {arm: RunConfig}``; the first arm is the seed's."""

    stem: str
    title: str
    question: str
    hypotheses: tuple[str, ...]
    factor: str
    params: dict[str, tuple[str | None, Any]]
    build: Callable[[RunConfig, Profile, dict[str, Any]], dict[str, RunConfig]]

    def defaults(self) -> dict[str, Any]:
        return {name: default for name, (_, default) in self.params.items()}

    def mirrors(self) -> dict[str, str | None]:
        """Every notebook parameter -> the config field it mirrors."""
        return {**COMMON_PARAMS, **{name: path for name, (path, _) in self.params.items()}}


def check_mirrors(phase: Phase) -> list[str]:
    """Problems with a phase's parameter contract: a mirrored field that does not exist, or a
    name that does not start with its field's path (dots as underscores)."""
    paths, problems = field_paths(), []
    for name, path in phase.mirrors().items():
        if path is None:
            continue
        if path not in paths:
            problems.append(f"{phase.stem}: parameter {name!r} mirrors unknown field {path!r}")
        elif name in phase.params and not name.startswith(path.replace(".", "_")):
            problems.append(f"{phase.stem}: parameter {name!r} does not start with {path.replace('.', '_')!r}")
    return problems


# ----- a phase's run ----------------------------------------------------------------------------


@dataclass
class PhaseRun:
    """A phase with validated parameters: the arms per seed, and where they are written."""

    phase: Phase
    profile: Profile
    seeds: tuple[int, ...]
    out_dir: Path
    params: dict[str, Any]  # the phase's own parameters, validated
    arms: dict[int, dict[str, RunConfig]]  # seed -> arm -> config
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> arm -> saelab.runs.Run
    wall_seconds: float = 0.0
    explorer: bool = False  # the parameter, parsed strictly (papermill's "false" is False); issue 14

    def train(self, progress: bool = True, clear: bool = True) -> dict[int, dict[str, Any]]:
        """Train every seed's arms (lockstep groups of arms that share data and steps) into
        ``out_dir/seed<s>/`` and load them; returns seed -> arm -> Run. In a notebook, ``clear``
        replaces the progress bars by a one-line summary when done (so reports stay static)."""
        from saelab.train import train

        t0 = time.perf_counter()
        for seed, arms in self.arms.items():
            self.runs[seed] = {}
            groups = lockstep_groups(arms)
            for i, group in enumerate(groups):
                where = self.out_dir / f"seed{seed}" / (f"group{i}" if len(groups) > 1 else "")
                self.runs[seed].update(train(group, where, progress=progress, factor=self.phase.factor))
            self.runs[seed] = {name: self.runs[seed][name] for name in arms}  # the phase's arm order
        self.wall_seconds = time.perf_counter() - t0
        if clear and progress and _in_notebook():
            from IPython.display import clear_output

            clear_output()
        n_arms = len(next(iter(self.arms.values())))
        print(f"trained {n_arms} arms x {len(self.seeds)} seeds ({self.profile.name} profile) in {self.wall_seconds:.1f} s")
        return self.runs

    def first(self) -> dict[str, Any]:
        """The first seed's runs (what the per-arm figures show)."""
        return self.runs[self.seeds[0]]

    def describe(self) -> str:
        """Markdown: the profile, seeds and steps, and each arm with the config fields in which it
        differs from the first (the seed's) arm."""
        arms = self.arms[self.seeds[0]]
        ref = _flat(next(iter(arms.values())).to_dict())
        first = next(iter(arms.values()))
        lines = [f"Profile `{self.profile.name}`: seeds {list(self.seeds)}, {first.steps} steps, batch {first.data.batch_size}, "
                 f"d_sae {first.sae.d_sae}, data `{first.data.source}`; varied factor: `{self.phase.factor}`. "
                 f"Hypotheses: {', '.join(self.phase.hypotheses)}.", "", "| arm | differs from the seed's arm in |", "|---|---|"]
        for name, cfg in arms.items():
            diff = {k: v for k, v in _flat(cfg.to_dict()).items() if ref.get(k) != v and k != "seed"}
            lines.append(f"| `{name}` | {', '.join(f'`{k}={v!r}`' for k, v in diff.items()) or '(the seed arm)'} |")
        return "\n".join(lines)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def lockstep_groups(arms: Mapping[str, RunConfig]) -> list[dict[str, RunConfig]]:
    """Split arms into groups that can train in lockstep (equal data, steps and cadence)."""
    from saelab.train import SHARED_FIELDS

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
    """Validate a notebook's parameters and build its arms for every seed.

    ``namespace`` holds the parameter values (a notebook passes ``globals()``); ``history`` the
    sources of the cells run before (a notebook's ``In``), from which assigned names are read:
    any name there that is not a parameter of this phase raises ValueError, as does any invalid
    value (the message names the parameter and what is allowed). Sets torch's intra-op threads to
    the profile's ``threads`` (the kernel runs nothing else)."""
    from saelab.phase_arms import PHASES

    if stem not in PHASES:
        raise ValueError(f"unknown phase {stem!r}; phases: {list(PHASES)}")
    phase = PHASES[stem]
    allowed = list(phase.mirrors())
    given = parameter_names(history if history is not None else list(namespace.get("In", [])))
    unknown = [n for n in given if n not in allowed]
    if unknown:
        raise ValueError(f"{stem}: unknown parameter {unknown[0]!r}{_suggest(unknown[0], allowed)}")
    missing = [n for n in allowed if n not in namespace]
    if missing:
        raise ValueError(f"{stem}: parameter {missing[0]!r} is not set; the parameters cell must define {allowed}")
    p = {n: namespace[n] for n in allowed}
    # issue 14 hooks (saelab.params): papermill's `-p flag false` arrives as the string "false",
    # which reads as true; and with no out_dir a notebook writes a new dated folder, never a report's
    from saelab.params import default_run_dir, parse_bool

    p["explorer"] = parse_bool("explorer", p["explorer"])
    for n, (_, default) in phase.params.items():
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
    if not isinstance(p["explorer"], bool):
        raise ValueError(f"{stem}: explorer={p['explorer']!r} must be True or False")
    if not isinstance(p["out_dir"], (str, Path)) or not str(p["out_dir"]):
        raise ValueError(f"{stem}: out_dir={p['out_dir']!r} must be a folder path")
    if profile.threads:
        import torch

        torch.set_num_threads(profile.threads)
    own = {n: p[n] for n in phase.params}
    arms = {s: build_arms(stem, p["profile"], s, p["source"], p["steps"], p["data_mean_offset"], dict(p["overrides"]), **own)
            for s in seeds}
    return PhaseRun(phase, profile, seeds, Path(p["out_dir"]), own, arms, explorer=p["explorer"])


def build_arms(stem: str, profile: str = "quick", seed: int = 0, source: str = "synthetic", steps: int | None = None,
               data_mean_offset: float | None = None, overrides: dict[str, Any] | None = None, **params: Any
               ) -> dict[str, RunConfig]:
    """The arms of phase ``stem`` for one seed: {arm name: RunConfig}; the first is the seed's arm.
    ``params`` are the phase's own parameters (defaults from its Phase); ``overrides`` (dotted
    config paths) apply to every arm last. Raises ValueError on anything unknown or invalid."""
    from saelab.phase_arms import PHASES

    if stem not in PHASES:
        raise ValueError(f"unknown phase {stem!r}; phases: {list(PHASES)}")
    phase = PHASES[stem]
    unknown = [n for n in params if n not in phase.params]
    if unknown:
        raise ValueError(f"{stem}: unknown parameter {unknown[0]!r}{_suggest(unknown[0], list(phase.params))}")
    prof = get_profile(profile)
    if data_mean_offset is not None and (isinstance(data_mean_offset, bool) or not isinstance(data_mean_offset, (int, float))):
        raise ValueError(f"{stem}: data_mean_offset={data_mean_offset!r} must be a number (or None: the profile's)")
    base = base_config(prof, seed, source, steps, data_mean_offset)
    arms = phase.build(base, prof, {**phase.defaults(), **params})
    if not arms:
        raise ValueError(f"{stem}: the parameters leave no arm to train")
    if overrides:
        arms = {name: cfg.with_overrides(overrides) for name, cfg in arms.items()}
    return arms
