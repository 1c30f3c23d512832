"""A run is a directory; loading is the inverse of saving.

Layout of one arm's directory::

    config.json          the RunConfig (sae.d_in resolved)
    metrics.parquet      one row per log step
    events.jsonl         resamples, schedule changes, checkpoints, ...
    latents.safetensors  steps [n_logs], fire_counts [n_logs, d_sae] on the held-out rows, eval_rows
    sae.safetensors      final weights of this arm (no arm dimension)
    summary.json         final numbers, wall time, steps/s
    autopsy.json, lifecycles.json, init.json   diagnostics (saelab.diagnose)
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
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelab.config import RunConfig


def umask() -> int:
    """The process's file-mode creation mask (read from /proc on Linux, so no other thread sees it
    change; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: str | Path) -> None:
    """Give ``path`` the mode a plain ``open()`` would have: 0666 less the umask (0644 under the
    usual 022). ``tempfile.mkstemp`` creates 0600, which a rename keeps: a report served or copied
    for others would be unreadable to them (issue 15)."""
    os.chmod(path, 0o666 & ~umask())


def _atomic(path: Path, write) -> None:
    """Write ``path`` through ``write(tmp)`` into a temporary file beside it and a rename, with the
    mode of a normally created file (``share``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        share(tmp)
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


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_clean(obj), indent=2, sort_keys=False, allow_nan=False)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def _bad(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def read_json(path: Path) -> Any:
    """A JSON file; a missing, unreadable or malformed one is a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise _bad(path, f"is not valid JSON ({e}); the file is damaged") from None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(_clean(r), allow_nan=False) + "\n" for r in rows)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, f"line {i} is not valid JSON ({e}); the file is damaged") from None
        if not isinstance(row, dict):
            raise _bad(path, f"line {i} is not a JSON object")
        rows.append(row)
    return rows


def write_metrics(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    _atomic(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file; a truncated or corrupt one is a ValueError naming the file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError, ...)
        raise _bad(path, f"is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "it is truncated or damaged") from None


def read_tensor_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (ValueError naming the file if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except Exception as e:  # noqa: BLE001 - SafetensorError
        raise _bad(path, f"is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "it is truncated or damaged") from None


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid, OSError, ...
        raise _bad(path, f"is not a readable parquet file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _read_config(path: Path) -> RunConfig:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    try:
        return RunConfig.from_json(text)
    except json.JSONDecodeError as e:
        raise _bad(path, f"is not valid JSON ({e}); the file is damaged") from None
    except (ValueError, TypeError) as e:
        raise _bad(path, str(e)) from None


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
        _atomic(p / "config.json", lambda tmp: Path(tmp).write_text(self.config.to_json(provenance=True) + "\n"))
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
        config=_read_config(p / "config.json"),
        metrics=opt("metrics.parquet", _read_metrics, pd.DataFrame()),
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
        if not isinstance(meta, dict) or not isinstance(meta.get("arms"), list) or not all(isinstance(a, str) for a in meta["arms"]):
            raise _bad(out / "arms.json", 'must be {"arms": [names...], "factor": ...}')
        return {name: load_run(out / name) for name in meta["arms"]}
    run = load_run(out)
    return {run.name: run}
