"""The user's base configuration, and the profile that sizes it for the lab.

A base is what the user brings: a preset name, a saelab ``config.json`` (full, or partial with the
missing fields at saelab's defaults), a run directory (its ``config.json``), a SAELens
``cfg.json`` / ``runner_cfg.json`` or a sparsify SAE (saelab.interop: each foreign field mapped,
assumed and said so, ignored or refused, docs/interop-fields.md). ``load_base`` reads it and
records which fields the user *pinned*; ``sized`` fits it to a profile: the profile sets the
run's length, widths and held-out rows only where the base does not pin them, and says which
fields it set. Every phase then builds its arms from that one sized base, each arm changing ONE
factor of it.

A preset pins nothing: it names a recipe, and the profile sizes it keeping its proportions (the
seed's Test 1 warms up for 5% of its steps and resamples every 25%, at every profile).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saelab.config import PRESETS, PROVENANCE_KEY, RunConfig, preset
from saelab.data.files import open_segments
from saelab.interop.saelens_config import from_saelens
from saelab.interop.sparsify_config import from_sparsify, is_sparsify, trainer_config

DEFAULT_BASE = "seed-test1"  # the seed's minimal reproduction (seeds/004, Test 1): the lab's first case


# ----- profiles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How big the runs of every phase are, where the base leaves it open."""

    name: str
    seeds: tuple[int, ...]  # random replicates per phase
    steps: int  # optimizer steps per arm
    d_in: int  # synthetic activation width (the seed's hidden size is 768)
    d_sae: int  # latents (Test 1: 256; the seed's pipeline: 2048)
    batch_size: int  # rows per step (Test 1: 64)
    eval_rows: int  # held-out rows for metrics and the held-out dead count
    log_interval: int  # steps between metrics rows
    n_features: int  # true synthetic features
    mean_offset: float  # norm of the synthetic data's constant offset (outlier severity ~ offset / 3.8)
    max_tokens: int  # tokens of text for the transformer source (its cache build is paid once)
    pipeline_d_sae: int  # phase 00's seed-pipeline arm (the seed: 2048)
    pipeline_batch: int  # ... and its batch (the seed: 128)
    pipeline_steps: int  # ... and its length (the seed: 50,000)
    threads: int  # torch intra-op threads while training (0: torch's default). At quick widths a second
    # thread costs more in synchronization than it saves, and under any other CPU load it makes
    # steps 4-14x slower (measured: phase 05 smoke 1.6 s with 1 thread, 21.8 s with 2)


# the dose search's extra arms (saelab.lab.dose; here so the CLI reads it without loading the lab), each
# over every replicate: k x16 and lr x0.03, x0.01 fit
DOSE_BUDGET = 4

PROFILES: dict[str, Profile] = {
    # seconds: for tests; nothing is expected to show at this size
    "smoke": Profile("smoke", (0,), 60, 32, 32, 16, 256, 10, 128, 8.0, 4096, 64, 32, 60, 1),
    # a notebook opened in JupyterLab (its parameters cell's default): quick's widths, 30% of its
    # length, one replicate, so that Run All finishes in about a minute on a 2-core CPU (phase 05,
    # 12 arms, the slowest: measured in issue 23's report); its verdicts are indications
    "explore": Profile("explore", (0,), 300, 256, 256, 64, 1024, 20, 1024, 8.0, 50_000, 512, 128, 300, 1),
    # the lab's default (saelab lab, make lab): all seven notebooks in <= 15 minutes on a 2-core CPU, 3 replicates each
    "quick": Profile("quick", (0, 1, 2), 1000, 256, 256, 64, 1024, 50, 1024, 8.0, 50_000, 512, 128, 1000, 1),
    # the seed's own scale (Test 1 length at the pipeline's width; phase 00 at the seed's 50k)
    "full": Profile("full", (0, 1, 2), 10_000, 768, 2048, 128, 8192, 100, 4096, 8.0, 400_000, 2048, 128, 50_000, 0),
}
DEAD_WINDOW_BATCHES = 100  # tracking.dead_tokens the profile sets: 100 training batches, at most a tenth of the run
# (Gao 2024 use 10M tokens at scale)
# Step counts that keep their share of the run when the profile sets the length (Test 1: warmup 5%, resampling 25%).
STEP_FIELDS = ("schedule.warmup_steps", "resample.interval", "resample.first_step", "penalty.warmup_steps",
               "aux.reanimation_anneal_steps")


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile={name!r} is unknown; choose one of {list(PROFILES)}")
    return PROFILES[name]


# ----- the base -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A user's base config and the fields they set themselves."""

    config: RunConfig
    pinned: frozenset[str]  # dotted fields the user set (a preset pins none)
    name: str  # what the user passed: a preset name or a path
    origin: str  # "preset" | "saelab config" | "run directory" | "SAELens config" | "sparsify config"
    # what a foreign config left open or saelab does differently, one sentence each: the lab's
    # pages open with these (docs/interop-fields.md, decision "assumed")
    assumed: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # the files the base was read from (a sparsify cfg.json and its Trainer's config.json)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted path: leaf value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_base(spec: str | Path | None = None) -> Base:
    """Read a base: a preset name, a saelab config.json (full or partial), a run directory holding
    one, a SAELens config (cfg.json or runner_cfg.json, or the folder holding them) or a sparsify
    SAE's cfg.json (or its folder, with the Trainer's config.json). Raises ValueError naming the
    file and the problem."""
    spec = DEFAULT_BASE if spec is None or str(spec) == "" else spec
    if isinstance(spec, str) and spec in PRESETS:
        return Base(preset(spec), frozenset(), spec, "preset")
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"base {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file or run directory")
    origin = "saelab config"
    train: dict[str, Any] | None = None
    if path.is_dir():
        # a SAELens runner's output (runner_cfg.json carries the training settings), a sparsify SAE
        # (cfg.json, with the Trainer's config.json when it is there), a saelab run directory
        for name in ("runner_cfg.json", "cfg.json", "config.json"):
            if (path / name).is_file():
                folder, path, origin = path, path / name, "run directory"
                break
        else:
            raise ValueError(f"base {spec}: the folder holds no runner_cfg.json, cfg.json or config.json")
        if path.name == "cfg.json" and trainer_config(folder) is not None:
            train = _read_object(trainer_config(folder))
    data = _read_object(path)
    assumed: tuple[str, ...] = ()
    if is_sparsify(data) or (train is not None and is_sparsify(train)):
        try:
            mapped = from_sparsify(data, train)
        except ValueError as e:
            raise ValueError(f"base {path}: {e}") from None
        d, assumed, origin = mapped.config, mapped.assumed, "sparsify config"
    elif is_saelens(data):
        try:
            mapped = from_saelens(data)
        except ValueError as e:
            raise ValueError(f"base {path}: {e}") from None
        d, assumed, origin = mapped.config, mapped.assumed, "SAELens config"
    else:
        d = {k: v for k, v in data.items() if k not in ("saelab_version", PROVENANCE_KEY)}  # stamps, not fields
    try:
        cfg = RunConfig.from_dict(d)
    except ValueError as e:
        raise ValueError(f"base {path}: {e}") from None
    read = (path,) if train is None else (path, trainer_config(folder))
    return Base(cfg, frozenset(flatten(d)), str(spec), origin, assumed, tuple(str(p) for p in read))


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"base {path}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"base {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"base {path}: must hold a JSON object, not {type(data).__name__}")
    return data


SAELENS_KEYS = {"d_in", "d_sae", "l1_coefficient", "lr", "architecture", "training_tokens", "train_batch_size_tokens",
                "hook_name", "model_name", "activation_fn", "activation_fn_kwargs", "expansion_factor", "normalize_activations"}


def is_saelens(d: dict[str, Any]) -> bool:
    """A SAELens config names its fields flat at the top (d_in, l1_coefficient, lr, hook_name);
    a saelab config has only saelab's sections (an unknown name there is reported as a typo)."""
    return bool(set(d) & SAELENS_KEYS)


def file_rows(source: str) -> int:
    """Rows of the activation file(s) of a ``file:`` source, from their headers (0 when they cannot
    be read: the data check reports that before anything trains)."""
    try:
        return sum(seg.rows for seg in open_segments(source.removeprefix("file:")))
    except (ValueError, OSError):
        return 0


def sized(base: Base, profile: Profile, source: str | None = None, seed: int = 0, steps: int | None = None,
          mean_offset: float | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """The base fitted to ``profile`` for replicate ``seed``, on ``source`` (None: the base's).
    Returns (config, the fields the profile set -> value). ``steps`` and ``mean_offset`` are the
    notebook's explicit overrides (they win over the base too)."""
    cfg, pinned = base.config, base.pinned
    src = source or cfg.data.source
    set_: dict[str, Any] = {}

    def put(path: str, value: Any, force: bool = False) -> None:
        if force or path not in pinned:
            set_[path] = value

    if steps is not None:
        put("steps", steps, force=True)
    else:
        put("steps", profile.steps)
    n = set_.get("steps", cfg.steps)
    if "steps" in set_:  # keep each step count's share of the run
        for path in STEP_FIELDS:
            section, leaf = path.split(".")
            old = getattr(getattr(cfg, section), leaf)
            if old:
                put(path, max(1, round(old * n / cfg.steps)))
    put("sae.d_sae", profile.d_sae)
    if "sae.d_sae" in set_:  # k and AuxK's k keep their share of the latents
        for path, old in (("sae.k", cfg.sae.k), ("aux.auxk_k", cfg.aux.auxk_k)):
            put(path, max(1, min(profile.d_sae, round(old * profile.d_sae / cfg.sae.d_sae))))
    put("data.batch_size", profile.batch_size)
    put("eval_rows", profile.eval_rows)
    if "eval_rows" in set_ and src.startswith("file:"):  # a small file keeps 3/4 of its rows for training
        rows = file_rows(src)
        if rows:
            set_["eval_rows"] = max(1, min(profile.eval_rows, rows // 4))
    put("log_interval", min(profile.log_interval, n))
    batch = set_.get("data.batch_size", cfg.data.batch_size)
    # the window must open within the run (AuxK acts only on latents silent for that long); a
    # pinned window from a longer run than the profile's is fitted too (the page lists it)
    window = max(batch, min(DEAD_WINDOW_BATCHES * batch, n * batch // 10))
    put("tracking.dead_tokens", window, force=cfg.aux.auxk_coef > 0 and cfg.tracking.dead_tokens >= n * batch)
    put("tracking.window_batches", min(50, max(1, n // 10)))
    if src == "synthetic":
        put("sae.d_in", profile.d_in)
        put("data.n_features", profile.n_features)
        put("data.mean_active", min(16.0, profile.n_features / 4))
        if mean_offset is not None:
            put("data.mean_offset", float(mean_offset), force=True)
        else:
            put("data.mean_offset", profile.mean_offset)
    else:
        put("sae.d_in", 0)  # from the source; a pinned d_in is checked against the data before training
        put("data.max_tokens", profile.max_tokens)
    overrides = {**set_, "data.source": src, "seed": seed}
    try:
        out = cfg.with_overrides(overrides)
    except ValueError as e:
        raise ValueError(f"base {base.name} at the {profile.name} profile: {e}") from None
    explicit = {"steps"} if steps is not None else set()
    explicit |= {"data.mean_offset"} if mean_offset is not None else set()
    return out, {k: v for k, v in set_.items() if k not in explicit}
