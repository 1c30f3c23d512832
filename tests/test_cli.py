"""The command line: presets, train, resume, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from saelab import runs, train
from saelab.cli import main
from saelab.config import PRESETS, preset

SMALL = ["--set", "steps=20", "--set", "sae.d_sae=32", "--set", "eval_rows=256", "--set", "log_interval=10"]



def test_presets_lists_every_preset_on_one_line_each(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(len(line.split()) > 3 for line in lines)  # a name and a description


def test_train_a_preset_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed-test1", *SMALL, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed
    for key in ("l0=", "dead_frac=", "fvu=", "l1_recon_ratio="):
        assert key in printed
    run = runs.load_run(out)
    assert run.config == preset("seed-test1").with_overrides(["steps=20", "sae.d_sae=32", "eval_rows=256", "log_interval=10",
                                                              "sae.d_in=768"])
    assert run.metrics["step"].tolist() == [0, 10, 20]
    assert f"{run.summary['l0']:.4g}" in printed


def test_training_into_an_existing_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = (out / "metrics.parquet").read_bytes()
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "already holds a run" in err and "--resume" in err
    assert (out / "metrics.parquet").read_bytes() == before  # nothing was overwritten


def test_resume_finishes_an_interrupted_run(tmp_path, capsys):
    cfg = preset("seed-test1").with_overrides(["steps=20", "sae.d_sae=32", "eval_rows=256", "log_interval=10"])
    train.train(cfg, tmp_path / "run", progress=False, stop_at=10)
    assert runs.load_run(tmp_path / "run").metrics["step"].tolist() == [0, 10]
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert "run directory" in capsys.readouterr().out
    assert runs.load_run(tmp_path / "run").metrics["step"].tolist() == [0, 10, 20]


@pytest.mark.parametrize(
    "args, field",
    [
        (["--set", "sae.d_sae=-3"], "sae.d_sae"),
        (["--set", "sae.dsae=64"], "sae.d_sae"),  # unknown: the nearest valid name is suggested
        (["--set", "optim.lr=fast"], "optim.lr"),
        (["--set", "penalty.form=l2"], "penalty.form"),
        (["--set", "steps"], "path=value"),
        (["--preset", "seed-tset1"], "seed-test1"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(tmp_path, capsys, args, field):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saelab: error:") and field in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "r").exists()


def test_resume_of_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err


def test_the_installed_entry_point_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "saelab.cli", "train", "--set", "sae.d_sae=0", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "sae.d_sae" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_refuses_settings_it_would_ignore(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--set", "steps=50", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--set" in err


def test_a_config_file_names_the_default_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = preset("seed-test1").with_overrides(["steps=5", "sae.d_sae=16", "eval_rows=64", "log_interval=5"])
    (tmp_path / "mine.json").write_text(cfg.to_json())
    assert main(["train", "--config", "mine.json", "--quiet"]) == 0
    assert runs.load_run(tmp_path / "reports" / "runs" / "mine").config.steps == 5
