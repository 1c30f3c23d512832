"""A small git checkout of this repo for tests that look at `git status` (issue 23): the files
that decide what git sees (.gitignore, .gitattributes, tools/git_filter.sh), the notebooks, and
.venv pointing at the interpreter running the tests, committed once with the set-up's filter in
place (tools/git_filter.sh, as `make setup` runs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = (".gitignore", ".gitattributes", "tools/git_filter.sh", "tools/jupyter_server_config.py", "README.md")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def make_checkout(where: Path, notebooks: dict[str, str] | None = None) -> Path:
    """A git repository at ``where`` holding FILES, ``notebooks/`` (``notebooks``: name -> JSON
    text; None: a copy of the repo's) and ``.venv`` (a link to this interpreter's environment,
    which the filter's relative command runs), committed after tools/git_filter.sh ran."""
    where.mkdir(parents=True, exist_ok=True)
    for rel in FILES:
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, where / rel)
    (where / "notebooks").mkdir(exist_ok=True)
    if notebooks is None:
        for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
            shutil.copy2(path, where / "notebooks" / path.name)
    else:
        for name, text in notebooks.items():
            (where / "notebooks" / name).write_text(text)
    (where / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    git(where, "init", "-q")
    git(where, "config", "user.email", "test@saelab.invalid")
    git(where, "config", "user.name", "saelab tests")
    subprocess.run([str(where / "tools" / "git_filter.sh")], check=True, capture_output=True)
    git(where, "add", "-A")
    git(where, "commit", "-q", "-m", "checkout")
    return where


def status(repo: Path) -> str:
    """``git status --porcelain`` with every untracked file listed: empty when the tree is clean."""
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def stored(path: Path) -> str:
    """The text git stores for ``path``: the working file through the clean filter its checkout
    sets for it (tools/git_filter.sh), or the file itself where none is set (a tarball, a clone
    before `make setup`). A notebook saved with outputs in JupyterLab keeps them on disk only."""
    path = Path(path).resolve()
    top = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0:
        return path.read_text()
    repo = Path(top.stdout.strip())
    driver = git(repo, "check-attr", "filter", "--", str(path.relative_to(repo))).rsplit(":", 1)[1].strip()
    clean = subprocess.run(["git", "-C", str(repo), "config", "--get", f"filter.{driver}.clean"], capture_output=True, text=True)
    if driver in ("unspecified", "unset") or clean.returncode != 0:
        return path.read_text()
    return subprocess.run(clean.stdout.strip(), shell=True, cwd=repo, input=path.read_text(), capture_output=True, text=True,
                          check=True).stdout
