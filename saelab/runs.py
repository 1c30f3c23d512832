"""A run is a directory; loading is the inverse of saving.

Layout of one arm's directory::

    config.json          the RunConfig (sae.d_in resolved)
    metrics.parquet      one row per log step
    events.jsonl         resamples, schedule changes, checkpoints, ...
    latents.safetensors  steps [n_logs], fire_counts [n_logs, d_sae] on the held-out rows, eval_rows
    sae.safetensors      final weights of this arm (no arm dimension)
    summary.json         final numbers, wall time, steps/s
    autopsy.json, lifecycles.json, init.json   diagnostics (saelab.diagnose)

A multi-arm training writes one such directory per arm under ``out`` and ``out/arms.json``.
Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file. Weights are safetensors and state is JSON; nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelab.config import RunConfig


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as null. Numpy and torch values become Python ones first
    (a numpy float32 NaN would otherwise slip through as an invalid ``NaN`` token)."""
    if isinstance(obj, (np.generic, np.ndarray, Tensor)):
        obj = obj.tolist()  # scalars -> int/float/bool, arrays -> nested lists
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_clean(obj), indent=2, sort_keys=False, allow_nan=False)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(_clean(r), allow_nan=False) + "\n" for r in rows)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    _atomic(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_tensors(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


@dataclass
class Run:
    """One arm's saved run."""

    path: Path
    name: str
    config: RunConfig
    metrics: pd.DataFrame
    events: list[dict]
    summary: dict
    latents: dict[str, Tensor] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict)
    autopsy: dict = field(default_factory=dict)
    lifecycles: dict = field(default_factory=dict)
    init: dict = field(default_factory=dict)

    def save(self) -> None:
        """Write every part of the run to ``self.path`` (the inverse of ``load_run``)."""
        p = self.path
        _atomic(p / "config.json", lambda tmp: Path(tmp).write_text(self.config.to_json() + "\n"))
        _atomic(p / "metrics.parquet", lambda tmp: self.metrics.to_parquet(tmp, index=False))
        write_jsonl(p / "events.jsonl", self.events)
        write_json(p / "summary.json", self.summary)
        if self.latents:
            write_tensors(p / "latents.safetensors", self.latents)
        if self.weights:
            write_tensors(p / "sae.safetensors", self.weights)
        for part in ("autopsy", "lifecycles", "init"):
            if getattr(self, part):
                write_json(p / f"{part}.json", getattr(self, part))


def load_run(path: str | Path) -> Run:
    """Load an arm's directory. Raises ValueError naming the directory when it is not a run."""
    p = Path(path)
    if not (p / "config.json").exists():
        raise ValueError(f"{p} is not a saelab run directory (no config.json)")
    opt = lambda name, reader, default: reader(p / name) if (p / name).exists() else default  # noqa: E731
    return Run(
        path=p,
        name=p.name,
        config=RunConfig.from_json((p / "config.json").read_text()),
        metrics=opt("metrics.parquet", pd.read_parquet, pd.DataFrame()),
        events=read_jsonl(p / "events.jsonl"),
        summary=opt("summary.json", read_json, {}),
        latents=opt("latents.safetensors", read_tensors, {}),
        weights=opt("sae.safetensors", read_tensors, {}),
        autopsy=opt("autopsy.json", read_json, {}),
        lifecycles=opt("lifecycles.json", read_json, {}),
        init=opt("init.json", read_json, {}),
    )


def load_arms(out: str | Path) -> dict[str, Run]:
    """All arms of a multi-arm training, in the order they were given; a single-arm directory
    loads as one arm."""
    out = Path(out)
    if (out / "arms.json").exists():
        meta = read_json(out / "arms.json")
        return {name: load_run(out / name) for name in meta["arms"]}
    run = load_run(out)
    return {run.name: run}
