"""JupyterLab's server settings for this repo (`make notebooks` passes this file as --config).

A saved notebook keeps its outputs on disk, and git never sees them: the clean filter that
tools/git_filter.sh sets (nbstripout, named in .gitattributes) strips them as git reads the file.
One gap is left, and the hook below closes it: git takes a changed file size as a changed file
without running the filter, so after Run All + Save `git status` would list the notebook as
modified while `git diff` shows nothing. After each save, when git would store the notebook exactly
as its index holds it (only outputs, counts or widget state changed), the hook records the file's
new size and time in the index (`git add` of identical content: nothing new is staged). A notebook
whose code or text changed is left alone and shows as modified, as it should.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=60)


def refresh_git_index(model: dict[str, Any], os_path: str, contents_manager: Any = None, **_: Any) -> bool:
    """Jupyter's post-save hook: True when the saved notebook's index entry was refreshed (it is
    tracked and its filtered content equals the index's); False otherwise, changing nothing."""
    if model.get("type") != "notebook":
        return False
    path = Path(os_path)
    staged = _git(path.parent, "rev-parse", "--verify", "-q", f":./{path.name}")
    if staged.returncode != 0:  # not in a git checkout, or not tracked
        return False
    stored = _git(path.parent, "hash-object", "--", path.name)  # the blob git would store: through the filter
    if stored.returncode != 0 or stored.stdout.strip() != staged.stdout.strip():
        return False
    done = _git(path.parent, "add", "--", path.name).returncode == 0
    if done and contents_manager is not None:
        contents_manager.log.info("saelab: %s changed only in outputs; git's index refreshed (git status stays clean)", path.name)
    return done


if "get_config" in globals():  # read by Jupyter as a config file; imported as a module by the tests
    get_config().ContentsManager.post_save_hook = refresh_git_index  # noqa: F821
