"""Writing and reading saelab's files safely: every write goes to a temporary file beside its
target and a rename (an interrupted write never leaves a half-written file), with the mode a plain
``open()`` would give; JSON has no NaN; a missing or damaged file is a ValueError naming it.

The one atomic writer of the package: runs, reports, exports and answers all write through here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


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


def write_via(path: Path, write: Callable[[str], Any]) -> None:
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


def clean_json(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as null. Numpy and torch values become Python ones first
    (a numpy float32 NaN would otherwise slip through as an invalid ``NaN`` token). A tensor can only
    exist once torch is imported, so this module does not import it (``saelab autopsy`` never needs it)."""
    torch = sys.modules.get("torch")
    if isinstance(obj, (np.generic, np.ndarray)) or (torch is not None and isinstance(obj, torch.Tensor)):
        obj = obj.tolist()  # scalars -> int/float/bool, arrays -> nested lists
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(clean_json(obj), indent=2, sort_keys=False, allow_nan=False)
    write_via(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def bad_file(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def missing(path: Path, otherwise: str = "is missing") -> str:
    """Why ``path`` cannot be opened although it was named: a symbolic link that loops or points at
    nothing reads as "no such file" to the OS, which misleads a user who can see the link."""
    p = Path(path)
    if p.is_symlink():
        try:
            p.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 raises RuntimeError for a loop
            return "is a symbolic link that loops back on itself"
        except OSError as e:
            if getattr(e, "errno", None) == errno.ELOOP:
                return "is a symbolic link that loops back on itself"
            return f"is a symbolic link to {os.readlink(p)!r}, which does not exist"
    return otherwise


def read_json(path: Path) -> Any:
    """A JSON file; a missing, unreadable or malformed one is a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise bad_file(path, missing(path)) from None
    except OSError as e:
        raise bad_file(path, missing(path) if e.errno == errno.ELOOP else f"cannot be read ({e.__class__.__name__}: {e})") from None
    except UnicodeDecodeError as e:
        raise bad_file(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise bad_file(path, f"is not valid JSON ({e}); the file is damaged") from None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(clean_json(r), allow_nan=False) + "\n" for r in rows)
    write_via(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise bad_file(path, f"cannot be read ({e.__class__.__name__}: {e})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise bad_file(path, f"line {i} is not valid JSON ({e}); the file is damaged") from None
        if not isinstance(row, dict):
            raise bad_file(path, f"line {i} is not a JSON object")
        rows.append(row)
    return rows


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_via(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
