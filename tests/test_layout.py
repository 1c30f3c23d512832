"""The package's shape (issue 19): layers that import downward only, no import circles, no saelab
import hidden inside a function (but the CLI's per-command ones), ruff clean, and docs/ARCHITECTURE.md naming every module."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "saelab"

# lower number = lower layer; a module may import its own layer's modules (inside its subpackage, or the
# top-level foundation) and any lower layer, never a higher one. interop and execution are siblings.
LAYERS = {"saelab": 0, "saelab.config": 0, "saelab.version": 0, "saelab.fileio": 0,
          "saelab.data": 1, "saelab.training": 2, "saelab.interop": 3, "saelab.execution": 3,
          "saelab.lab": 4, "saelab.report": 5, "saelab.cli": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str:
    """``saelab.lab.causes.PHASES`` -> ``saelab.lab.causes``: the longest prefix that is a module."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported saelab module, line, at module level) for every import of a saelab module in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            if t == "saelab" or t.startswith("saelab."):
                found.append((resolve(t, known), node.lineno, id(node) in top))
    return found


def layer(mod: str) -> tuple[int, str]:
    key = resolve(mod, dict.fromkeys(LAYERS))
    return LAYERS[key], key


def test_every_module_has_a_layer():
    for mod in modules():
        assert resolve(mod, dict.fromkeys(LAYERS)) in LAYERS, f"{mod} belongs to no layer in LAYERS"


# The command line, the top layer that nothing imports, loads each command's modules when that command
# runs: `saelab autopsy` must not pay for torch, Dask and the lab (issue 22's 500 MB on a 3.3M-row log).
PER_COMMAND = {"saelab.cli"}


def test_no_saelab_import_inside_a_function():
    known = modules()
    inner = [f"{p.relative_to(ROOT)}:{line} imports {m}" for name, p in known.items()
             for m, line, at_top in imports(p, known) if not at_top and name not in PER_COMMAND]
    assert not inner, "saelab imports inside functions (lift them to the module's top):\n" + "\n".join(inner)


def test_layers_import_downward_only():
    known = modules()
    wrong = []
    for name, p in known.items():
        (mine, my_key) = layer(name)
        for m, line, _ in imports(p, known):
            (theirs, their_key) = layer(m)
            if theirs > mine or (theirs == mine and mine > 0 and their_key != my_key):
                wrong.append(f"{p.relative_to(ROOT)}:{line}: {name} ({my_key}) imports {m} ({their_key})")
    assert not wrong, "imports against the layers (see docs/ARCHITECTURE.md):\n" + "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in graph:
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles():
    known = modules()
    graph = {name: {m for m, _, _ in imports(p, known) if m != name and m != "saelab"} for name, p in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_module_is_named_in_the_architecture_document():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    # the Layout tree names each module by its file name under its subpackage's folder
    missing = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
               and not (re.search(rf"(?<![\w/]){re.escape(p.name)}\b", doc)
                        and all(f"{part}/" in doc for part in p.relative_to(PACKAGE).parts[:-1]))]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed (the dev extra installs it)")
        pytest.skip("ruff is not installed")
    res = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
