"""Notebook parameters from outside the kernel (saelab.lab.params): strict booleans, parameter names
checked before papermill writes them into a cell, and a run folder that is never a report's."""

from __future__ import annotations

from datetime import datetime

import pytest

from saelab.cli import main
from saelab.lab import params, phases
from saelab.lab.causes import PHASES
from saelab.lab.phases import mirrors


@pytest.mark.parametrize("value, want", [(True, True), (False, False), ("false", False), ("False", False),
                                         ("TRUE", True), (" true ", True)])
def test_parse_bool_accepts_booleans_and_papermills_strings(value, want):
    assert params.parse_bool("flag", value) is want


@pytest.mark.parametrize("value", ["no", "yes", "0", 1, 0, None, "", [True]])
def test_parse_bool_rejects_anything_else_by_name(value):
    with pytest.raises(ValueError, match=r"^flag=.* must be True or False"):
        params.parse_bool("flag", value)


@pytest.mark.parametrize("name, why", [
    ('import os\nos.system("touch X")\nq', "not a Python identifier"),
    ("a b", "not a Python identifier"), ("1x", "not a Python identifier"), ("class", "not a Python identifier"),
    ("penalty_alpha2", "not a parameter of this phase"),
])
def test_check_parameter_name_refuses_code_and_unknown_names(name, why):
    allowed = mirrors(PHASES["01_l1_penalty"])
    with pytest.raises(ValueError, match=why):
        params.check_parameter_name(name, allowed, "01_l1_penalty")
    assert params.check_parameter_name("penalty_form", allowed, "01_l1_penalty") == "penalty_form"


def test_default_run_dir_is_new_dated_and_never_reused(tmp_path):
    now = datetime(2026, 11, 24, 9, 5, 7)
    first = params.default_run_dir("01_l1_penalty", tmp_path, now)
    assert first == tmp_path / "runs-01_l1_penalty-20261124-090507"
    first.mkdir()
    assert params.default_run_dir("01_l1_penalty", tmp_path, now) == tmp_path / "runs-01_l1_penalty-20261124-090507-2"


def _ns(stem: str, **given) -> dict:
    return {"profile": "smoke", "seeds": None, "out_dir": "/tmp/x", "source": None, "steps": None,
            "data_mean_offset": None, "overrides": {}, "explorer": False, "base": None, **PHASES[stem].defaults(), **given}


def test_prepare_reads_papermills_false_as_false_and_refuses_other_words():
    run = phases.prepare("01_l1_penalty", _ns("01_l1_penalty", penalty_alpha_task22="false", explorer="false"), history=[])
    assert run.params["penalty_alpha_task22"] is False and run.explorer is False
    with_arm = phases.prepare("01_l1_penalty", _ns("01_l1_penalty", penalty_alpha_task22="true"), history=[])
    assert len(with_arm.arms[0]) == len(run.arms[0]) + 1  # "false" dropped the Task 2.2 arm
    with pytest.raises(ValueError, match="penalty_alpha_task22='no' must be True or False"):
        phases.prepare("01_l1_penalty", _ns("01_l1_penalty", penalty_alpha_task22="no"), history=[])


def test_prepare_without_out_dir_writes_a_new_folder_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = phases.prepare("02_lr_warmup", _ns("02_lr_warmup", out_dir=None), history=[])
    assert run.out_dir.parent == tmp_path and run.out_dir.name.startswith("runs-02_lr_warmup-")
    assert not run.out_dir.exists()


def test_lab_refuses_a_parameter_name_that_is_code_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "lab"
    assert main(["lab", "--profile", "smoke", "--out", str(out), "-p", 'import os\nos.system("touch X")\nq=1']) == 2
    err = capsys.readouterr().err.strip()
    assert "not a Python identifier" in err and len(err.splitlines()) == 1
    assert main(["lab", "--profile", "smoke", "--only", "02", "--out", str(out), "-p", "penalty_alpha=0.1"]) == 2
    assert "'penalty_alpha' is not a parameter of this phase" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "X").exists()
