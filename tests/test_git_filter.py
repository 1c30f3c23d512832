"""Outputs never reach git (issue 23): tools/git_filter.sh, which `make setup` runs, makes
nbstripout the clean filter .gitattributes names for notebooks, and JupyterLab's post-save hook
(tools/jupyter_server_config.py, which `make notebooks` passes) refreshes git's index when a save
changed only outputs, so a notebook saved with its outputs leaves `git status` clean. The README's
papermill command is covered in tests/test_notebooks.py, the real JupyterLab save in
tests/test_jupyterlab.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))  # tests/checkout.py, whatever pytest's import mode
from checkout import ROOT, git, make_checkout, status  # noqa: E402

NOTEBOOK = "01_l1_penalty.ipynb"


ONE = {NOTEBOOK: (ROOT / "notebooks" / NOTEBOOK).read_text()}


def save_hook():
    spec = importlib.util.spec_from_file_location("jupyter_server_config", ROOT / "tools" / "jupyter_server_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.refresh_git_index


def saved_with_outputs(path: Path) -> None:
    """Rewrite ``path`` as JupyterLab saves it after Run All: execution counts, a stream, a large
    figure output and an error, the widget state and the kernel's full language_info."""
    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {i}\n"),
                        nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json": {"data": [{"y": list(range(500))}]},
                                                                     "text/html": "<div>" + "x" * 20_000 + "</div>"}),
                        nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=["boom"])]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-12-04T16:00:00Z"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python", "file_extension": ".py",
                                    "codemirror_mode": {"name": "ipython", "version": 3}, "nbconvert_exporter": "python",
                                    "pygments_lexer": "ipython3"}
    nbformat.write(nb, str(path))


def test_a_notebook_saved_with_outputs_leaves_git_status_clean(tmp_path):
    repo = make_checkout(tmp_path / "repo", ONE)
    path = repo / "notebooks" / NOTEBOOK
    before = path.read_text()
    saved_with_outputs(path)
    assert "boom" in path.read_text() and path.stat().st_size > len(before) + 20_000  # the outputs are on disk
    assert git(repo, "diff") == ""  # the filter: git sees no change
    # ... but git takes the new size as a change without filtering: the save hook refreshes the index
    assert status(repo) == f" M notebooks/{NOTEBOOK}\n"
    assert save_hook()({"type": "notebook"}, str(path)) is True
    assert status(repo) == "" and git(repo, "diff", "--cached") == ""
    assert "boom" in path.read_text()  # the outputs stay on disk


def test_an_edit_beside_the_outputs_commits_the_edit_alone(tmp_path):
    repo = make_checkout(tmp_path / "repo", ONE)
    path = repo / "notebooks" / NOTEBOOK
    saved_with_outputs(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].source += "\n# my own edit"
    nbformat.write(nb, str(path))
    assert save_hook()({"type": "notebook"}, str(path)) is False  # a real change is left for the user to stage
    assert status(repo) == f" M notebooks/{NOTEBOOK}\n" and git(repo, "diff", "--cached") == ""
    diff = git(repo, "diff")
    assert "# my own edit" in diff and "boom" not in diff and "execution_count\": 1" not in diff
    git(repo, "commit", "-q", "-am", "edit")
    stored = json.loads(git(repo, "show", f"HEAD:notebooks/{NOTEBOOK}"))
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in stored["cells"])
    assert "widgets" not in stored["metadata"] and stored["metadata"]["language_info"] == {"name": "python"}
    assert [c["id"] for c in stored["cells"]] == [c.id for c in nb.cells]  # the generator's stable ids are kept


def test_the_setup_step_is_idempotent_and_only_in_a_checkout(tmp_path):
    repo = make_checkout(tmp_path / "repo", ONE)
    for _ in range(2):
        subprocess.run([str(repo / "tools" / "git_filter.sh")], check=True, capture_output=True)
    assert len(git(repo, "config", "--get-all", "filter.nbstripout.clean").splitlines()) == 1
    assert git(repo, "config", "--get", "filter.nbstripout.smudge").strip() == "cat"
    assert git(repo, "check-attr", "filter", f"notebooks/{NOTEBOOK}").strip().endswith("nbstripout")
    plain = tmp_path / "tarball" / "tools"
    plain.mkdir(parents=True)
    (plain / "git_filter.sh").write_bytes((ROOT / "tools" / "git_filter.sh").read_bytes())
    (plain / "git_filter.sh").chmod(0o755)
    proc = subprocess.run([str(plain / "git_filter.sh")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "no notebook filter set" in proc.stdout


def test_the_save_hook_leaves_untracked_and_unversioned_notebooks_alone(tmp_path):
    repo = make_checkout(tmp_path / "repo", ONE)
    mine = repo / "notebooks" / "mine.ipynb"
    mine.write_text((repo / "notebooks" / NOTEBOOK).read_text())
    assert save_hook()({"type": "notebook"}, str(mine)) is False
    assert status(repo) == "?? notebooks/mine.ipynb\n"
    loose = tmp_path / "loose.ipynb"
    loose.write_text("{}")
    assert save_hook()({"type": "notebook"}, str(loose)) is False
    assert save_hook()({"type": "file"}, str(repo / "README.md")) is False


def test_the_makefile_runs_it_from_the_setup():
    text = (ROOT / "Makefile").read_text()
    assert "setup: $(STAMP) git-filter" in text and "\ttools/git_filter.sh" in text
    assert "--config=$(CURDIR)/tools/jupyter_server_config.py" in text
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text()


def test_what_a_run_leaves_behind_is_ignored(tmp_path):
    repo = make_checkout(tmp_path / "repo", notebooks={})
    for name in ("out.ipynb", "notebooks/.ipynb_checkpoints/01_l1_penalty-checkpoint.ipynb", "run.out.ipynb",
                 "runs-01_l1_penalty-20261204-160000/seed0/config.json",
                 "notebooks/runs-05_reanimation-20261204-160000/verdicts.json"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("{}")
        assert status(repo) == "", name
