"""Notebook parameters that arrive from outside the kernel: papermill's ``-p``, ``saelab lab -p``.

Two facts about papermill shape this module. Its CLI turns ``-p flag false`` into the string
``"false"`` (only ``True``/``False`` parse as booleans), which Python reads as true. And it writes
every parameter *name* verbatim into the injected-parameters cell, so a name is code: a name with
a newline runs whatever follows it. Values are safe (papermill writes their repr); names are not.

Where a notebook's runs go when nobody says: a new dated folder under the working directory
(``default_run_dir``), which is beside the notebook in JupyterLab and where papermill was started
from. Never a report's folder: a report's runs are written only when ``saelab lab`` passes its
``out_dir``.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

def parse_bool(name: str, value: Any) -> bool:
    """``value`` as a bool: True/False, or the strings "true"/"false" in any case (papermill's
    ``-p flag false``). Anything else (1, "yes", "no", None) is a ValueError naming ``name``:
    a flag that silently reads "no" as true trains the wrong arms."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name}={value!r} must be True or False (or the strings 'true' / 'false')")


def check_parameter_name(name: Any, allowed: Iterable[str], where: str) -> str:
    """``name`` if it is a Python identifier among ``allowed`` (the phase's parameters); else a
    ValueError naming it, before papermill writes it into a cell. ``where``: the phase, for the
    message."""
    allowed = list(allowed)
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{where}: parameter name {name!r} is not a Python identifier; parameters: {sorted(allowed)}")
    if name not in allowed:
        raise ValueError(f"{where}: {name!r} is not a parameter of this phase; parameters: {sorted(allowed)}")
    return name


def check_parameters(parameters: Mapping[str, Any], phases: Mapping[str, Iterable[str] | None]) -> None:
    """Every name in ``parameters`` must be an identifier and (where a phase's parameter list is
    known, not None) a parameter of every phase in ``phases`` (stem -> its parameter names)."""
    for stem, allowed in phases.items():
        for name in parameters:
            if allowed is None:  # a notebook saelab does not know: identifiers only
                if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                    raise ValueError(f"{stem}: parameter name {name!r} is not a Python identifier")
            else:
                check_parameter_name(name, allowed, stem)


def default_run_dir(stem: str, base: str | Path | None = None, now: datetime | None = None) -> Path:
    """A folder that does not exist yet for a notebook's runs: ``<base>/runs-<stem>-<YYYYmmdd-HHMMSS>``
    (base: the working directory), with ``-2``, ``-3``, ... when two start in the same second."""
    base = Path.cwd() if base is None else Path(base)
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = base / f"runs-{stem}-{stamp}"
    n = 2
    while path.exists():
        path = base / f"runs-{stem}-{stamp}-{n}"
        n += 1
    return path
