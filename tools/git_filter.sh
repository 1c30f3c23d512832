#!/usr/bin/env bash
# Make nbstripout the clean filter that .gitattributes names for notebooks (issue 23), so that
# outputs, execution counts and widget state never reach git: a notebook run and saved in
# JupyterLab leaves `git status` clean, and `git diff` shows only changes to its code and text.
# Run by `make setup`; idempotent (git config sets each key to one value). Does nothing outside a
# git checkout whose top is this repo (a tarball, or the repo vendored inside another repo).
# The command is relative: git runs filters from the top of the working tree, so each clone or
# worktree uses its own .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd -P)"
top="$(git -C "$root" rev-parse --show-toplevel 2>/dev/null || true)"
if [[ -z "$top" || ! "$top" -ef "$root" ]]; then
    echo "git-filter: $root is not the top of a git checkout; no notebook filter set"
    exit 0
fi
# --keep-id: the generated notebooks' ids are stable (NN-MM) and must stay as they are. Beyond
# nbstripout's defaults (outputs, execution counts, metadata.widgets, cell ExecuteTime ...), strip
# what a kernel adds to language_info when it runs (its Python version), which the generated
# notebooks leave out.
keys="metadata.language_info.version metadata.language_info.codemirror_mode metadata.language_info.file_extension"
keys="$keys metadata.language_info.mimetype metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer"
git -C "$root" config filter.nbstripout.clean ".venv/bin/python -m nbstripout --keep-id --extra-keys '$keys'"
git -C "$root" config filter.nbstripout.smudge cat
echo "git-filter: notebooks are stripped of outputs as git reads them (nbstripout)"
