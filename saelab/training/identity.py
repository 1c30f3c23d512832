"""What produced a run besides its config: ``identity(source)``, which every run's config.json holds
under "saelab": saelab's version and commit, torch's and numpy's versions, and the fingerprint of
the data it read. A finished job is reused only when its runs' identity is this one (saelab.execution.jobs):
after an upgrade, a fix or new data, a rerun retrains instead of mixing old numbers in.

The config names the data (``data.source``) but not what the file holds today. For ``file:`` sources every file behind
the spec has its size, modification time and a sha256 of sampled blocks (the first, the last and
evenly spaced ones between: a file rewritten in place with the same size and time, as ``cp -p``
leaves it, still changes it). For transformer sources the model folder's fingerprint (its small
files' contents and its weights' sizes and times, saelab.data.transformer) names what the activations
were computed with; the corpus and settings are in the config. Synthetic data is its config.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

import numpy
import torch

from saelab.data.files import SUFFIXES
from saelab.data.transformer import resolve_model
from saelab.version import provenance

BLOCK = 64 * 2**10  # bytes per sampled block
BLOCKS = 16  # sampled blocks over all the files of a source (at least the first and last of each)


def source_files(spec: str) -> list[Path]:
    """The files behind ``file:<spec>``'s spec (a file, a folder of known suffixes or a glob, as
    saelab.data.files.open_segments reads them); [] when none exists (the source itself then reports it)."""
    path_text = spec.rsplit("#", 1)[0] if "#" in spec and not Path(spec).expanduser().exists() else spec
    path = Path(path_text).expanduser()
    if any(c in path_text for c in "*?["):
        return [Path(p) for p in sorted(glob.glob(str(path))) if Path(p).is_file()]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    return [path] if path.is_file() else []


def sampled_hash(path: Path, blocks: int) -> str:
    """sha256 of ``blocks`` blocks of ``path``: its first and last and evenly spaced ones between."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        starts = sorted({min(max(0, size - BLOCK), i * max(0, size - BLOCK) // max(1, blocks - 1)) for i in range(blocks)})
        for start in starts:
            fh.seek(start)
            h.update(fh.read(BLOCK))
    return h.hexdigest()[:16]


def file_stamp(path: Path, blocks: int = BLOCKS) -> dict[str, Any]:
    """What says that one file is unchanged: its resolved path, size, modification time and the
    sha256 of ``blocks`` sampled blocks (a data file's, and a base config's: saelab.lab.phases)."""
    st = path.stat()
    return {"file": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sampled_sha256": sampled_hash(path, blocks)}


def data_fingerprint(source: str) -> dict[str, Any]:
    """A JSON-able record of the data ``source`` names, equal for equal data (module docstring)."""
    if source.startswith("file:"):
        files = source_files(source.removeprefix("file:"))
        per = max(2, BLOCKS // max(1, len(files)))
        return {"source": source, "files": [file_stamp(p, per) for p in files]}
    if source == "minilm" or source.startswith("hf:"):
        return {"source": source, "model": resolve_model(source).fingerprint}
    return {"source": source}


def identity(source: str) -> dict[str, Any]:
    """{"version", "commit" (saelab.version.provenance), "torch", "numpy", "data"} for a run of
    ``data.source = source`` made here and now."""
    return {**provenance(), "torch": torch.__version__, "numpy": numpy.__version__, "data": data_fingerprint(source)}


def differences(saved: Any, now: dict[str, Any]) -> list[str]:
    """What differs between a run's recorded identity ``saved`` and ``now``, as short phrases
    ("torch '2.12.0' -> '2.13.0'", "the data changed since"); [] when they are the same."""
    if not isinstance(saved, dict) or not {"torch", "numpy", "data"} <= set(saved):
        return ["made by a saelab that did not record its torch, numpy and data"]
    out = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in now if k != "data" and saved.get(k) != now[k]]
    if saved.get("data") != now["data"]:
        out.append(f"the data ({now['data']['source']}) changed since")
    return out
