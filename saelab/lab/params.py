"""The phase notebooks' parameters: one typed record each (``Parameter``: name, mirrored config
field, type, default, help), the one source the notebooks' parameters cells (tools/make_notebooks.py),
the lab's plan (``saelab.lab.plan``) and ``saelab.lab.phases.prepare`` read; and the checks on
parameters that arrive from outside the kernel: papermill's ``-p``, ``saelab lab -p``.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from saelab.lab.hypothesis import Phase


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter: ``name = default  # help`` in the parameters cell, annotated ``type``;
    ``field`` is the config field it mirrors (None: not a config field)."""

    name: str
    type: str
    default: Any
    help: str
    field: str | None = None

    def line(self) -> str:
        """The parameters cell's line for this parameter."""
        shown = self.help if self.field is None or self.help.startswith(self.field) else f"{self.field}: {self.help}"
        value = f'"{self.default}"' if isinstance(self.default, str) and '"' not in self.default else repr(self.default)
        return f"{self.name}: {self.type} = {value}  # {shown}"


# every phase's notebook starts with these ...
COMMON = (
    # opened in JupyterLab, a notebook runs as it is: the explore profile (about a minute) with the
    # explorer on; saelab lab passes profile and explorer=False itself, papermill users pass -p profile
    Parameter("profile", "str", "explore", "smoke | explore | quick | full: size of the runs where the base leaves it open "
              "(smoke: seconds; explore: about a minute, one replicate; quick: minutes on a laptop CPU, what saelab lab runs; "
              "full: the seed's scale)"),
    Parameter("seeds", "list[int] | None", None, "seeds of the replicates, one run of every arm each, e.g. [0, 1, 2]; "
              "None: the profile's (1 in smoke and explore, 3 in quick and full)", "seed"),
    Parameter("out_dir", "str | None", None, "folder for this phase's runs, verdicts.json and validation.json; None: a new folder "
              "runs-<stem>-<date>-<time> in the working directory (beside the notebook in JupyterLab; saelab lab passes its own)"),
    Parameter("base", "str | None", None, "your base config: a preset name, a saelab config.json (full or partial), a run directory, "
              "or a SAELens config; None: the seed's Test 1"),
    Parameter("source", "str | None", None, "synthetic | minilm | hf:<model> | file:<path>; None: the base's", "data.source"),
    Parameter("steps", "int | None", None, "optimizer steps per arm; None: the base's if it sets them, else the profile's", "steps"),
    Parameter("data_mean_offset", "float | None", None, "norm of the synthetic rows' shared offset; None: the base's or the "
              "profile's (8, outlier severity ~2)", "data.mean_offset"),
)
# ... then the phase's own (``Phase.params``), then these
TAIL = (
    Parameter("overrides", "dict", {}, 'config fields for every arm, as {"dotted.path": value}; a field this phase varies '
              "is refused (put it in the base)"),
    Parameter("explorer", "bool", True, "show the ipywidgets explorer (live in JupyterLab only; saelab lab passes False for the "
              "static report)"),
)
# the annotation of a phase's own parameter whose default (None) does not say its type
OWN_TYPES = {"data_max_tokens": "int", "presets": "list", "sae_b_dec_init": "str", "data_tiny_row_fraction": "float",
             "data_huge_row_fraction": "float"}


def _annotation(name: str, default: Any) -> str:
    if default is None:
        return f"{OWN_TYPES[name]} | None"
    if isinstance(default, list) and default:
        return f"list[{type(default[0]).__name__}]"
    return type(default).__name__


def phase_parameters(phase: Phase) -> tuple[Parameter, ...]:
    """Every parameter of ``phase``'s notebook, in the parameters cell's order."""
    own = tuple(Parameter(name, _annotation(name, default), default, help_, path) for name, (path, default, help_) in phase.params.items())
    return COMMON + own + TAIL


def defaults(phase: Phase) -> dict[str, Any]:
    """Parameter name -> its default (what the notebook runs with when nobody passes it)."""
    return {p.name: p.default for p in phase_parameters(phase)}


def mirrors(phase: Phase) -> dict[str, str | None]:
    """Every notebook parameter of ``phase`` -> the config field it mirrors."""
    return {p.name: p.field for p in phase_parameters(phase)}


def parameters_cell(phase: Phase) -> str:
    """The source of ``phase``'s parameters cell."""
    return "\n".join(p.line() for p in phase_parameters(phase))


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
