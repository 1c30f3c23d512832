"""A run is a directory; loading is the inverse of saving.

Layout of one arm's directory::

    config.json          the RunConfig (sae.d_in resolved)
    metrics.parquet      one row per log step
    events.jsonl         resamples, schedule changes, checkpoints, ...
    latents.safetensors  steps [n_logs], fire_counts [n_logs, d_sae] on the held-out rows, eval_rows
    sae.safetensors      final weights of this arm (no arm dimension)
    summary.json         final numbers, wall time, steps/s
    autopsy.json, lifecycles.json, init.json   diagnostics (saelab.training.diagnose)
    checkpoint.safetensors   resume state while unfinished (one file: tensors + JSON metadata)
    .lock                the fcntl lock a training holds (see ``locked``)

A multi-arm training writes one such directory per arm under ``out`` and ``out/arms.json``
(the checkpoint and lock then sit in ``out``).
Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file. Weights are safetensors and state is JSON; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelab.config import PROVENANCE_KEY, RunConfig
from saelab.fileio import bad_file, missing, read_json, read_jsonl, write_json, write_jsonl, write_via

# every file saelab writes into a run directory (through _atomic, so a kill can leave a temporary
# ".<name>.<8 random characters>" beside it; remove_stale_temps clears those)
RUN_FILES = ("config.json", "metrics.parquet", "events.jsonl", "latents.safetensors", "sae.safetensors",
             "summary.json", "autopsy.json", "lifecycles.json", "init.json", "arms.json", "checkpoint.safetensors")
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}$")  # tempfile.mkstemp(prefix=".<name>.")'s names
LOCK_NAME = ".lock"


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted write of a RUN_FILES file left in ``folder``
    (call it while holding the folder's lock: a live writer's temporary looks the same)."""
    removed = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            m = _TEMP.match(p.name)
            if m and m["name"] in RUN_FILES and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory ``folder`` (an fcntl lock on ``folder/.lock``,
    released by the kernel when the process dies, so a kill -9 never leaves it stuck). A second
    writer gets a ValueError at once instead of both writing into one run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise ValueError(f"{folder} is in use by another saelab training (pid {holder}); wait for it to finish, "
                             f"or train into another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing drops the lock


def write_metrics(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    write_via(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:  # a full disk or a file-size limit: an OSError like any other write's
            raise OSError(f"{path}: could not be written ({str(e).splitlines()[0]})") from None

    write_via(Path(path), save)


def read_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file; a truncated or corrupt one is a ValueError naming the file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise bad_file(path, missing(path)) from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError, ...)
        raise bad_file(path, f"is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "it is truncated or damaged") from None


def read_tensor_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (ValueError naming the file if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise bad_file(path, missing(path)) from None
    except Exception as e:  # noqa: BLE001 - SafetensorError
        raise bad_file(path, f"is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "it is truncated or damaged") from None


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid, OSError, ...
        raise bad_file(path, f"is not a readable parquet file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def read_config(path: Path) -> RunConfig:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise bad_file(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    try:
        return RunConfig.from_json(text)
    except json.JSONDecodeError as e:
        raise bad_file(path, f"is not valid JSON ({e}); the file is damaged") from None
    except (ValueError, TypeError) as e:
        raise bad_file(path, str(e)) from None


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
    made: dict = field(default_factory=dict)  # config.json's "saelab": what produced the run (saelab.training.identity)

    def save(self) -> None:
        """Write every part of the run to ``self.path`` (the inverse of ``load_run``)."""
        p = self.path
        text = self.config.to_json(provenance=self.made or True)
        write_via(p / "config.json", lambda tmp: Path(tmp).write_text(text + "\n"))
        write_via(p / "metrics.parquet", lambda tmp: self.metrics.to_parquet(tmp, index=False))
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
        config=read_config(p / "config.json"),
        metrics=opt("metrics.parquet", _read_metrics, pd.DataFrame()),
        events=read_jsonl(p / "events.jsonl"),
        summary=opt("summary.json", read_json, {}),
        latents=opt("latents.safetensors", read_tensors, {}),
        weights=opt("sae.safetensors", read_tensors, {}),
        autopsy=opt("autopsy.json", read_json, {}),
        lifecycles=opt("lifecycles.json", read_json, {}),
        init=opt("init.json", read_json, {}),
        made=_made(p / "config.json"),
    )


def _made(path: Path) -> dict:
    """The "saelab" entry of a run's config.json (what produced it), {} when there is none."""
    try:
        made = json.loads(path.read_text()).get(PROVENANCE_KEY)
    except (OSError, ValueError, AttributeError):
        return {}
    return made if isinstance(made, dict) else {}


def load_arms(out: str | Path) -> dict[str, Run]:
    """All arms of a multi-arm training, in the order they were given; a single-arm directory
    loads as one arm."""
    out = Path(out)
    if (out / "arms.json").exists():
        meta = read_json(out / "arms.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("arms"), list) or not all(isinstance(a, str) for a in meta["arms"]):
            raise bad_file(out / "arms.json", 'must be {"arms": [names...], "factor": ...}')
        return {name: load_run(out / name) for name in meta["arms"]}
    run = load_run(out)
    return {run.name: run}
