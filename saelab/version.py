"""Which saelab produced a run or a page: the package version and, in a git checkout, the commit.

Every run's ``config.json`` and ``summary.json`` and every report page carry ``provenance()``, so a
number can be traced to the code that computed it; ``saelab --version`` prints the same line.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from saelab import __version__

REPO = Path(__file__).resolve().parents[1]
KEY = "saelab"  # the key under which config.json and summary.json hold provenance(); config loading skips it


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The checkout's commit (12 hex digits, ``+dirty`` when tracked files differ from it), or ""
    when saelab is not run from a git checkout (an installed wheel) or git is absent."""
    if not (REPO / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+dirty" if dirty else head


def provenance() -> dict[str, str]:
    """{"version": "0.1.0", "commit": "1a2b3c4d5e6f" or ""}."""
    return {"version": __version__, "commit": commit()}


def describe() -> str:
    """One line: "saelab 0.1.0 (commit 1a2b3c4d5e6f)", or "saelab 0.1.0" outside a checkout."""
    c = commit()
    return f"saelab {__version__}" + (f" (commit {c})" if c else "")
