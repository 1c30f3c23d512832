"""The phase notebooks: committed clean, their parameters cells mirror the config fields phases.py
claims, every one executes under papermill in the smoke profile and writes verdicts.json, and an
unknown parameter fails the notebook with a clear message (papermill itself only warns)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest

from saelab.lab import phases
from saelab.lab.causes import PHASES

sys.path.insert(0, str(Path(__file__).parent))  # tests/checkout.py, whatever pytest's import mode
from checkout import make_checkout, status, stored  # noqa: E402


def make_notebooks():
    """tools/make_notebooks.py as a module (the generator of the committed notebooks)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL = "python3"  # jupyter_client runs a kernelspec whose argv[0] is "python" with sys.executable (the venv's)


def parameters_cell(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell is not tagged parameters"
    return code[0]


def parameter_values(path: Path) -> dict:
    """name -> literal default, checking that every line is `name[: type] = literal  # help`."""
    values = {}
    for line in parameters_cell(path).source.splitlines():
        stmt = ast.parse(line).body[0]
        assert isinstance(stmt, (ast.Assign, ast.AnnAssign)), line
        assert "  # " in line and line.split("  # ", 1)[1].strip(), f"{path.name}: no help comment on {line!r}"
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
        values[target.id] = ast.literal_eval(stmt.value)
    return values


def test_every_phase_has_its_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(PHASES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path):
    """What git stores (a saved notebook keeps its outputs on disk; the filter strips them) has
    no outputs and no execution counts, and is exactly what tools/make_notebooks.py writes."""
    text = stored(path)
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert text.rstrip("\n") == nbformat.writes(make_notebooks().notebook(path.stem)).rstrip("\n"), \
        f"{path.name} drifted from tools/make_notebooks.py: run it"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: outputs not stripped"
    source = "\n".join(c.source for c in nb.cells)
    assert 'pio.renderers.default = "plotly_mimetype+notebook"' in source
    assert nb.metadata["kernelspec"]["name"] == KERNEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_mirror_the_config_fields_phases_claims(path):
    phase = PHASES[path.stem]
    values = parameter_values(path)
    assert set(values) == set(phases.mirrors(phase))
    assert phases.check_mirrors(phase) == []
    for name, (field, default, _) in phase.params.items():
        assert values[name] == default, f"{path.name}: {name} default {values[name]!r} != phases.py {default!r}"
    assert values["out_dir"] is None  # None: a new dated folder (params.default_run_dir)
    assert values["profile"] == "explore" and values["explorer"] is True  # opened in JupyterLab, it runs as it is (issue 23)


def test_the_kernel_is_this_python():
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    assert argv[0] in ("python", "python3", sys.executable), argv


# set threads to 2 first, so that a profile's 1 (smoke) would show if it leaked out of training
PROBE_FIRST = "import torch as _torch\n_torch.set_num_threads(2)\n_threads_at_start = _torch.get_num_threads()"
PROBE_LAST = ("import json as _json\nfrom saelab.training import optim as _optim\n"
              "print('KERNEL', _json.dumps({'threads': [_threads_at_start, _torch.get_num_threads()], "
              "'retain_memory': bool(_optim._RETAIN.get('active'))}))")


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Every notebook run once in the smoke profile: stem -> (executed notebook, out_dir)."""
    import papermill as pm

    base = tmp_path_factory.mktemp("notebooks")
    done = {}
    for path in NOTEBOOKS:
        out_dir = base / "runs" / path.stem
        target = base / f"{path.stem}.ipynb"
        probed = base / f"{path.stem}.probed.ipynb"  # issue 15: the kernel's threads and allocator, first and last
        nb = nbformat.read(str(path), as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE_FIRST))
        nb.cells.append(nbformat.v4.new_code_cell(PROBE_LAST))
        nbformat.write(nb, str(probed))
        pm.execute_notebook(str(probed), str(target), parameters={"profile": "smoke", "out_dir": str(out_dir)},
                            kernel_name=KERNEL, cwd=str(ROOT), progress_bar=False)
        done[path.stem] = (target, out_dir)
    return done


@pytest.mark.parametrize("stem", list(PHASES))
def test_runs_in_the_smoke_profile_and_writes_verdicts(executed, stem):
    target, out_dir = executed[stem]
    found = json.loads((out_dir / "verdicts.json").read_text())
    assert found and all(v["verdict"] in ("confirmed", "refuted", "inconclusive", "not applicable") for v in found)
    assert {v["id"].split("-")[0] for v in found} <= {h.id for h in PHASES[stem].hypotheses}
    assert all(v["meaning"] in ("good", "bad", "unclear") for v in found)
    nb = nbformat.read(str(target), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) >= 4
    assert any("saelab-table" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)  # tables.Table, e.g. the autopsy
    widgets = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets == ["if run.explorer:"], widgets  # progress bars cleared; the explorer is on by default (issue 23)
    anchors = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert all(f'id="{v["evidence"]}"' in anchors for v in found), "a verdict links to a missing anchor"
    state = json.loads(next(o.text for o in outputs if o.get("name") == "stdout" and o.text.startswith("KERNEL")).split(" ", 1)[1])
    assert state["threads"][1] == state["threads"][0] == 2, "the notebook left torch's threads changed"
    assert state["retain_memory"] is False, "the notebook switched glibc's allocator setting on in the user's kernel"
    if stem == "06_validation":
        rows = json.loads((out_dir / "validation.json").read_text())
        assert {r["metric"] for r in rows} >= {"L0 sparsity (final)", "dead latents (final)"}


def test_an_unknown_parameter_fails_with_a_clear_message(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / "notebooks" / "02_lr_warmup.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "smoke", "out_dir": str(tmp_path), "schedule_shap": ["constant"]},
                            kernel_name=KERNEL, cwd=str(ROOT), progress_bar=False)
    assert err.value.ename == "ValueError"
    assert "unknown parameter 'schedule_shap'" in err.value.evalue and "schedule_shape" in err.value.evalue


def test_the_readmes_papermill_command_leaves_an_existing_report_byte_identical_and_git_clean(tmp_path):
    """`papermill notebooks/01_l1_penalty.ipynb out.ipynb -p profile smoke`, run where a report
    lives (reports/lab), writes its runs into a new runs-01_l1_penalty-<date> folder beside out.ipynb
    and touches nothing of the report. `-p penalty_alpha_task22 false` (papermill passes the
    string "false") drops the Task 2.2 arm. Run in a git checkout, it leaves `git status` clean
    (issue 23: out.ipynb and runs-* are ignored)."""
    import subprocess

    make_checkout(tmp_path)
    report = tmp_path / "reports" / "lab"
    for rel, text in [("01_l1_penalty.html", "<html>good page</html>"), ("01_l1_penalty.ipynb", "{}"),
                      ("index.html", "<html>index</html>"), ("runs/01_l1_penalty/verdicts.json", "[]"),
                      ("runs/01_l1_penalty/seed0/arms.json", '{"arms": ["seed"], "factor": "x"}')]:
        (report / rel).parent.mkdir(parents=True, exist_ok=True)
        (report / rel).write_text(text)
    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "papermill", "notebooks/01_l1_penalty.ipynb", "out.ipynb",
                           "-p", "profile", "smoke", "-p", "penalty_alpha_task22", "false", "-k", KERNEL,
                           "--no-progress-bar"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in report.rglob("*") if p.is_file()} == before
    made = sorted(tmp_path.glob("runs-01_l1_penalty-*"))
    assert len(made) == 1 and (made[0] / "verdicts.json").exists()
    arms = json.loads((made[0] / "seed0" / "arms.json").read_text())["arms"]
    assert "base" in arms and "task22_alpha_x_d_sae" not in arms
    assert (tmp_path / "out.ipynb").stat().st_size > 0 and status(tmp_path) == ""
